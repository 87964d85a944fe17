//! Sizes and resizing: equal, larger (grown, or OUT_OF_RANGE if the driver refuses), smaller,
//! no capacity range, limit below the source, expanding a clone, cloning an expanded source.

use harness::case::{
    CaseResult, Requirement as R, Row, Suite, ensure, ensure_eq, expect_code, expect_ok, fail_with,
    row,
};
use harness::context::{Access, CaseCtx, SourceRef};
use harness::data;
use harness::profile::{LargerClone, SmallerCopy};
use harness::steps::{Seeded, volume_io};
use tonic::Code;

use crate::common::{SourceKind, empty_source, seeded_source, snapshot_of, snapshot_size};

#[derive(Clone, Copy, Debug)]
enum Flow {
    Equal,
    /// A copy of a seeded source (a volume, or a snapshot of one) at twice its size.
    Larger(SourceKind, Access),
    Smaller(SourceKind),
    NoCapacityRange,
    LimitBelowSource,
    ExpandClone(Access),
    CloneExpandedSource(Access),
}

const ROWS: &[Row<Flow>] = &[
    row(
        "clone::equal_size_is_honoured",
        "spec: capacity_range MUST be honored, also with a content source",
        &[R::Clone],
        Flow::Equal,
    ),
    row(
        "clone::larger_mount_clone_is_grown_or_out_of_range",
        "spec: CreateVolume — larger than the source: OUT_OF_RANGE, or the larger size with the source data and the filesystem grown by NodePublish",
        &[R::Clone, R::Mount, R::DataPlane],
        Flow::Larger(SourceKind::Volume, Access::Mount),
    ),
    row(
        "clone::larger_block_clone_is_grown_or_out_of_range",
        "spec: CreateVolume — larger than the source: OUT_OF_RANGE, or a device of the larger size holding the source data",
        &[R::Clone, R::Block, R::DataPlane],
        Flow::Larger(SourceKind::Volume, Access::Block),
    ),
    row(
        "restore::larger_mount_restore_is_grown_or_out_of_range",
        "spec: CreateVolume from a snapshot larger than its size_bytes: OUT_OF_RANGE, or the larger size with the snapshot's data and the filesystem grown by NodePublish",
        &[R::Snapshot, R::Mount, R::DataPlane],
        Flow::Larger(SourceKind::Snapshot, Access::Mount),
    ),
    row(
        "restore::larger_block_restore_is_grown_or_out_of_range",
        "spec: CreateVolume from a snapshot larger than its size_bytes: OUT_OF_RANGE, or a device of the larger size holding the snapshot's data",
        &[R::Snapshot, R::Block, R::DataPlane],
        Flow::Larger(SourceKind::Snapshot, Access::Block),
    ),
    row(
        "clone::smaller_request_is_out_of_range_or_the_whole_source",
        "spec: CreateVolume errors / 11 OUT_OF_RANGE (smaller than the source), or CapacityRange.required_bytes — \"at least this big\": a copy of the source's size and data",
        &[R::Clone],
        Flow::Smaller(SourceKind::Volume),
    ),
    row(
        "restore::smaller_request_is_out_of_range_or_the_whole_snapshot",
        "spec: CreateVolume errors / 11 OUT_OF_RANGE (smaller than the source snapshot), or CapacityRange.required_bytes — \"at least this big\": a volume of the snapshot's size and data",
        &[R::Snapshot],
        Flow::Smaller(SourceKind::Snapshot),
    ),
    row(
        "clone::no_capacity_range_is_at_least_source_size",
        "spec: CreateVolume — no capacity_range: size is the plugin's choice, but a copy must hold the whole source",
        &[R::Clone],
        Flow::NoCapacityRange,
    ),
    row(
        "clone::limit_below_source_is_out_of_range",
        "spec: CreateVolume errors / 11 OUT_OF_RANGE (limit_bytes below the source size)",
        &[R::Clone],
        Flow::LimitBelowSource,
    ),
    row(
        "resize::expanded_clone_grows_and_keeps_data",
        "spec: ControllerExpandVolume / NodeExpandVolume on a clone",
        &[R::Clone, R::Expansion, R::Mount, R::DataPlane],
        Flow::ExpandClone(Access::Mount),
    ),
    row(
        "resize::expanded_block_clone_grows_and_keeps_data",
        "spec: ControllerExpandVolume on a block clone",
        &[R::Clone, R::Expansion, R::Block, R::DataPlane],
        Flow::ExpandClone(Access::Block),
    ),
    row(
        "resize::clone_of_expanded_source_has_its_size_and_data",
        "spec: CreateVolume from an expanded source: capacity honoured, data copied",
        &[R::Clone, R::Expansion, R::Mount, R::DataPlane],
        Flow::CloneExpandedSource(Access::Mount),
    ),
];

