//! A session's life: launch (and what the daemon refuses to launch), natural exits and how
//! they are recorded, leaders that exit leaving children behind, TTLs, and the limits.

use browserd_proto::{ErrorCode, ExitStatus, Launch, SessionState, SessionType, SESSION_ENV};
use browserd_tests::procfs;
use browserd_tests::{assert_terminated_exactly, wait_for, wait_until, DaemonGuard, Fixture};
use std::collections::BTreeMap;
use std::time::Duration;

const EXIT_WAIT: Duration = Duration::from_secs(15);

/// Waits until session `id` is listed as exited and returns its listing.
#[track_caller]
fn wait_exited(d: &DaemonGuard, id: &browserd_proto::SessionId) -> browserd_proto::SessionInfo {
    wait_for(
        EXIT_WAIT,
        format!("session {id} to be listed as exited"),
        || Some(d.session(id)).filter(|s| s.state == SessionState::Exited),
    )
}

#[test]
fn launch_marks_the_session_and_applies_env_and_cwd() {
    let d = DaemonGuard::start();
    let fixture = Fixture::sleeper();
    let (session, tree) = d.spawn_with(
        &fixture,
        Launch {
            env: BTreeMap::from([("FIXTURE_GREETING".to_owned(), "hello world".to_owned())]),
            cwd: Some("/tmp".to_owned()),
            ..fixture.launch()
        },
    );

    assert_eq!(session.state, SessionState::Running);
    assert_eq!(session.session_type, SessionType::Sandbox);
    assert_eq!(session.workspace.as_str(), "default");
    assert_eq!(session.command, fixture.argv);
    assert_eq!(session.leases, 0);
    assert_eq!(
        session.pid, session.pgid,
        "the leader leads its own process group"
    );
    let leader = &tree.procs[0];
    assert_eq!(leader.pid, session.pid);
    assert_eq!(
        leader.pgid, session.pid,
        "the leader starts its own process group"
    );
    assert_eq!(leader.session.as_deref(), Some(session.id.as_str()));
    let environ = std::fs::read(format!("/proc/{}/environ", session.pid)).unwrap();
    let environ: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
    assert!(environ.contains(&&b"FIXTURE_GREETING=hello world"[..]));
    let marker = format!("{SESSION_ENV}={}", session.id);
    assert!(environ.contains(&marker.as_bytes()));
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", session.pid)).unwrap();
    assert_eq!(cwd, std::path::Path::new("/tmp"));

    d.kill(session.id.as_str(), false, None);
    d.assert_all_sessions_gone();
}

#[test]
fn a_natural_exit_code_is_recorded() {
    let d = DaemonGuard::start();
    let session = d.launch_sandbox(&["/bin/sh", "-c", "exit 3"]);

    let exited = wait_exited(&d, &session.id);

    assert_eq!(exited.exit, Some(ExitStatus::Code(3)));
    assert!(exited.ended_at.is_some());
    d.wait_session_gone(&session.id, EXIT_WAIT);
    d.assert_all_sessions_gone();
}

#[test]
fn a_death_by_signal_is_recorded() {
    let d = DaemonGuard::start();
    let session = d.launch_sandbox(&["/bin/sh", "-c", "kill -9 $$"]);

    let exited = wait_exited(&d, &session.id);

    assert_eq!(exited.exit, Some(ExitStatus::Signal(libc::SIGKILL)));
    d.wait_session_gone(&session.id, EXIT_WAIT);
}

#[test]
fn killing_a_session_that_already_exited_reports_terminated() {
    let d = DaemonGuard::start();
    let session = d.launch_sandbox(&["/bin/sh", "-c", "exit 0"]);
    wait_exited(&d, &session.id);

    let result = d.kill(session.id.as_str(), false, None);

    assert_terminated_exactly(&result, &[&session.id]);
    assert_eq!(d.session(&session.id).exit, Some(ExitStatus::Code(0)));
    d.assert_all_sessions_gone();
}

#[test]
fn leader_exit_terminates_the_rest_of_the_session() {
    let d = DaemonGuard::start();
    let session = d.launch_sandbox(&["/bin/sh", "-c", "sleep 1000 & sleep 1000 & exit 0"]);

    let exited = wait_exited(&d, &session.id);

    assert_eq!(exited.exit, Some(ExitStatus::Code(0)));
    d.wait_session_gone(&session.id, EXIT_WAIT);
    d.assert_all_sessions_gone();
}

