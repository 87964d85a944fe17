//! The driver's one error type and its one mapping to gRPC status codes.

use tonic::{Code, Status};

use crate::state::StateError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A request field is missing or malformed; `field` is its path in the request.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{kind} {id:?} does not exist")]
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

impl From<DriverError> for Status {
    fn from(error: DriverError) -> Status {
        let code = error.code();
        let message = full_message(&error);
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
