//! Pressure: how loaded the daemon and its host are, and whether a launch sent now would be
//! admitted (what a load balancer asks before sending work). `status` reports it and
//! `GET /pressure` serves it.
//!
//! Host CPU use is the change of the kernel's counters between two samples, so it is
//! sampled when asked, never on a timer: an idle daemon reads nothing. A caller that asks
//! often (a load balancer every few seconds) gets the use since its previous question; one
//! that asks rarely gets a fresh 200 ms window. The daemon takes a first sample at start.

use crate::context::Context;
use crate::server::Phase;
use browserd_proto::Pressure;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};
use sysinfo::System;

/// The shortest window CPU use is measured over (sysinfo's minimum on Linux: the kernel's
/// counters move in clock ticks).
const MIN_WINDOW: Duration = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL;
/// A previous sample older than this says nothing about now; a fresh window is measured.
const STALE: Duration = Duration::from_secs(10);

/// The host's counters, sampled by whoever asks. The host is one per process, and so is
/// this.
static HOST: LazyLock<Mutex<Sampler>> = LazyLock::new(|| Mutex::new(Sampler::new()));

struct Sampler {
    system: Option<System>,
    sampled_at: Option<Instant>,
    cpu_percent: f64,
}

/// Host use at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct HostUse {
    cpu_percent: f64,
    memory_used_bytes: u64,
    memory_total_bytes: u64,
}

impl Sampler {
    fn new() -> Sampler {
        let system = System::new()
            .inspect_err(|e| tracing::warn!("cannot read the host's CPU and memory use: {e}"))
            .ok();
        Sampler {
            system,
            sampled_at: None,
            cpu_percent: 0.0,
        }
    }

    /// Takes a CPU sample; returns the use since the previous one.
    fn sample_cpu(&mut self, now: Instant) -> f64 {
        if let Some(system) = &mut self.system {
            system.refresh_cpu_usage();
            self.cpu_percent = f64::from(system.global_cpu_usage());
        }
        self.sampled_at = Some(now);
        self.cpu_percent
    }

    fn memory(&mut self) -> (u64, u64) {
        let Some(system) = &mut self.system else {
            return (0, 0);
        };
        system.refresh_memory();
        let total = system.total_memory();
        (total.saturating_sub(system.available_memory()), total)
    }
}

fn lock() -> std::sync::MutexGuard<'static, Sampler> {
    HOST.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes a first CPU sample, so that whoever asks within [`STALE`] of the start is not
/// kept waiting for a window.
pub fn prime() {
    lock().sample_cpu(Instant::now());
}

/// The host's CPU and memory use now.
async fn host_use() -> HostUse {
    let now = Instant::now();
    let age = lock().sampled_at.map(|at| now.duration_since(at));
    let cpu_percent = match age {
        Some(age) if age < MIN_WINDOW => lock().cpu_percent,
        Some(age) if age < STALE => lock().sample_cpu(now),
        _ => {
            lock().sample_cpu(now);
            tokio::time::sleep(MIN_WINDOW).await;
            lock().sample_cpu(Instant::now())
        }
    };
    let (memory_used_bytes, memory_total_bytes) = lock().memory();
    HostUse {
        cpu_percent,
        memory_used_bytes,
        memory_total_bytes,
    }
}

/// The daemon's pressure now.
pub async fn pressure(ctx: &Context) -> Pressure {
    let host = host_use().await;
    let counts = ctx.registry.counts();
    let running = counts.starting + counts.running + counts.terminating;
    let queued = u32::try_from(ctx.registry.queue_depth()).unwrap_or(u32::MAX);
    let max_sessions = ctx.config.max_sessions;
    let refusal = refusal(
        ctx.server.phase(),
        (running, max_sessions),
        (queued, ctx.config.max_queue),
    );
    Pressure {
        running,
        queued,
        max_sessions,
        max_queue: ctx.config.max_queue,
        cpu_percent: round(host.cpu_percent),
        memory_percent: match host.memory_total_bytes {
            0 => 0.0,
            total => round(host.memory_used_bytes as f64 * 100.0 / total as f64),
        },
        memory_used_bytes: host.memory_used_bytes,
        memory_total_bytes: host.memory_total_bytes,
        available: refusal.is_none(),
        reason: refusal.as_ref().map(|(reason, _)| (*reason).to_owned()),
        message: refusal.map(|(_, message)| message),
    }
}

/// Why a launch sent now would be refused, as a code and a sentence; `None` if it would be
/// admitted. Mirrors the registry's admission: a shutting-down daemon takes nothing, and
/// `max_sessions` counts every live session.
fn refusal(
    phase: Phase,
    (running, max_sessions): (u32, u32),
    (queued, max_queue): (u32, u32),
) -> Option<(&'static str, String)> {
    if phase == Phase::Stopping {
        return Some((
            "shutting_down",
            "browserd is shutting down and takes no new sessions".into(),
        ));
    }
    // At capacity, a launch still waits its turn while the queue has room.
    if running >= max_sessions && queued >= max_queue {
        return Some((
            "capacity",
            match max_queue {
                0 => format!("{running} sessions are live and max_sessions is {max_sessions}"),
                _ => format!(
                    "{running} sessions are live (max_sessions {max_sessions}) and the launch \
                     queue is full ({queued} of {max_queue} waiting)"
                ),
            },
        ));
    }
    None
}

/// One decimal is all a percentage of host use can honestly claim.
fn round(percent: f64) -> f64 {
    (percent * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_is_admitted_below_capacity_only() {
        assert!(refusal(Phase::Serving, (1, 2), (0, 0)).is_none());
        let (reason, message) = refusal(Phase::Serving, (2, 2), (0, 0)).unwrap();
        assert_eq!(reason, "capacity");
        assert!(message.contains("max_sessions is 2"), "{message}");
        let (reason, _) = refusal(Phase::Stopping, (0, 2), (0, 0)).unwrap();
        assert_eq!(reason, "shutting_down");
        assert!(
            refusal(Phase::Draining, (0, 2), (0, 0)).is_none(),
            "a reload parks launches, it does not refuse them"
        );
        assert!(
            refusal(Phase::Serving, (2, 2), (2, 3)).is_none(),
            "at capacity a launch still queues while the queue has room"
        );
        let (reason, message) = refusal(Phase::Serving, (2, 2), (3, 3)).unwrap();
        assert_eq!(reason, "capacity");
        assert!(message.contains("queue is full (3 of 3"), "{message}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn host_use_is_measured_over_a_window() {
        let first = host_use().await;
        assert!((0.0..=100.0).contains(&first.cpu_percent), "{first:?}");
        assert!(first.memory_total_bytes > 0);
        assert!(first.memory_used_bytes <= first.memory_total_bytes);
        let started = Instant::now();
        let again = host_use().await;
        assert!(
            started.elapsed() < MIN_WINDOW,
            "a recent sample is reused, not waited for"
        );
        assert!((0.0..=100.0).contains(&again.cpu_percent));
    }
}
