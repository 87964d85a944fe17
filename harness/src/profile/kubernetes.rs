//! Settings of the Kubernetes target (`run --kubeconfig`, `run --local-cluster`): which
//! StorageClass and VolumeSnapshotClass its claims use, and which image its pods run.
//!
//! The `kubernetes:` section is parsed by a pass of its own (`section.rs`), because a class
//! `file:` is read relative to the profile and its errors need their own lines; class manifests
//! are read by `manifest.rs`, which the e2e driver file loader shares.

mod manifest;
mod section;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::de::{Deserializer, IgnoredAny};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::driver::ProfileError;

pub(crate) use manifest::{Issues, read_snapshot_class, read_storage_class};
pub(crate) use section::parse_section;

/// The profile key `kubernetes:`; every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KubernetesSettings {
    #[serde(skip_serializing_if = "ClassSource::is_created")]
    pub storage_class: ClassSource<StorageClassSpec>,
    #[serde(skip_serializing_if = "ClassSource::is_created")]
    pub snapshot_class: ClassSource<SnapshotClassSpec>,
    /// Image for writer/reader pods; `None` = the harness default (a busybox image,
    /// `k8s::DEFAULT_POD_IMAGE`). "" is normalised to `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_image: Option<String>,
    /// Which StorageClass a clone may have (`k8s_storage_class`).
    #[serde(skip_serializing_if = "CloneClasses::is_default")]
    pub clone_classes: CloneClasses,
}

/// What the stack does with a clone in another StorageClass than its source's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloneClasses {
    /// Any class of the same driver clones (external-provisioner >= 3.2, today's Kubernetes docs).
    #[default]
    SameDriver,
    /// Only the source's own class clones (older Kubernetes docs; some vendors' policy).
    SameClass,
}

impl CloneClasses {
    fn is_default(&self) -> bool {
        *self == CloneClasses::default()
    }
}

/// Where the cluster target gets a class from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClassSource<S> {
    /// The run creates a class named after the run (and deletes it after). StorageClass:
    /// provisioner = profile `name`, parameters = profile `parameters`, plus
    /// `csi.storage.k8s.io/fstype` = profile `fs_type` if set. VolumeSnapshotClass:
    /// driver = `name`, parameters = `snapshot_parameters`.
    #[default]
    Created,
    /// An existing class, used as it is and never modified or deleted.
    Existing(String),
    /// A manifest file (parsed at load time) the run creates under a unique name and deletes
    /// after.
    File(S),
}

/// A StorageClass manifest; what the run needs to create it under its own name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageClassSpec {
    /// The file it was read from, for messages.
    pub origin: String,
    pub provisioner: String,
    /// As written, `csi.storage.k8s.io/` keys included: the cluster's sidecars read them.
    pub parameters: BTreeMap<String, String>,
    pub mount_options: Vec<String>,
    pub allow_volume_expansion: Option<bool>,
    /// `Immediate` or `WaitForFirstConsumer` (validated).
    pub volume_binding_mode: Option<String>,
    /// `Delete` or `Retain` (validated).
    pub reclaim_policy: Option<String>,
}

/// A VolumeSnapshotClass manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotClassSpec {
    /// The file it was read from, for messages.
    pub origin: String,
    pub driver: String,
    pub parameters: BTreeMap<String, String>,
    /// `Delete` or `Retain` (validated).
    pub deletion_policy: Option<String>,
}

/// What `ClassSource::File` needs from a spec to print itself and to be checked.
pub trait ClassManifest {
    /// The file the spec was read from.
    fn origin(&self) -> &str;
    /// The driver that serves the class: `provisioner` or `driver`.
    fn driver(&self) -> &str;
}

impl ClassManifest for StorageClassSpec {
    fn origin(&self) -> &str {
        &self.origin
    }
    fn driver(&self) -> &str {
        &self.provisioner
    }
}

impl ClassManifest for SnapshotClassSpec {
    fn origin(&self) -> &str {
        &self.origin
    }
    fn driver(&self) -> &str {
        &self.driver
    }
}

