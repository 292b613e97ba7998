//! Termination, the heart of the daemon: SIGTERM to the session's group and every stray, a
//! grace period that ends early the moment the session is proven gone, then SIGKILL only if
//! the request forced it.
//!
//! Every selected session is terminated at once: the request sends each group its first
//! signal itself, in one pass, before anything else runs, and then hands the terminations
//! to one driver task that owns them all. The driver keeps one timer for every deadline and
//! one sweep (a single process-table refresh) for every session that needs its newcomers
//! signalled, instead of a loop per session. A request for a session already terminating
//! joins that termination (and `force` upgrades it), so every caller gets the same outcome.
//! The outcome `Terminated` is set by whoever finishes the session (see `supervise`), once
//! every process is gone and reaped and its dirs are removed.

use crate::context::Context;
use crate::procs::{self, ProcInfo, ProcKey};
use crate::registry::Begin;
use crate::signals;
use crate::termination::{Control, Outcome, Termination};
use browserd_proto::duration::{as_millis, format_millis};
use browserd_proto::{EndReason, ErrorCode, Failure, SessionId};
use nix::sys::signal::Signal;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often, during the grace period, terminating sessions are swept again for processes
/// that appeared after the first SIGTERM (a stray forked mid-termination).
const RESWEEP: Duration = Duration::from_millis(250);
/// The longest a browser's polite close is waited for before SIGTERM.
const POLITE_WAIT: Duration = Duration::from_secs(2);
/// How long the polite close may take to reach the browser.
const POLITE_CONNECT: Duration = Duration::from_secs(1);
/// How often SIGKILL is repeated while waiting for a forced session to vanish.
const KILL_RESWEEP: Duration = Duration::from_millis(100);
/// How many sessions get their first signal in one go, under one hold of the reap lock,
/// before the event loop may run anything else (a reap, another client's request, the news
/// of a session already gone): a bulk termination of thousands starts fast without starving
/// them. A batch takes a few milliseconds at most; between smaller ones the loop would
/// spend its time on the sessions the first batches already ended, not on the next signals.
const SIGNAL_BATCH: usize = 256;
/// How long to wait after SIGKILL before reporting `kill_failed` (processes stuck in the
/// kernel, e.g. uninterruptible I/O); also how long a session with no live process left is
/// given to be proven gone before that is reported.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The driver's inbox, and the handle requests use to reach it.
pub struct Terminator {
    tx: mpsc::UnboundedSender<Message>,
    /// Held by the driver while it runs; a driver started again takes it up.
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>,
}

impl Default for Terminator {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Terminator {
            tx,
            rx: tokio::sync::Mutex::new(rx),
        }
    }
}

enum Message {
    /// New terminations, first signal already sent where there was one to send.
    Start(Vec<Flight>),
    /// A browser could not be asked to close itself: SIGTERM it now.
    PoliteFailed(SessionId),
    /// A termination was joined and strengthened: look at the controls again.
    Changed,
}

impl Terminator {
    fn send(&self, message: Message) {
        // The driver lives as long as the daemon serves; afterwards nobody waits.
        let _ = self.tx.send(message);
    }
}

/// One termination the driver is advancing.
struct Flight {
    id: SessionId,
    termination: Arc<Termination>,
    stage: Stage,
    /// Processes already sent SIGTERM, so sweeps reach only newcomers.
    signalled: HashSet<ProcKey>,
    /// When the group was sent SIGTERM (boot-time clock ticks, the unit of a process's
    /// start time): a group member started before it received that signal already.
    group_signalled_at: Option<u64>,
    next_sweep: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// A browser was asked to close itself through CDP; SIGTERM follows at `until`.
    Polite { until: Instant },
    /// SIGTERM sent; newcomers are swept until the deadline.
    Term,
    /// The grace is over and no process of the session is alive, but it is not proven
    /// gone yet (its last processes are being reaped): wait for that until `give_up`.
    Settling { give_up: Instant },
    /// SIGKILL sent; repeated until the session is gone or `give_up`.
    Kill { give_up: Instant },
}

