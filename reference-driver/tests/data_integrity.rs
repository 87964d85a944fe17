//! Byte-for-byte data checks for clones and restores (catalogue §6 items 3, 10, 11, 13): what
//! was written to the source is what the copy holds, for mount (files, modes, symlinks) and
//! block (whole-device SHA-256); copies are independent of their sources; chains stay exact.

mod common;

use common::*;
use csi_proto::v1 as csi;

const SIZE: u64 = 32 * MIB;
const BLOCK: u64 = 16 * MIB;

/// A mount volume holding `write_tree(seed)`; unpublished unless `keep_published`.
async fn mount_source(
    h: &Harness,
    name: &str,
    seed: u64,
    keep_published: bool,
) -> (csi::Volume, Manifest, Option<Published>) {
    let cap = mount_cap("ext4");
    let v = h.create_ok(req(name, cap.clone(), SIZE, None)).await;
    let p = h.publish(&v.volume_id, &cap).await;
    let expected = write_tree(&p.target, seed);
    assert_eq!(
        read_tree(&p.target),
        expected,
        "source reads back differently"
    );
    if keep_published {
        return (v, expected, Some(p));
    }
    h.unpublish(&p).await;
    (v, expected, None)
}

/// A block volume with scattered random data; returns it and its whole-device hash.
async fn block_source(h: &Harness, name: &str, seed: u64) -> (csi::Volume, String) {
    let v = h.create_ok(req(name, block_cap(), BLOCK, None)).await;
    let hash = h
        .with_published(&v.volume_id, &block_cap(), |dev| {
            write_scattered(dev, seed);
            digest(dev, None)
        })
        .await;
    (v, hash)
}

async fn tree_of(h: &Harness, id: &str) -> Manifest {
    h.with_published(id, &mount_cap("ext4"), read_tree).await
}

async fn hash_of(h: &Harness, id: &str) -> (u64, String) {
    h.with_published(id, &block_cap(), |dev| {
        (device_size(dev), digest(dev, None))
    })
    .await
}

