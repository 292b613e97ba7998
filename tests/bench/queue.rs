//! The launch queue: how soon a queued launch runs once a slot frees. A daemon with one
//! slot and a queue of one: a session holds the slot, a launch waits, the session is killed.
//! Measured two ways: inside the daemon, from the slot freeing to the queued launch's
//! session started (its `browserd::timing` line), and from outside, from the kill request
//! to the queued launch's answer, against what a client without a queue does: the kill,
//! then a launch.

use crate::cleanup;
use crate::report::Sample;
use crate::scenarios::call;
use crate::stats::ms;
use browserd_proto::{
    Kill, Launch, LaunchResult, Request, SessionInfo, SessionType, StatusResult, TerminateResult,
};
use browserd_tests::{Client, DaemonGuard};
use std::time::{Duration, Instant};

/// How long the queued launch may wait.
const QUEUE_TIMEOUT_MS: u64 = 60_000;

fn sleeper() -> Launch {
    Launch {
        session_type: Some(SessionType::Sandbox),
        command: Some(vec!["sleep".into(), "600".into()]),
        queue_timeout_ms: Some(QUEUE_TIMEOUT_MS),
        ..Launch::default()
    }
}

fn kill(client: &mut Client, session: &SessionInfo) -> Result<(), String> {
    let kill = Kill {
        target: session.id.as_str().parse().map_err(|e| format!("{e}"))?,
        force: true,
        grace_ms: Some(0),
    };
    let result: TerminateResult = call(client, &Request::Kill(kill))?;
    match result.failed.as_slice() {
        [] => Ok(()),
        failed => Err(format!("the kill failed: {failed:?}")),
    }
}

/// Waits until the daemon has `depth` launches queued.
fn wait_queued(client: &mut Client, depth: u32) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let status: StatusResult = call(client, &Request::Status)?;
        if status.queue.is_some_and(|q| q.depth == depth) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("no launch queued after {:?}", start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `samples` queued admissions; fills `ours` (the daemon's figures and the queued
/// launch's answer after the kill) and `base` (a kill, then a launch).
pub fn run_once(
    samples: usize,
    ours: &mut Sample,
    base: &mut Sample,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let d = DaemonGuard::builder()
        .max_sessions(1)
        .flag("--max-queue", 1)
        .grace("1s")
        .start();
    cleanup::remove_on_abort(d.dir());
    let mut control = d.client();
    let mut holder = call::<LaunchResult>(&mut control, &Request::Launch(sleeper()))?.session;
    for _ in 0..samples {
        let mut waiting = d.client();
        waiting.send(None, &Request::Launch(sleeper()));
        wait_queued(&mut control, 1)?;
        let asked = Instant::now();
        kill(&mut control, &holder)?;
        let admitted: LaunchResult = waiting
            .read_response()
            .into_result()
            .map_err(|e| format!("the queued launch failed: {e}"))?;
        ours.queue_after_kill_ms.push(ms(asked.elapsed()));
        holder = admitted.session;

        // Without a queue: the kill, then a launch once it answered.
        let asked = Instant::now();
        kill(&mut control, &holder)?;
        holder = call::<LaunchResult>(&mut control, &Request::Launch(sleeper()))?.session;
        base.queue_after_kill_ms.push(ms(asked.elapsed()));
    }
    kill(&mut control, &holder)?;
    let log = d.log();
    ours.queue_admission_ms = log
        .lines()
        .filter_map(|line| line.split("after_slot_freed_us=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .collect();
    if ours.queue_admission_ms.len() != samples {
        notes.push(format!(
            "queue: {} `after_slot_freed_us` lines for {samples} queued launches (is browserd::timing=debug in RUST_LOG?)",
            ours.queue_admission_ms.len()
        ));
    }
    Ok(())
}
