//! Tear-down: first through the API (pods, snapshots, claims, volumes, so the kubelet unmounts
//! and the driver deletes what it made), then every process by pid in reverse start order,
//! then a sweep of whatever is left below the run directory, then the host snapshot restored.
//! Every wait is bounded; what could not be done is reported, never hidden.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::cluster::LocalCluster;
use crate::host;

/// How long the API phase may take in all, per object kind.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// SIGTERM grace per process.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What tear-down did and what it could not do.
#[derive(Clone, Debug, Default)]
pub struct TeardownReport {
    pub steps: Vec<String>,
    problems: Vec<String>,
}

impl TeardownReport {
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    fn problem(&mut self, line: impl Into<String>) {
        self.problems.push(line.into());
    }
}

pub(crate) async fn shutdown(cluster: &mut LocalCluster) -> TeardownReport {
    let mut report = TeardownReport::default();
    if cluster.down {
        return report;
    }
    if let Some(client) = cluster.client.clone() {
        drain_api(&client, &mut report).await;
    }
    let rest = stop_and_sweep(cluster);
    report.steps.extend(rest.steps);
    report.problems.extend(rest.problems);
    report
}

/// Deletes every pod, claim and volume of the cluster (all of it is the run's) and waits for
/// them to be gone: a pod is gone only once the kubelet has unmounted its volumes, a PV once the
/// provisioner has deleted the volume.
async fn drain_api(client: &Client, report: &mut TeardownReport) {
    let namespaced = |client, ns: Option<&str>| match ns {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let grace = DeleteParams::default().grace_period(1);
    drain_any::<Pod>(client, report, grace, namespaced).await;
    drain_any::<PersistentVolumeClaim>(client, report, DeleteParams::default(), |client, ns| {
        match ns {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    })
    .await;
    drain_any::<PersistentVolume>(client, report, DeleteParams::default(), |client, _| {
        Api::all(client)
    })
    .await;
}

async fn drain_any<K>(
    client: &Client,
    report: &mut TeardownReport,
    params: DeleteParams,
    api_for: impl Fn(Client, Option<&str>) -> Api<K>,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let all = api_for(client.clone(), None);
    let objects = match tokio::time::timeout(DRAIN_LIMIT, all.list(&ListParams::default())).await {
        Ok(Ok(list)) => list.items,
        Ok(Err(e)) => return report.problem(format!("list {kind}s: {e}")),
        Err(_) => return report.problem(format!("list {kind}s: no answer within {DRAIN_LIMIT:?}")),
    };
    let mut waits = Vec::new();
    for object in &objects {
        let (name, ns, uid) = (
            object.name_any(),
            object.namespace(),
            object.uid().unwrap_or_default(),
        );
        let api = api_for(client.clone(), ns.as_deref());
        if let Err(e) = api.delete(&name, &params).await
            && !matches!(&e, kube::Error::Api(s) if s.code == 404)
        {
            report.problem(format!("delete {kind} {name}: {e}"));
            continue;
        }
        waits.push(async move {
            let result = {
                let gone = await_condition(api, &name, conditions::is_deleted(&uid));
                tokio::time::timeout(DRAIN_LIMIT, gone).await
            };
            (name, result)
        });
    }
    for (name, result) in futures::future::join_all(waits).await {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => report.problem(format!("watch {kind} {name}: {e}")),
            Err(_) => report.problem(format!("{kind} {name} still present after {DRAIN_LIMIT:?}")),
        }
    }
    if !objects.is_empty() {
        report
            .steps
            .push(format!("deleted {} {kind}(s)", objects.len()));
    }
}

/// Stops every process (reverse start order), sweeps the run directory, restores the host and
/// removes the run directory. Synchronous, so `Drop` can use it too.
pub(crate) fn stop_and_sweep(cluster: &mut LocalCluster) -> TeardownReport {
    let mut report = TeardownReport::default();
    cluster.down = true;
    // Removing the registration socket deregisters the driver before the kubelet goes.
    cluster.registrar = None;
    cluster.client = None;
    while let Some(mut process) = cluster.processes.pop() {
        let how = process.stop(STOP_GRACE);
        report
            .steps
            .push(format!("{} (pid {}) {how}", process.name, process.pid()));
    }
    let root = cluster.layout.root.clone();
    let sweep = host::sweep(&root);
    report.steps.extend(sweep.done());
    report.problems.extend(sweep.failures());
    if let Some(snapshot) = &cluster.snapshot {
        let restore = snapshot.restore();
        report.steps.extend(restore.done());
        report.problems.extend(restore.failures());
        report.problems.extend(host::leftovers(&root, snapshot));
    }
    if report.problems.is_empty() {
        if let Err(e) = std::fs::remove_dir_all(&root) {
            report.problem(format!("remove {}: {e}", root.display()));
        }
    } else {
        report.problem(format!("kept {} to look at", root.display()));
    }
    report
}
