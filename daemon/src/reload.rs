//! Reload by re-executing in place: `SIGHUP`, the `reload` op, `browserctl daemon reload`,
//! `systemctl reload browserd`. It is also how an upgrade is installed: put the new binary
//! where the old one was, then reload.
//!
//! 1. The binary on disk now is run with `--check-config` and the daemon's own arguments:
//!    it must start, accept the config file as it is now, speak this handover version and
//!    use the same state dir. Otherwise the reload is refused and nothing changes.
//! 2. The server drains: it stops accepting (new clients wait in the kernel's backlog),
//!    every connection finishes the request it is answering and is parked at a frame
//!    boundary; a launch waiting in the queue is parked unanswered instead, and those come
//!    first in the handover, in queue order. HTTP stops accepting too; its connections
//!    finish what they are answering and close. Event streams are sent everything emitted
//!    until then, a `reload` event, and end. Warm browsers stay in the pool (they are in
//!    the registry's snapshot); one still starting is terminated by the next image, which
//!    launches another.
//! 3. One versioned handover document is written to a memfd: the registry's snapshot (every
//!    session, lease, TTL, tracking id, recent exit, termination in flight), the fds to keep
//!    (the listener, the HTTP listener, every parked connection with what it had read, each
//!    browser's stderr pipe, each adopted leader's pidfd) by number, the service manager's
//!    variables, the settled config and where the event sequence stands. Those fds lose
//!    close-on-exec, signals that must not be lost are blocked, and the daemon `execve`s
//!    its binary with the same pid, so every session stays its child.
//! 4. The new image reads the document (`BROWSERD_HANDOVER=<fd>`), takes every fd up,
//!    reaps what exited meanwhile, serves the parked connections on, and tells the service
//!    manager it is ready. No session is signalled.
//!
//! If `execve` itself fails, the daemon serves on as it was. If the new image cannot use the
//! new config after all, it keeps the one handed over.

use crate::config::Config;
use crate::context::Context;
use crate::error::Error;
use crate::notify;
use crate::records::{unix_ms, Snapshot};
use crate::server::{self, Parked};
use crate::socket::SocketFile;
use browserd_proto::SessionId;
use interprocess::local_socket::tokio::Listener;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{SigSet, Signal};
use serde::{Deserialize, Serialize};
use std::ffi::{CString, OsString};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The handover document's version; `--check-config` prints the one a binary reads.
pub const HANDOVER_VERSION: u32 = 1;
/// Fields added to version 1 since, each optional: a binary that predates one ignores it.
/// 1: the HTTP listener and the event sequence. A daemon with an HTTP listener reloads
/// only into a binary of revision 1 or later, which takes the listener over.
pub const HANDOVER_REVISION: u32 = 1;
/// Names the memfd holding the document, in the re-executed daemon's environment.
const HANDOVER_ENV: &str = "BROWSERD_HANDOVER";
/// How long the new binary's `--check-config` may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// How the daemon was started: what a reload executes again.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The binary's path; after an upgrade replaced it, the new file at that path.
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

impl Invocation {
    pub fn current() -> Invocation {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        // A binary replaced on disk reads as "<path> (deleted)"; the path is what counts.
        let exe = match exe.as_os_str().as_bytes().strip_suffix(b" (deleted)") {
            Some(path) => PathBuf::from(std::ffi::OsStr::from_bytes(path)),
            None => exe,
        };
        Invocation {
            exe,
            args: std::env::args_os().collect(),
        }
    }
}

/// What `--check-config` prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct Check {
    pub version: String,
    pub handover: u32,
    #[serde(default)]
    pub handover_revision: u32,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
}

impl Check {
    pub fn of(config: &Config) -> Check {
        Check {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            handover: HANDOVER_VERSION,
            handover_revision: HANDOVER_REVISION,
            state_dir: config.state_dir.clone(),
            socket: config.socket.clone(),
        }
    }
}

