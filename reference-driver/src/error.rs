//! The driver's one error type and its one mapping to gRPC status codes.

use tonic::{Code, Status};

use crate::state::StateError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A request field is missing or malformed; `field` is its path in the request.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{kind} {} does not exist", echo(id))]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unimplemented(String),
    /// Only a fault produces this on purpose; real internal trouble carries its cause.
    #[error("{0}")]
    Internal(String),
    #[error("storage")]
    Storage(#[from] StorageError),
    #[error("state")]
    State(#[from] StateError),
    #[error("background task failed")]
    Join(#[from] tokio::task::JoinError),
}

pub type DriverResult<T> = Result<T, DriverError>;

impl DriverError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        DriverError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            DriverError::InvalidArgument { .. } => Code::InvalidArgument,
            DriverError::NotFound { .. } => Code::NotFound,
            DriverError::AlreadyExists(_) => Code::AlreadyExists,
            DriverError::OutOfRange(_) => Code::OutOfRange,
            DriverError::FailedPrecondition(_) => Code::FailedPrecondition,
            DriverError::Aborted(_) => Code::Aborted,
            DriverError::ResourceExhausted(_) => Code::ResourceExhausted,
            DriverError::Unimplemented(_) => Code::Unimplemented,
            DriverError::Internal(_) => Code::Internal,
            // The filesystem cannot grow while in use here (spec: NodeExpandVolume errors).
            DriverError::Storage(StorageError::MissingCapability { .. }) => {
                Code::FailedPrecondition
            }
            // The staging record no longer matches the host: the volume is not in a state
            // the call can use (spec: FAILED_PRECONDITION).
            DriverError::Storage(StorageError::NotProven(_)) => Code::FailedPrecondition,
            DriverError::Storage(StorageError::FreezeBusy { .. }) => Code::Aborted,
            DriverError::Storage(_) | DriverError::State(_) | DriverError::Join(_) => {
                Code::Internal
            }
        }
    }
}

/// Renders the error with its whole `source` chain, so INTERNAL answers say what broke.
fn full_message(error: &DriverError) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// How much of one request value a message repeats.
const ECHO_LIMIT: usize = 256;
/// The most a whole message may be: it travels in the grpc-message header, and clients refuse
/// header lists past 8-16 KiB (a 100 kB id would turn the answer into a transport error).
const MESSAGE_LIMIT: usize = 4096;

/// A request value for a message: quoted, and cut to ECHO_LIMIT bytes with its length.
pub fn echo(input: &str) -> String {
    if input.len() <= ECHO_LIMIT {
        return format!("{input:?}");
    }
    format!("{:?}… ({} bytes)", cut(input, ECHO_LIMIT), input.len())
}

/// The longest prefix of `s` within `limit` bytes that ends on a character boundary.
fn cut(s: &str, limit: usize) -> &str {
    let mut end = limit.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl From<DriverError> for Status {
    fn from(error: DriverError) -> Status {
        let code = error.code();
        let mut message = full_message(&error);
        if message.len() > MESSAGE_LIMIT {
            message = format!(
                "{}… (message cut, {} bytes)",
                cut(&message, MESSAGE_LIMIT),
                message.len()
            );
        }
        if code == Code::Internal {
            tracing::error!(%message, "request failed");
        } else {
            tracing::debug!(?code, %message, "request refused");
        }
        Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_input_is_capped_with_its_length() {
        let id = "é".repeat(50_000);
        let status = Status::from(DriverError::NotFound {
            kind: "volume",
            id: id.clone(),
        });
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().len() < 400, "{}", status.message().len());
        assert!(
            status.message().contains("(100000 bytes)"),
            "{}",
            status.message()
        );
        let short = Status::from(DriverError::NotFound {
            kind: "volume",
            id: "vol-1".into(),
        });
        assert_eq!(short.message(), "volume \"vol-1\" does not exist");
        let long = Status::from(DriverError::invalid("name", "x".repeat(100_000)));
        assert!(long.message().len() < MESSAGE_LIMIT + 100);
        assert!(
            long.message().ends_with("(message cut, 100006 bytes)"),
            "{}",
            &long.message()[4000..]
        );
    }

    #[test]
    fn messages_name_the_field_and_keep_causes() {
        let status = Status::from(DriverError::invalid(
            "volume_content_source.volume.volume_id",
            "must not be empty",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "volume_content_source.volume.volume_id: must not be empty"
        );

        let io = std::io::Error::other("disk on fire");
        let storage = StorageError::Io {
            op: "write",
            path: "/x".into(),
            source: io,
        };
        let status = Status::from(DriverError::from(storage));
        assert_eq!(status.code(), Code::Internal);
        assert!(
            status.message().ends_with("disk on fire"),
            "{}",
            status.message()
        );
    }
}
