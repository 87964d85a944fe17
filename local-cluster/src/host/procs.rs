//! Processes of a run: exactly those the cluster started (recorded by pid and start time as each
//! one started) and their descendants (by the ppid chain, each link a live process that started
//! no earlier than its parent). Nothing is matched by name, path or working directory, and the
//! calling process and its ancestors are never included.
//!
//! Signals go through a pidfd opened before the start time is re-checked, so the signal reaches
//! the process that was checked even if its pid is reused a moment later.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

use super::options::SweepOptions;
use super::pid::{self, ProcessId, Stat};
use super::report::{KilledProcess, SweepReport};

/// How often the sweep looks again for processes that appeared while it was stopping others.
const ROUNDS: usize = 3;

/// A live process of the run.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub id: ProcessId,
    pub cmdline: String,
}

/// Every live process of the run now: the recorded ones still alive, and their descendants.
pub(crate) fn find(owned: &[ProcessId]) -> Vec<Target> {
    let table = pid::scan();
    let excluded = pid::self_and_ancestors(&table);
    let roots: BTreeSet<i32> = owned
        .iter()
        .filter(|id| {
            table
                .get(&id.pid)
                .is_some_and(|s| s.id() == **id && s.is_live())
        })
        .map(|id| id.pid)
        .filter(|pid| !excluded.contains(pid))
        .collect();
    with_descendants(roots, &table)
        .into_iter()
        .filter_map(|pid| table.get(&pid))
        .map(|s| Target {
            id: s.id(),
            cmdline: pid::cmdline(s.pid),
        })
        .collect()
}

/// SIGTERM, a grace period, SIGKILL, a bounded wait; repeated for processes that appear
/// meanwhile (a fork racing the scan), a bounded number of times.
pub(crate) fn stop_all(owned: &[ProcessId], options: &SweepOptions, report: &mut SweepReport) {
    let mut stuck: BTreeSet<ProcessId> = BTreeSet::new();
    for _ in 0..ROUNDS {
        let targets: Vec<Target> = find(owned)
            .into_iter()
            .filter(|t| !stuck.contains(&t.id))
            .collect();
        if targets.is_empty() {
            return;
        }
        stuck.extend(stop(targets, options, report));
    }
    for target in find(owned).into_iter().filter(|t| !stuck.contains(&t.id)) {
        report.failed.push(format!(
            "process {} kept reappearing: {}",
            target.id.pid, target.cmdline
        ));
    }
}

/// Stops `targets`; returns those that outlived SIGKILL (already reported).
fn stop(targets: Vec<Target>, options: &SweepOptions, report: &mut SweepReport) -> Vec<ProcessId> {
    let targets = signal(targets, Signal::TERM, report);
    let left = wait_gone(&targets, options.term_grace, options.poll);
    for target in targets
        .iter()
        .filter(|t| !left.iter().any(|l| l.id == t.id))
    {
        report.killed.push(killed(target, "SIGTERM"));
    }
    let left = signal(left, Signal::KILL, report);
    let stuck = wait_gone(&left, options.kill_wait, options.poll);
    for target in &left {
        if stuck.iter().any(|s| s.id == target.id) {
            report.failed.push(not_gone(target, options.kill_wait));
        } else {
            report.killed.push(killed(target, "SIGKILL"));
        }
    }
    stuck.into_iter().map(|t| t.id).collect()
}

/// A process SIGKILL did not end: usually one in D state, waiting on a device or a filesystem.
fn not_gone(target: &Target, waited: Duration) -> String {
    let state = pid::stat(target.id.pid).map_or('?', |s| s.state);
    format!(
        "process {} (state {state}) still there {waited:?} after SIGKILL: {}",
        target.id.pid, target.cmdline
    )
}

fn killed(target: &Target, signal: &'static str) -> KilledProcess {
    KilledProcess {
        pid: target.id.pid,
        cmdline: target.cmdline.clone(),
        signal,
    }
}

/// Sends `sig` to each target that is still the same process; returns those it reached.
fn signal(targets: Vec<Target>, sig: Signal, report: &mut SweepReport) -> Vec<Target> {
    let mut reached = Vec::new();
    for target in targets {
        match send(target.id, sig) {
            Ok(true) => reached.push(target),
            Ok(false) => {}
            Err(e) => report.failed.push(format!(
                "signal process {} ({}): {e}",
                target.id.pid, target.cmdline
            )),
        }
    }
    reached
}

/// Signals `id` if it is still that process; `Ok(false)` when it is gone.
pub(crate) fn send(id: ProcessId, sig: Signal) -> Result<bool, Errno> {
    let Some(pid) = Pid::from_raw(id.pid) else {
        return Ok(false);
    };
    let fd = match pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(Errno::SRCH) => return Ok(false),
        Err(e) => return Err(e),
    };
    // The fd now pins whatever process had the pid; check it is the recorded one.
    if !id.is_alive() {
        return Ok(false);
    }
    match pidfd_send_signal(&fd, sig) {
        Ok(()) => Ok(true),
        Err(Errno::SRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Polls until every target is gone or `limit` passes; returns the ones still there.
fn wait_gone(targets: &[Target], limit: Duration, poll: Duration) -> Vec<Target> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<Target> = targets
            .iter()
            .filter(|t| t.id.is_alive())
            .cloned()
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(poll.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// `roots` plus every live descendant: a child counts only if it started no earlier than its
/// parent, which a process that merely inherited a reused pid as its ppid cannot. Roots never
/// include the caller or its ancestors (see `find`), so neither does the walk: it only goes down.
fn with_descendants(roots: BTreeSet<i32>, table: &BTreeMap<i32, Stat>) -> BTreeSet<i32> {
    let mut children: BTreeMap<i32, Vec<&Stat>> = BTreeMap::new();
    for s in table.values().filter(|s| s.is_live()) {
        children.entry(s.ppid).or_default().push(s);
    }
    let mut all = roots.clone();
    let mut queue: Vec<i32> = roots.into_iter().collect();
    while let Some(pid) = queue.pop() {
        let Some(parent) = table.get(&pid) else {
            continue;
        };
        for child in children.get(&pid).into_iter().flatten() {
            if child.start >= parent.start && all.insert(child.pid) {
                queue.push(child.pid);
            }
        }
    }
    all
}
