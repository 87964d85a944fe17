//! Files that must survive a crash whole: a temp file beside the target, fsynced, renamed over
//! it, then the directory fsynced, so a reader finds either the old file or the new one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::HostError;

/// Writes `value` as pretty JSON to `path`, atomically.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<(), HostError> {
    let json = serde_json::to_vec_pretty(value).map_err(|cause| HostError::Json {
        path: path.to_path_buf(),
        cause,
    })?;
    let dir = parent_of(path);
    let temp = temp_for(path);
    let result = write_synced(&temp, &json)
        .and_then(|()| std::fs::rename(&temp, path).map_err(|e| HostError::io("rename", &temp, e)))
        .and_then(|()| sync_dir(dir));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Removes `path` and makes the removal durable.
pub(crate) fn remove(path: &Path) -> Result<(), HostError> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(parent_of(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(HostError::io("remove", path, e)),
    }
}

/// `.NAME.tmp` beside `path`: one writer per file, so no pid is needed to keep it apart.
pub(crate) fn temp_for(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    parent_of(path).join(format!(".{name}.tmp"))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), HostError> {
    let mut file = File::create(path).map_err(|e| HostError::io("create", path, e))?;
    file.write_all(bytes)
        .map_err(|e| HostError::io("write", path, e))?;
    file.sync_all().map_err(|e| HostError::io("fsync", path, e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), HostError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| HostError::io("fsync directory", dir, e))
}