pub fn suite() -> Suite {
    Suite::from_rows("size", ROWS, interpret)
}

/// `capacity_bytes` is at least `wanted`, or 0 (the spec's "unknown"); negative is judged too.
fn at_least(capacity: i64, wanted: u64, what: &str) -> CaseResult {
    ensure(
        capacity == 0 || u64::try_from(capacity).is_ok_and(|c| c >= wanted),
        what,
        format!("capacity_bytes >= {wanted} (or 0 for unknown)"),
        format!("capacity_bytes = {capacity}"),
    )
}

/// required_bytes half the source's, no limit_bytes: OUT_OF_RANGE, or a copy the size of the
/// whole source holding its data (checked when the data plane can), as the profile allows.
async fn smaller_copy(ctx: &CaseCtx, kind: SourceKind, access: Access) -> CaseResult {
    let with_data = R::DataPlane.unmet(ctx.profile()).is_none();
    let (source, floor, data) = match (with_data, kind) {
        (false, _) => {
            let (source, floor) = empty_source(ctx, kind, access).await?;
            (source, floor, None)
        }
        (true, SourceKind::Volume) => {
            let (source, seeded) = seeded_source(ctx, kind, access).await?;
            (source, seeded.size, Some((seeded.size, seeded.digest)))
        }
        (true, SourceKind::Snapshot) => {
            let seeded = ctx.seeded_volume(access, 0).await?;
            let snapshot = snapshot_of(ctx, &seeded.volume.volume_id).await?;
            let floor = snapshot_size(&snapshot, seeded.size)?;
            let source = SourceRef::Snapshot(snapshot.snapshot_id);
            (source, floor, Some((seeded.size, seeded.digest)))
        }
    };
    let result = ctx.create_from(&source, access, Some((floor / 2, 0))).await;
    let policy = ctx.profile().clone.smaller;
    let copy = match (result, policy) {
        (Err(status), SmallerCopy::Refuse | SmallerCopy::Either)
            if status.code() == Code::OutOfRange =>
        {
            return Ok(());
        }
        (Ok(_), SmallerCopy::Refuse) => {
            return Err(fail_with(
                "the profile says copies smaller than their source are refused (clone.smaller: refuse)",
                "OUT_OF_RANGE",
                "OK",
            ));
        }
        (Ok(copy), _) => copy,
        (Err(status), _) => {
            return Err(fail_with(
                "a copy requested smaller than its source must be refused with OUT_OF_RANGE or made at least the source's size",
                match policy {
                    SmallerCopy::Refuse => "OUT_OF_RANGE (clone.smaller: refuse)",
                    SmallerCopy::RoundUp => "OK with the whole source (clone.smaller: round_up)",
                    SmallerCopy::Either => "OUT_OF_RANGE, or OK with the whole source",
                },
                harness::case::describe_status(&status),
            ));
        }
    };
    at_least(
        copy.capacity_bytes,
        floor,
        "a copy made from a smaller request must still be at least the source's size",
    )?;
    match data {
        Some((size, digest)) => ensure_eq(
            &ctx.digest_of(&copy, access, size).await?,
            &digest,
            "a copy made from a smaller request must hold the source's data",
        ),
        None => Ok(()),
    }
}

