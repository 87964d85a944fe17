//! A clone on the node: published read-only it refuses writes, and it can be published while
//! its source stays published, each holding its own data.

use harness::case::{
    CaseResult, Requirement as R, Row, Suite, ensure_eq, expect_ok, fail_with, row,
};
use harness::context::{Access, CaseCtx};
use harness::steps::{Attached, blocking};

use crate::common::{SourceKind, seeded_source};

#[derive(Clone, Copy, Debug)]
enum Flow {
    ReadOnly,
    BesideSource,
}

const ROWS: &[Row<Flow>] = &[
    row(
        "mount::readonly_publish_of_a_clone_refuses_writes",
        "spec: NodePublishVolumeRequest.readonly — the volume MUST be published read-only",
        &[R::Clone, R::Mount, R::DataPlane],
        Flow::ReadOnly,
    ),
    row(
        "mount::clone_published_beside_its_source_holds_the_data",
        "spec: CreateVolume — a clone is a new, independent volume; k8s: a clone PVC is used while its source is",
        &[R::Clone, R::Mount, R::DataPlane],
        Flow::BesideSource,
    ),
];

pub fn suite() -> Suite {
    Suite::from_rows("publish", ROWS, interpret)
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    let access = Access::Mount;
    let (source, seeded) = seeded_source(&ctx, SourceKind::Volume, access).await?;
    let clone = expect_ok(
        ctx.create_from(&source, access, Some((seeded.size, 0)))
            .await,
        "CreateVolume from the seeded source",
    )?;
    match row.flow {
        Flow::ReadOnly => {
            let attached = ctx.attach_as(&clone, access, true).await?;
            let result = refuses_writes(&ctx, &attached).await;
            ctx.detach(&attached).await?;
            result
        }
        Flow::BesideSource => {
            let source_attached = ctx.attach(&seeded.volume, access).await?;
            let result = async {
                let clone_attached = ctx.attach(&clone, access).await?;
                let clone_digest = ctx.digest_attached(&clone_attached, seeded.size).await;
                ctx.detach(&clone_attached).await?;
                ensure_eq(
                    &clone_digest?,
                    &seeded.digest,
                    "the clone published beside its source must hold the source's data",
                )?;
                ensure_eq(
                    &ctx.digest_attached(&source_attached, seeded.size).await?,
                    &seeded.digest,
                    "the source must be unchanged with its clone published beside it",
                )
            }
            .await;
            ctx.detach(&source_attached).await?;
            result
        }
    }
}

/// Creating a file in the published directory must fail with EROFS (or EACCES).
async fn refuses_writes(ctx: &CaseCtx, attached: &Attached) -> CaseResult {
    let probe = attached.target.join("csiclone-readonly-probe");
    let written = blocking("write probe", move || {
        Ok(std::fs::write(&probe, b"must not land"))
    })
    .await?;
    ctx.trace(format!(
        "data: write into the readonly publish -> {written:?}"
    ));
    let refused = [rustix::io::Errno::ROFS, rustix::io::Errno::ACCESS].map(|e| e.raw_os_error());
    match written {
        Err(e) if e.raw_os_error().is_some_and(|code| refused.contains(&code)) => Ok(()),
        Err(e) => Err(fail_with(
            "a write into a readonly publish must be refused by the filesystem",
            "EROFS",
            e.to_string(),
        )),
        Ok(()) => Err(fail_with(
            "a volume published with readonly = true must refuse writes",
            "EROFS",
            "the write succeeded",
        )),
    }
}
