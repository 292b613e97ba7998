//! browserd's side of every scenario, through its real interfaces: the wire protocol for
//! launches, listings and bulk terminations (one connection, requests in sequence, as the
//! baseline forks in sequence), and real `browserctl` processes for `kill` and `status`.
//! Reloads run with the N sessions live (`reload`); a crash and restart, after everything
//! else (`adopt`, called by `main` because it replaces the daemon process).
//! Every termination is checked in `/proc` as well: a time only counts once every process
//! of the sessions is gone and reaped, whatever the daemon answered.

use crate::baseline::{GONE_TIMEOUT, TREE_TIMEOUT};
use crate::options::Options;
use crate::procs::{self, time_command, PidFd};
use crate::reload;
use crate::report::Sample;
use crate::stats::ms;
use browserd_proto::{
    BulkTerminate, Kill, Launch, LaunchResult, Request, SessionInfo, SessionState, SessionsFilter,
    SessionsResult, TerminateResult, TrackingId,
};
use browserd_tests::{Client, DaemonGuard, Fixture, ProcId};
use serde::de::DeserializeOwned;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Quiet time before the idle window, so the last launch's work is over.
const SETTLE: Duration = Duration::from_millis(200);
/// How long a natural exit may take to show before the bench gives up.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Kill-one samples sent over the socket by the bench itself (no client start-up in them):
/// one right after an idle window of its own, the rest warm. Their sessions are live
/// through the idle window too.
pub const SOCKET_KILLS: usize = 11;

/// How many idle windows browserd's run waits through before its polite kill-all: the
/// first kill's, its reference's and the socket kill's. The baseline's run waits as long,
/// so that both sides' trees have sat idle as long when they are killed (a tree killed
/// right after it started exits faster).
pub const IDLE_WINDOWS: u32 = 3;

/// How many sessions run through the idle window: the N, the kill-one and natural-exit
/// samples', and the socket kills'.
pub fn live_during_idle(opts: &Options) -> usize {
    opts.sessions + 2 * opts.samples + SOCKET_KILLS
}

/// The daemon's CPU time over a stretch of work, recorded per operation: what the daemon
/// itself spends, whatever the load of the machine does to wall-clock times.
struct Meter {
    pid: i32,
    before: procs::CpuSample,
}

impl Meter {
    fn start(d: &DaemonGuard) -> Result<Meter, String> {
        let before = procs::cpu_sample(d.pid()).ok_or("cannot read the daemon's CPU time")?;
        Ok(Meter {
            pid: d.pid(),
            before,
        })
    }

    fn record(self, sample: &mut Sample, what: &'static str, count: usize) {
        if let Some(after) = procs::cpu_sample(self.pid) {
            let used = procs::cpu_between(&self.before, &after).best_ms();
            sample
                .daemon_cpu_ms
                .insert(what, used / count.max(1) as f64);
        }
    }
}

/// Sends one request and decodes its result.
pub fn call<T: DeserializeOwned>(client: &mut Client, request: &Request) -> Result<T, String> {
    client
        .try_request(request)
        .map_err(|e| format!("browserd did not answer: {e}"))?
        .into_result()
        .map_err(|e| format!("browserd refused {request:?}: {e}"))
}

/// Launches `count` sessions of `fixture` in sequence; `tracking` names each, if wanted.
pub fn launch_many(
    client: &mut Client,
    fixture: &Fixture,
    count: usize,
    tracking: impl Fn(usize) -> Option<TrackingId>,
) -> Result<Vec<SessionInfo>, String> {
    (0..count)
        .map(|i| {
            let launch = Launch {
                tracking_id: tracking(i),
                ..fixture.launch()
            };
            let launched: LaunchResult = call(client, &Request::Launch(launch))?;
            Ok(launched.session)
        })
        .collect()
}

/// Waits until every session's tree is `fixture`'s complete tree; returns the trees.
pub fn wait_trees(sessions: &[SessionInfo], fixture: &Fixture) -> Result<Vec<Vec<ProcId>>, String> {
    let leaders: Vec<i32> = sessions.iter().map(|s| s.pid).collect();
    procs::wait_trees(&leaders, fixture, TREE_TIMEOUT).map_err(|e| format!("browserd: {e}"))
}

