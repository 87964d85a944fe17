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

use anyhow::{Context, Result, bail, ensure};
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
const SCENARIOS: [&str; 5] = [
    "fs-1g-dense",
    "block-10g-100m",
    "fs-1g-dense-xfs-reflink",
    "block-10g-100m-xfs-reflink",
    "concurrent-20x256m",
];

/// Times volume clones (CreateVolume with volume_content_source.volume) of the reference driver.
#[derive(Parser, Debug)]
#[command(about)]
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
    /// Sequential clones per single-source scenario.
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

/// One scenario's result; a row of the table and an element of the JSON array.
#[derive(Serialize, Default, Debug)]
struct Outcome {
    scenario: String,
    /// Filesystem holding the driver's state dir (and so the images being cloned).
    state_fs: String,
    /// "reflink" or "sparse copy", inferred from FICLONE support in the state dir.
    method: String,
    volume_bytes: u64,
    /// Bytes the bench wrote into the source volume.
    data_bytes: u64,
    clones: usize,
    /// Latency of each CreateVolume call, seconds, in completion order.
    clone_secs: Vec<f64>,
    min_secs: f64,
    median_secs: f64,
    max_secs: f64,
    /// Whole clone phase: sum of sequential clones, or wall time of the concurrent burst.
    wall_secs: f64,
    /// Sequential: per clone at the median; concurrent: all clones over the wall time.
    data_mib_per_sec: f64,
    logical_mib_per_sec: f64,
    source_allocated_bytes: u64,
    clone_allocated_bytes: u64,
    verified: String,
    /// Set when the scenario did not run (or failed); the other fields are then empty.
    skipped: Option<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let driver_bin = match &args.driver_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("reference-driver"),
    };
    ensure!(
        driver_bin.is_file(),
        "driver binary {} not found; build it first with `cargo build --release -p reference-driver` \
         (`cargo run --bin clone-bench` builds only the bench) or pass --driver-bin",
        driver_bin.display()
    );
    ensure!(
        rustix::process::geteuid().is_root(),
        "clone-bench needs root: the driver attaches loop devices and mounts filesystems"
    );
    ensure!(args.reps >= 1, "--reps must be at least 1");
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let work_fs = command("findmnt", &["-no", "FSTYPE", "--target"], &[&args.work_dir])?;
    if work_fs.trim() == "tmpfs" {
        bail!(
            "--work-dir {} is on tmpfs; pick a directory on disk",
            args.work_dir.display()
        );
    }
    let work_fs = work_fs.trim().to_string();

    let selected: Vec<&str> = SCENARIOS
        .into_iter()
        .filter(|s| args.scenarios.is_empty() || args.scenarios.iter().any(|a| a == s))
        .collect();
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for name in selected {
        tracing::info!(scenario = name, "starting scenario");
        let t0 = Instant::now();
        let result = if name.ends_with("-xfs-reflink") {
            run_on_xfs(&args, &driver_bin, name).await
        } else {
            let root = args.work_dir.join(name);
            run_scenario(
                &args,
                &driver_bin,
                name,
                &root,
                &format!("{work_fs} (work dir)"),
            )
            .await
        };
        let outcome = result.unwrap_or_else(|e| {
            tracing::error!(scenario = name, error = format!("{e:#}"), "scenario failed");
            skipped(name, format!("failed: {e:#}"))
        });
        tracing::info!(
            scenario = name,
            secs = t0.elapsed().as_secs_f64(),
            "scenario done"
        );
        outcomes.push(outcome);
    }
    eprintln!(
        "clone-bench: all scenarios took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    print!("{}", markdown_table(&outcomes));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&outcomes)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("clone-bench: wrote {}", path.display());
    }
    if outcomes
        .iter()
        .any(|o| matches!(&o.skipped, Some(r) if r.starts_with("failed")))
    {
        bail!("some scenarios failed (see the table)");
    }
    Ok(())
}

fn skipped(name: &str, reason: String) -> Outcome {
    Outcome {
        scenario: name.to_string(),
        skipped: Some(reason),
        ..Outcome::default()
    }
}

