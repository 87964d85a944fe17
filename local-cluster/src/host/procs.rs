//! Processes of the run, found from /proc: those whose executable, working directory, root or
//! any argument is at or below the run directory, plus their descendants (a container process
//! in its own mount namespace shows paths that mean nothing here, but its shim parent names the
//! run directory). The calling process and its ancestors are never included: the harness may
//! well have been started with the run directory in its arguments.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, Signal};

use super::SweepOptions;
use super::paths::RunDir;
use super::report::{KilledProcess, SweepReport};

/// How often the sweep looks again for processes that appeared while it was stopping others.
const ROUNDS: usize = 3;

/// A process as /proc/PID/stat shows it; the start time tells a reused pid from the original.
#[derive(Clone, Debug)]
struct Stat {
    pid: i32,
    ppid: i32,
    state: char,
    start: u64,
}

/// A process of the run.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub pid: i32,
    start: u64,
    pub cmdline: String,
}

/// Every live process of the run now.
pub(crate) fn find(run: &RunDir) -> Vec<Target> {
    let table = scan();
    let excluded = self_and_ancestors(&table);
    let live: Vec<&Stat> = table
        .values()
        .filter(|s| is_live(s) && !excluded.contains(&s.pid))
        .collect();
    let direct: BTreeSet<i32> = live
        .iter()
        .filter(|s| refers_to(s.pid, run))
        .map(|s| s.pid)
        .collect();
    let all = with_descendants(direct, &live);
    all.into_iter()
        .filter_map(|pid| table.get(&pid))
        .map(|s| Target {
            pid: s.pid,
            start: s.start,
            cmdline: cmdline(s.pid),
        })
        .collect()
}

/// SIGTERM, a grace period, SIGKILL, a last wait; repeated for processes that appear meanwhile
/// (a fork racing the scan), a bounded number of times.
pub(crate) fn stop_all(run: &RunDir, options: &SweepOptions, report: &mut SweepReport) {
    for _ in 0..ROUNDS {
        let targets = find(run);
        if targets.is_empty() {
            return;
        }
        stop(targets, options, report);
    }
    for target in find(run) {
        report.failed.push(format!(
            "process {} kept reappearing: {}",
            target.pid, target.cmdline
        ));
    }
}

fn stop(targets: Vec<Target>, options: &SweepOptions, report: &mut SweepReport) {
    let targets = signal(targets, Signal::TERM, report);
    let left = wait_gone(&targets, options.term_grace, options.poll);
    for target in targets
        .iter()
        .filter(|t| !left.iter().any(|l| l.pid == t.pid))
    {
        report.killed.push(killed(target, "SIGTERM"));
    }
    let left = signal(left, Signal::KILL, report);
    let stuck = wait_gone(&left, options.kill_wait, options.poll);
    for target in &left {
        if stuck.iter().any(|s| s.pid == target.pid) {
            report.failed.push(format!(
                "process {} survived SIGKILL for {:?}: {}",
                target.pid, options.kill_wait, target.cmdline
            ));
        } else {
            report.killed.push(killed(target, "SIGKILL"));
        }
    }
}

fn killed(target: &Target, signal: &'static str) -> KilledProcess {
    KilledProcess {
        pid: target.pid,
        cmdline: target.cmdline.clone(),
        signal,
    }
}

/// Sends `sig` to each target that is still the same process; returns those it reached.
fn signal(targets: Vec<Target>, sig: Signal, report: &mut SweepReport) -> Vec<Target> {
    let mut reached = Vec::new();
    for target in targets {
        if !still_there(&target) {
            continue;
        }
        let Some(pid) = Pid::from_raw(target.pid) else {
            continue;
        };
        match rustix::process::kill_process(pid, sig) {
            Ok(()) => reached.push(target),
            Err(Errno::SRCH) => {}
            Err(e) => report.failed.push(format!(
                "signal process {} ({}): {e}",
                target.pid, target.cmdline
            )),
        }
    }
    reached
}

/// Polls until every target is gone or `limit` passes; returns the ones still there.
fn wait_gone(targets: &[Target], limit: Duration, poll: Duration) -> Vec<Target> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<Target> = targets.iter().filter(|t| still_there(t)).cloned().collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(poll.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Alive and not a reused pid. A zombie counts as gone: it holds no files, mounts or devices,
/// and only its parent can reap it.
fn still_there(target: &Target) -> bool {
    stat(target.pid).is_some_and(|s| s.start == target.start && is_live(&s))
}

fn is_live(stat: &Stat) -> bool {
    !matches!(stat.state, 'Z' | 'X' | 'x')
}

/// Whether the process's executable, working directory, root or an argument is in the run.
fn refers_to(pid: i32, run: &RunDir) -> bool {
    let dir = format!("/proc/{pid}");
    let linked = ["exe", "cwd", "root"].iter().any(|link| {
        std::fs::read_link(Path::new(&dir).join(link))
            .is_ok_and(|target| run.contains_shown(target.as_os_str()))
    });
    linked
        || args(pid)
            .iter()
            .any(|arg| run.named_in(OsStr::from_bytes(arg)))
}

fn args(pid: i32) -> Vec<Vec<u8>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The command line for reports, arguments joined by spaces (lossy for non-UTF-8 bytes).
fn cmdline(pid: i32) -> String {
    let args = args(pid);
    if args.is_empty() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        return format!("[{}]", comm.trim());
    }
    let args: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    args.join(" ")
}

/// Every process in /proc, by pid (threads are not listed there, only thread-group leaders).
fn scan() -> BTreeMap<i32, Stat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .map(|s| (s.pid, s))
        .collect()
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// `pid (comm) state ppid ... starttime(22nd field) ...`; comm may hold spaces and parentheses,
/// so fields are counted from the last `)`.
fn parse_stat(pid: i32, text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Our pid and every ancestor's, so the sweep never stops the harness or what runs it.
fn self_and_ancestors(table: &BTreeMap<i32, Stat>) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let mut pid = i32::try_from(std::process::id()).unwrap_or(0);
    while pid > 0 && out.insert(pid) {
        pid = table
            .get(&pid)
            .map(|s| s.ppid)
            .or_else(|| stat(pid).map(|s| s.ppid))
            .unwrap_or(0);
    }
    out
}

/// `direct` plus every live descendant of one of them.
fn with_descendants(direct: BTreeSet<i32>, live: &[&Stat]) -> BTreeSet<i32> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for s in live {
        children.entry(s.ppid).or_default().push(s.pid);
    }
    let mut all = direct.clone();
    let mut queue: Vec<i32> = direct.into_iter().collect();
    while let Some(pid) = queue.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if all.insert(*child) {
                queue.push(*child);
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_procs_parses_stat_with_odd_comm() {
        let text = "42 (a) b (c) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        let s = parse_stat(42, text).expect("parsed");
        assert_eq!((s.pid, s.ppid, s.state, s.start), (42, 7, 'S', 12345));
        assert!(parse_stat(1, "1 (x) S").is_none());
    }

    #[test]
    fn host_procs_excludes_self_and_parent() {
        let table = scan();
        let excluded = self_and_ancestors(&table);
        let me = i32::try_from(std::process::id()).expect("pid");
        assert!(excluded.contains(&me));
        let parent = table.get(&me).map(|s| s.ppid).expect("own stat");
        assert!(parent == 0 || excluded.contains(&parent));
    }
}
