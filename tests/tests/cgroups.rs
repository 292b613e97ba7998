//! Containment in cgroups: given a writable cgroup v2 subtree (`--cgroup-root`, a private
//! one per test), every session runs in its own cgroup from its first instruction, is killed
//! whole by `cgroup.kill`, is gone when its cgroup is empty, and its cgroup is removed; the
//! contract's results and codes are those of process-group mode. Each test skips, saying
//! why, only where no cgroup v2 hierarchy is writable.

use browserd_proto::{
    EndReason, ErrorCode, ExitStatus, Launch, Request, SessionState, SessionType, StatusResult,
};
use browserd_tests::cdp::Cdp;
use browserd_tests::cgroups::{cgroup_of, PrivateCgroup};
use browserd_tests::procfs::{self, Traced};
use browserd_tests::{wait_until, DaemonGuard, Fixture};
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// A private subtree and a daemon using it; `None` (with the reason printed) where this
/// machine gives a test no writable cgroup v2 hierarchy. The subtree outlives the daemon.
fn contained(test: &str, grace: &str) -> Option<(PrivateCgroup, DaemonGuard)> {
    let cgroup = match PrivateCgroup::create(test) {
        Ok(cgroup) => cgroup,
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            return None;
        }
    };
    let d = DaemonGuard::builder()
        .grace(grace)
        .flag("--cgroup-root", cgroup.path().display())
        .start();
    let status = d.status();
    let containment = status.containment.expect("status reports containment");
    assert_eq!(containment.mode, "cgroup", "{containment:?}");
    Some((cgroup, d))
}

#[test]
fn a_session_is_in_its_own_cgroup_from_its_first_instruction() {
    let Some((cgroup, d)) = contained("first-instruction", "300ms") else {
        return;
    };
    // A tree that forks at once and leaves its group and session.
    let (session, tree) = d.spawn(&Fixture::stubborn_stray());
    let expected = cgroup.session_cgroup(session.id.as_str());
    for process in &tree.procs {
        assert_eq!(
            cgroup_of(process.pid).as_deref(),
            Some(expected.as_str()),
            "process {} ({}) is outside its session's cgroup",
            process.pid,
            process.comm
        );
        // Started by a spawner thread that may run at real-time priority: none of it here.
        assert_eq!(
            procfs::scheduling(process.pid),
            Some((libc::SCHED_OTHER, 0)),
            "process {} ({})",
            process.pid,
            process.comm
        );
    }
    assert_eq!(
        cgroup_of(d.pid()).as_deref(),
        Some(format!("{}/daemon", cgroup.session_cgroup("").trim_end_matches('/')).as_str()),
        "the daemon moved itself into the daemon leaf"
    );
    assert_eq!(
        d.session(&session.id).processes,
        Some(tree.procs.len() as u32)
    );
    d.kill(session.id.as_str(), true, Some(100));
    d.assert_all_sessions_gone();
    assert!(
        cgroup.session_dirs().is_empty(),
        "{:?}",
        cgroup.session_dirs()
    );
}

