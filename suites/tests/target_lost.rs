//! A target that stops answering mid-run gets one verdict, "target lost at case X" (exit 8),
//! not a conformance failure per case. The reference driver runs behind a unix-socket relay
//! that, after a fixed number of request bytes, either stops relaying while holding the
//! connections open (what a SIGSTOPped or wedged driver looks like from the harness) or
//! closes them and refuses new ones (a driver that died). Controller-only cases, so nothing
//! is mounted when the driver goes away.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use csi_proto::transport::Endpoint;
use harness::exit;
use harness::plan::{Selection, plan};
use harness::profile::DriverProfile;
use harness::runner::{ReportPaths, RunOptions, run};
use harness::target::{Surfaces, TargetSpec};
use reports::Outcome;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Enough for the run's start (Probe, capabilities, inventory) and a few cases, far less than
/// the whole selection.
const RELAYED_BEFORE_SILENCE: usize = 5 * 1024;

#[derive(Clone, Copy, Debug)]
enum Gone {
    /// Connections stay open and silent.
    Hung,
    /// Connections are closed and new ones refused.
    Dead,
}

/// Relays `listen` ↔ `upstream` until `RELAYED_BEFORE_SILENCE` client bytes have passed.
async fn relay(listen: UnixListener, upstream: std::path::PathBuf, gone: Gone) {
    let sent = Arc::new(AtomicUsize::new(0));
    while let Ok((client, _)) = listen.accept().await {
        if sent.load(Ordering::SeqCst) >= RELAYED_BEFORE_SILENCE {
            if let Gone::Dead = gone {
                return; // the listener goes with us: connects are refused from now on
            }
            continue;
        }
        let Ok(server) = UnixStream::connect(&upstream).await else {
            continue;
        };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::spawn(pump(client_read, server_write, sent.clone(), true, gone));
        tokio::spawn(pump(server_read, client_write, sent.clone(), false, gone));
    }
}

/// Copies bytes while the client side has sent fewer than `RELAYED_BEFORE_SILENCE` (only
/// the client side, `counts`, adds to the count), then hangs or closes, as `gone` says.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    sent: Arc<AtomicUsize>,
    counts: bool,
    gone: Gone,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buffer).await else {
            break;
        };
        let before = match counts {
            true => sent.fetch_add(n, Ordering::SeqCst),
            false => sent.load(Ordering::SeqCst),
        };
        if n == 0 || before >= RELAYED_BEFORE_SILENCE || to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    if let Gone::Hung = gone {
        // Silent, not closed: both ends stay open, as with a stopped process.
        std::future::pending::<()>().await;
    }
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let tests = [Gone::Hung, Gone::Dead]
        .map(|gone| {
            let name = format!("{gone:?}_target_is_one_verdict").to_lowercase();
            libtest_mimic::Trial::test(name, move || target_lost_is_one_verdict(gone))
        })
        .into_iter()
        .collect();
    libtest_mimic::run(&args, tests).exit();
}

fn target_lost_is_one_verdict(gone: Gone) -> Result<(), libtest_mimic::Failed> {
    let work = tempfile::Builder::new()
        .prefix("csi-clone-lost-")
        .tempdir_in("/var/tmp")
        .expect("work dir");
    let driver = common::InProcessDriver::start(work.path(), "driver", |_| {});
    let Endpoint::Unix(upstream) = driver.endpoint.clone() else {
        unreachable!("the in-process driver serves a unix socket")
    };
    let relay_socket = work.path().join("relay.sock");
    let relay_runtime = tokio::runtime::Runtime::new().expect("relay runtime");
    let listener = relay_runtime.block_on(async { UnixListener::bind(&relay_socket) })?;
    relay_runtime.spawn(relay(listener, upstream, gone));

    let started = Instant::now();
    let report = run_controller_cases(work.path(), Endpoint::Unix(relay_socket))?;
    let took = started.elapsed();

    let lost = report
        .target_lost
        .clone()
        .ok_or("the run did not report the target lost")?;
    let failed: Vec<String> = report
        .cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Fail { .. }))
        .map(|c| format!("{}: {:?}; trace {:?}", c.id, c.outcome, c.trace))
        .collect();
    let not_run = report
        .cases
        .iter()
        .filter(|c| matches!(&c.outcome, Outcome::Skipped { reason } if reason.contains("target was lost")))
        .count();
    eprintln!("{gone:?}: target lost {lost}; {not_run} cases not run; run took {took:.1?}");
    if !lost.contains("at case ") {
        return Err(format!("the verdict does not name the case: {lost}").into());
    }
    if !failed.is_empty() {
        return Err(
            format!("cases failed although the driver only went silent: {failed:?}").into(),
        );
    }
    if not_run == 0 {
        return Err("no case was left unrun: the relay went silent too late".into());
    }
    if exit::for_report(&report) != exit::TARGET_LOST {
        return Err(format!(
            "exit code {} instead of {}",
            exit::for_report(&report),
            exit::TARGET_LOST
        )
        .into());
    }
    // One call's deadline, one Probe's and the cleanup's refusals: nowhere near a case each.
    if took > Duration::from_secs(30) {
        return Err(format!("the run took {took:?} after the target went silent").into());
    }
    drop(relay_runtime);
    drop(driver);
    Ok(())
}

fn run_controller_cases(
    work: &Path,
    endpoint: Endpoint,
) -> Result<reports::RunReport, libtest_mimic::Failed> {
    let mut profile = DriverProfile::reference();
    profile.timeouts.rpc_secs = 2;
    profile.timeouts.clone_secs = 4;
    let selection = Selection {
        filters: [
            "content_source::conflict",
            "content_source::missing",
            "content_source::malformed",
            "content_source::replay",
            "content_source::volume",
            "content_source::snapshot",
            "content_source::listing",
            "size::clone::limit",
            "size::clone::equal",
            "access_type::clone",
        ]
        .map(String::from)
        .to_vec(),
        ..Selection::default()
    };
    let surfaces = Surfaces {
        csi: true,
        kubernetes: false,
    };
    let planned = plan(&suites::all(), &profile, &selection, surfaces);
    let options = RunOptions {
        target: TargetSpec::Endpoint {
            controller: endpoint,
            node: None,
        },
        profile: Arc::new(profile),
        profile_label: "reference behind a relay that goes silent".into(),
        seed: 7,
        parallel_clones: 2,
        test_threads: 1,
        reports: ReportPaths::default(),
        work_dir: work.to_path_buf(),
        connect_timeout: Duration::from_secs(10),
        properties: BTreeMap::new(),
        pod_image: None,
        silent: true,
    };
    run(planned, options, Vec::new()).map_err(|e| format!("run: {e}").into())
}
