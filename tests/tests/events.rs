//! Session events: exactly one per state change, in order per session, over the socket's
//! `watch`, `browserctl events` and SSE; filters; a subscriber that never reads is dropped
//! with `lagged` and slows nothing; streams across a reload.

use browserd_proto::{
    EndReason, Event, EventKind, ExitStatus, Launch, SessionType, Watch, Workspace,
};
use browserd_tests::events::{assert_in_order, kinds_by_session, Watcher};
use browserd_tests::http::{SseStream, TokenFile};
use browserd_tests::{DaemonGuard, Fixture};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use EventKind::{Exited, Launched, LeaseExpired, Running, Terminating, TtlExpired};

const WAIT: Duration = Duration::from_secs(10);

fn exited(id: &browserd_proto::SessionId) -> impl Fn(&Event) -> bool + '_ {
    move |e| e.event == Exited && e.session.as_ref() == Some(id)
}

#[test]
fn a_kill_is_seen_as_launched_running_terminating_exited_once_each() {
    let d = DaemonGuard::start();
    let mut watcher = Watcher::open(d.socket(), Watch::default());
    let fixture = Fixture::polite_stray();
    let (session, _) = d.spawn_with(
        &fixture,
        Launch {
            tracking_id: Some("job-1".parse().unwrap()),
            workspace: Some("ci".parse().unwrap()),
            ..fixture.launch()
        },
    );
    d.kill(session.id.as_str(), false, None);

    let events = watcher.until(WAIT, exited(&session.id));
    assert_in_order(&events);
    assert!(events[0].seq >= watcher.next_seq);
    assert_eq!(
        kinds_by_session(&events)[session.id.as_str()],
        [Launched, Running, Terminating, Exited]
    );
    for event in &events {
        assert_eq!(event.session.as_ref(), Some(&session.id));
        assert_eq!(event.tracking_id.as_ref().unwrap().as_str(), "job-1");
        assert_eq!(event.workspace.as_ref().unwrap().as_str(), "ci");
        assert_eq!(event.session_type, Some(SessionType::Sandbox));
        assert_eq!(event.pid, Some(session.pid));
    }
    let last = events.last().unwrap();
    assert_eq!(last.reason, Some(EndReason::Terminated));
    assert_eq!(last.exit, Some(ExitStatus::Signal(libc::SIGTERM)));
}

#[test]
fn a_natural_exit_is_seen_with_its_exit_code() {
    let d = DaemonGuard::start();
    let mut watcher = Watcher::open(d.socket(), Watch::default());
    let session = d.launch_sandbox(&["/bin/sh", "-c", "sleep 0.2; exit 3"]);

    let events = watcher.until(WAIT, exited(&session.id));
    assert_eq!(
        kinds_by_session(&events)[session.id.as_str()],
        [Launched, Running, Exited]
    );
    let last = events.last().unwrap();
    assert_eq!(last.exit, Some(ExitStatus::Code(3)));
    assert_eq!(last.reason, Some(EndReason::Exited));
}

#[test]
fn ttl_and_lease_expiry_are_events() {
    let d = DaemonGuard::start();
    let mut watcher = Watcher::open(d.socket(), Watch::default());
    let fixture = Fixture::sleeper();
    // Not waited for: it may be gone before its tree could be seen.
    let short = d
        .launch(Launch {
            ttl_ms: Some(300),
            ..fixture.launch()
        })
        .expect("launch");
    let (leased, tree) = d.spawn(&fixture);
    let lease = d.lease(leased.id.as_str(), Some(200)).expect("lease");

    let (mut ttl_over, mut lease_over) = (false, false);
    let events = watcher.until(WAIT, |event| {
        ttl_over |= exited(&short.id)(event);
        lease_over |= event.event == LeaseExpired;
        ttl_over && lease_over
    });
    assert_eq!(
        kinds_by_session(&events)[short.id.as_str()],
        [Launched, Running, TtlExpired, Terminating, Exited]
    );
    let ended = events.iter().find(|e| exited(&short.id)(e)).unwrap();
    assert_eq!(ended.reason, Some(EndReason::TtlExpired));
    let expired = events.iter().find(|e| e.event == LeaseExpired).unwrap();
    assert_eq!(expired.session.as_ref(), Some(&leased.id));
    assert_eq!(expired.lease_id.as_ref(), Some(&lease.lease_id));
    d.assert_tree_alive(&tree);
    assert_eq!(d.session(&leased.id).leases, 0);
}

