//! The polite kill-all against the baseline, paired: each pair starts N trees under browserd
//! and N under the baseline, then kills one set right after the other, which one first
//! alternating from pair to pair. The two kills of a pair run seconds apart instead of
//! the half-minute between the baseline's scenarios and browserd's in a repeat, so what the
//! machine is doing meanwhile (a shared VM's neighbours) weighs on both alike.

use crate::baseline::{Baseline, GONE_TIMEOUT};
use crate::cleanup;
use crate::procs;
use crate::scenarios::{launch_many, terminate, wait_trees};
use crate::stats::ms;
use browserd_proto::BulkTerminate;
use browserd_tests::{DaemonGuard, Fixture};
use nix::sys::signal::Signal;
use std::path::Path;
use std::time::{Duration, Instant};

/// Pairs per repeat.
pub const PAIRS: usize = 2;

/// Quiet time before each kill, as the other scenarios give theirs.
const SETTLE: Duration = Duration::from_millis(300);

/// Runs `PAIRS` pairs of `sessions` polite trees each; returns browserd's times and the
/// baseline's. `containment`: the baseline's cgroup subtree (`--cgroup`).
pub fn run_once(
    d: &DaemonGuard,
    sessions: usize,
    containment: Option<&Path>,
    rep: usize,
    notes: &mut Vec<String>,
) -> Result<(Vec<f64>, Vec<f64>), String> {
    let polite = Fixture::polite();
    let mut client = d.client();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for pair in 0..PAIRS {
        // The baseline's trees first: the refresh browserd's launches ask for then meets
        // them, so its kill does not read them as newcomers (the baseline never reads
        // browserd's).
        let mut baseline = Baseline::new("paired", containment);
        let leaders = baseline.spawn_many(&polite, sessions)?;
        let trees: Vec<_> = baseline.wait_trees(&leaders, &polite)?.concat();
        let launched = launch_many(&mut client, &polite, sessions, |_| None)?;
        let ids: Vec<_> = wait_trees(&launched, &polite)?.concat();

        let mut kill_ours = || {
            std::thread::sleep(SETTLE);
            let bulk = BulkTerminate {
                all: Some(true),
                ..Default::default()
            };
            terminate(&mut client, bulk, &ids, "paired polite", rep, notes)
        };
        let mut kill_theirs = || -> Result<f64, String> {
            std::thread::sleep(SETTLE);
            let start = Instant::now();
            for &leader in &leaders {
                cleanup::killpg(leader, Signal::SIGTERM);
            }
            procs::wait_gone(&trees, GONE_TIMEOUT, true)
                .map_err(|left| format!("baseline, paired: {left} process(es) outlived SIGTERM"))?;
            baseline.remove_cgroups(&leaders)?;
            Ok(ms(start.elapsed()))
        };
        if pair % 2 == rep % 2 {
            theirs.push(kill_theirs()?);
            ours.push(kill_ours()?);
        } else {
            ours.push(kill_ours()?);
            theirs.push(kill_theirs()?);
        }
    }
    Ok((ours, theirs))
}
