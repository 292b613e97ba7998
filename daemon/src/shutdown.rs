//! Graceful shutdown on SIGTERM or SIGINT: tell the service manager, stop accepting,
//! terminate every session with force within the grace period, and return so `main` can
//! remove the socket and exit 0.
//! A second signal cuts the grace period short: SIGKILL at once. The handlers are installed
//! explicitly, so this works as PID 1 too, where default-action signals are ignored.

use crate::context::Context;
use crate::notify::Notifier;
use crate::terminate;
use browserd_proto::EndReason;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers; do this before serving so no early signal is lost.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Waits for the first signal, then shuts down; returns once every session is gone.
pub async fn run(
    ctx: Arc<Context>,
    mut signals: Signals,
    stop_accepting: watch::Sender<bool>,
    notifier: &Notifier,
) {
    let name = signals.next().await;
    tracing::info!("{name} received: shutting down");
    notifier.stopping(&ctx.registry.counts());
    ctx.registry.begin_shutdown();
    stop_accepting.send_replace(true);
    let ids = ctx.registry.live_ids(None);
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
        name = signals.next() => {
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
