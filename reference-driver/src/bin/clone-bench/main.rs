//! `clone-bench`: times CreateVolume-from-volume clones through the real gRPC API of the
//! reference driver, run as a child process. Progress goes to stderr (ours and the driver's
//! logs), the Markdown results table to stdout, and optionally JSON to `--json PATH`.
//!
//! Needs root (loop devices, mounts) and the `reference-driver` binary next to this one:
//! `cargo build --release -p reference-driver && target/release/clone-bench`.
//!
//! Modules: `scenarios` (the measured bodies), `volumes` (the driver session and its gRPC
//! volume helpers), `xfs` (the XFS loop-mount guard), `report` (results, table and JSON),
//! `host` (external tools and mount/loop inspection).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use clap::builder::PossibleValuesParser;

// Defined before the modules so they can use it.
macro_rules! say {
    ($($arg:tt)*) => { eprintln!("clone-bench: {}", format_args!($($arg)*)) };
}

mod host;
mod report;
mod scenarios;
mod volumes;
mod xfs;

use host::command;
use report::{Outcome, markdown_table};
use scenarios::{block_sparse, concurrent, fs_dense};
use volumes::Session;
use xfs::XfsLoop;

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
