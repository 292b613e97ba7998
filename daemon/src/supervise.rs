//! The loops that keep sessions' state true, started once at startup: the reaper (SIGCHLD →
//! reap → record), the gone checker (a reaped leader → proven gone → finished), the
//! process-table scanner, the expiry loop (leases, TTLs, the end of an exited session's
//! listing), the termination driver and the warm pool's refill.

use crate::context::Context;
use crate::members::HeldChildren;
use crate::procs;
use crate::reaper::Pass;
use crate::registry::Expiry;
use crate::scanner::{Daemon, DaemonChildren, RootOwner};
use crate::terminate;
use browserd_proto::{EndReason, ExitStatus, SessionId};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How soon a gone check that met an undecided process looks again.
const UNDECIDED_RETRY: Duration = Duration::from_millis(10);
/// How soon a gone check that left an adopted session looks again, at first; each check
/// that leaves one again and proves nothing gone waits twice as long, up to
/// [`ADOPTED_RETRY_MAX`]. An adopted session's processes are not the daemon's children:
/// their exits send it no SIGCHLD, and whoever reaps them now (init, or the manager that
/// restarted the daemon) tells it nothing.
const ADOPTED_RETRY_MIN: Duration = Duration::from_millis(2);
/// The longest wait between such checks: a terminating session is swept this often anyway.
const ADOPTED_RETRY_MAX: Duration = Duration::from_millis(250);
/// How long after a SIGCHLD the full pass of reaping comes: what only it reaps (a process a
/// leader started beside itself, a leader no pidfd watches) waits that long, and the kill
/// that the quick pass finished is answered without it.
const FULL_PASS_DELAY: Duration = Duration::from_millis(5);
use tokio::signal::unix::{signal, SignalKind};

/// Starts every loop. The SIGCHLD stream is registered before this returns, so no child's
/// exit can be missed.
pub fn start(ctx: &Arc<Context>) -> std::io::Result<()> {
    // Registered here, before any child can exit unnoticed; a restarted reaper registers
    // its own.
    let mut sigchld = Some(signal(SignalKind::child())?);
    let reaper_ctx = ctx.clone();
    keep_running("the reaper", move || {
        let ctx = reaper_ctx.clone();
        let sigchld = sigchld.take();
        async move {
            let sigchld = match sigchld {
                Some(sigchld) => sigchld,
                None => match signal(SignalKind::child()) {
                    Ok(sigchld) => sigchld,
                    Err(e) => return tracing::error!("cannot watch for child exits: {e}"),
                },
            };
            reap(ctx, sigchld).await
        }
    });
    let held_ctx = ctx.clone();
    let held_children: Arc<HeldChildren> = Arc::new(move |sessions, look| {
        if held_ctx.registry.any_adopted(sessions) {
            return look(None);
        }
        with_daemon_children(&held_ctx, sessions, look)
    });
    let gone_ctx = ctx.clone();
    keep_running("the gone checker", move || {
        check_gone(gone_ctx.clone(), held_children.clone())
    });
    let owner_ctx = ctx.clone();
    let root_owner: Arc<RootOwner> = Arc::new(move |process, root| {
        // Outside the daemon's own tree only adopted sessions can have processes; without
        // any, nothing there is read.
        if !root.child_of_daemon && !owner_ctx.registry.has_adopted() {
            return procs::Owner::Foreign;
        }
        let marker = procs::read_marker(process.pid, browserd_proto::SESSION_ENV);
        // A leader being spawned is registered before it is judged.
        let _reap = owner_ctx.reaper.hold_registering();
        let owner = owner_ctx.registry.owner_for(process, &marker, root);
        tracing::debug!(
            pid = process.pid,
            ppid = process.ppid,
            pgid = process.pgid,
            ?marker,
            ?root,
            ?owner,
            "attributed"
        );
        owner
    });
    let children_ctx = ctx.clone();
    let children: Arc<DaemonChildren> = Arc::new(move |sessions: &[SessionId]| {
        // Sessions adopted after a restart are not the daemon's descendants.
        if children_ctx.registry.has_adopted() {
            return None;
        }
        with_daemon_children(&children_ctx, sessions, |children| children)
    });
    let daemon = Arc::new(Daemon {
        root_owner,
        children,
    });
    let scanner = ctx.scanner.clone();
    keep_running("the process scanner", move || {
        scanner.clone().run(daemon.clone())
    });
    // A first refresh lists /proc once, so later ones only meet newcomers.
    ctx.scanner.kick();
    let expiry_ctx = ctx.clone();
    keep_running("the expiry loop", move || expire(expiry_ctx.clone()));
    let driver_ctx = ctx.clone();
    keep_running("the termination driver", move || {
        terminate::drive(driver_ctx.clone())
    });
    let pool_ctx = ctx.clone();
    keep_running("the warm pool", move || {
        crate::pool::refill(pool_ctx.clone())
    });
    for (id, pidfd) in ctx.registry.adopted_leaders() {
        tokio::spawn(watch_adopted(ctx.clone(), id, pidfd));
    }
    Ok(())
}

