//! e2e `DriverInfo` (storage/framework/testdriver.go) into the profile: capabilities, sizes,
//! the fs type to request and the topology keys.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Walk;
use super::keys::{CAPABILITIES, case_variant, dropped};
use crate::profile::Discoverable;
use crate::profile::driver::{Capabilities, ProfileError, Sizes, parse_quantity};

/// e2e's default when `SupportedSizeRange.Min` is absent; a driver tested with e2e may never
/// have seen smaller volumes.
pub(super) const E2E_DEFAULT_MIN: u64 = 5 << 30;

const CAPS: &str = "DriverInfo.Capabilities.";
const FS_TYPES: &str = "DriverInfo.SupportedFsType";

impl Walk<'_> {
    pub(super) fn capabilities(&mut self, v: Option<&Value>) -> Result<Capabilities, ProfileError> {
        let map = self
            .mapping(v, "DriverInfo.Capabilities")?
            .unwrap_or_default();
        let mut declared = BTreeMap::new();
        for (key, value) in &map {
            let field = format!("{CAPS}{key}");
            // A Go map[Capability]bool: null decodes to false, anything but a boolean fails.
            let on = match value {
                Value::Bool(b) => *b,
                Value::Null => false,
                _ => {
                    return Err(self.error(&field, "expected true or false (e2e refuses the file)"));
                }
            };
            // Map keys are data, so only the exact constant counts.
            if !CAPABILITIES.contains(&key.as_str()) {
                self.warn(match case_variant(key, CAPABILITIES.iter().copied()) {
                    Some(_) => dropped(&field, CAPS, key, CAPABILITIES.iter().copied()),
                    None => {
                        format!("unknown capability \"{field}\" (not an e2e capability; ignored)")
                    }
                });
            }
            declared.insert(key.as_str(), on);
        }
        let cap = |k: &str| declared.get(k).copied().unwrap_or(false);
        if !cap("pvcDataSource") {
            self.warn(format!(
                "{CAPS}pvcDataSource is not true, so clone cases will be skipped"
            ));
        }
        let mut caps = Capabilities {
            clone: cap("pvcDataSource"),
            snapshot: cap("snapshotDataSource"),
            expansion: cap("controllerExpansion"),
            node_expansion: cap("nodeExpansion"),
            block: cap("block"),
            // Every e2e external driver is tested with filesystem volumes.
            mount: true,
            topology: cap("topology"),
            ..Capabilities::default()
        };
        // The format has no key for these; forcing them off would fail preflight for every
        // driver that has them, so the run reads them from the driver instead.
        for c in Discoverable::ALL {
            caps.leave_to_driver(c);
        }
        Ok(caps)
    }

    pub(super) fn sizes(&mut self, v: Option<&Value>) -> Result<Sizes, ProfileError> {
        let range = self
            .mapping(v, "DriverInfo.SupportedSizeRange")?
            .unwrap_or_default();
        let quantity = |key: &str| -> Result<Option<u64>, ProfileError> {
            let field = format!("DriverInfo.SupportedSizeRange.{key}");
            match range.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => parse_quantity(s)
                    .map(Some)
                    .map_err(|e| self.error(&field, e.to_string())),
                // The fields are Go strings: e2e refuses a bare number.
                Some(_) => Err(self.error(
                    &field,
                    "expected a quantity string such as \"1Gi\" (e2e refuses the file)",
                )),
            }
        };
        let min = quantity("Min")?.unwrap_or(E2E_DEFAULT_MIN);
        let max = quantity("Max")?.unwrap_or(u64::MAX);
        let defaults = Sizes::default();
        // Test volumes stay small unless the driver's minimum forces them up.
        let volume = defaults.volume_bytes.max(min).min(max);
        Ok(Sizes {
            volume_bytes: volume,
            min_bytes: min,
            max_bytes: max,
        })
    }

    /// The fs type to request: e2e's default entry, which is the class's own
    /// `csi.storage.k8s.io/fstype` (`class_fs_type`) or else the driver's default.
    ///
    /// e2e pre-fills `SupportedFsType` with that default entry ("") and decodes the file's
    /// mapping into the same Go map, so the listed types join it rather than replace it, and
    /// e2e runs its filesystem tests once per entry. A run requests one fs type; it takes the
    /// entry every e2e run has and names the others, which `run --fs-type` can cover.
    pub(super) fn fs_type(
        &mut self,
        v: Option<&Value>,
        class_fs_type: Option<String>,
    ) -> Result<Option<String>, ProfileError> {
        let default = match &class_fs_type {
            Some(t) => format!("the StorageClass file's csi.storage.k8s.io/fstype \"{t}\""),
            None => "no fs_type: the driver's default".to_owned(),
        };
        let listed = match v {
            None => Vec::new(),
            // JSON null empties a Go map: e2e loses the default entry too.
            Some(Value::Null) => {
                self.warn(format!(
                    "{FS_TYPES} is null, which empties e2e's set (its default entry too), so e2e \
                     skips its filesystem tests; the harness requests {default}"
                ));
                return Ok(class_fs_type);
            }
            Some(Value::Object(m)) => self.fs_type_names(m)?,
            Some(_) => {
                return Err(self.error(
                    FS_TYPES,
                    "expected a mapping such as {ext4: {}, xfs: {}} (the set is a Go map; e2e \
                     refuses a list or a single name)",
                ));
            }
        };
        let others: Vec<String> = (listed.into_iter())
            .filter(|t| !t.is_empty() && Some(t) != class_fs_type.as_ref())
            .collect();
        if let Some(first) = others.first() {
            let per_type = if others.len() > 1 {
                " (one run per type)"
            } else {
                ""
            };
            let others = others.join(", ");
            self.warn(format!(
                "{FS_TYPES}: e2e runs its filesystem tests with its default entry and with \
                 {others}; this run requests the default entry ({default}); to test {others} as \
                 e2e does, run again with --fs-type {first}{per_type}"
            ));
        }
        Ok(class_fs_type)
    }

    /// The names of a `SupportedFsType` mapping; each value decodes into Go's empty struct.
    fn fs_type_names(
        &self,
        map: &serde_json::Map<String, Value>,
    ) -> Result<Vec<String>, ProfileError> {
        (map.iter())
            .map(|(name, value)| match value {
                Value::Null | Value::Object(_) => Ok(name.clone()),
                _ => Err(self.error(
                    &format!("{FS_TYPES}.{name}"),
                    "expected {} or nothing (e2e refuses the file)",
                )),
            })
            .collect()
    }

    /// `TopologyKeys`, a Go list of strings.
    pub(super) fn topology_keys(&self, v: Option<&Value>) -> Result<Vec<String>, ProfileError> {
        let field = "DriverInfo.TopologyKeys";
        let items = match v {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(self.error(field, "expected a list (e2e refuses the file)")),
        };
        (items.iter())
            .map(|k| match k {
                Value::String(s) => Ok(s.clone()),
                _ => Err(self.error(field, "expected strings (e2e refuses the file)")),
            })
            .collect()
    }
}
