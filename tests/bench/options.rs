//! The bench's command line. Hand-parsed (the tests crate has no argument parser), with
//! `--quick` as a preset that explicit flags still override.

use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
Usage: bench [OPTIONS]

Measures browserd against a daemon-less baseline doing the same work in the same run, and
prints a table plus a JSON report. Needs release binaries of the workspace:

  cargo build --release --workspace --bins
  cargo run --release -p browserd-tests --bin bench -- --sessions 1000

Options:
  --sessions N      fake session trees per scenario (sh + two sleeps) [default: 1000]
  --repeat R        repetitions of every scenario; the median is reported [default: 3]
  --grace-ms G      grace period of the stubborn bulk termination [default: 1000]
  --samples S       samples per repeat for kill-one, status and natural exit [default: 50]
  --idle-ms W       quiet window before the first kill is timed (and before its reference,
                    a bare start, and the socket kill); the idle-CPU measurement
                    [default: 10000]
  --reloads L       reloads per repeat by the reload op, and as many by SIGHUP [default: 3]
  --browsers K      also launch and kill K real Chromium sessions, and measure a warm
                    pool of K against cold launches [default: 0]
  --json PATH       where the JSON report goes [default: target/bench/bench.json]
  --quick           smoke-test preset: --sessions 100 --repeat 1 --samples 20 --reloads 2
  --allow-stale     run even if browserd/browserctl are older than their sources
  --daemon-log L    browserd's log level (RUST_LOG) [default: warn]
  --cgroup          contain browserd's sessions in cgroups: it gets a private cgroup v2
                    subtree the bench creates (--cgroup-root), and the baseline puts each
                    of its trees in a cgroup too; fails where none can be made
  -h, --help        print this help";

#[derive(Debug, Clone)]
pub struct Options {
    pub sessions: usize,
    pub repeat: usize,
    pub grace: Duration,
    pub samples: usize,
    pub reloads: usize,
    pub idle: Duration,
    pub browsers: usize,
    pub json: Option<PathBuf>,
    pub allow_stale: bool,
    pub daemon_log: String,
    /// Run browserd with sessions contained in cgroups.
    pub cgroup: bool,
}

impl Options {
    /// The smaller population of the stubborn scenario, to show its time does not grow with N.
    pub fn small_sessions(&self) -> usize {
        (self.sessions / 10).max(1)
    }
}

pub enum Parsed {
    Run(Options),
    Help,
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut quick = false;
    let mut sessions = None;
    let mut repeat = None;
    let mut samples = None;
    let mut reloads = None;
    let mut grace_ms = 1000;
    let mut idle_ms = 10_000;
    let mut browsers = 0;
    let mut json = None;
    let mut allow_stale = false;
    let mut cgroup = false;
    let mut daemon_log = "warn".to_owned();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_owned(), Some(value.into())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--quick" => quick = true,
            "--allow-stale" => allow_stale = true,
            "--cgroup" => cgroup = true,
            "--sessions" => sessions = Some(number(&name, &value(&name)?, 1)?),
            "--repeat" => repeat = Some(number(&name, &value(&name)?, 1)?),
            "--samples" => samples = Some(number(&name, &value(&name)?, 1)?),
            "--reloads" => reloads = Some(number(&name, &value(&name)?, 1)?),
            "--grace-ms" => grace_ms = number(&name, &value(&name)?, 1)?,
            "--idle-ms" => idle_ms = number(&name, &value(&name)?, 1)?,
            "--browsers" => browsers = number(&name, &value(&name)?, 0)?,
            "--json" => json = Some(PathBuf::from(value(&name)?)),
            "--daemon-log" => daemon_log = value(&name)?,
            _ => return Err(format!("unknown argument `{arg}`\n\n{USAGE}")),
        }
    }
    let (default_sessions, default_repeat, default_samples, default_reloads) = if quick {
        (100, 1, 20, 2)
    } else {
        (1000, 3, 50, 3)
    };
    Ok(Parsed::Run(Options {
        sessions: sessions.unwrap_or(default_sessions),
        repeat: repeat.unwrap_or(default_repeat),
        samples: samples.unwrap_or(default_samples),
        reloads: reloads.unwrap_or(default_reloads),
        grace: Duration::from_millis(grace_ms as u64),
        idle: Duration::from_millis(idle_ms as u64),
        browsers,
        json,
        allow_stale,
        daemon_log,
        cgroup,
    }))
}

fn number(name: &str, text: &str, min: usize) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!("{name} takes a whole number ≥ {min}, not `{text}`")),
    }
}
