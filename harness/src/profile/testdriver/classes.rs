//! e2e `StorageClass` and `SnapshotClass` into the profile: the classes of the cluster target,
//! and what CSI-level runs can learn from them (CreateVolume / CreateSnapshot parameters).
//!
//! Precedence follows e2e's external driver, which takes the first of these that is set:
//! `FromName: true`, then a non-empty `FromExistingClassName`, then a non-empty `FromFile`.
//! The others are not read at all (as in e2e), and a warning names them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::Walk;
use super::keys::get;
use crate::profile::driver::{ProfileError, read};
use crate::profile::kubernetes::{Issues, read_snapshot_class, read_storage_class, served_by};
use crate::profile::{ClassSource, SnapshotClassSpec, StorageClassSpec};

/// The external-provisioner and snapshotter strip parameters with this prefix before the RPC.
const RESERVED_PREFIX: &str = "csi.storage.k8s.io/";

/// Which class key won, by e2e's precedence.
enum Choice {
    FromName,
    Existing(String),
    File(String),
}

/// The StorageClass as the profile sees it.
#[derive(Default)]
pub(super) struct StorageClass {
    pub source: ClassSource<StorageClassSpec>,
    /// From a file: the driver name to expect (the provisioner wins over DriverInfo.Name).
    pub provisioner: Option<String>,
    /// CreateVolume parameters: the class parameters without reserved keys.
    pub parameters: BTreeMap<String, String>,
    pub fs_type: Option<String>,
}

impl Walk<'_> {
    pub(super) fn storage_class(
        &mut self,
        root: &Map<String, Value>,
        driver_file: &Path,
    ) -> Result<StorageClass, ProfileError> {
        let Some(choice) = self.class_choice(root, "StorageClass")? else {
            self.warn(
                "no StorageClass given, so CreateVolume parameters are empty and cluster runs \
                 create a class for the driver"
                    .into(),
            );
            return Ok(StorageClass::default());
        };
        match choice {
            Choice::FromName => Ok(StorageClass::default()),
            Choice::Existing(name) => {
                self.warn(format!(
                    "StorageClass.FromExistingClassName \"{name}\": CSI-level runs cannot read its \
                     parameters, so CreateVolume parameters are empty; cluster runs use the class"
                ));
                Ok(StorageClass {
                    source: ClassSource::Existing(name),
                    ..StorageClass::default()
                })
            }
            Choice::File(file) => self.storage_class_file(&file, driver_file),
        }
    }

    fn storage_class_file(
        &mut self,
        file: &str,
        driver_file: &Path,
    ) -> Result<StorageClass, ProfileError> {
        let path = resolve(file, driver_file);
        let spec = read_storage_class(
            &read(&path)?,
            &path.display().to_string(),
            Issues::Warn(&mut self.warnings),
        )?;
        let (parameters, fs_type) = self.csi_parameters(&spec.parameters, "StorageClass");
        Ok(StorageClass {
            provisioner: Some(spec.provisioner.clone()),
            parameters,
            fs_type,
            source: ClassSource::File(spec),
        })
    }

    /// The snapshot class and the CreateSnapshot parameters it implies; `name` is the driver
    /// under test, which a class file must name.
    pub(super) fn snapshot_class(
        &mut self,
        root: &Map<String, Value>,
        driver_file: &Path,
        name: &str,
        snapshots: bool,
    ) -> Result<(ClassSource<SnapshotClassSpec>, BTreeMap<String, String>), ProfileError> {
        let Some(choice) = self.class_choice(root, "SnapshotClass")? else {
            if snapshots {
                self.warn(
                    "no SnapshotClass given (e2e would skip its snapshot tests); cluster runs \
                     create a class for the driver"
                        .into(),
                );
            }
            return Ok((ClassSource::Created, BTreeMap::new()));
        };
        match choice {
            Choice::FromName => Ok((ClassSource::Created, BTreeMap::new())),
            Choice::Existing(class) => {
                self.warn(format!(
                    "SnapshotClass.FromExistingClassName \"{class}\": CSI-level runs cannot read its \
                     parameters, so CreateSnapshot parameters are empty; cluster runs use the class"
                ));
                Ok((ClassSource::Existing(class), BTreeMap::new()))
            }
            Choice::File(file) => {
                let path = resolve(&file, driver_file);
                let spec = read_snapshot_class(
                    &read(&path)?,
                    &path.display().to_string(),
                    Issues::Warn(&mut self.warnings),
                )?;
                served_by(&spec, name).map_err(|r| self.error("SnapshotClass.FromFile", r))?;
                let (parameters, _) = self.csi_parameters(&spec.parameters, "SnapshotClass");
                Ok((ClassSource::File(spec), parameters))
            }
        }
    }

    /// Applies e2e's precedence; `None` when the section is absent or sets nothing.
    fn class_choice(
        &mut self,
        root: &Map<String, Value>,
        section: &str,
    ) -> Result<Option<Choice>, ProfileError> {
        let Some(map) = self.mapping(get(root, section), section)? else {
            return Ok(None);
        };
        let from_name = match get(&map, "FromName") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(self.error(&format!("{section}.FromName"), "expected true or false"));
            }
        };
        // Go's zero values: an empty string is the same as the key left out.
        let text = |w: &Self, key: &str| -> Result<Option<String>, ProfileError> {
            let field = format!("{section}.{key}");
            Ok(w.string(get(&map, key), &field)?.filter(|s| !s.is_empty()))
        };
        let existing = text(self, "FromExistingClassName")?;
        let file = text(self, "FromFile")?;
        let given: Vec<&str> = [
            from_name.then_some("FromName"),
            existing.as_ref().map(|_| "FromExistingClassName"),
            file.as_ref().map(|_| "FromFile"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let [used, ignored @ ..] = given.as_slice()
            && !ignored.is_empty()
        {
            self.warn(format!(
                "{section} sets {}; like e2e the harness uses {section}.{used} (precedence: \
                 FromName, FromExistingClassName, FromFile) and ignores the rest",
                given.join(", ")
            ));
        }
        Ok(match (from_name, existing, file) {
            (true, _, _) => Some(Choice::FromName),
            (false, Some(class), _) => Some(Choice::Existing(class)),
            (false, None, Some(file)) => Some(Choice::File(file)),
            (false, None, None) => None,
        })
    }

    /// The parameters the sidecar would pass on: reserved keys dropped, except the fs type,
    /// which becomes the profile's `fs_type`.
    fn csi_parameters(
        &mut self,
        class: &BTreeMap<String, String>,
        section: &str,
    ) -> (BTreeMap<String, String>, Option<String>) {
        let mut parameters = BTreeMap::new();
        let mut fs_type = None;
        let mut secret_keys = Vec::new();
        for (key, value) in class {
            match key.strip_prefix(RESERVED_PREFIX) {
                None => {
                    parameters.insert(key.clone(), value.clone());
                }
                Some("fstype") => fs_type = Some(value.clone()),
                Some(rest) if rest.contains("secret") => secret_keys.push(key.as_str()),
                Some(_) => {}
            }
        }
        if !secret_keys.is_empty() {
            self.warn(format!(
                "{section} parameters {} name Kubernetes secrets; for CSI-level runs put the secret \
                 values in a driver profile's secrets_file",
                secret_keys.join(", ")
            ));
        }
        (parameters, fs_type)
    }
}