/// Runs one scenario in a fresh driver whose state dir lives under `root`.
async fn run_scenario(
    args: &Args,
    driver_bin: &Path,
    name: &str,
    root: &Path,
    state_fs: &str,
) -> Result<Outcome> {
    let mut session = Session::start(driver_bin, root).await?;
    let result = match name.trim_end_matches("-xfs-reflink") {
        "fs-1g-dense" => fs_dense(&mut session, args.reps).await,
        "block-10g-100m" => block_sparse(&mut session, args.reps).await,
        "concurrent-20x256m" => concurrent(&mut session, 20).await,
        other => bail!("unknown scenario {other}"),
    };
    // Tear down whether or not the body failed, so nothing stays mounted or attached.
    let teardown = session.teardown().await;
    let mut outcome = result?;
    teardown?;
    outcome.scenario = name.to_string();
    outcome.state_fs = state_fs.to_string();
    Ok(outcome)
}

async fn run_on_xfs(args: &Args, driver_bin: &Path, name: &str) -> Result<Outcome> {
    if !have_tool("mkfs.xfs") {
        eprintln!("clone-bench: skipping {name}: mkfs.xfs not installed (xfsprogs)");
        return Ok(skipped(name, "mkfs.xfs not installed".into()));
    }
    let xfs = XfsLoop::setup(&args.work_dir)?;
    let result = run_scenario(
        args,
        driver_bin,
        name,
        &xfs.mount.join(name),
        "xfs reflink=1 (loop, 24 GiB)",
    )
    .await;
    drop(xfs); // the driver is stopped by now; unmount, detach, delete the image
    result
}

// ---------------------------------------------------------------- scenarios

async fn fs_dense(s: &mut Session, reps: usize) -> Result<Outcome> {
    let size = GIB;
    let (src, data_bytes, src_hash) = dense_mount_source(s, size, 1000 * MIB).await?;
    let mut times = Vec::new();
    let mut clones = Vec::new();
    for i in 0..reps {
        let (id, took) = s
            .create(&format!("clone-{i}"), size, false, Some(&src))
            .await?;
        eprintln!("clone-bench:   clone {i}: {:.3} s", took.as_secs_f64());
        times.push(took);
        clones.push(id);
    }
    let hash = s.hash_mount_file(&clones[0]).await?;
    ensure!(
        hash == src_hash,
        "clone {} differs from its source: {hash} != {src_hash}",
        clones[0]
    );
    Ok(summary(
        s,
        size,
        data_bytes,
        &src,
        &clones[0],
        &times,
        None,
        "sha256 1/1 equal",
    ))
}

