//! The strict driver profile format and its validation.

use super::discoverable::Discoverable;
use super::secrets::Secrets;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::de;
use serde::{Deserialize, Serialize};

use super::kubernetes::{self, KubernetesSettings};
use super::quantity::{de_max_bytes, de_min_bytes, de_volume_bytes, is_unlimited, ser_bytes};
pub(super) use super::quantity::{format_quantity, parse_quantity};
use serde_saphyr::MessageFormatter;

const MI: u64 = 1 << 20;

/// The built-in profile of our reference driver; `reference()` parses it so the file and the
/// code cannot drift apart.
const REFERENCE_YAML: &str = include_str!("../../../fixtures/drivers/reference.yaml");

/// What a vendor declares about the driver under test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverProfile {
    /// Expected `GetPluginInfo` name; checked by a preflight case.
    pub name: String,
    pub capabilities: Capabilities,
    #[serde(default)]
    pub sizes: Sizes,
    #[serde(default)]
    pub clone: ClonePolicy,
    /// Passed in `CreateVolumeRequest.parameters` (like StorageClass parameters).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Passed in `CreateSnapshotRequest.parameters` (like VolumeSnapshotClass parameters).
    #[serde(default)]
    pub snapshot_parameters: BTreeMap<String, String>,
    /// YAML map of secrets; `load` resolves it relative to the profile file and fills `secrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_file: Option<PathBuf>,
    /// Never serialized, so `to_yaml` output is safe to print.
    #[serde(skip)]
    pub secrets: Secrets,
    /// Mount `fs_type` to request; `None` lets the driver choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<String>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub data_plane: DataPlane,
    /// The topology keys of NodeGetInfo's segment that CreateVolume requires (e2e
    /// `TopologyKeys`); empty means every key the node reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_keys: Vec<String>,
    /// The cluster target's classes and pod image. Filled by `load` and `from_yaml` (a second
    /// pass over the text); deserializing a `DriverProfile` by itself leaves the default.
    #[serde(default, deserialize_with = "kubernetes::skip_in_first_pass")]
    pub kubernetes: KubernetesSettings,
}

/// What the vendor declares; a preflight case compares it with what the driver advertises.
/// Every key defaults to false so that nothing is claimed by accident.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capabilities {
    pub clone: bool,
    pub snapshot: bool,
    /// Controller `EXPAND_VOLUME`.
    pub expansion: bool,
    pub node_expansion: bool,
    pub list_volumes: bool,
    pub get_volume: bool,
    pub block: bool,
    pub mount: bool,
    pub stage_unstage: bool,
    /// Controller `PUBLISH_UNPUBLISH_VOLUME`: every data step ControllerPublishes to the node
    /// NodeGetInfo names and passes the publish_context on.
    pub controller_publish: bool,
    /// Plugin `VOLUME_ACCESSIBILITY_CONSTRAINTS`: every CreateVolume requires the topology
    /// NodeGetInfo reports, and every volume must be accessible there.
    pub topology: bool,
    /// Left to the driver (an e2e driver file cannot declare them) and not yet read from it:
    /// the run reads them before its cases start; until then their flags are false.
    #[serde(skip)]
    pub undeclared: BTreeSet<Discoverable>,
    /// Read from the driver: their flags are what it advertised (see `discoverable.rs`).
    #[serde(skip)]
    pub from_driver: BTreeSet<Discoverable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sizes {
    /// Size of test volumes.
    #[serde(deserialize_with = "de_volume_bytes", serialize_with = "ser_bytes")]
    pub volume_bytes: u64,
    #[serde(deserialize_with = "de_min_bytes", serialize_with = "ser_bytes")]
    pub min_bytes: u64,
    /// `u64::MAX` means the driver declares no upper limit (left out of `to_yaml`).
    #[serde(
        deserialize_with = "de_max_bytes",
        serialize_with = "ser_bytes",
        skip_serializing_if = "is_unlimited"
    )]
    pub max_bytes: u64,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            volume_bytes: 64 * MI,
            min_bytes: 0,
            max_bytes: u64::MAX,
        }
    }
}

/// A clone or restore requested larger than its source: the spec allows `OUT_OF_RANGE` or
/// growing, and a driver makes the same choice for both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LargerClone {
    Grow,
    Refuse,
    #[default]
    Either,
}

/// Deleting a volume that has clones: OK with the clone intact, or `FAILED_PRECONDITION`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceDeletion {
    Allowed,
    Refused,
    #[default]
    Either,
}

/// A copy requested smaller than its source (required_bytes below it, no limit_bytes): the
/// spec lists OUT_OF_RANGE, and "at least required_bytes" also allows a copy of the source's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmallerCopy {
    Refuse,
    RoundUp,
    #[default]
    Either,
}

