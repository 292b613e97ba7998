//! Applying requests: one small function per operation, each turning a validated request
//! into a result or a wire error.

use crate::daemon::Daemon;
use crate::error::Error;
use crate::{launch, terminate};
use browserd_proto::duration::{as_millis, format_millis};
use browserd_proto::{
    BrowserStatus, BulkTerminate, ErrorCode, Failure, Kill, LaunchResult, Lease, LeaseResult,
    Limits, Release, Request, SessionId, SessionRef, SessionType, SessionsFilter, SessionsResult,
    StatusResult, Target, TerminateResult, WireError, Workspace,
};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Applies one request.
pub async fn apply(daemon: &Arc<Daemon>, request: Request) -> Result<Value, WireError> {
    match request {
        Request::Launch(request) => {
            let session = launch::launch(daemon, request).await?;
            encode(&LaunchResult { session })
        }
        Request::Sessions(filter) => encode(&sessions(daemon, &filter).await),
        Request::Kill(kill) => encode(&kill_op(daemon, kill).await?),
        Request::BulkTerminate(body) => encode(&bulk_terminate(daemon, body).await?),
        Request::Lease(lease) => encode(&lease_op(daemon, &lease)?),
        Request::Release(Release { lease_id }) => {
            daemon.registry.release(&lease_id)?;
            encode(&serde_json::json!({}))
        }
        Request::Status => encode(&status(daemon)),
    }
}

fn encode(result: &impl Serialize) -> Result<Value, WireError> {
    serde_json::to_value(result)
        .map_err(|e| WireError::new(ErrorCode::Internal, format!("cannot encode result: {e}")))
}

/// Lists sessions; live ones with their current process count and resident memory (RSS
/// summed over the session's processes, so pages they share count once per process).
async fn sessions(daemon: &Arc<Daemon>, filter: &SessionsFilter) -> SessionsResult {
    let mut sessions = daemon.registry.list(filter);
    let live: Vec<SessionId> = sessions
        .iter()
        .filter(|s| s.state.is_live())
        .map(|s| s.id.clone())
        .collect();
    if !live.is_empty() {
        let mut found = daemon.scanner.processes(live).await;
        let page_size = crate::procs::page_size();
        for session in sessions.iter_mut().filter(|s| s.state.is_live()) {
            let known = found.remove(&session.id).unwrap_or_default();
            let processes = crate::procs::current(&known);
            session.processes = Some(processes.len() as u32);
            session.rss_bytes = Some(processes.iter().map(|p| p.rss_pages * page_size).sum());
        }
    }
    SessionsResult { sessions }
}

async fn kill_op(daemon: &Arc<Daemon>, kill: Kill) -> Result<TerminateResult, Error> {
    let body = match kill.target {
        Target::All => BulkTerminate {
            all: Some(true),
            ..Default::default()
        },
        Target::Session(reference) => BulkTerminate {
            ids: Some(vec![reference]),
            ..Default::default()
        },
    };
    bulk_terminate(
        daemon,
        BulkTerminate {
            force: Some(kill.force),
            grace_ms: kill.grace_ms,
            ..body
        },
    )
    .await
}

async fn bulk_terminate(
    daemon: &Arc<Daemon>,
    body: BulkTerminate,
) -> Result<TerminateResult, Error> {
    let grace = grace(daemon, body.grace_ms)?;
    let (selected, mut failed) = select(
        daemon,
        body.all == Some(true),
        body.session_type,
        body.ids.as_deref().unwrap_or_default(),
        body.workspaces.as_deref().unwrap_or_default(),
    );
    let force = body.force == Some(true);
    let mut terminated = Vec::with_capacity(selected.len());
    for result in terminate::terminate_all(daemon, selected, force, grace).await {
        match result {
            Ok(id) => terminated.push(id.to_string()),
            Err(failure) => failed.push(failure),
        }
    }
    Ok(TerminateResult { terminated, failed })
}

/// The request's grace period, or the configured default; never above the maximum.
fn grace(daemon: &Daemon, grace_ms: Option<u64>) -> Result<Duration, Error> {
    let Some(ms) = grace_ms else {
        return Ok(daemon.config.grace);
    };
    let max = as_millis(daemon.config.max_grace);
    if ms > max {
        return Err(Error::InvalidRequest(format!(
            "grace_ms {ms} exceeds the maximum {} (max_grace)",
            format_millis(max)
        )));
    }
    Ok(Duration::from_millis(ms))
}

/// Bulk-terminate selection: with `all`, every live session (of `kind`, if given);
/// otherwise the union of the named ids and the live sessions of the named workspaces.
/// An id that names nothing becomes a `not_found` failure.
fn select(
    daemon: &Daemon,
    all: bool,
    kind: Option<SessionType>,
    ids: &[SessionRef],
    workspaces: &[Workspace],
) -> (Vec<SessionId>, Vec<Failure>) {
    if all {
        return (daemon.registry.live_ids(kind), Vec::new());
    }
    let mut selected: Vec<SessionId> = Vec::new();
    let mut failed = Vec::new();
    for reference in ids {
        match daemon.registry.resolve(reference) {
            Some(id) => selected.push(id),
            None => failed.push(Failure {
                id: reference.to_string(),
                code: ErrorCode::NotFound,
                message: format!("no session with id or tracking id `{reference}`"),
                pids: Vec::new(),
            }),
        }
    }
    selected.extend(daemon.registry.in_workspaces(workspaces));
    let mut seen = std::collections::HashSet::new();
    selected.retain(|id| seen.insert(id.clone()));
    (selected, failed)
}

fn lease_op(daemon: &Daemon, lease: &Lease) -> Result<LeaseResult, Error> {
    let ttl = match lease.ttl_ms {
        Some(0) => return Err(Error::InvalidRequest("`ttl_ms` must be positive".into())),
        Some(ms) => Duration::from_millis(ms),
        None => daemon.config.lease_ttl,
    };
    if ttl > daemon.config.max_lease_ttl {
        return Err(Error::InvalidRequest(format!(
            "lease ttl {} exceeds the maximum {}",
            format_millis(as_millis(ttl)),
            format_millis(as_millis(daemon.config.max_lease_ttl))
        )));
    }
    let (lease_id, expires_at) = daemon.registry.lease(&lease.id, ttl)?;
    Ok(LeaseResult {
        lease_id,
        expires_at: crate::registry::rfc3339(expires_at),
    })
}

fn status(daemon: &Daemon) -> StatusResult {
    let config = &daemon.config;
    StatusResult {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol: browserd_proto::PROTOCOL,
        pid: std::process::id(),
        uptime_ms: as_millis(daemon.started.elapsed()),
        sessions: daemon.registry.counts(),
        limits: Limits {
            max_sessions: config.max_sessions,
            grace_ms: as_millis(config.grace),
            max_grace_ms: as_millis(config.max_grace),
            default_ttl_ms: config.default_ttl.map(as_millis),
            max_ttl_ms: config.max_ttl.map(as_millis),
            lease_ttl_ms: as_millis(config.lease_ttl),
            max_lease_ttl_ms: as_millis(config.max_lease_ttl),
        },
        socket: config.socket.display().to_string(),
        browser: Some(match crate::browser::detect(config.browser.as_deref()) {
            Ok(path) => BrowserStatus {
                path: Some(path.display().to_string()),
                error: None,
            },
            Err(error) => BrowserStatus {
                path: None,
                error: Some(error),
            },
        }),
    }
}
