//! NodeStage/Unstage, NodePublish/Unpublish, NodeGetVolumeStats, NodeExpandVolume with real
//! loop devices and mounts: stage attaches the image (and mounts its filesystem for mount
//! volumes), publish bind-mounts the staged filesystem or the device node at the target.

use std::path::{Path, PathBuf};

use super::{Driver, blocking, not_found_volume, path_string, plausible_volume_id};
use crate::error::{DriverError, DriverResult};
use crate::state::{AccessType, Staging, VolumeRecord};
use crate::storage::{self, FsType, mount::FsUsage};

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

impl Driver {
    async fn hold_volume(
        &self,
        id: &str,
    ) -> DriverResult<(VolumeRecord, tokio::sync::OwnedRwLockWriteGuard<()>)> {
        if !plausible_volume_id(id) {
            return Err(not_found_volume(id));
        }
        let hold = self.locks.exclusive(&Self::volume_key(id)).await;
        Ok((self.volume(id)?, hold))
    }

    pub async fn stage_volume(&self, request: StageRequest) -> DriverResult<()> {
        let (volume, _hold) = self.hold_volume(&request.volume_id).await?;
        check_access_type(&volume, request.access_type)?;
        if let (Some(wanted), Some(have)) = (request.fs_type, volume.fs_type)
            && wanted != have
        {
            return Err(DriverError::FailedPrecondition(format!(
                "volume {} holds {have}; volume_capability.mount.fs_type asks for {wanted}",
                volume.id
            )));
        }
        if let Some(staged) = &volume.staged {
            if staged.staging_path == request.staging_path {
                return Ok(());
            }
            return Err(DriverError::FailedPrecondition(format!(
                "volume {} is already staged at {}",
                volume.id,
                staged.staging_path.display()
            )));
        }
        if !request.staging_path.is_dir() {
            return Err(DriverError::invalid(
                "staging_target_path",
                format!(
                    "{} is not an existing directory",
                    request.staging_path.display()
                ),
            ));
        }
        let image = self.store.volume_image(&volume.id);
        let staging_path = request.staging_path.clone();
        let (fs_type, size) = (volume.fs_type, volume.size_bytes);
        let grow = volume.fs_size_bytes < volume.size_bytes;
        let device = blocking(move || {
            let device = storage::loopdev::attach(&image)?;
            if let Some(fs) = fs_type {
                // A larger clone or an expansion: the filesystem grows before first use,
                // offline where the filesystem allows it (no CAP_SYS_RESOURCE needed).
                let offline = grow && fs == FsType::Ext4;
                let mounted = (if offline {
                    storage::image::grow_filesystem_offline(&device, fs)
                } else {
                    Ok(())
                })
                .and_then(|()| storage::mount::mount_filesystem(&device, &staging_path, fs, false))
                .and_then(|()| {
                    if grow && !offline {
                        storage::image::grow_filesystem(&device, &staging_path, fs)?;
                    }
                    Ok(())
                });
                if let Err(e) = mounted {
                    let _ = storage::mount::unmount(&staging_path);
                    let _ = storage::loopdev::detach(&device);
                    return Err(e.into());
                }
            }
            Ok(device)
        })
        .await?;
        self.store.update(|s| {
            let v = s.volumes.get_mut(&volume.id).expect("held exclusively");
            v.staged = Some(Staging {
                staging_path: request.staging_path.clone(),
                device: device.clone(),
            });
            if fs_type.is_some() {
                v.fs_size_bytes = size;
            }
        })?;
        tracing::info!(id = %volume.id, device = %device.display(), path = %request.staging_path.display(), "volume staged");
        Ok(())
    }

    pub async fn unstage_volume(&self, id: &str, staging_path: &Path) -> DriverResult<()> {
        let (volume, _hold) = self.hold_volume(id).await?;
        let Some(staged) = volume
            .staged
            .clone()
            .filter(|s| s.staging_path == staging_path)
        else {
            return Ok(());
        };
        if let Some(target) = volume.published.keys().next() {
            return Err(DriverError::FailedPrecondition(format!(
                "volume {id} is still published at {}; unpublish it first",
                target.display()
            )));
        }
        let access_type = volume.access_type;
        blocking(move || {
            if access_type == AccessType::Mount {
                storage::mount::unmount(&staged.staging_path)?;
            }
            storage::loopdev::detach(&staged.device)?;
            Ok(())
        })
        .await?;
        self.store.update(|s| {
            if let Some(v) = s.volumes.get_mut(id) {
                v.staged = None;
            }
        })?;
        tracing::info!(%id, "volume unstaged");
        Ok(())
    }

