//! Data: a seeded dataset written through the node service, synced, copied; the copy's
//! whole-volume digest must equal the source's. Also copies taken while a writer keeps going:
//! they must still be consistent filesystems holding everything synced before the copy.

use harness::profile::Ambiguous;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use csi_proto::v1 as csi;
use harness::case::{
    CaseError, CaseResult, Requirement as R, Row, Suite, ensure_eq, expect_ok, fail_with,
    harness_error, row,
};
use harness::context::{Access, CaseCtx, SourceRef};
use harness::data::{self, DataError, Digest};
use harness::read_verdict::read_verdict;
use harness::steps::{reported_size, volume_io};

use crate::common::{SourceKind, seeded_source};

#[derive(Clone, Copy, Debug)]
enum Flow {
    /// Copy of an unpublished seeded source.
    Copy(SourceKind, Access),
    /// Clone while the source is still staged and published (in use), after a sync.
    CloneInUse(Access),
    /// Clone, or snapshot then restore, of a mounted source while a writer keeps going.
    CopyUnderWrites(SourceKind),
}

const CLONE: &str =
    "spec: VolumeContentSource — the new volume is pre-populated with the source's data";

const UNDER_WRITES: &str = "spec: CLONE_VOLUME / CreateSnapshot on a volume in use; k8s: clones and snapshots of PVCs used by running pods";

const ROWS: &[Row<Flow>] = &[
    row(
        "mount::clone_has_the_source_tree",
        CLONE,
        &[R::Clone, R::Mount, R::DataPlane],
        Flow::Copy(SourceKind::Volume, Access::Mount),
    ),
    row(
        "block::clone_has_the_source_blocks",
        CLONE,
        &[R::Clone, R::Block, R::DataPlane],
        Flow::Copy(SourceKind::Volume, Access::Block),
    ),
    row(
        "mount::restore_has_the_snapshot_tree",
        CLONE,
        &[R::Snapshot, R::Mount, R::DataPlane],
        Flow::Copy(SourceKind::Snapshot, Access::Mount),
    ),
    row(
        "block::restore_has_the_snapshot_blocks",
        CLONE,
        &[R::Snapshot, R::Block, R::DataPlane],
        Flow::Copy(SourceKind::Snapshot, Access::Block),
    ),
    row(
        "mount::clone_of_a_published_source_has_its_synced_tree",
        "spec: CLONE_VOLUME on a volume in use; k8s: clones of PVCs mounted by running pods",
        &[R::Clone, R::Mount, R::DataPlane],
        Flow::CloneInUse(Access::Mount),
    ),
    row(
        "block::clone_of_a_published_source_has_its_synced_blocks",
        "spec: CLONE_VOLUME on a volume in use; k8s: clones of PVCs used by running pods",
        &[R::Clone, R::Block, R::DataPlane],
        Flow::CloneInUse(Access::Block),
    ),
    row(
        "mount::clone_under_concurrent_writes_holds_the_synced_data",
        UNDER_WRITES,
        &[R::Clone, R::Mount, R::DataPlane],
        Flow::CopyUnderWrites(SourceKind::Volume),
    ),
    row(
        "mount::snapshot_under_concurrent_writes_restores_the_synced_data",
        UNDER_WRITES,
        &[R::Snapshot, R::Mount, R::DataPlane],
        Flow::CopyUnderWrites(SourceKind::Snapshot),
    ),
];

pub fn suite() -> Suite {
    Suite::from_rows("data_integrity", ROWS, interpret)
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    match row.flow {
        Flow::Copy(kind, access) => {
            let (source, seeded) = seeded_source(&ctx, kind, access).await?;
            let copy = expect_ok(
                ctx.create_from(&source, access, Some((seeded.size, 0)))
                    .await,
                "CreateVolume from the seeded source",
            )?;
            let digest = ctx.digest_of(&copy, access, seeded.size).await?;
            ensure_eq(
                &digest,
                &seeded.digest,
                "the copy's whole-volume digest must equal the source's",
            )
        }
        Flow::CloneInUse(access) => {
            let volume = ctx.new_volume(access, None).await?;
            let size = reported_size(volume.capacity_bytes, ctx.volume_size())?;
            let attached = ctx.attach(&volume, access).await?;
            let written = ctx.write_dataset(&attached, size, 0).await?;
            let source = SourceRef::Volume(volume.volume_id.clone());
            let clone = ctx.create_from(&source, access, Some((size, 0))).await;
            ctx.detach(&attached).await?;
            let clone = expect_ok(clone, "CreateVolume from a published source")?;
            let digest = ctx.digest_of(&clone, access, size).await?;
            ensure_eq(
                &digest,
                &written,
                "the clone must hold everything synced before the clone request",
            )
        }
        Flow::CopyUnderWrites(kind) => copy_under_writes(&ctx, kind).await,
    }
}

