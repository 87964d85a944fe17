//! k8s_source: the state of a clone's source. A source being deleted is not cloned; a source
//! that a pending clone names is held (external-provisioner's cloning-protection finalizer)
//! until that clone is gone, and then goes.

use std::time::Duration;

use harness::case::{CaseResult, Requirement as R, Row, Suite, Surface, ensure, row};
use harness::context::CaseCtx;
use harness::k8s::{CLONING_PROTECTION, ClaimSpec, ExpectedEvent, VolumeMode};
use kube::ResourceExt;

use crate::k8s_common::{control_clone, refused, seeded_source};
use VolumeMode::Filesystem;

/// How long a held source must stay; the provisioner re-checks on a backoff of seconds.
const HELD_FOR: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
enum Flow {
    BeingDeleted,
    HeldByPendingClone,
    SourcePending,
}

const BEING_DELETED: &str = "k8s: the source must be bound and not being deleted (Kubernetes docs, CSI Volume Cloning; external-provisioner refuses a source with a deletionTimestamp)";
const BOUND: &str = "k8s: a clone's source must be bound (Kubernetes docs, CSI Volume Cloning); external-provisioner retries a clone of a Pending source until the source binds";
const HELD: &str = "k8s: external-provisioner keeps provisioner.storage.kubernetes.io/cloning-protection on a cloned source while a clone of it is pending, so a deleted source outlives the request and goes after it";

const ROWS: &[Row<Flow>] = &[
    row(
        "deleting::clone_of_a_source_being_deleted_is_refused",
        BEING_DELETED,
        &[R::Clone, R::Mount],
        Flow::BeingDeleted,
    ),
    row(
        "protection::source_stays_while_a_clone_of_it_is_pending",
        HELD,
        &[R::Clone, R::Mount],
        Flow::HeldByPendingClone,
    ),
    row(
        "pending::clone_of_a_pending_source_waits_and_binds_after_it",
        BOUND,
        &[R::Clone, R::Mount],
        Flow::SourcePending,
    ),
];

pub fn suite() -> Suite {
    Suite::from_rows("k8s_source", ROWS, interpret).on(Surface::Kubernetes)
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    match row.flow {
        Flow::BeingDeleted => being_deleted(&ctx).await,
        Flow::HeldByPendingClone => held_by_pending_clone(&ctx).await,
        Flow::SourcePending => source_pending(&ctx).await,
    }
}

async fn being_deleted(ctx: &CaseCtx) -> CaseResult {
    let source = seeded_source(ctx, Filesystem).await?;
    // The control first: once the source is being deleted nothing may clone it.
    control_clone(ctx, &source).await?;
    let pod = ctx.start_data_pod(&source.name, Filesystem).await?;
    let claim = ctx
        .get_claim(&source.name)
        .await?
        .ok_or_else(|| harness::case::harness_error("the source claim vanished"))?;
    ctx.request_delete_claim(&claim).await?;
    // The pod holds it (kubernetes.io/pvc-protection): it stays, Terminating.
    let terminating = ctx
        .get_claim(&source.name)
        .await?
        .is_some_and(|c| c.metadata.deletion_timestamp.is_some());
    ensure(
        terminating,
        "the source claim in use by a pod is not Terminating after its delete",
        "deletionTimestamp set, claim still present",
        "no deletionTimestamp, or gone",
    )?;
    let spec = ClaimSpec::new("clone", Filesystem, source.size).cloning(&source.name);
    let deleting = ExpectedEvent {
        reason: "ProvisioningFailed",
        words: &["is currently being deleted"],
    };
    refused(ctx, &spec, deleting).await?;
    ctx.stop_data_pod(&pod).await
}

async fn held_by_pending_clone(ctx: &CaseCtx) -> CaseResult {
    let source = seeded_source(ctx, Filesystem).await?;
    // A clone that reached the driver put the finalizer on (and leaves it); the pending
    // clone then keeps it there.
    control_clone(ctx, &source).await?;
    let smaller = ClaimSpec::new("pending", Filesystem, source.size / 2).cloning(&source.name);
    let size_event = ExpectedEvent {
        reason: "ProvisioningFailed",
        words: &["must be greater than or equal in size"],
    };
    let pending = refused(ctx, &smaller, size_event).await?;
    let claim = ctx
        .get_claim(&source.name)
        .await?
        .ok_or_else(|| harness::case::harness_error("the source claim vanished"))?;
    let finalizers = claim.finalizers().to_vec();
    ensure(
        finalizers.iter().any(|f| f == CLONING_PROTECTION),
        "the source of a pending clone lacks the cloning-protection finalizer",
        CLONING_PROTECTION,
        format!("{finalizers:?}"),
    )?;
    ctx.request_delete_claim(&claim).await?;
    let gone_early = ctx.claim_gone_within(&claim, Some(HELD_FOR)).await?;
    ensure(
        !gone_early,
        "the source went while a clone of it was pending",
        format!("the source present {HELD_FOR:?} after its delete"),
        "gone",
    )?;
    // The pending clone goes; then nothing holds the source.
    if let Some(pending) = ctx.get_claim(&pending).await? {
        ctx.delete_claim(&pending).await?;
    }
    let gone = ctx.claim_gone_within(&claim, None).await?;
    ensure(
        gone,
        "the source stayed after the pending clone that held it was deleted",
        "the source gone within the delete timeout",
        "still present",
    )
}

/// The source is in a WaitForFirstConsumer class of the same driver, so it stays Pending until a
/// pod uses it; the clone (in the run's class) waits with the provisioner's event, then binds
/// once the source has bound.
async fn source_pending(ctx: &CaseCtx) -> CaseResult {
    let size = ctx.volume_size();
    let waiting_class = ctx
        .create_class_binding(None, Some("WaitForFirstConsumer"))
        .await?;
    let source = ctx
        .create_claim(&ClaimSpec::new("src", Filesystem, size).in_class(&waiting_class))
        .await?
        .name_any();
    let spec = ClaimSpec::new("clone", Filesystem, size).cloning(&source);
    let clone = ctx.create_claim(&spec).await?.name_any();
    if ctx.binding()? == harness::k8s::Binding::WaitForFirstConsumer {
        ctx.request_data_pod(&clone, Filesystem).await?;
    }
    let not_bound = ExpectedEvent {
        reason: "ProvisioningFailed",
        words: &["must have a status of Bound"],
    };
    ctx.wait_claim_event(&clone, not_bound).await?;
    ctx.ensure_unprovisioned(&clone).await?;
    // A pod makes the source bind; the clone follows on the provisioner's next retry.
    let digest = ctx.seed_claim(&source, Filesystem, size, 0).await?;
    ctx.wait_bound(&clone).await?;
    let cloned = ctx.digest_claim(&clone, Filesystem, size).await?;
    ctx.trace(format!(
        "k8s: the clone bound after its source; it holds {} (the seeded source reads {digest})",
        if cloned == digest {
            "the seeded data"
        } else {
            "what the source held when it was copied"
        }
    ));
    Ok(())
}