/// Terminates the given sessions concurrently and reports each, in order.
pub async fn terminate_all(
    ctx: &Arc<Context>,
    ids: Vec<SessionId>,
    force: bool,
    grace: Duration,
    reason: EndReason,
) -> Vec<Result<SessionId, Failure>> {
    let asked = Instant::now();
    let control = Control {
        force,
        deadline: Instant::now() + grace,
    };
    let mut started = Vec::new();
    let mut changed = false;
    let mut pending = Vec::with_capacity(ids.len());
    for id in ids {
        let waiting = match ctx.registry.begin_termination(&id, control, reason) {
            None | Some(Begin::AlreadyGone) => Waiting::Done(Ok(id)),
            Some(Begin::Leased(count)) => Waiting::Done(Err(Failure {
                message: format!(
                    "session {id} has {count} active lease(s); release them, wait for them to expire, or pass force"
                ),
                id: id.to_string(),
                code: ErrorCode::Leased,
                pids: Vec::new(),
            })),
            Some(Begin::Started(termination)) => {
                started.push((id.clone(), termination.clone()));
                Waiting::On(id, termination)
            }
            Some(Begin::Joined {
                termination,
                upgraded,
            }) => {
                changed |= upgraded;
                Waiting::On(id, termination)
            }
        };
        pending.push(waiting);
    }
    begin_all(ctx, started, asked).await;
    if changed {
        ctx.terminator.send(Message::Changed);
    }
    let mut results = Vec::with_capacity(pending.len());
    for waiting in pending {
        results.push(match waiting {
            Waiting::Done(result) => result,
            Waiting::On(id, termination) => report(id, termination.outcome().await),
        });
    }
    results
}

enum Waiting {
    Done(Result<SessionId, Failure>),
    On(SessionId, Arc<Termination>),
}

/// Starts a forced termination nobody waits on (TTL expiry, what a leader left behind,
/// shutdown), unless one is already running, in which case that one is forced.
pub fn start_forced(ctx: &Arc<Context>, id: &SessionId, grace: Duration, reason: EndReason) {
    let control = Control {
        force: true,
        deadline: Instant::now() + grace,
    };
    match ctx.registry.begin_termination(id, control, reason) {
        Some(Begin::Started(termination)) => {
            let started = begin(ctx, vec![(id.clone(), termination)]);
            log_started(&started);
        }
        Some(Begin::Joined { upgraded: true, .. }) => ctx.terminator.send(Message::Changed),
        _ => {}
    }
}

/// Starts every new termination of a request: first signals in batches of `SIGNAL_BATCH`,
/// letting the event loop run in between; the log lines once every signal is out. `asked`
/// is when the request came, for the `browserd::timing` line.
async fn begin_all(
    ctx: &Arc<Context>,
    started: Vec<(SessionId, Arc<Termination>)>,
    asked: Instant,
) {
    if started.is_empty() {
        return;
    }
    let begun = asked.elapsed();
    let total = started.len();
    // The loop runs on one thread (the runtime is single-threaded): it stays raised, with
    // whatever else the loop serves between batches, until every first signal is out.
    let burst = (total > 1).then(signals::burst);
    let mut logged = Vec::with_capacity(total);
    let mut rest = started.into_iter().peekable();
    while rest.peek().is_some() {
        let batch: Vec<_> = rest.by_ref().take(SIGNAL_BATCH).collect();
        logged.extend(begin(ctx, batch));
        if rest.peek().is_some() {
            tokio::task::yield_now().await;
        }
    }
    let signalled = asked.elapsed();
    drop(burst);
    log_started(&logged);
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    tracing::debug!(
        target: "browserd::timing",
        sessions = total,
        first_signals_us = us(signalled),
        signalling_us = us(signalled.saturating_sub(begun)),
        "every first signal sent (or polite close asked)"
    );
}

fn log_started(started: &[(SessionId, bool)]) {
    for (id, force) in started {
        tracing::info!(session = %id, force, "terminating");
    }
}

