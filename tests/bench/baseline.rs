//! The baseline: the bench itself as the most minimal supervisor, measured in the same run
//! as browserd. It forks and execs the same trees (new session, marked environment), signals
//! their groups with `killpg`, reaps them (it is their parent, and a subreaper for the
//! orphaned children, as browserd is) and polls `/proc` until every process is gone. What it
//! costs is what the kernel costs; browserd's overhead is the difference.

use crate::cleanup;
use crate::options::Options;
use crate::procs::{self, time_command};
use crate::report::Sample;
use crate::stats::ms;
use browserd_proto::SESSION_ENV;
use browserd_tests::{Fixture, ProcId};
use nix::sys::signal::Signal;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long trees may take to start, and processes to go, before the bench gives up.
pub const TREE_TIMEOUT: Duration = Duration::from_secs(120);
pub const GONE_TIMEOUT: Duration = Duration::from_secs(30);

/// The trees the baseline started; dropping it SIGKILLs and reaps whatever is left.
pub struct Baseline {
    marker: String,
    leaders: Vec<i32>,
    known: Vec<ProcId>,
}

impl Baseline {
    pub fn new(name: &str) -> Baseline {
        Baseline {
            marker: format!("bench-{}-{name}", std::process::id()),
            leaders: Vec::new(),
            known: Vec::new(),
        }
    }

    /// Forks and execs `argv` as the leader of a new session and process group, marked
    /// like a browserd session; returns its pid.
    pub fn spawn(&mut self, argv: &[String]) -> Result<i32, String> {
        if cleanup::aborting() {
            return Err("interrupted".into());
        }
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .env(
                SESSION_ENV,
                format!("{}-{}", self.marker, self.leaders.len()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
        }
        let child = command
            .spawn()
            .map_err(|e| format!("baseline: cannot start {argv:?}: {e}"))?;
        let pid = child.id() as i32;
        // Reaped through the cleanup registry, never through `Child`.
        drop(child);
        cleanup::register_leader(pid);
        self.leaders.push(pid);
        Ok(pid)
    }

    /// Spawns `count` trees of `fixture`.
    pub fn spawn_many(&mut self, fixture: &Fixture, count: usize) -> Result<Vec<i32>, String> {
        (0..count).map(|_| self.spawn(&fixture.argv)).collect()
    }

    /// Waits until each of `leaders` is `fixture`'s complete tree; returns the trees.
    pub fn wait_trees(
        &mut self,
        leaders: &[i32],
        fixture: &Fixture,
    ) -> Result<Vec<Vec<ProcId>>, String> {
        let trees = procs::wait_trees(leaders, fixture, TREE_TIMEOUT)
            .map_err(|e| format!("baseline: {e}"))?;
        self.known.extend(trees.iter().flatten());
        Ok(trees)
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        for &leader in &self.leaders {
            cleanup::killpg(leader, Signal::SIGKILL);
        }
        if let Err(left) = procs::wait_gone(&self.known, GONE_TIMEOUT, true) {
            eprintln!("baseline: {left} process(es) survived SIGKILL");
        }
        let unreaped = cleanup::leaders();
        let mut pending: Vec<i32> = self
            .leaders
            .iter()
            .copied()
            .filter(|l| unreaped.contains(l))
            .collect();
        let start = Instant::now();
        while !pending.is_empty() && start.elapsed() < GONE_TIMEOUT {
            pending.retain(|&l| !cleanup::reap(l));
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Signals every listed group and waits until all of `ids` are gone (reaping them).
fn terminate_groups(leaders: &[i32], ids: &[ProcId], signal: Signal) -> Result<(), String> {
    for &leader in leaders {
        cleanup::killpg(leader, signal);
    }
    procs::wait_gone(ids, GONE_TIMEOUT, true)
        .map_err(|left| format!("baseline: {left} process(es) outlived {signal}"))
}

/// One repetition of every baseline scenario.
pub fn run_once(opts: &Options, browserctl: &Path) -> Result<Sample, String> {
    let mut b = Baseline::new("trees");
    let polite = Fixture::polite();
    let sleeper = Fixture::sleeper();
    let mut sample = Sample::default();

    let start = Instant::now();
    let leaders = b.spawn_many(&polite, opts.sessions)?;
    sample.launch_per_s = opts.sessions as f64 / start.elapsed().as_secs_f64();
    let kill_leaders = b.spawn_many(&polite, opts.samples)?;
    let exit_leaders = b.spawn_many(&sleeper, opts.samples)?;
    let trees = b.wait_trees(&leaders, &polite)?;
    let kill_trees = b.wait_trees(&kill_leaders, &polite)?;
    b.wait_trees(&exit_leaders, &sleeper)?;

    // The floor of any client: the same CLI binary starting and exiting, no daemon involved.
    for _ in 0..opts.samples {
        sample
            .status_ms
            .push(time_command(Command::new(browserctl).arg("--version"))?);
    }

    // The same start after as long a quiet spell as the daemon's idle window: what the
    // machine's waking adds to any command run then, daemon or not.
    std::thread::sleep(opts.idle);
    sample.bare_start_after_idle_ms =
        Some(time_command(Command::new(browserctl).arg("--version"))?);

    // A separate process sends the signal, as `browserctl kill` would.
    for (leader, tree) in kill_leaders.iter().zip(&kill_trees) {
        let start = Instant::now();
        time_command(Command::new("/bin/kill").args(["-TERM", "--", &format!("-{leader}")]))?;
        procs::wait_gone(tree, GONE_TIMEOUT, true)
            .map_err(|left| format!("baseline kill-one: {left} process(es) left"))?;
        sample.kill_one_ms.push(ms(start.elapsed()));
    }

    // Exit noticed: the kernel's own notification, waitpid returning.
    for &leader in &exit_leaders {
        let start = Instant::now();
        cleanup::kill_leader(leader, Signal::SIGKILL);
        cleanup::reap_blocking(leader);
        sample.natural_exit_ms.push(ms(start.elapsed()));
    }

    let all: Vec<ProcId> = trees.concat();
    let start = Instant::now();
    for &leader in &leaders {
        cleanup::killpg(leader, Signal::SIGTERM);
    }
    sample.first_signals_ms = Some(ms(start.elapsed()));
    procs::wait_gone(&all, GONE_TIMEOUT, true)
        .map_err(|left| format!("baseline: {left} process(es) outlived SIGTERM"))?;
    sample.bulk_polite_ms = ms(start.elapsed());
    drop(b);

    sample.bulk_stubborn_ms = stubborn(opts.sessions, opts.grace)?;
    sample.bulk_stubborn_small_ms = stubborn(opts.small_sessions(), opts.grace)?;
    Ok(sample)
}

/// Stubborn trees: SIGTERM to every group, wait for them to empty until the grace period
/// ends, SIGKILL the groups still there, wait until every process is gone.
fn stubborn(count: usize, grace: Duration) -> Result<f64, String> {
    let mut b = Baseline::new("stubborn");
    let fixture = Fixture::stubborn();
    let leaders = b.spawn_many(&fixture, count)?;
    let all: Vec<ProcId> = b.wait_trees(&leaders, &fixture)?.concat();
    let start = Instant::now();
    for &leader in &leaders {
        cleanup::killpg(leader, Signal::SIGTERM);
    }
    let left = grace.saturating_sub(start.elapsed());
    if procs::wait_gone(&all, left, true).is_err() {
        terminate_groups(&leaders, &all, Signal::SIGKILL)?;
    }
    Ok(ms(start.elapsed()))
}
