//! Crash and restart: a driver killed mid-copy must not expose or keep the half-made volume, a
//! replay must then produce a complete clone, and ready volumes keep their data. Also the
//! graceful SIGTERM path.

mod common;

use std::time::{Duration, Instant};

use common::*;

const DENSE: u64 = 64 * MIB;
/// 8 chunks of ≤ 8 MiB at 150 ms each: a copy window of over a second to kill into.
const PACE: &[&str] = &["--copy-pace-ms", "150"];

/// Polls state.json until a `kind` ("volumes" / "snapshots") record named `name` is `creating`;
/// returns its id.
async fn wait_for_creating(h: &Harness, kind: &str, name: &str) -> String {
    let started = Instant::now();
    loop {
        if let Some(id) = creating_record(h, kind, name) {
            return id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no creating {kind} record named {name:?} appeared in state.json"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn creating_record(h: &Harness, kind: &str, name: &str) -> Option<String> {
    let state = h.state_json();
    state[kind]
        .as_object()?
        .iter()
        .find_map(|(id, r)| (r["name"] == name && r["status"] == "creating").then(|| id.clone()))
}

fn any_creating(h: &Harness) -> bool {
    let state = h.state_json();
    ["volumes", "snapshots"].iter().any(|kind| {
        state[*kind]
            .as_object()
            .is_some_and(|m| m.values().any(|r| r["status"] != "ready"))
    })
}

/// A 64 MiB block volume full of random data, unpublished; returns it and its hash.
async fn dense_source(h: &Harness) -> (String, String) {
    let src = h.create_ok(req("src", block_cap(), DENSE, None)).await;
    let hash = h
        .with_published(&src.volume_id, &block_cap(), |dev| fill_device(dev, 42))
        .await;
    (src.volume_id, hash)
}

async fn hash_of(h: &Harness, id: &str) -> String {
    h.with_published(id, &block_cap(), |dev| {
        assert_eq!(device_size(dev), DENSE);
        digest(dev, None)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_clone_is_rolled_back_and_replay_succeeds() {
    let mut h = Harness::with_args(PACE).await;
    let (src, src_hash) = dense_source(&h).await;
    let request = req("clone", block_cap(), 0, vol_src(&src));

    let in_flight = {
        let mut ctl = h.ctl();
        let request = request.clone();
        tokio::spawn(async move { ctl.create_volume(request).await })
    };
    let half = wait_for_creating(&h, "volumes", "clone").await;
    h.kill();
    // Still `creating` after the kill: the crash really hit the copy window.
    assert_eq!(creating_record(&h, "volumes", "clone"), Some(half.clone()));
    let answer = in_flight.await.expect("join");
    assert!(
        answer.is_err(),
        "CreateVolume answered OK from a killed driver: {answer:?}"
    );

    // Debris a crash can leave besides the half-made record.
    let garbage = h.state_dir.join("volumes/garbage.img");
    let tmp = h.state_dir.join("state.json.tmp");
    std::fs::write(&garbage, b"junk").unwrap();
    std::fs::write(&tmp, b"{ half written").unwrap();

    h.restart().await;
    let ids = h.volume_ids().await;
    assert_eq!(
        ids,
        vec![src.clone()],
        "after restart ListVolumes shows {ids:?}"
    );
    assert!(
        !h.state_dir.join(format!("volumes/{half}.img")).exists(),
        "half-made image kept"
    );
    assert!(!any_creating(&h), "state.json still has a creating record");
    assert!(
        !garbage.exists(),
        "stray volumes/garbage.img survived the restart"
    );
    assert!(!tmp.exists(), "state.json.tmp survived the restart");
    let images: Vec<_> = std::fs::read_dir(h.state_dir.join("volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(images, vec![format!("{src}.img")]);

    // The ready source survived with its data; the replay now makes a full clone.
    assert_eq!(hash_of(&h, &src).await, src_hash);
    let clone = h.create_ok(request.clone()).await;
    assert_eq!(source_of(&clone), Some(("volume", src.clone())));
    assert_eq!(clone.capacity_bytes, DENSE as i64);
    assert_eq!(h.create_ok(request).await.volume_id, clone.volume_id);
    assert_eq!(hash_of(&h, &clone.volume_id).await, src_hash);
    assert_eq!(h.volume_ids().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_snapshot_is_rolled_back_and_restore_after_replay_matches() {
    let mut h = Harness::with_args(PACE).await;
    let (src, src_hash) = dense_source(&h).await;
    let in_flight = {
        let mut ctl = h.ctl();
        let request = csi_proto::v1::CreateSnapshotRequest {
            source_volume_id: src.clone(),
            name: "snap".into(),
            ..Default::default()
        };
        tokio::spawn(async move { ctl.create_snapshot(request).await })
    };
    let half = wait_for_creating(&h, "snapshots", "snap").await;
    h.kill();
    assert_eq!(creating_record(&h, "snapshots", "snap"), Some(half.clone()));
    assert!(in_flight.await.expect("join").is_err());

    h.restart().await;
    assert!(h.snapshots().await.is_empty(), "half-made snapshot listed");
    assert!(!h.state_dir.join(format!("snapshots/{half}.img")).exists());
    assert!(!any_creating(&h));

    let snap = h.snapshot("snap", &src).await;
    let restored = h
        .create_ok(req("restore", block_cap(), 0, snap_src(&snap.snapshot_id)))
        .await;
    assert_eq!(hash_of(&h, &restored.volume_id).await, src_hash);
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_volumes_survive_a_crash_with_their_data() {
    let mut h = Harness::start().await;
    let cap = mount_cap("ext4");
    let v = h.create_ok(req("m", cap.clone(), 32 * MIB, None)).await;
    let expected = h
        .with_published(&v.volume_id, &cap, |root| write_tree(root, 5))
        .await;
    let clone = h
        .create_ok(req("c", cap.clone(), 0, vol_src(&v.volume_id)))
        .await;
    h.kill();
    h.restart().await;
    let mut ids = h.volume_ids().await;
    ids.sort();
    let mut want = vec![v.volume_id.clone(), clone.volume_id.clone()];
    want.sort();
    assert_eq!(ids, want);
    // Replays still answer with the same volumes after the restart.
    let again = h
        .create_ok(req("c", cap.clone(), 0, vol_src(&v.volume_id)))
        .await;
    assert_eq!(again.volume_id, clone.volume_id);
    assert_eq!(
        h.with_published(&v.volume_id, &cap, read_tree).await,
        expected
    );
    assert_eq!(
        h.with_published(&clone.volume_id, &cap, read_tree).await,
        expected
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_cleanly_and_removes_socket() {
    let mut h = Harness::start().await;
    h.create_ok(req("v", block_cap(), 4 * MIB, None)).await;
    assert!(h.socket.exists());
    let status = h.stop();
    assert!(status.success(), "driver exited with {status} on SIGTERM");
    assert!(!h.socket.exists(), "socket file left behind after SIGTERM");
    // And it comes back with its state.
    h.restart().await;
    assert_eq!(h.volume_ids().await.len(), 1);
}