/// Sends the first signal of each new termination, all in one pass under one hold of the
/// reap lock (so every group's leader is still unreaped when its group is signalled; the
/// groups go out together, half from the partner thread where there is one), and hands
/// them to the driver. A browser with a DevTools endpoint is first asked to close
/// itself, within the first half of its grace (at most `POLITE_WAIT`). Returns each
/// session with whether it is forced, for the log.
fn begin(
    ctx: &Arc<Context>,
    started: Vec<(SessionId, Arc<Termination>)>,
) -> Vec<(SessionId, bool)> {
    if started.is_empty() {
        return Vec::new();
    }
    let now = Instant::now();
    let mut flights = Vec::with_capacity(started.len());
    let mut polite = Vec::new();
    // Each flight's group, by its index: signalled together once every flight is made.
    let mut groups: Vec<(usize, i32)> = Vec::new();
    {
        let _reap = ctx.reaper.hold();
        for (id, termination) in started {
            ctx.members.closing(&id);
            let control = termination.control();
            let budget = (control.deadline.saturating_duration_since(now) / 2).min(POLITE_WAIT);
            let endpoint = ctx.registry.endpoint(&id).filter(|_| !budget.is_zero());
            let mut flight = Flight {
                id,
                termination,
                stage: Stage::Term,
                signalled: HashSet::new(),
                group_signalled_at: None,
                next_sweep: now,
            };
            match endpoint {
                Some(endpoint) => {
                    flight.stage = Stage::Polite {
                        until: now + budget,
                    };
                    polite.push((flight.id.clone(), endpoint));
                }
                None => {
                    if let Some(pgid) = group_to_signal(ctx, &mut flight, Signal::SIGTERM) {
                        groups.push((flights.len(), pgid));
                    }
                }
            }
            flights.push(flight);
        }
        let pgids: Vec<i32> = groups.iter().map(|&(_, pgid)| pgid).collect();
        let sent = signals::kill_groups(ctx.partner.as_ref(), &pgids, Signal::SIGTERM);
        for (&(index, pgid), sent) in groups.iter().zip(sent) {
            group_signalled(&mut flights[index], pgid, Signal::SIGTERM, sent);
        }
    }
    let logged: Vec<(SessionId, bool)> = flights
        .iter()
        .map(|f| (f.id.clone(), f.termination.control().force))
        .collect();
    ctx.terminator.send(Message::Start(flights));
    for (id, endpoint) in polite {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if !crate::browser::close(&endpoint, POLITE_CONNECT).await {
                ctx.terminator.send(Message::PoliteFailed(id));
            }
        });
    }
    logged
}

/// Signals the session's process group, if its leader is unreaped (which pins the pgid).
/// An adopted leader is not the daemon's child, so its group is not pinned: only the
/// leader itself is signalled, through its pidfd; sweeps reach the rest. Call with the reap
/// lock held.
fn signal_group(ctx: &Context, flight: &mut Flight, signal: Signal) {
    if let Some(pgid) = group_to_signal(ctx, flight, signal) {
        group_signalled(flight, pgid, signal, signals::kill_group_at(pgid, signal));
    }
}

/// What `signal_group` signals as a group: the pgid, if the session's leader is unreaped.
/// An adopted leader is signalled here, through its pidfd, and a cgroup's SIGKILL is sent
/// here too (`None`: nothing left to signal). Call with the reap lock held.
fn group_to_signal(ctx: &Context, flight: &mut Flight, signal: Signal) -> Option<i32> {
    if let Some((pidfd, leader)) = ctx.registry.adopted_leader(&flight.id) {
        match signals::kill_pidfd(&pidfd, signal) {
            // Sweeps do not send it SIGTERM again.
            Ok(_) => {
                flight.signalled.insert(leader);
            }
            Err(e) => tracing::warn!(session = %flight.id, "cannot signal the adopted leader: {e}"),
        }
        return None;
    }
    // A cgroup is killed whole, at once, whatever its processes' groups.
    if signal == Signal::SIGKILL && ctx.members.kill_all(&flight.id) {
        return None;
    }
    ctx.registry.unreaped_leader(&flight.id)
}

/// Records a group's signal: for the first SIGTERM, the boot tick right after it went out
/// (every process started before it got it).
fn group_signalled(flight: &mut Flight, pgid: i32, signal: Signal, sent: std::io::Result<u64>) {
    match sent {
        Ok(at) => {
            if signal == Signal::SIGTERM && flight.group_signalled_at.is_none() {
                flight.group_signalled_at = Some(at);
            }
        }
        Err(e) => tracing::warn!(session = %flight.id, pgid, "cannot signal group: {e}"),
    }
}

