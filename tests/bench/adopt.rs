//! Restart after a crash with N live sessions: the daemon is SIGKILLed (its sessions keep
//! running, re-parented to the bench, which is a subreaper), started again on the same state
//! dir, and timed from that start until it answers `status` with all N running — adopted
//! from the journal; a listing then checks that every one of them is there. The adopted
//! sessions are terminated through the daemon (it signals them through pidfds; the bench,
//! now their parent, reaps them), and the daemon is crashed and restarted once more with no
//! live session, for the fixed cost of a start.
//!
//! The harness polls the socket every 10 ms until it accepts, so a start is timed to within
//! about 10 ms.

use crate::baseline::GONE_TIMEOUT;
use crate::cleanup;
use crate::options::Options;
use crate::procs;
use crate::report::Sample;
use crate::scenarios::{call, launch_many, wait_trees};
use crate::stats::ms;
use browserd_proto::{
    BulkTerminate, Request, SessionState, SessionsFilter, SessionsResult, StatusResult,
    TerminateResult,
};
use browserd_tests::{DaemonGuard, Fixture, ProcId};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How long the restarted daemon may take to list every session again.
const ADOPT_TIMEOUT: Duration = Duration::from_secs(30);

/// One repetition: crash and restart with `opts.sessions` live, then with none.
pub fn run_once(
    d: &mut DaemonGuard,
    opts: &Options,
    rep: usize,
    sample: &mut Sample,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let polite = Fixture::polite();
    let sessions = launch_many(&mut d.client(), &polite, opts.sessions, |_| None)?;
    let trees = wait_trees(&sessions, &polite)?;

    d.crash();
    let start = Instant::now();
    d.restart(&[]);
    let mut client = d.client();
    loop {
        let status: StatusResult = call(&mut client, &Request::Status)?;
        if status.sessions.running as usize >= opts.sessions {
            break;
        }
        if start.elapsed() > ADOPT_TIMEOUT {
            return Err(format!(
                "the restarted daemon lists {} of {} sessions running after {ADOPT_TIMEOUT:?}",
                status.sessions.running, opts.sessions
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    sample.restart_adopt_ms = Some(ms(start.elapsed()));
    cleanup::set_daemon(d.pid(), d.dir().to_path_buf())?;

    let listed: SessionsResult = call(
        &mut client,
        &Request::Sessions(SessionsFilter {
            state: Some(SessionState::Running),
            ..Default::default()
        }),
    )?;
    let running: HashSet<(&str, i32)> = listed
        .sessions
        .iter()
        .map(|s| (s.id.as_str(), s.pid))
        .collect();
    let missing = sessions
        .iter()
        .filter(|s| !running.contains(&(s.id.as_str(), s.pid)))
        .count();
    if missing > 0 {
        notes.push(format!(
            "rep {rep}: after the restart, {missing} of {} session(s) were not listed running \
             with their leader",
            opts.sessions
        ));
    }

    sample.bulk_adopted_ms = Some(terminate_adopted(d, &trees.concat(), rep, notes)?);

    d.crash();
    let start = Instant::now();
    d.restart(&[]);
    sample.restart_empty_ms = Some(ms(start.elapsed()));
    cleanup::set_daemon(d.pid(), d.dir().to_path_buf())
}

/// Terminates every session (all adopted) politely and times it until the daemon answered
/// and every process is gone. The bench reaps meanwhile: the sessions are its children now.
fn terminate_adopted(
    d: &DaemonGuard,
    ids: &[ProcId],
    rep: usize,
    notes: &mut Vec<String>,
) -> Result<f64, String> {
    let bulk = BulkTerminate {
        all: Some(true),
        grace_ms: Some(GONE_TIMEOUT.as_millis() as u64),
        ..Default::default()
    };
    let mut client = d.client();
    let start = Instant::now();
    let answer = std::thread::spawn(move || {
        call::<TerminateResult>(&mut client, &Request::BulkTerminate(bulk))
    });
    let gone = procs::wait_gone(ids, GONE_TIMEOUT, true);
    let result = answer
        .join()
        .map_err(|_| "the bulk terminate thread panicked".to_owned())??;
    let took = ms(start.elapsed());
    gone.map_err(|left| format!("adopted: {left} process(es) never went away"))?;
    if !result.failed.is_empty() {
        notes.push(format!(
            "rep {rep}: terminating adopted sessions: {} failed, first: {:?}",
            result.failed.len(),
            result.failed[0]
        ));
    }
    Ok(took)
}
