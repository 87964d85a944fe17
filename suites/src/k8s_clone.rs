//! k8s_clone: cloning as a Kubernetes user does it — a PVC whose `spec.dataSource` names a PVC
//! of the same namespace — with data written and read by real pods. A clone must bind to a new
//! volume of the driver with the requested mode and at least the requested size, hold exactly
//! the source's data, and stay independent of its source afterwards.

use harness::case::{
    CaseResult, Requirement as R, Row, Suite, Surface, ensure, ensure_eq, fail_with, row,
};
use harness::context::CaseCtx;
use harness::data::Digest;
use harness::k8s::{BoundClaim, CLONING_PROTECTION, ClaimSpec, VolumeMode, quantity_bytes};
use kube::ResourceExt;

use crate::k8s_common::{Source, bound_with_digest, seeded_source};

use VolumeMode::{Block, Filesystem};

#[derive(Clone, Copy, Debug)]
enum Flow {
    /// The clone binds to a new volume of the driver and pods read the source's data from it.
    HoldsSourceData(VolumeMode),
    /// external-provisioner protects a clone's source while it is used as one.
    SourceProtected,
    /// Writes to either side after the clone stay on that side.
    Independent(VolumeMode),
    /// Deleting the source claim (and its volume) leaves the clone whole.
    SourceDeleted(VolumeMode),
    /// A clone of a clone holds the first source's data.
    CloneOfClone(VolumeMode),
}

const CLONE: &str = "k8s: a PVC with dataSource kind PersistentVolumeClaim is provisioned as a clone, an exact duplicate of the source (Kubernetes docs, CSI Volume Cloning)";
const PV: &str = "k8s: the clone's PV is the driver's new volume, of the requested volumeMode and at least the requested capacity (PersistentVolumeClaim semantics)";
const PROTECTION: &str = "k8s: external-provisioner puts provisioner.storage.kubernetes.io/cloning-protection on a source claim it clones";
const INDEPENDENT: &str = "k8s: a clone is a new, independent volume: writes to either side do not reach the other (Kubernetes docs, CSI Volume Cloning)";
const LIFETIME: &str = "k8s: a clone is independent of its source: deleting the source leaves it intact (Kubernetes docs, CSI Volume Cloning)";

const ROWS: &[Row<Flow>] = &[
    row(
        "filesystem::clone_binds_with_the_source_data",
        CLONE,
        &[R::Clone, R::Mount],
        Flow::HoldsSourceData(Filesystem),
    ),
    row(
        "block::clone_binds_with_the_source_data",
        CLONE,
        &[R::Clone, R::Block],
        Flow::HoldsSourceData(Block),
    ),
    row(
        "protection::source_carries_the_cloning_finalizer",
        PROTECTION,
        &[R::Clone, R::Mount],
        Flow::SourceProtected,
    ),
    row(
        "filesystem::writes_after_the_clone_stay_on_their_side",
        INDEPENDENT,
        &[R::Clone, R::Mount],
        Flow::Independent(Filesystem),
    ),
    row(
        "block::writes_after_the_clone_stay_on_their_side",
        INDEPENDENT,
        &[R::Clone, R::Block],
        Flow::Independent(Block),
    ),
    row(
        "filesystem::deleting_the_source_leaves_the_clone_intact",
        LIFETIME,
        &[R::Clone, R::Mount],
        Flow::SourceDeleted(Filesystem),
    ),
    row(
        "filesystem::clone_of_a_clone_holds_the_first_source_data",
        CLONE,
        &[R::Clone, R::Mount],
        Flow::CloneOfClone(Filesystem),
    ),
];

pub fn suite() -> Suite {
    Suite::from_rows("k8s_clone", ROWS, interpret).on(Surface::Kubernetes)
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    match row.flow {
        Flow::HoldsSourceData(mode) => holds_source_data(&ctx, mode).await,
        Flow::SourceProtected => source_protected(&ctx).await,
        Flow::Independent(mode) => independent(&ctx, mode).await,
        Flow::SourceDeleted(mode) => source_deleted(&ctx, mode).await,
        Flow::CloneOfClone(mode) => clone_of_clone(&ctx, mode).await,
    }
}

fn spec(what: &'static str, mode: VolumeMode, size: u64, clone_of: Option<&str>) -> ClaimSpec {
    let spec = ClaimSpec::new(what, mode, size);
    match clone_of {
        Some(source) => spec.cloning(source),
        None => spec,
    }
}

/// Creates a clone of `source` and returns it bound, with its data's digest.
async fn bound_clone(
    ctx: &CaseCtx,
    source: &Source,
    mode: VolumeMode,
) -> CaseResult<(BoundClaim, Digest)> {
    let clone = spec("clone", mode, source.size, Some(&source.name));
    bound_with_digest(ctx, &clone, source.size).await
}

async fn holds_source_data(ctx: &CaseCtx, mode: VolumeMode) -> CaseResult {
    let source = seeded_source(ctx, mode).await?;
    let source_volume = ctx.wait_bound(&source.name).await?.volume;
    let (clone, digest) = bound_clone(ctx, &source, mode).await?;
    check_volume(ctx, &clone, &source_volume, mode, source.size)?;
    ensure_eq(
        &digest,
        &source.digest,
        "the clone's data (read by a pod) differs from the source's",
    )
}

