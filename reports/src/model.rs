//! The result model: what a run produced, independent of how it is written.
//!
//! [`RunReport`] is the single value every writer consumes (JUnit, JSON, Markdown). It is
//! plain data so that it can be built from [`RunEvent`](crate::RunEvent)s, read back from a
//! JSON summary, or constructed by hand in tests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the JSON summary schema written by [`to_json`](crate::to_json).
///
/// Bump it when a field is removed, renamed or changes meaning; adding a field does not.
pub const SCHEMA_VERSION: u32 = 1;

/// What was tested, with what, and when.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    /// Tool name and version, e.g. `"csi-clone-conformance 0.1.0"`.
    pub tool: String,
    /// Driver name from `GetPluginInfo` (`""` if unknown).
    pub driver_name: String,
    /// Driver version from `GetPluginInfo` (`""` if unknown).
    pub driver_version: String,
    /// Kind of target, e.g. `"embedded"` or `"endpoint"`.
    pub target: String,
    /// Controller endpoint, e.g. `unix:///tmp/x.sock`.
    pub endpoint: String,
    /// Node endpoint; the same as `endpoint` if the driver does not split them.
    pub node_endpoint: String,
    /// Driver profile name or path.
    pub profile: String,
    /// Seed for randomised names and data, so a run can be repeated.
    pub seed: u64,
    /// Start time, RFC 3339 UTC, produced by the caller.
    pub started_at: String,
    /// Extra key/values, e.g. `"csi_spec" => "1.12.0"`.
    pub properties: BTreeMap<String, String>,
}

/// How one case ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The driver behaved as the rule requires.
    Pass,
    /// The driver broke a rule.
    Fail {
        /// What went wrong, in one sentence.
        message: String,
        /// What the rule requires (e.g. a gRPC code), if the check compares values.
        expected: Option<String>,
        /// What the driver did instead.
        actual: Option<String>,
    },
    /// The harness or infrastructure broke; says nothing about conformance.
    Error {
        /// What broke.
        message: String,
    },
    /// The case passed, with a note every report carries: what a user gets where the rule
    /// is ambiguous or a component drops a request as documented, with no component at fault.
    Advisory {
        /// What happened, in one or two sentences.
        note: String,
    },
    /// The case did not run.
    Skipped {
        /// Why, e.g. an unmet requirement.
        reason: String,
    },
}

/// The result of one case.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CaseRecord {
    /// Full name, `suite::group::behaviour`.
    pub id: String,
    /// Suite name, e.g. `"content_source"`.
    pub suite: String,
    /// The rule the case checks, citing its source, e.g.
    /// `"spec: CreateVolume errors / NOT_FOUND (source does not exist)"`.
    pub rule: String,
    /// How the case ended.
    pub outcome: Outcome,
    /// Wall-clock duration of the case in seconds.
    pub duration_secs: f64,
    /// RPC trace lines, e.g. `"CreateVolume name=x source=volume:vol-1 -> OK vol-2"`.
    pub trace: Vec<String>,
    /// Failures while removing what the case created; kept apart from the outcome so a
    /// passing case with a cleanup problem still shows it.
    pub cleanup_errors: Vec<String>,
}

/// Everything a run produced.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    /// Always [`SCHEMA_VERSION`] for reports built by this crate.
    pub schema_version: u32,
    /// What was tested.
    pub run: RunInfo,
    /// Wall-clock duration of the whole run in seconds.
    pub duration_secs: f64,
    /// Case results in the order they finished; writers sort them by id.
    pub cases: Vec<CaseRecord>,
    /// Volumes/snapshots the run created and could not remove, or inventory differences.
    pub leaks: Vec<String>,
    /// Set when the target stopped answering mid-run: at which case and why. The cases after
    /// it did not run, and the verdicts of those it cut short are void.
    #[serde(default)]
    pub target_lost: Option<String>,
}

/// Number of cases per outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Cases that passed.
    pub passed: usize,
    /// Cases where the driver broke a rule.
    pub failed: usize,
    /// Cases where the harness or infrastructure broke.
    pub errors: usize,
    /// Cases that did not run.
    pub skipped: usize,
    /// Cases that passed with a note ([`Outcome::Advisory`]); not counted in `passed`.
    pub advisory: usize,
}

