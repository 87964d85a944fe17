//! Namespaces and claims as cases use them: each case gets a namespace of its own (labelled with
//! the run), claims are created there and recorded, and a claim's binding is watched.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, ServiceAccount,
    TypedLocalObjectReference, TypedObjectReference, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};

use super::wait::{events_of, until, until_gone};
use super::{Binding, ClusterHandle, KubeKind, KubeRef, RUN_LABEL, describe_kube_error};
use crate::case::{CaseResult, fail_with, harness_error};
use crate::context::CaseCtx;
use crate::ledger::Resource;

/// `spec.volumeMode` of a claim; `Unset` leaves the field out (the API treats it as Filesystem).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeMode {
    Filesystem,
    Block,
    Unset,
}

impl VolumeMode {
    fn field(self) -> Option<String> {
        match self {
            VolumeMode::Filesystem => Some("Filesystem".into()),
            VolumeMode::Block => Some("Block".into()),
            VolumeMode::Unset => None,
        }
    }

    /// What the mode means for data: Unset is Filesystem.
    pub fn is_block(self) -> bool {
        self == VolumeMode::Block
    }
}

/// A claim a case asks for.
#[derive(Clone, Debug)]
pub struct ClaimSpec {
    /// Short word for the name ("src", "clone").
    pub what: &'static str,
    pub mode: VolumeMode,
    pub size: u64,
    /// The name of a claim in the same namespace to clone (`spec.dataSource`).
    pub clone_of: Option<String>,
    /// Any other data source, as the case writes it; overrides `clone_of`.
    pub source: Option<DataSourceField>,
    /// Another StorageClass than the run's.
    pub class: Option<String>,
}

/// The two fields a claim may name its data in. The API treats them differently: `dataSource`
/// drops what it does not allow, `dataSourceRef` keeps it (PersistentVolumeClaimSpec docs).
#[derive(Clone, Debug)]
pub enum DataSourceField {
    DataSource(TypedLocalObjectReference),
    DataSourceRef(TypedObjectReference),
}

impl ClaimSpec {
    /// A claim of the run's class with no data source.
    pub fn new(what: &'static str, mode: VolumeMode, size: u64) -> ClaimSpec {
        ClaimSpec {
            what,
            mode,
            size,
            clone_of: None,
            source: None,
            class: None,
        }
    }

    /// A clone of `source` (same namespace) through `spec.dataSource`.
    pub fn cloning(mut self, source: &str) -> ClaimSpec {
        self.clone_of = Some(source.to_string());
        self
    }

    pub fn with_source(mut self, source: DataSourceField) -> ClaimSpec {
        self.source = Some(source);
        self
    }

    pub fn in_class(mut self, class: &str) -> ClaimSpec {
        self.class = Some(class.to_string());
        self
    }

    fn fields(
        &self,
    ) -> (
        Option<TypedLocalObjectReference>,
        Option<TypedObjectReference>,
    ) {
        match &self.source {
            Some(DataSourceField::DataSource(r)) => (Some(r.clone()), None),
            Some(DataSourceField::DataSourceRef(r)) => (None, Some(r.clone())),
            None => (
                self.clone_of
                    .as_ref()
                    .map(|source| TypedLocalObjectReference {
                        api_group: None,
                        kind: "PersistentVolumeClaim".into(),
                        name: source.clone(),
                    }),
                None,
            ),
        }
    }

    /// The data source as the claim names it, for traces and notes.
    pub fn describe_source(&self) -> String {
        match self.fields() {
            (Some(r), _) => format!(
                "dataSource={}/{}/{}",
                r.api_group.as_deref().unwrap_or(""),
                r.kind,
                r.name
            ),
            (_, Some(r)) => format!(
                "dataSourceRef={}/{}/{}{}",
                r.api_group.as_deref().unwrap_or(""),
                r.kind,
                r.name,
                r.namespace
                    .as_deref()
                    .map(|ns| format!(" namespace={ns}"))
                    .unwrap_or_default()
            ),
            (None, None) => "none".to_string(),
        }
    }
}

/// A bound claim and its volume.
#[derive(Clone, Debug)]
pub struct BoundClaim {
    pub claim: PersistentVolumeClaim,
    pub volume: PersistentVolume,
}

impl CaseCtx {
    pub(crate) fn cluster(&self) -> CaseResult<&ClusterHandle> {
        self.cluster_handle()
            .map(|c| c.as_ref())
            .ok_or_else(|| harness_error("this case needs a Kubernetes target"))
    }

    /// The case's namespace, created (and recorded) on first use; returns once pods may be
    /// created there (its `default` service account exists).
    pub async fn namespace(&self) -> CaseResult<String> {
        self.namespace_cell()
            .get_or_try_init(|| self.create_namespace())
            .await
            .cloned()
    }

    /// Another namespace of this case (labelled and recorded like its own).
    pub async fn extra_namespace(&self) -> CaseResult<String> {
        self.create_namespace().await
    }

