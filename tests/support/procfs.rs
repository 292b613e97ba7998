//! Reading `/proc`: which processes exist, which session marks them (`BROWSERD_SESSION` in
//! their environment), and whether a process seen earlier is still that same process. A
//! process is identified by pid *and* start time, so a reused pid never counts as a survivor
//! and never gets signalled by the leak guard.
//!
//! A zombie's environment reads as empty, so zombies cannot be attributed by marker; the
//! harness remembers the identities it has seen per session ([`crate::tracked`]) to catch
//! unreaped processes.

use browserd_proto::SESSION_ENV;
use std::fs;

/// A process identity that survives pid reuse: pid plus start time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcId {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcId {
    /// The process now, if the pid still names the process this identity was taken from
    /// (in any state, zombies included).
    pub fn current(&self) -> Option<ProcInfo> {
        process(self.pid).filter(|p| p.start_time == self.start_time)
    }
}

/// What the harness knows about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// The state letter of `/proc/PID/stat` (`R`, `S`, `Z`, ...).
    pub state: char,
    pub comm: String,
    pub start_time: u64,
    /// The value of `BROWSERD_SESSION` in its environment; `None` if unmarked or unreadable
    /// (zombies and exiting processes have no environment left).
    pub session: Option<String>,
    /// Whether SIGTERM is ignored (`SigIgn`), i.e. the process is "stubborn".
    pub ignores_term: bool,
}

impl ProcInfo {
    pub fn id(&self) -> ProcId {
        ProcId {
            pid: self.pid,
            start_time: self.start_time,
        }
    }

    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }
}

struct Stat {
    comm: String,
    state: char,
    ppid: i32,
    pgid: i32,
    sid: i32,
    start_time: u64,
}

/// Parses `/proc/PID/stat`. The command name may contain spaces and parentheses, so the
/// fields are split after the *last* `)`.
fn read_stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // After the command: state(3) ppid(4) pgrp(5) session(6) ... starttime(22).
    Some(Stat {
        comm,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        sid: fields.get(3)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

fn read_marker(pid: i32) -> Option<String> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{SESSION_ENV}=");
    environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

fn read_ignores_term(pid: i32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let term_bit = 1u64 << (libc::SIGTERM - 1);
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & term_bit != 0)
}

/// One process by pid, if it exists.
pub fn process(pid: i32) -> Option<ProcInfo> {
    let stat = read_stat(pid)?;
    let zombie = stat.state == 'Z' || stat.state == 'X';
    let session = if zombie { None } else { read_marker(pid) };
    let ignores_term = session.is_some() && read_ignores_term(pid);
    Some(ProcInfo {
        pid,
        ppid: stat.ppid,
        pgid: stat.pgid,
        sid: stat.sid,
        state: stat.state,
        comm: stat.comm,
        start_time: stat.start_time,
        session,
        ignores_term,
    })
}

/// The scheduling policy (`SCHED_OTHER`, ...) and nice value of process or thread `pid`
/// (fields 41 and 19 of its stat).
pub fn scheduling(pid: i32) -> Option<(i32, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    Some((fields.get(38)?.parse().ok()?, fields.get(16)?.parse().ok()?))
}

/// Every process visible in `/proc` (threads excluded). Processes that vanish while being
/// read are skipped.
pub fn all_processes() -> Vec<ProcInfo> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut procs: Vec<ProcInfo> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(process)
        .collect();
    procs.sort_by_key(|p| p.pid);
    procs
}

/// The live (non-zombie) processes marked with `session`.
pub fn session_processes(session: &str) -> Vec<ProcInfo> {
    all_processes()
        .into_iter()
        .filter(|p| p.session.as_deref() == Some(session))
        .collect()
}

/// The pids of the live processes marked with `session`.
pub fn session_pids(session: &str) -> Vec<i32> {
    session_processes(session).iter().map(|p| p.pid).collect()
}

/// The children of `ppid`, zombies included.
pub fn children_of(ppid: i32) -> Vec<ProcInfo> {
    all_processes()
        .into_iter()
        .filter(|p| p.ppid == ppid)
        .collect()
}

/// The zombie children of `ppid`: exits nobody has reaped.
pub fn zombie_children_of(ppid: i32) -> Vec<ProcInfo> {
    children_of(ppid)
        .into_iter()
        .filter(ProcInfo::is_zombie)
        .collect()
}

/// A process's resident memory (`VmRSS`), in bytes.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    status_field(pid, "VmRSS:")?
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|kib| kib * 1024)
}

/// How many threads a process has (`Threads`), itself included.
pub fn thread_count(pid: i32) -> Option<usize> {
    status_field(pid, "Threads:")?.parse().ok()
}

/// The value of one `/proc/PID/status` line, trimmed.
fn status_field(pid: i32, name: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(|value| value.trim().to_owned())
}

/// Sends `signal` to the process `id` names, and only to it: the pid is pinned with a pidfd
/// and the start time re-checked, so a pid reused since `id` was taken is never signalled.
/// Returns whether the signal was sent.
pub fn signal_exact(id: ProcId, signal: i32) -> bool {
    // SAFETY: plain syscalls on integers; the fd is closed below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, id.pid, 0) };
    if pidfd < 0 {
        return false;
    }
    let pidfd = pidfd as i32;
    let sent = id.current().is_some_and(|p| !p.is_zombie())
        // SAFETY: as above; a null siginfo means "as if by kill(2)".
        && unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd,
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        } == 0;
    // SAFETY: `pidfd` was opened above and is owned here.
    unsafe { libc::close(pidfd) };
    sent
}

/// Starts `/bin/sleep SECONDS` as a child of the calling process with exactly the pid
/// `pid`, through `clone3`'s `set_tid` (root only: it needs CAP_SYS_ADMIN in the pid
/// namespace). `None` if the kernel refused (the pid is taken, or not permitted). The caller
/// must kill and reap the child.
pub fn spawn_sleep_with_pid(pid: i32, seconds: &str) -> Option<i32> {
    use crate::clone3::{clone3, CloneArgs};
    use std::ffi::CString;
    let path = CString::new("/bin/sleep").ok()?;
    let arg0 = CString::new("sleep").ok()?;
    let arg1 = CString::new(seconds).ok()?;
    let argv = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let wanted = [pid as libc::pid_t];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: wanted.as_ptr() as u64,
        set_tid_size: 1,
        ..CloneArgs::default()
    };
    // SAFETY: a fork-like clone3 (no CLONE_VM, no new stack); the child only calls execve
    // and _exit, both async-signal-safe, on memory prepared before the call.
    let got = unsafe { clone3(&args) };
    match got {
        0 => unsafe {
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        },
        n if n > 0 => Some(n as i32),
        _ => None,
    }
}

/// A process a test traces (`PTRACE_SEIZE`): when it dies it stays a zombie that only its
/// tracer can reap, whoever its parent is. Killed and let go when dropped (reaped by the
/// tracer, which hands it to its parent to reap).
pub struct Traced(nix::unistd::Pid);

impl Traced {
    #[track_caller]
    pub fn seize(pid: i32) -> Traced {
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::ptrace::seize(pid, nix::sys::ptrace::Options::empty())
            .unwrap_or_else(|e| panic!("cannot trace {pid}: {e}"));
        Traced(pid)
    }

    /// SIGKILLs it: it is a zombie from then on, until dropped.
    #[track_caller]
    pub fn kill(&self) {
        nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL)
            .unwrap_or_else(|e| panic!("cannot kill {}: {e}", self.0));
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.0, Some(nix::sys::wait::WaitPidFlag::__WALL));
    }
}
