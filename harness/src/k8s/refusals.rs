//! What a refused or dropped request looks like from outside: an API validation error at
//! create, an event with a reason and distinguishing words, a claim that stays unprovisioned.
//! Negative cases use these together with a positive control, so "Pending for some other
//! reason" never passes.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use super::claims::join_events;
use super::wait::events_of;
use super::{ClaimSpec, KubeKind};
use crate::case::{CaseResult, fail_with, harness_error};
use crate::context::CaseCtx;

/// An event a case waits for: its reason (empty: any) and words its message must contain.
#[derive(Clone, Copy, Debug)]
pub struct ExpectedEvent {
    pub reason: &'static str,
    pub words: &'static [&'static str],
}

impl ExpectedEvent {
    fn matches(&self, event: &Event) -> bool {
        let message = event.message.as_deref().unwrap_or("");
        (self.reason.is_empty() || event.reason.as_deref() == Some(self.reason))
            && self.words.iter().all(|w| message.contains(w))
    }

    fn describe(&self) -> String {
        format!("event {} with {:?}", self.reason, self.words)
    }
}

impl CaseCtx {
    /// Creates a claim the API server is expected to reject; returns the rejection's text
    /// ("422 Invalid: …"). A claim that is accepted is recorded (so it is removed) and fails.
    pub async fn claim_rejected(&self, spec: &ClaimSpec) -> CaseResult<String> {
        let namespace = self.namespace().await?;
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.cluster()?.client.clone(), &namespace);
        let claim = self.claim_object(spec);
        let limit = self.cluster()?.timeouts.call;
        let answer = tokio::time::timeout(limit, api.create(&PostParams::default(), &claim))
            .await
            .map_err(|_| {
                harness_error(format!(
                    "create PersistentVolumeClaim: no answer within {limit:?}"
                ))
            })?;
        match answer {
            Err(kube::Error::Api(status)) if (400..500).contains(&status.code) => {
                let text = format!("{} {}: {}", status.code, status.reason, status.message);
                self.trace(format!("k8s: claim {} rejected: {text}", claim.name_any()));
                Ok(text)
            }
            Err(e) => Err(harness_error(format!(
                "create PersistentVolumeClaim: {}",
                super::describe_kube_error(&e)
            ))),
            Ok(created) => {
                self.record_kube(KubeKind::PersistentVolumeClaim, Some(&namespace), &created);
                Err(fail_with(
                    format!("the API server accepted claim {}", created.name_any()),
                    "a validation error at create",
                    format!("created, spec {:?}", created.spec),
                ))
            }
        }
    }

    /// Watches the claim's events until one matches `expected`; returns its message. On
    /// timeout (the bind timeout) the failure lists the claim's phase and every event it got.
    pub async fn wait_claim_event(
        &self,
        claim: &str,
        expected: ExpectedEvent,
    ) -> CaseResult<String> {
        let cluster = self.cluster()?;
        let namespace = self.namespace().await?;
        let api: Api<Event> = Api::namespaced(cluster.client.clone(), &namespace);
        let selector =
            format!("involvedObject.kind=PersistentVolumeClaim,involvedObject.name={claim}");
        let config = watcher::Config::default().fields(&selector);
        let mut matching = watcher(api, config)
            .applied_objects()
            .try_filter(move |event| std::future::ready(expected.matches(event)))
            .boxed();
        match tokio::time::timeout(cluster.timeouts.bind, matching.try_next()).await {
            Ok(Ok(Some(event))) => {
                let message = event.message.unwrap_or_default();
                self.trace(format!(
                    "k8s: claim {claim} event {}: {message}",
                    expected.reason
                ));
                Ok(message)
            }
            Ok(Err(e)) => Err(harness_error(format!("watch events of {claim}: {e}"))),
            Ok(Ok(None)) | Err(_) => {
                let events =
                    events_of(&cluster.client, &namespace, "PersistentVolumeClaim", claim).await;
                let phase = self.claim_phase(claim).await?;
                Err(fail_with(
                    format!(
                        "claim {claim} never got the {} event within {:?}",
                        expected.reason, cluster.timeouts.bind
                    ),
                    expected.describe(),
                    format!("phase {phase}; events: {}", join_events(&events)),
                ))
            }
        }
    }

    /// The claim is Pending with no volume, and no PV claims it: nothing was provisioned.
    pub async fn ensure_unprovisioned(&self, claim: &str) -> CaseResult {
        let cluster = self.cluster()?;
        let namespace = self.namespace().await?;
        let phase = self.claim_phase(claim).await?;
        let current = self.get_claim(claim).await?;
        let volume_name = current
            .as_ref()
            .and_then(|c| c.spec.as_ref())
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        let volumes: Api<PersistentVolume> = Api::all(cluster.client.clone());
        let list = self
            .api_call(
                "list PersistentVolumes",
                volumes.list(&ListParams::default()),
            )
            .await?;
        let claiming: Vec<String> = list
            .items
            .iter()
            .filter(|pv| {
                pv.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .is_some_and(|r| {
                        r.name.as_deref() == Some(claim)
                            && r.namespace.as_deref() == Some(namespace.as_str())
                    })
            })
            .map(|pv| pv.name_any())
            .collect();
        if phase == "Pending" && volume_name.is_empty() && claiming.is_empty() {
            self.trace(format!("k8s: claim {claim} Pending, no volume provisioned"));
            return Ok(());
        }
        let events = events_of(&cluster.client, &namespace, "PersistentVolumeClaim", claim).await;
        Err(fail_with(
            format!("claim {claim} was provisioned although the request breaks the rule"),
            "phase Pending, no PersistentVolume",
            format!(
                "phase {phase}, volumeName {volume_name:?}, PVs {claiming:?}; events: {}",
                join_events(&events)
            ),
        ))
    }

    /// The claim's phase now ("gone" when it does not exist).
    pub async fn claim_phase(&self, claim: &str) -> CaseResult<String> {
        Ok(match self.get_claim(claim).await? {
            None => "gone".to_string(),
            Some(c) => c
                .status
                .and_then(|s| s.phase)
                .unwrap_or_else(|| "unknown".to_string()),
        })
    }
}
