//! NodePublishVolume and NodeUnpublishVolume: a bind of the staging mount (mount) or of the
//! loop device node (block) at a target the driver creates and removes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::host::{self, FileId};
use super::{Driver, PublishRequest, VolumeHold, check_access_type, normalise, published_key};
use crate::core::{blocking, path_string};
use crate::error::{DriverError, DriverResult};
use crate::faults::Fault;
use crate::state::{AccessType, NodeIntent, Staging, VolumeRecord};
use crate::storage::{self, StorageError};

impl Driver {
    pub async fn publish_volume(self: &Arc<Self>, mut request: PublishRequest) -> DriverResult<()> {
        request.staging_path = normalise(&request.staging_path);
        request.target_path = normalise(&request.target_path);
        let id = request.volume_id.clone();
        self.unit(
            "NodePublishVolume",
            &id,
            move |d, volume, hold| async move { d.publish_unit(volume, hold, request).await },
        )
        .await
    }

    pub async fn unpublish_volume(self: &Arc<Self>, id: &str, target: &Path) -> DriverResult<()> {
        let target = normalise(target);
        self.unit(
            "NodeUnpublishVolume",
            id,
            move |d, volume, hold| async move { d.unpublish_unit(volume, hold, &target).await },
        )
        .await
    }

    async fn publish_unit(
        &self,
        volume: VolumeRecord,
        _hold: VolumeHold,
        request: PublishRequest,
    ) -> DriverResult<()> {
        check_access_type(&volume, request.access_type)?;
        let staged = staged_at(&volume, &request.staging_path)?;
        let target = request.target_path.clone();
        if target == request.staging_path {
            return Err(DriverError::invalid(
                "target_path",
                "must differ from staging_target_path",
            ));
        }
        if let Some(key) = published_key(&volume, &target) {
            let readonly = volume.published[&key];
            if readonly != request.readonly {
                return Err(DriverError::AlreadyExists(format!(
                    "volume {} is already published at {} with readonly={readonly}",
                    volume.id,
                    target.display()
                )));
            }
            let (t, d) = (target.clone(), staged.device.clone());
            if blocking(move || Ok(target_shows(&t, &d)?)).await? {
                return Ok(());
            }
            tracing::warn!(id = %volume.id, target = %target.display(), "publish mount was gone; binding again");
        }
        let id = volume.id.clone();
        self.store.update(|s| {
            s.with_node_work(&id, |w| {
                w.intent = Some(NodeIntent::Publish(target.clone()))
            })
        })?;
        let (t, access) = (target.clone(), volume.access_type);
        let bind_readonly = request.readonly && !self.config.fault(Fault::ReadonlyIgnored);
        let readonly = request.readonly;
        let bound = blocking(move || bind_target(&staged, &t, access, bind_readonly)).await;
        let recorded = bound.and_then(|()| {
            Ok(self.store.update(|s| {
                s.with_node_work(&id, |w| w.intent = None);
                let v = s.volumes.get_mut(&id).expect("held exclusively");
                v.published.insert(target.clone(), readonly);
            })?)
        });
        if let Err(e) = recorded {
            let _ = self
                .store
                .update(|s| s.with_node_work(&id, |w| w.intent = None));
            return Err(e);
        }
        tracing::info!(%id, target = %target.display(), "volume published");
        Ok(())
    }

    async fn unpublish_unit(
        &self,
        volume: VolumeRecord,
        _hold: VolumeHold,
        target: &Path,
    ) -> DriverResult<()> {
        let id = volume.id.as_str();
        let key = published_key(&volume, target);
        let device = volume.staged.as_ref().map(|s| s.device.clone());
        let image = self.store.volume_image(id);
        let (t, recorded) = (target.to_path_buf(), key.is_some());
        let unmounted = blocking(move || {
            let image = host::file_id(&image).ok();
            unmount_target(&t, device.as_deref(), image, recorded)
        })
        .await?;
        if let Some(key) = &key {
            // Unmounted (or already gone): the record goes before the target is removed, so
            // a target that cannot be removed never pins the volume.
            self.store.update(|s| {
                if let Some(v) = s.volumes.get_mut(id) {
                    v.published.remove(key);
                }
            })?;
        }
        if key.is_some() || unmounted {
            let t = target.to_path_buf();
            blocking(move || {
                remove_target(&t);
                Ok(())
            })
            .await?;
            tracing::info!(%id, target = %path_string(target), "volume unpublished");
        }
        Ok(())
    }
}

fn staged_at(volume: &VolumeRecord, staging_path: &Path) -> DriverResult<Staging> {
    match &volume.staged {
        Some(staged) if normalise(&staged.staging_path) == staging_path => Ok(staged.clone()),
        Some(staged) => Err(DriverError::FailedPrecondition(format!(
            "volume {} is staged at {}, not at staging_target_path {}",
            volume.id,
            staged.staging_path.display(),
            staging_path.display()
        ))),
        None => Err(DriverError::FailedPrecondition(format!(
            "volume {} is not staged; call NodeStageVolume first",
            volume.id
        ))),
    }
}

