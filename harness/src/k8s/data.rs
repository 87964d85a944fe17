//! The data plane through pods, on the same data code as the CSI level: the seeded tree travels
//! as a tar stream into `tar -x` in a writer pod, and `tar -c` in a reader pod streams the
//! volume back into the canonical digest at `Level::Tar` (what the pod's busybox tar carries:
//! owners, modes, file mtimes in seconds, hard links, content, symlinks; no xattrs, directory
//! or symlink mtimes), so every claim digest here is at that level and only compared with
//! another; block volumes get the same seeded blocks through `dd` and are read back whole (the
//! source's length digested, the rest to the device's end counted as zeros in the pod). A
//! command that fails in the pod while touching the volume
//! (an I/O error, a short device) is the driver's failure; a missing tool is the harness's.

use super::VolumeMode;
use super::pods::{DEVICE_PATH, DataPod, MOUNT_PATH};
use crate::case::{CaseResult, fail_with, harness_error};
use crate::context::CaseCtx;
use crate::data::{self, Digest};

/// Seeded blocks per block volume, as at the CSI level.
const BLOCKS: usize = 24;
const MARKER_LEN: u64 = 4096;

/// What a writer pod puts on a volume before the volume is read back.
#[derive(Clone, Copy, Debug)]
enum Write {
    /// Seeded dataset n: the tree or the blocks of the CSI level.
    Dataset(u64),
    /// Marker n: a new 4 KiB file, or 4 KiB in the middle of the device.
    Marker(u64),
}

impl CaseCtx {
    /// Starts a pod on `claim`, writes dataset `n` (`size` = the claim's request), reads the
    /// volume back and returns that digest; the pod is gone (volume unmounted) on return.
    pub async fn seed_claim(
        &self,
        claim: &str,
        mode: VolumeMode,
        size: u64,
        n: u64,
    ) -> CaseResult<Digest> {
        self.write_and_read(claim, mode, size, Some(Write::Dataset(n)))
            .await
    }

    /// The digest of what `claim` holds, read by a pod of its own.
    pub async fn digest_claim(
        &self,
        claim: &str,
        mode: VolumeMode,
        size: u64,
    ) -> CaseResult<Digest> {
        self.write_and_read(claim, mode, size, None).await
    }

    /// Writes marker `n` into `claim` and returns the claim's new digest.
    pub async fn mark_claim(
        &self,
        claim: &str,
        mode: VolumeMode,
        size: u64,
        n: u64,
    ) -> CaseResult<Digest> {
        self.write_and_read(claim, mode, size, Some(Write::Marker(n)))
            .await
    }

    /// What `claim` holds and how large it really is, read by one pod: the digest (of `size`
    /// bytes for block) and the filesystem's size (`statfs`: blocks × fragment size) or the
    /// device's (`blockdev --getsize64`).
    pub async fn measure_claim(
        &self,
        claim: &str,
        mode: VolumeMode,
        size: u64,
    ) -> CaseResult<(Digest, u64)> {
        let pod = self.start_data_pod(claim, mode).await?;
        let measured = match self.read_digest(&pod, size).await {
            Ok(digest) => self.real_size(&pod).await.map(|bytes| (digest, bytes)),
            Err(e) => Err(e),
        };
        self.stop_data_pod(&pod).await?;
        let (digest, bytes) = measured?;
        self.trace(format!(
            "data: claim {claim} reads {digest}, real size {bytes} bytes"
        ));
        Ok((digest, bytes))
    }

    async fn real_size(&self, pod: &DataPod) -> CaseResult<u64> {
        let script = if pod.mode.is_block() {
            format!("blockdev --getsize64 {DEVICE_PATH}")
        } else {
            format!("stat -f -c '%b %S' {MOUNT_PATH}")
        };
        let text = self
            .command_text(pod, &script, "measuring the volume")
            .await?;
        parse_size(&text).ok_or_else(|| {
            harness_error(format!("`{script}` in pod {} printed {text:?}", pod.name))
        })
    }

