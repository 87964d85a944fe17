//! Tear-down: first through the API (pods, snapshots, claims, volumes, so the kubelet unmounts
//! and the driver deletes what it made), then every process by pid in reverse start order,
//! then a sweep of whatever of the run is left (recorded processes and their descendants,
//! mounts and loop devices of the run directory), then the host snapshot restored, whatever
//! the steps before managed. Every wait is bounded; what could not be done is reported, never
//! hidden, and the run's record is kept so that a later run or `local-cluster clean` retries.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::host::{self, Adopter, LiveRecord};
use crate::process::Process;

/// How long each kind's deletions may take in the API phase.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// How long the whole API phase may take.
const DRAIN_TOTAL: Duration = Duration::from_secs(150);
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

    pub(crate) fn extend(&mut self, other: TeardownReport) {
        self.steps.extend(other.steps);
        self.problems.extend(other.problems);
    }
}

/// The API phase, bounded as a whole by [`DRAIN_TOTAL`].
pub(crate) async fn drain(client: &Client) -> TeardownReport {
    let mut report = TeardownReport::default();
    if tokio::time::timeout(DRAIN_TOTAL, drain_api(client, &mut report))
        .await
        .is_err()
    {
        report.problem(format!(
            "the API phase did not finish within {DRAIN_TOTAL:?}; going on with the processes"
        ));
    }
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
        match tokio::time::timeout(DRAIN_LIMIT, api.delete(&name, &params)).await {
            Ok(Ok(_)) => {}
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => {}
            Ok(Err(e)) => {
                report.problem(format!("delete {kind} {name}: {e}"));
                continue;
            }
            Err(_) => {
                report.problem(format!(
                    "delete {kind} {name}: no answer within {DRAIN_LIMIT:?}"
                ));
                continue;
            }
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

/// What of the run the process phase works from.
pub(crate) struct Remains<'a> {
    /// Started processes, in start order (stopped in reverse, and taken).
    pub processes: &'a mut Vec<Process>,
    pub record: Option<&'a LiveRecord>,
    pub adopter: Option<Adopter>,
    pub root: &'a Path,
}

/// Stops every process (reverse start order), sweeps the run, restores the host and removes
/// the run directory and the run's record. Synchronous, so `Drop` can use it too.
pub(crate) fn stop_and_sweep(mut remains: Remains<'_>) -> TeardownReport {
    let mut report = TeardownReport::default();
    if let Some(adopter) = &remains.adopter {
        adopter.scan_now();
    }
    while let Some(mut process) = remains.processes.pop() {
        match process.stop(STOP_GRACE) {
            Ok(how) => report
                .steps
                .push(format!("{} (pid {}) {how}", process.name, process.pid())),
            Err(problem) => report.problem(problem),
        }
    }
    if let Some(mut adopter) = remains.adopter.take() {
        adopter.scan_now();
        adopter.stop();
    }
    let Some(record) = remains.record else {
        return report;
    };
    let run = record.get();
    let owned = run.process_ids();
    let sweep = host::sweep(remains.root, &owned);
    report.steps.extend(sweep.done());
    report.problems.extend(sweep.failures());
    let restore = run.snapshot.restore();
    report.steps.extend(restore.done());
    report.problems.extend(restore.failures());
    report
        .problems
        .extend(host::leftovers(remains.root, &owned, &run.snapshot));
    finish(remains.root, record, &mut report);
    report
}

/// Removes the run directory and then the record, only when nothing is left to retry.
fn finish(root: &Path, record: &LiveRecord, report: &mut TeardownReport) {
    if report.problems.is_empty()
        && let Err(e) = remove_root(root)
    {
        report.problem(format!("remove {}: {e}", root.display()));
    }
    if report.problems.is_empty() {
        if let Err(e) = record.remove() {
            report.problem(format!("remove the run record: {e}"));
        }
    } else {
        report.problem(format!(
            "kept {} to look at, and the run record {} so that the next run (or \
             `csi-clone-conformance local-cluster clean`) finishes the clean-up",
            root.display(),
            record.path().display()
        ));
    }
}

fn remove_root(root: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        _ => host::remove_tree(root),
    }
}
