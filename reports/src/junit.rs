//! JUnit XML writer (via quick-junit).
//!
//! Mapping:
//! - one `<testsuites name="csi-clone-conformance">`;
//! - one `<testsuite>` per [`CaseRecord::suite`], sorted by name, each carrying the run
//!   information as `<properties>` (CI viewers often show only suite-level properties);
//! - one `<testcase name=id classname=suite>` per case, sorted by id;
//! - `Fail` → `<failure>`, `Error` → `<error>`, `Skipped` → `<skipped>`, `Advisory` → a pass
//!   with an `advisory` property and the note in `<system-out>`; cleanup errors go to
//!   the case's `<system-err>`;
//! - leaks, if any, become a failing `run::leaks` case in a trailing `run` suite, so CI
//!   notices them even when every case passed.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::{
    error::ReportError,
    model::{CaseRecord, Outcome, RunInfo, RunReport, duration},
};

/// Name of the `<testsuites>` element.
const REPORT_NAME: &str = "csi-clone-conformance";
/// Suite and case names of the synthetic leak case.
const LEAK_SUITE: &str = "run";
const LEAK_CASE: &str = "run::leaks";
const TARGET_CASE: &str = "run::target";

/// Renders `report` as JUnit XML.
pub fn to_junit(report: &RunReport) -> Result<String, ReportError> {
    let properties = properties(&report.run);
    // Unparseable timestamps are left out: the raw string is still a property.
    let timestamp = DateTime::parse_from_rfc3339(&report.run.started_at).ok();

    let mut by_suite: BTreeMap<&str, Vec<&CaseRecord>> = BTreeMap::new();
    for case in report.sorted_cases() {
        by_suite.entry(case.suite.as_str()).or_default().push(case);
    }

    let mut junit = Report::new(REPORT_NAME);
    junit.set_time(duration(report.duration_secs));
    if let Some(timestamp) = timestamp {
        junit.set_timestamp(timestamp);
    }
    for (name, cases) in by_suite {
        let mut suite = new_suite(name, &properties, timestamp);
        suite.set_time(duration(cases.iter().map(|c| c.duration_secs).sum()));
        suite.add_test_cases(cases.into_iter().map(test_case));
        junit.add_test_suite(suite);
    }
    if !report.leaks.is_empty() || report.target_lost.is_some() {
        let mut suite = new_suite(LEAK_SUITE, &properties, timestamp);
        if let Some(lost) = &report.target_lost {
            suite.add_test_case(target_lost_case(lost));
        }
        if !report.leaks.is_empty() {
            suite.add_test_case(leak_case(&report.leaks));
        }
        junit.add_test_suite(suite);
    }
    junit.to_string().map_err(ReportError::Junit)
}

fn new_suite(
    name: &str,
    properties: &[Property],
    timestamp: Option<DateTime<FixedOffset>>,
) -> TestSuite {
    let mut suite = TestSuite::new(name);
    suite.add_properties(properties.iter().cloned());
    if let Some(timestamp) = timestamp {
        suite.set_timestamp(timestamp);
    }
    suite
}

/// Run information as JUnit properties: fixed keys first, then the free-form ones.
fn properties(run: &RunInfo) -> Vec<Property> {
    let fixed = [
        ("driver_name", run.driver_name.clone()),
        ("driver_version", run.driver_version.clone()),
        ("target", run.target.clone()),
        ("endpoint", run.endpoint.clone()),
        ("node_endpoint", run.node_endpoint.clone()),
        ("profile", run.profile.clone()),
        ("seed", run.seed.to_string()),
        ("started_at", run.started_at.clone()),
    ];
    fixed
        .into_iter()
        .map(|(name, value)| Property::new(name, value))
        .chain(
            run.properties
                .iter()
                .map(|(name, value)| Property::new(name, value)),
        )
        .collect()
}

fn test_case(case: &CaseRecord) -> TestCase {
    let status = match &case.outcome {
        Outcome::Pass => TestCaseStatus::success(),
        Outcome::Fail {
            message,
            expected,
            actual,
        } => {
            let mut text = format!("rule: {}\n", case.rule);
            if let Some(expected) = expected {
                text.push_str(&format!("expected: {expected}\n"));
            }
            if let Some(actual) = actual {
                text.push_str(&format!("actual: {actual}\n"));
            }
            push_trace(&mut text, &case.trace);
            non_success(NonSuccessKind::Failure, message, text)
        }
        Outcome::Error { message } => {
            let mut text = format!("rule: {}\n", case.rule);
            push_trace(&mut text, &case.trace);
            non_success(NonSuccessKind::Error, message, text)
        }
        // A pass; the note goes to system-out below and into a property, where viewers show it.
        Outcome::Advisory { .. } => TestCaseStatus::success(),
        Outcome::Skipped { reason } => {
            let mut status = TestCaseStatus::skipped();
            status.set_message(reason);
            status
        }
    };
    let mut test_case = TestCase::new(&case.id, status);
    test_case.set_classname(&case.suite);
    test_case.set_time(duration(case.duration_secs));
    if let Outcome::Advisory { note } = &case.outcome {
        test_case.add_property(Property::new("advisory", note));
        test_case.set_system_out(format!("advisory: {note}\nrule: {}\n", case.rule));
    }
    if !case.cleanup_errors.is_empty() {
        let mut text = String::from("cleanup errors:\n");
        for error in &case.cleanup_errors {
            text.push_str(&format!("  {error}\n"));
        }
        test_case.set_system_err(text);
    }
    test_case
}

