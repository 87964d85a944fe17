//! CSI Identity service.

use std::collections::HashMap;
use std::sync::Arc;

use csi_proto::v1::{self as csi, identity_server::Identity, plugin_capability};
use tonic::{Request, Response, Status};

use crate::config::Feature;
use crate::core::Driver;
use crate::faults::Fault;

pub struct IdentityService {
    pub driver: Arc<Driver>,
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        let manifest = HashMap::from([(
            "csi-spec".to_string(),
            csi_proto::CSI_SPEC_VERSION.to_string(),
        )]);
        let name = if self.driver.config.fault(Fault::BadPluginName) {
            format!("{} (broken)", self.driver.config.driver_name)
        } else {
            self.driver.config.driver_name.clone()
        };
        Ok(Response::new(csi::GetPluginInfoResponse {
            name,
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest,
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        use plugin_capability::{Service, Type, VolumeExpansion, service, volume_expansion};
        let mut capabilities = vec![csi::PluginCapability {
            r#type: Some(Type::Service(Service {
                r#type: service::Type::ControllerService as i32,
            })),
        }];
        if self.driver.config.topology() && !self.driver.config.fault(Fault::TopologyUnadvertised) {
            capabilities.push(csi::PluginCapability {
                r#type: Some(Type::Service(Service {
                    r#type: service::Type::VolumeAccessibilityConstraints as i32,
                })),
            });
        }
        if self.driver.config.has(Feature::Expand) {
            for mode in [
                volume_expansion::Type::Online,
                volume_expansion::Type::Offline,
            ] {
                capabilities.push(csi::PluginCapability {
                    r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                        r#type: mode as i32,
                    })),
                });
            }
        }
        Ok(Response::new(csi::GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        _: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        let ready = !self.driver.config.fault(Fault::ProbeNotReady);
        Ok(Response::new(csi::ProbeResponse { ready: Some(ready) }))
    }
}
