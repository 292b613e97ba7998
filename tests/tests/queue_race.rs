//! The seeded race test of the launch queue: clients launch (waiting in the queue for no
//! time, a short or a long time, or hanging up while they wait), kill one session or all,
//! and ask for the status, all at once, against a daemon with a small `--max-sessions` and
//! `--max-queue`. Checked throughout and after each round:
//!
//! * `max_sessions` is never exceeded, in `/proc`: a watcher lists the daemon's session
//!   processes over and over, and a listing that shows more sessions than allowed is
//!   confirmed by finding every one of those processes still there afterwards (so they all
//!   existed at one instant);
//! * every launch ends admitted or with `capacity` (queue full, not willing to wait, or
//!   timed out, and then not before its timeout), and none waits past its timeout;
//! * slots go first come, first served: replaying the daemon's queue log (written under
//!   the registry lock), every grant goes to the longest-waiting launch;
//! * no slot is lost: afterwards the queue is empty, and exactly `max_sessions` launches
//!   are admitted at once.
//!
//! The seed fixes every client's operations (the interleaving is the kernel's); replay
//! with `BROWSERD_TEST_SEED=<seed>`. Sizes: `BROWSERD_QUEUE_RACE_ROUNDS`,
//! `BROWSERD_QUEUE_RACE_OPS` (per client), `BROWSERD_QUEUE_RACE_CLIENTS`.

use browserd_proto::{
    ErrorCode, Kill, Launch, LaunchResult, Request, SessionState, SessionType, SessionsFilter,
    SessionsResult, StatusResult, Target, TerminateResult, WireError,
};
use browserd_tests::procfs::{self, ProcId};
use browserd_tests::rng::{seed, size_from_env, Rng};
use browserd_tests::{wait_until, DaemonGuard};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long past its queue timeout a launch's answer may take (the launch itself, a busy
/// machine) before the wait counts as lost.
const ANSWER_SLACK: Duration = Duration::from_secs(20);
/// The long wait of a patient launch.
const LONG_WAIT_MS: u64 = 1500;

#[test]
fn the_queue_admits_in_order_and_never_loses_or_overfills_a_slot_under_random_load() {
    let seed = seed("queue_race");
    let rounds = size_from_env("BROWSERD_QUEUE_RACE_ROUNDS", 3);
    let ops = size_from_env("BROWSERD_QUEUE_RACE_OPS", 30);
    let clients = size_from_env("BROWSERD_QUEUE_RACE_CLIENTS", 6);
    for round in 0..rounds {
        let mut rng = Rng::derive(seed, &[round as u64]);
        let max_sessions = rng.between(1, 3) as u32;
        let max_queue = rng.between(1, 5) as u32;
        let violations = run_round(seed, round, max_sessions, max_queue, clients, ops);
        assert!(
            violations.is_empty(),
            "round {round} (max_sessions {max_sessions}, max_queue {max_queue}) broke the queue's \
             promises:\n  {}\n\nreplay with BROWSERD_TEST_SEED={seed:#x}",
            violations.join("\n  ")
        );
    }
}

/// What went wrong, as sentences.
#[derive(Default)]
struct Violations(Mutex<Vec<String>>);

impl Violations {
    fn push(&self, what: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(what);
    }

    fn take(self) -> Vec<String> {
        self.0.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

fn run_round(
    seed: u64,
    round: usize,
    max_sessions: u32,
    max_queue: u32,
    clients: usize,
    ops: usize,
) -> Vec<String> {
    let d = DaemonGuard::builder()
        .max_sessions(max_sessions)
        .flag("--max-queue", max_queue)
        .grace("200ms")
        .start();
    let violations = Violations::default();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| watch_slots(&d, max_sessions, &done, &violations));
        let workers: Vec<_> = (0..clients)
            .map(|client| {
                let mut rng = Rng::derive(seed, &[round as u64, client as u64 + 1]);
                let (d, violations) = (&d, &violations);
                scope.spawn(move || {
                    for _ in 0..ops {
                        step(d, &mut rng, max_sessions, max_queue, violations);
                    }
                })
            })
            .collect();
        for worker in workers {
            if worker.join().is_err() {
                violations.push("a client panicked (see its message above)".into());
            }
        }
        done.store(true, Ordering::Release);
    });
    check_afterwards(&d, max_sessions, &violations);
    check_fifo(&d.log(), &violations);
    violations.take()
}

