//! A clone or restore larger than its source (SPEC-CV-08): the driver either refuses with
//! OUT_OF_RANGE or delivers the larger size with the source data at publish time. This driver
//! grows, so check what the workload sees: filesystem size for mount, device size for block.

mod common;

use common::*;

/// Source `src_size` with a tree, copy at `copy_size`; the published copy's filesystem must be
/// larger than `min_total` (well above the source) and hold the source's files.
async fn larger_mount_copy(
    fs: &str,
    src_size: u64,
    copy_size: u64,
    min_total: u64,
    via_snapshot: bool,
) {
    larger_mount_copy_of(fs, src_size, copy_size, min_total, via_snapshot, false).await
}

/// `in_use`: the source stays published (its filesystem mounted, journal live) during the copy.
async fn larger_mount_copy_of(
    fs: &str,
    src_size: u64,
    copy_size: u64,
    min_total: u64,
    via_snapshot: bool,
    in_use: bool,
) {
    let h = Harness::start().await;
    let cap = mount_cap(fs);
    let src = h.create_ok(req("src", cap.clone(), src_size, None)).await;
    let src_p = h.publish(&src.volume_id, &cap).await;
    let expected = write_tree_with(&src_p.target, 11, !in_use);
    let src_total = h.stats_total_bytes(&src_p).await;
    if !in_use {
        h.unpublish(&src_p).await;
    }
    assert!(
        src_total <= src_size,
        "source filesystem {src_total} > volume {src_size}"
    );

    let source = if via_snapshot {
        snap_src(&h.snapshot("snap", &src.volume_id).await.snapshot_id)
    } else {
        vol_src(&src.volume_id)
    };
    let copy = h
        .create_ok(req("copy", cap.clone(), copy_size, source))
        .await;
    assert_eq!(copy.capacity_bytes, copy_size as i64);
    if in_use {
        h.unpublish(&src_p).await;
    }

    let p = h.publish(&copy.volume_id, &cap).await;
    let stats_total = h.stats_total_bytes(&p).await;
    let vfs = rustix::fs::statvfs(&p.target).expect("statvfs");
    let vfs_total = vfs.f_blocks * vfs.f_frsize;
    let tree = read_tree(&p.target);
    h.unpublish(&p).await;
    // A second stage must not grow (or break) anything again.
    let again = h.with_published(&copy.volume_id, &cap, read_tree).await;

    assert!(
        vfs_total > min_total && stats_total > min_total,
        "{fs}: copy of {src_size} B at {copy_size} B shows a {vfs_total} B filesystem \
         (NodeGetVolumeStats {stats_total}); expected > {min_total}"
    );
    assert!(vfs_total <= copy_size, "{vfs_total} > {copy_size}");
    assert_eq!(tree, expected, "{fs}: the larger copy lost source data");
    assert_eq!(again, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn larger_ext4_clone_has_grown_filesystem_and_source_files() {
    larger_mount_copy("ext4", 32 * MIB, 96 * MIB, 64 * MIB, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn larger_ext4_restore_has_grown_filesystem_and_source_files() {
    larger_mount_copy("ext4", 32 * MIB, 96 * MIB, 64 * MIB, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn larger_xfs_clone_has_grown_filesystem_and_source_files() {
    // mkfs.xfs refuses filesystems below 300 MiB.
    larger_mount_copy("xfs", 300 * MIB, 600 * MIB, 450 * MIB, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn larger_xfs_restore_has_grown_filesystem_and_source_files() {
    larger_mount_copy("xfs", 300 * MIB, 600 * MIB, 450 * MIB, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn larger_ext4_clone_of_published_source_has_grown_filesystem_and_source_files() {
    larger_mount_copy_of("ext4", 32 * MIB, 96 * MIB, 64 * MIB, false, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn larger_xfs_clone_of_published_source_has_grown_filesystem_and_source_files() {
    larger_mount_copy_of("xfs", 300 * MIB, 600 * MIB, 450 * MIB, false, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn larger_block_clone_has_larger_device_with_source_prefix() {
    let h = Harness::start().await;
    let cap = block_cap();
    let (small, large) = (16 * MIB, 40 * MIB);
    let src = h.create_ok(req("src", cap.clone(), small, None)).await;
    let src_hash = h
        .with_published(&src.volume_id, &cap, |dev| {
            write_scattered(dev, 21);
            digest(dev, None)
        })
        .await;
    let snap = h.snapshot("snap", &src.volume_id).await;
    for (name, source) in [
        ("clone", vol_src(&src.volume_id)),
        ("restore", snap_src(&snap.snapshot_id)),
    ] {
        let copy = h.create_ok(req(name, cap.clone(), large, source)).await;
        assert_eq!(copy.capacity_bytes, large as i64, "{name}");
        let (size, prefix, tail) = h
            .with_published(&copy.volume_id, &cap, |dev| {
                let tail = read_at(dev, small, (large - small) as usize);
                (device_size(dev), digest(dev, Some(small)), tail)
            })
            .await;
        assert_eq!(size, large, "{name}: published device size");
        assert_eq!(
            prefix, src_hash,
            "{name}: first {small} bytes differ from the source"
        );
        assert!(
            tail.iter().all(|&b| b == 0),
            "{name}: grown space is not zero"
        );
    }
}
