//! What a run sets up once its target is up: the ledger, the handles cases get (CSI clients,
//! or a cluster handle with its classes resolved and preflight passed), and what the reports
//! say about the target.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use reports::RunInfo;

use super::{RunError, RunOptions, discover};
use crate::context::{CaseCtx, RunSettings, TargetHandles};
use crate::k8s::{ClusterHandle, DEFAULT_POD_IMAGE, KubeTimeouts, preflight, resolve_classes};
use crate::ledger::{KubeCleanup, Ledger};
use crate::profile::DriverProfile;
use crate::target::{KubeConnection, Target};

/// Everything cases share.
pub(super) struct Session {
    /// The run's profile: the one given, with what it left to the driver read from it.
    pub profile: Arc<DriverProfile>,
    pub ledger: Arc<Ledger>,
    pub settings: Arc<RunSettings>,
    pub handles: TargetHandles,
    pub info: RunInfo,
    /// Volume ids listed before the run (CSI targets with LIST_VOLUMES).
    pub inventory_before: Option<BTreeSet<String>>,
    /// A context for run-level calls (probe, inventory).
    pub run_ctx: CaseCtx,
}

/// The run's ledger, able to remove what this target's cases create.
pub(super) fn ledger_for(target: &Target, options: &RunOptions) -> Ledger {
    let cleanup = target.kube.as_ref().map(|k| KubeCleanup {
        client: k.client.clone(),
        delete_timeout: kube_timeouts(options).delete,
    });
    let secrets = options.profile.secrets.clone();
    Ledger::new(
        target.csi.as_ref().map(|c| c.handles.clone()),
        cleanup,
        secrets,
    )
    .with_call_timeout(Duration::from_secs(options.profile.timeouts.rpc_secs))
}

pub(super) async fn open(
    target: &Target,
    options: &RunOptions,
    settings: Arc<RunSettings>,
    ledger: Arc<Ledger>,
) -> Result<Session, RunError> {
    let timeouts = kube_timeouts(options);
    let csi = target.csi.as_ref().map(|c| c.handles.clone());
    let cluster = match &target.kube {
        Some(kube) => Some(Arc::new(
            cluster_handle(target, kube, options, &settings, &ledger, timeouts).await?,
        )),
        None => None,
    };
    let handles = TargetHandles { csi, cluster };
    let ctx_with = |profile: &Arc<DriverProfile>| {
        CaseCtx::new(
            handles.clone(),
            profile.clone(),
            settings.clone(),
            ledger.clone(),
            usize::MAX,
            "run",
        )
    };
    let (profile, from_driver) =
        discover::fill(&options.profile, &ctx_with(&options.profile)).await;
    let run_ctx = ctx_with(&profile);
    let plugin = if handles.csi.is_some() {
        run_ctx.plugin_info().await.ok()
    } else {
        None
    };
    let inventory_before = if handles.csi.is_some() && profile.capabilities.list_volumes {
        run_ctx
            .list_volumes()
            .await
            .ok()
            .map(|v| v.into_iter().map(|v| v.volume_id).collect::<BTreeSet<_>>())
    } else {
        None
    };
    let mut info = run_info(target, options, &handles, plugin.as_ref());
    if let Some(line) = from_driver {
        info.properties
            .insert("capabilities_from_driver".into(), line);
    }
    Ok(Session {
        profile,
        ledger,
        settings,
        handles,
        info,
        inventory_before,
        run_ctx,
    })
}

fn kube_timeouts(options: &RunOptions) -> KubeTimeouts {
    let t = &options.profile.timeouts;
    KubeTimeouts {
        bind: Duration::from_secs(t.bind_secs),
        pod: Duration::from_secs(t.pod_secs),
        delete: Duration::from_secs(t.delete_secs),
        call: Duration::from_secs(t.rpc_secs),
    }
}

