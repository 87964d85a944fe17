//! Each component's flags and its readiness check. Flags and their reasons are measured facts
//! (docs/cluster.md); readiness is what the component itself reports, polled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ClusterError;
use crate::bins::Binaries;
use crate::layout::Layout;
use crate::objects::{apply_crds, apply_rbac, service_account_token};
use crate::pki::Pki;

/// Controllers the clone suites need: PV binding, protection finalizers and expansion; service
/// accounts and namespace deletion for the harness's per-case namespaces; node lifecycle, which
/// lifts the not-ready taint the kubelet registers its node with.
const CONTROLLERS: &str = "persistentvolume-binder-controller,persistentvolume-protection-controller,\
persistentvolumeclaim-protection-controller,persistentvolume-expander-controller,\
serviceaccount-controller,namespace-controller,garbage-collector-controller,node-lifecycle-controller";

pub(crate) fn apiserver_args(pki: &Pki, etcd: &str, port: u16) -> Vec<String> {
    let p = |path: &Path| path.display().to_string();
    vec![
        format!("--etcd-servers={etcd}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--tls-cert-file={}", p(&pki.apiserver.cert)),
        format!("--tls-private-key-file={}", p(&pki.apiserver.key)),
        format!("--client-ca-file={}", p(&pki.ca.cert)),
        "--service-account-issuer=https://kubernetes.default.svc".into(),
        format!(
            "--service-account-key-file={}",
            p(&pki.service_account_public)
        ),
        format!(
            "--service-account-signing-key-file={}",
            p(&pki.service_account_key)
        ),
        "--service-cluster-ip-range=10.96.0.0/24".into(),
        // RBAC makes a sidecar's missing permission visible; Node is what the kubelet needs.
        "--authorization-mode=Node,RBAC".into(),
        // Without it the server exits: 127.0.0.1 is not an address it may publish for the
        // kubernetes service.
        "--endpoint-reconciler-type=none".into(),
        format!(
            "--kubelet-client-certificate={}",
            p(&pki.apiserver_kubelet_client.cert)
        ),
        format!(
            "--kubelet-client-key={}",
            p(&pki.apiserver_kubelet_client.key)
        ),
        // The node's Hostname address (`localhost`) is how logs and exec reach the kubelet.
        "--kubelet-preferred-address-types=Hostname".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
    ]
}

pub(crate) fn controller_manager_args(
    pki: &Pki,
    layout: &Layout,
    kubeconfig: &Path,
    port: u16,
) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        "--leader-elect=false".into(),
        "--use-service-account-credentials=true".into(),
        format!(
            "--service-account-private-key-file={}",
            pki.service_account_key.display()
        ),
        format!("--root-ca-file={}", pki.ca.cert.display()),
        // Else it creates /usr/libexec/kubernetes/kubelet-plugins/volume/exec/ on the host.
        format!("--flex-volume-plugin-dir={}", layout.flex_volume.display()),
        format!("--controllers={CONTROLLERS}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
    ]
}

/// `--feature-gates=A=true,B=true`, or nothing.
pub(crate) fn gates_flag(gates: &[String]) -> Option<String> {
    (!gates.is_empty()).then(|| format!("--feature-gates={}", gates.join(",")))
}

/// The gate that lets a claim's dataSourceRef name another namespace; csi-provisioner has it
/// too (and then needs to read ReferenceGrants).
const CROSS_NAMESPACE_GATE: &str = "CrossNamespaceVolumeDataSource=true";

/// A client from a kubeconfig file.
pub(crate) async fn client_for(kubeconfig: &Path) -> Result<Client, ClusterError> {
    let what = format!("load {}", kubeconfig.display());
    let config = Kubeconfig::read_from(kubeconfig).map_err(|e| ClusterError::setup(&what, e))?;
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .map_err(|e| ClusterError::setup(&what, e))?;
    Client::try_from(config).map_err(ClusterError::api(what))
}

