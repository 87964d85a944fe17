//! Golden-file tests for the three writers.
//!
//! One fixed report covering every outcome is rendered and compared byte for byte with
//! `tests/golden/`. After an intended format change, regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p reports --test golden` and review the diff.

use std::{collections::BTreeMap, fs, path::PathBuf};

use reports::{CaseRecord, Outcome, RunInfo, RunReport, from_json, to_json, to_junit, to_markdown};

fn fixture() -> RunReport {
    let mut report = RunReport::new(RunInfo {
        tool: "csi-clone-conformance 0.1.0".into(),
        driver_name: "reference.csi.example.com".into(),
        driver_version: "0.1.0".into(),
        target: "endpoint".into(),
        endpoint: "unix:///tmp/csi/controller.sock".into(),
        node_endpoint: "unix:///tmp/csi/node.sock".into(),
        profile: "fixtures/drivers/reference.yaml".into(),
        seed: 42,
        started_at: "2026-08-20T12:34:56Z".into(),
        properties: BTreeMap::from([
            ("csi_spec".into(), "1.12.0".into()),
            ("kubernetes_version".into(), "v1.33.1".into()),
        ]),
    });
    report.duration_secs = 4.75;
    // Finish order, deliberately not sorted: writers must sort by id.
    report.cases = vec![
        CaseRecord {
            id: "content_source::create_volume::missing_source_is_not_found".into(),
            suite: "content_source".into(),
            rule: "spec: CreateVolume errors / NOT_FOUND (source does not exist)".into(),
            outcome: Outcome::Fail {
                message: "CreateVolume with a missing source volume returned OK".into(),
                expected: Some("NOT_FOUND".into()),
                actual: Some("OK (volume vol-7)".into()),
            },
            duration_secs: 0.125,
            trace: vec![
                "CreateVolume name=cc-42-src source=volume:vol-missing -> OK vol-7".into(),
                "DeleteVolume id=vol-7 -> OK".into(),
            ],
            cleanup_errors: vec![],
        },
        CaseRecord {
            id: "content_source::create_volume::clone_echoes_content_source".into(),
            suite: "content_source".into(),
            rule: "spec: CreateVolume / Volume.content_source is set for a clone".into(),
            outcome: Outcome::Pass,
            duration_secs: 0.5,
            trace: vec!["CreateVolume name=cc-42-a source=volume:vol-1 -> OK vol-2".into()],
            cleanup_errors: vec![
                "DeleteVolume id=vol-2 -> INTERNAL: device busy <retry later>".into(),
            ],
        },
        CaseRecord {
            id: "preflight::identity::plugin_info".into(),
            suite: "preflight".into(),
            rule: "spec: GetPluginInfo returns a name".into(),
            outcome: Outcome::Pass,
            duration_secs: 0.01,
            trace: vec!["GetPluginInfo -> OK reference.csi.example.com 0.1.0".into()],
            cleanup_errors: vec![],
        },
        CaseRecord {
            id: "content_source::create_volume::larger_clone_is_allowed".into(),
            suite: "content_source".into(),
            rule: "spec: CreateVolume / capacity_range may exceed the source size".into(),
            outcome: Outcome::Error {
                message: "connection to unix:///tmp/csi/controller.sock reset".into(),
            },
            duration_secs: 2.0,
            trace: vec!["CreateVolume name=cc-42-b source=volume:vol-3 -> UNAVAILABLE".into()],
            cleanup_errors: vec![],
        },
        CaseRecord {
            id: "clone_data::block::content_matches_source".into(),
            suite: "clone_data".into(),
            rule: "spec: NodePublishVolume / cloned block device holds the source data".into(),
            outcome: Outcome::Skipped {
                reason: "requires Privileged (set CSI_CLONE_PRIVILEGED=1)".into(),
            },
            duration_secs: 0.0,
            trace: vec![],
            cleanup_errors: vec![],
        },
        CaseRecord {
            id: "k8s_namespace::gate_off::namespaced_reference_is_dropped".into(),
            suite: "k8s_namespace".into(),
            rule: "k8s: dataSourceRef.namespace needs the CrossNamespaceVolumeDataSource gate"
                .into(),
            outcome: Outcome::Advisory {
                note: "the API server dropped dataSourceRef: an empty volume bound".into(),
            },
            duration_secs: 1.5,
            trace: vec!["create PVC clone-1 -> Bound, empty".into()],
            cleanup_errors: vec![],
        },
    ];
    report.leaks = vec!["volume vol-2 (cc-42-a)".into()];
    report
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (run with UPDATE_GOLDEN=1)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{name} differs from {}; rerun with UPDATE_GOLDEN=1 if intended\n--- actual ---\n{actual}",
        path.display()
    );
}

#[test]
fn junit_matches_golden() {
    check("report.junit.xml", &to_junit(&fixture()).unwrap());
}

#[test]
fn json_matches_golden() {
    check("report.json", &to_json(&fixture()).unwrap());
}

#[test]
fn markdown_matches_golden() {
    check("report.md", &to_markdown(&fixture()));
}

/// The committed summary must stay readable by this build, not just be writable.
#[test]
fn golden_json_reads_back() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/report.json");
    let read = from_json(&fs::read_to_string(path).unwrap()).unwrap();
    // The file holds cases sorted by id, not in finish order.
    let mut expected = fixture();
    expected.cases.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(read, expected);
}