async fn block_sparse(s: &mut Session, reps: usize) -> Result<Outcome> {
    let size = 10 * GIB;
    let writes = 100u64;
    let src = s.create("src", size, true, None).await?.0;
    let device = s.attach(&src, true).await?;
    // 100 distinct 1 MiB slots out of 10240, from a fixed seed so runs are comparable.
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut slots = Vec::new();
    while (slots.len() as u64) < writes {
        let slot = rng.next() % (size / MIB);
        if !slots.contains(&slot) {
            slots.push(slot);
        }
    }
    let mut filler = Filler::new(7);
    let file = std::fs::OpenOptions::new().write(true).open(&device)?;
    for &slot in &slots {
        file.write_all_at(filler.next_mib(), slot * MIB)?;
    }
    file.sync_all()?;
    drop(file);
    s.detach(&src).await?;
    let mut times = Vec::new();
    let mut clones = Vec::new();
    for i in 0..reps {
        let (id, took) = s
            .create(&format!("clone-{i}"), size, true, Some(&src))
            .await?;
        eprintln!("clone-bench:   clone {i}: {:.3} s", took.as_secs_f64());
        times.push(took);
        clones.push(id);
    }
    // Compare the written slots straight from the two images (both unstaged, so flushed).
    let (a, b) = (
        std::fs::File::open(s.image(&src))?,
        std::fs::File::open(s.image(&clones[0]))?,
    );
    let (mut x, mut y) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    for &slot in &slots {
        a.read_exact_at(&mut x, slot * MIB)?;
        b.read_exact_at(&mut y, slot * MIB)?;
        ensure!(x == y, "clone differs from source at MiB {slot}");
    }
    let verified = format!("{writes} written MiB equal");
    Ok(summary(
        s,
        size,
        writes * MIB,
        &src,
        &clones[0],
        &times,
        None,
        &verified,
    ))
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
                let id = response
                    .volume
                    .context("CreateVolume returned no volume")?
                    .volume_id;
                anyhow::Ok((id, t0.elapsed()))
            })
        })
        .collect();
    let mut times = Vec::new();
    let mut clones = Vec::new();
    let mut first_error = None;
    for task in tasks {
        // Collect every id before failing, so teardown can delete all that were made.
        match task.await? {
            Ok((id, took)) => {
                s.volumes.push(id.clone());
                clones.push(id);
                times.push(took);
            }
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    let wall = wall.elapsed();
    if let Some(e) = first_error {
        return Err(e.context("a concurrent clone failed"));
    }
    eprintln!(
        "clone-bench:   {count} clones in {:.3} s",
        wall.as_secs_f64()
    );
    // Hashing all 20 would triple the scenario's run time; first, middle and last suffice.
    let picks = [0, count / 2, count - 1];
    for &i in &picks {
        let hash = s.hash_mount_file(&clones[i]).await?;
        ensure!(hash == src_hash, "clone-{i} differs from the source");
    }
    let verified = format!("sha256 {}/{count} equal", picks.len());
    Ok(summary(
        s,
        size,
        data_bytes,
        &src,
        &clones[0],
        &times,
        Some(wall),
        &verified,
    ))
}

/// Creates an ext4 mount volume and fills one file in it with up to `want` bytes of
/// non-repeating data (less if the filesystem has less room). Returns (id, bytes, sha256).
async fn dense_mount_source(
    s: &mut Session,
    size: u64,
    want: u64,
) -> Result<(String, u64, String)> {
    let src = s.create("src", size, false, None).await?.0;
    let target = s.attach(&src, false).await?;
    let stat = rustix::fs::statvfs(&target)?;
    let room = (stat.f_bavail * stat.f_frsize).saturating_sub(4 * MIB);
    let bytes = want.min(room) / MIB * MIB;
    let t0 = Instant::now();
    let file_path = target.join("data.bin");
    let file = std::fs::File::create(&file_path)?;
    let mut filler = Filler::new(42);
    for i in 0..bytes / MIB {
        file.write_all_at(filler.next_mib(), i * MIB)?;
    }
    file.sync_all()?;
    eprintln!(
        "clone-bench:   wrote {} MiB into the source in {:.1} s",
        bytes / MIB,
        t0.elapsed().as_secs_f64()
    );
    let hash = sha256(&file_path)?;
    s.detach(&src).await?;
    Ok((src, bytes, hash))
}

#[allow(clippy::too_many_arguments)]
fn summary(
    s: &Session,
    size: u64,
    data_bytes: u64,
    src: &str,
    clone: &str,
    times: &[Duration],
    concurrent_wall: Option<Duration>,
    verified: &str,
) -> Outcome {
    let secs: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
    let mut sorted = secs.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let n = secs.len() as f64;
    let (wall, basis, factor) = match concurrent_wall {
        Some(w) => (w.as_secs_f64(), w.as_secs_f64(), n),
        None => (secs.iter().sum(), median, 1.0),
    };
    let mib_s = |bytes: u64| bytes as f64 * factor / MIB as f64 / basis;
    Outcome {
        method: if reflink_supported(&s.state) {
            "reflink"
        } else {
            "sparse copy"
        }
        .into(),
        volume_bytes: size,
        data_bytes,
        clones: secs.len(),
        min_secs: sorted[0],
        median_secs: median,
        max_secs: sorted[sorted.len() - 1],
        wall_secs: wall,
        data_mib_per_sec: mib_s(data_bytes),
        logical_mib_per_sec: mib_s(size),
        clone_secs: secs,
        source_allocated_bytes: allocated(&s.image(src)),
        clone_allocated_bytes: allocated(&s.image(clone)),
        verified: verified.into(),
        ..Outcome::default()
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
    /// (volume id, staging path, target path, block?) of attached volumes.
    attached: Vec<(String, PathBuf, PathBuf, bool)>,
}

impl Session {
    async fn start(driver_bin: &Path, root: &Path) -> Result<Session> {
        if root.exists() {
            // Left by an interrupted run; refuse if anything is still mounted under it.
            let mounts = mounts_under(root)?;
            ensure!(
                mounts.is_empty(),
                "{} still has mounts {mounts:?}; clean up first",
                root.display()
            );
            std::fs::remove_dir_all(root)?;
        }
        let state = root.join("state");
        std::fs::create_dir_all(root.join("node"))?;
        std::fs::create_dir_all(&state)?;
        let (driver, clients) =
            DriverProcess::start(driver_bin, &root.join("driver.sock"), &state, &[]).await?;
        Ok(Session {
            driver: Some(driver),
            clients,
            root: root.to_path_buf(),
            state,
            volumes: Vec::new(),
            attached: Vec::new(),
        })
    }

    fn image(&self, id: &str) -> PathBuf {
        self.state.join("volumes").join(format!("{id}.img"))
    }

    /// CreateVolume; returns the id and the call's latency.
    async fn create(
        &mut self,
        name: &str,
        size: u64,
        block: bool,
        source: Option<&str>,
    ) -> Result<(String, Duration)> {
        let t0 = Instant::now();
        let response = self
            .clients
            .controller
            .create_volume(create_request(name, size, block, source))
            .await
            .with_context(|| format!("CreateVolume {name}"))?
            .into_inner();
        let took = t0.elapsed();
        let id = response
            .volume
            .context("CreateVolume returned no volume")?
            .volume_id;
        self.volumes.push(id.clone());
        Ok((id, took))
    }

    /// NodeStage + NodePublish; returns the target (a directory, or the device node file).
    async fn attach(&mut self, id: &str, block: bool) -> Result<PathBuf> {
        let staging = self.root.join("node").join(format!("{id}-staging"));
        let target = self.root.join("node").join(format!("{id}-target"));
        std::fs::create_dir_all(&staging)?;
        self.clients
            .node
            .node_stage_volume(csi::NodeStageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: path_str(&staging),
                volume_capability: Some(capability(block)),
                ..Default::default()
            })
            .await
            .with_context(|| format!("NodeStageVolume {id}"))?;
        self.attached
            .push((id.into(), staging.clone(), target.clone(), false));
        self.clients
            .node
            .node_publish_volume(csi::NodePublishVolumeRequest {
                volume_id: id.into(),
                staging_target_path: path_str(&staging),
                target_path: path_str(&target),
                volume_capability: Some(capability(block)),
                ..Default::default()
            })
            .await
            .with_context(|| format!("NodePublishVolume {id}"))?;
        self.attached.last_mut().expect("just pushed").3 = true;
        Ok(target)
    }

    /// NodeUnpublish + NodeUnstage of a volume attached by `attach`.
    async fn detach(&mut self, id: &str) -> Result<()> {
        let at = self
            .attached
            .iter()
            .position(|a| a.0 == id)
            .context("not attached")?;
        let (id, staging, target, published) = self.attached.remove(at);
        if published {
            self.clients
                .node
                .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                    volume_id: id.clone(),
                    target_path: path_str(&target),
                })
                .await
                .with_context(|| format!("NodeUnpublishVolume {id}"))?;
        }
        self.clients
            .node
            .node_unstage_volume(csi::NodeUnstageVolumeRequest {
                volume_id: id.clone(),
                staging_target_path: path_str(&staging),
            })
            .await
            .with_context(|| format!("NodeUnstageVolume {id}"))?;
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
                self.attached.retain(|a| a.0 != id);
            }
        }
        for id in self.volumes.drain(..).rev() {
            let request = csi::DeleteVolumeRequest {
                volume_id: id.clone(),
                ..Default::default()
            };
            if let Err(e) = self.clients.controller.delete_volume(request).await {
                errors.push(format!("DeleteVolume {id}: {e}"));
            }
        }
        if let Some(driver) = self.driver.take() {
            driver.stop()?;
        }
        ensure!(errors.is_empty(), "teardown: {}", errors.join("; "));
        // Only the socket and an empty state dir remain; keep the dir if anything is mounted.
        if mounts_under(&self.root)?.is_empty() {
            std::fs::remove_dir_all(&self.root)?;
        }
        Ok(())
    }
}

