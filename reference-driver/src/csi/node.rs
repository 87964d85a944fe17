//! CSI Node service: validates requests, then calls the core.

use std::sync::Arc;

use csi_proto::v1::{self as csi, node_server::Node};
use tonic::{Request, Response, Status};

use super::convert::{self, required_path, required_str};
use crate::config::Feature;
use crate::core::{Driver, PublishRequest, StageRequest, VolumeStats};
use crate::error::{DriverError, DriverResult};
use crate::variants::{ATTACHED_TO, Variant};

pub struct NodeService {
    pub driver: Arc<Driver>,
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T>(result: DriverResult<T>) -> Reply<T> {
    result.map(Response::new).map_err(Status::from)
}

fn usage(total: u64, available: u64, used: u64, unit: csi::volume_usage::Unit) -> csi::VolumeUsage {
    let clamp = |v: u64| v.min(i64::MAX as u64) as i64;
    csi::VolumeUsage {
        available: clamp(available),
        total: clamp(total),
        used: clamp(used),
        unit: unit as i32,
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        r: Request<csi::NodeStageVolumeRequest>,
    ) -> Reply<csi::NodeStageVolumeResponse> {
        let r = r.into_inner();
        reply(
            async {
                let volume_id = required_str(&r.volume_id, "volume_id")?.to_string();
                let staging_path = required_path(&r.staging_target_path, "staging_target_path")?;
                let (access_type, fs_type) =
                    convert::single_capability(r.volume_capability.as_ref(), "volume_capability")?;
                self.check_attached(&volume_id, &r.publish_context)?;
                self.driver
                    .stage_volume(StageRequest {
                        volume_id,
                        staging_path,
                        access_type,
                        fs_type,
                    })
                    .await?;
                Ok(csi::NodeStageVolumeResponse {})
            }
            .await,
        )
    }

    async fn node_unstage_volume(
        &self,
        r: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Reply<csi::NodeUnstageVolumeResponse> {
        let r = r.into_inner();
        reply(
            async {
                let id = required_str(&r.volume_id, "volume_id")?;
                let path = required_path(&r.staging_target_path, "staging_target_path")?;
                self.driver.unstage_volume(id, &path).await?;
                Ok(csi::NodeUnstageVolumeResponse {})
            }
            .await,
        )
    }

    async fn node_publish_volume(
        &self,
        r: Request<csi::NodePublishVolumeRequest>,
    ) -> Reply<csi::NodePublishVolumeResponse> {
        let r = r.into_inner();
        reply(async {
            let volume_id = required_str(&r.volume_id, "volume_id")?.to_string();
            let target_path = required_path(&r.target_path, "target_path")?;
            let (access_type, _) =
                convert::single_capability(r.volume_capability.as_ref(), "volume_capability")?;
            // STAGE_UNSTAGE_VOLUME is advertised, so the CO must name the staging path.
            if r.staging_target_path.is_empty() {
                return Err(DriverError::FailedPrecondition(
                    "staging_target_path is required: this driver stages volumes before publishing".into(),
                ));
            }
            let staging_path = required_path(&r.staging_target_path, "staging_target_path")?;
            self.driver
                .publish_volume(PublishRequest {
                    volume_id,
                    staging_path,
                    target_path,
                    access_type,
                    readonly: r.readonly,
                })
                .await?;
            Ok(csi::NodePublishVolumeResponse {})
        }
        .await)
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Reply<csi::NodeUnpublishVolumeResponse> {
        let r = r.into_inner();
        reply(
            async {
                let id = required_str(&r.volume_id, "volume_id")?;
                let target = required_path(&r.target_path, "target_path")?;
                self.driver.unpublish_volume(id, &target).await?;
                Ok(csi::NodeUnpublishVolumeResponse {})
            }
            .await,
        )
    }

    async fn node_get_volume_stats(
        &self,
        r: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Reply<csi::NodeGetVolumeStatsResponse> {
        let r = r.into_inner();
        reply(
            async {
                let id = required_str(&r.volume_id, "volume_id")?;
                let path = required_str(&r.volume_path, "volume_path")?;
                let stats = self
                    .driver
                    .volume_stats(id, std::path::Path::new(path))
                    .await?;
                use csi::volume_usage::Unit;
                let usage = match stats {
                    VolumeStats::Filesystem(fs) => vec![
                        usage(
                            fs.total_bytes,
                            fs.available_bytes,
                            fs.used_bytes,
                            Unit::Bytes,
                        ),
                        usage(
                            fs.total_inodes,
                            fs.free_inodes,
                            fs.used_inodes,
                            Unit::Inodes,
                        ),
                    ],
                    VolumeStats::Block { size_bytes } => vec![usage(size_bytes, 0, 0, Unit::Bytes)],
                };
                Ok(csi::NodeGetVolumeStatsResponse {
                    usage,
                    volume_condition: None,
                })
            }
            .await,
        )
    }

    async fn node_expand_volume(
        &self,
        r: Request<csi::NodeExpandVolumeRequest>,
    ) -> Reply<csi::NodeExpandVolumeResponse> {
        let r = r.into_inner();
        reply(
            async {
                if !self.driver.config.has(Feature::Expand) {
                    return Err(DriverError::Unimplemented(
                        "NodeExpandVolume: EXPAND_VOLUME is not advertised".into(),
                    ));
                }
                let id = required_str(&r.volume_id, "volume_id")?;
                // Not required_path: an unknown volume is NOT_FOUND whatever the path looks like.
                let path = std::path::PathBuf::from(required_str(&r.volume_path, "volume_path")?);
                let (required, _) = match r.capacity_range.as_ref() {
                    Some(range) => convert::capacity_range(Some(range))?,
                    None => (0, 0),
                };
                let size = self.driver.node_expand_volume(id, &path, required).await?;
                Ok(csi::NodeExpandVolumeResponse {
                    capacity_bytes: size as i64,
                })
            }
            .await,
        )
    }

    async fn node_get_capabilities(
        &self,
        _: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Reply<csi::NodeGetCapabilitiesResponse> {
        use csi::node_service_capability::{Rpc, Type};
        let capabilities = self
            .driver
            .config
            .node_capabilities()
            .into_iter()
            .map(|rpc| csi::NodeServiceCapability {
                r#type: Some(Type::Rpc(Rpc { r#type: rpc as i32 })),
            })
            .collect();
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<csi::NodeGetInfoRequest>,
    ) -> Reply<csi::NodeGetInfoResponse> {
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.driver.config.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: self.driver.config.node_topology(),
        }))
    }
}

impl NodeService {
    /// `publish-required`: a volume is staged only after ControllerPublishVolume to this node,
    /// with the publish_context that call returned (spec: the CO passes it to NodeStage).
    fn check_attached(
        &self,
        volume_id: &str,
        publish_context: &std::collections::HashMap<String, String>,
    ) -> DriverResult<()> {
        let driver = &self.driver;
        if !driver.config.variant(Variant::PublishRequired) {
            return Ok(());
        }
        if !driver.attachments.is_attached(volume_id) {
            return Err(DriverError::FailedPrecondition(format!(
                "volume {volume_id} is not ControllerPublished to node {}",
                driver.config.node_id
            )));
        }
        match publish_context.get(ATTACHED_TO) {
            Some(node) if *node == driver.config.node_id => Ok(()),
            _ => Err(DriverError::invalid(
                "publish_context",
                format!("must carry {ATTACHED_TO} from ControllerPublishVolume"),
            )),
        }
    }
}
