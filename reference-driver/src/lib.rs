//! A hostpath-style reference CSI driver whose clones are real: sparse images, loop devices,
//! real filesystems, reflink or sparse-aware copies, crash-safe state with lineage.

pub mod client;
pub mod config;
pub mod core;
pub mod csi;
pub mod error;
pub mod faults;
pub mod locks;
pub mod server;
pub mod state;
pub mod storage;
pub mod topology;
pub mod variants;
