//! Turns the daemon's answer into what the user sees: a one-line JSON document with `--json`,
//! otherwise tables and sentences, plus the exit status. Pure functions from a response to
//! text, so every format is tested without a daemon.

use crate::clock::{now, parse_rfc3339, Age, Bytes};
use crate::exit::{Exit, LocalFailure};
use browserd_proto::duration::format_millis;
use browserd_proto::{
    ErrorCode, Event, EventKind, ExitStatus, LaunchResult, LeaseResult, MetricsResult, Pressure,
    RawResponse, ReloadResult, Request, SessionInfo, SessionState, SessionType, StatusResult,
    TerminateResult, WatchResult, WireError, PROTOCOL,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt::Write;

/// Everything a run prints, and how it exits.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub stdout: String,
    pub stderr: String,
    pub exit: Exit,
}

impl Report {
    fn out(stdout: String, exit: Exit) -> Report {
        Report {
            stdout,
            stderr: String::new(),
            exit,
        }
    }

    fn err(stderr: String, exit: Exit) -> Report {
        Report {
            stdout: String::new(),
            stderr,
            exit,
        }
    }
}

/// Renders the response to `request`, as JSON or for people.
pub fn report(request: &Request, response: RawResponse, json: bool) -> Report {
    if json {
        return json_report(request, response);
    }
    match (response.ok, response.error) {
        (false, Some(error)) => error_report(request, &error),
        _ => success_report(request, &result_of(response.result)),
    }
}

/// `ls` for people, read in one pass from the answer's text straight into the table's
/// rows: a listing is the one answer that is large, and reading it twice (the response,
/// then its result) took as long as the table. `None` for any other request and for any
/// answer that is not a successful listing: those go the general way ([`report`]), which
/// says what is wrong.
pub fn listing(request: &Request, answer: &[u8]) -> Option<Report> {
    #[derive(Deserialize)]
    struct Listing<'a> {
        ok: bool,
        #[serde(borrow)]
        result: Option<Rows<'a>>,
    }
    if !matches!(request, Request::Sessions(_)) {
        return None;
    }
    let listing: Listing<'_> = serde_json::from_str(std::str::from_utf8(answer).ok()?).ok()?;
    let rows = listing.result.filter(|_| listing.ok)?;
    Some(Report::out(
        sessions_table(&rows.sessions, now()),
        Exit::Done,
    ))
}

/// The result as sent, `null` if there was none.
fn result_of(result: Option<Box<RawValue>>) -> Box<RawValue> {
    result.unwrap_or_else(|| RawValue::from_string("null".to_owned()).expect("null is JSON"))
}

/// A failure browserctl found itself: with `--json`, one error object shaped like the
/// daemon's (`{"code", "message"}`) on stdout; otherwise the message on stderr.
pub fn local_failure(failure: LocalFailure, message: &str, json: bool) -> Report {
    if json {
        let error = serde_json::json!({"code": failure.code(), "message": message});
        return Report::out(json_line(&error), failure.exit());
    }
    Report::err(format!("browserctl: {message}\n"), failure.exit())
}

/// The end of `browserctl daemon reload`: the re-executed daemon's status, or one line.
pub fn reloaded(status: &StatusResult, json: bool) -> Report {
    if json {
        return Report::out(json_line(status), Exit::Done);
    }
    let counts = &status.sessions;
    Report::out(
        format!(
            "reloaded: browserd {} (pid {}, reload {}) serves {} running, {} starting, {} terminating session(s)\n",
            status.version,
            status.pid,
            status.reloads,
            counts.running,
            counts.starting,
            counts.terminating
        ),
        Exit::Done,
    )
}

/// `--json`: exactly one compact JSON document, the result or the error object.
fn json_report(request: &Request, response: RawResponse) -> Report {
    match (response.ok, response.error) {
        (false, Some(error)) => {
            let exit = Exit::for_error(error.code);
            Report::out(json_line(&error), exit)
        }
        _ => {
            let result = result_of(response.result);
            // Only a termination names failed targets (and only its result is looked into).
            let terminates = matches!(request, Request::Kill(_) | Request::BulkTerminate(_));
            let exit = if terminates && has_failures(&result) {
                Exit::TargetFailed
            } else {
                Exit::Done
            };
            // The daemon's own text: compact JSON on one line.
            Report::out(format!("{}\n", result.get()), exit)
        }
    }
}

fn json_line(value: &impl serde::Serialize) -> String {
    let mut line = serde_json::to_string(value).expect("JSON values always serialize");
    line.push('\n');
    line
}

/// Whether a termination result names targets it could not finish.
fn has_failures(result: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Failed {
        #[serde(default)]
        failed: Vec<serde::de::IgnoredAny>,
    }
    serde_json::from_str::<Failed>(result.get()).is_ok_and(|r| !r.failed.is_empty())
}

