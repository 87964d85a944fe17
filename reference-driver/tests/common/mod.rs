//! Shared helpers for the reference driver's integration tests: one real driver process per test
//! (own socket and state dir), request builders, node stage/publish, and data fingerprints.
//! Each test crate uses a different subset.
#![allow(dead_code)]

mod data;
mod scratch;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use csi_proto::v1::{
    self as csi,
    controller_client::ControllerClient,
    node_client::NodeClient,
    volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode},
    volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource},
};
#[allow(unused_imports)] // not every test crate uses the data helpers
pub use data::*;
use reference_driver::client::{ClientError, CsiClients, DriverProcess};
pub use scratch::ScratchFs;
use tonic::transport::Channel;
use tonic::{Code, Status};

pub const MIB: u64 = 1 << 20;

/// A driver process on `<tmp>/csi.sock` with state in `<tmp>/state`. On drop it stops the driver
/// and force-cleans any mount or loop device under `<tmp>`, so a failed test cannot break others;
/// if a test that did not panic left something behind, the drop panics (the driver leaked it).
pub struct Harness {
    process: Option<DriverProcess>,
    pub c: CsiClients,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// Parent of the node dirs (staging, publish targets): on `scratch` when there is one.
    pub node_root: PathBuf,
    /// The test's own filesystem under the node dirs, watched for freezes (root only).
    pub scratch: Option<ScratchFs>,
    extra: Vec<String>,
    seq: AtomicU32,
    // Last field: the directory is removed only after the sweep in `drop`.
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::with_args(&[]).await
    }

    pub async fn with_args(extra: &[&str]) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical tempdir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        write_launcher(&root);
        let scratch = ScratchFs::new(&[&root]);
        let node_root = match &scratch {
            Some(fs) => fs.path().join("node"),
            None => root.join("node"),
        };
        let (process, c) = spawn(&root, &extra).await;
        Harness {
            process: Some(process),
            c,
            state_dir: root.join("state"),
            socket: root.join("csi.sock"),
            node_root,
            scratch,
            root,
            extra,
            seq: AtomicU32::new(0),
            _dir: dir,
        }
    }

    /// Sends `signal` to the driver without waiting for it.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = self.process.as_ref().expect("driver running").pid();
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("driver pid");
        rustix::process::kill_process(pid, signal).expect("signal the driver");
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        self.process.take().expect("driver running").kill();
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.process
            .take()
            .expect("driver running")
            .stop()
            .expect("wait for driver")
    }

    /// Starts the driver again on the same socket and state dir.
    pub async fn restart(&mut self) {
        assert!(self.process.is_none(), "kill or stop the driver first");
        let (process, c) = spawn(&self.root, &self.extra).await;
        self.process = Some(process);
        self.c = c;
    }

    pub fn ctl(&self) -> ControllerClient<Channel> {
        self.c.controller.clone()
    }

    pub fn node(&self) -> NodeClient<Channel> {
        self.c.node.clone()
    }

    pub async fn create(&self, req: csi::CreateVolumeRequest) -> Result<csi::Volume, Status> {
        let r = self.ctl().create_volume(req).await?.into_inner();
        Ok(r.volume.expect("CreateVolumeResponse.volume is REQUIRED"))
    }

    pub async fn create_ok(&self, req: csi::CreateVolumeRequest) -> csi::Volume {
        let name = req.name.clone();
        self.create(req)
            .await
            .unwrap_or_else(|s| panic!("CreateVolume {name:?}: {:?}: {}", s.code(), s.message()))
    }

    /// The request must fail with `code`; returns the status for message checks.
    pub async fn create_err(&self, req: csi::CreateVolumeRequest, code: Code) -> Status {
        let name = req.name.clone();
        match self.create(req).await {
            Ok(v) => panic!("CreateVolume {name:?}: expected {code:?}, got volume {v:?}"),
            Err(s) => {
                assert_eq!(s.code(), code, "CreateVolume {name:?}: {}", s.message());
                s
            }
        }
    }

    pub async fn delete(&self, id: &str) {
        self.ctl()
            .delete_volume(csi::DeleteVolumeRequest {
                volume_id: id.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("DeleteVolume {id}: {s:?}"));
    }

    pub async fn snapshot(&self, name: &str, volume_id: &str) -> csi::Snapshot {
        self.ctl()
            .create_snapshot(csi::CreateSnapshotRequest {
                source_volume_id: volume_id.into(),
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("CreateSnapshot {name}: {s:?}"))
            .into_inner()
            .snapshot
            .expect("CreateSnapshotResponse.snapshot")
    }

    pub async fn delete_snapshot(&self, id: &str) {
        self.ctl()
            .delete_snapshot(csi::DeleteSnapshotRequest {
                snapshot_id: id.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("DeleteSnapshot {id}: {s:?}"));
    }

    pub async fn volumes(&self) -> Vec<csi::Volume> {
        let r = self
            .ctl()
            .list_volumes(csi::ListVolumesRequest::default())
            .await
            .expect("ListVolumes")
            .into_inner();
        assert!(
            r.next_token.is_empty(),
            "unpaged ListVolumes returned a token"
        );
        r.entries.into_iter().filter_map(|e| e.volume).collect()
    }

    pub async fn volume_ids(&self) -> Vec<String> {
        self.volumes()
            .await
            .into_iter()
            .map(|v| v.volume_id)
            .collect()
    }

    pub async fn snapshots(&self) -> Vec<csi::Snapshot> {
        let r = self
            .ctl()
            .list_snapshots(csi::ListSnapshotsRequest::default())
            .await
            .expect("ListSnapshots")
            .into_inner();
        r.entries.into_iter().filter_map(|e| e.snapshot).collect()
    }

    /// NodeStage into a fresh `<node_root>/<n>/staging` (created here, as a CO would) and
    /// NodePublish to `<tmp>/node/<n>/target` (created by the driver).
    pub async fn try_publish(
        &self,
        volume_id: &str,
        cap: &csi::VolumeCapability,
    ) -> Result<Published, Status> {
        let dir = self
            .node_root
            .join(self.seq.fetch_add(1, Ordering::SeqCst).to_string());
        let staging = dir.join("staging");
        fs::create_dir_all(&staging).expect("create staging dir");
        let target = dir.join("target");
        self.node()
            .node_stage_volume(csi::NodeStageVolumeRequest {
                volume_id: volume_id.into(),
                staging_target_path: path_str(&staging),
                volume_capability: Some(cap.clone()),
                ..Default::default()
            })
            .await?;
        let published = Published {
            volume_id: volume_id.into(),
            staging,
            target,
        };
        let r = self
            .node()
            .node_publish_volume(csi::NodePublishVolumeRequest {
                volume_id: volume_id.into(),
                staging_target_path: path_str(&published.staging),
                target_path: path_str(&published.target),
                volume_capability: Some(cap.clone()),
                ..Default::default()
            })
            .await;
        if let Err(s) = r {
            self.unpublish(&published).await;
            return Err(s);
        }
        Ok(published)
    }

    pub async fn publish(&self, volume_id: &str, cap: &csi::VolumeCapability) -> Published {
        self.try_publish(volume_id, cap)
            .await
            .unwrap_or_else(|s| panic!("stage+publish {volume_id}: {s:?}"))
    }

    /// NodeUnpublish + NodeUnstage; both must succeed.
    pub async fn unpublish(&self, p: &Published) {
        self.node()
            .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                volume_id: p.volume_id.clone(),
                target_path: path_str(&p.target),
            })
            .await
            .unwrap_or_else(|s| panic!("NodeUnpublish {}: {s:?}", p.volume_id));
        self.node()
            .node_unstage_volume(csi::NodeUnstageVolumeRequest {
                volume_id: p.volume_id.clone(),
                staging_target_path: path_str(&p.staging),
            })
            .await
            .unwrap_or_else(|s| panic!("NodeUnstage {}: {s:?}", p.volume_id));
    }

    /// NodeGetVolumeStats total bytes at the publish target.
    pub async fn stats_total_bytes(&self, p: &Published) -> u64 {
        let r = self
            .node()
            .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                volume_id: p.volume_id.clone(),
                volume_path: path_str(&p.target),
                staging_target_path: path_str(&p.staging),
            })
            .await
            .expect("NodeGetVolumeStats")
            .into_inner();
        let bytes = r
            .usage
            .iter()
            .find(|u| u.unit == csi::volume_usage::Unit::Bytes as i32)
            .expect("a BYTES usage entry");
        bytes.total as u64
    }

    /// Publishes, runs `f` on the target, unpublishes. If `f` panics, the drop sweep cleans up.
    pub async fn with_published<T>(
        &self,
        volume_id: &str,
        cap: &csi::VolumeCapability,
        f: impl FnOnce(&Path) -> T,
    ) -> T {
        let p = self.publish(volume_id, cap).await;
        let out = f(&p.target);
        self.unpublish(&p).await;
        out
    }

    /// Parsed `<state>/state.json`.
    pub fn state_json(&self) -> serde_json::Value {
        let bytes = fs::read(self.state_dir.join("state.json")).expect("read state.json");
        serde_json::from_slice(&bytes).expect("state.json is JSON")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            let _ = p.stop();
        }
        let mut leaked = sweep(&self.root);
        if self.scratch.is_some() {
            leaked.extend(sweep(&self.node_root));
        }
        if !leaked.is_empty() && !std::thread::panicking() {
            panic!("left behind after the test (cleaned now): {leaked:?}");
        }
    }
}

