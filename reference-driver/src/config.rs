//! Driver settings and the one place that decides which capabilities are advertised.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use csi_proto::v1::controller_service_capability::rpc::Type as ControllerRpc;
use csi_proto::v1::node_service_capability::rpc::Type as NodeRpc;

use crate::faults::{Fault, Faults};
use crate::storage::FsType;
use crate::variants::{Variant, Variants};

/// Optional features the driver can advertise; all are on by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Feature {
    /// CLONE_VOLUME: CreateVolume from a volume source.
    Clone,
    /// CREATE_DELETE_SNAPSHOT: snapshots, and CreateVolume from a snapshot source.
    Snapshot,
    /// LIST_VOLUMES.
    ListVolumes,
    /// LIST_SNAPSHOTS.
    ListSnapshots,
    /// EXPAND_VOLUME on controller and node, plus the ONLINE/OFFLINE plugin capabilities.
    Expand,
    /// GET_CAPACITY.
    GetCapacity,
    /// GET_VOLUME (ControllerGetVolume).
    GetVolume,
    /// GET_SNAPSHOT (GetSnapshot).
    GetSnapshot,
}

impl Feature {
    pub const ALL: [Feature; 8] = [
        Feature::Clone,
        Feature::Snapshot,
        Feature::ListVolumes,
        Feature::ListSnapshots,
        Feature::Expand,
        Feature::GetCapacity,
        Feature::GetVolume,
        Feature::GetSnapshot,
    ];
}

#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub driver_name: String,
    pub node_id: String,
    pub state_dir: PathBuf,
    /// Largest volume CreateVolume or an expansion may produce.
    pub max_volume_size: u64,
    /// Size of a new volume whose request carries no capacity range.
    pub default_volume_size: u64,
    /// Filesystem made when a mount request leaves `fs_type` empty.
    pub default_fs_type: FsType,
    pub features: BTreeSet<Feature>,
    /// Test aid: sleep after each copied chunk so crash tests can catch a copy in flight.
    pub copy_pace: Option<Duration>,
    /// Longest a source filesystem stays frozen for a copy; past it the freeze is lifted and
    /// the copy refused (see `storage/freeze.rs`).
    pub freeze_deadline: Duration,
    /// Deliberate non-conformance (see `faults.rs`); empty in normal use.
    pub faults: Faults,
    /// Other behaviours the spec allows (see `variants.rs`); empty in normal use.
    pub variants: Variants,
}

impl DriverConfig {
    pub fn new(state_dir: PathBuf) -> Self {
        DriverConfig {
            driver_name: DEFAULT_DRIVER_NAME.to_string(),
            node_id: default_node_id(),
            state_dir,
            max_volume_size: 1 << 40,
            default_volume_size: 1 << 30,
            default_fs_type: FsType::Ext4,
            features: Feature::ALL.into_iter().collect(),
            copy_pace: None,
            freeze_deadline: crate::storage::freeze::DEFAULT_DEADLINE,
            faults: Faults::new(),
            variants: Variants::new(),
        }
    }

    pub fn has(&self, feature: Feature) -> bool {
        self.features.contains(&feature)
    }

    pub fn fault(&self, fault: Fault) -> bool {
        self.faults.contains(&fault)
    }

    pub fn variant(&self, variant: Variant) -> bool {
        self.variants.contains(&variant)
    }

    /// Copies across access types are allowed by the variant and by the fault that empties
    /// them (which needs it to mean anything).
    pub fn converts_access_types(&self) -> bool {
        self.variant(Variant::ConvertAccessTypes) || self.fault(Fault::ConvertedCopyEmpty)
    }

    /// Every controller capability the driver advertises; handlers check the same set.
    pub fn controller_capabilities(&self) -> Vec<ControllerRpc> {
        let mut caps = vec![ControllerRpc::CreateDeleteVolume];
        let optional = [
            (Feature::Clone, ControllerRpc::CloneVolume),
            (Feature::Snapshot, ControllerRpc::CreateDeleteSnapshot),
            (Feature::ListVolumes, ControllerRpc::ListVolumes),
            (Feature::ListSnapshots, ControllerRpc::ListSnapshots),
            (Feature::Expand, ControllerRpc::ExpandVolume),
            (Feature::GetCapacity, ControllerRpc::GetCapacity),
            (Feature::GetVolume, ControllerRpc::GetVolume),
            (Feature::GetSnapshot, ControllerRpc::GetSnapshot),
        ];
        if self.variant(Variant::PublishRequired) {
            caps.push(ControllerRpc::PublishUnpublishVolume);
        }
        caps.extend(
            optional
                .into_iter()
                .filter(|(feature, _)| self.has(*feature))
                .filter(|(_, rpc)| {
                    !(*rpc == ControllerRpc::CloneVolume
                        && self.fault(Fault::CloneWithoutCapability))
                })
                .map(|(_, rpc)| rpc),
        );
        caps
    }

    pub fn node_capabilities(&self) -> Vec<NodeRpc> {
        let mut caps = vec![NodeRpc::StageUnstageVolume, NodeRpc::GetVolumeStats];
        if self.fault(Fault::HideStageUnstage) {
            caps.retain(|rpc| *rpc != NodeRpc::StageUnstageVolume);
        }
        if self.has(Feature::Expand) {
            caps.push(NodeRpc::ExpandVolume);
        }
        caps
    }
}

pub const DEFAULT_DRIVER_NAME: &str = "reference.csi-clone-conformance.dev";

fn default_node_id() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Parses sizes such as `1073741824`, `100Mi`, `1Gi`, `1Ti` (binary suffixes only, no ambiguity).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("size {text:?} does not start with a number"))?;
    let shift = match suffix {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        "Ti" => 40,
        _ => {
            return Err(format!(
                "size {text:?} has unknown suffix {suffix:?} (use Ki, Mi, Gi, Ti)"
            ));
        }
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {text:?} overflows 64 bits"))
}

/// Parses durations such as `30s`, `500ms` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, millis) = match text.strip_suffix("ms") {
        Some(d) => (d, true),
        None => (text.strip_suffix('s').unwrap_or(text), false),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("duration {text:?} is not a number of s or ms"))?;
    Ok(match millis {
        true => Duration::from_millis(number),
        false => Duration::from_secs(number),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("100Mi"), Ok(100 << 20));
        assert_eq!(parse_size("1Ti"), Ok(1 << 40));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1GB").unwrap_err().contains("suffix"));
        assert!(parse_size("Gi").unwrap_err().contains("number"));
    }

    #[test]
    fn durations_parse_in_s_or_ms() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("1m").is_err());
    }

    #[test]
    fn disabling_clone_removes_only_clone_volume() {
        let mut config = DriverConfig::new("/tmp/x".into());
        assert!(
            config
                .controller_capabilities()
                .contains(&ControllerRpc::CloneVolume)
        );
        config.features.remove(&Feature::Clone);
        let caps = config.controller_capabilities();
        assert!(!caps.contains(&ControllerRpc::CloneVolume));
        assert!(caps.contains(&ControllerRpc::CreateDeleteSnapshot));
    }
}
