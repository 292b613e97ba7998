//! Starting a session's leader: its own process group, the session marker in its
//! environment, the daemon's own service-manager variables removed, and a clean signal state.
//! Without a cgroup, std spawns it with `posix_spawn` (vfork-like; no code runs between fork
//! and exec): ~40% more launches per second than copying the daemon with `fork`. std resets
//! SIGPIPE in the child but not the signal mask, so the daemon keeps its threads' masks empty
//! (see `main`) and clears inherited ignored signals at startup ([`reset_inherited_signals`]).
//! With a cgroup, `spawn_cgroup` starts it inside it.

use crate::cgroup::Cgroup;
use crate::spawn_cgroup::{self, Stdio as Output};
use browserd_proto::{SessionId, SESSION_ENV};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
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
    /// Set on top of the daemon's own environment.
    pub env: &'a BTreeMap<String, String>,
    pub cwd: Option<&'a Path>,
    pub session: &'a SessionId,
    /// A browser: stderr (which carries its DevTools endpoint) to a pipe, stdout to
    /// /dev/null. Otherwise both go where the daemon's go.
    pub browser: bool,
}

/// A started leader.
pub struct Leader {
    pub pid: i32,
    /// The read end of a browser's stderr.
    pub stderr: Option<OwnedFd>,
}

/// Starts the leader, in its own process group, inside `cgroup` if it has one; returns
/// once `execve` succeeded (or with its error). The caller must hold the reap lock, so the
/// child is not reaped before it is registered.
pub fn spawn(spec: SpawnSpec<'_>, cgroup: Option<&Cgroup>) -> io::Result<Leader> {
    match cgroup {
        Some(cgroup) => spawn_into(spec, cgroup),
        None => spawn_in_group(spec),
    }
}

/// The std way: `posix_spawn` (vfork-like), a new process group, the marker added.
fn spawn_in_group(spec: SpawnSpec<'_>) -> io::Result<Leader> {
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
    let (stdout, stderr) = match spec.browser {
        true => (Stdio::null(), Stdio::piped()),
        false => (Stdio::inherit(), Stdio::inherit()),
    };
    command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    // pgid = pid: the group is the session's, signalled as one while its leader lives.
    command.process_group(0);
    let mut child = command.spawn()?;
    Ok(Leader {
        pid: child.id() as i32,
        stderr: child.stderr.take().map(OwnedFd::from),
    })
}

/// Straight into a cgroup: `clone3(CLONE_INTO_CGROUP)`, or the pre-exec move where the
/// kernel or a seccomp filter refuses `clone3`.
fn spawn_into(spec: SpawnSpec<'_>, cgroup: &Cgroup) -> io::Result<Leader> {
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os()
        .filter(|(name, _)| !DAEMON_ONLY_ENV.iter().any(|d| name == d))
        .collect();
    env.extend(spec.env.iter().map(|(k, v)| (k.into(), v.into())));
    env.insert(SESSION_ENV.into(), spec.session.as_str().into());
    let build = || spawn_cgroup::SpawnSpec {
        argv: spec.argv.iter().map(OsString::from).collect(),
        env: env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        cwd: spec.cwd.map(Path::to_path_buf),
        stdout: if spec.browser {
            Output::Null
        } else {
            Output::Inherit
        },
        stderr: if spec.browser {
            Output::Pipe
        } else {
            Output::Inherit
        },
        process_group: true,
    };
    let options = spawn_cgroup::Clone3Opts { vfork: true };
    let spawned = match spawn_cgroup::spawn_clone3(build(), cgroup, options) {
        Err(e) if spawn_cgroup::is_clone3_unsupported(&e) => {
            tracing::debug!("clone3 refused ({e}); moving the leader into its cgroup before exec");
            spawn_cgroup::spawn_std_preexec(build(), cgroup)?
        }
        spawned => spawned?,
    };
    Ok(Leader {
        pid: spawned.pid,
        stderr: spawned.stderr.map(OwnedFd::from),
    })
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
