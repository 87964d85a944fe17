//! Concurrent clones (catalogue §6 item 18): many clones of one source at once all get the
//! source's data; identical concurrent requests make exactly one volume.

mod common;

use common::*;
use tokio::task::JoinSet;

const BLOCK: u64 = 16 * MIB;
/// Slows each copied chunk so the concurrent copies really overlap.
const PACE: &[&str] = &["--copy-pace-ms", "20"];

async fn block_source(h: &Harness) -> (String, String) {
    let v = h.create_ok(req("src", block_cap(), BLOCK, None)).await;
    let hash = h
        .with_published(&v.volume_id, &block_cap(), |dev| {
            write_scattered(dev, 77);
            digest(dev, None)
        })
        .await;
    (v.volume_id, hash)
}

async fn hash_of(h: &Harness, id: &str) -> String {
    h.with_published(id, &block_cap(), |dev| digest(dev, None))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_clones_of_one_source_all_match() {
    let h = Harness::with_args(PACE).await;
    let (src, src_hash) = block_source(&h).await;
    let mut set = JoinSet::new();
    for i in 0..8 {
        let mut ctl = h.ctl();
        let request = req(&format!("clone-{i}"), block_cap(), 0, vol_src(&src));
        set.spawn(async move { (i, ctl.create_volume(request).await) });
    }
    let mut ids = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (i, answer) = joined.expect("join");
        let v = answer
            .unwrap_or_else(|s| panic!("clone-{i}: {:?} {}", s.code(), s.message()))
            .into_inner()
            .volume
            .expect("volume");
        assert_eq!(source_of(&v), Some(("volume", src.clone())));
        ids.push(v.volume_id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8, "distinct names must give distinct volumes");
    assert_eq!(h.volume_ids().await.len(), 9);
    for id in &ids {
        assert_eq!(hash_of(&h, id).await, src_hash, "clone {id} differs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_identical_clone_requests_make_one_volume() {
    let h = Harness::with_args(PACE).await;
    let (src, src_hash) = block_source(&h).await;
    let request = req("clone", block_cap(), 0, vol_src(&src));
    let mut set = JoinSet::new();
    for _ in 0..8 {
        let mut ctl = h.ctl();
        let request = request.clone();
        set.spawn(async move { ctl.create_volume(request).await });
    }
    let mut ids = Vec::new();
    while let Some(joined) = set.join_next().await {
        // The spec also allows ABORTED here; this driver queues same-name requests instead.
        let v = joined
            .expect("join")
            .unwrap_or_else(|s| panic!("{:?} {}", s.code(), s.message()))
            .into_inner()
            .volume
            .expect("volume");
        assert_eq!(source_of(&v), Some(("volume", src.clone())));
        ids.push(v.volume_id);
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "different ids: {ids:?}");
    let listed = h.volume_ids().await;
    assert_eq!(listed.len(), 2, "source + one clone expected: {listed:?}");
    assert_eq!(listed.iter().filter(|id| **id == ids[0]).count(), 1);
    assert_eq!(hash_of(&h, &ids[0]).await, src_hash);
}