/// Runs `browserctl --socket <socket> args...` and times it from spawn to exit.
fn ctl(browserctl: &Path, d: &DaemonGuard, args: &[&str]) -> Result<f64, String> {
    time_command(
        Command::new(browserctl)
            .arg("--socket")
            .arg(d.socket())
            .args(args)
            .env_remove("BROWSERD_SOCKET"),
    )
}

/// One repetition of every browserd scenario. `rep` keeps tracking ids unique across
/// repetitions (exited sessions stay listed with theirs).
pub fn run_once(
    d: &DaemonGuard,
    opts: &Options,
    browserctl: &Path,
    rep: usize,
    notes: &mut Vec<String>,
) -> Result<Sample, String> {
    let mut client = d.client();
    let polite = Fixture::polite();
    let sleeper = Fixture::sleeper();
    let mut sample = Sample::default();

    let cpu = Meter::start(d)?;
    let start = Instant::now();
    let sessions = launch_many(&mut client, &polite, opts.sessions, |_| None)?;
    sample.launch_per_s = opts.sessions as f64 / start.elapsed().as_secs_f64();
    cpu.record(&mut sample, "launch, per session", opts.sessions);
    let trees = wait_trees(&sessions, &polite)?;

    // Resources with exactly N live sessions and no request in flight.
    std::thread::sleep(SETTLE);
    sample.rss_at_n_kib = procs::rss_kib(d.pid());
    sample.fds_at_n = procs::fd_count(d.pid());

    // A listing of exactly the N sessions: the running ones, while only they run (exited
    // sessions of earlier repetitions stay listed, and are left out by the filter).
    let cpu = Meter::start(d)?;
    for _ in 0..opts.samples {
        sample
            .ls_running_ms
            .push(ctl(browserctl, d, &["ls", "--state", "running"])?);
    }
    cpu.record(&mut sample, "ls of the N running, per call", opts.samples);

    // The sessions of the kill-one and natural-exit samples, started before the idle window
    // so that the first kill comes right after it.
    let kill_sessions = launch_many(&mut client, &polite, opts.samples, |_| None)?;
    let exit_sessions = launch_many(&mut client, &sleeper, opts.samples, |i| {
        format!("exit-{rep}-{i}").parse().ok()
    })?;
    let socket_sessions = launch_many(&mut client, &polite, SOCKET_KILLS, |_| None)?;
    let kill_trees = wait_trees(&kill_sessions, &polite)?;
    let exit_trees = wait_trees(&exit_sessions, &sleeper)?;
    let socket_trees = wait_trees(&socket_sessions, &polite)?;
    let live = opts.sessions + 2 * opts.samples;

    std::thread::sleep(SETTLE);
    let before = procs::cpu_sample(d.pid()).ok_or("cannot read the daemon's CPU time")?;
    std::thread::sleep(opts.idle);
    let after = procs::cpu_sample(d.pid()).ok_or("cannot read the daemon's CPU time")?;
    let cpu = procs::cpu_between(&before, &after);
    sample.idle_cpu_ms = Some(cpu.best_ms());
    sample.idle_cpu_ticks_ms = Some(cpu.ticks_ms);

    let mut kill_one = |session: &SessionInfo, tree: &[ProcId], sample: &mut Sample| {
        let took = ctl(browserctl, d, &["kill", session.id.as_str()])?;
        let left = procs::count_present(tree);
        if left > 0 {
            notes.push(format!(
                "rep {rep}: `browserctl kill {}` exited with {left} process(es) of the session left",
                session.id
            ));
        }
        sample.kill_one_ms.push(took);
        Ok::<f64, String>(took)
    };
    let cpu = Meter::start(d)?;
    let mut kills = kill_sessions.iter().zip(&kill_trees);
    // The first kill right after the idle window, and its reference: a bare start right
    // after a second window as long, in the same run. Which of the two comes first
    // alternates by repeat, so that neither always follows the busier moment (the launches
    // before the first window).
    let bare_start_after_idle =
        || time_command(Command::new(browserctl).arg("--version")).map(Some);
    let bare_first = !rep.is_multiple_of(2);
    if let Some((session, tree)) = kills.next() {
        if bare_first {
            sample.bare_start_after_idle_ms = bare_start_after_idle()?;
            std::thread::sleep(opts.idle);
        }
        sample.kill_one_after_idle_ms = Some(kill_one(session, tree, &mut sample)?);
        if !bare_first {
            std::thread::sleep(opts.idle);
            sample.bare_start_after_idle_ms = bare_start_after_idle()?;
        }
    }
    // The same kill after as long a quiet spell, over the socket, with no client start-up
    // in it (the bench's own thread sends it, and it was idle as long).
    let mut socket_kills = socket_sessions.iter().zip(&socket_trees);
    let mut socket_notes = Vec::new();
    if let Some((session, tree)) = socket_kills.next() {
        std::thread::sleep(opts.idle);
        sample.socket_kill_one_after_idle_ms = Some(socket_kill(
            d,
            session,
            tree,
            rep,
            "after idle",
            &mut socket_notes,
        )?);
    }
    for (session, tree) in kills {
        // The kill's reference: a bare start of the same binary in the same moment.
        sample
            .bare_start_ms
            .push(time_command(Command::new(browserctl).arg("--version"))?);
        kill_one(session, tree, &mut sample)?;
    }
    cpu.record(&mut sample, "kill one, per call", opts.samples);
    for (session, tree) in socket_kills {
        sample.socket_kill_one_ms.push(socket_kill(
            d,
            session,
            tree,
            rep,
            "warm",
            &mut socket_notes,
        )?);
    }
    notes.extend(socket_notes);

    let cpu = Meter::start(d)?;
    for _ in 0..opts.samples {
        sample.status_ms.push(ctl(browserctl, d, &["status"])?);
    }
    cpu.record(&mut sample, "status, per call", opts.samples);

    let cpu = Meter::start(d)?;
    for _ in 0..opts.samples {
        sample.ls_ms.push(ctl(browserctl, d, &["ls"])?);
    }
    cpu.record(&mut sample, "ls, per call", opts.samples);

    reload::run_once(
        d,
        live - opts.samples,
        opts.reloads,
        rep,
        &mut sample,
        notes,
    )?;

    let cpu = Meter::start(d)?;
    for (session, tree) in exit_sessions.iter().zip(&exit_trees) {
        let leader = tree
            .iter()
            .find(|p| p.pid == session.pid)
            .ok_or_else(|| format!("session {} has no leader", session.id))?;
        sample
            .natural_exit_ms
            .push(natural_exit(&mut client, session, *leader)?);
    }

    cpu.record(
        &mut sample,
        "natural exit, per session (polling included)",
        opts.samples,
    );

    let cpu = Meter::start(d)?;
    let bulk = BulkTerminate {
        all: Some(true),
        grace_ms: Some(GONE_TIMEOUT.as_millis() as u64),
        ..Default::default()
    };
    let ids: Vec<ProcId> = trees.concat();
    sample.bulk_polite_ms = bulk_polite(d, &mut client, bulk, &ids, &mut sample, rep, notes)?;
    cpu.record(&mut sample, "bulk terminate polite, total", 1);

    sample.bulk_stubborn_ms = stubborn(&mut client, opts.sessions, opts.grace, rep, notes)?;
    sample.bulk_stubborn_small_ms =
        stubborn(&mut client, opts.small_sessions(), opts.grace, rep, notes)?;
    Ok(sample)
}