/// One random operation of one client.
fn step(d: &DaemonGuard, rng: &mut Rng, max_sessions: u32, max_queue: u32, v: &Violations) {
    match rng.weighted(&[50, 8, 25, 5, 12]) {
        0 => launch(d, rng, v),
        1 => hang_up_while_queued(d, rng),
        2 => kill_one(d, rng, v),
        3 => kill_all(d, v),
        _ => check_status(d, max_sessions, max_queue, v),
    }
}

fn sleeper(queue_timeout_ms: u64) -> Launch {
    Launch {
        session_type: Some(SessionType::Sandbox),
        command: Some(vec!["sleep".into(), "600".into()]),
        queue_timeout_ms: Some(queue_timeout_ms),
        ..Launch::default()
    }
}

fn launch(d: &DaemonGuard, rng: &mut Rng, v: &Violations) {
    let wait_ms = match rng.weighted(&[10, 45, 45]) {
        0 => 0,
        1 => rng.between(20, 300),
        _ => LONG_WAIT_MS,
    };
    let mut client = d.client();
    client.set_timeout(Duration::from_millis(wait_ms) + ANSWER_SLACK);
    let asked = Instant::now();
    let response = match client.try_request(&Request::Launch(sleeper(wait_ms))) {
        Ok(response) => response,
        Err(e) => {
            return v.push(format!(
                "a launch waiting at most {wait_ms} ms got no answer within {:?}: {e}",
                asked.elapsed()
            ))
        }
    };
    let took = asked.elapsed();
    let result: Result<LaunchResult, WireError> = response.into_result();
    match result {
        Ok(launched) if launched.session.state == SessionState::Running => {}
        Ok(launched) => v.push(format!("admitted but not running: {:?}", launched.session)),
        Err(e) if e.code != ErrorCode::Capacity => {
            v.push(format!("a launch failed with {}: {}", e.code, e.message))
        }
        Err(e) if e.message.contains("queue is full") || e.message.contains("not to wait") => {}
        Err(e) if e.message.contains("waited") => {
            if took < Duration::from_millis(wait_ms) {
                v.push(format!(
                    "a launch willing to wait {wait_ms} ms timed out after {took:?}: {}",
                    e.message
                ));
            }
        }
        Err(e) => v.push(format!("an unexplained capacity error: {}", e.message)),
    }
}

/// Sends a launch that would wait long, and hangs up a moment later (queued or not).
fn hang_up_while_queued(d: &DaemonGuard, rng: &mut Rng) {
    let mut client = d.client();
    client.send(None, &Request::Launch(sleeper(LONG_WAIT_MS * 10)));
    std::thread::sleep(Duration::from_millis(rng.between(0, 150)));
    drop(client);
}

fn live_ids(d: &DaemonGuard) -> Vec<String> {
    let listed: Result<SessionsResult, WireError> = d
        .client()
        .request(&Request::Sessions(SessionsFilter::default()))
        .into_result();
    listed
        .map(|l| l.sessions)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.state.is_live())
        .map(|s| s.id.to_string())
        .collect()
}

fn kill(d: &DaemonGuard, target: &str, v: &Violations) {
    let kill = Kill {
        target: target.parse::<Target>().expect("a valid target"),
        force: true,
        grace_ms: Some(0),
    };
    let result: Result<TerminateResult, WireError> =
        d.client().request(&Request::Kill(kill)).into_result();
    match result {
        Ok(result) if result.failed.is_empty() => {}
        Ok(result) => v.push(format!("kill {target} failed: {:?}", result.failed)),
        Err(e) => v.push(format!("kill {target} refused: {e}")),
    }
}

fn kill_one(d: &DaemonGuard, rng: &mut Rng, v: &Violations) {
    let live = live_ids(d);
    if let Some(id) = rng.pick(&live) {
        kill(d, id, v);
    }
}

