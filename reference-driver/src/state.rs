//! Persistent driver state: volume and snapshot records with lineage, written atomically.
//!
//! Layout under the state dir: `state.json`, `volumes/<id>.img`, `snapshots/<id>.img`.
//! Image paths are derived only from ids the driver generated itself (see [`is_driver_id`]).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::storage::FsType;

const STATE_FILE: &str = "state.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is not valid")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("state file {path} has format version {found}, this driver reads {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
}

type Result<T> = std::result::Result<T, StateError>;

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { op, path, source }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessType {
    Mount,
    Block,
}

/// Where a volume's data came from; kept for replays, ListVolumes and lineage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Volume(String),
    Snapshot(String),
}

/// A record is visible to the CO only once `Ready`: its data is complete and durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Creating,
    Ready,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staging {
    pub staging_path: PathBuf,
    pub device: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub id: String,
    pub name: String,
    pub size_bytes: u64,
    pub access_type: AccessType,
    /// Filesystem inside the image (mount volumes only).
    pub fs_type: Option<FsType>,
    /// Size the filesystem was last made or grown to; smaller than `size_bytes` after a larger
    /// clone or an expansion, and grown to match at the next NodeStage or NodeExpandVolume.
    pub fs_size_bytes: u64,
    pub source: Option<Source>,
    pub parameters: BTreeMap<String, String>,
    pub status: Status,
    pub staged: Option<Staging>,
    /// Published target paths and whether each is read-only.
    pub published: BTreeMap<PathBuf, bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub id: String,
    pub name: String,
    pub source_volume_id: String,
    pub size_bytes: u64,
    pub access_type: AccessType,
    pub fs_type: Option<FsType>,
    pub fs_size_bytes: u64,
    pub created_unix_nanos: u128,
    pub status: Status,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub format_version: u32,
    pub volumes: BTreeMap<String, VolumeRecord>,
    pub snapshots: BTreeMap<String, SnapshotRecord>,
    /// Node work in flight or left to finish, by volume id (absent from older state files).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_work: BTreeMap<String, NodeWork>,
}

/// What a volume's node operations left to do. Kept beside the volume records rather than in
/// them so that a missing entry means "nothing pending".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeWork {
    /// Node work begun and not yet recorded as done: after a crash, start-up reconciliation
    /// undoes whatever of it the host shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<NodeIntent>,
    /// Loop devices the volume was unstaged from whose detach failed; retried at the next
    /// NodeStage/NodeUnstage, at DeleteVolume and at start-up, each only while the device is
    /// still bound to the volume's image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_detach: Vec<PathBuf>,
}

