//! Concurrency: many clones of one source at once, all complete; identical CreateVolume calls
//! at once make at most one volume.

use futures::future::join_all;
use harness::case::{CaseResult, Requirement as R, Row, Suite, ensure, ensure_eq, fail_with, row};
use harness::context::CaseCtx;
use tonic::Code;

use crate::common::{SourceKind, default_access, empty_source, seeded_source};

#[derive(Clone, Copy, Debug)]
enum Flow {
    ParallelClones,
    IdenticalCreates,
}

const ROWS: &[Row<Flow>] = &[
    row(
        "clones::parallel_clones_of_one_source_all_hold_its_data",
        "spec: CLONE_VOLUME; concurrent calls on different names must all be served (ABORTED only for the same volume)",
        &[R::Clone, R::DataPlane],
        Flow::ParallelClones,
    ),
    row(
        "clones::identical_concurrent_creates_make_one_volume",
        "spec: CreateVolume idempotency — the same name provisions at most one volume; ABORTED allowed while pending",
        &[R::Clone],
        Flow::IdenticalCreates,
    ),
];

pub fn suite() -> Suite {
    Suite::from_rows("concurrency", ROWS, interpret)
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    let access = default_access(&ctx);
    match row.flow {
        Flow::ParallelClones => {
            let (source, seeded) = seeded_source(&ctx, SourceKind::Volume, access).await?;
            let count = ctx.settings().parallel_clones.max(1);
            let results = join_all(
                (0..count).map(|_| ctx.create_from(&source, access, Some((seeded.size, 0)))),
            )
            .await;
            let mut clones = Vec::new();
            for (n, result) in results.into_iter().enumerate() {
                match result {
                    Ok(volume) => clones.push(volume),
                    Err(status) => {
                        return Err(fail_with(
                            format!("clone {n} of {count} concurrent clones failed"),
                            "OK",
                            harness::case::describe_status(&status),
                        ));
                    }
                }
            }
            let mut ids: Vec<&str> = clones.iter().map(|v| v.volume_id.as_str()).collect();
            ids.sort();
            ids.dedup();
            ensure(
                ids.len() == count,
                "concurrent clones with different names must be different volumes",
                count.to_string(),
                ids.len().to_string(),
            )?;
            // Digests two at a time: every clone is checked without loading the node too much.
            for pair in clones.chunks(2) {
                let digests =
                    join_all(pair.iter().map(|v| ctx.digest_of(v, access, seeded.size))).await;
                for (volume, digest) in pair.iter().zip(digests) {
                    ensure_eq(
                        &digest?,
                        &seeded.digest,
                        &format!(
                            "concurrent clone {} must hold the source data",
                            volume.volume_id
                        ),
                    )?;
                }
            }
            Ok(())
        }
        Flow::IdenticalCreates => {
            let (source, size) = empty_source(&ctx, SourceKind::Volume, access).await?;
            let name = ctx.unique_name("same");
            let request = ctx.volume_request(&name, access, Some((size, 0)), Some(&source));
            let results = join_all((0..8).map(|_| ctx.create_volume(request.clone()))).await;
            let mut ids = Vec::new();
            for result in results {
                match result {
                    Ok(volume) => ids.push(volume.volume_id),
                    Err(status) if status.code() == Code::Aborted => {}
                    Err(status) => {
                        return Err(fail_with(
                            "identical concurrent CreateVolume calls must succeed or be ABORTED",
                            "OK or ABORTED",
                            harness::case::describe_status(&status),
                        ));
                    }
                }
            }
            ids.sort();
            ids.dedup();
            ensure(
                ids.len() <= 1,
                "identical concurrent CreateVolume calls must make at most one volume",
                "one volume id",
                format!("{ids:?}"),
            )?;
            if ids.is_empty() {
                // All were ABORTED: a later retry must then succeed.
                let retry = ctx
                    .create_volume(ctx.volume_request(
                        &name,
                        access,
                        Some((size, 0)),
                        Some(&source),
                    ))
                    .await;
                harness::case::expect_ok(retry, "CreateVolume retried after ABORTED").map(drop)?;
            }
            Ok(())
        }
    }
}