/// The handover document.
#[derive(Debug, Serialize, Deserialize)]
pub struct Handover {
    pub version: u32,
    pub reloads: u64,
    pub started_unix_ms: u64,
    pub config: Config,
    pub registry: Snapshot,
    /// Adopted leaders' pidfds.
    pub adopted: Vec<(SessionId, RawFd)>,
    pub listener: RawFd,
    pub socket_file: SocketFile,
    /// Parked connections and what each had read of its next request.
    pub connections: Vec<(RawFd, Vec<u8>)>,
    /// Browsers' stderr pipes.
    pub pipes: Vec<(SessionId, RawFd)>,
    pub notify: notify::Env,
    /// The HTTP listener (revision 1).
    #[serde(default)]
    pub http_listener: Option<RawFd>,
    /// The `seq` of the next event (revision 1).
    #[serde(default)]
    pub events_seq: u64,
}

/// Checks the binary on disk and schedules the reload; returns the `reloads` count the
/// daemon will report once it serves again. Requests are checked one at a time, so each is
/// answered by its own check; one that comes once a reload is scheduled joins it.
pub async fn request(ctx: &Arc<Context>) -> Result<u64, Error> {
    let next = ctx.reloads + 1;
    let _checking = ctx.reload_check.lock().await;
    if ctx.reload_pending.load(Ordering::Acquire) {
        return Ok(next);
    }
    if let Err(why) = check_new_binary(ctx).await {
        tracing::error!("reload refused: {why}");
        return Err(Error::ReloadFailed(why));
    }
    ctx.reload_pending.store(true, Ordering::Release);
    tokio::spawn(run(ctx.clone()));
    Ok(next)
}

/// Runs the binary on disk with `--check-config` and the daemon's own arguments.
async fn check_new_binary(ctx: &Arc<Context>) -> Result<(), String> {
    let exe = &ctx.invocation.exe;
    let mut command = std::process::Command::new(exe);
    command
        .arg("--check-config")
        .args(ctx.invocation.args.iter().skip(1))
        .env_remove(HANDOVER_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mut child, exited) = {
        let _reap = ctx.reaper.hold();
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        let exited = ctx.reaper.await_helper(child.id() as i32);
        (child, exited)
    };
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, async {
        let (stdout, stderr) = tokio::join!(read_all(stdout), read_all(stderr));
        (exited.await, stdout, stderr)
    })
    .await;
    let Ok((status, stdout, stderr)) = outcome else {
        let _reap = ctx.reaper.hold();
        let _ = child.kill();
        return Err(format!(
            "{} --check-config did not finish within {CHECK_TIMEOUT:?}",
            exe.display()
        ));
    };
    let stderr = String::from_utf8_lossy(&stderr).trim().to_owned();
    match status {
        Ok(browserd_proto::ExitStatus::Code(0)) => {}
        Ok(status) => {
            return Err(format!(
                "the new binary or config is not usable ({} --check-config: {status}): {stderr}",
                exe.display()
            ))
        }
        Err(_) => return Err(format!("{} --check-config was lost", exe.display())),
    }
    let check: Check = serde_json::from_slice(&stdout).map_err(|e| {
        format!(
            "{} --check-config printed something else than its check ({e}); is it browserd?",
            exe.display()
        )
    })?;
    if check.handover != HANDOVER_VERSION {
        return Err(format!(
            "{} (version {}) reads handover version {}, this daemon writes {HANDOVER_VERSION}; restart instead",
            exe.display(),
            check.version,
            check.handover
        ));
    }
    if ctx.server.http.addr().is_some() && check.handover_revision < 1 {
        return Err(format!(
            "{} (version {}) predates the HTTP listener and could not take it over; restart instead",
            exe.display(),
            check.version
        ));
    }
    if check.state_dir != ctx.config.state_dir {
        return Err(format!(
            "the new config moves the state dir from {} to {}; that takes a restart",
            ctx.config.state_dir.display(),
            check.state_dir.display()
        ));
    }
    Ok(())
}

async fn read_all(fd: Option<OwnedFd>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let Some(fd) = fd else { return out };
    if let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        let mut limited = (&mut pipe).take(1 << 20);
        let _ = limited.read_to_end(&mut out).await;
    }
    out
}

