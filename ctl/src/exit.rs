//! The exit statuses browserctl promises, and which error codes lead to which. Scripts branch
//! on these, so they are a contract like the wire protocol.

use browserd_proto::ErrorCode;
use std::process::ExitCode;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done.
    Done = 0,
    /// The daemon answered, but some target failed (not found, leased, timed out, ...).
    TargetFailed = 1,
    /// Bad usage, or a request the daemon refused as invalid.
    Usage = 2,
    /// The daemon could not be reached, or refused this user.
    Unreachable = 3,
}

impl Exit {
    /// The exit status for an error response. Codes about the request itself are usage
    /// errors; `permission_denied` means "not your daemon", like an unreachable one;
    /// everything else is about the targets.
    pub fn for_error(code: ErrorCode) -> Exit {
        match code {
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidJson
            | ErrorCode::UnknownOp
            | ErrorCode::FrameTooLarge => Exit::Usage,
            ErrorCode::PermissionDenied | ErrorCode::Unauthorized => Exit::Unreachable,
            ErrorCode::NotFound
            | ErrorCode::Leased
            | ErrorCode::Timeout
            | ErrorCode::KillFailed
            | ErrorCode::Capacity
            | ErrorCode::Conflict
            | ErrorCode::NotRunning
            | ErrorCode::LaunchFailed
            | ErrorCode::ShuttingDown
            | ErrorCode::ReloadFailed
            | ErrorCode::Reloading
            | ErrorCode::Internal => Exit::TargetFailed,
        }
    }
}

/// A failure browserctl finds itself, so there is no daemon answer to show. `--json` reports
/// it in the shape of the daemon's error object, `{"code", "message"}`, with one of these
/// codes; the first two are the protocol's own, `unreachable` exists only in browserctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalFailure {
    /// The command line cannot make a valid request (a clap error, an unreadable
    /// `--request` file, a sandbox without a command, an out-of-range duration).
    Usage,
    /// The socket's file permissions keep this user out.
    PermissionDenied,
    /// No answer from browserd: nothing listens on the socket, the connection broke, or
    /// what answered is not browserd.
    Unreachable,
}

impl LocalFailure {
    /// The `code` of the JSON error object.
    pub fn code(self) -> &'static str {
        match self {
            LocalFailure::Usage => ErrorCode::InvalidRequest.as_str(),
            LocalFailure::PermissionDenied => ErrorCode::PermissionDenied.as_str(),
            LocalFailure::Unreachable => "unreachable",
        }
    }

    pub fn exit(self) -> Exit {
        match self {
            LocalFailure::Usage => Exit::Usage,
            LocalFailure::PermissionDenied | LocalFailure::Unreachable => Exit::Unreachable,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_problems_are_usage_errors_and_permission_is_unreachable() {
        assert_eq!(Exit::for_error(ErrorCode::InvalidRequest), Exit::Usage);
        assert_eq!(Exit::for_error(ErrorCode::UnknownOp), Exit::Usage);
        assert_eq!(
            Exit::for_error(ErrorCode::PermissionDenied),
            Exit::Unreachable
        );
        assert_eq!(Exit::for_error(ErrorCode::NotFound), Exit::TargetFailed);
        assert_eq!(Exit::for_error(ErrorCode::Capacity), Exit::TargetFailed);
    }

    #[test]
    fn local_failures_exit_like_the_daemon_errors_they_resemble() {
        assert_eq!(
            LocalFailure::Usage.exit(),
            Exit::for_error(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            LocalFailure::PermissionDenied.exit(),
            Exit::for_error(ErrorCode::PermissionDenied)
        );
        assert_eq!(LocalFailure::Unreachable.exit(), Exit::Unreachable);
        assert_eq!(LocalFailure::Usage.code(), "invalid_request");
        assert_eq!(LocalFailure::Unreachable.code(), "unreachable");
    }
}