/// The writer stops by itself after this long, whatever happens to the case.
const WRITER_LIMIT: Duration = Duration::from_secs(20);
/// Writer iterations before the copy is requested, so journal and writeback are busy by then.
const WARM_UP_OPS: u64 = 32;

/// What was taken while the writer ran: a clone, or a snapshot to restore afterwards.
enum Taken {
    Clone(csi::Volume),
    Snapshot(SourceRef),
}

async fn copy_under_writes(ctx: &CaseCtx, kind: SourceKind) -> CaseResult {
    let volume = ctx.new_volume(Access::Mount, None).await?;
    // Copies are sized from what the driver made (xfs rounds up to 300 MiB), not the request.
    let size = reported_size(volume.capacity_bytes, ctx.volume_size())?;
    let attached = ctx.attach(&volume, Access::Mount).await?;
    ctx.write_dataset(&attached, size, 0).await?;
    // Only the dataset is synced before the copy; the churn beside it is in flux.
    let dataset = attached.target.join("dataset");
    let synced = volume_io("digest the synced dataset", move || {
        data::tree_digest(&dataset, data::Level::Direct)
    })
    .await?;

    let writer = Writer::start(attached.target.clone(), size, ctx.seed_for(1));
    writer.warm_up().await;
    let (taken, what) = match kind {
        SourceKind::Volume => {
            let source = SourceRef::Volume(volume.volume_id.clone());
            let clone = ctx.create_from(&source, Access::Mount, Some((size, 0)));
            (
                clone.await.map(Taken::Clone),
                "CreateVolume from a source being written",
            )
        }
        SourceKind::Snapshot => {
            let name = ctx.unique_name("snap");
            let snapshot = ctx.create_snapshot(&name, &volume.volume_id).await;
            (
                snapshot.map(|s| Taken::Snapshot(SourceRef::Snapshot(s.snapshot_id))),
                "CreateSnapshot of a source being written",
            )
        }
    };
    let ops = writer.stop().await;
    ctx.trace(format!(
        "data: the writer made {ops} rounds of changes around the copy"
    ));
    ctx.detach(&attached).await?;
    let taken = match taken {
        Err(status) if ctx.profile().clone.ambiguous == Ambiguous::Advisory => {
            // The spec leaves quiescing to the CO and requires no copy of a volume in use.
            ctx.advise(format!(
                "{what} was refused ({}); the spec does not require copies of a volume in use \
                 (the CO is to quiesce it), but Kubernetes clones and snapshots claims that pods \
                 are writing. Set clone.ambiguous: strict to fail it.",
                harness::case::describe_status(&status)
            ));
            return Ok(());
        }
        taken => taken,
    };
    let copy = match expect_ok(taken, what)? {
        Taken::Clone(clone) => clone,
        Taken::Snapshot(snapshot) => expect_ok(
            ctx.create_from(&snapshot, Access::Mount, Some((size, 0)))
                .await,
            "CreateVolume from the snapshot taken during writes",
        )?,
    };
    check_copy(ctx, &copy, synced).await
}

/// The copy must stage and mount, every file in it must read back (a crash-consistent
/// filesystem has no unreadable file, churn included), and its dataset must be the synced one.
async fn check_copy(ctx: &CaseCtx, copy: &csi::Volume, synced: Digest) -> CaseResult {
    let attached = match ctx.attach(copy, Access::Mount).await {
        Err(CaseError::Fail(failure)) => {
            return Err(fail_with(
                format!(
                    "{} for the copy made during writes: the driver delivered a corrupt filesystem",
                    failure.message
                ),
                "a copy that stages and mounts",
                failure.actual.unwrap_or_default(),
            ));
        }
        attached => attached?,
    };
    let target = attached.target.clone();
    let read = tokio::task::spawn_blocking(move || {
        let dataset = target.join("dataset");
        // An empty or partial copy may lack the directory: the driver's failure, not ours.
        let digest = if dataset.is_dir() {
            Some(data::tree_digest(&dataset, data::Level::Direct)?)
        } else {
            None
        };
        data::tree_digest(&target, data::Level::Direct)?;
        Ok::<_, DataError>(digest)
    })
    .await;
    let detached = ctx.detach(&attached).await;
    let digest = match read {
        Ok(Ok(Some(digest))) => digest,
        Ok(Ok(None)) => {
            return Err(fail_with(
                "the copy made during writes lacks the dataset synced before it",
                "a dataset/ directory",
                "none",
            ));
        }
        Ok(Err(e)) => {
            return Err(read_verdict(
                "reading the copy made during writes (a torn filesystem reads with EIO, EBADMSG or EUCLEAN)",
                &e,
            ));
        }
        Err(e) => return Err(harness_error(format!("read the copy: task failed: {e}"))),
    };
    ensure_eq(
        &digest,
        &synced,
        "the copy must hold the dataset synced before the copy was requested",
    )?;
    detached
}

