//! One request, one response over browserd's socket. Blocking and single-threaded on
//! purpose: the CLI sends exactly one line and reads exactly one back, so a runtime would only
//! add start-up time.

use browserd_proto::{encode_request, Request, Response};
use interprocess::local_socket::{prelude::*, GenericFilePath, Stream};
use serde_json::json;
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Why no response could be had. Every variant means "the daemon did not answer" (exit 3);
/// an answer that reports an error is a [`Response`], not a `ClientError`.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing accepted the connection: no daemon, a stale socket file, or no permission.
    Connect { socket: PathBuf, error: io::Error },
    /// The connection broke while sending or receiving.
    Io { socket: PathBuf, error: io::Error },
    /// The daemon closed the connection without answering.
    NoAnswer { socket: PathBuf },
    /// The answer is not a browserd response; something else may be listening there.
    BadAnswer { socket: PathBuf, detail: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { socket, error } if is_permission_error(error) => write!(
                f,
                "permission denied connecting to browserd at {} ({}). The socket is only open to \
                 its owner and group: join the socket's group, ask for your uid to be allowed \
                 (browserd --allow-uid), or use a daemon of your own with --socket.",
                socket.display(),
                describe_io(error)
            ),
            ClientError::Connect { socket, error } => write!(
                f,
                "cannot reach browserd at {} ({}). Is browserd running? Start it with \
                 `browserd`, or pass --socket / set BROWSERD_SOCKET.",
                socket.display(),
                describe_io(error)
            ),
            ClientError::Io { socket, error } => write!(
                f,
                "lost the connection to browserd at {} ({}). The daemon may have stopped; \
                 check it with `browserctl status`.",
                socket.display(),
                describe_io(error)
            ),
            ClientError::NoAnswer { socket } => write!(
                f,
                "browserd at {} closed the connection without answering. Check the daemon's \
                 logs.",
                socket.display()
            ),
            ClientError::BadAnswer { socket, detail } => write!(
                f,
                "the answer from {} is not a browserd response ({detail}). Is something else \
                 listening on that socket?",
                socket.display()
            ),
        }
    }
}

impl std::error::Error for ClientError {}

fn is_permission_error(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::PermissionDenied
}

/// `io::Error`'s Display appends "(os error 2)"; people only need the sentence.
fn describe_io(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

/// Sends `request` to the daemon at `socket` and returns its response.
pub fn call(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let stream = connect(socket).map_err(|error| ClientError::Connect {
        socket: socket.to_owned(),
        error,
    })?;
    let io_error = |error| ClientError::Io {
        socket: socket.to_owned(),
        error,
    };
    let line = encode_request(Some(&json!(1)), request);
    (&stream).write_all(line.as_bytes()).map_err(io_error)?;
    let answer = read_line(&stream).map_err(io_error)?;
    decode_response(socket, &answer)
}

fn connect(socket: &Path) -> io::Result<Stream> {
    let name = socket.to_fs_name::<GenericFilePath>()?;
    Stream::connect(name)
}

/// Reads one response line, however long: a `sessions` listing is not capped.
fn read_line(stream: &Stream) -> io::Result<Vec<u8>> {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    Ok(line)
}

fn decode_response(socket: &Path, answer: &[u8]) -> Result<Response, ClientError> {
    if answer.iter().all(u8::is_ascii_whitespace) {
        return Err(ClientError::NoAnswer {
            socket: socket.to_owned(),
        });
    }
    let response: Response =
        serde_json::from_slice(answer).map_err(|e| ClientError::BadAnswer {
            socket: socket.to_owned(),
            detail: e.to_string(),
        })?;
    if !response.ok && response.error.is_none() {
        return Err(ClientError::BadAnswer {
            socket: socket.to_owned(),
            detail: "it failed without an `error`".to_owned(),
        });
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use browserd_proto::ErrorCode;

    #[test]
    fn a_missing_socket_says_how_to_start_the_daemon() {
        let socket = Path::new("/nonexistent/browserd.sock");
        let error = call(socket, &Request::Status).unwrap_err();
        assert!(matches!(error, ClientError::Connect { .. }));
        let text = error.to_string();
        assert!(text.contains("/nonexistent/browserd.sock"), "{text}");
        assert!(text.contains("No such file or directory)"), "{text}");
        assert!(text.contains("BROWSERD_SOCKET"), "{text}");
    }

    #[test]
    fn permission_problems_point_at_the_socket_group() {
        let error = ClientError::Connect {
            socket: PathBuf::from("/run/browserd/browserd.sock"),
            error: io::Error::from_raw_os_error(nix::errno::Errno::EACCES as i32),
        };
        assert!(error.to_string().contains("group"), "{error}");
    }

    #[test]
    fn responses_decode_and_garbage_is_reported() {
        let socket = Path::new("/s");
        let ok = decode_response(socket, b"{\"req_id\":1,\"ok\":true,\"result\":{}}\n").unwrap();
        assert!(ok.ok);
        let err = decode_response(
            socket,
            br#"{"ok":false,"error":{"code":"not_found","message":"no"}}"#,
        )
        .unwrap();
        assert_eq!(err.error.unwrap().code, ErrorCode::NotFound);
        assert!(matches!(
            decode_response(socket, b"HTTP/1.1 400\r\n"),
            Err(ClientError::BadAnswer { .. })
        ));
        assert!(matches!(
            decode_response(socket, b"{\"ok\":false}\n"),
            Err(ClientError::BadAnswer { .. })
        ));
        assert!(matches!(
            decode_response(socket, b""),
            Err(ClientError::NoAnswer { .. })
        ));
    }
}
