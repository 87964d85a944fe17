//! Growing a claim after the fact: a larger request patched in, the controller side (the
//! resizer's ControllerExpandVolume) awaited on the PV; the node side happens when a pod
//! next mounts the volume, and shows in the claim's `status.capacity`.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, Patch, PatchParams};

use super::claims::join_events;
use super::quantity_bytes;
use super::wait::{events_of, until};
use crate::case::{CaseResult, fail_with};
use crate::context::CaseCtx;

impl CaseCtx {
    /// Asks for `size` bytes on a bound claim and waits until its PV has at least that much.
    pub async fn expand_claim(&self, claim: &str, size: u64) -> CaseResult {
        let cluster = self.cluster()?;
        let namespace = self.namespace().await?;
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(cluster.client.clone(), &namespace);
        let patch = serde_json::json!({
            "spec": { "resources": { "requests": { "storage": size.to_string() } } }
        });
        let patched = self
            .api_call(
                "patch PersistentVolumeClaim",
                claims.patch(claim, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await?;
        self.trace(format!("k8s: claim {claim} request raised to {size}"));
        let volume = patched.spec.and_then(|s| s.volume_name).unwrap_or_default();
        let volumes: Api<PersistentVolume> = Api::all(cluster.client.clone());
        let grown = move |pv: Option<&PersistentVolume>| pv_bytes(pv).is_some_and(|b| b >= size);
        if let Err(e) = until(&volumes, &volume, grown, cluster.timeouts.bind).await {
            let events =
                events_of(&cluster.client, &namespace, "PersistentVolumeClaim", claim).await;
            let now = volumes.get_opt(&volume).await.ok().flatten();
            return Err(fail_with(
                format!("the volume {volume} of claim {claim} did not grow ({e})"),
                format!("PV capacity >= {size}"),
                format!(
                    "PV capacity {:?}; claim events: {}",
                    pv_bytes(now.as_ref()),
                    join_events(&events)
                ),
            ));
        }
        self.trace(format!("k8s: volume {volume} capacity >= {size}"));
        Ok(())
    }

    /// `status.capacity` of a claim, in bytes.
    pub async fn claim_capacity(&self, claim: &str) -> CaseResult<Option<u64>> {
        Ok(self.get_claim(claim).await?.and_then(|c| {
            let capacity = c.status?.capacity?;
            quantity_bytes(&capacity.get("storage")?.0)
        }))
    }
}

fn pv_bytes(pv: Option<&PersistentVolume>) -> Option<u64> {
    let capacity = pv?.spec.as_ref()?.capacity.as_ref()?;
    quantity_bytes(&capacity.get("storage")?.0)
}
