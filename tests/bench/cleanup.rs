//! Nothing the bench starts may outlive it, even on Ctrl-C. The bench is a child subreaper
//! (as browserd is), so every process it starts, directly or not, stays its descendant; a
//! watcher thread takes SIGINT/SIGTERM/SIGHUP, stops the daemon and SIGKILLs every
//! descendant. The registry of unreaped baseline leaders lives here too: a group is only
//! signalled while its leader is unreaped (which pins the pgid), and reaping goes through
//! the same lock, so the watcher never signals a reused group.

use crate::procs::{self, PidFd};
use browserd_tests::ProcId;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static LEADERS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
static DAEMON: Mutex<Option<(PidFd, PathBuf)>> = Mutex::new(None);
static DAEMON_PID: Mutex<Option<i32>> = Mutex::new(None);
/// Dirs of a second, short-lived daemon (the tmpfs one), removed on an interrupt.
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static CGROUPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static ABORTING: AtomicBool = AtomicBool::new(false);
/// Write end of the pipe the signal handler wakes the watcher thread through.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// How long the daemon gets to stop its sessions itself on an interrupt.
const DAEMON_STOP: Duration = Duration::from_secs(10);

fn lock<T>(mutex: &'static Mutex<T>) -> MutexGuard<'static, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Becomes a subreaper and routes SIGINT/SIGTERM/SIGHUP to the watcher thread. The signals
/// are caught, not blocked: a blocked mask would be inherited by browserd and its sessions
/// (`std::process::Command` does not reset it), and a caught signal reverts to its default
/// action in an exec'd child.
pub fn install() -> Result<(), String> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("cannot become a child subreaper: {e}"))?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot create the signal pipe: {e}"))?;
    SIGNAL_PIPE.store(write.into_raw_fd(), Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only calls write(2), which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(|e| format!("cannot catch {signal}: {e}"))?;
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            let mut pipe = std::fs::File::from(read);
            if std::io::Read::read_exact(&mut pipe, &mut byte).is_ok() {
                if let Ok(signal) = Signal::try_from(i32::from(byte[0])) {
                    abort(signal);
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

extern "C" fn on_signal(signal: libc::c_int) {
    let byte = signal as u8;
    // SAFETY: write(2) on a pipe is async-signal-safe; a failure cannot be acted on here.
    unsafe {
        libc::write(
            SIGNAL_PIPE.load(Ordering::SeqCst),
            std::ptr::addr_of!(byte).cast(),
            1,
        );
    }
}

/// Whether an interrupt is being handled (new work should stop).
pub fn aborting() -> bool {
    ABORTING.load(Ordering::SeqCst)
}

/// If an interrupt is being handled, waits for the watcher thread to finish the cleanup and
/// exit the process; returning from `main` meanwhile would cut it short.
pub fn wait_if_aborting() {
    while aborting() {
        std::thread::park();
    }
}

/// Remembers the daemon (and its temp dir) for the interrupt path.
pub fn set_daemon(pid: i32, dir: PathBuf) -> Result<(), String> {
    let stat = procs::read_stat(pid).ok_or("the daemon vanished right after starting")?;
    let pidfd = PidFd::open(ProcId {
        pid,
        start_time: stat.start_time,
    })
    .ok_or("cannot open a pidfd on the daemon")?;
    *lock(&DAEMON) = Some((pidfd, dir));
    *lock(&DAEMON_PID) = Some(pid);
    Ok(())
}

/// Remembers a cgroup subtree to empty and remove if the bench is interrupted (its owner
/// removes it otherwise).
pub fn remove_cgroup_on_abort(dir: &std::path::Path) {
    lock(&CGROUPS).push(dir.to_owned());
}

/// Remembers a dir to remove if the bench is interrupted (its owner removes it otherwise).
pub fn remove_on_abort(dir: &std::path::Path) {
    lock(&DIRS).push(dir.to_owned());
}

pub fn clear_daemon() {
    *lock(&DAEMON) = None;
    *lock(&DAEMON_PID) = None;
}

/// Records a baseline leader this process spawned and has not reaped.
pub fn register_leader(pid: i32) {
    lock(&LEADERS).insert(pid);
}

/// Signals the group of `leader` if it is a registered, unreaped leader; true if sent.
pub fn killpg(leader: i32, signal: Signal) -> bool {
    let leaders = lock(&LEADERS);
    leaders.contains(&leader) && nix::sys::signal::killpg(Pid::from_raw(leader), signal).is_ok()
}

/// Signals one registered, unreaped leader alone; true if sent.
pub fn kill_leader(leader: i32, signal: Signal) -> bool {
    let leaders = lock(&LEADERS);
    leaders.contains(&leader) && nix::sys::signal::kill(Pid::from_raw(leader), signal).is_ok()
}

/// Reaps `pid` if it is an exited child of this process; true if reaped.
pub fn reap(pid: i32) -> bool {
    let mut leaders = lock(&LEADERS);
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) | Err(_) => false,
        Ok(_) => {
            leaders.remove(&pid);
            true
        }
    }
}

/// Reaps every exited child except the daemon (which its guard reaps) without waiting, and
/// returns their pids. Each child is peeked at (`WNOWAIT`) before it is reaped.
pub fn reap_exited() -> Vec<i32> {
    let daemon = *lock(&DAEMON_PID);
    let mut leaders = lock(&LEADERS);
    let mut reaped = Vec::new();
    let peek = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    while let Ok(status) = waitid(Id::All, peek) {
        let Some(pid) = status.pid().map(Pid::as_raw) else {
            break;
        };
        if Some(pid) == daemon {
            break;
        }
        if waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).is_err() {
            break;
        }
        leaders.remove(&pid);
        reaped.push(pid);
    }
    reaped
}

