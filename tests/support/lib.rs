//! The end-to-end harness: it runs the real `browserd` and `browserctl` binaries, starts fake
//! browser process trees as sessions, and checks the outcome in `/proc`, because "the kill is
//! done" means "no process of the session exists any more", not "the daemon said so".
//!
//! * [`DaemonGuard`] owns one daemon in a private temp dir and cleans up after it, even when a
//!   test panics (it prints the daemon's log then).
//! * [`Client`] speaks the wire protocol over a plain blocking Unix socket.
//! * [`Fixture`] describes a fake session tree (`sh`, `sleep`, `trap`, `setsid` only) and how
//!   to tell that all of it exists; [`procfs`] reads `/proc`.
//! * [`wait_until`] is the only way tests wait: a poll with a deadline and a clear message.
//!
//! The binaries are expected in the cargo target dir next to the test executable; build them
//! with `cargo build --workspace --bins` before `cargo test`.

pub mod bins;
pub mod cdp;
pub mod cgroups;
pub mod chromium;
pub mod client;
pub mod clone3;
pub mod command;
pub mod container;
pub mod ctl;
pub mod daemon;
pub mod events;
pub mod fixtures;
pub mod http;
pub mod peer;
pub mod procfs;
pub mod rng;
pub mod service;
pub mod tmpfs;
pub mod tracked;
pub mod wait;
pub mod yaml;

pub use bins::{beside_bin, browserctl_bin, browserd_bin, threads_bin};
pub use client::Client;
pub use ctl::run_ctl;
pub use daemon::{DaemonBuilder, DaemonGuard, PendingKill, Tree};
pub use fixtures::Fixture;
pub use procfs::{session_pids, ProcId, ProcInfo};
pub use wait::{wait_for, wait_until};

use browserd_proto::{SessionId, TerminateResult};

/// Asserts that a termination reported exactly `ids` as terminated and nothing as failed.
#[track_caller]
pub fn assert_terminated_exactly(result: &TerminateResult, ids: &[&SessionId]) {
    let mut expected: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
    expected.sort_unstable();
    let mut got: Vec<&str> = result.terminated.iter().map(String::as_str).collect();
    got.sort_unstable();
    assert_eq!(
        got, expected,
        "terminated ids differ from the expected ones (full result: {result:?})"
    );
    assert!(
        result.failed.is_empty(),
        "expected no failures, got {:?}",
        result.failed
    );
}

/// The failure entry for `id`, or a panic naming what the result held instead.
#[track_caller]
pub fn failure_for<'a>(result: &'a TerminateResult, id: &str) -> &'a browserd_proto::Failure {
    result
        .failed
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("no failure entry for `{id}` in {result:?}"))
}
