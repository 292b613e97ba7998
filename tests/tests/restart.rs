//! Restart without loss: a reload re-executes the daemon in place and keeps every session,
//! lease, TTL, tracking id, recent exit and connection; a daemon killed without a shutdown
//! takes its sessions up again when it starts, terminates what sessions lost while it was
//! down left behind, and never signals a process it cannot prove is its own.

use browserd_proto::{
    EndReason, ErrorCode, ExitStatus, Launch, ReloadResult, Request, SessionInfo, SessionState,
    SessionType, StatusResult,
};
use browserd_tests::cdp::Cdp;
use browserd_tests::procfs::{self, ProcId};
use browserd_tests::{wait_for, wait_until, Client, DaemonGuard, Fixture};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// What must be the same about a session before and after a restart.
fn identity(s: &SessionInfo) -> (String, Option<String>, String, i32, u32, Option<String>) {
    (
        s.id.to_string(),
        s.tracking_id.as_ref().map(ToString::to_string),
        s.workspace.to_string(),
        s.pid,
        s.leases,
        s.expires_at.clone(),
    )
}

fn listing(d: &DaemonGuard) -> BTreeMap<String, SessionInfo> {
    d.sessions(Default::default())
        .into_iter()
        .map(|s| (s.id.to_string(), s))
        .collect()
}

/// Asks for a reload and waits until the re-executed daemon answers with the new count.
#[track_caller]
fn reload(d: &DaemonGuard) -> StatusResult {
    let before = d.status();
    let result: ReloadResult = d
        .call(Request::Reload)
        .unwrap_or_else(|e| panic!("reload refused: {e}"));
    assert_eq!(result.reloads, before.reloads + 1);
    wait_reloaded(d, result.reloads)
}

#[track_caller]
fn wait_reloaded(d: &DaemonGuard, reloads: u64) -> StatusResult {
    let status = wait_for(RELOAD_TIMEOUT, "the reloaded daemon to serve", || {
        Client::connect(d.socket())
            .ok()?
            .try_request(&Request::Status)
            .ok()?
            .into_result::<StatusResult>()
            .ok()
            .filter(|s| s.reloads == reloads)
    });
    assert_eq!(status.pid as i32, d.pid(), "a reload keeps the pid");
    status
}

fn sandbox(fixture: &Fixture, tracking: &str, workspace: &str) -> Launch {
    Launch {
        tracking_id: Some(tracking.parse().unwrap()),
        workspace: Some(workspace.parse().unwrap()),
        ttl_ms: Some(3_600_000),
        ..fixture.launch()
    }
}

