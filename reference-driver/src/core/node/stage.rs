//! NodeStageVolume and NodeUnstageVolume. The intent is recorded before the host is touched,
//! `staged` is recorded in the same unit as the mount and cleared as soon as the unmount
//! succeeds; a detach that fails after that is kept as pending and retried.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::host::{self, FileId};
use super::{Driver, StageRequest, VolumeHold, check_access_type, normalise};
use crate::core::blocking;
use crate::error::{DriverError, DriverResult};
use crate::faults::Fault;
use crate::state::{AccessType, NodeIntent, Source, Staging, State, VolumeRecord};
use crate::storage::{self, FsType};

/// How a fresh stage gets its loop device.
enum Attach {
    /// Another staged volume has this very image (same inode: the `clone-shares-source`
    /// fault) attached: use its device, and for mount volumes bind its staging mount, so one
    /// filesystem is never mounted through two loop devices.
    Share { device: PathBuf, from: PathBuf },
    /// Attach the image; `leftovers` are unrecorded, unmounted devices of this image to detach
    /// first.
    New { leftovers: Vec<PathBuf> },
}

/// What the host shows of a recorded stage.
enum StageCheck {
    Good,
    /// Nothing is mounted at the staging path; `bound`: the recorded device still holds the
    /// volume's image.
    Unmounted {
        bound: bool,
    },
    /// Something else is there; the text says what.
    Foreign(String),
}

impl Driver {
    pub async fn stage_volume(self: &Arc<Self>, mut request: StageRequest) -> DriverResult<()> {
        request.staging_path = normalise(&request.staging_path);
        let id = request.volume_id.clone();
        self.unit("NodeStageVolume", &id, move |d, volume, hold| async move {
            d.stage_unit(volume, hold, request).await
        })
        .await
    }

    pub async fn unstage_volume(
        self: &Arc<Self>,
        id: &str,
        staging_path: &Path,
    ) -> DriverResult<()> {
        let path = normalise(staging_path);
        self.unit("NodeUnstageVolume", id, move |d, volume, hold| async move {
            d.unstage_unit(volume, hold, &path).await
        })
        .await
    }

    /// The image's identity, held exclusively: volumes that share one image (hard links) stage
    /// and unstage one at a time. Always taken after the volume lock.
    pub(super) async fn hold_image(&self, id: &str) -> DriverResult<(Option<FileId>, VolumeHold)> {
        let image = self.store.volume_image(id);
        let file = blocking(move || Ok(host::file_id(&image).ok())).await?;
        let key = match file {
            Some(f) => format!("image/{f}"),
            None => format!("image/missing/{id}"),
        };
        Ok((file, self.locks.exclusive(&key).await))
    }

    async fn stage_unit(
        &self,
        volume: VolumeRecord,
        _hold: VolumeHold,
        request: StageRequest,
    ) -> DriverResult<()> {
        check_stage_request(&volume, &request)?;
        self.clone_beside_source_fault(&volume)?;
        let (image, _image_hold) = self.hold_image(&volume.id).await?;
        let image = image.ok_or_else(|| {
            DriverError::FailedPrecondition(format!("volume {} has no image file", volume.id))
        })?;
        if let Some(staged) = &volume.staged {
            if normalise(&staged.staging_path) != request.staging_path {
                return Err(DriverError::FailedPrecondition(format!(
                    "volume {} is already staged at {}",
                    volume.id,
                    staged.staging_path.display()
                )));
            }
            if self.restage_in_place(&volume, staged, image).await? {
                return Ok(());
            }
        }
        self.settle_pending_detach(&volume.id, Some(image)).await?;
        let volume = self.volume(&volume.id)?;
        self.stage_fresh(&volume, &request.staging_path, image)
            .await
    }