#[test]
fn every_tree_shape_dies_whole_with_process_group_modes_results_and_codes() {
    let Some((cgroup, d)) = contained("shapes", "300ms") else {
        return;
    };
    let polite = d.spawn(&Fixture::polite());
    let polite_stray = d.spawn(&Fixture::polite_stray());
    let deep = d.spawn(&Fixture::deep());
    let stubborn = d.spawn(&Fixture::stubborn());
    let stubborn_stray = d.spawn(&Fixture::stubborn_stray());
    for (session, _) in [&polite, &polite_stray, &deep] {
        let result = d.kill(session.id.as_str(), false, Some(2000));
        assert_eq!(
            result.terminated,
            vec![session.id.to_string()],
            "{result:?}"
        );
        d.assert_session_gone(&session.id);
    }
    for (session, tree) in [&stubborn, &stubborn_stray] {
        let result = d.kill(session.id.as_str(), false, Some(200));
        assert_eq!(result.failed[0].code, ErrorCode::Timeout, "{result:?}");
        assert_eq!(d.session(&session.id).state, SessionState::Running);
        // What ignores SIGTERM is still there: everything of `stubborn`, the stray of
        // `stubborn_stray` (its leader is polite).
        for process in tree.procs.iter().filter(|p| p.ignores_term) {
            let now = process.id().current();
            assert!(
                now.is_some_and(|p| !p.is_zombie()),
                "{process:?} died without force"
            );
        }
    }
    let result = d.kill("all", true, Some(100));
    assert!(result.failed.is_empty(), "{result:?}");
    // The session's exit is its leader's: SIGKILLed, or (stubborn_stray's polite leader)
    // SIGTERMed by the first kill.
    for ((session, _), signal) in [(&stubborn, 9), (&stubborn_stray, 15)] {
        d.assert_session_gone(&session.id);
        assert_eq!(
            d.session(&session.id).exit,
            Some(ExitStatus::Signal(signal))
        );
    }
    d.assert_all_sessions_gone();
    assert!(
        cgroup.session_dirs().is_empty(),
        "{:?}",
        cgroup.session_dirs()
    );
}

/// A process leaves its cgroup early in its exit, long before it is reaped: an empty cgroup
/// is not yet every process gone. A process the leader started beside itself is the child
/// of the daemon's spawner thread, which the daemon reaps last (by its full pass, a few ms
/// after the SIGCHLD); the kill answers only once it is reaped too.
#[test]
fn a_kill_answers_only_once_every_process_met_in_the_cgroup_is_reaped() {
    let Some((_cgroup, d)) = contained("reaped-before-answer", "5s") else {
        return;
    };
    let watches = inotify_watches(d.pid());
    for round in 0..3 {
        let (session, dir) = d.launch_beside("start");
        let beside: i32 = std::fs::read_to_string(dir.path().join("beside"))
            .expect("the pid of the process beside the leader")
            .parse()
            .expect("a pid");
        let before = procfs::process(beside).expect("the process beside the leader");

        let result = d.kill(session.id.as_str(), false, None);

        assert_eq!(
            result.terminated,
            vec![session.id.to_string()],
            "{result:?}"
        );
        let left = procfs::process(beside).filter(|p| p.start_time == before.start_time);
        assert!(
            left.is_none(),
            "round {round}: the kill answered with the process beside the leader still there: {left:?}"
        );
    }
    d.assert_all_sessions_gone();
    // Each session's `cgroup.events` watch is taken off with it (removing the cgroup does
    // not end it).
    assert_eq!(inotify_watches(d.pid()), watches);
}

#[test]
fn a_terminated_sessions_cgroup_goes_once_it_is_empty_before_its_processes_are_reaped() {
    let Some((cgroup, d)) = contained("emptied-goes-first", "5s") else {
        return;
    };
    let watches = inotify_watches(d.pid());
    let (session, _tree) = d.spawn(&Fixture::sleeper());
    // A process of the session's (in its cgroup) whose parent is this test, which reaps it
    // only when it chooses: after the session's SIGTERM it stays a zombie.
    let held = Held(
        std::process::Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .expect("spawn sleep"),
    );
    let pid = held.0.id() as i32;
    std::fs::write(
        cgroup.path().join(session.id.as_str()).join("cgroup.procs"),
        pid.to_string(),
    )
    .expect("move the process into the session's cgroup");

    let kill = d.kill_in_background(session.id.as_str());
    wait_until(
        Duration::from_secs(10),
        "the process in the cgroup to exit on SIGTERM",
        || procfs::process(pid).is_some_and(|p| p.is_zombie()),
    );
    wait_until(
        Duration::from_secs(10),
        "the emptied cgroup to be removed while its last process waits to be reaped",
        || cgroup.session_dirs().is_empty(),
    );
    assert!(
        !kill.is_finished(),
        "the kill answered before every process met in the cgroup was reaped"
    );
    assert_eq!(d.session(&session.id).state, SessionState::Terminating);

    drop(held);
    kill.assert_terminated(&session.id);
    d.assert_all_sessions_gone();
    assert_eq!(inotify_watches(d.pid()), watches, "no watch is left behind");
}

