//! Applying requests: one small function per operation, each turning a validated request
//! into a result or a wire error. The socket server and the HTTP listener both call these,
//! so an operation behaves the same whichever way it arrives.

use crate::caller::Caller;
use crate::context::Context;
use crate::error::Error;
use crate::registry::ListedUsage;
use crate::{launch, terminate};
use browserd_proto::duration::{as_millis, format_millis};
use browserd_proto::{
    format_rfc3339, BrowserStatus, BulkTerminate, ContainmentStatus, Encoded, EndReason, ErrorCode,
    Failure, Kill, Launch, LaunchResult, Lease, LeaseResult, Limits, MetricsResult, QueueStatus,
    Release, ReloadResult, Request, SessionId, SessionInfo, SessionRef, SessionType,
    SessionsFilter, StatusResult, Target, TerminateResult, WireError, Workspace,
};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Applies one request; its result comes encoded. `caller` tells a launch waiting in the
/// queue whether its client is still there.
pub async fn apply(
    ctx: &Arc<Context>,
    request: Request,
    caller: &Caller<'_>,
) -> Result<Encoded, WireError> {
    match request {
        Request::Launch(request) => encode(&LaunchResult {
            session: launch_op(ctx, request, caller).await?,
        }),
        Request::Sessions(filter) => Ok(sessions(ctx, &filter).await),
        Request::Kill(kill) => encode(&kill_op(ctx, kill).await?),
        Request::BulkTerminate(body) => encode(&bulk_terminate(ctx, body).await?),
        Request::Lease(lease) => encode(&lease_op(ctx, &lease).await?),
        Request::Release(Release { lease_id }) => {
            ctx.registry.release(&lease_id)?;
            encode(&serde_json::json!({}))
        }
        Request::Status => encode(&status(ctx).await),
        Request::Metrics => encode(&MetricsResult {
            text: metrics_text(ctx),
        }),
        Request::Reload => encode(&ReloadResult {
            reloads: crate::reload::request(ctx).await?,
        }),
        Request::Watch(_) => Err(WireError::new(
            ErrorCode::InvalidRequest,
            "`watch` turns a connection into an event stream; only the socket server serves it",
        )),
    }
}

/// Launches a session and counts the outcome (a launch handed over to the next image
/// unanswered is counted there).
pub async fn launch_op(
    ctx: &Arc<Context>,
    request: Launch,
    caller: &Caller<'_>,
) -> Result<SessionInfo, Error> {
    let started = std::time::Instant::now();
    let launched = launch::launch(ctx, request, caller).await;
    match &launched {
        Ok(_) => ctx.metrics.launched(Ok(started.elapsed())),
        Err(_) if caller.handed_over().is_some() => {}
        Err(e) => ctx.metrics.launched(Err(e.code().as_str())),
    }
    launched
}

fn encode(result: &impl Serialize) -> Result<Encoded, WireError> {
    Encoded::of(result)
        .map_err(|e| WireError::new(ErrorCode::Internal, format!("cannot encode result: {e}")))
}

/// Lists sessions (the `sessions` result, as JSON); live ones with what they use: their
/// process count, memory (PSS summed over their processes, so a page they share counts once)
/// and CPU time, as last measured, with how long ago (see `usage`).
pub async fn sessions(ctx: &Arc<Context>, filter: &SessionsFilter) -> Encoded {
    let live = ctx.registry.live_listed(filter);
    if !live.is_empty() {
        crate::usage::prepare(ctx, &live).await;
    }
    let now = std::time::Instant::now();
    ctx.usage.read(|figures| {
        ctx.registry.list_json(filter, |id| {
            figures.get(id).map(|measured| ListedUsage {
                processes: measured.usage.processes,
                memory_bytes: measured.usage.memory_bytes,
                cpu_seconds: measured.usage.cpu_seconds,
                age_ms: as_millis(now.saturating_duration_since(measured.at)),
            })
        })
    })
}

pub async fn kill_op(ctx: &Arc<Context>, kill: Kill) -> Result<TerminateResult, Error> {
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
        ctx,
        BulkTerminate {
            force: Some(kill.force),
            grace_ms: kill.grace_ms,
            ..body
        },
    )
    .await
}

pub async fn bulk_terminate(
    ctx: &Arc<Context>,
    body: BulkTerminate,
) -> Result<TerminateResult, Error> {
    let grace = grace(ctx, body.grace_ms)?;
    let (selected, mut failed) = select(
        ctx,
        body.all == Some(true),
        body.session_type,
        body.ids.as_deref().unwrap_or_default(),
        body.workspaces.as_deref().unwrap_or_default(),
    );
    let force = body.force == Some(true);
    let mut terminated = Vec::with_capacity(selected.len());
    let results =
        terminate::terminate_all(ctx, selected, force, grace, EndReason::Terminated).await;
    for result in results {
        match result {
            Ok(id) => terminated.push(id.to_string()),
            Err(failure) => failed.push(failure),
        }
    }
    for failure in &failed {
        // Timeouts and kill failures are counted where the termination ends.
        if matches!(failure.code, ErrorCode::Leased | ErrorCode::NotFound) {
            ctx.metrics.terminated(Err(failure.code.as_str()));
        }
    }
    Ok(TerminateResult { terminated, failed })
}

