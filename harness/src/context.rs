//! The per-case context: clients on the run's one channel, the profile, a seed, a sandbox dir,
//! unique names, and an RPC trace that ends up in the report.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use csi::volume_capability::{
    AccessMode, AccessType as ProtoAccess, BlockVolume, MountVolume, access_mode::Mode,
};
use csi::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use csi_proto::transport::CsiClients;
use csi_proto::v1 as csi;

use crate::k8s::ClusterHandle;
use crate::ledger::Ledger;
use crate::profile::DriverProfile;
use crate::profile::SecretCall;

/// Access type of a volume (the CSI-level volumeMode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Mount,
    Block,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Mount => "mount",
            Access::Block => "block",
        })
    }
}

/// A content source as a case names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceRef {
    Volume(String),
    Snapshot(String),
}

impl SourceRef {
    pub fn to_proto(&self) -> csi::VolumeContentSource {
        let r#type = match self {
            SourceRef::Volume(id) => SourceType::Volume(VolumeSource {
                volume_id: id.clone(),
            }),
            SourceRef::Snapshot(id) => SourceType::Snapshot(SnapshotSource {
                snapshot_id: id.clone(),
            }),
        };
        csi::VolumeContentSource {
            r#type: Some(r#type),
        }
    }

    /// What a response's `content_source` says, in the same terms (None if absent or unset).
    pub fn from_proto(source: Option<&csi::VolumeContentSource>) -> Option<SourceRef> {
        match source?.r#type.as_ref()? {
            SourceType::Volume(v) => Some(SourceRef::Volume(v.volume_id.clone())),
            SourceType::Snapshot(s) => Some(SourceRef::Snapshot(s.snapshot_id.clone())),
        }
    }
}

impl std::fmt::Display for SourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceRef::Volume(id) => write!(f, "volume:{id}"),
            SourceRef::Snapshot(id) => write!(f, "snapshot:{id}"),
        }
    }
}

/// A CSI controller and node service (the same clients when they share an endpoint).
#[derive(Clone)]
pub struct CsiHandles {
    pub controller: CsiClients,
    pub node: CsiClients,
}

/// What the target gives cases: CSI clients, a cluster, or (some day) both.
#[derive(Clone, Default)]
pub struct TargetHandles {
    pub csi: Option<CsiHandles>,
    pub cluster: Option<Arc<ClusterHandle>>,
}

/// Settings of the whole run that cases read.
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub seed: u64,
    pub parallel_clones: usize,
    /// Short random tag in every name this run creates, so runs never collide.
    pub run_tag: String,
    /// Parent of the per-case sandboxes (staging and target paths).
    pub work_dir: PathBuf,
}

/// A rule broken by a call no step judged (see `CaseCtx::violate`).
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub message: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
}

#[derive(Clone)]
pub struct CaseCtx {
    inner: Arc<Inner>,
}

struct Inner {
    handles: TargetHandles,
    /// The case's own namespace on a cluster target, made on first use.
    namespace: tokio::sync::OnceCell<String>,
    profile: Arc<DriverProfile>,
    settings: Arc<RunSettings>,
    ledger: Arc<Ledger>,
    owner: usize,
    seed: u64,
    sandbox: PathBuf,
    names: AtomicUsize,
    trace: Mutex<Vec<String>>,
    /// Set by `advise`: the case passes as advisory with this note.
    advisory: Mutex<Option<String>>,
    /// publish_context of each volume ControllerPublished in this case, for NodeStage and
    /// NodePublish (spec: the CO passes it on).
    publish_contexts: Mutex<HashMap<String, HashMap<String, String>>>,
    /// NodeGetInfo's accessible_topology, asked once (see `topology.rs`).
    node_topology: tokio::sync::OnceCell<Option<std::collections::BTreeMap<String, String>>>,
    /// Rules every call must keep that no step judged (e.g. topology): a passing case with
    /// one fails with the first.
    violations: Mutex<Vec<Violation>>,
}

