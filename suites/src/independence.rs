//! Independence: after a copy, writes to either side stay on that side; deleting the source
//! leaves the clone whole (or is refused with the source untouched); chains of copies keep
//! the original data.

use harness::case::{
    CaseResult, Requirement as R, Row, Suite, ensure_eq, expect_ok, fail_with, row,
};
use harness::context::{Access, CaseCtx, SourceRef};
use harness::data::{self, Digest};
use harness::profile::SourceDeletion;
use harness::steps::{Seeded, volume_io};
use tonic::Code;

use crate::common::{SourceKind, seeded_source};

#[derive(Clone, Copy, Debug)]
enum Side {
    Source,
    Clone,
}

#[derive(Clone, Copy, Debug)]
enum Chain {
    CloneOfClone,
    CloneOfRestore,
    RestoreOfSnapshotOfClone,
}

#[derive(Clone, Copy, Debug)]
enum Flow {
    /// Write to `Side` after the clone; the other side keeps the original data.
    WriteAfterClone(Side, Access),
    DeleteSource(Access),
    DeleteClone(Access),
    /// Delete a snapshot's source volume; the snapshot still restores the data.
    DeleteSnapshotSource(Access),
    /// source → snapshot → restore; the snapshot is deleted.
    DeleteSnapshotOfRestore,
    /// source → clone → clone of the clone; the middle one is deleted.
    DeleteMiddleOfChain,
    Chain(Chain, Access),
}

const INDEPENDENT: &str = "k8s: a clone is a new, independent volume (storage/volume-pvc-datasource); spec: VolumeContentSource pre-populates a new volume";
const DV: &str = "spec: DeleteVolume — OK leaving dependants intact, or 9 FAILED_PRECONDITION with the volume untouched";

const ROWS: &[Row<Flow>] = &[
    row(
        "mount::write_to_source_after_clone_leaves_clone_unchanged",
        INDEPENDENT,
        &[R::Clone, R::Mount, R::DataPlane],
        Flow::WriteAfterClone(Side::Source, Access::Mount),
    ),
    row(
        "mount::write_to_clone_leaves_source_unchanged",
        INDEPENDENT,
        &[R::Clone, R::Mount, R::DataPlane],
        Flow::WriteAfterClone(Side::Clone, Access::Mount),
    ),
    row(
        "block::write_to_source_after_clone_leaves_clone_unchanged",
        INDEPENDENT,
        &[R::Clone, R::Block, R::DataPlane],
        Flow::WriteAfterClone(Side::Source, Access::Block),
    ),
    row(
        "block::write_to_clone_leaves_source_unchanged",
        INDEPENDENT,
        &[R::Clone, R::Block, R::DataPlane],
        Flow::WriteAfterClone(Side::Clone, Access::Block),
    ),
    row(
        "mount::deleting_the_source_leaves_the_clone_complete",
        DV,
        &[R::Clone, R::Mount, R::DataPlane],
        Flow::DeleteSource(Access::Mount),
    ),
    row(
        "block::deleting_the_source_leaves_the_clone_complete",
        DV,
        &[R::Clone, R::Block, R::DataPlane],
        Flow::DeleteSource(Access::Block),
    ),
    row(
        "mount::deleting_the_clone_leaves_the_source_intact",
        DV,
        &[R::Clone, R::Mount, R::DataPlane],
        Flow::DeleteClone(Access::Mount),
    ),
    row(
        "mount::deleting_a_snapshot_source_keeps_the_snapshot_restorable",
        "spec: DeleteVolume — OK with its snapshots still usable as sources, or FAILED_PRECONDITION (snapshots not independent) leaving the volume untouched",
        &[R::Snapshot, R::Mount, R::DataPlane],
        Flow::DeleteSnapshotSource(Access::Mount),
    ),
    row(
        "chain::clone_of_a_clone_has_the_original_data",
        INDEPENDENT,
        &[R::Clone, R::Mount, R::DataPlane],
        Flow::Chain(Chain::CloneOfClone, Access::Mount),
    ),
    row(
        "chain::clone_of_a_restored_volume_has_the_original_data",
        INDEPENDENT,
        &[R::Clone, R::Snapshot, R::Mount, R::DataPlane],
        Flow::Chain(Chain::CloneOfRestore, Access::Mount),
    ),
    row(
        "chain::restore_of_a_snapshot_of_a_clone_has_the_original_data",
        INDEPENDENT,
        &[R::Clone, R::Snapshot, R::Mount, R::DataPlane],
        Flow::Chain(Chain::RestoreOfSnapshotOfClone, Access::Mount),
    ),
    row(
        "chain::block_clone_of_a_clone_has_the_original_data",
        INDEPENDENT,
        &[R::Clone, R::Block, R::DataPlane],
        Flow::Chain(Chain::CloneOfClone, Access::Block),
    ),
    row(
        "chain::deleting_a_snapshot_leaves_its_restore_complete",
        "spec: DeleteSnapshot — OK, or FAILED_PRECONDITION (snapshot in use); a restored volume is independent of it",
        &[R::Snapshot, R::Mount, R::DataPlane],
        Flow::DeleteSnapshotOfRestore,
    ),
    row(
        "chain::deleting_the_middle_of_a_clone_chain_leaves_both_ends_complete",
        DV,
        &[R::Clone, R::Mount, R::DataPlane],
        Flow::DeleteMiddleOfChain,
    ),
];

