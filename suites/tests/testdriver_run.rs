//! A run with an e2e driver file takes what the file cannot declare (staging, ControllerPublish,
//! ListVolumes, GetVolume) from the driver: the capabilities cases pass, and a case needing a
//! capability the driver lacks is skipped once the run has asked. Controller-side cases only
//! (capabilities and listing), so nothing is mounted.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use harness::plan::{Selection, plan};
use harness::profile::load_testdriver;
use harness::runner::{ReportPaths, RunOptions, run};
use harness::target::{Surfaces, TargetSpec};
use reference_driver::config::Feature;
use reports::{Outcome, RunReport};

const CSI_ONLY: Surfaces = Surfaces {
    csi: true,
    kubernetes: false,
};

/// Runs the selected cases against a reference driver without `removed`, with the profile of
/// `fixtures/drivers/testdriver/reference.yaml`.
fn run_with(work: &Path, name: &str, removed: &[Feature]) -> RunReport {
    let driver = common::InProcessDriver::start(work, name, |config| {
        for feature in removed {
            config.features.remove(feature);
        }
    });
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/drivers/testdriver/reference.yaml");
    let (profile, warnings) = load_testdriver(&file).expect("the fixture loads");
    assert!(warnings.is_empty(), "{warnings:?}");
    let selection = Selection {
        filters: vec!["capabilities::".into(), "content_source::listing::".into()],
        ..Selection::default()
    };
    let planned = plan(&suites::all(), &profile, &selection, CSI_ONLY);
    // Offline, what the file leaves to the driver does not skip anything.
    assert!(
        planned
            .iter()
            .all(|p| p.skip_reason.is_none() || p.name.contains("without"))
    );
    let options = RunOptions {
        target: TargetSpec::Endpoint {
            controller: driver.endpoint.clone(),
            node: None,
        },
        profile: Arc::new(profile),
        profile_label: file.display().to_string(),
        seed: 11,
        parallel_clones: 2,
        test_threads: 2,
        reports: ReportPaths::default(),
        work_dir: work.join(name),
        connect_timeout: Duration::from_secs(30),
        properties: BTreeMap::new(),
        pod_image: None,
        silent: true,
    };
    run(planned, options, Vec::new()).expect("the run completes")
}

fn outcome<'r>(report: &'r RunReport, id: &str) -> &'r Outcome {
    let case = (report.cases.iter()).find(|c| c.id.ends_with(id));
    &case
        .unwrap_or_else(|| panic!("{id} not in the report"))
        .outcome
}

#[test]
fn a_testdriver_run_takes_undeclared_capabilities_from_the_driver() {
    let work = tempfile::Builder::new()
        .prefix("csi-clone-testdriver-")
        .tempdir_in("/var/tmp")
        .expect("work dir");

    let full = run_with(work.path(), "full", &[]);
    for case in &full.cases {
        assert!(
            matches!(case.outcome, Outcome::Pass | Outcome::Skipped { .. }),
            "{}: {:?}\n{:#?}",
            case.id,
            case.outcome,
            case.trace
        );
    }
    assert_eq!(
        full.run
            .properties
            .get("capabilities_from_driver")
            .map(String::as_str),
        Some("list_volumes=true, get_volume=true, controller_publish=false, stage_unstage=true")
    );
    assert!(matches!(
        outcome(&full, "listing::list_volumes_shows_the_clone"),
        Outcome::Pass
    ));
    let controller = (full.cases.iter())
        .find(|c| {
            c.id.ends_with("controller::advertised_capabilities_match_profile")
        })
        .expect("ran");
    assert!(
        controller
            .trace
            .iter()
            .any(|l| l.contains("LIST_VOLUMES: taken from the driver")),
        "{:#?}",
        controller.trace
    );

    let lean = run_with(
        work.path(),
        "lean",
        &[Feature::ListVolumes, Feature::GetVolume],
    );
    assert!(matches!(
        outcome(&lean, "controller::advertised_capabilities_match_profile"),
        Outcome::Pass
    ));
    for id in [
        "listing::list_volumes_shows_the_clone",
        "listing::controller_get_volume_shows_the_clone",
    ] {
        let Outcome::Skipped { reason } = outcome(&lean, id) else {
            panic!("{id}: {:?}", outcome(&lean, id));
        };
        assert!(reason.contains("the profile declares no"), "{id}: {reason}");
    }
    assert!(full.leaks.is_empty() && lean.leaks.is_empty());
}
