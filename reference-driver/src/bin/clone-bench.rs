//! `clone-bench`: times CreateVolume-from-volume clones through the real gRPC API of the
//! reference driver, run as a child process. Progress goes to stderr (ours and the driver's
//! logs), the Markdown results table to stdout, and optionally JSON to `--json PATH`.
//!
//! Needs root (loop devices, mounts) and the `reference-driver` binary next to this one:
//! `cargo build --release -p reference-driver && target/release/clone-bench`.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use clap::builder::PossibleValuesParser;
use csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode};
use csi::volume_content_source::{Type as SourceType, VolumeSource};
use csi_proto::v1 as csi;
use reference_driver::client::{CsiClients, DriverProcess};
use reference_driver::storage::copy::reflink_supported;
use serde::Serialize;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const XFS_SUFFIX: &str = "-xfs-reflink";
const SCENARIOS: [&str; 5] = [
    "fs-1g-dense",
    "block-10g-100m",
    "fs-1g-dense-xfs-reflink",
    "block-10g-100m-xfs-reflink",
    "concurrent-20x256m",
];

macro_rules! say {
    ($($arg:tt)*) => { eprintln!("clone-bench: {}", format_args!($($arg)*)) };
}

/// Times volume clones (CreateVolume with volume_content_source.volume) of the reference driver.
#[derive(Parser, Debug)]
struct Args {
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only these scenarios (repeatable); default: all.
    #[arg(long = "scenario", value_parser = PossibleValuesParser::new(SCENARIOS))]
    scenarios: Vec<String>,
    /// Scratch directory for state dirs and the XFS image; must be on a real disk, not tmpfs.
    #[arg(long, default_value = "/var/tmp/clone-bench")]
    work_dir: PathBuf,
    /// Driver binary (default: `reference-driver` next to this executable).
    #[arg(long)]
    driver_bin: Option<PathBuf>,
    /// Sequential clones per single-source scenario (at least 1).
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

/// One scenario's result: a row of the table and an element of the JSON array. `state_fs`
/// holds the images being cloned; `method` is inferred from FICLONE support there;
/// `data_bytes` is what the bench wrote into the source; `clone_secs` are CreateVolume latencies.
#[derive(Serialize, Default, Debug)]
struct Outcome {
    scenario: String,
    state_fs: String,
    method: String,
    volume_bytes: u64,
    data_bytes: u64,
    clone_secs: Vec<f64>,
    min_secs: f64,
    median_secs: f64,
    max_secs: f64,
    /// Whole clone phase: sum of sequential clones, or wall time of the concurrent burst.
    wall_secs: f64,
    /// Sequential: one clone at the median latency; concurrent: all clones over the wall time.
    data_mib_per_sec: f64,
    logical_mib_per_sec: f64,
    /// st_blocks * 512 of the source and first clone images (shared extents count in both).
    source_allocated_bytes: u64,
    clone_allocated_bytes: u64,
    verified: String,
    /// Why the scenario did not run, or how it failed; the measurements are then empty.
    skipped: Option<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let driver_bin = match &args.driver_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("reference-driver"),
    };
    ensure!(
        driver_bin.is_file(),
        "driver binary {} not found; build it with `cargo build --release -p reference-driver` \
         (`cargo run --bin clone-bench` builds only the bench) or pass --driver-bin",
        driver_bin.display()
    );
    ensure!(
        rustix::process::geteuid().is_root(),
        "clone-bench needs root: the driver attaches loop devices and mounts filesystems"
    );
    let work = &args.work_dir;
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let work_fs = command("findmnt", &["-no", "FSTYPE", "--target"], &[work])?;
    // Stacked mounts print one line each; the last is the one in effect.
    let work_fs = work_fs
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    ensure!(work_fs != "tmpfs", "--work-dir {} is tmpfs", work.display());

