//! Bring-up and tear-down of the whole stack, in dependency order. Every step that starts a
//! process records it at once, in memory and in the run's record on disk, so a failure (or a
//! signal) at any point tears down exactly what was started, a SIGKILL leaves what a later run
//! needs to do the same, and the host snapshot taken first is always restored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use crate::bins::{Binaries, POD_IMAGE};
use crate::host::{self, Adopter, LiveRecord, Registry};
use crate::layout::Layout;
use crate::pki::Pki;
use crate::process::{Process, Spec, free_port};
use crate::registration::RegistrarHandle;
use crate::spawner::Spawner;
use crate::teardown::{self, Remains, TeardownReport};
use crate::{ClusterError, claim, components};

/// The node's name; it resolves to 127.0.0.1, which is how the API server reaches the kubelet
/// (the kubelet refuses a loopback node IP, but a host name is fine).
pub const NODE_NAME: &str = "localhost";

/// How to start the CSI driver: argv with `{endpoint}` (socket path), `{endpoint_url}`
/// (`unix://` + path), `{node_id}` and `{state_dir}` replaced.
#[derive(Clone, Debug)]
pub struct DriverCommand {
    pub argv: Vec<String>,
}

impl DriverCommand {
    /// Parses a shell-quoted command line (no shell runs it).
    pub fn parse(command: &str) -> Result<DriverCommand, String> {
        let argv = shlex::split(command).ok_or("unbalanced quotes in the driver command")?;
        if argv.is_empty() {
            return Err("the driver command is empty".into());
        }
        Ok(DriverCommand { argv })
    }

    fn expand(&self, layout: &Layout) -> Vec<String> {
        let endpoint = layout.driver_socket.display().to_string();
        self.argv
            .iter()
            .map(|arg| {
                arg.replace("{endpoint_url}", &format!("unix://{endpoint}"))
                    .replace("{endpoint}", &endpoint)
                    .replace("{node_id}", NODE_NAME)
                    .replace("{state_dir}", &layout.driver_state.display().to_string())
            })
            .collect()
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// The upstream binaries (`--k8s-bin`).
    pub k8s_bin: PathBuf,
    /// Everything goes below this directory (created; removed at tear-down).
    pub root: PathBuf,
    pub driver: DriverCommand,
    /// Expected driver name; `None` takes what GetPluginInfo answers.
    pub driver_name: Option<String>,
    /// Each component's start-up limit.
    pub start_timeout: Duration,
    /// Feature gates (`Name=true`) for kube-apiserver and kube-controller-manager; those
    /// csi-provisioner knows are passed to it too.
    pub feature_gates: Vec<String>,
}

/// What a run reports about the cluster it started.
#[derive(Clone, Debug, Default)]
pub struct ClusterInfo {
    /// The API server URL.
    pub server: String,
    /// An admin (system:masters) kubeconfig.
    pub kubeconfig: PathBuf,
    pub node_name: String,
    pub driver_name: String,
    /// GetPluginInfo's vendor_version.
    pub driver_version: String,
    pub driver_endpoint: PathBuf,
    pub pod_image: String,
    /// Component name -> version (from the bin dir's VERSIONS file).
    pub versions: BTreeMap<String, String>,
}

/// A running cluster. `shutdown` tears it down; dropping it without does a best-effort
/// synchronous tear-down (processes, mounts, loop devices, host state).
pub struct LocalCluster {
    pub info: ClusterInfo,
    pub(crate) layout: Layout,
    pub(crate) bins: Binaries,
    /// The run's record (host snapshot, started processes), saved in the registry.
    record: Arc<LiveRecord>,
    /// Records the shims containerd detaches; taken at tear-down.
    adopter: Option<Adopter>,
    /// Started processes, in start order (stopped in reverse).
    processes: Vec<Process>,
    /// Forks them; declared after `processes` and dropped after the tear-down (`Drop`).
    spawner: Spawner,
    registrar: Option<RegistrarHandle>,
    client: Option<Client>,
    down: bool,
}

impl LocalCluster {
    /// Starts everything; on failure tears down what was started and returns the error.
    pub async fn start(options: &Options) -> Result<LocalCluster, ClusterError> {
        let mut cluster = LocalCluster::prepare(options)?;
        match cluster.bring_up(options).await {
            Ok(()) => Ok(cluster),
            Err(e) => {
                let report = cluster.shutdown().await;
                for line in report.problems() {
                    tracing::warn!("tear-down after a failed start: {line}");
                }
                Err(e)
            }
        }
    }

