//! Deleting a claim while something still holds it: the request is made and the case goes on
//! (the claim stays, Terminating, under a finalizer); later the case waits for it to go, or
//! checks that it has not gone yet.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};

use super::wait::{WaitError, until_gone};
use crate::case::{CaseResult, fail_with};
use crate::context::CaseCtx;

impl CaseCtx {
    /// Asks the API server to delete a claim of this case and returns at once. The ledger
    /// keeps the claim, so the case's cleanup still waits for it.
    pub async fn request_delete_claim(&self, claim: &PersistentVolumeClaim) -> CaseResult {
        let cluster = self.cluster()?;
        let namespace = self.namespace().await?;
        let api: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), &namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: claim.uid(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        self.api_call(
            "delete PersistentVolumeClaim",
            api.delete(&claim.name_any(), &params),
        )
        .await?;
        self.trace(format!("k8s: claim {} delete requested", claim.name_any()));
        Ok(())
    }

    /// Whether the claim has gone within `limit` (the profile's delete timeout when `None`).
    pub async fn claim_gone_within(
        &self,
        claim: &PersistentVolumeClaim,
        limit: Option<std::time::Duration>,
    ) -> CaseResult<bool> {
        let cluster = self.cluster()?;
        let namespace = self.namespace().await?;
        let api: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), &namespace);
        let uid = claim.uid().unwrap_or_default();
        let limit = limit.unwrap_or(cluster.timeouts.delete);
        match until_gone(&api, &claim.name_any(), &uid, limit).await {
            Ok(()) => {
                self.trace(format!("k8s: claim {} gone", claim.name_any()));
                Ok(true)
            }
            Err(WaitError::Timeout(_)) => Ok(false),
            Err(e) => Err(fail_with(
                format!("watching claim {} failed", claim.name_any()),
                "a watch",
                e.to_string(),
            )),
        }
    }
}
