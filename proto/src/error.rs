//! Error codes: the closed set of machine-readable failures a response or a failed target
//! can carry. Clients branch on the code; the message is for people.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every error code the daemon can send, in wire spelling (`snake_case`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A request line longer than [`crate::MAX_FRAME`] bytes.
    FrameTooLarge,
    /// A request line that is not UTF-8 JSON.
    InvalidJson,
    /// A request whose `op` names no operation.
    UnknownOp,
    /// A request whose fields are missing, unknown or out of range.
    InvalidRequest,
    /// No session (or lease) by that id.
    NotFound,
    /// The session has an active lease and the request did not `force`.
    Leased,
    /// The session outlived the grace period and the request did not `force`.
    Timeout,
    /// Even SIGKILL left processes behind (stuck in the kernel).
    KillFailed,
    /// `max_sessions` sessions are live already.
    Capacity,
    /// The tracking id is already taken by a live session.
    Conflict,
    /// The session is no longer running (e.g. leasing an exited session).
    NotRunning,
    /// The command could not be started, or died before it was ready.
    LaunchFailed,
    /// The peer's uid/gid is not allowed to use this daemon.
    PermissionDenied,
    /// An HTTP request without the daemon's token (`?token=` or `Authorization: Bearer`).
    Unauthorized,
    /// The daemon is shutting down and takes no new work.
    ShuttingDown,
    /// A reload was refused: the new binary or config is not usable (nothing changed).
    ReloadFailed,
    /// The daemon is re-executing itself (a reload) and an HTTP request came too late to be
    /// answered by this image; the next one is, in a moment (the socket never sends this:
    /// its requests are handed over).
    Reloading,
    /// A daemon-side failure that is not the client's fault.
    Internal,
}

impl ErrorCode {
    /// The wire spelling of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Leased => "leased",
            ErrorCode::Timeout => "timeout",
            ErrorCode::KillFailed => "kill_failed",
            ErrorCode::Capacity => "capacity",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NotRunning => "not_running",
            ErrorCode::LaunchFailed => "launch_failed",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::ReloadFailed => "reload_failed",
            ErrorCode::Reloading => "reloading",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of a failed response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for WireError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_wire_names() {
        for code in [
            ErrorCode::FrameTooLarge,
            ErrorCode::InvalidJson,
            ErrorCode::UnknownOp,
            ErrorCode::InvalidRequest,
            ErrorCode::NotFound,
            ErrorCode::Leased,
            ErrorCode::Timeout,
            ErrorCode::KillFailed,
            ErrorCode::Capacity,
            ErrorCode::Conflict,
            ErrorCode::NotRunning,
            ErrorCode::LaunchFailed,
            ErrorCode::PermissionDenied,
            ErrorCode::Unauthorized,
            ErrorCode::ShuttingDown,
            ErrorCode::ReloadFailed,
            ErrorCode::Reloading,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
    }
}