    /// Checks the binaries, cleans up after earlier runs that were killed (see `claim`), lays
    /// out the run directory, snapshots the host and records the run. Starts no component.
    pub fn prepare(options: &Options) -> Result<LocalCluster, ClusterError> {
        if !rustix::process::geteuid().is_root() {
            return Err(ClusterError::setup(
                "start a local cluster",
                "it needs root (the kubelet mounts volumes, containerd runs containers)",
            ));
        }
        let bins = Binaries::find(&options.k8s_bin)?;
        let layout = Layout::new(&options.root)?;
        // Saved before anything of the run exists, so a SIGKILLed harness leaves the way back.
        let spawner =
            Spawner::new().map_err(|e| ClusterError::setup("start the spawner thread", e))?;
        let record = claim::claim_host(&layout.root, &Registry::system())?;
        let cluster = LocalCluster {
            info: ClusterInfo {
                node_name: NODE_NAME.to_string(),
                driver_endpoint: layout.driver_socket.clone(),
                pod_image: POD_IMAGE.to_string(),
                versions: bins.versions.clone(),
                ..ClusterInfo::default()
            },
            layout,
            bins,
            adopter: Some(Adopter::start(record.clone())),
            record,
            processes: Vec::new(),
            spawner,
            registrar: None,
            client: None,
            down: false,
        };
        // From here on a failure tears down (Drop) what exists, the record included.
        cluster.layout.create_dirs()?;
        Ok(cluster)
    }

    /// Starts the stack step by step; safe to abandon at any await (tear down afterwards).
    pub async fn bring_up(&mut self, options: &Options) -> Result<(), ClusterError> {
        let limit = options.start_timeout;
        let pki = Pki::create(&self.layout.pki, NODE_NAME)?;
        let etcd_url = self.start_etcd(limit).await?;
        let gates = &options.feature_gates;
        let server = self.start_apiserver(&pki, &etcd_url, gates, limit).await?;
        let client = self.client.clone().expect("set by start_apiserver");
        self.start_controllers(&pki, &server, gates, limit).await?;
        self.start_node(&pki, &server, &client, limit).await?;
        components::apply_snapshot_crds(&self.bins, &client, limit).await?;
        let driver = self.start_driver(options, limit).await?;
        self.info.driver_name = driver.clone();
        crate::objects::create_csi_driver(&client, &driver).await?;
        self.register_driver(&driver, limit).await?;
        let sidecars =
            components::sidecars(&self.bins, &self.layout, &client, &server, &pki, gates).await?;
        for (name, binary, args) in sidecars {
            self.spawn(name, binary, args)?;
        }
        tracing::info!(driver, "local cluster ready");
        Ok(())
    }

    /// An admin client (system:masters) for the cluster.
    pub fn client(&self) -> Option<Client> {
        self.client.clone()
    }

    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    pub(crate) fn spawn(
        &mut self,
        name: &str,
        binary: PathBuf,
        args: Vec<String>,
    ) -> Result<usize, ClusterError> {
        self.spawn_with_env(name, binary, args, Vec::new())
    }

