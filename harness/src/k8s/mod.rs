//! The Kubernetes side of the engine: what a cluster target hands to cases (`ClusterHandle`),
//! the objects the ledger records (`KubeRef`), watch-based waits, data through pods, class
//! resolution and preflight. Cases reach all of it through `CaseCtx` methods.

mod claims;
mod classes;
mod data;
mod deletion;
mod exec;
mod expand;
mod grants;
mod pods;
pub mod preflight;
mod refusals;
mod remove;
mod snapshots;
mod wait;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::Client;
use kube::discovery::ApiResource;

pub use claims::{BoundClaim, ClaimSpec, DataSourceField, VolumeMode, quantity_bytes};
pub use classes::resolve_classes;
pub use classes::{Classes, RUN_OWNER};
pub use refusals::ExpectedEvent;
pub(crate) use remove::remove;
pub use snapshots::SNAPSHOT_GROUP;

/// Label on everything a run creates; its value is the run tag.
pub const RUN_LABEL: &str = "csi-clone-conformance.dev/run";
/// The finalizer external-provisioner puts on a clone's source claim.
pub const CLONING_PROTECTION: &str = "provisioner.storage.kubernetes.io/cloning-protection";

/// The default writer/reader image on a cluster: busybox has sh, tar, dd, stat, blockdev.
pub const DEFAULT_POD_IMAGE: &str = "docker.io/library/busybox:1.37";

/// `volumeBindingMode` of the class in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    Immediate,
    /// Claims bind only once a pod uses them: waits for Bound go through a pod.
    WaitForFirstConsumer,
}

/// What a cluster target gives cases.
#[derive(Clone)]
pub struct ClusterHandle {
    pub client: Client,
    /// The CSI driver whose clones are tested (the StorageClass provisioner).
    pub driver_name: String,
    /// The driver's version where the target can tell (the local cluster asks the driver).
    pub driver_version: String,
    pub storage_class: String,
    pub binding: Binding,
    pub snapshot_class: Option<String>,
    pub pod_image: String,
    /// Pods use the host network (the local cluster has no pod network).
    pub host_network: bool,
    pub timeouts: KubeTimeouts,
    /// Facts about the cluster for the reports (versions, node, data path).
    pub properties: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug)]
pub struct KubeTimeouts {
    pub bind: Duration,
    pub pod: Duration,
    pub delete: Duration,
    /// Each API call.
    pub call: Duration,
}

/// Kinds the harness creates (and so may delete).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KubeKind {
    Namespace,
    StorageClass,
    VolumeSnapshotClass,
    PersistentVolumeClaim,
    Pod,
    VolumeSnapshot,
}

impl KubeKind {
    pub fn api_resource(self) -> ApiResource {
        use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
        use k8s_openapi::api::storage::v1::StorageClass;
        match self {
            KubeKind::Namespace => ApiResource::erase::<Namespace>(&()),
            KubeKind::StorageClass => ApiResource::erase::<StorageClass>(&()),
            KubeKind::PersistentVolumeClaim => ApiResource::erase::<PersistentVolumeClaim>(&()),
            KubeKind::Pod => ApiResource::erase::<Pod>(&()),
            KubeKind::VolumeSnapshotClass => {
                snapshot_resource("VolumeSnapshotClass", "volumesnapshotclasses")
            }
            KubeKind::VolumeSnapshot => snapshot_resource("VolumeSnapshot", "volumesnapshots"),
        }
    }
}

pub(crate) fn snapshot_resource(kind: &str, plural: &str) -> ApiResource {
    let gvk = kube::api::GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", kind);
    ApiResource::from_gvk_with_plural(&gvk, plural)
}

/// One object the run created, pinned by uid so a same-named object made by someone else is
/// never touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeRef {
    pub kind: KubeKind,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for KubeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{:?} {ns}/{}", self.kind, self.name),
            None => write!(f, "{:?} {}", self.kind, self.name),
        }
    }
}

/// A Kubernetes API error on one line ("404 NotFound: pods \"x\" not found").
pub fn describe_kube_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        other => crate::steps::error_chain(other),
    }
}

pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}
