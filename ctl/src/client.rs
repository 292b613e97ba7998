//! One request, one response over browserd's socket. Blocking and single-threaded on
//! purpose: the CLI sends exactly one line and reads exactly one back, so a runtime would only
//! add start-up time.

use crate::exit::LocalFailure;
use browserd_proto::{encode_request, RawResponse, Request, StatusResult};
use interprocess::local_socket::{prelude::*, GenericFilePath, Stream};
use serde_json::json;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    /// A reload was accepted, but the re-executed daemon did not answer in time.
    NotReloaded {
        socket: PathBuf,
        timeout: Duration,
        last: String,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { socket, error } if is_permission_error(error) => write!(
                f,
                "permission denied connecting to browserd at {}: {}, so the kernel refused \
                 before browserd saw the connection. Connect as a member of the socket's group \
                 (in a container: that gid as the primary or a supplementary group), have \
                 browserd give the socket one of your groups (--socket-group), or use a daemon \
                 of your own with --socket.",
                socket.display(),
                describe_file_access(socket)
            ),
            ClientError::NotReloaded {
                socket,
                timeout,
                last,
            } => write!(
                f,
                "browserd at {} accepted the reload but did not serve again within {} ({last}). \
                 Check its logs (journalctl -u browserd); if it is gone, start it: it takes \
                 its sessions up again from its journal.",
                socket.display(),
                humantime::format_duration(*timeout)
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

impl ClientError {
    /// How `--json` and the exit status report it.
    pub fn failure(&self) -> LocalFailure {
        match self {
            ClientError::Connect { error, .. } if is_permission_error(error) => {
                LocalFailure::PermissionDenied
            }
            _ => LocalFailure::Unreachable,
        }
    }
}

fn is_permission_error(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::PermissionDenied
}

/// Why the file system refused this user the socket (`EACCES` at connect): the socket file's
/// owner, group and mode and this user's ids, or the directory that cannot be passed.
fn describe_file_access(socket: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::geteuid();
    let mut gids = vec![nix::unistd::getegid()];
    for gid in nix::unistd::getgroups().unwrap_or_default() {
        if !gids.contains(&gid) {
            gids.push(gid);
        }
    }
    let gids: Vec<String> = gids.into_iter().map(describe_gid).collect();
    let me = format!("uid {uid} (groups [{}])", gids.join(", "));
    match std::fs::metadata(socket) {
        Ok(meta) => format!(
            "the socket file (mode {:04o}, owner uid {}, group {}) does not let {me} write to it",
            meta.mode() & 0o7777,
            meta.uid(),
            describe_gid(nix::unistd::Gid::from_raw(meta.gid())),
        ),
        Err(error) => format!(
            "a directory on the way to the socket does not let {me} through ({})",
            describe_io(&error)
        ),
    }
}

/// `10001(browserd)`, as `id` prints it, or the bare number for a group without a name here.
fn describe_gid(gid: nix::unistd::Gid) -> String {
    match nix::unistd::Group::from_gid(gid) {
        Ok(Some(group)) => format!("{gid}({})", group.name),
        _ => gid.to_string(),
    }
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
pub fn call(socket: &Path, request: &Request) -> Result<RawResponse, ClientError> {
    decode_response(socket, &ask(socket, request)?)
}

/// Sends `request` to the daemon at `socket` and returns its answer's line, as it came
/// (see [`decode_response`]).
pub fn ask(socket: &Path, request: &Request) -> Result<Vec<u8>, ClientError> {
    let stream = connect(socket).map_err(|error| ClientError::Connect {
        socket: socket.to_owned(),
        error,
    })?;
    let line = encode_request(Some(&json!(1)), request);
    exchange(&stream, line.as_bytes()).map_err(|error| ClientError::Io {
        socket: socket.to_owned(),
        error,
    })
}

/// A stream of lines from the daemon (`watch`), after its first response.
pub type Lines = BufReader<Stream>;

/// Sends `request` (a `watch`) and returns the connection, to read what follows, with the
/// daemon's first response.
pub fn open_stream(socket: &Path, request: &Request) -> Result<(Lines, RawResponse), ClientError> {
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
    let mut lines = BufReader::with_capacity(64 * 1024, stream);
    let mut first = Vec::new();
    lines.read_until(b'\n', &mut first).map_err(io_error)?;
    let response = decode_response(socket, &first)?;
    Ok((lines, response))
}

/// How often a reload's end is checked for (the new daemon answers a connection queued
/// meanwhile as soon as it serves; this only bounds retries after a refused one).
const RELOAD_POLL: Duration = Duration::from_millis(20);

/// Waits until the daemon at `socket` reports `reloads` reloads, i.e. the re-executed
/// daemon serves. Returns its status.
pub fn wait_reloaded(
    socket: &Path,
    reloads: u64,
    timeout: Duration,
) -> Result<StatusResult, ClientError> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match call(socket, &Request::Status).map(|r| r.into_result::<StatusResult>()) {
            Ok(Ok(status)) if status.reloads >= reloads => return Ok(status),
            Ok(Ok(status)) => format!("it still reports {} reload(s)", status.reloads),
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(ClientError::NotReloaded {
                socket: socket.to_owned(),
                timeout,
                last,
            });
        }
        std::thread::sleep(RELOAD_POLL);
    }
}

fn connect(socket: &Path) -> io::Result<Stream> {
    let name = socket.to_fs_name::<GenericFilePath>()?;
    Stream::connect(name)
}

/// Writes `line` and reads the one line that answers it. A daemon may answer and hang up
/// without reading the request (it refuses a peer it does not serve), so a write that
/// finds the connection closed is not the end: the answer may already be waiting.
fn exchange<S>(stream: &S, line: &[u8]) -> io::Result<Vec<u8>>
where
    for<'a> &'a S: Read + Write,
{
    let mut writer = stream;
    match writer.write_all(line) {
        Ok(()) => read_line(stream),
        Err(error) if is_hang_up(&error) => match read_line(stream) {
            Ok(answer) if !answer.iter().all(u8::is_ascii_whitespace) => Ok(answer),
            _ => Err(error),
        },
        Err(error) => Err(error),
    }
}

/// The errors a write gets when the peer closed the connection.
fn is_hang_up(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Reads one response line, however long: a `sessions` listing is not capped.
fn read_line<S>(stream: &S) -> io::Result<Vec<u8>>
where
    for<'a> &'a S: Read,
{
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    Ok(line)
}

/// The daemon's answer `answer` as a response, or what is wrong with it.
pub fn decode_response(socket: &Path, answer: &[u8]) -> Result<RawResponse, ClientError> {
    if answer.iter().all(u8::is_ascii_whitespace) {
        return Err(ClientError::NoAnswer {
            socket: socket.to_owned(),
        });
    }
    let response: RawResponse =
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
    fn an_answer_sent_before_the_peer_hung_up_is_read_even_when_the_write_fails() {
        let (client, daemon) = std::os::unix::net::UnixStream::pair().unwrap();
        let denied = br#"{"ok":false,"error":{"code":"permission_denied","message":"uid 5"}}"#;
        (&daemon).write_all(denied).unwrap();
        (&daemon).write_all(b"\n").unwrap();
        // Closed without reading anything: the write below fails with EPIPE.
        drop(daemon);
        let request = encode_request(Some(&json!(1)), &Request::Status);

        let answer = exchange(&client, request.as_bytes()).expect("the answer is read");

        let response = decode_response(Path::new("/s"), &answer).unwrap();
        assert_eq!(response.error.unwrap().code, ErrorCode::PermissionDenied);
    }

    #[test]
    fn a_peer_that_hangs_up_without_answering_is_a_lost_connection() {
        let (client, daemon) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(daemon);
        let error = exchange(&client, b"{\"op\":\"status\"}\n").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn connection_problems_map_to_json_codes() {
        let denied = ClientError::Connect {
            socket: PathBuf::from("/s"),
            error: io::Error::from_raw_os_error(nix::errno::Errno::EACCES as i32),
        };
        assert_eq!(denied.failure(), LocalFailure::PermissionDenied);
        let lost = ClientError::NoAnswer {
            socket: PathBuf::from("/s"),
        };
        assert_eq!(lost.failure(), LocalFailure::Unreachable);
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