    /// What `script` prints in `pod`; its failure is the driver's (`pod_failure`, `doing`).
    async fn command_text(&self, pod: &DataPod, script: &str, doing: &str) -> CaseResult<String> {
        let finished = self
            .exec_in(pod, script, None, |out| {
                let mut text = String::new();
                out.read_to_string(&mut text)
                    .map_err(|source| data::DataError::Io {
                        op: "read the output of",
                        path: "a command in the pod".into(),
                        source,
                    })?;
                Ok(text)
            })
            .await?;
        if let Some(failure) = finished.failure {
            return Err(self.pod_failure(pod, doing, failure).await);
        }
        finished
            .output
            .map_err(|e| harness_error(crate::steps::error_chain(&e)))
    }

    /// One pod: the write (if any), then the digest of the whole volume; the pod is removed
    /// whatever happened, and its removal (the unmount) must succeed too.
    async fn write_and_read(
        &self,
        claim: &str,
        mode: VolumeMode,
        size: u64,
        write: Option<Write>,
    ) -> CaseResult<Digest> {
        let pod = self.start_data_pod(claim, mode).await?;
        let written = match write {
            Some(write) => self.write(&pod, size, write).await,
            None => Ok(()),
        };
        let digest = match written {
            Ok(()) => self.read_digest(&pod, size).await,
            Err(e) => Err(e),
        };
        self.stop_data_pod(&pod).await?;
        let digest = digest?;
        let done = match write {
            Some(w) => format!("after {w:?} (seed {})", self.seed_for(number(w))),
            None => "as it is".to_string(),
        };
        self.trace(format!("data: claim {claim} {done} reads {digest}"));
        Ok(digest)
    }

    async fn write(&self, pod: &DataPod, size: u64, write: Write) -> CaseResult {
        let seed = self.seed_for(number(write));
        match (write, pod.mode.is_block()) {
            (Write::Dataset(_), true) => self.write_blocks(pod, seed, size).await,
            (Write::Dataset(_), false) => self.write_tree(pod, seed, size).await,
            (Write::Marker(_), true) => {
                let offset = (size / 2) & !(MARKER_LEN - 1);
                let script = format!("{} && sync", dd_write(offset, MARKER_LEN));
                self.run_writer(pod, &script, data::block_marker(seed).to_vec())
                    .await
            }
            (Write::Marker(n), false) => {
                let mut archive = Vec::new();
                data::write_marker_tar(&mut archive, &format!("marker-{n}.bin"), seed, MARKER_LEN)
                    .map_err(|e| harness_error(format!("build the marker archive: {e}")))?;
                self.run_writer(pod, &untar_script(archive.len()), archive)
                    .await
            }
        }
    }

    async fn write_tree(&self, pod: &DataPod, seed: u64, size: u64) -> CaseResult {
        let large = (size / 8).clamp(64 << 10, 4 << 20);
        let (archive, manifest) =
            crate::steps::blocking("build the seeded tree archive", move || {
                let mut archive = Vec::new();
                let manifest = data::seed_tree_tar(&mut archive, "dataset", seed, large)?;
                Ok((archive, manifest))
            })
            .await?;
        // At the tar level, what the reader pod's `tar -c` gives back if the write is whole.
        self.trace(format!(
            "data: seeded tree archive seed={seed} files={} bytes={} digest={}",
            manifest.files, manifest.bytes, manifest.digest
        ));
        self.run_writer(pod, &untar_script(archive.len()), archive)
            .await
    }

    async fn write_blocks(&self, pod: &DataPod, seed: u64, size: u64) -> CaseResult {
        let blocks = data::block_plan(seed, size, BLOCKS)
            .map_err(|e| harness_error(format!("plan seeded blocks: {e}")))?;
        let mut script = String::from("set -e");
        let mut input = Vec::new();
        for block in &blocks {
            script.push_str("; ");
            script.push_str(&dd_write(block.offset, block.data.len() as u64));
            input.extend_from_slice(&block.data);
        }
        script.push_str("; sync");
        self.run_writer(pod, &script, input).await
    }

    /// Runs a command that writes to the volume; a failure is the driver's unless a tool is missing.
    async fn run_writer(&self, pod: &DataPod, script: &str, input: Vec<u8>) -> CaseResult {
        let finished = self.exec_in(pod, script, Some(input), |_| Ok(())).await?;
        match finished.failure {
            None => Ok(()),
            Some(failure) => Err(self
                .pod_failure(pod, "writing to the volume", failure)
                .await),
        }
    }

