//! ReferenceGrants (gateway.networking.k8s.io/v1beta1): what lets a claim in one namespace
//! name a claim of another in `dataSourceRef` once the CrossNamespaceVolumeDataSource gate is
//! on. Made in the source's namespace, which the case created, so removing that namespace
//! removes the grant.

use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;

use super::classes::labelled;
use crate::case::CaseResult;
use crate::context::CaseCtx;

impl CaseCtx {
    /// Grants claims of `from` read access to the claims of `to` (a namespace of this case).
    pub async fn grant_claims(&self, from: &str, to: &str) -> CaseResult<String> {
        let cluster = self.cluster()?;
        let gvk = kube::api::GroupVersionKind::gvk(
            "gateway.networking.k8s.io",
            "v1beta1",
            "ReferenceGrant",
        );
        let resource = ApiResource::from_gvk_with_plural(&gvk, "referencegrants");
        let api: Api<DynamicObject> = Api::namespaced_with(cluster.client.clone(), to, &resource);
        let name = self.unique_name("grant");
        let mut grant = DynamicObject::new(&name, &resource);
        grant.metadata = labelled(&name, &self.settings().run_tag);
        grant.data = serde_json::json!({
            "spec": {
                "from": [{ "group": "", "kind": "PersistentVolumeClaim", "namespace": from }],
                "to": [{ "group": "", "kind": "PersistentVolumeClaim" }],
            }
        });
        self.api_call(
            "create ReferenceGrant",
            api.create(&PostParams::default(), &grant),
        )
        .await?;
        self.trace(format!(
            "k8s: ReferenceGrant {to}/{name}: claims of {from} may name claims here"
        ));
        Ok(name)
    }
}
