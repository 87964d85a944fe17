//! Small pieces every suite uses: picking the access type, making sources of either kind.

use csi_proto::v1 as csi;
use harness::case::{CaseResult, expect_ok};
use harness::context::{Access, CaseCtx, SourceRef};
use harness::steps::{Seeded, reported_size};

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

/// An empty source of `kind` (for controller-only rows), and its size as the driver reported
/// it (a snapshot's `size_bytes`, else its volume's): what a copy of it must hold.
pub async fn empty_source(
    ctx: &CaseCtx,
    kind: SourceKind,
    access: Access,
) -> CaseResult<(SourceRef, u64)> {
    let volume = ctx.new_volume(access, None).await?;
    let size = reported_size(volume.capacity_bytes, ctx.volume_size())?;
    match kind {
        SourceKind::Volume => Ok((SourceRef::Volume(volume.volume_id), size)),
        SourceKind::Snapshot => {
            let snapshot = snapshot_of(ctx, &volume.volume_id).await?;
            let size = snapshot_size(&snapshot, size)?;
            Ok((SourceRef::Snapshot(snapshot.snapshot_id), size))
        }
    }
}

/// A new snapshot of `volume_id`, which must succeed.
pub async fn snapshot_of(ctx: &CaseCtx, volume_id: &str) -> CaseResult<csi::Snapshot> {
    let name = ctx.unique_name("snap");
    expect_ok(
        ctx.create_snapshot(&name, volume_id).await,
        "setup: CreateSnapshot",
    )
}

/// A snapshot's `size_bytes`, or its volume's size when it reports 0 (unknown).
pub fn snapshot_size(snapshot: &csi::Snapshot, volume_size: u64) -> CaseResult<u64> {
    reported_size(snapshot.size_bytes, volume_size)
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
            let snapshot = snapshot_of(ctx, &seeded.volume.volume_id).await?;
            Ok((SourceRef::Snapshot(snapshot.snapshot_id), seeded))
        }
    }
}
