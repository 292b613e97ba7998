//! The daemon as a process: its socket (mode, peer check, a second instance, a stale file),
//! `status`, and shutdown on SIGTERM/SIGINT leaving nothing behind.

use browserd_proto::{ErrorCode, Response, StatusResult, PROTOCOL};
use browserd_tests::peer::{request_as, PeerError};
use browserd_tests::{wait_until, DaemonGuard, Fixture};
use nix::sys::signal::Signal;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

/// The uid/gid of `nobody`, the unprivileged peer.
const NOBODY: u32 = 65534;

fn socket_mode(path: &Path) -> u32 {
    let meta = std::fs::metadata(path).expect("the socket exists");
    assert!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        path.display()
    );
    meta.permissions().mode() & 0o7777
}

/// Whether this process may switch uid (root); prints why a test is skipped otherwise.
fn can_switch_uid(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("skipping {test}: needs root to connect as uid {NOBODY}");
    }
    root
}

/// Makes one request as `nobody` and decodes the first response line.
#[track_caller]
fn request_as_nobody(d: &DaemonGuard, line: &str) -> Response {
    let answer = match request_as(d.socket(), NOBODY, NOBODY, line.as_bytes()) {
        Ok(answer) => answer,
        Err(PeerError::Connect(errno)) => panic!(
            "uid {NOBODY} could not even connect (errno {errno}): the socket's file mode should \
             let it reach the daemon's own peer check"
        ),
        Err(e) => panic!("cannot act as uid {NOBODY}: {e:?}"),
    };
    let first = answer.split(|&b| b == b'\n').next().unwrap_or_default();
    serde_json::from_slice(first).unwrap_or_else(|e| {
        panic!(
            "the daemon answered uid {NOBODY} with something that is not a response ({e}): {:?}",
            String::from_utf8_lossy(&answer)
        )
    })
}

#[test]
fn status_reports_protocol_pid_socket_counts_and_limits() {
    let d = DaemonGuard::builder()
        .max_sessions(7)
        .grace("300ms")
        .start();
    let (_session, _) = d.spawn(&Fixture::sleeper());

    let status = d.status();

    assert_eq!(status.protocol, PROTOCOL);
    assert_eq!(status.pid, d.pid() as u32);
    assert_eq!(Path::new(&status.socket), d.socket());
    assert!(!status.version.is_empty());
    assert_eq!(status.sessions.running, 1);
    assert_eq!(status.limits.max_sessions, 7);
    assert_eq!(status.limits.grace_ms, 300);

    d.kill("all", false, None);
    assert_eq!(d.status().sessions.running, 0);
    d.assert_all_sessions_gone();
}

#[test]
fn socket_is_created_with_mode_0660() {
    let d = DaemonGuard::start();
    assert_eq!(socket_mode(d.socket()), 0o660, "whatever the umask");
}

#[test]
fn socket_mode_flag_sets_the_socket_permissions() {
    let d = DaemonGuard::builder().socket_mode("0666").start();
    assert_eq!(socket_mode(d.socket()), 0o666, "whatever the umask");
}

/// A daemon reachable by uid `nobody` through the file system, so that only its peer check
/// decides. The socket is chmod'ed here too: its mode has its own test, and this keeps the
/// peer-check tests about the peer check.
fn daemon_open_to_everyone(builder: browserd_tests::DaemonBuilder) -> DaemonGuard {
    let d = builder.public_dir().socket_mode("0666").start();
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666))
        .expect("chmod the socket");
    d
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let d = DaemonGuard::start();
    let (session, tree) = d.spawn(&Fixture::polite());
    let before: StatusResult = d.status();

    let (exit, log) = d.start_second_instance(Duration::from_secs(10));

    assert!(
        !exit.success(),
        "the second daemon should fail, got {exit}; log:\n{log}"
    );
    assert!(d.try_exit().is_none(), "the first daemon keeps running");
    let after = d.status();
    assert_eq!(
        after.pid, before.pid,
        "the socket still belongs to the first daemon"
    );
    d.assert_tree_alive(&tree);

    d.kill(session.id.as_str(), false, None);
    d.assert_all_sessions_gone();
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let d = DaemonGuard::builder()
        .prepare(|socket| {
            // Bound, then closed: the file stays but nobody listens.
            drop(UnixListener::bind(socket).expect("bind a socket to leave behind"));
            assert!(UnixStream::connect(socket).is_err(), "the socket is dead");
        })
        .start();

    assert_eq!(d.status().pid, d.pid() as u32);
    let (session, _) = d.spawn(&Fixture::sleeper());
    d.kill(session.id.as_str(), false, None);
    d.assert_all_sessions_gone();
}

