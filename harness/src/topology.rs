//! Topology, for drivers with the VOLUME_ACCESSIBILITY_CONSTRAINTS plugin capability: like a
//! CO, every CreateVolume requires the topology of the node the data steps use (NodeGetInfo's
//! accessible_topology, restricted to the profile's `topology_keys`), and every volume the
//! driver makes must then be accessible from that node. Sources, clones and restores are all
//! requested for the same node, so a copy is checked to be accessible where its source is.

use std::collections::{BTreeMap, HashMap};

use csi_proto::v1::{self as csi, plugin_capability};
use tonic::Status;

use crate::context::{CaseCtx, Violation};
use crate::rpc::topology_text;

/// Spec, TopologyRequirement: what a requisite obliges the plugin to.
const REQUISITE_RULE: &str = "spec: TopologyRequirement — if requisite is specified, the \
     provisioned volume MUST be accessible from at least one of the requisite topologies";

impl CaseCtx {
    /// GetPluginCapabilities' service capabilities.
    pub async fn plugin_services(&self) -> Result<Vec<plugin_capability::service::Type>, Status> {
        let result = self
            .timed(
                self.rpc_timeout(),
                self.identity()?
                    .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {}),
            )
            .await
            .map(|r| {
                r.capabilities
                    .into_iter()
                    .filter_map(|c| match c.r#type {
                        Some(plugin_capability::Type::Service(s)) => s.r#type().into(),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            });
        self.trace(format!("GetPluginCapabilities -> services {result:?}"));
        result
    }

    /// NodeGetInfo's accessible_topology, asked once per case.
    pub async fn node_topology(&self) -> Result<Option<BTreeMap<String, String>>, Status> {
        let cell = self.node_topology_cell();
        let topology = cell
            .get_or_try_init(|| async {
                let info = self
                    .timed(
                        self.rpc_timeout(),
                        self.node()?.node_get_info(csi::NodeGetInfoRequest {}),
                    )
                    .await;
                self.trace(format!(
                    "NodeGetInfo -> {}",
                    match &info {
                        Ok(i) => format!(
                            "node_id={}{}",
                            i.node_id,
                            topology_text(" accessible_topology", i.accessible_topology.as_slice())
                        ),
                        Err(s) => format!("{:?} {:?}", s.code(), s.message()),
                    }
                ));
                info.map(|i| i.accessible_topology.map(|t| sorted(&t.segments)))
            })
            .await?;
        Ok(topology.clone())
    }

    /// The accessibility_requirements CreateVolume carries: requisite and preferred are the
    /// node's segment restricted to `topology_keys`. None without topology, or when the
    /// node reports none (the plugin then chooses, as the spec allows).
    pub(crate) async fn topology_requirement(
        &self,
    ) -> Result<Option<csi::TopologyRequirement>, Status> {
        if !self.profile().capabilities.topology {
            return Ok(None);
        }
        let Some(node) = self.node_topology().await? else {
            return Ok(None);
        };
        let keys = &self.profile().topology_keys;
        if let Some(missing) = keys.iter().find(|k| !node.contains_key(*k)) {
            self.violate(Violation {
                message: format!(
                    "NodeGetInfo's accessible_topology lacks the key {missing:?} the profile's \
                     topology_keys name"
                ),
                expected: Some(format!("keys {keys:?}")),
                actual: Some(format!("{node:?}")),
            });
        }
        let segment: HashMap<String, String> = node
            .into_iter()
            .filter(|(k, _)| keys.is_empty() || keys.contains(k))
            .collect();
        let topology = csi::Topology { segments: segment };
        Ok(Some(csi::TopologyRequirement {
            requisite: vec![topology.clone()],
            preferred: vec![topology],
        }))
    }

    /// Records a violation when `volume` is not accessible from the node the data steps use.
    pub(crate) async fn check_accessible(&self, volume: &csi::Volume) {
        if !self.profile().capabilities.topology || volume.accessible_topology.is_empty() {
            // Empty: accessible from every node (spec: Volume accessible_topology).
            return;
        }
        let Ok(node) = self.node_topology().await else {
            return; // The requirement step already failed the call with this error.
        };
        let reported: Vec<_> = volume
            .accessible_topology
            .iter()
            .map(|t| sorted(&t.segments))
            .collect();
        let node = match node {
            Some(node) if !reported.iter().any(|t| within(t, &node)) => node,
            Some(_) => return,
            None => {
                // No requirement was sent, so the plugin chose freely (spec: "the SP MAY
                // choose"); a CO would not schedule such a volume on this node, but no MUST
                // of the plugin's is broken.
                self.trace(format!(
                    "note: volume {} has topology {reported:?}; the node reports none",
                    volume.volume_id
                ));
                return;
            }
        };
        self.violate(Violation {
            message: format!(
                "volume {} is not accessible from the node it was requested for ({REQUISITE_RULE})",
                volume.volume_id
            ),
            expected: Some(format!("a segment the node {node:?} lies in, or none")),
            actual: Some(format!("accessible_topology {reported:?}")),
        });
    }
}

fn sorted(segments: &HashMap<String, String>) -> BTreeMap<String, String> {
    segments
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A node lies in a volume's segment when it has every key of the segment with its value
/// (a zone-wide segment covers every node of the zone).
pub fn within(segment: &BTreeMap<String, String>, node: &BTreeMap<String, String>) -> bool {
    segment.iter().all(|(k, v)| node.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_zone_segment_covers_every_node_of_the_zone() {
        let node = map(&[("zone", "a"), ("node", "n1")]);
        assert!(within(&map(&[("zone", "a")]), &node));
        assert!(within(&map(&[]), &node));
        assert!(!within(&map(&[("zone", "b")]), &node));
        assert!(!within(&map(&[("zone", "a"), ("rack", "r1")]), &node));
    }
}