/// The driver: advances every termination in flight. Runs for the daemon's life. It starts
/// by taking up every session the registry says is terminating (none at first start; after
/// a restart of the driver, the ones it was advancing), and sweeps them at once.
pub async fn drive(ctx: Arc<Context>) {
    let mut inbox = ctx.terminator.rx.lock().await;
    let now = Instant::now();
    let mut flights: HashMap<SessionId, Flight> = ctx
        .registry
        .terminating()
        .into_iter()
        .map(|(id, termination)| {
            ctx.members.closing(&id);
            let flight = Flight {
                id: id.clone(),
                termination,
                stage: Stage::Term,
                signalled: HashSet::new(),
                group_signalled_at: Some(procs::boot_ticks()),
                next_sweep: now,
            };
            (id, flight)
        })
        .collect();
    loop {
        flights.retain(|_, f| !f.termination.is_settled());
        let wake = advance(&ctx, &mut flights).await;
        let message = match wake {
            Some(at) => tokio::select! {
                message = inbox.recv() => message,
                () = tokio::time::sleep_until(at.into()) => continue,
            },
            None => inbox.recv().await,
        };
        let Some(message) = message else { return };
        receive(&mut flights, message);
        while let Ok(message) = inbox.try_recv() {
            receive(&mut flights, message);
        }
    }
}

fn receive(flights: &mut HashMap<SessionId, Flight>, message: Message) {
    match message {
        Message::Start(new) => {
            for flight in new {
                flights.insert(flight.id.clone(), flight);
            }
        }
        Message::PoliteFailed(id) => {
            if let Some(flight) = flights.get_mut(&id) {
                if matches!(flight.stage, Stage::Polite { .. }) {
                    flight.stage = Stage::Polite {
                        until: Instant::now(),
                    };
                }
            }
        }
        Message::Changed => {}
    }
}

/// What one pass over the flights decided to do.
#[derive(Default)]
struct Plan {
    /// Sessions to sweep for newcomers, with the signal.
    sweep: Vec<(SessionId, Signal)>,
    /// Sessions whose grace is over without force: are they still alive?
    deadline: Vec<SessionId>,
    /// Forced sessions SIGKILL could not finish in time.
    give_up: Vec<SessionId>,
}

/// Moves every flight on as far as time allows, signals what is due, and returns when the
/// driver must look again.
async fn advance(ctx: &Arc<Context>, flights: &mut HashMap<SessionId, Flight>) -> Option<Instant> {
    let now = Instant::now();
    let mut plan = Plan::default();
    {
        let _reap = ctx.reaper.hold();
        // At a shared deadline, every group's SIGKILL goes out before any victim runs.
        let _burst = (flights.len() > 1).then(signals::burst);
        for flight in flights.values_mut() {
            step(ctx, flight, now, &mut plan);
        }
    }
    if !(plan.sweep.is_empty() && plan.deadline.is_empty() && plan.give_up.is_empty()) {
        let ids: Vec<SessionId> = plan
            .sweep
            .iter()
            .map(|(id, _)| id.clone())
            .chain(plan.deadline.iter().cloned())
            .chain(plan.give_up.iter().cloned())
            .collect();
        let mut found = ctx.members.of(&ctx.scanner, ids).await;
        let mut any_empty = false;
        for (id, signal) in plan.sweep {
            // A session proven gone while its processes were being listed needs nothing.
            if let Some(flight) = flights.get_mut(&id).filter(|f| !f.termination.is_settled()) {
                let known = found.get(&id).map_or(&[][..], Vec::as_slice);
                any_empty |= !sweep(ctx, flight, known, signal);
            }
        }
        for id in plan.deadline {
            let live = procs::live_pids(found.remove(&id).as_deref().unwrap_or_default());
            any_empty |= live.is_empty();
            if let Some(flight) = flights.get_mut(&id) {
                grace_over(ctx, flight, live);
            }
        }
        for id in plan.give_up {
            let live = procs::live_pids(found.remove(&id).as_deref().unwrap_or_default());
            if let Some(flight) = flights.get_mut(&id) {
                settle(ctx, flight, Outcome::KillFailed(live));
            }
        }
        if any_empty {
            // Nothing of some session is alive: its last reap may not have come (a process
            // that escaped to another reaper); have it proven gone now.
            ctx.check_gone();
        }
    }
    flights
        .values()
        .filter(|f| !f.termination.is_settled())
        .map(|f| next_wake(f, f.termination.control()))
        .min()
}