/// True if the top mount at `target` shows `device` (the filesystem on it, or its node).
fn target_shows(target: &Path, device: &Path) -> storage::Result<bool> {
    let mounts = host::mounts()?;
    let Some(top) = host::top_mount_at(&mounts, target) else {
        return Ok(false);
    };
    Ok(host::mount_shows(top, target, host::rdev(device)?))
}

/// Creates the target (the SP's job: a directory for mount, a file to bind a device onto) and
/// binds the staged volume there. Refuses to cover a mount that is not this volume's; removes
/// a target it created if the bind fails.
fn bind_target(
    staged: &Staging,
    target: &Path,
    access: AccessType,
    readonly: bool,
) -> DriverResult<()> {
    let io = |op, source| StorageError::Io {
        op,
        path: target.to_path_buf(),
        source,
    };
    let mounts = host::mounts()?;
    if let Some(top) = host::top_mount_at(&mounts, target) {
        if !host::mount_shows(top, target, host::rdev(&staged.device)?) {
            return Err(DriverError::FailedPrecondition(format!(
                "target_path {} is already a mount point of another device; refusing to cover it",
                target.display()
            )));
        }
        // A bind of ours the state lost: replace it, so the readonly flag is the asked one.
        storage::mount::unmount(target)?;
    }
    refuse_occupied_target(target, access)?;
    let existed = target.exists();
    let source: PathBuf = match access {
        AccessType::Mount => {
            std::fs::create_dir_all(target).map_err(|e| io("create", e))?;
            staged.staging_path.clone()
        }
        AccessType::Block => {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(target)
                .map_err(|e| io("create", e))?;
            staged.device.clone()
        }
    };
    if let Err(e) = storage::mount::bind_mount(&source, target, readonly) {
        if !existed {
            remove_target(target);
        }
        return Err(e.into());
    }
    Ok(())
}

/// A target that exists must be what the access type binds over, and hold nothing: a
/// directory (mount) or a file (block) that is empty, since a bind would hide what it holds.
fn refuse_occupied_target(target: &Path, access: AccessType) -> DriverResult<()> {
    let Ok(meta) = std::fs::symlink_metadata(target) else {
        return Ok(()); // absent: created below
    };
    let shown = target.display();
    match access {
        AccessType::Mount if !meta.is_dir() => Err(DriverError::invalid(
            "target_path",
            format!(
                "{shown} exists and is not a directory; a mount volume is published on a directory"
            ),
        )),
        AccessType::Block if !meta.is_file() => Err(DriverError::invalid(
            "target_path",
            format!(
                "{shown} exists and is not a regular file; a block volume is published on a file"
            ),
        )),
        AccessType::Mount => match std::fs::read_dir(target).map(|mut d| d.next().is_some()) {
            Ok(false) => Ok(()),
            Ok(true) => Err(DriverError::FailedPrecondition(format!(
                "target_path {shown} is a directory that is not empty; a mount would hide what it holds"
            ))),
            Err(e) => Err(storage::StorageError::io("read", target, e).into()),
        },
        AccessType::Block if meta.len() > 0 => Err(DriverError::FailedPrecondition(format!(
            "target_path {shown} is a file of {} bytes; a bind would hide them",
            meta.len()
        ))),
        AccessType::Block => Ok(()),
    }
}

/// Unmounts the target if its top mount shows the volume's device while that device holds
/// the volume's image. A recorded target with something else mounted is refused; an
/// unrecorded one is left alone. Returns whether it unmounted.
fn unmount_target(
    target: &Path,
    device: Option<&Path>,
    image: Option<FileId>,
    recorded: bool,
) -> DriverResult<bool> {
    let mounts = host::mounts()?;
    let Some(top) = host::top_mount_at(&mounts, target) else {
        return Ok(false);
    };
    let ours = match (device, image) {
        (Some(device), Some(image)) => {
            host::binding(device)? == Some(image)
                && host::mount_shows(top, target, host::rdev(device)?)
        }
        _ => false,
    };
    if ours {
        storage::mount::unmount(target)?;
        return Ok(true);
    }
    if recorded {
        return Err(DriverError::FailedPrecondition(format!(
            "target_path {} holds a mount that is not this volume's; not unmounting it",
            target.display()
        )));
    }
    Ok(false)
}

/// The SP created the target at publish, so it removes it (spec: NodeUnpublishVolume). A
/// target that cannot be removed (e.g. written to while unmounted) is logged, not fatal.
fn remove_target(target: &Path) {
    let removed = if target.is_dir() {
        std::fs::remove_dir(target)
    } else {
        std::fs::remove_file(target)
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(target = %target.display(), error = %e, "could not remove the publish target");
        }
        _ => {}
    }
}
