//! VolumeSnapshots as a user makes them: one of a claim, in the run's VolumeSnapshotClass,
//! awaited until `status.readyToUse`; restores are claims whose dataSource names it.

use k8s_openapi::api::core::v1::TypedLocalObjectReference;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, PostParams};

use super::classes::labelled;
use super::wait::{events_of, until};
use super::{ClaimSpec, DataSourceField, KubeKind, claims::join_events};
use crate::case::{CaseResult, fail_with, harness_error};
use crate::context::CaseCtx;

/// The API group of VolumeSnapshot.
pub const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";

impl ClaimSpec {
    /// A restore of the VolumeSnapshot `snapshot` (same namespace) through `spec.dataSource`.
    pub fn restoring(self, snapshot: &str) -> ClaimSpec {
        self.with_source(DataSourceField::DataSource(TypedLocalObjectReference {
            api_group: Some(SNAPSHOT_GROUP.into()),
            kind: "VolumeSnapshot".into(),
            name: snapshot.to_string(),
        }))
    }
}

impl CaseCtx {
    /// Takes a VolumeSnapshot of `claim` in the run's class and waits until it is ready to use.
    pub async fn snapshot_claim(&self, claim: &str) -> CaseResult<String> {
        let cluster = self.cluster()?;
        let class = cluster.snapshot_class.clone().ok_or_else(|| {
            harness_error("no VolumeSnapshotClass: the profile declares no snapshot support")
        })?;
        let namespace = self.namespace().await?;
        let resource = KubeKind::VolumeSnapshot.api_resource();
        let api: Api<DynamicObject> =
            Api::namespaced_with(cluster.client.clone(), &namespace, &resource);
        let name = self.unique_name("snap");
        let mut object = DynamicObject::new(&name, &resource);
        object.metadata = labelled(&name, &self.settings().run_tag);
        object.data = serde_json::json!({
            "spec": {
                "volumeSnapshotClassName": class,
                "source": { "persistentVolumeClaimName": claim },
            }
        });
        let created = self
            .api_call(
                "create VolumeSnapshot",
                api.create(&PostParams::default(), &object),
            )
            .await?;
        self.record_kube(KubeKind::VolumeSnapshot, Some(&namespace), &created);
        let ready = |s: Option<&DynamicObject>| ready_to_use(s) == Some(true);
        if let Err(e) = until(&api, &name, ready, cluster.timeouts.bind).await {
            let now = api.get_opt(&name).await.ok().flatten();
            let events = events_of(&cluster.client, &namespace, "VolumeSnapshot", &name).await;
            return Err(fail_with(
                format!("VolumeSnapshot {name} of claim {claim} did not become ready ({e})"),
                "status.readyToUse true",
                format!(
                    "status {}; events: {}",
                    now.map(|s| s.data["status"].to_string())
                        .unwrap_or_else(|| "gone".into()),
                    join_events(&events)
                ),
            ));
        }
        self.trace(format!("k8s: VolumeSnapshot {name} of {claim} ready"));
        Ok(created.name_any())
    }
}

fn ready_to_use(snapshot: Option<&DynamicObject>) -> Option<bool> {
    snapshot?.data.get("status")?.get("readyToUse")?.as_bool()
}
