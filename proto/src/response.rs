//! Responses: `{"req_id", "ok": true, "result"}` or `{"req_id", "ok": false, "error"}`, and
//! the typed results each operation puts in `result`.

use crate::ids::{LeaseId, SessionId, TrackingId, Workspace};
use crate::{ErrorCode, WireError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// What a session runs: a browser (Chromium with a DevTools endpoint) or any other command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionType {
    Browser,
    Sandbox,
}

impl SessionType {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionType::Browser => "browser",
            SessionType::Sandbox => "sandbox",
        }
    }
}

/// Where a session is in its life. `starting`, `running` and `terminating` are "live".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Starting,
    Running,
    Terminating,
    Exited,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::Running => "running",
            SessionState::Terminating => "terminating",
            SessionState::Exited => "exited",
        }
    }

    pub fn is_live(self) -> bool {
        self != SessionState::Exited
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(SessionType, SessionState, EndReason);

/// How a session's leader ended: `{"code": N}`, `{"signal": N}`, or `{"unknown": true}` for
/// a leader the daemon adopted after a restart (only a process's parent can read its exit
/// status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    Unknown,
}

/// The wire shape of [`ExitStatus`]: an object with exactly one of its keys.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExitObject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unknown: Option<bool>,
}

impl Serialize for ExitStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut object = ExitObject {
            code: None,
            signal: None,
            unknown: None,
        };
        match *self {
            ExitStatus::Code(code) => object.code = Some(code),
            ExitStatus::Signal(signal) => object.signal = Some(signal),
            ExitStatus::Unknown => object.unknown = Some(true),
        }
        object.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ExitStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match ExitObject::deserialize(deserializer)? {
            ExitObject {
                code: Some(code),
                signal: None,
                unknown: None,
            } => Ok(ExitStatus::Code(code)),
            ExitObject {
                code: None,
                signal: Some(signal),
                unknown: None,
            } => Ok(ExitStatus::Signal(signal)),
            ExitObject {
                code: None,
                signal: None,
                unknown: Some(true),
            } => Ok(ExitStatus::Unknown),
            _ => Err(serde::de::Error::custom(
                "an exit status is {\"code\": N}, {\"signal\": N} or {\"unknown\": true}",
            )),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit {code}"),
            ExitStatus::Signal(signal) => write!(f, "signal {signal}"),
            ExitStatus::Unknown => f.write_str("exit unknown"),
        }
    }
}

/// A session as listed by `sessions` and returned by `launch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: SessionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_id: Option<TrackingId>,
    pub session_type: SessionType,
    pub workspace: Workspace,
    pub state: SessionState,
    pub pid: i32,
    pub pgid: i32,
    /// RFC 3339.
    pub started_at: String,
    pub command: Vec<String>,
    pub leases: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    /// RFC 3339; set once `exited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// RFC 3339; when the session's TTL ends it (terminated with force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Browser sessions: the DevTools websocket URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_endpoint: Option<String>,
    /// Browser sessions: the profile (user data) dir the daemon created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_dir: Option<String>,
    /// Live sessions in a `sessions` listing: how many processes the session has now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u32>,
    /// Live sessions in a `sessions` listing: the session's memory, counting a page shared
    /// by several of its processes once: its cgroup's `memory.current` where the session
    /// has a cgroup with the memory controller, else the sum of its processes' PSS
    /// (proportional set size, `/proc/PID/smaps_rollup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Live sessions in a `sessions` listing: user + system CPU time, in seconds, of the
    /// session's processes (of its cgroup, where it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// Live sessions in a `sessions` listing: how old `processes`, `memory_bytes` and
    /// `cpu_seconds` are, in milliseconds. They come from the last measurement, which a
    /// listing that finds it older than 2 s has redone in the background for the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_age_ms: Option<u64>,
    /// Exited sessions: why the session ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<EndReason>,
}