pub(crate) async fn api_ready(client: Client) -> Result<(), String> {
    answers_ok(&client, "/readyz").await
}

/// `/healthz` of a component's own HTTPS port (self-signed; the path needs no credentials).
pub(crate) async fn healthz(port: u16) -> Result<(), String> {
    let url = format!("https://127.0.0.1:{port}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut config = Config::new(url);
    config.accept_invalid_certs = true;
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    answers_ok(&client, "/healthz").await
}

/// A health endpoint answering `ok`.
async fn answers_ok(client: &Client, path: &str) -> Result<(), String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match client.request_text(request).await {
        Ok(body) if body.trim() == "ok" => Ok(()),
        Ok(body) => Err(format!("{path} answered {body:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// etcd's plain-HTTP `/health` on loopback.
pub(crate) async fn etcd_healthy(address: String) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    if answer.contains("\"health\":\"true\"") {
        Ok(())
    } else {
        Err(format!(
            "/health answered {:?}",
            answer.lines().last().unwrap_or_default()
        ))
    }
}

pub(crate) async fn socket_answers(socket: PathBuf) -> Result<(), String> {
    tokio::net::UnixStream::connect(&socket)
        .await
        .map(drop)
        .map_err(|e| format!("{}: {e}", socket.display()))
}

pub(crate) async fn node_ready(client: Client, name: &str) -> Result<(), String> {
    let node = Api::<Node>::all(client)
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?;
    let ready = node
        .as_ref()
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    let taints: Vec<String> = node
        .as_ref()
        .and_then(|n| n.spec.as_ref())
        .and_then(|s| s.taints.as_ref())
        .map(|t| {
            t.iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect()
        })
        .unwrap_or_default();
    match ready {
        // Schedulable too: the not-ready taint goes only once the node-lifecycle controller saw it Ready.
        Some(c) if c.status == "True" && taints.is_empty() => Ok(()),
        Some(c) if c.status == "True" => {
            Err(format!("node {name} is Ready but tainted {taints:?}"))
        }
        Some(c) => Err(format!(
            "node {name} Ready={}: {}",
            c.status,
            c.message.clone().unwrap_or_default()
        )),
        None => Err(format!("node {name} not registered yet")),
    }
}

/// The driver's name and vendor version from GetPluginInfo, once it answers.
pub(crate) async fn plugin_info(socket: &Path) -> Result<(String, String), String> {
    let endpoint = csi_proto::transport::Endpoint::Unix(socket.to_path_buf());
    let mut clients = csi_proto::transport::connect(&endpoint)
        .await
        .map_err(|e| format!("connect {}: {e}", socket.display()))?;
    let info = clients
        .identity
        .get_plugin_info(csi_proto::v1::GetPluginInfoRequest {})
        .await
        .map_err(|s| format!("GetPluginInfo: {:?} {}", s.code(), s.message()))?;
    let info = info.into_inner();
    Ok((info.name, info.vendor_version))
}

/// Read access to ReferenceGrants for csi-provisioner's service account: its upstream RBAC
/// has these rules commented out, for drivers that clone across namespaces.
fn reference_grant_rbac(
    layout: &Layout,
    account: Option<&crate::objects::ServiceAccountRef>,
) -> Result<PathBuf, ClusterError> {
    let account = account.ok_or_else(|| {
        ClusterError::setup("RBAC of csi-provisioner", "no ServiceAccount defined")
    })?;
    let text = format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: csi-clone-conformance-referencegrants
rules:
  - apiGroups: [\"gateway.networking.k8s.io\"]
    resources: [\"referencegrants\"]
    verbs: [\"get\", \"list\", \"watch\"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: csi-clone-conformance-referencegrants
subjects:
  - kind: ServiceAccount
    name: {}
    namespace: {}
roleRef:
  kind: ClusterRole
  name: csi-clone-conformance-referencegrants
  apiGroup: rbac.authorization.k8s.io
",
        account.name, account.namespace
    );
    let path = layout.root.join("referencegrants-rbac.yaml");
    std::fs::write(&path, text).map_err(|e| ClusterError::io("write", &path, e))?;
    Ok(path)
}

/// There is no registry: the pod and pause images come from the bin dir's archive.
pub(crate) async fn import_images(
    bins: &Binaries,
    layout: &Layout,
    limit: Duration,
) -> Result<(), ClusterError> {
    let archive = bins.path("images/busybox.tar");
    let ctr = tokio::process::Command::new(bins.path("ctr"))
        .arg(format!("--address={}", layout.containerd_socket.display()))
        .args(["--namespace=k8s.io", "images", "import"])
        .arg(&archive)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(limit, ctr)
        .await
        .map_err(|_| {
            ClusterError::setup("ctr images import", format!("no answer within {limit:?}"))
        })?
        .map_err(|e| ClusterError::io("run ctr for", &archive, e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ClusterError::setup(
            format!("import {}", archive.display()),
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ))
    }
}

pub(crate) async fn apply_snapshot_crds(
    bins: &Binaries,
    client: &Client,
    limit: Duration,
) -> Result<(), ClusterError> {
    // snapshot-controller waits forever unless all of them (group snapshots too) exist, and
    // csi-provisioner looks for them only when it starts: before both.
    apply_crds(client, &bins.crd_files()?, limit).await
}

/// A process to start: component name, binary, arguments.
pub(crate) type Command = (&'static str, PathBuf, Vec<String>);

/// The sidecars' commands, each with its upstream RBAC applied and a kubeconfig holding a
/// token of its own service account.
pub(crate) async fn sidecars(
    bins: &Binaries,
    layout: &Layout,
    client: &Client,
    server: &str,
    pki: &Pki,
    gates: &[String],
) -> Result<Vec<Command>, ClusterError> {
    let csi = format!("--csi-address={}", layout.driver_socket.display());
    let cross_namespace = gates.iter().any(|g| g == CROSS_NAMESPACE_GATE);
    let sidecars: [(&str, Vec<String>); 4] = [
        (
            "csi-provisioner",
            vec![
                csi.clone(),
                "--leader-election=false".into(),
                "--extra-create-metadata".into(),
                "--timeout=60s".into(),
                "--v=5".into(),
            ],
        ),
        (
            "csi-resizer",
            vec![
                csi.clone(),
                "--leader-election=false".into(),
                "--timeout=60s".into(),
                "--v=3".into(),
            ],
        ),
        (
            "csi-snapshotter",
            vec![
                csi.clone(),
                "--leader-election=false".into(),
                "--timeout=60s".into(),
                "--v=3".into(),
            ],
        ),
        (
            "snapshot-controller",
            vec!["--leader-election=false".into(), "--v=3".into()],
        ),
    ];
    let mut commands = Vec::new();
    for (name, mut args) in sidecars {
        let rbac = bins.path(&format!("rbac/{name}.yaml"));
        let accounts = apply_rbac(client, &rbac).await?;
        if name == "csi-provisioner" && cross_namespace {
            args.push(format!("--feature-gates={CROSS_NAMESPACE_GATE}"));
            let grants = reference_grant_rbac(layout, accounts.first())?;
            apply_rbac(client, &grants).await?;
        }
        let account = accounts.first().ok_or_else(|| {
            ClusterError::setup(
                format!("RBAC of {name}"),
                format!("{} defines no ServiceAccount", rbac.display()),
            )
        })?;
        let token = service_account_token(client, account).await?;
        let kubeconfig = layout.token_kubeconfig(name, server, &pki.ca.cert, &token)?;
        args.push(format!("--kubeconfig={}", kubeconfig.display()));
        commands.push((name, bins.path(name), args));
    }
    Ok(commands)
}