/// Rules whose spec text reads two ways: a deviation is reported as advisory (passed, with a
/// note) unless the profile asks for strict, when it fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ambiguous {
    #[default]
    Advisory,
    Strict,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClonePolicy {
    pub larger: LargerClone,
    pub smaller: SmallerCopy,
    pub delete_source_with_clones: SourceDeletion,
    pub delete_source_with_snapshots: SourceDeletion,
    pub ambiguous: Ambiguous,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    pub rpc_secs: u64,
    /// Longer than `rpc_secs` because some backends copy data before the clone is ready.
    pub clone_secs: u64,
    /// Cluster target: a claim reaching `Bound` (provisioning included).
    pub bind_secs: u64,
    /// Cluster target: a pod running, and its command finishing (image pulls included).
    pub pod_secs: u64,
    /// Cluster target: an object, namespace or PV gone after its deletion.
    pub delete_secs: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            rpc_secs: 60,
            clone_secs: 300,
            bind_secs: 300,
            pod_secs: 300,
            delete_secs: 300,
        }
    }
}

impl Timeouts {
    /// Every limit with its key, so validation and messages cannot miss one.
    fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("rpc_secs", self.rpc_secs),
            ("clone_secs", self.clone_secs),
            ("bind_secs", self.bind_secs),
            ("pod_secs", self.pod_secs),
            ("delete_secs", self.delete_secs),
        ]
    }
}

/// How the harness checks volume contents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataPlane {
    /// The harness runs on the driver's node as root and reads/writes published paths directly.
    /// The default, because content checks are the point of clone conformance.
    #[default]
    Local,
    /// No data checks; they are skipped with that reason.
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}: unknown key \"{key}\" in {section} (expected one of: {expected})")]
    UnknownKey {
        origin: String,
        line: u64,
        key: String,
        section: &'static str,
        expected: String,
    },
    /// Any other YAML or type error; `at` is `origin:line:column` when the position is known.
    #[error("{at}: {message}")]
    Parse { at: String, message: String },
    #[error("{origin}: invalid {field}: {reason}")]
    Invalid {
        origin: String,
        field: String,
        reason: String,
    },
    /// Like `Invalid`, for a rule about keys whose line is known.
    #[error("{origin}:{line}: invalid {field}: {reason}")]
    InvalidAt {
        origin: String,
        line: u64,
        field: String,
        reason: String,
    },
    /// A value in an e2e driver file or a class manifest that cannot be used.
    #[error("{origin}: {field}: {reason}")]
    Field {
        origin: String,
        field: String,
        reason: String,
    },
    #[error("{origin}: cannot read secrets_file {}", path.display())]
    SecretsFile {
        origin: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A class manifest named by `kubernetes.*.file`; `origin` is `profile:line`.
    #[error("{origin}: cannot read {field} {}", path.display())]
    ClassFile {
        origin: String,
        field: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DriverProfile {
    /// Reads, parses strictly and validates a profile, then loads its secrets file.
    pub fn load(path: &Path) -> Result<DriverProfile, ProfileError> {
        let text = read(path)?;
        let origin = path.display().to_string();
        let base = path.parent().unwrap_or(Path::new(""));
        let mut profile = DriverProfile::parse(&text, &origin, base)?;
        if let Some(file) = &profile.secrets_file {
            // Relative to the profile, so a profile and its secrets can move together.
            let resolved = base.join(file);
            profile.secrets = load_secrets(&origin, &resolved)?;
            profile.secrets_file = Some(resolved);
        }
        Ok(profile)
    }

    /// Parses and validates: `secrets_file` is kept as written and `secrets` stays empty (only
    /// `load` knows what the path is relative to). A `kubernetes.*.file` manifest is read from
    /// the working directory, so the output of `to_yaml` (which prints resolved paths) loads.
    pub fn from_yaml(text: &str, origin: &str) -> Result<DriverProfile, ProfileError> {
        DriverProfile::parse(text, origin, Path::new(""))
    }

    /// Typed first pass, then the `kubernetes:` pass (class files resolved from `base`).
    fn parse(text: &str, origin: &str, base: &Path) -> Result<DriverProfile, ProfileError> {
        let mut profile: DriverProfile = parse_strict(text, origin)?;
        profile.kubernetes = kubernetes::parse_section(text, origin, base)?;
        profile.validate(origin)?;
        Ok(profile)
    }

    /// The profile of our reference driver, identical to `fixtures/drivers/reference.yaml`.
    pub fn reference() -> DriverProfile {
        DriverProfile::from_yaml(REFERENCE_YAML, "fixtures/drivers/reference.yaml")
            .expect("the embedded reference profile is valid (checked by a unit test)")
    }

    /// Effective settings, defaults filled in, secrets left out; `from_yaml` accepts the output.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("profile types serialize to YAML without error")
    }

    /// Checks what the types cannot express; shared with the e2e driver file loader.
    pub(crate) fn validate(&mut self, origin: &str) -> Result<(), ProfileError> {
        let invalid = |field: &str, reason: String| ProfileError::Invalid {
            origin: origin.to_owned(),
            field: field.to_owned(),
            reason,
        };
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty".into()));
        }
        let s = &self.sizes;
        if s.volume_bytes == 0 {
            return Err(invalid(
                "sizes",
                "volume_bytes must be greater than zero".into(),
            ));
        }
        if !(s.min_bytes <= s.volume_bytes && s.volume_bytes <= s.max_bytes) {
            return Err(invalid(
                "sizes",
                format!(
                    "need min_bytes <= volume_bytes <= max_bytes, got {} <= {} <= {}",
                    format_quantity(s.min_bytes),
                    format_quantity(s.volume_bytes),
                    if is_unlimited(&s.max_bytes) {
                        "unlimited".into()
                    } else {
                        format_quantity(s.max_bytes)
                    }
                ),
            ));
        }
        if !self.capabilities.block && !self.capabilities.mount {
            return Err(invalid(
                "capabilities",
                "at least one of block and mount must be true".into(),
            ));
        }
        // "" and absent mean the same thing; normalise so callers test one case.
        if self.fs_type.as_deref().is_some_and(|t| t.trim().is_empty()) {
            self.fs_type = None;
        }
        if self.fs_type.is_some() && !self.capabilities.mount {
            return Err(invalid(
                "fs_type",
                "is set but capabilities.mount is false".into(),
            ));
        }
        if !self.topology_keys.is_empty() && !self.capabilities.topology {
            return Err(invalid(
                "topology_keys",
                "is set but capabilities.topology is false".into(),
            ));
        }
        if let Some((key, _)) = self.timeouts.named().into_iter().find(|(_, v)| *v == 0) {
            return Err(invalid("timeouts", format!("{key} must be at least 1")));
        }
        self.kubernetes.validate(&self.name, origin)
    }
}