    let started = Instant::now();
    let mut outcomes = Vec::new();
    for name in SCENARIOS {
        if !args.scenarios.is_empty() && !args.scenarios.iter().any(|a| a == name) {
            continue;
        }
        say!("=== {name}");
        let t0 = Instant::now();
        let outcome = run_scenario(&args, &driver_bin, name, &work_fs).await;
        outcomes.push(outcome.unwrap_or_else(|e| {
            say!("{name} FAILED: {e:#}");
            skipped(name, format!("failed: {e:#}"))
        }));
        say!("{name} done in {:.1} s", t0.elapsed().as_secs_f64());
    }
    let took = started.elapsed().as_secs_f64();
    say!("all scenarios took {took:.1} s");
    print!("{}", markdown_table(&outcomes));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&outcomes)? + "\n";
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        say!("wrote {}", path.display());
    }
    let failed = |o: &Outcome| o.skipped.as_ref().is_some_and(|r| r.starts_with("failed"));
    ensure!(!outcomes.iter().any(failed), "some scenarios failed");
    Ok(())
}

fn skipped(name: &str, reason: String) -> Outcome {
    let mut outcome = Outcome::default();
    (outcome.scenario, outcome.skipped) = (name.into(), Some(reason));
    outcome
}

/// Runs one scenario against a fresh driver (and, for the XFS ones, a fresh XFS mount).
async fn run_scenario(args: &Args, bin: &Path, name: &str, work_fs: &str) -> Result<Outcome> {
    let on_xfs = name.ends_with(XFS_SUFFIX);
    if on_xfs && Command::new("mkfs.xfs").arg("-V").output().is_err() {
        say!("skipping {name}: mkfs.xfs not installed (xfsprogs)");
        return Ok(skipped(name, "mkfs.xfs not installed".into()));
    }
    // Declared first so it is dropped last: after the driver has stopped.
    let xfs = on_xfs.then(|| XfsLoop::setup(&args.work_dir)).transpose()?;
    let (root, state_fs) = match &xfs {
        Some(xfs) => (xfs.mount.join(name), "xfs reflink=1 (24 GiB loop)".into()),
        None => (args.work_dir.join(name), format!("{work_fs} (work dir)")),
    };
    let mut session = Session::start(bin, &root).await?;
    let reps = args.reps.max(1);
    let result = match name.trim_end_matches(XFS_SUFFIX) {
        "fs-1g-dense" => fs_dense(&mut session, reps).await,
        "block-10g-100m" => block_sparse(&mut session, reps).await,
        _ => concurrent(&mut session, 20).await,
    };
    // Tear down whether or not the body failed, so nothing stays mounted or attached.
    let teardown = session.teardown().await;
    let outcome = result?;
    teardown?;
    Ok(Outcome {
        scenario: name.into(),
        state_fs,
        ..outcome
    })
}

// ---------------------------------------------------------------- scenarios

async fn fs_dense(s: &mut Session, reps: usize) -> Result<Outcome> {
    let size = GIB;
    let (src, data_bytes, src_hash) = dense_mount_source(s, size, 1000 * MIB).await?;
    let (clones, times) = s.clone_sequentially(&src, size, false, reps).await?;
    let hash = s.hash_mount_file(&clones[0]).await?;
    ensure!(hash == src_hash, "clone differs: {hash} != {src_hash}");
    let outcome = s.outcome(&src, &clones[0], size, data_bytes, "sha256 1/1 equal");
    Ok(outcome.timed(&times, None))
}

