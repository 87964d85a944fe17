//! The signals a run answers by cleaning up: SIGINT (Ctrl-C), SIGTERM (CI runners, `timeout`,
//! Kubernetes) and SIGHUP (a closed terminal). The one place that installs their handlers.
//!
//! Once tokio handles a signal its default action never comes back, so every later signal
//! must be read here too: the first one starts the bounded cleanup, a second one aborts it
//! (see `runner::interrupt`).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The three signals, as a stream of their names.
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers; `None` if the runtime refuses (the default actions then apply).
    pub fn install() -> Option<Signals> {
        Some(Signals {
            int: signal(SignalKind::interrupt()).ok()?,
            term: signal(SignalKind::terminate()).ok()?,
            hup: signal(SignalKind::hangup()).ok()?,
        })
    }

    /// Resolves with the name of the next signal to arrive.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Resolves with the signal's name when any of them arrives. If the handlers cannot be
/// installed it never resolves (the default actions then apply, as without the harness).
pub async fn any() -> &'static str {
    match Signals::install() {
        Some(mut signals) => signals.next().await,
        None => std::future::pending().await,
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