/// The daemon's children that may hold `sessions`' processes (of the main thread and of the
/// threads that spawned their leaders; sessions' unreaped leaders left out), given to `look`
/// with reaping held off until it returns: none leaves the list meanwhile, and each pid stays
/// its process's. `None` where they cannot be read.
fn with_daemon_children<R>(
    ctx: &Context,
    sessions: &[SessionId],
    look: impl FnOnce(Option<Vec<i32>>) -> R,
) -> R {
    let spawners = ctx.registry.spawner_threads(sessions);
    let _reap = ctx.reaper.hold();
    match procs::daemon_children(spawners.as_deref()) {
        Ok(children) => look(Some(ctx.registry.not_leaders(children))),
        Err(e) => {
            tracing::debug!("cannot read the daemon's children: {e}");
            look(None)
        }
    }
}

/// Waits for an adopted leader (not the daemon's child, so no SIGCHLD) to exit: its pidfd
/// becomes readable then.
async fn watch_adopted(ctx: Arc<Context>, id: SessionId, pidfd: Arc<std::os::fd::OwnedFd>) {
    // SAFETY: the Arc keeps the pidfd open, and the same fd, for the AsyncFd's whole life.
    let watched = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            SharedFd(pidfd),
            tokio::io::Interest::READABLE,
        )
    };
    match watched {
        Ok(watched) => {
            let _ = watched.readable().await;
        }
        Err(e) => tracing::warn!(session = %id, "cannot watch the adopted leader: {e}"),
    }
    ctx.registry.record_adopted_exit(&id);
    ctx.check_gone();
}

/// Runs a loop for the daemon's life, starting it again if it panics: a bug met in one pass
/// must not leave sessions unwatched (or requests unanswered) for good. A loop that keeps
/// state rebuilds it when it starts (the termination driver takes up every session that is
/// terminating).
fn keep_running<F, Fut>(name: &'static str, mut make: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match tokio::spawn(make()).await {
                Err(e) if e.is_panic() => {
                    tracing::error!("{name} panicked; starting it again");
                }
                Ok(()) | Err(_) => return,
            }
        }
    });
}

/// A shared descriptor, as tokio's readiness wants it.
struct SharedFd(Arc<std::os::fd::OwnedFd>);

impl std::os::fd::AsRawFd for SharedFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// Reaps every exited child on each SIGCHLD and records leaders' exits: a quick pass at
/// once (a watched leader's pidfd is readable before its SIGCHLD is sent, so the pass that
/// SIGCHLD starts finds it), and a full pass `FULL_PASS_DELAY` later (see `reaper`), which
/// every SIGCHLD that came meanwhile shares.
async fn reap(ctx: Arc<Context>, mut sigchld: tokio::signal::unix::Signal) {
    // Children may have exited before the loop began.
    let mut full_due = Some(Instant::now());
    loop {
        if ctx.reaper.reap(Pass::Quick, |batch, helpers| {
            record_reaped(&ctx, batch, helpers)
        }) == Some(true)
        {
            ctx.check_gone();
        }
        if full_due.is_some_and(|due| due <= Instant::now()) {
            // `None`: the lock is held; the pass stays due, and is tried again when the lock
            // is let go.
            if let Some(reaped) = ctx.reaper.reap(Pass::Full, |batch, helpers| {
                record_reaped(&ctx, batch, helpers)
            }) {
                full_due = None;
                if reaped {
                    ctx.check_gone();
                }
            }
        }
        let timer = full_due.filter(|&due| due > Instant::now());
        tokio::select! {
            signalled = sigchld.recv() => {
                if signalled.is_none() {
                    return;
                }
                full_due.get_or_insert_with(|| Instant::now() + FULL_PASS_DELAY);
            }
            // The lock was held: whoever held it says when it let go.
            () = ctx.reaper.retry_wanted() => {}
            () = tokio::time::sleep_until(timer.unwrap_or_else(Instant::now).into()), if timer.is_some() => {}
        }
    }
}

