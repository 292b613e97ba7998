//! `kill`: one session by id or tracking id, or `all` (browserless `/kill`), with the
//! termination semantics of the contract: SIGTERM, grace, SIGKILL only with `force`.

use browserd_proto::{ErrorCode, ExitStatus, Launch, SessionState, SessionsFilter};
use browserd_tests::{assert_terminated_exactly, failure_for, wait_until, DaemonGuard, Fixture};
use std::time::{Duration, Instant};

#[test]
fn kill_by_session_id_terminates_the_whole_tree() {
    let d = DaemonGuard::start();
    let (session, tree) = d.spawn(&Fixture::polite());
    assert_eq!(tree.procs.len(), Fixture::polite().expected_processes());

    let result = d.kill(session.id.as_str(), false, None);

    assert_terminated_exactly(&result, &[&session.id]);
    d.assert_session_gone(&session.id);
    let listed = d.session(&session.id);
    assert_eq!(listed.state, SessionState::Exited);
    assert_eq!(listed.exit, Some(ExitStatus::Signal(libc::SIGTERM)));
    assert!(listed.ended_at.is_some(), "an exited session has ended_at");
}

#[test]
fn kill_by_tracking_id_terminates_that_session_only() {
    let d = DaemonGuard::start();
    let fixture = Fixture::polite();
    let (tracked, _) = d.spawn_with(
        &fixture,
        Launch {
            tracking_id: Some("job-1".parse().unwrap()),
            ..fixture.launch()
        },
    );
    let (other, other_tree) = d.spawn(&fixture);

    let result = d.kill("job-1", false, None);

    assert_terminated_exactly(&result, &[&tracked.id]);
    d.assert_session_gone(&tracked.id);
    d.assert_tree_alive(&other_tree);
    assert_eq!(d.session(&other.id).state, SessionState::Running);

    assert_terminated_exactly(&d.kill(other.id.as_str(), false, None), &[&other.id]);
    d.assert_all_sessions_gone();
}

#[test]
fn kill_all_terminates_every_session() {
    let d = DaemonGuard::start();
    let (a, _) = d.spawn(&Fixture::polite());
    let (b, _) = d.spawn(&Fixture::polite());
    let (c, _) = d.spawn_with(
        &Fixture::sleeper(),
        Launch {
            workspace: Some("elsewhere".parse().unwrap()),
            ..Fixture::sleeper().launch()
        },
    );

    let result = d.kill("all", false, None);

    assert_terminated_exactly(&result, &[&a.id, &b.id, &c.id]);
    d.assert_all_sessions_gone();
}

#[test]
fn kill_of_an_unknown_id_fails_with_not_found_and_touches_nothing() {
    let d = DaemonGuard::start();
    let (session, tree) = d.spawn(&Fixture::polite());

    let result = d.kill("no-such-session", false, None);

    assert!(result.terminated.is_empty(), "{result:?}");
    assert_eq!(result.failed.len(), 1, "{result:?}");
    let failure = failure_for(&result, "no-such-session");
    assert_eq!(failure.code, ErrorCode::NotFound);
    assert!(!failure.message.is_empty());
    d.assert_tree_alive(&tree);

    d.kill(session.id.as_str(), false, None);
    d.assert_all_sessions_gone();
}

#[test]
fn killed_sessions_leave_live_listings_as_soon_as_the_response_is_sent() {
    let d = DaemonGuard::start();
    let (session, _) = d.spawn(&Fixture::polite());
    let (survivor, _) = d.spawn(&Fixture::sleeper());

    d.kill(session.id.as_str(), false, None);

    for state in [
        SessionState::Starting,
        SessionState::Running,
        SessionState::Terminating,
    ] {
        let live = d.sessions(SessionsFilter {
            state: Some(state),
            ..Default::default()
        });
        assert!(
            live.iter().all(|s| s.id != session.id),
            "killed session {} still listed as {state}: {live:?}",
            session.id
        );
    }
    let exited = d.sessions(SessionsFilter {
        state: Some(SessionState::Exited),
        ..Default::default()
    });
    assert!(exited.iter().any(|s| s.id == session.id), "{exited:?}");
    assert!(exited.iter().all(|s| s.id != survivor.id), "{exited:?}");
    d.assert_session_gone(&session.id);

    d.kill(survivor.id.as_str(), false, None);
    d.assert_all_sessions_gone();
}

