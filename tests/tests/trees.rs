//! Process trees shaped like browsers: helpers that leave the process group by
//! double-forking into a new session, and deep nesting. Every process that descends from a
//! session belongs to it.

use browserd_proto::ErrorCode;
use browserd_tests::fixtures::SH;
use browserd_tests::{
    assert_terminated_exactly, failure_for, procfs, wait_until, DaemonGuard, Fixture, Tree,
};
use std::time::Duration;

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

#[test]
fn a_process_the_leader_starts_beside_itself_as_it_is_killed_is_found_and_ended() {
    let d = DaemonGuard::start();
    // Each round a fresh leader: the new process is born after the signals went out, at once
    // or after the daemon's first look at the session's processes (which then meets it only
    // among its own children, proving the session gone once the leader is reaped).
    for (round, delay_ms) in ["0", "40", "80"].into_iter().enumerate() {
        let (session, dir) = d.launch_beside(delay_ms);

        let result = d.kill(session.id.as_str(), false, Some(300));

        assert!(
            dir.path().join("beside").exists(),
            "round {round}: the leader started its process before it exited"
        );
        assert_terminated_exactly(&result, &[&session.id]);
        d.assert_session_gone(&session.id);
    }
}

/// A thread of the daemon: its tid, name and direct children.
#[derive(Debug)]
struct DaemonThread {
    tid: i32,
    comm: String,
    children: Vec<i32>,
}

/// The daemon's threads, read from `/proc/PID/task`.
fn daemon_threads(daemon: i32) -> Vec<DaemonThread> {
    let tasks = std::fs::read_dir(format!("/proc/{daemon}/task")).expect("the daemon's tasks");
    tasks
        .filter_map(|entry| {
            let tid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let read =
                |file: &str| std::fs::read_to_string(format!("/proc/{daemon}/task/{tid}/{file}"));
            Some(DaemonThread {
                tid,
                comm: read("comm").ok()?.trim().to_string(),
                children: read("children")
                    .ok()?
                    .split_whitespace()
                    .filter_map(|pid| pid.parse().ok())
                    .collect(),
            })
        })
        .collect()
}

/// What proving a session gone reads of the daemon's children (the main thread's, and the
/// thread's that spawned the session's leader) rests on: a leader is the child of a
/// spawner thread that stays, a process the leader starts beside itself (`CLONE_PARENT`)
/// is that thread's child too, and an orphan handed to the daemon is its main thread's.
#[test]
fn leaders_and_their_siblings_are_spawner_threads_children_and_orphans_the_main_threads() {
    let d = DaemonGuard::start();
    let (stray_session, stray_tree) = d.spawn(&Fixture::polite_stray());
    assert_escaped(&d, &stray_tree);
    let orphan = stray_tree.strays()[0].pid;
    let (session, dir) = d.launch_beside("start");
    let beside: i32 = std::fs::read_to_string(dir.path().join("beside"))
        .expect("the pid of the process beside the leader")
        .parse()
        .expect("a pid");

    let threads = daemon_threads(d.pid());
    let parent_of = |pid: i32| {
        threads
            .iter()
            .find(|t| t.children.contains(&pid))
            .unwrap_or_else(|| panic!("pid {pid} is no daemon thread's child: {threads:#?}"))
    };
    let spawner = parent_of(session.pid);
    assert!(spawner.comm.starts_with("spawner-"), "{threads:#?}");
    assert_eq!(parent_of(beside).tid, spawner.tid, "{threads:#?}");
    assert_eq!(parent_of(orphan).tid, d.pid(), "{threads:#?}");

    let result = d.kill(session.id.as_str(), false, Some(300));
    assert_terminated_exactly(&result, &[&session.id]);
    d.assert_session_gone(&session.id);
    d.kill(stray_session.id.as_str(), false, None);
    d.assert_all_sessions_gone();
}