    /// Idempotent re-stage: true if the recorded stage holds (or was repaired in place); false
    /// if the record was stale and has been dropped, so the caller stages afresh.
    async fn restage_in_place(
        &self,
        volume: &VolumeRecord,
        staged: &Staging,
        image: FileId,
    ) -> DriverResult<bool> {
        let (s, access) = (staged.clone(), volume.access_type);
        match blocking(move || Ok(check_staged(&s, access, image)?)).await? {
            StageCheck::Good => Ok(true),
            StageCheck::Foreign(what) => Err(DriverError::FailedPrecondition(format!(
                "volume {} is recorded as staged at {}, but {what}",
                volume.id,
                staged.staging_path.display()
            ))),
            StageCheck::Unmounted { bound: true } => {
                // Unmounted behind our back, device still ours: mount it again.
                tracing::warn!(id = %volume.id, path = %staged.staging_path.display(), "staging mount was gone; mounting again");
                let (s, fs) = (staged.clone(), volume.fs_type);
                blocking(move || Ok(remount(&s, fs)?)).await?;
                Ok(true)
            }
            StageCheck::Unmounted { bound: false } => {
                if let Some(target) = volume.published.keys().next() {
                    return Err(DriverError::FailedPrecondition(format!(
                        "volume {}'s loop device {} no longer holds its image, and it is still \
                         published at {}; unpublish it first",
                        volume.id,
                        staged.device.display(),
                        target.display()
                    )));
                }
                tracing::warn!(id = %volume.id, device = %staged.device.display(), "stale staging record dropped; staging again");
                self.store.update(|s| {
                    if let Some(v) = s.volumes.get_mut(&volume.id) {
                        v.staged = None;
                    }
                })?;
                Ok(false)
            }
        }
    }

    async fn stage_fresh(
        &self,
        volume: &VolumeRecord,
        path: &Path,
        image: FileId,
    ) -> DriverResult<()> {
        let others = staged_elsewhere(&self.store.read(), &volume.id);
        let (p, access) = (path.to_path_buf(), volume.access_type);
        let plan = blocking(move || plan_attach(&p, image, &others)).await?;
        let id = volume.id.clone();
        self.store.update(|s| {
            s.with_node_work(&id, |w| {
                w.intent = Some(NodeIntent::Stage(path.to_path_buf()))
            })
        })?;
        let image_path = self.store.volume_image(&volume.id);
        let (p, fs) = (path.to_path_buf(), volume.fs_type);
        let grow = volume.fs_size_bytes < volume.size_bytes;
        let done =
            blocking(move || attach_and_mount(plan, &image_path, &p, access, fs, grow)).await;
        let (device, new_device) = match done {
            Ok(d) => d,
            Err(e) => {
                let _ = self
                    .store
                    .update(|s| s.with_node_work(&id, |w| w.intent = None));
                return Err(e);
            }
        };
        let size = volume.size_bytes;
        let recorded = self.store.update(|s| {
            s.with_node_work(&id, |w| w.intent = None);
            let v = s.volumes.get_mut(&id).expect("held exclusively");
            v.staged = Some(Staging {
                staging_path: path.to_path_buf(),
                device: device.clone(),
            });
            if fs.is_some() {
                v.fs_size_bytes = size;
            }
        });
        if let Err(e) = recorded {
            // Not recorded, so not left on the host either.
            let (p, d) = (path.to_path_buf(), device.clone());
            let _ = blocking(move || Ok(undo_stage(&p, &d, access, new_device)?)).await;
            return Err(e.into());
        }
        tracing::info!(%id, device = %device.display(), path = %path.display(), "volume staged");
        Ok(())
    }

    async fn unstage_unit(
        &self,
        volume: VolumeRecord,
        _hold: VolumeHold,
        path: &Path,
    ) -> DriverResult<()> {
        let id = volume.id.as_str();
        let (image, _image_hold) = self.hold_image(id).await?;
        let staged = volume
            .staged
            .clone()
            .filter(|s| normalise(&s.staging_path) == path);
        match staged {
            Some(staged) => self.unstage_recorded(&volume, &staged, image).await?,
            None if volume.staged.is_none() => {
                // Recover a mount of this image the state does not know (a half-done call).
                let (p, access) = (path.to_path_buf(), volume.access_type);
                if let Some(image) = image {
                    blocking(move || Ok(unmount_unrecorded(&p, image, access)?)).await?;
                }
            }
            None => {}
        }
        self.settle_pending_detach(id, image).await?;
        tracing::info!(%id, "volume unstaged");
        Ok(())
    }