pub fn suite() -> Suite {
    Suite::from_rows("independence", ROWS, interpret)
}

/// Writes a marker into a volume (a new file, or 4 KiB in the middle of a block device).
async fn write_marker(
    ctx: &CaseCtx,
    volume: &csi_proto::v1::Volume,
    access: Access,
    size: u64,
) -> CaseResult<Digest> {
    let attached = ctx.attach(volume, access).await?;
    let seed = ctx.seed_for(99);
    let target = attached.target.clone();
    let written = match access {
        Access::Mount => {
            volume_io("write marker file", move || {
                data::write_marker(&target, "independence-marker", seed, 256 << 10)
            })
            .await
        }
        Access::Block => {
            volume_io("write marker block", move || {
                data::write_block_marker(&target, seed, size / 2)?;
                data::device_digest(&target, size)
            })
            .await
        }
    };
    ctx.trace(format!("data: marker written into {}", volume.volume_id));
    ctx.detach(&attached).await?;
    written
}

async fn copy_of(
    ctx: &CaseCtx,
    source: SourceRef,
    seeded: &Seeded,
) -> CaseResult<csi_proto::v1::Volume> {
    expect_ok(
        ctx.create_from(&source, seeded.access, Some((seeded.size, 0)))
            .await,
        &format!("CreateVolume from {source}"),
    )
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    match row.flow {
        Flow::WriteAfterClone(side, access) => {
            let (source, seeded) = seeded_source(&ctx, SourceKind::Volume, access).await?;
            let clone = copy_of(&ctx, source, &seeded).await?;
            let (written, untouched, name) = match side {
                Side::Source => (&seeded.volume, &clone, "clone"),
                Side::Clone => (&clone, &seeded.volume, "source"),
            };
            let changed = write_marker(&ctx, written, access, seeded.size).await?;
            if changed == seeded.digest {
                return Err(harness::case::harness_error(
                    "the marker write did not change the written side",
                ));
            }
            let digest = ctx.digest_of(untouched, access, seeded.size).await?;
            ensure_eq(
                &digest,
                &seeded.digest,
                &format!("a write to the other side must not change the {name}"),
            )
        }
        Flow::DeleteSource(access) => {
            let (source, seeded) = seeded_source(&ctx, SourceKind::Volume, access).await?;
            let clone = copy_of(&ctx, source, &seeded).await?;
            delete_source(&ctx, &seeded, access, Dependents::Clones).await?;
            let digest = ctx.digest_of(&clone, access, seeded.size).await?;
            ensure_eq(
                &digest,
                &seeded.digest,
                "the clone must be complete after its source was deleted",
            )
        }
        Flow::DeleteClone(access) => {
            let (source, seeded) = seeded_source(&ctx, SourceKind::Volume, access).await?;
            let clone = copy_of(&ctx, source, &seeded).await?;
            expect_ok(
                ctx.delete_volume(&clone.volume_id).await,
                "DeleteVolume of the clone",
            )?;
            let digest = ctx.digest_of(&seeded.volume, access, seeded.size).await?;
            ensure_eq(
                &digest,
                &seeded.digest,
                "deleting a clone must leave its source intact",
            )
        }
        Flow::DeleteSnapshotSource(access) => {
            let (snapshot, seeded) = seeded_source(&ctx, SourceKind::Snapshot, access).await?;
            delete_source(&ctx, &seeded, access, Dependents::Snapshots).await?;
            let restored = copy_of(&ctx, snapshot, &seeded).await?;
            let digest = ctx.digest_of(&restored, access, seeded.size).await?;
            ensure_eq(
                &digest,
                &seeded.digest,
                "a snapshot must restore its data after its source was deleted",
            )
        }
        Flow::DeleteSnapshotOfRestore => {
            let access = Access::Mount;
            let (snapshot, seeded) = seeded_source(&ctx, SourceKind::Snapshot, access).await?;
            let restored = copy_of(&ctx, snapshot.clone(), &seeded).await?;
            let SourceRef::Snapshot(id) = &snapshot else {
                unreachable!()
            };
            match ctx.delete_snapshot(id).await {
                Ok(()) => {}
                Err(status) if status.code() == Code::FailedPrecondition => {
                    ctx.trace("the snapshot is in use: FAILED_PRECONDITION, allowed");
                }
                Err(status) => {
                    return Err(fail_with(
                        "deleting a snapshot with a restored volume must succeed (or be refused with FAILED_PRECONDITION)",
                        "OK or FAILED_PRECONDITION",
                        harness::case::describe_status(&status),
                    ));
                }
            }
            let digest = ctx.digest_of(&restored, access, seeded.size).await?;
            ensure_eq(
                &digest,
                &seeded.digest,
                "a restored volume must stay complete after its snapshot is deleted",
            )
        }
        Flow::DeleteMiddleOfChain => {
            let access = Access::Mount;
            let (source, seeded) = seeded_source(&ctx, SourceKind::Volume, access).await?;
            let middle = copy_of(&ctx, source, &seeded).await?;
            let end = copy_of(&ctx, SourceRef::Volume(middle.volume_id.clone()), &seeded).await?;
            let policy = ctx.profile().clone.delete_source_with_clones;
            match (ctx.delete_volume(&middle.volume_id).await, policy) {
                (Ok(()), SourceDeletion::Allowed | SourceDeletion::Either) => {}
                (Err(status), SourceDeletion::Refused | SourceDeletion::Either)
                    if status.code() == Code::FailedPrecondition => {}
                (answer, _) => {
                    return Err(fail_with(
                        "deleting the middle of a clone chain must be answered as for any source with clones",
                        deletion_answers(policy, "delete_source_with_clones"),
                        answer
                            .map_or_else(|s| harness::case::describe_status(&s), |()| "OK".into()),
                    ));
                }
            }
            for (volume, what) in [(&seeded.volume, "the start"), (&end, "the end")] {
                let digest = ctx.digest_of(volume, access, seeded.size).await?;
                ensure_eq(
                    &digest,
                    &seeded.digest,
                    &format!("{what} of the chain must stay complete when its middle is deleted"),
                )?;
            }
            Ok(())
        }
        Flow::Chain(chain, access) => {
            let (source, seeded) = seeded_source(&ctx, SourceKind::Volume, access).await?;
            let last = match chain {
                Chain::CloneOfClone => {
                    let first = copy_of(&ctx, source, &seeded).await?;
                    copy_of(&ctx, SourceRef::Volume(first.volume_id), &seeded).await?
                }
                Chain::CloneOfRestore => {
                    let SourceRef::Volume(id) = &source else {
                        unreachable!()
                    };
                    let snapshot = expect_ok(
                        ctx.create_snapshot(&ctx.unique_name("snap"), id).await,
                        "CreateSnapshot of the source",
                    )?;
                    let restored =
                        copy_of(&ctx, SourceRef::Snapshot(snapshot.snapshot_id), &seeded).await?;
                    copy_of(&ctx, SourceRef::Volume(restored.volume_id), &seeded).await?
                }
                Chain::RestoreOfSnapshotOfClone => {
                    let clone = copy_of(&ctx, source, &seeded).await?;
                    let snapshot = expect_ok(
                        ctx.create_snapshot(&ctx.unique_name("snap"), &clone.volume_id)
                            .await,
                        "CreateSnapshot of the clone",
                    )?;
                    copy_of(&ctx, SourceRef::Snapshot(snapshot.snapshot_id), &seeded).await?
                }
            };
            let digest = ctx.digest_of(&last, access, seeded.size).await?;
            ensure_eq(
                &digest,
                &seeded.digest,
                "the end of the chain must hold the original data",
            )
        }
    }
}

