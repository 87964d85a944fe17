//! Where run records live: one root-owned directory per host, independent of any run's work
//! directory, so a run can find what an earlier one left wherever that one ran.
//!
//! `<dir>/runs/<owner pid>-<owner start>.json` is one record; `<dir>/lock` serialises the
//! clean-up of earlier runs with the creation of a new record (flock, waited for with a
//! deadline), so two starts cannot both take a host for theirs.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

use super::error::HostError;
use super::record::{LiveRecord, RunRecord};

/// The registry on a real host.
pub const REGISTRY_DIR: &str = "/var/lib/csi-clone-conformance/local-cluster";

/// How long to wait for another process's clean-up or start to release the lock.
const LOCK_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct Registry {
    dir: PathBuf,
}

/// Held while earlier runs are cleaned and a new record is made; released on drop.
#[derive(Debug)]
pub struct RegistryLock {
    _file: File,
}

impl Registry {
    /// The host's registry, [`REGISTRY_DIR`].
    pub fn system() -> Registry {
        Registry::at(Path::new(REGISTRY_DIR))
    }

    /// A registry in `dir` (tests use a temp dir).
    pub fn at(dir: &Path) -> Registry {
        Registry {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn runs(&self) -> PathBuf {
        self.dir.join("runs")
    }

    /// Takes the registry's lock, creating the registry (root only) if needed.
    pub fn lock(&self) -> Result<RegistryLock, HostError> {
        let runs = self.runs();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&runs)
            .map_err(|e| HostError::io("create", &runs, e))?;
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| HostError::io("open", &path, e))?;
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(RegistryLock { _file: file }),
                Err(Errno::WOULDBLOCK) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(Errno::WOULDBLOCK) => return Err(HostError::Locked { path }),
                Err(e) => return Err(HostError::io("lock", &path, e.into())),
            }
        }
    }

    /// Every record, oldest file name first; an unreadable one comes with its error.
    pub fn records(&self, _lock: &RegistryLock) -> Vec<(PathBuf, Result<RunRecord, HostError>)> {
        let runs = self.runs();
        let Ok(entries) = std::fs::read_dir(&runs) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_record_name(p))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|path| {
                let record = RunRecord::load(&path);
                (path, record)
            })
            .collect()
    }

    /// Saves a new record (named after its owner) and returns the live handle to it.
    pub fn create(
        &self,
        _lock: &RegistryLock,
        record: RunRecord,
    ) -> Result<Arc<LiveRecord>, HostError> {
        let owner = record.owner;
        let path = self
            .runs()
            .join(format!("{}-{}.json", owner.pid, owner.start));
        LiveRecord::create(path, record)
    }
}

/// `NAME.json`, not a dot file (temp files are `.NAME.json.tmp`).
fn is_record_name(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    !name.starts_with('.') && name.ends_with(".json")
}
