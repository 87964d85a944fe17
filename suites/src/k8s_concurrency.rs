//! k8s_concurrency: many clones of one source at once (`--parallel-clones N`), as a user's
//! StatefulSet or CI fan-out makes them. Each binds to a volume of its own and holds the
//! source's data, read by a pod of its own, all pods at once.

use futures::future::try_join_all;
use harness::case::{CaseResult, Requirement as R, Row, Suite, Surface, ensure, row};
use harness::context::CaseCtx;
use harness::k8s::{ClaimSpec, VolumeMode};
use kube::ResourceExt;

use crate::k8s_common::{ensure_not_dropped, seeded_source};
use VolumeMode::Filesystem;

#[derive(Clone, Copy, Debug)]
enum Flow {
    ParallelClones,
}

const PARALLEL: &str = "k8s: every clone is an exact, independent duplicate of its source, however many are made at once (Kubernetes docs, CSI Volume Cloning)";

const ROWS: &[Row<Flow>] = &[row(
    "clones::parallel_clones_of_one_source_each_hold_its_data",
    PARALLEL,
    &[R::Clone, R::Mount],
    Flow::ParallelClones,
)];

pub fn suite() -> Suite {
    Suite::from_rows("k8s_concurrency", ROWS, interpret).on(Surface::Kubernetes)
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    let Flow::ParallelClones = row.flow;
    let source = seeded_source(&ctx, Filesystem).await?;
    let count = ctx.settings().parallel_clones.max(1);
    let spec = ClaimSpec::new("clone", Filesystem, source.size).cloning(&source.name);
    let claims = try_join_all((0..count).map(|_| ctx.create_claim(&spec))).await?;
    let names: Vec<String> = claims.iter().map(|c| c.name_any()).collect();
    ctx.trace(format!("k8s: {count} clones requested at once"));
    // The readers start together too; with WaitForFirstConsumer they are what binds the claims.
    let digests = try_join_all(
        names
            .iter()
            .map(|name| ctx.digest_claim(name, Filesystem, source.size)),
    )
    .await?;
    let bound = try_join_all(names.iter().map(|name| ctx.wait_bound(name))).await?;
    for (name, digest) in names.iter().zip(&digests) {
        ensure_not_dropped(digest, &source, name)?;
    }
    let mut handles: Vec<String> = bound
        .iter()
        .filter_map(|b| {
            b.volume
                .spec
                .as_ref()?
                .csi
                .as_ref()
                .map(|c| c.volume_handle.clone())
        })
        .collect();
    handles.sort();
    handles.dedup();
    ensure(
        handles.len() == count,
        "parallel clones share volumes",
        format!("{count} distinct volumeHandles"),
        format!("{} distinct: {handles:?}", handles.len()),
    )
}
