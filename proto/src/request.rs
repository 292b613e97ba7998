//! Requests: one JSON object per line, `{"op": ..., "req_id": ..., ...fields}`. Decoding is
//! two-staged so that every failure can be answered precisely: first the line must be a JSON
//! object (`invalid_json`), then `op` must name an operation (`unknown_op`), then the fields
//! must fit that operation exactly (`invalid_request`). `req_id` is recovered as early as
//! possible so even a rejected request is answered under its own id.

use crate::duration::check_millis;
#[cfg(test)]
use crate::duration::MAX_DURATION_MS;
use crate::ids::{LeaseId, SessionRef, Target, TrackingId, Workspace};
use crate::response::{SessionState, SessionType};
use crate::{ErrorCode, WireError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `launch`: start a session and answer once it is running.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_type: Option<SessionType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Workspace>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_id: Option<TrackingId>,
    /// argv; required for `sandbox`, defaults to the detected browser for `browser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Extra arguments appended to `command` (or to the browser's defaults).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// The most memory the session may use, in bytes (its cgroup's `memory.max`; the
    /// kernel kills the session beyond it). Needs cgroup containment with the memory
    /// controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    /// The most tasks (processes and threads) the session may have (its cgroup's
    /// `pids.max`; a fork beyond it fails). Needs cgroup containment with the pids
    /// controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
    /// How long the launch may wait for a free slot when `max_sessions` is reached and the
    /// daemon keeps a launch queue (`--max-queue`); 0 means not at all. Default: the
    /// daemon's `--queue-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout_ms: Option<u64>,
}

/// The longest argv (command plus args) a launch may carry.
pub const MAX_ARGV: usize = 4096;
/// The most environment variables a launch may add.
pub const MAX_ENV: usize = 1024;

impl Launch {
    /// The effective session type: `browser` unless said otherwise.
    pub fn kind(&self) -> SessionType {
        self.session_type.unwrap_or(SessionType::Browser)
    }

    /// Checks what serde cannot: argv and env shapes that `execve` would refuse or that would
    /// let a client unmark its own session.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind() == SessionType::Sandbox && self.command.is_none() {
            return Err("a sandbox session needs `command` (an argv array)".into());
        }
        if let Some(command) = &self.command {
            match command.first() {
                None => return Err("`command` must not be empty".into()),
                Some(program) if program.is_empty() => {
                    return Err("`command[0]` must not be empty".into())
                }
                Some(_) => {}
            }
        }
        let argc = self.command.as_ref().map_or(0, Vec::len) + self.args.len();
        if argc > MAX_ARGV {
            return Err(format!("{argc} arguments; at most {MAX_ARGV} are allowed"));
        }
        let all_args = self.command.iter().flatten().chain(&self.args);
        if all_args.into_iter().any(|a| a.contains('\0')) {
            return Err("arguments must not contain NUL bytes".into());
        }
        if self.env.len() > MAX_ENV {
            return Err(format!(
                "{} environment variables; at most {MAX_ENV} are allowed",
                self.env.len()
            ));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(format!(
                    "environment name `{}` is invalid (empty, or contains `=` or NUL)",
                    key.escape_debug()
                ));
            }
            if value.contains('\0') {
                return Err(format!("environment value of `{key}` contains a NUL byte"));
            }
            if key == crate::SESSION_ENV {
                return Err(format!(
                    "`{key}` is set by the daemon and cannot be overridden"
                ));
            }
        }
        if let Some(cwd) = &self.cwd {
            if !cwd.starts_with('/') || cwd.contains('\0') {
                return Err(format!(
                    "`cwd` must be an absolute path, got `{}`",
                    cwd.escape_debug()
                ));
            }
        }
        if self.memory_max == Some(0) || self.pids_max == Some(0) {
            return Err("`memory_max` and `pids_max` must be positive".into());
        }
        check_positive_millis("ttl_ms", self.ttl_ms)?;
        check_optional_millis("queue_timeout_ms", self.queue_timeout_ms)
    }
}

