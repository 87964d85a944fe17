//! CSI Controller service: validates requests, then calls the core.

use std::sync::Arc;

use csi_proto::v1::{self as csi, controller_server::Controller};
use tonic::{Request, Response, Status};

use super::convert::{self, required_str};
use crate::config::Feature;
use crate::core::{CreateVolume, Driver};
use crate::error::{DriverError, DriverResult};
use crate::faults::Fault;
use crate::state::Source;
use crate::variants::{ATTACHED_TO, Variant};

pub struct ControllerService {
    pub driver: Arc<Driver>,
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T>(result: DriverResult<T>) -> Reply<T> {
    result.map(Response::new).map_err(Status::from)
}

impl ControllerService {
    fn require(&self, feature: Feature, rpc: &str) -> DriverResult<()> {
        if self.driver.config.has(feature) {
            return Ok(());
        }
        Err(DriverError::Unimplemented(format!(
            "{rpc} is not offered: its controller capability is not advertised"
        )))
    }

    async fn create_volume(&self, r: csi::CreateVolumeRequest) -> DriverResult<csi::Volume> {
        let name = required_str(&r.name, "name")?.to_string();
        let (access_type, fs_type) =
            convert::capabilities(&r.volume_capabilities, "volume_capabilities")?;
        let (required_bytes, limit_bytes) = convert::capacity_range(r.capacity_range.as_ref())?;
        let source = match convert::content_source(r.volume_content_source.as_ref()) {
            Err(DriverError::InvalidArgument { .. })
                if self.driver.config.fault(Fault::MalformedSourceAccepted) =>
            {
                None
            }
            other => other?,
        };
        if matches!(source, Some(Source::Volume(_)))
            && self.driver.config.fault(Fault::CloneUnimplemented)
        {
            return Err(DriverError::Unimplemented(
                "cloning is not implemented".into(),
            ));
        }
        if !r.mutable_parameters.is_empty() {
            return Err(DriverError::invalid(
                "mutable_parameters",
                "this driver does not advertise MODIFY_VOLUME",
            ));
        }
        self.driver
            .config
            .check_requirements(r.accessibility_requirements.as_ref())?;
        let request = CreateVolume {
            name,
            required_bytes,
            limit_bytes,
            access_type,
            fs_type,
            parameters: r.parameters.into_iter().collect(),
            source,
        };
        let (volume, replayed) = self.driver.create_volume(request).await?;
        let mut answer = convert::to_volume(&volume, &self.driver.config);
        let faults = &self.driver.config;
        if faults.fault(Fault::OmitContentSource)
            || (replayed && faults.fault(Fault::OmitContentSourceOnReplay))
        {
            answer.content_source = None;
        }
        if answer.content_source.is_some() && faults.fault(Fault::WrongSourceIdEchoed) {
            answer.content_source = Some(convert::to_content_source(&Source::Volume(
                volume.id.clone(),
            )));
        }
        if volume.source.is_some() && faults.fault(Fault::CapacityReportedSmaller) {
            answer.capacity_bytes /= 2;
        }
        if replayed && faults.fault(Fault::ReplayChangesVolume) {
            answer.volume_context.clear();
            answer.capacity_bytes += 1 << 20;
        }
        Ok(answer)
    }