async fn block_sparse(s: &mut Session, reps: usize) -> Result<Outcome> {
    let (size, writes) = (10 * GIB, 100);
    let src = s.create("src", size, true, None).await?.0;
    let device = s.attach(&src, true).await?;
    // One random 1 MiB slot in each 1/100th of the device: scattered, distinct, and from a
    // fixed seed so runs are comparable.
    let (mut rng, stripe) = (XorShift(0x9e37_79b9_7f4a_7c15), size / MIB / writes);
    let slots: Vec<u64> = (0..writes)
        .map(|i| i * stripe + rng.next() % stripe)
        .collect();
    let mut data = random_mib(7);
    {
        let file = std::fs::OpenOptions::new().write(true).open(&device)?;
        for (n, &slot) in slots.iter().enumerate() {
            file.write_all_at(stamp(&mut data, n as u64), slot * MIB)?;
        }
        file.sync_all()?;
    } // closed before unpublish, or the unmount is busy
    s.detach(&src).await?;
    let (clones, times) = s.clone_sequentially(&src, size, true, reps).await?;
    // Compare the written slots straight from the two images (both unstaged, so flushed).
    let a = std::fs::File::open(s.image(&src))?;
    let b = std::fs::File::open(s.image(&clones[0]))?;
    let (mut x, mut y) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    for &slot in &slots {
        a.read_exact_at(&mut x, slot * MIB)?;
        b.read_exact_at(&mut y, slot * MIB)?;
        ensure!(x == y, "clone differs from source at MiB {slot}");
    }
    let verified = format!("{writes} written MiB equal");
    let outcome = s.outcome(&src, &clones[0], size, writes * MIB, &verified);
    Ok(outcome.timed(&times, None))
}

async fn concurrent(s: &mut Session, count: usize) -> Result<Outcome> {
    let size = 256 * MIB;
    let (src, data_bytes, src_hash) = dense_mount_source(s, size, size).await?;
    let wall = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            // Each task gets its own client handle on the one shared channel.
            let mut controller = s.clients.controller.clone();
            let request = create_request(&format!("clone-{i}"), size, false, Some(&src));
            tokio::spawn(async move {
                let t0 = Instant::now();
                let response = controller.create_volume(request).await?.into_inner();
                let volume = response.volume.context("CreateVolume returned no volume")?;
                anyhow::Ok((volume.volume_id, t0.elapsed()))
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await?);
    }
    let wall = wall.elapsed();
    // Record every id made before failing on any error, so teardown deletes them all.
    let made = results.iter().filter_map(|r| r.as_ref().ok());
    s.volumes.extend(made.map(|(id, _)| id.clone()));
    let (clones, times): (Vec<_>, Vec<_>) = results.into_iter().collect::<Result<_>>()?;
    say!("  {count} concurrent clones in {:.3} s", wall.as_secs_f64());
    // Hashing all 20 would triple the scenario's run time; first, middle and last suffice.
    let picks = [0, count / 2, count - 1];
    for i in picks {
        let hash = s.hash_mount_file(&clones[i]).await?;
        ensure!(hash == src_hash, "clone #{i} differs from the source");
    }
    let verified = format!("sha256 {}/{count} equal", picks.len());
    let outcome = s.outcome(&src, &clones[0], size, data_bytes, &verified);
    Ok(outcome.timed(&times, Some(wall)))
}

/// Creates an ext4 mount volume and fills one file in it with up to `want` bytes of
/// non-repeating data (less if the filesystem has less room). Returns (id, bytes, sha256).
async fn dense_mount_source(s: &mut Session, size: u64, want: u64) -> Result<Source> {
    let src = s.create("src", size, false, None).await?.0;
    let target = s.attach(&src, false).await?;
    let stat = rustix::fs::statvfs(&target)?;
    let room = (stat.f_bavail * stat.f_frsize).saturating_sub(4 * MIB);
    let bytes = want.min(room) / MIB * MIB;
    let (t0, path) = (Instant::now(), target.join("data.bin"));
    {
        let file = std::fs::File::create(&path)?;
        let mut data = random_mib(42);
        for n in 0..bytes / MIB {
            file.write_all_at(stamp(&mut data, n), n * MIB)?;
        }
        file.sync_all()?;
    } // closed before unpublish, or the unmount is busy
    let secs = t0.elapsed().as_secs_f64();
    say!("  wrote {} MiB into the source in {secs:.1} s", bytes / MIB);
    let hash = sha256(&path)?;
    s.detach(&src).await?;
    Ok((src, bytes, hash))
}