/// The attached clone shows `size` bytes and the source data (block: the first source bytes).
async fn check_grown(
    ctx: &CaseCtx,
    volume: &csi_proto::v1::Volume,
    access: Access,
    source_size: u64,
    size: u64,
    digest: data::Digest,
    grow: bool,
) -> CaseResult {
    let attached = ctx.attach(volume, access).await?;
    let target = attached.target.clone();
    let result = async {
        if grow {
            // spec: node_expansion_required — "When true the CO MUST make NodeExpandVolume RPC
            // call on the node", for block volumes as for mounted ones.
            expect_ok(
                ctx.node_expand_volume(
                    &volume.volume_id,
                    &attached.target,
                    &attached.staging,
                    size,
                    access,
                )
                .await,
                "NodeExpandVolume after ControllerExpandVolume answered node_expansion_required",
            )?;
        }
        match access {
            Access::Mount => {
                let total = volume_io("statvfs", move || data::fs_total_bytes(&target)).await?;
                // A filesystem never shows its whole device; more than the source image is the point.
                ensure(
                    total > source_size,
                    "the filesystem must be grown to the larger size by NodePublish",
                    format!("statvfs total > {source_size} (source size)"),
                    format!("{total}"),
                )?;
                ensure_eq(
                    &ctx.digest_attached(&attached, source_size).await?,
                    &digest,
                    "the grown volume must hold the source data",
                )
            }
            Access::Block => {
                let len = volume_io("device size", move || data::device_len(&target)).await?;
                ensure(
                    len >= size,
                    "the published device must have the larger size",
                    format!(">= {size}"),
                    len.to_string(),
                )?;
                // Also reads the rest of the device: it must be zeros (steps::whole_device).
                ensure_eq(
                    &ctx.digest_attached(&attached, source_size).await?,
                    &digest,
                    "the first source-size bytes must equal the source",
                )
            }
        }
    }
    .await;
    ctx.detach(&attached).await?;
    result
}

/// A seeded source of `kind` and the size a larger copy asks for: twice the source's size, or
/// twice the snapshot's size_bytes (when it reports one).
async fn larger_source(
    ctx: &CaseCtx,
    kind: SourceKind,
    access: Access,
) -> CaseResult<(SourceRef, Seeded, u64)> {
    let seeded = ctx.seeded_volume(access, 0).await?;
    if kind == SourceKind::Volume {
        let source = SourceRef::Volume(seeded.volume.volume_id.clone());
        let size = seeded.size;
        return Ok((source, seeded, size * 2));
    }
    let snapshot = expect_ok(
        ctx.create_snapshot(&ctx.unique_name("snap"), &seeded.volume.volume_id)
            .await,
        "setup: CreateSnapshot",
    )?;
    let base = snapshot_size(&snapshot, seeded.size)?;
    Ok((SourceRef::Snapshot(snapshot.snapshot_id), seeded, base * 2))
}

/// A copy larger than its source: OUT_OF_RANGE, or OK grown and holding the source's data,
/// as the profile's `clone.larger` allows (it covers restores too: the same choice).
async fn larger(ctx: &CaseCtx, kind: SourceKind, access: Access) -> CaseResult {
    let (source, seeded, larger) = larger_source(ctx, kind, access).await?;
    let what = match kind {
        SourceKind::Volume => "clone",
        SourceKind::Snapshot => "restore",
    };
    let policy = ctx.profile().clone.larger;
    let copy = match ctx.create_from(&source, access, Some((larger, 0))).await {
        Err(status) => return refused(&status, policy, what),
        Ok(_) if policy == LargerClone::Refuse => {
            return Err(fail_with(
                format!("the profile says larger {what}s are refused"),
                "OUT_OF_RANGE",
                "OK",
            ));
        }
        Ok(copy) => copy,
    };
    at_least(
        copy.capacity_bytes,
        larger,
        "capacity_bytes must honour the larger required_bytes",
    )?;
    let (from, digest) = (seeded.size, seeded.digest);
    check_grown(ctx, &copy, access, from, larger, digest, false).await
}

