//! Undoing earlier runs from their records: for each run whose owner is gone, its processes are
//! stopped, its mounts and loop devices removed, its sysctls restored and its created host
//! paths removed, then its run directory and its record. A run whose owner still lives is left
//! alone. Each step runs whatever the previous ones managed, so a process stuck in D state
//! does not keep the sysctls from being restored.

use std::path::{Path, PathBuf};

use super::atomic;
use super::options::SweepOptions;
use super::record::RunRecord;
use super::registry::{Registry, RegistryLock};
use super::remove::remove_tree;
use super::sweep::sweep_with;

/// What happened to each record found.
#[derive(Clone, Debug, Default)]
pub struct CleanReport {
    pub runs: Vec<RunOutcome>,
}

#[derive(Clone, Debug)]
pub enum RunOutcome {
    /// Its owner still runs: left alone.
    Alive { record: PathBuf, run: RunRecord },
    /// Its owner is gone: undone (`failed` empty) or partly undone (record kept to retry).
    Cleaned {
        record: PathBuf,
        run: RunRecord,
        done: Vec<String>,
        failed: Vec<String>,
    },
    /// The record cannot be read; kept.
    Unreadable { record: PathBuf, error: String },
}

impl CleanReport {
    /// Runs still owned by a live process.
    pub fn alive(&self) -> impl Iterator<Item = &RunRecord> {
        self.runs.iter().filter_map(|o| match o {
            RunOutcome::Alive { run, .. } => Some(run),
            _ => None,
        })
    }

    /// One line per thing that could not be done (a kept record is one).
    pub fn failures(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for outcome in &self.runs {
            match outcome {
                RunOutcome::Cleaned { run, failed, .. } => {
                    let dir = run.run_dir().display();
                    lines.extend(failed.iter().map(|f| format!("run in {dir}: {f}")));
                }
                RunOutcome::Unreadable { record, error } => {
                    lines.push(format!("record {}: {error}", record.display()));
                }
                RunOutcome::Alive { .. } => {}
            }
        }
        lines
    }

    /// A human account: each run, what was done to it and what was not.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for outcome in &self.runs {
            lines.extend(outcome.lines());
        }
        lines
    }
}

impl RunOutcome {
    fn lines(&self) -> Vec<String> {
        match self {
            RunOutcome::Alive { run, .. } => vec![format!(
                "local cluster in {} is still running (harness pid {}): left alone",
                run.run_dir().display(),
                run.owner.pid
            )],
            RunOutcome::Cleaned {
                record,
                run,
                done,
                failed,
            } => {
                let mut lines = vec![format!(
                    "local cluster in {} (harness pid {}, gone): {}",
                    run.run_dir().display(),
                    run.owner.pid,
                    if failed.is_empty() {
                        "cleaned up".to_string()
                    } else {
                        format!("partly cleaned up, record kept in {}", record.display())
                    }
                )];
                lines.extend(done.iter().map(|d| format!("  {d}")));
                lines.extend(failed.iter().map(|f| format!("  NOT DONE: {f}")));
                lines
            }
            RunOutcome::Unreadable { record, error } => {
                vec![format!(
                    "record {} is unreadable, kept: {error}",
                    record.display()
                )]
            }
        }
    }
}

/// Cleans every run in `registry` whose owner is gone. Needs the registry's lock.
pub fn clean_stale(
    registry: &Registry,
    lock: &RegistryLock,
    options: &SweepOptions,
) -> CleanReport {
    let mut report = CleanReport::default();
    for (record, loaded) in registry.records(lock) {
        let outcome = match loaded {
            Err(e) => RunOutcome::Unreadable {
                record,
                error: e.to_string(),
            },
            Ok(run) if run.owner.is_alive() => RunOutcome::Alive { record, run },
            Ok(run) => clean_run(record, run, options),
        };
        report.runs.push(outcome);
    }
    report
}

/// Undoes one dead run; the record goes only when everything else did.
fn clean_run(record: PathBuf, run: RunRecord, options: &SweepOptions) -> RunOutcome {
    let swept = sweep_with(run.run_dir(), &run.process_ids(), options);
    let restored = run.snapshot.restore();
    let mut done = swept.done();
    done.extend(restored.done());
    let mut failed = swept.failures();
    failed.extend(restored.failures());
    if failed.is_empty() {
        remove_run_dir(run.run_dir(), &mut done, &mut failed);
    }
    if failed.is_empty() {
        let _ = std::fs::remove_file(atomic::temp_for(&record));
        if let Err(e) = atomic::remove(&record) {
            failed.push(e.to_string());
        }
    }
    RunOutcome::Cleaned {
        record,
        run,
        done,
        failed,
    }
}

/// The run directory goes without crossing into another filesystem (the sweep unmounted all
/// it could; a mount that appeared since stops the removal).
fn remove_run_dir(dir: &Path, done: &mut Vec<String>, failed: &mut Vec<String>) {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => failed.push(format!("stat {}: {e}", dir.display())),
        Ok(_) => match remove_tree(dir) {
            Ok(()) => done.push(format!("removed the run directory {}", dir.display())),
            Err(e) => failed.push(format!("remove {}: {e}", dir.display())),
        },
    }
}
