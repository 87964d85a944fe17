//! k8s_data_source: what each way of naming a claim's data does, as the API server and
//! external-provisioner really handle it. `dataSource` drops what it does not allow (the
//! claim then provisions empty, which is reported as advisory), `dataSourceRef` keeps it and
//! leaves unknown kinds to a populator; a missing claim is never cloned. Any claim that still
//! names a source and binds without its data fails loudly.

use harness::case::{CaseResult, Requirement as R, Row, Suite, Surface, ensure, row};
use harness::context::CaseCtx;
use harness::k8s::{ClaimSpec, DataSourceField, ExpectedEvent, VolumeMode};
use k8s_openapi::api::core::v1::{TypedLocalObjectReference, TypedObjectReference};
use kube::ResourceExt;

use crate::k8s_common::{
    Source, bound_with_digest, control_clone, ensure_not_dropped, kept_sources, refused,
    seeded_source,
};
use VolumeMode::Filesystem;

#[derive(Clone, Copy, Debug)]
enum Flow {
    /// `dataSource` naming a claim that does not exist: refused, never provisioned.
    MissingClaim,
    /// `dataSource` with this apiGroup and kind naming the source: the API server drops it.
    DataSourceDropped {
        api_group: Option<&'static str>,
        kind: &'static str,
    },
    /// `dataSourceRef` of a core kind other than PersistentVolumeClaim: rejected at create.
    RefOfCoreKindRejected,
    /// `dataSourceRef` of a kind no one provisions: left to a populator, never provisioned.
    RefLeftToPopulator {
        api_group: &'static str,
        kind: &'static str,
    },
    /// `dataSourceRef` naming the source as a core claim: a clone.
    RefClones,
}

const DROP: &str = "k8s: dataSource drops values it does not allow, dataSourceRef keeps them (API reference, PersistentVolumeClaimSpec.dataSource/dataSourceRef)";
const MISSING: &str = "k8s: a clone's source must be an existing claim of the same namespace (Kubernetes docs, CSI Volume Cloning)";
const REF_CORE: &str =
    "k8s: dataSourceRef in the core group may only name a PersistentVolumeClaim (API validation)";
const POPULATOR: &str = "k8s: a dataSourceRef to a kind outside the core group is for a volume populator of that kind; the CSI provisioner leaves it alone (Kubernetes docs, volume populators)";
const REF_CLONE: &str = "k8s: dataSourceRef naming a core PersistentVolumeClaim is a clone like dataSource (API reference, PersistentVolumeClaimSpec.dataSourceRef)";

const ROWS: &[Row<Flow>] = &[
    row(
        "missing::claim_that_does_not_exist_is_not_cloned",
        MISSING,
        &[R::Clone, R::Mount],
        Flow::MissingClaim,
    ),
    row(
        "dropped::data_source_with_a_foreign_api_group_provisions_empty",
        DROP,
        &[R::Clone, R::Mount],
        Flow::DataSourceDropped {
            api_group: Some("example.com"),
            kind: "PersistentVolumeClaim",
        },
    ),
    row(
        "dropped::data_source_of_kind_config_map_provisions_empty",
        DROP,
        &[R::Clone, R::Mount],
        Flow::DataSourceDropped {
            api_group: None,
            kind: "ConfigMap",
        },
    ),
    row(
        "rejected::data_source_ref_of_kind_config_map",
        REF_CORE,
        &[R::Clone, R::Mount],
        Flow::RefOfCoreKindRejected,
    ),
    row(
        "populator::data_source_ref_of_an_unknown_kind_is_left_to_a_populator",
        POPULATOR,
        &[R::Clone, R::Mount],
        Flow::RefLeftToPopulator {
            api_group: "example.com",
            kind: "Widget",
        },
    ),
    row(
        "populator::data_source_ref_to_a_claim_kind_of_a_foreign_api_group_is_not_a_clone",
        POPULATOR,
        &[R::Clone, R::Mount],
        Flow::RefLeftToPopulator {
            api_group: "example.com",
            kind: "PersistentVolumeClaim",
        },
    ),
    row(
        "ref::data_source_ref_to_a_claim_clones",
        REF_CLONE,
        &[R::Clone, R::Mount],
        Flow::RefClones,
    ),
];

/// external-provisioner's words for a reference it leaves to a populator (measured).
const POPULATOR_EVENT: ExpectedEvent = ExpectedEvent {
    reason: "",
    words: &["external populator"],
};

pub fn suite() -> Suite {
    Suite::from_rows("k8s_data_source", ROWS, interpret).on(Surface::Kubernetes)
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    let source = seeded_source(&ctx, Filesystem).await?;
    match row.flow {
        Flow::MissingClaim => missing_claim(&ctx, &source).await,
        Flow::DataSourceDropped { api_group, kind } => {
            let reference = TypedLocalObjectReference {
                api_group: api_group.map(str::to_string),
                kind: kind.to_string(),
                name: source.name.clone(),
            };
            let why = "as documented for values dataSource does not allow";
            dropped(&ctx, &source, DataSourceField::DataSource(reference), why).await
        }
        Flow::RefOfCoreKindRejected => ref_rejected(&ctx, &source).await,
        Flow::RefLeftToPopulator { api_group, kind } => {
            populator(&ctx, &source, api_group, kind).await
        }
        Flow::RefClones => ref_clones(&ctx, &source).await,
    }
}

