//! The real `browserctl` binary against failures it must find and report itself: bad usage,
//! unreadable input, no daemon, a daemon that hangs up, something that is not a daemon, and
//! a daemon that refuses the user and closes before reading the request. With `--json` each
//! is exactly one JSON object on stdout, `{"code", "message"}`, with the documented exit
//! status. The daemons here are fakes: a plain `UnixListener` that answers as told.

use serde_json::Value;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;

/// What the fake daemon does with each connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Writes this line at once and closes without reading anything.
    AnswerUnread(&'static str),
    /// Closes at once without a word.
    HangUp,
}

/// A fake daemon serving `connections` connections in the given way, then stopping.
struct FakeDaemon {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl FakeDaemon {
    fn start(behaviour: Behaviour, connections: usize) -> FakeDaemon {
        let dir = tempfile::tempdir().expect("a temp dir");
        let socket = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&socket).expect("bind the fake socket");
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming().take(connections) {
                let Ok(mut stream) = stream else { continue };
                if let Behaviour::AnswerUnread(line) = behaviour {
                    let _ = stream.write_all(line.as_bytes());
                }
                // Dropped unread: the kernel resets a peer that still sends.
            }
        });
        FakeDaemon {
            _dir: dir,
            socket,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            if !std::thread::panicking() {
                thread.join().expect("the fake daemon thread");
            }
        }
    }
}

const DENIED: &str = "{\"ok\":false,\"error\":{\"code\":\"permission_denied\",\"message\":\"uid 1234 may not use this browserd\"}}\n";

/// Runs browserctl with `args` against `socket`, feeding `stdin`.
fn browserctl(socket: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_browserctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("BROWSERD_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn browserctl");
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin.as_bytes()).expect("feed stdin");
    drop(input);
    child.wait_with_output().expect("browserctl runs")
}

/// Asserts that stdout is exactly one JSON error object with `code`, nothing is on stderr,
/// and the exit status is `exit`; returns the message.
#[track_caller]
fn assert_json_error(output: &Output, code: &str, exit: i32) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let context = format!(
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(exit), "{context}");
    assert_eq!(stdout.matches('\n').count(), 1, "one line: {context}");
    let value: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {context}"));
    let object = value.as_object().expect("an object");
    assert_eq!(object.len(), 2, "only code and message: {context}");
    assert_eq!(value["code"], code, "{context}");
    assert!(output.stderr.is_empty(), "{context}");
    let message = value["message"].as_str().expect("a message").to_owned();
    assert!(!message.is_empty(), "{context}");
    message
}

#[test]
fn usage_problems_are_one_invalid_request_object_and_exit_2() {
    let nowhere = Path::new("/nonexistent/browserd.sock");
    for (args, stdin, needle) in [
        (
            &["--json", "terminate", "--request", "-"][..],
            "{}",
            "selects nothing",
        ),
        (&["--json", "terminate", "--request", "-"], "[", "stdin"),
        (
            &["--json", "terminate", "--request", "/nonexistent/body.json"],
            "",
            "/nonexistent/body.json",
        ),
        (&["--json", "launch", "--type", "sandbox"], "", "command"),
        (&["--json", "launch", "--ttl", "10000y"], "", "10000y"),
        (
            &["--json", "lease", "abc", "--ttl", "99999999h"],
            "",
            "100years",
        ),
        (
            &["--json", "kill", "all", "--grace", "200y"],
            "",
            "100years",
        ),
        (
            &["--json", "--no-such-flag", "status"],
            "",
            "--no-such-flag",
        ),
        (
            &["status", "--json", "--no-such-flag"],
            "",
            "--no-such-flag",
        ),
        (&["--json", "no-such-command"], "", "no-such-command"),
        (&["--json", "kill"], "", "TARGET"),
        (&["--json", "kill", "a;b"], "", "a;b"),
    ] {
        let output = browserctl(nowhere, args, stdin);
        let message = assert_json_error(&output, "invalid_request", 2);
        assert!(message.contains(needle), "{args:?}: {message}");
    }
}

#[test]
fn without_json_usage_problems_go_to_stderr_only() {
    let output = browserctl(
        Path::new("/nonexistent/browserd.sock"),
        &["terminate", "--request", "-"],
        "{}",
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("selects nothing"));
}

#[test]
fn no_answer_from_the_daemon_is_an_unreachable_object_and_exit_3() {
    let output = browserctl(
        Path::new("/nonexistent/browserd.sock"),
        &["--json", "status"],
        "",
    );
    let message = assert_json_error(&output, "unreachable", 3);
    assert!(message.contains("/nonexistent/browserd.sock"), "{message}");

    let hangs_up = FakeDaemon::start(Behaviour::HangUp, 1);
    let output = browserctl(&hangs_up.socket, &["--json", "ls"], "");
    assert_json_error(&output, "unreachable", 3);

    let not_browserd =
        FakeDaemon::start(Behaviour::AnswerUnread("HTTP/1.1 400 Bad Request\r\n"), 1);
    let output = browserctl(&not_browserd.socket, &["--json", "status"], "");
    let message = assert_json_error(&output, "unreachable", 3);
    assert!(message.contains("not a browserd response"), "{message}");
}

/// A daemon that refuses a user answers and closes at once, often before the client has
/// written its request; whichever comes first, the user must see the refusal.
#[test]
fn a_refusal_sent_before_the_request_is_read_is_always_reported() {
    const RUNS: usize = 100;
    let daemon = FakeDaemon::start(Behaviour::AnswerUnread(DENIED), 2 * RUNS);
    for run in 0..RUNS {
        let output = browserctl(&daemon.socket, &["status"], "");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "run {run}: {stderr}");
        assert!(
            stderr.contains("uid 1234 may not use this browserd (permission_denied)"),
            "run {run}: {stderr}"
        );
        assert!(
            !stderr.contains("lost the connection"),
            "run {run}: {stderr}"
        );

        let output = browserctl(&daemon.socket, &["--json", "status"], "");
        let message = assert_json_error(&output, "permission_denied", 3);
        assert!(message.contains("uid 1234"), "run {run}: {message}");
    }
}

/// A socket whose file permissions keep the user out (as root, only another uid shows it).
#[test]
fn a_socket_the_user_may_not_open_is_a_permission_denied_object() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to run browserctl as another uid");
        return;
    }
    let daemon = FakeDaemon::start(Behaviour::HangUp, 1);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dir = daemon.socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    use std::os::unix::process::CommandExt;
    let output = Command::new(env!("CARGO_BIN_EXE_browserctl"))
        .args(["--json", "--socket"])
        .arg(&daemon.socket)
        .arg("status")
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .expect("run browserctl as nobody");
    let message = assert_json_error(&output, "permission_denied", 3);
    assert!(message.contains("group"), "{message}");
    // Let the fake daemon's accept loop end.
    let _ = std::os::unix::net::UnixStream::connect(&daemon.socket);
}
