//! The run's record of everything it created. Every create goes through `CaseCtx`, which
//! records here; cleanup walks the record LIFO (publish before stage before volume, clones
//! before sources), treats NotFound as done and collects every failure. Nothing that is not
//! in the ledger is ever deleted. Every removal has a deadline: a driver or API server that
//! never answers costs one deadline per entry, never a hung run.

use crate::profile::{SecretCall, Secrets};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use csi_proto::v1 as csi;
use tonic::Code;

use crate::context::CsiHandles;
use crate::k8s::KubeRef;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    Volume {
        id: String,
    },
    Snapshot {
        id: String,
    },
    Staged {
        volume_id: String,
        staging_path: PathBuf,
    },
    Published {
        volume_id: String,
        target_path: PathBuf,
    },
    /// ControllerPublished to a node; removed by ControllerUnpublishVolume.
    Attached {
        volume_id: String,
        node_id: String,
    },
    /// A Kubernetes object (namespace, claim, pod, class, snapshot).
    Kube(KubeRef),
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Volume { id } => write!(f, "volume {id}"),
            Resource::Snapshot { id } => write!(f, "snapshot {id}"),
            Resource::Attached { volume_id, node_id } => {
                write!(
                    f,
                    "volume {volume_id} ControllerPublished to node {node_id}"
                )
            }
            Resource::Staged {
                volume_id,
                staging_path,
            } => {
                write!(f, "volume {volume_id} staged at {}", staging_path.display())
            }
            Resource::Published {
                volume_id,
                target_path,
            } => {
                write!(
                    f,
                    "volume {volume_id} published at {}",
                    target_path.display()
                )
            }
            Resource::Kube(object) => write!(f, "{object}"),
        }
    }
}

/// Shared by all cases of a run; entries carry the index of the case that made them.
pub struct Ledger {
    entries: Mutex<Vec<(usize, Resource)>>,
    leaked: Mutex<Vec<Resource>>,
    /// Set on Ctrl-C: cases make no new calls, so the final cleanup sees everything.
    stopping: AtomicBool,
    /// Set when the target stopped answering (at which case, and why): no new calls either,
    /// and nothing is sent to remove CSI objects from a target that cannot answer.
    lost: Mutex<Option<String>>,
    in_flight: AtomicUsize,
    csi: Option<CsiHandles>,
    kube: Option<KubeCleanup>,
    secrets: Secrets,
    /// Deadline of one CSI removal call.
    call_timeout: Duration,
}

/// Deadline of one CSI removal call when the profile gives none: the profile's default
/// `rpc_secs`.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How the ledger removes Kubernetes objects: the client and how long a deletion may take.
#[derive(Clone)]
pub struct KubeCleanup {
    pub client: kube::Client,
    pub delete_timeout: Duration,
}