fn kill_all(d: &DaemonGuard, v: &Violations) {
    kill(d, "all", v);
}

fn check_status(d: &DaemonGuard, max_sessions: u32, max_queue: u32, v: &Violations) {
    let status: Result<StatusResult, WireError> =
        d.client().request(&Request::Status).into_result();
    let Ok(status) = status else {
        return v.push("status refused".into());
    };
    let queue = status.queue.unwrap_or_default();
    if queue.depth > max_queue {
        v.push(format!(
            "{} launches queued, max_queue {max_queue}",
            queue.depth
        ));
    }
    let counts = status.sessions;
    let live = counts.starting + counts.running + counts.terminating;
    if live > max_sessions {
        v.push(format!(
            "status counts {live} live sessions, max_sessions {max_sessions}"
        ));
    }
}

/// Lists the daemon's session processes until `done`, and records every instant at which
/// more sessions than allowed had processes.
fn watch_slots(d: &DaemonGuard, max_sessions: u32, done: &AtomicBool, v: &Violations) {
    let mut reported = 0;
    while !done.load(Ordering::Acquire) {
        let mut sessions: BTreeMap<String, Vec<ProcId>> = BTreeMap::new();
        for p in procfs::children_of(d.pid()) {
            if let Some(session) = &p.session {
                sessions.entry(session.clone()).or_default().push(p.id());
            }
        }
        if sessions.len() > max_sessions as usize {
            // The listing was not one instant; if every process it met is still there now,
            // they all existed when this check began.
            let all_there = sessions.values().flatten().all(|id| id.current().is_some());
            if all_there && reported < 3 {
                reported += 1;
                v.push(format!(
                    "{} sessions had processes at once (max_sessions {max_sessions}): {sessions:?}",
                    sessions.len()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// With the clients done: the queue empties, every slot is free again, and exactly
/// `max_sessions` launches are admitted at once.
fn check_afterwards(d: &DaemonGuard, max_sessions: u32, v: &Violations) {
    kill_all(d, v);
    wait_until(Duration::from_secs(30), "the queue to empty", || {
        d.status().queue.is_some_and(|q| q.depth == 0)
    });
    kill_all(d, v);
    for n in 0..max_sessions {
        if let Err(e) = d.launch(sleeper(0)) {
            v.push(format!(
                "slot {} of {max_sessions} is lost after the round: {e}",
                n + 1
            ));
        }
    }
    match d.launch(sleeper(0)) {
        Err(e) if e.code == ErrorCode::Capacity => {}
        other => v.push(format!(
            "one launch more than max_sessions was not refused: {other:?}"
        )),
    }
    kill_all(d, v);
    d.assert_all_sessions_gone();
}

/// Replays the daemon's queue log: every grant must go to the longest-waiting launch.
fn check_fifo(log: &str, v: &Violations) {
    let mut waiting: BTreeSet<u64> = BTreeSet::new();
    let mut granted = 0;
    for line in log.lines() {
        let Some(rest) = line.split("browserd::queue: ").nth(1) else {
            continue;
        };
        let Some(ticket) = field(rest, "ticket") else {
            v.push(format!("a queue log line without a ticket: {line}"));
            continue;
        };
        match rest.split_whitespace().next() {
            Some("queued") => {
                waiting.insert(ticket);
            }
            Some("granted") => {
                granted += 1;
                if waiting.first() != Some(&ticket) {
                    v.push(format!(
                        "ticket {ticket} was granted a slot while {:?} waited longer",
                        waiting
                            .iter()
                            .take_while(|t| **t < ticket)
                            .collect::<Vec<_>>()
                    ));
                }
                waiting.remove(&ticket);
            }
            Some("left") => {
                waiting.remove(&ticket);
            }
            _ => v.push(format!("an unknown queue log line: {line}")),
        }
    }
    eprintln!("queue_race: {granted} slots granted to queued launches");
}

fn field(text: &str, name: &str) -> Option<u64> {
    text.split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{name}=")))
        .and_then(|value| value.parse().ok())
}
