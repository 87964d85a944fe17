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
use harness::target::TargetSpec;
use reference_driver::config::DriverConfig;
use reference_driver::core::Driver;
use reference_driver::server::{Endpoint, serve_until};

fn main() {
    let args = libtest_mimic_args();
    let profile = DriverProfile::reference();
    let selection = Selection {
        filters: args.filter.clone().into_iter().collect(),
        skip: args.skip.clone(),
        exact: args.exact,
    };
    let planned = plan(&suites::all(), &profile, &selection);
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
    let socket = work.path().join("reference.sock");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let driver_thread = {
        let mut config = DriverConfig::new(work.path().join("driver-state"));
        config.node_id = "conformance-test-node".into();
        let endpoint = Endpoint::Unix(socket.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("driver runtime");
            runtime.block_on(async move {
                let driver = Driver::open(config).expect("reference driver state");
                serve_until(Arc::new(driver), &endpoint, async {
                    let _ = stopped.await;
                })
                .await
                .expect("reference driver serves");
            });
        })
    };
    let out = repo.join("target/csi-clone/cargo-test");
    let options = RunOptions {
        target: TargetSpec::Endpoint {
            controller: Endpoint::Unix(socket),
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
    let _ = stop.send(());
    let _ = driver_thread.join();
    drop(work);
    std::process::exit(code);
}

fn libtest_mimic_args() -> libtest_mimic::Arguments {
    libtest_mimic::Arguments::from_args()
}
