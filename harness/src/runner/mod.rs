//! Runs a plan: starts the target, opens the session (ledger, handles, preflight), builds
//! libtest-mimic trials (each `block_on`s its case on the run's one runtime), emits events to
//! the reporters, cleans up LIFO, takes a before/after inventory, tears the target down and
//! writes the reports.

mod discover;
mod health;
mod interrupt;
mod session;
mod trials;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Trial};
use reports::{Collector, Outcome, Reporter, RunEvent, RunReport};

use crate::context::{CaseCtx, RunSettings};
use crate::plan::Planned;
use crate::profile::DriverProfile;
use crate::target::{Target, TargetError, TargetSpec};
use trials::{Job, record, run_silently, run_trial};

#[derive(Clone, Debug, Default)]
pub struct ReportPaths {
    pub junit: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
}

pub struct RunOptions {
    pub target: TargetSpec,
    pub profile: Arc<DriverProfile>,
    /// How the profile is named in reports (a path or "reference (built-in)").
    pub profile_label: String,
    pub seed: u64,
    pub parallel_clones: usize,
    pub test_threads: usize,
    pub reports: ReportPaths,
    /// Parent for the run's sandbox (staging and target paths, the embedded driver's state,
    /// the local cluster).
    pub work_dir: PathBuf,
    pub connect_timeout: Duration,
    pub properties: BTreeMap<String, String>,
    /// Image of the data pods on a cluster (overrides the profile's).
    pub pod_image: Option<String>,
    /// Run the cases without libtest-mimic's output (for runs inside other tests, such as the
    /// mutation matrix); events and reports are the same.
    pub silent: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no cases selected")]
    NothingSelected,
    #[error("reach the target")]
    Target(#[from] TargetError),
    #[error("the cluster is not ready for the suites:\n  - {}", .0.join("\n  - "))]
    Preflight(Vec<String>),
    #[error("prepare the run: {0}")]
    Setup(String),
    #[error("write reports")]
    Reports(#[from] reports::ReportError),
}

/// Fans events out to every reporter and keeps the report.
struct Events {
    collector: Collector,
    reporters: Vec<Box<dyn Reporter>>,
}

impl Events {
    fn emit(this: &Mutex<Events>, event: RunEvent) {
        let mut events = this.lock().unwrap_or_else(|p| p.into_inner());
        events.collector.event(&event);
        for reporter in &mut events.reporters {
            reporter.event(&event);
        }
    }
}

pub fn run(
    planned: Vec<Planned>,
    options: RunOptions,
    reporters: Vec<Box<dyn Reporter>>,
) -> Result<RunReport, RunError> {
    if planned.is_empty() {
        return Err(RunError::NothingSelected);
    }
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| RunError::Setup(format!("tokio runtime: {e}")))?;
    let run_tag = run_tag();
    let work_dir = options.work_dir.join(format!("run-{run_tag}"));
    std::fs::create_dir_all(&work_dir)
        .map_err(|e| RunError::Setup(format!("create {}: {e}", work_dir.display())))?;
    let settings = Arc::new(RunSettings {
        seed: options.seed,
        parallel_clones: options.parallel_clones,
        run_tag: run_tag.clone(),
        work_dir: work_dir.clone(),
    });

    let (mut target, session) = start_and_open(&runtime, &options, &settings, &work_dir)?;
    // What the profile left to the driver is known now: cases needing what it lacks are skipped.
    let mut planned = planned;
    crate::plan::recheck(&mut planned, &session.profile);
    let events = Arc::new(Mutex::new(Events {
        collector: Collector::new(),
        reporters,
    }));
    let skipped = planned.iter().filter(|p| p.skip_reason.is_some()).count();
    Events::emit(
        &events,
        RunEvent::RunStarted {
            run: session.info.clone(),
            selected: planned.len(),
            skipped,
        },
    );

    let trials = build_trials(planned, &options, &session, &runtime, &events);
    execute(trials, &options);
    if session.ledger.is_stopping() {
        // Interrupted: the handler is cleaning up and exits; reports would be partial.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    // Whatever a case could not remove gets one more LIFO pass; what still fails is a leak.
    let _ = runtime.block_on(session.ledger.cleanup(None));
    let mut leaks = session.ledger.leaks();
    leaks.extend(runtime.block_on(inventory_leaks(&session)));
    let embedded = target.kind == "embedded";
    for problem in runtime.block_on(target.shutdown()) {
        leaks.push(format!("host: {problem}"));
    }
    drop(target);
    remove_empty_dirs(&work_dir);
    Events::emit(
        &events,
        RunEvent::RunFinished {
            duration_secs: started.elapsed().as_secs_f64(),
            leaks,
            target_lost: session.ledger.lost(),
        },
    );
    let report = {
        let mut events = events.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut events.collector, Collector::new())
            .into_report()
            .expect("run started and finished")
    };
    reports::write_all(
        &report,
        options.reports.junit.as_deref(),
        options.reports.json.as_deref(),
        options.reports.markdown.as_deref(),
    )?;
    if embedded {
        keep_or_remove_state(&report, &work_dir);
    }
    Ok(report)
}

/// Starts the target and opens the session, then hands the signals to the interrupt handler.
/// A signal before that stops the start (an embedded driver is stopped with it) or undoes
/// what the session made, and exits. The local cluster answers signals during its own start.
fn start_and_open(
    runtime: &tokio::runtime::Runtime,
    options: &RunOptions,
    settings: &Arc<RunSettings>,
    work_dir: &std::path::Path,
) -> Result<(Target, session::Session), RunError> {
    let mut signals = interrupt::signals(runtime);
    let start = Target::start(&options.target, work_dir, options.connect_timeout);
    let started = match options.target {
        TargetSpec::LocalCluster { .. } => Ok(runtime.block_on(start)),
        _ => runtime.block_on(interrupt::or_signal(&mut signals, start)),
    };
    let mut target = match started {
        Ok(Ok(target)) => target,
        Ok(Err(e)) => {
            remove_empty_dirs(work_dir);
            return Err(e.into());
        }
        Err(signal) => {
            eprintln!("csi-clone-conformance: {signal} while starting the target; stopped");
            remove_empty_dirs(work_dir);
            std::process::exit(crate::signals::exit_code(signal));
        }
    };
    let ledger = Arc::new(session::ledger_for(&target, options));
    let handler = interrupt::Interrupt {
        ledger: ledger.clone(),
        driver_pid: target.pid(),
        work_dir: work_dir.to_path_buf(),
        local: target.local.clone(),
        quiesce: interrupt::QUIESCE_LIMIT
            .min(Duration::from_secs(options.profile.timeouts.rpc_secs)),
        budget: interrupt::CLEANUP_BUDGET,
    };
    let open = session::open(&target, options, settings.clone(), ledger.clone());
    match runtime.block_on(interrupt::or_signal(&mut signals, open)) {
        Ok(Ok(session)) => {
            interrupt::install(runtime, signals, handler);
            Ok((target, session))
        }
        Ok(Err(e)) => {
            // A class made before a later check failed is the run's to remove.
            let _ = runtime.block_on(ledger.cleanup(None));
            report_teardown(runtime.block_on(target.shutdown()));
            remove_empty_dirs(work_dir);
            Err(e)
        }
        Err(signal) => {
            let ending = runtime.block_on(handler.handle(signal, interrupt::next(&mut signals)));
            std::process::exit(ending.code);
        }
    }
}

fn build_trials(
    planned: Vec<Planned>,
    options: &RunOptions,
    session: &session::Session,
    runtime: &tokio::runtime::Runtime,
    events: &Arc<Mutex<Events>>,
) -> Vec<(String, Option<Job>)> {
    let case_limit = case_limit(&options.profile);
    let mut trials: Vec<(String, Option<Job>)> = Vec::new();
    for (owner, item) in planned.into_iter().enumerate() {
        if let Some(reason) = &item.skip_reason {
            let outcome = Outcome::Skipped {
                reason: reason.clone(),
            };
            let record = record(&item, outcome, 0.0, Vec::new(), Vec::new());
            Events::emit(events, RunEvent::CaseFinished { record });
            trials.push((item.name.clone(), None));
            continue;
        }
        let handle = runtime.handle().clone();
        let ctx = CaseCtx::new(
            session.handles.clone(),
            session.profile.clone(),
            session.settings.clone(),
            session.ledger.clone(),
            owner,
            &item.name,
        );
        let events = events.clone();
        let name = item.name.clone();
        let job: Job = Box::new(move || run_trial(item, ctx, handle, events, case_limit));
        trials.push((name, Some(job)));
    }
    trials
}

/// Long enough for the slowest flow a case may have: several clones, or (on a cluster)
/// several claims binding and pods starting and stopping.
fn case_limit(profile: &DriverProfile) -> Duration {
    let t = &profile.timeouts;
    let csi = t.clone_secs * 2 + t.rpc_secs * 4;
    let cluster = t.bind_secs * 2 + t.pod_secs * 4 + t.delete_secs * 2;
    Duration::from_secs(csi.max(cluster))
}

fn execute(trials: Vec<(String, Option<Job>)>, options: &RunOptions) {
    if options.silent {
        return run_silently(trials, options.test_threads);
    }
    let trials = trials
        .into_iter()
        .map(|(name, job)| match job {
            Some(job) => Trial::test(name, job),
            None => Trial::test(name, || Ok(())).with_ignored_flag(true),
        })
        .collect();
    let arguments = Arguments {
        test_threads: Some(options.test_threads.max(1)),
        ..Arguments::default()
    };
    let _conclusion = libtest_mimic::run(&arguments, trials);
}

/// Volumes listed now that were neither there before nor made by a recorded call.
async fn inventory_leaks(session: &session::Session) -> Vec<String> {
    let Some(before) = &session.inventory_before else {
        return Vec::new();
    };
    let Ok(after) = session.run_ctx.list_volumes().await else {
        return Vec::new();
    };
    let ours: BTreeSet<String> = session.ledger.volume_ids().into_iter().collect();
    after
        .into_iter()
        .filter(|v| !before.contains(&v.volume_id) && !ours.contains(&v.volume_id))
        .map(|v| format!("volume {} appeared during the run and is still listed (not created by a recorded call, or not deleted)", v.volume_id))
        .collect()
}

fn report_teardown(problems: Vec<String>) {
    for problem in problems {
        eprintln!("csi-clone-conformance: tear-down: {problem}");
    }
}

/// The embedded driver's state and log are ours: gone after a clean run, kept to look at
/// otherwise (never while anything is still mounted below).
fn keep_or_remove_state(report: &RunReport, work_dir: &std::path::Path) {
    if crate::exit::for_report(report) == crate::exit::PASSED && !has_mounts_below(work_dir) {
        let _ = std::fs::remove_dir_all(work_dir);
    } else if work_dir.exists() {
        eprintln!(
            "csi-clone-conformance: embedded driver state and log kept in {}",
            work_dir.display()
        );
    }
}

/// Whether anything is mounted at or below `dir` (from /proc/self/mountinfo).
fn has_mounts_below(dir: &std::path::Path) -> bool {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    let prefix = dir.display().to_string();
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| mount_point.replace("\\040", " ").starts_with(&prefix))
}

/// Removes the sandbox bottom-up, directories only: a leftover file or a mount point that is
/// still busy stays, so no volume data is ever deleted through a stale bind mount.
fn remove_empty_dirs(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:06x}",
        (nanos as u64 ^ u64::from(std::process::id()).rotate_left(32)) & 0xff_ffff
    )
}

pub(super) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
