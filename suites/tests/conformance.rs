//! `cargo test -p suites`: every suite against the reference driver, started in-process on a
//! temp socket and state dir. libtest flags work (filters, --skip, --exact, --list,
//! --test-threads). Reports go to target/csi-clone/cargo-test/.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use harness::plan::{Selection, plan};
use harness::profile::DriverProfile;
use harness::progress::TerminalProgress;
use harness::runner::{ReportPaths, RunOptions, run};
use harness::target::{Surfaces, TargetSpec};

/// The CSI-level suites against an in-process driver; the Kubernetes suites run in .ci/run.
const CSI_ONLY: Surfaces = Surfaces {
    csi: true,
    kubernetes: false,
};

mod common;

fn main() {
    let args = libtest_mimic_args();
    let profile = DriverProfile::reference();
    let selection = Selection {
        filters: args.filter.clone().into_iter().collect(),
        skip: args.skip.clone(),
        exact: args.exact,
    };
    let planned = plan(&suites::all(), &profile, &selection, CSI_ONLY);
    if args.list {
        for item in &planned {
            println!("{}: test", item.name);
        }
        return;
    }
    if planned.is_empty() {
        println!("0 passed, 0 failed");
        return;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let work = tempfile::Builder::new()
        .prefix("csi-clone-test-")
        .tempdir_in("/var/tmp")
        .expect("work dir");
    let driver = common::InProcessDriver::start(work.path(), "reference", |_| {});
    let out = repo.join("target/csi-clone/cargo-test");
    let options = RunOptions {
        target: TargetSpec::Endpoint {
            controller: driver.endpoint.clone(),
            node: None,
        },
        profile: Arc::new(profile),
        profile_label: "reference (built-in)".into(),
        seed: std::env::var("CSI_CLONE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(suites::cli::random_seed),
        parallel_clones: 10,
        test_threads: args.test_threads.unwrap_or(2),
        reports: ReportPaths {
            junit: Some(out.join("junit.xml")),
            json: Some(out.join("summary.json")),
            markdown: Some(out.join("summary.md")),
        },
        work_dir: work.path().to_path_buf(),
        connect_timeout: Duration::from_secs(30),
        properties: BTreeMap::from([("entry".to_string(), "cargo test".to_string())]),
        pod_image: None,
        silent: false,
    };
    let result = run(
        planned,
        options,
        vec![Box::new(TerminalProgress {
            verbose: false,
            quiet: args.quiet,
        })],
    );
    let code = suites::cli::finish(result, &out.join("junit.xml"));
    drop(driver);
    drop(work);
    std::process::exit(code);
}

fn libtest_mimic_args() -> libtest_mimic::Arguments {
    libtest_mimic::Arguments::from_args()
}
