//! Cloning a volume that is in use (catalogue §6 item 12): while a workload keeps writing to the
//! mounted source, the clone/snapshot must still be a consistent filesystem that holds every
//! file made durable before the copy started.
//!
//! The driver freezes a staged mount source (FIFREEZE) for the length of the copy. With only a
//! syncfs before the copy, these tests failed every time: `e2fsck -fn` exit 4 ("Block bitmap
//! differences", "Inode 2 ref count") and `iget: checksum invalid` on lookups in the copy.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use common::*;

const SIZE: u64 = 128 * MIB;
/// Widens the copy so the writer overlaps it.
const PACE: &[&str] = &["--copy-pace-ms", "100"];

/// Churns metadata and data under `root` until `stop`: new files, deletions, rewrites.
/// Errors (e.g. ENOSPC) are ignored: only the copy's consistency is under test.
#[allow(unknown_lints, clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87 > MSRV
fn start_writer(root: PathBuf, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let dir = root.join(format!("churn/d{}", i % 50));
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(format!("f{i}")), vec![i as u8; 64 << 10]);
            if i % 3 == 0 {
                let _ = std::fs::remove_file(dir.join(format!("f{}", i.saturating_sub(2))));
            }
            if let (0, Ok(f)) = (i % 7, std::fs::File::open(&root)) {
                let _ = rustix::fs::syncfs(f);
            }
            let _ = std::fs::write(root.join(format!("fill{}", i % 8)), vec![i as u8; 1 << 20]);
            i += 1;
        }
        i
    })
}

/// `e2fsck -fn` exit code and the first findings.
fn fsck(image: &Path) -> (Option<i32>, String) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(image)
        .output()
        .expect("run e2fsck");
    let findings: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("Pass") && !l.trim().is_empty())
        .take(8)
        .map(str::to_string)
        .collect();
    (out.status.code(), findings.join(" | "))
}

async fn copy_under_writes(via_snapshot: bool) {
    let h = Harness::with_args(PACE).await;
    let cap = mount_cap("ext4");
    let src = h.create_ok(req("src", cap.clone(), SIZE, None)).await;
    let p = h.publish(&src.volume_id, &cap).await;
    let expected = write_tree(&p.target, 31);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(p.target.clone(), stop.clone());

    // The copy (clone, or the snapshot a restore is made from) runs while the writer churns.
    let copy = if via_snapshot {
        let snap = h.snapshot("snap", &src.volume_id).await;
        stop.store(true, Ordering::Relaxed);
        h.create_ok(req("copy", cap.clone(), 0, snap_src(&snap.snapshot_id)))
            .await
    } else {
        h.create_ok(req("copy", cap.clone(), 0, vol_src(&src.volume_id)))
            .await
    };
    stop.store(true, Ordering::Relaxed);
    let ops = writer.join().expect("writer");
    h.unpublish(&p).await;

    // Staging mounts the copy, which replays its journal; then check it offline.
    let published = h.try_publish(&copy.volume_id, &cap).await;
    let tree = published
        .as_ref()
        .ok()
        .map(|p| std::panic::catch_unwind(|| read_tree(&p.target)).map_err(|_| "read_tree failed"));
    if let Ok(p) = &published {
        h.unpublish(p).await;
    }
    let image = h.state_dir.join(format!("volumes/{}.img", copy.volume_id));
    let (code, findings) = fsck(&image);

    let published = published
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()));
    assert!(published.is_ok(), "copy cannot be staged: {published:?}");
    assert_eq!(
        code,
        Some(0),
        "copy made during {ops} writes is inconsistent: {findings}"
    );
    let tree = tree.expect("published").expect("copy readable");
    for (path, entry) in &expected {
        assert_eq!(tree.get(path), Some(entry), "{path} changed in the copy");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_clone_under_concurrent_writes_is_consistent() {
    copy_under_writes(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_snapshot_under_concurrent_writes_is_consistent() {
    copy_under_writes(true).await;
}