    pub(crate) fn spawn_with_env(
        &mut self,
        name: &str,
        binary: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Result<usize, ClusterError> {
        let process = Process::spawn(
            Spec {
                name,
                binary,
                args,
                env,
                logs: &self.layout.logs,
            },
            &self.spawner,
        )?;
        let id = process.id;
        self.processes.push(process);
        self.record
            .add(name, id)
            .map_err(|e| ClusterError::setup(format!("record {name} in the run record"), e))?;
        Ok(self.processes.len() - 1)
    }

    async fn start_etcd(&mut self, limit: Duration) -> Result<String, ClusterError> {
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let url = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let args = vec![
            "--name=local".into(),
            format!("--data-dir={}", self.layout.etcd_data.display()),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=local={peer}"),
            // Test data only: durability is not worth the fsync latency.
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ];
        let at = self.spawn("etcd", self.bins.path("etcd"), args)?;
        let health = format!("127.0.0.1:{client_port}");
        self.processes[at]
            .wait_ready(limit, || components::etcd_healthy(health.clone()))
            .await?;
        Ok(url)
    }

    async fn start_apiserver(
        &mut self,
        pki: &Pki,
        etcd: &str,
        gates: &[String],
        limit: Duration,
    ) -> Result<String, ClusterError> {
        let port = free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let mut args = components::apiserver_args(pki, etcd, port);
        args.extend(components::gates_flag(gates));
        let at = self.spawn("kube-apiserver", self.bins.path("kube-apiserver"), args)?;
        let kubeconfig = self
            .layout
            .cert_kubeconfig("admin", &server, &pki.ca.cert, &pki.admin)?;
        let client = components::client_for(&kubeconfig).await?;
        self.processes[at]
            .wait_ready(limit, || components::api_ready(client.clone()))
            .await?;
        self.info.kubeconfig = kubeconfig;
        self.info.server = server.clone();
        self.client = Some(client);
        Ok(server)
    }

    async fn start_controllers(
        &mut self,
        pki: &Pki,
        server: &str,
        gates: &[String],
        limit: Duration,
    ) -> Result<(), ClusterError> {
        let kcm_config = self.layout.cert_kubeconfig(
            "controller-manager",
            server,
            &pki.ca.cert,
            &pki.controller_manager,
        )?;
        let kcm_port = free_port()?;
        let mut args =
            components::controller_manager_args(pki, &self.layout, &kcm_config, kcm_port);
        args.extend(components::gates_flag(gates));
        let kcm = self.spawn(
            "kube-controller-manager",
            self.bins.path("kube-controller-manager"),
            args,
        )?;
        let sched_config =
            self.layout
                .cert_kubeconfig("scheduler", server, &pki.ca.cert, &pki.scheduler)?;
        let sched_port = free_port()?;
        let args = vec![
            format!("--kubeconfig={}", sched_config.display()),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={sched_port}"),
        ];
        let sched = self.spawn("kube-scheduler", self.bins.path("kube-scheduler"), args)?;
        self.processes[kcm]
            .wait_ready(limit, || components::healthz(kcm_port))
            .await?;
        self.processes[sched]
            .wait_ready(limit, || components::healthz(sched_port))
            .await
    }

    async fn start_node(
        &mut self,
        pki: &Pki,
        server: &str,
        client: &Client,
        limit: Duration,
    ) -> Result<(), ClusterError> {
        let config = self.layout.containerd_config(&self.bins)?;
        // containerd finds its shim on PATH.
        let path = format!(
            "{}:{}",
            self.bins.dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let containerd = self.spawn_with_env(
            "containerd",
            self.bins.path("containerd"),
            vec![format!("--config={}", config.display())],
            vec![("PATH".into(), path)],
        )?;
        let socket = self.layout.containerd_socket.clone();
        self.processes[containerd]
            .wait_ready(limit, || components::socket_answers(socket.clone()))
            .await?;
        components::import_images(&self.bins, &self.layout, limit).await?;
        let kubeconfig =
            self.layout
                .cert_kubeconfig("kubelet", server, &pki.ca.cert, &pki.kubelet)?;
        let (port, healthz) = (free_port()?, free_port()?);
        let config = self.layout.kubelet_config(pki, port, healthz)?;
        let args = vec![
            format!("--config={}", config.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--root-dir={}", self.layout.kubelet_root.display()),
            format!(
                "--cert-dir={}",
                self.layout.kubelet_root.join("pki").display()
            ),
            format!("--hostname-override={NODE_NAME}"),
            "--v=2".into(),
        ];
        let kubelet = self.spawn("kubelet", self.bins.path("kubelet"), args)?;
        self.processes[kubelet]
            .wait_ready(limit, || components::node_ready(client.clone(), NODE_NAME))
            .await
    }

    async fn start_driver(
        &mut self,
        options: &Options,
        limit: Duration,
    ) -> Result<String, ClusterError> {
        let argv = options.driver.expand(&self.layout);
        let at = self.spawn("csi-driver", PathBuf::from(&argv[0]), argv[1..].to_vec())?;
        let endpoint = self.layout.driver_socket.clone();
        self.processes[at]
            .wait_ready(limit, move || {
                let endpoint = endpoint.clone();
                async move { components::plugin_info(&endpoint).await.map(drop) }
            })
            .await?;
        let (name, version) = components::plugin_info(&self.layout.driver_socket)
            .await
            .map_err(|reason| ClusterError::setup("GetPluginInfo", reason))?;
        self.info.driver_version = version;
        if let Some(expected) = &options.driver_name
            && *expected != name
        {
            return Err(ClusterError::setup(
                "the driver's name",
                format!("--driver-name is {expected:?} but GetPluginInfo answers {name:?}"),
            ));
        }
        Ok(name)
    }

    async fn register_driver(&mut self, driver: &str, limit: Duration) -> Result<(), ClusterError> {
        let mut registrar = RegistrarHandle::serve(
            &self.layout.registration_socket,
            driver,
            &self.layout.driver_socket,
        )?;
        let result = registrar.registered(driver, limit).await;
        self.registrar = Some(registrar);
        result
    }

    /// Tears everything down and restores the host; see `teardown`.
    pub async fn shutdown(&mut self) -> TeardownReport {
        if self.down {
            return TeardownReport::default();
        }
        let mut report = match self.client.clone() {
            Some(client) => teardown::drain(&client).await,
            None => TeardownReport::default(),
        };
        report.extend(self.stop_and_sweep());
        report
    }

    /// The process phase of the tear-down; synchronous, so `Drop` can use it too.
    fn stop_and_sweep(&mut self) -> TeardownReport {
        self.down = true;
        // Removing the registration socket deregisters the driver before the kubelet goes.
        self.registrar = None;
        self.client = None;
        teardown::stop_and_sweep(Remains {
            processes: &mut self.processes,
            record: Some(&self.record),
            adopter: self.adopter.take(),
            root: &self.layout.root,
        })
    }

    /// What is left of the run on the host (empty after a clean tear-down).
    pub fn leftovers(&self) -> Vec<String> {
        let run = self.record.get();
        host::leftovers(&self.layout.root, &run.process_ids(), &run.snapshot)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if !self.down {
            for line in self.stop_and_sweep().problems() {
                tracing::warn!("tear-down: {line}");
            }
        }
    }
}
