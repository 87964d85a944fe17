//! Multi-RPC steps cases share: make a volume, attach it (stage + publish), write a seeded
//! dataset, digest what a volume holds. A step that the driver fails is a conformance failure
//! naming the step; a step the machine fails is a harness error. Reading a published volume is
//! the driver's step: its I/O errors are failures (`volume_io`, `read_verdict`).

use std::path::PathBuf;

use csi_proto::v1 as csi;

use crate::case::{CaseResult, ensure, expect_ok, harness_error};
use crate::context::{Access, CaseCtx, SourceRef};
use crate::data::{self, Digest, WholeDevice};
use crate::read_verdict::read_verdict;

/// A volume staged and published by this case.
#[derive(Clone, Debug)]
pub struct Attached {
    pub volume_id: String,
    pub access: Access,
    pub staging: PathBuf,
    /// The published path: a directory (mount) or a device node (block).
    pub target: PathBuf,
    /// capacity_bytes the driver reported for the volume (0: unknown).
    pub capacity: i64,
    /// The node it was ControllerPublished to, if the driver needs that.
    pub node_id: Option<String>,
}

/// A volume holding a seeded dataset, and the digest of what it holds.
#[derive(Clone, Debug)]
pub struct Seeded {
    pub volume: csi::Volume,
    pub access: Access,
    /// The source's size as the driver reported it (`reported_size`): what a copy must hold,
    /// and the bytes the block digest covers.
    pub size: u64,
    pub digest: Digest,
}

/// The size a driver gave a volume: its `capacity_bytes`, or `requested` when it reports 0
/// (the spec's "unknown"). Drivers round up (xfs needs 300 MiB), so copies are sized from
/// this, never from the request. A negative capacity breaks the spec's field rule.
pub fn reported_size(capacity_bytes: i64, requested: u64) -> CaseResult<u64> {
    match capacity_bytes {
        0 => Ok(requested),
        c if c < 0 => Err(crate::case::fail_with(
            "capacity_bytes must not be negative (spec: Volume.capacity_bytes)",
            ">= 0",
            c.to_string(),
        )),
        c => Ok(c as u64),
    }
}

/// Runs blocking data-plane work off the runtime; I/O trouble is a harness error.
pub async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, data::DataError> + Send + 'static,
) -> CaseResult<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(harness_error(format!("{what}: {}", error_chain(&e)))),
        Err(e) => Err(harness_error(format!("{what}: task failed: {e}"))),
    }
}

/// Runs blocking I/O on a volume the driver published (a read, a stat, a seeded write): the
/// volume's I/O errors are the driver's failure, the machine's stay harness errors
/// (`read_verdict`). `blocking` is for the harness's own work.
pub async fn volume_io<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, data::DataError> + Send + 'static,
) -> CaseResult<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(read_verdict(what, &e)),
        Err(e) => Err(harness_error(format!("{what}: task failed: {e}"))),
    }
}

