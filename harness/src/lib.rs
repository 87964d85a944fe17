//! The conformance engine: targets, one tracking client (the ledger), the data plane, typed
//! cases and the runner that emits events to the report writers. It knows no specific case
//! (those live in `suites`) and never depends on the driver it tests.

pub mod attach;
pub mod case;
pub mod context;
pub mod data;
pub mod exit;
pub mod k8s;
pub mod ledger;
pub mod leftovers;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod read_verdict;
pub mod retry;
pub mod rpc;
pub mod runner;
pub mod signals;
#[cfg(test)]
mod silent_driver;
pub mod steps;
pub mod target;
pub mod topology;
