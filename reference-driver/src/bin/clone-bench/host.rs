//! Host helpers: running external tools, file allocation, mount and loop-device inspection.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

/// Runs a tool and returns its stdout; stderr goes into the error.
pub fn command(program: &str, flags: &[&str], paths: &[&Path]) -> Result<String> {
    let out = Command::new(program).args(flags).args(paths).output();
    let out = out.with_context(|| format!("running {program}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let what = format!("{program} {flags:?} {paths:?}");
    ensure!(out.status.success(), "{what}: {}", stderr.trim());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// sha256sum is in coreutils and fast; it spares the bin a hashing dependency.
pub fn sha256(path: &Path) -> Result<String> {
    let out = command("sha256sum", &[], &[path])?;
    let hash = out.split_whitespace().next().unwrap_or_default();
    Ok(hash.to_string())
}

pub fn allocated(path: &Path) -> u64 {
    let meta = std::fs::metadata(path);
    meta.map(|m| m.blocks() * 512).unwrap_or(0)
}

pub fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// Mount points at or below `dir`, in mount order (unmount in reverse).
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let points = info.lines().filter_map(|l| l.split(' ').nth(4));
    let points = points.map(PathBuf::from).filter(|m| m.starts_with(dir));
    Ok(points.collect())
}

/// Loop devices whose backing file lies below `dir`.
pub fn loops_backed_under(dir: &Path) -> Vec<PathBuf> {
    let flags = ["--list", "--noheadings", "--output", "NAME,BACK-FILE"];
    let list = command("losetup", &flags, &[]).unwrap_or_default();
    let rows = list.lines().filter_map(|l| l.split_once(' '));
    let under = rows.filter(|(_, back)| Path::new(back.trim()).starts_with(dir));
    under.map(|(name, _)| PathBuf::from(name)).collect()
}
