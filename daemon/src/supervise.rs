//! The loops that keep sessions' state true, started once at startup: the reaper (SIGCHLD →
//! reap → record), the gone checker (a reaped leader → proven gone → finished), the
//! process-table scanner, the expiry loop (leases, TTLs, the end of an exited session's
//! listing) and the termination driver.

use crate::context::Context;
use crate::procs;
use crate::registry::Expiry;
use crate::scanner::RootOwner;
use crate::terminate;
use browserd_proto::{EndReason, SessionId};
use std::sync::Arc;
use std::time::Instant;
use tokio::signal::unix::{signal, SignalKind};

/// Starts every loop. The SIGCHLD stream is registered before this returns, so no child's
/// exit can be missed.
pub fn start(ctx: &Arc<Context>) -> std::io::Result<()> {
    let sigchld = signal(SignalKind::child())?;
    tokio::spawn(reap(ctx.clone(), sigchld));
    tokio::spawn(check_gone(ctx.clone()));
    let owner_ctx = ctx.clone();
    let root_owner: Arc<RootOwner> = Arc::new(move |root| {
        let marker = procs::read_env_var(root.pid, browserd_proto::SESSION_ENV)
            .and_then(|value| value.parse().ok());
        let _reap = owner_ctx.reaper.hold();
        owner_ctx.registry.owner_for(root, marker)
    });
    tokio::spawn(ctx.scanner.clone().run(root_owner));
    // A first refresh lists /proc once, so later ones only meet newcomers.
    ctx.scanner.kick();
    tokio::spawn(expire(ctx.clone()));
    tokio::spawn(terminate::drive(ctx.clone()));
    Ok(())
}

/// Reaps every exited child on each SIGCHLD and records leaders' exits.
async fn reap(ctx: Arc<Context>, mut sigchld: tokio::signal::unix::Signal) {
    loop {
        let reaped = ctx.reaper.reap_all(|batch| {
            ctx.registry.record_reaped(batch);
            !batch.is_empty()
        });
        if reaped {
            ctx.check_gone();
        }
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}

/// Finishes every session whose leader is reaped and which is proven gone; a session whose
/// leader exited on its own but left processes behind has them terminated, the way systemd
/// stops a service whose main process exited.
async fn check_gone(ctx: Arc<Context>) {
    loop {
        ctx.gone_check_asked().await;
        let candidates = ctx.registry.gone_candidates();
        if candidates.is_empty() {
            continue;
        }
        let gone = ctx.scanner.confirm_gone(candidates.clone()).await;
        for id in candidates {
            if gone.contains(&id) {
                finish(&ctx, &id).await;
            } else if ctx.registry.take_left_behind(&id) {
                tracing::info!(session = %id, "leader exited; terminating what it left behind");
                terminate::start_forced(&ctx, &id, ctx.config.grace(), EndReason::Exited);
            }
        }
    }
}

/// Marks a session exited, removes its dirs, then settles its termination (if any), so a
/// kill's response is only sent once nothing of the session is left.
async fn finish(ctx: &Arc<Context>, id: &SessionId) {
    let Some(finished) = ctx.registry.finish(id) else {
        return;
    };
    ctx.scanner.kick();
    if !finished.owned_dirs.is_empty() {
        let dirs = finished.owned_dirs;
        let removal = tokio::task::spawn_blocking(move || {
            for dir in dirs {
                crate::dirs::remove_dir(&dir);
            }
        });
        let _ = removal.await;
    }
    if let Some(termination) = finished.termination {
        termination.settle(crate::termination::Outcome::Terminated);
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
