//! Start-up reconciliation: the host and the state are made to agree before the driver
//! serves. Mounts and loop devices of this driver's own images (proven by the kernel's record
//! of the backing file's device and inode) that no valid `staged` record accounts for are
//! unmounted and detached; `staged` records whose mount or device is gone are dropped; node
//! work left pending (intents, failed detaches) is thereby finished.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::Driver;
use super::host::{self, DevNum, FileId, LoopDevice, MountEntry};
use crate::state::{AccessType, NodeIntent, State, StateStore};
use crate::storage;

/// This driver's images by identity: which volumes each one backs (hard links share one).
struct Images {
    owners: BTreeMap<FileId, Vec<String>>,
    /// The image dirs, for devices whose image was unlinked while attached.
    dirs: Vec<(PathBuf, DevNum)>,
}

impl Driver {
    /// Runs at start-up, after any frozen staging filesystem was thawed (an unmount of a frozen
    /// filesystem would block). Failures are logged; the driver still starts.
    pub(in crate::core) fn reconcile_node(store: &StateStore) {
        match reconcile(store) {
            Ok(actions) => {
                for action in actions {
                    tracing::warn!(%action, "reconciled the node with the state at start-up");
                }
            }
            Err(e) => tracing::error!(error = %e, "node reconciliation at start-up failed"),
        }
    }
}

fn reconcile(store: &StateStore) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let state = store.read();
    let images = images(store, &state);
    let loops: Vec<LoopDevice> = host::loop_devices()?
        .into_iter()
        .filter(|d| images.is_ours(d))
        .collect();
    let mounts = host::mounts()?;
    let (kept_devices, kept_mounts, stale) = valid_stages(&state, &images, &loops, &mounts);
    let mut actions = Vec::new();
    // Only mounts of devices about to be detached: extra mounts of a volume that is validly
    // staged (a kubelet's subPath binds, say) are not ours to judge.
    let orphans: BTreeSet<DevNum> = loops
        .iter()
        .filter(|d| !kept_devices.contains(&d.path))
        .map(|d| d.rdev)
        .collect();
    let mut doomed: Vec<PathBuf> = mounts
        .iter()
        .rev() // last mounted first, so stacked and nested mounts come off in order
        .filter(|m| !kept_mounts.contains(&m.mount_point) && shows_any(m, &orphans))
        .map(|m| m.mount_point.clone())
        .collect();
    doomed.extend(unrecorded_publishes(&state, &loops, &kept_devices, &mounts));
    for path in doomed {
        match storage::mount::unmount(&path) {
            Ok(()) => actions.push(format!("unmounted {}", path.display())),
            Err(e) => actions.push(format!("could not unmount {}: {e}", path.display())),
        }
    }
    // Devices that would not detach stay pending on their volumes, for the next NodeUnstage.
    let mut still_pending: Vec<(String, PathBuf)> = Vec::new();
    for d in loops.iter().filter(|d| !kept_devices.contains(&d.path)) {
        match storage::loopdev::detach(&d.path) {
            Ok(()) => actions.push(format!(
                "detached {} ({})",
                d.path.display(),
                d.backing_name
            )),
            Err(e) => {
                actions.push(format!("could not detach {}: {e}", d.path.display()));
                let owners = images.owners.get(&d.backing).into_iter().flatten();
                still_pending.extend(owners.map(|id| (id.clone(), d.path.clone())));
            }
        }
    }
    let unfinished = state.node_work.keys().cloned().collect::<Vec<_>>();
    if !stale.is_empty() || !unfinished.is_empty() || !still_pending.is_empty() {
        store.update(|s| {
            for id in &stale {
                if let Some(v) = s.volumes.get_mut(id) {
                    v.staged = None;
                    v.published.clear();
                }
            }
            s.node_work.clear();
            for (id, device) in &still_pending {
                s.with_node_work(id, |w| w.pending_detach.push(device.clone()));
            }
        })?;
        actions.extend(
            stale
                .iter()
                .map(|id| format!("dropped the stale staging record of {id}")),
        );
        actions.extend(
            unfinished
                .iter()
                .map(|id| format!("finished node work left by {id}")),
        );
    }
    Ok(actions)
}