/// A duration field that, when given, must be positive and within [`MAX_DURATION_MS`].
fn check_positive_millis(field: &str, ms: Option<u64>) -> Result<(), String> {
    match ms {
        Some(0) => Err(format!("`{field}` must be positive")),
        Some(ms) => check_millis(field, ms),
        None => Ok(()),
    }
}

/// A duration field that, when given, must be within [`MAX_DURATION_MS`] (0 allowed).
fn check_optional_millis(field: &str, ms: Option<u64>) -> Result<(), String> {
    ms.map_or(Ok(()), |ms| check_millis(field, ms))
}

/// `sessions`: list sessions, optionally filtered (all filters must match).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Workspace>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_type: Option<SessionType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SessionState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_id: Option<TrackingId>,
}

/// `kill`: browserless-style kill of one session or `all`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kill {
    pub target: Target,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
}

impl Kill {
    pub fn validate(&self) -> Result<(), String> {
        check_optional_millis("grace_ms", self.grace_ms)
    }
}

/// `bulk_terminate`: the Chaser bulk-terminate body; every field is nullable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkTerminate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<SessionRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_type: Option<SessionType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspaces: Option<Vec<Workspace>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
}

/// The most ids or workspaces one bulk-terminate may name.
pub const MAX_SELECTORS: usize = 10_000;

impl BulkTerminate {
    /// Rejects a request that selects nothing by construction: neither `all` nor any id or
    /// workspace. That is a client bug, not a silent no-op.
    pub fn validate(&self) -> Result<(), String> {
        let ids = self.ids.as_ref().map_or(0, Vec::len);
        let workspaces = self.workspaces.as_ref().map_or(0, Vec::len);
        if self.all != Some(true) && ids == 0 && workspaces == 0 {
            return Err(
                "the request selects nothing: set `all: true`, or name `ids` or `workspaces`"
                    .into(),
            );
        }
        if ids + workspaces > MAX_SELECTORS {
            return Err(format!(
                "{} ids and workspaces; at most {MAX_SELECTORS} are allowed",
                ids + workspaces
            ));
        }
        check_optional_millis("grace_ms", self.grace_ms)
    }
}

/// `watch`: turn the connection into a stream of session events, one JSON object per line
/// (see [`crate::Event`]); only the events of sessions that match every filter given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Workspace>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_type: Option<SessionType>,
}

impl Watch {
    /// Whether a subscriber with these filters gets `event`. Events about the stream itself
    /// (`lagged`, `reload`) name no session and always pass.
    pub fn matches(&self, event: &crate::Event) -> bool {
        if event.session.is_none() {
            return true;
        }
        let workspace = self
            .workspace
            .as_ref()
            .is_none_or(|w| event.workspace.as_ref() == Some(w));
        let kind = self
            .session_type
            .is_none_or(|t| event.session_type == Some(t));
        workspace && kind
    }
}

/// `lease`: protect a session from non-forced termination for `ttl_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    pub id: SessionRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

impl Lease {
    pub fn validate(&self) -> Result<(), String> {
        check_positive_millis("ttl_ms", self.ttl_ms)
    }
}

/// `release`: drop a lease before it expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub lease_id: LeaseId,
}

/// Every operation, with its fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Launch(Launch),
    Sessions(SessionsFilter),
    Kill(Kill),
    BulkTerminate(BulkTerminate),
    Lease(Lease),
    Release(Release),
    Status,
    /// Re-execute the daemon's binary in place, keeping every session (see `reload`).
    Reload,
    /// The daemon's metrics, in the Prometheus text format.
    Metrics,
    /// Stream session events on this connection from now on.
    Watch(Watch),
}

impl Request {
    /// The operation's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Launch(_) => "launch",
            Request::Sessions(_) => "sessions",
            Request::Kill(_) => "kill",
            Request::BulkTerminate(_) => "bulk_terminate",
            Request::Lease(_) => "lease",
            Request::Release(_) => "release",
            Request::Status => "status",
            Request::Reload => "reload",
            Request::Metrics => "metrics",
            Request::Watch(_) => "watch",
        }
    }
}

