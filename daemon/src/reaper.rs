//! Reaping: the only code that calls `waitpid`. The daemon is a child subreaper (and may be
//! PID 1), so every orphan of every session ends up as its child; one loop, woken by
//! SIGCHLD, collects them all. The reap lock keeps reaping apart from the things that must
//! not race it: spawning (so a fast-exiting child is registered before it is reaped) and
//! signalling a leader's group (so the pgid is still pinned by the unreaped leader).
//!
//! Those hold the lock shared, so they never wait for one another (a launch blocked in
//! `vfork` until its child has exec'd holds off no kill); the reaper takes it exclusive,
//! but never waits for it: when it is held, the reap is put off, and the last holder to let
//! go wakes the reaper to try again. So no task of the event loop ever blocks on this lock.

use browserd_proto::ExitStatus;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, TryLockError};
use tokio::sync::{oneshot, Notify};

#[derive(Default)]
pub struct Reaper {
    lock: RwLock<()>,
    /// A reap was put off because the lock was held.
    deferred: AtomicBool,
    /// Wakes the reaper to try a put-off reap again.
    retry: Notify,
    /// Held from a leader's spawn to its registration, and by every decision of whose a
    /// new process is: a leader is never judged between the two, when it would be
    /// nobody's. Taken before the reap lock.
    registering: Mutex<()>,
    /// Children the daemon runs for itself (not sessions), whose exit someone awaits.
    helpers: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
}

/// Holds off reaping while it lives (see [`Reaper::hold`]).
pub struct Hold<'a> {
    guard: Option<RwLockReadGuard<'a, ()>>,
    reaper: &'a Reaper,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        // After letting go: a reap put off meanwhile is tried again (the reaper sets the flag
        // before it tries the lock, so one of the two always sees the other).
        if self.reaper.deferred.load(Ordering::SeqCst) {
            self.reaper.retry.notify_one();
        }
    }
}

impl Reaper {
    /// Holds off reaping while the guard lives. Holders do not exclude one another.
    pub fn hold(&self) -> Hold<'_> {
        Hold {
            guard: Some(self.lock.read().unwrap_or_else(|p| p.into_inner())),
            reaper: self,
        }
    }

    /// Holds off reaping, and spawns' registrations (see `registering`): what a spawn and an
    /// owner decision hold.
    pub fn hold_registering(&self) -> (MutexGuard<'_, ()>, Hold<'_>) {
        let registering = self.registering.lock().unwrap_or_else(|p| p.into_inner());
        (registering, self.hold())
    }

    /// Waits until a reap that was put off may be tried again.
    pub async fn retry_wanted(&self) {
        self.retry.notified().await
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
    /// whoever awaits them instead. `None`: the lock is held, nothing was reaped, and
    /// [`Reaper::retry_wanted`] says when to try again.
    pub fn reap_all<R>(&self, record: impl FnOnce(&[(i32, ExitStatus)]) -> R) -> Option<R> {
        self.deferred.store(true, Ordering::SeqCst);
        let _guard = match self.lock.try_write() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        self.deferred.store(false, Ordering::SeqCst);
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
        Some(record(&batch))
    }
}

/// Makes the daemon the reaper of every orphan among its descendants, so that no process a
/// session leaves behind escapes to init.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reap_while_the_lock_is_held_is_put_off_and_asked_for_again_on_release() {
        let reaper = Reaper::default();
        let first = reaper.hold();
        let second = reaper.hold();
        // (Nothing is reaped while held, so this does not touch the test process's children.)
        assert!(reaper.reap_all(|_| ()).is_none(), "held: put off");
        drop(first);
        assert!(
            reaper.reap_all(|_| ()).is_none(),
            "still held by the second"
        );
        drop(second);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), reaper.retry_wanted())
                .await
                .expect("the last holder to let go asks for the reap again");
        });
    }

    #[test]
    fn holders_do_not_exclude_one_another() {
        let reaper = Reaper::default();
        let _spawning = reaper.hold_registering();
        let signalling = std::thread::scope(|scope| scope.spawn(|| drop(reaper.hold())).join());
        assert!(signalling.is_ok(), "a second holder gets the lock at once");
    }
}