/// Why a session ended, in words: `reason` of an exited session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EndReason {
    /// Its leader exited by itself (whatever it left behind was terminated).
    #[serde(rename = "exited on its own")]
    Exited,
    /// A `kill` or `bulk_terminate` ended it.
    #[serde(rename = "terminated by request")]
    Terminated,
    /// Its TTL ran out; it was terminated with force.
    #[serde(rename = "ttl expired")]
    TtlExpired,
    /// It never became ready (a browser without a DevTools endpoint) and was terminated.
    #[serde(rename = "launch failed")]
    LaunchFailed,
    /// browserd shut down and terminated it.
    #[serde(rename = "browserd shut down")]
    Shutdown,
    /// browserd was not running when it ended (found gone, or terminated, at restart).
    #[serde(rename = "lost while browserd was down")]
    Lost,
    /// The kernel killed it for exceeding its `memory_max`.
    #[serde(rename = "out of memory (memory_max)")]
    OutOfMemory,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Exited => "exited on its own",
            EndReason::Terminated => "terminated by request",
            EndReason::TtlExpired => "ttl expired",
            EndReason::LaunchFailed => "launch failed",
            EndReason::Shutdown => "browserd shut down",
            EndReason::Lost => "lost while browserd was down",
            EndReason::OutOfMemory => "out of memory (memory_max)",
        }
    }
}

/// `launch` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchResult {
    pub session: SessionInfo,
}

/// `sessions` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionsResult {
    pub sessions: Vec<SessionInfo>,
}

/// One target a termination could not finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The session id, or the id exactly as the client gave it when it matched nothing.
    pub id: String,
    pub code: ErrorCode,
    pub message: String,
    /// For `timeout` and `kill_failed`: the pids still alive when the daemon gave up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<i32>,
}

/// `kill` and `bulk_terminate` result: the Chaser bulk-terminate response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminateResult {
    /// Session ids that are gone (including ones that had already exited).
    pub terminated: Vec<String>,
    pub failed: Vec<Failure>,
}

/// `lease` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseResult {
    pub lease_id: LeaseId,
    /// RFC 3339.
    pub expires_at: String,
}

/// Sessions by state, as `status` counts them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    pub starting: u32,
    pub running: u32,
    pub terminating: u32,
    pub exited: u32,
}

/// The daemon's configured limits, as `status` reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_sessions: u32,
    pub grace_ms: u64,
    pub max_grace_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ttl_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_ms: Option<u64>,
    pub lease_ttl_ms: u64,
    pub max_lease_ttl_ms: u64,
}

/// The browser the daemon launches for `browser` sessions without a `command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrowserStatus {
    /// The detected executable, if one was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Why none was found: what was searched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The warm pool (`--warm N`): browsers launched ahead, each handed out whole to the next
/// default browser launch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// How many warm browsers the daemon keeps (0: no pool).
    pub target: u32,
    /// Warm browsers ready to hand out (their DevTools endpoint answers).
    pub ready: u32,
    /// Warm browsers being launched.
    pub starting: u32,
    /// Launches served from the pool since this daemon image started.
    pub handed_out: u64,
    /// Default browser launches that found the pool empty and started a browser of their
    /// own.
    pub missed: u64,
    /// Warm browsers that failed to start or died in the pool, one after another; the pool
    /// backs off while this is above one.
    pub failures: u32,
    /// While backing off: how long until the next warm browser is started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

/// The launch queue (`--max-queue N`): launches waiting for a free slot, first come first
/// served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    /// Launches waiting now.
    pub depth: u32,
    /// The most that may wait (0: a launch at capacity fails at once).
    pub max: u32,
    /// How long a launch waits unless it says otherwise (`queue_timeout_ms`).
    pub timeout_ms: u64,
}

/// `status` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResult {
    pub version: String,
    pub protocol: u32,
    pub pid: u32,
    pub uptime_ms: u64,
    /// How many times this daemon has re-executed itself in place (`reload`); the pid and
    /// the uptime carry on across a reload.
    #[serde(default)]
    pub reloads: u64,
    pub sessions: StateCounts,
    pub limits: Limits,
    pub socket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<BrowserStatus>,
    /// How sessions are contained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containment: Option<ContainmentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure: Option<Pressure>,
    /// Where the HTTP listener listens (`--http`), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// The warm pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolStatus>,
    /// The launch queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueStatus>,
}

/// How sessions are contained: each in its own cgroup, or by process group and the process
/// table (where browserd has no cgroup subtree to use, and why).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainmentStatus {
    /// `cgroup` or `process-group`.
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_root: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<String>,
}