pub struct Published {
    pub volume_id: String,
    pub staging: PathBuf,
    pub target: PathBuf,
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// A shell launcher that execs the driver binary (same pid) with a quiet log level, so the
/// test output is not buried in per-request info logs. CSI_DRIVER_LOG overrides the level.
fn write_launcher(root: &Path) {
    let bin = env!("CARGO_BIN_EXE_reference-driver");
    let script =
        format!("#!/bin/sh\nRUST_LOG=\"${{CSI_DRIVER_LOG:-error}}\" exec '{bin}' \"$@\"\n");
    let path = root.join("driver.sh");
    fs::write(&path, script).expect("write launcher");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod launcher");
}

async fn spawn(root: &Path, extra: &[String]) -> (DriverProcess, CsiClients) {
    let args: Vec<&str> = extra.iter().map(String::as_str).collect();
    let launcher = root.join("driver.sh");
    let mut attempt = 0;
    loop {
        match DriverProcess::start(
            &launcher,
            &root.join("csi.sock"),
            &root.join("state"),
            &args,
        )
        .await
        {
            Ok(started) => return started,
            // Another test thread forked while our launcher was open for writing.
            Err(ClientError::Spawn { source, .. })
                if source.raw_os_error() == Some(libc::ETXTBSY) && attempt < 50 =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!(
                "starting the driver: {e}: {:?}",
                std::error::Error::source(&e)
            ),
        }
    }
}

/// Lazily unmounts every mount under `root` and detaches loop devices backed by files under it.
/// A detach the kernel deferred because something (e.g. a prober) still had the device open
/// shows up as AUTOCLEAR for a moment: such devices get a grace period before they count.
pub fn sweep(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(root))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    mounts.dedup();
    for m in mounts {
        let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
        found.push(format!("mount {}", m.display()));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut loops = loops_under(root);
    while loops.iter().any(|(_, autoclear, _)| *autoclear) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        loops = loops_under(root);
    }
    for (dev, autoclear, back) in loops {
        let _ = Command::new("losetup").args(["-d", &dev]).status();
        found.push(format!("loop {dev} (autoclear={autoclear}) -> {back}"));
    }
    found
}

