//! The keys of the e2e external driver file, and the check that warns about every key e2e would
//! not use.
//!
//! e2e decodes the file with apimachinery's universal decoder: YAML is turned into JSON, then
//! decoded into Go structs with sigs.k8s.io/json's case-sensitive matching. A struct field is
//! therefore set only by a key spelled exactly like it; `driverInfo` or `supportedFsType` is
//! dropped without a word. The loader reads keys exactly (`get`) and this walk names every key
//! that is dropped, with the field it was probably meant for.
//!
//! Field names are those of kubernetes master: `driverDefinition` (storage/external/external.go)
//! and `DriverInfo` with its option structs and `Capability` constants
//! (storage/framework/testdriver.go).

use serde_json::{Map, Value};

/// How e2e's decoder treats the value under a key.
#[derive(Clone, Copy)]
pub(super) enum Shape {
    /// A scalar, a list of scalars, or a Go map (whose keys are data, not field names).
    Value,
    /// A Go struct: its keys must be field names, spelled exactly.
    Struct(&'static [(&'static str, Shape)]),
    /// A list of Go structs.
    ListOf(&'static [(&'static str, Shape)]),
}

use Shape::{ListOf, Struct, Value as V};

/// `driverDefinition`: the whole file.
pub(super) const DOCUMENT: &[(&str, Shape)] = &[
    ("DriverInfo", Struct(DRIVER_INFO)),
    ("StorageClass", Struct(CLASS)),
    ("SnapshotClass", Struct(CLASS)),
    ("VolumeAttributesClass", Struct(CLASS)),
    ("InlineVolumes", ListOf(INLINE_VOLUME)),
    ("ClientNodeName", V),
    ("NodeSelectors", V),
    // A Go map of durations; `timeouts.rs` checks its keys.
    ("Timeouts", V),
];

const CLASS: &[(&str, Shape)] = &[
    ("FromName", V),
    ("FromFile", V),
    ("FromExistingClassName", V),
];

const INLINE_VOLUME: &[(&str, Shape)] = &[("Attributes", V), ("Shared", V), ("ReadOnly", V)];

const DRIVER_INFO: &[(&str, Shape)] = &[
    ("Name", V),
    ("InTreePluginName", V),
    ("TestTags", V),
    ("MaxFileSize", V),
    ("SupportedSizeRange", Struct(SIZE_RANGE)),
    ("SupportedFsType", V),
    ("SupportedMountOption", V),
    ("RequiredMountOption", V),
    // A Go map keyed by capability; `capabilities` checks its keys against CAPABILITIES.
    ("Capabilities", V),
    ("RequiredAccessModes", V),
    ("TopologyKeys", V),
    ("NumAllowedTopologies", V),
    ("StressTestOptions", Struct(STRESS)),
    ("VolumeSnapshotStressTestOptions", Struct(SNAPSHOT_STRESS)),
    ("VolumeModifyStressTestOptions", Struct(MODIFY_STRESS)),
    (
        "VolumeGroupSnapshotStressTestOptions",
        Struct(SNAPSHOT_STRESS),
    ),
    ("PerformanceTestOptions", Struct(PERFORMANCE)),
];

const SIZE_RANGE: &[(&str, Shape)] = &[("Min", V), ("Max", V)];
const STRESS: &[(&str, Shape)] = &[("NumPods", V), ("NumRestarts", V)];
/// Shared by volume snapshot and volume group snapshot stress options (the same two fields).
const SNAPSHOT_STRESS: &[(&str, Shape)] = &[("NumPods", V), ("NumSnapshots", V)];
const MODIFY_STRESS: &[(&str, Shape)] = &[("NumPods", V)];
const PERFORMANCE: &[(&str, Shape)] = &[("ProvisioningOptions", Struct(PROVISIONING))];
const PROVISIONING: &[(&str, Shape)] = &[
    ("VolumeSize", V),
    ("Count", V),
    ("ExpectedMetrics", Struct(METRICS)),
];
const METRICS: &[(&str, Shape)] = &[("AvgLatency", V), ("Throughput", V)];

/// The `Capability` constants of testdriver.go, exactly (a Go map key matches only itself).
/// `RWXFilesystemOnly` and `RWXBlockOnly` are documented in storage/external/README.md;
/// `offlineSnapshotClone` was a constant in recent releases and is still accepted.
pub(super) const CAPABILITIES: &[&str] = &[
    "persistence",
    "block",
    "fsGroup",
    "volumeMountGroup",
    "exec",
    "snapshotDataSource",
    "groupSnapshot",
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
    "seLinuxMount",
];

/// The value under `key`, matched as e2e's decoder matches a struct field: exactly.
pub(super) fn get<'v>(map: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    map.get(key)
}

