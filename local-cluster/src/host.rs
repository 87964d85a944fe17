//! The host around the cluster: what the stack changes outside its run directory, and what it
//! may leave behind when it dies.
//!
//! - [`HostSnapshot`] is taken before anything starts (and saved, so a later run can undo a
//!   SIGKILLed one): the sysctls the kubelet rewrites and which host paths the stack may create
//!   already existed. [`HostSnapshot::restore`] puts the sysctls back and removes what was
//!   created, never across a mount point and never through a symlink.
//! - [`sweep`] removes whatever of a run is still alive or attached: processes, mounts and loop
//!   devices that refer to the run directory.
//! - [`leftovers`] is the read-only check CI uses: empty means the host is as it was found.
//!
//! Everything here is synchronous std code with bounded waits, so it also runs from `Drop` and
//! from signal-driven shutdown paths; nothing panics on a host that looks unexpected.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod loops;
mod mountinfo;
mod mounts;
mod paths;
mod procs;
mod remove;
mod report;
mod snapshot;
#[cfg(test)]
mod tests;

pub use report::{
    DetachedLoop, KilledProcess, RestoreReport, RestoredSysctl, SweepReport, Unmounted,
};
pub use snapshot::{HOST_PATHS, HostSnapshot, HostSpec, SYSCTLS};

use paths::RunDir;

/// Why a host operation could not even start; per-item problems go into the reports instead.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The message carries the cause, because callers mostly keep only `to_string()`.
    #[error("{op} {}: {cause}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("parse host snapshot {}: {cause}", path.display())]
    Json {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error("refusing to use {} as a run directory: {reason}", path.display())]
    RunDir { path: PathBuf, reason: &'static str },
}

impl HostError {
    pub(crate) fn io(op: &'static str, path: &Path, cause: std::io::Error) -> HostError {
        HostError::Io {
            op,
            path: path.to_path_buf(),
            cause,
        }
    }
}

/// How long [`sweep_with`] waits at each step; every wait is bounded by one of these.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// From SIGTERM to SIGKILL.
    pub term_grace: Duration,
    /// From SIGKILL until a process that is still there is reported.
    pub kill_wait: Duration,
    /// From LOOP_CLR_FD until a device that is still attached is reported (the kernel defers
    /// the detach while someone holds the device open).
    pub detach_wait: Duration,
    /// Interval between checks while waiting.
    pub poll: Duration,
}

impl Default for SweepOptions {
    fn default() -> SweepOptions {
        SweepOptions {
            term_grace: Duration::from_secs(5),
            kill_wait: Duration::from_secs(2),
            detach_wait: Duration::from_secs(2),
            poll: Duration::from_millis(50),
        }
    }
}

/// [`sweep_with`] with the default waits (5 s from SIGTERM to SIGKILL).
pub fn sweep(run_dir: &Path) -> SweepReport {
    sweep_with(run_dir, &SweepOptions::default())
}

/// Makes sure nothing of the run below `run_dir` is left: processes (stopped first, so they
/// cannot make new mounts), then mounts at or below it (deepest first), then loop devices backed
/// by files below it (after unmounting them wherever they are mounted). Loop devices are listed
/// before the mounts go, because a backing file on a lazily unmounted filesystem no longer shows
/// a path below the run directory.
pub fn sweep_with(run_dir: &Path, options: &SweepOptions) -> SweepReport {
    let mut report = SweepReport::default();
    let run = match RunDir::new(run_dir) {
        Ok(run) => run,
        Err(e) => {
            report.failed.push(e.to_string());
            return report;
        }
    };
    procs::stop_all(&run, options, &mut report);
    let devices = loops::find(&run);
    mounts::unmount_all(|m| run.contains(&m.mount_point), &mut report);
    loops::detach_all(devices, options, &mut report);
    report
}

/// One line per thing that shows the host is not as `snapshot` found it: a process, mount or
/// loop device of the run, a changed sysctl, a created path still present. Changes nothing.
pub fn leftovers(run_dir: &Path, snapshot: &HostSnapshot) -> Vec<String> {
    let mut lines = Vec::new();
    match RunDir::new(run_dir) {
        Ok(run) => run_leftovers(&run, &mut lines),
        Err(e) => lines.push(e.to_string()),
    }
    lines.extend(snapshot.differences());
    lines
}

/// The processes, mounts and loop devices of the run that are still there.
fn run_leftovers(run: &RunDir, lines: &mut Vec<String>) {
    for process in procs::find(run) {
        lines.push(format!(
            "process {} of the run is still running: {}",
            process.pid, process.cmdline
        ));
    }
    match mountinfo::read() {
        Ok(table) => {
            for m in table.iter().filter(|m| run.contains(&m.mount_point)) {
                lines.push(format!(
                    "mount of the run is still present: {}",
                    m.describe()
                ));
            }
        }
        Err(e) => lines.push(format!("cannot check mounts: {e}")),
    }
    for device in loops::find(run) {
        lines.extend(device.leftover_lines());
    }
}
