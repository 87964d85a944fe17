//! Run events and their consumers.
//!
//! The runner knows nothing about output: it emits [`RunEvent`]s in the order
//! `RunStarted` → (`CaseStarted` → `CaseFinished`)* → `RunFinished`, and each [`Reporter`]
//! (terminal progress, [`Collector`] for the report files, ...) consumes them independently.
//! Cases run in parallel, so `CaseStarted`/`CaseFinished` of different cases interleave.

use crate::model::{CaseRecord, RunInfo, RunReport};

/// Something that happened during a run.
#[derive(Clone, Debug)]
pub enum RunEvent {
    /// The case list is built and cases are about to run.
    RunStarted {
        /// What is being tested.
        run: RunInfo,
        /// Number of cases selected to run.
        selected: usize,
        /// Number of cases that will be reported as skipped.
        skipped: usize,
    },
    /// A case began.
    CaseStarted {
        /// Full case id.
        id: String,
    },
    /// A case ended (or was skipped).
    CaseFinished {
        /// Its result.
        record: CaseRecord,
    },
    /// All cases ended and run-level cleanup is done.
    RunFinished {
        /// Wall-clock duration of the run in seconds.
        duration_secs: f64,
        /// Resources left behind, see [`RunReport::leaks`].
        leaks: Vec<String>,
        /// See [`RunReport::target_lost`].
        target_lost: Option<String>,
    },
}

/// A consumer of run events (terminal progress, report collectors...). Must be Send: events
/// arrive from several trial threads (the runner serialises calls behind a Mutex).
pub trait Reporter: Send {
    /// Handles one event.
    fn event(&mut self, event: &RunEvent);
}

/// Collects events into a [`RunReport`].
///
/// The report exists once `RunStarted` has arrived; case records arriving before it are
/// dropped, since there is no [`RunInfo`] to attach them to.
#[derive(Debug, Default)]
pub struct Collector {
    report: Option<RunReport>,
}

impl Collector {
    /// A collector that has seen no events.
    pub fn new() -> Self {
        Self::default()
    }

    /// The report so far, or `None` before `RunStarted`.
    pub fn report(&self) -> Option<&RunReport> {
        self.report.as_ref()
    }

    /// The collected report, or `None` if `RunStarted` never arrived.
    pub fn into_report(self) -> Option<RunReport> {
        self.report
    }
}

impl Reporter for Collector {
    fn event(&mut self, event: &RunEvent) {
        match event {
            RunEvent::RunStarted { run, .. } => self.report = Some(RunReport::new(run.clone())),
            RunEvent::CaseStarted { .. } => {}
            RunEvent::CaseFinished { record } => {
                if let Some(report) = &mut self.report {
                    report.cases.push(record.clone());
                }
            }
            RunEvent::RunFinished {
                duration_secs,
                leaks,
                target_lost,
            } => {
                if let Some(report) = &mut self.report {
                    report.duration_secs = *duration_secs;
                    report.leaks.extend(leaks.iter().cloned());
                    report.target_lost.clone_from(target_lost);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{Counts, Outcome, SCHEMA_VERSION};

    fn info() -> RunInfo {
        RunInfo {
            tool: "csi-clone-conformance 0.1.0".into(),
            driver_name: "ref".into(),
            driver_version: "1".into(),
            target: "embedded".into(),
            endpoint: "unix:///tmp/x.sock".into(),
            node_endpoint: "unix:///tmp/x.sock".into(),
            profile: "default".into(),
            seed: 7,
            started_at: "2026-01-01T00:00:00Z".into(),
            properties: BTreeMap::new(),
        }
    }

    fn record(id: &str, outcome: Outcome) -> CaseRecord {
        CaseRecord {
            id: id.into(),
            suite: "s".into(),
            rule: "r".into(),
            outcome,
            duration_secs: 0.5,
            trace: vec![],
            cleanup_errors: vec![],
        }
    }

    #[test]
    fn collector_builds_report_from_events() {
        let mut collector = Collector::new();
        assert!(collector.report().is_none());

        // Dropped: no run to attach it to yet.
        collector.event(&RunEvent::CaseFinished {
            record: record("s::early", Outcome::Pass),
        });

        let events = [
            RunEvent::RunStarted {
                run: info(),
                selected: 2,
                skipped: 1,
            },
            RunEvent::CaseStarted { id: "s::b".into() },
            RunEvent::CaseStarted { id: "s::a".into() },
            RunEvent::CaseFinished {
                record: record(
                    "s::c",
                    Outcome::Skipped {
                        reason: "no block".into(),
                    },
                ),
            },
            RunEvent::CaseFinished {
                record: record("s::a", Outcome::Pass),
            },
            RunEvent::CaseFinished {
                record: record(
                    "s::b",
                    Outcome::Error {
                        message: "timeout".into(),
                    },
                ),
            },
            RunEvent::RunFinished {
                duration_secs: 3.25,
                leaks: vec!["volume vol-9".into()],
                target_lost: None,
            },
        ];
        // Through a trait object, as the runner holds reporters.
        let reporter: &mut dyn Reporter = &mut collector;
        for event in &events {
            reporter.event(event);
        }

        let report = collector.into_report().expect("report after RunStarted");
        assert_eq!(report.schema_version, SCHEMA_VERSION);
        assert_eq!(report.run, info());
        assert_eq!(report.duration_secs, 3.25);
        assert_eq!(report.leaks, ["volume vol-9"]);
        let ids: Vec<&str> = report.cases.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["s::c", "s::a", "s::b"], "finish order is kept");
        assert_eq!(
            report.counts(),
            Counts {
                passed: 1,
                failed: 0,
                errors: 1,
                skipped: 1,
                advisory: 0,
            }
        );
    }
}
