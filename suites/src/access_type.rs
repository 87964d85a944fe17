//! Access type (volumeMode at CSI level). A copy to the other access type is either refused
//! with INVALID_ARGUMENT or, where the plugin can convert, carries the source's content: a
//! block copy of a filesystem volume holds that filesystem. A block source of raw bytes has
//! no filesystem any filesystem volume could hold, so its copy must be refused. A block clone
//! is published as a block device holding the same bytes.

use std::os::unix::fs::FileTypeExt;

use harness::case::{
    CaseResult, Requirement as R, Row, Suite, ensure, ensure_eq, expect_code, expect_ok, fail_with,
    row,
};
use harness::context::{Access, CaseCtx, SourceRef};
use harness::profile::DataPlane;
use harness::steps::reported_size;
use tonic::Code;

use crate::common::{SourceKind, empty_source, seeded_source};

#[derive(Clone, Copy, Debug)]
enum Flow {
    /// A filesystem copy of a raw block source: INVALID_ARGUMENT.
    RawBlockToMount { kind: SourceKind },
    /// A block copy of a filesystem source: INVALID_ARGUMENT, or OK carrying the filesystem.
    MountToBlock { kind: SourceKind },
    /// A block clone is published as a block device with the source's bytes.
    BlockCloneIsDevice,
}

const RAW_TO_MOUNT: &str = "spec: CreateVolume errors / 3 INVALID_ARGUMENT — MUST be used when the plugin cannot create a volume from the requested source (a raw block source holds no filesystem a filesystem volume could carry)";
const MOUNT_TO_BLOCK: &str = "spec: CreateVolume errors / 3 INVALID_ARGUMENT when the plugin cannot create a volume from the source; an OK copy is pre-populated with the source's content (the filesystem)";

const ROWS: &[Row<Flow>] = &[
    row(
        "clone::block_source_to_mount_clone_is_invalid_argument",
        RAW_TO_MOUNT,
        &[R::Clone, R::Block, R::Mount],
        Flow::RawBlockToMount {
            kind: SourceKind::Volume,
        },
    ),
    row(
        "clone::mount_source_to_block_clone_is_refused_or_carries_the_filesystem",
        MOUNT_TO_BLOCK,
        &[R::Clone, R::Block, R::Mount],
        Flow::MountToBlock {
            kind: SourceKind::Volume,
        },
    ),
    row(
        "restore::block_snapshot_to_mount_volume_is_invalid_argument",
        RAW_TO_MOUNT,
        &[R::Snapshot, R::Block, R::Mount],
        Flow::RawBlockToMount {
            kind: SourceKind::Snapshot,
        },
    ),
    row(
        "restore::mount_snapshot_to_block_volume_is_refused_or_carries_the_filesystem",
        MOUNT_TO_BLOCK,
        &[R::Snapshot, R::Block, R::Mount],
        Flow::MountToBlock {
            kind: SourceKind::Snapshot,
        },
    ),
    row(
        "block::clone_is_published_as_block_device_with_identical_bytes",
        "spec: NodePublishVolume — for block access the SP places the block device at target_path",
        &[R::Clone, R::Block, R::DataPlane],
        Flow::BlockCloneIsDevice,
    ),
];

pub fn suite() -> Suite {
    Suite::from_rows("access_type", ROWS, interpret)
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    match row.flow {
        Flow::RawBlockToMount { kind } => {
            let (source, size) = empty_source(&ctx, kind, Access::Block).await?;
            expect_code(
                ctx.create_from(&source, Access::Mount, Some((size, 0)))
                    .await,
                Code::InvalidArgument,
                "CreateVolume of a mount volume from a block source holding no filesystem",
            )
        }
        Flow::MountToBlock { kind } => mount_to_block(&ctx, kind).await,
        Flow::BlockCloneIsDevice => block_clone_is_device(&ctx).await,
    }
}

async fn mount_to_block(ctx: &CaseCtx, kind: SourceKind) -> CaseResult {
    let local = ctx.profile().data_plane == DataPlane::Local;
    let (source, size, seeded) = match local {
        true => {
            let (source, seeded) = seeded_source(ctx, kind, Access::Mount).await?;
            (source, seeded.size, Some(seeded))
        }
        false => {
            let (source, size) = empty_source(ctx, kind, Access::Mount).await?;
            (source, size, None)
        }
    };
    let copy = match ctx
        .create_from(&source, Access::Block, Some((size, 0)))
        .await
    {
        Err(status) if status.code() == Code::InvalidArgument => return Ok(()),
        other => expect_ok(
            other,
            "CreateVolume of a block volume from a filesystem source (INVALID_ARGUMENT or OK)",
        )?,
    };
    let Some(seeded) = seeded else {
        ctx.advise("the driver converts filesystem sources to block copies; their content is checked only with data_plane: local");
        return Ok(());
    };
    let attached = ctx.attach(&copy, Access::Block).await?;
    let found = ctx.filesystem_on(&attached).await;
    ctx.detach(&attached).await?;
    if found?.is_none() {
        return Err(fail_with(
            "a block copy of a filesystem volume must carry the source's filesystem",
            "a filesystem signature on the device (blkid -p)",
            "none: the source's content is not on the device",
        ));
    }
    if !ctx.profile().capabilities.clone {
        return Ok(());
    }
    // The way back, a filesystem clone of the block copy, shows the tree itself.
    let copy_size = reported_size(copy.capacity_bytes, size)?;
    let back_source = SourceRef::Volume(copy.volume_id.clone());
    let back = match ctx
        .create_from(&back_source, Access::Mount, Some((copy_size, 0)))
        .await
    {
        Err(status) if status.code() == Code::InvalidArgument => {
            ctx.trace("the way back to a filesystem was refused: the signature is the check");
            return Ok(());
        }
        other => expect_ok(
            other,
            "CreateVolume of a mount volume from the block copy holding a filesystem",
        )?,
    };
    let attached = ctx.attach(&back, Access::Mount).await?;
    let digest = ctx.digest_attached(&attached, seeded.size).await;
    ctx.detach(&attached).await?;
    ensure_eq(
        &digest?,
        &seeded.digest,
        "the filesystem carried through a block copy must hold the source's tree",
    )
}

async fn block_clone_is_device(ctx: &CaseCtx) -> CaseResult {
    let (source, seeded) = seeded_source(ctx, SourceKind::Volume, Access::Block).await?;
    let clone = expect_ok(
        ctx.create_from(&source, Access::Block, Some((seeded.size, 0)))
            .await,
        "CreateVolume of a block clone",
    )?;
    let attached = ctx.attach(&clone, Access::Block).await?;
    let file_type = std::fs::metadata(&attached.target).map(|m| m.file_type());
    let is_device = file_type.as_ref().is_ok_and(|t| t.is_block_device());
    let digest = ctx.digest_attached(&attached, seeded.size).await;
    ctx.detach(&attached).await?;
    ensure(
        is_device,
        "the published block clone must be a block device",
        "block device",
        format!("{file_type:?}"),
    )?;
    ensure_eq(
        &digest?,
        &seeded.digest,
        "the block clone must hold the source's bytes",
    )
}
