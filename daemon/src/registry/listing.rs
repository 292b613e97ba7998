//! A session as a listing writes it. The fields, names and order are [`SessionInfo`]'s
//! (`listed_sessions_read_back_as_their_info` checks it, byte for byte).
//!
//! Most of a listing's time went into writing what never changes: escaping the command and
//! the ids, formatting the start time. So each session keeps those fields written once, as
//! JSON ([`ListedText`]), and a listing copies them and writes only what changes (state,
//! leases, exit, endpoint, figures).

use super::{Phase, Session};
use browserd_proto::{
    EndReason, ExitStatus, Rfc3339, SessionId, SessionInfo, SessionType, TrackingId, Workspace,
};
use serde::Serialize;

/// What a listing shows of a live session's use (see `usage`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ListedUsage {
    pub processes: u32,
    pub memory_bytes: u64,
    pub cpu_seconds: f64,
    /// How long ago it was measured.
    pub age_ms: u64,
}

/// About what one listed session takes as JSON, to size a listing's buffer.
pub(super) const LISTED_SIZE: usize = 320;

/// The fields before `state`: fixed once the session is a session (a warm browser gets its
/// tracking id and workspace when it is handed out).
#[derive(Serialize)]
struct Head<'a> {
    id: &'a SessionId,
    #[serde(skip_serializing_if = "Option::is_none")]
    tracking_id: Option<&'a TrackingId>,
    session_type: SessionType,
    workspace: &'a Workspace,
}

/// The fields between `state` and `leases`: fixed likewise (the start is the hand-out's).
#[derive(Serialize)]
struct Body<'a> {
    pid: i32,
    pgid: i32,
    started_at: Rfc3339,
    command: &'a [String],
}

/// The fields that change while the session lives, written at each listing.
#[derive(Serialize)]
struct Tail<'a> {
    leases: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<ExitStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<Rfc3339>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<Rfc3339>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ws_endpoint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile_dir: Option<PathText<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    processes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_age_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<EndReason>,
}

impl<'a> Head<'a> {
    fn of(session: &'a Session) -> Head<'a> {
        Head {
            id: &session.id,
            tracking_id: session.tracking_id.as_ref(),
            session_type: session.kind,
            workspace: &session.workspace,
        }
    }
}

impl<'a> Body<'a> {
    fn of(session: &'a Session) -> Body<'a> {
        Body {
            pid: session.pid,
            pgid: session.pid,
            started_at: Rfc3339(session.started_at),
            command: &session.command,
        }
    }
}

impl<'a> Tail<'a> {
    fn of(session: &'a Session, used: Option<ListedUsage>) -> Tail<'a> {
        let (exit, ended_at, reason) = match &session.phase {
            Phase::Exited {
                exit,
                ended_at,
                reason,
            } => (Some(*exit), Some(Rfc3339(*ended_at)), Some(*reason)),
            _ => (None, None, None),
        };
        let browser = session.browser.as_ref();
        Tail {
            leases: u32::try_from(session.leases.len()).unwrap_or(u32::MAX),
            exit,
            ended_at,
            expires_at: session
                .expires
                .filter(|_| session.is_live())
                .map(|d| Rfc3339(d.wall)),
            ws_endpoint: browser.and_then(|b| b.ws_endpoint.as_deref()),
            profile_dir: browser.and_then(|b| b.profile_dir.as_deref()).map(PathText),
            processes: used.map(|u| u.processes),
            memory_bytes: used.map(|u| u.memory_bytes),
            cpu_seconds: used.map(|u| u.cpu_seconds),
            usage_age_ms: used.map(|u| u.age_ms),
            reason,
        }
    }
}

/// The session as `launch` and `info` return it: its listing without figures.
pub(super) fn info(session: &Session) -> SessionInfo {
    let (head, body, tail) = (
        Head::of(session),
        Body::of(session),
        Tail::of(session, None),
    );
    SessionInfo {
        id: head.id.clone(),
        tracking_id: head.tracking_id.cloned(),
        session_type: head.session_type,
        workspace: head.workspace.clone(),
        state: session.state(),
        pid: body.pid,
        pgid: body.pgid,
        started_at: body.started_at.to_string(),
        command: body.command.to_vec(),
        leases: tail.leases,
        exit: tail.exit,
        ended_at: tail.ended_at.map(|at| at.to_string()),
        expires_at: tail.expires_at.map(|at| at.to_string()),
        ws_endpoint: tail.ws_endpoint.map(str::to_owned),
        profile_dir: tail.profile_dir.as_ref().map(|p| p.0.display().to_string()),
        processes: tail.processes,
        memory_bytes: tail.memory_bytes,
        cpu_seconds: tail.cpu_seconds,
        usage_age_ms: tail.usage_age_ms,
        reason: tail.reason,
    }
}

/// A session's fixed fields ([`Head`], [`Body`]) as JSON, written when it is registered
/// and again when it is handed out.
#[derive(Debug, Default)]
pub(super) struct ListedText {
    /// `{"id":…,"workspace":…`: the object's start, without its end.
    head: Box<[u8]>,
    /// `"pid":…,"command":[…]`: fields only.
    body: Box<[u8]>,
}

impl ListedText {
    pub(super) fn of(session: &Session) -> ListedText {
        let head = to_json(&Head::of(session));
        let body = to_json(&Body::of(session));
        // A struct is written as `{…}`: the head keeps its `{`, the body neither brace.
        ListedText {
            head: head.strip_suffix(b"}").unwrap_or(&head).into(),
            body: body
                .strip_prefix(b"{")
                .and_then(|b| b.strip_suffix(b"}"))
                .unwrap_or(&body)
                .into(),
        }
    }
}

/// Appends `session` with its figures `used` to a listing: the same text as
/// `serde_json::to_writer` of its [`info`] with the figures set.
pub(super) fn write(text: &mut Vec<u8>, session: &Session, used: Option<ListedUsage>) {
    text.extend_from_slice(&session.listed.head);
    text.extend_from_slice(b",\"state\":");
    write_json(text, &session.state());
    text.push(b',');
    text.extend_from_slice(&session.listed.body);
    // The tail's `{` becomes the comma after the body; its `}` ends the session.
    let tail = text.len();
    write_json(text, &Tail::of(session, used));
    if let Some(brace) = text.get_mut(tail) {
        *brace = b',';
    }
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    let mut text = Vec::with_capacity(LISTED_SIZE);
    write_json(&mut text, value);
    text
}

/// Writing to memory fails only if serializing does, and nothing here can fail to
/// serialize (every map key is a string).
fn write_json(text: &mut Vec<u8>, value: &impl Serialize) {
    if let Err(e) = serde_json::to_writer(text, value) {
        tracing::error!("cannot write a session as JSON: {e}");
    }
}

/// A path written as text, as `Path::display` shows it.
struct PathText<'a>(&'a std::path::Path);

impl Serialize for PathText<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.display())
    }
}