/// A process can leave its cgroup before any sweep meets it, and still be in `/proc`: an
/// orphan that is exiting, or a zombie its parent has not reaped. Here one stays that way as
/// long as the test wants: a child of the leader, traced by the test and killed before the
/// session is, is a zombie only its tracer can reap (its parent, and whoever it is handed
/// to when the leader exits, cannot see it). The kill answers only once it is gone.
#[test]
fn a_kill_waits_for_a_process_that_left_the_cgroup_before_any_sweep_met_it() {
    if let Some((_cgroup, d)) = contained("left-unmet", "5s") {
        left_unmet(d, false);
    }
}

/// The same for a session adopted after a crash: its orphans are no longer the daemon's
/// children, so the daemon looks at every process.
#[test]
fn after_a_crash_a_kill_waits_for_a_process_that_left_the_cgroup_unmet() {
    if let Some((_cgroup, d)) = contained("left-unmet-adopted", "5s") {
        left_unmet(d, true);
    }
}

/// The same in process-group mode, where the gone check meets the zombie among the
/// daemon's children (or, after a crash, in `/proc`) by its process group.
#[test]
fn in_process_groups_a_kill_waits_for_a_zombie_no_sweep_met() {
    left_unmet(DaemonGuard::builder().grace("5s").start(), false);
    left_unmet(DaemonGuard::builder().grace("5s").start(), true);
}

fn left_unmet(mut d: DaemonGuard, crash: bool) {
    let (session, tree) = d.spawn(&Fixture::polite());
    let leader = tree.procs.iter().find(|p| p.pid == tree.leader).unwrap();
    let [child, sibling] = [0, 1].map(|i| {
        tree.procs
            .iter()
            .filter(|p| p.pid != tree.leader)
            .nth(i)
            .expect("two children of the leader")
    });
    let traced = Traced::seize(child.pid);
    traced.kill();
    wait_until(
        Duration::from_secs(10),
        "the traced child to be a zombie",
        || procfs::process(child.pid).is_some_and(|p| p.is_zombie()),
    );
    // The other child goes (reaped by the leader, which waits on for the traced one): the
    // kill's sweep meets nothing but the leader, and what is left must be found otherwise.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sibling.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the other child of the leader");
    wait_until(
        Duration::from_secs(10),
        "the leader to reap its other child",
        || procfs::process(sibling.pid).is_none_or(|p| p.start_time != sibling.start_time),
    );
    if crash {
        d.crash();
        d.restart(&[]);
    }

    let kill = d.kill_in_background(session.id.as_str());
    wait_until(Duration::from_secs(10), "the leader to be reaped", || {
        procfs::process(leader.pid).is_none_or(|p| p.start_time != leader.start_time)
    });
    assert!(
        procfs::process(child.pid).is_some_and(|p| p.is_zombie() && p.ppid != leader.pid),
        "the zombie was handed on when the leader exited"
    );
    // A kill of another session answers after a gone check that had this one among its
    // candidates (its leader was reaped before): had that check proven it gone, it would be
    // by now.
    let (other, _) = d.spawn(&Fixture::polite());
    let result = d.kill(other.id.as_str(), false, None);
    assert_eq!(result.terminated, vec![other.id.to_string()], "{result:?}");
    assert_eq!(
        d.session(&session.id).state,
        SessionState::Terminating,
        "proven gone with its zombie still in /proc"
    );
    assert!(
        !kill.is_finished(),
        "the kill answered with a process of the session still in /proc"
    );

    // The tracer lets it go: handed to its parent, reaped, and the session is gone.
    drop(traced);
    kill.assert_terminated(&session.id);
    assert!(
        procfs::process(child.pid).is_none_or(|p| p.start_time != child.start_time),
        "the kill answered with the zombie still there"
    );
    d.assert_all_sessions_gone();
}