fn reference(api_group: Option<&str>, kind: &str, name: &str) -> TypedObjectReference {
    TypedObjectReference {
        api_group: api_group.map(str::to_string),
        kind: kind.to_string(),
        name: name.to_string(),
        namespace: None,
    }
}

async fn missing_claim(ctx: &CaseCtx, source: &Source) -> CaseResult {
    let absent = ctx.unique_name("nosuch");
    let spec = ClaimSpec::new("clone", Filesystem, source.size).cloning(&absent);
    let not_found = ExpectedEvent {
        reason: "ProvisioningFailed",
        words: &["not found"],
    };
    refused(ctx, &spec, not_found).await?;
    control_clone(ctx, source).await.map(drop)
}

/// A claim whose data source the API server may drop: dropped → it provisions empty
/// (advisory, as documented); kept → it must clone.
pub(crate) async fn dropped(
    ctx: &CaseCtx,
    source: &Source,
    field: DataSourceField,
    why: &str,
) -> CaseResult {
    let spec = ClaimSpec::new("clone", Filesystem, source.size).with_source(field);
    let name = ctx.create_claim(&spec).await?.name_any();
    let kept = kept_sources(ctx, &name).await?;
    let (bound, digest) = bound_after_create(ctx, &name, source.size).await?;
    if kept == (false, false) {
        ensure(
            digest != source.digest,
            "the API server dropped the data source, yet the claim holds the source's data",
            "an empty volume",
            digest.to_string(),
        )?;
        ctx.advise(format!(
            "the API server dropped the claim's data source ({}), {why}; an empty volume {} bound: a user asking for a clone this way gets no error and no data",
            spec.describe_source(),
            bound
        ));
        return Ok(());
    }
    ensure_not_dropped(&digest, source, &name)
}

/// Waits for a created claim to bind (a reader pod makes a WaitForFirstConsumer claim bind)
/// and returns its volume's name and what it holds.
async fn bound_after_create(
    ctx: &CaseCtx,
    name: &str,
    size: u64,
) -> CaseResult<(String, harness::data::Digest)> {
    let bound = ctx.wait_bound_if_immediate(name).await?;
    let digest = ctx.digest_claim(name, Filesystem, size).await?;
    let bound = match bound {
        Some(bound) => bound,
        None => ctx.wait_bound(name).await?,
    };
    Ok((bound.volume.name_any(), digest))
}

async fn ref_rejected(ctx: &CaseCtx, source: &Source) -> CaseResult {
    let field = DataSourceField::DataSourceRef(reference(None, "ConfigMap", &source.name));
    let spec = ClaimSpec::new("clone", Filesystem, source.size).with_source(field);
    let rejection = ctx.claim_rejected(&spec).await?;
    ensure(
        rejection.starts_with("422") && rejection.contains("PersistentVolumeClaim"),
        "the API server rejected the claim for another reason",
        "422 Invalid: the core group allows only PersistentVolumeClaim",
        rejection,
    )?;
    control_clone(ctx, source).await.map(drop)
}

async fn populator(ctx: &CaseCtx, source: &Source, api_group: &str, kind: &str) -> CaseResult {
    let field = DataSourceField::DataSourceRef(reference(Some(api_group), kind, &source.name));
    let spec = ClaimSpec::new("clone", Filesystem, source.size).with_source(field);
    let name = ctx.create_claim(&spec).await?.name_any();
    if ctx.binding()? == harness::k8s::Binding::WaitForFirstConsumer {
        ctx.request_data_pod(&name, Filesystem).await?;
    }
    // A stack that clones anyway binds the claim: either ending is watched, the first wins.
    tokio::select! {
        event = ctx.wait_claim_event(&name, POPULATOR_EVENT) => { event?; }
        bound = ctx.wait_bound(&name) => {
            let bound = bound?;
            let digest = ctx.digest_claim(&name, Filesystem, source.size).await?;
            let what = if digest == source.digest { "a clone of the core claim of that name" } else { "an empty volume" };
            return Err(harness::case::fail_with(
                format!("a dataSourceRef to {api_group}/{kind} was provisioned by the CSI provisioner as {what}"),
                "Pending, left to a volume populator of that kind",
                format!("Bound to {}", bound.volume.name_any()),
            ));
        }
    }
    ctx.ensure_unprovisioned(&name).await?;
    control_clone(ctx, source).await.map(drop)
}

async fn ref_clones(ctx: &CaseCtx, source: &Source) -> CaseResult {
    let field =
        DataSourceField::DataSourceRef(reference(None, "PersistentVolumeClaim", &source.name));
    let spec = ClaimSpec::new("clone", Filesystem, source.size).with_source(field);
    let (_, digest) = bound_with_digest(ctx, &spec, source.size).await?;
    ensure_not_dropped(&digest, source, &spec.what.to_string())
}