fn success_report(request: &Request, result: &RawValue) -> Report {
    match request {
        Request::Launch(_) => typed(result, |r: LaunchResult| {
            Report::out(launch(&r.session), Exit::Done)
        }),
        Request::Sessions(_) => typed(result, |r: Rows<'_>| {
            Report::out(sessions_table(&r.sessions, now()), Exit::Done)
        }),
        Request::Kill(kill) => typed(result, |r: TerminateResult| terminate(&r, kill.force)),
        Request::BulkTerminate(body) => typed(result, |r: TerminateResult| {
            terminate(&r, body.force == Some(true))
        }),
        Request::Lease(lease) => typed(result, |r: LeaseResult| {
            let line = format!(
                "leased {}: {} until {}\n",
                lease.id, r.lease_id, r.expires_at
            );
            Report::out(line, Exit::Done)
        }),
        Request::Release(release) => {
            Report::out(format!("released {}\n", release.lease_id), Exit::Done)
        }
        Request::Status => typed(result, status),
        Request::Metrics => typed(result, |r: MetricsResult| Report::out(r.text, Exit::Done)),
        Request::Reload => typed(result, |r: ReloadResult| {
            Report::out(format!("reloading (reload {})\n", r.reloads), Exit::Done)
        }),
        Request::Watch(_) => typed(result, |r: WatchResult| {
            Report::out(format!("watching from event {}\n", r.next_seq), Exit::Done)
        }),
    }
}

/// One event, for people: when, what, which session, and what there is to say about it.
///
/// ```text
/// 2024-05-01T12:00:00.000Z  launched       5f0c1a2b-000001  sandbox  ci  pid 4242  tracking job-42
/// 2024-05-01T12:00:03.000Z  exited         5f0c1a2b-000001  sandbox  ci  signal 15: terminated by request
/// ```
pub fn event_line(event: &Event) -> String {
    let mut line = format!("{}  {:<13}", event.at, event.event.as_str());
    match event.event {
        EventKind::Lagged => {
            let missed = event.missed.unwrap_or(0);
            let _ = write!(
                line,
                "  browserd dropped this subscriber: it fell behind and {missed} event(s) were lost"
            );
        }
        EventKind::Reload => line.push_str("  browserd is re-executing itself; following on"),
        _ => {
            let dash = || "-".to_owned();
            let _ = write!(
                line,
                "  {}  {}  {}",
                event
                    .session
                    .as_ref()
                    .map_or_else(dash, ToString::to_string),
                event.session_type.map_or_else(dash, |t| t.to_string()),
                event
                    .workspace
                    .as_ref()
                    .map_or_else(dash, ToString::to_string),
            );
            if let Some(exit) = event.exit {
                let _ = write!(line, "  {exit}");
            }
            if let Some(reason) = event.reason {
                let _ = write!(line, ": {reason}");
            }
            if matches!(event.event, EventKind::Launched | EventKind::Adopted) {
                if let Some(pid) = event.pid {
                    let _ = write!(line, "  pid {pid}");
                }
            }
            if let Some(tracking_id) = &event.tracking_id {
                let _ = write!(line, "  tracking {tracking_id}");
            }
            if let Some(lease_id) = &event.lease_id {
                let _ = write!(line, "  lease {lease_id}");
            }
        }
    }
    line.push('\n');
    line
}

/// Decodes a result for rendering; a shape this browserctl does not know means the two
/// programs are different versions, which is worth saying instead of printing nonsense.
/// `T` may borrow from the answer's text.
fn typed<'a, T: Deserialize<'a>>(result: &'a RawValue, render: impl FnOnce(T) -> Report) -> Report {
    match serde_json::from_str(result.get()) {
        Ok(result) => render(result),
        Err(e) => Report::err(
            format!(
                "browserctl: unexpected answer from browserd ({e}). Are browserctl and browserd \
                 the same version? `browserctl --json` shows the raw answer.\n"
            ),
            Exit::TargetFailed,
        ),
    }
}

/// `launched <id> (pid N)`, then the DevTools endpoint and expiry when there are any.
fn launch(session: &SessionInfo) -> String {
    let mut text = format!("launched {} (pid {})\n", session.id, session.pid);
    if let Some(endpoint) = &session.ws_endpoint {
        let _ = writeln!(text, "endpoint {endpoint}");
    }
    if let Some(expires_at) = &session.expires_at {
        let _ = writeln!(text, "expires {expires_at}");
    }
    text
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

const COLUMNS: [(&str, Align); 10] = [
    ("ID", Align::Left),
    ("TRACKING", Align::Left),
    ("TYPE", Align::Left),
    ("WORKSPACE", Align::Left),
    ("STATE", Align::Left),
    ("PID", Align::Right),
    ("AGE", Align::Left),
    ("PROCS", Align::Right),
    ("MEM", Align::Right),
    ("ENDPOINT", Align::Left),
];

/// A session as the `ls` table shows it, borrowed from the answer's text: a listing of
/// thousands of sessions is read without a copy of each one's strings (and without the
/// fields the table does not show).
#[derive(Debug, Deserialize)]
struct Row<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default)]
    tracking_id: Option<String>,
    session_type: SessionType,
    #[serde(borrow)]
    workspace: Cow<'a, str>,
    state: SessionState,
    pid: i32,
    #[serde(borrow)]
    started_at: Cow<'a, str>,
    #[serde(default)]
    exit: Option<ExitStatus>,
    #[serde(default)]
    processes: Option<u32>,
    #[serde(default)]
    memory_bytes: Option<u64>,
    #[serde(default)]
    ws_endpoint: Option<String>,
    #[serde(default)]
    usage_age_ms: Option<u64>,
}

/// The `sessions` result, as the table reads it.
#[derive(Deserialize)]
struct Rows<'a> {
    #[serde(borrow)]
    sessions: Vec<Row<'a>>,
}

