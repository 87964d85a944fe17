//! The sweep: whatever of a run is still alive or attached goes — its processes, the mounts
//! below its run directory, the loop devices bound to files in it — and the read-only check of
//! what is left.

use std::path::Path;

use super::loops;
use super::mountinfo;
use super::mounts;
use super::options::SweepOptions;
use super::paths::RunDir;
use super::pid::ProcessId;
use super::procs;
use super::report::SweepReport;
use super::snapshot::HostSnapshot;

/// [`sweep_with`] with the default waits (5 s from SIGTERM to SIGKILL).
pub fn sweep(run_dir: &Path, owned: &[ProcessId]) -> SweepReport {
    sweep_with(run_dir, owned, &SweepOptions::default())
}

/// Makes sure nothing of the run below `run_dir` is left: the processes in `owned` and their
/// descendants (stopped first, so they cannot make new mounts), then mounts at or below the run
/// directory (deepest first), then loop devices backed by files in it (after unmounting them
/// wherever they are mounted). Loop devices are listed before the mounts go, because a backing
/// file on a lazily unmounted filesystem no longer shows a path below the run directory.
pub fn sweep_with(run_dir: &Path, owned: &[ProcessId], options: &SweepOptions) -> SweepReport {
    let mut report = SweepReport::default();
    let run = match RunDir::new(run_dir) {
        Ok(run) => run,
        Err(e) => {
            report.failed.push(e.to_string());
            return report;
        }
    };
    procs::stop_all(owned, options, &mut report);
    let devices = loops::find(&run, &mut report.failed);
    mounts::unmount_all(|m| run.contains(&m.mount_point), &mut report);
    loops::detach_all(devices, options, &mut report);
    report
}

/// One line per thing that shows the host is not as `snapshot` found it: a process, mount or
/// loop device of the run, a changed sysctl, a created path still present. Changes nothing.
pub fn leftovers(run_dir: &Path, owned: &[ProcessId], snapshot: &HostSnapshot) -> Vec<String> {
    let mut lines = Vec::new();
    for process in procs::find(owned) {
        lines.push(format!(
            "process {} of the run is still running: {}",
            process.id.pid, process.cmdline
        ));
    }
    match RunDir::new(run_dir) {
        Ok(run) => run_leftovers(&run, &mut lines),
        Err(e) => lines.push(e.to_string()),
    }
    lines.extend(snapshot.differences());
    lines
}

/// The mounts and loop devices of the run that are still there.
fn run_leftovers(run: &RunDir, lines: &mut Vec<String>) {
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
    for device in loops::find(run, lines) {
        lines.extend(device.leftover_lines());
    }
}
