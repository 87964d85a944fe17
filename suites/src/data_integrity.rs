//! Data: a seeded dataset written through the node service, synced, copied; the copy's
//! whole-volume digest must equal the source's.

use harness::case::{CaseMeta, CaseResult, Requirement as R, Suite, ensure_eq, expect_ok};
use harness::context::{Access, CaseCtx, SourceRef};

use crate::common::{SourceKind, seeded_source};

#[derive(Clone, Copy, Debug)]
enum Flow {
    /// Copy of an unpublished seeded source.
    Copy(SourceKind, Access),
    /// Clone while the source is still staged and published (in use), after a sync.
    CloneInUse(Access),
}

#[derive(Clone, Copy, Debug)]
struct Row {
    meta: CaseMeta,
    flow: Flow,
}

const fn row(id: &'static str, rule: &'static str, requires: &'static [R], flow: Flow) -> Row {
    Row {
        meta: CaseMeta { id, rule, requires },
        flow,
    }
}

const CLONE: &str =
    "spec: VolumeContentSource — the new volume is pre-populated with the source's data";

const ROWS: &[Row] = &[
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
];

pub fn suite() -> Suite {
    Suite::from_rows("data_integrity", ROWS, |r| r.meta, interpret)
}

async fn interpret(ctx: CaseCtx, row: Row) -> CaseResult {
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
            let size = ctx.volume_size();
            let volume = ctx.new_volume(access, Some(size)).await?;
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
    }
}