/// Records a batch of reaped children, and the daemon's helpers reaped with it (with the
/// reap lock held); whether there were any of the first.
fn record_reaped(ctx: &Context, batch: &[(i32, ExitStatus)], helpers: &[i32]) -> bool {
    let pids = || {
        batch
            .iter()
            .map(|&(pid, _)| pid)
            .chain(helpers.iter().copied())
    };
    ctx.scanner.reaped(pids());
    ctx.members.reaped(pids());
    let leaders = ctx.registry.record_reaped(batch);
    ctx.metrics.orphans_reaped((batch.len() - leaders) as u64);
    !batch.is_empty()
}

/// Finishes every session whose leader is reaped and which is proven gone; a session whose
/// leader exited on its own but left processes behind has them terminated, the way systemd
/// stops a service whose main process exited.
async fn check_gone(ctx: Arc<Context>, children: Arc<HeldChildren>) {
    let mut adopted_retry = AdoptedRetry::default();
    loop {
        ctx.gone_check_asked().await;
        let candidates = ctx.registry.gone_candidates();
        if candidates.is_empty() {
            adopted_retry = AdoptedRetry::default();
            continue;
        }
        let confirmed = ctx
            .members
            .confirm_gone(&ctx.scanner, candidates.clone(), &children)
            .await;
        if confirmed.retry {
            // A process was caught in the middle of `execve` (or a cgroup of one could not be
            // read); it is readable in a moment.
            check_gone_after(&ctx, UNDECIDED_RETRY);
        }
        // A set: a kill-all's checks have a thousand candidates and as many proven gone.
        let proven: HashSet<&SessionId> = confirmed.gone.iter().collect();
        let (gone, left): (Vec<SessionId>, Vec<SessionId>) =
            candidates.into_iter().partition(|id| proven.contains(id));
        // Nothing will say when the rest of an adopted session is reaped elsewhere.
        if let Some(delay) = adopted_retry.after(ctx.registry.any_adopted(&left), !gone.is_empty())
        {
            check_gone_after(&ctx, delay);
        }
        finish(&ctx, gone).await;
        for id in left {
            if ctx.registry.take_left_behind(&id) {
                tracing::info!(session = %id, "leader exited; terminating what it left behind");
                terminate::start_forced(&ctx, &id, ctx.config.grace(), EndReason::Exited);
            }
        }
    }
}

/// Asks for another gone check `delay` from now.
fn check_gone_after(ctx: &Arc<Context>, delay: Duration) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        ctx.check_gone();
    });
}

/// When a gone check that left an adopted session looks again: soon, and less and less
/// often while nothing more is proven gone.
struct AdoptedRetry {
    next: Duration,
}

impl Default for AdoptedRetry {
    fn default() -> Self {
        AdoptedRetry {
            next: ADOPTED_RETRY_MIN,
        }
    }
}

impl AdoptedRetry {
    /// After a check: how long until the next, if it left an adopted session
    /// (`left_adopted`); `proved` is whether it proved any session gone.
    fn after(&mut self, left_adopted: bool, proved: bool) -> Option<Duration> {
        if !left_adopted {
            *self = AdoptedRetry::default();
            return None;
        }
        if proved {
            *self = AdoptedRetry::default();
        }
        let delay = self.next;
        self.next = (self.next * 2).min(ADOPTED_RETRY_MAX);
        Some(delay)
    }
}

