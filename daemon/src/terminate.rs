//! Termination, the heart of the daemon: SIGTERM to the session's group and every stray,
//! a grace period that ends early the moment the last process is reaped, then SIGKILL only
//! if the request forced it. All selected sessions are terminated at once, each by its own
//! task; a request for a session already terminating joins that termination (and `force`
//! upgrades it), so every caller gets the same, single outcome.

use crate::daemon::Daemon;
use crate::registry::Begin;
use browserd_proto::{ErrorCode, Failure, SessionId};
use nix::sys::signal::Signal;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How often, during the grace period, the session is swept again for processes that
/// appeared after the first SIGTERM (a stray forked mid-termination).
const RESWEEP: Duration = Duration::from_millis(250);
/// The longest a browser's polite close is waited for before SIGTERM.
const POLITE_WAIT: Duration = Duration::from_secs(2);
/// How often SIGKILL is repeated while waiting for a forced session to vanish.
const KILL_RESWEEP: Duration = Duration::from_millis(100);
/// How long to wait after SIGKILL before reporting `kill_failed` (processes stuck in the
/// kernel, e.g. uninterruptible I/O).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What the termination may do and until when; joiners may strengthen it.
#[derive(Debug, Clone, Copy)]
pub struct Control {
    pub force: bool,
    /// When the grace period ends.
    pub deadline: Instant,
}

/// How a termination ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every process is gone and reaped.
    Terminated,
    /// Processes outlived the grace period and the termination was not forced.
    Timeout(Vec<i32>),
    /// Processes outlived SIGKILL.
    KillFailed(Vec<i32>),
}

/// One in-flight termination, shared by every request that targets the session.
#[derive(Debug)]
pub struct Termination {
    control: watch::Sender<Control>,
    outcome: watch::Sender<Option<Outcome>>,
    /// Signalled once the session is gone (all processes reaped, dirs removed).
    gone: Notify,
}

impl Termination {
    pub fn new(control: Control) -> Termination {
        Termination {
            control: watch::Sender::new(control),
            outcome: watch::Sender::new(None),
            gone: Notify::new(),
        }
    }

    /// Joins with `force` and `deadline`: force only ever upgrades, the deadline only ever
    /// moves earlier.
    pub fn join(&self, force: bool, deadline: Instant) {
        self.control.send_if_modified(|control| {
            let before = (control.force, control.deadline);
            control.force |= force;
            control.deadline = control.deadline.min(deadline);
            before != (control.force, control.deadline)
        });
    }

    pub fn mark_gone(&self) {
        self.gone.notify_one();
    }

    /// Waits for the outcome.
    pub async fn outcome(&self) -> Outcome {
        let mut rx = self.outcome.subscribe();
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or(Outcome::KillFailed(Vec::new())),
            Err(_) => Outcome::KillFailed(Vec::new()),
        };
        outcome
    }
}

/// Terminates the given sessions concurrently and reports each, in order.
pub async fn terminate_all(
    daemon: &Arc<Daemon>,
    ids: Vec<SessionId>,
    force: bool,
    grace: Duration,
) -> Vec<Result<SessionId, Failure>> {
    let deadline = Instant::now() + grace;
    let mut pending = Vec::with_capacity(ids.len());
    for id in ids {
        let begin = daemon.registry.begin_termination(&id, force, deadline);
        let waiting = match begin {
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
                tokio::spawn(run(daemon.clone(), id.clone(), termination.clone()));
                Waiting::On(id, termination)
            }
            Some(Begin::Joined(termination)) => Waiting::On(id, termination),
        };
        pending.push(waiting);
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
        Outcome::Timeout(pids) => failure(
            ErrorCode::Timeout,
            format!(
                "session {id} still has {} process(es) after the grace period; they ignored SIGTERM. Retry with force to SIGKILL them",
                pids.len()
            ),
            pids,
        ),
        Outcome::KillFailed(pids) => failure(
            ErrorCode::KillFailed,
            format!(
                "session {id} still has {} process(es) {}s after SIGKILL (stuck in the kernel?)",
                pids.len(),
                KILL_WAIT.as_secs()
            ),
            pids,
        ),
    }
}