/// Preflight, then the classes; any problem ends the run before the first case.
async fn cluster_handle(
    target: &Target,
    kube: &KubeConnection,
    options: &RunOptions,
    settings: &RunSettings,
    ledger: &Ledger,
    timeouts: KubeTimeouts,
) -> Result<ClusterHandle, RunError> {
    let profile = &options.profile;
    let check = tokio::time::timeout(timeouts.call * 4, preflight::check(&kube.client, profile))
        .await
        .map_err(|_| {
            RunError::Preflight(vec![format!(
                "the API server at {} did not answer within {:?}",
                kube.server,
                timeouts.call * 4
            )])
        })?;
    if !check.missing.is_empty() {
        return Err(RunError::Preflight(check.missing));
    }
    let classes = resolve_classes(&kube.client, profile, &settings.run_tag, ledger)
        .await
        .map_err(|problem| RunError::Preflight(vec![problem]))?;
    let local = target.kind == "local-cluster";
    let pod_image = match (&options.pod_image, &profile.kubernetes.pod_image) {
        (Some(image), _) | (None, Some(image)) => image.clone(),
        (None, None) if local => local_cluster::bins::POD_IMAGE.to_string(),
        (None, None) => DEFAULT_POD_IMAGE.to_string(),
    };
    let mut properties = check.properties;
    properties.insert("kubeconfig".into(), kube.source.clone());
    properties.insert("storage_class".into(), classes.storage_class.clone());
    if let Some(class) = &classes.snapshot_class {
        properties.insert("snapshot_class".into(), class.clone());
    }
    properties.insert(
        "data_path".into(),
        format!("pods (image {pod_image}): tar and dd through the exec API"),
    );
    properties.insert("pod_image".into(), pod_image.clone());
    let mut driver_version = String::new();
    if let Some(shared) = &target.local
        && let Some(cluster) = shared.lock().await.as_ref()
    {
        driver_version = cluster.info.driver_version.clone();
        // Its sidecars are processes on this machine, not pods: their versions come from the bin dir.
        properties.insert(
            "sidecars".into(),
            ["csi-provisioner", "csi-resizer", "external-snapshotter"]
                .iter()
                .filter_map(|c| cluster.info.versions.get(*c).map(|v| format!("{c} {v}")))
                .collect::<Vec<_>>()
                .join(", "),
        );
        for (component, version) in &cluster.info.versions {
            properties.insert(format!("version.{component}"), version.clone());
        }
    }
    Ok(ClusterHandle {
        client: kube.client.clone(),
        driver_name: profile.name.clone(),
        driver_version,
        storage_class: classes.storage_class,
        binding: classes.binding,
        snapshot_class: classes.snapshot_class,
        pod_image,
        host_network: local,
        timeouts,
        properties,
    })
}

fn run_info(
    target: &Target,
    options: &RunOptions,
    handles: &TargetHandles,
    plugin: Option<&csi_proto::v1::GetPluginInfoResponse>,
) -> RunInfo {
    let mut properties = options.properties.clone();
    properties.insert(
        "parallel_clones".into(),
        options.parallel_clones.to_string(),
    );
    let (endpoint, node_endpoint) = match (&target.csi, &target.kube) {
        (Some(csi), _) => {
            properties.insert("csi_spec".into(), csi_proto::CSI_SPEC_VERSION.into());
            (
                csi.controller_endpoint.to_string(),
                csi.node_endpoint.to_string(),
            )
        }
        (None, Some(kube)) => (kube.server.clone(), String::new()),
        (None, None) => (String::new(), String::new()),
    };
    if let Some(cluster) = &handles.cluster {
        properties.extend(
            cluster
                .properties
                .clone()
                .into_iter()
                .map(|(k, v)| (format!("k8s.{k}"), v)),
        );
    }
    let driver_name = match (plugin, &handles.cluster) {
        (Some(info), _) => info.name.clone(),
        (None, Some(cluster)) => cluster.driver_name.clone(),
        (None, None) => String::new(),
    };
    RunInfo {
        tool: format!("csi-clone-conformance {}", env!("CARGO_PKG_VERSION")),
        driver_name,
        driver_version: match (plugin, &handles.cluster) {
            (Some(info), _) => info.vendor_version.clone(),
            (None, Some(cluster)) => cluster.driver_version.clone(),
            (None, None) => String::new(),
        },
        target: target.kind.to_string(),
        endpoint,
        node_endpoint,
        profile: options.profile_label.clone(),
        seed: options.seed,
        started_at: super::now_rfc3339(),
        properties,
    }
}
