//! The baseline: the bench itself as the most minimal supervisor, measured in the same run
//! as browserd. It forks and execs the same trees (new session, marked environment), signals
//! their groups with `killpg`, reaps them (it is their parent, and a subreaper for the
//! orphaned children, as browserd is) and polls `/proc` until every process is gone. What it
//! costs is what the kernel costs; browserd's overhead is the difference.
//!
//! With `--cgroup` it contains its trees as browserd does: each tree in a cgroup of its own
//! (made before the tree starts, joined by the child before `exec`, in a subtree with the
//! controllers browserd enables), removed once the tree is gone, before a kill counts as
//! done. The kernel's cost of containment is then on both sides of the ratio.

use crate::cleanup;
use crate::options::Options;
use crate::procs::{self, time_command};
use crate::report::Sample;
use crate::stats::ms;
use browserd_proto::SESSION_ENV;
use browserd_tests::cgroups::PrivateCgroup;
use browserd_tests::clone3::{clone3, CloneArgs, CLONE_INTO_CGROUP};
use browserd_tests::fixtures::session_command;
use browserd_tests::{Fixture, ProcId};
use nix::sys::signal::Signal;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long trees may take to start, and processes to go, before the bench gives up.
pub const TREE_TIMEOUT: Duration = Duration::from_secs(120);
pub const GONE_TIMEOUT: Duration = Duration::from_secs(30);

/// The trees the baseline started; dropping it SIGKILLs and reaps whatever is left, and
/// removes their cgroups.
pub struct Baseline {
    marker: String,
    leaders: Vec<i32>,
    known: Vec<ProcId>,
    /// Where each tree gets a cgroup of its own (`--cgroup`), and the ones made, by leader.
    containment: Option<PathBuf>,
    cgroups: Vec<(i32, PathBuf)>,
}

impl Baseline {
    pub fn new(name: &str, containment: Option<&Path>) -> Baseline {
        Baseline {
            marker: format!("bench-{}-{name}", std::process::id()),
            leaders: Vec::new(),
            known: Vec::new(),
            containment: containment.map(Path::to_path_buf),
            cgroups: Vec::new(),
        }
    }

    /// Forks and execs `argv` as the leader of a new session and process group, marked
    /// like a browserd session (and in a new cgroup of its own, with `--cgroup`); returns
    /// its pid.
    pub fn spawn(&mut self, argv: &[String]) -> Result<i32, String> {
        if cleanup::aborting() {
            return Err("interrupted".into());
        }
        let marker = format!("{}-{}", self.marker, self.leaders.len());
        let pid = match &self.containment {
            Some(parent) => {
                let dir = parent.join(&marker);
                std::fs::create_dir(&dir)
                    .map_err(|e| format!("baseline: cannot create {}: {e}", dir.display()))?;
                match spawn_into(argv, &marker, &dir) {
                    Ok(pid) => {
                        self.cgroups.push((pid, dir));
                        pid
                    }
                    Err(e) => {
                        let _ = std::fs::remove_dir(&dir);
                        return Err(e);
                    }
                }
            }
            None => {
                let child = session_command(argv, &marker)
                    .spawn()
                    .map_err(|e| format!("baseline: cannot start {argv:?}: {e}"))?;
                // Reaped through the cleanup registry, never through `Child`.
                child.id() as i32
            }
        };
        cleanup::register_leader(pid);
        self.leaders.push(pid);
        Ok(pid)
    }