/// (volume id, bytes written, sha256 of the data file).
type Source = (String, u64, String);

impl Outcome {
    /// Adds latency statistics; sequential clones are rated one at a time, a concurrent
    /// burst as a whole.
    fn timed(self, times: &[Duration], concurrent_wall: Option<Duration>) -> Outcome {
        let secs: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
        let mut sorted = secs.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let (wall, basis, count) = match concurrent_wall {
            Some(w) => (w.as_secs_f64(), w.as_secs_f64(), secs.len() as f64),
            None => (secs.iter().sum(), median, 1.0),
        };
        let mib_s = |bytes: u64| bytes as f64 * count / MIB as f64 / basis;
        Outcome {
            min_secs: sorted[0],
            median_secs: median,
            max_secs: sorted[sorted.len() - 1],
            wall_secs: wall,
            data_mib_per_sec: mib_s(self.data_bytes),
            logical_mib_per_sec: mib_s(self.volume_bytes),
            clone_secs: secs,
            ..self
        }
    }
}

// ---------------------------------------------------------------- driver session

/// A running driver plus everything the bench made through it, for teardown.
struct Session {
    driver: Option<DriverProcess>,
    clients: CsiClients,
    root: PathBuf,
    state: PathBuf,
    volumes: Vec<String>,
    /// (volume id, staging path, target path, published?) of staged volumes.
    attached: Vec<(String, PathBuf, PathBuf, bool)>,
}

impl Session {
    async fn start(driver_bin: &Path, root: &Path) -> Result<Session> {
        if root.exists() {
            // Left by an interrupted run; refuse if anything is still mounted under it.
            let mounts = mounts_under(root)?;
            ensure!(mounts.is_empty(), "clean up mounts first: {mounts:?}");
            std::fs::remove_dir_all(root)?;
        }
        let state = root.join("state");
        std::fs::create_dir_all(root.join("node"))?;
        std::fs::create_dir_all(&state)?;
        let socket = root.join("driver.sock");
        let (driver, clients) = DriverProcess::start(driver_bin, &socket, &state, &[]).await?;
        let driver = Some(driver);
        let (root, volumes, attached) = (root.to_path_buf(), Vec::new(), Vec::new());
        Ok(Session {
            driver,
            clients,
            root,
            state,
            volumes,
            attached,
        })
    }

    fn image(&self, id: &str) -> PathBuf {
        self.state.join("volumes").join(format!("{id}.img"))
    }

    /// The untimed part of a result: method, sizes, allocation.
    fn outcome(&self, src: &str, clone: &str, size: u64, data: u64, verified: &str) -> Outcome {
        let reflink = reflink_supported(&self.state);
        Outcome {
            method: (if reflink { "reflink" } else { "sparse copy" }).into(),
            volume_bytes: size,
            data_bytes: data,
            source_allocated_bytes: allocated(&self.image(src)),
            clone_allocated_bytes: allocated(&self.image(clone)),
            verified: verified.into(),
            ..Outcome::default()
        }
    }

    /// CreateVolume; returns the id and the call's latency.
    async fn create(
        &mut self,
        name: &str,
        size: u64,
        block: bool,
        src: Option<&str>,
    ) -> Result<(String, Duration)> {
        let request = create_request(name, size, block, src);
        let t0 = Instant::now();
        let response = self.clients.controller.create_volume(request).await;
        let took = t0.elapsed();
        let response = response.with_context(|| format!("CreateVolume {name}"))?;
        let volume = response.into_inner().volume;
        let id = volume.context("CreateVolume returned no volume")?.volume_id;
        self.volumes.push(id.clone());
        Ok((id, took))
    }

