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
//!
//! Which children it looks at: `waitpid(-1)` walks every child of every thread of the
//! daemon on each call (each leader is a child of the spawner thread that started it):
//! 15–40 µs at 1000 sessions. So a reap comes in two passes (see [`Pass`]). The quick one
//! reaps the leaders that exited, each through its pidfd (each leader is watched in one
//! epoll set, which lists those that exited: see [`Reaper::watch`]), and walks only the
//! main thread's own children (orphans, which go to the first thread of a subreaper, the
//! daemon's helpers, and the leaders of sessions taken over at a reload). The full pass
//! walks every thread's children; the reap loop runs one a few milliseconds after each
//! SIGCHLD (shared by every SIGCHLD meanwhile), off the path of the kill the quick pass
//! finished. Whatever the quick pass does not see (a process a leader started beside itself
//! with `CLONE_PARENT`, a leader no pidfd watches) is reaped by the full pass: the quick pass
//! makes reaping sooner, never more complete.

use browserd_proto::ExitStatus;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
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
    /// The leaders watched for their exit.
    exits: Mutex<Exits>,
}

/// Leaders watched through their pidfds, in an epoll set that lists those that exited.
struct Exits {
    /// `None` where no epoll instance could be made: then nothing is watched.
    epoll: Option<Epoll>,
    /// Each watched leader's pidfd, by pid (the epoll set's data).
    watched: HashMap<i32, OwnedFd>,
}

/// Which children a reap looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The watched leaders that exited, and the main thread's own children.
    Quick,
    /// Every child of every thread.
    Full,
}

/// Most leaders watched at once: pidfds are descriptors, so half of the daemon's limit at
/// most (read at each launch, so a limit lowered at run time is heeded), leaving the rest to
/// clients.
fn watch_budget() -> usize {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| {
            usize::try_from(soft / 2).unwrap_or(usize::MAX)
        })
}

impl Default for Exits {
    fn default() -> Self {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .inspect_err(|e| {
                tracing::warn!("cannot make an epoll set to watch leaders' exits ({e}); reaping walks every child")
            })
            .ok();
        Exits {
            epoll,
            watched: HashMap::new(),
        }
    }
}

