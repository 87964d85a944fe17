//! k8s_namespace: a clone's source is a claim of the clone's own namespace. A name that exists
//! only in another namespace is not found; `dataSourceRef.namespace` is dropped by the API
//! server unless the CrossNamespaceVolumeDataSource gate is on (advisory: an empty volume
//! binds), and with the gate it needs a ReferenceGrant, without which the provisioner refuses.

use harness::case::{CaseResult, Requirement as R, Row, Suite, Surface, fail_with, row};
use harness::context::CaseCtx;
use harness::k8s::{CLONING_PROTECTION, ClaimSpec, DataSourceField, ExpectedEvent, VolumeMode};
use k8s_openapi::api::core::v1::TypedObjectReference;
use kube::ResourceExt;

use crate::k8s_common::{control_clone, ensure_not_dropped, kept_sources, refused, seeded_source};
use crate::k8s_data_source::dropped;
use VolumeMode::Filesystem;

#[derive(Clone, Copy, Debug)]
enum Flow {
    /// `dataSource` naming a claim that exists only in another namespace.
    NameFromAnotherNamespace,
    /// `dataSourceRef` with the namespace of a claim there, and no ReferenceGrant.
    RefWithNamespace,
    /// The same from another namespace, with a ReferenceGrant in the source's; `protected`:
    /// the source then carries the cloning-protection finalizer, as any cloned source does.
    RefWithNamespaceAndGrant { protected: bool },
}

const SAME_NAMESPACE: &str =
    "k8s: a claim can be cloned only into its own namespace (Kubernetes docs, CSI Volume Cloning)";
const CROSS_NAMESPACE: &str = "k8s: dataSourceRef.namespace needs the CrossNamespaceVolumeDataSource gate (else the API server drops it) and a ReferenceGrant in the source's namespace (API reference, PersistentVolumeClaimSpec.dataSourceRef)";

const PROTECTED: &str = "k8s: external-provisioner protects a clone's source with provisioner.storage.kubernetes.io/cloning-protection so it cannot go while it is cloned; a source in another namespace is a source too";

const ROWS: &[Row<Flow>] = &[
    row(
        "same_namespace::claim_of_another_namespace_is_not_found",
        SAME_NAMESPACE,
        &[R::Clone, R::Mount],
        Flow::NameFromAnotherNamespace,
    ),
    row(
        "cross_namespace::data_source_ref_with_a_namespace_and_no_grant_does_not_clone",
        CROSS_NAMESPACE,
        &[R::Clone, R::Mount],
        Flow::RefWithNamespace,
    ),
    row(
        "cross_namespace::data_source_ref_with_a_namespace_and_a_grant_clones",
        CROSS_NAMESPACE,
        &[R::Clone, R::Mount],
        Flow::RefWithNamespaceAndGrant { protected: false },
    ),
    row(
        "cross_namespace::source_of_a_cross_namespace_clone_is_protected_like_any_source",
        PROTECTED,
        &[R::Clone, R::Mount],
        Flow::RefWithNamespaceAndGrant { protected: true },
    ),
];

pub fn suite() -> Suite {
    Suite::from_rows("k8s_namespace", ROWS, interpret).on(Surface::Kubernetes)
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    match row.flow {
        Flow::NameFromAnotherNamespace => name_from_another_namespace(&ctx).await,
        Flow::RefWithNamespace => ref_with_namespace(&ctx).await,
        Flow::RefWithNamespaceAndGrant { protected } => ref_with_grant(&ctx, protected).await,
    }
}

/// A seeded claim in a second namespace of this case.
async fn foreign_source(ctx: &CaseCtx) -> CaseResult<(String, String)> {
    let namespace = ctx.extra_namespace().await?;
    let claim = ClaimSpec::new("far", Filesystem, ctx.volume_size());
    let created = ctx.create_claim_in(&namespace, &claim).await?;
    Ok((namespace, created.name_any()))
}

async fn name_from_another_namespace(ctx: &CaseCtx) -> CaseResult {
    let source = seeded_source(ctx, Filesystem).await?;
    let (_, far) = foreign_source(ctx).await?;
    let spec = ClaimSpec::new("clone", Filesystem, source.size).cloning(&far);
    let not_found = ExpectedEvent {
        reason: "ProvisioningFailed",
        words: &["not found"],
    };
    refused(ctx, &spec, not_found).await?;
    control_clone(ctx, &source).await.map(drop)
}