/// A larger copy refused: fine with OUT_OF_RANGE unless the profile says the driver grows.
fn refused(status: &tonic::Status, policy: LargerClone, what: &str) -> CaseResult {
    if status.code() == Code::OutOfRange && policy != LargerClone::Grow {
        return Ok(());
    }
    let or_refused = if policy == LargerClone::Grow {
        ""
    } else {
        ", or OUT_OF_RANGE"
    };
    Err(fail_with(
        format!("a larger {what} must be created or refused with OUT_OF_RANGE"),
        format!("{policy:?}: OK with a grown volume{or_refused}"),
        harness::case::describe_status(status),
    ))
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    let access = crate::common::default_access(&ctx);
    match row.flow {
        Flow::Equal => {
            let (source, size) = empty_source(&ctx, SourceKind::Volume, access).await?;
            let clone = expect_ok(
                ctx.create_from(&source, access, Some((size, size))).await,
                "CreateVolume of an equal-size clone",
            )?;
            at_least(
                clone.capacity_bytes,
                size,
                "capacity_bytes must honour required_bytes",
            )?;
            ensure(
                clone.capacity_bytes as u64 <= size,
                "capacity_bytes must honour limit_bytes",
                format!("<= {size}"),
                clone.capacity_bytes.to_string(),
            )
        }
        Flow::Larger(kind, access) => larger(&ctx, kind, access).await,
        Flow::Smaller(kind) => smaller_copy(&ctx, kind, access).await,
        Flow::NoCapacityRange => {
            let (source, size) = empty_source(&ctx, SourceKind::Volume, access).await?;
            let clone = expect_ok(
                ctx.create_from(&source, access, None).await,
                "CreateVolume from a volume without capacity_range",
            )?;
            at_least(
                clone.capacity_bytes,
                size,
                "a clone without capacity_range must be at least the source size",
            )
        }
        Flow::LimitBelowSource => {
            let (source, size) = empty_source(&ctx, SourceKind::Volume, access).await?;
            expect_code(
                ctx.create_from(&source, access, Some((0, size / 2))).await,
                Code::OutOfRange,
                "CreateVolume with limit_bytes below the source",
            )
        }
        Flow::ExpandClone(access) => {
            let (source, seeded) = seeded_source(&ctx, SourceKind::Volume, access).await?;
            let clone = expect_ok(
                ctx.create_from(&source, access, Some((seeded.size, 0)))
                    .await,
                "CreateVolume from a volume",
            )?;
            let larger = seeded.size * 2;
            let expanded = expect_ok(
                ctx.expand_volume(&clone.volume_id, larger, access).await,
                "ControllerExpandVolume of the clone",
            )?;
            at_least(
                expanded.capacity_bytes,
                larger,
                "ControllerExpandVolume must report the new size",
            )?;
            check_grown(
                &ctx,
                &clone,
                access,
                seeded.size,
                larger,
                seeded.digest,
                expanded.node_expansion_required,
            )
            .await
        }
        Flow::CloneExpandedSource(access) => {
            let seeded = ctx.seeded_volume(access, 0).await?;
            let larger = seeded.size * 2;
            let expanded = expect_ok(
                ctx.expand_volume(&seeded.volume.volume_id, larger, access)
                    .await,
                "ControllerExpandVolume of the source",
            )?;
            at_least(
                expanded.capacity_bytes,
                larger,
                "ControllerExpandVolume must report the new size",
            )?;
            let source = harness::context::SourceRef::Volume(seeded.volume.volume_id.clone());
            let clone = expect_ok(
                ctx.create_from(&source, access, Some((larger, 0))).await,
                "CreateVolume from the expanded source",
            )?;
            at_least(
                clone.capacity_bytes,
                larger,
                "the clone must have the expanded size",
            )?;
            check_grown(
                &ctx,
                &clone,
                access,
                seeded.size,
                larger,
                seeded.digest,
                // A new volume: the plugin grows it by NodePublish, no node expansion is due.
                false,
            )
            .await
        }
    }
}