/// Drains, hands over, and re-executes; if `execve` fails, serves on.
async fn run(ctx: Arc<Context>) {
    tracing::info!(exe = %ctx.invocation.exe.display(), "reloading: re-executing in place");
    ctx.notifier.reloading();
    let config = &ctx.config;
    let drain_timeout = config.launch_timeout.0.max(config.max_grace.0) + Duration::from_secs(10);
    let ((listener, mut parked), ()) = tokio::join!(
        ctx.server.drain(drain_timeout),
        ctx.server.http.settle(drain_timeout)
    );
    server::in_take_up_order(&mut parked);
    ctx.server.hand_over(STREAMS_END).await;
    let http = ctx.server.http.take_listener(STREAMS_END).await;
    let Some(listener) = listener else {
        tracing::error!("the server did not hand its listener back; the reload is abandoned");
        return resume(&ctx, None, parked, http);
    };
    // Every record queued is written before the exec ends the writer thread; the new image
    // rewrites the journal from its handover anyway.
    let _ = ctx.registry.recorded().await;
    // From here on nothing awaits, so no other task runs: the snapshot is the last state.
    let why = exec(&ctx, &listener, &parked, http.as_ref());
    tracing::error!(
        "cannot re-execute {}: {why}; serving on with this binary",
        ctx.invocation.exe.display()
    );
    resume(&ctx, Some(listener), parked, http);
}

/// How long event streams and HTTP connections get to end once the drain is over.
const STREAMS_END: Duration = Duration::from_secs(2);

/// Serves on after a reload that did not happen.
fn resume(
    ctx: &Arc<Context>,
    listener: Option<Listener>,
    parked: Vec<Parked>,
    http: Option<OwnedFd>,
) {
    ctx.server.resume();
    server::take_up(ctx, parked);
    if let Some(listener) = listener {
        tokio::spawn(server::serve(ctx.clone(), listener));
    }
    crate::http::resume(ctx, http);
    ctx.reload_pending.store(false, Ordering::Release);
    ctx.notifier.ready(&ctx.registry.counts());
}

/// Writes the handover document and execs; returns only if that failed, saying why, with
/// every fd made close-on-exec again.
fn exec(ctx: &Context, listener: &Listener, parked: &[Parked], http: Option<&OwnedFd>) -> String {
    // Leaders are spawned off the event loop: one under way registers before the snapshot,
    // and none starts until the exec has replaced this image (or failed).
    let _registering = ctx.reaper.hold_registering();
    let pipes = ctx.pipes.raw();
    let adopted: Vec<(SessionId, Arc<OwnedFd>)> = ctx.registry.adopted_leaders();
    let document = Handover {
        version: HANDOVER_VERSION,
        reloads: ctx.reloads + 1,
        started_unix_ms: unix_ms(ctx.started_wall),
        config: ctx.config.clone(),
        registry: ctx.registry.snapshot(),
        adopted: adopted
            .iter()
            .map(|(id, fd)| (id.clone(), fd.as_raw_fd()))
            .collect(),
        listener: listener_fd(listener),
        socket_file: ctx.socket_file,
        connections: parked
            .iter()
            .map(|p| (p.fd.as_raw_fd(), p.pending.clone()))
            .collect(),
        pipes: pipes.clone(),
        notify: ctx.notifier.env(),
        http_listener: http.map(|fd| fd.as_raw_fd()),
        events_seq: ctx.registry.events().next_seq(),
    };
    let memfd = match write_document(&document) {
        Ok(memfd) => memfd,
        Err(e) => return format!("cannot write the handover document: {e}"),
    };
    let mut kept: Vec<RawFd> = vec![memfd.as_raw_fd(), document.listener];
    kept.extend(document.connections.iter().map(|(fd, _)| *fd));
    kept.extend(document.pipes.iter().map(|(_, fd)| *fd));
    kept.extend(document.adopted.iter().map(|(_, fd)| *fd));
    kept.extend(document.http_listener);
    let why = match set_cloexec(&kept, false) {
        Ok(()) => exec_self(ctx, memfd.as_raw_fd()),
        Err(e) => format!("cannot keep the fds open across exec: {e}"),
    };
    let _ = set_cloexec(&kept, true);
    why
}

fn listener_fd(listener: &Listener) -> RawFd {
    let Listener::UdSocket(listener) = listener;
    listener.as_fd().as_raw_fd()
}

fn write_document(document: &Handover) -> std::io::Result<std::fs::File> {
    let json = serde_json::to_vec(document).map_err(std::io::Error::other)?;
    let fd = nix::sys::memfd::memfd_create(
        c"browserd-handover",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&json)?;
    file.rewind()?;
    Ok(file)
}

