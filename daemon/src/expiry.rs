//! The expiry task: sleeps until the registry's earliest deadline (a lease, a session TTL,
//! or the end of an exited session's listing), acts on what is due, and is woken early when
//! an earlier deadline is added. No polling.

use crate::daemon::Daemon;
use crate::registry::Expiry;
use crate::terminate;
use std::sync::Arc;
use std::time::Instant;

pub async fn run(daemon: Arc<Daemon>) {
    loop {
        let (due, next) = daemon.registry.take_due(Instant::now());
        for expiry in due {
            match expiry {
                Expiry::Lease(lease) => daemon.registry.expire_lease(&lease),
                Expiry::Ttl(id) => {
                    tracing::info!(session = %id, "TTL reached; terminating with force");
                    terminate::start_detached(&daemon, &id, daemon.config.grace);
                }
                Expiry::Forget(id) => daemon.registry.forget(&id),
            }
        }
        match next {
            Some(deadline) => tokio::select! {
                () = tokio::time::sleep_until(deadline.into()) => {}
                () = daemon.registry.expiry_changed.notified() => {}
            },
            None => daemon.registry.expiry_changed.notified().await,
        }
    }
}