/// Waits for the child `pid` to exit and reaps it.
pub fn reap_blocking(pid: i32) {
    let mut leaders = lock(&LEADERS);
    while let Err(nix::errno::Errno::EINTR) = waitpid(Pid::from_raw(pid), None) {}
    leaders.remove(&pid);
}

/// The registered leaders that are not yet reaped.
pub fn leaders() -> Vec<i32> {
    lock(&LEADERS).iter().copied().collect()
}

/// SIGKILLs every live descendant of this process and reaps what it can, until none is
/// left or `timeout` passes. Only call once the daemon guard is gone (this reaps any
/// child). Returns how many live descendants there were at first.
pub fn kill_descendants(timeout: Duration) -> usize {
    let me = std::process::id() as i32;
    let start = Instant::now();
    let mut first = None;
    loop {
        let live: Vec<_> = procs::descendants(me, &procs::scan())
            .into_iter()
            .filter(|s| !s.is_zombie())
            .collect();
        first.get_or_insert(live.len());
        for stat in &live {
            if let Some(pidfd) = PidFd::open(stat.id()) {
                pidfd.signal(libc::SIGKILL);
            }
        }
        reap_any();
        if live.is_empty() || start.elapsed() > timeout {
            return first.unwrap_or(0);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reaps every exited child without waiting.
fn reap_any() {
    let mut leaders = lock(&LEADERS);
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        match status.pid() {
            Some(pid) => {
                leaders.remove(&pid.as_raw());
            }
            None => break,
        }
    }
}

/// The interrupt path: SIGKILL the baseline groups (while their leaders are pinned), let
/// the daemon stop its sessions, then SIGKILL whatever descends from the bench, and exit.
fn abort(signal: Signal) -> ! {
    ABORTING.store(true, Ordering::SeqCst);
    eprintln!("\nbench: {signal}: stopping browserd and killing everything the bench started");
    {
        let leaders = lock(&LEADERS);
        for &leader in leaders.iter() {
            let _ = nix::sys::signal::killpg(Pid::from_raw(leader), Signal::SIGKILL);
        }
    }
    let daemon = lock(&DAEMON).take();
    if let Some((pidfd, _)) = &daemon {
        pidfd.signal(libc::SIGTERM);
        if !pidfd.wait_exit(DAEMON_STOP) {
            pidfd.signal(libc::SIGKILL);
        }
    }
    let left = kill_descendants(Duration::from_secs(10));
    if let Some((_, dir)) = daemon {
        let _ = std::fs::remove_dir_all(dir);
    }
    for dir in lock(&DIRS).iter() {
        let _ = std::fs::remove_dir_all(dir);
    }
    for dir in lock(&CGROUPS).iter() {
        browserd_tests::cgroups::remove_tree(dir);
    }
    eprintln!("bench: interrupted; {left} leftover process(es) were SIGKILLed");
    std::process::exit(128 + signal as i32);
}
