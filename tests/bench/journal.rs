//! What the journal's disk syncs cost a launch: the same N launches (one connection, in
//! sequence) against a second daemon whose state dir, journal included, is on tmpfs, where
//! `fdatasync` returns at once. Its time per launch against the main daemon's (state dir on
//! the temp dir's filesystem) is what durability costs there.

use crate::baseline::GONE_TIMEOUT;
use crate::cleanup;
use crate::options::Options;
use crate::procs;
use crate::scenarios::{call, launch_many, wait_trees};
use browserd_proto::{BulkTerminate, Request, TerminateResult};
use browserd_tests::tmpfs::{is_tmpfs, TmpfsDir};
use browserd_tests::{DaemonGuard, Fixture, ProcId};
use std::path::Path;
use std::time::Instant;

/// Launches `opts.sessions` sessions on a daemon whose state dir is on tmpfs; returns the
/// launches per second, having terminated them all again.
pub fn launch_on_tmpfs(opts: &Options) -> Result<f64, String> {
    let shm = TmpfsDir::create().map_err(|e| format!("no tmpfs for the journal: {e}"))?;
    cleanup::remove_on_abort(shm.path());
    let d = shm
        .hold_state_of(DaemonGuard::builder())
        .max_sessions(opts.sessions as u32 + 16)
        .start();
    cleanup::remove_on_abort(d.dir());
    if !is_tmpfs(d.state_dir()) {
        return Err(format!("{} is not on tmpfs", d.state_dir().display()));
    }
    let polite = Fixture::polite();
    let mut client = d.client();
    let start = Instant::now();
    let sessions = launch_many(&mut client, &polite, opts.sessions, |_| None)?;
    let rate = opts.sessions as f64 / start.elapsed().as_secs_f64();
    let ids: Vec<ProcId> = wait_trees(&sessions, &polite)?.concat();
    let bulk = BulkTerminate {
        all: Some(true),
        force: Some(true),
        grace_ms: Some(GONE_TIMEOUT.as_millis() as u64),
        ..Default::default()
    };
    let result: TerminateResult = call(&mut client, &Request::BulkTerminate(bulk))?;
    if !result.failed.is_empty() {
        return Err(format!(
            "tmpfs daemon: {} session(s) failed to terminate, first: {:?}",
            result.failed.len(),
            result.failed[0]
        ));
    }
    procs::wait_gone(&ids, GONE_TIMEOUT, false)
        .map_err(|left| format!("tmpfs daemon: {left} process(es) never went away"))?;
    Ok(rate)
}

/// The filesystem `path` is on, as `/proc/self/mounts` names it: "TYPE on DEVICE".
pub fn filesystem(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point)
                .then(|| (point.len(), format!("{kind} on {device}")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".to_owned(), |(_, fs)| fs)
}
