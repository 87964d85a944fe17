//! First, do no harm (issue 18): the driver freezes a filesystem only when it has proven it is
//! the staged volume's own. Each test makes a staging record outlive its mount on purpose (the
//! mount removed behind the driver's back, the path swapped for a directory or a symlink to
//! `/`, a restart on a reused state dir, a late-copy fault racing NodeUnstage, a Mount volume
//! without a filesystem), then asks for a clone and a snapshot of the source. Each answers
//! FAILED_PRECONDITION, or OK with a copy that `e2fsck -fn` finds clean, and no filesystem but
//! the volume's own is ever frozen: the node dirs live on the test's scratch ext4
//! (`common::ScratchFs`), which a watcher thaws and reports, so a regression fails the test
//! instead of hanging the machine.
//!
//! When the mount is gone the driver refuses rather than copying the image: a lazily detached
//! mount still takes writes, and the loop device is still attached, so nothing proves the
//! image quiet. After NodeUnstage (which the CO retries anyway) the copy is made from the idle
//! image.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use csi_proto::v1 as csi;
use tonic::Code;

const SIZE: u64 = 16 * MIB;

fn never_frozen(h: &Harness, step: &str) {
    if let Some(scratch) = h.scratch.as_ref() {
        scratch.assert_never_frozen(step);
    }
}

/// NodeStage alone (no publish) into `<node_root>/<label>`; returns the staging path.
async fn stage(h: &Harness, id: &str, label: &str) -> Result<PathBuf, tonic::Status> {
    let staging = h.node_root.join(label);
    std::fs::create_dir_all(&staging).expect("create staging dir");
    h.node()
        .node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.to_str().unwrap().into(),
            volume_capability: Some(mount_cap("ext4")),
            ..Default::default()
        })
        .await?;
    Ok(staging)
}

async fn unstage(h: &Harness, id: &str, staging: &Path) {
    h.node()
        .node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.to_str().unwrap().into(),
        })
        .await
        .unwrap_or_else(|s| panic!("NodeUnstage {id}: {s:?}"));
}

/// A staged ext4 source holding one synced file; returns (id, staging path).
async fn staged_source(h: &Harness, name: &str) -> (String, PathBuf) {
    staged_source_of(h, name, SIZE).await
}

async fn staged_source_of(h: &Harness, name: &str, size: u64) -> (String, PathBuf) {
    let src = h.create_ok(req(name, mount_cap("ext4"), size, None)).await;
    let staging = stage(h, &src.volume_id, name).await.expect("stage source");
    std::fs::write(staging.join("data"), vec![7u8; 1 << 20]).unwrap();
    sync_fs(&staging);
    (src.volume_id, staging)
}

fn sync_fs(path: &Path) {
    let dir = std::fs::File::open(path).unwrap();
    rustix::fs::syncfs(&dir).unwrap();
}

/// Removes the mount at `path` behind the driver's back (lazily if busy).
fn unmount_behind_the_drivers_back(path: &Path) {
    use rustix::mount::{UnmountFlags, unmount};
    match unmount(path, UnmountFlags::empty()) {
        Err(rustix::io::Errno::BUSY) => unmount(path, UnmountFlags::DETACH).unwrap(),
        other => other.unwrap(),
    }
}

/// `e2fsck -fn` of an image: exit code 0 means clean.
fn fsck_clean(image: &Path) -> bool {
    let out = Command::new("timeout")
        .args(["-k", "5", "60", "e2fsck", "-fn"])
        .arg(image)
        .output()
        .expect("run e2fsck");
    out.status.code() == Some(0)
}

/// What an OK answer must come with.
#[derive(Clone, Copy, PartialEq)]
enum IfOk {
    /// OK is wrong here.
    Refuse,
    /// A copy that `e2fsck -fn` finds clean.
    CleanExt4,
    /// Any copy (the source holds no filesystem).
    Any,
}

