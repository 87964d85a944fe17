//! NodeStage/Unstage, NodePublish/Unpublish, NodeGetVolumeStats, NodeExpandVolume with real
//! loop devices and mounts: stage attaches the image (and mounts its filesystem for mount
//! volumes), publish bind-mounts the staged filesystem or the device node at the target.
//!
//! Each stage/publish call and its inverse is one unit of host work plus state update that a
//! cancelled RPC cannot cut in two: the unit runs in its own task (holding the volume lock),
//! and the handler only awaits it. Nothing is unmounted or detached unless `host` proves it
//! belongs to this volume's image; start-up reconciliation (`reconcile`) undoes what a crash
//! left between the two.

mod host;
mod publish;
mod reconcile;
mod stage;
mod units;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Driver, blocking, not_found_volume, plausible_volume_id};
use crate::error::{DriverError, DriverResult};
use crate::state::{AccessType, VolumeRecord};
use crate::storage::{self, FsType, mount::FsUsage};

pub(crate) use host::normalise;
pub(super) use units::NodeUnits;

#[derive(Clone, Debug)]
pub struct StageRequest {
    pub volume_id: String,
    pub staging_path: PathBuf,
    pub access_type: AccessType,
    pub fs_type: Option<FsType>,
}

#[derive(Clone, Debug)]
pub struct PublishRequest {
    pub volume_id: String,
    pub staging_path: PathBuf,
    pub target_path: PathBuf,
    pub access_type: AccessType,
    pub readonly: bool,
}

#[derive(Clone, Copy, Debug)]
pub enum VolumeStats {
    Filesystem(FsUsage),
    Block { size_bytes: u64 },
}

type VolumeHold = tokio::sync::OwnedRwLockWriteGuard<()>;

impl Driver {
    /// Takes the volume's lock here, in the caller, so units run in the order their requests
    /// came (the lock is fair), then runs `work` to completion in its own task holding it, even
    /// if the caller (the RPC handler) is dropped: a client deadline then only stops the wait,
    /// never the unit half-way. Dropped while still waiting for the lock, nothing happens.
    /// `what` (the RPC) names the unit in the shutdown log.
    async fn unit<T, F, Fut>(self: &Arc<Self>, what: &str, id: &str, work: F) -> DriverResult<T>
    where
        F: FnOnce(Arc<Driver>, VolumeRecord, VolumeHold) -> Fut,
        Fut: Future<Output = DriverResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        let (volume, hold) = self.hold_volume(id).await?;
        let work = work(Arc::clone(self), volume, hold);
        self.units.spawn(format!("{what} {id}"), work).await?
    }

    /// For a stopping server, once no call is left: waits up to `deadline` for the node units
    /// still running (their callers gone), so none is cut off between its host work and its
    /// state update. Logs what was still running if the deadline expires.
    pub async fn finish_node_units(&self, deadline: std::time::Duration) {
        let left = self.units.finish(deadline).await;
        if !left.is_empty() {
            tracing::error!(
                units = ?left,
                ?deadline,
                "node units still running at shutdown; start-up reconciliation will finish them"
            );
        }
    }

    async fn hold_volume(&self, id: &str) -> DriverResult<(VolumeRecord, VolumeHold)> {
        if !plausible_volume_id(id) {
            return Err(not_found_volume(id));
        }
        let hold = self.locks.exclusive(&Self::volume_key(id)).await;
        Ok((self.volume(id)?, hold))
    }

    pub async fn volume_stats(&self, id: &str, path: &Path) -> DriverResult<VolumeStats> {
        if !plausible_volume_id(id) {
            return Err(not_found_volume(id));
        }
        let volume = self.volume(id)?;
        let path = normalise(path);
        let staged = volume
            .staged
            .as_ref()
            .ok_or_else(|| not_present(&volume, &path))?;
        if normalise(&staged.staging_path) != path && !is_published_at(&volume, &path) {
            return Err(not_present(&volume, &path));
        }
        let device = staged.device.clone();
        match volume.access_type {
            AccessType::Mount => {
                blocking(move || Ok(VolumeStats::Filesystem(storage::mount::fs_usage(&path)?)))
                    .await
            }
            AccessType::Block => {
                blocking(move || {
                    Ok(VolumeStats::Block {
                        size_bytes: storage::loopdev::device_size(&device)?,
                    })
                })
                .await
            }
        }
    }

    /// Grows what the node sees (loop device, then filesystem) to the volume's recorded size.
    pub async fn node_expand_volume(
        &self,
        id: &str,
        volume_path: &Path,
        required: u64,
    ) -> DriverResult<u64> {
        let (volume, _hold) = self.hold_volume(id).await?;
        let path = normalise(volume_path);
        let staged = volume
            .staged
            .clone()
            .filter(|s| normalise(&s.staging_path) == path || is_published_at(&volume, &path))
            .ok_or_else(|| {
                DriverError::invalid(
                    "volume_path",
                    format!(
                        "volume {id} is not staged or published at {}",
                        volume_path.display()
                    ),
                )
            })?;
        if required > volume.size_bytes {
            return Err(DriverError::OutOfRange(format!(
                "capacity_range.required_bytes {required} exceeds the volume's {} bytes; \
                 call ControllerExpandVolume first",
                volume.size_bytes
            )));
        }
        let fs_type = volume.fs_type;
        let grow = volume.fs_size_bytes < volume.size_bytes;
        blocking(move || {
            storage::loopdev::refresh_capacity(&staged.device)?;
            if let (Some(fs), true) = (fs_type, grow) {
                storage::image::grow_filesystem(&staged.device, &staged.staging_path, fs)?;
            }
            Ok(())
        })
        .await?;
        self.store.update(|s| {
            let v = s.volumes.get_mut(id).expect("held exclusively");
            v.fs_size_bytes = v.size_bytes;
        })?;
        Ok(volume.size_bytes)
    }
}

/// The recorded publish target that `path` (normalised) names, in the record's own spelling.
fn published_key(volume: &VolumeRecord, path: &Path) -> Option<PathBuf> {
    volume
        .published
        .keys()
        .find(|k| normalise(k) == path)
        .cloned()
}

fn is_published_at(volume: &VolumeRecord, path: &Path) -> bool {
    published_key(volume, path).is_some()
}

fn check_access_type(volume: &VolumeRecord, wanted: AccessType) -> DriverResult<()> {
    if volume.access_type == wanted {
        return Ok(());
    }
    Err(DriverError::FailedPrecondition(format!(
        "volume {} is a {:?} volume; volume_capability asks for {wanted:?} access",
        volume.id, volume.access_type
    )))
}

fn not_present(volume: &VolumeRecord, path: &Path) -> DriverError {
    DriverError::NotFound {
        kind: "volume at path",
        id: format!("{} at {}", volume.id, path.display()),
    }
}
