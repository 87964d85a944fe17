//! k8s_size: a clone asks for at least its source's size. external-provisioner refuses a
//! smaller request before CreateVolume; a larger one gets a volume that really is larger (the
//! filesystem a pod sees, or the device), and a clone expanded later grows and keeps its data.

use harness::case::{CaseResult, Requirement as R, Row, Suite, Surface, ensure, ensure_eq, row};
use harness::context::CaseCtx;
use harness::k8s::{ClaimSpec, ExpectedEvent, VolumeMode, quantity_bytes};
use harness::profile::LargerClone;
use kube::ResourceExt;

use crate::k8s_common::{Source, control_clone, refused, seeded_source};
use VolumeMode::{Block, Filesystem};

#[derive(Clone, Copy, Debug)]
enum Flow {
    /// Half the source's request: refused with the size event; an equal request binds beside it.
    Smaller,
    /// Twice the source's request: a volume and a filesystem (or device) that large.
    Larger(VolumeMode),
    /// A clone of equal size, then expanded to twice that: it grows and keeps its data.
    ExpandedAfter,
}

const AT_LEAST: &str = "k8s: a clone must request the same capacity as its source or more (Kubernetes docs, CSI Volume Cloning)";
const LARGER: &str = "k8s: a claim gets at least the storage it requests (PersistentVolumeClaim semantics); a larger clone is a larger volume with the source's data";
const EXPANDED: &str = "k8s: a clone is an ordinary volume: it can be expanded (allowVolumeExpansion) and keeps its data";

/// external-provisioner's words for a clone smaller than its source (measured: docs/k8s-rules.md).
const SIZE_EVENT: ExpectedEvent = ExpectedEvent {
    reason: "ProvisioningFailed",
    words: &["must be greater than or equal in size to the specified PVC data source"],
};

const ROWS: &[Row<Flow>] = &[
    row(
        "smaller::clone_smaller_than_the_source_is_refused",
        AT_LEAST,
        &[R::Clone, R::Mount],
        Flow::Smaller,
    ),
    row(
        "larger::filesystem_clone_has_a_larger_filesystem",
        LARGER,
        &[R::Clone, R::Mount],
        Flow::Larger(Filesystem),
    ),
    row(
        "larger::block_clone_has_a_larger_device",
        LARGER,
        &[R::Clone, R::Block],
        Flow::Larger(Block),
    ),
    row(
        "expanded::clone_expanded_later_grows_and_keeps_its_data",
        EXPANDED,
        &[R::Clone, R::Mount, R::Expansion],
        Flow::ExpandedAfter,
    ),
];

pub fn suite() -> Suite {
    Suite::from_rows("k8s_size", ROWS, interpret).on(Surface::Kubernetes)
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    match row.flow {
        Flow::Smaller => smaller(&ctx).await,
        Flow::Larger(mode) => larger(&ctx, mode).await,
        Flow::ExpandedAfter => expanded_after(&ctx).await,
    }
}

async fn smaller(ctx: &CaseCtx) -> CaseResult {
    let source = seeded_source(ctx, Filesystem).await?;
    let spec = ClaimSpec::new("clone", Filesystem, source.size / 2).cloning(&source.name);
    refused(ctx, &spec, SIZE_EVENT).await?;
    control_clone(ctx, &source).await.map(drop)
}

async fn larger(ctx: &CaseCtx, mode: VolumeMode) -> CaseResult {
    let source = seeded_source(ctx, mode).await?;
    let (_, source_bytes) = ctx.measure_claim(&source.name, mode, source.size).await?;
    let request = source.size * 2;
    let spec = ClaimSpec::new("clone", mode, request).cloning(&source.name);
    let name = ctx.create_claim(&spec).await?.name_any();
    if ctx.profile().clone.larger == LargerClone::Refuse {
        // The profile pins the other answer the spec allows: CreateVolume OUT_OF_RANGE.
        let out_of_range = ExpectedEvent {
            reason: "ProvisioningFailed",
            words: &["OutOfRange"],
        };
        ctx.wait_claim_event(&name, out_of_range).await?;
        return ctx.ensure_unprovisioned(&name).await;
    }
    let (digest, bytes) = ctx.measure_claim(&name, mode, source.size).await?;
    let bound = ctx.wait_bound(&name).await?;
    check_capacity(&bound.volume, request)?;
    ensure_eq(
        &digest,
        &source.digest,
        "the larger clone's data (its first source-size bytes for block) differs from the source's",
    )?;
    check_grown(&source, source_bytes, bytes, request)
}

/// The real size is what was asked: a device of at least `request` bytes; a filesystem of at
/// least 80% of it (ext4 keeps about 15% of a small volume for its journal and tables), or
/// one that grew by 90% of what was added (filesystems whose overhead is larger still). One
/// more block is not a larger clone. A filesystem shared with other volumes (a directory
/// backend) is as large as it is: the claim gets at least what it asked for.
fn check_grown(source: &Source, source_bytes: u64, bytes: u64, request: u64) -> CaseResult {
    let (what, enough, wanted) = if source.mode.is_block() {
        ("device", bytes >= request, format!(">= {request} bytes"))
    } else {
        let absolute = request / 10 * 8;
        let relative = source_bytes + (request - source.size) / 10 * 9;
        (
            "filesystem",
            bytes >= absolute || bytes >= relative,
            format!(
                ">= {absolute} bytes (80% of the request) or >= {relative} bytes (source {source_bytes} plus 90% of the growth)"
            ),
        )
    };
    ensure(
        enough,
        &format!("the clone's {what} is not as large as its request ({request} bytes)"),
        wanted,
        format!("{bytes} bytes"),
    )
}

fn check_capacity(
    volume: &k8s_openapi::api::core::v1::PersistentVolume,
    request: u64,
) -> CaseResult {
    let capacity = volume
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default();
    let bytes = quantity_bytes(&capacity).unwrap_or(0);
    ensure(
        bytes >= request,
        "the clone's PV is smaller than its claim's request",
        format!("capacity >= {request} bytes"),
        format!("{capacity:?} ({bytes} bytes)"),
    )
}

async fn expanded_after(ctx: &CaseCtx) -> CaseResult {
    let source = seeded_source(ctx, Filesystem).await?;
    let clone = control_clone(ctx, &source).await?;
    let name = clone.claim.name_any();
    let (_, before) = ctx.measure_claim(&name, Filesystem, source.size).await?;
    let request = source.size * 2;
    ctx.expand_claim(&name, request).await?;
    // The kubelet grows the filesystem when a pod next mounts the volume.
    let (digest, after) = ctx.measure_claim(&name, Filesystem, source.size).await?;
    ensure_eq(
        &digest,
        &source.digest,
        "the expanded clone's data differs from the source's",
    )?;
    check_grown(&source, before, after, request)?;
    let capacity = ctx.claim_capacity(&name).await?;
    ensure(
        capacity.is_some_and(|c| c >= request),
        "the expanded clone's claim does not report the new size",
        format!("status.capacity >= {request}"),
        format!("{capacity:?}"),
    )
}
