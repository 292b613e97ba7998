//! The daemon's errors. Each variant is one wire error code, so what a client sees is
//! decided where the failure is understood, not re-guessed at the socket.

use browserd_proto::{ErrorCode, WireError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Capacity(String),
    #[error("{0}")]
    NotRunning(String),
    #[error("{0}")]
    LaunchFailed(String),
    #[error("browserd is shutting down and takes no new sessions")]
    ShuttingDown,
    #[error("{0}")]
    ReloadFailed(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::Capacity(_) => ErrorCode::Capacity,
            Error::NotRunning(_) => ErrorCode::NotRunning,
            Error::LaunchFailed(_) => ErrorCode::LaunchFailed,
            Error::ShuttingDown => ErrorCode::ShuttingDown,
            Error::ReloadFailed(_) => ErrorCode::ReloadFailed,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<Error> for WireError {
    fn from(error: Error) -> WireError {
        WireError::new(error.code(), error.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