/// (device, autoclear, backing file) of loop devices backed by files under `root`.
fn loops_under(root: &Path) -> Vec<(String, bool, String)> {
    let Ok(out) = Command::new("losetup")
        .args([
            "--list",
            "--noheadings",
            "--output",
            "NAME,AUTOCLEAR,BACK-FILE",
        ])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (dev, autoclear) = (parts.next()?, parts.next()?);
            let back = parts.collect::<Vec<_>>().join(" ");
            Path::new(&back)
                .starts_with(root)
                .then(|| (dev.to_string(), autoclear == "1", back))
        })
        .collect()
}

// ---------- request builders ----------

fn cap(access_type: AccessType) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(access_type),
    }
}

/// Mount capability; `fs` may be "" for the driver's default (ext4).
pub fn mount_cap(fs: &str) -> csi::VolumeCapability {
    cap(AccessType::Mount(MountVolume {
        fs_type: fs.into(),
        ..Default::default()
    }))
}

pub fn block_cap() -> csi::VolumeCapability {
    cap(AccessType::Block(BlockVolume {}))
}

pub fn vol_src(id: &str) -> Option<csi::VolumeContentSource> {
    Some(csi::VolumeContentSource {
        r#type: Some(SourceType::Volume(VolumeSource {
            volume_id: id.into(),
        })),
    })
}

pub fn snap_src(id: &str) -> Option<csi::VolumeContentSource> {
    Some(csi::VolumeContentSource {
        r#type: Some(SourceType::Snapshot(SnapshotSource {
            snapshot_id: id.into(),
        })),
    })
}

/// CreateVolume; `required` 0 leaves capacity_range out.
pub fn req(
    name: &str,
    cap: csi::VolumeCapability,
    required: u64,
    source: Option<csi::VolumeContentSource>,
) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.into(),
        capacity_range: (required > 0).then_some(csi::CapacityRange {
            required_bytes: required as i64,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap],
        volume_content_source: source,
        ..Default::default()
    }
}

/// The response's content source as (kind, id) for exact comparisons.
pub fn source_of(v: &csi::Volume) -> Option<(&'static str, String)> {
    match v.content_source.as_ref()?.r#type.as_ref()? {
        SourceType::Volume(s) => Some(("volume", s.volume_id.clone())),
        SourceType::Snapshot(s) => Some(("snapshot", s.snapshot_id.clone())),
    }
}
