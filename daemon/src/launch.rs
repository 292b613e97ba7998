//! The `launch` operation: admission (capacity, tracking id, TTL), spawning and
//! registration. A browser session without a `command` gets the detected Chromium with
//! quiet, self-contained flags, its own profile and TMPDIR, and is reported only once its
//! DevTools endpoint answers.

use crate::browser;
use crate::cgroup::Cgroup;
use crate::context::Context;
use crate::dirs::SessionDirs;
use crate::error::{Error, Result};
use crate::registry::{Admission, BrowserInfo, NewSession};
use crate::spawn::{self, SpawnSpec};
use crate::terminate;
use browserd_proto::duration::{as_millis, format_millis};
use browserd_proto::{EndReason, Launch, SessionId, SessionInfo, SessionType};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a failed browser launch is given to exit politely before SIGKILL.
const FAILED_LAUNCH_GRACE: Duration = Duration::from_secs(2);

/// What will be run.
enum Plan {
    /// Exactly the client's argv (plus `args`).
    Command(Vec<String>),
    /// The detected browser with the daemon's flags.
    Browser(PathBuf),
}

/// Launches a session and returns it once it is running.
pub async fn launch(ctx: &Arc<Context>, request: Launch) -> Result<SessionInfo> {
    let ttl = session_ttl(ctx, request.ttl_ms)?;
    ctx.members
        .check_limits(request.memory_max.is_some(), request.pids_max.is_some())
        .map_err(Error::InvalidRequest)?;
    if let Some(cwd) = &request.cwd {
        if !Path::new(cwd).is_dir() {
            return Err(Error::InvalidRequest(format!(
                "`cwd` {cwd} is not a directory"
            )));
        }
    }
    let plan = match &request.command {
        Some(command) => Plan::Command(command.iter().chain(&request.args).cloned().collect()),
        None => Plan::Browser(
            browser::detect(ctx.config.browser.as_deref()).map_err(Error::LaunchFailed)?,
        ),
    };
    let started = Instant::now();
    let admission = ctx.registry.admit(request.tracking_id.as_ref(), ttl)?;
    let prepared = match prepare(ctx, &request, plan, &admission.id) {
        Ok(prepared) => prepared,
        Err(e) => {
            ctx.registry.cancel(admission);
            return Err(e);
        }
    };
    let (id, stderr) = spawn_and_register(ctx, &request, prepared, admission)?;
    // The process table warms up for a kill; a session in a cgroup needs no table.
    if ctx.members.cgroup(&id).is_none() {
        ctx.scanner.kick();
    }
    let Some(stderr) = stderr else {
        // The session as it started, answered once its record is on disk.
        let session = info(ctx, &id)?;
        ctx.registry.recorded().await?;
        return Ok(session);
    };
    let stderr = match ctx.pipes.keep(&id, stderr) {
        Ok(reading) => reading,
        Err(e) => {
            let reason = format!("cannot keep the browser's stderr: {e}");
            return Err(fail(ctx, &id, reason).await);
        }
    };
    let timeout = ctx.config.launch_timeout.0;
    let ready = match browser::wait_for_endpoint(stderr, timeout).await {
        Ok(endpoint) => {
            let left = timeout.saturating_sub(started.elapsed());
            if browser::endpoint_answers(&endpoint, left).await {
                Ok(endpoint)
            } else {
                Err(format!(
                    "the DevTools endpoint {endpoint} does not accept connections"
                ))
            }
        }
        Err(reason) => Err(reason),
    };
    match ready {
        Ok(endpoint) => {
            let session = ctx.registry.mark_running(&id, endpoint)?;
            ctx.registry.recorded().await?;
            tracing::info!(session = %id, endpoint = session.ws_endpoint.as_deref(), ms = as_millis(started.elapsed()), "browser ready");
            Ok(session)
        }
        Err(reason) => Err(fail(ctx, &id, reason).await),
    }
}

/// What a launch will run, its dirs already made.
struct Prepared {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    dirs: Option<SessionDirs>,
}

/// Makes a browser session's dirs and builds its argv and environment.
fn prepare(ctx: &Context, request: &Launch, plan: Plan, id: &SessionId) -> Result<Prepared> {
    let mut env = request.env.clone();
    let path = match plan {
        Plan::Command(argv) => {
            return Ok(Prepared {
                argv,
                env,
                dirs: None,
            })
        }
        Plan::Browser(path) => path,
    };
    let dirs = ctx.layout.create(id.as_str()).map_err(|e| {
        Error::LaunchFailed(format!(
            "cannot create the session's dirs under {}: {e}",
            ctx.layout.sessions().display()
        ))
    })?;
    for (name, dir) in dirs.env() {
        env.entry(name.into())
            .or_insert_with(|| dir.display().to_string());
    }
    let as_root = nix::unistd::geteuid().is_root();
    Ok(Prepared {
        argv: browser::argv(&path, &dirs.profile, as_root, &request.args),
        env,
        dirs: Some(dirs),
    })
}

