//! A non-Rust gRPC client talks to the driver over its unix socket: Python grpcio, whose
//! C-core sends the socket path as `:authority` (so do the kubelet and Java clients). The
//! server's authority shim (`csi_proto::authority`) must let it through. grpcio comes from
//! PyPI into a venv that `ci/install-deps.sh` makes; its python is `CSI_CLONE_GRPCIO_PYTHON`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn python_grpcio_client_gets_plugin_info_over_the_unix_socket() {
    let Some(python) = std::env::var_os("CSI_CLONE_GRPCIO_PYTHON").filter(|p| !p.is_empty()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CSI_CLONE_GRPCIO_PYTHON is not set: .ci/run sets it from ci/install-deps.sh"
        );
        eprintln!(
            "skipped: set CSI_CLONE_GRPCIO_PYTHON to a python with grpcio (ci/install-deps.sh)"
        );
        return;
    };
    let h = Harness::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/plugin_info.py");
    let mut command = Command::new(&python);
    command.arg(script).arg(&h.socket);
    let output =
        tokio::task::spawn_blocking(move || run_with_deadline(command, Duration::from_secs(60)))
            .await
            .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python grpcio client failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let names: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        names, ["reference.csi-clone-conformance.dev"; 2],
        "one GetPluginInfo per channel set-up"
    );
}

/// Runs `command`, killing it if it outlives `limit`.
fn run_with_deadline(mut command: Command, limit: Duration) -> std::process::Output {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start python");
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done_tx.send(());
        output
    });
    if done_rx.recv_timeout(limit).is_err() {
        // Our own child, by the pid we spawned and still hold unreaped.
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
        panic!("python grpcio client did not finish within {limit:?}");
    }
    waiter.join().expect("waiter").expect("python output")
}
