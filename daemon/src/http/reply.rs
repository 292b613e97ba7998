//! How HTTP answers: every failure is `{"error": {"code", "message"}}` with the status its
//! code deserves (the same codes as the socket), including the ones the layers produce
//! (an oversized body, a slow one); request bodies are read and checked here.

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use browserd_proto::{ErrorCode, WireError};
use serde_json::json;

/// A failed request: its status and the error the body carries.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    error: WireError,
}

impl Failure {
    pub fn new(status: StatusCode, error: WireError) -> Failure {
        Failure { status, error }
    }

    pub fn invalid(message: impl Into<String>) -> Failure {
        WireError::new(ErrorCode::InvalidRequest, message).into()
    }
}

impl From<WireError> for Failure {
    fn from(error: WireError) -> Failure {
        Failure {
            status: status_of(error.code),
            error,
        }
    }
}

impl From<crate::error::Error> for Failure {
    fn from(error: crate::error::Error) -> Failure {
        WireError::from(error).into()
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.error }))).into_response();
        if self.error.code == ErrorCode::Reloading {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The status of a request that failed with `code`.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidJson | ErrorCode::InvalidRequest | ErrorCode::UnknownOp => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::FrameTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict | ErrorCode::Leased | ErrorCode::NotRunning => StatusCode::CONFLICT,
        // browserless answers 429 when it has no room for another browser.
        ErrorCode::Capacity => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ShuttingDown | ErrorCode::Reloading => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::KillFailed
        | ErrorCode::LaunchFailed
        | ErrorCode::ReloadFailed
        | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The code an error status that did not come with one stands for.
fn code_of(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::FrameTooLarge,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::Capacity,
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => ErrorCode::Timeout,
        status if status.is_client_error() => ErrorCode::InvalidRequest,
        _ => ErrorCode::Internal,
    }
}

/// Checks that a body is declared as JSON (`application/json`, any parameters).
pub fn require_json(headers: &HeaderMap) -> Result<(), Failure> {
    let declared = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = declared.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    let shown = if declared.is_empty() {
        "none".to_owned()
    } else {
        format!("`{}`", declared.escape_debug())
    };
    Err(Failure::invalid(format!(
        "the body must be JSON, sent with Content-Type: application/json (got {shown})"
    )))
}

/// Reads a request body whole. The layers bound its size and the time it may take; their
/// errors become 413 and 408.
pub async fn read_body(body: Body) -> Result<Bytes, Failure> {
    axum::body::to_bytes(body, usize::MAX).await.map_err(|e| {
        if caused_by::<http_body_util::LengthLimitError>(&e) {
            return Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                WireError::new(ErrorCode::FrameTooLarge, "the request body is too large"),
            );
        }
        if caused_by::<tower_http::timeout::TimeoutError>(&e) {
            return Failure::new(
                StatusCode::REQUEST_TIMEOUT,
                WireError::new(
                    ErrorCode::Timeout,
                    "the request body took too long to arrive",
                ),
            );
        }
        Failure::invalid(format!("cannot read the request body: {e}"))
    })
}

fn caused_by<T: std::error::Error + 'static>(error: &axum::Error) -> bool {
    std::iter::successors(std::error::Error::source(error), |cause| cause.source())
        .any(|cause| cause.is::<T>())
}

/// Gives every error response a JSON error body: the layers (body limit, timeouts) answer
/// with plain text, whose words become the message.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let mut answer = Failure::new(status, WireError::new(code_of(status), message)).into_response();
    for (name, value) in parts.headers.iter() {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}
