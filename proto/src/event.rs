//! Session events, as the `watch` op streams them (one JSON object per line) and HTTP serves
//! them (Server-Sent Events): every state change of every session, in order per session.

use crate::ids::{LeaseId, SessionId, TrackingId, Workspace};
use crate::response::{EndReason, ExitStatus, SessionType};
use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A session was started (a browser is `starting` until its endpoint answers).
    Launched,
    /// A session is running (a browser: its DevTools endpoint answers).
    Running,
    /// A session's termination began.
    Terminating,
    /// A session is gone; `exit` and `reason` say how and why.
    Exited,
    /// A lease ran out (`lease_id` names it).
    LeaseExpired,
    /// A session's TTL ran out; its forced termination follows.
    TtlExpired,
    /// A session was taken up again after browserd restarted.
    Adopted,
    /// The subscriber could not keep up and is disconnected; `missed` events were lost.
    Lagged,
    /// browserd is re-executing itself (a reload): the stream ends here, after every event
    /// emitted so far. Subscribe again; `seq` carries on from where it was.
    Reload,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Launched => "launched",
            EventKind::Running => "running",
            EventKind::Terminating => "terminating",
            EventKind::Exited => "exited",
            EventKind::LeaseExpired => "lease_expired",
            EventKind::TtlExpired => "ttl_expired",
            EventKind::Adopted => "adopted",
            EventKind::Lagged => "lagged",
            EventKind::Reload => "reload",
        }
    }

    /// Whether the event is about the stream itself rather than a session; each of these
    /// is the last event of its stream.
    pub fn ends_the_stream(self) -> bool {
        matches!(self, EventKind::Lagged | EventKind::Reload)
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increases by one with every event the daemon emits (across sessions).
    pub seq: u64,
    /// RFC 3339.
    pub at: String,
    pub event: EventKind,
    /// Absent only for `lagged` and `reload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_id: Option<TrackingId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_type: Option<SessionType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Workspace>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<EndReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<LeaseId>,
    /// `lagged`: how many events the subscriber missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
}

impl Event {
    /// An event of `kind`, stamped now, with no session fields.
    pub fn new(seq: u64, kind: EventKind) -> Event {
        Event {
            seq,
            at: crate::format_rfc3339(std::time::SystemTime::now()),
            event: kind,
            session: None,
            tracking_id: None,
            session_type: None,
            workspace: None,
            pid: None,
            exit: None,
            reason: None,
            lease_id: None,
            missed: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_flat_objects_named_in_snake_case() {
        let event = Event {
            seq: 7,
            at: "2024-05-01T12:00:00.000Z".into(),
            event: EventKind::Exited,
            session: Some("s-1".parse().unwrap()),
            tracking_id: None,
            session_type: Some(SessionType::Sandbox),
            workspace: Some(Workspace::default()),
            pid: Some(42),
            exit: Some(ExitStatus::Code(0)),
            reason: Some(EndReason::Exited),
            lease_id: None,
            missed: None,
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"seq": 7, "at": "2024-05-01T12:00:00.000Z", "event": "exited",
                   "session": "s-1", "session_type": "sandbox", "workspace": "default",
                   "pid": 42, "exit": {"code": 0}, "reason": "exited on its own"})
        );
        for kind in [
            EventKind::LeaseExpired,
            EventKind::TtlExpired,
            EventKind::Lagged,
            EventKind::Reload,
        ] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }
}
