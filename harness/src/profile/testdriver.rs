//! Reads the Kubernetes e2e external driver file (`-storage.testdriver=`, kubernetes
//! `test/e2e/storage/external`) into a driver profile, so vendors can reuse what they have.
//!
//! Unlike our profile format this one is lenient, as e2e is: unknown keys are warnings, and
//! YAML 1.1 booleans (`yes`/`no`) are accepted because e2e's Go YAML decoder accepts them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::driver::{
    Capabilities, ClonePolicy, DataPlane, DriverProfile, ProfileError, Sizes, Timeouts,
    parse_quantity, read, yaml_error,
};

// Known key sets, from kubernetes `external.go`, `framework/testdriver.go` and
// `framework/timeouts.go`. Keys outside them are warned about: e2e silently ignores typos.
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
const CLASS_KEYS: &[&str] = &["FromName", "FromFile", "FromExistingClassName"];
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
const TIMEOUT_KEYS: &[&str] = &[
    "Poll",
    "PodStart",
    "PodStartShort",
    "PodStartSlow",
    "PodDelete",
    "ClaimProvision",
    "DataSourceProvision",
    "ClaimProvisionShort",
    "ClaimBound",
    "PVReclaim",
    "PVBound",
    "PVCreate",
    "PVDelete",
    "PVDeleteSlow",
    "SnapshotCreate",
    "SnapshotDelete",
    "SnapshotControllerMetrics",
    "SystemPodsStartup",
    "NodeSchedulable",
    "SystemDaemonsetStartup",
    "NodeNotReady",
];

/// e2e's default when `SupportedSizeRange.Min` is absent; a driver tested with e2e may never
/// have seen smaller volumes.
const E2E_DEFAULT_MIN: u64 = 5 << 30;
/// The external-provisioner strips parameters with this prefix before CreateVolume.
const RESERVED_PREFIX: &str = "csi.storage.k8s.io/";

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

    let info = w
        .mapping(get(&root, "DriverInfo"), "DriverInfo")?
        .unwrap_or_default();
    w.check_keys(&info, "DriverInfo.", DRIVER_INFO_KEYS);
    let capabilities = w.capabilities(get(&info, "Capabilities"))?;
    let sizes = w.sizes(get(&info, "SupportedSizeRange"))?;
    let class = w.storage_class(&root, path)?;
    if let Some(snap) = w.mapping(get(&root, "SnapshotClass"), "SnapshotClass")? {
        // Only validated: snapshot parameters have no CSI-level equivalent worth guessing.
        w.check_keys(&snap, "SnapshotClass.", CLASS_KEYS);
    }
    let timeouts = w.timeouts(get(&root, "Timeouts"))?;
    let name = w.name(get(&info, "Name"), class.provisioner)?;
    let fs_type = match class.fs_type {
        Some(t) => Some(t),
        None => w.fs_type(get(&info, "SupportedFsType"))?,
    };

    let mut profile = DriverProfile {
        name,
        capabilities,
        sizes,
        clone: ClonePolicy::default(),
        parameters: class.parameters,
        snapshot_parameters: BTreeMap::new(),
        secrets_file: None,
        secrets: BTreeMap::new(),
        fs_type,
        timeouts,
        data_plane: DataPlane::default(),
    };
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

#[derive(Default)]
struct Class {
    provisioner: Option<String>,
    parameters: BTreeMap<String, String>,
    fs_type: Option<String>,
}

struct Walk<'a> {
    origin: &'a str,
    warnings: Vec<String>,
}