/// A failing `run::target` case: one verdict for a target that stopped answering.
fn target_lost_case(lost: &str) -> TestCase {
    let message = format!("target lost {lost}");
    let mut test_case = TestCase::new(
        TARGET_CASE,
        non_success(NonSuccessKind::Error, &message, message.clone()),
    );
    test_case.set_classname(LEAK_SUITE);
    test_case
}

fn leak_case(leaks: &[String]) -> TestCase {
    let message = match leaks.len() {
        1 => "1 resource was left behind".to_string(),
        n => format!("{n} resources were left behind"),
    };
    let mut text = String::from("leaked:\n");
    for leak in leaks {
        text.push_str(&format!("  {leak}\n"));
    }
    let mut test_case = TestCase::new(
        LEAK_CASE,
        non_success(NonSuccessKind::Failure, &message, text),
    );
    test_case.set_classname(LEAK_SUITE);
    test_case
}

fn non_success(kind: NonSuccessKind, message: &str, description: String) -> TestCaseStatus {
    let mut status = TestCaseStatus::non_success(kind);
    status.set_message(message);
    status.set_description(description);
    status
}

fn push_trace(text: &mut String, trace: &[String]) {
    if trace.is_empty() {
        text.push_str("\nRPC trace: (none)\n");
        return;
    }
    text.push_str("\nRPC trace:\n");
    for line in trace {
        text.push_str(&format!("  {line}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(cases: Vec<CaseRecord>, leaks: Vec<String>) -> RunReport {
        let mut report = RunReport::new(RunInfo {
            tool: "t".into(),
            driver_name: "d".into(),
            driver_version: "v".into(),
            target: "embedded".into(),
            endpoint: "e".into(),
            node_endpoint: "e".into(),
            profile: "p".into(),
            seed: 3,
            started_at: "not a timestamp".into(),
            properties: BTreeMap::from([("k8s".into(), "1.33".into())]),
        });
        report.cases = cases;
        report.leaks = leaks;
        report
    }

    fn case(id: &str, suite: &str, outcome: Outcome) -> CaseRecord {
        CaseRecord {
            id: id.into(),
            suite: suite.into(),
            rule: "r".into(),
            outcome,
            duration_secs: 0.5,
            trace: vec![],
            cleanup_errors: vec![],
        }
    }

    /// Reads the XML back with quick-junit to check structure rather than text.
    #[test]
    fn suites_sorted_counts_and_leak_case() {
        let xml = to_junit(&report(
            vec![
                case("b::x", "b", Outcome::Pass),
                case(
                    "a::y",
                    "a",
                    Outcome::Error {
                        message: "boom".into(),
                    },
                ),
                case(
                    "a::x",
                    "a",
                    Outcome::Skipped {
                        reason: "why".into(),
                    },
                ),
            ],
            vec!["volume v".into()],
        ))
        .unwrap();
        let parsed = Report::deserialize_from_str(&xml).unwrap();
        assert_eq!(parsed.name.as_ref().map(|n| n.as_str()), Some(REPORT_NAME));
        assert!(parsed.timestamp.is_none(), "bad started_at is dropped");
        let names: Vec<&str> = parsed.test_suites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "run"]);
        assert_eq!(
            (parsed.tests, parsed.errors, parsed.failures, parsed.skipped),
            (4, 1, 1, 1)
        );
        let a = &parsed.test_suites[0];
        assert_eq!(a.test_cases[0].name.as_str(), "a::x");
        assert_eq!(a.test_cases[0].classname.as_ref().unwrap().as_str(), "a");
        let props: Vec<&str> = a.properties.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            props,
            [
                "driver_name",
                "driver_version",
                "target",
                "endpoint",
                "node_endpoint",
                "profile",
                "seed",
                "started_at",
                "k8s"
            ]
        );
    }

    #[test]
    fn no_leak_suite_without_leaks() {
        let xml = to_junit(&report(vec![case("a::x", "a", Outcome::Pass)], vec![])).unwrap();
        assert!(!xml.contains(LEAK_CASE));
    }
}
