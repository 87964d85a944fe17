//! Small pieces every suite uses: picking the access type, making sources of either kind.

use harness::case::{CaseResult, expect_ok};
use harness::context::{Access, CaseCtx, SourceRef};
use harness::steps::Seeded;

/// Whether a row works on a volume or a snapshot as its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Volume,
    Snapshot,
}

/// Mount when the driver declares it (the common case), else block.
pub fn default_access(ctx: &CaseCtx) -> Access {
    if ctx.profile().capabilities.mount {
        Access::Mount
    } else {
        Access::Block
    }
}

/// An empty source of `kind` (for controller-only rows), and its size.
pub async fn empty_source(
    ctx: &CaseCtx,
    kind: SourceKind,
    access: Access,
) -> CaseResult<(SourceRef, u64)> {
    let volume = ctx.new_volume(access, None).await?;
    let size = ctx.volume_size();
    match kind {
        SourceKind::Volume => Ok((SourceRef::Volume(volume.volume_id), size)),
        SourceKind::Snapshot => {
            let name = ctx.unique_name("snap");
            let snapshot = expect_ok(
                ctx.create_snapshot(&name, &volume.volume_id).await,
                "setup: CreateSnapshot",
            )?;
            Ok((SourceRef::Snapshot(snapshot.snapshot_id), size))
        }
    }
}

/// A seeded volume, or a snapshot of one, as a source; the digest is what a copy must hold.
pub async fn seeded_source(
    ctx: &CaseCtx,
    kind: SourceKind,
    access: Access,
) -> CaseResult<(SourceRef, Seeded)> {
    let seeded = ctx.seeded_volume(access, 0).await?;
    match kind {
        SourceKind::Volume => Ok((SourceRef::Volume(seeded.volume.volume_id.clone()), seeded)),
        SourceKind::Snapshot => {
            let name = ctx.unique_name("snap");
            let snapshot = expect_ok(
                ctx.create_snapshot(&name, &seeded.volume.volume_id).await,
                "setup: CreateSnapshot",
            )?;
            Ok((SourceRef::Snapshot(snapshot.snapshot_id), seeded))
        }
    }
}