/// An error and its `source` chain on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl CaseCtx {
    /// Creates an empty volume of the profile's test size (or `size`), which must succeed.
    pub async fn new_volume(&self, access: Access, size: Option<u64>) -> CaseResult<csi::Volume> {
        let size = size.unwrap_or(self.volume_size());
        let name = self.unique_name(&format!("{access}"));
        let request = self.volume_request(&name, access, Some((size, 0)), None);
        let volume = expect_ok(
            self.create_volume(request).await,
            "setup: CreateVolume of an empty volume",
        )?;
        reported_size(volume.capacity_bytes, size)?;
        Ok(volume)
    }

    /// Creates a volume from `source` with a fresh name; the raw result.
    pub async fn create_from(
        &self,
        source: &SourceRef,
        access: Access,
        capacity: Option<(u64, u64)>,
    ) -> Result<csi::Volume, tonic::Status> {
        let name = self.unique_name("clone");
        self.create_volume(self.volume_request(&name, access, capacity, Some(source)))
            .await
    }

    /// Read-write [`CaseCtx::attach_as`].
    pub async fn attach(&self, volume: &csi::Volume, access: Access) -> CaseResult<Attached> {
        self.attach_as(volume, access, false).await
    }

    /// What a CO does before a workload uses a volume: ControllerPublishVolume to the node
    /// NodeGetInfo names (when the profile says the driver has PUBLISH_UNPUBLISH_VOLUME),
    /// NodeStageVolume (when the node has STAGE_UNSTAGE_VOLUME; without it the volume is
    /// published directly, with an empty staging_target_path) and NodePublishVolume.
    pub async fn attach_as(
        &self,
        volume: &csi::Volume,
        access: Access,
        readonly: bool,
    ) -> CaseResult<Attached> {
        let node_id = match self.profile().capabilities.controller_publish {
            true => {
                let node = expect_ok(self.node_id().await, "NodeGetInfo")?;
                expect_ok(
                    self.controller_publish(volume, access, &node, readonly)
                        .await,
                    "ControllerPublishVolume",
                )?;
                Some(node)
            }
            false => None,
        };
        let staging = match self.profile().capabilities.stage_unstage {
            true => expect_ok(self.stage(volume, access).await, "NodeStageVolume")?,
            false => PathBuf::new(),
        };
        let target = expect_ok(
            self.publish(volume, access, &staging, readonly).await,
            "NodePublishVolume",
        )?;
        Ok(Attached {
            volume_id: volume.volume_id.clone(),
            access,
            staging,
            target,
            capacity: volume.capacity_bytes,
            node_id,
        })
    }

    /// The inverse of `attach_as`, in reverse order.
    pub async fn detach(&self, attached: &Attached) -> CaseResult {
        expect_ok(
            self.unpublish(&attached.volume_id, &attached.target).await,
            "NodeUnpublishVolume",
        )?;
        if !attached.staging.as_os_str().is_empty() {
            expect_ok(
                self.unstage(&attached.volume_id, &attached.staging).await,
                "NodeUnstageVolume",
            )?;
        }
        match &attached.node_id {
            Some(node) => expect_ok(
                self.controller_unpublish(&attached.volume_id, node).await,
                "ControllerUnpublishVolume",
            ),
            None => Ok(()),
        }
    }

    /// Writes dataset number `n` into an attached volume and returns the digest of its content.
    pub async fn write_dataset(
        &self,
        attached: &Attached,
        size: u64,
        n: u64,
    ) -> CaseResult<Digest> {
        let seed = self.seed_for(n);
        let target = attached.target.clone();
        match attached.access {
            Access::Mount => {
                let large = (size / 8).clamp(64 << 10, 4 << 20);
                let manifest = volume_io("write seeded tree", move || {
                    data::seed_tree(&target, "dataset", seed, large)
                })
                .await?;
                self.trace(format!(
                    "data: seeded tree seed={seed} files={} bytes={} digest={}",
                    manifest.files, manifest.bytes, manifest.digest
                ));
                Ok(manifest.digest)
            }
            Access::Block => {
                let offsets = volume_io("write seeded blocks", move || {
                    data::seed_blocks(&target, seed, size, 24)?;
                    // Past `size` the source holds zeros, so every byte a copy holds is defined.
                    data::zero_tail(&target, size)?;
                    data::device_digest(&target, size)
                })
                .await?;
                self.trace(format!(
                    "data: seeded 24 blocks seed={seed} digest={offsets}"
                ));
                Ok(offsets)
            }
        }
    }

    /// Digest of an attached volume's content (mount: canonical tree read directly, at
    /// `Level::Direct` like `write_dataset`'s; block: the first `size` bytes, the source's
    /// length, after checking the whole device: see `whole_device`).
    pub async fn digest_attached(&self, attached: &Attached, size: u64) -> CaseResult<Digest> {
        let target = attached.target.clone();
        let digest = match attached.access {
            Access::Mount => {
                volume_io("digest tree", move || {
                    data::tree_digest(&target, data::Level::Direct)
                })
                .await?
            }
            Access::Block => self.whole_device(attached, size).await?,
        };
        self.trace(format!("data: digest of {} = {digest}", attached.volume_id));
        Ok(digest)
    }

    /// Reads a published device to its end: it must be as long as the capacity the driver
    /// reported, and past the first `size` bytes (the source's data, whose own tail the
    /// harness zeroed) it must read as zeros. Returns the digest of the first `size` bytes.
    async fn whole_device(&self, attached: &Attached, size: u64) -> CaseResult<Digest> {
        let target = attached.target.clone();
        let read = volume_io("read the device whole", move || {
            data::read_whole_device(&target, size)
        })
        .await?;
        let WholeDevice {
            digest,
            len,
            first_nonzero,
        } = read;
        let path = attached.target.display();
        ensure(
            attached.capacity <= 0 || len >= attached.capacity as u64,
            &format!(
                "{path} is shorter than the capacity_bytes the driver reported (spec: Volume.capacity_bytes is the capacity of the volume)"
            ),
            format!(">= {} bytes", attached.capacity),
            format!("{len} bytes"),
        )?;
        ensure(
            first_nonzero.is_none(),
            &format!(
                "{path}: past the source's {size} bytes the device must read as zeros (spec: CreateVolumeRequest.volume_content_source: \"the new volume will be pre-populated with data from this source\"; nothing else)"
            ),
            format!("zeros from byte {size} to {len}"),
            format!(
                "a non-zero byte at offset {}",
                first_nonzero.unwrap_or_default()
            ),
        )?;
        self.trace(format!(
            "data: {} read whole: {len} bytes, zeros after byte {size}",
            attached.volume_id
        ));
        Ok(digest)
    }

    /// Attaches, digests and detaches.
    pub async fn digest_of(
        &self,
        volume: &csi::Volume,
        access: Access,
        size: u64,
    ) -> CaseResult<Digest> {
        let attached = self.attach(volume, access).await?;
        let digest = self.digest_attached(&attached, size).await;
        self.detach(&attached).await?;
        digest
    }

    /// A new volume with dataset `n` written and detached again: the usual clone source.
    pub async fn seeded_volume(&self, access: Access, n: u64) -> CaseResult<Seeded> {
        let volume = self.new_volume(access, Some(self.volume_size())).await?;
        let size = reported_size(volume.capacity_bytes, self.volume_size())?;
        let attached = self.attach(&volume, access).await?;
        let digest = self.write_dataset(&attached, size, n).await?;
        self.detach(&attached).await?;
        Ok(Seeded {
            volume,
            access,
            size,
            digest,
        })
    }
}

