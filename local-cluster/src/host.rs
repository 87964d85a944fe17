//! The host around the cluster: what the stack changes outside its run directory, and what it
//! may leave behind when it dies.
//!
//! - [`HostSnapshot`] is taken before anything starts: the sysctls the kubelet rewrites and
//!   which host paths the stack may create already existed. [`HostSnapshot::restore`] puts the
//!   sysctls back and removes what was created, never across a mount point and never through a
//!   symlink.
//! - [`RunRecord`] (in a [`Registry`], a root-owned directory per host) holds the snapshot, the
//!   harness that owns the run and every process the cluster started, by pid and start time,
//!   saved as each one starts; [`Adopter`] adds the shims containerd detaches.
//! - [`sweep`] removes whatever of a run is still alive or attached: the recorded processes and
//!   their descendants, mounts below the run directory, loop devices bound to files in it.
//! - [`clean_stale`] undoes, from their records, earlier runs whose harness is gone.
//! - [`leftovers`] is the read-only check: empty means the host is as it was found.
//!
//! Everything here is synchronous std code with bounded waits, so it also runs from `Drop` and
//! from signal-driven shutdown paths; nothing panics on a host that looks unexpected.

mod adopt;
mod atomic;
mod clean;
mod error;
mod loops;
mod mountinfo;
mod mounts;
mod options;
mod paths;
mod pid;
mod procs;
mod record;
mod registry;
mod remove;
mod report;
mod snapshot;
mod sweep;
#[cfg(test)]
mod tests;

pub use adopt::Adopter;
pub use clean::{CleanReport, RunOutcome, clean_stale};
pub use error::HostError;
pub use options::SweepOptions;
pub use pid::ProcessId;
pub use record::{LiveRecord, RecordedProcess, RunRecord};
pub use registry::{REGISTRY_DIR, Registry, RegistryLock};
pub(crate) use remove::remove_tree;
pub use report::{
    DetachedLoop, KilledProcess, RestoreReport, RestoredSysctl, SweepReport, Unmounted,
};
pub use snapshot::{HOST_PATHS, HostSnapshot, HostSpec, SYSCTLS};
pub use sweep::{leftovers, sweep, sweep_with};
