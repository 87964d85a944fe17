//! The cluster objects bring-up creates: the snapshot CRDs, the sidecars' upstream RBAC (read
//! from the bin dir at run time), service-account tokens for the sidecars, the CSIDriver.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::storage::v1::{CSIDriver, CSIDriverSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use serde::de::DeserializeOwned;

use crate::ClusterError;

/// A service account some RBAC file grants rights to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

/// Creates every CRD in `files` and waits until each is established.
pub async fn apply_crds(
    client: &Client,
    files: &[std::path::PathBuf],
    limit: Duration,
) -> Result<(), ClusterError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in files {
        for crd in documents::<CustomResourceDefinition>(file)? {
            let name = crd.metadata.name.clone().unwrap_or_default();
            create(&api, &crd, &format!("CRD {name}")).await?;
            let established = await_condition(api.clone(), &name, conditions::is_crd_established());
            match tokio::time::timeout(limit, established).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(ClusterError::setup(format!("watch CRD {name}"), e)),
                Err(_) => {
                    return Err(ClusterError::setup(
                        format!("CRD {name}"),
                        format!("not established within {limit:?}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Creates the objects of an upstream RBAC file; returns the service accounts it defines.
pub async fn apply_rbac(
    client: &Client,
    file: &Path,
) -> Result<Vec<ServiceAccountRef>, ClusterError> {
    let mut accounts = Vec::new();
    for doc in documents::<serde_json::Value>(file)? {
        let kind = doc
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let what = format!("{kind} from {}", file.display());
        match kind.as_str() {
            "ServiceAccount" => {
                let sa: ServiceAccount = typed(doc, &what)?;
                let namespace = sa
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                ensure_namespace(client, &namespace).await?;
                create(&Api::namespaced(client.clone(), &namespace), &sa, &what).await?;
                accounts.push(ServiceAccountRef {
                    namespace,
                    name: sa.metadata.name.unwrap_or_default(),
                });
            }
            "ClusterRole" => {
                create(
                    &Api::<ClusterRole>::all(client.clone()),
                    &typed(doc, &what)?,
                    &what,
                )
                .await?
            }
            "ClusterRoleBinding" => {
                create(
                    &Api::<ClusterRoleBinding>::all(client.clone()),
                    &typed(doc, &what)?,
                    &what,
                )
                .await?
            }
            "Role" => {
                let role: Role = typed(doc, &what)?;
                let ns = role
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                create(&Api::namespaced(client.clone(), &ns), &role, &what).await?
            }
            "RoleBinding" => {
                let binding: RoleBinding = typed(doc, &what)?;
                let ns = binding
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                create(&Api::namespaced(client.clone(), &ns), &binding, &what).await?
            }
            other => {
                return Err(ClusterError::setup(
                    format!("apply {}", file.display()),
                    format!("unexpected kind {other:?} in an RBAC file"),
                ));
            }
        }
    }
    Ok(accounts)
}

/// A day-long token for a service account (the sidecars' credentials).
pub async fn service_account_token(
    client: &Client,
    account: &ServiceAccountRef,
) -> Result<String, ClusterError> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &account.namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(86_400),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let answer = api
        .create_token_request(&account.name, &PostParams::default(), &request)
        .await
        .map_err(ClusterError::api(format!(
            "token for service account {}/{}",
            account.namespace, account.name
        )))?;
    answer
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| ClusterError::setup("token request", "answer without a token"))
}

/// The CSIDriver object: no attach step (the driver has no ControllerPublish), and the kubelet
/// may pass pod info. What `kubectl get csidriver` shows for the driver under test.
pub async fn create_csi_driver(client: &Client, name: &str) -> Result<(), ClusterError> {
    let driver = CSIDriver {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "csi-clone-conformance".to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: CSIDriverSpec {
            attach_required: Some(false),
            pod_info_on_mount: Some(true),
            volume_lifecycle_modes: Some(vec!["Persistent".to_string()]),
            ..CSIDriverSpec::default()
        },
    };
    create(
        &Api::all(client.clone()),
        &driver,
        &format!("CSIDriver {name}"),
    )
    .await
}

async fn ensure_namespace(client: &Client, name: &str) -> Result<(), ClusterError> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    create(&Api::all(client.clone()), &ns, &format!("namespace {name}")).await
}

/// Creates `object`; one that already exists is fine (this cluster is new, so it is ours).
async fn create<K>(api: &Api<K>, object: &K, what: &str) -> Result<(), ClusterError>
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(ClusterError::api(format!("create {what}"))(e)),
    }
}

fn typed<K: DeserializeOwned>(doc: serde_json::Value, what: &str) -> Result<K, ClusterError> {
    serde_json::from_value(doc).map_err(|e| ClusterError::setup(format!("read {what}"), e))
}

/// The documents of a multi-document YAML file (empty documents skipped).
fn documents<K: DeserializeOwned>(file: &Path) -> Result<Vec<K>, ClusterError> {
    let text = std::fs::read_to_string(file).map_err(|e| ClusterError::io("read", file, e))?;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| ClusterError::setup(format!("parse {}", file.display()), e))?;
    docs.into_iter()
        .filter(|doc| !doc.is_null())
        .map(|doc| typed(doc, &file.display().to_string()))
        .collect()
}