/// The operation names, for error messages.
pub const OPS: &[&str] = &[
    "launch",
    "sessions",
    "kill",
    "bulk_terminate",
    "lease",
    "release",
    "status",
    "reload",
    "metrics",
    "watch",
];

/// A decoded request and the `req_id` to answer it under.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub req_id: Option<Value>,
    pub request: Request,
}

/// A request that could not be decoded, with the `req_id` to answer it under if one could
/// be recovered.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub req_id: Option<Value>,
    pub error: WireError,
}

/// Decodes one request line (without its newline).
pub fn decode_request(line: &[u8]) -> Result<Envelope, Rejected> {
    let reject = |req_id, code, message: String| Rejected {
        req_id,
        error: WireError::new(code, message),
    };
    let text = std::str::from_utf8(line).map_err(|e| {
        reject(
            None,
            ErrorCode::InvalidJson,
            format!("request is not valid UTF-8 ({e})"),
        )
    })?;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        reject(
            None,
            ErrorCode::InvalidJson,
            format!("request is not valid JSON ({e})"),
        )
    })?;
    let Value::Object(mut fields) = value else {
        return Err(reject(
            None,
            ErrorCode::InvalidJson,
            "request must be a JSON object".into(),
        ));
    };
    let req_id = fields.remove("req_id");
    let op = match fields.remove("op") {
        Some(Value::String(op)) => op,
        Some(other) => {
            return Err(reject(
                req_id,
                ErrorCode::InvalidRequest,
                format!("`op` must be a string, got {other}"),
            ))
        }
        None => {
            return Err(reject(
                req_id,
                ErrorCode::InvalidRequest,
                format!("request has no `op`; expected one of {}", OPS.join(", ")),
            ))
        }
    };
    match decode_op(&op, fields) {
        Ok(request) => Ok(Envelope { req_id, request }),
        Err(error) => Err(Rejected { req_id, error }),
    }
}

/// Decodes the JSON body of an HTTP request as the fields of `op`, with the same checks
/// as a request line: a body that is not a JSON object is `invalid_json`; fields that do
/// not fit the operation (`op` and `req_id` included: a body has neither) are
/// `invalid_request`.
pub fn decode_body(op: &str, body: &[u8]) -> Result<Request, WireError> {
    let invalid_json = |detail: String| WireError::new(ErrorCode::InvalidJson, detail);
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid_json(format!("the body is not valid JSON ({e})")))?;
    let Value::Object(fields) = value else {
        return Err(invalid_json("the body must be a JSON object".into()));
    };
    decode_op(op, fields)
}

/// Decodes and validates the fields of operation `op`.
fn decode_op(op: &str, fields: Map<String, Value>) -> Result<Request, WireError> {
    let request = match op {
        "launch" => fields_of(fields).and_then(|l: Launch| {
            l.validate()?;
            Ok(Request::Launch(l))
        }),
        "sessions" => fields_of(fields).map(Request::Sessions),
        "kill" => fields_of(fields).and_then(|k: Kill| {
            k.validate()?;
            Ok(Request::Kill(k))
        }),
        "bulk_terminate" => fields_of(fields).and_then(|b: BulkTerminate| {
            b.validate()?;
            Ok(Request::BulkTerminate(b))
        }),
        "lease" => fields_of(fields).and_then(|l: Lease| {
            l.validate()?;
            Ok(Request::Lease(l))
        }),
        "release" => fields_of(fields).map(Request::Release),
        "status" => no_fields(&fields, "status").map(|()| Request::Status),
        "reload" => no_fields(&fields, "reload").map(|()| Request::Reload),
        "metrics" => no_fields(&fields, "metrics").map(|()| Request::Metrics),
        "watch" => fields_of(fields).map(Request::Watch),
        _ => {
            let shown: String = op.chars().take(64).collect();
            return Err(WireError::new(
                ErrorCode::UnknownOp,
                format!(
                    "unknown op `{}`; expected one of {}",
                    shown.escape_debug(),
                    OPS.join(", ")
                ),
            ));
        }
    };
    request.map_err(|message| {
        WireError::new(
            ErrorCode::InvalidRequest,
            format!("invalid `{op}` request: {message}"),
        )
    })
}