fn capability(block: bool) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            })
        }),
    }
}

fn create_request(
    name: &str,
    size: u64,
    block: bool,
    source: Option<&str>,
) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: format!("bench-{name}"),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: size as i64,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![capability(block)],
        volume_content_source: source.map(|id| csi::VolumeContentSource {
            r#type: Some(SourceType::Volume(VolumeSource {
                volume_id: id.into(),
            })),
        }),
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
        ensure!(
            !image.exists() && !is_mount_point(&mount)? && mounts_under(&mount)?.is_empty(),
            "{} or a mount at {} is left from an earlier run; remove it first",
            image.display(),
            mount.display()
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
        xfs.device = Some(PathBuf::from(device.trim()));
        std::fs::create_dir_all(&xfs.mount)?;
        command(
            "mount",
            &[],
            &[xfs.device.as_ref().expect("set"), &xfs.mount],
        )?;
        xfs.mounted = true;
        tracing::info!(device = ?xfs.device, mount = %xfs.mount.display(), "xfs reflink filesystem ready");
        Ok(xfs)
    }
}

impl Drop for XfsLoop {
    fn drop(&mut self) {
        let report = |what: &str, r: Result<String>| {
            if let Err(e) = r {
                eprintln!("clone-bench: cleanup: {what}: {e:#}");
            }
        };
        if self.mounted {
            // Normally empty: a failed session may leave mounts or loop devices inside.
            for inner in mounts_under(&self.mount).unwrap_or_default().iter().rev() {
                report("umount", command("umount", &[], &[inner]));
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
            eprintln!("clone-bench: cleanup: remove {}: {e}", self.image.display());
        }
    }
}

// ---------------------------------------------------------------- helpers

/// Runs a tool and returns its stdout; stderr goes into the error.
fn command(program: &str, flags: &[&str], paths: &[&Path]) -> Result<String> {
    let out = Command::new(program)
        .args(flags)
        .args(paths)
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {flags:?} {paths:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn have_tool(name: &str) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(name).exists())
}

/// sha256sum is coreutils and fast; avoids a hashing dependency for the bin.
fn sha256(path: &Path) -> Result<String> {
    let out = command("sha256sum", &[], &[path])?;
    Ok(out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// Mount points strictly below `dir`, in mount order (unmount in reverse).
fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir) && m != dir)
        .collect())
}