/// How loaded the daemon and its host are, and whether a launch would be admitted now: what
/// `status` reports and `GET /pressure` serves (there in browserless's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    /// Live sessions (starting, running or terminating): what `max_sessions` counts.
    pub running: u32,
    /// Launches waiting for a free slot.
    pub queued: u32,
    pub max_sessions: u32,
    /// Most launches that may wait for a slot (0: none wait, a launch at capacity fails).
    pub max_queue: u32,
    /// Host CPU use in percent of all CPUs, over the time since the previous sample (at
    /// least 200 ms, at most about 10 s).
    pub cpu_percent: f64,
    /// Host memory in use (total minus available), in percent of the total.
    pub memory_percent: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// Whether a launch sent now would be admitted.
    pub available: bool,
    /// Why not, when not: `capacity` or `shutting_down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The same, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `watch` result: the first line of the stream, before the events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResult {
    /// The `seq` the next event emitted will have (events of sessions the filters leave out
    /// are not sent, so the subscriber may see gaps).
    pub next_seq: u64,
}

/// `reload` result: the daemon has checked its new binary and config and is about to
/// re-execute itself; `status` answers with `reloads` one higher once it serves again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadResult {
    /// The `reloads` count `status` will report once the reload is done.
    pub reloads: u64,
}

/// `metrics` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsResult {
    /// The Prometheus text exposition (OpenMetrics flavour, ending in `# EOF`).
    pub text: String,
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req_id: Option<Value>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

impl Response {
    pub fn success(req_id: Option<Value>, result: &impl Serialize) -> Response {
        match serde_json::to_value(result) {
            Ok(result) => Response {
                req_id,
                ok: true,
                result: Some(result),
                error: None,
            },
            Err(e) => Response::failure(
                req_id,
                WireError::new(ErrorCode::Internal, format!("cannot encode result: {e}")),
            ),
        }
    }

    pub fn failure(req_id: Option<Value>, error: WireError) -> Response {
        Response {
            req_id,
            ok: false,
            result: None,
            error: Some(error),
        }
    }

    /// A success line whose result is already encoded (a server's answer, written without
    /// building a [`Value`] tree first, and without parsing its text again), newline
    /// included. Decodes as a [`Response`], field for field as [`Response::to_line`] writes it.
    pub fn success_line(req_id: Option<&Value>, result: &Encoded) -> String {
        let req_id = req_id.map(|id| serde_json::to_string(id).expect("a JSON value serializes"));
        let mut line =
            String::with_capacity(result.0.len() + 32 + req_id.as_ref().map_or(0, String::len));
        line.push('{');
        if let Some(req_id) = req_id {
            line.push_str("\"req_id\":");
            line.push_str(&req_id);
            line.push(',');
        }
        line.push_str("\"ok\":true,\"result\":");
        line.push_str(&result.0);
        line.push_str("}\n");
        line
    }

    /// Encodes the response as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("responses always serialize");
        line.push('\n');
        line
    }

    /// The response with its result kept as raw JSON.
    pub fn into_raw(self) -> RawResponse {
        RawResponse {
            req_id: self.req_id,
            ok: self.ok,
            result: self
                .result
                .map(|r| serde_json::value::to_raw_value(&r).expect("a JSON value serializes")),
            error: self.error,
        }
    }

    /// The result decoded as `T`, or the error the daemon sent.
    pub fn into_result<T: serde::de::DeserializeOwned>(self) -> Result<T, WireError> {
        match (self.ok, self.result, self.error) {
            (true, Some(result), _) => serde_json::from_value(result).map_err(|e| {
                WireError::new(ErrorCode::Internal, format!("unexpected result shape: {e}"))
            }),
            (_, _, Some(error)) => Err(error),
            _ => Err(WireError::new(
                ErrorCode::Internal,
                "response has neither a result nor an error",
            )),
        }
    }
}

/// A result already encoded as JSON text by serde_json, sent as it is: never parsed again
/// on its way out (a listing of thousands of sessions is hundreds of KiB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded(String);

impl Encoded {
    /// Encodes `value`.
    pub fn of(value: &impl Serialize) -> serde_json::Result<Encoded> {
        serde_json::to_string(value).map(Encoded)
    }

    /// Text put together from serde_json's output (a listing written session by session).
    /// Debug builds check that it is one JSON value.
    pub fn from_serde_text(text: String) -> Encoded {
        debug_assert!(
            serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok(),
            "not one JSON value: {text}"
        );
        Encoded(text)
    }

