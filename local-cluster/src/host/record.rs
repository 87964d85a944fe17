//! The record of one run, kept in the registry from before the first process starts until the
//! run's tear-down has restored the host: who owns the run (the harness, by pid and start
//! time), the host snapshot, and every process the cluster started, added (and the file
//! rewritten atomically) as each one starts. A later run or `local-cluster clean` undoes a run
//! whose owner is gone from exactly this record.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::atomic;
use super::error::HostError;
use super::pid::ProcessId;
use super::snapshot::HostSnapshot;

/// What a run leaves on disk so that it can be undone without it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The harness process; while it lives, the run is its own to tear down.
    pub owner: ProcessId,
    /// The boot the record was made in: in another, its pids and start times name nothing.
    #[serde(default)]
    pub boot_id: String,
    pub snapshot: HostSnapshot,
    /// Every process the cluster started, in start order.
    pub processes: Vec<RecordedProcess>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedProcess {
    /// The component, or `child` for a process that became the harness's child by other means
    /// (an orphaned descendant adopted by the harness as subreaper, such as a containerd shim).
    pub name: String,
    #[serde(flatten)]
    pub id: ProcessId,
}

impl RunRecord {
    pub fn new(owner: ProcessId, snapshot: HostSnapshot) -> RunRecord {
        RunRecord {
            owner,
            boot_id: boot_id(),
            snapshot,
            processes: Vec::new(),
        }
    }

    pub fn run_dir(&self) -> &Path {
        &self.snapshot.run_dir
    }

    /// The recorded processes' identities; none if the record comes from another boot.
    pub fn process_ids(&self) -> Vec<ProcessId> {
        if self.boot_id != boot_id() {
            return Vec::new();
        }
        self.processes.iter().map(|p| p.id).collect()
    }

    pub fn save(&self, path: &Path) -> Result<(), HostError> {
        atomic::write_json(path, self)
    }

    pub fn load(path: &Path) -> Result<RunRecord, HostError> {
        let bytes = std::fs::read(path).map_err(|e| HostError::io("read", path, e))?;
        serde_json::from_slice(&bytes).map_err(|cause| HostError::Json {
            path: path.to_path_buf(),
            cause,
        })
    }

    /// Adds `id` unless it is there already; a named entry replaces a `child` one (the scan for
    /// adopted children may see a just-spawned component first). Returns whether it changed.
    fn add(&mut self, name: &str, id: ProcessId) -> bool {
        match self.processes.iter_mut().find(|p| p.id == id) {
            Some(entry) if entry.name == CHILD && name != CHILD => {
                entry.name = name.to_string();
                true
            }
            Some(_) => false,
            None => {
                self.processes.push(RecordedProcess {
                    name: name.to_string(),
                    id,
                });
                true
            }
        }
    }
}

/// This boot's id; empty if the kernel does not say.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The name of an adopted child in a record.
pub(crate) const CHILD: &str = "child";

/// The record of the running cluster, saved on every change. Shared with the adoption scan.
#[derive(Debug)]
pub struct LiveRecord {
    path: PathBuf,
    record: Mutex<RunRecord>,
}

impl LiveRecord {
    /// Saves `record` at `path` (its first version) and keeps it for updates.
    pub(crate) fn create(path: PathBuf, record: RunRecord) -> Result<Arc<LiveRecord>, HostError> {
        record.save(&path)?;
        Ok(Arc::new(LiveRecord {
            path,
            record: Mutex::new(record),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a started process and saves the record before returning.
    pub fn add(&self, name: &str, id: ProcessId) -> Result<(), HostError> {
        let mut record = self.lock();
        if record.add(name, id) {
            record.save(&self.path)?;
        }
        Ok(())
    }

    /// A copy of the record now.
    pub fn get(&self) -> RunRecord {
        self.lock().clone()
    }

    /// Removes the record: the run has been undone.
    pub fn remove(&self) -> Result<(), HostError> {
        let _record = self.lock();
        atomic::remove(&self.path)
    }

    fn lock(&self) -> MutexGuard<'_, RunRecord> {
        // A panic elsewhere while holding the lock leaves a record that is still whole.
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}
