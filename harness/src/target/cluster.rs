//! Kubernetes targets: a cluster reached through a kubeconfig, or the local cluster the run
//! starts itself (interruptible: a signal during start-up tears down what was started).

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use local_cluster::{LocalCluster, Options};

use super::{SharedCluster, TargetError};

/// A client for the cluster and where its configuration came from.
#[derive(Clone)]
pub struct KubeConnection {
    pub client: Client,
    /// The API server URL.
    pub server: String,
    /// The kubeconfig path and context, or "in-cluster", for the reports.
    pub source: String,
}

impl KubeConnection {
    /// `--kubeconfig` when given, else kube's inference: `KUBECONFIG`, `~/.kube/config`, then
    /// the in-cluster service account.
    pub async fn from_kubeconfig(
        path: Option<&Path>,
        context: Option<&str>,
    ) -> Result<KubeConnection, TargetError> {
        let options = KubeConfigOptions {
            context: context.map(str::to_string),
            ..KubeConfigOptions::default()
        };
        let (config, source) = match path {
            Some(path) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|e| TargetError::Kubeconfig {
                        what: format!("read {}", path.display()),
                        reason: crate::steps::error_chain(&e),
                    })?;
                let config = Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| TargetError::Kubeconfig {
                        what: format!("use {}", path.display()),
                        reason: crate::steps::error_chain(&e),
                    })?;
                (config, path.display().to_string())
            }
            None if context.is_some() => {
                let config = Config::from_kubeconfig(&options).await.map_err(|e| {
                    TargetError::Kubeconfig {
                        what: "load the default kubeconfig".into(),
                        reason: crate::steps::error_chain(&e),
                    }
                })?;
                (config, "KUBECONFIG or ~/.kube/config".to_string())
            }
            None => {
                let config = Config::infer().await.map_err(|e| TargetError::Kubeconfig {
                    what:
                        "no --kubeconfig, KUBECONFIG, ~/.kube/config or in-cluster service account"
                            .into(),
                    reason: crate::steps::error_chain(&e),
                })?;
                (
                    config,
                    "inferred (KUBECONFIG, ~/.kube/config or in-cluster)".to_string(),
                )
            }
        };
        let source = match context {
            Some(context) => format!("{source} (context {context})"),
            None => source,
        };
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| TargetError::Kubeconfig {
            what: format!("client for {server}"),
            reason: crate::steps::error_chain(&e),
        })?;
        Ok(KubeConnection {
            client,
            server,
            source,
        })
    }
}

/// How long the local cluster's tear-down may take before the run stops waiting for it (and
/// says so): its own steps are bounded, this bounds the sum.
pub const TEARDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Starts the local cluster; SIGINT, SIGTERM or SIGHUP during start-up tears it down again,
/// and a second signal stops that tear-down at once (exit 128 + that signal).
pub(super) async fn start_local(
    options: &Options,
) -> Result<(LocalCluster, KubeConnection), TargetError> {
    let started = std::time::Instant::now();
    let mut cluster = LocalCluster::prepare(options)?;
    let mut signals = crate::signals::Signals::install();
    let next_signal = async |signals: &mut Option<crate::signals::Signals>| match signals {
        Some(signals) => signals.next().await,
        None => std::future::pending().await,
    };
    let outcome = tokio::select! {
        result = cluster.bring_up(options) => result.map_err(TargetError::from),
        signal = next_signal(&mut signals) => {
            eprintln!("csi-clone-conformance: {signal} while starting the local cluster; tearing it down (a second signal stops at once)");
            Err(TargetError::Interrupted)
        }
    };
    if let Err(e) = outcome {
        let root = cluster.root().to_path_buf();
        tokio::select! {
            problems = tokio::time::timeout(TEARDOWN_LIMIT, cluster.shutdown()) => match problems {
                Ok(report) => report.problems().iter().for_each(|line| eprintln!("  tear-down: {line}")),
                Err(_) => eprintln!("  tear-down: not finished within {TEARDOWN_LIMIT:?}; the local cluster in {} may still run", root.display()),
            },
            signal = next_signal(&mut signals) => {
                eprintln!("csi-clone-conformance: {signal} again; tear-down stopped: the local cluster in {} may still run (processes, mounts, sysctls)", root.display());
                std::process::exit(crate::signals::exit_code(signal));
            }
        }
        return Err(e);
    }
    eprintln!(
        "csi-clone-conformance: local cluster up in {:.1}s in {} (driver {} {})",
        started.elapsed().as_secs_f64(),
        cluster.root().display(),
        cluster.info.driver_name,
        cluster.info.driver_version
    );
    let client = cluster.client().ok_or(TargetError::Interrupted)?;
    let kube = KubeConnection {
        server: cluster.info.server.clone(),
        client,
        source: format!("local cluster in {}", cluster.root().display()),
    };
    Ok((cluster, kube))
}

/// Tears the local cluster down (once: a second caller finds it gone), within
/// [`TEARDOWN_LIMIT`].
pub(super) async fn shutdown_local(shared: &SharedCluster) -> Vec<String> {
    let Some(mut cluster) = shared.lock().await.take() else {
        return Vec::new();
    };
    let started = std::time::Instant::now();
    let Ok(report) = tokio::time::timeout(TEARDOWN_LIMIT, cluster.shutdown()).await else {
        return vec![format!(
            "the local cluster's tear-down did not finish within {TEARDOWN_LIMIT:?}: the cluster in {} may still run",
            cluster.root().display()
        )];
    };
    for step in &report.steps {
        tracing::debug!("tear-down: {step}");
    }
    eprintln!(
        "csi-clone-conformance: local cluster torn down in {:.1}s{}",
        started.elapsed().as_secs_f64(),
        if report.problems().is_empty() {
            ", host restored"
        } else {
            ""
        }
    );
    report.problems().to_vec()
}