fn images(store: &StateStore, state: &State) -> Images {
    let mut owners: BTreeMap<FileId, Vec<String>> = BTreeMap::new();
    for id in state.volumes.keys() {
        if let Ok(file) = host::file_id(&store.volume_image(id)) {
            owners.entry(file).or_default().push(id.clone());
        }
    }
    for id in state.snapshots.keys() {
        if let Ok(file) = host::file_id(&store.snapshot_image(id)) {
            owners.entry(file).or_default();
        }
    }
    let dirs = ["volumes", "snapshots"]
        .iter()
        .filter_map(|sub| {
            let dir = store.dir().join(sub);
            let dev = host::file_id(&dir).ok()?.dev;
            Some((host::mount_spelling(&dir), dev))
        })
        .collect();
    Images { owners, dirs }
}

impl Images {
    /// Bound to one of our images, or to an image unlinked from one of our image dirs.
    fn is_ours(&self, device: &LoopDevice) -> bool {
        if self.owners.contains_key(&device.backing) {
            return true;
        }
        let Some(name) = device.backing_name.strip_suffix(" (deleted)") else {
            return false;
        };
        let parent = Path::new(name).parent();
        self.dirs
            .iter()
            .any(|(dir, dev)| parent == Some(dir.as_path()) && *dev == device.backing.dev)
    }

    fn backs(&self, device: &LoopDevice, volume_id: &str) -> bool {
        self.owners
            .get(&device.backing)
            .is_some_and(|ids| ids.iter().any(|id| id == volume_id))
    }
}

/// The devices and mounts that valid `staged` records account for, and the volumes whose
/// records are stale (device gone or rebound, or, for mount volumes, the staging mount gone).
fn valid_stages(
    state: &State,
    images: &Images,
    loops: &[LoopDevice],
    mounts: &[MountEntry],
) -> (BTreeSet<PathBuf>, BTreeSet<PathBuf>, Vec<String>) {
    let (mut devices, mut kept, mut stale) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
    for v in state.volumes.values() {
        let Some(s) = &v.staged else { continue };
        let device = loops
            .iter()
            .find(|d| d.path == s.device && images.backs(d, &v.id));
        let valid = device.is_some_and(|d| {
            v.access_type == AccessType::Block
                || host::top_mount_at(mounts, &s.staging_path).is_some_and(|m| m.dev == d.rdev)
        });
        match device.filter(|_| valid) {
            Some(d) => {
                devices.insert(d.path.clone());
                kept.insert(host::mount_spelling(&s.staging_path));
                kept.extend(v.published.keys().map(|t| host::mount_spelling(t)));
            }
            None => stale.push(v.id.clone()),
        }
    }
    (devices, kept, stale)
}

/// Binds a crash left between a publish's bind and its record: the recorded intent names the
/// target, and its top mount must show the volume's (kept) device.
fn unrecorded_publishes(
    state: &State,
    loops: &[LoopDevice],
    kept_devices: &BTreeSet<PathBuf>,
    mounts: &[MountEntry],
) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for (id, work) in &state.node_work {
        let (Some(NodeIntent::Publish(target)), Some(v)) = (&work.intent, state.volumes.get(id))
        else {
            continue;
        };
        let Some(staged) = v
            .staged
            .as_ref()
            .filter(|s| kept_devices.contains(&s.device))
        else {
            continue;
        };
        if v.published.keys().any(|k| host::normalise(k) == *target) {
            continue;
        }
        let rdev = loops
            .iter()
            .find(|d| d.path == staged.device)
            .map(|d| d.rdev);
        let shows = host::top_mount_at(mounts, target)
            .zip(rdev)
            .is_some_and(|(m, r)| host::mount_shows(m, target, r));
        if shows {
            found.push(target.clone());
        }
    }
    found
}

/// A mount of one of `rdevs`: a filesystem on it or a bind of its directories, or a bind of the
/// device node itself (its root in devtmpfs is `/loopN`; only those are stat'ed).
fn shows_any(m: &MountEntry, rdevs: &BTreeSet<DevNum>) -> bool {
    if rdevs.contains(&m.dev) {
        return true;
    }
    let node = m.root.to_str().is_some_and(|r| r.starts_with("/loop"));
    node && rdevs
        .iter()
        .any(|&r| host::mount_shows(m, &m.mount_point, r))
}
