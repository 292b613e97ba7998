//! Concurrency of termination: many stubborn sessions terminated by one request take about
//! one grace period in total, not one per session.

use browserd_proto::BulkTerminate;
use browserd_tests::{assert_terminated_exactly, DaemonGuard, Fixture};
use std::time::{Duration, Instant};

const SESSIONS: usize = 200;
const GRACE_MS: u64 = 1_000;

#[test]
fn two_hundred_stubborn_sessions_are_force_terminated_concurrently() {
    let d = DaemonGuard::builder()
        .max_sessions(1_000)
        .max_grace("10s")
        .start();
    let fixture = Fixture::stubborn_sleeper();
    let mut client = d.client();
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|_| {
            let response = client.request(&browserd_proto::Request::Launch(fixture.launch()));
            let launched: browserd_proto::LaunchResult =
                response.into_result().expect("launch a stubborn sleeper");
            launched.session
        })
        .collect();
    let pairs: Vec<_> = sessions.iter().map(|s| (s, &fixture)).collect();
    d.wait_trees(&pairs);

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