/// One polite `kill` over a fresh connection to the socket, timed from the connect to the
/// answer. Every process of the session must be gone and reaped by then: what is left is
/// noted (pid, state and parent), as `browserctl kill`'s are, and waited for.
fn socket_kill(
    d: &DaemonGuard,
    session: &SessionInfo,
    tree: &[ProcId],
    rep: usize,
    what: &str,
    notes: &mut Vec<String>,
) -> Result<f64, String> {
    let kill = Request::Kill(Kill {
        target: session.id.as_str().parse().map_err(|e| format!("{e}"))?,
        force: false,
        grace_ms: None,
    });
    let start = Instant::now();
    let mut client = d.client();
    let result: TerminateResult = call(&mut client, &kill)?;
    let took = ms(start.elapsed());
    if !result.failed.is_empty() {
        return Err(format!(
            "socket kill of {}: {:?}",
            session.id, result.failed
        ));
    }
    let left: Vec<String> = tree
        .iter()
        .filter_map(|id| procs::current(*id))
        .map(|p| format!("{} ({}, parent {})", p.pid, p.state as char, p.ppid))
        .collect();
    if !left.is_empty() {
        notes.push(format!(
            "rep {rep}: the socket kill ({what}) of {} answered with {} process(es) of the \
             session left: {}",
            session.id,
            left.len(),
            left.join(", ")
        ));
        procs::wait_gone(tree, GONE_TIMEOUT, false).map_err(|left| {
            format!(
                "socket kill of {}: {left} process(es) never went",
                session.id
            )
        })?;
    }
    Ok(took)
}