impl Walk<'_> {
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

    fn storage_class(
        &mut self,
        root: &Map<String, Value>,
        path: &Path,
    ) -> Result<Class, ProfileError> {
        let Some(sc) = self.mapping(get(root, "StorageClass"), "StorageClass")? else {
            self.warn("no StorageClass given, so CreateVolume parameters are empty".into());
            return Ok(Class::default());
        };
        self.check_keys(&sc, "StorageClass.", CLASS_KEYS);
        if let Some(file) = self.string(get(&sc, "FromFile"), "StorageClass.FromFile")? {
            return self.class_file(&file, path);
        }
        if let Some(name) = self.string(
            get(&sc, "FromExistingClassName"),
            "StorageClass.FromExistingClassName",
        )? {
            self.warn(format!(
                "StorageClass.FromExistingClassName \"{name}\" lives in a cluster; its parameters are \
                 not read, so CreateVolume parameters are empty"
            ));
        }
        match get(&sc, "FromName") {
            None | Some(Value::Null) | Some(Value::Bool(_)) => Ok(Class::default()),
            Some(_) => Err(self.error("StorageClass.FromName", "expected true or false")),
        }
    }

    fn class_file(&mut self, file: &str, driver_file: &Path) -> Result<Class, ProfileError> {
        // e2e resolves paths from its repository root; the driver file's directory is the
        // closest equivalent, and the path as given (from the working directory) the fallback.
        let beside = driver_file.parent().unwrap_or(Path::new("")).join(file);
        let path = if beside.exists() {
            beside
        } else {
            PathBuf::from(file)
        };
        let origin = path.display().to_string();
        let doc = parse_lenient(&path, &origin)?;
        let sc = self
            .mapping(Some(&doc), "StorageClass.FromFile")?
            .unwrap_or_default();
        if let Some(kind) = self.string(get(&sc, "kind"), "StorageClass.FromFile kind")?
            && kind != "StorageClass"
        {
            return Err(self.error(
                "StorageClass.FromFile",
                format!("{origin} holds a {kind}, not a StorageClass"),
            ));
        }
        let mut class = Class {
            provisioner: self.string(get(&sc, "provisioner"), "provisioner")?,
            ..Class::default()
        };
        let params = self
            .mapping(get(&sc, "parameters"), "StorageClass.FromFile parameters")?
            .unwrap_or_default();
        let mut secret_keys = Vec::new();
        for (key, value) in params {
            let value = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => String::new(),
                _ => {
                    return Err(
                        self.error(&format!("{origin} parameters.{key}"), "expected a string")
                    );
                }
            };
            match key.strip_prefix(RESERVED_PREFIX) {
                None => {
                    class.parameters.insert(key, value);
                }
                Some("fstype") => class.fs_type = Some(value),
                Some(rest) if rest.contains("secret") => secret_keys.push(key),
                Some(_) => {}
            }
        }
        if !secret_keys.is_empty() {
            self.warn(format!(
                "StorageClass parameters {} name Kubernetes secrets; put the secret values in a driver \
                 profile's secrets_file",
                secret_keys.join(", ")
            ));
        }
        Ok(class)
    }

    fn timeouts(&mut self, v: Option<&Value>) -> Result<Timeouts, ProfileError> {
        let map = self.mapping(v, "Timeouts")?.unwrap_or_default();
        let mut timeouts = Timeouts::default();
        for (key, value) in &map {
            // A Go map keyed by field name, so case-sensitive.
            if !TIMEOUT_KEYS.contains(&key.as_str()) {
                self.warn(format!(
                    "unknown key \"Timeouts.{key}\" (not an e2e timeout; ignored)"
                ));
            } else if key == "DataSourceProvision" {
                let field = "Timeouts.DataSourceProvision";
                let text = self.string(Some(value), field)?.unwrap_or_default();
                timeouts.clone_secs = go_duration_secs(&text).map_err(|r| self.error(field, r))?;
            }
        }
        Ok(timeouts)
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

/// Whole seconds, rounded up, from a Go duration such as "5m", "1h30m" or "90s".
fn go_duration_secs(text: &str) -> Result<u64, String> {
    let fail =
        || format!("invalid duration \"{text}\" (expected Go syntax such as \"5m\" or \"1h30m\")");
    if text == "0" {
        return Ok(0);
    }
    let mut rest = text;
    let mut secs = 0f64;
    if rest.is_empty() {
        return Err(fail());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(fail)?;
        let value: f64 = rest[..digits].parse().map_err(|_| fail())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(fail()),
        };
        secs += value * scale;
        rest = &rest[unit_len..];
    }
    Ok(secs.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(p.timeouts.clone_secs, 600);
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
    fn from_file_reads_provisioner_and_parameters() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("e2e")).unwrap();
        let sc = "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: fast\n\
                  provisioner: csi.vendor.io\nparameters:\n  type: thin\n  replicas: 3\n  \
                  csi.storage.k8s.io/fstype: ext4\n  \
                  csi.storage.k8s.io/provisioner-secret-name: creds\n";
        std::fs::write(dir.path().join("e2e/sc.yaml"), sc).unwrap();
        let file = dir.path().join("e2e/td.yaml");
        let text = "StorageClass:\n  FromFile: sc.yaml\ndriverInfo:\n  Name: vendor\n  \
                    SupportedSizeRange: {Min: 1Mi}\n";
        std::fs::write(&file, text).unwrap();
        let (p, warnings) = load_testdriver(&file).unwrap();
        assert_eq!(p.name, "csi.vendor.io");
        let params: Vec<_> = p
            .parameters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(params, ["replicas=3", "type=thin"]);
        assert_eq!(p.fs_type.as_deref(), Some("ext4"));
        assert_eq!(p.sizes.volume_bytes, 64 << 20);
        let joined = warnings.join("\n");
        assert!(
            joined.contains("differs from the StorageClass provisioner"),
            "{joined}"
        );
        assert!(joined.contains("provisioner-secret-name"), "{joined}");
    }

    #[test]
    fn from_name_uses_driver_info_and_e2e_default_min() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("td.yaml");
        let text = "StorageClass:\n  FromName: true\nDriverInfo:\n  Name: d.example\n  \
                    Capabilities:\n    pvcDataSource: yes\n";
        std::fs::write(&file, text).unwrap();
        let (p, _) = load_testdriver(&file).unwrap();
        assert_eq!(p.name, "d.example");
        assert!(p.capabilities.clone);
        assert_eq!(p.sizes.min_bytes, E2E_DEFAULT_MIN);
        assert!(p.parameters.is_empty());
    }

    #[test]
    fn bad_quantity_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("td.yaml");
        std::fs::write(
            &file,
            "DriverInfo:\n  Name: d\n  SupportedSizeRange:\n    Min: 5X\n",
        )
        .unwrap();
        let err = load_testdriver(&file).unwrap_err().to_string();
        assert!(
            err.contains("DriverInfo.SupportedSizeRange.Min") && err.contains("\"5X\""),
            "{err}"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_secs("5m"), Ok(300));
        assert_eq!(go_duration_secs("1h30m"), Ok(5400));
        assert_eq!(go_duration_secs("1.5s"), Ok(2));
        assert_eq!(go_duration_secs("250ms"), Ok(1));
        assert!(go_duration_secs("5").is_err());
        assert!(go_duration_secs("5d").is_err());
    }
}
