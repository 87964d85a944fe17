//! Whose fault a failed read is. Reading a volume the driver published is part of the test:
//! when the volume itself fails the read (EIO, a bad checksum, a device shorter than the
//! driver promised), the driver broke its promise and the case fails; a read the machine
//! refuses (no permission, no memory, no file descriptors left) says nothing about the driver
//! and stays a harness error, as do the harness's own files and arguments.

use rustix::io::Errno;

use crate::case::{CaseError, fail_with, harness_error};
use crate::data::DataError;
use crate::steps::error_chain;

/// Errors the machine gives whatever the volume: the harness's privileges and resources.
const MACHINE: &[Errno] = &[
    Errno::ACCESS,
    Errno::PERM,
    Errno::MFILE,
    Errno::NFILE,
    Errno::NOMEM,
];

/// Names for the errors a volume read can meet, so a verdict says `EIO`, not `os error 5`.
const NAMES: &[(Errno, &str)] = &[
    (Errno::IO, "EIO"),
    (Errno::BADMSG, "EBADMSG"),
    (Errno::UCLEAN, "EUCLEAN"),
    (Errno::NXIO, "ENXIO"),
    (Errno::NODEV, "ENODEV"),
    (Errno::NOENT, "ENOENT"),
    (Errno::NOTDIR, "ENOTDIR"),
    (Errno::ISDIR, "EISDIR"),
    (Errno::STALE, "ESTALE"),
    (Errno::INVAL, "EINVAL"),
    (Errno::ROFS, "EROFS"),
    (Errno::NOSPC, "ENOSPC"),
    (Errno::LOOP, "ELOOP"),
    (Errno::ACCESS, "EACCES"),
    (Errno::PERM, "EPERM"),
    (Errno::MFILE, "EMFILE"),
    (Errno::NFILE, "ENFILE"),
    (Errno::NOMEM, "ENOMEM"),
];

/// `EIO`, `ENXIO`, …; `errno N` for one without a name here.
pub fn errno_name(raw: i32) -> String {
    NAMES
        .iter()
        .find(|(errno, _)| errno.raw_os_error() == raw)
        .map_or_else(|| format!("errno {raw}"), |(_, name)| (*name).to_string())
}

/// Whether the volume under test, rather than the machine or the harness, made `e`.
pub fn is_volume_fault(e: &DataError) -> bool {
    match e {
        DataError::Io { source, .. } | DataError::IoAt { source, .. } => {
            match source.raw_os_error() {
                Some(raw) => !MACHINE.iter().any(|m| m.raw_os_error() == raw),
                // A read that ended early (`read_exact_at`) is a volume shorter than it says.
                None => source.kind() == std::io::ErrorKind::UnexpectedEof,
            }
        }
        DataError::TooShort { .. } | DataError::OutOfRange { .. } => true,
        _ => false,
    }
}

/// The verdict for failed I/O on a volume the driver published, while `what`.
pub fn read_verdict(what: &str, e: &DataError) -> CaseError {
    let chain = error_chain(e);
    if !is_volume_fault(e) {
        return harness_error(format!("{what}: {chain}"));
    }
    let actual = match e.errno() {
        Some(raw) => format!("{}: {chain}", errno_name(raw)),
        None => chain,
    };
    fail_with(
        format!("{what}: I/O on the volume the driver published failed"),
        "every byte up to the length the driver promised reads (and takes writes) without error",
        actual,
    )
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io;
    use std::path::Path;

    use super::*;
    use crate::case::CaseFailure;
    use crate::data;

    fn failure(e: CaseError) -> CaseFailure {
        match e {
            CaseError::Fail(f) => f,
            CaseError::Error(message) => panic!("a harness error, not a failure: {message}"),
        }
    }

    #[test]
    fn a_device_shorter_than_promised_is_the_drivers_failure() {
        // The case: a copy of only the first MiB, read where 4 MiB were promised.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clone");
        File::create(&path).unwrap().set_len(1 << 20).unwrap();
        for e in [
            data::device_digest(&path, 4 << 20).unwrap_err(),
            data::read_whole_device(&path, 4 << 20).unwrap_err(),
        ] {
            let f = failure(read_verdict("digest the clone", &e));
            let actual = f.actual.unwrap();
            assert!(
                actual.contains(&path.display().to_string()) && actual.contains("1048576"),
                "{actual}"
            );
        }
    }

    #[test]
    fn kernel_io_errors_on_the_volume_fail_with_their_name_and_offset() {
        // Real kernel errors: EIO reading unmapped memory, ENXIO opening a socket as a file.
        let eio = data::device_digest(Path::new("/proc/self/mem"), 4096).unwrap_err();
        let f = failure(read_verdict("digest the restore", &eio));
        let actual = f.actual.unwrap();
        assert!(
            actual.starts_with("EIO: ") && actual.contains("/proc/self/mem at byte 0"),
            "{actual}"
        );
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("published");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let enxio = data::read_whole_device(&socket, 4096).unwrap_err();
        let f = failure(read_verdict("digest the clone", &enxio));
        assert!(f.actual.unwrap().starts_with("ENXIO: "));
        assert!(f.message.starts_with("digest the clone: "), "{}", f.message);
    }

    #[test]
    fn the_machines_refusals_and_the_harness_own_errors_stay_harness_errors() {
        let path = Path::new("/published/target").to_path_buf();
        for errno in MACHINE {
            let e = DataError::Io {
                op: "open",
                path: path.clone(),
                source: io::Error::from_raw_os_error(errno.raw_os_error()),
            };
            assert!(
                matches!(read_verdict("read", &e), CaseError::Error(_)),
                "{e}"
            );
        }
        let too_many = data::block_plan(1, 1 << 20, 1000).unwrap_err();
        assert!(matches!(
            read_verdict("plan", &too_many),
            CaseError::Error(m) if m.starts_with("plan: ")
        ));
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(Errno::IO.raw_os_error()), "EIO");
        assert_eq!(errno_name(Errno::UCLEAN.raw_os_error()), "EUCLEAN");
        assert_eq!(errno_name(-1), "errno -1");
    }
}