    async fn create_namespace(&self) -> CaseResult<String> {
        let cluster = self.cluster()?;
        let name = self.unique_name("ns");
        let labels = BTreeMap::from([
            (RUN_LABEL.to_string(), self.settings().run_tag.clone()),
            // The data pods run as root (and with the host network on the local cluster).
            (
                "pod-security.kubernetes.io/enforce".to_string(),
                "privileged".to_string(),
            ),
        ]);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let api: Api<Namespace> = Api::all(cluster.client.clone());
        let created = self
            .api_call(
                "create Namespace",
                api.create(&PostParams::default(), &namespace),
            )
            .await?;
        self.record_kube(KubeKind::Namespace, None, &created);
        let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), &name);
        let exists = |sa: Option<&ServiceAccount>| sa.is_some();
        until(&accounts, "default", exists, cluster.timeouts.pod)
            .await
            .map_err(|e| harness_error(format!("service account default in {name}: {e} (is the service-account controller running?)")))?;
        self.trace(format!("k8s: namespace {name}"));
        Ok(name)
    }

    /// Creates a claim in the case's namespace with the run's StorageClass.
    pub async fn create_claim(&self, spec: &ClaimSpec) -> CaseResult<PersistentVolumeClaim> {
        let namespace = self.namespace().await?;
        self.create_claim_in(&namespace, spec).await
    }

    /// Creates a claim in `namespace` (the case's own or one from `extra_namespace`).
    pub async fn create_claim_in(
        &self,
        namespace: &str,
        spec: &ClaimSpec,
    ) -> CaseResult<PersistentVolumeClaim> {
        let claim = self.claim_object(spec);
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.cluster()?.client.clone(), namespace);
        let created = self
            .api_call(
                "create PersistentVolumeClaim",
                api.create(&PostParams::default(), &claim),
            )
            .await?;
        self.record_kube(KubeKind::PersistentVolumeClaim, Some(namespace), &created);
        self.trace(format!(
            "k8s: claim {namespace}/{} mode={:?} size={} {}",
            created.name_any(),
            spec.mode,
            spec.size,
            spec.describe_source()
        ));
        Ok(created)
    }

    /// The claim `spec` asks for, under a new name of this case.
    pub(crate) fn claim_object(&self, spec: &ClaimSpec) -> PersistentVolumeClaim {
        let run_class = self
            .cluster_handle()
            .map(|c| c.storage_class.clone())
            .unwrap_or_default();
        let (data_source, data_source_ref) = spec.fields();
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(self.unique_name(spec.what)),
                labels: Some(BTreeMap::from([(
                    RUN_LABEL.to_string(),
                    self.settings().run_tag.clone(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: Some(spec.class.clone().unwrap_or(run_class)),
                volume_mode: spec.mode.field(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity(spec.size.to_string()),
                    )])),
                    ..VolumeResourceRequirements::default()
                }),
                data_source,
                data_source_ref,
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }
    }

    /// Waits for the claim to be Bound and returns it with its volume. With a
    /// WaitForFirstConsumer class, a pod must be using the claim already.
    pub async fn wait_bound(&self, claim: &str) -> CaseResult<BoundClaim> {
        let cluster = self.cluster()?;
        let namespace = self.namespace().await?;
        let api: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), &namespace);
        let bound = |c: Option<&PersistentVolumeClaim>| phase(c) == Some("Bound");
        let claim_object = match until(&api, claim, bound, cluster.timeouts.bind).await {
            Ok(object) => object,
            Err(e) => {
                let now = api.get_opt(claim).await.ok().flatten();
                let events =
                    events_of(&cluster.client, &namespace, "PersistentVolumeClaim", claim).await;
                return Err(fail_with(
                    format!("claim {claim} did not bind ({e})"),
                    "phase Bound",
                    format!(
                        "phase {}; events: {}",
                        phase(now.as_ref()).unwrap_or("?"),
                        join_events(&events)
                    ),
                ));
            }
        };
        let volume_name = claim_object
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        let volumes: Api<PersistentVolume> = Api::all(cluster.client.clone());
        let volume = self
            .api_call("get PersistentVolume", volumes.get(&volume_name))
            .await?;
        self.trace(format!("k8s: claim {claim} Bound to {volume_name}"));
        Ok(BoundClaim {
            claim: claim_object,
            volume,
        })
    }

    /// The binding mode of the run's class.
    pub fn binding(&self) -> CaseResult<Binding> {
        Ok(self.cluster()?.binding)
    }

    /// `wait_bound` with an Immediate class; `None` with WaitForFirstConsumer (the claim binds
    /// when a pod first uses it).
    pub async fn wait_bound_if_immediate(&self, claim: &str) -> CaseResult<Option<BoundClaim>> {
        match self.cluster()?.binding {
            Binding::Immediate => self.wait_bound(claim).await.map(Some),
            Binding::WaitForFirstConsumer => Ok(None),
        }
    }

    /// Creates a claim and waits for it to bind (Immediate binding only; else it binds when
    /// the first pod uses it, which the data steps do).
    pub async fn provision(&self, spec: &ClaimSpec) -> CaseResult<PersistentVolumeClaim> {
        let claim = self.create_claim(spec).await?;
        if self.cluster()?.binding == Binding::Immediate {
            self.wait_bound(&claim.name_any()).await?;
        }
        Ok(claim)
    }

    pub async fn get_claim(&self, name: &str) -> CaseResult<Option<PersistentVolumeClaim>> {
        self.get_claim_in(&self.namespace().await?, name).await
    }

    pub async fn get_claim_in(
        &self,
        namespace: &str,
        name: &str,
    ) -> CaseResult<Option<PersistentVolumeClaim>> {
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.cluster()?.client.clone(), namespace);
        self.api_call("get PersistentVolumeClaim", api.get_opt(name))
            .await
    }

    /// Deletes a claim of this case and waits until it is gone.
    pub async fn delete_claim(&self, claim: &PersistentVolumeClaim) -> CaseResult {
        let object = kube_ref(
            KubeKind::PersistentVolumeClaim,
            claim.namespace().as_deref(),
            claim,
        );
        let cluster = self.cluster()?;
        super::remove(&cluster.client, &object, cluster.timeouts.delete)
            .await
            .map_err(|e| {
                fail_with(
                    format!("deleting claim {} failed", object.name),
                    "claim gone",
                    e,
                )
            })?;
        self.ledger().forget(&Resource::Kube(object));
        self.trace(format!("k8s: claim {} deleted", claim.name_any()));
        Ok(())
    }

    /// Deletes a bound claim and waits until its volume is gone too (the provisioner has called
    /// DeleteVolume): what "the source was deleted" means to a clone.
    pub async fn delete_claim_and_volume(&self, bound: &BoundClaim) -> CaseResult {
        self.delete_claim(&bound.claim).await?;
        let cluster = self.cluster()?;
        let api: Api<PersistentVolume> = Api::all(cluster.client.clone());
        let name = bound.volume.name_any();
        let uid = bound.volume.uid().unwrap_or_default();
        until_gone(&api, &name, &uid, cluster.timeouts.delete)
            .await
            .map_err(|e| {
                fail_with(
                    format!("the volume {name} of a deleted claim was not deleted ({e})"),
                    "PersistentVolume gone (reclaimPolicy Delete)",
                    "still present",
                )
            })?;
        self.trace(format!("k8s: volume {name} deleted"));
        Ok(())
    }

    /// Events about a claim of this case, one line each.
    pub async fn claim_events(&self, claim: &str) -> CaseResult<Vec<String>> {
        let cluster = self.cluster()?;
        Ok(events_of(
            &cluster.client,
            &self.namespace().await?,
            "PersistentVolumeClaim",
            claim,
        )
        .await)
    }

    /// An API call under the call deadline; an API error is the harness's (or the cluster's).
    pub(crate) async fn api_call<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> CaseResult<T> {
        let limit = self.cluster()?.timeouts.call;
        let Some(_ticket) = self.ledger().call_ticket() else {
            return Err(harness_error("the run was interrupted"));
        };
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(harness_error(format!(
                "{what}: {}",
                describe_kube_error(&e)
            ))),
            Err(_) => Err(harness_error(format!("{what}: no answer within {limit:?}"))),
        }
    }

    pub(crate) fn record_kube<K: kube::Resource>(
        &self,
        kind: KubeKind,
        namespace: Option<&str>,
        object: &K,
    ) {
        self.ledger().record(
            self.owner(),
            Resource::Kube(kube_ref(kind, namespace, object)),
        );
    }
}

