//! HTTP authentication: one token, read from `--http-token-file` (never taken on the command
//! line, where every local user could read it), accepted as `?token=` (browserless) or
//! `Authorization: Bearer` (Chaser), compared in constant time. Anything else gets 401. The
//! token is never logged or echoed: requests are logged by path, without their query.

use super::reply::Failure;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use browserd_proto::{ErrorCode, WireError};
use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The longest token file read.
const MAX_FILE: u64 = 4096;

/// The secret an HTTP client must present.
pub struct Token(Vec<u8>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Reads the token: the file's first line, without surrounding whitespace.
    pub fn load(path: &Path) -> Result<Token, String> {
        let shown = path.display();
        let file = std::fs::File::open(path)
            .map_err(|e| format!("cannot read the HTTP token file {shown}: {e}"))?;
        if let Ok(meta) = file.metadata() {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    file = %shown,
                    "the HTTP token file is readable by others than its owner; chmod 600 it"
                );
            }
        }
        let mut text = String::new();
        file.take(MAX_FILE)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the HTTP token file {shown}: {e}"))?;
        let token = text.lines().next().unwrap_or_default().trim();
        if token.is_empty() {
            return Err(format!(
                "the HTTP token file {shown} is empty; put the token on its first line"
            ));
        }
        Ok(Token(token.as_bytes().to_vec()))
    }

    /// Whether `candidate` is the token. The comparison takes the same time wherever the
    /// two differ (only a difference in length answers early).
    fn matches(&self, candidate: &[u8]) -> bool {
        bool::from(self.0.as_slice().ct_eq(candidate))
    }

    /// Whether `request` presents the token, in its query or as a bearer token.
    fn admits(&self, request: &Request) -> bool {
        let bearer = request
            .headers()
            .get_all(AUTHORIZATION)
            .iter()
            .filter_map(bearer_token);
        let query = request.uri().query().map(query_tokens).unwrap_or_default();
        // Every candidate is compared, so which one matched takes no different time.
        bearer
            .chain(query.iter().map(Vec::as_slice))
            .fold(false, |admitted, candidate| {
                self.matches(candidate) | admitted
            })
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme is case-insensitive).
fn bearer_token(value: &HeaderValue) -> Option<&[u8]> {
    let value = value.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// The values of every `token=` in a query string, percent-decoded.
fn query_tokens(query: &str) -> Vec<Vec<u8>> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key == "token")
        .map(|(_, value)| value.into_bytes())
        .collect()
}

/// The middleware: passes a request that presents the token, answers 401 otherwise.
pub async fn require(State(token): State<Arc<Token>>, request: Request, next: Next) -> Response {
    if token.admits(&request) {
        return next.run(request).await;
    }
    tracing::debug!(
        method = %request.method(),
        path = request.uri().path(),
        "HTTP request without a valid token"
    );
    let failure = Failure::new(
        StatusCode::UNAUTHORIZED,
        WireError::new(
            ErrorCode::Unauthorized,
            "this endpoint needs browserd's HTTP token: add ?token=TOKEN, or send Authorization: Bearer TOKEN",
        ),
    );
    let mut response = failure.into_response();
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"browserd\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn token(text: &str) -> Token {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        Token::load(file.path()).unwrap()
    }

    fn request(uri: &str, authorization: Option<&str>) -> Request {
        let mut builder = Request::builder().uri(uri);
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn the_token_is_the_first_line_of_its_file() {
        let t = token("  s3cret \nignored\n");
        assert!(t.matches(b"s3cret"));
        assert!(!t.matches(b"s3cre"));
        assert!(!t.matches(b"s3cret "));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        let empty = tempfile::NamedTempFile::new().unwrap();
        let err = Token::load(empty.path()).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let err = Token::load(Path::new("/nonexistent/token")).unwrap_err();
        assert!(err.contains("/nonexistent/token"), "{err}");
    }

    #[test]
    fn the_token_is_accepted_in_the_query_or_as_a_bearer_token() {
        let t = token("a+b/c");
        assert!(t.admits(&request("/kill/x?token=a%2Bb%2Fc", None)));
        assert!(t.admits(&request("/kill/x?x=1&token=a%2Bb/c", None)));
        assert!(t.admits(&request("/sessions", Some("Bearer a+b/c"))));
        assert!(t.admits(&request("/sessions", Some("bearer  a+b/c"))));
        assert!(t.admits(&request("/s?token=wrong", Some("Bearer a+b/c"))));
        for (uri, header) in [
            ("/sessions", None),
            ("/sessions?token=", None),
            ("/sessions?token=a+b/c", None),
            ("/sessions?tokens=a%2Bb%2Fc", None),
            ("/sessions", Some("Basic a+b/c")),
            ("/sessions", Some("Bearer")),
            ("/sessions", Some("Bearer wrong")),
        ] {
            assert!(!t.admits(&request(uri, header)), "{uri} {header:?}");
        }
    }
}