/// A child of the test: killed and reaped when dropped.
struct Held(std::process::Child);

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How many inotify watches process `pid` holds, over all its inotify descriptors.
fn inotify_watches(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("the daemon's fdinfo")
        .filter_map(|fd| std::fs::read_to_string(fd.ok()?.path()).ok())
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}

#[test]
fn a_fork_loop_is_killed_completely_with_force() {
    let Some((cgroup, d)) = contained("fork-loop", "200ms") else {
        return;
    };
    // Forks as fast as it can (bounded, as a safety net), every child ignoring SIGTERM.
    let script = "trap '' TERM; i=0; while [ $i -lt 3000 ]; do sleep 1000 & i=$((i+1)); done; wait";
    let session = d.launch_sandbox(&["/bin/sh", "-c", script]);
    let dir = cgroup.path().join(session.id.as_str());
    wait_until(
        Duration::from_secs(10),
        "the fork loop to have forked a lot",
        || std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| p.lines().count() > 50),
    );
    let result = d.kill(session.id.as_str(), true, Some(100));
    assert!(result.failed.is_empty(), "{result:?}");
    assert!(!dir.exists(), "the session's cgroup is removed");
    let left: Vec<_> = procfs::all_processes()
        .into_iter()
        .filter(|p| p.session.as_deref() == Some(session.id.as_str()))
        .collect();
    assert!(
        left.is_empty(),
        "{} processes of the fork loop survived",
        left.len()
    );
    d.assert_all_sessions_gone();
}

#[test]
fn limits_are_enforced_where_the_controller_is_and_refused_with_the_reason_where_not() {
    let Some((cgroup, d)) = contained("limits", "300ms") else {
        return;
    };
    let offered = cgroup.offered_controllers();
    let launch = |memory_max: Option<u64>, pids_max: Option<u64>, command: &[&str]| {
        d.launch(Launch {
            session_type: Some(SessionType::Sandbox),
            command: Some(command.iter().map(|s| s.to_string()).collect()),
            memory_max,
            pids_max,
            ..Launch::default()
        })
    };
    if offered.iter().any(|c| c == "pids") {
        // A fork beyond the cap fails; the session lives on.
        let session = launch(
            None,
            Some(3),
            &[
                "/bin/sh",
                "-c",
                "sleep 100 & sleep 100 & sleep 100 & sleep 100 & wait",
            ],
        )
        .expect("a launch with pids_max");
        let pids_max =
            std::fs::read_to_string(cgroup.path().join(session.id.as_str()).join("pids.max"));
        assert_eq!(pids_max.unwrap().trim(), "3");
        d.kill(session.id.as_str(), true, Some(100));
    } else {
        let refused = launch(None, Some(64), &["true"]).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidRequest);
        assert!(refused.message.contains("pids"), "{refused}");
        eprintln!("SKIPPED the pids.max enforcement half: the pids controller is not available here ({offered:?})");
    }
    if offered.iter().any(|c| c == "memory") {
        // An allocation loop is OOM-killed, and the session says so.
        let hog = "x=a; while :; do x=$x$x; done";
        let session = launch(Some(64 << 20), None, &["/bin/sh", "-c", hog])
            .expect("a launch with memory_max");
        wait_until(Duration::from_secs(30), "the OOM kill", || {
            d.session(&session.id).state == SessionState::Exited
        });
        assert_eq!(d.session(&session.id).reason, Some(EndReason::OutOfMemory));
        let metrics: browserd_proto::MetricsResult =
            d.call(browserd_proto::Request::Metrics).unwrap();
        assert!(
            metrics
                .text
                .contains("browserd_sessions_oom_killed_total 1"),
            "{}",
            metrics.text
        );
    } else {
        let refused = launch(Some(1 << 30), None, &["true"]).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidRequest);
        assert!(refused.message.contains("memory"), "{refused}");
        eprintln!("SKIPPED the memory.max enforcement half: the memory controller is not available here ({offered:?})");
    }
    d.assert_all_sessions_gone();
    assert!(cgroup.session_dirs().is_empty());
}