#[test]
fn leader_exit_also_ends_leftovers_that_ignore_sigterm() {
    let d = DaemonGuard::builder().grace("300ms").start();
    let work = d.dir().join("work");
    std::fs::create_dir(&work).unwrap();
    // The leader exits only once a child and a double-forked stray both ignore SIGTERM (each
    // creates its file after its `trap`).
    let script = "(trap '' TERM; : > child; exec sleep 1000) & \
                  (trap '' TERM; setsid sh -c ': > stray; exec sleep 1000' &); \
                  while [ ! -e child ] || [ ! -e stray ]; do sleep 0.01; done; exit 0";
    let session = d
        .launch(Launch {
            session_type: Some(SessionType::Sandbox),
            command: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
            cwd: Some(work.to_str().unwrap().to_owned()),
            ..Launch::default()
        })
        .expect("launch");

    wait_exited(&d, &session.id);

    d.wait_session_gone(&session.id, EXIT_WAIT);
    d.assert_all_sessions_gone();
}

#[test]
fn ttl_expiry_terminates_the_session() {
    let d = DaemonGuard::start();
    let fixture = Fixture::polite();
    let session = d
        .launch(Launch {
            ttl_ms: Some(300),
            ..fixture.launch()
        })
        .expect("launch");
    assert!(
        session.expires_at.is_some(),
        "a session with a TTL reports expires_at"
    );
    d.session_processes(&session.id);

    wait_exited(&d, &session.id);

    d.wait_session_gone(&session.id, EXIT_WAIT);
    d.assert_all_sessions_gone();
}

#[test]
fn ttl_expiry_force_kills_a_stubborn_session() {
    let d = DaemonGuard::builder().grace("300ms").start();
    let fixture = Fixture::stubborn();
    let (session, _) = d.spawn_with(
        &fixture,
        Launch {
            ttl_ms: Some(1_000),
            ..fixture.launch()
        },
    );

    let exited = wait_exited(&d, &session.id);

    assert_eq!(exited.exit, Some(ExitStatus::Signal(libc::SIGKILL)));
    d.wait_session_gone(&session.id, EXIT_WAIT);
    d.assert_all_sessions_gone();
}

#[test]
fn default_ttl_applies_to_sessions_launched_without_one() {
    let d = DaemonGuard::builder().default_ttl("300ms").start();
    let session = d.launch_sandbox(&["/bin/sh", "-c", "exec sleep 1000"]);

    wait_exited(&d, &session.id);

    d.wait_session_gone(&session.id, EXIT_WAIT);
}

#[test]
fn launch_beyond_max_sessions_is_refused_with_capacity_and_starts_nothing() {
    let d = DaemonGuard::builder().max_sessions(2).start();
    let (first, _) = d.spawn(&Fixture::sleeper());
    let (_second, _) = d.spawn(&Fixture::sleeper());

    let error = d
        .launch(Fixture::sleeper().launch())
        .expect_err("a third session exceeds --max-sessions 2");

    assert_eq!(error.code, ErrorCode::Capacity, "{error}");
    assert_eq!(d.sessions(Default::default()).len(), 2);
    let children = d.daemon_children();
    assert_eq!(
        children.len(),
        2,
        "only the two sessions run: {children:#?}"
    );

    // Capacity counts live sessions: once one is gone, a launch fits again.
    d.kill(first.id.as_str(), false, None);
    let (third, _) = d.spawn(&Fixture::sleeper());
    d.kill("all", false, None);
    d.assert_session_gone(&third.id);
    d.assert_all_sessions_gone();
}

#[test]
fn duplicate_tracking_id_is_a_conflict_among_live_sessions() {
    let d = DaemonGuard::start();
    let fixture = Fixture::sleeper();
    let with_tracking = || Launch {
        tracking_id: Some("unique-job".parse().unwrap()),
        ..fixture.launch()
    };
    let (first, _) = d.spawn_with(&fixture, with_tracking());

    let error = d
        .launch(with_tracking())
        .expect_err("the tracking id is taken");

    assert_eq!(error.code, ErrorCode::Conflict, "{error}");
    assert_eq!(
        d.daemon_children().len(),
        1,
        "the refused launch started nothing"
    );

    // Unique among *live* sessions: free again once the holder is gone.
    d.kill("unique-job", false, None);
    let (second, _) = d.spawn_with(&fixture, with_tracking());
    assert_ne!(first.id, second.id, "session ids are never reused");
    d.kill("unique-job", false, None);
    d.assert_all_sessions_gone();
}

