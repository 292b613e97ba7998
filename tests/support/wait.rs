//! Waiting with a deadline. Tests never sleep and hope: they poll a condition the kernel gives
//! no event for (a process tree appearing, a group emptying) and fail loudly on timeout.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often a condition is re-checked.
pub const POLL: Duration = Duration::from_millis(10);

/// Polls `cond` until it holds, or panics after `timeout` saying what was awaited.
#[track_caller]
pub fn wait_until(timeout: Duration, what: impl Display, mut cond: impl FnMut() -> bool) {
    wait_for(timeout, what, || cond().then_some(()))
}

/// Polls `probe` until it yields a value, or panics after `timeout` saying what was awaited.
#[track_caller]
pub fn wait_for<T>(
    timeout: Duration,
    what: impl Display,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}
