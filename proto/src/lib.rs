//! The browserd wire protocol: request and response types, newline-delimited JSON framing,
//! validated identifiers and error codes. Pure data and validation; no I/O policy lives here,
//! so the daemon and every client agree on the contract by sharing this crate.

pub mod duration;
pub mod error;
pub mod event;
pub mod frame;
pub mod ids;
pub mod paths;
pub mod request;
pub mod response;
pub mod time;

pub use error::{ErrorCode, WireError};
pub use event::{Event, EventKind};
pub use frame::{Frame, LineDecoder, MAX_FRAME};
pub use ids::{IdError, LeaseId, SessionId, SessionRef, Target, TrackingId, Workspace};
pub use paths::default_socket_path;
pub use request::{
    decode_body, decode_request, encode_request, BulkTerminate, Envelope, Kill, Launch, Lease,
    Release, Request, SessionsFilter, Watch,
};
pub use response::{
    BrowserStatus, ContainmentStatus, Encoded, EndReason, ExitStatus, Failure, LaunchResult,
    LeaseResult, Limits, MetricsResult, PoolStatus, Pressure, QueueStatus, RawResponse,
    ReloadResult, Response, SessionInfo, SessionState, SessionType, SessionsResult, StateCounts,
    StatusResult, TerminateResult, WatchResult,
};
pub use time::{format_rfc3339, Rfc3339};

/// The protocol version reported by `status`; a breaking change bumps it.
pub const PROTOCOL: u32 = 1;

/// The environment variable that marks every process of a session with the session's id, so
/// that a descendant which left the session's process group can still be attributed to it.
pub const SESSION_ENV: &str = "BROWSERD_SESSION";