/// The answers `policy` (the profile key `clone.<key>`) allows to a DeleteVolume of a source.
fn deletion_answers(policy: SourceDeletion, key: &str) -> String {
    match policy {
        SourceDeletion::Allowed => format!("OK (clone.{key}: allowed)"),
        SourceDeletion::Refused => format!("FAILED_PRECONDITION (clone.{key}: refused)"),
        SourceDeletion::Either => "OK or FAILED_PRECONDITION".to_string(),
    }
}

/// What a source being deleted still has; the profile's policy for each is its own key.
#[derive(Clone, Copy)]
enum Dependents {
    Clones,
    Snapshots,
}

/// DeleteVolume of a seeded source that still has `dependents`: OK, or FAILED_PRECONDITION
/// with the source left unaltered, as the profile's policy allows.
async fn delete_source(
    ctx: &CaseCtx,
    seeded: &Seeded,
    access: Access,
    dependents: Dependents,
) -> CaseResult {
    let clone = &ctx.profile().clone;
    let (policy, key, what) = match dependents {
        Dependents::Clones => (
            clone.delete_source_with_clones,
            "delete_source_with_clones",
            "a source with clones",
        ),
        Dependents::Snapshots => (
            clone.delete_source_with_snapshots,
            "delete_source_with_snapshots",
            "a volume with snapshots",
        ),
    };
    match (ctx.delete_volume(&seeded.volume.volume_id).await, policy) {
        (Ok(()), SourceDeletion::Refused) => Err(fail_with(
            format!("the profile says deleting {what} is refused"),
            "FAILED_PRECONDITION",
            "OK",
        )),
        (Ok(()), _) => Ok(()),
        (Err(status), SourceDeletion::Refused | SourceDeletion::Either)
            if status.code() == Code::FailedPrecondition =>
        {
            let digest = ctx.digest_of(&seeded.volume, access, seeded.size).await?;
            ensure_eq(
                &digest,
                &seeded.digest,
                "a volume whose deletion was refused must be left unaltered",
            )
        }
        (Err(status), _) => Err(fail_with(
            format!("deleting {what} must succeed (or be refused with FAILED_PRECONDITION)"),
            deletion_answers(policy, key),
            harness::case::describe_status(&status),
        )),
    }
}