/// SIGKILLs the session's only process behind the daemon's back and times how long until a
/// listing shows the session exited (polled back to back over one connection; asking only
/// for exited sessions keeps each poll from triggering a process scan).
fn natural_exit(client: &mut Client, session: &SessionInfo, leader: ProcId) -> Result<f64, String> {
    let listing = Request::Sessions(SessionsFilter {
        tracking_id: session.tracking_id.clone(),
        state: Some(SessionState::Exited),
        ..Default::default()
    });
    let pidfd = PidFd::open(leader).ok_or_else(|| format!("session {} is gone", session.id))?;
    let start = Instant::now();
    pidfd.signal(libc::SIGKILL);
    loop {
        let listed: SessionsResult = call(client, &listing)?;
        if listed.sessions.iter().any(|s| s.id == session.id) {
            return Ok(ms(start.elapsed()));
        }
        if start.elapsed() > EXIT_TIMEOUT {
            return Err(format!(
                "session {} was not listed as exited {EXIT_TIMEOUT:?} after its only process died",
                session.id
            ));
        }
    }
}

/// Stubborn trees, terminated all at once with `force` after `grace`.
fn stubborn(
    client: &mut Client,
    count: usize,
    grace: Duration,
    rep: usize,
    notes: &mut Vec<String>,
) -> Result<f64, String> {
    let fixture = Fixture::stubborn();
    let sessions = launch_many(client, &fixture, count, |_| None)?;
    let ids: Vec<ProcId> = wait_trees(&sessions, &fixture)?.concat();
    let bulk = BulkTerminate {
        all: Some(true),
        force: Some(true),
        grace_ms: Some(grace.as_millis() as u64),
        ..Default::default()
    };
    terminate(
        client,
        bulk,
        &ids,
        &format!("stubborn ×{count}"),
        rep,
        notes,
    )
}