#[test]
fn reloads_under_load_lose_no_session_and_no_connection() {
    let d = DaemonGuard::builder().grace("300ms").start();
    let (stray, stray_tree) = d.spawn_with(
        &Fixture::stubborn_stray(),
        sandbox(&Fixture::stubborn_stray(), "stray", "w1"),
    );
    let (polite, polite_tree) = d.spawn_with(
        &Fixture::polite(),
        sandbox(&Fixture::polite(), "polite", "w2"),
    );
    d.lease(polite.id.as_str(), Some(600_000)).unwrap();
    let exited = d.launch_sandbox(&["/bin/sh", "-c", "exit 7"]);
    d.wait_session_gone(&exited.id, Duration::from_secs(10));
    let before = listing(&d);

    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(AtomicUsize::new(0));
    let status_errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let status_loop = {
        let (stop, statuses, errors) = (stop.clone(), statuses.clone(), status_errors.clone());
        let socket = d.socket().to_owned();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let answer = Client::connect(&socket)
                    .map_err(|e| format!("connect: {e}"))
                    .and_then(|mut c| {
                        c.set_timeout(RELOAD_TIMEOUT);
                        c.try_request(&Request::Status)
                            .map_err(|e| format!("request: {e}"))
                    });
                match answer.map(|r| r.ok) {
                    Ok(true) => {
                        statuses.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => errors.lock().unwrap().push("status failed".to_owned()),
                    Err(e) => errors.lock().unwrap().push(e),
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    // One long-lived connection, used across every reload.
    let mut kept = d.client();
    kept.set_timeout(RELOAD_TIMEOUT);
    let churn = {
        let stop = stop.clone();
        let socket = d.socket().to_owned();
        std::thread::spawn(move || {
            let mut done = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut client = Client::connect(&socket).expect("connect");
                client.set_timeout(RELOAD_TIMEOUT);
                let launch = Launch {
                    session_type: Some(SessionType::Sandbox),
                    workspace: Some("churn".parse().unwrap()),
                    command: Some(vec!["sleep".into(), "60".into()]),
                    ..Launch::default()
                };
                let launched = client.request(&Request::Launch(launch));
                assert!(launched.ok, "launch during reloads: {launched:?}");
                let killed = client.request_json(&serde_json::json!(
                    {"op": "bulk_terminate", "workspaces": ["churn"], "force": true, "grace_ms": 100}
                ));
                assert!(killed.ok, "kill during reloads: {killed:?}");
                done += 1;
            }
            done
        })
    };
    for round in 1..=5u64 {
        std::thread::sleep(Duration::from_millis(150));
        let status = if round % 2 == 0 {
            d.send_signal(Signal::SIGHUP);
            wait_reloaded(&d, round)
        } else {
            reload(&d)
        };
        assert_eq!(status.reloads, round);
        let answer = kept.request(&Request::Status);
        assert!(
            answer.ok,
            "a connection kept across reload {round} still answers: {answer:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    status_loop.join().unwrap();
    let churned = churn.join().unwrap();
    let errors = status_errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "connections refused or dropped during reloads: {errors:?}"
    );
    assert!(statuses.load(Ordering::Relaxed) > 20 && churned > 0);

    let after = listing(&d);
    for (id, session) in &before {
        let now = after
            .get(id)
            .unwrap_or_else(|| panic!("session {id} is gone after reloads"));
        assert_eq!(identity(now), identity(session), "session {id} changed");
        assert_eq!(now.state, session.state);
        assert_eq!(now.exit, session.exit);
    }
    assert_eq!(after[exited.id.as_str()].exit, Some(ExitStatus::Code(7)));
    d.assert_tree_alive(&stray_tree);
    d.assert_tree_alive(&polite_tree);
    // The lease is still held, and every process still belongs to its session.
    let refused = d.kill("polite", false, Some(100));
    assert_eq!(refused.failed[0].code, ErrorCode::Leased);
    let killed = d.kill("all", true, Some(200));
    assert!(killed.failed.is_empty(), "{killed:?}");
    for id in [&stray.id, &polite.id] {
        d.assert_session_gone(id);
    }
    d.assert_all_sessions_gone();
}

#[test]
fn a_browser_keeps_its_devtools_connection_and_its_stderr_across_a_reload() {
    if std::env::var_os("BROWSERD_TEST_SKIP_BROWSER").is_some() {
        eprintln!("skipped: BROWSERD_TEST_SKIP_BROWSER is set");
        return;
    }
    let d = DaemonGuard::builder().grace("2s").start();
    let browser = d
        .launch(Launch {
            session_type: Some(SessionType::Browser),
            tracking_id: Some("chrome".parse().unwrap()),
            ..Launch::default()
        })
        .expect("a browser launches");
    let endpoint = browser.ws_endpoint.clone().expect("an endpoint");
    let mut cdp = Cdp::connect(&endpoint).expect("CDP connects");
    let product = cdp.product().expect("Browser.getVersion");
    reload(&d);
    reload(&d);
    assert_eq!(
        cdp.product().expect("the same CDP connection works"),
        product
    );
    // A page that writes to the browser's stderr (its console goes there with
    // --enable-logging=stderr only; an open page still makes Chromium log) must not kill it.
    let page = cdp
        .open_page("about:blank")
        .expect("a page opens after reloads");
    cdp.evaluate(&page, "console.error('after reload'); 1 + 1")
        .expect("the page runs");
    let listed = d.session(&browser.id);
    assert_eq!(listed.state, SessionState::Running);
    assert_eq!(listed.ws_endpoint.as_deref(), Some(endpoint.as_str()));
    let profile = listed.profile_dir.clone().expect("a profile dir");
    drop(cdp);
    let killed = d.kill("chrome", true, None);
    assert!(killed.failed.is_empty(), "{killed:?}");
    assert!(
        !std::path::Path::new(&profile).exists(),
        "the profile dir is removed"
    );
    let left: Vec<_> = procfs::all_processes()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.pid))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&profile))
        })
        .collect();
    assert!(left.is_empty(), "browser processes left: {left:?}");
    d.assert_all_sessions_gone();
}

#[test]
fn a_reload_with_a_broken_config_is_refused_and_nothing_is_lost() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "max_sessions = 5\n").unwrap();
    let d = DaemonGuard::builder()
        .flag("--config", config.path().display())
        .start();
    let (session, tree) = d.spawn(&Fixture::polite());
    let mut file = std::fs::File::create(config.path()).unwrap();
    file.write_all(b"max_sessions = \"lots\"\n").unwrap();
    let refused = d.call::<ReloadResult>(Request::Reload).unwrap_err();
    assert_eq!(refused.code, ErrorCode::ReloadFailed, "{refused}");
    assert!(refused.message.contains("max_sessions"), "{refused}");
    // SIGHUP with the same broken config: refused too, and the daemon serves on.
    d.send_signal(Signal::SIGHUP);
    wait_until(
        RELOAD_TIMEOUT,
        "the refused SIGHUP reload in the log",
        || d.log().matches("reload refused").count() == 2,
    );
    let status = d.status();
    assert_eq!(status.reloads, 0);
    assert_eq!(status.limits.max_sessions, 5);
    d.assert_tree_alive(&tree);
    // Fixed: the reload goes through and the new value is used.
    std::fs::write(config.path(), "max_sessions = 9\n").unwrap();
    let status = reload(&d);
    assert_eq!(status.limits.max_sessions, 9);
    assert_eq!(d.session(&session.id).pid, session.pid);
    d.assert_tree_alive(&tree);
    d.kill(session.id.as_str(), false, None);
    d.assert_all_sessions_gone();
}

