//! Result model, run events and report writers for csi-clone-conformance.
//!
//! The runner emits [`RunEvent`]s to [`Reporter`]s; a [`Collector`] turns them into a
//! [`RunReport`], which three independent writers render: JUnit XML ([`to_junit`]), a
//! versioned JSON summary ([`to_json`], read back by [`from_json`]) and a Markdown summary
//! ([`to_markdown`]). [`write_all`] puts them on disk. This crate knows nothing about CSI
//! transports or Kubernetes clients.

mod error;
mod events;
mod json;
mod junit;
mod markdown;
mod model;
mod write;

pub use error::ReportError;
pub use events::{Collector, Reporter, RunEvent};
pub use json::{from_json, to_json};
pub use junit::to_junit;
pub use markdown::to_markdown;
pub use model::{CaseRecord, Counts, Outcome, RunInfo, RunReport, SCHEMA_VERSION};
pub use write::write_all;