    /// Reads the whole volume in `pod` into its digest.
    async fn read_digest(&self, pod: &DataPod, size: u64) -> CaseResult<Digest> {
        let finished = if pod.mode.is_block() {
            let script = format!(
                "dd if={DEVICE_PATH} bs=1048576 count={size} iflag=count_bytes 2>/dev/null"
            );
            self.exec_in(pod, &script, None, move |out| {
                data::digest_stream(out, size, "the block device read in the pod")
            })
            .await?
        } else {
            let script = format!("tar -c -C {MOUNT_PATH} -f - .");
            self.exec_in(pod, &script, None, |out| data::tar_digest(out))
                .await?
        };
        if let Some(failure) = finished.failure {
            return Err(self.pod_failure(pod, "reading the volume", failure).await);
        }
        if pod.mode.is_block() {
            self.zeros_past(pod, size).await?;
        }
        finished.output.map_err(|e| {
            fail_with(
                format!(
                    "the volume of claim {} could not be read back whole",
                    pod.claim
                ),
                format!("{size} bytes (block) or a complete tree"),
                crate::steps::error_chain(&e),
            )
        })
    }

    /// The device past the source's `size` bytes, read to its end in the pod, must hold only
    /// zeros (counted there, so a large device never crosses the exec stream).
    async fn zeros_past(&self, pod: &DataPod, size: u64) -> CaseResult {
        let script = format!(
            "set -o pipefail; dd if={DEVICE_PATH} bs=1048576 skip={size} iflag=skip_bytes 2>/dev/null | tr -d '\\000' | wc -c"
        );
        let text = self
            .command_text(pod, &script, "reading the device past the source's length")
            .await?;
        let nonzero: u64 = text.trim().parse().map_err(|_| {
            harness_error(format!("`{script}` in pod {} printed {text:?}", pod.name))
        })?;
        if nonzero > 0 {
            return Err(fail_with(
                format!(
                    "the device of claim {} must read as zeros past the source's {size} bytes \
                     (spec: CreateVolumeRequest.volume_content_source: the new volume is \
                     pre-populated with data from this source, nothing else)",
                    pod.claim
                ),
                format!("no non-zero byte after byte {size}"),
                format!("{nonzero} non-zero bytes"),
            ));
        }
        self.trace(format!(
            "data: claim {} reads zeros past byte {size} to the device's end",
            pod.claim
        ));
        Ok(())
    }

    async fn pod_failure(
        &self,
        pod: &DataPod,
        doing: &str,
        failure: String,
    ) -> crate::case::CaseError {
        let events = super::claims::join_events(&self.pod_events(pod).await);
        let message = format!("{doing} of claim {} in pod {} failed", pod.claim, pod.name);
        // 127: the image lacks a tool (sh, tar, dd): the harness's setup, not the driver.
        if failure.contains("exit code 127") || failure.contains("not found") {
            harness_error(format!(
                "{message}: {failure} (does the pod image have busybox tools?); events: {events}"
            ))
        } else {
            fail_with(
                message,
                "the command succeeds",
                format!("{failure}; events: {events}"),
            )
        }
    }
}

/// `N` (blockdev) or `BLOCKS FRAGMENT` (stat -f) as bytes.
fn parse_size(text: &str) -> Option<u64> {
    let numbers: Vec<u64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match numbers[..] {
        [bytes] => Some(bytes),
        [blocks, fragment] => blocks.checked_mul(fragment),
        _ => None,
    }
}

fn number(write: Write) -> u64 {
    match write {
        Write::Dataset(n) | Write::Marker(n) => n,
    }
}

/// Reads exactly `len` bytes of stdin into `tar -x` (so no end-of-stdin signal is needed).
fn untar_script(len: usize) -> String {
    format!(
        "set -o pipefail; dd bs=65536 count={len} iflag=fullblock,count_bytes 2>/dev/null | tar -x -C {MOUNT_PATH} -f - && sync"
    )
}

/// Writes exactly `len` bytes of stdin at byte `offset` of the device.
fn dd_write(offset: u64, len: u64) -> String {
    format!(
        "dd of={DEVICE_PATH} bs={len} count=1 seek={offset} oflag=seek_bytes iflag=fullblock conv=notrunc 2>/dev/null"
    )
}
