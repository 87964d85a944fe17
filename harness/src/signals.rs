//! The signals a run answers by cleaning up: SIGINT (Ctrl-C), SIGTERM (CI runners, `timeout`,
//! Kubernetes) and SIGHUP (a closed terminal).

use tokio::signal::unix::{SignalKind, signal};

/// Resolves with the signal's name when any of them arrives. If the handlers cannot be
/// installed it never resolves (the default actions then apply, as without the harness).
pub async fn any() -> &'static str {
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    }
}

/// The exit code for a run ended by `signal`: 128 + its number, as shells report it.
pub fn exit_code(signal: &str) -> i32 {
    match signal {
        "SIGHUP" => 129,
        "SIGTERM" => 143,
        _ => crate::exit::INTERRUPTED,
    }
}
