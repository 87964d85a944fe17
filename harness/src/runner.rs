//! Runs a plan: starts the target, builds libtest-mimic trials (each `block_on`s its case on
//! the run's one runtime), emits events to the reporters, cleans up LIFO, takes a
//! before/after inventory and writes the reports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use reports::{CaseRecord, Collector, Outcome, Reporter, RunEvent, RunInfo, RunReport};

use crate::case::CaseError;
use crate::context::{CaseCtx, RunSettings};
use crate::ledger::Ledger;
use crate::plan::Planned;
use crate::profile::DriverProfile;
use crate::target::{Target, TargetError, TargetSpec};

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
    /// Parent for the run's sandbox (staging and target paths, the embedded driver's state).
    pub work_dir: PathBuf,
    pub connect_timeout: Duration,
    pub properties: BTreeMap<String, String>,
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

    let target = runtime.block_on(Target::start(
        &options.target,
        &work_dir,
        options.connect_timeout,
    ))?;
    let secrets = options
        .profile
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let ledger = Arc::new(Ledger::new(
        target.controller.clone(),
        target.node.clone(),
        secrets,
    ));
    let settings = Arc::new(RunSettings {
        seed: options.seed,
        parallel_clones: options.parallel_clones,
        run_tag: run_tag.clone(),
        work_dir: work_dir.clone(),
    });
    let probe_ctx = CaseCtx::new(
        target.controller.clone(),
        target.node.clone(),
        options.profile.clone(),
        settings.clone(),
        ledger.clone(),
        usize::MAX,
        "run",
    );
    let info = runtime.block_on(probe_ctx.plugin_info()).ok();
    let inventory_before = if options.profile.capabilities.list_volumes {
        runtime
            .block_on(probe_ctx.list_volumes())
            .ok()
            .map(|v| v.into_iter().map(|v| v.volume_id).collect::<BTreeSet<_>>())
    } else {
        None
    };
    install_interrupt_handler(&runtime, ledger.clone(), target.pid(), work_dir.clone());

    let mut properties = options.properties.clone();
    properties.insert("csi_spec".into(), csi_proto::CSI_SPEC_VERSION.into());
    properties.insert(
        "parallel_clones".into(),
        options.parallel_clones.to_string(),
    );
    let run_info = RunInfo {
        tool: format!("csi-clone-conformance {}", env!("CARGO_PKG_VERSION")),
        driver_name: info.as_ref().map(|i| i.name.clone()).unwrap_or_default(),
        driver_version: info
            .as_ref()
            .map(|i| i.vendor_version.clone())
            .unwrap_or_default(),
        target: target.kind.to_string(),
        endpoint: target.controller_endpoint.to_string(),
        node_endpoint: target.node_endpoint.to_string(),
        profile: options.profile_label.clone(),
        seed: options.seed,
        started_at: now_rfc3339(),
        properties,
    };
    let events = Arc::new(Mutex::new(Events {
        collector: Collector::new(),
        reporters,
    }));
    let skipped = planned.iter().filter(|p| p.skip_reason.is_some()).count();
    Events::emit(
        &events,
        RunEvent::RunStarted {
            run: run_info,
            selected: planned.len(),
            skipped,
        },
    );

    let case_limit = Duration::from_secs(
        options.profile.timeouts.clone_secs * 2 + options.profile.timeouts.rpc_secs * 4,
    );
    type Job = Box<dyn FnOnce() -> Result<(), Failed> + Send>;
    let mut trials: Vec<(String, Option<Job>)> = Vec::new();
    for (owner, item) in planned.into_iter().enumerate() {
        if let Some(reason) = &item.skip_reason {
            let record = record(
                &item,
                Outcome::Skipped {
                    reason: reason.clone(),
                },
                0.0,
                Vec::new(),
                Vec::new(),
            );
            Events::emit(&events, RunEvent::CaseFinished { record });
            trials.push((item.name.clone(), None));
            continue;
        }
        let handle = runtime.handle().clone();
        let ctx = CaseCtx::new(
            target.controller.clone(),
            target.node.clone(),
            options.profile.clone(),
            settings.clone(),
            ledger.clone(),
            owner,
            &item.name,
        );
        let events = events.clone();
        let name = item.name.clone();
        trials.push((
            name,
            Some(Box::new(move || {
                run_trial(item, ctx, handle, events, case_limit)
            })),
        ));
    }

    if options.silent {
        run_silently(trials, options.test_threads);
    } else {
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
    if ledger.is_stopping() {
        // Interrupted: the handler is cleaning up and will exit 130; reports would be partial.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    // Whatever a case could not remove gets one more LIFO pass; what still fails is a leak.
    let _ = runtime.block_on(ledger.cleanup(None));
    let mut leaks = ledger.leaks();
    if let Some(before) = inventory_before {
        if let Ok(after) = runtime.block_on(probe_ctx.list_volumes()) {
            let ours: BTreeSet<String> = ledger.volume_ids().into_iter().collect();
            for volume in after {
                if !before.contains(&volume.volume_id) && !ours.contains(&volume.volume_id) {
                    leaks.push(format!("volume {} appeared during the run and is still listed (not created by a recorded call, or not deleted)", volume.volume_id));
                }
            }
        }
    }
    let embedded = target.kind == "embedded";
    drop(target);
    remove_empty_dirs(&work_dir);
    Events::emit(
        &events,
        RunEvent::RunFinished {
            duration_secs: started.elapsed().as_secs_f64(),
            leaks,
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
        // The embedded driver's state and log are ours: gone after a clean run, kept to look
        // at otherwise (never while anything is still mounted below).
        if crate::exit::for_report(&report) == crate::exit::PASSED && !has_mounts_below(&work_dir) {
            let _ = std::fs::remove_dir_all(&work_dir);
        } else if work_dir.exists() {
            eprintln!(
                "csi-clone-conformance: embedded driver state and log kept in {}",
                work_dir.display()
            );
        }
    }
    Ok(report)
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

/// The cases on `threads` worker threads, printing nothing (verdicts travel as events).
fn run_silently(
    trials: Vec<(
        String,
        Option<Box<dyn FnOnce() -> Result<(), Failed> + Send>>,
    )>,
    threads: usize,
) {
    // Reversed, so popping runs the cases in plan order.
    let queue = Mutex::new(
        trials
            .into_iter()
            .rev()
            .filter_map(|(_, job)| job)
            .collect::<Vec<_>>(),
    );
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                while let Some(job) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() {
                    let _ = job();
                }
            });
        }
    });
}

