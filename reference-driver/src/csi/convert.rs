//! Request validation and proto <-> domain conversion, naming the offending field on error.

use std::collections::HashMap;
use std::path::PathBuf;

use csi::volume_capability::{AccessType as ProtoAccess, access_mode::Mode};
use csi::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use csi_proto::v1 as csi;

use crate::config::DriverConfig;
use crate::error::{DriverError, DriverResult, echo};
use crate::state::{AccessType, SnapshotRecord, Source, VolumeRecord};
use crate::storage::FsType;

pub fn required_str<'a>(value: &'a str, field: &'static str) -> DriverResult<&'a str> {
    if value.is_empty() {
        return Err(DriverError::invalid(field, "is required"));
    }
    Ok(value)
}

pub fn required_path(value: &str, field: &'static str) -> DriverResult<PathBuf> {
    let path = PathBuf::from(required_str(value, field)?);
    if !path.is_absolute() {
        return Err(DriverError::invalid(
            field,
            format!("{} is not an absolute path", echo(value)),
        ));
    }
    Ok(path)
}

/// Single-node modes only: this driver serves one node.
fn supported_mode(mode: Mode) -> bool {
    matches!(
        mode,
        Mode::SingleNodeWriter
            | Mode::SingleNodeReaderOnly
            | Mode::SingleNodeSingleWriter
            | Mode::SingleNodeMultiWriter
    )
}

/// One capability: its access type and requested filesystem.
pub fn capability(
    cap: &csi::VolumeCapability,
    field: &'static str,
) -> DriverResult<(AccessType, Option<FsType>)> {
    let mode = cap
        .access_mode
        .as_ref()
        .ok_or_else(|| DriverError::invalid(field, "access_mode is required"))?;
    let mode = Mode::try_from(mode.mode).unwrap_or(Mode::Unknown);
    if !supported_mode(mode) {
        return Err(DriverError::invalid(
            field,
            format!("access_mode {mode:?} is not supported by this single-node driver"),
        ));
    }
    match &cap.access_type {
        None => Err(DriverError::invalid(
            field,
            "access_type must be block or mount",
        )),
        Some(ProtoAccess::Block(_)) => Ok((AccessType::Block, None)),
        Some(ProtoAccess::Mount(mount)) => {
            if mount.fs_type.is_empty() {
                return Ok((AccessType::Mount, None));
            }
            let fs = FsType::parse(&mount.fs_type).ok_or_else(|| {
                DriverError::invalid(
                    field,
                    format!(
                        "mount.fs_type {:?} is not supported (use ext4 or xfs)",
                        mount.fs_type
                    ),
                )
            })?;
            Ok((AccessType::Mount, Some(fs)))
        }
    }
}

/// All capabilities of a CreateVolume / ValidateVolumeCapabilities request must agree.
pub fn capabilities(
    caps: &[csi::VolumeCapability],
    field: &'static str,
) -> DriverResult<(AccessType, Option<FsType>)> {
    let mut parsed = caps.iter().map(|cap| capability(cap, field));
    let first = parsed
        .next()
        .ok_or_else(|| DriverError::invalid(field, "at least one capability is required"))??;
    for next in parsed {
        let next = next?;
        if next.0 != first.0 {
            return Err(DriverError::invalid(
                field,
                "mixes block and mount access types",
            ));
        }
        if next.1.is_some() && first.1.is_some() && next.1 != first.1 {
            return Err(DriverError::invalid(
                field,
                "names different mount.fs_type values",
            ));
        }
    }
    Ok(first)
}

pub fn single_capability(
    cap: Option<&csi::VolumeCapability>,
    field: &'static str,
) -> DriverResult<(AccessType, Option<FsType>)> {
    capability(
        cap.ok_or_else(|| DriverError::invalid(field, "is required"))?,
        field,
    )
}

/// `(required_bytes, limit_bytes)`, 0 meaning unspecified.
pub fn capacity_range(range: Option<&csi::CapacityRange>) -> DriverResult<(u64, u64)> {
    let Some(range) = range else {
        return Ok((0, 0));
    };
    let required = u64::try_from(range.required_bytes).map_err(|_| {
        DriverError::invalid("capacity_range.required_bytes", "must not be negative")
    })?;
    let limit = u64::try_from(range.limit_bytes)
        .map_err(|_| DriverError::invalid("capacity_range.limit_bytes", "must not be negative"))?;
    if required == 0 && limit == 0 {
        return Err(DriverError::invalid(
            "capacity_range",
            "set required_bytes, limit_bytes or both, or leave capacity_range out",
        ));
    }
    if limit > 0 && required > limit {
        return Err(DriverError::invalid(
            "capacity_range",
            format!("required_bytes {required} exceeds limit_bytes {limit}"),
        ));
    }
    Ok((required, limit))
}