/// A clone and a snapshot of `source`: each must be FAILED_PRECONDITION (naming `needle`), or
/// OK as `if_ok` says (the copy is removed again). Returns the two codes.
async fn clone_and_snapshot(
    h: &Harness,
    source: &str,
    label: &str,
    needle: &str,
    if_ok: IfOk,
) -> [Code; 2] {
    let clone = h
        .create(req(
            &format!("{label}-clone"),
            mount_cap(""),
            0,
            vol_src(source),
        ))
        .await;
    never_frozen(h, &format!("{label}: clone"));
    let snapshot = h
        .ctl()
        .create_snapshot(csi::CreateSnapshotRequest {
            source_volume_id: source.into(),
            name: format!("{label}-snap"),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().snapshot.expect("snapshot"));
    never_frozen(h, &format!("{label}: snapshot"));
    let clone = clone.map(|v| {
        let image = h.state_dir.join(format!("volumes/{}.img", v.volume_id));
        (v.volume_id, image)
    });
    let snapshot = snapshot.map(|s| {
        let image = h.state_dir.join(format!("snapshots/{}.img", s.snapshot_id));
        (s.snapshot_id, image)
    });
    let mut codes = [Code::Ok; 2];
    for (i, (what, outcome)) in [("clone", clone), ("snapshot", snapshot)]
        .into_iter()
        .enumerate()
    {
        match outcome {
            Err(s) => {
                assert_eq!(s.code(), Code::FailedPrecondition, "{label} {what}: {s:?}");
                assert!(s.message().contains(needle), "{label} {what}: {s:?}");
                codes[i] = Code::FailedPrecondition;
            }
            Ok((id, image)) => {
                assert!(if_ok != IfOk::Refuse, "{label} {what} answered OK ({id})");
                let clean = if_ok == IfOk::Any || fsck_clean(&image);
                assert!(clean, "{label} {what} {id} is not a clean ext4");
                match what {
                    "clone" => h.delete(&id).await,
                    _ => h.delete_snapshot(&id).await,
                }
            }
        }
    }
    codes
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_removed_behind_the_drivers_back() {
    let h = Harness::start().await;
    let (src, staging) = staged_source(&h, "gone").await;
    // Control: while the mount is the volume's own, both copies are made (frozen consistent).
    clone_and_snapshot(&h, &src, "mounted", "", IfOk::CleanExt4).await;

    unmount_behind_the_drivers_back(&staging);
    let needle = staging.to_str().unwrap();
    let codes = clone_and_snapshot(&h, &src, "unmounted", needle, IfOk::Refuse).await;
    assert_eq!(codes, [Code::FailedPrecondition; 2]);

    // Once unstaged the image is idle: copies from it are made.
    unstage(&h, &src, &staging).await;
    clone_and_snapshot(&h, &src, "unstaged", "", IfOk::CleanExt4).await;
    never_frozen(&h, "end");
}

#[tokio::test(flavor = "multi_thread")]
async fn staging_path_replaced_by_a_directory_or_a_symlink_to_root() {
    let h = Harness::start().await;
    let (src, staging) = staged_source(&h, "swapped").await;
    unmount_behind_the_drivers_back(&staging);
    std::fs::remove_dir(&staging).unwrap();
    std::fs::create_dir(&staging).unwrap();
    let codes = clone_and_snapshot(&h, &src, "plain-dir", "not on volume", IfOk::Refuse).await;
    assert_eq!(codes, [Code::FailedPrecondition; 2]);

    std::fs::remove_dir(&staging).unwrap();
    std::os::unix::fs::symlink("/", &staging).unwrap();
    let codes =
        clone_and_snapshot(&h, &src, "symlink", "without following links", IfOk::Refuse).await;
    assert_eq!(codes, [Code::FailedPrecondition; 2]);

    std::fs::remove_file(&staging).unwrap();
    std::fs::create_dir(&staging).unwrap();
    unstage(&h, &src, &staging).await;
    never_frozen(&h, "end");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_on_a_reused_state_dir_after_the_mount_was_removed() {
    let mut h = Harness::start().await;
    let (src, staging) = staged_source(&h, "restart").await;
    h.kill();
    unmount_behind_the_drivers_back(&staging);
    h.restart().await;
    never_frozen(&h, "restart");
    // Start-up may have reconciled the record (then the idle image is copied) or kept it.
    let needle = staging.to_str().unwrap();
    clone_and_snapshot(&h, &src, "restarted", needle, IfOk::CleanExt4).await;
    unstage(&h, &src, &staging).await;
    never_frozen(&h, "end");
}

#[tokio::test(flavor = "multi_thread")]
async fn late_copy_fault_then_unstage_at_once_freezes_nothing_else() {
    let h = Harness::with_args(&["--fault", "clone-returns-before-durable"]).await;
    let (src, mut staging) = staged_source(&h, "late").await;
    let mut clones = Vec::new();
    for round in 0..3 {
        let clone = h
            .create_ok(req(
                &format!("late-{round}"),
                mount_cap(""),
                0,
                vol_src(&src),
            ))
            .await;
        unstage(&h, &src, &staging).await;
        never_frozen(&h, &format!("round {round}: unstaged"));
        clones.push(clone.volume_id);
        staging = stage(&h, &src, &format!("late-{round}"))
            .await
            .expect("stage again");
    }
    // The late renames land; nothing is frozen by them, and each copy is a clean ext4.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    never_frozen(&h, "after the late renames");
    for id in &clones {
        let image = h.state_dir.join(format!("volumes/{id}.img"));
        assert!(fsck_clean(&image), "late clone {id} is not a clean ext4");
    }
    unstage(&h, &src, &staging).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_volume_without_a_filesystem_is_never_frozen_through() {
    let h = Harness::with_args(&["--fault", "failed-clone-leaks"]).await;
    let src = h
        .create_ok(req("full", mount_cap("ext4"), SIZE, None))
        .await;
    // Refused (smaller than the source), but the fault leaves a ready volume with no
    // filesystem under the name; a replay of the same request returns it.
    let small = req("leaked", mount_cap(""), 8 * MIB, vol_src(&src.volume_id));
    h.create_err(small.clone(), Code::OutOfRange).await;
    let leaked = h.create_ok(small).await;
    let staged = stage(&h, &leaked.volume_id, "leaked").await;
    never_frozen(&h, "stage of a volume without a filesystem");
    // Staged without a mount (or refused): never frozen through the bare directory.
    let if_ok = match staged {
        Ok(_) => IfOk::Refuse,
        Err(_) => IfOk::Any,
    };
    clone_and_snapshot(&h, &leaked.volume_id, "leaked", "", if_ok).await;
    if let Ok(staging) = staged {
        unstage(&h, &leaked.volume_id, &staging).await;
    }
    never_frozen(&h, "end");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_freeze_past_its_deadline_is_lifted_and_the_copy_refused() {
    let h = Harness::with_args(&["--freeze-deadline", "200ms", "--copy-pace-ms", "300"]).await;
    let (src, staging) = staged_source_of(&h, "slow", 64 * MIB).await;
    // Enough data for several paced chunks: the copy outlasts the deadline.
    for i in 0..3 {
        std::fs::write(staging.join(format!("big{i}")), vec![i as u8 + 1; 9 << 20]).unwrap();
    }
    sync_fs(&staging);
    let refused = h
        .create(req("slow-clone", mount_cap(""), 0, vol_src(&src)))
        .await
        .expect_err("a copy that outlived its freeze must fail");
    assert!(refused.message().contains("deadline"), "{refused:?}");
    // The source is writable again (the guardian thawed it), well before the copy ended.
    let probe = staging.join("probe");
    let wrote = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || std::fs::write(probe, b"x")),
    )
    .await;
    assert!(matches!(wrote, Ok(Ok(Ok(())))), "source still frozen");
    assert!(
        h.volume_ids().await == vec![src.clone()],
        "no half-made clone"
    );
    unstage(&h, &src, &staging).await;
    never_frozen(&h, "end");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_volume_refuses_an_image_a_loop_device_holds() {
    let h = Harness::start().await;
    let vol = h.create_ok(req("held", block_cap(), MIB, None)).await;
    let image = h.state_dir.join(format!("volumes/{}.img", vol.volume_id));
    let out = Command::new("timeout")
        .args(["-k", "5", "30", "losetup", "--find", "--show"])
        .arg(&image)
        .output()
        .expect("losetup");
    assert!(out.status.success(), "{out:?}");
    let device = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let refused = h
        .ctl()
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: vol.volume_id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("DeleteVolume of a held image");
    let _ = Command::new("timeout")
        .args(["-k", "5", "30", "losetup", "-d", &device])
        .status();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains(&device), "{refused:?}");
    assert!(image.exists() && h.volume_ids().await == vec![vol.volume_id.clone()]);
    h.delete(&vol.volume_id).await;
    assert!(!image.exists());
}

/// _IOWR('X', 119, int) and _IOWR('X', 120, int) from linux/fs.h.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

/// Thaws the filesystem at `path` on drop, whatever the test got to: a frozen volume would
/// block its unstage.
struct ThawOnDrop(std::fs::File);

impl Drop for ThawOnDrop {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: the fd is open and ours; FITHAW ignores its argument.
        unsafe { libc::ioctl(self.0.as_raw_fd(), FITHAW, 0) };
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_thaws_a_volume_a_dead_driver_left_frozen() {
    use std::os::fd::AsRawFd;
    let mut h = Harness::start().await;
    let (src, staging) = staged_source(&h, "left-frozen").await;
    // What a driver and its guardian killed together mid-copy leave: the volume's own
    // filesystem (a loop device of the test's driver, not a machine filesystem) frozen.
    let held = ThawOnDrop(std::fs::File::open(&staging).unwrap());
    // SAFETY: the fd is open and ours; FIFREEZE ignores its argument.
    let rc = unsafe { libc::ioctl(held.0.as_raw_fd(), FIFREEZE, 0) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    h.kill();
    h.restart().await;
    let probe = staging.join("after-restart");
    let wrote = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || std::fs::write(probe, b"x")),
    )
    .await;
    assert!(
        matches!(wrote, Ok(Ok(Ok(())))),
        "start-up left the volume frozen"
    );
    drop(held);
    never_frozen(&h, "restart");
    unstage(&h, &src, &staging).await;
}
