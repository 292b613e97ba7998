//! Sessions as they are written down: the one serialized form of the registry, used by the
//! journal (what survives a crash) and by the reload handover (what a re-executed daemon
//! takes over). Times are Unix milliseconds, since the daemon's monotonic clock does not
//! survive either; a record carries what proves its leader's identity later: pid, start time
//! and the boot it started in.

use browserd_proto::{
    EndReason, ExitStatus, LeaseId, SessionId, SessionType, TrackingId, Workspace,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: SessionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_id: Option<TrackingId>,
    pub session_type: SessionType,
    pub workspace: Workspace,
    pub command: Vec<String>,
    pub leader: LeaderRecord,
    pub started_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<LeaseRecord>,
    /// Dirs the daemon created for the session, removed once it is gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<BrowserRecord>,
    /// The session's own cgroup, where browserd contains sessions in cgroups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
    /// A warm browser of the pool, not (yet) a session: listed nowhere, selected by no
    /// kill, taken up after a reload, terminated after a crash.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warm: bool,
    pub state: StateRecord,
}

/// The session's leader, and what proves it is still the same process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub pid: i32,
    /// Clock ticks after boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` when it was started: a start time means nothing in
    /// another boot.
    pub boot_id: String,
    /// Whether it is a process the daemon adopted after a restart rather than its child.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
    /// Set once the leader has exited (the session may still have processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: LeaseId,
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrowserRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_dir: Option<PathBuf>,
}

/// Where the session is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum StateRecord {
    Starting,
    Running,
    /// Being terminated: the termination carries on after a reload. (After a crash the
    /// request that asked for it is gone, and the session is taken up as running.)
    Terminating {
        force: bool,
        deadline_ms: u64,
        reason: EndReason,
    },
    Exited {
        exit: ExitStatus,
        ended_at_ms: u64,
        reason: EndReason,
    },
}

impl StateRecord {
    pub fn is_live(&self) -> bool {
        !matches!(self, StateRecord::Exited { .. })
    }
}

/// The registry's counters and every session it holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Part of every session and lease id: with the sequences, what keeps ids unique.
    pub nonce: u32,
    pub next_session: u64,
    pub next_lease: u64,
    pub sessions: Vec<SessionRecord>,
}

/// A wall-clock time as Unix milliseconds (0 before the epoch).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Unix milliseconds as a wall-clock time.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The monotonic instant of a wall-clock deadline written down earlier: as far from now as
/// the deadline is from the wall clock now (a deadline already past is now).
pub fn instant_of(deadline_ms: u64) -> Instant {
    let left = from_unix_ms(deadline_ms)
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Instant::now() + left
}

/// This boot's id, `/proc/sys/kernel/random/boot_id`; empty if unreadable (then no record
/// can be proven to be from this boot).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let record = SessionRecord {
            id: "deadbeef-000001".parse().unwrap(),
            tracking_id: Some("job".parse().unwrap()),
            session_type: SessionType::Browser,
            workspace: Workspace::default(),
            command: vec!["chromium".into()],
            leader: LeaderRecord {
                pid: 42,
                start_time: 7,
                boot_id: boot_id(),
                adopted: false,
                exit: None,
            },
            started_at_ms: 1,
            expires_at_ms: Some(2),
            leases: vec![LeaseRecord {
                id: "lease-1".parse().unwrap(),
                expires_at_ms: 3,
            }],
            dirs: vec!["/var/lib/browserd/sessions/x".into()],
            browser: Some(BrowserRecord {
                ws_endpoint: Some("ws://127.0.0.1:1/devtools/browser/x".into()),
                profile_dir: None,
            }),
            cgroup: Some("/sys/fs/cgroup/browserd/x".into()),
            warm: true,
            state: StateRecord::Terminating {
                force: true,
                deadline_ms: 9,
                reason: EndReason::TtlExpired,
            },
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            serde_json::from_str::<SessionRecord>(&json).unwrap(),
            record
        );
    }

    #[test]
    fn deadlines_come_back_as_instants() {
        let now = Instant::now();
        assert!(instant_of(0) >= now, "a past deadline is now");
        let later = instant_of(unix_ms(SystemTime::now() + Duration::from_secs(60)));
        assert!(later > now + Duration::from_secs(59));
        assert!(!boot_id().is_empty());
    }
}
