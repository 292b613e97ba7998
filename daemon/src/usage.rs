//! What sessions use (processes, memory, CPU), measured on demand and kept.
//!
//! Measuring a session without a cgroup reads every one of its processes, and its memory
//! (PSS) makes the kernel walk each process's page tables: far more than a listing should
//! cost, and a listing is what a dashboard polls. So a listing answers from the last
//! measurement and says how old it is; a session never measured is measured before the
//! listing is answered; and a listing that meets figures older than `FRESH` has every live
//! session measured again in the background, one measurement at a time, for the next
//! listing. Nothing is measured while nobody lists.

use crate::context::Context;
use crate::scanner::Usage;
use browserd_proto::SessionId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Figures older than this are measured again (in the background) when a listing meets
/// them.
pub const FRESH: Duration = Duration::from_secs(2);

/// One session's figures and when they were measured.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub usage: Usage,
    pub at: Instant,
}

#[derive(Default)]
pub struct UsageCache {
    figures: Mutex<HashMap<SessionId, Measured>>,
    /// A background measurement is under way.
    measuring: AtomicBool,
}

impl UsageCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Measured>> {
        self.figures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `read` on the figures kept, under the cache's lock (which may be held while the
    /// registry's is taken, never the other way round).
    pub fn read<T>(&self, read: impl FnOnce(&HashMap<SessionId, Measured>) -> T) -> T {
        read(&self.lock())
    }

    /// Drops a session's figures (it ended).
    pub fn forget(&self, id: &SessionId) {
        self.lock().remove(id);
    }

    fn store(
        &self,
        measured: HashMap<SessionId, Usage>,
        at: Instant,
        live: impl Fn(&SessionId) -> bool,
    ) {
        let mut figures = self.lock();
        for (id, usage) in measured {
            // A session that ended while it was measured is not kept.
            if live(&id) {
                figures.insert(id, Measured { usage, at });
            }
        }
    }
}

/// Makes sure the cache has figures of `ids` (live sessions) for a listing to read: see
/// the module's doc.
pub async fn prepare(ctx: &Arc<Context>, ids: &[SessionId]) {
    let now = Instant::now();
    let (missing, stale) = {
        let figures = ctx.usage.lock();
        let mut missing = Vec::new();
        let mut stale = false;
        for id in ids {
            match figures.get(id) {
                Some(measured) => stale |= now.duration_since(measured.at) >= FRESH,
                None => missing.push(id.clone()),
            }
        }
        (missing, stale)
    };
    if !missing.is_empty() {
        let at = Instant::now();
        let measured = ctx.members.usage(&ctx.scanner, missing).await;
        ctx.usage.store(measured, at, |id| ctx.registry.is_live(id));
    }
    if stale {
        measure_in_background(ctx);
    }
}

/// Measures every live session again, unless that is already under way.
fn measure_in_background(ctx: &Arc<Context>) {
    if ctx.usage.measuring.swap(true, Ordering::AcqRel) {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let live = ctx.registry.live_ids(None);
        let at = Instant::now();
        let measured = ctx.members.usage(&ctx.scanner, live).await;
        ctx.usage.store(measured, at, |id| ctx.registry.is_live(id));
        ctx.usage.measuring.store(false, Ordering::Release);
    });
}