/// The polite bulk termination of every session: timed like [`terminate`], with a `status`
/// sent on a second connection right after the request (its time shows whether requests
/// wait while the terminations start), and the daemon's own account of when its last
/// first signal went out (its `browserd::timing` log line).
///
/// That `status` is sent from the bench's own thread, which the N waking sessions compete
/// with for the CPU like any client's; so the same `status` is also sent, on a third
/// connection, by a client thread at real-time priority (where the bench may raise one):
/// its time is the daemon's delay alone.
fn bulk_polite(
    d: &DaemonGuard,
    client: &mut Client,
    bulk: BulkTerminate,
    ids: &[ProcId],
    sample: &mut Sample,
    rep: usize,
    notes: &mut Vec<String>,
) -> Result<f64, String> {
    let mut other = d.client();
    let urgent = UrgentStatus::start(d.client());
    let logged_before = d.log().len();
    let start = Instant::now();
    client.send(None, &Request::BulkTerminate(bulk));
    let asked = Instant::now();
    if let Some(urgent) = &urgent {
        urgent.go(asked);
    }
    let status = other
        .try_request(&Request::Status)
        .map_err(|e| format!("status during the bulk terminate: {e}"))?;
    sample.status_during_bulk_ms = Some(ms(asked.elapsed()));
    if !status.ok {
        notes.push(format!(
            "rep {rep}: status during the bulk terminate failed: {status:?}"
        ));
    }
    if let Some(urgent) = urgent {
        match urgent.answer() {
            Ok(took) => sample.status_during_bulk_urgent_ms = Some(took),
            Err(e) => notes.push(format!(
                "rep {rep}: real-time status during the bulk terminate: {e}"
            )),
        }
    }
    let result: TerminateResult = client
        .read_response()
        .into_result()
        .map_err(|e| format!("browserd refused the bulk terminate: {e}"))?;
    let took = finished(start, &result, ids, "bulk polite", rep, notes)?;
    let log = d.log();
    sample.first_signals_ms = log
        .get(logged_before..)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split("first_signals_us=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .reduce(f64::max);
    if sample.first_signals_ms.is_none() {
        notes.push(format!(
            "rep {rep}: the daemon logged no `first_signals_us` line (is browserd::timing=debug in RUST_LOG?)"
        ));
    }
    Ok(took)
}

/// A client thread at real-time priority (`SCHED_FIFO` 1), waiting to send one `status`.
struct UrgentStatus {
    go: std::sync::mpsc::Sender<Instant>,
    answer: std::thread::JoinHandle<Result<f64, String>>,
}

impl UrgentStatus {
    /// Starts the thread and raises it; `None` where real-time priority is refused (then
    /// the row stays empty: a thread at normal priority would measure the machine again).
    fn start(mut client: Client) -> Option<UrgentStatus> {
        let (go, asked) = std::sync::mpsc::channel::<Instant>();
        let (raised_tx, raised) = std::sync::mpsc::channel::<bool>();
        let answer = std::thread::spawn(move || {
            let param = libc::sched_param { sched_priority: 1 };
            // SAFETY: pid 0 is the calling thread; `param` outlives the call.
            let ok = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0;
            let _ = raised_tx.send(ok);
            if !ok {
                return Err("real-time priority refused".to_owned());
            }
            let asked = asked.recv().map_err(|_| "never sent".to_owned())?;
            let status = client
                .try_request(&Request::Status)
                .map_err(|e| e.to_string())?;
            let took = ms(asked.elapsed());
            if status.ok {
                Ok(took)
            } else {
                Err(format!("status failed: {status:?}"))
            }
        });
        if raised.recv().unwrap_or(false) {
            Some(UrgentStatus { go, answer })
        } else {
            let _ = answer.join();
            None
        }
    }

    /// Sends the `status` now; `asked` is when the bulk request went out.
    fn go(&self, asked: Instant) {
        let _ = self.go.send(asked);
    }

    fn answer(self) -> Result<f64, String> {
        self.answer
            .join()
            .map_err(|_| "the client thread panicked".to_owned())?
    }
}

/// Sends `bulk` and times it until the answer, or until every one of `ids` is gone if the
/// daemon answered before that (which is noted: the contract says gone at the answer).
pub fn terminate(
    client: &mut Client,
    bulk: BulkTerminate,
    ids: &[ProcId],
    what: &str,
    rep: usize,
    notes: &mut Vec<String>,
) -> Result<f64, String> {
    let start = Instant::now();
    let result: TerminateResult = call(client, &Request::BulkTerminate(bulk))?;
    finished(start, &result, ids, what, rep, notes)
}

/// The time from `start` until `result`, or until every one of `ids` is gone if that was
/// later (noted).
pub fn finished(
    start: Instant,
    result: &TerminateResult,
    ids: &[ProcId],
    what: &str,
    rep: usize,
    notes: &mut Vec<String>,
) -> Result<f64, String> {
    let mut took = ms(start.elapsed());
    if !result.failed.is_empty() {
        notes.push(format!(
            "rep {rep}: {what}: {} session(s) failed, first: {:?}",
            result.failed.len(),
            result.failed[0]
        ));
    }
    let left = procs::count_present(ids);
    if left > 0 {
        notes.push(format!(
            "rep {rep}: {what}: {left} process(es) still existed when browserd answered"
        ));
        procs::wait_gone(ids, GONE_TIMEOUT, false)
            .map_err(|left| format!("{what}: {left} process(es) never went away"))?;
        took = ms(start.elapsed());
    }
    Ok(took)
}
