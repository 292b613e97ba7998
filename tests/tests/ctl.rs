//! `browserctl` against a real daemon: its exit statuses (0 done, 1 a target failed, 2 bad
//! usage or invalid request, 3 daemon unreachable) and `--json` output.

use browserd_proto::{ErrorCode, SessionState, TerminateResult, PROTOCOL};
use browserd_tests::{run_ctl, DaemonGuard, Fixture};
use serde_json::Value;
use std::process::Output;

#[track_caller]
fn assert_exit(output: &Output, code: i32, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}: expected exit {code}, got {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Parses stdout as exactly one JSON document.
#[track_caller]
fn json_document(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "--json should print one JSON document ({e}); stdout:\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn kill_of_a_running_session_exits_0_and_terminates_it() {
    let d = DaemonGuard::start();
    let (session, _) = d.spawn(&Fixture::polite());

    let output = d.ctl(&["kill", session.id.as_str()]);

    assert_exit(&output, 0, "browserctl kill <id>");
    d.assert_session_gone(&session.id);
    assert_eq!(d.session(&session.id).state, SessionState::Exited);
}

#[test]
fn kill_of_an_unknown_id_exits_1() {
    let d = DaemonGuard::start();

    let output = d.ctl(&["kill", "no-such-session"]);

    assert_exit(&output, 1, "browserctl kill <unknown id>");
    assert!(
        !output.stderr.is_empty() || !output.stdout.is_empty(),
        "it says what failed"
    );
}

#[test]
fn bad_usage_exits_2() {
    let d = DaemonGuard::start();

    assert_exit(&d.ctl(&["--no-such-flag", "status"]), 2, "an unknown flag");
    assert_exit(&d.ctl(&["kill"]), 2, "kill without a target");
    assert_exit(&d.ctl(&["no-such-command"]), 2, "an unknown command");
    assert_exit(&d.ctl(&["kill", "a;b"]), 2, "an invalid session reference");
}

#[test]
fn terminate_that_selects_nothing_exits_2() {
    let d = DaemonGuard::start();
    let (session, tree) = d.spawn(&Fixture::sleeper());

    let output = d.ctl(&["terminate"]);

    assert_exit(&output, 2, "browserctl terminate (no selection)");
    d.assert_tree_alive(&tree);
    d.kill(session.id.as_str(), false, None);
    d.assert_all_sessions_gone();
}

#[test]
fn an_unreachable_daemon_exits_3() {
    let dir = tempfile::Builder::new()
        .prefix("bd")
        .tempdir_in("/tmp")
        .unwrap();
    let missing = dir.path().join("missing.sock");
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());

    for socket in [&missing, &stale] {
        let output = run_ctl(socket, &["status"]);
        assert_exit(&output, 3, &format!("status against {}", socket.display()));
        assert!(!output.stderr.is_empty(), "it says what to do next");
    }
}

#[test]
fn json_output_is_one_document_of_the_daemon_result() {
    let d = DaemonGuard::start();
    let (session, _) = d.spawn(&Fixture::polite());

    let status = d.ctl(&["--json", "status"]);
    assert_exit(&status, 0, "browserctl --json status");
    assert_eq!(json_document(&status)["protocol"], Value::from(PROTOCOL));

    let listing = d.ctl(&["--json", "ls"]);
    assert_exit(&listing, 0, "browserctl --json ls");
    assert!(
        json_document(&listing)
            .to_string()
            .contains(session.id.as_str()),
        "the listing shows the session"
    );

    let kill = d.ctl(&["--json", "kill", session.id.as_str()]);
    assert_exit(&kill, 0, "browserctl --json kill");
    let result: TerminateResult = serde_json::from_value(json_document(&kill)).unwrap();
    assert_eq!(result.terminated, vec![session.id.to_string()]);
    d.assert_session_gone(&session.id);

    let unknown = d.ctl(&["--json", "kill", "no-such-session"]);
    assert_exit(&unknown, 1, "browserctl --json kill <unknown id>");
    let result: TerminateResult = serde_json::from_value(json_document(&unknown)).unwrap();
    assert_eq!(result.failed[0].code, ErrorCode::NotFound);
}

#[test]
fn ls_shows_sessions_in_a_table() {
    let d = DaemonGuard::start();
    let (session, _) = d.spawn(&Fixture::sleeper());

    let output = d.ctl(&["ls"]);

    assert_exit(&output, 0, "browserctl ls");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains(session.id.as_str()), "{table}");
    d.kill(session.id.as_str(), false, None);
    d.assert_all_sessions_gone();
}

#[test]
fn terminate_by_workspace_with_force_exits_0() {
    let d = DaemonGuard::builder().grace("300ms").start();
    let fixture = Fixture::stubborn();
    let (session, _) = d.spawn_with(
        &fixture,
        browserd_proto::Launch {
            workspace: Some("ctl-ws".parse().unwrap()),
            ..fixture.launch()
        },
    );

    let output = d.ctl(&["terminate", "--workspace", "ctl-ws", "--force"]);

    assert_exit(&output, 0, "browserctl terminate --workspace --force");
    d.assert_session_gone(&session.id);
}