/// The `ls` table. AGE is time since start for live sessions and the exit status (`exit 0`,
/// `signal 9`) for exited ones; absent values show as `-`.
fn sessions_table(sessions: &[Row<'_>], now: i64) -> String {
    if sessions.is_empty() {
        return "no sessions\n".to_owned();
    }
    let header = COLUMNS.map(|(name, _)| Cell::Text(name));
    let rows: Vec<[Cell<'_>; 10]> = std::iter::once(header)
        .chain(sessions.iter().map(|s| session_row(s, now)))
        .collect();
    let aligns = COLUMNS.map(|(_, align)| align);
    let mut table = align_columns(&rows, &aligns);
    // The daemon answers from its last measurement; say so once it is not a fresh one.
    if let Some(oldest) = sessions.iter().filter_map(|s| s.usage_age_ms).max() {
        if oldest >= 1000 {
            let _ = writeln!(
                table,
                "PROCS and MEM as measured up to {:.1}s ago",
                oldest as f64 / 1000.0
            );
        }
    }
    table
}

fn session_row<'a>(session: &'a Row<'a>, now: i64) -> [Cell<'a>; 10] {
    const DASH: Cell<'static> = Cell::Text("-");
    let age = match (session.state, session.exit) {
        (SessionState::Exited, Some(exit)) => Cell::of(exit),
        (SessionState::Exited, None) => DASH,
        _ => parse_rfc3339(&session.started_at).map_or(DASH, |t| Cell::of(Age(now - t))),
    };
    [
        Cell::Text(&session.id),
        session.tracking_id.as_deref().map_or(DASH, Cell::Text),
        Cell::Text(session.session_type.as_str()),
        Cell::Text(&session.workspace),
        Cell::Text(session.state.as_str()),
        Cell::of(session.pid),
        age,
        session.processes.map_or(DASH, Cell::of),
        session.memory_bytes.map_or(DASH, |n| Cell::of(Bytes(n))),
        // An exited browser's endpoint no longer answers; --json still shows what it was.
        session
            .ws_endpoint
            .as_deref()
            .filter(|_| session.state.is_live())
            .map_or(DASH, Cell::Text),
    ]
}

/// A cell of the `ls` table: text of the answer, or a short value written here (a pid, an
/// age, a size), kept in place: a table of thousands of rows allocates nothing per cell.
enum Cell<'a> {
    Text(&'a str),
    Short(Short),
    Long(String),
}

impl Cell<'_> {
    fn of(value: impl std::fmt::Display) -> Cell<'static> {
        let mut short = Short::default();
        match write!(short, "{value}") {
            Ok(()) => Cell::Short(short),
            Err(_) => Cell::Long(value.to_string()),
        }
    }
}

impl AsRef<str> for Cell<'_> {
    fn as_ref(&self) -> &str {
        match self {
            Cell::Text(text) => text,
            Cell::Short(short) => short.as_str(),
            Cell::Long(text) => text,
        }
    }
}

/// Up to 24 bytes of text, in place. A write that does not fit fails whole, so what is
/// kept is always whole strings, and so UTF-8.
#[derive(Default)]
struct Short {
    bytes: [u8; 24],
    len: usize,
}