/// A workload on the mounted source, the pattern that tore every unfrozen copy in
/// reference-driver/tests/online_clone.rs: files created, deleted and rewritten under
/// `churn/`, empty files, appends fsynced one by one, a syncfs now and then. Its I/O errors
/// are ignored (only the copy is under test); its sizes keep it under a quarter of the volume.
struct Writer {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Small files spread over this many directories; rewritten fill files.
const DIRS: u64 = 50;
const FILLS: u64 = 8;
const SMALL: usize = 64 << 10;
const APPEND: usize = 4096;
/// Enough fresh inodes per round that nearly every unfrozen copy tears visibly (at 4, about
/// one in ten did not, and half did not with four cases running at once).
const EMPTY_PER_ROUND: u64 = 16;

/// Byte budgets for one writer: live small files, each fill file, the log before it restarts.
struct Budget {
    live: u64,
    fill: usize,
    log: u64,
}

impl Budget {
    /// A quarter of the volume: a quarter of that for small files, half for fills, an
    /// eighth for the log.
    fn for_volume(size: u64) -> Budget {
        let quarter = size / 4;
        Budget {
            live: (quarter / 4 / SMALL as u64).clamp(4, 256),
            fill: (quarter / 2 / FILLS).clamp(4096, 1 << 20) as usize,
            log: (quarter / 8).clamp(APPEND as u64, 4 << 20),
        }
    }
}

impl Writer {
    fn start(root: PathBuf, volume_size: u64, seed: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let budget = Budget::for_volume(volume_size);
        let (flag, count) = (stop.clone(), ops.clone());
        let task = tokio::task::spawn_blocking(move || {
            churn(&root.join("churn"), &budget, seed, &flag, &count)
        });
        Writer {
            stop,
            ops,
            task: Some(task),
        }
    }

    /// Waits (a few seconds at most) until the writer is in full swing.
    async fn warm_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.ops.load(Ordering::Relaxed) < WARM_UP_OPS && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the writer and waits for it; returns how many rounds it made.
    async fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.ops.load(Ordering::Relaxed)
    }
}

impl Drop for Writer {
    /// A case cut short must not leave the writer keeping the source's mount busy.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[allow(unknown_lints, clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87 > MSRV
fn churn(dir: &Path, budget: &Budget, seed: u64, stop: &AtomicBool, ops: &AtomicU64) {
    let started = Instant::now();
    let small = |i: u64| dir.join(format!("d{}/f{i}", i % DIRS));
    let (mut log, mut log_len) = (None::<File>, 0u64);
    // At most half the inodes that are free now.
    let mut empty_left =
        rustix::fs::statvfs(dir.parent().unwrap_or(dir)).map_or(0, |s| s.f_ffree / 2);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < WRITER_LIMIT {
        let byte = seed.wrapping_add(i) as u8;
        let _ = fs::create_dir_all(dir.join(format!("d{}", i % DIRS)));
        let _ = fs::write(small(i), vec![byte; SMALL]);
        // Empty files take fresh inodes and no space: a copy that tears between a directory
        // block and the inode table then names inodes it never initialised.
        for k in 0..EMPTY_PER_ROUND.min(empty_left) {
            let _ = File::create(dir.join(format!("d{}/e{i}-{k}", i % DIRS)));
            empty_left -= 1;
        }
        // A recent file now and then, and the oldest once `live` files are kept.
        if i % 3 == 0 && i >= 2 {
            let _ = fs::remove_file(small(i - 2));
        }
        if i >= budget.live {
            let _ = fs::remove_file(small(i - budget.live));
        }
        if log.is_none() || log_len >= budget.log {
            log = File::create(dir.join("log")).ok();
            log_len = 0;
        }
        if let Some(file) = &mut log {
            if file.write_all(&[byte; APPEND]).is_ok() {
                log_len += APPEND as u64;
            }
            let _ = file.sync_data();
        }
        if let (0, Ok(root)) = (i % 7, File::open(dir)) {
            let _ = rustix::fs::syncfs(root);
        }
        let fill = dir.join(format!("fill{}", i % FILLS));
        let _ = fs::write(fill, vec![byte; budget.fill]);
        i += 1;
        ops.store(i, Ordering::Relaxed);
    }
}