/// Whether the calling thread is the daemon's main thread (the one orphans go to).
fn on_main_thread() -> bool {
    nix::unistd::gettid() == nix::unistd::getpid()
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

    /// Watches the daemon's new child `pid` (a leader just spawned) for its exit through a
    /// pidfd, so that the quick pass reaps it. Call with the reap lock held (so the child is
    /// not reaped yet and its pid is still its own). A leader not watched (past the budget,
    /// or no pidfd to be had) is reaped by the full pass.
    pub fn watch(&self, pid: i32) {
        let mut exits = self.exits();
        let exits = &mut *exits;
        let Some(epoll) = &exits.epoll else {
            return;
        };
        if exits.watched.len() >= watch_budget() {
            return;
        }
        let pidfd = match crate::pidfd::open(pid) {
            Ok(pidfd) => pidfd,
            Err(e) => {
                tracing::debug!(pid, "cannot watch the leader ({e})");
                return;
            }
        };
        match epoll.add(&pidfd, EpollEvent::new(EpollFlags::EPOLLIN, pid as u64)) {
            Ok(()) => {
                exits.watched.insert(pid, pidfd);
            }
            Err(e) => tracing::debug!(pid, "cannot watch the leader ({e})"),
        }
    }

    fn exits(&self) -> MutexGuard<'_, Exits> {
        self.exits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reaps the children `pass` looks at that have exited and hands the batch to `record`
    /// while the lock is still held, so no one can observe a reaped leader as alive.
    /// Helpers' exits go to whoever awaits them instead (`record` gets only their pids, as
    /// they are free for reuse now). `None`: the lock is held, nothing was reaped, and
    /// [`Reaper::retry_wanted`] says when to try again. The quick pass is meant for the main
    /// thread (from any other, it walks every thread's children).
    pub fn reap<R>(
        &self,
        pass: Pass,
        record: impl FnOnce(&[(i32, ExitStatus)], &[i32]) -> R,
    ) -> Option<R> {
        self.deferred.store(true, Ordering::SeqCst);
        let _guard = match self.lock.try_write() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        self.deferred.store(false, Ordering::SeqCst);
        let mut batch = Vec::new();
        let mut exits = self.exits();
        reap_watched(&mut exits, &mut batch);
        let mut flags = WaitPidFlag::WNOHANG;
        if pass == Pass::Quick && on_main_thread() {
            flags |= WaitPidFlag::__WNOTHREAD;
        }
        let watched_before = batch.len();
        loop {
            match waitpid(None, Some(flags)) {
                Ok(status) => match exit_of(status) {
                    Some(exit) => batch.push(exit),
                    None if status == WaitStatus::StillAlive => break,
                    None => continue,
                },
                Err(nix::errno::Errno::EINTR) => continue,
                // ECHILD: no children at all.
                Err(_) => break,
            }
        }
        // A watched leader reaped by the walk: its pidfd goes (and leaves the epoll set).
        for (pid, _) in &batch[watched_before..] {
            exits.watched.remove(pid);
        }
        drop(exits);
        let mut helpers_reaped = Vec::new();
        if !batch.is_empty() {
            let mut helpers = self
                .helpers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            batch.retain(|(pid, status)| match helpers.remove(pid) {
                Some(waiter) => {
                    let _ = waiter.send(*status);
                    helpers_reaped.push(*pid);
                    false
                }
                None => true,
            });
        }
        Some(record(&batch, &helpers_reaped))
    }
}

/// Reaps the watched leaders whose pidfds turned readable (they exited), each by its pidfd.
fn reap_watched(exits: &mut Exits, batch: &mut Vec<(i32, ExitStatus)>) {
    let Some(epoll) = &exits.epoll else {
        return;
    };
    let mut events = [EpollEvent::empty(); 64];
    loop {
        let watched = exits.watched.len();
        let ready = match epoll.wait(&mut events, EpollTimeout::ZERO) {
            Ok(ready) => ready,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!("cannot read which leaders exited ({e})");
                return;
            }
        };
        for event in &events[..ready] {
            let pid = event.data() as i32;
            let Some(pidfd) = exits.watched.get(&pid) else {
                continue;
            };
            let reaped = loop {
                match waitid(
                    Id::PIDFd(pidfd.as_fd()),
                    WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
                ) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            match reaped {
                Ok(status) => {
                    if let Some(exit) = exit_of(status) {
                        batch.push(exit);
                        exits.watched.remove(&pid);
                    }
                    // Otherwise readable but not exited yet (not expected): looked at
                    // again next time.
                }
                // Not a child to wait for (not expected either): the full pass reaps it
                // if it is one.
                Err(e) => {
                    tracing::warn!(pid, "cannot reap the watched leader ({e})");
                    exits.watched.remove(&pid);
                }
            }
        }
        // A full batch may have more behind it; one that took nothing off the set would
        // only come back the same (the set lists a pidfd for as long as it is readable).
        if ready < events.len() || exits.watched.len() == watched {
            return;
        }
    }
}

/// The pid and exit of a child that ended (`None` for any other change).
fn exit_of(status: WaitStatus) -> Option<(i32, ExitStatus)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), ExitStatus::Code(code))),
        WaitStatus::Signaled(pid, signal, _core) => {
            Some((pid.as_raw(), ExitStatus::Signal(signal as i32)))
        }
        _ => None,
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
        assert!(
            reaper.reap(Pass::Full, |_, _| ()).is_none(),
            "held: put off"
        );
        drop(first);
        assert!(
            reaper.reap(Pass::Full, |_, _| ()).is_none(),
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
