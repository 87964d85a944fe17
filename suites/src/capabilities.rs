//! Identity and capabilities: sane plugin info, advertised capabilities equal to what the
//! profile declares, and CLONE_VOLUME advertised if and only if clones are honoured.

use csi_proto::v1::{
    controller_service_capability::rpc::Type as Ctl, node_service_capability::rpc::Type as Nd,
    plugin_capability::service::Type as Svc,
};
use harness::case::{
    CaseResult, Requirement as R, Row, Suite, ensure, expect_code, expect_ok, fail_with, row,
};
use harness::context::{CaseCtx, SourceRef};
use harness::profile::Discoverable;
use tonic::Code;

use crate::common::{SourceKind, default_access, empty_source};

#[derive(Clone, Copy, Debug)]
enum Flow {
    PluginInfo,
    Probe,
    PluginCapabilities,
    ControllerCapabilities,
    NodeCapabilities,
    CloneHonoured,
    CloneRefusedWithoutCapability,
}

const ROWS: &[Row<Flow>] = &[
    row(
        "identity::plugin_info_is_sane_and_matches_profile",
        "spec: GetPluginInfo (name in domain notation, at most 63 characters; vendor_version REQUIRED)",
        &[],
        Flow::PluginInfo,
    ),
    row(
        "identity::probe_answers_ready",
        "spec: Probe",
        &[],
        Flow::Probe,
    ),
    row(
        "identity::advertised_plugin_capabilities_match_profile",
        "spec: GetPluginCapabilities (CONTROLLER_SERVICE for any clone); profile capabilities.topology (VOLUME_ACCESSIBILITY_CONSTRAINTS)",
        &[],
        Flow::PluginCapabilities,
    ),
    row(
        "controller::advertised_capabilities_match_profile",
        "spec: ControllerGetCapabilities; profile capabilities.{clone, snapshot, expansion, list_volumes, get_volume, controller_publish}",
        &[],
        Flow::ControllerCapabilities,
    ),
    row(
        "node::advertised_capabilities_match_profile",
        "spec: NodeGetCapabilities; profile capabilities.{stage_unstage, node_expansion}",
        &[],
        Flow::NodeCapabilities,
    ),
    row(
        "clone::advertised_clone_volume_is_honoured",
        "spec: CLONE_VOLUME — plugins reporting it MUST support creating a volume from a volume source",
        &[R::Clone],
        Flow::CloneHonoured,
    ),
    row(
        "clone::volume_source_without_clone_volume_is_invalid_argument",
        "spec: CreateVolume errors / 3 INVALID_ARGUMENT (unsupported source type)",
        &[R::NoClone],
        Flow::CloneRefusedWithoutCapability,
    ),
];

pub fn suite() -> Suite {
    Suite::from_rows("capabilities", ROWS, interpret)
}