impl Ledger {
    pub fn new(csi: Option<CsiHandles>, kube: Option<KubeCleanup>, secrets: Secrets) -> Ledger {
        Ledger {
            entries: Mutex::new(Vec::new()),
            leaked: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            lost: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            csi,
            kube,
            secrets,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Sets the deadline of each CSI removal call (the profile's `rpc_secs`).
    pub fn with_call_timeout(mut self, limit: Duration) -> Ledger {
        self.call_timeout = limit;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(usize, Resource)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A case's call may start: `None` once the run is stopping. Drop the ticket when the
    /// call (and its recording) is done.
    pub fn call_ticket(&self) -> Option<CallTicket<'_>> {
        if self.stopping.load(Ordering::SeqCst) || self.lost().is_some() {
            return None;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Some(CallTicket { ledger: self })
    }

    /// Refuses new calls and waits (up to `limit`) for calls in flight to finish and record.
    pub async fn quiesce(&self, limit: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let started = Instant::now();
        while self.in_flight.load(Ordering::SeqCst) > 0 && started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A finished call records its result right after returning: give that a moment.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Records that the target was lost; `false` if it already was (the first cause stays).
    pub fn mark_lost(&self, cause: String) -> bool {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        let first = lost.is_none();
        lost.get_or_insert(cause);
        first
    }

    pub fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn record(&self, owner: usize, resource: Resource) {
        self.lock().push((owner, resource));
    }

    /// The resource is gone (the case removed it itself).
    pub fn forget(&self, resource: &Resource) {
        let mut entries = self.lock();
        if let Some(at) = entries.iter().rposition(|(_, r)| r == resource) {
            entries.remove(at);
        }
    }

    /// Whether `resource` is recorded (a replay returns what the first answer recorded).
    pub fn holds(&self, resource: &Resource) -> bool {
        self.lock().iter().any(|(_, r)| r == resource)
    }

    pub fn volume_ids(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter_map(|(_, r)| match r {
                Resource::Volume { id } => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    /// Removes what `owner` (or, with `None`, anyone) left, newest first. Returns one message
    /// per resource that could not be removed; those stay recorded as leaks.
    pub async fn cleanup(&self, owner: Option<usize>) -> Vec<String> {
        self.cleanup_until(owner, None).await
    }

    /// [`Ledger::cleanup`] that starts no removal after `deadline` and gives each one at most
    /// the time left: what it did not reach stays in [`Ledger::pending`].
    pub async fn cleanup_until(
        &self,
        owner: Option<usize>,
        deadline: Option<Instant>,
    ) -> Vec<String> {
        let mut failures = Vec::new();
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|left| left.is_zero()) {
                break;
            }
            let next = {
                let entries = self.lock();
                entries
                    .iter()
                    .rposition(|(o, _)| owner.is_none_or(|want| *o == want))
                    .map(|at| (at, entries[at].1.clone()))
            };
            let Some((at, resource)) = next else { break };
            let result = self.remove(&resource, left).await;
            let mut entries = self.lock();
            // Found again by value: a case may have changed the record meanwhile.
            let now_at = match entries.get(at) {
                Some((_, r)) if *r == resource => Some(at),
                _ => entries.iter().rposition(|(_, r)| *r == resource),
            };
            let removed = now_at.map(|at| entries.remove(at).1);
            drop(entries);
            if let Err(message) = result {
                failures.push(format!("{resource}: {message}"));
                // Out of this walk, but remembered as a leak.
                self.leaked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(removed);
            }
        }
        failures
    }

    /// Everything recorded and not removed yet (newest first), and what failed to go.
    pub fn pending(&self) -> Vec<String> {
        let mut left: Vec<String> = self
            .lock()
            .iter()
            .rev()
            .map(|(_, r)| r.to_string())
            .collect();
        left.extend(
            self.leaked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|r| format!("{r} (removal failed)")),
        );
        left
    }

    /// Removes one resource within its deadline (and within `left`, the cleanup's budget).
    async fn remove(&self, resource: &Resource, left: Option<Duration>) -> Result<(), String> {
        let cap = |limit: Duration| left.map_or(limit, |left| limit.min(left));
        if let Resource::Kube(object) = resource {
            let Some(kube) = &self.kube else {
                return Err("no Kubernetes client to remove it with".into());
            };
            let limit = cap(kube.delete_timeout);
            // Each step of a removal has `limit`; the whole removal gets a few of them.
            return match tokio::time::timeout(
                limit * 4,
                crate::k8s::remove(&kube.client, object, limit),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(format!("not removed within {:?}", limit * 4)),
            };
        }
        if let Some(lost) = self.lost() {
            return Err(format!("not removed: the target was lost {lost}"));
        }
        let limit = cap(self.call_timeout);
        match tokio::time::timeout(limit, self.remove_csi(resource)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {limit:?} (harness timeout)")),
        }
    }

    async fn remove_csi(&self, resource: &Resource) -> Result<(), String> {
        let Some(handles) = &self.csi else {
            return Err("no CSI endpoint to remove it with".into());
        };
        let result = match resource {
            Resource::Kube(_) => unreachable!("handled above"),
            Resource::Published {
                volume_id,
                target_path,
            } => handles
                .node
                .node
                .clone()
                .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                    volume_id: volume_id.clone(),
                    target_path: target_path.display().to_string(),
                })
                .await
                .map(drop),
            Resource::Staged {
                volume_id,
                staging_path,
            } => {
                let result = handles
                    .node
                    .node
                    .clone()
                    .node_unstage_volume(csi::NodeUnstageVolumeRequest {
                        volume_id: volume_id.clone(),
                        staging_target_path: staging_path.display().to_string(),
                    })
                    .await
                    .map(drop);
                if result.is_ok() {
                    // The harness made the staging directory (the CO's job), so it removes it.
                    let _ = std::fs::remove_dir(staging_path);
                }
                result
            }
            Resource::Attached { volume_id, node_id } => handles
                .controller
                .controller
                .clone()
                .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
                    volume_id: volume_id.clone(),
                    node_id: node_id.clone(),
                    secrets: self.secrets.for_call(SecretCall::ControllerUnpublishVolume),
                })
                .await
                .map(drop),
            Resource::Snapshot { id } => handles
                .controller
                .controller
                .clone()
                .delete_snapshot(csi::DeleteSnapshotRequest {
                    snapshot_id: id.clone(),
                    secrets: self.secrets.for_call(SecretCall::DeleteSnapshot),
                })
                .await
                .map(drop),
            Resource::Volume { id } => handles
                .controller
                .controller
                .clone()
                .delete_volume(csi::DeleteVolumeRequest {
                    volume_id: id.clone(),
                    secrets: self.secrets.for_call(SecretCall::DeleteVolume),
                })
                .await
                .map(drop),
        };
        match result {
            Ok(()) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
        }
    }

    /// Resources whose removal failed, for the leak report.
    pub fn leaks(&self) -> Vec<String> {
        let mut leaks: Vec<String> = self
            .leaked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|r| r.to_string())
            .collect();
        leaks.extend(self.lock().iter().map(|(_, r)| r.to_string()));
        leaks
    }
}

