//! The driver core shared by the Identity, Controller and Node services: domain requests in,
//! records out. gRPC types stay in `crate::csi`.

mod node;
mod populate;
mod snapshots;
mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use node::{PublishRequest, StageRequest, VolumeStats};
pub use volumes::{CreateVolume, Expanded};

use crate::config::DriverConfig;
use crate::error::{DriverError, DriverResult};
use crate::locks::KeyedLocks;
use crate::state::{AccessType, Source, Staging, StateStore, is_driver_id};
use crate::storage::{self, FsType};

/// Sizes are kept in whole filesystem blocks so loop devices and mkfs see exactly what we report.
pub const SIZE_ALIGNMENT: u64 = 4096;
/// Smallest block volume: enough for a partition table and a few blocks of data.
pub const MIN_BLOCK_VOLUME: u64 = 1 << 20;

pub struct Driver {
    pub config: DriverConfig,
    pub store: StateStore,
    locks: KeyedLocks,
}

/// What a new volume is populated from, resolved while the source is held shared.
struct Origin {
    source: Source,
    image: PathBuf,
    size_bytes: u64,
    access_type: AccessType,
    fs_type: Option<FsType>,
    fs_size_bytes: u64,
    staged: Option<Staging>,
}

impl Driver {
    /// Opens the state dir and cleans up whatever a crash left half-made.
    pub fn open(config: DriverConfig) -> DriverResult<Driver> {
        let store = StateStore::open(&config.state_dir)?;
        for cleaned in store.recover()? {
            tracing::warn!(%cleaned, "recovered state dir after an unclean stop");
        }
        // A driver killed mid-copy leaves its source frozen; writers would hang forever.
        for volume in store.read().volumes.values() {
            if let (Some(staged), AccessType::Mount) = (&volume.staged, volume.access_type)
                && let Err(e) = storage::mount::thaw(&staged.staging_path)
            {
                tracing::warn!(id = %volume.id, error = %e, "could not thaw a staged volume");
            }
        }
        Ok(Driver {
            config,
            store,
            locks: KeyedLocks::default(),
        })
    }

    fn volume_key(id: &str) -> String {
        format!("volume/{id}")
    }

    fn snapshot_key(id: &str) -> String {
        format!("snapshot/{id}")
    }
}

pub fn round_up(size: u64, alignment: u64) -> u64 {
    size.div_ceil(alignment).saturating_mul(alignment)
}

/// Runs blocking storage work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> DriverResult<T> + Send + 'static,
) -> DriverResult<T> {
    tokio::task::spawn_blocking(work).await?
}

/// Makes a staged volume's image consistent before we copy it: a mounted filesystem is frozen
/// until the returned guard drops; a block device is flushed (without a filesystem there is
/// nothing to freeze, so a block copy is point-in-time only if its writers are quiet).
/// `freeze: false` is the `clone-without-freeze` fault: a mounted filesystem is only synced.
fn quiesce_staged(
    staged: &Staging,
    access_type: AccessType,
    freeze: bool,
) -> DriverResult<Option<storage::mount::Frozen>> {
    match access_type {
        AccessType::Mount if !freeze => storage::mount::sync_filesystem(&staged.staging_path)?,
        AccessType::Mount => return Ok(Some(storage::mount::freeze(&staged.staging_path)?)),
        AccessType::Block => {
            let device = std::fs::File::open(&staged.device).map_err(|source| {
                storage::StorageError::Io {
                    op: "open",
                    path: staged.device.clone(),
                    source,
                }
            })?;
            device
                .sync_all()
                .map_err(|source| storage::StorageError::Io {
                    op: "fsync",
                    path: staged.device.clone(),
                    source,
                })?;
        }
    }
    Ok(None)
}

fn not_found_volume(id: &str) -> DriverError {
    DriverError::NotFound {
        kind: "volume",
        id: id.to_string(),
    }
}

/// Volume ids this driver could have issued; others are unknown without touching the disk.
fn plausible_volume_id(id: &str) -> bool {
    is_driver_id("vol", id)
}

fn describe_source(source: Option<&Source>) -> String {
    match source {
        None => "no content source".into(),
        Some(Source::Volume(id)) => format!("source volume {id}"),
        Some(Source::Snapshot(id)) => format!("source snapshot {id}"),
    }
}

fn same_parameters(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a == b
}

fn path_string(path: &Path) -> String {
    path.display().to_string()
}
