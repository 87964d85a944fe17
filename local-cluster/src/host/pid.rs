//! Processes as /proc shows them. A pid alone is not an identity — the kernel reuses pids — so
//! a process is named by its pid and its start time (/proc/PID/stat field 22, clock ticks after
//! boot): a reused pid has a later start time.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One process, for as long as it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    /// Start time in clock ticks after boot.
    pub start: u64,
}

impl ProcessId {
    /// The process that has `pid` now, if any.
    pub fn of(pid: i32) -> Option<ProcessId> {
        stat(pid).map(|s| s.id())
    }

    /// This process.
    pub fn current() -> ProcessId {
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        ProcessId::of(pid).unwrap_or(ProcessId { pid, start: 0 })
    }

    /// Whether this very process still runs (a zombie does not: it holds nothing but its
    /// exit status).
    pub fn is_alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && s.is_live())
    }

    /// `pid N (state S): command line` for reports, or `pid N (gone)`.
    pub fn describe(&self) -> String {
        match stat(self.pid).filter(|s| s.start == self.start) {
            Some(s) => format!(
                "pid {} (state {}): {}",
                self.pid,
                s.state,
                cmdline(self.pid)
            ),
            None => format!("pid {} (gone)", self.pid),
        }
    }
}

/// The fields of /proc/PID/stat the host code needs.
#[derive(Clone, Debug)]
pub(crate) struct Stat {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
    pub start: u64,
}

impl Stat {
    pub(crate) fn id(&self) -> ProcessId {
        ProcessId {
            pid: self.pid,
            start: self.start,
        }
    }

    pub(crate) fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

pub(crate) fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// `pid (comm) state ppid ... starttime(22nd field) ...`; comm may hold spaces and parentheses,
/// so fields are counted from the last `)`.
pub(crate) fn parse_stat(pid: i32, text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// Every process in /proc, by pid (threads are not listed there, only thread-group leaders).
pub(crate) fn scan() -> BTreeMap<i32, Stat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .map(|s| (s.pid, s))
        .collect()
}

/// Our pid and every ancestor's: never a target, whatever a record says.
pub(crate) fn self_and_ancestors(table: &BTreeMap<i32, Stat>) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let mut pid = ProcessId::current().pid;
    while pid > 0 && out.insert(pid) {
        pid = table
            .get(&pid)
            .map(|s| s.ppid)
            .or_else(|| stat(pid).map(|s| s.ppid))
            .unwrap_or(0);
    }
    out
}

/// The pids of our own children now, from every thread's `children` list (an orphan adopted by
/// a subreaper becomes the child of one of its threads).
pub(crate) fn own_children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The command line for reports, arguments joined by spaces (lossy for non-UTF-8 bytes);
/// `[comm]` for a process without one (a kernel thread, a zombie).
pub(crate) fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.is_empty() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        return format!("[{}]", comm.trim());
    }
    args.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_pid_parses_stat_with_odd_comm() {
        let text = "42 (a) b (c) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        let s = parse_stat(42, text).expect("parsed");
        assert_eq!((s.pid, s.ppid, s.state, s.start), (42, 7, 'S', 12345));
        assert!(parse_stat(1, "1 (x) S").is_none());
    }

    #[test]
    fn host_pid_excludes_self_and_parent() {
        let table = scan();
        let excluded = self_and_ancestors(&table);
        let me = ProcessId::current();
        assert!(me.is_alive());
        assert!(excluded.contains(&me.pid));
        let parent = table.get(&me.pid).map(|s| s.ppid).expect("own stat");
        assert!(parent == 0 || excluded.contains(&parent));
        let reused = ProcessId {
            pid: me.pid,
            start: me.start + 1,
        };
        assert!(!reused.is_alive(), "another start time is another process");
    }
}
