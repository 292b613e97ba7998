//! The launch queue: at `--max-sessions`, a launch waits its turn (first come, first served)
//! up to its queue timeout, is admitted the moment a slot frees, or fails with `capacity`
//! saying whether the queue was full or the wait timed out. A client that hangs up leaves
//! the queue; nothing queued survives a shutdown; a reload keeps the queue in order.

use browserd_proto::{
    ErrorCode, Launch, LaunchResult, MetricsResult, ReloadResult, Request, Response, SessionId,
    SessionState, SessionType, SessionsFilter, WireError,
};
use browserd_tests::{assert_terminated_exactly, wait_until, Client, DaemonGuard};
use nix::sys::signal::Signal;
use std::time::Duration;

/// How long a queue change may take to show in `status`.
const SETTLE: Duration = Duration::from_secs(10);

fn sleeper(queue_timeout_ms: Option<u64>) -> Launch {
    Launch {
        session_type: Some(SessionType::Sandbox),
        command: Some(vec!["sleep".into(), "600".into()]),
        queue_timeout_ms,
        ..Launch::default()
    }
}

fn queueing(max_sessions: u32, max_queue: u32) -> DaemonGuard {
    DaemonGuard::builder()
        .max_sessions(max_sessions)
        .flag("--max-queue", max_queue)
        .grace("1s")
        .start()
}

fn depth(d: &DaemonGuard) -> u32 {
    d.status().queue.expect("status reports the queue").depth
}

#[track_caller]
fn wait_depth(d: &DaemonGuard, expected: u32) {
    wait_until(SETTLE, format!("a queue depth of {expected}"), || {
        depth(d) == expected
    });
}

/// Sends a launch on a connection of its own and waits until it is queued (the queue is
/// `before` deep before it), so launches queue in the order this is called.
#[track_caller]
fn queue_launch(d: &DaemonGuard, launch: Launch, before: u32) -> Client {
    let mut client = d.client();
    client.send(None, &Request::Launch(launch));
    wait_depth(d, before + 1);
    client
}

#[track_caller]
fn admitted(client: &mut Client) -> browserd_proto::SessionInfo {
    let result: Result<LaunchResult, WireError> = client.read_response().into_result();
    let session = result
        .unwrap_or_else(|e| panic!("the queued launch was not admitted: {e}"))
        .session;
    assert_eq!(session.state, SessionState::Running, "{session:?}");
    session
}

#[track_caller]
fn refused(response: Response) -> WireError {
    let result: Result<LaunchResult, WireError> = response.into_result();
    match result {
        Ok(launched) => panic!("the launch should have failed: {:?}", launched.session),
        Err(e) => e,
    }
}

fn live(d: &DaemonGuard) -> Vec<SessionId> {
    d.sessions(SessionsFilter::default())
        .into_iter()
        .filter(|s| s.state.is_live())
        .map(|s| s.id)
        .collect()
}

#[test]
fn queued_launches_are_admitted_in_order_as_slots_free_and_a_full_queue_fails_at_once() {
    let d = queueing(2, 3);
    let first = d.launch(sleeper(None)).unwrap();
    let second = d.launch(sleeper(None)).unwrap();
    let mut third = queue_launch(&d, sleeper(None), 0);
    let mut fourth = queue_launch(&d, sleeper(None), 1);
    let mut fifth = queue_launch(&d, sleeper(None), 2);

    let sixth = refused(d.request(Request::Launch(sleeper(None))));
    assert_eq!(sixth.code, ErrorCode::Capacity, "{sixth}");
    assert!(sixth.message.contains("queue is full"), "{}", sixth.message);
    assert_eq!(depth(&d), 3, "a refused launch does not queue");

    assert_terminated_exactly(&d.kill(first.id.as_str(), true, Some(0)), &[&first.id]);
    let third = admitted(&mut third);
    assert_eq!(
        depth(&d),
        2,
        "one slot, one admission: the others still wait"
    );
    assert_terminated_exactly(&d.kill(second.id.as_str(), true, Some(0)), &[&second.id]);
    let fourth = admitted(&mut fourth);
    assert_eq!(depth(&d), 1);
    assert_terminated_exactly(&d.kill(third.id.as_str(), true, Some(0)), &[&third.id]);
    let fifth = admitted(&mut fifth);
    assert_eq!(depth(&d), 0);

    let mut running = live(&d);
    running.sort();
    let mut expected = vec![fourth.id.clone(), fifth.id.clone()];
    expected.sort();
    assert_eq!(running, expected, "never more than max_sessions live");
    for session in [&fourth, &fifth] {
        assert!(
            browserd_tests::procfs::process(session.pid).is_some(),
            "session {} runs its leader {}",
            session.id,
            session.pid
        );
    }
    for gone in [&first, &second, &third] {
        d.assert_session_gone(&gone.id);
    }
}