fn run_trial(
    item: Planned,
    ctx: CaseCtx,
    handle: tokio::runtime::Handle,
    events: Arc<Mutex<Events>>,
    limit: Duration,
) -> Result<(), Failed> {
    let started = Instant::now();
    Events::emit(
        &events,
        RunEvent::CaseStarted {
            id: item.name.clone(),
        },
    );
    let case = (item.case.run)(ctx.clone());
    let result = handle.block_on(async move { tokio::time::timeout(limit, case).await });
    let cleanup_errors = handle.block_on(ctx.ledger().cleanup(Some(ctx.owner())));
    let mut outcome = match result {
        Ok(Ok(())) => Outcome::Pass,
        Ok(Err(CaseError::Fail(f))) => Outcome::Fail {
            message: f.message,
            expected: f.expected,
            actual: f.actual,
        },
        Ok(Err(CaseError::Error(message))) => Outcome::Error { message },
        Err(_) => Outcome::Error {
            message: format!("case did not finish within {limit:?}"),
        },
    };
    if outcome == Outcome::Pass && !cleanup_errors.is_empty() {
        // Removing what a case made is part of the contract (DeleteVolume, NodeUnpublish...).
        outcome = Outcome::Fail {
            message: "cleanup after the case failed".into(),
            expected: Some("every volume, snapshot, stage and publish removable".into()),
            actual: Some(cleanup_errors.join("; ")),
        };
    }
    let verdict = match &outcome {
        Outcome::Pass | Outcome::Skipped { .. } => Ok(()),
        Outcome::Fail { message, .. } => Err(Failed::from(message.as_str())),
        Outcome::Error { message } => Err(Failed::from(format!("harness error: {message}"))),
    };
    let record = record(
        &item,
        outcome,
        started.elapsed().as_secs_f64(),
        ctx.take_trace(),
        cleanup_errors,
    );
    Events::emit(&events, RunEvent::CaseFinished { record });
    verdict
}

fn record(
    item: &Planned,
    outcome: Outcome,
    duration_secs: f64,
    trace: Vec<String>,
    cleanup_errors: Vec<String>,
) -> CaseRecord {
    CaseRecord {
        id: item.name.clone(),
        suite: item.suite.to_string(),
        rule: item.case.meta.rule.to_string(),
        outcome,
        duration_secs,
        trace,
        cleanup_errors,
    }
}

/// Ctrl-C: clean up everything the run created, stop an embedded driver, then exit 130.
fn install_interrupt_handler(
    runtime: &tokio::runtime::Runtime,
    ledger: Arc<Ledger>,
    driver_pid: Option<u32>,
    work_dir: PathBuf,
) {
    runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("csi-clone-conformance: interrupted; removing what this run created");
            ledger.quiesce(Duration::from_secs(120)).await;
            for failure in ledger.cleanup(None).await {
                eprintln!("  could not remove {failure}");
            }
            if let Some(pid) = driver_pid.and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                // Its state dir is ours; it goes once the driver is gone and nothing is mounted.
                tokio::time::sleep(Duration::from_secs(2)).await;
                if !has_mounts_below(&work_dir) {
                    let _ = std::fs::remove_dir_all(&work_dir);
                }
            }
            std::process::exit(crate::exit::INTERRUPTED);
        }
    });
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

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