    pub fn get(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A response read with its result left as raw JSON: a client that wants the result as
/// one type decodes it once, straight from the text, instead of through a [`Value`] tree
/// (a listing of thousands of sessions is large), and one that prints it prints the text.
#[derive(Debug, Clone, Deserialize)]
pub struct RawResponse {
    #[serde(default)]
    pub req_id: Option<Value>,
    pub ok: bool,
    #[serde(default)]
    pub result: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub error: Option<WireError>,
}

impl RawResponse {
    /// The result decoded as `T`, or the error the daemon sent.
    pub fn into_result<T: serde::de::DeserializeOwned>(self) -> Result<T, WireError> {
        match (self.ok, self.result, self.error) {
            (true, Some(result), _) => serde_json::from_str(result.get()).map_err(|e| {
                WireError::new(ErrorCode::Internal, format!("unexpected result shape: {e}"))
            }),
            (_, _, Some(error)) => Err(error),
            _ => Err(WireError::new(
                ErrorCode::Internal,
                "response has neither a result nor an error",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_raw_response_decodes_its_result_like_a_response() {
        let line = Response::success(Some(json!(3)), &json!({"reloads": 4})).to_line();
        let raw: RawResponse = serde_json::from_str(&line).unwrap();
        assert_eq!(raw.result.as_ref().unwrap().get(), r#"{"reloads":4}"#);
        let value: Value = raw.clone().into_result().unwrap();
        assert_eq!(value, json!({"reloads": 4}));
        let line = Response::failure(None, WireError::new(ErrorCode::NotFound, "x")).to_line();
        let raw: RawResponse = serde_json::from_str(&line).unwrap();
        assert_eq!(
            raw.into_result::<Value>().unwrap_err().code,
            ErrorCode::NotFound
        );
    }

    #[test]
    fn an_encoded_success_line_is_the_same_response() {
        let result = json!({"sessions": [{"id": "a", "n": 1.5}], "x": null});
        let raw = Encoded::of(&result).unwrap();
        for req_id in [
            None,
            Some(json!(7)),
            Some(json!("r-1")),
            Some(json!({"a": [1, "\n"]})),
        ] {
            let line = Response::success_line(req_id.as_ref(), &raw);
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            let decoded: Response = serde_json::from_str(&line).unwrap();
            assert_eq!(decoded, Response::success(req_id.clone(), &result));
            assert_eq!(line, Response::success(req_id, &result).to_line());
        }
    }

    #[test]
    fn exit_status_has_the_documented_shape() {
        assert_eq!(
            serde_json::to_value(ExitStatus::Code(3)).unwrap(),
            json!({"code": 3})
        );
        assert_eq!(
            serde_json::to_value(ExitStatus::Signal(9)).unwrap(),
            json!({"signal": 9})
        );
        assert_eq!(
            serde_json::to_value(ExitStatus::Unknown).unwrap(),
            json!({"unknown": true})
        );
        for status in [
            ExitStatus::Code(-1),
            ExitStatus::Signal(15),
            ExitStatus::Unknown,
        ] {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(serde_json::from_str::<ExitStatus>(&json).unwrap(), status);
        }
        for bad in [
            json!({}),
            json!({"code": 1, "signal": 2}),
            json!({"unknown": false}),
        ] {
            assert!(serde_json::from_value::<ExitStatus>(bad).is_err());
        }
    }

    #[test]
    fn end_reasons_are_words_on_the_wire() {
        for reason in [
            EndReason::Exited,
            EndReason::Terminated,
            EndReason::TtlExpired,
            EndReason::LaunchFailed,
            EndReason::Shutdown,
            EndReason::Lost,
            EndReason::OutOfMemory,
        ] {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
            assert_eq!(serde_json::from_str::<EndReason>(&json).unwrap(), reason);
        }
    }

    #[test]
    fn failures_always_carry_id_code_and_message() {
        let result = TerminateResult {
            terminated: vec!["a".into()],
            failed: vec![Failure {
                id: "b".into(),
                code: ErrorCode::NotFound,
                message: "no session b".into(),
                pids: vec![],
            }],
        };
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            json!({"terminated": ["a"], "failed": [{"id": "b", "code": "not_found", "message": "no session b"}]})
        );
    }

    #[test]
    fn responses_round_trip_and_omit_absent_req_id() {
        let ok = Response::success(None, &json!({"x": 1}));
        assert_eq!(ok.to_line(), "{\"ok\":true,\"result\":{\"x\":1}}\n");
        let err = Response::failure(Some(json!(9)), WireError::new(ErrorCode::Timeout, "slow"));
        let back: Response = serde_json::from_str(err.to_line().trim_end()).unwrap();
        assert_eq!(back, err);
        assert_eq!(
            back.into_result::<Value>().unwrap_err().code,
            ErrorCode::Timeout
        );
    }
}
