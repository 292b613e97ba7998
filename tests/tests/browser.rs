//! Real Chromium sessions, end to end: the daemon launches Debian's `chromium`, the test
//! drives it over CDP like a user would, and every kill must leave nothing behind — no
//! process (in the group, out of it, or reparented to the daemon), no profile dir, no
//! TMPDIR, no Chromium temp dir in `/tmp`.
//!
//! Chromium rewrites its argv/environ area for process titles, so most of its processes
//! no longer show the session marker: a session's processes are found by the marker, by the
//! profile path on their command line, and by descent from those, and every process seen
//! is remembered (pid + start time) so a survivor is caught even if it lost all three.
//!
//! These tests need Chromium (CI installs Debian's `chromium`); they fail without it unless
//! `BROWSERD_TEST_SKIP_BROWSER=1` says to skip them. Browsers are heavy, so the tests run one
//! at a time.

use browserd_proto::{
    BulkTerminate, ErrorCode, ExitStatus, Launch, SessionId, SessionInfo, SessionState,
    SessionsFilter,
};
use browserd_tests::cdp::{CdpError, PageServer};
use browserd_tests::chromium::{cdp, cmdline_mentions, in_workspace, Browsers, BROWSER_TIMEOUT};
use browserd_tests::procfs::ProcInfo;
use browserd_tests::{assert_terminated_exactly, wait_for, DaemonGuard};
use serde_json::json;
use std::time::{Duration, Instant};

/// The title of the test page.
const TITLE: &str = "browserd-test";
#[test]
fn a_browser_serves_cdp_loads_a_page_and_closes_politely_when_killed() {
    let Some(b) = Browsers::start() else { return };
    let server = PageServer::start(TITLE);
    let session = b.launch_default();

    let mut cdp = cdp(&session);
    let product = cdp.product().expect("Browser.getVersion");
    assert!(
        product.contains("Chrome") || product.contains("Chromium"),
        "Browser.getVersion product: {product}"
    );
    let page = cdp.open_page(&server.url()).expect("open the test page");
    cdp.wait_title(&page, TITLE, BROWSER_TIMEOUT);
    b.assert_temp_in_session_tmpdir(&session);
    b.wait_settled(&session);

    let result = b.d.kill(session.id.as_str(), false, None);

    assert_terminated_exactly(&result, &[&session.id]);
    b.assert_gone(&session);
    assert_eq!(
        b.d.session(&session.id).exit,
        Some(ExitStatus::Code(0)),
        "Browser.close makes Chromium exit 0"
    );
    b.assert_clean();
}

#[test]
fn a_forced_kill_without_grace_leaves_nothing_of_a_browser() {
    let Some(b) = Browsers::start() else { return };
    let session = b.launch_default();
    b.wait_settled(&session);

    let result = b.d.kill(session.id.as_str(), true, Some(0));

    assert_terminated_exactly(&result, &[&session.id]);
    b.assert_gone(&session);
    b.assert_clean();
}

#[test]
fn a_browser_whose_page_busy_loops_is_still_killed_completely() {
    let Some(b) = Browsers::start() else { return };
    let session = b.launch_default();
    let mut cdp = cdp(&session);
    let page = cdp.open_page("about:blank").expect("open a blank page");
    assert_eq!(cdp.evaluate(&page, "1 + 1").expect("evaluate"), json!(2));
    cdp.send(
        Some(&page.session_id),
        "Runtime.evaluate",
        json!({ "expression": "while (true) {}" }),
    )
    .expect("send the busy loop");
    let probe = cdp
        .send(
            Some(&page.session_id),
            "Runtime.evaluate",
            json!({ "expression": "1" }),
        )
        .expect("send a probe");
    assert!(
        matches!(
            cdp.answer(probe, Duration::from_millis(500)),
            Err(CdpError::Timeout)
        ),
        "the page should be stuck in its loop"
    );
    b.processes(&session);

    let result = b.d.kill(session.id.as_str(), false, None);

    assert_terminated_exactly(&result, &[&session.id]);
    b.assert_gone(&session);
    b.assert_clean();
}

#[test]
fn crash_handlers_that_leave_the_group_die_with_their_browser() {
    let Some(b) = Browsers::start() else { return };
    let session = b.launch(Launch {
        args: vec!["--enable-crash-reporter".into()],
        ..Launch::default()
    });
    let root = b.sessions_dir().join(session.id.as_str());
    let handlers = wait_for(
        BROWSER_TIMEOUT,
        "chrome_crashpad_handler processes in the session",
        || {
            let handlers: Vec<ProcInfo> = b
                .processes(&session)
                .into_iter()
                .filter(|p| p.comm.starts_with("chrome_crashpad"))
                .collect();
            (!handlers.is_empty()).then_some(handlers)
        },
    );
    for handler in &handlers {
        assert_eq!(
            handler.session.as_deref(),
            Some(session.id.as_str()),
            "a crash handler carries the session marker: {handler:?}"
        );
        assert_ne!(
            handler.pgid, session.pgid,
            "the crash handler left the browser's group: {handler:?}"
        );
        assert_eq!(
            handler.ppid,
            b.d.pid(),
            "the crash handler was reparented to the daemon: {handler:?}"
        );
        let database = format!("--database={}/", root.display());
        assert!(
            cmdline_mentions(handler.pid, &database),
            "the crash handler keeps its database in the session dir ({database}…), \
             not in the daemon user's home: {handler:?}"
        );
    }

    let result = b.d.kill(session.id.as_str(), false, None);

    assert_terminated_exactly(&result, &[&session.id]);
    for handler in &handlers {
        assert!(
            handler.id().current().is_none(),
            "crash handler {} survived",
            handler.pid
        );
    }
    b.assert_gone(&session);
    b.assert_clean();
}