    /// Removes the cgroups of `leaders`' trees (each tree must be gone), as browserd does
    /// before it answers a kill. A cgroup that still counts a process is tried again until
    /// `GONE_TIMEOUT`.
    pub fn remove_cgroups(&mut self, leaders: &[i32]) -> Result<(), String> {
        let (mut pending, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.cgroups)
            .into_iter()
            .partition(|(leader, _)| leaders.contains(leader));
        self.cgroups = kept;
        let start = Instant::now();
        loop {
            pending.retain(|(_, dir)| match std::fs::remove_dir(dir) {
                Ok(()) => false,
                Err(e) => e.kind() != std::io::ErrorKind::NotFound,
            });
            if pending.is_empty() {
                return Ok(());
            }
            if start.elapsed() > GONE_TIMEOUT {
                let left = pending.len();
                self.cgroups.extend(pending);
                return Err(format!("baseline: {left} cgroup(s) could not be removed"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
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
        let leaders = std::mem::take(&mut self.leaders);
        if let Err(e) = self.remove_cgroups(&leaders) {
            eprintln!("{e}");
        }
    }
}

/// Starts `argv` (an absolute path first) in the cgroup `dir` from its first instruction,
/// as browserd does (`clone3` with `CLONE_INTO_CGROUP`, fork-like), in a new session, with
/// the marker in its environment and its stdio on /dev/null; returns its pid.
fn spawn_into(argv: &[String], marker: &str, dir: &Path) -> Result<i32, String> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cstring = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| format!("baseline: a NUL in {argv:?} or the environment"))
    };
    let program = cstring(argv[0].as_bytes())?;
    let args = argv
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut env = Vec::new();
    for (key, value) in std::env::vars_os() {
        if key != SESSION_ENV {
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            env.push(cstring(&entry)?);
        }
    }
    env.push(cstring(format!("{SESSION_ENV}={marker}").as_bytes())?);
    let pointers = |strings: &[CString]| {
        let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        ptrs
    };
    let (argp, envp) = (pointers(&args), pointers(&env));
    let open = |path: &Path, write: bool, flags: i32| -> Result<OwnedFd, String> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(flags)
            .open(path)
            .map(OwnedFd::from)
            .map_err(|e| format!("baseline: cannot open {}: {e}", path.display()))
    };
    // Read-only, not O_PATH: older kernels refuse O_PATH fds for CLONE_INTO_CGROUP.
    let cgroup = open(dir, false, libc::O_DIRECTORY)?;
    let null = open(Path::new("/dev/null"), true, 0)?;
    // Closed by a successful exec; carries the errno of a failed one (as `Command` does).
    let (mut reader, writer) =
        std::io::pipe().map_err(|e| format!("baseline: cannot make a pipe: {e}"))?;
    let clone_args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: fork-like (no CLONE_VM): the child has its own copy of memory and calls only
    // async-signal-safe functions on what was prepared above, then execs or exits.
    let pid = unsafe { clone3(&clone_args) };
    if pid == 0 {
        // SAFETY: the child; raw syscalls only.
        unsafe {
            libc::setsid();
            for target in 0..3 {
                libc::dup2(null.as_raw_fd(), target);
            }
            libc::execve(program.as_ptr(), argp.as_ptr(), envp.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(writer.as_raw_fd(), (&raw const errno).cast(), 4);
            libc::_exit(127);
        }
    }
    if pid < 0 {
        return Err(format!(
            "baseline: clone3 into {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    drop(writer);
    let mut errno = [0u8; 4];
    match std::io::Read::read(&mut reader, &mut errno) {
        Ok(0) => Ok(pid as i32),
        result => {
            cleanup::register_leader(pid as i32);
            cleanup::reap_blocking(pid as i32);
            Err(format!(
                "baseline: cannot start {argv:?}: {}",
                match result {
                    Ok(_) => std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno)),
                    Err(e) => e,
                }
            ))
        }
    }
}

/// The controllers browserd enables for its sessions' cgroups, where offered.
const CONTROLLERS: [&str; 2] = ["memory", "pids"];

/// A private cgroup subtree for the baseline's trees (`--cgroup`), with the controllers
/// browserd would enable for its sessions, removed when dropped or if the bench is
/// interrupted.
pub fn containment() -> Result<PrivateCgroup, String> {
    let cgroup = PrivateCgroup::create("bench-baseline").map_err(|e| format!("--cgroup: {e}"))?;
    cleanup::remove_cgroup_on_abort(cgroup.path());
    for controller in cgroup.offered_controllers() {
        if CONTROLLERS.contains(&controller.as_str()) {
            std::fs::write(
                cgroup.path().join("cgroup.subtree_control"),
                format!("+{controller}"),
            )
            .map_err(|e| format!("--cgroup: cannot enable {controller} for the baseline: {e}"))?;
        }
    }
    Ok(cgroup)
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
/// With `containment`, every tree gets a cgroup below it (`--cgroup`).
pub fn run_once(
    opts: &Options,
    browserctl: &Path,
    containment: Option<&Path>,
) -> Result<Sample, String> {
    let mut b = Baseline::new("trees", containment);
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

    // As long a quiet spell as browserd's run has before its kill-all (see `IDLE_WINDOWS`).
    std::thread::sleep(opts.idle * crate::scenarios::IDLE_WINDOWS);

    // A separate process sends the signal, as `browserctl kill` would.
    for (leader, tree) in kill_leaders.iter().zip(&kill_trees) {
        let start = Instant::now();
        time_command(Command::new("/bin/kill").args(["-TERM", "--", &format!("-{leader}")]))?;
        procs::wait_gone(tree, GONE_TIMEOUT, true)
            .map_err(|left| format!("baseline kill-one: {left} process(es) left"))?;
        b.remove_cgroups(&[*leader])?;
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
    b.remove_cgroups(&leaders)?;
    sample.bulk_polite_ms = ms(start.elapsed());
    drop(b);

    sample.bulk_stubborn_ms = stubborn(opts.sessions, opts.grace, containment)?;
    sample.bulk_stubborn_small_ms = stubborn(opts.small_sessions(), opts.grace, containment)?;
    Ok(sample)
}

/// Stubborn trees: SIGTERM to every group, wait for them to empty until the grace period
/// ends, SIGKILL the groups still there, wait until every process is gone.
fn stubborn(count: usize, grace: Duration, containment: Option<&Path>) -> Result<f64, String> {
    let mut b = Baseline::new("stubborn", containment);
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
    b.remove_cgroups(&leaders)?;
    Ok(ms(start.elapsed()))
}