    async fn validate(
        &self,
        r: csi::ValidateVolumeCapabilitiesRequest,
    ) -> DriverResult<csi::ValidateVolumeCapabilitiesResponse> {
        let id = required_str(&r.volume_id, "volume_id")?;
        if r.volume_capabilities.is_empty() {
            return Err(DriverError::invalid("volume_capabilities", "is required"));
        }
        let volume = self.driver.volume(id)?;
        let verdict = convert::capabilities(&r.volume_capabilities, "volume_capabilities")
            .and_then(|(access, fs)| {
                if access != volume.access_type {
                    return Err(DriverError::invalid(
                        "volume_capabilities",
                        "access type differs from the volume's",
                    ));
                }
                if fs.is_some() && fs != volume.fs_type {
                    return Err(DriverError::invalid(
                        "volume_capabilities",
                        "fs_type differs from the volume's",
                    ));
                }
                Ok(())
            });
        Ok(match verdict {
            Ok(()) => csi::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(csi::validate_volume_capabilities_response::Confirmed {
                    volume_context: r.volume_context,
                    volume_capabilities: r.volume_capabilities,
                    parameters: r.parameters,
                    mutable_parameters: r.mutable_parameters,
                }),
                message: String::new(),
            },
            Err(e) => csi::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: e.to_string(),
            },
        })
    }

    fn list_volumes(&self, r: csi::ListVolumesRequest) -> DriverResult<csi::ListVolumesResponse> {
        self.require(Feature::ListVolumes, "ListVolumes")?;
        let hide_clones = self.driver.config.fault(Fault::ListingHidesClones);
        let visible = self
            .driver
            .volumes()
            .into_iter()
            .filter(|v| !(hide_clones && v.source.is_some()))
            .collect();
        let (page, next_token) = convert::paginate(
            visible,
            |v| v.id.as_str(),
            "vol",
            r.max_entries,
            &r.starting_token,
        )?;
        let entries = page
            .iter()
            .map(|v| csi::list_volumes_response::Entry {
                volume: Some(convert::to_volume(v, &self.driver.config)),
                status: None,
            })
            .collect();
        Ok(csi::ListVolumesResponse {
            entries,
            next_token,
        })
    }

    fn list_snapshots(
        &self,
        r: csi::ListSnapshotsRequest,
    ) -> DriverResult<csi::ListSnapshotsResponse> {
        self.require(Feature::ListSnapshots, "ListSnapshots")?;
        let matching = self
            .driver
            .snapshots()
            .into_iter()
            .filter(|s| r.snapshot_id.is_empty() || s.id == r.snapshot_id)
            .filter(|s| r.source_volume_id.is_empty() || s.source_volume_id == r.source_volume_id)
            .collect();
        let (page, next_token) = convert::paginate(
            matching,
            |s| s.id.as_str(),
            "snap",
            r.max_entries,
            &r.starting_token,
        )?;
        let entries = page
            .iter()
            .map(|s| csi::list_snapshots_response::Entry {
                snapshot: Some(convert::to_snapshot(s, self.driver.snapshot_ready(&s.id))),
            })
            .collect();
        Ok(csi::ListSnapshotsResponse {
            entries,
            next_token,
        })
    }

    fn get_capacity(&self) -> DriverResult<csi::GetCapacityResponse> {
        self.require(Feature::GetCapacity, "GetCapacity")?;
        let usage = crate::storage::mount::fs_usage(self.driver.store.dir())?;
        let max = self.driver.config.max_volume_size;
        Ok(csi::GetCapacityResponse {
            available_capacity: usage.available_bytes.min(i64::MAX as u64) as i64,
            maximum_volume_size: Some(max.min(i64::MAX as u64) as i64),
            minimum_volume_size: None,
        })
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        r: Request<csi::CreateVolumeRequest>,
    ) -> Reply<csi::CreateVolumeResponse> {
        reply(
            self.create_volume(r.into_inner())
                .await
                .map(|volume| csi::CreateVolumeResponse {
                    volume: Some(volume),
                }),
        )
    }

    async fn delete_volume(
        &self,
        r: Request<csi::DeleteVolumeRequest>,
    ) -> Reply<csi::DeleteVolumeResponse> {
        let r = r.into_inner();
        reply(
            async {
                self.driver
                    .delete_volume(required_str(&r.volume_id, "volume_id")?)
                    .await?;
                Ok(csi::DeleteVolumeResponse {})
            }
            .await,
        )
    }

    async fn controller_publish_volume(
        &self,
        r: Request<csi::ControllerPublishVolumeRequest>,
    ) -> Reply<csi::ControllerPublishVolumeResponse> {
        let r = r.into_inner();
        reply((|| {
            self.require_publish("ControllerPublishVolume")?;
            let volume = self
                .driver
                .volume(required_str(&r.volume_id, "volume_id")?)?;
            let node = required_str(&r.node_id, "node_id")?;
            convert::single_capability(r.volume_capability.as_ref(), "volume_capability")?;
            if node != self.driver.config.node_id {
                return Err(DriverError::NotFound {
                    kind: "node",
                    id: node.to_string(),
                });
            }
            self.driver.attachments.attach(&volume.id);
            let context = [(ATTACHED_TO.to_string(), node.to_string())];
            Ok(csi::ControllerPublishVolumeResponse {
                publish_context: context.into_iter().collect(),
            })
        })())
    }

    async fn controller_unpublish_volume(
        &self,
        r: Request<csi::ControllerUnpublishVolumeRequest>,
    ) -> Reply<csi::ControllerUnpublishVolumeResponse> {
        let r = r.into_inner();
        reply((|| {
            self.require_publish("ControllerUnpublishVolume")?;
            let id = required_str(&r.volume_id, "volume_id")?;
            // Idempotent: an unknown or detached volume is detached.
            self.driver.attachments.detach(id);
            Ok(csi::ControllerUnpublishVolumeResponse {})
        })())
    }

    async fn validate_volume_capabilities(
        &self,
        r: Request<csi::ValidateVolumeCapabilitiesRequest>,
    ) -> Reply<csi::ValidateVolumeCapabilitiesResponse> {
        reply(self.validate(r.into_inner()).await)
    }

    async fn list_volumes(
        &self,
        r: Request<csi::ListVolumesRequest>,
    ) -> Reply<csi::ListVolumesResponse> {
        reply(self.list_volumes(r.into_inner()))
    }

    async fn get_capacity(
        &self,
        _: Request<csi::GetCapacityRequest>,
    ) -> Reply<csi::GetCapacityResponse> {
        reply(self.get_capacity())
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Reply<csi::ControllerGetCapabilitiesResponse> {
        use csi::controller_service_capability::{Rpc, Type};
        let capabilities = self
            .driver
            .config
            .controller_capabilities()
            .into_iter()
            .map(|rpc| csi::ControllerServiceCapability {
                r#type: Some(Type::Rpc(Rpc { r#type: rpc as i32 })),
            })
            .collect();
        Ok(Response::new(csi::ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_snapshot(
        &self,
        r: Request<csi::CreateSnapshotRequest>,
    ) -> Reply<csi::CreateSnapshotResponse> {
        let r = r.into_inner();
        reply(
            async {
                self.require(Feature::Snapshot, "CreateSnapshot")?;
                let name = required_str(&r.name, "name")?;
                let source = required_str(&r.source_volume_id, "source_volume_id")?;
                let snapshot = self.driver.create_snapshot(name, source).await?;
                Ok(csi::CreateSnapshotResponse {
                    snapshot: Some(convert::to_snapshot(
                        &snapshot,
                        self.driver.snapshot_ready(&snapshot.id),
                    )),
                })
            }
            .await,
        )
    }

    async fn delete_snapshot(
        &self,
        r: Request<csi::DeleteSnapshotRequest>,
    ) -> Reply<csi::DeleteSnapshotResponse> {
        let r = r.into_inner();
        reply(
            async {
                self.require(Feature::Snapshot, "DeleteSnapshot")?;
                self.driver
                    .delete_snapshot(required_str(&r.snapshot_id, "snapshot_id")?)
                    .await?;
                Ok(csi::DeleteSnapshotResponse {})
            }
            .await,
        )
    }

    async fn list_snapshots(
        &self,
        r: Request<csi::ListSnapshotsRequest>,
    ) -> Reply<csi::ListSnapshotsResponse> {
        reply(self.list_snapshots(r.into_inner()))
    }

    async fn get_snapshot(
        &self,
        r: Request<csi::GetSnapshotRequest>,
    ) -> Reply<csi::GetSnapshotResponse> {
        let r = r.into_inner();
        reply((|| {
            self.require(Feature::GetSnapshot, "GetSnapshot")?;
            let id = required_str(&r.snapshot_id, "snapshot_id")?;
            let snapshot = self
                .driver
                .snapshots()
                .into_iter()
                .find(|s| s.id == id)
                .ok_or_else(|| DriverError::NotFound {
                    kind: "snapshot",
                    id: id.to_string(),
                })?;
            Ok(csi::GetSnapshotResponse {
                snapshot: Some(convert::to_snapshot(
                    &snapshot,
                    self.driver.snapshot_ready(&snapshot.id),
                )),
            })
        })())
    }

    async fn controller_expand_volume(
        &self,
        r: Request<csi::ControllerExpandVolumeRequest>,
    ) -> Reply<csi::ControllerExpandVolumeResponse> {
        let r = r.into_inner();
        reply(
            async {
                self.require(Feature::Expand, "ControllerExpandVolume")?;
                let id = required_str(&r.volume_id, "volume_id")?;
                let range = r
                    .capacity_range
                    .as_ref()
                    .ok_or_else(|| DriverError::invalid("capacity_range", "is required"))?;
                let (required, limit) = convert::capacity_range(Some(range))?;
                let expanded = self.driver.expand_volume(id, required, limit).await?;
                Ok(csi::ControllerExpandVolumeResponse {
                    capacity_bytes: expanded.size_bytes as i64,
                    node_expansion_required: expanded.node_expansion_required,
                })
            }
            .await,
        )
    }

    async fn controller_get_volume(
        &self,
        r: Request<csi::ControllerGetVolumeRequest>,
    ) -> Reply<csi::ControllerGetVolumeResponse> {
        let r = r.into_inner();
        reply((|| {
            self.require(Feature::GetVolume, "ControllerGetVolume")?;
            let id = required_str(&r.volume_id, "volume_id")?;
            let volume = self.driver.volume(id)?;
            if volume.source.is_some() && self.driver.config.fault(Fault::ListingHidesClones) {
                return Err(DriverError::NotFound {
                    kind: "volume",
                    id: id.to_string(),
                });
            }
            Ok(csi::ControllerGetVolumeResponse {
                volume: Some(convert::to_volume(&volume, &self.driver.config)),
                // REQUIRED by the spec; this driver has no controller publish and no conditions.
                status: Some(csi::controller_get_volume_response::VolumeStatus {
                    published_node_ids: Vec::new(),
                    volume_condition: None,
                }),
            })
        })())
    }

    async fn controller_modify_volume(
        &self,
        _: Request<csi::ControllerModifyVolumeRequest>,
    ) -> Reply<csi::ControllerModifyVolumeResponse> {
        Err(Status::unimplemented(
            "ControllerModifyVolume: MODIFY_VOLUME is not advertised",
        ))
    }
}

impl ControllerService {
    /// ControllerPublish/Unpublish exist only with the `publish-required` variant.
    fn require_publish(&self, rpc: &str) -> DriverResult<()> {
        match self.driver.config.variant(Variant::PublishRequired) {
            true => Ok(()),
            false => Err(DriverError::Unimplemented(format!(
                "{rpc}: PUBLISH_UNPUBLISH_VOLUME is not advertised"
            ))),
        }
    }
}