/// One case call in flight (see [`Ledger::call_ticket`]).
pub struct CallTicket<'a> {
    ledger: &'a Ledger,
}

impl Drop for CallTicket<'_> {
    fn drop(&mut self) {
        self.ledger.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::{KubeKind, KubeRef};
    use crate::silent_driver::SilentDriver;

    #[tokio::test]
    async fn a_removal_against_a_driver_that_never_answers_ends_at_its_deadline() {
        let driver = SilentDriver::start().await;
        let ledger = driver.ledger(Duration::from_millis(300)).await;
        ledger.record(0, Resource::Volume { id: "v-1".into() });
        ledger.record(
            0,
            Resource::Staged {
                volume_id: "v-1".into(),
                staging_path: driver.dir().join("staging"),
            },
        );
        let started = Instant::now();
        let failures = ledger.cleanup(None).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(
            failures
                .iter()
                .all(|f| f.contains("no answer within 300ms")),
            "{failures:?}"
        );
        assert_eq!(ledger.leaks().len(), 2);
    }

    #[tokio::test]
    async fn a_kubernetes_deletion_against_an_api_server_that_never_answers_ends_at_its_deadline() {
        // Accepts connections and never answers a request.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let config = kube::Config::new(format!("http://{address}").parse().unwrap());
        let kube = KubeCleanup {
            client: kube::Client::try_from(config).unwrap(),
            delete_timeout: Duration::from_millis(300),
        };
        let ledger = Ledger::new(None, Some(kube), Default::default());
        let claim = KubeRef {
            kind: KubeKind::PersistentVolumeClaim,
            namespace: Some("ns".into()),
            name: "claim".into(),
            uid: "uid-1".into(),
        };
        ledger.record(0, Resource::Kube(claim));
        let started = Instant::now();
        let failures = ledger
            .cleanup_until(None, Some(Instant::now() + Duration::from_secs(60)))
            .await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].contains("no answer within 300ms"),
            "{failures:?}"
        );
    }
}
