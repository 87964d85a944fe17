//! Helpers for the node tests: the knob-driven `losetup` double, views of the host
//! (loop devices bound to an image, mounts from /proc/self/mountinfo), the host/state agreement
//! check, and node calls with client deadlines. Shared by `node_safety.rs` and `node_units.rs`,
//! each of which uses a subset.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use csi_proto::v1 as csi;
use tonic::Code;

pub const VOL: u64 = 16 * MIB;
/// Far shorter than a slowed operation (the knobs sleep 2 s).
pub const SHORT: Duration = Duration::from_millis(300);
pub const SETTLE: Duration = Duration::from_secs(20);

// ---------- knobs: a losetup that misbehaves on request ----------

pub fn real_losetup() -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join("losetup"))
        .find(|p| p.exists())
        .expect("losetup installed")
}

pub fn knob(h: &Harness, name: &str) -> PathBuf {
    h.root.join("knobs").join(name)
}

pub fn set_knob(h: &Harness, name: &str, on: bool) {
    let path = knob(h, name);
    if on {
        fs::write(&path, b"").expect("set knob");
    } else {
        let _ = fs::remove_file(&path);
    }
}

/// Restarts the driver with the knob-aware `losetup` first on its PATH.
pub async fn with_knobs(mut h: Harness) -> Harness {
    let bin = h.root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(h.root.join("knobs")).unwrap();
    let knobs = h.root.join("knobs");
    let script = format!(
        r#"#!/bin/sh
# Test double: the real losetup, failing or slowed while a knob file exists.
k='{knobs}'
case " $* " in
  *" -d "*)
    if [ -e "$k/fail-detach" ]; then rm -f "$k/fail-detach"; echo "losetup: injected detach failure" >&2; exit 1; fi
    if [ -e "$k/slow-detach" ]; then sleep 2; fi ;;
  *" --find "*)
    '{real}' "$@"; rc=$?
    if [ -e "$k/slow-attach" ]; then sleep 2; fi
    exit $rc ;;
esac
exec '{real}' "$@"
"#,
        knobs = knobs.display(),
        real = real_losetup().display()
    );
    let tool = bin.join("losetup");
    fs::write(&tool, script).unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    h.stop();
    let launcher = h.root.join("driver.sh");
    let text = fs::read_to_string(&launcher).unwrap();
    let (shebang, rest) = text.split_once('\n').unwrap();
    let path_line = format!("PATH='{}':\"$PATH\"; export PATH", bin.display());
    let tmp = h.root.join("driver.sh.tmp");
    fs::write(&tmp, format!("{shebang}\n{path_line}\n{rest}")).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&tmp, &launcher).unwrap();
    h.restart().await;
    h
}

// ---------- host views ----------

pub fn image(h: &Harness, id: &str) -> PathBuf {
    h.state_dir.join("volumes").join(format!("{id}.img"))
}

/// Loop devices bound to `image` (losetup matches by device and inode). A detach the kernel
/// deferred because a prober (udev's blkid) still had the device open shows as AUTOCLEAR for
/// a moment; such devices get a short grace period before they count.
pub fn loops_of(image: &Path) -> Vec<String> {
    let started = Instant::now();
    loop {
        let listed = list_loops(image);
        let detaching = listed.iter().any(|(_, autoclear)| *autoclear);
        if !detaching || started.elapsed() > Duration::from_secs(3) {
            return listed.into_iter().map(|(name, _)| name).collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn list_loops(image: &Path) -> Vec<(String, bool)> {
    let out = Command::new("timeout")
        .args([
            "30",
            "losetup",
            "--noheadings",
            "--output",
            "NAME,AUTOCLEAR",
        ])
        .arg("--associated")
        .arg(image)
        .output()
        .expect("losetup");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()? == "1"))
        })
        .collect()
}

/// (major:minor, fstype) of every mount at `path`, bottom first.
pub fn mounts_at(path: &Path) -> Vec<(String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    info.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?;
            (Path::new(fields.get(4)?) == path).then(|| (fields[2].to_string(), fstype.to_string()))
        })
        .collect()
}

/// Every mount of the device `dev` ("major:minor") under `root` (a freed loop device number
/// may be taken by a parallel test at once, so only this test's node dirs are looked at).
pub fn mounts_of_dev(dev: &str, root: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = root.canonicalize().unwrap();
    info.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            (fields.get(2) == Some(&dev)).then(|| PathBuf::from(fields[4]))
        })
        .filter(|p| p.starts_with(&root))
        .collect()
}

pub fn rdev(device: &str) -> String {
    let r = fs::metadata(device).unwrap().rdev();
    format!("{}:{}", rustix::fs::major(r), rustix::fs::minor(r))
}

pub fn staged_record(h: &Harness, id: &str) -> Option<serde_json::Value> {
    let v = h.state_json()["volumes"][id]["staged"].clone();
    (!v.is_null()).then_some(v)
}

