//! Data pods: a busybox container that mounts one claim (at /data, or as the device
//! /dev/csi-clone-data) and idles until the harness has run its commands in it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Volume, VolumeDevice, VolumeMount,
};
use kube::api::{Api, ObjectMeta, PostParams};

use super::claims::{join_events, kube_ref};
use super::wait::{events_of, until};
use super::{KubeKind, RUN_LABEL, VolumeMode};
use crate::case::{CaseResult, fail_with, harness_error};
use crate::context::CaseCtx;
use crate::ledger::Resource;

pub(crate) const MOUNT_PATH: &str = "/data";
pub(crate) const DEVICE_PATH: &str = "/dev/csi-clone-data";
pub(crate) const CONTAINER: &str = "data";

/// Event reasons that put a pod's failure on the volume (the driver), not the cluster.
const VOLUME_REASONS: &[&str] = &[
    "FailedMount",
    "FailedMapVolume",
    "FailedAttachVolume",
    "VolumeFailedMount",
];

/// A running data pod.
#[derive(Clone, Debug)]
pub struct DataPod {
    pub name: String,
    pub namespace: String,
    pub claim: String,
    pub mode: VolumeMode,
}

impl CaseCtx {
    /// Creates a pod using `claim` and returns at once: what makes a claim of a
    /// WaitForFirstConsumer class get provisioned. The case's cleanup removes it.
    pub async fn request_data_pod(&self, claim: &str, mode: VolumeMode) -> CaseResult<String> {
        self.request_pod(claim, mode).await.map(|(_, name)| name)
    }

    /// The pod's namespace and name. `claim` may be `namespace/name` for a claim in another
    /// namespace of this case (claim names cannot contain `/`).
    async fn request_pod(&self, claim: &str, mode: VolumeMode) -> CaseResult<(String, String)> {
        let cluster = self.cluster()?;
        let (namespace, claim) = match claim.split_once('/') {
            Some((namespace, claim)) => (namespace.to_string(), claim),
            None => (self.namespace().await?, claim),
        };
        let name = self.unique_name("pod");
        let pod = pod_object(
            &name,
            claim,
            mode,
            &cluster.pod_image,
            cluster.host_network,
            &self.settings().run_tag,
        );
        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &namespace);
        let created = self
            .api_call("create Pod", api.create(&PostParams::default(), &pod))
            .await?;
        self.record_kube(KubeKind::Pod, Some(&namespace), &created);
        Ok((namespace, name))
    }

    /// Starts a pod using `claim` and waits until it runs (so the volume is mounted or mapped).
    pub async fn start_data_pod(&self, claim: &str, mode: VolumeMode) -> CaseResult<DataPod> {
        let cluster = self.cluster()?;
        let (namespace, name) = self.request_pod(claim, mode).await?;
        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &namespace);
        let started =
            |p: Option<&Pod>| matches!(pod_phase(p), Some("Running" | "Failed" | "Succeeded"));
        let result = until(&api, &name, started, cluster.timeouts.pod).await;
        let phase = result
            .as_ref()
            .ok()
            .and_then(|p| pod_phase(Some(p)).map(str::to_string));
        if phase.as_deref() != Some("Running") {
            let events = events_of(&cluster.client, &namespace, "Pod", &name).await;
            let waited = match &result {
                Err(e) => e.to_string(),
                Ok(_) => format!("it ended in phase {}", phase.unwrap_or_default()),
            };
            let message = format!(
                "pod {name} using claim {claim} did not start ({waited}); events: {}",
                join_events(&events)
            );
            return Err(
                if events
                    .iter()
                    .any(|e| VOLUME_REASONS.iter().any(|r| e.contains(r)))
                {
                    fail_with(message, "the volume mounted in a pod", "mount failed")
                } else {
                    harness_error(message)
                },
            );
        }
        self.trace(format!(
            "k8s: pod {name} running with claim {claim} ({mode:?})"
        ));
        Ok(DataPod {
            name,
            namespace,
            claim: claim.to_string(),
            mode,
        })
    }

    /// Deletes a data pod and waits until it is gone: the kubelet has unmounted the volume.
    pub async fn stop_data_pod(&self, pod: &DataPod) -> CaseResult {
        let cluster = self.cluster()?;
        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &pod.namespace);
        let Some(object) = self.api_call("get Pod", api.get_opt(&pod.name)).await? else {
            return Ok(());
        };
        let object = kube_ref(KubeKind::Pod, Some(&pod.namespace), &object);
        super::remove(&cluster.client, &object, cluster.timeouts.delete)
            .await
            .map_err(|e| {
                fail_with(
                    format!(
                        "pod {} (claim {}) could not be removed",
                        pod.name, pod.claim
                    ),
                    "pod gone, volume unmounted",
                    e,
                )
            })?;
        self.ledger().forget(&Resource::Kube(object));
        self.trace(format!("k8s: pod {} gone", pod.name));
        Ok(())
    }

    /// The pod's events, for failures inside it.
    pub(crate) async fn pod_events(&self, pod: &DataPod) -> Vec<String> {
        match self.cluster() {
            Ok(cluster) => events_of(&cluster.client, &pod.namespace, "Pod", &pod.name).await,
            Err(_) => Vec::new(),
        }
    }
}

fn pod_object(
    name: &str,
    claim: &str,
    mode: VolumeMode,
    image: &str,
    host_network: bool,
    run_tag: &str,
) -> Pod {
    let (mounts, devices) = if mode.is_block() {
        (
            None,
            Some(vec![VolumeDevice {
                name: "volume".into(),
                device_path: DEVICE_PATH.into(),
            }]),
        )
    } else {
        (
            Some(vec![VolumeMount {
                name: "volume".into(),
                mount_path: MOUNT_PATH.into(),
                ..VolumeMount::default()
            }]),
            None,
        )
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                RUN_LABEL.to_string(),
                run_tag.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            host_network: Some(host_network),
            termination_grace_period_seconds: Some(1),
            containers: vec![Container {
                name: CONTAINER.into(),
                image: Some(image.to_string()),
                image_pull_policy: Some("IfNotPresent".into()),
                // Idles until deleted; exits at once on SIGTERM.
                command: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    "trap 'exit 0' TERM; sleep 86400 & wait".into(),
                ]),
                volume_mounts: mounts,
                volume_devices: devices,
                ..Container::default()
            }],
            volumes: Some(vec![Volume {
                name: "volume".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.to_string(),
                    read_only: None,
                }),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn pod_phase(pod: Option<&Pod>) -> Option<&str> {
    pod?.status.as_ref()?.phase.as_deref()
}
