//! k8s_snapshot: snapshots and clones together, as users chain them. A restore of a snapshot
//! of the source holds the source's data; so do a clone of a restore and a restore of a
//! snapshot of a clone; a snapshot outlives its source; and a restore in another volumeMode is
//! refused (external-provisioner's --prevent-volume-mode-conversion, on by default).

use harness::case::{CaseResult, Requirement as R, Row, Suite, Surface, ensure_eq, row};
use harness::context::CaseCtx;
use harness::k8s::{ClaimSpec, ExpectedEvent, VolumeMode};
use kube::ResourceExt;

use crate::k8s_common::{Source, bound_with_digest, ensure_not_dropped, refused, seeded_source};
use VolumeMode::{Block, Filesystem};

#[derive(Clone, Copy, Debug)]
enum Flow {
    Restore(VolumeMode),
    CloneOfRestore,
    RestoreOfCloneSnapshot,
    SnapshotOutlivesSource,
    RestoreInOtherMode,
}

const RESTORE: &str = "k8s: a claim with a VolumeSnapshot as dataSource is provisioned with the snapshot's data (Kubernetes docs, Volume Snapshots / provisioning volumes from snapshots)";
const CHAIN: &str = "k8s: a clone is an ordinary volume: it can be snapshotted, and a restore can be cloned, each with the original data (Kubernetes docs, CSI Volume Cloning)";
const LIFETIME: &str = "k8s: a VolumeSnapshot is independent of its source claim: deleting the source leaves it restorable (Kubernetes docs, Volume Snapshots)";
const MODE: &str = "k8s: with --prevent-volume-mode-conversion (external-provisioner's default) a restore may not change the source's volumeMode unless the VolumeSnapshotContent allows it (Kubernetes docs, Volume Snapshots / converting the volume mode)";

const ROWS: &[Row<Flow>] = &[
    row(
        "restore::filesystem_restore_has_the_source_data",
        RESTORE,
        &[R::Snapshot, R::Mount],
        Flow::Restore(Filesystem),
    ),
    row(
        "restore::block_restore_has_the_source_data",
        RESTORE,
        &[R::Snapshot, R::Block],
        Flow::Restore(Block),
    ),
    row(
        "chain::clone_of_a_restore_has_the_source_data",
        CHAIN,
        &[R::Snapshot, R::Clone, R::Mount],
        Flow::CloneOfRestore,
    ),
    row(
        "chain::restore_of_a_snapshot_of_a_clone_has_the_source_data",
        CHAIN,
        &[R::Snapshot, R::Clone, R::Mount],
        Flow::RestoreOfCloneSnapshot,
    ),
    row(
        "lifetime::snapshot_is_restorable_after_its_source_is_deleted",
        LIFETIME,
        &[R::Snapshot, R::Mount],
        Flow::SnapshotOutlivesSource,
    ),
    row(
        "volume_mode::block_restore_of_a_filesystem_snapshot_is_refused",
        MODE,
        &[R::Snapshot, R::Mount, R::Block],
        Flow::RestoreInOtherMode,
    ),
];

/// external-provisioner's words for a mode change it prevents (measured: docs/k8s-rules.md).
const MODE_EVENT: ExpectedEvent = ExpectedEvent {
    reason: "ProvisioningFailed",
    words: &["modifies the mode of the source volume but does not have permission"],
};

pub fn suite() -> Suite {
    Suite::from_rows("k8s_snapshot", ROWS, interpret).on(Surface::Kubernetes)
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    match row.flow {
        Flow::Restore(mode) => {
            let source = seeded_source(&ctx, mode).await?;
            let snapshot = ctx.snapshot_claim(&source.name).await?;
            restored(&ctx, &source, &snapshot).await.map(drop)
        }
        Flow::CloneOfRestore => {
            let source = seeded_source(&ctx, Filesystem).await?;
            let snapshot = ctx.snapshot_claim(&source.name).await?;
            let restore = restored(&ctx, &source, &snapshot).await?;
            let spec = ClaimSpec::new("clone", Filesystem, source.size).cloning(&restore);
            let (bound, digest) = bound_with_digest(&ctx, &spec, source.size).await?;
            ensure_not_dropped(&digest, &source, &bound.claim.name_any())
        }
        Flow::RestoreOfCloneSnapshot => {
            let source = seeded_source(&ctx, Filesystem).await?;
            let spec = ClaimSpec::new("clone", Filesystem, source.size).cloning(&source.name);
            let (clone, digest) = bound_with_digest(&ctx, &spec, source.size).await?;
            ensure_not_dropped(&digest, &source, &clone.claim.name_any())?;
            let snapshot = ctx.snapshot_claim(&clone.claim.name_any()).await?;
            restored(&ctx, &source, &snapshot).await.map(drop)
        }
        Flow::SnapshotOutlivesSource => {
            let source = seeded_source(&ctx, Filesystem).await?;
            let snapshot = ctx.snapshot_claim(&source.name).await?;
            let bound = ctx.wait_bound(&source.name).await?;
            ctx.delete_claim_and_volume(&bound).await?;
            restored(&ctx, &source, &snapshot).await.map(drop)
        }
        Flow::RestoreInOtherMode => {
            let source = seeded_source(&ctx, Filesystem).await?;
            let snapshot = ctx.snapshot_claim(&source.name).await?;
            let spec = ClaimSpec::new("restore", Block, source.size).restoring(&snapshot);
            refused(&ctx, &spec, MODE_EVENT).await?;
            // The positive control: a restore in the snapshot's own mode.
            restored(&ctx, &source, &snapshot).await.map(drop)
        }
    }
}

/// A restore of `snapshot` in the source's mode, bound and holding the source's data.
async fn restored(ctx: &CaseCtx, source: &Source, snapshot: &str) -> CaseResult<String> {
    let spec = ClaimSpec::new("restore", source.mode, source.size).restoring(snapshot);
    let (bound, digest) = bound_with_digest(ctx, &spec, source.size).await?;
    ensure_eq(
        &digest,
        &source.digest,
        "the restore's data (read by a pod) differs from the source's when it was snapshotted",
    )?;
    Ok(bound.claim.name_any())
}
