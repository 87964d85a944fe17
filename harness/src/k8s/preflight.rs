//! Before any case: is everything the cluster suites need there? Each missing piece is named
//! (no CSIDriver, no snapshot API, a permission the harness lacks), so a misconfigured cluster
//! gives one clear answer instead of every case failing its own way.

use std::collections::BTreeMap;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};

use super::describe_kube_error;
use crate::profile::{ClassSource, DriverProfile};

/// What the harness does on a cluster: (API group, resource, verbs, cluster-scoped).
const PERMISSIONS: &[(&str, &str, &[&str])] = &[
    ("", "namespaces", &["create", "get", "delete"]),
    (
        "",
        "persistentvolumeclaims",
        &["create", "get", "list", "watch", "delete"],
    ),
    ("", "pods", &["create", "get", "list", "watch", "delete"]),
    ("", "pods/exec", &["create"]),
    ("", "events", &["list"]),
    ("", "serviceaccounts", &["get", "list", "watch"]),
    ("", "persistentvolumes", &["get", "list", "watch"]),
    ("storage.k8s.io", "storageclasses", &["get"]),
    ("storage.k8s.io", "csidrivers", &["get"]),
];

/// Facts for the reports, and what is missing.
#[derive(Debug, Default)]
pub struct Preflight {
    pub properties: BTreeMap<String, String>,
    pub missing: Vec<String>,
}

pub async fn check(client: &Client, profile: &DriverProfile) -> Preflight {
    let mut out = Preflight::default();
    match client.apiserver_version().await {
        Ok(version) => {
            out.properties
                .insert("kubernetes_version".into(), version.git_version);
        }
        Err(e) => {
            out.missing.push(format!(
                "the API server does not answer: {}",
                describe_kube_error(&e)
            ));
            return out;
        }
    }
    check_driver(client, profile, &mut out).await;
    check_permissions(client, profile, &mut out).await;
    if profile.capabilities.snapshot {
        check_snapshot_api(client, &mut out).await;
    }
    describe_nodes(client, &mut out).await;
    describe_sidecars(client, &mut out).await;
    out
}

/// Images whose names mark the CSI sidecars, as the reports name them.
const SIDECARS: &[&str] = &[
    "csi-provisioner",
    "csi-resizer",
    "csi-snapshotter",
    "snapshot-controller",
    "csi-attacher",
    "csi-node-driver-registrar",
    "livenessprobe",
];

/// The sidecar images running in the cluster (when the harness may list pods everywhere): what
/// external-provisioner and friends the verdict was reached with.
async fn describe_sidecars(client: &Client, out: &mut Preflight) {
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::all(client.clone());
    let Ok(pods) = api.list(&ListParams::default()).await else {
        out.properties.insert(
            "sidecars".into(),
            "not visible to the harness (no permission to list pods)".into(),
        );
        return;
    };
    let mut images: Vec<String> = pods
        .items
        .iter()
        .filter_map(|pod| pod.spec.as_ref())
        .flat_map(|spec| spec.containers.iter())
        .filter_map(|c| c.image.clone())
        .filter(|image| SIDECARS.iter().any(|name| image.contains(name)))
        .collect();
    images.sort();
    images.dedup();
    let found = if images.is_empty() {
        "none found in pods (run outside the cluster, or named otherwise)".to_string()
    } else {
        images.join(", ")
    };
    out.properties.insert("sidecars".into(), found);
}

async fn check_driver(client: &Client, profile: &DriverProfile, out: &mut Preflight) {
    let api: Api<CSIDriver> = Api::all(client.clone());
    match api.get_opt(&profile.name).await {
        Ok(Some(driver)) => {
            let attach = driver.spec.attach_required.unwrap_or(true);
            out.properties.insert("csidriver_attach_required".into(), attach.to_string());
        }
        Ok(None) => out.missing.push(format!(
            "no CSIDriver object named {:?}: the driver is not installed in this cluster, or the profile's name differs from it",
            profile.name
        )),
        Err(e) => out.missing.push(format!("get CSIDriver {:?}: {}", profile.name, describe_kube_error(&e))),
    }
}

async fn check_permissions(client: &Client, profile: &DriverProfile, out: &mut Preflight) {
    let mut wanted: Vec<(&str, &str, &str)> = PERMISSIONS
        .iter()
        .flat_map(|(group, resource, verbs)| {
            verbs.iter().map(move |verb| (*group, *resource, *verb))
        })
        .collect();
    if matches!(
        profile.kubernetes.storage_class,
        ClassSource::Created | ClassSource::File(_)
    ) {
        wanted.extend([
            ("storage.k8s.io", "storageclasses", "create"),
            ("storage.k8s.io", "storageclasses", "delete"),
        ]);
    }
    if profile.capabilities.snapshot {
        for verb in ["create", "get", "watch", "delete"] {
            wanted.push(("snapshot.storage.k8s.io", "volumesnapshots", verb));
        }
        if !matches!(profile.kubernetes.snapshot_class, ClassSource::Existing(_)) {
            wanted.extend([
                ("snapshot.storage.k8s.io", "volumesnapshotclasses", "create"),
                ("snapshot.storage.k8s.io", "volumesnapshotclasses", "delete"),
            ]);
        }
    }
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut denied = Vec::new();
    for (group, resource, verb) in wanted {
        let (resource, subresource) = resource
            .split_once('/')
            .map_or((resource, None), |(r, s)| (r, Some(s)));
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.to_string()),
                    resource: Some(resource.to_string()),
                    subresource: subresource.map(str::to_string),
                    verb: Some(verb.to_string()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let name = match subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_string(),
        };
        match api.create(&PostParams::default(), &review).await {
            Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => denied.push(format!("{verb} {name}{}", group_suffix(group))),
            Err(e) => {
                out.missing.push(format!(
                    "cannot review permissions: {}",
                    describe_kube_error(&e)
                ));
                return;
            }
        }
    }
    if !denied.is_empty() {
        out.missing.push(format!(
            "RBAC denies the harness: {} (docs/cluster.md lists the role it needs)",
            denied.join(", ")
        ));
    }
}

fn group_suffix(group: &str) -> String {
    if group.is_empty() {
        String::new()
    } else {
        format!(".{group}")
    }
}

async fn check_snapshot_api(client: &Client, out: &mut Preflight) {
    if let Err(e) = client
        .list_api_group_resources("snapshot.storage.k8s.io/v1")
        .await
    {
        out.missing.push(format!(
            "the profile declares snapshots but the cluster serves no snapshot.storage.k8s.io/v1 API (install the snapshot CRDs and controller): {}",
            describe_kube_error(&e)
        ));
    }
}

/// The nodes (when the harness may list them): name, kubelet and runtime versions, kernel.
async fn describe_nodes(client: &Client, out: &mut Preflight) {
    let api: Api<Node> = Api::all(client.clone());
    let Ok(nodes) = api.list(&ListParams::default()).await else {
        out.properties
            .insert("nodes".into(), "not visible to the harness".into());
        return;
    };
    let described: Vec<String> = nodes
        .items
        .iter()
        .map(|node| {
            let info = node.status.as_ref().and_then(|s| s.node_info.as_ref());
            match info {
                Some(i) => format!(
                    "{} (kubelet {}, {}, kernel {})",
                    node.name_any(),
                    i.kubelet_version,
                    i.container_runtime_version,
                    i.kernel_version
                ),
                None => node.name_any(),
            }
        })
        .collect();
    if described.is_empty() {
        out.missing.push("the cluster has no nodes".into());
    }
    out.properties.insert("nodes".into(), described.join("; "));
}
