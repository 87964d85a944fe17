//! Access type (volumeMode at CSI level): a copy keeps its source's access type; a block clone
//! is published as a block device holding the same bytes.

use std::os::unix::fs::FileTypeExt;

use harness::case::{
    CaseResult, Requirement as R, Row, Suite, ensure, ensure_eq, expect_code, expect_ok, row,
};
use harness::context::{Access, CaseCtx};
use tonic::Code;

use crate::common::{SourceKind, empty_source, seeded_source};

#[derive(Clone, Copy, Debug)]
enum Flow {
    /// A copy from a `from` source requested as `to`: must be INVALID_ARGUMENT.
    Mismatch {
        kind: SourceKind,
        from: Access,
        to: Access,
    },
    /// A block clone is published as a block device with the source's bytes.
    BlockCloneIsDevice,
}

const MISMATCH: &str = "spec: CreateVolume errors / 3 INVALID_ARGUMENT (source incompatible); k8s: external-provisioner requires the same volumeMode";

const ROWS: &[Row<Flow>] = &[
    row(
        "clone::block_source_to_mount_clone_is_invalid_argument",
        MISMATCH,
        &[R::Clone, R::Block, R::Mount],
        Flow::Mismatch {
            kind: SourceKind::Volume,
            from: Access::Block,
            to: Access::Mount,
        },
    ),
    row(
        "clone::mount_source_to_block_clone_is_invalid_argument",
        MISMATCH,
        &[R::Clone, R::Block, R::Mount],
        Flow::Mismatch {
            kind: SourceKind::Volume,
            from: Access::Mount,
            to: Access::Block,
        },
    ),
    row(
        "restore::block_snapshot_to_mount_volume_is_invalid_argument",
        MISMATCH,
        &[R::Snapshot, R::Block, R::Mount],
        Flow::Mismatch {
            kind: SourceKind::Snapshot,
            from: Access::Block,
            to: Access::Mount,
        },
    ),
    row(
        "restore::mount_snapshot_to_block_volume_is_invalid_argument",
        MISMATCH,
        &[R::Snapshot, R::Block, R::Mount],
        Flow::Mismatch {
            kind: SourceKind::Snapshot,
            from: Access::Mount,
            to: Access::Block,
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
        Flow::Mismatch { kind, from, to } => {
            let (source, size) = empty_source(&ctx, kind, from).await?;
            expect_code(
                ctx.create_from(&source, to, Some((size, 0))).await,
                Code::InvalidArgument,
                &format!("CreateVolume of a {to} volume from a {from} source"),
            )
        }
        Flow::BlockCloneIsDevice => {
            let (source, seeded) = seeded_source(&ctx, SourceKind::Volume, Access::Block).await?;
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
    }
}
