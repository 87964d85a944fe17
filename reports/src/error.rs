//! The crate's single error type.

use std::{io, path::PathBuf};

/// Why a report could not be produced, written or read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// quick-junit refused the report.
    #[error("failed to serialize the junit report")]
    Junit(#[source] quick_junit::SerializeError),
    /// serde_json refused the report.
    #[error("failed to serialize the json summary")]
    JsonSerialize(#[source] serde_json::Error),
    /// The text is not a JSON summary of the expected shape.
    #[error("failed to parse the json summary")]
    JsonParse(#[source] serde_json::Error),
    /// The JSON summary has no usable `schema_version`.
    #[error("json summary has no numeric schema_version field")]
    MissingSchemaVersion,
    /// The JSON summary was written with another schema.
    #[error(
        "json summary has schema_version {found}, but this build reads only version {supported}"
    )]
    UnsupportedSchemaVersion {
        /// The version found in the file.
        found: u64,
        /// The version this build reads ([`SCHEMA_VERSION`](crate::SCHEMA_VERSION)).
        supported: u32,
    },
    /// A report's directory could not be created.
    #[error("failed to create report directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A report file could not be written or moved into place.
    #[error("failed to write report file {}", path.display())]
    Write {
        /// The destination file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}
