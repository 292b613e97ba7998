//! Reaping: the only code that calls `waitpid`. The daemon is a child subreaper (and may be
//! PID 1), so every orphan of every session ends up as its child; one loop, woken by
//! SIGCHLD, collects them all. The reap lock serialises reaping with the two things that
//! must not race it: spawning (so a fast-exiting child is registered before it is reaped)
//! and signalling a leader's group (so the pgid is still pinned by the unreaped leader).

use browserd_proto::ExitStatus;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::oneshot;

#[derive(Default)]
pub struct Reaper {
    lock: Mutex<()>,
    /// Children the daemon runs for itself (not sessions), whose exit someone awaits.
    helpers: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
}

impl Reaper {
    /// Holds off reaping while the guard lives. Held only around non-blocking work.
    pub fn hold(&self) -> MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a child the daemon spawned for itself (with the reap lock held, so it
    /// cannot be reaped first) and returns where its exit status will arrive.
    pub fn await_helper(&self, pid: i32) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        self.helpers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(pid, tx);
        rx
    }

    /// Reaps every child that has exited and hands the batch to `record` while the lock is
    /// still held, so no one can observe a reaped leader as alive. Helpers' exits go to
    /// whoever awaits them instead.
    pub fn reap_all<R>(&self, record: impl FnOnce(&[(i32, ExitStatus)]) -> R) -> R {
        let _guard = self.hold();
        let mut batch = Vec::new();
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    batch.push((pid.as_raw(), ExitStatus::Code(code)))
                }
                Ok(WaitStatus::Signaled(pid, signal, _core)) => {
                    batch.push((pid.as_raw(), ExitStatus::Signal(signal as i32)))
                }
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                // ECHILD: no children at all.
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let mut helpers = self
                .helpers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            batch.retain(|(pid, status)| match helpers.remove(pid) {
                Some(waiter) => {
                    let _ = waiter.send(*status);
                    false
                }
                None => true,
            });
        }
        record(&batch)
    }
}

/// Makes the daemon the reaper of every orphan among its descendants, so that no process a
/// session leaves behind escapes to init.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}