#[test]
fn a_browser_that_exits_at_start_fails_the_launch_with_its_stderr() {
    let Some(b) = Browsers::start() else { return };
    // Without the pipes it asks for, Chromium exits at once and says why on stderr.
    let error =
        b.d.launch(Launch {
            args: vec!["--remote-debugging-pipe".into()],
            ..Launch::default()
        })
        .expect_err("Chromium cannot start without its debugging pipes");

    assert_eq!(error.code, ErrorCode::LaunchFailed, "{error}");
    assert!(
        error
            .message
            .contains("Remote debugging pipe file descriptors are not open"),
        "the error carries Chromium's stderr: {error}"
    );
    assert_failed_launch_left_nothing(&b);
}

#[test]
fn a_browser_that_never_announces_its_endpoint_times_out_and_is_cleaned_up() {
    let builder = DaemonGuard::builder().flag("--launch-timeout", "1s");
    let Some(b) = Browsers::start_with(builder) else {
        return;
    };
    b.require_chromium();
    // An invalid port makes Chromium run without ever opening its DevTools server.
    let start = Instant::now();
    let error =
        b.d.launch(Launch {
            args: vec!["--remote-debugging-port=-5".into()],
            ..Launch::default()
        })
        .expect_err("no endpoint is ever announced");

    assert_eq!(error.code, ErrorCode::LaunchFailed, "{error}");
    assert!(
        error.message.contains("no DevTools endpoint within 1s"),
        "{error}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the launch timeout is honoured (took {:?})",
        start.elapsed()
    );
    assert_failed_launch_left_nothing(&b);
}

#[test]
fn a_missing_browser_fails_the_launch_and_status_says_why() {
    let missing = "/nonexistent/chromium";
    let Some(b) = Browsers::start_with(DaemonGuard::builder().flag("--browser", missing)) else {
        return;
    };
    let browser = b.d.status().browser.expect("status reports the browser");
    assert_eq!(browser.path, None, "{browser:?}");
    let status_error = browser.error.expect("status says why there is no browser");
    assert!(status_error.contains(missing), "{status_error}");

    let error =
        b.d.launch(Launch::default())
            .expect_err("there is no browser to launch");

    assert_eq!(error.code, ErrorCode::LaunchFailed, "{error}");
    assert!(error.message.contains(missing), "{error}");
    assert_failed_launch_left_nothing(&b);
}

/// After a failed launch: no live session, no session dir, no process.
#[track_caller]
fn assert_failed_launch_left_nothing(b: &Browsers) {
    let live: Vec<SessionInfo> =
        b.d.sessions(SessionsFilter::default())
            .into_iter()
            .filter(|s| s.state != SessionState::Exited)
            .collect();
    assert!(live.is_empty(), "a failed launch left sessions: {live:#?}");
    for session in b.d.sessions(SessionsFilter::default()) {
        b.assert_gone(&session);
    }
    b.assert_clean();
}

#[test]
fn bulk_terminate_of_a_workspace_kills_its_five_browsers_at_once_and_spares_others() {
    let Some(b) = Browsers::start() else { return };
    let doomed: Vec<SessionInfo> = (0..5).map(|_| b.launch(in_workspace("w5"))).collect();
    let survivor = b.launch(in_workspace("w6"));
    for session in doomed.iter().chain([&survivor]) {
        b.wait_processes(session, 3);
    }

    let result = b.d.bulk(BulkTerminate {
        workspaces: Some(vec!["w5".parse().unwrap()]),
        ..Default::default()
    });

    let ids: Vec<&SessionId> = doomed.iter().map(|s| &s.id).collect();
    assert_terminated_exactly(&result, &ids);
    for session in &doomed {
        b.assert_gone(session);
    }
    assert_eq!(b.d.session(&survivor.id).state, SessionState::Running);
    let product = cdp(&survivor)
        .product()
        .expect("the survivor still answers");
    assert!(!product.is_empty());

    assert_terminated_exactly(
        &b.d.kill(survivor.id.as_str(), false, None),
        &[&survivor.id],
    );
    b.assert_gone(&survivor);
    b.assert_clean();
}

#[test]
fn the_listing_of_a_live_browser_shows_its_endpoint_profile_and_resources() {
    let Some(b) = Browsers::start() else { return };
    let session = b.launch_default();

    let listed = wait_for(
        BROWSER_TIMEOUT,
        "the listing to count at least 3 processes",
        || Some(b.d.session(&session.id)).filter(|s| s.processes.is_some_and(|n| n >= 3)),
    );

    assert_eq!(listed.state, SessionState::Running);
    assert_eq!(listed.ws_endpoint, session.ws_endpoint);
    assert_eq!(listed.profile_dir, session.profile_dir);
    assert!(
        listed.memory_bytes.is_some_and(|bytes| bytes > 0),
        "memory_bytes of a live browser: {listed:?}"
    );
    b.processes(&session);
    assert_terminated_exactly(&b.d.kill(session.id.as_str(), false, None), &[&session.id]);
    b.assert_gone(&session);
    b.assert_clean();
}
