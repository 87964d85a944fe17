//! Unmounting a selection of mounts. Works in rounds over a fresh mount table: deepest mount
//! points first, the most recent mount first among equals (stacked mounts), a lazy unmount
//! (MNT_DETACH) when a mount is busy. A mount hidden under a later mount on a parent fails with
//! ENOENT or EINVAL until the parent is gone, so failures are only final when a whole round
//! makes no progress.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{UnmountFlags, unmount};

use super::mountinfo::{self, Mount};
use super::report::{SweepReport, Unmounted};

/// Upper bound on rounds; each round that gets this far has unmounted at least one mount.
const MAX_ROUNDS: usize = 64;

/// Unmounts every mount `pick` selects, until none is left or nothing more can be done.
pub(crate) fn unmount_all(pick: impl Fn(&Mount) -> bool, report: &mut SweepReport) {
    let mut errors: BTreeMap<PathBuf, String> = BTreeMap::new();
    for _ in 0..MAX_ROUNDS {
        let targets = match selected(&pick) {
            Ok(targets) => targets,
            Err(e) => return report.failed.push(e),
        };
        if targets.is_empty() {
            return;
        }
        if !round(&targets, &mut errors, report) {
            break;
        }
    }
    match selected(&pick) {
        Ok(left) => {
            for m in left {
                let why = errors
                    .get(&m.mount_point)
                    .map_or("not attempted", String::as_str);
                report
                    .failed
                    .push(format!("unmount {}: {why}", m.describe()));
            }
        }
        Err(e) => report.failed.push(e),
    }
}

/// The mounts `pick` selects, deepest first, newest first among equal depths.
fn selected(pick: &impl Fn(&Mount) -> bool) -> Result<Vec<Mount>, String> {
    let table = mountinfo::read().map_err(|e| format!("cannot read the mount table: {e}"))?;
    let mut targets: Vec<Mount> = table.into_iter().filter(|m| pick(m)).collect();
    targets.sort_by(|a, b| {
        let depth = |m: &Mount| m.mount_point.components().count();
        depth(b).cmp(&depth(a)).then(b.id.cmp(&a.id))
    });
    Ok(targets)
}

/// Tries each target once; returns whether anything was unmounted.
fn round(
    targets: &[Mount],
    errors: &mut BTreeMap<PathBuf, String>,
    report: &mut SweepReport,
) -> bool {
    let mut progress = false;
    for m in targets {
        match unmount_one(&m.mount_point) {
            Ok(lazy) => {
                progress = true;
                report.unmounted.push(Unmounted {
                    mount_point: m.mount_point.clone(),
                    lazy,
                });
            }
            Err(e) => {
                errors.insert(m.mount_point.clone(), e.to_string());
            }
        }
    }
    progress
}

/// Unmounts the top mount at `path` without following a symlink there; lazily if busy.
/// Returns whether the unmount was lazy.
pub(crate) fn unmount_one(path: &Path) -> Result<bool, Errno> {
    match unmount(path, UnmountFlags::NOFOLLOW) {
        Ok(()) => Ok(false),
        Err(Errno::BUSY) => {
            unmount(path, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH).map(|()| true)
        }
        Err(e) => Err(e),
    }
}