impl RunReport {
    /// An empty report for `run`, at the current schema version.
    pub fn new(run: RunInfo) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            run,
            duration_secs: 0.0,
            cases: Vec::new(),
            leaks: Vec::new(),
            target_lost: None,
        }
    }

    /// Counts of all cases by outcome.
    pub fn counts(&self) -> Counts {
        Counts::of(&self.cases)
    }

    /// Cases sorted by id, so every writer produces stable output whatever the finish order.
    pub(crate) fn sorted_cases(&self) -> Vec<&CaseRecord> {
        let mut cases: Vec<&CaseRecord> = self.cases.iter().collect();
        cases.sort_by(|a, b| a.id.cmp(&b.id));
        cases
    }
}

impl Counts {
    /// All cases, whatever their outcome.
    pub fn total(&self) -> usize {
        self.passed + self.failed + self.errors + self.skipped + self.advisory
    }

    /// Counts of the given cases by outcome.
    pub(crate) fn of<'a>(cases: impl IntoIterator<Item = &'a CaseRecord>) -> Self {
        let mut counts = Self::default();
        for case in cases {
            match case.outcome {
                Outcome::Pass => counts.passed += 1,
                Outcome::Fail { .. } => counts.failed += 1,
                Outcome::Error { .. } => counts.errors += 1,
                Outcome::Skipped { .. } => counts.skipped += 1,
                Outcome::Advisory { .. } => counts.advisory += 1,
            }
        }
        counts
    }
}

/// Duration in seconds as a [`std::time::Duration`]; negative or non-finite values (which a
/// hand-edited summary could hold) become zero rather than panicking.
pub(crate) fn duration(secs: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(secs).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            tool: "t".into(),
            driver_name: String::new(),
            driver_version: String::new(),
            target: "embedded".into(),
            endpoint: "unix:///tmp/x.sock".into(),
            node_endpoint: "unix:///tmp/x.sock".into(),
            profile: "default".into(),
            seed: 1,
            started_at: "2026-01-01T00:00:00Z".into(),
            properties: BTreeMap::new(),
        }
    }

    fn case(id: &str, outcome: Outcome) -> CaseRecord {
        CaseRecord {
            id: id.into(),
            suite: "s".into(),
            rule: "r".into(),
            outcome,
            duration_secs: 0.0,
            trace: vec![],
            cleanup_errors: vec![],
        }
    }

    #[test]
    fn counts_tally_each_outcome() {
        let mut report = RunReport::new(info());
        assert_eq!(report.counts(), Counts::default());
        assert_eq!(report.schema_version, SCHEMA_VERSION);
        report.cases = vec![
            case("s::a", Outcome::Pass),
            case("s::b", Outcome::Pass),
            case(
                "s::c",
                Outcome::Fail {
                    message: "m".into(),
                    expected: None,
                    actual: None,
                },
            ),
            case(
                "s::d",
                Outcome::Error {
                    message: "m".into(),
                },
            ),
            case("s::e", Outcome::Skipped { reason: "r".into() }),
            case("s::f", Outcome::Skipped { reason: "r".into() }),
            case("s::g", Outcome::Advisory { note: "n".into() }),
        ];
        let counts = report.counts();
        assert_eq!(
            counts,
            Counts {
                passed: 2,
                failed: 1,
                errors: 1,
                skipped: 2,
                advisory: 1,
            }
        );
        assert_eq!(counts.total(), 7);
    }

    #[test]
    fn sorted_cases_orders_by_id() {
        let mut report = RunReport::new(info());
        report.cases = vec![case("s::b", Outcome::Pass), case("s::a", Outcome::Pass)];
        let ids: Vec<&str> = report
            .sorted_cases()
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids, ["s::a", "s::b"]);
    }

    #[test]
    fn bad_durations_become_zero() {
        assert_eq!(duration(-1.0), std::time::Duration::ZERO);
        assert_eq!(duration(f64::NAN), std::time::Duration::ZERO);
        assert_eq!(duration(1.5), std::time::Duration::from_millis(1500));
    }
}
