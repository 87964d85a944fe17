//! Driver profiles: what a vendor declares about their CSI driver (design §5).
//!
//! Two sources: our strict YAML profile (`fixtures/drivers/example.yaml` documents every key)
//! and the Kubernetes e2e external driver file (`testdriver.yaml`), so vendors can reuse it.

mod discoverable;
mod driver;
mod kubernetes;
mod quantity;
mod secrets;
mod testdriver;

pub use discoverable::Discoverable;
pub use driver::{
    Ambiguous, Capabilities, ClonePolicy, DataPlane, DriverProfile, LargerClone, ProfileError,
    Sizes, SmallerCopy, SourceDeletion, Timeouts,
};
pub use kubernetes::{
    BINDING_MODES, ClassManifest, ClassSource, CloneClasses, KubernetesSettings, RECLAIM_POLICIES,
    SnapshotClassSpec, StorageClassSpec,
};
pub use quantity::{QuantityError, format_quantity, parse_quantity};
pub use secrets::{SecretCall, Secrets};
pub use testdriver::load_testdriver;
