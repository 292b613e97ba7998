//! The endpoints, as small handlers that build the socket's requests and call the same
//! operations (`ops`), and the layers around them: auth, body size and time, a ceiling on
//! any answer, JSON error bodies, and a count of every request for `/metrics`.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /kill/{id}` | browserless: forced, default grace; 204, 404, or 500 with the failure |
//! | `GET /kill/all` | every live session, forced; 204 (500 with `{terminated, failed}` if any failed) |
//! | `POST /v1/sessions/bulk-terminate` | Chaser: 200 `{terminated, failed}`; 400 for an invalid body |
//! | `GET /sessions` | the `sessions` listing, filtered by query |
//! | `POST /v1/sessions` | `launch`; 201 with the session |
//! | `GET /pressure` | browserless's `{pressure: {...}}` |
//! | `GET /metrics` | the OpenMetrics text exposition |
//! | `GET /active` | 204 (no token needed) |
//! | `GET /v1/events` | Server-Sent Events (see `sse`) |

use super::auth::{self, Token};
use super::reply::{self, Failure};
use super::sse;
use crate::caller::Caller;
use crate::context::Context;
use crate::ops;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{from_fn_with_state, map_response, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use browserd_proto::{
    decode_body, BulkTerminate, ErrorCode, Kill, Launch, Pressure, Request as Op, SessionState,
    SessionType, SessionsFilter, Target, TerminateResult, TrackingId, WireError, Workspace,
};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::{RequestBodyDeadlineLayer, TimeoutLayer};

/// What `/metrics` is served as: prometheus-client writes OpenMetrics text (`_total`
/// counters, `# EOF`), which Prometheus asks for and parses.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every route, with its layers.
pub fn router(ctx: Arc<Context>, token: Option<Arc<Token>>) -> Router {
    let config = &ctx.config;
    // Operations bound their own durations; this only keeps a wedged one from holding a
    // client forever.
    let ceiling = config.launch_timeout.0 + config.max_grace.0 + Duration::from_secs(30);
    let mut guarded = Router::new()
        .route("/kill/{id}", get(kill))
        .route("/v1/sessions/bulk-terminate", post(bulk_terminate))
        .route("/sessions", get(sessions))
        .route("/v1/sessions", post(launch))
        .route("/pressure", get(pressure))
        .route("/metrics", get(metrics))
        .route("/v1/events", get(sse::events));
    if let Some(token) = token {
        guarded = guarded.route_layer(from_fn_with_state(token, auth::require));
    }
    guarded
        .route("/active", get(active))
        .fallback(unknown)
        .with_state(ctx.clone())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            ceiling,
        ))
        .layer(RequestBodyDeadlineLayer::new(config.http_client_timeout.0))
        .layer(RequestBodyLimitLayer::new(config.http_max_body))
        .layer(map_response(reply::json_errors))
        .layer(from_fn_with_state(ctx, count))
}

/// Runs an operation in a task of its own, as the socket server would: a client that hangs
/// up does not cancel it, and a reload waits for it to finish.
async fn run<T, Fut>(ctx: &Arc<Context>, op: impl FnOnce(Arc<Context>) -> Fut) -> Result<T, Failure>
where
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let permit = ctx.server.http.start_operation(ctx.server.phase())?;
    let running = op(ctx.clone());
    let task = tokio::spawn(async move {
        let answer = running.await;
        drop(permit);
        answer
    });
    task.await.map_err(|e| {
        WireError::new(ErrorCode::Internal, format!("the operation failed: {e}")).into()
    })
}

/// `GET /kill/{id}`: browserless's kill of one session (by id or tracking id) or `all`,
/// always forced, with the default grace.
async fn kill(
    State(ctx): State<Arc<Context>>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let target: Target = id.parse().map_err(|e| {
        let shown: String = id.chars().take(64).collect();
        Failure::from(WireError::new(
            ErrorCode::NotFound,
            format!(
                "no session with id or tracking id `{}` ({e})",
                shown.escape_debug()
            ),
        ))
    })?;
    let all = target == Target::All;
    let kill = Kill {
        target,
        force: true,
        grace_ms: None,
    };
    let result = run(&ctx, |ctx| async move { ops::kill_op(&ctx, kill).await }).await??;
    Ok(kill_answer(all, result))
}

/// 204 once everything selected is gone; a session that matched nothing is 404; any other
/// failure is 500 with the failure (for `all`, with the whole result).
fn kill_answer(all: bool, result: TerminateResult) -> Response {
    match result.failed.first() {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(_) if all => (StatusCode::INTERNAL_SERVER_ERROR, Json(result)).into_response(),
        Some(failure) if failure.code == ErrorCode::NotFound => {
            Failure::from(WireError::new(ErrorCode::NotFound, failure.message.clone()))
                .into_response()
        }
        Some(failure) => (StatusCode::INTERNAL_SERVER_ERROR, Json(failure)).into_response(),
    }
}

/// `POST /v1/sessions/bulk-terminate`: the Chaser body and response.
async fn bulk_terminate(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    reply::require_json(&headers)?;
    let bytes = reply::read_body(body).await?;
    let body: BulkTerminate = match decode_body("bulk_terminate", &bytes)? {
        Op::BulkTerminate(body) => body,
        other => return Err(decoded_as(other)),
    };
    let result = run(
        &ctx,
        |ctx| async move { ops::bulk_terminate(&ctx, body).await },
    )
    .await??;
    Ok(Json(result).into_response())
}

