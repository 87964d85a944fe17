//! Processes a run's own daemons start detached and name in pid files below the run directory
//! (containerd's shims: `<state>/<namespace>/<id>/shim.pid`). A shim started after the harness
//! died is never adopted, so the file is the only trace; the pid in it counts as the run's
//! only if that process started after the run's harness did and no later than the file was
//! written (a pid reused after the shim died belongs to a process started later).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::pid::ProcessId;

/// Pid files called `name`, `depth` directories below `dir`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidFiles {
    pub dir: PathBuf,
    pub name: String,
    pub depth: usize,
}

/// How much later than its pid file's mtime a process may seem to have started: the start
/// time has clock-tick resolution and the file is written just after the start.
const SLACK_SECS: i64 = 2;

impl PidFiles {
    /// The live processes these files name, each proven as above; `after` is the harness.
    pub(crate) fn processes(&self, after: ProcessId) -> Vec<ProcessId> {
        let mut files = vec![self.dir.clone()];
        for _ in 0..self.depth {
            files = files.iter().flat_map(|d| subdirs(d)).collect();
        }
        files
            .iter()
            .filter_map(|d| proven(&d.join(&self.name), after))
            .collect()
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

fn proven(file: &Path, after: ProcessId) -> Option<ProcessId> {
    let meta = std::fs::symlink_metadata(file)
        .ok()
        .filter(|m| m.is_file())?;
    let pid: i32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    let id = ProcessId::of(pid).filter(ProcessId::is_alive)?;
    let written = ticks_since_boot(meta.mtime(), meta.mtime_nsec())?;
    let tick = clock_ticks()?;
    (id.start >= after.start && id.start <= written + SLACK_SECS as u64 * tick).then_some(id)
}

/// A wall-clock time as clock ticks after boot, the unit of a process's start time.
fn ticks_since_boot(secs: i64, nanos: i64) -> Option<u64> {
    let boot = boot_time()?;
    let tick = clock_ticks()? as i64;
    let ticks = (secs - boot) * tick + nanos * tick / 1_000_000_000;
    u64::try_from(ticks).ok()
}

fn boot_time() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn clock_ticks() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(tick).ok().filter(|t| *t > 0)
}