/// Domain-name notation: alphanumerics at both ends, dashes, dots and underscores between.
fn valid_plugin_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// A capability the profile declares must be advertised as declared. One the profile left to
/// the driver (`from`: an e2e driver file cannot declare it) was read from this advertisement
/// when the run started: the trace says it was taken from the driver, and it fails only if the
/// driver has since changed its answer.
fn compare(
    ctx: &CaseCtx,
    what: &str,
    from: Option<Discoverable>,
    declared: bool,
    advertised: bool,
) -> CaseResult {
    if from.is_some_and(|c| ctx.profile().capabilities.from_driver.contains(&c)) {
        ctx.trace(format!(
            "{what}: taken from the driver (advertised={advertised}); the profile cannot declare it"
        ));
        return ensure(
            declared == advertised,
            &format!("{what}: the driver's advertisement changed during the run"),
            format!("advertised={declared} (when the run started)"),
            format!("advertised={advertised}"),
        );
    }
    ensure(
        declared == advertised,
        &format!("{what}: the driver's advertisement differs from the profile"),
        format!("advertised={declared} (profile)"),
        format!("advertised={advertised}"),
    )
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    let declared = ctx.profile().capabilities.clone();
    match row.flow {
        Flow::PluginInfo => {
            let info = expect_ok(ctx.plugin_info().await, "GetPluginInfo")?;
            ensure(
                valid_plugin_name(&info.name),
                "the plugin name must be in domain notation, at most 63 characters",
                "e.g. csi.example.com",
                info.name.clone(),
            )?;
            ensure(
                !info.vendor_version.is_empty(),
                "vendor_version is REQUIRED",
                "non-empty",
                "\"\"",
            )?;
            ensure(
                info.name == ctx.profile().name,
                "the plugin name must equal the profile's name",
                ctx.profile().name.clone(),
                info.name,
            )
        }
        Flow::Probe => {
            let probe = expect_ok(ctx.probe().await, "Probe")?;
            ensure(
                probe.ready != Some(false),
                "a driver under test must be ready",
                "ready unset or true",
                format!("{:?}", probe.ready),
            )
        }
        Flow::PluginCapabilities => {
            let services = expect_ok(ctx.plugin_services().await, "GetPluginCapabilities")?;
            ensure(
                services.contains(&Svc::ControllerService),
                "CONTROLLER_SERVICE is needed for any clone",
                "CONTROLLER_SERVICE",
                format!("{services:?}"),
            )?;
            let constrained = services.contains(&Svc::VolumeAccessibilityConstraints);
            if let Ok(Some(node)) = ctx.node_topology().await
                && !constrained
            {
                return Err(fail_with(
                    "NodeGetInfo returns accessible_topology without the VOLUME_ACCESSIBILITY_CONSTRAINTS plugin capability (spec: a plugin that returns this field MUST also set it)",
                    "VOLUME_ACCESSIBILITY_CONSTRAINTS advertised",
                    format!("services {services:?}; node topology {node:?}"),
                ));
            }
            compare(
                &ctx,
                "VOLUME_ACCESSIBILITY_CONSTRAINTS",
                None,
                declared.topology,
                constrained,
            )
        }
        Flow::ControllerCapabilities => {
            let caps = expect_ok(
                ctx.controller_capabilities().await,
                "ControllerGetCapabilities",
            )?;
            ensure(
                caps.contains(&Ctl::CreateDeleteVolume),
                "CREATE_DELETE_VOLUME is needed for any clone",
                "CREATE_DELETE_VOLUME",
                format!("{caps:?}"),
            )?;
            compare(
                &ctx,
                "CLONE_VOLUME",
                None,
                declared.clone,
                caps.contains(&Ctl::CloneVolume),
            )?;
            compare(
                &ctx,
                "CREATE_DELETE_SNAPSHOT",
                None,
                declared.snapshot,
                caps.contains(&Ctl::CreateDeleteSnapshot),
            )?;
            compare(
                &ctx,
                "EXPAND_VOLUME",
                None,
                declared.expansion,
                caps.contains(&Ctl::ExpandVolume),
            )?;
            compare(
                &ctx,
                "LIST_VOLUMES",
                Some(Discoverable::ListVolumes),
                declared.list_volumes,
                caps.contains(&Ctl::ListVolumes),
            )?;
            compare(
                &ctx,
                "GET_VOLUME",
                Some(Discoverable::GetVolume),
                declared.get_volume,
                caps.contains(&Ctl::GetVolume),
            )?;
            compare(
                &ctx,
                "PUBLISH_UNPUBLISH_VOLUME",
                Some(Discoverable::ControllerPublish),
                declared.controller_publish,
                caps.contains(&Ctl::PublishUnpublishVolume),
            )
        }
        Flow::NodeCapabilities => {
            let caps = expect_ok(ctx.node_capabilities().await, "NodeGetCapabilities")?;
            compare(
                &ctx,
                "STAGE_UNSTAGE_VOLUME",
                Some(Discoverable::StageUnstage),
                declared.stage_unstage,
                caps.contains(&Nd::StageUnstageVolume),
            )?;
            compare(
                &ctx,
                "node EXPAND_VOLUME",
                None,
                declared.node_expansion,
                caps.contains(&Nd::ExpandVolume),
            )
        }
        Flow::CloneHonoured => {
            let caps = expect_ok(
                ctx.controller_capabilities().await,
                "ControllerGetCapabilities",
            )?;
            if !caps.contains(&Ctl::CloneVolume) {
                return Err(fail_with(
                    "the profile declares clones but CLONE_VOLUME is not advertised",
                    "CLONE_VOLUME",
                    format!("{caps:?}"),
                ));
            }
            let access = default_access(&ctx);
            let (source, size) = empty_source(&ctx, SourceKind::Volume, access).await?;
            expect_ok(
                ctx.create_from(&source, access, Some((size, 0))).await,
                "CreateVolume from a volume while CLONE_VOLUME is advertised",
            )
            .map(drop)
        }
        Flow::CloneRefusedWithoutCapability => {
            let caps = expect_ok(
                ctx.controller_capabilities().await,
                "ControllerGetCapabilities",
            )?;
            ensure(
                !caps.contains(&Ctl::CloneVolume),
                "the profile declares no clones but CLONE_VOLUME is advertised",
                "no CLONE_VOLUME",
                format!("{caps:?}"),
            )?;
            let access = default_access(&ctx);
            let volume = ctx.new_volume(access, None).await?;
            let size = harness::steps::reported_size(volume.capacity_bytes, ctx.volume_size())?;
            let source = SourceRef::Volume(volume.volume_id);
            expect_code(
                ctx.create_from(&source, access, Some((size, 0))).await,
                Code::InvalidArgument,
                "CreateVolume from a volume without CLONE_VOLUME",
            )
        }
    }
}
