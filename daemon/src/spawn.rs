//! Starting a session's leader: a new session and process group, the session marker in its
//! environment, the daemon's own service-manager variables removed, and signal dispositions
//! and mask reset, so the child starts as if from a clean shell whatever the daemon ignored.

use browserd_proto::{SessionId, SESSION_ENV};
use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Variables that describe the daemon's own relation to its service manager; a session that
/// inherited them could notify or claim sockets on the daemon's behalf.
const DAEMON_ONLY_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// What to run.
pub struct SpawnSpec<'a> {
    pub argv: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub cwd: Option<&'a Path>,
    pub session: &'a SessionId,
    /// Where the session's stderr goes; stdout goes to the same place.
    pub stderr: Stdio,
    pub stdout: Stdio,
}

/// Forks and execs the leader; returns once `execve` succeeded (or with its error). The
/// caller must hold the reap lock, so the child is not reaped before it is registered.
pub fn spawn(spec: SpawnSpec<'_>) -> io::Result<std::process::Child> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let mut command = Command::new(program);
    command.args(args);
    for name in DAEMON_ONLY_ENV {
        command.env_remove(name);
    }
    command.envs(spec.env);
    command.env(SESSION_ENV, spec.session.as_str());
    if let Some(cwd) = spec.cwd {
        command.current_dir(cwd);
    }
    command
        .stdin(Stdio::null())
        .stdout(spec.stdout)
        .stderr(spec.stderr);
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (setsid, sigaction, sigprocmask).
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            reset_signals();
            Ok(())
        });
    }
    command.spawn()
}

/// Restores every signal to its default action and unblocks all of them. Handlers are reset
/// by exec anyway, but ignored signals (SIGPIPE in Rust programs, SIGHUP under nohup) and
/// the mask would otherwise be inherited.
fn reset_signals() {
    // SAFETY: sigaction and sigprocmask are async-signal-safe; SIGKILL/SIGSTOP and the
    // invalid numbers just fail.
    unsafe {
        for signal in 1..libc::SIGRTMAX() {
            libc::signal(signal, libc::SIG_DFL);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}