fn is_mount_point(dir: &Path) -> Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*path_str(dir))))
}

/// Loop devices whose backing file lies below `dir`.
fn loops_backed_under(dir: &Path) -> Vec<PathBuf> {
    let list = command(
        "losetup",
        &["--list", "--noheadings", "--output", "NAME,BACK-FILE"],
        &[],
    )
    .unwrap_or_default();
    list.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, back)| Path::new(back.trim()).starts_with(dir))
        .map(|(name, _)| PathBuf::from(name))
        .collect()
}

/// xorshift64*: fast, deterministic, good enough to make data incompressible.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Random 1 MiB made once; each MiB handed out is stamped with a counter in every 4 KiB
/// block, so no two blocks are equal (nothing could dedupe) without regenerating the data.
struct Filler {
    buf: Vec<u8>,
    count: u64,
}

impl Filler {
    fn new(seed: u64) -> Filler {
        let mut rng = XorShift(seed | 1);
        let buf = (0..MIB / 8)
            .flat_map(|_| rng.next().to_le_bytes())
            .collect();
        Filler { buf, count: 0 }
    }

    fn next_mib(&mut self) -> &[u8] {
        for (block, chunk) in self.buf.chunks_mut(4096).enumerate() {
            chunk[..8].copy_from_slice(&(self.count * 256 + block as u64).to_le_bytes());
        }
        self.count += 1;
        &self.buf
    }
}

fn size_str(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{} MiB", bytes.div_ceil(MIB))
    }
}

fn markdown_table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| Scenario | State dir on | Method | Volume | Data | Clones | Clone latency min / median / max (s) \
         | Clone phase wall (s) | Data MiB/s | Logical MiB/s | Source / clone allocated | Verified |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        if let Some(reason) = &o.skipped {
            out += &format!(
                "| {} | | skipped | | | | {reason} | | | | | |\n",
                o.scenario
            );
            continue;
        }
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {:.3} / {:.3} / {:.3} | {:.2} | {:.0} | {:.0} | {} / {} | {} |\n",
            o.scenario,
            o.state_fs,
            o.method,
            size_str(o.volume_bytes),
            size_str(o.data_bytes),
            o.clones,
            o.min_secs,
            o.median_secs,
            o.max_secs,
            o.wall_secs,
            o.data_mib_per_sec,
            o.logical_mib_per_sec,
            size_str(o.source_allocated_bytes),
            size_str(o.clone_allocated_bytes),
            o.verified,
        );
    }
    out
}
