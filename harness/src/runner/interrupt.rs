//! What a signal does to a running run. The first SIGINT, SIGTERM or SIGHUP: no new calls,
//! the LIFO cleanup within a bounded total time, the embedded driver stopped or the local
//! cluster torn down, exit 128 + the signal. A second signal stops all that at once, prints
//! (stderr) every ledger entry not removed yet, stops the embedded driver's process group and
//! exits 128 + the second signal.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ledger::Ledger;
use crate::signals::{Signals, exit_code};
use crate::target::{SharedCluster, TEARDOWN_LIMIT};

/// How long calls in flight get to finish and record what they created.
pub const QUIESCE_LIMIT: Duration = Duration::from_secs(30);
/// The whole LIFO cleanup after a signal (each removal also has its own deadline).
pub const CLEANUP_BUDGET: Duration = Duration::from_secs(300);

/// What the handler needs to undo a run.
pub(super) struct Interrupt {
    pub ledger: Arc<Ledger>,
    /// The embedded driver: our child, leader of its own process group.
    pub driver_pid: Option<u32>,
    pub work_dir: PathBuf,
    pub local: Option<SharedCluster>,
    pub quiesce: Duration,
    pub budget: Duration,
}

/// How a signal ended the run (the process exits with `code`; the rest is for the tests).
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))]
pub(super) struct Ending {
    pub code: i32,
    /// The cleanup was cut short by a second signal.
    pub aborted: bool,
    /// What the run created and did not remove.
    pub left: Vec<String>,
}

/// Handles the run's signals from now on (`signals` were installed at the run's start, so
/// none was lost) and exits the process when one has been handled.
pub(super) fn install(
    runtime: &tokio::runtime::Runtime,
    signals: Option<Signals>,
    interrupt: Interrupt,
) {
    let Some(mut signals) = signals else {
        tracing::warn!("signal handlers not installed: a signal ends the run without cleanup");
        return;
    };
    runtime.spawn(async move {
        let first = signals.next().await;
        let ending = interrupt.handle(first, signals.next()).await;
        std::process::exit(ending.code);
    });
}

/// The handlers, installed on `runtime` (`None` if they could not be).
pub(super) fn signals(runtime: &tokio::runtime::Runtime) -> Option<Signals> {
    let _entered = runtime.enter();
    Signals::install()
}

/// Runs `work` unless a signal comes first (then `work` is dropped, and with it whatever it
/// had started, and the signal is returned).
pub(super) async fn or_signal<T>(
    signals: &mut Option<Signals>,
    work: impl Future<Output = T>,
) -> Result<T, &'static str> {
    match signals {
        Some(signals) => tokio::select! {
            done = work => Ok(done),
            signal = signals.next() => Err(signal),
        },
        None => Ok(work.await),
    }
}

/// The next signal, or never.
pub(super) async fn next(signals: &mut Option<Signals>) -> &'static str {
    match signals {
        Some(signals) => signals.next().await,
        None => std::future::pending().await,
    }
}

impl Interrupt {
    /// Cleans up after `first`, unless `second` resolves first.
    pub(super) async fn handle(
        &self,
        first: &'static str,
        second: impl Future<Output = &'static str>,
    ) -> Ending {
        eprintln!(
            "csi-clone-conformance: {first}; removing what this run created (a second signal stops at once)"
        );
        tokio::select! {
            left = self.clean_up() => Ending { code: exit_code(first), aborted: false, left },
            again = second => {
                let left = self.abort(again).await;
                Ending { code: exit_code(again), aborted: true, left }
            }
        }
    }

    async fn clean_up(&self) -> Vec<String> {
        self.ledger.quiesce(self.quiesce).await;
        let deadline = Instant::now() + self.budget;
        for failure in self.ledger.cleanup_until(None, Some(deadline)).await {
            eprintln!("  could not remove {failure}");
        }
        let left = self.ledger.pending();
        if !left.is_empty() {
            eprintln!(
                "csi-clone-conformance: not removed (cleanup budget {:?}):",
                self.budget
            );
            print_left(&left);
        }
        if let Some(pid) = self.driver_pid {
            stop_group(pid, Duration::from_secs(10)).await;
            // Its state dir is ours; it goes once the driver is gone and nothing is mounted.
            if !super::has_mounts_below(&self.work_dir) {
                let _ = std::fs::remove_dir_all(&self.work_dir);
            }
        }
        if let Some(shared) = &self.local {
            eprintln!("csi-clone-conformance: tearing down the local cluster");
            let teardown = async {
                let mut guard = shared.lock().await;
                match guard.take() {
                    Some(mut cluster) => cluster.shutdown().await.problems().to_vec(),
                    None => Vec::new(),
                }
            };
            match tokio::time::timeout(TEARDOWN_LIMIT, teardown).await {
                Ok(problems) => super::report_teardown(problems),
                Err(_) => eprintln!(
                    "csi-clone-conformance: the local cluster's tear-down did not finish within {TEARDOWN_LIMIT:?}"
                ),
            }
            super::remove_empty_dirs(&self.work_dir);
        }
        left
    }