fn no_fields(fields: &Map<String, Value>, op: &str) -> Result<(), String> {
    match fields.keys().next() {
        None => Ok(()),
        Some(key) => Err(format!("unknown field `{key}`: `{op}` takes no fields")),
    }
}

fn fields_of<T: serde::de::DeserializeOwned>(fields: Map<String, Value>) -> Result<T, String> {
    serde_json::from_value(Value::Object(fields)).map_err(|e| e.to_string())
}

/// Encodes a request as one line, newline included.
pub fn encode_request(req_id: Option<&Value>, request: &Request) -> String {
    let mut value = serde_json::to_value(request).expect("requests always serialize");
    if let (Some(id), Value::Object(fields)) = (req_id, &mut value) {
        fields.insert("req_id".into(), id.clone());
    }
    let mut line = value.to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(value: Value) -> Result<Envelope, Rejected> {
        decode_request(value.to_string().as_bytes())
    }

    fn code_of(value: Value) -> ErrorCode {
        decode(value).unwrap_err().error.code
    }

    #[test]
    fn every_request_round_trips() {
        let requests = vec![
            Request::Launch(Launch {
                session_type: Some(SessionType::Sandbox),
                workspace: Some("w".parse().unwrap()),
                tracking_id: Some("t-1".parse().unwrap()),
                command: Some(vec!["sleep".into(), "10".into()]),
                args: vec!["--x".into()],
                env: BTreeMap::from([("A".into(), "b c".into())]),
                cwd: Some("/tmp".into()),
                ttl_ms: Some(1000),
                memory_max: Some(1 << 30),
                pids_max: Some(512),
                queue_timeout_ms: Some(0),
            }),
            Request::Sessions(SessionsFilter {
                state: Some(SessionState::Running),
                ..Default::default()
            }),
            Request::Kill(Kill {
                target: Target::All,
                force: true,
                grace_ms: Some(10),
            }),
            Request::BulkTerminate(BulkTerminate {
                ids: Some(vec!["abc".parse().unwrap()]),
                ..Default::default()
            }),
            Request::Lease(Lease {
                id: "abc".parse().unwrap(),
                ttl_ms: None,
            }),
            Request::Release(Release {
                lease_id: "lease-1".parse().unwrap(),
            }),
            Request::Status,
            Request::Reload,
            Request::Metrics,
            Request::Watch(Watch {
                workspace: Some("ci".parse().unwrap()),
                session_type: Some(SessionType::Browser),
            }),
        ];
        for request in requests {
            let id = json!({"n": 7});
            let line = encode_request(Some(&id), &request);
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            let envelope = decode_request(line.trim_end().as_bytes()).unwrap();
            assert_eq!(envelope.request, request);
            assert_eq!(envelope.req_id, Some(id));
            assert!(OPS.contains(&request.name()));
        }
    }

    #[test]
    fn req_id_may_be_any_json_and_is_kept_even_on_rejection() {
        let envelope = decode(json!({"op": "status", "req_id": [1, "x"]})).unwrap();
        assert_eq!(envelope.req_id, Some(json!([1, "x"])));
        let rejected = decode(json!({"op": "nope", "req_id": "r1"})).unwrap_err();
        assert_eq!(rejected.req_id, Some(json!("r1")));
        assert_eq!(rejected.error.code, ErrorCode::UnknownOp);
    }

    #[test]
    fn non_json_and_non_objects_are_invalid_json() {
        for line in [
            &b"{"[..],
            b"hello",
            b"\xff\xfe",
            b"[1,2]",
            b"\"status\"",
            b"",
        ] {
            let rejected = decode_request(line).unwrap_err();
            assert_eq!(rejected.error.code, ErrorCode::InvalidJson, "{line:?}");
        }
        let utf8 = decode_request(b"{\"op\":\"\xff\"}").unwrap_err();
        assert!(utf8.error.message.contains("UTF-8"));
    }

    #[test]
    fn unknown_ops_are_named_and_truncated() {
        let long = "x".repeat(10_000);
        let rejected = decode(json!({"op": long})).unwrap_err();
        assert_eq!(rejected.error.code, ErrorCode::UnknownOp);
        assert!(rejected.error.message.len() < 300);
        assert!(rejected.error.message.contains("bulk_terminate"));
    }

    #[test]
    fn missing_or_non_string_op_is_invalid_request() {
        assert_eq!(code_of(json!({})), ErrorCode::InvalidRequest);
        assert_eq!(code_of(json!({"op": 5})), ErrorCode::InvalidRequest);
    }

    #[test]
    fn unknown_fields_are_rejected_for_every_op() {
        for op in OPS {
            let rejected = decode(json!({"op": op, "bogus": 1})).unwrap_err();
            assert_eq!(rejected.error.code, ErrorCode::InvalidRequest, "{op}");
            assert!(
                rejected.error.message.contains("bogus"),
                "{op}: {}",
                rejected.error.message
            );
        }
    }

    #[test]
    fn wrong_types_and_ranges_are_invalid_requests() {
        for bad in [
            json!({"op": "kill"}),
            json!({"op": "kill", "target": 5}),
            json!({"op": "kill", "target": "a b"}),
            json!({"op": "kill", "target": "x", "grace_ms": -1}),
            json!({"op": "kill", "target": "x", "force": "yes"}),
            json!({"op": "launch", "tracking_id": "all", "command": ["x"]}),
            json!({"op": "launch", "tracking_id": "a".repeat(33), "command": ["x"]}),
            json!({"op": "launch", "session_type": "vm", "command": ["x"]}),
            json!({"op": "launch", "session_type": "sandbox"}),
            json!({"op": "launch", "command": []}),
            json!({"op": "launch", "command": [""]}),
            json!({"op": "launch", "command": ["a\u{0}b"]}),
            json!({"op": "launch", "command": ["x"], "env": {"A=B": "c"}}),
            json!({"op": "launch", "command": ["x"], "env": {"BROWSERD_SESSION": "other"}}),
            json!({"op": "launch", "command": ["x"], "cwd": "relative"}),
            json!({"op": "launch", "command": ["x"], "ttl_ms": 0}),
            json!({"op": "launch", "command": ["x"], "memory_max": 0}),
            json!({"op": "launch", "command": ["x"], "pids_max": -1}),
            json!({"op": "launch", "workspace": "", "command": ["x"]}),
            json!({"op": "sessions", "state": "sleeping"}),
            json!({"op": "lease"}),
            json!({"op": "release", "lease_id": ""}),
            json!({"op": "bulk_terminate", "ids": "abc"}),
            json!({"op": "launch", "command": ["x"], "ttl_ms": 18_446_744_073_709_551_615u64}),
            json!({"op": "launch", "command": ["x"], "ttl_ms": 300_000_000_000_000u64}),
            json!({"op": "kill", "target": "x", "grace_ms": MAX_DURATION_MS + 1}),
            json!({"op": "bulk_terminate", "all": true, "grace_ms": u64::MAX}),
            json!({"op": "lease", "id": "x", "ttl_ms": 0}),
            json!({"op": "lease", "id": "x", "ttl_ms": u64::MAX}),
            json!({"op": "launch", "queue_timeout_ms": MAX_DURATION_MS + 1}),
            json!({"op": "launch", "queue_timeout_ms": u64::MAX}),
            json!({"op": "launch", "queue_timeout_ms": -1}),
            json!({"op": "launch", "queue_timeout_ms": "30s"}),
        ] {
            assert_eq!(code_of(bad.clone()), ErrorCode::InvalidRequest, "{bad}");
        }
    }

    #[test]
    fn a_bulk_terminate_that_selects_nothing_is_rejected() {
        for nothing in [
            json!({"op": "bulk_terminate"}),
            json!({"op": "bulk_terminate", "all": false}),
            json!({"op": "bulk_terminate", "all": null, "ids": [], "workspaces": null}),
            json!({"op": "bulk_terminate", "force": true, "session_type": "browser"}),
        ] {
            let rejected = decode(nothing.clone()).unwrap_err();
            assert_eq!(rejected.error.code, ErrorCode::InvalidRequest, "{nothing}");
            assert!(rejected.error.message.contains("selects nothing"));
        }
    }

    #[test]
    fn bulk_terminate_accepts_the_chaser_body_with_nulls() {
        let envelope = decode(json!({
            "op": "bulk_terminate", "all": true, "force": null, "ids": null,
            "session_type": "sandbox", "workspaces": null
        }))
        .unwrap();
        let Request::BulkTerminate(body) = envelope.request else {
            panic!("wrong op")
        };
        assert_eq!(body.all, Some(true));
        assert_eq!(body.session_type, Some(SessionType::Sandbox));
    }

    #[test]
    fn http_bodies_are_decoded_with_the_same_checks_as_request_lines() {
        let body = br#"{"all": true, "force": null, "ids": null, "session_type": "browser", "workspaces": null}"#;
        let Request::BulkTerminate(decoded) = decode_body("bulk_terminate", body).unwrap() else {
            panic!("wrong op")
        };
        assert_eq!(decoded.session_type, Some(SessionType::Browser));
        for (body, code) in [
            (&b"{"[..], ErrorCode::InvalidJson),
            (b"[1]", ErrorCode::InvalidJson),
            (b"", ErrorCode::InvalidJson),
            (b"{}", ErrorCode::InvalidRequest),
            (br#"{"all": true, "op": "kill"}"#, ErrorCode::InvalidRequest),
            (br#"{"all": true, "req_id": 1}"#, ErrorCode::InvalidRequest),
            (br#"{"all": "yes"}"#, ErrorCode::InvalidRequest),
        ] {
            let error = decode_body("bulk_terminate", body).unwrap_err();
            assert_eq!(error.code, code, "{}", String::from_utf8_lossy(body));
        }
        assert!(decode_body("launch", b"{}").is_ok());
    }

    #[test]
    fn watch_filters_match_session_events_and_pass_stream_events() {
        let event = |workspace: &str, kind| crate::Event {
            session: Some("s-1".parse().unwrap()),
            workspace: Some(workspace.parse().unwrap()),
            session_type: Some(kind),
            ..crate::Event::new(1, crate::EventKind::Launched)
        };
        let filter = Watch {
            workspace: Some("ci".parse().unwrap()),
            session_type: Some(SessionType::Sandbox),
        };
        assert!(filter.matches(&event("ci", SessionType::Sandbox)));
        assert!(!filter.matches(&event("ci", SessionType::Browser)));
        assert!(!filter.matches(&event("other", SessionType::Sandbox)));
        assert!(Watch::default().matches(&event("other", SessionType::Browser)));
        assert!(filter.matches(&crate::Event::new(0, crate::EventKind::Lagged)));
    }

    #[test]
    fn a_queue_timeout_may_be_zero_and_at_most_the_bound() {
        for ms in [0, 1, MAX_DURATION_MS] {
            let envelope = decode(json!({"op": "launch", "queue_timeout_ms": ms})).unwrap();
            let Request::Launch(launch) = envelope.request else {
                panic!("wrong op")
            };
            assert_eq!(launch.queue_timeout_ms, Some(ms));
        }
        let rejected =
            decode(json!({"op": "launch", "queue_timeout_ms": MAX_DURATION_MS + 1})).unwrap_err();
        assert!(
            rejected.error.message.contains("queue_timeout_ms"),
            "{}",
            rejected.error.message
        );
    }

    #[test]
    fn launch_defaults_to_a_browser() {
        let envelope = decode(json!({"op": "launch"})).unwrap();
        let Request::Launch(launch) = envelope.request else {
            panic!("wrong op")
        };
        assert_eq!(launch.kind(), SessionType::Browser);
    }
}