/// The PV of a clone: the driver's, a volume of its own, the mode and size asked for.
fn check_volume(
    ctx: &CaseCtx,
    clone: &BoundClaim,
    source: &k8s_openapi::api::core::v1::PersistentVolume,
    mode: VolumeMode,
    size: u64,
) -> CaseResult {
    let csi = |pv: &k8s_openapi::api::core::v1::PersistentVolume| {
        pv.spec.as_ref().and_then(|s| s.csi.clone())
    };
    let Some(clone_csi) = csi(&clone.volume) else {
        return Err(fail_with(
            format!("PV {} is not a CSI volume", clone.volume.name_any()),
            PV,
            "no spec.csi",
        ));
    };
    ensure_eq(
        &clone_csi.driver,
        &ctx.profile().name,
        "the clone's PV names another driver",
    )?;
    let source_handle = csi(source).map(|c| c.volume_handle).unwrap_or_default();
    ensure(
        clone_csi.volume_handle != source_handle,
        "the clone's PV has the source's volumeHandle: it is not a new volume",
        "a new volumeHandle",
        format!("{} (source {source_handle})", clone_csi.volume_handle),
    )?;
    let spec = clone.volume.spec.as_ref();
    let pv_mode = spec
        .and_then(|s| s.volume_mode.clone())
        .unwrap_or_else(|| "Filesystem".into());
    let wanted = if mode.is_block() {
        "Block"
    } else {
        "Filesystem"
    };
    ensure_eq(
        &pv_mode.as_str(),
        &wanted,
        "the clone's PV has another volumeMode",
    )?;
    let capacity = spec
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default();
    let bytes = quantity_bytes(&capacity).unwrap_or(0);
    ensure(
        bytes >= size,
        "the clone's PV is smaller than the claim's request",
        format!("capacity >= {size} bytes"),
        format!("{capacity} ({bytes} bytes)"),
    )
}

async fn source_protected(ctx: &CaseCtx) -> CaseResult {
    let size = ctx.volume_size();
    let source = ctx.provision(&spec("src", Filesystem, size, None)).await?;
    let name = source.name_any();
    let clone = ctx
        .create_claim(&spec("clone", Filesystem, size, Some(&name)))
        .await?;
    if ctx
        .wait_bound_if_immediate(&clone.name_any())
        .await?
        .is_none()
    {
        ctx.digest_claim(&clone.name_any(), Filesystem, size)
            .await?;
    }
    let now = ctx.get_claim(&name).await?.unwrap_or(source);
    let finalizers = now.finalizers().to_vec();
    ensure(
        finalizers.iter().any(|f| f == CLONING_PROTECTION),
        "the clone's source claim lacks the cloning-protection finalizer",
        CLONING_PROTECTION,
        format!("finalizers {finalizers:?}"),
    )
}

async fn independent(ctx: &CaseCtx, mode: VolumeMode) -> CaseResult {
    let source = seeded_source(ctx, mode).await?;
    let (clone, digest) = bound_clone(ctx, &source, mode).await?;
    ensure_eq(
        &digest,
        &source.digest,
        "the clone's data differs from the source's",
    )?;
    let clone = clone.claim.name_any();
    let source_marked = ctx.mark_claim(&source.name, mode, source.size, 1).await?;
    let clone_now = ctx.digest_claim(&clone, mode, source.size).await?;
    ensure_eq(
        &clone_now,
        &source.digest,
        "a write to the source after the clone shows in the clone",
    )?;
    ctx.mark_claim(&clone, mode, source.size, 2).await?;
    let source_now = ctx.digest_claim(&source.name, mode, source.size).await?;
    ensure_eq(
        &source_now,
        &source_marked,
        "a write to the clone shows in the source",
    )
}

async fn source_deleted(ctx: &CaseCtx, mode: VolumeMode) -> CaseResult {
    let source = seeded_source(ctx, mode).await?;
    let (clone, digest) = bound_clone(ctx, &source, mode).await?;
    ensure_eq(
        &digest,
        &source.digest,
        "the clone's data differs from the source's",
    )?;
    let source_claim = ctx.get_claim(&source.name).await?;
    if let Some(claim) = source_claim {
        ctx.delete_claim(&claim).await?;
    }
    let after = ctx
        .digest_claim(&clone.claim.name_any(), mode, source.size)
        .await?;
    ensure_eq(
        &after,
        &source.digest,
        "the clone's data changed when its source was deleted",
    )
}

async fn clone_of_clone(ctx: &CaseCtx, mode: VolumeMode) -> CaseResult {
    let source = seeded_source(ctx, mode).await?;
    let (first, _) = bound_clone(ctx, &source, mode).await?;
    let first = Source {
        name: first.claim.name_any(),
        mode,
        size: source.size,
        digest: source.digest,
    };
    let (_, digest) = bound_clone(ctx, &first, mode).await?;
    ensure_eq(
        &digest,
        &source.digest,
        "a clone of a clone differs from the first source",
    )
}