impl CaseCtx {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        handles: TargetHandles,
        profile: Arc<DriverProfile>,
        settings: Arc<RunSettings>,
        ledger: Arc<Ledger>,
        owner: usize,
        case_id: &str,
    ) -> CaseCtx {
        // Per-case seed: stable for a given run seed and case, so one case replays alone.
        let seed = settings.seed ^ fnv1a(case_id.as_bytes());
        let sandbox = settings.work_dir.join(format!("case-{owner:03}"));
        CaseCtx {
            inner: Arc::new(Inner {
                handles,
                namespace: tokio::sync::OnceCell::new(),
                profile,
                settings,
                ledger,
                owner,
                seed,
                sandbox,
                names: AtomicUsize::new(0),
                trace: Mutex::new(Vec::new()),
                advisory: Mutex::new(None),
                publish_contexts: Mutex::new(HashMap::new()),
                node_topology: tokio::sync::OnceCell::new(),
                violations: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn profile(&self) -> &DriverProfile {
        &self.inner.profile
    }

    pub fn settings(&self) -> &RunSettings {
        &self.inner.settings
    }

    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// A seed for the n-th dataset of this case.
    pub fn seed_for(&self, n: u64) -> u64 {
        self.inner
            .seed
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The CSI clients; cases that need them are only planned on targets that have them.
    /// The publish_context ControllerPublishVolume gave `volume_id` (empty if none).
    pub(crate) fn publish_context(&self, volume_id: &str) -> HashMap<String, String> {
        let contexts = self.inner.publish_contexts.lock();
        let contexts = contexts.unwrap_or_else(|p| p.into_inner());
        contexts.get(volume_id).cloned().unwrap_or_default()
    }

    pub(crate) fn set_publish_context(&self, volume_id: &str, context: HashMap<String, String>) {
        let contexts = self.inner.publish_contexts.lock();
        let mut contexts = contexts.unwrap_or_else(|p| p.into_inner());
        contexts.insert(volume_id.to_string(), context);
    }

    /// Whether the target has a CSI endpoint (not so on a cluster).
    pub fn has_csi(&self) -> bool {
        self.inner.handles.csi.is_some()
    }

    fn csi(&self) -> Result<&CsiHandles, tonic::Status> {
        self.inner.handles.csi.as_ref().ok_or_else(|| {
            tonic::Status::failed_precondition("harness: this target has no CSI endpoint")
        })
    }

    pub(crate) fn controller(
        &self,
    ) -> Result<csi::controller_client::ControllerClient<tonic::transport::Channel>, tonic::Status>
    {
        Ok(self.csi()?.controller.controller.clone())
    }

    pub(crate) fn identity(
        &self,
    ) -> Result<csi::identity_client::IdentityClient<tonic::transport::Channel>, tonic::Status>
    {
        Ok(self.csi()?.controller.identity.clone())
    }

    pub(crate) fn node(
        &self,
    ) -> Result<csi::node_client::NodeClient<tonic::transport::Channel>, tonic::Status> {
        Ok(self.csi()?.node.node.clone())
    }

    /// The cluster handle, on cluster targets.
    pub(crate) fn cluster_handle(&self) -> Option<&Arc<ClusterHandle>> {
        self.inner.handles.cluster.as_ref()
    }

    pub(crate) fn namespace_cell(&self) -> &tokio::sync::OnceCell<String> {
        &self.inner.namespace
    }

    pub(crate) fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    pub(crate) fn owner(&self) -> usize {
        self.inner.owner
    }

    /// A fresh directory inside this case's sandbox.
    pub fn sandbox_dir(&self, what: &str) -> std::io::Result<PathBuf> {
        let n = self.inner.names.fetch_add(1, Ordering::Relaxed);
        let dir = self.inner.sandbox.join(format!("{what}-{n}"));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// A fresh object name, unique across runs and cases; at most 63 characters.
    pub fn unique_name(&self, what: &str) -> String {
        let n = self.inner.names.fetch_add(1, Ordering::Relaxed);
        let mut name = format!(
            "csiclone-{}-c{}-{what}-{n}",
            self.inner.settings.run_tag, self.inner.owner
        );
        name.truncate(63);
        name
    }

    pub fn trace(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::debug!(case = self.inner.owner, "{line}");
        self.inner
            .trace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    /// Makes a passing case advisory: it passes, and every report carries `note`. Notes of
    /// one case are joined.
    pub fn advise(&self, note: impl Into<String>) {
        let note = note.into();
        self.trace(format!("advisory: {note}"));
        let mut slot = self
            .inner
            .advisory
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *slot = Some(match slot.take() {
            Some(earlier) => format!("{earlier}; {note}"),
            None => note,
        });
    }

    /// Records a broken rule that no step judges, for the runner to fail the case with.
    pub(crate) fn violate(&self, failure: Violation) {
        self.trace(format!("violation: {}", failure.message));
        self.inner
            .violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(failure);
    }

    /// The first violation recorded, if any.
    pub(crate) fn take_violation(&self) -> Option<Violation> {
        let mut all = self
            .inner
            .violations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        (!all.is_empty()).then(|| all.remove(0))
    }

    pub(crate) fn node_topology_cell(
        &self,
    ) -> &tokio::sync::OnceCell<Option<std::collections::BTreeMap<String, String>>> {
        &self.inner.node_topology
    }

    pub(crate) fn take_advisory(&self) -> Option<String> {
        self.inner
            .advisory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    pub fn take_trace(&self) -> Vec<String> {
        std::mem::take(&mut *self.inner.trace.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The secrets the profile gives `call` (csi-sanity's per-call file, or one map for all).
    pub fn secrets_for(&self, call: SecretCall) -> HashMap<String, String> {
        self.inner.profile.secrets.for_call(call)
    }

    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_secs(self.inner.profile.timeouts.rpc_secs)
    }

    pub fn clone_timeout(&self) -> Duration {
        Duration::from_secs(self.inner.profile.timeouts.clone_secs)
    }

    /// The test volume size from the profile.
    pub fn volume_size(&self) -> u64 {
        self.inner.profile.sizes.volume_bytes
    }

    pub fn capability(&self, access: Access) -> csi::VolumeCapability {
        let access_type = match access {
            Access::Block => ProtoAccess::Block(BlockVolume {}),
            Access::Mount => ProtoAccess::Mount(MountVolume {
                fs_type: self.inner.profile.fs_type.clone().unwrap_or_default(),
                mount_flags: Vec::new(),
                volume_mount_group: String::new(),
            }),
        };
        csi::VolumeCapability {
            access_type: Some(access_type),
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
        }
    }

    /// A CreateVolume request with the profile's parameters and secrets.
    pub fn volume_request(
        &self,
        name: &str,
        access: Access,
        capacity: Option<(u64, u64)>,
        source: Option<&SourceRef>,
    ) -> csi::CreateVolumeRequest {
        csi::CreateVolumeRequest {
            name: name.to_string(),
            capacity_range: capacity.map(|(required, limit)| csi::CapacityRange {
                required_bytes: required as i64,
                limit_bytes: limit as i64,
            }),
            volume_capabilities: vec![self.capability(access)],
            parameters: self
                .inner
                .profile
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            secrets: self.secrets_for(SecretCall::CreateVolume),
            volume_content_source: source.map(SourceRef::to_proto),
            accessibility_requirements: None,
            mutable_parameters: HashMap::new(),
        }
    }
}

/// FNV-1a: a tiny stable hash for deriving per-case seeds (std's hasher is randomised).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