    /// The second signal: stop now and say what stays.
    async fn abort(&self, signal: &str) -> Vec<String> {
        let left = self.ledger.pending();
        eprintln!("csi-clone-conformance: {signal} again; cleanup stopped. Left behind:");
        print_left(&left);
        if let Some(pid) = self.driver_pid {
            stop_group(pid, Duration::from_secs(1)).await;
            eprintln!(
                "  the embedded driver (process group {pid}) stopped; its state is kept in {}",
                self.work_dir.display()
            );
        }
        if self.local.is_some() {
            eprintln!(
                "  the local cluster under {} was not torn down (processes, mounts, sysctls)",
                self.work_dir.display()
            );
        }
        left
    }
}

fn print_left(left: &[String]) {
    if left.is_empty() {
        eprintln!("  nothing the ledger recorded");
    }
    for item in left {
        eprintln!("  - {item}");
    }
}

/// SIGTERM to the driver's process group, SIGKILL after `grace`. Only while the pid is
/// provably ours: our child (so not reaped, so not reused) and its own group's leader.
/// Async, so a second signal is seen while the driver takes its time to exit.
async fn stop_group(pid: u32, grace: Duration) {
    use rustix::process::{Pid, Signal, kill_process_group};
    if !is_our_group_leader(pid) {
        return;
    }
    let Some(group) = Pid::from_raw(pid as i32) else {
        return;
    };
    let _ = kill_process_group(group, Signal::TERM);
    let started = Instant::now();
    while started.elapsed() < grace {
        if !is_running(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if is_our_group_leader(pid) {
        let _ = kill_process_group(group, Signal::KILL);
    }
}

/// From /proc/PID/stat: state, parent and process group.
fn stat_fields(pid: u32) -> Option<(char, u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat[stat.rfind(')')? + 2..].split(' ');
    let state = rest.next()?.chars().next()?;
    let parent = rest.next()?.parse().ok()?;
    let group = rest.next()?.parse().ok()?;
    Some((state, parent, group))
}

fn is_our_group_leader(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|(_, parent, group)| parent == std::process::id() && group == pid)
}

fn is_running(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|(state, _, _)| !matches!(state, 'Z' | 'X'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Resource;
    use crate::silent_driver::SilentDriver;

    fn interrupt(ledger: Arc<Ledger>, work_dir: PathBuf) -> Interrupt {
        Interrupt {
            ledger,
            driver_pid: None,
            work_dir,
            local: None,
            quiesce: Duration::from_millis(10),
            budget: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_second_signal_stops_the_cleanup_at_once_and_names_what_is_left() {
        let driver = SilentDriver::start().await;
        let ledger = Arc::new(driver.ledger(Duration::from_secs(600)).await);
        ledger.record(0, Resource::Volume { id: "v-1".into() });
        ledger.record(0, Resource::Snapshot { id: "s-1".into() });
        let handler = interrupt(ledger.clone(), driver.dir());
        let started = Instant::now();
        let second = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "SIGTERM"
        };
        let ending = handler.handle("SIGINT", second).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(ending.aborted);
        assert_eq!(ending.code, 143);
        // The snapshot's DeleteSnapshot was in flight: both are still ours to remove.
        assert_eq!(ending.left, ["snapshot s-1", "volume v-1"]);
    }

    #[tokio::test]
    async fn the_cleanup_after_one_signal_ends_within_its_budget() {
        let driver = SilentDriver::start().await;
        let ledger = Arc::new(driver.ledger(Duration::from_secs(600)).await);
        for n in 0..5 {
            ledger.record(
                0,
                Resource::Volume {
                    id: format!("v-{n}"),
                },
            );
        }
        let mut handler = interrupt(ledger.clone(), driver.dir());
        handler.budget = Duration::from_millis(500);
        let started = Instant::now();
        let ending = handler.handle("SIGHUP", std::future::pending()).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(!ending.aborted);
        assert_eq!(ending.code, 129);
        // The first removal used the whole budget and failed; the rest were not attempted.
        assert_eq!(ending.left.len(), 5, "{:?}", ending.left);
        assert!(ending.left.last().unwrap().ends_with("(removal failed)"));
    }
}
