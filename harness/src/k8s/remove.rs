//! Deleting what the run created: by uid (a precondition, so a foreign object of the same name
//! is refused by the API server), then waiting for it to be gone. A namespace is gone only once
//! the volumes provisioned for its claims are gone too: a PV left behind is the driver's leak.

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Preconditions};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};

use super::{KubeKind, KubeRef, describe_kube_error, is_not_found};

/// Deletes `object` and waits until it is gone. NotFound is done.
pub(crate) async fn remove(
    client: &Client,
    object: &KubeRef,
    limit: Duration,
) -> Result<(), String> {
    let resource = object.kind.api_resource();
    let api: Api<DynamicObject> = match &object.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(object.uid.clone()),
            resource_version: None,
        }),
        // Pods of the harness do nothing on SIGTERM worth waiting for.
        grace_period_seconds: (object.kind == KubeKind::Pod).then_some(1),
        ..DeleteParams::background()
    };
    match tokio::time::timeout(limit, api.delete(&object.name, &params)).await {
        Err(_) => return Err(format!("delete: no answer within {limit:?}")),
        Ok(Err(e)) if is_not_found(&e) => return Ok(()),
        // 409: the uid precondition failed, so the name now belongs to another object.
        Ok(Err(kube::Error::Api(s))) if s.code == 409 => return Ok(()),
        Ok(Err(e)) => return Err(format!("delete: {}", describe_kube_error(&e))),
        Ok(Ok(_)) => {}
    }
    let gone = await_condition(api, &object.name, conditions::is_deleted(&object.uid));
    match tokio::time::timeout(limit, gone).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("watch for deletion: {e}")),
        Err(_) => return Err(format!("still present {limit:?} after deletion")),
    }
    if object.kind == KubeKind::Namespace {
        volumes_of_namespace_gone(client, &object.name, limit).await?;
    }
    Ok(())
}

/// Waits for every PV whose claim lived in `namespace` to be deleted (reclaim policy Delete:
/// the provisioner calls DeleteVolume, then removes the PV).
async fn volumes_of_namespace_gone(
    client: &Client,
    namespace: &str,
    limit: Duration,
) -> Result<(), String> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let volumes = tokio::time::timeout(limit, api.list(&ListParams::default()))
        .await
        .map_err(|_| format!("list PersistentVolumes: no answer within {limit:?}"))?
        .map_err(|e| format!("list PersistentVolumes: {}", describe_kube_error(&e)))?;
    let ours: Vec<PersistentVolume> = volumes
        .items
        .into_iter()
        .filter(|pv| claim_namespace(pv) == Some(namespace))
        .collect();
    let mut left = Vec::new();
    for pv in ours {
        let name = pv.name_any();
        if pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            == Some("Retain")
        {
            left.push(format!(
                "PersistentVolume {name} has reclaimPolicy Retain: its volume stays on the backend (delete it by hand)"
            ));
            continue;
        }
        let uid = pv.uid().unwrap_or_default();
        let gone = await_condition(api.clone(), &name, conditions::is_deleted(&uid));
        if !matches!(tokio::time::timeout(limit, gone).await, Ok(Ok(_))) {
            let phase = tokio::time::timeout(limit, api.get_opt(&name))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .and_then(|pv| pv.status.and_then(|s| s.phase))
                .unwrap_or_default();
            left.push(format!(
                "PersistentVolume {name} (claim in {namespace}) not deleted within {limit:?}, phase {phase}: the provisioner could not delete the volume"
            ));
        }
    }
    if left.is_empty() {
        Ok(())
    } else {
        Err(left.join("; "))
    }
}

fn claim_namespace(pv: &PersistentVolume) -> Option<&str> {
    pv.spec.as_ref()?.claim_ref.as_ref()?.namespace.as_deref()
}
