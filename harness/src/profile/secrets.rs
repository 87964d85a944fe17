//! Secrets sent with each RPC. A profile's `secrets_file` is either a flat map (the same
//! secrets with every call) or csi-sanity's secrets file, whose keys name the call
//! (`CreateVolumeSecret`, `NodeStageVolumeSecret`, …) and whose values are that call's map;
//! a call the file does not name gets no secrets, as with csi-sanity.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::driver::{ProfileError, parse_strict};

/// The calls that carry secrets, by csi-sanity's key names (without the `Secret` suffix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretCall {
    CreateVolume,
    DeleteVolume,
    ControllerPublishVolume,
    ControllerUnpublishVolume,
    ControllerValidateVolumeCapabilities,
    NodeStageVolume,
    NodePublishVolume,
    CreateSnapshot,
    DeleteSnapshot,
    ControllerExpandVolume,
    NodeExpandVolume,
    ListSnapshots,
    ControllerModifyVolume,
}

impl SecretCall {
    const ALL: [SecretCall; 13] = [
        SecretCall::CreateVolume,
        SecretCall::DeleteVolume,
        SecretCall::ControllerPublishVolume,
        SecretCall::ControllerUnpublishVolume,
        SecretCall::ControllerValidateVolumeCapabilities,
        SecretCall::NodeStageVolume,
        SecretCall::NodePublishVolume,
        SecretCall::CreateSnapshot,
        SecretCall::DeleteSnapshot,
        SecretCall::ControllerExpandVolume,
        SecretCall::NodeExpandVolume,
        SecretCall::ListSnapshots,
        SecretCall::ControllerModifyVolume,
    ];

    /// The key csi-sanity's secrets file uses for this call.
    pub fn key(self) -> String {
        format!("{self:?}Secret")
    }
}

/// Every call's secrets. Never serialized: profiles print without them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Secrets {
    /// A flat file: these go with every call.
    every_call: BTreeMap<String, String>,
    /// A csi-sanity file: each named call's own.
    per_call: BTreeMap<SecretCall, BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SecretsFile {
    Flat(BTreeMap<String, String>),
    PerCall(BTreeMap<String, BTreeMap<String, String>>),
}

impl Secrets {
    /// The same map with every call.
    pub fn every_call(secrets: BTreeMap<String, String>) -> Secrets {
        Secrets {
            every_call: secrets,
            per_call: BTreeMap::new(),
        }
    }

    /// Parses either form; a csi-sanity key this harness does not know is an error naming it.
    pub fn parse(text: &str, origin: &str) -> Result<Secrets, ProfileError> {
        match parse_strict::<SecretsFile>(text, origin)? {
            SecretsFile::Flat(map) => Ok(Secrets::every_call(map)),
            SecretsFile::PerCall(by_key) => {
                let mut per_call = BTreeMap::new();
                for (key, map) in by_key {
                    let call = SecretCall::ALL
                        .into_iter()
                        .find(|c| c.key() == key)
                        .ok_or_else(|| ProfileError::Invalid {
                            origin: origin.to_owned(),
                            field: key.clone(),
                            reason: format!(
                                "not a csi-sanity secrets key (one of {})",
                                SecretCall::ALL.map(SecretCall::key).join(", ")
                            ),
                        })?;
                    per_call.insert(call, map);
                }
                Ok(Secrets {
                    every_call: BTreeMap::new(),
                    per_call,
                })
            }
        }
    }

    /// What goes with `call`.
    pub fn for_call(&self, call: SecretCall) -> HashMap<String, String> {
        let map = self.per_call.get(&call).unwrap_or(&self.every_call);
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.every_call.is_empty() && self.per_call.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_file_goes_with_every_call() {
        let s = Secrets::parse("user: admin\npassword: hunter2\n", "s.yaml").unwrap();
        assert_eq!(s.for_call(SecretCall::CreateVolume)["password"], "hunter2");
        assert_eq!(s.for_call(SecretCall::NodeStageVolume)["user"], "admin");
    }

    #[test]
    fn a_csi_sanity_file_goes_with_its_calls_only() {
        let text = "CreateVolumeSecret:\n  key: create\nNodeStageVolumeSecret:\n  key: stage\n";
        let s = Secrets::parse(text, "s.yaml").unwrap();
        assert_eq!(s.for_call(SecretCall::CreateVolume)["key"], "create");
        assert_eq!(s.for_call(SecretCall::NodeStageVolume)["key"], "stage");
        assert!(s.for_call(SecretCall::DeleteVolume).is_empty());
    }

    #[test]
    fn an_unknown_call_key_is_named() {
        let err = Secrets::parse("CreateVolumeSecrets:\n  key: x\n", "s.yaml").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("CreateVolumeSecrets"), "{text}");
    }
}
