//! /proc/self/mountinfo: the mount table of our mount namespace, with the kernel's octal
//! escapes (`\040` for a space, ...) decoded so paths compare with what we hold.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::error::HostError;

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of mountinfo, the fields the sweep needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mount {
    pub id: u64,
    /// `major:minor` of the mounted device, to find mounts of a loop device by number.
    pub dev: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

impl Mount {
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} ({} from {})",
            self.mount_point.display(),
            self.fstype,
            self.source
        )
    }
}

/// Reads the mount table now.
pub(crate) fn read() -> Result<Vec<Mount>, HostError> {
    let bytes =
        std::fs::read(MOUNTINFO).map_err(|e| HostError::io("read", Path::new(MOUNTINFO), e))?;
    Ok(parse(&String::from_utf8_lossy(&bytes)))
}

/// Parses mountinfo text; malformed lines are skipped rather than failing the whole table.
pub(crate) fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`
fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let mut right = right.split(' ');
    if left.len() < 6 {
        return None;
    }
    Some(Mount {
        id: left[0].parse().ok()?,
        dev: left[2].to_string(),
        mount_point: PathBuf::from(OsString::from_vec(decode(left[4]))),
        fstype: right.next()?.to_string(),
        source: String::from_utf8_lossy(&decode(right.next().unwrap_or(""))).into_owned(),
    })
}

/// Undoes the kernel's `\NNN` octal escapes of space, tab, newline and backslash.
pub(crate) fn decode(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(byte) = octal_at(bytes, i) {
            out.push(byte);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The byte a `\NNN` escape starting at `i` stands for, if there is one.
fn octal_at(bytes: &[u8], i: usize) -> Option<u8> {
    let escape = bytes.get(i..i + 4)?;
    if escape[0] != b'\\' || !escape[1..].iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    let value = escape[1..]
        .iter()
        .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
    u8::try_from(value).ok()
}

/// Mount points at or below `path` (component-wise), in table order.
pub(crate) fn at_or_below<'a>(table: &'a [Mount], path: &Path) -> Vec<&'a Mount> {
    table
        .iter()
        .filter(|m| m.mount_point.starts_with(path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
36 22 0:45 / /tmp/run\\040dir/a rw,relatime shared:20 - tmpfs tmpfs rw,size=1024k
37 36 7:3 / /tmp/run\\040dir/a/back\\134slash rw - ext4 /dev/loop3 rw
garbage line
";

    #[test]
    fn host_mountinfo_parses_and_decodes() {
        let table = parse(SAMPLE);
        assert_eq!(table.len(), 3);
        assert_eq!(table[1].mount_point, Path::new("/tmp/run dir/a"));
        assert_eq!(table[1].fstype, "tmpfs");
        assert_eq!(
            table[2].mount_point,
            Path::new("/tmp/run dir/a/back\\slash")
        );
        assert_eq!(table[2].dev, "7:3");
        assert_eq!(table[2].source, "/dev/loop3");
        assert_eq!(table[2].id, 37);
        let below = at_or_below(&table, Path::new("/tmp/run dir"));
        assert_eq!(below.len(), 2);
        assert!(at_or_below(&table, Path::new("/tmp/run")).is_empty());
    }

    #[test]
    fn host_mountinfo_keeps_bad_escapes() {
        assert_eq!(decode("a\\04"), b"a\\04");
        assert_eq!(decode("a\\999b"), b"a\\999b");
        assert_eq!(decode("\\011x"), b"\tx");
    }
}
