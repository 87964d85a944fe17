//! The clone conformance suites: typed case tables, each with one interpreter, plus the CLI
//! logic shared by the `csi-clone-conformance` binary and the `cargo test` entry.

pub mod access_type;
pub mod capabilities;
pub mod cli;
mod common;
pub mod concurrency;
pub mod content_source;
pub mod data_integrity;
pub mod independence;
pub mod k8s_clone;
mod k8s_common;
pub mod k8s_concurrency;
pub mod k8s_data_source;
pub mod k8s_namespace;
pub mod k8s_size;
pub mod k8s_snapshot;
pub mod k8s_source;
pub mod k8s_storage_class;
pub mod k8s_volume_mode;
pub mod publish;
pub mod size;
pub mod topology;

use harness::case::Suite;

/// Every suite, in report order (an explicit list: no global registration).
pub fn all() -> Vec<Suite> {
    vec![
        capabilities::suite(),
        content_source::suite(),
        size::suite(),
        access_type::suite(),
        data_integrity::suite(),
        independence::suite(),
        publish::suite(),
        topology::suite(),
        concurrency::suite(),
        k8s_clone::suite(),
        k8s_volume_mode::suite(),
        k8s_size::suite(),
        k8s_data_source::suite(),
        k8s_namespace::suite(),
        k8s_storage_class::suite(),
        k8s_source::suite(),
        k8s_snapshot::suite(),
        k8s_concurrency::suite(),
    ]
}
