//! Concurrency of termination: many stubborn sessions terminated by one request take about
//! one grace period in total, not one per session.

use browserd_proto::{BulkTerminate, ExitStatus, SessionInfo};
use browserd_tests::{assert_terminated_exactly, procfs, DaemonGuard, Fixture};
use std::time::{Duration, Instant};

const SESSIONS: usize = 200;
const GRACE_MS: u64 = 1_000;

#[test]
fn two_hundred_stubborn_sessions_are_force_terminated_concurrently() {
    let d = DaemonGuard::builder()
        .max_sessions(1_000)
        .max_grace("10s")
        .start();
    let sessions = launch_trees(&d, &Fixture::stubborn_sleeper(), SESSIONS);

    let start = Instant::now();
    let result = d.bulk(BulkTerminate {
        all: Some(true),
        force: Some(true),
        grace_ms: Some(GRACE_MS),
        ..Default::default()
    });
    let elapsed = start.elapsed();

    let ids: Vec<_> = sessions.iter().map(|s| &s.id).collect();
    assert_terminated_exactly(&result, &ids);
    assert!(
        elapsed < Duration::from_secs(20),
        "terminating {SESSIONS} sessions with a {GRACE_MS} ms grace took {elapsed:?}: they \
         should be terminated at once, not one after another"
    );
    assert!(
        elapsed >= Duration::from_millis(GRACE_MS * 9 / 10),
        "SIGTERM-ignoring sessions were gone after {elapsed:?}, before the {GRACE_MS} ms grace: \
         the grace period was not given"
    );
    d.assert_all_sessions_gone();
}

/// Sessions enough for a bulk kill's first signals to be split between the event loop and
/// the daemon's second sender (half of them each, where it has one).
const SPLIT_SESSIONS: usize = 96;

/// Every session of a bulk kill split between two senders ends by its first SIGTERM, with
/// nothing left of it; where the daemon may use real-time priority (root, as in CI), the
/// second sender is there, at that priority, asleep between bursts.
#[test]
fn a_bulk_kill_split_between_two_senders_ends_every_session_by_its_first_signal() {
    let d = DaemonGuard::builder().max_sessions(1_000).start();
    let sessions = launch_trees(&d, &Fixture::polite(), SPLIT_SESSIONS);
    // The daemon's helper threads run as batch threads, and its bursts and spawners at
    // real-time priority: no session inherits any of it.
    for session in &sessions {
        let scheduling = procfs::scheduling(session.pid);
        assert_eq!(
            scheduling,
            Some((libc::SCHED_OTHER, 0)),
            "session {}",
            session.id
        );
    }
    let threads = daemon_threads(d.pid());
    let spawners: Vec<i32> = threads
        .iter()
        .filter(|(name, _)| name.starts_with("spawner"))
        .map(|&(_, policy)| policy)
        .collect();
    assert!(
        !spawners.is_empty(),
        "the sessions were spawned by spawner threads"
    );
    if nix::unistd::geteuid().is_root() {
        assert!(
            spawners.iter().all(|&policy| policy == libc::SCHED_FIFO),
            "root: every spawner at real-time priority: {spawners:?}"
        );
    }
    let batch = threads
        .into_iter()
        .filter(|(_, policy)| *policy == libc::SCHED_BATCH)
        .map(|(name, _)| name)
        .collect::<Vec<_>>();
    assert!(
        batch.iter().any(|name| name == "journal"),
        "the journal's writer is a batch thread: {batch:?}"
    );
    assert!(
        !batch.iter().any(|name| name.starts_with("spawner")),
        "no spawner is: {batch:?}"
    );

    let result = d.bulk(BulkTerminate {
        all: Some(true),
        ..Default::default()
    });

    let ids: Vec<_> = sessions.iter().map(|s| &s.id).collect();
    assert_terminated_exactly(&result, &ids);
    d.assert_all_sessions_gone();
    for session in &sessions {
        assert_eq!(
            d.session(&session.id).exit,
            Some(ExitStatus::Signal(libc::SIGTERM)),
            "{}",
            session.id
        );
    }
    let sender = second_sender(d.pid());
    if nix::unistd::geteuid().is_root()
        && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
    {
        let (state, policy) = sender.expect("root on more than one core: a second sender");
        assert_eq!(state, "S", "asleep between bursts");
        assert_eq!(policy, libc::SCHED_FIFO);
    } else {
        eprintln!("not root, or one core: the daemon may have no second sender ({sender:?})");
    }
}

/// Launches `count` sessions of `fixture` on one connection and waits until every tree is
/// complete.
fn launch_trees(d: &DaemonGuard, fixture: &Fixture, count: usize) -> Vec<SessionInfo> {
    let mut client = d.client();
    let sessions: Vec<SessionInfo> = (0..count)
        .map(|_| {
            let response = client.request(&browserd_proto::Request::Launch(fixture.launch()));
            let launched: browserd_proto::LaunchResult = response
                .into_result()
                .unwrap_or_else(|e| panic!("launch a {} tree: {e:?}", fixture.name));
            launched.session
        })
        .collect();
    let pairs: Vec<_> = sessions.iter().map(|s| (s, fixture)).collect();
    d.wait_trees(&pairs);
    sessions
}

/// The scheduling policy of process (or thread) `pid`.
fn policy_of(pid: i32) -> Option<i32> {
    procfs::scheduling(pid).map(|(policy, _)| policy)
}

/// Each of the daemon's threads, by name, with its scheduling policy.
fn daemon_threads(daemon: i32) -> Vec<(String, i32)> {
    std::fs::read_dir(format!("/proc/{daemon}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|task| {
                    let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
                    let tid: i32 = task.file_name().to_str()?.parse().ok()?;
                    Some((name.trim().to_owned(), policy_of(tid)?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The state and scheduling policy of the daemon's thread named `signals`.
fn second_sender(daemon: i32) -> Option<(String, i32)> {
    std::fs::read_dir(format!("/proc/{daemon}/task"))
        .ok()?
        .flatten()
        .find_map(|task| {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            if comm.trim() != "signals" {
                return None;
            }
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
            Some((fields.first()?.to_string(), fields.get(38)?.parse().ok()?))
        })
}