impl Short {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl Write for Short {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let end = self.len + text.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Pads every cell to its column's width (in characters) with two spaces between columns,
/// leaving no trailing whitespace.
fn align_columns<const N: usize, S: AsRef<str>>(rows: &[[S; N]], aligns: &[Align; N]) -> String {
    // Each cell's width, counted once (the same rows are walked twice).
    let cell_widths: Vec<[usize; N]> = rows
        .iter()
        .map(|row| std::array::from_fn(|i| display_width(row[i].as_ref())))
        .collect();
    let mut widths = [0usize; N];
    for row in &cell_widths {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(*cell);
        }
    }
    let bytes: usize = widths.iter().map(|w| w + 2).sum();
    let mut text = String::with_capacity(rows.len() * (bytes + 1));
    for (row, cell_widths) in rows.iter().zip(&cell_widths) {
        let line_start = text.len();
        for (i, cell) in row.iter().enumerate() {
            let cell = cell.as_ref();
            if i > 0 {
                text.push_str("  ");
            }
            let pad = widths[i] - cell_widths[i];
            match aligns[i] {
                Align::Left => {
                    text.push_str(cell);
                    pad_with_spaces(&mut text, pad);
                }
                Align::Right => {
                    pad_with_spaces(&mut text, pad);
                    text.push_str(cell);
                }
            }
        }
        let trimmed = text[line_start..].trim_end().len();
        text.truncate(line_start + trimmed);
        text.push('\n');
    }
    text
}

/// The columns a cell takes: its characters (ids, states and numbers are ASCII, where that
/// is its length).
fn display_width(cell: &str) -> usize {
    if cell.is_ascii() {
        cell.len()
    } else {
        cell.chars().count()
    }
}

fn pad_with_spaces(text: &mut String, n: usize) {
    const SPACES: &str = "                                                                ";
    let mut left = n;
    while left > 0 {
        let take = left.min(SPACES.len());
        text.push_str(&SPACES[..take]);
        left -= take;
    }
}

/// `kill` and `terminate`: a line per target, a summary, and a hint when `--force` would
/// have finished the job.
fn terminate(result: &TerminateResult, forced: bool) -> Report {
    let mut stdout = String::new();
    for id in &result.terminated {
        let _ = writeln!(stdout, "terminated {id}");
    }
    for failure in &result.failed {
        let _ = write!(
            stdout,
            "failed {}: {}: {}",
            failure.id, failure.code, failure.message
        );
        if !failure.pids.is_empty() {
            let pids: Vec<String> = failure.pids.iter().map(ToString::to_string).collect();
            let _ = write!(stdout, " (pids {})", pids.join(", "));
        }
        stdout.push('\n');
    }
    if result.terminated.is_empty() && result.failed.is_empty() {
        stdout.push_str("no sessions to terminate\n");
    } else {
        let _ = writeln!(
            stdout,
            "{} terminated, {} failed",
            result.terminated.len(),
            result.failed.len()
        );
    }
    let exit = if result.failed.is_empty() {
        Exit::Done
    } else {
        Exit::TargetFailed
    };
    Report {
        stdout,
        stderr: force_hint(result, forced),
        exit,
    }
}

fn force_hint(result: &TerminateResult, forced: bool) -> String {
    let failed_with = |code| result.failed.iter().any(|f| f.code == code);
    let mut reasons = Vec::new();
    if !forced && failed_with(ErrorCode::Leased) {
        reasons.push("terminate leased sessions");
    }
    if !forced && failed_with(ErrorCode::Timeout) {
        reasons.push("SIGKILL processes that outlive the grace period");
    }
    if reasons.is_empty() {
        return String::new();
    }
    format!(
        "browserctl: re-run with --force to {}.\n",
        reasons.join(" and ")
    )
}

/// The warm pool's line of `status`.
fn warm_pool(pool: &browserd_proto::PoolStatus) -> String {
    if pool.target == 0 {
        return "none (browserd --warm N keeps N browsers ready)".to_owned();
    }
    let mut line = format!(
        "{} ready, {} starting (keeps {}); {} launches served from it, {} found it empty",
        pool.ready, pool.starting, pool.target, pool.handed_out, pool.missed
    );
    if let Some(ms) = pool.retry_in_ms {
        line.push_str(&format!(
            "; {} failures in a row, next launch in {}",
            pool.failures,
            format_millis(ms)
        ));
    }
    line
}

/// `status`: aligned `key  value` lines.
fn status(status: StatusResult) -> Report {
    let counts = &status.sessions;
    let limits = &status.limits;
    let limit = |default: Option<u64>, max: Option<u64>| {
        let default = default.map_or_else(|| "none".to_owned(), format_millis);
        let max = max.map_or_else(
            || "no maximum".to_owned(),
            |m| format!("at most {}", format_millis(m)),
        );
        format!("{default} by default, {max}")
    };
    let mut pairs: Vec<[String; 2]> = vec![
        ["version".into(), status.version],
        ["protocol".into(), status.protocol.to_string()],
        ["pid".into(), status.pid.to_string()],
        // Whole seconds: the milliseconds of an uptime are noise.
        [
            "uptime".into(),
            format_millis(status.uptime_ms / 1000 * 1000),
        ],
        ["reloads".into(), status.reloads.to_string()],
        ["socket".into(), status.socket],
        [
            "sessions".into(),
            format!(
                "{} running, {} starting, {} terminating, {} exited",
                counts.running, counts.starting, counts.terminating, counts.exited
            ),
        ],
        ["max sessions".into(), limits.max_sessions.to_string()],
    ];
    if let Some(queue) = &status.queue {
        let value = match queue.max {
            0 => "none: a launch at max sessions fails at once".to_owned(),
            max => format!(
                "{} waiting (at most {max}, each up to {} by default)",
                queue.depth,
                format_millis(queue.timeout_ms)
            ),
        };
        pairs.push(["launch queue".into(), value]);
    }
    if let Some(pool) = &status.pool {
        pairs.push(["warm pool".into(), warm_pool(pool)]);
    }
    pairs.extend([
        [
            "grace".into(),
            limit(Some(limits.grace_ms), Some(limits.max_grace_ms)),
        ],
        [
            "session ttl".into(),
            limit(limits.default_ttl_ms, limits.max_ttl_ms),
        ],
        [
            "lease ttl".into(),
            limit(Some(limits.lease_ttl_ms), Some(limits.max_lease_ttl_ms)),
        ],
    ]);
    if let Some(containment) = &status.containment {
        let value = match (&containment.cgroup_root, &containment.reason) {
            (Some(root), _) if containment.controllers.is_empty() => {
                format!(
                    "{} in {root} (no controllers: limits refused)",
                    containment.mode
                )
            }
            (Some(root), _) => format!(
                "{} in {root} ({})",
                containment.mode,
                containment.controllers.join(" ")
            ),
            (None, Some(reason)) => format!("{}: {reason}", containment.mode),
            (None, None) => containment.mode.clone(),
        };
        pairs.push(["containment".into(), value]);
    }
    if let Some(browser) = &status.browser {
        let value = match (&browser.path, &browser.error) {
            (Some(path), _) => path.clone(),
            (None, Some(error)) => format!("not found: {error}"),
            (None, None) => "not found".to_owned(),
        };
        pairs.push(["browser".into(), value]);
    }
    if let Some(http) = &status.http {
        pairs.push(["http".into(), http.clone()]);
    }
    if let Some(pressure) = &status.pressure {
        pairs.extend(pressure_pairs(pressure));
    }
    let stderr = if status.protocol == PROTOCOL {
        String::new()
    } else {
        format!(
            "browserctl: browserd speaks protocol {}, this browserctl speaks {PROTOCOL}; \
             install matching versions.\n",
            status.protocol
        )
    };
    Report {
        stdout: align_columns(&pairs, &[Align::Left, Align::Left]),
        stderr,
        exit: Exit::Done,
    }
}

/// `status`'s pressure lines: whether a launch would be admitted, and the host's load.
fn pressure_pairs(pressure: &Pressure) -> [[String; 2]; 2] {
    let admits = match (&pressure.message, pressure.available) {
        (_, true) => format!(
            "yes ({} of {} sessions live, {} queued)",
            pressure.running, pressure.max_sessions, pressure.queued
        ),
        (Some(message), false) => format!("no: {message}"),
        (None, false) => "no".to_owned(),
    };
    let host = format!(
        "cpu {:.1}%, memory {:.1}% ({} of {})",
        pressure.cpu_percent,
        pressure.memory_percent,
        Bytes(pressure.memory_used_bytes),
        Bytes(pressure.memory_total_bytes)
    );
    [["admits launches".into(), admits], ["host".into(), host]]
}

/// An error response: the daemon's message, its code, and what to do about it.
fn error_report(request: &Request, error: &WireError) -> Report {
    let mut text = format!("browserctl: {} ({})\n", error.message, error.code);
    if let Some(hint) = error_hint(request, error.code) {
        let _ = writeln!(text, "{hint}");
    }
    Report::err(text, Exit::for_error(error.code))
}

fn error_hint(request: &Request, code: ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::NotFound if matches!(request, Request::Release(_)) => {
            "The lease may have expired or been released already."
        }
        ErrorCode::NotFound => "List sessions with `browserctl ls`.",
        ErrorCode::Leased => "Release the lease (`browserctl release`), or pass --force.",
        ErrorCode::Timeout => "Pass --force to SIGKILL what outlives the grace period.",
        ErrorCode::KillFailed => {
            "Some processes survived SIGKILL (stuck in the kernel?); inspect them with `ps`."
        }
        ErrorCode::Capacity => {
            "Terminate sessions you no longer need (`browserctl ls`, `browserctl kill`), \
             raise max_sessions in browserd's configuration, or let launches wait for a slot \
             (browserd --max-queue; browserctl launch --queue-timeout)."
        }
        ErrorCode::Conflict => "Choose another --tracking-id, or kill the session that has it.",
        ErrorCode::NotRunning => "The session has exited; see `browserctl ls --state exited`.",
        ErrorCode::LaunchFailed => {
            "Check the browser browserd found with `browserctl status`, and browserd's logs."
        }
        ErrorCode::PermissionDenied => {
            "browserd itself refused you (its SO_PEERCRED check; the socket file let you \
             in): it serves only root, its own user and the uids and gids it is configured to \
             allow. Ask for your uid or one of your groups to be allowed (browserd --allow-uid, \
             --allow-gid), or run your own browserd and point --socket at it."
        }
        ErrorCode::Unauthorized => "Send browserd's HTTP token (?token= or Authorization: Bearer).",
        ErrorCode::ShuttingDown => "browserd is shutting down; retry once it has restarted.",
        ErrorCode::ReloadFailed => {
            "Nothing changed: browserd serves on as before. Fix what the message names (run \
             `browserd --check-config` with the daemon's flags to see it), then reload again."
        }
        ErrorCode::Reloading => "browserd is reloading; retry in a moment.",
        ErrorCode::Internal => "This is a bug in browserd; its logs have the details.",
        ErrorCode::FrameTooLarge => "The request is over 1 MiB; split it into smaller ones.",
        ErrorCode::InvalidJson | ErrorCode::UnknownOp => {
            "browserctl and browserd may be different versions; compare `browserctl --version` \
             with `browserctl status`."
        }
        ErrorCode::InvalidRequest => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use browserd_proto::{ExitStatus, Failure, Kill, Release, SessionType, Target};
    use serde_json::json;

    const NOW: i64 = 1_714_564_800; // 2024-05-01T12:00:00Z

    fn session(id: &str) -> SessionInfo {
        SessionInfo {
            id: id.parse().unwrap(),
            tracking_id: None,
            session_type: SessionType::Sandbox,
            workspace: "default".parse().unwrap(),
            state: SessionState::Running,
            pid: 42,
            pgid: 42,
            started_at: "2024-05-01T11:58:00Z".into(),
            command: vec!["sleep".into()],
            leases: 0,
            exit: None,
            ended_at: None,
            expires_at: None,
            ws_endpoint: None,
            profile_dir: None,
            processes: None,
            memory_bytes: None,
            cpu_seconds: None,
            usage_age_ms: None,
            reason: None,
        }
    }

    /// The table's rows of sessions built here (the daemon's answer is parsed into them).
    fn rows(sessions: &[SessionInfo]) -> Vec<Row<'_>> {
        sessions.iter().map(Row::from).collect()
    }

