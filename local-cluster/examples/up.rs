//! Brings the local cluster up with a driver and keeps it up until SIGINT or SIGTERM, then tears
//! it down: for looking at the stack by hand (`KUBECONFIG=<printed path> kubectl ...`).
//!
//! `cargo run -p local-cluster --example up -- ROOT DRIVER-COMMAND...` (as root); the bin dir is
//! the default one of ci/install-k8s.sh, or $CSI_CLONE_K8S_BIN.

use std::time::Duration;

use local_cluster::{DriverCommand, LocalCluster, Options, bins};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let (Some(root), driver) = (args.next(), args.collect::<Vec<_>>()) else {
        eprintln!("usage: up ROOT DRIVER-COMMAND...");
        std::process::exit(2);
    };
    let options = Options {
        k8s_bin: bins::default_dir().expect("a bin dir"),
        root: root.into(),
        driver: DriverCommand { argv: driver },
        driver_name: None,
        start_timeout: Duration::from_secs(120),
        feature_gates: Vec::new(),
    };
    let started = std::time::Instant::now();
    let mut cluster = match LocalCluster::start(&options).await {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            std::process::exit(1);
        }
    };
    eprintln!(
        "up in {:.1}s: KUBECONFIG={} (driver {})",
        started.elapsed().as_secs_f64(),
        cluster.info.kubeconfig.display(),
        cluster.info.driver_name
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let started = std::time::Instant::now();
    let report = cluster.shutdown().await;
    for step in &report.steps {
        eprintln!("  {step}");
    }
    for problem in report.problems() {
        eprintln!("  PROBLEM {problem}");
    }
    eprintln!("down in {:.1}s", started.elapsed().as_secs_f64());
}
