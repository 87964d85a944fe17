//! Writing report files to disk.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use crate::{error::ReportError, json, junit, markdown, model::RunReport};

/// Writes each requested report (`None` skips it), creating parent directories.
///
/// Each file is written to a temporary file beside it and renamed into place, so a reader
/// (or a crashed run) never sees a half-written report. Every output is rendered before any
/// file is touched, so a serialisation error leaves the disk unchanged.
pub fn write_all(
    report: &RunReport,
    junit: Option<&Path>,
    json: Option<&Path>,
    markdown: Option<&Path>,
) -> Result<(), ReportError> {
    let mut outputs = Vec::new();
    if let Some(path) = junit {
        outputs.push((path, junit::to_junit(report)?));
    }
    if let Some(path) = json {
        outputs.push((path, json::to_json(report)?));
    }
    if let Some(path) = markdown {
        outputs.push((path, markdown::to_markdown(report)));
    }
    for (path, contents) in outputs {
        write_atomic(path, contents.as_bytes())?;
    }
    Ok(())
}

fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), ReportError> {
    // A bare file name has an empty parent: that means the current directory.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(|source| ReportError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let write_error = |source| ReportError::Write {
        path: PathBuf::from(path),
        source,
    };
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(write_error)?;
    file.write_all(contents).map_err(write_error)?;
    file.as_file().sync_all().map_err(write_error)?;
    file.persist(path).map_err(|e| write_error(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::RunInfo;

    fn report() -> RunReport {
        RunReport::new(RunInfo {
            tool: "t".into(),
            driver_name: "d".into(),
            driver_version: "v".into(),
            target: "embedded".into(),
            endpoint: "e".into(),
            node_endpoint: "e".into(),
            profile: "p".into(),
            seed: 1,
            started_at: "2026-01-01T00:00:00Z".into(),
            properties: BTreeMap::new(),
        })
    }

    #[test]
    fn writes_requested_files_and_creates_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let junit_path = tmp.path().join("a/b/junit.xml");
        let json_path = tmp.path().join("c/summary.json");
        let report = report();
        write_all(&report, Some(&junit_path), Some(&json_path), None).unwrap();
        assert_eq!(
            fs::read_to_string(&junit_path).unwrap(),
            junit::to_junit(&report).unwrap()
        );
        let read = json::from_json(&fs::read_to_string(&json_path).unwrap()).unwrap();
        assert_eq!(read, report);
        // Overwrites in place and leaves no temporary files behind.
        write_all(&report, Some(&junit_path), None, None).unwrap();
        let names: Vec<_> = fs::read_dir(tmp.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["junit.xml"]);
    }

    #[test]
    fn reports_the_directory_it_could_not_create() {
        let tmp = tempfile::tempdir().unwrap();
        let blocker = tmp.path().join("file");
        fs::write(&blocker, "").unwrap();
        let err =
            write_all(&report(), None, None, Some(&blocker.join("x/summary.md"))).unwrap_err();
        assert!(
            matches!(&err, ReportError::CreateDir { path, .. } if path == &blocker.join("x")),
            "{err:?}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}