pub(crate) fn read(path: &Path) -> Result<String, ProfileError> {
    std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.to_owned(),
        source,
    })
}

fn load_secrets(origin: &str, path: &Path) -> Result<Secrets, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::SecretsFile {
        origin: origin.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    Secrets::parse(&text, &path.display().to_string())
}

/// Strict booleans: YAML 1.1 `yes`/`on` are errors, so a typo cannot silently flip a capability.
/// Duplicate keys are errors by default in serde-saphyr.
pub(crate) fn parse_strict<T: de::DeserializeOwned>(
    text: &str,
    origin: &str,
) -> Result<T, ProfileError> {
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| yaml_error(origin, &e))
}

/// Turns a serde-saphyr error into a one-line message; its multi-line snippet would not fit the
/// `file:line: message` shape that editors and CI annotations understand.
pub(crate) fn yaml_error(origin: &str, err: &serde_saphyr::Error) -> ProfileError {
    let err = err.without_snippet();
    let location = err.location().filter(|l| l.line() > 0);
    if let serde_saphyr::Error::SerdeUnknownField {
        field, expected, ..
    } = err
    {
        return ProfileError::UnknownKey {
            origin: origin.to_owned(),
            line: location.map_or(0, |l| l.line()),
            key: field.clone(),
            section: section_of(expected),
            expected: expected.join(", "),
        };
    }
    if let serde_saphyr::Error::SerdeMissingField { field, .. } = err {
        // Say "key" like the unknown-key message; the position is the enclosing mapping.
        return ProfileError::Parse {
            at: at(origin, location),
            message: format!("missing required key \"{field}\""),
        };
    }
    let message = serde_saphyr::DefaultMessageFormatter
        .format_message(err)
        .into_owned();
    ProfileError::Parse {
        at: at(origin, location),
        message,
    }
}

fn at(origin: &str, location: Option<serde_saphyr::Location>) -> String {
    match location {
        Some(l) => format!("{origin}:{}:{}", l.line(), l.column()),
        None => origin.to_owned(),
    }
}

/// Names the profile section from serde's list of expected fields, which identifies the struct.
fn section_of(expected: &[&str]) -> &'static str {
    let has = |f: &str| expected.contains(&f);
    if has("data_plane") {
        "driver profile"
    } else if has("stage_unstage") {
        "capabilities"
    } else if has("volume_bytes") {
        "sizes"
    } else if has("delete_source_with_clones") {
        "clone"
    } else if has("clone_secs") {
        "timeouts"
    } else if has("pod_image") {
        "kubernetes"
    } else {
        "mapping"
    }
}

#[cfg(test)]
mod tests;
