//! The run's record of everything it created. Every create goes through `CaseCtx`, which
//! records here; cleanup walks the record LIFO (publish before stage before volume, clones
//! before sources), treats NotFound as done and collects every failure. Nothing that is not
//! in the ledger is ever deleted.

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
    /// A Kubernetes object (namespace, claim, pod, class, snapshot).
    Kube(KubeRef),
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Volume { id } => write!(f, "volume {id}"),
            Resource::Snapshot { id } => write!(f, "snapshot {id}"),
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
    in_flight: AtomicUsize,
    csi: Option<CsiHandles>,
    kube: Option<KubeCleanup>,
    secrets: std::collections::HashMap<String, String>,
}

/// How the ledger removes Kubernetes objects: the client and how long a deletion may take.
#[derive(Clone)]
pub struct KubeCleanup {
    pub client: kube::Client,
    pub delete_timeout: Duration,
}

impl Ledger {
    pub fn new(
        csi: Option<CsiHandles>,
        kube: Option<KubeCleanup>,
        secrets: std::collections::HashMap<String, String>,
    ) -> Ledger {
        Ledger {
            entries: Mutex::new(Vec::new()),
            leaked: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            csi,
            kube,
            secrets,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(usize, Resource)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A case's call may start: `None` once the run is stopping. Drop the ticket when the
    /// call (and its recording) is done.
    pub fn call_ticket(&self) -> Option<CallTicket<'_>> {
        if self.stopping.load(Ordering::SeqCst) {
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
        let mut failures = Vec::new();
        loop {
            let next = {
                let entries = self.lock();
                entries
                    .iter()
                    .rposition(|(o, _)| owner.is_none_or(|want| *o == want))
                    .map(|at| (at, entries[at].1.clone()))
            };
            let Some((at, resource)) = next else { break };
            match self.remove(&resource).await {
                Ok(()) => {
                    let mut entries = self.lock();
                    if entries.get(at).is_some_and(|(_, r)| *r == resource) {
                        entries.remove(at);
                    }
                }
                Err(message) => {
                    failures.push(format!("{resource}: {message}"));
                    // Keep it out of this walk but remember it as a leak.
                    let mut entries = self.lock();
                    if entries.get(at).is_some_and(|(_, r)| *r == resource) {
                        let (_, leaked) = entries.remove(at);
                        self.leaked
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(leaked);
                    }
                }
            }
        }
        failures
    }

    async fn remove(&self, resource: &Resource) -> Result<(), String> {
        if let Resource::Kube(object) = resource {
            let Some(kube) = &self.kube else {
                return Err("no Kubernetes client to remove it with".into());
            };
            return crate::k8s::remove(&kube.client, object, kube.delete_timeout).await;
        }
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
            Resource::Snapshot { id } => handles
                .controller
                .controller
                .clone()
                .delete_snapshot(csi::DeleteSnapshotRequest {
                    snapshot_id: id.clone(),
                    secrets: self.secrets.clone(),
                })
                .await
                .map(drop),
            Resource::Volume { id } => handles
                .controller
                .controller
                .clone()
                .delete_volume(csi::DeleteVolumeRequest {
                    volume_id: id.clone(),
                    secrets: self.secrets.clone(),
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