pub(crate) fn kube_ref<K: kube::Resource>(
    kind: KubeKind,
    namespace: Option<&str>,
    object: &K,
) -> KubeRef {
    KubeRef {
        kind,
        namespace: namespace.map(str::to_string),
        name: object.meta().name.clone().unwrap_or_default(),
        uid: object.meta().uid.clone().unwrap_or_default(),
    }
}

fn phase(claim: Option<&PersistentVolumeClaim>) -> Option<&str> {
    claim?.status.as_ref()?.phase.as_deref()
}

pub(crate) fn join_events(events: &[String]) -> String {
    if events.is_empty() {
        "none".to_string()
    } else {
        events.join(" | ")
    }
}

/// Bytes of a Kubernetes quantity as PV capacities carry it (`67108864`, `64Mi`, `1G`).
pub fn quantity_bytes(quantity: &str) -> Option<u64> {
    const SUFFIXES: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    let quantity = quantity.trim();
    let (number, unit) = SUFFIXES
        .iter()
        .find_map(|(suffix, unit)| quantity.strip_suffix(suffix).map(|n| (n, *unit)))
        .unwrap_or((quantity, 1));
    number.parse::<u64>().ok()?.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::quantity_bytes;

    #[test]
    fn quantities_in_every_form_a_pv_may_carry() {
        assert_eq!(quantity_bytes("67108864"), Some(64 << 20));
        assert_eq!(quantity_bytes("64Mi"), Some(64 << 20));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("1.5Gi"), None);
        assert_eq!(quantity_bytes(""), None);
    }
}