#[test]
fn killing_a_killed_session_again_reports_terminated() {
    let d = DaemonGuard::start();
    let (session, _) = d.spawn(&Fixture::polite());

    assert_terminated_exactly(&d.kill(session.id.as_str(), false, None), &[&session.id]);
    assert_terminated_exactly(&d.kill(session.id.as_str(), false, None), &[&session.id]);
    assert_terminated_exactly(&d.kill(session.id.as_str(), true, None), &[&session.id]);
    d.assert_session_gone(&session.id);
}

#[test]
fn without_force_a_stubborn_session_times_out_and_keeps_running() {
    let d = DaemonGuard::start();
    let (session, tree) = d.spawn(&Fixture::stubborn());

    let result = d.kill(session.id.as_str(), false, Some(300));

    assert!(result.terminated.is_empty(), "{result:?}");
    let failure = failure_for(&result, session.id.as_str());
    assert_eq!(failure.code, ErrorCode::Timeout, "{failure:?}");
    assert!(
        failure.message.contains("force"),
        "the timeout message should say SIGKILL needs `force`: {}",
        failure.message
    );
    assert!(
        !failure.pids.is_empty(),
        "a timeout lists the pids still alive"
    );
    let pids = tree.pids();
    assert!(
        failure.pids.iter().all(|p| pids.contains(p)),
        "reported pids {:?} are not the session's {pids:?}",
        failure.pids
    );
    // Nothing is SIGKILLed without force: every process is still the same process.
    d.assert_tree_alive(&tree);
    assert_eq!(d.session(&session.id).state, SessionState::Running);

    let result = d.kill(session.id.as_str(), true, Some(300));

    assert_terminated_exactly(&result, &[&session.id]);
    d.assert_session_gone(&session.id);
    assert_eq!(
        d.session(&session.id).exit,
        Some(ExitStatus::Signal(libc::SIGKILL))
    );
}

#[test]
fn a_timed_out_kill_whose_leader_died_never_sigkills_the_survivors() {
    let d = DaemonGuard::start();
    // The leader exits on SIGTERM; its children ignore it.
    let (session, tree) = d.spawn(&Fixture::stubborn_children());

    let result = d.kill(session.id.as_str(), false, Some(300));

    assert_eq!(
        failure_for(&result, session.id.as_str()).code,
        ErrorCode::Timeout
    );
    // Another session's exit makes the daemon reap and re-check every session whose leader
    // is gone; that must not treat the SIGTERMed leader as a natural exit and SIGKILL the
    // survivors, which nobody forced.
    let other = d.launch_sandbox(&["sh", "-c", "exit 0"]);
    wait_until(Duration::from_secs(10), "the other session to exit", || {
        d.session(&other.id).state == SessionState::Exited
    });
    assert_eq!(d.session(&session.id).state, SessionState::Running);
    let survivors: Vec<i32> = tree
        .pids()
        .into_iter()
        .filter(|&p| p != tree.leader)
        .collect();
    assert!(
        survivors
            .iter()
            .all(|&pid| browserd_tests::procfs::process(pid).is_some_and(|p| !p.is_zombie())),
        "survivors {survivors:?} must still be alive"
    );

    let result = d.kill(session.id.as_str(), true, Some(300));
    assert_terminated_exactly(&result, &[&session.id]);
    d.assert_session_gone(&session.id);
}

#[test]
fn force_kills_children_that_ignore_sigterm() {
    let d = DaemonGuard::start();
    let (session, _) = d.spawn(&Fixture::stubborn_children());

    let result = d.kill(session.id.as_str(), true, Some(300));

    assert_terminated_exactly(&result, &[&session.id]);
    d.assert_session_gone(&session.id);
}

#[test]
fn a_forced_kill_joins_and_upgrades_a_pending_polite_kill() {
    let d = DaemonGuard::builder().max_grace("30s").start();
    let (session, _) = d.spawn(&Fixture::stubborn());
    let id = session.id.as_str();

    std::thread::scope(|scope| {
        let polite = scope.spawn(|| {
            let start = Instant::now();
            (d.kill(id, false, Some(20_000)), start.elapsed())
        });
        wait_until(
            Duration::from_secs(10),
            "the polite kill to put the session into `terminating`",
            || d.session(&session.id).state == SessionState::Terminating,
        );

        let forced = d.kill(id, true, Some(200));

        assert_terminated_exactly(&forced, &[&session.id]);
        d.assert_session_gone(&session.id);
        let (polite, waited) = polite.join().expect("the polite kill thread");
        assert_terminated_exactly(&polite, &[&session.id]);
        assert!(
            waited < Duration::from_secs(10),
            "the polite kill waited {waited:?}: it should end when the forced kill does, \
             not after its own 20 s grace"
        );
    });
}