    async fn unstage_recorded(
        &self,
        volume: &VolumeRecord,
        staged: &Staging,
        image: Option<FileId>,
    ) -> DriverResult<()> {
        if let Some(target) = volume.published.keys().next() {
            return Err(DriverError::FailedPrecondition(format!(
                "volume {} is still published at {}; unpublish it first",
                volume.id,
                target.display()
            )));
        }
        if volume.access_type == AccessType::Mount {
            let s = staged.clone();
            blocking(move || unmount_staging(&s, image)).await?;
        }
        // Unmounted: the volume is no longer staged, whatever the detach does next.
        let shared = staged_elsewhere(&self.store.read(), &volume.id)
            .iter()
            .any(|(_, s)| s.device == staged.device);
        self.store.update(|s| {
            if let Some(v) = s.volumes.get_mut(&volume.id) {
                v.staged = None;
            }
            if !shared {
                s.with_node_work(&volume.id, |w| w.pending_detach.push(staged.device.clone()));
            }
        })?;
        Ok(())
    }

    /// Detaches the devices a volume's earlier unstage could not, each only while it still
    /// holds the volume's image and no staged volume uses it. Callers hold the volume lock.
    pub(super) async fn settle_pending_detach(
        &self,
        id: &str,
        image: Option<FileId>,
    ) -> DriverResult<()> {
        let state = self.store.read();
        let pending = state
            .node_work
            .get(id)
            .map(|w| w.pending_detach.clone())
            .unwrap_or_default();
        if pending.is_empty() {
            return Ok(());
        }
        let in_use: Vec<PathBuf> = state
            .volumes
            .values()
            .filter_map(|v| v.staged.as_ref().map(|s| s.device.clone()))
            .collect();
        let (settled, failed) = blocking(move || {
            let mut settled = Vec::new();
            let mut failed = None;
            for device in pending {
                let ours = image.is_some() && host::binding(&device)? == image;
                if ours && !in_use.contains(&device) {
                    if let Err(e) = storage::loopdev::detach(&device) {
                        failed.get_or_insert(e);
                        continue;
                    }
                    tracing::info!(device = %device.display(), "pending detach done");
                }
                settled.push(device);
            }
            Ok((settled, failed))
        })
        .await?;
        self.store.update(|s| {
            s.with_node_work(id, |w| w.pending_detach.retain(|d| !settled.contains(d)))
        })?;
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// For DeleteVolume (caller holds the volume lock): retries a detach that NodeUnstage could
    /// not do, so the image is not refused as still held, nor unlinked under a loop device.
    pub(in crate::core) async fn release_node_leftovers(&self, id: &str) -> DriverResult<()> {
        let (file, _image_hold) = self.hold_image(id).await?;
        self.settle_pending_detach(id, file).await
    }
}

fn check_stage_request(volume: &VolumeRecord, request: &StageRequest) -> DriverResult<()> {
    check_access_type(volume, request.access_type)?;
    if let (Some(wanted), Some(have)) = (request.fs_type, volume.fs_type)
        && wanted != have
    {
        return Err(DriverError::FailedPrecondition(format!(
            "volume {} holds {have}; volume_capability.mount.fs_type asks for {wanted}",
            volume.id
        )));
    }
    if request.access_type == AccessType::Mount && volume.fs_type.is_none() {
        return Err(DriverError::FailedPrecondition(format!(
            "volume {} has no filesystem, so it cannot be staged with a mount capability",
            volume.id
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
    Ok(())
}

/// (volume id, staging) of every other staged volume.
fn staged_elsewhere(state: &State, id: &str) -> Vec<(String, Staging)> {
    state
        .volumes
        .values()
        .filter(|v| v.id != id)
        .filter_map(|v| v.staged.clone().map(|s| (v.id.clone(), s)))
        .collect()
}

fn check_staged(
    staged: &Staging,
    access: AccessType,
    image: FileId,
) -> storage::Result<StageCheck> {
    let bound = host::binding(&staged.device)? == Some(image);
    if access == AccessType::Block {
        return Ok(if bound {
            StageCheck::Good
        } else {
            StageCheck::Unmounted { bound }
        });
    }
    let mounts = host::mounts()?;
    let Some(top) = host::top_mount_at(&mounts, &staged.staging_path) else {
        return Ok(StageCheck::Unmounted { bound });
    };
    if bound && top.dev == host::rdev(&staged.device)? {
        return Ok(StageCheck::Good);
    }
    Ok(StageCheck::Foreign(format!(
        "the mount there is of device {}:{}, not of loop device {} holding the volume's image",
        top.dev.0,
        top.dev.1,
        staged.device.display()
    )))
}

fn remount(staged: &Staging, fs: Option<FsType>) -> storage::Result<()> {
    let fs = fs.expect("mount volumes have a filesystem");
    storage::mount::mount_filesystem(&staged.device, &staged.staging_path, fs, false)
}

/// Decides how to attach, refusing where staging would mount one filesystem twice or cover
/// a mount that is already at the path.
fn plan_attach(path: &Path, image: FileId, others: &[(String, Staging)]) -> DriverResult<Attach> {
    let mounts = host::mounts()?;
    if let Some(top) = host::top_mount_at(&mounts, path) {
        return Err(DriverError::FailedPrecondition(format!(
            "staging_target_path {} is already a mount point (device {}:{}); refusing to \
             stage over it",
            path.display(),
            top.dev.0,
            top.dev.1
        )));
    }
    let mut leftovers = Vec::new();
    for device in host::loop_devices()?
        .into_iter()
        .filter(|d| d.backing == image)
    {
        if let Some((_, s)) = others.iter().find(|(_, s)| s.device == device.path) {
            return Ok(Attach::Share {
                device: device.path,
                from: s.staging_path.clone(),
            });
        }
        if let Some(m) = mounts.iter().find(|m| m.dev == device.rdev) {
            return Err(DriverError::FailedPrecondition(format!(
                "the volume's image is already mounted through {} at {}, which no staged \
                 volume records; restart the driver to reconcile",
                device.path.display(),
                m.mount_point.display()
            )));
        }
        leftovers.push(device.path);
    }
    Ok(Attach::New { leftovers })
}

/// The host half of a fresh stage; returns the device and whether this call attached it.
/// On error, undoes exactly what it did.
fn attach_and_mount(
    plan: Attach,
    image: &Path,
    path: &Path,
    access: AccessType,
    fs: Option<FsType>,
    grow: bool,
) -> DriverResult<(PathBuf, bool)> {
    match plan {
        Attach::Share { device, from } => {
            if access == AccessType::Mount {
                storage::mount::bind_mount(&from, path, false)?;
                let rdev = host::rdev(&device)?;
                let shows =
                    host::top_mount_at(&host::mounts()?, path).is_some_and(|m| m.dev == rdev);
                if !shows {
                    unmount_if_shows(path, None)?;
                    return Err(DriverError::FailedPrecondition(format!(
                        "the staging mount {} of the volume sharing this image is not on {}",
                        from.display(),
                        device.display()
                    )));
                }
            }
            Ok((device, false))
        }
        Attach::New { leftovers } => {
            for device in leftovers {
                storage::loopdev::detach(&device)?;
            }
            let device = storage::loopdev::attach(image)?;
            if let (AccessType::Mount, Some(fs)) = (access, fs)
                && let Err(e) = mount_new(&device, path, fs, grow)
            {
                if let Err(d) = storage::loopdev::detach(&device) {
                    tracing::error!(device = %device.display(), error = %d, "undoing a failed stage");
                }
                return Err(e.into());
            }
            Ok((device, true))
        }
    }
}

/// Mounts a freshly attached device, growing the filesystem first (offline, where the
/// filesystem allows: no CAP_SYS_RESOURCE needed) or after. Unmounts only its own mount.
fn mount_new(device: &Path, path: &Path, fs: FsType, grow: bool) -> storage::Result<()> {
    let offline = grow && fs == FsType::Ext4;
    if offline {
        storage::image::grow_filesystem_offline(device, fs)?;
    }
    storage::mount::mount_filesystem(device, path, fs, false)?;
    if grow
        && !offline
        && let Err(e) = storage::image::grow_filesystem(device, path, fs)
    {
        unmount_if_shows(path, Some(device))?;
        return Err(e);
    }
    Ok(())
}

/// Undoes a stage the state could not record.
fn undo_stage(
    path: &Path,
    device: &Path,
    access: AccessType,
    new_device: bool,
) -> storage::Result<()> {
    if access == AccessType::Mount {
        unmount_if_shows(path, Some(device))?;
    }
    if new_device {
        storage::loopdev::detach(device)?;
    }
    Ok(())
}

/// Unmounts the top mount at `path` only if it shows `device` (any mount, for a bind this very
/// call just made). Returns whether it unmounted.
fn unmount_if_shows(path: &Path, device: Option<&Path>) -> storage::Result<bool> {
    let mounts = host::mounts()?;
    let Some(top) = host::top_mount_at(&mounts, path) else {
        return Ok(false);
    };
    if let Some(device) = device
        && !host::mount_shows(top, path, host::rdev(device)?)
    {
        return Ok(false);
    }
    storage::mount::unmount(path)?;
    Ok(true)
}

/// NodeUnstage of a recorded mount stage: unmounts the staging mount if it shows the recorded
/// device bound to the volume's image; nothing mounted is fine (a half-done earlier call);
/// anything else mounted there is refused, never unmounted.
fn unmount_staging(staged: &Staging, image: Option<FileId>) -> DriverResult<()> {
    let mounts = host::mounts()?;
    let Some(top) = host::top_mount_at(&mounts, &staged.staging_path) else {
        return Ok(());
    };
    let ours = image.is_some()
        && host::binding(&staged.device)? == image
        && top.dev == host::rdev(&staged.device)?;
    if !ours {
        return Err(DriverError::FailedPrecondition(format!(
            "{} holds a mount of device {}:{}, not volume's loop device {}; not unmounting it",
            staged.staging_path.display(),
            top.dev.0,
            top.dev.1,
            staged.device.display()
        )));
    }
    storage::mount::unmount(&staged.staging_path)?;
    Ok(())
}

/// NodeUnstage where no stage is recorded: a mount at `path` of a loop device that holds this
/// volume's image is a leftover of ours and goes; anything else stays.
fn unmount_unrecorded(path: &Path, image: FileId, access: AccessType) -> storage::Result<()> {
    if access != AccessType::Mount {
        return Ok(());
    }
    let mounts = host::mounts()?;
    let Some(top) = host::top_mount_at(&mounts, path) else {
        return Ok(());
    };
    let ours = host::loop_devices()?
        .iter()
        .any(|d| d.backing == image && d.rdev == top.dev);
    if ours {
        tracing::warn!(path = %path.display(), "unmounting a staging mount the state did not record");
        storage::mount::unmount(path)?;
    }
    Ok(())
}

impl Driver {
    /// Fault `clone-unmountable-beside-source`: the refusal a driver gives whose clones keep
    /// their source's filesystem identity (an xfs UUID) and cannot be mounted beside it.
    fn clone_beside_source_fault(&self, volume: &VolumeRecord) -> DriverResult<()> {
        let Some(Source::Volume(source)) = &volume.source else {
            return Ok(());
        };
        let source_staged = self
            .store
            .read()
            .volumes
            .get(source)
            .is_some_and(|s| s.staged.is_some());
        if self.config.fault(Fault::CloneUnmountableBesideSource) && source_staged {
            return Err(DriverError::Internal(format!(
                "mount: volume {} has the filesystem UUID of staged volume {source}",
                volume.id
            )));
        }
        Ok(())
    }
}