async fn mount_clone_matches(keep_published: bool) {
    let h = Harness::start().await;
    let (src, expected, published) = mount_source(&h, "src", 1, keep_published).await;
    let clone = h
        .create_ok(req("clone", mount_cap("ext4"), 0, vol_src(&src.volume_id)))
        .await;
    let cloned = tree_of(&h, &clone.volume_id).await;
    if let Some(p) = published {
        // The source is still usable and unchanged while its clone is staged elsewhere.
        assert_eq!(read_tree(&p.target), expected);
        h.unpublish(&p).await;
    }
    assert_eq!(cloned, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_clone_of_unpublished_source_matches_tree() {
    mount_clone_matches(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_clone_of_published_source_matches_tree() {
    mount_clone_matches(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_clone_of_published_source_includes_unsynced_writes() {
    // No fsync/syncfs by the writer: the driver must flush the in-use source before copying.
    let h = Harness::start().await;
    let cap = mount_cap("ext4");
    let src = h.create_ok(req("src", cap.clone(), SIZE, None)).await;
    let p = h.publish(&src.volume_id, &cap).await;
    let expected = write_tree_with(&p.target, 19, false);
    let clone = h
        .create_ok(req("clone", cap.clone(), 0, vol_src(&src.volume_id)))
        .await;
    let snap = h.snapshot("snap", &src.volume_id).await;
    h.unpublish(&p).await;
    let restored = h
        .create_ok(req("restore", cap, 0, snap_src(&snap.snapshot_id)))
        .await;
    assert_eq!(tree_of(&h, &clone.volume_id).await, expected, "clone");
    assert_eq!(tree_of(&h, &restored.volume_id).await, expected, "snapshot");
}

#[tokio::test(flavor = "multi_thread")]
async fn block_clone_of_published_source_includes_unsynced_writes() {
    let h = Harness::start().await;
    let cap = block_cap();
    let src = h.create_ok(req("src", cap.clone(), BLOCK, None)).await;
    let p = h.publish(&src.volume_id, &cap).await;
    write_scattered_with(&p.target, 20, false);
    let src_hash = digest(&p.target, None);
    let clone = h
        .create_ok(req("clone", cap.clone(), 0, vol_src(&src.volume_id)))
        .await;
    let snap = h.snapshot("snap", &src.volume_id).await;
    h.unpublish(&p).await;
    let restored = h
        .create_ok(req("restore", cap, 0, snap_src(&snap.snapshot_id)))
        .await;
    assert_eq!(
        hash_of(&h, &clone.volume_id).await,
        (BLOCK, src_hash.clone()),
        "clone"
    );
    assert_eq!(
        hash_of(&h, &restored.volume_id).await,
        (BLOCK, src_hash),
        "snapshot"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_restore_matches_tree() {
    let h = Harness::start().await;
    let (src, expected, _) = mount_source(&h, "src", 2, false).await;
    let snap = h.snapshot("snap", &src.volume_id).await;
    let restored = h
        .create_ok(req(
            "restore",
            mount_cap(""),
            0,
            snap_src(&snap.snapshot_id),
        ))
        .await;
    assert_eq!(tree_of(&h, &restored.volume_id).await, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn block_clone_of_published_source_matches_device() {
    let h = Harness::start().await;
    let cap = block_cap();
    let src = h.create_ok(req("src", cap.clone(), BLOCK, None)).await;
    // Written through the published device and left published during the clone.
    let p = h.publish(&src.volume_id, &cap).await;
    write_scattered(&p.target, 3);
    let src_hash = digest(&p.target, None);
    let clone = h
        .create_ok(req("clone", cap.clone(), 0, vol_src(&src.volume_id)))
        .await;
    let cloned = hash_of(&h, &clone.volume_id).await;
    h.unpublish(&p).await;
    assert_eq!(cloned, (BLOCK, src_hash));
}

#[tokio::test(flavor = "multi_thread")]
async fn block_clone_of_unpublished_source_matches_device() {
    let h = Harness::start().await;
    let (src, src_hash) = block_source(&h, "src", 4).await;
    let clone = h
        .create_ok(req("clone", block_cap(), 0, vol_src(&src.volume_id)))
        .await;
    assert_eq!(
        hash_of(&h, &clone.volume_id).await,
        (BLOCK, src_hash.clone())
    );
    let snap = h.snapshot("snap", &src.volume_id).await;
    let restored = h
        .create_ok(req("restore", block_cap(), 0, snap_src(&snap.snapshot_id)))
        .await;
    assert_eq!(hash_of(&h, &restored.volume_id).await, (BLOCK, src_hash));
}

#[tokio::test(flavor = "multi_thread")]
async fn block_clone_and_source_are_independent() {
    let h = Harness::start().await;
    let cap = block_cap();
    let (src, original) = block_source(&h, "src", 5).await;
    let clone = h
        .create_ok(req("clone", cap.clone(), 0, vol_src(&src.volume_id)))
        .await;

    let src_after = h
        .with_published(&src.volume_id, &cap, |dev| {
            write_at(dev, 4096, b"written to the source after cloning");
            digest(dev, None)
        })
        .await;
    assert_ne!(src_after, original);
    assert_eq!(
        hash_of(&h, &clone.volume_id).await.1,
        original,
        "source write reached the clone"
    );

    let clone_after = h
        .with_published(&clone.volume_id, &cap, |dev| {
            write_at(dev, BLOCK - 100, b"written to the clone");
            digest(dev, None)
        })
        .await;
    assert_ne!(clone_after, original);
    assert_eq!(
        hash_of(&h, &src.volume_id).await.1,
        src_after,
        "clone write reached the source"
    );
    assert_eq!(hash_of(&h, &clone.volume_id).await.1, clone_after);
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_clone_and_source_are_independent() {
    let h = Harness::start().await;
    let cap = mount_cap("ext4");
    let (src, expected, _) = mount_source(&h, "src", 6, false).await;
    let clone = h
        .create_ok(req("clone", cap.clone(), 0, vol_src(&src.volume_id)))
        .await;

    let src_after = h
        .with_published(&src.volume_id, &cap, |root| {
            std::fs::write(root.join("hello.txt"), b"changed in the source").unwrap();
            std::fs::remove_file(root.join("random.bin")).unwrap();
            std::fs::write(root.join("only-in-source"), b"x").unwrap();
            rustix::fs::syncfs(std::fs::File::open(root).unwrap()).unwrap();
            read_tree(root)
        })
        .await;
    assert_eq!(
        tree_of(&h, &clone.volume_id).await,
        expected,
        "source writes reached the clone"
    );

    let clone_after = h
        .with_published(&clone.volume_id, &cap, |root| {
            std::fs::remove_file(root.join("secret.txt")).unwrap();
            std::fs::write(root.join("sub/only-in-clone"), b"y").unwrap();
            read_tree(root)
        })
        .await;
    assert_ne!(clone_after, expected);
    assert_eq!(
        tree_of(&h, &src.volume_id).await,
        src_after,
        "clone writes reached the source"
    );
    assert_eq!(tree_of(&h, &clone.volume_id).await, clone_after);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_source_keeps_clone_complete() {
    let h = Harness::start().await;
    let (src, expected, _) = mount_source(&h, "src", 7, false).await;
    let clone = h
        .create_ok(req("clone", mount_cap("ext4"), 0, vol_src(&src.volume_id)))
        .await;
    h.delete(&src.volume_id).await;
    assert_eq!(h.volume_ids().await, vec![clone.volume_id.clone()]);
    assert!(
        !h.state_dir
            .join(format!("volumes/{}.img", src.volume_id))
            .exists()
    );
    assert_eq!(tree_of(&h, &clone.volume_id).await, expected);

    let (bsrc, hash) = block_source(&h, "bsrc", 8).await;
    let bclone = h
        .create_ok(req("bclone", block_cap(), 0, vol_src(&bsrc.volume_id)))
        .await;
    h.delete(&bsrc.volume_id).await;
    assert_eq!(hash_of(&h, &bclone.volume_id).await, (BLOCK, hash));
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_clone_keeps_source_intact() {
    let h = Harness::start().await;
    let (src, hash) = block_source(&h, "src", 9).await;
    let clone = h
        .create_ok(req("clone", block_cap(), 0, vol_src(&src.volume_id)))
        .await;
    h.with_published(&clone.volume_id, &block_cap(), |dev| fill_device(dev, 99))
        .await;
    h.delete(&clone.volume_id).await;
    assert_eq!(h.volume_ids().await, vec![src.volume_id.clone()]);
    assert_eq!(hash_of(&h, &src.volume_id).await, (BLOCK, hash));

    let (msrc, expected, _) = mount_source(&h, "msrc", 10, false).await;
    let mclone = h
        .create_ok(req("mclone", mount_cap(""), 0, vol_src(&msrc.volume_id)))
        .await;
    h.delete(&mclone.volume_id).await;
    assert_eq!(tree_of(&h, &msrc.volume_id).await, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_source_keeps_snapshots_listable_and_restorable() {
    let h = Harness::start().await;
    let (src, hash) = block_source(&h, "src", 12).await;
    let snap = h.snapshot("snap", &src.volume_id).await;
    h.delete(&src.volume_id).await;
    let listed = h.snapshots().await;
    let entry = listed
        .iter()
        .find(|s| s.snapshot_id == snap.snapshot_id)
        .expect("snapshot of a deleted volume must stay listed (SPEC-DV-02)");
    assert_eq!(entry.source_volume_id, src.volume_id);
    assert!(entry.ready_to_use);
    let restored = h
        .create_ok(req("restore", block_cap(), 0, snap_src(&snap.snapshot_id)))
        .await;
    assert_eq!(hash_of(&h, &restored.volume_id).await, (BLOCK, hash));

    let (msrc, expected, _) = mount_source(&h, "msrc", 13, false).await;
    let msnap = h.snapshot("msnap", &msrc.volume_id).await;
    h.delete(&msrc.volume_id).await;
    let mrestored = h
        .create_ok(req(
            "mrestore",
            mount_cap(""),
            0,
            snap_src(&msnap.snapshot_id),
        ))
        .await;
    assert_eq!(tree_of(&h, &mrestored.volume_id).await, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_of_clone_matches_original() {
    let h = Harness::start().await;
    let (src, expected, _) = mount_source(&h, "src", 14, false).await;
    let first = h
        .create_ok(req("c1", mount_cap(""), 0, vol_src(&src.volume_id)))
        .await;
    let second = h
        .create_ok(req("c2", mount_cap(""), 0, vol_src(&first.volume_id)))
        .await;
    assert_eq!(
        source_of(&second),
        Some(("volume", first.volume_id.clone()))
    );
    // Deleting the middle link must not matter.
    h.delete(&first.volume_id).await;
    assert_eq!(tree_of(&h, &second.volume_id).await, expected);

    let (bsrc, hash) = block_source(&h, "bsrc", 15).await;
    let b1 = h
        .create_ok(req("b1", block_cap(), 0, vol_src(&bsrc.volume_id)))
        .await;
    let b2 = h
        .create_ok(req("b2", block_cap(), 0, vol_src(&b1.volume_id)))
        .await;
    assert_eq!(hash_of(&h, &b2.volume_id).await, (BLOCK, hash));
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_of_snapshot_of_clone_matches_original() {
    let h = Harness::start().await;
    let (src, hash) = block_source(&h, "src", 16).await;
    let clone = h
        .create_ok(req("clone", block_cap(), 0, vol_src(&src.volume_id)))
        .await;
    let snap = h.snapshot("snap-of-clone", &clone.volume_id).await;
    assert_eq!(snap.source_volume_id, clone.volume_id);
    let restored = h
        .create_ok(req("restore", block_cap(), 0, snap_src(&snap.snapshot_id)))
        .await;
    assert_eq!(hash_of(&h, &restored.volume_id).await, (BLOCK, hash));
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_of_restored_volume_matches_original() {
    let h = Harness::start().await;
    let (src, hash) = block_source(&h, "src", 17).await;
    let snap = h.snapshot("snap", &src.volume_id).await;
    let restored = h
        .create_ok(req("restore", block_cap(), 0, snap_src(&snap.snapshot_id)))
        .await;
    let clone = h
        .create_ok(req("clone", block_cap(), 0, vol_src(&restored.volume_id)))
        .await;
    assert_eq!(
        source_of(&clone),
        Some(("volume", restored.volume_id.clone()))
    );
    assert_eq!(hash_of(&h, &clone.volume_id).await, (BLOCK, hash));

    let (msrc, expected, _) = mount_source(&h, "msrc", 18, false).await;
    let msnap = h.snapshot("msnap", &msrc.volume_id).await;
    let mrestored = h
        .create_ok(req(
            "mrestore",
            mount_cap(""),
            0,
            snap_src(&msnap.snapshot_id),
        ))
        .await;
    let mclone = h
        .create_ok(req(
            "mclone",
            mount_cap(""),
            0,
            vol_src(&mrestored.volume_id),
        ))
        .await;
    assert_eq!(tree_of(&h, &mclone.volume_id).await, expected);
}
