//! k8s_volume_mode: a clone has its source's volumeMode. external-provisioner refuses a
//! Block clone of a Filesystem source and the reverse before calling CreateVolume; a claim
//! without volumeMode is a Filesystem claim, on either side of the clone.

use harness::case::{CaseResult, Requirement as R, Row, Suite, Surface, ensure_eq, row};
use harness::context::CaseCtx;
use harness::k8s::{ClaimSpec, ExpectedEvent, VolumeMode};

use crate::k8s_common::{bound_with_digest, control_clone, refused, seeded_source};
use VolumeMode::{Block, Filesystem, Unset};

#[derive(Clone, Copy, Debug)]
enum Flow {
    /// A clone in `clone` mode of a `source` claim is refused with the volume-mode event; a
    /// clone in the source's mode binds beside it.
    Refused {
        source: VolumeMode,
        clone: VolumeMode,
    },
    /// A clone in `clone` mode of a `source` claim binds with the source's data.
    Clones {
        source: VolumeMode,
        clone: VolumeMode,
    },
}

const SAME_MODE: &str = "k8s: a clone is possible only between volumes of the same volumeMode; a Block clone needs a Block source (Kubernetes docs, CSI Volume Cloning)";
const DEFAULT_MODE: &str = "k8s: a claim without volumeMode is a Filesystem claim (API reference, PersistentVolumeClaimSpec.volumeMode)";

/// external-provisioner's words for a mode mismatch (measured: docs/k8s-rules.md).
const MODE_EVENT: ExpectedEvent = ExpectedEvent {
    reason: "ProvisioningFailed",
    words: &["must have the same volume mode for cloning"],
};

const ROWS: &[Row<Flow>] = &[
    row(
        "refused::block_clone_of_a_filesystem_source",
        SAME_MODE,
        &[R::Clone, R::Mount, R::Block],
        Flow::Refused {
            source: Filesystem,
            clone: Block,
        },
    ),
    row(
        "refused::filesystem_clone_of_a_block_source",
        SAME_MODE,
        &[R::Clone, R::Mount, R::Block],
        Flow::Refused {
            source: Block,
            clone: Filesystem,
        },
    ),
    row(
        "default_mode::clone_without_volume_mode_of_a_filesystem_source_clones",
        DEFAULT_MODE,
        &[R::Clone, R::Mount],
        Flow::Clones {
            source: Filesystem,
            clone: Unset,
        },
    ),
    row(
        "default_mode::filesystem_clone_of_a_source_without_volume_mode_clones",
        DEFAULT_MODE,
        &[R::Clone, R::Mount],
        Flow::Clones {
            source: Unset,
            clone: Filesystem,
        },
    ),
];

pub fn suite() -> Suite {
    Suite::from_rows("k8s_volume_mode", ROWS, interpret).on(Surface::Kubernetes)
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    match row.flow {
        Flow::Refused { source, clone } => mode_refused(&ctx, source, clone).await,
        Flow::Clones { source, clone } => mode_clones(&ctx, source, clone).await,
    }
}

async fn mode_refused(ctx: &CaseCtx, source: VolumeMode, clone: VolumeMode) -> CaseResult {
    let source = seeded_source(ctx, source).await?;
    let spec = ClaimSpec::new("clone", clone, source.size).cloning(&source.name);
    refused(ctx, &spec, MODE_EVENT).await?;
    control_clone(ctx, &source).await.map(drop)
}

async fn mode_clones(ctx: &CaseCtx, source: VolumeMode, clone: VolumeMode) -> CaseResult {
    let source = seeded_source(ctx, source).await?;
    let spec = ClaimSpec::new("clone", clone, source.size).cloning(&source.name);
    let (_, digest) = bound_with_digest(ctx, &spec, source.size).await?;
    ensure_eq(
        &digest,
        &source.digest,
        "the clone's data (read by a pod) differs from the source's",
    )
}
