//! Waits on the cluster: a watch for a condition, bounded by a profile timeout, never a sleep.
//! On timeout the caller gets the object's last state and its events to put in the verdict.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

/// Why a wait ended without the condition.
pub(crate) enum WaitError {
    Timeout(Duration),
    Watch(String),
}

impl std::fmt::Display for WaitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitError::Timeout(limit) => write!(f, "not within {limit:?}"),
            WaitError::Watch(e) => write!(f, "the watch failed: {e}"),
        }
    }
}

/// Watches `name` until `condition` holds (returns the object) or `limit` passes.
pub(crate) async fn until<K>(
    api: &Api<K>,
    name: &str,
    condition: impl Condition<K>,
    limit: Duration,
) -> Result<K, WaitError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    match tokio::time::timeout(limit, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(Some(object))) => Ok(object),
        Ok(Ok(None)) => Err(WaitError::Watch(format!("{name} was deleted"))),
        Ok(Err(e)) => Err(WaitError::Watch(e.to_string())),
        Err(_) => Err(WaitError::Timeout(limit)),
    }
}

/// Watches `name` until the object with `uid` is gone, or `limit` passes.
pub(crate) async fn until_gone<K>(
    api: &Api<K>,
    name: &str,
    uid: &str,
    limit: Duration,
) -> Result<(), WaitError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let gone = await_condition(
        api.clone(),
        name,
        kube::runtime::wait::conditions::is_deleted(uid),
    );
    match tokio::time::timeout(limit, gone).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(WaitError::Watch(e.to_string())),
        Err(_) => Err(WaitError::Timeout(limit)),
    }
}

/// `Reason: message` lines of the events about one object, oldest first.
pub(crate) async fn events_of(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let selector = format!("involvedObject.kind={kind},involvedObject.name={name}");
    let Ok(list) = api.list(&ListParams::default().fields(&selector)).await else {
        return vec!["(events could not be listed)".to_string()];
    };
    let mut events = list.items;
    events.sort_by_key(|e| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or(e.event_time.as_ref().map(|t| t.0))
    });
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}: {}",
                e.type_.as_deref().unwrap_or(""),
                e.reason.as_deref().unwrap_or(""),
                e.message.as_deref().unwrap_or("").trim()
            )
        })
        .collect()
}