/// Decides what one flight needs now. Called with the reap lock held.
fn step(ctx: &Context, flight: &mut Flight, now: Instant, plan: &mut Plan) {
    let control = flight.termination.control();
    if let Stage::Polite { until } = flight.stage {
        if now < until && now < control.deadline {
            return;
        }
        signal_group(ctx, flight, Signal::SIGTERM);
        flight.stage = Stage::Term;
        flight.next_sweep = now;
    }
    match flight.stage {
        Stage::Polite { .. } => {}
        Stage::Term | Stage::Settling { .. } if control.force && now >= control.deadline => {
            tracing::info!(session = %flight.id, "grace period over; SIGKILL");
            signal_group(ctx, flight, Signal::SIGKILL);
            flight.stage = Stage::Kill {
                give_up: now + KILL_WAIT,
            };
            plan.sweep.push((flight.id.clone(), Signal::SIGKILL));
            flight.next_sweep = now + KILL_RESWEEP;
        }
        Stage::Term if now >= control.deadline => plan.deadline.push(flight.id.clone()),
        Stage::Settling { give_up } if now >= give_up => plan.deadline.push(flight.id.clone()),
        Stage::Term if now >= flight.next_sweep => {
            plan.sweep.push((flight.id.clone(), Signal::SIGTERM));
            flight.next_sweep = now + RESWEEP;
        }
        Stage::Kill { give_up } if now >= give_up => plan.give_up.push(flight.id.clone()),
        Stage::Kill { .. } if now >= flight.next_sweep => {
            signal_group(ctx, flight, Signal::SIGKILL);
            plan.sweep.push((flight.id.clone(), Signal::SIGKILL));
            flight.next_sweep = now + KILL_RESWEEP;
        }
        Stage::Term | Stage::Settling { .. } | Stage::Kill { .. } => {}
    }
}

/// When a flight next needs the driver.
fn next_wake(flight: &Flight, control: Control) -> Instant {
    match flight.stage {
        Stage::Polite { until } => until.min(control.deadline),
        Stage::Term => flight.next_sweep.min(control.deadline),
        Stage::Settling { give_up } if control.force => give_up.min(control.deadline),
        Stage::Settling { give_up } => give_up,
        Stage::Kill { give_up } => flight.next_sweep.min(give_up),
    }
}

