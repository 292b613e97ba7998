//! What a listing says a session uses: figures from the last measurement, with their age,
//! measured again in the background once a listing finds them stale (issue 13: `ls` must not
//! cost a read of every process; SPEC "Truth in listings": the listing says what it is).

use browserd_proto::{SessionId, SessionInfo, SessionsFilter};
use browserd_tests::{assert_terminated_exactly, procfs, wait_for, DaemonGuard};
use std::io::Write;
use std::time::{Duration, Instant};

/// How long the daemon keeps figures before a listing has them measured again.
const FRESH: Duration = Duration::from_secs(2);

fn listed(d: &DaemonGuard, id: &SessionId) -> SessionInfo {
    d.sessions(SessionsFilter::default())
        .into_iter()
        .find(|s| &s.id == id)
        .unwrap_or_else(|| panic!("session {id} is not listed"))
}

#[test]
fn a_listing_says_how_old_its_figures_are_and_a_stale_one_has_them_measured_again() {
    let d = DaemonGuard::start();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // One process until the test writes to the fifo, then two.
    let script = format!("read x < '{}'; sleep 600 & wait", fifo.display());
    let session = d.launch_sandbox(&["/bin/sh", "-c", &script]);

    let first = listed(&d, &session.id);
    assert_eq!(first.processes, Some(1), "{first:?}");
    let age = first
        .usage_age_ms
        .expect("a live session's figures say how old they are");
    assert!(
        age < FRESH.as_millis() as u64,
        "the first listing of a session measures it: {first:?}"
    );
    assert!(first.memory_bytes.is_some() && first.cpu_seconds.is_some());

    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .and_then(|mut f| f.write_all(b"go\n"))
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the session's second process",
        || procfs::children_of(session.pid).into_iter().next(),
    );
    let forked = Instant::now();

    // Until the figures are measured again, every listing shows the old ones, and says they
    // are at least as old as the change they do not show.
    let fresh = wait_for(
        FRESH * 5,
        "a listing with figures measured after the fork",
        || {
            let asked = forked.elapsed();
            let now = listed(&d, &session.id);
            let age = Duration::from_millis(now.usage_age_ms.expect("figures have an age"));
            match now.processes {
                Some(2) => Some(now),
                Some(1) => {
                    assert!(
                        age >= asked,
                        "a listing shows one process, measured {age:?} ago, {asked:?} after the \
                         second one started: its age hides that it is stale ({now:?})"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                    None
                }
                other => panic!("the session has 1 or 2 processes, listed {other:?}"),
            }
        },
    );
    assert!(Duration::from_millis(fresh.usage_age_ms.unwrap()) <= forked.elapsed());

    let result = d.kill(session.id.as_str(), true, Some(1000));
    assert_terminated_exactly(&result, &[&session.id]);
    d.assert_all_sessions_gone();
}