#[test]
fn a_crashed_daemon_adopts_its_sessions_and_the_whole_contract_holds_for_them() {
    let mut d = DaemonGuard::builder().grace("300ms").start();
    let fixtures = [
        Fixture::polite(),
        Fixture::stubborn(),
        Fixture::polite_stray(),
        Fixture::stubborn_stray(),
        Fixture::deep(),
    ];
    let mut launched = Vec::new();
    for (i, fixture) in fixtures.iter().enumerate() {
        launched.push(d.spawn_with(fixture, sandbox(fixture, &format!("t{i}"), "crash")));
    }
    let (leased, _) = &launched[0];
    d.lease(leased.id.as_str(), Some(600_000)).unwrap();
    let before = listing(&d);

    d.crash();
    for (_, tree) in &launched {
        d.assert_tree_alive(tree);
    }
    d.restart(&[]);
    assert!(d.log().contains("5 session(s) adopted"), "{}", d.log());
    let after = listing(&d);
    for (id, session) in &before {
        let now = &after[id];
        assert_eq!(identity(now), identity(session));
        assert_eq!(now.state, SessionState::Running);
    }
    for (session, tree) in &launched {
        let listed = d.session(&session.id);
        assert_eq!(
            listed.processes,
            Some(tree.procs.len() as u32),
            "every process of {} is found again: {listed:?}",
            session.id
        );
    }
    // The lease survived: a plain kill is refused and touches nothing.
    let refused = d.kill(leased.id.as_str(), false, Some(100));
    assert_eq!(refused.failed[0].code, ErrorCode::Leased);
    d.assert_tree_alive(&launched[0].1);
    // Stubborn ones without force: timeout, still alive.
    let timed_out = d.kill("t1", false, Some(200));
    assert_eq!(
        timed_out.failed[0].code,
        ErrorCode::Timeout,
        "{timed_out:?}"
    );
    d.assert_tree_alive(&launched[1].1);
    let killed = d.kill("all", true, Some(300));
    assert!(killed.failed.is_empty(), "{killed:?}");
    for (session, _) in &launched {
        // Not the restarted daemon's children: their parent (init) reaps them.
        d.wait_session_gone(&session.id, Duration::from_secs(10));
        let listed = d.session(&session.id);
        assert_eq!(
            listed.exit,
            Some(ExitStatus::Unknown),
            "only a parent reads an exit status"
        );
        assert_eq!(listed.reason, Some(EndReason::Terminated));
    }
    d.assert_all_sessions_gone();
}

#[test]
fn sessions_lost_while_down_are_listed_exited_and_what_they_left_is_terminated() {
    let mut d = DaemonGuard::builder().grace("300ms").start();
    let (kept, kept_tree) = d.spawn(&Fixture::polite());
    let (lost, lost_tree) = d.spawn(&Fixture::stubborn_children());
    let browser_like = d.launch(Fixture::fake_browser().launch()).unwrap();
    let session_dir = d
        .state_dir()
        .join("sessions")
        .join(browser_like.id.as_str());
    // A dir nobody owns, as a crash between a session's end and its cleanup leaves.
    let orphan_dir = d.state_dir().join("sessions").join("ffffffff-000001");
    std::fs::create_dir_all(orphan_dir.join("profile")).unwrap();

    d.crash();
    // While the daemon is down, two leaders die: the children of one stay behind.
    for leader in [lost.pid, browser_like.pid] {
        let info = procfs::process(leader).expect("the leader is alive");
        assert!(procfs::signal_exact(info.id(), libc::SIGKILL));
    }
    let leftovers: Vec<ProcId> = lost_tree
        .procs
        .iter()
        .filter(|p| p.pid != lost.pid)
        .map(|p| p.id())
        .collect();
    wait_until(
        Duration::from_secs(10),
        "the dead leaders to be reaped by init",
        || {
            [lost.pid, browser_like.pid]
                .iter()
                .all(|&pid| procfs::process(pid).is_none_or(|p| p.session.is_none()))
        },
    );
    d.restart(&[]);
    wait_until(
        Duration::from_secs(15),
        "the lost session to be listed exited",
        || d.session(&lost.id).state == SessionState::Exited,
    );
    let listed = d.session(&lost.id);
    assert_eq!(listed.reason, Some(EndReason::Lost));
    assert_eq!(listed.exit, Some(ExitStatus::Unknown));
    for id in &leftovers {
        assert!(
            id.current().is_none_or(|p| p.is_zombie()),
            "a leftover of the lost session survived: {id:?}"
        );
    }
    let browser_listed = d.session(&browser_like.id);
    assert_eq!(browser_listed.state, SessionState::Exited);
    assert_eq!(browser_listed.reason, Some(EndReason::Lost));
    assert!(!session_dir.exists(), "a lost session's dir is removed");
    assert!(!orphan_dir.exists(), "a dir no session owns is swept");
    assert_eq!(d.session(&kept.id).state, SessionState::Running);
    d.assert_tree_alive(&kept_tree);
    d.kill("all", true, Some(200));
    d.assert_all_sessions_gone();
}