/// The request's grace period, or the configured default; never above the maximum.
fn grace(ctx: &Context, grace_ms: Option<u64>) -> Result<Duration, Error> {
    let Some(ms) = grace_ms else {
        return Ok(ctx.config.grace());
    };
    let max = as_millis(ctx.config.max_grace.0);
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
    ctx: &Context,
    all: bool,
    kind: Option<SessionType>,
    ids: &[SessionRef],
    workspaces: &[Workspace],
) -> (Vec<SessionId>, Vec<Failure>) {
    if all {
        return (ctx.registry.live_ids(kind), Vec::new());
    }
    let mut selected: Vec<SessionId> = Vec::new();
    let mut failed = Vec::new();
    for reference in ids {
        match ctx.registry.resolve(reference) {
            Some(id) => selected.push(id),
            None => failed.push(Failure {
                id: reference.to_string(),
                code: ErrorCode::NotFound,
                message: format!("no session with id or tracking id `{reference}`"),
                pids: Vec::new(),
            }),
        }
    }
    if !workspaces.is_empty() {
        selected.extend(ctx.registry.in_workspaces(workspaces));
    }
    if selected.len() > 1 {
        let mut seen = std::collections::HashSet::new();
        selected.retain(|id| seen.insert(id.clone()));
    }
    (selected, failed)
}

/// Grants a lease, acknowledged once it is in the journal (a daemon that dies right after
/// still knows it when it starts again).
async fn lease_op(ctx: &Context, lease: &Lease) -> Result<LeaseResult, Error> {
    let ttl = match lease.ttl_ms {
        Some(ms) => Duration::from_millis(ms),
        None => ctx.config.lease_ttl.0,
    };
    if ttl > ctx.config.max_lease_ttl.0 {
        return Err(Error::InvalidRequest(format!(
            "lease ttl {} exceeds the maximum {}",
            format_millis(as_millis(ttl)),
            format_millis(as_millis(ctx.config.max_lease_ttl.0))
        )));
    }
    let (lease_id, expires_at) = ctx.registry.lease(&lease.id, ttl)?;
    ctx.registry.recorded().await?;
    Ok(LeaseResult {
        lease_id,
        expires_at: format_rfc3339(expires_at),
    })
}

/// The Prometheus exposition, with the gauges read from the registry now.
pub fn metrics_text(ctx: &Context) -> String {
    let warm = ctx.registry.warm_counts();
    ctx.metrics.set_queue_depth(ctx.registry.queue_depth());
    ctx.metrics.set_warm(warm.ready, warm.starting);
    ctx.metrics.encode(&ctx.registry.counts_by_type())
}

pub async fn status(ctx: &Context) -> StatusResult {
    let config = &ctx.config;
    StatusResult {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol: browserd_proto::PROTOCOL,
        pid: std::process::id(),
        uptime_ms: as_millis(ctx.started.elapsed()),
        reloads: ctx.reloads,
        sessions: ctx.registry.counts(),
        limits: Limits {
            max_sessions: config.max_sessions,
            grace_ms: as_millis(config.grace.0),
            max_grace_ms: as_millis(config.max_grace.0),
            default_ttl_ms: config.default_ttl.map(|t| as_millis(t.0)),
            max_ttl_ms: config.max_ttl.map(|t| as_millis(t.0)),
            lease_ttl_ms: as_millis(config.lease_ttl.0),
            max_lease_ttl_ms: as_millis(config.max_lease_ttl.0),
        },
        socket: config.socket.display().to_string(),
        containment: Some({
            let c = ctx.members.containment();
            ContainmentStatus {
                mode: c.mode.to_owned(),
                reason: c.reason,
                cgroup_root: c.cgroup_root,
                controllers: c.controllers,
            }
        }),
        pool: Some(ctx.pool.status(ctx.registry.warm_counts())),
        queue: Some(QueueStatus {
            depth: u32::try_from(ctx.registry.queue_depth()).unwrap_or(u32::MAX),
            max: config.max_queue,
            timeout_ms: as_millis(config.queue_timeout.0),
        }),
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
        pressure: Some(crate::pressure::pressure(ctx).await),
        http: ctx.server.http.addr().map(|addr| addr.to_string()),
    }
}
