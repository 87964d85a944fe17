//! The host state a run may change outside its directory, recorded before anything starts.
//!
//! Sysctls: the kubelet rewrites a handful of kernel tunables at start-up and never puts them
//! back. Paths: the kubelet, containerd and the controller-manager create well-known host
//! directories (`mkdir -p`), so a missing ancestor of a listed path is recorded too.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic;
use super::error::HostError;
use super::mountinfo::{self, Mount};
use super::paths::normalize;
use super::remove::remove_tree;
use super::report::{RestoreReport, RestoredSysctl};

/// Sysctls the kubelet sets (dotted names; `/proc/sys/<name with / for .>`).
pub const SYSCTLS: &[&str] = &[
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
];

/// Host paths the stack may create outside the run directory.
pub const HOST_PATHS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/lib/kubelet/device-plugins",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/var/lib/containerd",
    "/var/lib/cni",
    "/run/netns",
    "/etc/cni",
    "/opt/cni",
    "/usr/libexec/kubernetes",
    "/etc/kubernetes",
];

/// What to record; [`HostSpec::default`] is the real host, tests point it at temp dirs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    /// Where sysctls live, normally `/proc/sys`.
    pub proc_sys: PathBuf,
    /// Dotted sysctl names.
    pub sysctls: Vec<String>,
    /// Absolute host paths.
    pub paths: Vec<PathBuf>,
}

impl Default for HostSpec {
    fn default() -> HostSpec {
        HostSpec {
            proc_sys: PathBuf::from("/proc/sys"),
            sysctls: SYSCTLS.iter().map(|s| s.to_string()).collect(),
            paths: HOST_PATHS.iter().map(PathBuf::from).collect(),
        }
    }
}

/// The recorded state, also as JSON on disk so a later run can undo a killed one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSnapshot {
    /// The run directory it was taken for, so a later run knows what to sweep.
    pub run_dir: PathBuf,
    pub proc_sys: PathBuf,
    /// Sysctl name to its value (whitespace normalised); `None` if the kernel has no such sysctl.
    pub sysctls: BTreeMap<String, Option<String>>,
    /// Host path to whether it existed (as anything, symlinks not followed).
    pub paths: BTreeMap<PathBuf, bool>,
}

impl HostSnapshot {
    /// Records the real host for a run in `run_dir`.
    pub fn take(run_dir: &Path) -> Result<HostSnapshot, HostError> {
        HostSnapshot::take_with(run_dir, &HostSpec::default())
    }

    /// Records what `spec` names.
    pub fn take_with(run_dir: &Path, spec: &HostSpec) -> Result<HostSnapshot, HostError> {
        let mut sysctls = BTreeMap::new();
        for name in &spec.sysctls {
            sysctls.insert(name.clone(), read_sysctl(&spec.proc_sys, name)?);
        }
        let mut paths = BTreeMap::new();
        for path in &spec.paths {
            record_path(&normalize(path), &mut paths)?;
        }
        Ok(HostSnapshot {
            run_dir: run_dir.to_path_buf(),
            proc_sys: spec.proc_sys.clone(),
            sysctls,
            paths,
        })
    }

    /// Writes the snapshot atomically: a temp file next to `path`, fsynced, renamed over it,
    /// then the directory fsynced, so a crash leaves either the old file or the new one.
    pub fn save(&self, path: &Path) -> Result<(), HostError> {
        atomic::write_json(path, self)
    }

    /// Reads a snapshot written by [`HostSnapshot::save`].
    pub fn load(path: &Path) -> Result<HostSnapshot, HostError> {
        let bytes = std::fs::read(path).map_err(|e| HostError::io("read", path, e))?;
        serde_json::from_slice(&bytes).map_err(|cause| HostError::Json {
            path: path.to_path_buf(),
            cause,
        })
    }

    /// Writes back changed sysctls and removes created paths; see [`RestoreReport`].
    pub fn restore(&self) -> RestoreReport {
        let mut report = RestoreReport::default();
        self.restore_sysctls(&mut report);
        self.remove_created(&mut report);
        report
    }

    fn restore_sysctls(&self, report: &mut RestoreReport) {
        for (name, was) in &self.sysctls {
            let Some(was) = was else { continue };
            match read_sysctl(&self.proc_sys, name) {
                Ok(Some(now)) if &now == was => {}
                Ok(Some(now)) => match write_sysctl(&self.proc_sys, name, was) {
                    Ok(()) => report.sysctls.push(RestoredSysctl {
                        name: name.clone(),
                        found: now,
                        restored: was.clone(),
                    }),
                    Err(e) => report
                        .failed
                        .push(format!("restore sysctl {name} to {was}: {e}")),
                },
                Ok(None) => report.failed.push(format!("sysctl {name} has disappeared")),
                Err(e) => report.failed.push(format!("restore sysctl {name}: {e}")),
            }
        }
    }