#[test]
fn without_a_usable_subtree_the_daemon_contains_by_process_group_and_says_why() {
    let not_a_cgroup = tempfile::tempdir().unwrap();
    let d = DaemonGuard::builder()
        .flag("--cgroup-root", not_a_cgroup.path().display())
        .start();
    let status: StatusResult = d.status();
    let containment = status.containment.expect("status reports containment");
    assert_eq!(containment.mode, "process-group");
    assert!(
        containment
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("cgroup")),
        "{containment:?}"
    );
    let refused = d
        .launch(Launch {
            memory_max: Some(1 << 30),
            ..Fixture::sleeper().launch()
        })
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::InvalidRequest);
    assert!(refused.message.contains("process groups"), "{refused}");
    let (session, _) = d.spawn(&Fixture::polite_stray());
    d.kill(session.id.as_str(), false, None);
    d.assert_all_sessions_gone();
    let shown = d.ctl(&["status"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("containment") && l.contains(" process-group: ")),
        "{text}"
    );
}

#[test]
fn a_crashed_daemon_takes_up_its_sessions_cgroups_and_kills_them_whole() {
    let Some((cgroup, mut d)) = contained("crash", "200ms") else {
        return;
    };
    let (session, tree) = d.spawn(&Fixture::stubborn_stray());
    d.crash();
    d.restart(&[]);
    assert_eq!(
        d.session(&session.id).processes,
        Some(tree.procs.len() as u32)
    );
    let reloaded = d.request(Request::Reload);
    assert!(reloaded.ok, "{reloaded:?}");
    wait_until(Duration::from_secs(10), "the reload", || {
        d.status().reloads == 1
    });
    let result = d.kill(session.id.as_str(), true, Some(100));
    assert!(result.failed.is_empty(), "{result:?}");
    // Not the restarted daemon's children any more: their parent (init) reaps them.
    d.wait_session_gone(&session.id, Duration::from_secs(10));
    assert!(
        cgroup.session_dirs().is_empty(),
        "{:?}",
        cgroup.session_dirs()
    );
}

#[test]
fn a_real_chromium_lives_and_dies_in_its_cgroup() {
    if std::env::var_os("BROWSERD_TEST_SKIP_BROWSER").is_some() {
        eprintln!("SKIPPED: BROWSERD_TEST_SKIP_BROWSER is set");
        return;
    }
    let Some((cgroup, d)) = contained("chromium", "2s") else {
        return;
    };
    let browser = d
        .launch(Launch::default())
        .expect("a browser launches in its cgroup");
    let mut cdp = Cdp::connect(browser.ws_endpoint.as_deref().unwrap()).unwrap();
    assert!(cdp.product().unwrap().contains("Chrome"));
    let dir = cgroup.path().join(browser.id.as_str());
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    let pids: Vec<i32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
    assert!(
        pids.len() > 2,
        "Chromium's processes are all in its cgroup: {pids:?}"
    );
    // Chromium starts helpers lazily, and a listing answers figures up to 2 s old: the count
    // is the cgroup's once both have settled.
    wait_until(
        Duration::from_secs(10),
        "the listing counts the cgroup's processes",
        || {
            let now = std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap()
                .lines()
                .count();
            d.session(&browser.id).processes == Some(now as u32)
        },
    );
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    let pids: Vec<i32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
    drop(cdp);
    let result = d.kill(browser.id.as_str(), true, None);
    assert!(result.failed.is_empty(), "{result:?}");
    assert!(!dir.exists(), "the browser's cgroup is removed");
    for pid in pids {
        assert!(
            procfs::process(pid).is_none_or(|p| p.session.is_none()),
            "pid {pid} survived"
        );
    }
    d.assert_all_sessions_gone();
}