#[test]
fn subscribers_get_only_the_workspace_and_type_they_asked_for() {
    let d = DaemonGuard::start();
    let ci: Workspace = "ci".parse().unwrap();
    let mut in_ci = Watcher::open(
        d.socket(),
        Watch {
            workspace: Some(ci.clone()),
            session_type: None,
        },
    );
    let mut browsers = Watcher::open(
        d.socket(),
        Watch {
            workspace: None,
            session_type: Some(SessionType::Browser),
        },
    );
    let sleeper = Fixture::sleeper();
    let browser = Fixture::fake_browser();
    let (ci_sandbox, _) = d.spawn_with(
        &sleeper,
        Launch {
            workspace: Some(ci.clone()),
            ..sleeper.launch()
        },
    );
    let (other_sandbox, _) = d.spawn(&sleeper);
    let (other_browser, _) = d.spawn(&browser);
    let (ci_browser, _) = d.spawn_with(
        &browser,
        Launch {
            workspace: Some(ci.clone()),
            ..browser.launch()
        },
    );
    d.kill("all", true, None);

    let seen_in_ci = in_ci.until(WAIT, exited(&ci_browser.id));
    let seen_in_ci = kinds_by_session(&seen_in_ci);
    let seen_browsers = browsers.until(WAIT, exited(&ci_browser.id));
    let seen_browsers = kinds_by_session(&seen_browsers);
    let ids = |seen: &std::collections::BTreeMap<String, Vec<EventKind>>| {
        seen.keys().cloned().collect::<Vec<_>>()
    };
    let mut expected_ci = vec![ci_sandbox.id.to_string(), ci_browser.id.to_string()];
    expected_ci.sort();
    assert_eq!(ids(&seen_in_ci), expected_ci);
    let mut expected_browsers = vec![other_browser.id.to_string(), ci_browser.id.to_string()];
    expected_browsers.sort();
    assert_eq!(ids(&seen_browsers), expected_browsers);
    assert!(!seen_in_ci.contains_key(other_sandbox.id.as_str()));
}

/// Launches `count` sleepers, then times a forced kill of all of them.
fn launch_then_kill_all(d: &DaemonGuard, count: usize, before_kill: impl FnOnce()) -> Duration {
    for _ in 0..count {
        d.launch_sandbox(&["sleep", "1000"]);
    }
    before_kill();
    let started = Instant::now();
    let result = d.kill("all", true, Some(2000));
    let took = started.elapsed();
    assert_eq!(result.terminated.len(), count, "{:?}", result.failed);
    took
}

#[test]
fn a_subscriber_that_never_reads_does_not_slow_a_200_session_kill_and_is_dropped_with_lagged() {
    let d = DaemonGuard::builder()
        .log_level("info")
        .max_sessions(500)
        .flag("--event-backlog", 64)
        .start();
    let baseline = launch_then_kill_all(&d, 200, || {});
    let mut stalled = None;
    let with_stalled = launch_then_kill_all(&d, 200, || {
        stalled = Some(Watcher::open(d.socket(), Watch::default()));
    });
    let mut stalled = stalled.unwrap();
    eprintln!(
        "kill of 200: {baseline:?} alone, {with_stalled:?} with a subscriber that never reads"
    );
    assert!(
        with_stalled < baseline * 2 + Duration::from_millis(500),
        "a subscriber that never reads slowed the kill: {with_stalled:?} against {baseline:?} without it"
    );
    // 400 events (terminating and exited of 200 sessions) is more than it may fall behind.
    let events = stalled.to_end(WAIT);
    let last = events.last().expect("events, then lagged");
    assert_eq!(last.event, EventKind::Lagged, "{last:?}");
    assert!(last.missed.unwrap() > 0);
    assert!(events.len() < 400, "it was dropped, not served everything");
    assert_in_order(&events[..events.len() - 1]);
    // The daemon noticed and serves on.
    let metrics: browserd_proto::MetricsResult = d.call(browserd_proto::Request::Metrics).unwrap();
    assert!(
        metrics
            .text
            .contains("browserd_event_subscribers_lagged_total 1"),
        "{}",
        metrics.text
    );
    assert!(metrics.text.contains("browserd_event_subscribers 0"));
}