    /// Removes created paths, parents first (a removed parent takes its recorded children).
    fn remove_created(&self, report: &mut RestoreReport) {
        let table = mountinfo::read();
        let mut kept: Vec<&PathBuf> = Vec::new();
        for path in self.created_and_present(&mut report.failed) {
            if report.removed.iter().any(|r| path.starts_with(r)) {
                continue;
            }
            let table = match &table {
                Ok(table) => table,
                Err(e) => {
                    report
                        .failed
                        .push(format!("not removing {}: {e}", path.display()));
                    continue;
                }
            };
            if let Some(m) = mount_at_or_below(path, table) {
                // A kept ancestor's line already names this mount; children without one go.
                if !kept.iter().any(|k| path.starts_with(k)) {
                    kept.push(path);
                    report.failed.push(format!(
                        "not removing {}: {} is mounted at or below it",
                        path.display(),
                        m.describe()
                    ));
                }
                continue;
            }
            match remove_tree(path) {
                Ok(()) => report.removed.push(path.clone()),
                Err(e) => report
                    .failed
                    .push(format!("remove {}: {e}", path.display())),
            }
        }
    }

    /// Recorded paths that were missing and exist now; a path that cannot be checked is a
    /// problem pushed to `problems`.
    fn created_and_present(&self, problems: &mut Vec<String>) -> Vec<&PathBuf> {
        let mut out = Vec::new();
        for (path, existed) in &self.paths {
            if *existed {
                continue;
            }
            match exists(path) {
                Ok(true) => out.push(path),
                Ok(false) => {}
                Err(e) => problems.push(format!("check {}: {e}", path.display())),
            }
        }
        out
    }

    /// One line per difference from the recorded state (for `leftovers`).
    pub(crate) fn differences(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, was) in &self.sysctls {
            let Some(was) = was else { continue };
            match read_sysctl(&self.proc_sys, name) {
                Ok(Some(now)) if &now == was => {}
                Ok(Some(now)) => lines.push(format!("sysctl {name} is {now}, was {was}")),
                Ok(None) => lines.push(format!("sysctl {name} has disappeared")),
                Err(e) => lines.push(format!("cannot check sysctl {name}: {e}")),
            }
        }
        let mut reported: Vec<&PathBuf> = Vec::new();
        for path in self.created_and_present(&mut lines) {
            if !reported.iter().any(|r| path.starts_with(r)) {
                lines.push(format!(
                    "{} was created by the run and is still present",
                    path.display()
                ));
                reported.push(path);
            }
        }
        lines
    }
}

/// Records `path` and, when it is missing, each missing ancestor (created by `mkdir -p`).
fn record_path(path: &Path, paths: &mut BTreeMap<PathBuf, bool>) -> Result<(), HostError> {
    let existed = exists(path).map_err(|e| HostError::io("check", path, e))?;
    paths.insert(path.to_path_buf(), existed);
    let mut missing = !existed;
    let mut ancestor = path.parent();
    while let Some(dir) = ancestor.filter(|_| missing) {
        missing = !exists(dir).map_err(|e| HostError::io("check", dir, e))?;
        if missing {
            paths.insert(dir.to_path_buf(), false);
        }
        ancestor = dir.parent();
    }
    Ok(())
}

/// Whether anything (a symlink included, not followed) is at `path`.
fn exists(path: &Path) -> std::io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// A mount at or below `path`. A symlink has none: unlinking it cannot touch a mount.
fn mount_at_or_below<'a>(path: &Path, table: &'a [Mount]) -> Option<&'a Mount> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return None;
    }
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| normalize(path));
    [normalize(path), canonical]
        .iter()
        .find_map(|form| mountinfo::at_or_below(table, form).into_iter().next())
}

fn sysctl_path(proc_sys: &Path, name: &str) -> PathBuf {
    proc_sys.join(name.replace('.', "/"))
}

/// The value with whitespace runs collapsed (multi-value sysctls are tab-separated), or `None`
/// when the kernel has no such sysctl.
fn read_sysctl(proc_sys: &Path, name: &str) -> Result<Option<String>, HostError> {
    let path = sysctl_path(proc_sys, name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.split_whitespace().collect::<Vec<_>>().join(" "))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HostError::io("read sysctl", &path, e)),
    }
}

/// Writes the value without creating the file: a sysctl that is not there is not ours to make.
fn write_sysctl(proc_sys: &Path, name: &str, value: &str) -> Result<(), HostError> {
    let path = sysctl_path(proc_sys, name);
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| HostError::io("open sysctl", &path, e))?;
    file.write_all(format!("{value}\n").as_bytes())
        .map_err(|e| HostError::io("write sysctl", &path, e))
}