/// Spawns the leader and registers the session, both under the reap lock, so the leader
/// cannot be reaped (and its pid reused) before it is known; nothing that touches the
/// filesystem runs under it. On failure the admission is given back and the dirs removed.
/// Returns the browser's stderr when the launch must wait for its endpoint.
fn spawn_and_register(
    ctx: &Context,
    request: &Launch,
    prepared: Prepared,
    admission: Admission,
) -> Result<(SessionId, Option<OwnedFd>)> {
    let Prepared { argv, env, dirs } = prepared;
    let kind = request.kind();
    let id = admission.id.clone();
    let undo = |admission: Admission| {
        ctx.registry.cancel(admission);
        ctx.members.release(&id);
        for dir in dirs.iter().flat_map(SessionDirs::owned) {
            crate::dirs::remove_dir(&dir);
        }
    };
    let cgroup = match contain(ctx, request, &id) {
        Ok(cgroup) => cgroup,
        Err(e) => {
            undo(admission);
            return Err(e);
        }
    };
    let spec = SpawnSpec {
        argv: &argv,
        env: &env,
        cwd: request.cwd.as_deref().map(Path::new),
        session: &id,
        browser: dirs.is_some(),
    };
    let reap = ctx.reaper.hold();
    let leader = match spawn::spawn(spec, cgroup.as_deref()) {
        Ok(leader) => leader,
        Err(e) => {
            drop(reap);
            undo(admission);
            return Err(Error::LaunchFailed(format!(
                "cannot start `{}`: {e}",
                argv[0]
            )));
        }
    };
    let pid = leader.pid;
    // Unreaped (the reap lock is held), so its stat is readable even if it already died.
    let start_time = crate::procs::read_stat(pid).map_or(0, |p| p.start_time);
    let browser = (kind == SessionType::Browser).then(|| BrowserInfo {
        ws_endpoint: None,
        profile_dir: dirs
            .as_ref()
            .map(|d| browser::user_profile(&request.args).unwrap_or_else(|| d.profile.clone())),
    });
    let id = ctx.registry.insert(
        admission,
        NewSession {
            tracking_id: request.tracking_id.clone(),
            kind,
            workspace: request.workspace.clone().unwrap_or_default(),
            command: argv,
            pid,
            start_time,
            starting: dirs.is_some(),
            browser,
            owned_dirs: dirs.as_ref().map(SessionDirs::owned).unwrap_or_default(),
            cgroup: cgroup.as_ref().map(|c| c.path().to_path_buf()),
        },
    );
    drop(reap);
    tracing::info!(session = %id, pid, "launched");
    Ok((id, leader.stderr))
}

/// The session's own cgroup with its limits set, where browserd contains sessions in
/// cgroups (`check_limits` already refused limits it cannot enforce).
fn contain(ctx: &Context, request: &Launch, id: &SessionId) -> Result<Option<Arc<Cgroup>>> {
    let cgroup = ctx
        .members
        .create(id)
        .map_err(|e| Error::LaunchFailed(format!("cannot create the session's cgroup: {e}")))?;
    if let Some(cgroup) = &cgroup {
        let limited = request
            .memory_max
            .map_or(Ok(()), |bytes| cgroup.set_memory_max(bytes))
            .and_then(|()| {
                request
                    .pids_max
                    .map_or(Ok(()), |max| cgroup.set_pids_max(max))
            });
        limited
            .map_err(|e| Error::LaunchFailed(format!("cannot set the session's limits: {e}")))?;
    }
    Ok(cgroup)
}

/// Terminates a browser that failed to start, so nothing of it is left, and explains.
async fn fail(ctx: &Arc<Context>, id: &SessionId, reason: String) -> Error {
    tracing::warn!(session = %id, "launch failed: {reason}");
    let grace = ctx.config.grace().min(FAILED_LAUNCH_GRACE);
    let results =
        terminate::terminate_all(ctx, vec![id.clone()], true, grace, EndReason::LaunchFailed).await;
    let leftover = results
        .into_iter()
        .filter_map(Result::err)
        .map(|f| format!(" (and it could not be cleaned up: {})", f.message))
        .collect::<String>();
    Error::LaunchFailed(format!("{reason}{leftover}"))
}

fn info(ctx: &Context, id: &SessionId) -> Result<SessionInfo> {
    ctx.registry
        .info(id)
        .ok_or_else(|| Error::Internal(format!("session {id} vanished during launch")))
}

/// The session's TTL: the request's, else the configured default, never above the maximum.
fn session_ttl(ctx: &Context, ttl_ms: Option<u64>) -> Result<Option<Duration>> {
    let ttl = ttl_ms
        .map(Duration::from_millis)
        .or(ctx.config.default_ttl.map(|t| t.0));
    if let (Some(ttl), Some(max)) = (ttl, ctx.config.max_ttl) {
        if ttl > max.0 {
            return Err(Error::InvalidRequest(format!(
                "ttl {} exceeds the maximum {}",
                format_millis(as_millis(ttl)),
                format_millis(as_millis(max.0))
            )));
        }
    }
    Ok(ttl)
}
