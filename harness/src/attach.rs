//! ControllerPublishVolume and its inverse, for drivers with PUBLISH_UNPUBLISH_VOLUME: the
//! CO attaches a volume to the node NodeGetInfo names before staging it, and passes the
//! publish_context it got to NodeStageVolume and NodePublishVolume.

use csi_proto::v1 as csi;
use tonic::Status;

use crate::context::{Access, CaseCtx};
use crate::ledger::Resource;
use crate::profile::SecretCall;

impl CaseCtx {
    /// NodeGetInfo's node_id.
    pub async fn node_id(&self) -> Result<String, Status> {
        let result = self
            .timed(
                self.rpc_timeout(),
                self.node()?.node_get_info(csi::NodeGetInfoRequest {}),
            )
            .await
            .map(|r| r.node_id);
        self.trace(format!("NodeGetInfo -> {result:?}"));
        result
    }

    /// ControllerPublishVolume to `node_id`; keeps the publish_context for the node calls.
    pub async fn controller_publish(
        &self,
        volume: &csi::Volume,
        access: Access,
        node_id: &str,
        readonly: bool,
    ) -> Result<(), Status> {
        let request = csi::ControllerPublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            node_id: node_id.to_string(),
            volume_capability: Some(self.capability(access)),
            readonly,
            secrets: self.secrets_for(SecretCall::ControllerPublishVolume),
            volume_context: volume.volume_context.clone(),
        };
        let result = self
            .timed(
                self.rpc_timeout(),
                self.controller()?.controller_publish_volume(request),
            )
            .await;
        self.trace(format!(
            "ControllerPublishVolume id={} node={node_id} -> {}",
            volume.volume_id,
            match &result {
                Ok(r) => format!("OK publish_context={:?}", r.publish_context),
                Err(s) => format!("{:?} {:?}", s.code(), s.message()),
            }
        ));
        let response = result?;
        self.ledger().record(
            self.owner(),
            Resource::Attached {
                volume_id: volume.volume_id.clone(),
                node_id: node_id.to_string(),
            },
        );
        self.set_publish_context(&volume.volume_id, response.publish_context);
        Ok(())
    }

    pub async fn controller_unpublish(&self, volume_id: &str, node_id: &str) -> Result<(), Status> {
        let request = csi::ControllerUnpublishVolumeRequest {
            volume_id: volume_id.to_string(),
            node_id: node_id.to_string(),
            secrets: self.secrets_for(SecretCall::ControllerUnpublishVolume),
        };
        let result = self
            .timed(
                self.rpc_timeout(),
                self.controller()?.controller_unpublish_volume(request),
            )
            .await
            .map(drop);
        self.trace(format!(
            "ControllerUnpublishVolume id={volume_id} node={node_id} -> {result:?}"
        ));
        if result.is_ok() {
            self.ledger().forget(&Resource::Attached {
                volume_id: volume_id.to_string(),
                node_id: node_id.to_string(),
            });
        }
        result
    }
}
