//! The `topology` variant: the driver advertises VOLUME_ACCESSIBILITY_CONSTRAINTS, its node
//! sits in one zone, and every volume is accessible from that zone. A CreateVolume whose
//! requisite topologies this node cannot serve is refused with RESOURCE_EXHAUSTED, the code
//! the spec gives for "unable to provision in accessible_topology".

use std::collections::HashMap;

use csi_proto::v1 as csi;

use crate::config::DriverConfig;
use crate::error::{DriverError, DriverResult, echo};
use crate::faults::Fault;
use crate::variants::Variant;

pub const ZONE_KEY: &str = "topology.reference.csi-clone-conformance.dev/zone";
pub const NODE_KEY: &str = "topology.reference.csi-clone-conformance.dev/node";
/// The zone of this driver's node (and of every volume it makes).
pub const ZONE: &str = "zone-1";
/// Where the `clone-in-another-zone` fault says clones are.
pub const OTHER_ZONE: &str = "zone-2";

impl DriverConfig {
    /// Topology is on with the variant, and with the fault that misplaces clones (which
    /// needs it to mean anything).
    pub fn topology(&self) -> bool {
        self.variant(Variant::Topology)
            || self.fault(Fault::CloneInAnotherZone)
            || self.fault(Fault::TopologyUnadvertised)
    }

    /// NodeGetInfo's accessible_topology: the zone and the node itself.
    pub fn node_topology(&self) -> Option<csi::Topology> {
        self.topology().then(|| csi::Topology {
            segments: HashMap::from([
                (ZONE_KEY.to_string(), ZONE.to_string()),
                (NODE_KEY.to_string(), self.node_id.clone()),
            ]),
        })
    }

    /// A volume's accessible_topology: its zone, which is the node's, so a copy is
    /// accessible wherever its source is. `is_clone` lets the fault place clones elsewhere.
    pub fn volume_topology(&self, is_clone: bool) -> Vec<csi::Topology> {
        if !self.topology() {
            return Vec::new();
        }
        let zone = match is_clone && self.fault(Fault::CloneInAnotherZone) {
            true => OTHER_ZONE,
            false => ZONE,
        };
        vec![csi::Topology {
            segments: HashMap::from([(ZONE_KEY.to_string(), zone.to_string())]),
        }]
    }

    /// Checks CreateVolume's accessibility_requirements against the one zone and node.
    pub fn check_requirements(
        &self,
        requirements: Option<&csi::TopologyRequirement>,
    ) -> DriverResult<()> {
        let Some(requirements) = requirements else {
            return Ok(());
        };
        if !self.topology() {
            return Err(DriverError::invalid(
                "accessibility_requirements",
                "VOLUME_ACCESSIBILITY_CONSTRAINTS is not advertised",
            ));
        }
        for segment in requirements.requisite.iter().chain(&requirements.preferred) {
            if let Some(key) = segment
                .segments
                .keys()
                .find(|k| *k != ZONE_KEY && *k != NODE_KEY)
            {
                return Err(DriverError::invalid(
                    "accessibility_requirements",
                    format!("unknown topology key {}", echo(key)),
                ));
            }
        }
        // Spec: every preferred topology MUST also be in requisite.
        if !requirements.requisite.is_empty()
            && let Some(stray) = requirements
                .preferred
                .iter()
                .find(|p| !requirements.requisite.contains(p))
        {
            return Err(DriverError::invalid(
                "accessibility_requirements.preferred",
                format!("{:?} is not in requisite", stray.segments),
            ));
        }
        if requirements.requisite.is_empty()
            || requirements.requisite.iter().any(|t| self.serves(t))
        {
            return Ok(());
        }
        Err(DriverError::ResourceExhausted(format!(
            "no requisite topology is served here: this node is {ZONE_KEY}={ZONE}, {NODE_KEY}={}",
            self.node_id
        )))
    }

    /// Whether a volume made here is accessible from `wanted`.
    fn serves(&self, wanted: &csi::Topology) -> bool {
        wanted
            .segments
            .iter()
            .all(|(key, value)| match key.as_str() {
                ZONE_KEY => value == ZONE,
                _ => *value == self.node_id,
            })
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn config() -> DriverConfig {
        let mut config = DriverConfig::new("/nonexistent".into());
        config.variants.insert(Variant::Topology);
        config
    }

    fn segment(pairs: &[(&str, &str)]) -> csi::Topology {
        csi::Topology {
            segments: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn check(requisite: Vec<csi::Topology>, preferred: Vec<csi::Topology>) -> Result<(), Code> {
        let requirements = csi::TopologyRequirement {
            requisite,
            preferred,
        };
        config()
            .check_requirements(Some(&requirements))
            .map_err(|e| e.code())
    }

    #[test]
    fn requisite_of_this_zone_or_node_is_served() {
        let node = config().node_id;
        assert_eq!(check(vec![segment(&[(ZONE_KEY, ZONE)])], vec![]), Ok(()));
        let both = segment(&[(ZONE_KEY, ZONE), (NODE_KEY, &node)]);
        assert_eq!(check(vec![both.clone()], vec![both]), Ok(()));
        let other = segment(&[(ZONE_KEY, OTHER_ZONE)]);
        let here = segment(&[(ZONE_KEY, ZONE)]);
        assert_eq!(check(vec![other, here], vec![]), Ok(()));
    }

    #[test]
    fn requisite_elsewhere_is_resource_exhausted() {
        let other = segment(&[(ZONE_KEY, OTHER_ZONE)]);
        assert_eq!(check(vec![other], vec![]), Err(Code::ResourceExhausted));
        let other_node = segment(&[(ZONE_KEY, ZONE), (NODE_KEY, "elsewhere")]);
        assert_eq!(
            check(vec![other_node], vec![]),
            Err(Code::ResourceExhausted)
        );
    }

    #[test]
    fn unknown_keys_and_stray_preferred_are_invalid() {
        let unknown = segment(&[("example.com/rack", "r1")]);
        assert_eq!(check(vec![unknown], vec![]), Err(Code::InvalidArgument));
        let here = segment(&[(ZONE_KEY, ZONE)]);
        let stray = segment(&[(ZONE_KEY, OTHER_ZONE)]);
        assert_eq!(check(vec![here], vec![stray]), Err(Code::InvalidArgument));
    }

    #[test]
    fn requirements_without_the_capability_are_invalid() {
        let requirements = csi::TopologyRequirement::default();
        let plain = DriverConfig::new("/nonexistent".into());
        let result = plain.check_requirements(Some(&requirements));
        assert_eq!(result.map_err(|e| e.code()), Err(Code::InvalidArgument));
        assert!(plain.node_topology().is_none() && plain.volume_topology(true).is_empty());
    }
}