    impl<'a> From<&'a SessionInfo> for Row<'a> {
        fn from(session: &'a SessionInfo) -> Row<'a> {
            Row {
                id: Cow::Borrowed(session.id.as_str()),
                tracking_id: session.tracking_id.as_ref().map(ToString::to_string),
                session_type: session.session_type,
                workspace: Cow::Borrowed(session.workspace.as_str()),
                state: session.state,
                pid: session.pid,
                started_at: Cow::Borrowed(&session.started_at),
                exit: session.exit,
                processes: session.processes,
                memory_bytes: session.memory_bytes,
                ws_endpoint: session.ws_endpoint.clone(),
                usage_age_ms: session.usage_age_ms,
            }
        }
    }

    fn ok(result: serde_json::Value) -> RawResponse {
        browserd_proto::Response::success(Some(json!(1)), &result).into_raw()
    }

    fn failed(code: ErrorCode, message: &str) -> RawResponse {
        browserd_proto::Response::failure(Some(json!(1)), WireError::new(code, message)).into_raw()
    }

    fn kill(force: bool) -> Request {
        Request::Kill(Kill {
            target: Target::All,
            force,
            grace_ms: None,
        })
    }

    #[test]
    fn table_columns_line_up_and_missing_values_are_dashes() {
        let mut browser = session("aaaaaaaa-000001");
        browser.tracking_id = Some("job-42".parse().unwrap());
        browser.session_type = SessionType::Browser;
        browser.pid = 123_456;
        browser.processes = Some(12);
        browser.memory_bytes = Some(300 * 1024 * 1024);
        browser.ws_endpoint = Some("ws://127.0.0.1:9222/devtools/browser/x".into());
        let mut exited = session("aaaaaaaa-000002");
        exited.workspace = "ci β".parse().unwrap();
        exited.state = SessionState::Exited;
        exited.exit = Some(ExitStatus::Signal(9));

        let table = sessions_table(&rows(&[browser, exited]), NOW);
        let expected = "\
ID               TRACKING  TYPE     WORKSPACE  STATE       PID  AGE       PROCS   MEM  ENDPOINT
aaaaaaaa-000001  job-42    browser  default    running  123456  2m           12  300M  ws://127.0.0.1:9222/devtools/browser/x
aaaaaaaa-000002  -         sandbox  ci β       exited       42  signal 9      -     -  -
";
        assert_eq!(table, expected);
    }