/// `POST /v1/sessions`: a launch; an empty body launches the default browser.
async fn launch(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let bytes = reply::read_body(body).await?;
    let launch: Launch = if bytes.is_empty() {
        Launch::default()
    } else {
        reply::require_json(&headers)?;
        match decode_body("launch", &bytes)? {
            Op::Launch(launch) => launch,
            other => return Err(decoded_as(other)),
        }
    };
    let session = run(&ctx, |ctx| async move {
        ops::launch_op(&ctx, launch, &Caller::detached()).await
    })
    .await??;
    Ok((StatusCode::CREATED, Json(session)).into_response())
}

/// A body decoded as another operation than asked: a bug, not the client's fault.
fn decoded_as(other: Op) -> Failure {
    WireError::new(
        ErrorCode::Internal,
        format!("the body decoded as `{}`", other.name()),
    )
    .into()
}

/// The filters `GET /sessions` takes, in the socket's spelling or browserless's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsQuery {
    workspace: Option<Workspace>,
    #[serde(alias = "type", alias = "sessionType")]
    session_type: Option<SessionType>,
    state: Option<SessionState>,
    #[serde(alias = "trackingId")]
    tracking_id: Option<TrackingId>,
    /// Taken by auth.
    #[allow(dead_code)]
    token: Option<IgnoredAny>,
}

/// `GET /sessions`: the `sessions` listing.
async fn sessions(
    State(ctx): State<Arc<Context>>,
    query: Result<Query<SessionsQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let Query(query) = query.map_err(|e| Failure::invalid(e.body_text()))?;
    let filter = SessionsFilter {
        workspace: query.workspace,
        session_type: query.session_type,
        state: query.state,
        tracking_id: query.tracking_id,
    };
    let listing = ops::sessions(&ctx, &filter).await;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        listing.into_string(),
    )
        .into_response())
}

/// `GET /pressure`, in browserless's shape (`{"pressure": {...}}`, camelCase), with the
/// host's memory in bytes besides.
async fn pressure(State(ctx): State<Arc<Context>>) -> Json<Value> {
    Json(browserless_pressure(&crate::pressure::pressure(&ctx).await))
}

fn browserless_pressure(pressure: &Pressure) -> Value {
    let date = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({"pressure": {
        "date": date,
        "isAvailable": pressure.available,
        "reason": pressure.reason.clone().unwrap_or_default(),
        "message": pressure.message.clone().unwrap_or_default(),
        "running": pressure.running,
        "queued": pressure.queued,
        "maxConcurrent": pressure.max_sessions,
        "maxQueued": pressure.max_queue,
        "cpu": pressure.cpu_percent,
        "memory": pressure.memory_percent,
        "memoryUsedBytes": pressure.memory_used_bytes,
        "memoryTotalBytes": pressure.memory_total_bytes,
    }})
}

/// `GET /metrics`.
async fn metrics(State(ctx): State<Arc<Context>>) -> Response {
    ([(CONTENT_TYPE, OPENMETRICS)], ops::metrics_text(&ctx)).into_response()
}

/// `GET /active`: the daemon serves.
async fn active() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn unknown(method: Method, uri: Uri) -> Failure {
    WireError::new(
        ErrorCode::NotFound,
        format!("no endpoint {method} {}", uri.path()),
    )
    .into()
}

/// Counts every request by method, route and status, and logs it by path: never its
/// query, which may hold the token.
async fn count(State(ctx): State<Arc<Context>>, request: Request, next: Next) -> Response {
    let method = match *request.method() {
        Method::GET | Method::POST | Method::HEAD | Method::PUT | Method::DELETE => {
            request.method().as_str().to_owned()
        }
        _ => "other".to_owned(),
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    ctx.metrics.http_request(&method, &route, status);
    tracing::debug!(method, path, status, "HTTP request");
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use browserd_proto::Failure as Failed;

    #[test]
    fn kills_answer_as_browserless_does() {
        let done = TerminateResult {
            terminated: vec!["a-1".into()],
            failed: vec![],
        };
        assert_eq!(kill_answer(false, done.clone()).status(), 204);
        assert_eq!(kill_answer(true, done).status(), 204);
        let failed = |code| TerminateResult {
            terminated: vec![],
            failed: vec![Failed {
                id: "x".into(),
                code,
                message: "m".into(),
                pids: vec![7],
            }],
        };
        assert_eq!(
            kill_answer(false, failed(ErrorCode::NotFound)).status(),
            404
        );
        assert_eq!(
            kill_answer(false, failed(ErrorCode::KillFailed)).status(),
            500
        );
        assert_eq!(
            kill_answer(true, failed(ErrorCode::KillFailed)).status(),
            500
        );
    }

    #[test]
    fn pressure_has_browserless_names() {
        let pressure = Pressure {
            running: 3,
            queued: 0,
            max_sessions: 3,
            max_queue: 0,
            cpu_percent: 12.5,
            memory_percent: 40.0,
            memory_used_bytes: 4,
            memory_total_bytes: 10,
            available: false,
            reason: Some("capacity".into()),
            message: Some("full".into()),
        };
        let value = browserless_pressure(&pressure);
        let p = &value["pressure"];
        assert_eq!(p["isAvailable"], false);
        assert_eq!(p["reason"], "capacity");
        assert_eq!(p["maxConcurrent"], 3);
        assert_eq!(p["cpu"], 12.5);
        assert!(p["date"].as_u64().unwrap() > 1_600_000_000_000);
    }
}