/// Starts a forced termination nobody waits on (TTL expiry, a leader that left processes
/// behind, shutdown), unless one is already running.
pub fn start_detached(daemon: &Arc<Daemon>, id: &SessionId, grace: Duration) {
    let deadline = Instant::now() + grace;
    if let Some(Begin::Started(termination)) = daemon.registry.begin_termination(id, true, deadline)
    {
        tokio::spawn(run(daemon.clone(), id.clone(), termination));
    }
}

/// Runs one session's termination to its outcome.
async fn run(daemon: Arc<Daemon>, id: SessionId, termination: Arc<Termination>) {
    tracing::info!(session = %id, force = termination.control.borrow().force, "terminating");
    let mut signalled = HashSet::new();
    if polite_close(&daemon, &id, &termination).await {
        tracing::info!(session = %id, "closed politely");
        termination.outcome.send_replace(Some(Outcome::Terminated));
        return;
    }
    daemon
        .signal_session(&id, Signal::SIGTERM, Some(&mut signalled))
        .await;
    let mut control = termination.control.subscribe();
    let mut next_sweep = Instant::now() + RESWEEP;
    let outcome = loop {
        let Control { force, deadline } = *control.borrow_and_update();
        tokio::select! {
            () = termination.gone.notified() => break Outcome::Terminated,
            changed = control.changed() => {
                if changed.is_err() { break Outcome::KillFailed(Vec::new()) }
            }
            () = tokio::time::sleep_until(next_sweep.min(deadline).into()) => {
                if Instant::now() < deadline {
                    daemon.signal_session(&id, Signal::SIGTERM, Some(&mut signalled)).await;
                    next_sweep = Instant::now() + RESWEEP;
                } else if force {
                    break kill_until_gone(&daemon, &id, &termination).await;
                } else {
                    break Outcome::Timeout(daemon.live_pids(&id).await);
                }
            }
        }
    };
    match &outcome {
        Outcome::Terminated => tracing::info!(session = %id, "terminated"),
        Outcome::Timeout(pids) => {
            tracing::warn!(session = %id, ?pids, "grace period over; not forced")
        }
        Outcome::KillFailed(pids) => {
            tracing::error!(session = %id, ?pids, "processes survived SIGKILL")
        }
    }
    daemon.registry.end_termination(&id, &termination, &outcome);
    termination.outcome.send_replace(Some(outcome));
}

/// The polite step, within the first half of the grace (and at most `POLITE_WAIT`), so
/// SIGTERM always gets the rest: asks a browser to close itself and waits for it to go.
/// Returns whether the session went.
async fn polite_close(daemon: &Daemon, id: &SessionId, termination: &Termination) -> bool {
    let deadline = termination.control.borrow().deadline;
    let budget = (deadline.saturating_duration_since(Instant::now()) / 2).min(POLITE_WAIT);
    if budget.is_zero() {
        return false;
    }
    let attempt = async {
        daemon.polite_close(id).await && {
            termination.gone.notified().await;
            true
        }
    };
    tokio::time::timeout(budget, attempt).await.unwrap_or(false)
}

/// SIGKILL, repeated for processes that appear meanwhile, until the session is gone or
/// `KILL_WAIT` has passed.
async fn kill_until_gone(
    daemon: &Arc<Daemon>,
    id: &SessionId,
    termination: &Termination,
) -> Outcome {
    let give_up = Instant::now() + KILL_WAIT;
    loop {
        daemon.signal_session(id, Signal::SIGKILL, None).await;
        let wake = (Instant::now() + KILL_RESWEEP).min(give_up);
        tokio::select! {
            () = termination.gone.notified() => return Outcome::Terminated,
            () = tokio::time::sleep_until(wake.into()) => {
                if Instant::now() >= give_up {
                    return Outcome::KillFailed(daemon.live_pids(id).await);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joining_only_upgrades_force_and_shortens_the_deadline() {
        let now = Instant::now();
        let t = Termination::new(Control {
            force: false,
            deadline: now + Duration::from_secs(5),
        });
        t.join(false, now + Duration::from_secs(10));
        assert!(!t.control.borrow().force);
        assert_eq!(t.control.borrow().deadline, now + Duration::from_secs(5));
        t.join(true, now + Duration::from_secs(1));
        assert!(t.control.borrow().force);
        assert_eq!(t.control.borrow().deadline, now + Duration::from_secs(1));
        t.join(false, now + Duration::from_secs(9));
        assert!(t.control.borrow().force, "force never downgrades");
    }
}
