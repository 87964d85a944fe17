//! CreateSnapshot, DeleteSnapshot, snapshot lookups. Snapshots are full, independent copies of
//! the source image, so deleting either side never affects the other.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Driver, StagedSource, blocking, copy_quiesced, plausible_volume_id};
use crate::error::{DriverError, DriverResult, echo};
use crate::faults;
use crate::state::{AccessType, SnapshotRecord, Status, is_driver_id, new_snapshot_id};
use crate::storage;
use crate::variants::Variant;

impl Driver {
    pub async fn create_snapshot(
        &self,
        name: &str,
        source_volume_id: &str,
    ) -> DriverResult<SnapshotRecord> {
        let _name = self.locks.exclusive(&format!("snapshot-name/{name}")).await;
        if let Some(existing) = self.store.read().snapshot_by_name(name).cloned() {
            if existing.source_volume_id == source_volume_id {
                return Ok(existing);
            }
            return Err(DriverError::AlreadyExists(format!(
                "snapshot {} already exists ({}) of volume {}; the request names volume {}",
                echo(name),
                existing.id,
                existing.source_volume_id,
                echo(source_volume_id)
            )));
        }
        let missing = || DriverError::NotFound {
            kind: "source volume",
            id: source_volume_id.to_string(),
        };
        if !plausible_volume_id(source_volume_id) {
            return Err(missing());
        }
        let _source = self.locks.shared(&Self::volume_key(source_volume_id)).await;
        let volume = self.volume(source_volume_id).map_err(|_| missing())?;

        let created_unix_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let record = SnapshotRecord {
            id: new_snapshot_id(),
            name: name.to_string(),
            source_volume_id: source_volume_id.to_string(),
            size_bytes: volume.size_bytes,
            access_type: volume.access_type,
            fs_type: volume.fs_type,
            fs_size_bytes: volume.fs_size_bytes,
            created_unix_nanos,
            status: Status::Creating,
        };
        self.store
            .update(|s| s.snapshots.insert(record.id.clone(), record.clone()))?;
        let source_image = self.store.volume_image(source_volume_id);
        let image = self.store.snapshot_image(&record.id);
        let pace = self.config.copy_pace;
        let policy = self.copy_policy();
        let staged = volume.staged.clone().map(|staging| StagedSource {
            volume_id: volume.id.clone(),
            staging,
            access_type: volume.access_type,
            image: source_image.clone(),
        });
        let copied = {
            let image = image.clone();
            blocking(move || {
                let unfrozen = !policy.freeze && volume.access_type == AccessType::Mount;
                copy_quiesced(staged.as_ref(), &policy, &image, || {
                    match unfrozen && staged.is_some() {
                        true => {
                            faults::slow_copy(&source_image, &image, faults::UNFROZEN_COPY_RATE)?
                        }
                        false => drop(storage::copy::clone_file(&source_image, &image, pace)?),
                    }
                    Ok(())
                })
            })
            .await
        };
        if let Err(error) = copied {
            let _ = std::fs::remove_file(&image);
            self.store.update(|s| s.snapshots.remove(&record.id))?;
            return Err(error);
        }
        let ready = self.store.update(|s| {
            let snap = s.snapshots.get_mut(&record.id).expect("record we created");
            snap.status = Status::Ready;
            snap.clone()
        })?;
        if self.config.variant(Variant::AsyncSnapshots) {
            self.post_processing.start(&ready.id);
        }
        tracing::info!(id = %ready.id, %name, source = %source_volume_id, "snapshot created");
        Ok(ready)
    }

    pub async fn delete_snapshot(&self, id: &str) -> DriverResult<()> {
        if !is_driver_id("snap", id) {
            return Ok(());
        }
        let _hold = self.locks.exclusive(&Self::snapshot_key(id)).await;
        if self.store.update(|s| s.snapshots.remove(id))?.is_none() {
            return Ok(());
        }
        if self
            .config
            .fault(crate::faults::Fault::DeleteSnapshotDamagesRestores)
        {
            let restored = Some(crate::state::Source::Snapshot(id.to_string()));
            for volume in self
                .store
                .read()
                .volumes
                .values()
                .filter(|v| v.source == restored)
            {
                let _ = faults::zero_image(&self.store.volume_image(&volume.id));
            }
        }
        let image = self.store.snapshot_image(id);
        if let Err(e) = std::fs::remove_file(&image)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %image.display(), error = %e, "could not remove snapshot image; it will be swept at restart");
        }
        tracing::info!(%id, "snapshot deleted");
        Ok(())
    }

    /// Ready snapshots in id order.
    pub fn snapshots(&self) -> Vec<SnapshotRecord> {
        self.store
            .read()
            .snapshots
            .into_values()
            .filter(|s| s.status == Status::Ready)
            .collect()
    }
}
