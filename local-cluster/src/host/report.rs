//! What a sweep or a restore did, item by item, with one-line summaries for logs and tear-down
//! reports (`done()` for what worked, `failures()` for what did not).

use std::path::PathBuf;

use serde::Serialize;

/// What [`super::sweep`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Processes of the run that are gone now, in the order they went.
    pub killed: Vec<KilledProcess>,
    /// Mounts removed, in the order they were unmounted (deepest first).
    pub unmounted: Vec<Unmounted>,
    /// Loop devices detached.
    pub detached: Vec<DetachedLoop>,
    /// What could not be done, one line each, with the reason.
    pub failed: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KilledProcess {
    pub pid: i32,
    pub cmdline: String,
    /// The signal it went with: "SIGTERM" or "SIGKILL".
    pub signal: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unmounted {
    pub mount_point: PathBuf,
    /// Detached with MNT_DETACH because it was busy: gone from the tree, freed when released.
    pub lazy: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DetachedLoop {
    pub device: PathBuf,
    pub backing_file: PathBuf,
}

impl SweepReport {
    /// One line per thing done.
    pub fn done(&self) -> Vec<String> {
        let killed = self
            .killed
            .iter()
            .map(|k| format!("stopped process {} with {}: {}", k.pid, k.signal, k.cmdline));
        let unmounted = self.unmounted.iter().map(|u| {
            let how = if u.lazy { " (lazily, it was busy)" } else { "" };
            format!("unmounted {}{how}", u.mount_point.display())
        });
        let detached = self.detached.iter().map(|d| {
            format!(
                "detached loop device {} from {}",
                d.device.display(),
                d.backing_file.display()
            )
        });
        killed.chain(unmounted).chain(detached).collect()
    }

    /// One line per thing that could not be done.
    pub fn failures(&self) -> Vec<String> {
        self.failed.clone()
    }

    /// Whether nothing failed.
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
    }
}

/// What [`super::HostSnapshot::restore`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// Sysctls written back.
    pub sysctls: Vec<RestoredSysctl>,
    /// Created paths removed (with everything below them).
    pub removed: Vec<PathBuf>,
    /// What could not be done, one line each, with the reason.
    pub failed: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestoredSysctl {
    /// Dotted name, e.g. `vm.overcommit_memory`.
    pub name: String,
    /// The value the run left.
    pub found: String,
    /// The value from the snapshot, now in place again.
    pub restored: String,
}

impl RestoreReport {
    /// One line per thing done.
    pub fn done(&self) -> Vec<String> {
        let sysctls = self.sysctls.iter().map(|s| {
            format!(
                "restored sysctl {} from {} to {}",
                s.name, s.found, s.restored
            )
        });
        let removed = self
            .removed
            .iter()
            .map(|p| format!("removed {}, created by the run", p.display()));
        sysctls.chain(removed).collect()
    }

    /// One line per thing that could not be done.
    pub fn failures(&self) -> Vec<String> {
        self.failed.clone()
    }

    /// Whether nothing failed.
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
    }
}
