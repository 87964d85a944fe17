//! Reads the Kubernetes e2e external driver file (`-storage.testdriver=`, kubernetes
//! `test/e2e/storage/external`) into a driver profile, so vendors can reuse what they have.
//!
//! The file means what e2e's decoder makes of it: YAML 1.1 (`yes`/`no` are booleans), then
//! case-sensitive struct fields (`keys.rs`). What e2e ignores is a warning here, what makes e2e
//! refuse the file is an error. DriverInfo is read in `driver_info.rs`, the classes in
//! `classes.rs`, the timeouts in `timeouts.rs`.

mod classes;
mod driver_info;
mod keys;
mod timeouts;

use std::path::Path;

use serde_json::{Map, Value};

use super::driver::{ClonePolicy, DataPlane, DriverProfile, ProfileError, read, yaml_error};
use super::kubernetes::KubernetesSettings;
use keys::get;

/// Loads an e2e external driver file. Returns the profile and warnings (each names its key).
pub fn load_testdriver(path: &Path) -> Result<(DriverProfile, Vec<String>), ProfileError> {
    let origin = path.display().to_string();
    let root = parse_lenient(path, &origin)?;
    let mut w = Walk {
        origin: &origin,
        warnings: Vec::new(),
    };
    let root = w.mapping(Some(&root), "(document)")?.unwrap_or_default();
    let dropped = keys::check_document(&root).map_err(|(field, reason)| w.error(&field, reason))?;
    for warning in dropped {
        w.warn(warning);
    }
    let mut profile = w.profile(&root, path)?;
    profile.validate(&origin)?;
    Ok((profile, w.warnings))
}

fn parse_lenient(path: &Path, origin: &str) -> Result<Value, ProfileError> {
    let text = read(path)?;
    serde_saphyr::from_str(&text).map_err(|e| yaml_error(origin, &e))
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
        let capabilities = self.capabilities(get(&info, "Capabilities"))?;
        let sizes = self.sizes(get(&info, "SupportedSizeRange"))?;
        let class = self.storage_class(root, path)?;
        let timeouts = self.timeouts(get(root, "Timeouts"))?;
        let name = self.name(get(&info, "Name"), class.provisioner)?;
        let (snapshot_class, snapshot_parameters) =
            self.snapshot_class(root, path, &name, capabilities.snapshot)?;
        let fs_type = self.fs_type(get(&info, "SupportedFsType"), class.fs_type)?;
        let topology_keys = self.topology_keys(get(&info, "TopologyKeys"))?;
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
            topology_keys,
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

    /// e2e refuses a file without `DriverInfo.Name`. With a StorageClass file, its provisioner
    /// is the driver name: Kubernetes only provisions a class whose provisioner equals the
    /// GetPluginInfo name, while DriverInfo.Name may then be a display name.
    fn name(
        &mut self,
        v: Option<&Value>,
        provisioner: Option<String>,
    ) -> Result<String, ProfileError> {
        let Some(name) = self.string(v, "DriverInfo.Name")?.filter(|n| !n.is_empty()) else {
            return Err(self.error("DriverInfo.Name", "missing (e2e refuses the file)"));
        };
        match provisioner {
            Some(prov) if prov != name => {
                self.warn(format!(
                    "DriverInfo.Name \"{name}\" differs from the StorageClass provisioner \"{prov}\"; \
                     expecting GetPluginInfo to return \"{prov}\""
                ));
                Ok(prov)
            }
            _ => Ok(name),
        }
    }
}

#[cfg(test)]
mod fidelity_tests;
#[cfg(test)]
mod fixture_tests;

#[cfg(test)]
pub(super) mod tests {
    use std::path::PathBuf;

    use super::driver_info::E2E_DEFAULT_MIN;
    use super::*;
    use crate::profile::Discoverable;

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

    pub(in crate::profile) fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/drivers")
            .join(name)
    }

    #[test]
    fn example_maps_capabilities_and_warns_about_dropped_keys() {
        let (p, warnings) = load_testdriver(&fixture("testdriver-example.yaml")).unwrap();
        assert_eq!(p.name, "csi.example.com");
        let c = &p.capabilities;
        assert!(c.clone && c.snapshot && c.block && c.mount && c.expansion && c.topology);
        assert!(!c.node_expansion);
        assert_eq!(c.undeclared, Discoverable::ALL.into_iter().collect());
        assert_eq!(
            (p.sizes.min_bytes, p.sizes.max_bytes),
            (1 << 30, 5_000_000_000)
        );
        assert_eq!(p.sizes.volume_bytes, 1 << 30);
        assert!(p.parameters.is_empty());
        // The default entry; xfs is named in a warning.
        assert_eq!(p.fs_type, None);
        assert_eq!(p.topology_keys, ["topology.csi.example.com/zone"]);
        let t = &p.timeouts;
        assert_eq!(
            (t.clone_secs, t.bind_secs, t.pod_secs, t.delete_secs),
            (600, 300, 600, 300)
        );
        assert_eq!(p.kubernetes, KubernetesSettings::default());
        let joined = warnings.join("\n");
        for expected in [
            "unknown key \"ShortName\"",
            "ignored by e2e: key \"DriverInfo.Capabilities.pvcDatasource\" is case-sensitive, \
             did you mean \"DriverInfo.Capabilities.pvcDataSource\"?",
            "ignored by e2e: key \"DriverInfo.numAllowedTopologies\" is case-sensitive, did you \
             mean \"DriverInfo.NumAllowedTopologies\"?",
            "run again with --fs-type xfs",
        ] {
            assert!(joined.contains(expected), "{expected}\n{joined}");
        }
        assert_eq!(warnings.len(), 4, "{joined}");
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
        // A Go string field: e2e refuses a bare number.
        let text = "DriverInfo:\n  Name: d\n  SupportedSizeRange:\n    Max: 1073741824\n";
        let err = load_text(text).unwrap_err().to_string();
        assert!(
            err.contains("DriverInfo.SupportedSizeRange.Max: expected a quantity string"),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_driver_info_name_is_refused_like_e2e() {
        let err = load_text("StorageClass:\n  FromName: true\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DriverInfo.Name: missing (e2e refuses the file)"),
            "{err}"
        );
    }
}