fn set_cloexec(fds: &[RawFd], on: bool) -> nix::Result<()> {
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    for &fd in fds {
        // SAFETY: each fd is owned by something this function's caller keeps alive.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        fcntl(fd, FcntlArg::F_SETFD(flags))?;
    }
    Ok(())
}

/// The signals blocked across `execve`: the new image handles them once its handlers are in
/// place, instead of dying of the default action or losing them.
fn handover_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        set.add(signal);
    }
    set
}

/// `execve`s the daemon's binary with its own arguments, the handover fd named in the
/// environment. Returns only on failure.
fn exec_self(ctx: &Context, memfd: RawFd) -> String {
    let cstring = |bytes: &[u8]| CString::new(bytes).ok();
    let Some(path) = cstring(ctx.invocation.exe.as_os_str().as_bytes()) else {
        return "the binary's path has a NUL byte".into();
    };
    let argv: Option<Vec<CString>> = ctx
        .invocation
        .args
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect();
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != HANDOVER_ENV)
        .filter_map(|(k, v)| {
            let mut entry = k.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            cstring(&entry)
        })
        .collect();
    envp.extend(cstring(format!("{HANDOVER_ENV}={memfd}").as_bytes()));
    let Some(argv) = argv else {
        return "an argument has a NUL byte".into();
    };
    let blocked = handover_signals();
    let mut previous = SigSet::empty();
    if let Err(e) = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&blocked),
        Some(&mut previous),
    ) {
        return format!("cannot block signals: {e}");
    }
    let error = match nix::unistd::execve(&path, &argv, &envp) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    let _ = previous.thread_set_mask();
    format!("execve: {error}")
}

/// What a re-executed daemon takes over, every fd owned again (and close-on-exec).
pub struct TakenOver {
    pub reloads: u64,
    pub started_unix_ms: u64,
    pub config: Config,
    pub registry: Snapshot,
    pub adopted: Vec<(SessionId, OwnedFd)>,
    pub listener: OwnedFd,
    pub socket_file: SocketFile,
    pub connections: Vec<Parked>,
    pub pipes: Vec<(SessionId, OwnedFd)>,
    pub notify: notify::Env,
    pub http_listener: Option<OwnedFd>,
    pub events_seq: u64,
}

/// The handover an earlier image left this one, if it was re-executed. Call first thing in
/// `main`, while the process has one thread (it changes the environment).
pub fn take() -> Option<Result<TakenOver, String>> {
    let value = crate::notify::take_var(HANDOVER_ENV)?;
    Some(read_handover(&value))
}

fn read_handover(value: &std::ffi::OsStr) -> Result<TakenOver, String> {
    let fd: RawFd = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{HANDOVER_ENV}={value:?} is not an fd number"))?;
    // SAFETY: the earlier image named this fd as the handover memfd, ours alone now.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut json = Vec::new();
    file.read_to_end(&mut json)
        .map_err(|e| format!("cannot read the handover document: {e}"))?;
    let document: Handover = serde_json::from_slice(&json)
        .map_err(|e| format!("the handover document is unreadable: {e}"))?;
    if document.version != HANDOVER_VERSION {
        return Err(format!(
            "the handover document is version {}; this binary reads {HANDOVER_VERSION}",
            document.version
        ));
    }
    // SAFETY (each `own`): the earlier image kept these fds open for this one and named
    // them in the document; nothing else in this process refers to them.
    let own = |fd: RawFd| -> OwnedFd {
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        owned
    };
    Ok(TakenOver {
        reloads: document.reloads,
        started_unix_ms: document.started_unix_ms,
        config: document.config,
        registry: document.registry,
        adopted: document
            .adopted
            .into_iter()
            .map(|(id, fd)| (id, own(fd)))
            .collect(),
        listener: own(document.listener),
        socket_file: document.socket_file,
        connections: document
            .connections
            .into_iter()
            .map(|(fd, pending)| Parked {
                fd: own(fd),
                pending,
                queued: None,
            })
            .collect(),
        pipes: document
            .pipes
            .into_iter()
            .map(|(id, fd)| (id, own(fd)))
            .collect(),
        notify: document.notify,
        http_listener: document.http_listener.map(own),
        events_seq: document.events_seq,
    })
}

/// Unblocks what `execve` carried blocked, once the new image's handlers are in place.
pub fn unblock_signals() {
    let _ = handover_signals().thread_unblock();
}