    async fn clone_sequentially(
        &mut self,
        src: &str,
        size: u64,
        block: bool,
        reps: usize,
    ) -> Result<(Vec<String>, Vec<Duration>)> {
        let (mut clones, mut times) = (Vec::new(), Vec::new());
        for i in 0..reps {
            let (id, took) = self
                .create(&format!("clone-{i}"), size, block, Some(src))
                .await?;
            say!("  clone {i}: {:.3} s", took.as_secs_f64());
            clones.push(id);
            times.push(took);
        }
        Ok((clones, times))
    }

    /// NodeStage + NodePublish; returns the target (a directory, or the device node file).
    async fn attach(&mut self, id: &str, block: bool) -> Result<PathBuf> {
        let staging = self.root.join("node").join(format!("{id}-staging"));
        let target = self.root.join("node").join(format!("{id}-target"));
        std::fs::create_dir_all(&staging)?;
        let stage = csi::NodeStageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: path_str(&staging),
            volume_capability: Some(capability(block)),
            ..Default::default()
        };
        let stage = self.clients.node.node_stage_volume(stage).await;
        stage.with_context(|| format!("NodeStageVolume {id}"))?;
        let entry = (id.into(), staging.clone(), target.clone(), false);
        self.attached.push(entry);
        let publish = csi::NodePublishVolumeRequest {
            volume_id: id.into(),
            staging_target_path: path_str(&staging),
            target_path: path_str(&target),
            volume_capability: Some(capability(block)),
            ..Default::default()
        };
        let publish = self.clients.node.node_publish_volume(publish).await;
        publish.with_context(|| format!("NodePublishVolume {id}"))?;
        self.attached.last_mut().expect("just pushed").3 = true;
        Ok(target)
    }

    /// NodeUnpublish + NodeUnstage of a volume staged by `attach`; forgotten only on success.
    async fn detach(&mut self, id: &str) -> Result<()> {
        let at = self.attached.iter().position(|a| a.0 == id);
        let at = at.context("not attached")?;
        let (volume_id, staging, target, published) = self.attached[at].clone();
        if published {
            let (volume_id, target_path) = (volume_id.clone(), path_str(&target));
            let request = csi::NodeUnpublishVolumeRequest {
                volume_id,
                target_path,
            };
            let done = self.clients.node.node_unpublish_volume(request).await;
            done.with_context(|| format!("NodeUnpublishVolume {id}"))?;
            self.attached[at].3 = false;
        }
        let staging_target_path = path_str(&staging);
        let request = csi::NodeUnstageVolumeRequest {
            volume_id,
            staging_target_path,
        };
        let done = self.clients.node.node_unstage_volume(request).await;
        done.with_context(|| format!("NodeUnstageVolume {id}"))?;
        self.attached.remove(at);
        let _ = std::fs::remove_dir(&staging);
        Ok(())
    }

    async fn hash_mount_file(&mut self, id: &str) -> Result<String> {
        let target = self.attach(id, false).await?;
        let hash = sha256(&target.join("data.bin"));
        self.detach(id).await?;
        hash
    }

    /// Detaches and deletes everything, stops the driver, removes the scenario dir.
    async fn teardown(mut self) -> Result<()> {
        let mut errors = Vec::new();
        while let Some(id) = self.attached.last().map(|a| a.0.clone()) {
            if let Err(e) = self.detach(&id).await {
                errors.push(format!("{e:#}"));
                self.attached.retain(|a| a.0 != id); // the body had its try; give up
            }
        }
        for volume_id in self.volumes.drain(..).rev() {
            let request = csi::DeleteVolumeRequest {
                volume_id,
                ..Default::default()
            };
            if let Err(e) = self.clients.controller.delete_volume(request).await {
                errors.push(format!("DeleteVolume: {e}"));
            }
        }
        if let Some(driver) = self.driver.take() {
            driver.stop()?;
        }
        ensure!(errors.is_empty(), "teardown: {}", errors.join("; "));
        // Only the socket and empty dirs remain; keep them if anything is still mounted.
        if mounts_under(&self.root)?.is_empty() {
            std::fs::remove_dir_all(&self.root)?;
        }
        Ok(())
    }
}