/// Signals the processes a sweep found (`known`, as the process table or cgroup lists them).
/// SIGTERM reaches each process once: not one that got it through its group already, not
/// one a previous sweep reached. SIGKILL reaches every process outside the group (the group
/// itself was just sent it). Returns whether any of them may still be there.
///
/// While the session's group is pinned by its unreaped leader, which group a process is in
/// now is asked of the kernel first (`getpgid`: no read of `/proc`): a member of that group
/// is the session's (only a process of the leader's session can join it), and one the
/// group's signal reached needs nothing more, which is nearly every process of a kill-all.
/// Every other process is read again, to be sure it is still the one known (its pid may
/// have been reused) and to see its group as it is now.
fn sweep(ctx: &Context, flight: &mut Flight, known: &[ProcInfo], signal: Signal) -> bool {
    let group = {
        let _reap = ctx.reaper.hold();
        ctx.registry.unreaped_leader(&flight.id)
    };
    let mut any = false;
    for known in known {
        // Asking a pid's group is also the cheapest way to learn it is gone (not even a
        // zombie): after a bulk kill, most processes a sweep lists are, and a failed lookup
        // in `/proc` costs ten times as much.
        let Some(group_now) = procs::group_of_pid(known.pid) else {
            continue;
        };
        if let Some(group) = group {
            if group_now == group {
                let had_group_signal = flight
                    .group_signalled_at
                    .is_some_and(|at| known.start_time < at);
                if signal == Signal::SIGKILL || had_group_signal {
                    any = true;
                    continue;
                }
            }
        }
        let Some(process) = procs::reread(known).filter(|p| !p.is_zombie()) else {
            continue;
        };
        any = true;
        let process = &process;
        let in_group = group == Some(process.pgid);
        if signal == Signal::SIGKILL {
            if in_group {
                continue;
            }
        } else {
            if !flight.signalled.insert(process.key()) {
                continue;
            }
            let had_group_signal = flight
                .group_signalled_at
                .is_some_and(|at| process.start_time < at);
            if in_group && had_group_signal {
                continue;
            }
        }
        match signals::kill_process(process, signal) {
            Ok(true) => {
                if !in_group {
                    ctx.metrics.stray_signalled();
                }
                tracing::debug!(session = %flight.id, pid = process.pid, ?signal, "signalled")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(session = %flight.id, pid = process.pid, "cannot signal: {e}"),
        }
    }
    any
}

/// The grace of a termination that was not forced is over: with processes still alive it
/// timed out; with none alive it is waited for until proven gone (it is not a failure).
fn grace_over(ctx: &Context, flight: &mut Flight, live: Vec<i32>) {
    if flight.termination.control().force {
        // A forced request joined while the grace ran out: this is a forced termination
        // now, so SIGKILL rather than report a timeout.
        let _reap = ctx.reaper.hold();
        tracing::info!(session = %flight.id, "grace period over; SIGKILL");
        signal_group(ctx, flight, Signal::SIGKILL);
        flight.stage = Stage::Kill {
            give_up: Instant::now() + KILL_WAIT,
        };
        flight.next_sweep = Instant::now();
        return;
    }
    if !live.is_empty() {
        tracing::warn!(session = %flight.id, pids = ?live, "grace period over; not forced");
        settle(ctx, flight, Outcome::Timeout(live));
        return;
    }
    match flight.stage {
        Stage::Settling { .. } => {
            tracing::error!(session = %flight.id, "no process is alive, yet the session was not proven gone");
            settle(ctx, flight, Outcome::Timeout(Vec::new()));
        }
        _ => {
            flight.stage = Stage::Settling {
                give_up: Instant::now() + KILL_WAIT,
            }
        }
    }
}

/// Ends a termination the session outlived: it is running again.
fn settle(ctx: &Context, flight: &Flight, outcome: Outcome) {
    if let Outcome::KillFailed(pids) = &outcome {
        tracing::error!(session = %flight.id, ?pids, "processes survived SIGKILL");
    }
    let code = match &outcome {
        Outcome::Terminated => ErrorCode::Internal,
        Outcome::Timeout(_) => ErrorCode::Timeout,
        Outcome::KillFailed(_) => ErrorCode::KillFailed,
    };
    ctx.registry
        .end_termination(&flight.id, &flight.termination, &outcome);
    if flight.termination.settle(outcome) {
        ctx.metrics.terminated(Err(code.as_str()));
    }
}

fn report(id: SessionId, outcome: Outcome) -> Result<SessionId, Failure> {
    let failure = |code, message: String, pids| {
        Err(Failure {
            id: id.to_string(),
            code,
            message,
            pids,
        })
    };
    match outcome {
        Outcome::Terminated => Ok(id),
        Outcome::Timeout(pids) if pids.is_empty() => failure(
            ErrorCode::Timeout,
            format!(
                "session {id} has no live process, but was not proven gone within {} after its grace period; retry the kill",
                format_millis(as_millis(KILL_WAIT))
            ),
            pids,
        ),
        Outcome::Timeout(pids) => failure(
            ErrorCode::Timeout,
            format!(
                "session {id} still has {} live process(es) after the grace period (pids {pids:?}); nothing was SIGKILLed. Retry with force to SIGKILL them",
                pids.len()
            ),
            pids,
        ),
        Outcome::KillFailed(pids) if pids.is_empty() => failure(
            ErrorCode::KillFailed,
            format!(
                "session {id} has no live process, but was not proven gone {} after SIGKILL; retry the kill",
                format_millis(as_millis(KILL_WAIT))
            ),
            pids,
        ),
        Outcome::KillFailed(pids) => failure(
            ErrorCode::KillFailed,
            format!(
                "session {id} still has {} process(es) {} after SIGKILL (pids {pids:?}; stuck in the kernel?)",
                pids.len(),
                format_millis(as_millis(KILL_WAIT))
            ),
            pids,
        ),
    }
}