#[test]
fn sigterm_terminates_every_session_and_removes_the_socket() {
    let d = DaemonGuard::builder().grace("300ms").start();
    d.spawn(&Fixture::polite());
    d.spawn(&Fixture::stubborn());
    d.spawn(&Fixture::stubborn_stray());
    d.spawn(&Fixture::deep());

    d.send_signal(Signal::SIGTERM);
    let exit = d.wait_exit(Duration::from_secs(15));

    assert_eq!(
        exit.code(),
        Some(0),
        "browserd exits 0 on SIGTERM, got {exit}"
    );
    assert!(
        !d.socket().exists(),
        "the socket file is removed on shutdown"
    );
    d.assert_all_sessions_gone();
}

#[test]
fn a_second_signal_skips_the_rest_of_the_grace() {
    // A grace far longer than the wait below: only the second signal can end this in time.
    let d = DaemonGuard::builder().grace("60s").start();
    d.spawn(&Fixture::stubborn());
    d.spawn(&Fixture::stubborn_stray());

    d.send_signal(Signal::SIGTERM);
    // Shutdown has begun once the daemon stops accepting; only then is the second signal
    // a second one (two signals delivered together are one).
    wait_until(
        Duration::from_secs(10),
        "browserd to stop accepting",
        || UnixStream::connect(d.socket()).is_err(),
    );
    d.send_signal(Signal::SIGTERM);
    let exit = d.wait_exit(Duration::from_secs(20));

    assert_eq!(exit.code(), Some(0), "browserd exits 0, got {exit}");
    assert!(
        !d.socket().exists(),
        "the socket file is removed on shutdown"
    );
    d.assert_all_sessions_gone();
}

#[test]
fn sigint_shuts_down_like_sigterm() {
    let d = DaemonGuard::builder().grace("300ms").start();
    d.spawn(&Fixture::polite_stray());
    d.spawn(&Fixture::stubborn_sleeper());

    d.send_signal(Signal::SIGINT);
    let exit = d.wait_exit(Duration::from_secs(15));

    assert_eq!(
        exit.code(),
        Some(0),
        "browserd exits 0 on SIGINT, got {exit}"
    );
    assert!(
        !d.socket().exists(),
        "the socket file is removed on shutdown"
    );
    d.assert_all_sessions_gone();
}

#[test]
fn a_peer_with_a_disallowed_uid_is_refused() {
    if !can_switch_uid("a_peer_with_a_disallowed_uid_is_refused") {
        return;
    }
    let d = daemon_open_to_everyone(DaemonGuard::builder());
    let (session, tree) = d.spawn(&Fixture::polite());

    let status = request_as_nobody(&d, "{\"op\":\"status\"}\n");
    let kill = request_as_nobody(&d, "{\"op\":\"kill\",\"target\":\"all\",\"force\":true}\n");

    for response in [status, kill] {
        let error = response
            .error
            .clone()
            .unwrap_or_else(|| panic!("uid {NOBODY} must be refused, got {response:?}"));
        assert_eq!(error.code, ErrorCode::PermissionDenied, "{error}");
    }
    d.assert_tree_alive(&tree);
    assert_eq!(d.status().protocol, PROTOCOL, "root is still served");

    d.kill(session.id.as_str(), false, None);
    d.assert_all_sessions_gone();
}

#[test]
fn an_allowed_uid_is_served() {
    if !can_switch_uid("an_allowed_uid_is_served") {
        return;
    }
    let d = daemon_open_to_everyone(DaemonGuard::builder().allow_uid(NOBODY));

    let response = request_as_nobody(&d, "{\"op\":\"status\",\"req_id\":\"nobody\"}\n");

    let status: StatusResult = response.into_result().expect("uid 65534 is allowed");
    assert_eq!(status.protocol, PROTOCOL);
}

#[test]
fn json_logs_are_one_json_object_per_line() {
    let d = DaemonGuard::builder().flag("--log-format", "json").start();
    let session = d.launch_sandbox(&["sleep", "60"]);
    d.kill(session.id.as_str(), true, Some(100));

    let log = std::fs::read_to_string(d.log_path()).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the daemon logged nothing");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value.get("level").is_some() && value.get("fields").is_some(),
            "{line}"
        );
    }
    assert!(
        log.contains(session.id.as_str()),
        "the session's launch is logged"
    );
}