fn capability(block: bool) -> csi::VolumeCapability {
    let mode = Mode::SingleNodeWriter as i32;
    let fs_type = "ext4".to_string();
    let access_type = match block {
        true => AccessType::Block(BlockVolume {}),
        false => AccessType::Mount(MountVolume {
            fs_type,
            ..Default::default()
        }),
    };
    let access_mode = Some(AccessMode { mode });
    csi::VolumeCapability {
        access_mode,
        access_type: Some(access_type),
    }
}

fn create_request(
    name: &str,
    size: u64,
    block: bool,
    src: Option<&str>,
) -> csi::CreateVolumeRequest {
    let volume = |volume_id| Some(SourceType::Volume(VolumeSource { volume_id }));
    let source = src.map(|id| csi::VolumeContentSource {
        r#type: volume(id.into()),
    });
    let range = csi::CapacityRange {
        required_bytes: size as i64,
        limit_bytes: 0,
    };
    csi::CreateVolumeRequest {
        name: format!("bench-{name}"),
        capacity_range: Some(range),
        volume_capabilities: vec![capability(block)],
        volume_content_source: source,
        ..Default::default()
    }
}

// ---------------------------------------------------------------- XFS loop filesystem

/// A 24 GiB sparse XFS image with reflink, loop-mounted at `<work>/xfs`; undone on drop.
struct XfsLoop {
    image: PathBuf,
    mount: PathBuf,
    device: Option<PathBuf>,
    mounted: bool,
}

impl XfsLoop {
    fn setup(work: &Path) -> Result<XfsLoop> {
        let (image, mount) = (work.join("xfs.img"), work.join("xfs"));
        // Checked before the guard exists, so its Drop never removes an earlier run's files.
        let stale = image.exists() || !mounts_under(&mount)?.is_empty();
        ensure!(
            !stale,
            "{} or its mount is left from an earlier run",
            image.display()
        );
        let mut xfs = XfsLoop {
            image,
            mount,
            device: None,
            mounted: false,
        };
        // Each step records what it did, so Drop undoes exactly that if a later step fails.
        std::fs::File::create_new(&xfs.image)?.set_len(24 * GIB)?;
        command("mkfs.xfs", &["-q", "-m", "reflink=1"], &[&xfs.image])?;
        let device = command("losetup", &["--find", "--show"], &[&xfs.image])?;
        let device = xfs.device.insert(PathBuf::from(device.trim())).clone();
        std::fs::create_dir_all(&xfs.mount)?;
        command("mount", &[], &[&device, &xfs.mount])?;
        xfs.mounted = true;
        say!("xfs (reflink=1) on {} mounted", device.display());
        Ok(xfs)
    }
}

impl Drop for XfsLoop {
    fn drop(&mut self) {
        let report = |what: &str, r: Result<String>| {
            if let Err(e) = r {
                say!("cleanup: {what}: {e:#}");
            }
        };
        if self.mounted {
            // Normally nothing: a failed session may leave mounts or loop devices inside.
            let inner = mounts_under(&self.mount).unwrap_or_default();
            for m in inner.iter().rev().filter(|m| **m != self.mount) {
                report("umount", command("umount", &[], &[m]));
            }
            for dev in loops_backed_under(&self.mount) {
                report("losetup -d", command("losetup", &["-d"], &[&dev]));
            }
            report("umount xfs", command("umount", &[], &[&self.mount]));
        }
        if let Some(device) = &self.device {
            report("losetup -d", command("losetup", &["-d"], &[device]));
        }
        let _ = std::fs::remove_dir(&self.mount);
        if let Err(e) = std::fs::remove_file(&self.image) {
            say!("cleanup: remove {}: {e}", self.image.display());
        }
    }
}

