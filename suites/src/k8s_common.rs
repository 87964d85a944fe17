//! Steps the k8s suites share: a seeded source claim, a bound clone with what a pod reads from
//! it, and a refusal checked with its positive control in the same namespace.

use harness::case::{CaseResult, ensure};
use harness::context::CaseCtx;
use harness::data::Digest;
use harness::k8s::{Binding, BoundClaim, ClaimSpec, ExpectedEvent, VolumeMode};
use kube::ResourceExt;

/// A source claim with dataset 0 written by a pod, and what a reader pod sees in it.
pub(crate) struct Source {
    pub name: String,
    pub mode: VolumeMode,
    pub size: u64,
    pub digest: Digest,
}

pub(crate) async fn seeded_source(ctx: &CaseCtx, mode: VolumeMode) -> CaseResult<Source> {
    let size = ctx.volume_size();
    let claim = ctx.provision(&ClaimSpec::new("src", mode, size)).await?;
    let name = claim.name_any();
    let digest = ctx.seed_claim(&name, mode, size, 0).await?;
    Ok(Source {
        name,
        mode,
        size,
        digest,
    })
}

/// Creates `spec` and returns it bound, with the digest of its first `read` bytes (block) or
/// its tree. With a WaitForFirstConsumer class the reader pod is what makes it bind.
pub(crate) async fn bound_with_digest(
    ctx: &CaseCtx,
    spec: &ClaimSpec,
    read: u64,
) -> CaseResult<(BoundClaim, Digest)> {
    let name = ctx.create_claim(spec).await?.name_any();
    let bound = ctx.wait_bound_if_immediate(&name).await?;
    let digest = ctx.digest_claim(&name, spec.mode, read).await?;
    let bound = match bound {
        Some(bound) => bound,
        None => ctx.wait_bound(&name).await?,
    };
    Ok((bound, digest))
}

/// The positive control of a refusal: a clone of `source` as the rules allow binds and holds
/// the source's data. Run in the same namespace and setup as the refused request.
pub(crate) async fn control_clone(ctx: &CaseCtx, source: &Source) -> CaseResult<BoundClaim> {
    let spec = ClaimSpec::new("control", source.mode, source.size).cloning(&source.name);
    let (bound, digest) = bound_with_digest(ctx, &spec, source.size).await?;
    ensure(
        digest == source.digest,
        "the positive control (a clone the rules allow) does not hold the source's data",
        source.digest.to_string(),
        digest.to_string(),
    )?;
    Ok(bound)
}

/// A claim the provisioner must refuse: it gets `expected`, stays Pending and no volume is
/// provisioned for it. Returns the claim's name.
pub(crate) async fn refused(
    ctx: &CaseCtx,
    spec: &ClaimSpec,
    expected: ExpectedEvent,
) -> CaseResult<String> {
    let name = ctx.create_claim(spec).await?.name_any();
    if ctx.binding()? == Binding::WaitForFirstConsumer {
        // Nothing is provisioned for such a claim until a pod uses it.
        ctx.request_data_pod(&name, spec.mode).await?;
    }
    ctx.wait_claim_event(&name, expected).await?;
    ctx.ensure_unprovisioned(&name).await?;
    Ok(name)
}

/// The data sources the API server kept on a stored claim: (`dataSource`, `dataSourceRef`).
pub(crate) async fn kept_sources(ctx: &CaseCtx, claim: &str) -> CaseResult<(bool, bool)> {
    let stored = ctx.get_claim(claim).await?;
    let spec = stored.and_then(|c| c.spec);
    Ok((
        spec.as_ref().is_some_and(|s| s.data_source.is_some()),
        spec.as_ref().is_some_and(|s| s.data_source_ref.is_some()),
    ))
}

/// A claim that still names `source` and bound must hold its data: a "clone" that binds
/// empty is the loudest failure there is.
pub(crate) fn ensure_not_dropped(digest: &Digest, source: &Source, claim: &str) -> CaseResult {
    ensure(
        digest == &source.digest,
        &format!(
            "claim {claim} bound, but empty: the data source was dropped (it still names {} and does not hold its data)",
            source.name
        ),
        source.digest.to_string(),
        digest.to_string(),
    )
}
