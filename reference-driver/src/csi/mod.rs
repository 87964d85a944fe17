//! The gRPC face of the driver: one file per CSI service over the shared core.

pub mod controller;
pub mod convert;
pub mod identity;
pub mod node;
