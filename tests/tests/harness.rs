//! Checks of the harness itself, without a daemon: every fixture really grows into the tree
//! it declares (so a daemon test that waits for it can rely on the shape), and `/proc`
//! attribution by marker works.

use browserd_tests::fixtures::session_command;
use browserd_tests::procfs::{self, signal_exact};
use browserd_tests::{wait_until, Fixture};
use std::time::Duration;

/// Starts `fixture` the way the daemon would (new session, marked environment), checks
/// that it reaches its declared shape, and SIGKILLs it.
fn check_shape(fixture: &Fixture) {
    let marker = format!("harness-{}-{}", std::process::id(), fixture.name);
    let mut leader = session_command(&fixture.argv, &marker)
        .spawn()
        .expect("spawn the fixture");
    let leader_pid = leader.id() as i32;

    let mut last = Vec::new();
    let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(
            Duration::from_secs(10),
            format!("fixture `{}` to reach its shape", fixture.name),
            || {
                last = procfs::session_processes(&marker);
                fixture.is_ready(leader_pid, &last)
            },
        )
    }));

    for p in procfs::session_processes(&marker) {
        signal_exact(p.id(), libc::SIGKILL);
    }
    let _ = leader.wait();
    wait_until(Duration::from_secs(10), "the fixture to die", || {
        procfs::session_processes(&marker).is_empty()
    });
    if ready.is_err() {
        panic!(
            "fixture `{}` never reached its shape; last seen: {last:#?}",
            fixture.name
        );
    }
    assert_eq!(last.len(), fixture.expected_processes());
    assert!(last
        .iter()
        .all(|p| p.session.as_deref() == Some(marker.as_str())));
}

#[test]
fn every_fixture_reaches_its_declared_shape() {
    for fixture in [
        Fixture::sleeper(),
        Fixture::stubborn_sleeper(),
        Fixture::polite(),
        Fixture::stubborn_children(),
        Fixture::stubborn(),
        Fixture::polite_stray(),
        Fixture::stubborn_stray(),
        Fixture::deep(),
        Fixture::fake_browser(),
    ] {
        check_shape(&fixture);
    }
}

#[test]
fn leak_guard_kills_what_a_crashed_daemon_left_behind() {
    let ids = {
        let d = browserd_tests::DaemonGuard::start();
        let (polite, _) = d.spawn(&Fixture::polite());
        let (stray, _) = d.spawn(&Fixture::stubborn_stray());
        // A daemon that dies without cleaning up leaves its sessions running...
        d.send_signal(nix::sys::signal::Signal::SIGKILL);
        d.wait_exit(Duration::from_secs(5));
        vec![polite.id, stray.id]
    };
    // ...and dropping its guard must not leave them to the rest of the suite.
    wait_until(Duration::from_secs(10), "the leak guard's SIGKILLs", || {
        ids.iter()
            .all(|id| procfs::session_processes(id.as_str()).is_empty())
    });
}