    pub async fn publish_volume(&self, request: PublishRequest) -> DriverResult<()> {
        let (volume, _hold) = self.hold_volume(&request.volume_id).await?;
        check_access_type(&volume, request.access_type)?;
        let staged = match &volume.staged {
            Some(staged) if staged.staging_path == request.staging_path => staged.clone(),
            Some(staged) => {
                return Err(DriverError::FailedPrecondition(format!(
                    "volume {} is staged at {}, not at staging_target_path {}",
                    volume.id,
                    staged.staging_path.display(),
                    request.staging_path.display()
                )));
            }
            None => {
                return Err(DriverError::FailedPrecondition(format!(
                    "volume {} is not staged; call NodeStageVolume first",
                    volume.id
                )));
            }
        };
        if let Some(&readonly) = volume.published.get(&request.target_path) {
            if readonly == request.readonly {
                return Ok(());
            }
            return Err(DriverError::AlreadyExists(format!(
                "volume {} is already published at {} with readonly={readonly}",
                volume.id,
                request.target_path.display()
            )));
        }
        let target = request.target_path.clone();
        let (access_type, readonly) = (volume.access_type, request.readonly);
        blocking(move || {
            let io = |op, source| storage::StorageError::Io {
                op,
                path: target.clone(),
                source,
            };
            // The SP creates the target: a directory for mount, a file to bind a device onto.
            let source = match access_type {
                AccessType::Mount => {
                    std::fs::create_dir_all(&target).map_err(|e| io("create", e))?;
                    staged.staging_path.clone()
                }
                AccessType::Block => {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&target)
                        .map_err(|e| io("create", e))?;
                    staged.device.clone()
                }
            };
            storage::mount::bind_mount(&source, &target, readonly)?;
            Ok(())
        })
        .await?;
        self.store.update(|s| {
            let v = s.volumes.get_mut(&volume.id).expect("held exclusively");
            v.published
                .insert(request.target_path.clone(), request.readonly);
        })?;
        tracing::info!(id = %volume.id, target = %request.target_path.display(), "volume published");
        Ok(())
    }

    pub async fn unpublish_volume(&self, id: &str, target: &Path) -> DriverResult<()> {
        let (volume, _hold) = self.hold_volume(id).await?;
        if !volume.published.contains_key(target) {
            return Ok(());
        }
        let target_owned = target.to_path_buf();
        blocking(move || {
            storage::mount::unmount(&target_owned)?;
            // The SP created the target at publish, so it removes it (spec: NodeUnpublishVolume).
            let removed = if target_owned.is_dir() {
                std::fs::remove_dir(&target_owned)
            } else {
                std::fs::remove_file(&target_owned)
            };
            match removed {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(storage::StorageError::Io {
                        op: "remove",
                        path: target_owned,
                        source: e,
                    }
                    .into())
                }
                _ => Ok(()),
            }
        })
        .await?;
        self.store.update(|s| {
            if let Some(v) = s.volumes.get_mut(id) {
                v.published.remove(target);
            }
        })?;
        tracing::info!(%id, target = %path_string(target), "volume unpublished");
        Ok(())
    }

    pub async fn volume_stats(&self, id: &str, path: &Path) -> DriverResult<VolumeStats> {
        if !plausible_volume_id(id) {
            return Err(not_found_volume(id));
        }
        let volume = self.volume(id)?;
        let staged = volume
            .staged
            .as_ref()
            .ok_or_else(|| not_present(&volume, path))?;
        if staged.staging_path != path && !volume.published.contains_key(path) {
            return Err(not_present(&volume, path));
        }
        let (path, device) = (path.to_path_buf(), staged.device.clone());
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
        let staged = volume
            .staged
            .clone()
            .filter(|s| s.staging_path == volume_path || volume.published.contains_key(volume_path))
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