#[test]
fn a_process_that_reused_a_dead_leaders_pid_is_never_signalled() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: choosing the next pid (/proc/sys/kernel/ns_last_pid) needs root");
        return;
    }
    let mut d = DaemonGuard::builder().grace("200ms").start();
    let session = d.launch_sandbox(&["sleep", "600"]);
    d.crash();
    let leader = procfs::process(session.pid).expect("the leader is alive");
    assert!(procfs::signal_exact(leader.id(), libc::SIGKILL));
    wait_until(
        Duration::from_secs(10),
        "the dead leader to be reaped by init",
        || procfs::process(session.pid).is_none(),
    );
    // An unrelated process gets the dead leader's pid.
    let impostor = wait_for(
        Duration::from_secs(10),
        "an unrelated process on the leader's pid",
        || procfs::spawn_sleep_with_pid(session.pid, "600"),
    );
    let impostor = Reaped(impostor);
    d.restart(&[]);
    wait_until(
        Duration::from_secs(10),
        "the session to be listed lost",
        || d.session(&session.id).state == SessionState::Exited,
    );
    assert_eq!(d.session(&session.id).reason, Some(EndReason::Lost));
    d.kill("all", true, Some(100));
    let alive = procfs::process(impostor.0).expect("the unrelated process lives");
    assert!(
        !alive.is_zombie(),
        "the unrelated process was not signalled"
    );
    d.assert_all_sessions_gone();
}

#[test]
fn a_torn_corrupt_or_foreign_journal_is_reported_and_nothing_unproven_is_signalled() {
    for damage in ["torn", "corrupt", "version"] {
        let mut d = DaemonGuard::builder().start();
        let (session, tree) = d.spawn(&Fixture::polite());
        d.crash();
        let journal = d.state_dir().join("journal");
        let mut bytes = std::fs::read(&journal).unwrap();
        match damage {
            "torn" => bytes.truncate(bytes.len() / 2),
            "corrupt" => {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x55;
            }
            _ => bytes = b"00000000 {\"header\":{\"journal\":99}}\n".to_vec(),
        }
        std::fs::write(&journal, bytes).unwrap();
        d.restart(&[]);
        let log = d.log();
        assert!(
            log.contains("journal:"),
            "{damage}: the log says what was wrong: {log}"
        );
        // Whatever could still be read was checked; the session's processes live on, or
        // are its own session still; nothing else was touched.
        d.assert_tree_alive(&tree);
        let status = d.status();
        assert_eq!(status.sessions.terminating, 0);
        // Clean up: what the daemon could prove is killed by it, the rest by the guard.
        let _ = d.kill("all", true, Some(100));
        let _ = session;
    }
}

#[test]
fn on_restart_kill_terminates_everything_from_before_and_nothing_else() {
    let mut d = DaemonGuard::builder().grace("200ms").start();
    let (a, _) = d.spawn(&Fixture::stubborn_stray());
    let (b, _) = d.spawn(&Fixture::deep());
    let bystander = KillOnDrop(
        std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap(),
    );
    d.crash();
    d.restart(&["--on-restart", "kill"]);
    for session in [&a, &b] {
        d.wait_session_gone(&session.id, Duration::from_secs(15));
        wait_until(
            Duration::from_secs(10),
            "the session to be listed exited",
            || d.session(&session.id).state == SessionState::Exited,
        );
        assert_eq!(d.session(&session.id).reason, Some(EndReason::Lost));
    }
    let alive = procfs::process(bystander.0.id() as i32).expect("the bystander lives");
    assert!(!alive.is_zombie());
    d.assert_all_sessions_gone();
}

/// A child of the test (by pid) killed and reaped when dropped.
struct Reaped(i32);

impl Drop for Reaped {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0);
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

/// A child of the test killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