// ---------------------------------------------------------------- helpers

/// Runs a tool and returns its stdout; stderr goes into the error.
fn command(program: &str, flags: &[&str], paths: &[&Path]) -> Result<String> {
    let out = Command::new(program).args(flags).args(paths).output();
    let out = out.with_context(|| format!("running {program}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let what = format!("{program} {flags:?} {paths:?}");
    ensure!(out.status.success(), "{what}: {}", stderr.trim());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// sha256sum is in coreutils and fast; it spares the bin a hashing dependency.
fn sha256(path: &Path) -> Result<String> {
    let out = command("sha256sum", &[], &[path])?;
    let hash = out.split_whitespace().next().unwrap_or_default();
    Ok(hash.to_string())
}

fn allocated(path: &Path) -> u64 {
    let meta = std::fs::metadata(path);
    meta.map(|m| m.blocks() * 512).unwrap_or(0)
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// Mount points at or below `dir`, in mount order (unmount in reverse).
fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let points = info.lines().filter_map(|l| l.split(' ').nth(4));
    let points = points.map(PathBuf::from).filter(|m| m.starts_with(dir));
    Ok(points.collect())
}

/// Loop devices whose backing file lies below `dir`.
fn loops_backed_under(dir: &Path) -> Vec<PathBuf> {
    let flags = ["--list", "--noheadings", "--output", "NAME,BACK-FILE"];
    let list = command("losetup", &flags, &[]).unwrap_or_default();
    let rows = list.lines().filter_map(|l| l.split_once(' '));
    let under = rows.filter(|(_, back)| Path::new(back.trim()).starts_with(dir));
    under.map(|(name, _)| PathBuf::from(name)).collect()
}

/// xorshift64*: fast and deterministic; plenty to make data incompressible.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// 1 MiB of random bytes, made once per source.
fn random_mib(seed: u64) -> Vec<u8> {
    let mut rng = XorShift(seed | 1);
    let words = (0..MIB / 8).map(|_| rng.next().to_le_bytes());
    words.flatten().collect()
}

/// Stamps MiB number `n` into every 4 KiB block of `buf`, so no two blocks written are equal
/// (nothing can dedupe) without regenerating random data for each MiB.
fn stamp(buf: &mut [u8], n: u64) -> &[u8] {
    for (block, chunk) in buf.chunks_mut(4096).enumerate() {
        chunk[..8].copy_from_slice(&(n * 256 + block as u64).to_le_bytes());
    }
    buf
}

fn size_str(bytes: u64) -> String {
    match bytes {
        b if b >= GIB => format!("{:.1} GiB", b as f64 / GIB as f64),
        b => format!("{} MiB", b.div_ceil(MIB)),
    }
}

fn markdown_table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| Scenario | State dir on | Method | Volume | Data | Clones \
         | Clone latency min / median / max (s) | Clone phase wall (s) | Data MiB/s \
         | Logical MiB/s | Source / clone allocated | Verified |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        if let Some(reason) = &o.skipped {
            out += &format!("| {} | | skipped: {reason} |\n", o.scenario);
            continue;
        }
        let cells = [
            o.scenario.clone(),
            o.state_fs.clone(),
            o.method.clone(),
            size_str(o.volume_bytes),
            size_str(o.data_bytes),
            o.clone_secs.len().to_string(),
            format!(
                "{:.3} / {:.3} / {:.3}",
                o.min_secs, o.median_secs, o.max_secs
            ),
            format!("{:.2}", o.wall_secs),
            format!("{:.0}", o.data_mib_per_sec),
            format!("{:.0}", o.logical_mib_per_sec),
            format!(
                "{} / {}",
                size_str(o.source_allocated_bytes),
                size_str(o.clone_allocated_bytes)
            ),
            o.verified.clone(),
        ];
        out += &format!("| {} |\n", cells.join(" | "));
    }
    out
}
