//! Capabilities the profile left to the driver (an e2e driver file cannot declare them) are
//! read from its own advertisement once the target is up, before any case runs.

use std::sync::Arc;

use csi_proto::v1::{
    controller_service_capability::rpc::Type as Ctl, node_service_capability::rpc::Type as Nd,
};

use crate::context::CaseCtx;
use crate::profile::{Discoverable, DriverProfile};

/// The profile with its undeclared capabilities set to what the driver advertises, and a line
/// for the reports saying what was taken. A failed call counts as advertising nothing (the
/// capabilities cases then fail on the same call); without a CSI endpoint nothing is read.
pub(super) async fn fill(
    profile: &Arc<DriverProfile>,
    ctx: &CaseCtx,
) -> (Arc<DriverProfile>, Option<String>) {
    let caps = &profile.capabilities;
    if caps.undeclared.is_empty() || !ctx.has_csi() {
        return (profile.clone(), None);
    }
    let mut problems = Vec::new();
    let controller = match ctx.controller_capabilities().await {
        Ok(c) => c,
        Err(status) => {
            problems.push(format!(
                "ControllerGetCapabilities failed: {}",
                status.message()
            ));
            Vec::new()
        }
    };
    let node = match ctx.node_capabilities().await {
        Ok(c) => c,
        Err(status) => {
            problems.push(format!("NodeGetCapabilities failed: {}", status.message()));
            Vec::new()
        }
    };
    let advertised = |c: Discoverable| match c {
        Discoverable::ListVolumes => controller.contains(&Ctl::ListVolumes),
        Discoverable::GetVolume => controller.contains(&Ctl::GetVolume),
        Discoverable::ControllerPublish => controller.contains(&Ctl::PublishUnpublishVolume),
        Discoverable::StageUnstage => node.contains(&Nd::StageUnstageVolume),
    };
    let mut filled = DriverProfile::clone(profile);
    filled.capabilities.take_from_driver(advertised);
    let mut line = (filled.capabilities.from_driver.iter())
        .map(|&c| format!("{c}={}", advertised(c)))
        .collect::<Vec<_>>()
        .join(", ");
    if !problems.is_empty() {
        line = format!("{line} ({})", problems.join("; "));
    }
    (Arc::new(filled), Some(line))
}