pub fn node_work(h: &Harness, id: &str) -> serde_json::Value {
    h.state_json()["node_work"][id].clone()
}

pub fn never_frozen(h: &Harness, step: &str) {
    if let Some(s) = h.scratch.as_ref() {
        s.assert_never_frozen(step);
    }
}

/// The invariant: staged in the state ⇔ one loop device holds the image and (mount volumes)
/// the staging path is a mount of exactly that device; not staged ⇔ neither exists.
pub fn assert_agree(h: &Harness, id: &str, staging: &Path, mount: bool) {
    let loops = loops_of(&image(h, id));
    match staged_record(h, id) {
        Some(staged) => {
            assert_eq!(loops.len(), 1, "staged {id}: loop devices {loops:?}");
            assert_eq!(staged["device"], loops[0].as_str(), "recorded device");
            let mounts = mounts_at(staging);
            if mount {
                assert_eq!(mounts.len(), 1, "staged {id}: mounts at staging {mounts:?}");
                assert_eq!(
                    mounts[0].0,
                    rdev(&loops[0]),
                    "staging mount is the volume's device"
                );
            }
        }
        None => {
            assert!(
                loops.is_empty(),
                "unstaged {id}: loop devices left {loops:?}"
            );
            assert!(
                mounts_at(staging).is_empty(),
                "unstaged {id}: mount left at staging"
            );
            assert!(
                node_work(h, id).is_null(),
                "unstaged {id}: {}",
                node_work(h, id)
            );
        }
    }
}

pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < SETTLE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------- node calls ----------

pub fn staging_dir(h: &Harness, name: &str) -> PathBuf {
    let dir = h.node_root.join(name).join("staging");
    fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// NodeStage with an optional client deadline (grpc-timeout, and the client stops waiting).
pub async fn stage(
    h: &Harness,
    id: &str,
    path: &Path,
    cap: &csi::VolumeCapability,
    deadline: Option<Duration>,
) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(csi::NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: s(path),
        volume_capability: Some(cap.clone()),
        ..Default::default()
    });
    let mut node = h.node();
    match deadline {
        None => node.node_stage_volume(request).await.map(drop),
        Some(d) => {
            request.set_timeout(d);
            match tokio::time::timeout(d, node.node_stage_volume(request)).await {
                Ok(r) => r.map(drop),
                Err(_) => Err(tonic::Status::deadline_exceeded("client gave up")),
            }
        }
    }
}

pub async fn unstage(
    h: &Harness,
    id: &str,
    path: &Path,
    deadline: Option<Duration>,
) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(csi::NodeUnstageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: s(path),
    });
    let mut node = h.node();
    match deadline {
        None => node.node_unstage_volume(request).await.map(drop),
        Some(d) => {
            request.set_timeout(d);
            match tokio::time::timeout(d, node.node_unstage_volume(request)).await {
                Ok(r) => r.map(drop),
                Err(_) => Err(tonic::Status::deadline_exceeded("client gave up")),
            }
        }
    }
}

pub fn code_of(r: Result<(), tonic::Status>) -> Code {
    r.err().map_or(Code::Ok, |s| s.code())
}

/// A clone and a snapshot of `id` (while in whatever node state it is), then both deleted:
/// they must not freeze anything but the volume's own filesystem.
pub async fn clone_and_snapshot(h: &Harness, id: &str, name: &str) {
    let clone = h.create_ok(req(name, mount_cap(""), 0, vol_src(id))).await;
    let snap = h.snapshot(&format!("{name}-snap"), id).await;
    never_frozen(h, name);
    h.delete(&clone.volume_id).await;
    h.delete_snapshot(&snap.snapshot_id).await;
}

pub fn mount_tmpfs(path: &Path) {
    rustix::mount::mount(
        "tmpfs",
        path,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .expect("mount tmpfs");
}

pub async fn publish_call(
    h: &Harness,
    id: &str,
    staging: &Path,
    target: &Path,
    deadline: Duration,
) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(csi::NodePublishVolumeRequest {
        volume_id: id.into(),
        staging_target_path: s(staging),
        target_path: s(target),
        volume_capability: Some(mount_cap("")),
        ..Default::default()
    });
    request.set_timeout(deadline);
    let mut node = h.node();
    match tokio::time::timeout(deadline, node.node_publish_volume(request)).await {
        Ok(r) => r.map(drop),
        Err(_) => Err(tonic::Status::deadline_exceeded("client gave up")),
    }
}

pub async fn unpublish_call(
    h: &Harness,
    id: &str,
    target: &Path,
    deadline: Duration,
) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(csi::NodeUnpublishVolumeRequest {
        volume_id: id.into(),
        target_path: s(target),
    });
    request.set_timeout(deadline);
    let mut node = h.node();
    match tokio::time::timeout(deadline, node.node_unpublish_volume(request)).await {
        Ok(r) => r.map(drop),
        Err(_) => Err(tonic::Status::deadline_exceeded("client gave up")),
    }
}