/// A process the daemon knew as a member of the leader's group, which left it (`setsid`)
/// before the kill: the group's SIGTERM does not reach it, so while the leader (which
/// ignores SIGTERM) keeps the group pinned, the sweep must see the group the process is in
/// now, not the one it was known in, and signal it.
#[test]
fn a_member_that_left_the_group_after_it_was_known_is_signalled_by_the_sweep() {
    let d = DaemonGuard::start();
    let dir = tempfile::tempdir().expect("a temp dir");
    let fifo = dir.path().join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let session = d.launch_sandbox(&[
        SH,
        "-c",
        r#"(read x < "$1"; exec setsid sleep 1000) & trap '' TERM; exec sleep 1000"#,
        "leaves-later",
        fifo.to_str().expect("a UTF-8 path"),
    ]);
    wait_until(
        Duration::from_secs(10),
        "the daemon to know both processes",
        || d.session(&session.id).processes == Some(2),
    );
    let child = procfs::children_of(session.pid)
        .into_iter()
        .next()
        .expect("the leader's child");
    assert_eq!(child.pgid, session.pid, "known while in the leader's group");
    std::fs::write(&fifo, b"go\n").expect("write to the fifo");
    wait_until(
        Duration::from_secs(10),
        format!("pid {} to leave the group", child.pid),
        || procfs::process(child.pid).is_some_and(|p| p.pgid == child.pid && p.comm == "sleep"),
    );
    wait_until(
        Duration::from_secs(10),
        "the leader to ignore SIGTERM",
        || procfs::process(session.pid).is_some_and(|p| p.ignores_term && p.comm == "sleep"),
    );

    let result = d.kill(session.id.as_str(), false, Some(300));

    let failure = failure_for(&result, session.id.as_str());
    assert_eq!(
        failure.code,
        ErrorCode::Timeout,
        "the leader ignores SIGTERM: {failure:?}"
    );
    let left = procfs::process(child.pid);
    assert!(
        !matches!(&left, Some(p) if !p.is_zombie()),
        "the process that left the group got SIGTERM: {left:?}"
    );
    d.kill(session.id.as_str(), true, Some(0));
    d.assert_session_gone(&session.id);
}

/// A stray that left the session's group and session and died before any refresh met it
/// alive: a zombie child of the daemon with no environment left to say whose it is, and a
/// group and session of its own. Its owner cannot be decided, so no session is proven gone
/// until the daemon has reaped it (for up to a second; here, until the test, tracing it,
/// lets it go).
#[test]
fn a_stray_that_died_unmet_holds_the_kill_until_it_is_reaped() {
    let d = DaemonGuard::builder().grace("5s").start();
    let dir = tempfile::tempdir().expect("a temp dir");
    // The stray is started only when the test says.
    let script = r#"while [ ! -e "$1/go" ]; do sleep 0.01; done
(setsid sleep 1000 & echo $! > "$1/stray.tmp"; mv "$1/stray.tmp" "$1/stray")
exec sleep 1000"#;
    let session = d.launch_sandbox(&[
        SH,
        "-c",
        script,
        "unmet-stray",
        dir.path().to_str().unwrap(),
    ]);
    // Past the refresh that follows a launch (20 ms after it), which would meet the stray
    // alive: only then can the test fail.
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(dir.path().join("go"), "").expect("write go");
    let stray_file = dir.path().join("stray");
    wait_until(Duration::from_secs(10), "the stray to start", || {
        stray_file.exists()
    });
    let stray: i32 = std::fs::read_to_string(&stray_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the stray to be handed to the daemon",
        || procfs::process(stray).is_some_and(|p| p.ppid == d.pid() && p.sid == stray),
    );
    let traced = procfs::Traced::seize(stray);
    traced.kill();
    wait_until(Duration::from_secs(10), "the stray to be a zombie", || {
        procfs::process(stray).is_some_and(|p| p.is_zombie())
    });

    let kill = d.kill_in_background(session.id.as_str());
    // The gone check that follows the leader's reap meets the zombie and cannot say whose
    // it is (the daemon's debug log says what it decided).
    let met = format!("attributed pid={stray} ");
    let decided = || {
        d.log()
            .lines()
            .find(|line| line.contains(&met))
            .map(str::to_owned)
    };
    wait_until(
        Duration::from_secs(10),
        "the gone check to meet the zombie",
        || decided().is_some(),
    );
    let decided = decided().unwrap_or_default();
    assert!(
        decided.contains("owner=Undecided"),
        "a zombie whose owner cannot be read is not decided at once: {decided}"
    );
    assert!(
        !kill.is_finished(),
        "the kill answered with the stray's zombie still in /proc"
    );

    // Let go, it is the daemon's to reap, and then the session is gone.
    drop(traced);
    kill.assert_terminated(&session.id);
    assert!(
        procfs::process(stray).is_none(),
        "the stray's zombie is reaped"
    );
    d.assert_all_sessions_gone();
}