#[test]
fn hostile_launch_requests_are_rejected_and_start_nothing() {
    let d = DaemonGuard::start();
    let sh = |script: &str| {
        Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            script.to_owned(),
        ])
    };
    let env = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
    let sandbox = Launch {
        session_type: Some(SessionType::Sandbox),
        command: sh("exec sleep 1000"),
        ..Launch::default()
    };
    let hostile = [
        Launch {
            command: sh("exec sleep 1000\0; echo pwned"),
            ..sandbox.clone()
        },
        Launch {
            args: vec!["a\0b".to_owned()],
            ..sandbox.clone()
        },
        Launch {
            env: env(SESSION_ENV, "someone-else"),
            ..sandbox.clone()
        },
        Launch {
            env: env("PATH=/evil:", "x"),
            ..sandbox.clone()
        },
        Launch {
            env: env("INNOCENT", "a\0LD_PRELOAD=/evil.so"),
            ..sandbox.clone()
        },
        Launch {
            cwd: Some("relative/dir".to_owned()),
            ..sandbox.clone()
        },
        Launch {
            command: None,
            ..sandbox.clone()
        },
        Launch {
            command: Some(vec![]),
            ..sandbox.clone()
        },
    ];

    for launch in hostile {
        let error = d
            .launch(launch.clone())
            .expect_err(&format!("{launch:?} must be refused"));
        assert_eq!(error.code, ErrorCode::InvalidRequest, "{launch:?}: {error}");
    }

    assert!(d.sessions(Default::default()).is_empty());
    assert!(d.daemon_children().is_empty(), "{:#?}", d.daemon_children());
    assert!(
        procfs::all_processes()
            .iter()
            .all(|p| p.session.as_deref() != Some("someone-else")),
        "a process carries the forged session marker"
    );
}

#[test]
fn launch_of_a_missing_program_fails_and_leaves_nothing() {
    let d = DaemonGuard::start();

    let error = d
        .launch(Launch {
            session_type: Some(SessionType::Sandbox),
            command: Some(vec!["/nonexistent/browserd-test-program".to_owned()]),
            ..Launch::default()
        })
        .expect_err("exec cannot succeed");

    assert_eq!(error.code, ErrorCode::LaunchFailed, "{error}");
    wait_until(
        Duration::from_secs(5),
        "the failed child to be reaped",
        || d.daemon_children().is_empty(),
    );
    assert!(
        d.sessions(Default::default())
            .iter()
            .all(|s| s.state == SessionState::Exited),
        "a failed launch leaves no live session"
    );
}

#[test]
fn only_the_most_recent_exited_sessions_stay_listed() {
    let d = DaemonGuard::builder().flag("--keep-exited", 2).start();
    let ids: Vec<_> = (0..3)
        .map(|_| {
            let session = d.launch_sandbox(&["sh", "-c", "exit 0"]);
            wait_until(Duration::from_secs(10), "the session to exit", || {
                d.session(&session.id).state == SessionState::Exited
            });
            session.id
        })
        .collect();

    let listed: Vec<_> = d
        .sessions(browserd_proto::SessionsFilter::default())
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        listed,
        ids[1..],
        "the oldest exited session is forgotten first"
    );
    // A forgotten session is unknown; killing it is `not_found`, not a silent success.
    let result = d.kill(ids[0].as_str(), false, None);
    assert_eq!(result.failed[0].code, ErrorCode::NotFound, "{result:?}");
}

/// The daemon watches leaders' exits through pidfds, at most half its descriptor limit of
/// them; leaders launched past that are reaped all the same (their exits are found by a walk
/// of every thread's children), whether they exit on their own or are killed.
#[test]
fn leaders_past_the_pidfd_budget_are_reaped_too() {
    let d = DaemonGuard::start();
    // 64 descriptors: 32 leaders watched at most.
    let limit = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    // SAFETY: prlimit reads `limit` and writes nothing (no old limit asked for).
    let set = unsafe { libc::prlimit(d.pid(), libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    let long: Vec<_> = (0..40)
        .map(|_| d.launch_sandbox(&["sleep", "1000"]))
        .collect();
    assert_eq!(pidfds_of(d.pid()), 32, "pidfds the daemon holds");
    // Past the budget: nothing watches these leaders.
    let short: Vec<_> = (0..4)
        .map(|_| d.launch_sandbox(&["sh", "-c", "sleep 0.2"]))
        .collect();
    for session in &short {
        let exited = wait_exited(&d, &session.id);
        assert_eq!(exited.exit, Some(ExitStatus::Code(0)), "{exited:?}");
    }
    assert_eq!(procfs::zombie_children_of(d.pid()), vec![]);

    let result = d.bulk(browserd_proto::BulkTerminate {
        all: Some(true),
        ..Default::default()
    });

    let ids: Vec<_> = long.iter().map(|s| &s.id).collect();
    assert_terminated_exactly(&result, &ids);
    wait_until(EXIT_WAIT, "the daemon to have no child left", || {
        procfs::children_of(d.pid()).is_empty()
    });
}

/// How many pidfds process `pid` holds.
fn pidfds_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the daemon's fds")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| {
            // `pidfd:[INODE]` where pidfds have their own file system (Linux 6.9).
            let target = target.to_string_lossy();
            target == "anon_inode:[pidfd]" || target.starts_with("pidfd:")
        })
        .count()
}