/// `browserctl events` with `args`, its stdout read line by line; killed when dropped.
struct Following {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Following {
    fn start(d: &DaemonGuard, args: &[&str]) -> Following {
        let mut child = Command::new(browserd_tests::browserctl_bin())
            .arg("--socket")
            .arg(d.socket())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn browserctl events");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Following { child, lines }
    }

    /// Lines until one contains `needle` (included).
    fn until(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line with `{needle}`; got {lines:#?}"));
            let done = line.contains(needle);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn browserctl_events_prints_a_line_per_event_and_follows_on_across_a_reload() {
    let d = DaemonGuard::start();
    let people = Following::start(&d, &["events", "--workspace", "ci"]);
    let machines = Following::start(&d, &["--json", "events"]);
    d.wait_subscribers(2);
    let fixture = Fixture::sleeper();
    let (session, _) = d.spawn_with(
        &fixture,
        Launch {
            workspace: Some("ci".parse().unwrap()),
            tracking_id: Some("job-9".parse().unwrap()),
            ..fixture.launch()
        },
    );
    let (elsewhere, _) = d.spawn(&fixture);
    d.kill(session.id.as_str(), false, None);

    let lines = people.until(" exited ");
    assert_eq!(lines.len(), 4, "{lines:#?}");
    for (line, kind) in lines
        .iter()
        .zip(["launched", "running", "terminating", "exited"])
    {
        assert!(line.contains(&format!("  {kind} ")), "{line}");
        assert!(
            line.contains(&format!("{}  sandbox  ci", session.id)),
            "{line}"
        );
    }
    assert!(lines[0].contains(&format!("pid {}", session.pid)));
    assert!(lines[0].ends_with("tracking job-9"), "{}", lines[0]);
    assert!(
        lines[3].contains("signal 15: terminated by request"),
        "{}",
        lines[3]
    );
    assert!(!lines.iter().any(|l| l.contains(elsewhere.id.as_str())));

    let json = machines.until(r#""event":"exited""#);
    let kinds: Vec<Event> = json
        .iter()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    assert_eq!(kinds.len(), 6, "two launches, one kill: {json:#?}");

    let reloaded = d.ctl(&["daemon", "reload"]);
    assert!(reloaded.status.success(), "{reloaded:?}");
    machines.until(r#""event":"reload""#);
    let after = d.launch_sandbox(&["sleep", "1000"]);
    let line = machines.until(after.id.as_str()).pop().unwrap();
    let event: Event = serde_json::from_str(&line).unwrap();
    assert_eq!(event.event, Launched);
    assert!(
        event.seq > kinds.last().unwrap().seq,
        "the sequence carries on across the reload"
    );
    d.kill("all", true, None);
}

#[test]
fn server_sent_events_carry_the_same_events_filtered_by_type() {
    let token = TokenFile::new("sse-token");
    let d = DaemonGuard::builder().http().http_token(&token).start();
    let url = format!(
        "{}/v1/events?type=sandbox&token={}",
        d.http_url(),
        token.token
    );
    let stream = SseStream::open(&url, &[]);
    let mut watcher = Watcher::open(d.socket(), Watch::default());
    d.wait_subscribers(2);
    let (browser, _) = d.spawn(&Fixture::fake_browser());
    let (session, _) = d.spawn(&Fixture::sleeper());
    d.kill("all", false, None);

    let from_socket = watcher.until(WAIT, exited(&session.id));
    let mut from_sse = Vec::new();
    while let Some(event) = stream.next_event(WAIT) {
        let event: Event = serde_json::from_value(event).expect("an event");
        let done = event.event == Exited && event.session.as_ref() == Some(&session.id);
        from_sse.push(event);
        if done {
            break;
        }
    }
    let expected: Vec<&Event> = from_socket
        .iter()
        .filter(|e| e.session.as_ref() == Some(&session.id))
        .collect();
    assert_eq!(from_sse.iter().collect::<Vec<_>>(), expected);
    assert!(from_sse
        .iter()
        .all(|e| e.session.as_ref() != Some(&browser.id)));
}