impl NodeWork {
    pub fn is_empty(&self) -> bool {
        self.intent.is_none() && self.pending_detach.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeIntent {
    Stage(PathBuf),
    Publish(PathBuf),
}

impl State {
    pub fn volume_by_name(&self, name: &str) -> Option<&VolumeRecord> {
        self.volumes.values().find(|v| v.name == name)
    }

    pub fn snapshot_by_name(&self, name: &str) -> Option<&SnapshotRecord> {
        self.snapshots.values().find(|s| s.name == name)
    }

    /// Applies `change` to a volume's node work, dropping the entry once nothing is pending.
    pub fn with_node_work<T>(&mut self, id: &str, change: impl FnOnce(&mut NodeWork) -> T) -> T {
        let work = self.node_work.entry(id.to_string()).or_default();
        let out = change(work);
        if work.is_empty() {
            self.node_work.remove(id);
        }
        out
    }
}

/// Ids look like `vol-<uuid>` / `snap-<uuid>`; anything else was not made by this driver.
pub fn is_driver_id(prefix: &str, id: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|uuid| uuid::Uuid::try_parse(uuid).is_ok() && uuid.len() == 36)
}

pub fn new_volume_id() -> String {
    format!("vol-{}", uuid::Uuid::new_v4())
}

pub fn new_snapshot_id() -> String {
    format!("snap-{}", uuid::Uuid::new_v4())
}

/// State in memory plus its file; every change is persisted before it becomes visible.
pub struct StateStore {
    dir: PathBuf,
    state: Mutex<State>,
}

impl StateStore {
    /// Opens (or initialises) the state dir. Call [`StateStore::recover`] before serving.
    pub fn open(dir: &Path) -> Result<StateStore> {
        for sub in [
            dir.to_path_buf(),
            dir.join("volumes"),
            dir.join("snapshots"),
        ] {
            fs::create_dir_all(&sub).map_err(io_err("create", &sub))?;
        }
        let path = dir.join(STATE_FILE);
        let state = match fs::read(&path) {
            Ok(bytes) => {
                let state: State =
                    serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
                        path: path.clone(),
                        source,
                    })?;
                if state.format_version != FORMAT_VERSION {
                    return Err(StateError::Version {
                        path,
                        found: state.format_version,
                    });
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                format_version: FORMAT_VERSION,
                ..State::default()
            },
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        Ok(StateStore {
            dir: dir.to_path_buf(),
            state: Mutex::new(state),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn volume_image(&self, id: &str) -> PathBuf {
        debug_assert!(is_driver_id("vol", id), "{id}");
        self.dir.join("volumes").join(format!("{id}.img"))
    }

    pub fn snapshot_image(&self, id: &str) -> PathBuf {
        debug_assert!(is_driver_id("snap", id), "{id}");
        self.dir.join("snapshots").join(format!("{id}.img"))
    }

    /// A consistent copy of the current state.
    pub fn read(&self) -> State {
        self.lock().clone()
    }

    /// Applies `change` to a copy, persists it, then publishes it; on error nothing changes.
    pub fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> Result<T> {
        let mut guard = self.lock();
        let mut next = guard.clone();
        let out = change(&mut next);
        self.persist(&next)?;
        *guard = next;
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied state (see `update`).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// temp file, fsync, rename, fsync dir: a crash leaves the old or the new state, never half.
    fn persist(&self, state: &State) -> Result<()> {
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        file.write_all(&bytes).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", &self.dir))
    }

    /// Makes the state dir consistent after a crash: records still `Creating` are half-made and
    /// are removed with their images; image files without a record and temp files are deleted.
    /// Returns what was cleaned, for the log.
    pub fn recover(&self) -> Result<Vec<String>> {
        let mut cleaned = Vec::new();
        let removed = self.update(|state| {
            let mut removed = Vec::new();
            state.volumes.retain(|id, v| {
                let keep = v.status == Status::Ready;
                if !keep {
                    removed.push(("volume", id.clone()));
                }
                keep
            });
            state.snapshots.retain(|id, s| {
                let keep = s.status == Status::Ready;
                if !keep {
                    removed.push(("snapshot", id.clone()));
                }
                keep
            });
            removed
        })?;
        for (kind, id) in removed {
            cleaned.push(format!("half-made {kind} {id}"));
        }
        let state = self.read();
        for (sub, prefix) in [("volumes", "vol"), ("snapshots", "snap")] {
            let dir = self.dir.join(sub);
            for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
                let entry = entry.map_err(io_err("list", &dir))?;
                let file_name = entry.file_name().to_string_lossy().into_owned();
                let id = file_name.strip_suffix(".img").unwrap_or("");
                let known = is_driver_id(prefix, id)
                    && (state.volumes.contains_key(id) || state.snapshots.contains_key(id));
                if !known {
                    let path = entry.path();
                    fs::remove_file(&path).map_err(io_err("remove", &path))?;
                    cleaned.push(format!("leftover file {}", path.display()));
                }
            }
        }
        Ok(cleaned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, status: Status) -> VolumeRecord {
        VolumeRecord {
            id: id.into(),
            name: format!("name-{id}"),
            size_bytes: 1 << 20,
            access_type: AccessType::Block,
            fs_type: None,
            fs_size_bytes: 0,
            source: Some(Source::Volume("vol-x".into())),
            parameters: BTreeMap::new(),
            status,
            staged: None,
            published: BTreeMap::new(),
        }
    }

    #[test]
    fn ids_are_checked_before_they_become_paths() {
        let id = new_volume_id();
        assert!(is_driver_id("vol", &id));
        assert!(!is_driver_id("snap", &id));
        assert!(!is_driver_id("vol", "vol-../../etc/passwd"));
        assert!(!is_driver_id("vol", "fake-vol-id-0123456789"));
        assert!(!is_driver_id("vol", ""));
    }

    #[test]
    fn state_survives_reopen_and_recovery_drops_half_made_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let ready = new_volume_id();
        let creating = new_volume_id();
        store
            .update(|s| {
                s.volumes
                    .insert(ready.clone(), record(&ready, Status::Ready));
                s.volumes
                    .insert(creating.clone(), record(&creating, Status::Creating));
            })
            .unwrap();
        fs::write(store.volume_image(&ready), b"data").unwrap();
        fs::write(store.volume_image(&creating), b"half").unwrap();
        fs::write(dir.path().join("volumes/stray.img.tmp"), b"x").unwrap();
        drop(store);

        let store = StateStore::open(dir.path()).unwrap();
        let cleaned = store.recover().unwrap();
        assert_eq!(cleaned.len(), 3, "{cleaned:?}");
        let state = store.read();
        assert!(state.volumes.contains_key(&ready));
        assert!(!state.volumes.contains_key(&creating));
        assert!(store.volume_image(&ready).exists());
        assert!(!store.volume_image(&creating).exists());
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[test]
    fn state_without_node_work_still_loads_and_empty_work_is_dropped() {
        let old = r#"{"format_version":1,"volumes":{},"snapshots":{}}"#;
        let mut state: State = serde_json::from_str(old).unwrap();
        assert!(state.node_work.is_empty());
        state.with_node_work("vol-a", |w| w.pending_detach.push("/dev/loop9".into()));
        state.with_node_work("vol-b", |w| w.intent = Some(NodeIntent::Stage("/s".into())));
        let json = serde_json::to_string(&state).unwrap();
        let back: State = serde_json::from_str(&json).unwrap();
        assert_eq!(back.node_work, state.node_work);
        state.with_node_work("vol-a", |w| w.pending_detach.clear());
        assert!(!state.node_work.contains_key("vol-a"));
        let empty = serde_json::to_string(&State::default()).unwrap();
        assert!(!empty.contains("node_work"), "{empty}");
    }

    #[test]
    fn corrupt_state_is_an_error_not_an_empty_driver() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), b"{ not json").unwrap();
        let err = StateStore::open(dir.path()).err().unwrap();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
    }
}