async fn ref_with_namespace(ctx: &CaseCtx) -> CaseResult {
    let source = seeded_source(ctx, Filesystem).await?;
    let (namespace, far) = foreign_source(ctx).await?;
    let field = DataSourceField::DataSourceRef(TypedObjectReference {
        api_group: None,
        kind: "PersistentVolumeClaim".into(),
        name: far,
        namespace: Some(namespace),
    });
    let spec = ClaimSpec::new("clone", Filesystem, source.size).with_source(field.clone());
    // Probe what the API server keeps: with the gate off it drops the whole reference.
    let probe = ctx.create_claim(&spec).await?;
    match kept_sources(ctx, &probe.name_any()).await? {
        (_, true) => {
            ctx.delete_claim(&probe).await?;
            let not_allowed = ExpectedEvent {
                reason: "ProvisioningFailed",
                words: &["isn't allowed"],
            };
            refused(ctx, &spec, not_allowed).await?;
            control_clone(ctx, &source).await.map(drop)
        }
        (false, false) => {
            ctx.delete_claim(&probe).await?;
            let why = "as documented when the CrossNamespaceVolumeDataSource feature gate is off";
            dropped(ctx, &source, field, why).await
        }
        (true, false) => Err(fail_with(
            "the API server turned a namespaced dataSourceRef into a dataSource",
            "dataSourceRef kept (gate on) or dropped (gate off)",
            "dataSource set, dataSourceRef empty",
        )),
    }
}

/// The source (seeded, in the case's namespace) is granted to a second namespace, where the
/// clone is made and read.
async fn ref_with_grant(ctx: &CaseCtx, protected: bool) -> CaseResult {
    let source = seeded_source(ctx, Filesystem).await?;
    let home = ctx.namespace().await?;
    let far = ctx.extra_namespace().await?;
    ctx.grant_claims(&far, &home).await?;
    let field = DataSourceField::DataSourceRef(TypedObjectReference {
        api_group: None,
        kind: "PersistentVolumeClaim".into(),
        name: source.name.clone(),
        namespace: Some(home),
    });
    let spec = ClaimSpec::new("clone", Filesystem, source.size).with_source(field);
    let clone = ctx.create_claim_in(&far, &spec).await?.name_any();
    let kept = ctx
        .get_claim_in(&far, &clone)
        .await?
        .and_then(|c| c.spec)
        .is_some_and(|s| s.data_source_ref.is_some());
    // A pod in the clone's namespace reads it once it is bound (or times out with the events).
    let digest = ctx
        .digest_claim(&format!("{far}/{clone}"), Filesystem, source.size)
        .await?;
    if kept {
        ensure_not_dropped(&digest, &source, &clone)?;
        return if protected {
            source_protected(ctx, &source.name).await
        } else {
            Ok(())
        };
    }
    harness::case::ensure(
        digest != source.digest,
        "the API server dropped the cross-namespace reference, yet the claim holds the source's data",
        "an empty volume",
        digest.to_string(),
    )?;
    ctx.advise(format!(
        "the API server dropped dataSourceRef (namespace {}) as documented when the CrossNamespaceVolumeDataSource feature gate is off, though a ReferenceGrant allowed it; an empty volume bound: a user asking for a cross-namespace clone gets no error and no data",
        spec_namespace(&spec)
    ));
    Ok(())
}

fn spec_namespace(spec: &ClaimSpec) -> String {
    match &spec.source {
        Some(DataSourceField::DataSourceRef(r)) => r.namespace.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

/// A cloned source keeps external-provisioner's cloning-protection finalizer (as
/// `k8s_clone::protection` checks in one namespace): without it, a source deleted while its
/// clone is in flight takes the clone with it.
async fn source_protected(ctx: &CaseCtx, source: &str) -> CaseResult {
    let finalizers = ctx
        .get_claim(source)
        .await?
        .map(|c| c.finalizers().to_vec())
        .unwrap_or_default();
    harness::case::ensure(
        finalizers.iter().any(|f| f == CLONING_PROTECTION),
        "the source of a cross-namespace clone carries no cloning-protection finalizer: deleted while the clone is in flight, it fails the clone",
        CLONING_PROTECTION,
        format!("finalizers {finalizers:?}"),
    )
}