/// Marks sessions exited, removes their dirs (all of them in one job off the event loop),
/// then settles their terminations, so a kill's response is only sent once nothing of the
/// session is left.
async fn finish(ctx: &Arc<Context>, ids: Vec<SessionId>) {
    let mut finished = Vec::with_capacity(ids.len());
    for id in ids {
        let oom_killed = ctx.members.oom_killed(&id);
        if let Some(done) = ctx.registry.finish(&id, oom_killed) {
            if oom_killed {
                ctx.metrics.session_oom_killed();
            }
            ctx.pipes.close(&id);
            ctx.usage.forget(&id);
            finished.push((id, done));
        }
    }
    if finished.is_empty() {
        return;
    }
    // The table forgets what exited, off the request path; sessions in cgroups need no
    // table.
    if finished
        .iter()
        .any(|(id, _)| ctx.members.cgroup(id).is_none())
    {
        ctx.scanner.kick();
    }
    let cleanup: Vec<(SessionId, Vec<std::path::PathBuf>)> = finished
        .iter_mut()
        .map(|(id, done)| (id.clone(), std::mem::take(&mut done.owned_dirs)))
        .collect();
    // Sessions with neither dirs nor a cgroup have nothing to remove: no hop to the blocking
    // pool for them (a kill's answer waits for it).
    if cleanup
        .iter()
        .any(|(id, dirs)| !dirs.is_empty() || ctx.members.cgroup(id).is_some())
    {
        let cleanup_ctx = ctx.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for (id, dirs) in cleanup {
                cleanup_ctx.members.release(&id);
                for dir in dirs {
                    crate::dirs::remove_dir(&dir);
                }
            }
        })
        .await;
    }
    for (_, done) in finished {
        if let Some(after) = done.warm_for {
            // A shutdown's or a failed launch's end is no sign the pool should back off.
            let deliberate = done.termination.as_ref().is_some_and(|t| {
                matches!(t.reason(), EndReason::Shutdown | EndReason::LaunchFailed)
            });
            if let Some(termination) = &done.termination {
                termination.settle(crate::termination::Outcome::Terminated);
            }
            ctx.pool.lost(after, deliberate);
            continue;
        }
        if let Some(termination) = done.termination {
            if termination.settle(crate::termination::Outcome::Terminated) {
                ctx.metrics.terminated(Ok(termination.age()));
            }
        }
    }
}

/// Sleeps until the registry's earliest deadline, acts on what is due, and is woken early
/// when an earlier deadline is added. No polling.
async fn expire(ctx: Arc<Context>) {
    loop {
        let (due, next) = ctx.registry.take_due(Instant::now());
        for expiry in due {
            match expiry {
                Expiry::Lease(lease) => ctx.registry.expire_lease(&lease),
                Expiry::Ttl(id) => {
                    tracing::info!(session = %id, "TTL reached; terminating with force");
                    terminate::start_forced(&ctx, &id, ctx.config.grace(), EndReason::TtlExpired);
                }
                Expiry::Forget(id) => ctx.registry.forget(&id),
            }
        }
        match next {
            Some(deadline) => tokio::select! {
                () = tokio::time::sleep_until(deadline.into()) => {}
                () = ctx.registry.expiry_changed() => {}
            },
            None => ctx.registry.expiry_changed().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adopted_session_left_is_looked_at_again_sooner_while_others_go() {
        let mut retry = AdoptedRetry::default();
        assert_eq!(retry.after(false, true), None, "nothing adopted left");
        // Checks that prove nothing back off, up to the cap.
        let waits: Vec<Duration> = (0..10).filter_map(|_| retry.after(true, false)).collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [2, 4, 8, 16, 32, 64, 128, 250, 250, 250]);
        // A check that proves some session gone starts over: a bulk kill of adopted sessions
        // keeps being looked at every few milliseconds until its last one is gone.
        assert_eq!(retry.after(true, true), Some(ADOPTED_RETRY_MIN));
        assert_eq!(retry.after(true, false), Some(ADOPTED_RETRY_MIN * 2));
        // Nothing adopted left: the next one starts over too.
        assert_eq!(retry.after(false, false), None);
        assert_eq!(retry.after(true, false), Some(ADOPTED_RETRY_MIN));
    }
}