/// e2e resolves paths from its repository root; the driver file's directory is the closest
/// equivalent, and the path as given (from the working directory) the fallback.
fn resolve(file: &str, driver_file: &Path) -> PathBuf {
    let beside = driver_file.parent().unwrap_or(Path::new("")).join(file);
    if beside.exists() {
        beside
    } else {
        PathBuf::from(file)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{load_files, load_text};
    use super::*;

    const SC: &str = "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: fast\n\
                      provisioner: csi.vendor.io\nparameters:\n  type: thin\n  replicas: 3\n  \
                      csi.storage.k8s.io/fstype: ext4\n  \
                      csi.storage.k8s.io/provisioner-secret-name: creds\n\
                      volumeBindingMode: WaitForFirstConsumer\nallowedTopologies: []\n\
                      allowVolumeExpansion: yes\nprovisionr: typo\n";
    const VSC: &str = "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotClass\n\
                       driver: d.example\ndeletionPolicy: Retain\nparameters:\n  tier: cold\n  \
                       csi.storage.k8s.io/snapshotter-secret-name: creds\n";
    const INFO: &str =
        "DriverInfo:\n  Name: d.example\n  Capabilities: {snapshotDataSource: true}\n";

    fn with_classes(classes: &str) -> String {
        format!("{classes}{INFO}")
    }

    #[test]
    fn from_file_reads_provisioner_and_parameters_and_creates_the_class() {
        let td = "StorageClass:\n  FromFile: sc.yaml\nDriverInfo:\n  Name: vendor\n  \
                  SupportedSizeRange: {Min: 1Mi}\n";
        let (p, warnings) = load_files(&[("td.yaml", td), ("sc.yaml", SC)]).unwrap();
        assert_eq!(p.name, "csi.vendor.io");
        let params: Vec<_> = (p.parameters.iter())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(params, ["replicas=3", "type=thin"]);
        assert_eq!(p.fs_type.as_deref(), Some("ext4"));
        assert_eq!(p.sizes.volume_bytes, 64 << 20);
        let ClassSource::File(spec) = &p.kubernetes.storage_class else {
            panic!("{:?}", p.kubernetes.storage_class);
        };
        assert_eq!(spec.provisioner, "csi.vendor.io");
        // The class as written, reserved keys included (the cluster's sidecars use them).
        assert_eq!(spec.parameters.len(), 4);
        assert_eq!(spec.allow_volume_expansion, Some(true));
        assert_eq!(
            spec.volume_binding_mode.as_deref(),
            Some("WaitForFirstConsumer")
        );
        let joined = warnings.join("\n");
        for expected in [
            "differs from the StorageClass provisioner",
            "provisioner-secret-name",
            "allowedTopologies is not supported",
            "provisionr is not a field of a StorageClass",
        ] {
            assert!(joined.contains(expected), "{expected}: {joined}");
        }
    }

    #[test]
    fn storage_class_sources() {
        let (p, w) = load_text(&with_classes("StorageClass:\n  FromName: true\n")).unwrap();
        assert_eq!(p.kubernetes.storage_class, ClassSource::Created);
        assert!(!w.join("\n").contains("StorageClass"), "{w:?}");

        let existing = "StorageClass:\n  FromExistingClassName: fast-ssd\n";
        let (p, w) = load_text(&with_classes(existing)).unwrap();
        assert_eq!(
            p.kubernetes.storage_class,
            ClassSource::Existing("fast-ssd".into())
        );
        assert!(p.parameters.is_empty());
        let joined = w.join("\n");
        assert!(
            joined.contains("CSI-level runs cannot read its parameters")
                && joined.contains("cluster runs use the class"),
            "{joined}"
        );

        let (p, w) = load_text(INFO).unwrap();
        assert_eq!(p.kubernetes.storage_class, ClassSource::Created);
        assert!(w.join("\n").contains("no StorageClass given"), "{w:?}");
    }

    #[test]
    fn precedence_is_from_name_then_existing_then_file() {
        // The file does not exist: an ignored key is never read.
        let all = "StorageClass:\n  FromFile: missing.yaml\n  FromExistingClassName: fast\n  \
                   FromName: true\nSnapshotClass:\n  FromFile: missing.yaml\n  \
                   FromExistingClassName: snaps\n  FromName: true\n";
        let (p, w) = load_text(&with_classes(all)).unwrap();
        assert!(
            p.kubernetes.storage_class.is_created() && p.kubernetes.snapshot_class.is_created()
        );
        let joined = w.join("\n");
        assert!(
            joined.contains(
                "StorageClass sets FromName, FromExistingClassName, FromFile; like e2e the \
                 harness uses StorageClass.FromName"
            ),
            "{joined}"
        );
        assert!(joined.contains("SnapshotClass sets FromName"), "{joined}");

        let two = "StorageClass:\n  FromFile: missing.yaml\n  FromExistingClassName: fast\n  \
                   FromName: false\nSnapshotClass:\n  FromFile: missing.yaml\n  \
                   FromExistingClassName: snaps\n";
        let (p, _) = load_text(&with_classes(two)).unwrap();
        assert_eq!(
            p.kubernetes.storage_class,
            ClassSource::Existing("fast".into())
        );
        assert_eq!(
            p.kubernetes.snapshot_class,
            ClassSource::Existing("snaps".into())
        );

        // Go zero values: "" is the key left out, so the file is used.
        let empty = "SnapshotClass:\n  FromExistingClassName: ''\n  FromFile: vsc.yaml\n";
        let (p, _) = load_files(&[("td.yaml", &with_classes(empty)), ("vsc.yaml", VSC)]).unwrap();
        assert!(matches!(p.kubernetes.snapshot_class, ClassSource::File(_)));
    }

    #[test]
    fn snapshot_class_file_sets_class_and_parameters() {
        let td = with_classes("SnapshotClass:\n  FromFile: vsc.yaml\n");
        let (p, w) = load_files(&[("td.yaml", &td), ("vsc.yaml", VSC)]).unwrap();
        let ClassSource::File(spec) = &p.kubernetes.snapshot_class else {
            panic!("{:?}", p.kubernetes.snapshot_class);
        };
        assert_eq!(
            (spec.driver.as_str(), spec.deletion_policy.as_deref()),
            ("d.example", Some("Retain"))
        );
        assert_eq!(spec.parameters.len(), 2);
        let params: Vec<_> = p.snapshot_parameters.keys().collect();
        assert_eq!(params, ["tier"]);
        assert!(w.join("\n").contains("snapshotter-secret-name"), "{w:?}");

        let (p, w) = load_text(INFO).unwrap();
        assert!(p.kubernetes.snapshot_class.is_created());
        assert!(w.join("\n").contains("no SnapshotClass given"), "{w:?}");
    }

    #[test]
    fn class_file_errors() {
        let td = with_classes("SnapshotClass:\n  FromFile: vsc.yaml\n");
        let other = VSC.replace("driver: d.example", "driver: other.example");
        let e = load_files(&[("td.yaml", &td), ("vsc.yaml", &other)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SnapshotClass.FromFile")
                && e.contains("\"other.example\"")
                && e.contains("\"d.example\""),
            "{e}"
        );
        let wrong = VSC.replace("kind: VolumeSnapshotClass", "kind: StorageClass");
        let e = load_files(&[("td.yaml", &td), ("vsc.yaml", &wrong)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("kind: is StorageClass, expected VolumeSnapshotClass"),
            "{e}"
        );

        let td = with_classes("StorageClass:\n  FromFile: sc.yaml\n");
        let sc = SC.replace("WaitForFirstConsumer", "Eventually");
        let e = load_files(&[("td.yaml", &td), ("sc.yaml", &sc)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("volumeBindingMode: must be Immediate or"), "{e}");

        let e = load_text(&with_classes("StorageClass:\n  FromName: maybe\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("StorageClass.FromName: expected true or false"),
            "{e}"
        );
    }
}