pub fn content_source(source: Option<&csi::VolumeContentSource>) -> DriverResult<Option<Source>> {
    let Some(source) = source else {
        return Ok(None);
    };
    match &source.r#type {
        None => Err(DriverError::invalid(
            "volume_content_source.type",
            "one of snapshot or volume must be set",
        )),
        Some(SourceType::Volume(v)) => {
            required_str(&v.volume_id, "volume_content_source.volume.volume_id")?;
            Ok(Some(Source::Volume(v.volume_id.clone())))
        }
        Some(SourceType::Snapshot(s)) => {
            required_str(&s.snapshot_id, "volume_content_source.snapshot.snapshot_id")?;
            Ok(Some(Source::Snapshot(s.snapshot_id.clone())))
        }
    }
}

pub fn to_content_source(source: &Source) -> csi::VolumeContentSource {
    let r#type = match source {
        Source::Volume(id) => SourceType::Volume(VolumeSource {
            volume_id: id.clone(),
        }),
        Source::Snapshot(id) => SourceType::Snapshot(SnapshotSource {
            snapshot_id: id.clone(),
        }),
    };
    csi::VolumeContentSource {
        r#type: Some(r#type),
    }
}

pub fn volume_context(volume: &VolumeRecord) -> HashMap<String, String> {
    let mut context = HashMap::new();
    let access = match volume.access_type {
        AccessType::Mount => "mount",
        AccessType::Block => "block",
    };
    context.insert("accessType".to_string(), access.to_string());
    if let Some(fs) = volume.fs_type {
        context.insert("fsType".to_string(), fs.to_string());
    }
    context
}

pub fn to_volume(volume: &VolumeRecord, config: &DriverConfig) -> csi::Volume {
    csi::Volume {
        capacity_bytes: volume.size_bytes as i64,
        volume_id: volume.id.clone(),
        volume_context: volume_context(volume),
        content_source: volume.source.as_ref().map(to_content_source),
        accessible_topology: config.volume_topology(volume.source.is_some()),
    }
}

pub fn to_snapshot(snapshot: &SnapshotRecord, ready_to_use: bool) -> csi::Snapshot {
    let nanos = snapshot.created_unix_nanos;
    csi::Snapshot {
        size_bytes: snapshot.size_bytes as i64,
        snapshot_id: snapshot.id.clone(),
        source_volume_id: snapshot.source_volume_id.clone(),
        creation_time: Some(prost_types::Timestamp {
            seconds: (nanos / 1_000_000_000) as i64,
            nanos: (nanos % 1_000_000_000) as i32,
        }),
        ready_to_use,
        group_snapshot_id: String::new(),
    }
}

/// Pages through `items` (already in id order). The token is the last id of the previous page,
/// so deletions between pages never skip or repeat entries.
pub fn paginate<T>(
    items: Vec<T>,
    id_of: impl Fn(&T) -> &str,
    id_prefix: &str,
    max_entries: i32,
    starting_token: &str,
) -> DriverResult<(Vec<T>, String)> {
    let max = usize::try_from(max_entries)
        .map_err(|_| DriverError::invalid("max_entries", "must not be negative"))?;
    if !starting_token.is_empty() && !crate::state::is_driver_id(id_prefix, starting_token) {
        return Err(DriverError::Aborted(format!(
            "starting_token {starting_token:?} was not issued by this driver"
        )));
    }
    let mut page: Vec<T> = items
        .into_iter()
        .filter(|item| starting_token.is_empty() || id_of(item) > starting_token)
        .collect();
    let mut next_token = String::new();
    if max > 0 && page.len() > max {
        page.truncate(max);
        next_token = id_of(&page[max - 1]).to_string();
    }
    Ok((page, next_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_sources_name_the_field() {
        let unset = csi::VolumeContentSource { r#type: None };
        let err = content_source(Some(&unset)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "volume_content_source.type: one of snapshot or volume must be set"
        );
        let empty = to_content_source(&Source::Volume(String::new()));
        let err = content_source(Some(&empty)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("volume_content_source.volume.volume_id")
        );
        let snap = to_content_source(&Source::Snapshot("snap-x".into()));
        assert_eq!(
            content_source(Some(&snap)).unwrap(),
            Some(Source::Snapshot("snap-x".into()))
        );
    }

    #[test]
    fn pages_resume_after_the_token() {
        let ids: Vec<String> = (0..5).map(|_| crate::state::new_volume_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        let (first, token) = paginate(sorted.clone(), |s| s, "vol", 2, "").unwrap();
        assert_eq!(first, sorted[..2]);
        let (rest, token2) = paginate(sorted.clone(), |s| s, "vol", 0, &token).unwrap();
        assert_eq!(rest, sorted[2..]);
        assert!(token2.is_empty());
        let err = paginate(sorted, |s| s, "vol", 0, "invalid-token").unwrap_err();
        assert_eq!(err.code(), tonic::Code::Aborted);
    }
}