/// How long `blkid` may take to probe one device.
const PROBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

impl CaseCtx {
    /// The filesystem type `blkid -p` (a low-level superblock probe, no cache) finds on a
    /// published block device, or None when it finds none.
    pub async fn filesystem_on(&self, attached: &Attached) -> CaseResult<Option<String>> {
        let mut command = tokio::process::Command::new("blkid");
        command
            .args(["-p", "-o", "value", "-s", "TYPE"])
            .arg(&attached.target)
            .kill_on_drop(true);
        let output = match tokio::time::timeout(PROBE_LIMIT, command.output()).await {
            Err(_) => {
                return Err(harness_error(format!(
                    "blkid: no answer within {PROBE_LIMIT:?}"
                )));
            }
            Ok(Err(e)) => return Err(harness_error(format!("blkid (util-linux) cannot run: {e}"))),
            Ok(Ok(output)) => output,
        };
        let found = String::from_utf8_lossy(&output.stdout).trim().to_string();
        self.trace(format!(
            "data: blkid -p {} -> exit {:?} {found:?}",
            attached.target.display(),
            output.status.code()
        ));
        // blkid: 0 found, 2 nothing identified; anything else is its own trouble.
        match output.status.code() {
            Some(0) if !found.is_empty() => Ok(Some(found)),
            Some(0) | Some(2) => Ok(None),
            _ => Err(harness_error(format!(
                "blkid -p {}: {}",
                attached.target.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ))),
        }
    }
}
