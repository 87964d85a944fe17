//! JSON summary writer and reader.
//!
//! # Schema (version 1)
//!
//! `to_json` writes one pretty-printed object:
//!
//! ```text
//! {
//!   "schema_version": 1,                 // SCHEMA_VERSION; readers reject other values
//!   "run": {                             // RunInfo
//!     "tool": str, "driver_name": str, "driver_version": str, "target": str,
//!     "endpoint": str, "node_endpoint": str, "profile": str, "seed": u64,
//!     "started_at": str (RFC 3339 UTC), "properties": { str: str, ... }
//!   },
//!   "duration_secs": f64,
//!   "counts": { "passed": n, "failed": n, "errors": n, "skipped": n, "advisory": n },   // derived, ignored on read
//!   "cases": [                           // sorted by id
//!     {
//!       "id": str, "suite": str, "rule": str,
//!       "outcome": { "status": "pass" }
//!                | { "status": "fail", "message": str, "expected": str|null, "actual": str|null }
//!                | { "status": "error", "message": str }
//!                | { "status": "skipped", "reason": str }
//!                | { "status": "advisory", "note": str },
//!       "duration_secs": f64, "trace": [str], "cleanup_errors": [str]
//!     }
//!   ],
//!   "leaks": [str],
//!   "target_lost": str|null
//! }
//! ```
//!
//! Adding fields keeps the version (readers ignore unknown fields); removing, renaming or
//! changing the meaning of a field bumps [`SCHEMA_VERSION`].

use serde::Serialize;

use crate::{
    error::ReportError,
    model::{CaseRecord, Counts, RunInfo, RunReport, SCHEMA_VERSION},
};

/// The written document: the report plus derived counts, borrowed so writing copies nothing.
/// Field order here is the order in the file.
#[derive(Serialize)]
struct Document<'a> {
    schema_version: u32,
    run: &'a RunInfo,
    duration_secs: f64,
    counts: Counts,
    cases: Vec<&'a CaseRecord>,
    leaks: &'a [String],
    target_lost: Option<&'a str>,
}

/// Renders `report` as the pretty-printed JSON summary described in the module docs.
pub fn to_json(report: &RunReport) -> Result<String, ReportError> {
    let document = Document {
        schema_version: report.schema_version,
        run: &report.run,
        duration_secs: report.duration_secs,
        counts: report.counts(),
        cases: report.sorted_cases(),
        leaks: &report.leaks,
        target_lost: report.target_lost.as_deref(),
    };
    let mut text = serde_json::to_string_pretty(&document).map_err(ReportError::JsonSerialize)?;
    text.push('\n');
    Ok(text)
}

/// Reads a JSON summary back; `counts` is ignored since it is derived from `cases`, and
/// `cases` come back in file order (sorted by id), not in the original finish order.
///
/// The schema version is checked before anything else so that a summary from another
/// version fails with a version error, not with a confusing field error.
pub fn from_json(text: &str) -> Result<RunReport, ReportError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(ReportError::JsonParse)?;
    let found = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or(ReportError::MissingSchemaVersion)?;
    if found != u64::from(SCHEMA_VERSION) {
        return Err(ReportError::UnsupportedSchemaVersion {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    serde_json::from_value(value).map_err(ReportError::JsonParse)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::Outcome;

    fn report() -> RunReport {
        let mut report = RunReport::new(RunInfo {
            tool: "csi-clone-conformance 0.1.0".into(),
            driver_name: "ref".into(),
            driver_version: "1".into(),
            target: "endpoint".into(),
            endpoint: "unix:///tmp/c.sock".into(),
            node_endpoint: "unix:///tmp/n.sock".into(),
            profile: "ci".into(),
            seed: u64::MAX,
            started_at: "2026-01-01T00:00:00Z".into(),
            properties: BTreeMap::from([("csi_spec".into(), "1.12.0".into())]),
        });
        report.duration_secs = 1.5;
        report.leaks = vec!["snapshot snap-1".into()];
        let outcomes = [
            Outcome::Pass,
            Outcome::Fail {
                message: "m".into(),
                expected: Some("e".into()),
                actual: None,
            },
            Outcome::Error {
                message: "x".into(),
            },
            Outcome::Skipped { reason: "r".into() },
        ];
        for (i, outcome) in outcomes.into_iter().enumerate() {
            report.cases.push(CaseRecord {
                id: format!("s::g::case_{i}"),
                suite: "s".into(),
                rule: "rule".into(),
                outcome,
                duration_secs: 0.125,
                trace: vec!["CreateVolume -> OK".into()],
                cleanup_errors: vec!["DeleteVolume -> INTERNAL".into()],
            });
        }
        report
    }

    #[test]
    fn round_trip() {
        let report = report();
        let text = to_json(&report).unwrap();
        assert!(text.contains("\"counts\""));
        assert_eq!(from_json(&text).unwrap(), report);
    }

    #[test]
    fn rejects_other_schema_version() {
        let mut value: serde_json::Value =
            serde_json::from_str(&to_json(&report()).unwrap()).unwrap();
        value["schema_version"] = 99.into();
        let err = from_json(&value.to_string()).unwrap_err();
        assert!(
            matches!(
                err,
                ReportError::UnsupportedSchemaVersion {
                    found: 99,
                    supported: SCHEMA_VERSION
                }
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("99"), "{message}");
        assert!(message.contains(&SCHEMA_VERSION.to_string()), "{message}");
    }

    #[test]
    fn rejects_missing_schema_version_and_garbage() {
        assert!(matches!(
            from_json("{}"),
            Err(ReportError::MissingSchemaVersion)
        ));
        assert!(matches!(
            from_json(r#"{"schema_version": "1"}"#),
            Err(ReportError::MissingSchemaVersion)
        ));
        assert!(matches!(
            from_json("not json"),
            Err(ReportError::JsonParse(_))
        ));
        assert!(matches!(
            from_json(r#"{"schema_version": 1}"#),
            Err(ReportError::JsonParse(_))
        ));
    }
}
