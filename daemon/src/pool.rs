//! The warm pool (`--warm N`): N default browsers launched ahead and kept ready, so that a
//! default browser launch is answered in milliseconds instead of a browser start-up. The
//! warm browsers themselves are registry entries in a hidden state (see `registry`): their
//! processes, dirs and cgroups are tracked, reaped and terminated like any session's. This
//! module keeps their number up: one task launches a replacement, one at a time, in the
//! background, whenever one is handed out or lost, and backs off when they keep failing.

use crate::context::Context;
use crate::error::Error;
use crate::launch;
use crate::registry::WarmCounts;
use browserd_proto::duration::as_millis;
use browserd_proto::{Launch, PoolStatus, SessionType};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A warm browser that lived at least this long before it died was not "dying at start":
/// its death does not make the pool back off.
const STABLE: Duration = Duration::from_secs(30);
/// The longest wait between two launches of a pool whose browsers keep failing.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub struct Pool {
    /// How many warm browsers to keep.
    target: usize,
    /// Wakes the refill task: a browser was handed out or lost.
    wake: Notify,
    tally: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    handed_out: u64,
    missed: u64,
    /// Warm browsers that failed to start or died young, one after another.
    failures: u32,
    /// While backing off: when the next launch is due.
    retry_at: Option<Instant>,
}

impl Pool {
    pub fn new(target: u32) -> Pool {
        Pool {
            target: target as usize,
            wake: Notify::new(),
            tally: Mutex::default(),
        }
    }

    fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a launch takes a warm browser: a pool is kept, and it asks for a browser with
    /// nothing of its own (no command, args, env or cwd, and no limits, which are set on the
    /// session's cgroup before its first process starts).
    pub fn serves(&self, request: &Launch) -> bool {
        self.target > 0
            && request.kind() == SessionType::Browser
            && request.command.is_none()
            && request.args.is_empty()
            && request.env.is_empty()
            && request.cwd.is_none()
            && request.memory_max.is_none()
            && request.pids_max.is_none()
    }

    /// A launch took a warm browser: launch its replacement.
    pub fn handed_out(&self) {
        let mut tally = self.tally();
        tally.handed_out += 1;
        tally.failures = 0;
        drop(tally);
        self.wake.notify_one();
    }

    /// A launch found no warm browser ready and started one of its own.
    pub fn missed(&self) {
        self.tally().missed += 1;
    }

    /// A warm browser ended before it was handed out, `after` its launch: replace it. One
    /// that died young counts as a failure; `deliberate` ends (a shutdown, a failed launch
    /// already counted by the refill task) do not count.
    pub fn lost(&self, after: Duration, deliberate: bool) {
        if !deliberate {
            let mut tally = self.tally();
            if after < STABLE {
                tally.failures += 1;
            } else {
                tally.failures = 0;
            }
        }
        self.wake.notify_one();
    }

    /// A warm browser could not be launched.
    fn failed(&self) {
        self.tally().failures += 1;
    }

    /// How long to wait before the next launch: nothing after one failure, then 1 s, 2 s,
    /// 4 s, … up to a minute while they keep failing.
    fn backoff(&self) -> Duration {
        let failures = self.tally().failures;
        match failures {
            0 | 1 => Duration::ZERO,
            n => Duration::from_secs(1u64 << (n - 2).min(6)).min(MAX_BACKOFF),
        }
    }

    pub fn status(&self, counts: WarmCounts) -> PoolStatus {
        let tally = self.tally();
        PoolStatus {
            target: u32::try_from(self.target).unwrap_or(u32::MAX),
            ready: u32::try_from(counts.ready).unwrap_or(u32::MAX),
            starting: u32::try_from(counts.starting).unwrap_or(u32::MAX),
            handed_out: tally.handed_out,
            missed: tally.missed,
            failures: tally.failures,
            retry_in_ms: tally
                .retry_at
                .map(|at| as_millis(at.saturating_duration_since(Instant::now())))
                .filter(|ms| *ms > 0),
        }
    }
}

/// Keeps the pool full for the daemon's life: launches one warm browser at a time while
/// fewer than the target are alive, then sleeps until one is handed out or lost.
pub async fn refill(ctx: Arc<Context>) {
    let pool = &ctx.pool;
    if pool.target == 0 {
        return;
    }
    loop {
        let counts = ctx.registry.warm_counts();
        if counts.ready + counts.starting >= pool.target {
            pool.wake.notified().await;
            continue;
        }
        let backoff = pool.backoff();
        if !backoff.is_zero() {
            pool.tally().retry_at = Some(Instant::now() + backoff);
            tracing::info!(
                failures = pool.tally().failures,
                "warm browsers keep failing; the next one in {backoff:?}"
            );
            tokio::time::sleep(backoff).await;
            pool.tally().retry_at = None;
        }
        match launch::warm(&ctx).await {
            Ok(id) => tracing::debug!(warm = %id, "warm browser ready"),
            Err(Error::ShuttingDown) => return,
            Err(e) => {
                pool.failed();
                tracing::warn!("cannot launch a warm browser: {e}");
            }
        }
    }
}
