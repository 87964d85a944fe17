//! Every RPC a case makes, traced and, for creates, recorded in the ledger. Results stay raw
//! (`Result<_, Status>`): interpreting them is the case's job.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use csi_proto::v1 as csi;
use tonic::{Code, Status};

use crate::context::{Access, CaseCtx, SourceRef};
use crate::ledger::Resource;
use crate::profile::SecretCall;
use crate::retry::HARNESS_TIMEOUT;

fn outcome<T>(result: &Result<T, Status>, ok: impl FnOnce(&T) -> String) -> String {
    match result {
        Ok(value) => format!("OK {}", ok(value)),
        Err(status) => format!("{:?} {:?}", status.code(), status.message()),
    }
}

impl CaseCtx {
    pub(crate) async fn timed<T>(
        &self,
        limit: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        let Some(_ticket) = self.ledger().call_ticket() else {
            return Err(Status::cancelled(match self.ledger().lost() {
                Some(lost) => format!("not sent: the target was lost {lost}"),
                None => "the run was interrupted".to_string(),
            }));
        };
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within {limit:?} {HARNESS_TIMEOUT}"
            ))),
        }
    }

    pub async fn create_volume(
        &self,
        mut request: csi::CreateVolumeRequest,
    ) -> Result<csi::Volume, Status> {
        if request.accessibility_requirements.is_none() {
            request.accessibility_requirements = self.topology_requirement().await?;
        }
        let summary = format!(
            "CreateVolume name={} capacity={:?} access={} source={}{}",
            request.name,
            request
                .capacity_range
                .as_ref()
                .map(|c| (c.required_bytes, c.limit_bytes)),
            access_of(&request.volume_capabilities),
            request
                .volume_content_source
                .as_ref()
                .map(|s| SourceRef::from_proto(Some(s))
                    .map_or("unset-oneof".into(), |s| s.to_string()))
                .unwrap_or_else(|| "none".into()),
            topology_text(
                " requisite",
                request
                    .accessibility_requirements
                    .as_ref()
                    .map_or(&[][..], |r| &r.requisite)
            ),
        );
        let limit = if request.volume_content_source.is_some() {
            self.clone_timeout()
        } else {
            self.rpc_timeout()
        };
        let result = self
            .retried("CreateVolume", limit, || {
                let (mut client, request) = (self.controller()?, request.clone());
                Ok(async move { client.create_volume(request).await })
            })
            .await
            .and_then(|r| {
                r.volume
                    .ok_or_else(|| Status::internal("harness: CreateVolumeResponse without volume"))
            });
        self.trace(format!(
            "{summary} -> {}",
            outcome(&result, |v| format!(
                "id={} capacity={} content_source={}{}",
                v.volume_id,
                v.capacity_bytes,
                SourceRef::from_proto(v.content_source.as_ref())
                    .map_or("none".into(), |s| s.to_string()),
                topology_text(" accessible_topology", &v.accessible_topology),
            ))
        ));
        if let Ok(volume) = &result
            && !volume.volume_id.is_empty()
        {
            let resource = Resource::Volume {
                id: volume.volume_id.clone(),
            };
            // A replay returns a volume we already hold: record it once.
            if !self.ledger().holds(&resource) {
                self.ledger().record(self.owner(), resource);
            }
            self.check_accessible(volume).await;
        }
        result
    }

    pub async fn delete_volume(&self, id: &str) -> Result<(), Status> {
        let request = csi::DeleteVolumeRequest {
            volume_id: id.to_string(),
            secrets: self.secrets_for(SecretCall::DeleteVolume),
        };
        let result = self
            .retried("DeleteVolume", self.rpc_timeout(), || {
                let (mut client, request) = (self.controller()?, request.clone());
                Ok(async move { client.delete_volume(request).await })
            })
            .await
            .map(drop);
        self.trace(format!(
            "DeleteVolume id={id} -> {}",
            outcome(&result, |_| String::new())
        ));
        if result.is_ok() {
            self.ledger()
                .forget(&Resource::Volume { id: id.to_string() });
        }
        result
    }

    /// CreateSnapshot, then the same request again until the snapshot is `ready_to_use`: the
    /// spec lets a plugin answer before post-processing ends and lets the CO repeat the call
    /// to learn when it has (csi-sanity and external-snapshotter do the same), and a snapshot
    /// is not a usable source before. Within the clone timeout; a snapshot that never becomes
    /// ready is an error the case reports.
    pub async fn create_snapshot(
        &self,
        name: &str,
        source_volume_id: &str,
    ) -> Result<csi::Snapshot, Status> {
        let deadline = tokio::time::Instant::now() + self.clone_timeout();
        let mut delay = Duration::from_millis(100);
        loop {
            let snapshot = self.create_snapshot_once(name, source_volume_id).await?;
            if snapshot.ready_to_use {
                return Ok(snapshot);
            }
            if tokio::time::Instant::now() + delay >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "snapshot {} was not ready_to_use within {:?} {HARNESS_TIMEOUT}",
                    snapshot.snapshot_id,
                    self.clone_timeout()
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn create_snapshot_once(
        &self,
        name: &str,
        source_volume_id: &str,
    ) -> Result<csi::Snapshot, Status> {
        let request = csi::CreateSnapshotRequest {
            source_volume_id: source_volume_id.to_string(),
            name: name.to_string(),
            secrets: self.secrets_for(SecretCall::CreateSnapshot),
            parameters: self
                .profile()
                .snapshot_parameters
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let result = self
            .retried("CreateSnapshot", self.clone_timeout(), || {
                let (mut client, request) = (self.controller()?, request.clone());
                Ok(async move { client.create_snapshot(request).await })
            })
            .await
            .and_then(|r| {
                r.snapshot.ok_or_else(|| {
                    Status::internal("harness: CreateSnapshotResponse without snapshot")
                })
            });
        self.trace(format!(
            "CreateSnapshot name={name} source={source_volume_id} -> {}",
            outcome(&result, |s| format!(
                "id={} size={} ready={}",
                s.snapshot_id, s.size_bytes, s.ready_to_use
            ))
        ));
        if let Ok(snapshot) = &result
            && !snapshot.snapshot_id.is_empty()
        {
            let resource = Resource::Snapshot {
                id: snapshot.snapshot_id.clone(),
            };
            // A repeat while waiting for ready_to_use returns the snapshot already recorded.
            if !self.ledger().holds(&resource) {
                self.ledger().record(self.owner(), resource);
            }
        }
        result
    }

    pub async fn delete_snapshot(&self, id: &str) -> Result<(), Status> {
        let request = csi::DeleteSnapshotRequest {
            snapshot_id: id.to_string(),
            secrets: self.secrets_for(SecretCall::DeleteSnapshot),
        };
        let result = self
            .retried("DeleteSnapshot", self.rpc_timeout(), || {
                let (mut client, request) = (self.controller()?, request.clone());
                Ok(async move { client.delete_snapshot(request).await })
            })
            .await
            .map(drop);
        self.trace(format!(
            "DeleteSnapshot id={id} -> {}",
            outcome(&result, |_| String::new())
        ));
        if result.is_ok() {
            self.ledger()
                .forget(&Resource::Snapshot { id: id.to_string() });
        }
        result
    }

    pub async fn expand_volume(
        &self,
        id: &str,
        bytes: u64,
        access: Access,
    ) -> Result<csi::ControllerExpandVolumeResponse, Status> {
        let request = csi::ControllerExpandVolumeRequest {
            volume_id: id.to_string(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: bytes as i64,
                limit_bytes: 0,
            }),
            secrets: self.secrets_for(SecretCall::ControllerExpandVolume),
            volume_capability: Some(self.capability(access)),
        };
        let result = self
            .timed(
                self.rpc_timeout(),
                self.controller()?.controller_expand_volume(request),
            )
            .await;
        self.trace(format!(
            "ControllerExpandVolume id={id} bytes={bytes} -> {}",
            outcome(&result, |r| format!(
                "capacity={} node_expansion_required={}",
                r.capacity_bytes, r.node_expansion_required
            ))
        ));
        result
    }

    pub async fn node_expand_volume(
        &self,
        id: &str,
        path: &Path,
        staging: &Path,
        bytes: u64,
        access: Access,
    ) -> Result<(), Status> {
        let request = csi::NodeExpandVolumeRequest {
            volume_id: id.to_string(),
            volume_path: path.display().to_string(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: bytes as i64,
                limit_bytes: 0,
            }),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(self.capability(access)),
            secrets: self.secrets_for(SecretCall::NodeExpandVolume),
        };
        let result = self
            .timed(self.rpc_timeout(), self.node()?.node_expand_volume(request))
            .await
            .map(drop);
        self.trace(format!(
            "NodeExpandVolume id={id} bytes={bytes} -> {}",
            outcome(&result, |_| String::new())
        ));
        result
    }

    pub async fn list_volumes(&self) -> Result<Vec<csi::Volume>, Status> {
        let mut volumes = Vec::new();
        let mut token = String::new();
        loop {
            let request = csi::ListVolumesRequest {
                max_entries: 0,
                starting_token: token.clone(),
            };
            let page = self
                .timed(self.rpc_timeout(), self.controller()?.list_volumes(request))
                .await;
            let page = match page {
                Ok(page) => page,
                Err(status) => {
                    self.trace(format!(
                        "ListVolumes -> {:?} {:?}",
                        status.code(),
                        status.message()
                    ));
                    return Err(status);
                }
            };
            volumes.extend(page.entries.into_iter().filter_map(|e| e.volume));
            if page.next_token.is_empty() {
                break;
            }
            token = page.next_token;
        }
        self.trace(format!("ListVolumes -> OK {} volumes", volumes.len()));
        Ok(volumes)
    }

    pub async fn get_volume(&self, id: &str) -> Result<csi::Volume, Status> {
        let request = csi::ControllerGetVolumeRequest {
            volume_id: id.to_string(),
        };
        let result = self
            .timed(
                self.rpc_timeout(),
                self.controller()?.controller_get_volume(request),
            )
            .await
            .and_then(|r| {
                r.volume.ok_or_else(|| {
                    Status::internal("harness: ControllerGetVolumeResponse without volume")
                })
            });
        self.trace(format!(
            "ControllerGetVolume id={id} -> {}",
            outcome(&result, |v| format!("capacity={}", v.capacity_bytes))
        ));
        result
    }

    pub async fn plugin_info(&self) -> Result<csi::GetPluginInfoResponse, Status> {
        let result = self
            .timed(
                self.rpc_timeout(),
                self.identity()?
                    .get_plugin_info(csi::GetPluginInfoRequest {}),
            )
            .await;
        self.trace(format!(
            "GetPluginInfo -> {}",
            outcome(&result, |r| format!(
                "name={} version={}",
                r.name, r.vendor_version
            ))
        ));
        result
    }

    pub async fn probe(&self) -> Result<csi::ProbeResponse, Status> {
        let result = self
            .timed(
                self.rpc_timeout(),
                self.identity()?.probe(csi::ProbeRequest {}),
            )
            .await;
        self.trace(format!(
            "Probe -> {}",
            outcome(&result, |r| format!("ready={:?}", r.ready))
        ));
        result
    }

    pub async fn controller_capabilities(
        &self,
    ) -> Result<Vec<csi::controller_service_capability::rpc::Type>, Status> {
        use csi::controller_service_capability::{Type, rpc};
        let result = self
            .timed(
                self.rpc_timeout(),
                self.controller()?
                    .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {}),
            )
            .await
            .map(|r| {
                r.capabilities
                    .into_iter()
                    .filter_map(|c| match c.r#type {
                        Some(Type::Rpc(rpc)) => rpc::Type::try_from(rpc.r#type).ok(),
                        None => None,
                    })
                    .collect::<Vec<_>>()
            });
        self.trace(format!(
            "ControllerGetCapabilities -> {}",
            outcome(&result, |c| format!("{c:?}"))
        ));
        result
    }

    pub async fn node_capabilities(
        &self,
    ) -> Result<Vec<csi::node_service_capability::rpc::Type>, Status> {
        use csi::node_service_capability::{Type, rpc};
        let result = self
            .timed(
                self.rpc_timeout(),
                self.node()?
                    .node_get_capabilities(csi::NodeGetCapabilitiesRequest {}),
            )
            .await
            .map(|r| {
                r.capabilities
                    .into_iter()
                    .filter_map(|c| match c.r#type {
                        Some(Type::Rpc(rpc)) => rpc::Type::try_from(rpc.r#type).ok(),
                        None => None,
                    })
                    .collect::<Vec<_>>()
            });
        self.trace(format!(
            "NodeGetCapabilities -> {}",
            outcome(&result, |c| format!("{c:?}"))
        ));
        result
    }

    /// NodeStageVolume into a fresh staging dir the harness creates (the CO's job).
    pub async fn stage(&self, volume: &csi::Volume, access: Access) -> Result<PathBuf, Status> {
        let staging = self
            .sandbox_dir("staging")
            .map_err(|e| Status::internal(format!("harness: create staging dir: {e}")))?;
        let request = csi::NodeStageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            publish_context: self.publish_context(&volume.volume_id),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(self.capability(access)),
            secrets: self.secrets_for(SecretCall::NodeStageVolume),
            volume_context: volume.volume_context.clone(),
        };
        let result = self
            .timed(self.rpc_timeout(), self.node()?.node_stage_volume(request))
            .await
            .map(drop);
        self.trace(format!(
            "NodeStageVolume id={} path={} -> {}",
            volume.volume_id,
            staging.display(),
            outcome(&result, |_| String::new())
        ));
        result?;
        self.ledger().record(
            self.owner(),
            Resource::Staged {
                volume_id: volume.volume_id.clone(),
                staging_path: staging.clone(),
            },
        );
        Ok(staging)
    }

    /// NodePublishVolume at `<sandbox>/target-N` (the parent exists; the driver creates the target).
    pub async fn publish(
        &self,
        volume: &csi::Volume,
        access: Access,
        staging: &Path,
        readonly: bool,
    ) -> Result<PathBuf, Status> {
        let parent = self
            .sandbox_dir("publish")
            .map_err(|e| Status::internal(format!("harness: create target parent: {e}")))?;
        let target = parent.join("target");
        let request = csi::NodePublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            publish_context: self.publish_context(&volume.volume_id),
            staging_target_path: staging.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(self.capability(access)),
            readonly,
            secrets: self.secrets_for(SecretCall::NodePublishVolume),
            volume_context: volume.volume_context.clone(),
        };
        let result = self
            .timed(
                self.rpc_timeout(),
                self.node()?.node_publish_volume(request),
            )
            .await
            .map(drop);
        self.trace(format!(
            "NodePublishVolume id={} target={} -> {}",
            volume.volume_id,
            target.display(),
            outcome(&result, |_| String::new())
        ));
        result?;
        self.ledger().record(
            self.owner(),
            Resource::Published {
                volume_id: volume.volume_id.clone(),
                target_path: target.clone(),
            },
        );
        Ok(target)
    }

    pub async fn unpublish(&self, volume_id: &str, target: &Path) -> Result<(), Status> {
        let request = csi::NodeUnpublishVolumeRequest {
            volume_id: volume_id.to_string(),
            target_path: target.display().to_string(),
        };
        let result = self
            .timed(
                self.rpc_timeout(),
                self.node()?.node_unpublish_volume(request),
            )
            .await
            .map(drop);
        self.trace(format!(
            "NodeUnpublishVolume id={volume_id} -> {}",
            outcome(&result, |_| String::new())
        ));
        if result.is_ok() || result.as_ref().is_err_and(|s| s.code() == Code::NotFound) {
            self.ledger().forget(&Resource::Published {
                volume_id: volume_id.to_string(),
                target_path: target.to_path_buf(),
            });
            let _ = std::fs::remove_dir(target.parent().unwrap_or(target));
        }
        result
    }

    pub async fn unstage(&self, volume_id: &str, staging: &Path) -> Result<(), Status> {
        let request = csi::NodeUnstageVolumeRequest {
            volume_id: volume_id.to_string(),
            staging_target_path: staging.display().to_string(),
        };
        let result = self
            .timed(
                self.rpc_timeout(),
                self.node()?.node_unstage_volume(request),
            )
            .await
            .map(drop);
        self.trace(format!(
            "NodeUnstageVolume id={volume_id} -> {}",
            outcome(&result, |_| String::new())
        ));
        if result.is_ok() {
            self.ledger().forget(&Resource::Staged {
                volume_id: volume_id.to_string(),
                staging_path: staging.to_path_buf(),
            });
            let _ = std::fs::remove_dir(staging);
        }
        result
    }
}

fn access_of(caps: &[csi::VolumeCapability]) -> &'static str {
    use csi::volume_capability::AccessType;
    match caps.first().and_then(|c| c.access_type.as_ref()) {
        Some(AccessType::Block(_)) => "block",
        Some(AccessType::Mount(_)) => "mount",
        None => "unset",
    }
}

/// ` label=[{k=v,...}]` for trace lines; empty when there is no topology.
pub(crate) fn topology_text(label: &str, topologies: &[csi::Topology]) -> String {
    if topologies.is_empty() {
        return String::new();
    }
    let segments: Vec<String> = topologies
        .iter()
        .map(|t| {
            let pairs: std::collections::BTreeMap<_, _> = t.segments.iter().collect();
            let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{{{}}}", pairs.join(","))
        })
        .collect();
    format!("{label}=[{}]", segments.join(","))
}
