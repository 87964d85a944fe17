//! The driver core shared by the Identity, Controller and Node services: domain requests in,
//! records out. gRPC types stay in `crate::csi`.

mod fs_type;
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
use crate::storage::{self, FsType, freeze};
use crate::variants::{Attachments, InFlight, PostProcessing, Variant};

/// Sizes are kept in whole filesystem blocks so loop devices and mkfs see exactly what we report.
pub const SIZE_ALIGNMENT: u64 = 4096;
/// Smallest block volume: enough for a partition table and a few blocks of data.
pub const MIN_BLOCK_VOLUME: u64 = 1 << 20;

pub struct Driver {
    pub config: DriverConfig,
    pub store: StateStore,
    locks: KeyedLocks,
    units: node::NodeUnits,
    /// `AsyncSnapshots`: snapshots not yet ready_to_use.
    post_processing: PostProcessing,
    /// `AbortWhenBusy`: names and sources with a CreateVolume in flight.
    in_flight: InFlight,
    /// `PublishRequired`: volumes ControllerPublished to this node.
    pub attachments: Attachments,
}

/// What a new volume is populated from, resolved while the source is held shared.
struct Origin {
    source: Source,
    image: PathBuf,
    size_bytes: u64,
    access_type: AccessType,
    fs_type: Option<FsType>,
    fs_size_bytes: u64,
    staged: Option<StagedSource>,
}

impl Driver {
    /// Opens the state dir and cleans up whatever a crash left half-made.
    pub fn open(config: DriverConfig) -> DriverResult<Driver> {
        let store = StateStore::open(&config.state_dir)?;
        // Before anything writes: a freeze left by a driver killed mid-copy (and by a
        // guardian that died with it) would block whatever writes next on that filesystem.
        thaw_leftovers(&store, &config.state_dir);
        for cleaned in store.recover()? {
            tracing::warn!(%cleaned, "recovered state dir after an unclean stop");
        }
        Self::reconcile_node(&store);
        Ok(Driver {
            config,
            store,
            locks: KeyedLocks::default(),
            units: node::NodeUnits::default(),
            post_processing: PostProcessing::default(),
            in_flight: InFlight::default(),
            attachments: Attachments::default(),
        })
    }

    /// Whether a snapshot may be used as a source yet (`AsyncSnapshots` post-processing).
    pub fn snapshot_ready(&self, id: &str) -> bool {
        !self.config.variant(Variant::AsyncSnapshots) || self.post_processing.is_ready(id)
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

/// Thaws the staged mount volumes a dead driver left frozen, each only with the proof a freeze
/// needs (`storage::freeze`): a stale record must not make us thaw, or freeze, anything else.
fn thaw_leftovers(store: &StateStore, state_dir: &Path) {
    for volume in store.read().volumes.values() {
        let (Some(staging), AccessType::Mount) = (&volume.staged, volume.access_type) else {
            continue;
        };
        let image = store.volume_image(&volume.id);
        let staged = freeze::Staged {
            volume_id: &volume.id,
            staging_path: &staging.staging_path,
            device: &staging.device,
            image: &image,
        };
        let never = [Path::new("/"), state_dir];
        match freeze::prove(&staged, &never).and_then(|p| p.thaw_leftover()) {
            Ok(true) => tracing::warn!(id = %volume.id, "thawed a volume a crash left frozen"),
            Ok(false) => {}
            Err(e) => tracing::info!(id = %volume.id, error = %e, "not thawing a staged volume"),
        }
    }
}

/// A staged volume whose image is about to be copied.
#[derive(Clone, Debug)]
struct StagedSource {
    volume_id: String,
    staging: Staging,
    access_type: AccessType,
    image: PathBuf,
}

/// How copies treat a staged source: where state lives (never frozen), how long a freeze may
/// last, and whether to freeze at all (`false`: the `clone-without-freeze` fault).
#[derive(Clone, Debug)]
struct CopyPolicy {
    state_dir: PathBuf,
    deadline: std::time::Duration,
    freeze: bool,
}

impl Driver {
    fn copy_policy(&self) -> CopyPolicy {
        CopyPolicy {
            state_dir: self.config.state_dir.clone(),
            deadline: self.config.freeze_deadline,
            freeze: !self.config.fault(crate::faults::Fault::CloneWithoutFreeze),
        }
    }
}

/// Runs `copy` (which writes `destination`) with a staged source made consistent: a mounted
/// filesystem frozen for exactly the copy, a block device flushed first (without a filesystem
/// there is nothing to freeze, so a block copy is point-in-time only if its writers are quiet).
/// A copy whose freeze lapsed before it finished is an error.
fn copy_quiesced(
    source: Option<&StagedSource>,
    policy: &CopyPolicy,
    destination: &Path,
    copy: impl FnOnce() -> DriverResult<()>,
) -> DriverResult<()> {
    let frozen = match source {
        Some(source) => quiesce(source, policy, destination)?,
        None => None,
    };
    let copied = copy();
    let released = frozen.map_or(Ok(()), freeze::Frozen::release);
    copied.and(released.map_err(DriverError::from))
}

fn quiesce(
    source: &StagedSource,
    policy: &CopyPolicy,
    destination: &Path,
) -> DriverResult<Option<freeze::Frozen>> {
    let staged = freeze::Staged {
        volume_id: &source.volume_id,
        staging_path: &source.staging.staging_path,
        device: &source.staging.device,
        image: &source.image,
    };
    if source.access_type == AccessType::Block {
        let (device, _) = freeze::open_bound_device(&staged)?;
        device
            .sync_all()
            .map_err(|e| storage::StorageError::io("fsync", &source.staging.device, e))?;
        return Ok(None);
    }
    // The copy's own directory must not be frozen under it either.
    let landing = destination.parent().unwrap_or(Path::new("/"));
    let never = [Path::new("/"), policy.state_dir.as_path(), landing];
    let proven = freeze::prove(&staged, &never)?;
    if !policy.freeze {
        proven.sync()?;
        return Ok(None);
    }
    Ok(Some(proven.freeze(policy.deadline)?))
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
