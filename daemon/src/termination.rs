//! What one termination is, as plain data shared by the registry (which stores it in the
//! session's `Terminating` phase), the termination driver (which advances it) and every
//! request waiting on it (which reads its outcome). No procedure lives here.

use browserd_proto::EndReason;
use std::time::Instant;
use tokio::sync::watch;

/// What the termination may do and until when; joiners may strengthen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    pub force: bool,
    /// When the grace period ends.
    pub deadline: Instant,
}

/// How a termination ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every process is gone and reaped, and the session's dirs are removed.
    Terminated,
    /// Processes outlived the grace period and the termination was not forced: the live
    /// pids at the deadline (never empty).
    Timeout(Vec<i32>),
    /// Processes outlived SIGKILL: the pids still alive when the daemon gave up.
    KillFailed(Vec<i32>),
}

/// One in-flight termination, shared by every request that targets the session.
#[derive(Debug)]
pub struct Termination {
    control: watch::Sender<Control>,
    outcome: watch::Sender<Option<Outcome>>,
    /// Why the session is being terminated; becomes its exit reason if it ends.
    reason: EndReason,
    /// When it began, for the kill-duration metric.
    started: Instant,
}

impl Termination {
    pub fn new(control: Control, reason: EndReason) -> Termination {
        Termination {
            control: watch::Sender::new(control),
            outcome: watch::Sender::new(None),
            reason,
            started: Instant::now(),
        }
    }

    pub fn control(&self) -> Control {
        *self.control.borrow()
    }

    pub fn reason(&self) -> EndReason {
        self.reason
    }

    /// How long ago it began.
    pub fn age(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Joins with `force` and `deadline`: force only ever upgrades, the deadline only ever
    /// moves earlier. Returns whether that changed anything.
    pub fn join(&self, force: bool, deadline: Instant) -> bool {
        self.control.send_if_modified(|control| {
            let before = *control;
            control.force |= force;
            control.deadline = control.deadline.min(deadline);
            before != *control
        })
    }

    /// Records the outcome; the first one wins. Returns whether this call settled it.
    pub fn settle(&self, outcome: Outcome) -> bool {
        self.outcome.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(outcome);
            true
        })
    }

    pub fn is_settled(&self) -> bool {
        self.outcome.borrow().is_some()
    }

    /// Waits for the outcome.
    pub async fn outcome(&self) -> Outcome {
        let mut rx = self.outcome.subscribe();
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            // The sender lives in `self`, so it cannot have been dropped while we wait.
            Err(_) => None,
        };
        outcome.unwrap_or(Outcome::KillFailed(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn joining_only_upgrades_force_and_shortens_the_deadline() {
        let now = Instant::now();
        let t = Termination::new(
            Control {
                force: false,
                deadline: now + Duration::from_secs(5),
            },
            EndReason::Terminated,
        );
        assert!(!t.join(false, now + Duration::from_secs(10)));
        assert!(!t.control().force);
        assert_eq!(t.control().deadline, now + Duration::from_secs(5));
        assert!(t.join(true, now + Duration::from_secs(1)));
        assert!(t.control().force);
        assert_eq!(t.control().deadline, now + Duration::from_secs(1));
        t.join(false, now + Duration::from_secs(9));
        assert!(t.control().force, "force never downgrades");
    }

    #[test]
    fn the_first_outcome_wins() {
        let t = Termination::new(
            Control {
                force: true,
                deadline: Instant::now(),
            },
            EndReason::Shutdown,
        );
        assert!(!t.is_settled());
        assert!(t.settle(Outcome::Terminated));
        assert!(!t.settle(Outcome::KillFailed(vec![1])));
        let outcome = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(t.outcome());
        assert_eq!(outcome, Outcome::Terminated);
    }
}