    #[test]
    fn figures_measured_a_while_ago_say_so_under_the_table() {
        let mut fresh = session("aaaaaaaa-000001");
        fresh.processes = Some(1);
        fresh.usage_age_ms = Some(200);
        let table = sessions_table(&rows(std::slice::from_ref(&fresh)), NOW);
        assert!(!table.contains("measured"), "{table}");
        let mut old = session("aaaaaaaa-000002");
        old.processes = Some(3);
        old.usage_age_ms = Some(2500);
        let table = sessions_table(&rows(&[fresh, old]), NOW);
        assert!(
            table.ends_with("PROCS and MEM as measured up to 2.5s ago\n"),
            "{table}"
        );
    }

    #[test]
    fn columns_are_padded_by_characters_not_bytes() {
        let rows = [
            ["ββ".to_owned(), "x".to_owned()],
            ["a".to_owned(), "y".to_owned()],
        ];
        let text = align_columns(&rows, &[Align::Left, Align::Right]);
        assert_eq!(text, "ββ  x\na   y\n");
    }

    #[test]
    fn a_listing_with_escaped_text_and_unknown_fields_renders_as_text() {
        let result = r#"{"sessions":[{"id":"aaaaaaaa-000001","session_type":"sandbox",
            "workspace":"\u00e9quipe \"a\"","state":"exited","pid":7,"pgid":7,
            "started_at":"2024-05-01T11:58:00Z","command":["sh","-c","echo \"\\n\""],
            "leases":0,"exit":{"code":3},"a_field_from_a_newer_daemon":[1,{"x":null}]}]}"#;
        let response = RawResponse {
            req_id: Some(json!(1)),
            ok: true,
            result: Some(RawValue::from_string(result.to_owned()).unwrap()),
            error: None,
        };
        let request = Request::Sessions(Default::default());
        let report = report(&request, response, false);
        assert_eq!(report.exit, Exit::Done, "{report:?}");
        let row = report.stdout.lines().nth(1).unwrap();
        assert!(row.contains("équipe \"a\"  exited"), "{row}");
        assert!(row.contains("exit 3"), "{row}");
    }

    #[test]
    fn a_listing_read_in_one_pass_prints_what_the_general_way_prints() {
        let result = r#"{"sessions":[{"id":"aaaaaaaa-000001","session_type":"sandbox",
            "workspace":"\u00e9quipe \"a\"","state":"running","pid":7,"pgid":7,
            "started_at":"2024-05-01T11:58:00Z","command":["sh","-c","echo \"\\n\""],
            "leases":0,"processes":3,"memory_bytes":1048576,"usage_age_ms":2500,
            "a_field_from_a_newer_daemon":[1,{"x":null}]},{"id":"aaaaaaaa-000002",
            "session_type":"sandbox","workspace":"default","state":"exited","pid":8,"pgid":8,
            "started_at":"2024-05-01T11:58:00Z","command":["true"],"leases":0,
            "exit":{"code":3}}]}"#;
        let line = format!("{{\"req_id\":1,\"ok\":true,\"result\":{result}}}\n");
        let request = Request::Sessions(Default::default());
        let general = report(
            &request,
            serde_json::from_str::<RawResponse>(&line).unwrap(),
            false,
        );
        assert_eq!(listing(&request, line.as_bytes()), Some(general));
    }

    #[test]
    fn only_a_successful_listing_takes_the_one_pass_way() {
        let sessions = Request::Sessions(Default::default());
        let listing_line = r#"{"req_id":1,"ok":true,"result":{"sessions":[]}}"#;
        assert!(listing(&sessions, listing_line.as_bytes()).is_some());
        assert_eq!(listing(&Request::Status, listing_line.as_bytes()), None);
        for answer in [
            r#"{"req_id":1,"ok":false,"error":{"code":"internal","message":"x"}}"#,
            r#"{"req_id":1,"ok":true,"result":{"sessions":[{"id":7}]}}"#,
            r#"{"req_id":1,"ok":true}"#,
            "not json",
            "",
        ] {
            assert_eq!(listing(&sessions, answer.as_bytes()), None, "{answer}");
        }
        assert_eq!(
            listing(&sessions, b"{\"ok\":true,\"result\":\"\xff\"}"),
            None
        );
    }

    #[test]
    fn a_cell_too_long_to_keep_in_place_is_kept_whole() {
        let long = "x".repeat(40);
        assert_eq!(Cell::of(&long).as_ref(), long);
        assert!(matches!(Cell::of(&long), Cell::Long(_)));
        assert!(matches!(Cell::of(i32::MIN), Cell::Short(_)));
        assert_eq!(Cell::of(i32::MIN).as_ref(), "-2147483648");
        assert_eq!(Cell::of(Age(i64::MAX)).as_ref(), Age(i64::MAX).to_string());
    }

    #[test]
    fn an_empty_listing_says_so() {
        assert_eq!(sessions_table(&[], NOW), "no sessions\n");
    }

    #[test]
    fn json_mode_prints_the_result_or_the_error_object_on_one_line() {
        let report = report(&Request::Status, ok(json!({"a": [1, 2]})), true);
        assert_eq!(report.stdout, "{\"a\":[1,2]}\n");
        assert_eq!(report.exit, Exit::Done);

        let report = super::report(&Request::Status, failed(ErrorCode::UnknownOp, "x"), true);
        assert_eq!(
            report.stdout,
            "{\"code\":\"unknown_op\",\"message\":\"x\"}\n"
        );
        assert!(report.stderr.is_empty());
        assert_eq!(report.exit, Exit::Usage);
    }

    #[test]
    fn local_failures_are_error_objects_in_json_mode_and_sentences_otherwise() {
        let json = local_failure(LocalFailure::Unreachable, "cannot reach \"x\"", true);
        assert_eq!(
            json.stdout,
            "{\"code\":\"unreachable\",\"message\":\"cannot reach \\\"x\\\"\"}\n"
        );
        assert!(json.stderr.is_empty());
        assert_eq!(json.exit, Exit::Unreachable);

        let text = local_failure(LocalFailure::Usage, "bad", false);
        assert_eq!(text.stderr, "browserctl: bad\n");
        assert!(text.stdout.is_empty());
        assert_eq!(text.exit, Exit::Usage);
    }

    #[test]
    fn json_mode_exits_1_when_a_target_failed() {
        let result = json!({"terminated": [], "failed": [
            {"id": "x", "code": "not_found", "message": "no session x"}
        ]});
        assert_eq!(
            report(&kill(false), ok(result), true).exit,
            Exit::TargetFailed
        );
    }

    #[test]
    fn terminations_list_each_target_and_summarise() {
        let result = TerminateResult {
            terminated: vec!["a-1".into()],
            failed: vec![
                Failure {
                    id: "b-2".into(),
                    code: ErrorCode::Timeout,
                    message: "still running after 5s".into(),
                    pids: vec![7, 8],
                },
                Failure {
                    id: "c-3".into(),
                    code: ErrorCode::Leased,
                    message: "session has 1 lease".into(),
                    pids: vec![],
                },
            ],
        };
        let value = serde_json::to_value(&result).unwrap();
        let report = report(&kill(false), ok(value.clone()), false);
        assert_eq!(
            report.stdout,
            "terminated a-1\n\
             failed b-2: timeout: still running after 5s (pids 7, 8)\n\
             failed c-3: leased: session has 1 lease\n\
             1 terminated, 2 failed\n"
        );
        assert!(report.stderr.contains("--force"), "{}", report.stderr);
        assert_eq!(report.exit, Exit::TargetFailed);

        let forced = super::report(&kill(true), ok(value), false);
        assert!(forced.stderr.is_empty());
    }

    #[test]
    fn a_termination_with_nothing_to_do_succeeds() {
        let report = report(
            &kill(false),
            ok(json!({"terminated": [], "failed": []})),
            false,
        );
        assert_eq!(report.stdout, "no sessions to terminate\n");
        assert_eq!(report.exit, Exit::Done);
    }

    #[test]
    fn a_launch_prints_its_id_then_its_endpoint() {
        let mut launched = session("aaaaaaaa-000001");
        launched.ws_endpoint = Some("ws://127.0.0.1:1/devtools/browser/x".into());
        let request = Request::Launch(Default::default());
        let result = serde_json::to_value(LaunchResult { session: launched }).unwrap();
        let report = report(&request, ok(result), false);
        assert_eq!(
            report.stdout,
            "launched aaaaaaaa-000001 (pid 42)\nendpoint ws://127.0.0.1:1/devtools/browser/x\n"
        );
    }

    #[test]
    fn error_responses_go_to_stderr_with_advice_and_the_right_exit() {
        let request = Request::Release(Release {
            lease_id: "lease-1".parse().unwrap(),
        });
        let report = report(
            &request,
            failed(ErrorCode::NotFound, "no lease lease-1"),
            false,
        );
        assert!(report.stdout.is_empty());
        assert!(report
            .stderr
            .starts_with("browserctl: no lease lease-1 (not_found)\n"));
        assert!(report.stderr.contains("expired"));
        assert_eq!(report.exit, Exit::TargetFailed);

        let denied = super::report(
            &Request::Status,
            failed(ErrorCode::PermissionDenied, "uid 5"),
            false,
        );
        assert!(denied.stderr.contains("--allow-uid"));
        assert_eq!(denied.exit, Exit::Unreachable);
    }

    #[test]
    fn status_is_aligned_key_value_lines() {
        let result = json!({
            "version": "0.1.0", "protocol": 1, "pid": 10, "uptime_ms": 3_723_456,
            "sessions": {"starting": 0, "running": 2, "terminating": 0, "exited": 1},
            "limits": {"max_sessions": 64, "grace_ms": 5000, "max_grace_ms": 60000,
                       "max_ttl_ms": 3_600_000, "lease_ttl_ms": 60000,
                       "max_lease_ttl_ms": 600000},
            "socket": "/run/browserd/browserd.sock",
            "browser": {"error": "no chromium on PATH"}
        });
        let report = report(&Request::Status, ok(result), false);
        assert_eq!(
            report.stdout,
            "\
version       0.1.0
protocol      1
pid           10
uptime        1h 2m 3s
reloads       0
socket        /run/browserd/browserd.sock
sessions      2 running, 0 starting, 0 terminating, 1 exited
max sessions  64
grace         5s by default, at most 1m
session ttl   none by default, at most 1h
lease ttl     1m by default, at most 10m
browser       not found: no chromium on PATH
"
        );
        assert!(report.stderr.is_empty());
    }

    #[test]
    fn status_says_whether_launches_are_admitted_and_where_http_listens() {
        let result = json!({
            "version": "0.1.0", "protocol": 1, "pid": 10, "uptime_ms": 1000,
            "sessions": {"starting": 0, "running": 2, "terminating": 0, "exited": 0},
            "limits": {"max_sessions": 2, "grace_ms": 5000, "max_grace_ms": 60000,
                       "lease_ttl_ms": 60000, "max_lease_ttl_ms": 600000},
            "socket": "/s", "http": "127.0.0.1:8000",
            "pressure": {"running": 2, "queued": 0, "max_sessions": 2, "max_queue": 0,
                         "cpu_percent": 12.5, "memory_percent": 50.0,
                         "memory_used_bytes": 1_073_741_824u64,
                         "memory_total_bytes": 2_147_483_648u64, "available": false,
                         "reason": "capacity",
                         "message": "2 sessions are live and max_sessions is 2"}
        });
        let report = report(&Request::Status, ok(result), false);
        assert!(
            report.stdout.ends_with(
                "\
http             127.0.0.1:8000
admits launches  no: 2 sessions are live and max_sessions is 2
host             cpu 12.5%, memory 50.0% (1.0G of 2.0G)
"
            ),
            "{}",
            report.stdout
        );
    }

    #[test]
    fn events_read_as_one_line_each() {
        let mut exited = Event::new(7, EventKind::Exited);
        exited.at = "2024-05-01T12:00:03.000Z".into();
        exited.session = Some("5f0c1a2b-000001".parse().unwrap());
        exited.session_type = Some(browserd_proto::SessionType::Sandbox);
        exited.workspace = Some("ci".parse().unwrap());
        exited.pid = Some(4242);
        exited.exit = Some(ExitStatus::Signal(15));
        exited.reason = Some(browserd_proto::EndReason::Terminated);
        exited.tracking_id = Some("job-42".parse().unwrap());
        assert_eq!(
            event_line(&exited),
            "2024-05-01T12:00:03.000Z  exited         5f0c1a2b-000001  sandbox  ci  signal 15: \
             terminated by request  tracking job-42\n"
        );
        let mut launched = exited.clone();
        launched.event = EventKind::Launched;
        launched.exit = None;
        launched.reason = None;
        launched.tracking_id = None;
        assert!(event_line(&launched).ends_with("sandbox  ci  pid 4242\n"));
        let mut lagged = Event::new(0, EventKind::Lagged);
        lagged.missed = Some(12);
        assert!(event_line(&lagged).contains("12 event(s) were lost"));
    }

    #[test]
    fn status_shows_the_queue_and_the_pool() {
        let result = json!({
            "version": "0.1.0", "protocol": 1, "pid": 10, "uptime_ms": 1000,
            "sessions": {"starting": 0, "running": 2, "terminating": 0, "exited": 0},
            "limits": {"max_sessions": 2, "grace_ms": 5000, "max_grace_ms": 60000,
                       "lease_ttl_ms": 60000, "max_lease_ttl_ms": 600000},
            "socket": "/s",
            "queue": {"depth": 3, "max": 5, "timeout_ms": 30000},
            "pool": {"target": 2, "ready": 1, "starting": 1, "handed_out": 7, "missed": 1,
                     "failures": 3, "retry_in_ms": 2000}
        });
        let report = report(&Request::Status, ok(result), false);
        let line = |label: &str| {
            report
                .stdout
                .lines()
                .find(|l| l.starts_with(label))
                .map(|l| l[label.len()..].trim_start().to_owned())
                .unwrap_or_else(|| panic!("no `{label}` line: {}", report.stdout))
        };
        assert_eq!(
            line("launch queue"),
            "3 waiting (at most 5, each up to 30s by default)"
        );
        assert_eq!(
            line("warm pool"),
            "1 ready, 1 starting (keeps 2); 7 launches served from it, 1 found it empty; 3 failures in a row, next launch in 2s"
        );
    }

    #[test]
    fn an_unknown_result_shape_is_reported_not_misprinted() {
        let report = report(&Request::Status, ok(json!({"version": 2})), false);
        assert!(report.stdout.is_empty());
        assert!(report.stderr.contains("same version"));
        assert_eq!(report.exit, Exit::TargetFailed);
    }
}