#[test]
fn a_queued_launch_fails_with_capacity_once_its_wait_times_out() {
    let d = DaemonGuard::builder()
        .max_sessions(1)
        .flag("--max-queue", 2)
        .flag("--queue-timeout", "300ms")
        .start();
    let holder = d.launch(sleeper(None)).unwrap();

    let timed_out = refused(d.request(Request::Launch(sleeper(Some(200)))));
    assert_eq!(timed_out.code, ErrorCode::Capacity, "{timed_out}");
    assert!(
        timed_out.message.contains("waited 200ms"),
        "{}",
        timed_out.message
    );
    let by_default = refused(d.request(Request::Launch(sleeper(None))));
    assert!(
        by_default.message.contains("waited 300ms"),
        "the daemon's --queue-timeout: {}",
        by_default.message
    );
    let at_once = refused(d.request(Request::Launch(sleeper(Some(0)))));
    assert_eq!(at_once.code, ErrorCode::Capacity);
    assert!(
        at_once.message.contains("not to wait"),
        "{}",
        at_once.message
    );
    assert_eq!(depth(&d), 0, "a launch that gave up left the queue");
    assert_eq!(live(&d), vec![holder.id.clone()]);

    // Its tracking id is free again, and the slot was not lost.
    d.kill(holder.id.as_str(), true, Some(0));
    let again = d
        .launch(Launch {
            tracking_id: Some("after-timeout".parse().unwrap()),
            ..sleeper(Some(0))
        })
        .expect("the slot is free");
    assert_eq!(live(&d), vec![again.id]);
}

#[test]
fn without_a_queue_a_launch_at_capacity_fails_at_once() {
    let d = DaemonGuard::builder().max_sessions(1).start();
    d.launch(sleeper(None)).unwrap();
    let error = refused(d.request(Request::Launch(sleeper(None))));
    assert_eq!(error.code, ErrorCode::Capacity);
    assert!(error.message.contains("--max-queue"), "{}", error.message);
    let queue = d.status().queue.expect("status reports the queue");
    assert_eq!((queue.depth, queue.max), (0, 0));
}

#[test]
fn a_client_that_hangs_up_leaves_the_queue_and_the_next_one_gets_the_slot() {
    let d = queueing(1, 3);
    let holder = d.launch(sleeper(None)).unwrap();
    let gone = queue_launch(&d, sleeper(None), 0);
    // A client that only stops sending still waits for its answer.
    let mut half_closed = queue_launch(&d, sleeper(None), 1);
    half_closed.shutdown_write();
    let mut next = queue_launch(&d, sleeper(None), 2);

    drop(gone);
    wait_depth(&d, 2);

    d.kill(holder.id.as_str(), true, Some(0));
    let second = admitted(&mut half_closed);
    d.kill(second.id.as_str(), true, Some(0));
    let third = admitted(&mut next);
    let sessions = d.sessions(SessionsFilter::default());
    assert_eq!(
        sessions.len(),
        3,
        "the launch of the client that hung up started nothing: {sessions:#?}"
    );
    assert_eq!(live(&d), vec![third.id]);
}

#[test]
fn queued_launches_fail_at_shutdown_and_nothing_is_left() {
    let d = queueing(1, 3);
    let holder = d.launch(sleeper(None)).unwrap();
    let mut first = queue_launch(&d, sleeper(None), 0);
    let mut second = queue_launch(&d, sleeper(None), 1);

    d.send_signal(Signal::SIGTERM);

    for client in [&mut first, &mut second] {
        let error = refused(client.read_response());
        assert_eq!(error.code, ErrorCode::ShuttingDown, "{error}");
    }
    let status = d.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "browserd exited with {status}");
    d.assert_session_gone(&holder.id);
    d.assert_all_sessions_gone();
}

#[test]
fn a_reload_keeps_the_queue_in_order() {
    let d = queueing(1, 3);
    let holder = d.launch(sleeper(None)).unwrap();
    let mut first = queue_launch(&d, sleeper(Some(60_000)), 0);
    let mut second = queue_launch(&d, sleeper(Some(60_000)), 1);

    let reload: ReloadResult = d.call(Request::Reload).expect("reload accepted");
    wait_until(SETTLE, "the reloaded daemon to serve", || {
        d.status().reloads == reload.reloads
    });
    wait_depth(&d, 2);

    d.kill(holder.id.as_str(), true, Some(0));
    let one = admitted(&mut first);
    assert_eq!(depth(&d), 1, "the second still waits");
    d.kill(one.id.as_str(), true, Some(0));
    let two = admitted(&mut second);
    assert_eq!(live(&d), vec![two.id]);
}

#[test]
fn the_queue_depth_is_a_metric() {
    let d = queueing(1, 3);
    d.launch(sleeper(None)).unwrap();
    let _a = queue_launch(&d, sleeper(None), 0);
    let _b = queue_launch(&d, sleeper(None), 1);
    let metrics: MetricsResult = d.call(Request::Metrics).unwrap();
    assert!(
        metrics.text.contains("browserd_queue_depth 2"),
        "{}",
        metrics.text
    );
}
