//! Process trees shaped like browsers: helpers that leave the process group by
//! double-forking into a new session, and deep nesting. Every process that descends from a
//! session belongs to it.

use browserd_tests::{assert_terminated_exactly, DaemonGuard, Fixture, Tree};

/// The stray of a stray fixture, checked to really be out of the leader's group and session
/// and adopted by the daemon (its parent exited; the daemon is a child subreaper).
#[track_caller]
fn assert_escaped(d: &DaemonGuard, tree: &Tree) {
    let strays = tree.strays();
    assert_eq!(strays.len(), 1, "{tree:#?}");
    let stray = strays[0];
    assert_ne!(
        stray.pgid, tree.leader,
        "the stray left the leader's process group"
    );
    assert_ne!(
        stray.sid, tree.leader,
        "the stray left the leader's session"
    );
    assert_eq!(
        stray.ppid,
        d.pid(),
        "the orphaned stray should be adopted by the daemon (child subreaper)"
    );
}

#[test]
fn polite_stray_that_left_the_group_is_terminated_with_its_session() {
    let d = DaemonGuard::start();
    let (session, tree) = d.spawn(&Fixture::polite_stray());
    assert_escaped(&d, &tree);

    let result = d.kill(session.id.as_str(), false, None);

    assert_terminated_exactly(&result, &[&session.id]);
    d.assert_session_gone(&session.id);
}

#[test]
fn stubborn_stray_that_left_the_group_is_killed_with_force() {
    let d = DaemonGuard::start();
    let (session, tree) = d.spawn(&Fixture::stubborn_stray());
    assert_escaped(&d, &tree);

    let result = d.kill(session.id.as_str(), true, Some(300));

    assert_terminated_exactly(&result, &[&session.id]);
    d.assert_session_gone(&session.id);
}

#[test]
fn deep_tree_is_terminated_completely() {
    let d = DaemonGuard::start();
    let (session, tree) = d.spawn(&Fixture::deep());
    assert_eq!(tree.procs.len(), 5, "a leader and four levels of children");

    let result = d.kill(session.id.as_str(), false, None);

    assert_terminated_exactly(&result, &[&session.id]);
    d.assert_session_gone(&session.id);
}

#[test]
fn sessions_do_not_kill_each_others_processes() {
    let d = DaemonGuard::start();
    let (victim, _) = d.spawn(&Fixture::stubborn_stray());
    let (bystander, bystander_tree) = d.spawn(&Fixture::polite_stray());

    d.kill(victim.id.as_str(), true, Some(300));

    d.assert_session_gone(&victim.id);
    d.assert_tree_alive(&bystander_tree);
    d.kill(bystander.id.as_str(), false, None);
    d.assert_all_sessions_gone();
}
