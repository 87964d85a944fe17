//! Class manifests (a StorageClass or VolumeSnapshotClass YAML file), read into specs.
//!
//! Shared by our strict profile, where anything questionable is an error, and the lenient e2e
//! driver file, where it is a warning. Wrong kinds, wrong types and missing drivers are errors
//! in both: no run could create such a class.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{SnapshotClassSpec, StorageClassSpec};
use crate::profile::driver::{ProfileError, parse_strict, yaml_error};

const STORAGE_CLASS_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "provisioner",
    "parameters",
    "mountOptions",
    "allowVolumeExpansion",
    "volumeBindingMode",
    "reclaimPolicy",
    "allowedTopologies",
];
const SNAPSHOT_CLASS_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "driver",
    "parameters",
    "deletionPolicy",
];

/// What to do with something a run can live without (an unknown key, an unsupported field).
pub(crate) enum Issues<'a> {
    /// Our profile: an error.
    Fail,
    /// The e2e driver file: a warning, pushed here.
    Warn(&'a mut Vec<String>),
}

/// Reads a `kind: StorageClass` manifest; `origin` names the file in messages.
pub(crate) fn read_storage_class(
    text: &str,
    origin: &str,
    issues: Issues,
) -> Result<StorageClassSpec, ProfileError> {
    let mut m = Manifest::parse(text, origin, issues)?;
    m.header("StorageClass", "storage.k8s.io/v1", STORAGE_CLASS_KEYS)?;
    if m.map.contains_key("allowedTopologies") {
        // The run creates the class from the spec, which has no topology; say so.
        m.issue(
            "allowedTopologies",
            "is not supported: the class would be created without it",
        )?;
    }
    Ok(StorageClassSpec {
        provisioner: m.driver("provisioner")?,
        parameters: m.parameters()?,
        mount_options: m.strings("mountOptions")?,
        allow_volume_expansion: m.boolean("allowVolumeExpansion")?,
        volume_binding_mode: m.string("volumeBindingMode")?,
        reclaim_policy: m.string("reclaimPolicy")?,
        origin: m.origin,
    })
}

/// Reads a `kind: VolumeSnapshotClass` manifest.
pub(crate) fn read_snapshot_class(
    text: &str,
    origin: &str,
    issues: Issues,
) -> Result<SnapshotClassSpec, ProfileError> {
    let mut m = Manifest::parse(text, origin, issues)?;
    m.header(
        "VolumeSnapshotClass",
        "snapshot.storage.k8s.io/v1",
        SNAPSHOT_CLASS_KEYS,
    )?;
    Ok(SnapshotClassSpec {
        driver: m.driver("driver")?,
        parameters: m.parameters()?,
        deletion_policy: m.string("deletionPolicy")?,
        origin: m.origin,
    })
}

struct Manifest<'a> {
    origin: String,
    map: Map<String, Value>,
    issues: Issues<'a>,
}

impl<'a> Manifest<'a> {
    fn parse(text: &str, origin: &str, issues: Issues<'a>) -> Result<Self, ProfileError> {
        let doc: Value = match issues {
            Issues::Fail => parse_strict(text, origin)?,
            // e2e's decoder accepts YAML 1.1 booleans, so the lenient reader does too.
            Issues::Warn(_) => serde_saphyr::from_str(text).map_err(|e| yaml_error(origin, &e))?,
        };
        let Value::Object(map) = doc else {
            return Err(field_error(origin, "(document)", "expected a mapping"));
        };
        Ok(Manifest {
            origin: origin.to_owned(),
            map,
            issues,
        })
    }

    fn error(&self, field: &str, reason: impl Into<String>) -> ProfileError {
        field_error(&self.origin, field, reason)
    }

    fn issue(&mut self, field: &str, reason: &str) -> Result<(), ProfileError> {
        match &mut self.issues {
            Issues::Fail => Err(self.error(field, reason)),
            Issues::Warn(warnings) => {
                warnings.push(format!("{}: {field} {reason} (ignored)", self.origin));
                Ok(())
            }
        }
    }

    /// A wrong kind is always an error: it is not a class of the kind the key asks for.
    fn header(
        &mut self,
        kind: &str,
        api_version: &str,
        known: &[&str],
    ) -> Result<(), ProfileError> {
        match self.string("kind")? {
            Some(k) if k == kind => {}
            Some(k) => return Err(self.error("kind", format!("is {k}, expected {kind}"))),
            None => return Err(self.error("kind", format!("missing, expected {kind}"))),
        }
        let version = self.string("apiVersion")?;
        if version.as_deref() != Some(api_version) {
            let got = version.map_or("missing".to_owned(), |v| format!("is {v}"));
            self.issue("apiVersion", &format!("{got}, expected {api_version}"))?;
        }
        let unknown: Vec<String> = (self.map.keys())
            .filter(|k| !known.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            self.issue(&key, &format!("is not a field of a {kind}"))?;
        }
        Ok(())
    }

    fn driver(&self, field: &str) -> Result<String, ProfileError> {
        match self.string(field)? {
            Some(d) if !d.trim().is_empty() => Ok(d),
            _ => Err(self.error(field, "missing; it names the driver that serves the class")),
        }
    }

    fn string(&self, field: &str) -> Result<Option<String>, ProfileError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.error(field, "expected a string")),
        }
    }

    fn boolean(&self, field: &str) -> Result<Option<bool>, ProfileError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.error(field, "expected true or false")),
        }
    }

    fn strings(&self, field: &str) -> Result<Vec<String>, ProfileError> {
        let items = match self.map.get(field) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(self.error(field, "expected a list of strings")),
        };
        (items.iter())
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(self.error(field, "expected a list of strings")),
            })
            .collect()
    }

    /// Kubernetes parameters are strings; e2e files often leave numbers unquoted, so the
    /// lenient reader turns scalars into their text, as the existing e2e loader did.
    fn parameters(&mut self) -> Result<BTreeMap<String, String>, ProfileError> {
        let map = match self.map.get("parameters") {
            None | Some(Value::Null) => return Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(self.error("parameters", "expected a mapping")),
        };
        let mut out = BTreeMap::new();
        for (key, value) in map {
            let field = format!("parameters.{key}");
            let text = match value {
                Value::String(s) => s,
                Value::Number(_) | Value::Bool(_) | Value::Null if self.is_lenient() => {
                    scalar_text(&value)
                }
                Value::Number(_) | Value::Bool(_) => {
                    return Err(self.error(&field, "expected a string (quote the value)"));
                }
                _ => return Err(self.error(&field, "expected a string")),
            };
            out.insert(key, text);
        }
        Ok(out)
    }

    fn is_lenient(&self) -> bool {
        matches!(self.issues, Issues::Warn(_))
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn field_error(origin: &str, field: &str, reason: impl Into<String>) -> ProfileError {
    ProfileError::Field {
        origin: origin.to_owned(),
        field: field.to_owned(),
        reason: reason.into(),
    }
}
