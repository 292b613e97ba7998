//! Reload by re-exec in place with N live sessions: timed from the request (the `reload` op,
//! or SIGHUP) until the re-executed daemon answers `status` with `reloads` one higher. A
//! client loop asks `status` on a fresh connection every few milliseconds throughout; its
//! worst wait during a reload is how long a client sat in the listening socket's backlog.

use crate::report::Sample;
use crate::scenarios::call;
use crate::stats::ms;
use browserd_proto::{ReloadResult, Request, StatusResult};
use browserd_tests::{Client, DaemonGuard};
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a reload may take before the bench gives up on it.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two requests of the status loop.
const LOOP_PAUSE: Duration = Duration::from_millis(2);
/// Pause between two polls of the reloading side while the old image still answers.
const POLL_PAUSE: Duration = Duration::from_millis(1);

/// How a reload is asked for.
#[derive(Clone, Copy)]
enum Trigger {
    Op,
    Sighup,
}

/// One request of the status loop: when it was sent, when it was answered, and whether it was.
struct Probe {
    start: Instant,
    end: Instant,
    failure: Option<String>,
}

/// A thread asking `status` on a fresh connection every [`LOOP_PAUSE`] until stopped.
struct StatusLoop {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Probe>>,
}

impl StatusLoop {
    fn start(socket: PathBuf) -> StatusLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut probes = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                let start = Instant::now();
                let failure = status(&socket).err();
                probes.push(Probe {
                    start,
                    end: Instant::now(),
                    failure,
                });
                std::thread::sleep(LOOP_PAUSE);
            }
            probes
        });
        StatusLoop { stop, thread }
    }

    fn finish(self) -> Vec<Probe> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// `status` on a fresh connection.
fn status(socket: &Path) -> Result<StatusResult, String> {
    let mut client = Client::connect(socket).map_err(|e| format!("connect: {e}"))?;
    client.set_timeout(RELOAD_TIMEOUT);
    call(&mut client, &Request::Status)
}

/// One reload, timed: from the request until `status` shows `reloads` incremented. For the
/// op, also the time until the request was answered (the daemon checks the new binary with
/// `--check-config` before it answers).
struct Timed {
    started: Instant,
    answered_ms: Option<f64>,
    serving: Instant,
}

fn reload_once(d: &DaemonGuard, trigger: Trigger) -> Result<Timed, String> {
    let before = status(d.socket())?.reloads;
    let mut client = d.client();
    client.set_timeout(RELOAD_TIMEOUT);
    let started = Instant::now();
    let answered_ms = match trigger {
        Trigger::Op => {
            let result: ReloadResult = call(&mut client, &Request::Reload)?;
            if result.reloads != before + 1 {
                return Err(format!(
                    "reload answered reloads = {}, expected {}",
                    result.reloads,
                    before + 1
                ));
            }
            Some(ms(started.elapsed()))
        }
        Trigger::Sighup => {
            d.send_signal(Signal::SIGHUP);
            None
        }
    };
    loop {
        let now = status(d.socket())?;
        if now.reloads > before {
            if now.pid as i32 != d.pid() {
                return Err(format!(
                    "the reloaded daemon has pid {}, not {}",
                    now.pid,
                    d.pid()
                ));
            }
            return Ok(Timed {
                started,
                answered_ms,
                serving: Instant::now(),
            });
        }
        if started.elapsed() > RELOAD_TIMEOUT {
            return Err(format!(
                "the daemon did not serve reloaded within {RELOAD_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(POLL_PAUSE);
    }
}

/// `reloads` reloads by the op, then as many by SIGHUP, each timed into `timed`.
fn reload_each_way(
    d: &DaemonGuard,
    reloads: usize,
    timed: &mut Vec<(Trigger, Timed)>,
) -> Result<(), String> {
    for trigger in [Trigger::Op, Trigger::Sighup] {
        for _ in 0..reloads {
            timed.push((trigger, reload_once(d, trigger)?));
        }
    }
    Ok(())
}

/// The longest any status-loop request that overlapped `[from, to]` waited for its answer.
fn worst_wait(probes: &[Probe], from: Instant, to: Instant) -> Option<f64> {
    probes
        .iter()
        .filter(|p| p.end >= from && p.start <= to)
        .map(|p| ms(p.end - p.start))
        .max_by(f64::total_cmp)
}

/// `reloads` reloads by the op, then as many by SIGHUP, with `sessions` sessions live and the
/// status loop running; fills the reload fields of `sample`.
pub fn run_once(
    d: &DaemonGuard,
    sessions: usize,
    reloads: usize,
    rep: usize,
    sample: &mut Sample,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let status_loop = StatusLoop::start(d.socket().to_owned());
    // Let the loop reach its steady state before the first reload.
    std::thread::sleep(Duration::from_millis(20));
    let mut timed = Vec::new();
    let outcome = reload_each_way(d, reloads, &mut timed);
    std::thread::sleep(Duration::from_millis(20));
    let probes = status_loop.finish();
    outcome?;

    for (trigger, t) in &timed {
        let took = ms(t.serving - t.started);
        match trigger {
            Trigger::Op => {
                sample.reload_op_ms.push(took);
                sample.reload_op_answer_ms.extend(t.answered_ms);
            }
            Trigger::Sighup => sample.reload_sighup_ms.push(took),
        }
        sample
            .reload_worst_wait_ms
            .extend(worst_wait(&probes, t.started, t.serving));
    }
    let failures: Vec<&str> = probes.iter().filter_map(|p| p.failure.as_deref()).collect();
    sample.reload_loop_requests += probes.len();
    sample.reload_loop_failures += failures.len();
    if let Some(first) = failures.first() {
        notes.push(format!(
            "rep {rep}: {} of {} status-loop request(s) failed during reloads, first: {first}",
            failures.len(),
            probes.len()
        ));
    }
    let running = status(d.socket())?.sessions.running as usize;
    if running != sessions {
        notes.push(format!(
            "rep {rep}: {running} session(s) running after the reloads, {sessions} before"
        ));
    }
    Ok(())
}
