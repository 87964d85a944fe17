//! Reads the Kubernetes e2e external driver file (`-storage.testdriver=`, kubernetes
//! `test/e2e/storage/external`) into a driver profile, so vendors can reuse what they have.
//!
//! Unlike our profile format this one is lenient, as e2e is: unknown keys are warnings, and
//! YAML 1.1 booleans (`yes`/`no`) are accepted because e2e's Go YAML decoder accepts them.
//! Classes are in `classes.rs`, timeouts in `timeouts.rs`.

mod classes;
mod timeouts;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::driver::{
    Capabilities, ClonePolicy, DataPlane, DriverProfile, ProfileError, Sizes, parse_quantity, read,
    yaml_error,
};
use super::kubernetes::KubernetesSettings;

// Known key sets, from kubernetes `external.go` and `framework/testdriver.go` (timeouts: see
// `timeouts.rs`). Keys outside them are warned about: e2e silently ignores typos.
const TOP_KEYS: &[&str] = &[
    "StorageClass",
    "SnapshotClass",
    "VolumeAttributesClass",
    "InlineVolumes",
    "ClientNodeName",
    "NodeSelectors",
    "Timeouts",
    "DriverInfo",
];
const DRIVER_INFO_KEYS: &[&str] = &[
    "Name",
    "InTreePluginName",
    "TestTags",
    "MaxFileSize",
    "SupportedSizeRange",
    "SupportedFsType",
    "SupportedMountOption",
    "RequiredMountOption",
    "Capabilities",
    "RequiredAccessModes",
    "TopologyKeys",
    "NumAllowedTopologies",
    "StressTestOptions",
    "VolumeSnapshotStressTestOptions",
    "PerformanceTestOptions",
];
const SIZE_RANGE_KEYS: &[&str] = &["Min", "Max"];
const CAPABILITY_KEYS: &[&str] = &[
    "persistence",
    "block",
    "fsGroup",
    "volumeMountGroup",
    "exec",
    "snapshotDataSource",
    "pvcDataSource",
    "offlineSnapshotClone",
    "multipods",
    "RWX",
    "RWXFilesystemOnly",
    "RWXBlockOnly",
    "controllerExpansion",
    "nodeExpansion",
    "offlineExpansion",
    "onlineExpansion",
    "volumeLimits",
    "singleNodeVolume",
    "topology",
    "capacity",
    "FSResizeFromSourceNotSupported",
    "readWriteOncePod",
    "multiplePVsSameID",
    "capReadOnlyMany",
    "volumeGroupSnapshot",
];
/// e2e's default when `SupportedSizeRange.Min` is absent; a driver tested with e2e may never
/// have seen smaller volumes.
const E2E_DEFAULT_MIN: u64 = 5 << 30;

/// Loads an e2e external driver file. Returns the profile and warnings (each names its key).
pub fn load_testdriver(path: &Path) -> Result<(DriverProfile, Vec<String>), ProfileError> {
    let origin = path.display().to_string();
    let root = parse_lenient(path, &origin)?;
    let mut w = Walk {
        origin: &origin,
        warnings: Vec::new(),
    };
    let root = w.mapping(Some(&root), "(document)")?.unwrap_or_default();
    w.check_keys(&root, "", TOP_KEYS);

    let mut profile = w.profile(&root, path)?;
    profile.validate(&origin)?;
    Ok((profile, w.warnings))
}

fn parse_lenient(path: &Path, origin: &str) -> Result<Value, ProfileError> {
    let text = read(path)?;
    serde_saphyr::from_str(&text).map_err(|e| yaml_error(origin, &e))
}

/// Go's JSON decoding, which e2e uses, matches struct field names case-insensitively.
fn get<'v>(map: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

struct Walk<'a> {
    origin: &'a str,
    warnings: Vec<String>,
}