/// Accepted `volumeBindingMode` values.
pub const BINDING_MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];
/// Accepted `reclaimPolicy` values, and `deletionPolicy` values of a VolumeSnapshotClass.
pub const RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];

impl<S> ClassSource<S> {
    pub fn is_created(&self) -> bool {
        matches!(self, ClassSource::Created)
    }
}

/// The profile form: `{existing: NAME}` or `{file: PATH}` (the resolved path, which
/// `DriverProfile::from_yaml` reads again); `Created` is the absent key (`null`).
impl<S: ClassManifest> Serialize for ClassSource<S> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        let (key, value) = match self {
            ClassSource::Created => return serializer.serialize_none(),
            ClassSource::Existing(name) => ("existing", name.as_str()),
            ClassSource::File(spec) => ("file", spec.origin()),
        };
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(key, value)?;
        map.end()
    }
}

/// The first (typed) pass over a profile skips `kubernetes:`; `parse_section` reads it.
pub(super) fn skip_in_first_pass<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<KubernetesSettings, D::Error> {
    IgnoredAny::deserialize(d)?;
    Ok(KubernetesSettings::default())
}

impl KubernetesSettings {
    /// Checks shared by both profile loaders; `name` is the driver under test.
    pub(crate) fn validate(&mut self, name: &str, origin: &str) -> Result<(), ProfileError> {
        // "" and absent mean the same thing, as for fs_type.
        if self
            .pod_image
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            self.pod_image = None;
        }
        check_source(
            &self.storage_class,
            "kubernetes.storage_class",
            name,
            origin,
        )?;
        check_source(
            &self.snapshot_class,
            "kubernetes.snapshot_class",
            name,
            origin,
        )?;
        if let ClassSource::File(spec) = &self.storage_class {
            check_choice(
                spec,
                "volumeBindingMode",
                &spec.volume_binding_mode,
                BINDING_MODES,
            )?;
            check_choice(
                spec,
                "reclaimPolicy",
                &spec.reclaim_policy,
                RECLAIM_POLICIES,
            )?;
        }
        if let ClassSource::File(spec) = &self.snapshot_class {
            check_choice(
                spec,
                "deletionPolicy",
                &spec.deletion_policy,
                RECLAIM_POLICIES,
            )?;
        }
        Ok(())
    }
}

fn check_source<S: ClassManifest>(
    source: &ClassSource<S>,
    field: &str,
    name: &str,
    origin: &str,
) -> Result<(), ProfileError> {
    let reason = match source {
        ClassSource::Created => None,
        ClassSource::Existing(class) => class_name_problem(class),
        ClassSource::File(spec) => served_by(spec, name).err(),
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(ProfileError::Invalid {
            origin: origin.to_owned(),
            field: field.to_owned(),
            reason,
        }),
    }
}

/// A class whose driver is not the driver under test would never get a volume provisioned.
pub(crate) fn served_by<S: ClassManifest>(spec: &S, name: &str) -> Result<(), String> {
    if spec.driver() == name {
        return Ok(());
    }
    Err(format!(
        "{} names driver \"{}\" but the driver under test is \"{name}\", so the class would \
         never be served by it",
        spec.origin(),
        spec.driver()
    ))
}

/// Kubernetes object names are DNS subdomains; checking here fails before a cluster is touched.
pub(crate) fn class_name_problem(class: &str) -> Option<String> {
    let valid = !class.is_empty()
        && class.len() <= 253
        && class
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && class.starts_with(|c: char| c.is_ascii_alphanumeric())
        && class.ends_with(|c: char| c.is_ascii_alphanumeric());
    (!valid).then(|| {
        format!(
            "\"{class}\" is not a Kubernetes object name (lowercase letters, digits, '-' and '.')"
        )
    })
}

fn check_choice<S: ClassManifest>(
    spec: &S,
    field: &str,
    value: &Option<String>,
    allowed: &[&str],
) -> Result<(), ProfileError> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(ProfileError::Field {
            origin: spec.origin().to_owned(),
            field: field.to_owned(),
            reason: format!("must be {}, got \"{v}\"", allowed.join(" or ")),
        }),
        _ => Ok(()),
    }
}