/// The known key that `key` differs from only in case, if any.
pub(super) fn case_variant<'k>(
    key: &str,
    known: impl IntoIterator<Item = &'k str>,
) -> Option<&'k str> {
    known.into_iter().find(|k| k.eq_ignore_ascii_case(key))
}

/// A key whose value e2e's decoder refuses, and why; e2e then refuses the whole file.
pub(super) type Refused = (String, String);

/// Warns about every key of the document that e2e's decoder drops. A struct-shaped value that
/// is not a mapping is refused, as e2e refuses it.
pub(super) fn check_document(root: &Map<String, Value>) -> Result<Vec<String>, Refused> {
    let mut warnings = Vec::new();
    check_struct(root, "", DOCUMENT, &mut warnings)?;
    Ok(warnings)
}

fn check_struct(
    map: &Map<String, Value>,
    prefix: &str,
    fields: &[(&'static str, Shape)],
    warnings: &mut Vec<String>,
) -> Result<(), Refused> {
    for (key, value) in map {
        let path = format!("{prefix}{key}");
        match fields.iter().find(|(name, _)| name == key) {
            Some((_, shape)) => check_value(value, &path, *shape, warnings)?,
            None => warnings.push(dropped(&path, prefix, key, fields.iter().map(|(n, _)| *n))),
        }
    }
    Ok(())
}

fn check_value(
    value: &Value,
    path: &str,
    shape: Shape,
    warnings: &mut Vec<String>,
) -> Result<(), Refused> {
    let not_a = |what: &str| {
        (
            path.to_owned(),
            format!("expected {what} (e2e refuses the file)"),
        )
    };
    match (shape, value) {
        (V, _) | (_, Value::Null) => Ok(()),
        (Struct(fields), Value::Object(map)) => {
            check_struct(map, &format!("{path}."), fields, warnings)
        }
        (Struct(_), _) => Err(not_a("a mapping")),
        (ListOf(fields), Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                check_value(item, &format!("{path}[{i}]"), Struct(fields), warnings)?;
            }
            Ok(())
        }
        (ListOf(_), _) => Err(not_a("a list of mappings")),
    }
}

/// The warning for a key e2e drops: a case variant of a field, or a key of no field at all.
pub(super) fn dropped<'k>(
    path: &str,
    prefix: &str,
    key: &str,
    known: impl IntoIterator<Item = &'k str>,
) -> String {
    match case_variant(key, known) {
        Some(field) => format!(
            "ignored by e2e: key \"{path}\" is case-sensitive, did you mean \"{prefix}{field}\"?"
        ),
        None => format!("unknown key \"{path}\" (not in the e2e external driver format; ignored)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(text: &str) -> Result<Vec<String>, Refused> {
        let Value::Object(root) = serde_saphyr::from_str::<Value>(text).unwrap() else {
            panic!("not a mapping: {text}");
        };
        check_document(&root)
    }

    #[test]
    fn case_variants_and_unknown_keys_are_named_at_any_depth() {
        let text = "driverInfo: {}\nDriverInfo:\n  supportedFsType: {}\n  \
                    StressTestOptions: {NumPods: 1, numRestarts: 2}\n  \
                    PerformanceTestOptions:\n    ProvisioningOptions:\n      \
                    ExpectedMetrics: {AvgLatency: 1, P99: 2}\n\
                    InlineVolumes:\n  - {Attributes: {a: b}, readonly: true}\nShortName: x\n";
        let w = warnings(text).unwrap().join("\n");
        for expected in [
            "key \"driverInfo\" is case-sensitive, did you mean \"DriverInfo\"?",
            "key \"DriverInfo.supportedFsType\" is case-sensitive, did you mean \
             \"DriverInfo.SupportedFsType\"?",
            "did you mean \"DriverInfo.StressTestOptions.NumRestarts\"?",
            "unknown key \"DriverInfo.PerformanceTestOptions.ProvisioningOptions.\
             ExpectedMetrics.P99\"",
            "did you mean \"InlineVolumes[0].ReadOnly\"?",
            "unknown key \"ShortName\"",
        ] {
            assert!(w.contains(expected), "{expected}\n{w}");
        }
        assert_eq!(w.lines().count(), 6, "{w}");
    }

    #[test]
    fn a_struct_that_is_not_a_mapping_is_refused_like_e2e() {
        let (field, reason) = warnings("DriverInfo:\n  StressTestOptions: 5\n").unwrap_err();
        assert_eq!(field, "DriverInfo.StressTestOptions");
        assert!(reason.starts_with("expected a mapping"), "{reason}");
        let (field, reason) = warnings("InlineVolumes: {a: b}\n").unwrap_err();
        assert_eq!(field, "InlineVolumes");
        assert!(
            reason.starts_with("expected a list of mappings"),
            "{reason}"
        );
        // null is a Go zero value, not an error.
        assert!(
            warnings("DriverInfo:\n  StressTestOptions:\n")
                .unwrap()
                .is_empty()
        );
    }
}