impl Walk<'_> {
    fn profile(
        &mut self,
        root: &Map<String, Value>,
        path: &Path,
    ) -> Result<DriverProfile, ProfileError> {
        let info = self
            .mapping(get(root, "DriverInfo"), "DriverInfo")?
            .unwrap_or_default();
        self.check_keys(&info, "DriverInfo.", DRIVER_INFO_KEYS);
        let capabilities = self.capabilities(get(&info, "Capabilities"))?;
        let sizes = self.sizes(get(&info, "SupportedSizeRange"))?;
        let class = self.storage_class(root, path)?;
        let timeouts = self.timeouts(get(root, "Timeouts"))?;
        let name = self.name(get(&info, "Name"), class.provisioner)?;
        let (snapshot_class, snapshot_parameters) =
            self.snapshot_class(root, path, &name, capabilities.snapshot)?;
        let fs_type = match class.fs_type {
            Some(t) => Some(t),
            None => self.fs_type(get(&info, "SupportedFsType"))?,
        };
        Ok(DriverProfile {
            name,
            capabilities,
            sizes,
            clone: ClonePolicy::default(),
            parameters: class.parameters,
            snapshot_parameters,
            secrets_file: None,
            secrets: Default::default(),
            fs_type,
            timeouts,
            data_plane: DataPlane::default(),
            topology_keys: Vec::new(),
            kubernetes: KubernetesSettings {
                storage_class: class.source,
                snapshot_class,
                // e2e has no such key: its pods use e2e's own images.
                pod_image: None,
                clone_classes: Default::default(),
            },
        })
    }

    fn error(&self, field: &str, reason: impl Into<String>) -> ProfileError {
        ProfileError::Field {
            origin: self.origin.to_owned(),
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    fn warn(&mut self, message: String) {
        self.warnings.push(format!("{}: {message}", self.origin));
    }

    /// `null` (an empty YAML value) counts as absent, as in Go.
    fn mapping(
        &self,
        v: Option<&Value>,
        field: &str,
    ) -> Result<Option<Map<String, Value>>, ProfileError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(_) => Err(self.error(field, "expected a mapping")),
        }
    }

    fn string(&self, v: Option<&Value>, field: &str) -> Result<Option<String>, ProfileError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.error(field, "expected a string")),
        }
    }

    fn check_keys(&mut self, map: &Map<String, Value>, prefix: &str, known: &[&str]) {
        for key in map.keys() {
            if !known.iter().any(|k| k.eq_ignore_ascii_case(key)) {
                self.warn(format!(
                    "unknown key \"{prefix}{key}\" (not in the e2e external driver format; ignored)"
                ));
            }
        }
    }

    fn capabilities(&mut self, v: Option<&Value>) -> Result<Capabilities, ProfileError> {
        let map = self
            .mapping(v, "DriverInfo.Capabilities")?
            .unwrap_or_default();
        let mut declared = BTreeMap::new();
        for (key, value) in &map {
            let field = format!("DriverInfo.Capabilities.{key}");
            let Value::Bool(b) = value else {
                return Err(self.error(&field, "expected true or false"));
            };
            // Capabilities are a Go map, so unlike struct fields their keys are case-sensitive.
            if !CAPABILITY_KEYS.contains(&key.as_str()) {
                let hint = CAPABILITY_KEYS
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(key))
                    .map(|k| format!("; did you mean \"{k}\"?"))
                    .unwrap_or_default();
                self.warn(format!("unknown capability \"{field}\" (ignored{hint})"));
            }
            declared.insert(key.as_str(), *b);
        }
        let cap = |k: &str| declared.get(k).copied().unwrap_or(false);
        if !cap("pvcDataSource") {
            self.warn(
                "DriverInfo.Capabilities.pvcDataSource is not true, so clone cases will be skipped"
                    .into(),
            );
        }
        self.warn(
            "the e2e format cannot declare list_volumes, get_volume or stage_unstage; they are taken as \
             false, so preflight fails if the driver advertises them (use a driver profile to declare them)"
                .into(),
        );
        Ok(Capabilities {
            clone: cap("pvcDataSource"),
            snapshot: cap("snapshotDataSource"),
            expansion: cap("controllerExpansion"),
            node_expansion: cap("nodeExpansion"),
            block: cap("block"),
            // Every e2e external driver is tested with filesystem volumes.
            mount: true,
            ..Capabilities::default()
        })
    }

    fn sizes(&mut self, v: Option<&Value>) -> Result<Sizes, ProfileError> {
        let range = self
            .mapping(v, "DriverInfo.SupportedSizeRange")?
            .unwrap_or_default();
        self.check_keys(&range, "DriverInfo.SupportedSizeRange.", SIZE_RANGE_KEYS);
        let quantity = |key: &str| -> Result<Option<u64>, ProfileError> {
            let field = format!("DriverInfo.SupportedSizeRange.{key}");
            match get(&range, key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => parse_quantity(s)
                    .map(Some)
                    .map_err(|e| self.error(&field, e.to_string())),
                Some(Value::Number(n)) => n
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| self.error(&field, format!("invalid quantity {n}"))),
                Some(_) => Err(self.error(&field, "expected a quantity such as \"1Gi\"")),
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

    fn name(
        &mut self,
        v: Option<&Value>,
        provisioner: Option<String>,
    ) -> Result<String, ProfileError> {
        let name = self.string(v, "DriverInfo.Name")?.filter(|n| !n.is_empty());
        match (name, provisioner) {
            // The provisioner wins: Kubernetes only provisions a class whose provisioner equals
            // the GetPluginInfo name, while DriverInfo.Name may be a display name.
            (Some(name), Some(prov)) => {
                if name != prov {
                    self.warn(format!(
                        "DriverInfo.Name \"{name}\" differs from the StorageClass provisioner \"{prov}\"; \
                         expecting GetPluginInfo to return \"{prov}\""
                    ));
                }
                Ok(prov)
            }
            (Some(name), None) => Ok(name),
            (None, Some(prov)) => Ok(prov),
            (None, None) => Err(self.error(
                "DriverInfo.Name",
                "missing, and no StorageClass.FromFile provisioner to use instead",
            )),
        }
    }

    fn fs_type(&mut self, v: Option<&Value>) -> Result<Option<String>, ProfileError> {
        let field = "DriverInfo.SupportedFsType";
        // A Go string set: a mapping of names to `{}`; a list is accepted too.
        let types: Vec<String> = match v {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(m)) => m.keys().cloned().collect(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|t| {
                    t.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| self.error(field, "expected strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(self.error(field, "expected a set of fs type names")),
        };
        if types.is_empty() || types.iter().any(String::is_empty) {
            return Ok(None);
        }
        if types.len() > 1 {
            self.warn(format!(
                "{field} lists {}; requesting fs_type \"{}\"",
                types.join(", "),
                types[0]
            ));
        }
        Ok(types.into_iter().next())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Writes `files` (name, text) into a fresh directory and loads its `td.yaml`.
    pub(in crate::profile) fn load_files(
        files: &[(&str, &str)],
    ) -> Result<(DriverProfile, Vec<String>), ProfileError> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        load_testdriver(&dir.path().join("td.yaml"))
    }

    pub(in crate::profile) fn load_text(
        text: &str,
    ) -> Result<(DriverProfile, Vec<String>), ProfileError> {
        load_files(&[("td.yaml", text)])
    }

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/drivers/testdriver-example.yaml")
    }

    #[test]
    fn example_maps_capabilities_and_warns_about_unknown_keys() {
        let (p, warnings) = load_testdriver(&example_path()).unwrap();
        assert_eq!(p.name, "csi.example.com");
        assert!(p.capabilities.clone && p.capabilities.snapshot && p.capabilities.block);
        assert!(p.capabilities.mount && p.capabilities.expansion && !p.capabilities.node_expansion);
        assert_eq!(
            (p.sizes.min_bytes, p.sizes.max_bytes),
            (1 << 30, 5_000_000_000)
        );
        assert_eq!(p.sizes.volume_bytes, 1 << 30);
        assert!(p.parameters.is_empty());
        assert_eq!(p.fs_type.as_deref(), Some("xfs"));
        let t = &p.timeouts;
        assert_eq!(
            (t.clone_secs, t.bind_secs, t.pod_secs, t.delete_secs),
            (600, 300, 600, 300)
        );
        assert_eq!(p.kubernetes, KubernetesSettings::default());
        let joined = warnings.join("\n");
        assert!(joined.contains("unknown key \"ShortName\""), "{joined}");
        assert!(
            joined.contains("unknown capability \"DriverInfo.Capabilities.pvcDatasource\""),
            "{joined}"
        );
        assert!(
            joined.contains("did you mean \"pvcDataSource\""),
            "{joined}"
        );
        assert!(
            !joined.contains("\"DriverInfo.Capabilities.persistence\""),
            "{joined}"
        );
    }

    #[test]
    fn from_name_uses_driver_info_and_e2e_default_min() {
        let text = "StorageClass:\n  FromName: true\nDriverInfo:\n  Name: d.example\n  \
                    Capabilities:\n    pvcDataSource: yes\n";
        let (p, _) = load_text(text).unwrap();
        assert_eq!(p.name, "d.example");
        assert!(p.capabilities.clone);
        assert_eq!(p.sizes.min_bytes, E2E_DEFAULT_MIN);
        assert!(p.parameters.is_empty());
    }

    #[test]
    fn bad_quantity_names_the_field() {
        let text = "DriverInfo:\n  Name: d\n  SupportedSizeRange:\n    Min: 5X\n";
        let err = load_text(text).unwrap_err().to_string();
        assert!(
            err.contains("DriverInfo.SupportedSizeRange.Min") && err.contains("\"5X\""),
            "{err}"
        );
    }
}
