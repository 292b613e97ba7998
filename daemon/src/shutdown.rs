//! The daemon's own signals. SIGHUP reloads (see `reload`). SIGTERM or SIGINT shut down:
//! tell the service manager, fail every queued launch, stop accepting, terminate every
//! session and warm browser with force within the grace period, and return so `main` can
//! remove the socket and exit 0. A second SIGTERM or
//! SIGINT cuts the grace period short: SIGKILL at once. The handlers are installed
//! explicitly, so this works as PID 1 too, where default-action signals are ignored.

use crate::context::Context;
use crate::terminate;
use browserd_proto::EndReason;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers; do this before serving so no early signal is lost.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next_stop(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Reloads on each SIGHUP until the first SIGTERM or SIGINT, then shuts down; returns once
/// every session is gone.
pub async fn run(ctx: Arc<Context>, mut signals: Signals) {
    let name = loop {
        tokio::select! {
            _ = signals.term.recv() => break "SIGTERM",
            _ = signals.int.recv() => break "SIGINT",
            _ = signals.hup.recv() => {
                tracing::info!("SIGHUP received: reloading");
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    // A refused reload is logged where it is refused; the daemon serves on.
                    let _ = crate::reload::request(&ctx).await;
                });
            }
        }
    };
    tracing::info!("{name} received: shutting down");
    ctx.notifier.stopping(&ctx.registry.counts());
    ctx.registry.begin_shutdown();
    ctx.server.stop();
    // Launches are refused from here on (queued ones have failed). A leader being spawned
    // (off the event loop) registers before the sessions to end are chosen, and no spawn
    // starts after this (see `launch`): no session or warm browser can appear later.
    let registering = ctx.clone();
    let _ = tokio::task::spawn_blocking(move || drop(registering.reaper.hold_registering())).await;
    let ids = ctx.registry.live_and_warm_ids();
    if !ids.is_empty() {
        tracing::info!(sessions = ids.len(), "terminating every session");
    }
    let graceful = terminate::terminate_all(
        &ctx,
        ids.clone(),
        true,
        ctx.config.grace(),
        EndReason::Shutdown,
    );
    tokio::select! {
        results = graceful => report(results),
        name = signals.next_stop() => {
            tracing::warn!("{name} received again: killing every session now");
            let now = terminate::terminate_all(&ctx, ids, true, Duration::ZERO, EndReason::Shutdown);
            report(now.await);
        }
    }
}

fn report(results: Vec<Result<browserd_proto::SessionId, browserd_proto::Failure>>) {
    for failure in results.into_iter().filter_map(Result::err) {
        tracing::error!(session = %failure.id, code = %failure.code, "{}", failure.message);
    }
}
