//! Filling a new volume's image: empty (mkfs), or a copy of its source grown to the requested
//! size. The deliberate faults that break copies live here too, so the normal path stays
//! readable: each is one `if` on the config.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{CopyPolicy, Origin, copy_quiesced};
use crate::error::DriverResult;
use crate::faults::{self, Damage, Fault, Faults};
use crate::state::{AccessType, Source};
use crate::storage::{self, FsType};

/// Everything `populate` needs, owned, so it can run on a blocking thread.
pub(super) struct Plan {
    pub image: PathBuf,
    pub size: u64,
    pub fs_type: Option<FsType>,
    pub access_type: AccessType,
    pub origin: Option<Origin>,
    pub pace: Option<Duration>,
    pub faults: Faults,
    /// Where a fault may mount a copy to damage it.
    pub scratch: PathBuf,
    pub policy: CopyPolicy,
}

impl Plan {
    fn fault(&self, fault: Fault) -> bool {
        self.faults.contains(&fault)
    }
}

/// Creates the image; returns the size its filesystem now has (for growth at stage time).
pub(super) fn populate(plan: Plan) -> DriverResult<u64> {
    let Some(origin) = &plan.origin else {
        return make_empty(&plan.image, plan.size, plan.fs_type);
    };
    if plan.fault(Fault::CloneEmpty)
        || plan.fault(Fault::ConvertedCopyEmpty) && origin.access_type != plan.access_type
    {
        return make_empty(&plan.image, plan.size, plan.fs_type);
    }
    if plan.fault(Fault::CloneSharesSource) && matches!(origin.source, Source::Volume(_)) {
        std::fs::hard_link(&origin.image, &plan.image).map_err(|source| {
            storage::StorageError::Io {
                op: "link",
                path: plan.image.clone(),
                source,
            }
        })?;
        return Ok(origin.fs_size_bytes);
    }
    // A staged source is frozen for the copy alone: what follows runs on the copy, thawed.
    copy_quiesced(origin.staged.as_ref(), &plan.policy, &plan.image, || {
        copy_image(&plan, origin)
    })?;
    finish(&plan, origin)
}

fn copy_image(plan: &Plan, origin: &Origin) -> DriverResult<()> {
    let unfrozen = plan.fault(Fault::CloneWithoutFreeze)
        && origin.staged.is_some()
        && origin.access_type == AccessType::Mount;
    if unfrozen {
        faults::slow_copy(&origin.image, &plan.image, faults::UNFROZEN_COPY_RATE)?;
        return Ok(());
    }
    copy(&origin.image, &plan.image, plan.pace, &plan.faults)
}

/// Fits the copied image to the request: fault damage, truncation (a fault), growth.
fn finish(plan: &Plan, origin: &Origin) -> DriverResult<u64> {
    let (image, size, fs_type) = (&plan.image, plan.size, plan.fs_type);
    let damages = [
        (
            Fault::CloneDropsModesAndSymlinks,
            Damage::DropModesAndSymlinks,
        ),
        (Fault::CloneCopiesLikeCpR, Damage::CopyLikeCpR),
        (Fault::CloneReownsFiles, Damage::Reown),
    ];
    for (fault, damage) in damages {
        if let (true, Some(fs)) = (plan.fault(fault), fs_type) {
            faults::damage_mounted_copy(image, fs, &plan.scratch, damage)?;
        }
    }
    if size < origin.size_bytes {
        // Only reachable with SmallerThanSourceAccepted: the copy is cut to the asked size.
        std::fs::OpenOptions::new()
            .write(true)
            .open(image)
            .and_then(|f| f.set_len(size))
            .map_err(|source| storage::StorageError::Io {
                op: "truncate",
                path: image.clone(),
                source,
            })?;
        return Ok(size);
    }
    if size > origin.size_bytes && !not_grown(plan, origin) {
        storage::image::grow_file(image, size)?;
        // Only a raw device shows its grown tail: under a filesystem it is free space.
        if plan.fault(Fault::LargerCloneGarbageTail) && fs_type.is_none() {
            faults::dirty_tail(image, origin.size_bytes)?;
        }
        // ext4 grows offline now, so the copy is delivered full size; xfs can only grow
        // mounted and does so at NodeStageVolume.
        if fs_type == Some(FsType::Ext4) {
            storage::image::grow_filesystem_offline(image, FsType::Ext4)?;
            return Ok(size);
        }
    }
    if not_grown(plan, origin) {
        // Claims its filesystem is full size, so nothing grows it later either.
        return Ok(size);
    }
    Ok(origin.fs_size_bytes)
}

/// The faults that leave a larger copy at its source's size.
fn not_grown(plan: &Plan, origin: &Origin) -> bool {
    plan.fault(Fault::LargerCloneNotGrown)
        || plan.fault(Fault::RestoreNotGrown) && matches!(origin.source, Source::Snapshot(_))
}

fn make_empty(image: &Path, size: u64, fs_type: Option<FsType>) -> DriverResult<u64> {
    storage::image::create_sparse(image, size)?;
    if let Some(fs) = fs_type {
        storage::image::make_filesystem(image, fs)?;
    }
    Ok(size)
}

fn copy(source: &Path, image: &Path, pace: Option<Duration>, faults: &Faults) -> DriverResult<()> {
    if faults.contains(&Fault::CloneFirstMibOnly) {
        faults::partial_copy(source, image, 1 << 20)?;
    } else if faults.contains(&Fault::CloneStopsAtFirstHole) {
        faults::partial_copy(source, image, faults::first_hole(source)?)?;
    } else {
        let stats = storage::copy::clone_file(source, image, pace)?;
        tracing::info!(method = ?stats.method, data_bytes = stats.data_bytes, "copied source image");
    }
    Ok(())
}

impl super::Driver {
    /// The deletion faults: damage done to other volumes or snapshots when `deleted` goes.
    pub(super) fn deletion_faults(&self, deleted: &crate::state::VolumeRecord) {
        let state = self.store.read();
        if self.config.fault(Fault::DeleteSourceDeletesClones) {
            let source = Some(Source::Volume(deleted.id.clone()));
            for clone in state.volumes.values().filter(|v| v.source == source) {
                let _ = faults::zero_image(&self.store.volume_image(&clone.id));
            }
        }
        if let (true, Some(Source::Volume(parent))) = (
            self.config.fault(Fault::DeleteCloneDamagesSource),
            &deleted.source,
        ) && state.volumes.contains_key(parent)
        {
            let _ = faults::zero_image(&self.store.volume_image(parent));
        }
        if self.config.fault(Fault::DeleteVolumeDeletesSnapshots) {
            let doomed: Vec<String> = state
                .snapshots
                .values()
                .filter(|s| s.source_volume_id == deleted.id)
                .map(|s| s.id.clone())
                .collect();
            let _ = self
                .store
                .update(|s| doomed.iter().for_each(|id| drop(s.snapshots.remove(id))));
            for id in doomed {
                let _ = std::fs::remove_file(self.store.snapshot_image(&id));
            }
        }
    }
}
