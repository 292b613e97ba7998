//! Leases: a leased session is not terminated without `force`; `force` ignores and drops
//! leases; a lease ends by `release` or by its TTL.

use browserd_proto::{BulkTerminate, ErrorCode, Launch, SessionState};
use browserd_tests::{assert_terminated_exactly, failure_for, wait_until, DaemonGuard, Fixture};
use std::time::Duration;

#[test]
fn leased_session_is_not_terminated_without_force() {
    let d = DaemonGuard::start();
    let fixture = Fixture::polite();
    let (session, tree) = d.spawn_with(
        &fixture,
        Launch {
            tracking_id: Some("leased".parse().unwrap()),
            ..fixture.launch()
        },
    );
    // By tracking id, like any other reference to a session.
    d.lease("leased", Some(60_000)).expect("lease");
    assert_eq!(d.session(&session.id).leases, 1);

    let by_kill = d.kill(session.id.as_str(), false, None);
    let by_bulk = d.bulk(BulkTerminate {
        ids: Some(vec![session.id.as_str().parse().unwrap()]),
        ..Default::default()
    });

    for result in [by_kill, by_bulk] {
        assert!(result.terminated.is_empty(), "{result:?}");
        assert_eq!(
            failure_for(&result, session.id.as_str()).code,
            ErrorCode::Leased
        );
    }
    d.assert_tree_alive(&tree);
    let listed = d.session(&session.id);
    assert_eq!(listed.state, SessionState::Running);
    assert_eq!(listed.leases, 1);

    d.kill(session.id.as_str(), true, None);
    d.assert_all_sessions_gone();
}

#[test]
fn force_terminates_a_leased_session_and_drops_its_lease() {
    let d = DaemonGuard::start();
    let (session, _) = d.spawn(&Fixture::polite());
    let lease = d.lease(session.id.as_str(), Some(60_000)).expect("lease");

    let result = d.kill(session.id.as_str(), true, None);

    assert_terminated_exactly(&result, &[&session.id]);
    d.assert_session_gone(&session.id);
    assert_eq!(d.session(&session.id).leases, 0, "force drops the lease");
    let error = d
        .release(&lease.lease_id)
        .expect_err("a dropped lease cannot be released");
    assert_eq!(error.code, ErrorCode::NotFound, "{error}");
}

#[test]
fn kill_all_without_force_spares_only_leased_sessions() {
    let d = DaemonGuard::start();
    let (leased, leased_tree) = d.spawn(&Fixture::polite());
    let (free, _) = d.spawn(&Fixture::polite());
    d.lease(leased.id.as_str(), Some(60_000)).expect("lease");

    let result = d.kill("all", false, None);

    assert_eq!(result.terminated, vec![free.id.to_string()], "{result:?}");
    assert_eq!(result.failed.len(), 1, "{result:?}");
    assert_eq!(
        failure_for(&result, leased.id.as_str()).code,
        ErrorCode::Leased
    );
    d.assert_session_gone(&free.id);
    d.assert_tree_alive(&leased_tree);

    d.kill("all", true, None);
    d.assert_all_sessions_gone();
}

#[test]
fn an_expired_lease_no_longer_protects_the_session() {
    let d = DaemonGuard::start();
    let (session, tree) = d.spawn(&Fixture::polite());
    d.lease(session.id.as_str(), Some(300)).expect("lease");

    wait_until(
        Duration::from_secs(10),
        "the 300 ms lease to expire",
        || d.session(&session.id).leases == 0,
    );
    d.assert_tree_alive(&tree);
    let result = d.kill(session.id.as_str(), false, None);

    assert_terminated_exactly(&result, &[&session.id]);
    d.assert_session_gone(&session.id);
}

#[test]
fn a_released_lease_no_longer_protects_the_session() {
    let d = DaemonGuard::start();
    let (session, _) = d.spawn(&Fixture::polite());
    let lease = d.lease(session.id.as_str(), Some(60_000)).expect("lease");

    d.release(&lease.lease_id).expect("release");
    assert_eq!(d.session(&session.id).leases, 0);
    let result = d.kill(session.id.as_str(), false, None);

    assert_terminated_exactly(&result, &[&session.id]);
    d.assert_session_gone(&session.id);
}

#[test]
fn leasing_an_exited_or_unknown_session_fails() {
    let d = DaemonGuard::start();
    let session = d.launch_sandbox(&["/bin/sh", "-c", "exit 0"]);
    wait_until(Duration::from_secs(10), "the session to exit", || {
        d.session(&session.id).state == SessionState::Exited
    });

    let exited = d.lease(session.id.as_str(), None).expect_err("exited");
    let unknown = d.lease("no-such-session", None).expect_err("unknown");

    assert_eq!(exited.code, ErrorCode::NotRunning, "{exited}");
    assert_eq!(unknown.code, ErrorCode::NotFound, "{unknown}");
    d.assert_all_sessions_gone();
}
