//! Topology: a copy requested for the node its source is accessible from must be accessible
//! from that node too, and hold the source's data there. (Every CreateVolume of every case
//! already requires the node's topology and is checked for it, see `harness::topology`; these
//! rows name the rule for copies and prove the data reaches the node.)

use harness::case::{
    CaseResult, Requirement as R, Row, Suite, ensure_eq, expect_ok, fail_with, row,
};
use harness::context::CaseCtx;
use harness::topology::within;

use crate::common::{SourceKind, default_access, seeded_source};

const ROWS: &[Row<SourceKind>] = &[
    row(
        "clone::accessible_where_its_source_is",
        "spec: TopologyRequirement — if requisite is specified, the provisioned volume MUST be accessible from at least one of the requisite topologies",
        &[R::Topology, R::Clone, R::DataPlane],
        SourceKind::Volume,
    ),
    row(
        "restore::accessible_where_its_snapshot_was_taken",
        "spec: TopologyRequirement — if requisite is specified, the provisioned volume MUST be accessible from at least one of the requisite topologies",
        &[R::Topology, R::Snapshot, R::DataPlane],
        SourceKind::Snapshot,
    ),
];

pub fn suite() -> Suite {
    Suite::from_rows("topology", ROWS, interpret)
}

async fn interpret(ctx: CaseCtx, row: Row<SourceKind>) -> CaseResult {
    let access = default_access(&ctx);
    let (source, seeded) = seeded_source(&ctx, row.flow, access).await?;
    let copy = expect_ok(
        ctx.create_from(&source, access, Some((seeded.size, 0)))
            .await,
        "CreateVolume of a copy, requiring the node's topology",
    )?;
    let node = expect_ok(ctx.node_topology().await, "NodeGetInfo")?.unwrap_or_default();
    let reported: Vec<_> = copy
        .accessible_topology
        .iter()
        .map(|t| {
            t.segments
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .collect();
    if !reported.is_empty() && !reported.iter().any(|t| within(t, &node)) {
        return Err(fail_with(
            "a copy requested for the source's node must be accessible from it",
            format!("a segment the node {node:?} lies in, or none"),
            format!("accessible_topology {reported:?}"),
        ));
    }
    let attached = ctx.attach(&copy, access).await?;
    let digest = ctx.digest_attached(&attached, seeded.size).await;
    ctx.detach(&attached).await?;
    ensure_eq(
        &digest?,
        &seeded.digest,
        "the copy must hold its source's data on the source's node",
    )
}
