//! Removing a directory tree the run created, without ever leaving it: symlinks are unlinked,
//! never followed, and a directory on another filesystem (a mount the mount-table check did not
//! see, e.g. one made a moment later) stops the removal instead of being emptied.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Deeper than any tree the stack makes; a bound so a pathological tree cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

/// Removes `path` and everything below it; on error, part of the tree may be gone already.
pub(crate) fn remove_tree(path: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("stat: {e}"))?;
    if !meta.is_dir() {
        return std::fs::remove_file(path).map_err(|e| format!("remove: {e}"));
    }
    remove_dir(path, meta.dev(), 0)
}

fn remove_dir(dir: &Path, dev: u64, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{} is nested too deeply", dir.display()));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("read {}: {e}", dir.display()))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| format!("stat {}: {e}", path.display()))?;
        if meta.is_dir() {
            if meta.dev() != dev {
                return Err(format!("{} is on another filesystem", path.display()));
            }
            remove_dir(&path, dev, depth + 1)?;
        } else {
            std::fs::remove_file(&path).map_err(|e| format!("remove {}: {e}", path.display()))?;
        }
    }
    std::fs::remove_dir(dir).map_err(|e| format!("remove {}: {e}", dir.display()))
}
