//! The `launch` operation: admission (capacity, tracking id, TTL; at capacity, a wait in
//! the launch queue), spawning and registration. A browser session without a `command`
//! gets the detected Chromium with quiet, self-contained flags, its own profile and TMPDIR,
//! and is reported only once its DevTools endpoint answers; with a warm pool, a default
//! browser launch is handed a browser launched ahead instead. Warm browsers themselves are
//! launched here too, the same way.

use crate::browser;
use crate::caller::Caller;
use crate::cgroup::Cgroup;
use crate::context::Context;
use crate::dirs::SessionDirs;
use crate::error::{Error, Result};
use crate::registry::{Admission, Admitted, BrowserInfo, NewSession, Queued, Registry};
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

/// Who a spawned leader is registered as.
enum Slot {
    /// A client's session, in its admitted slot.
    Session(Admission),
    /// A warm browser of the pool.
    Warm(SessionId),
}

impl Slot {
    fn id(&self) -> &SessionId {
        match self {
            Slot::Session(admission) => &admission.id,
            Slot::Warm(id) => id,
        }
    }
}

/// Launches a session and returns it once it is running.
pub async fn launch(
    ctx: &Arc<Context>,
    request: Launch,
    caller: &Caller<'_>,
) -> Result<SessionInfo> {
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
    let mut admission = admit(ctx, &request, ttl, caller).await?;
    let queued = admission.granted_at;
    if ctx.pool.serves(&request) {
        let workspace = request.workspace.clone().unwrap_or_default();
        match ctx.registry.hand_out(admission, workspace) {
            Ok(session) => {
                slot_used(queued);
                ctx.pool.handed_out();
                ctx.registry.recorded().await?;
                tracing::info!(session = %session.id, pid = session.pid, "launched from the warm pool");
                return Ok(session);
            }
            Err(back) => {
                ctx.pool.missed();
                admission = back;
            }
        }
    }
    let prepared = match prepare(ctx, &request, plan, &admission.id) {
        Ok(prepared) => prepared,
        Err(e) => {
            ctx.registry.cancel(admission);
            return Err(e);
        }
    };
    let spawned = spawn_off_loop(ctx, &request, prepared, Slot::Session(admission)).await?;
    let id = spawned.id;
    slot_used(queued);
    // The process table warms up for a kill; a session in a cgroup needs no table.
    if ctx.members.cgroup(&id).is_none() {
        ctx.scanner.kick();
    }
    let Some(stderr) = spawned.stderr else {
        // The session as it started, answered once its record is written.
        let session = spawned.registered.map_or_else(|| info(ctx, &id), Ok)?;
        ctx.registry.recorded().await?;
        return Ok(session);
    };
    let session = until_ready(ctx, &id, stderr, started).await?;
    ctx.registry.recorded().await?;
    Ok(session)
}

/// Logs how soon a queued launch had its session started after its slot freed (the bench
/// reads it).
fn slot_used(granted_at: Option<Instant>) {
    if let Some(at) = granted_at {
        let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::debug!(target: "browserd::timing", after_slot_freed_us = us, "queued launch started");
    }
}

/// Launches a warm browser for the pool: the detected browser with the daemon's flags, its
/// own dirs and cgroup, registered hidden. Returns once its endpoint answers.
pub async fn warm(ctx: &Arc<Context>) -> Result<SessionId> {
    let path = browser::detect(ctx.config.browser.as_deref()).map_err(Error::LaunchFailed)?;
    let started = Instant::now();
    let id = ctx.registry.admit_warm()?;
    let request = Launch::default();
    let prepared = prepare(ctx, &request, Plan::Browser(path), &id)?;
    let spawned = spawn_off_loop(ctx, &request, prepared, Slot::Warm(id)).await?;
    let id = spawned.id;
    ctx.scanner.kick();
    let stderr = spawned
        .stderr
        .ok_or_else(|| Error::Internal("a warm browser without stderr".into()))?;
    until_ready(ctx, &id, stderr, started).await?;
    Ok(id)
}

/// A slot for the launch: at once, or after a wait in the queue up to the request's
/// `queue_timeout_ms` (default `--queue-timeout`; 0: no wait).
async fn admit(
    ctx: &Context,
    request: &Launch,
    ttl: Option<Duration>,
    caller: &Caller<'_>,
) -> Result<Admission> {
    let wait = request
        .queue_timeout_ms
        .map_or(ctx.config.queue_timeout.0, Duration::from_millis);
    match ctx
        .registry
        .admit(request.tracking_id.as_ref(), ttl, !wait.is_zero())?
    {
        Admitted::Now(admission) => Ok(admission),
        Admitted::Queued(queued) => wait_in_queue(ctx, queued, wait, caller).await,
    }
}

/// Why a queued launch stopped waiting.
enum Waited {
    Granted(Result<Admission>),
    TimedOut,
    HungUp,
    /// A reload is draining the server.
    Draining,
}

/// Waits in the queue for a slot, at most `wait`. The slot comes the moment one frees
/// (the registry hands it over; nothing polls). A client that hangs up leaves the queue. A
/// reload that drains the server meanwhile hands the request over unanswered: the next
/// image reads it again and queues it again (its wait starts again).
async fn wait_in_queue(
    ctx: &Context,
    queued: Queued,
    wait: Duration,
    caller: &Caller<'_>,
) -> Result<Admission> {
    let ticket = queued.ticket;
    let mut place = Place {
        registry: &ctx.registry,
        queued: Some(queued),
    };
    let waited = tokio::select! {
        granted = place.granted() => Waited::Granted(granted),
        () = tokio::time::sleep(wait) => Waited::TimedOut,
        () = caller.hung_up() => Waited::HungUp,
        () = ctx.server.draining(), if caller.can_hand_over() => Waited::Draining,
    };
    let admission = match waited {
        Waited::Granted(granted) => granted,
        // A slot granted at the very moment the wait ended is taken all the same.
        Waited::TimedOut => place.leave().ok_or_else(|| {
            Error::Capacity(format!(
                "the launch waited {} in the launch queue and no slot freed up (max_sessions {}); retry later, wait longer (queue_timeout_ms, --queue-timeout), or kill sessions",
                humantime::format_duration(wait),
                ctx.config.max_sessions
            ))
        }),
        Waited::HungUp => {
            if let Some(admission) = place.leave() {
                ctx.registry.cancel(admission);
            }
            Err(Error::Capacity(
                "the client hung up while its launch waited in the queue".into(),
            ))
        }
        Waited::Draining => place.leave().ok_or_else(|| {
            caller.hand_over(ticket);
            Error::Internal("handed over unanswered to the reloaded daemon".into())
        }),
    }?;
    // Other tasks ran while this one waited; from here to its registration none does.
    ctx.registry.still_admitted(admission)
}

/// A launch's place in the queue; it leaves the queue when dropped (its request was
/// cancelled), giving back a slot granted meanwhile.
struct Place<'a> {
    registry: &'a Registry,
    queued: Option<Queued>,
}

impl Place<'_> {
    async fn granted(&mut self) -> Result<Admission> {
        let Some(queued) = &mut self.queued else {
            return std::future::pending().await;
        };
        let granted = queued.granted().await;
        self.queued = None;
        granted
    }

    /// Leaves the queue; returns the slot if one was granted meanwhile.
    fn leave(&mut self) -> Option<Admission> {
        self.queued
            .take()
            .and_then(|queued| self.registry.leave_queue(queued))
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if let Some(admission) = self.leave() {
            self.registry.cancel(admission);
        }
    }
}

/// Waits until a spawned browser's endpoint answers and makes it running; a browser that
/// does not get there is terminated, and the launch fails saying why.
async fn until_ready(
    ctx: &Arc<Context>,
    id: &SessionId,
    stderr: OwnedFd,
    started: Instant,
) -> Result<SessionInfo> {
    let stderr = match ctx.pipes.keep(id, stderr) {
        Ok(reading) => reading,
        Err(e) => {
            let reason = format!("cannot keep the browser's stderr: {e}");
            return Err(fail(ctx, id, reason).await);
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
            let session = ctx.registry.mark_running(id, endpoint)?;
            tracing::info!(session = %id, endpoint = session.ws_endpoint.as_deref(), ms = as_millis(started.elapsed()), "browser ready");
            Ok(session)
        }
        Err(reason) => Err(fail(ctx, id, reason).await),
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

/// [`spawn_and_register`] on a spawner thread (see `spawners`). A `vfork`-style spawn
/// suspends its thread until the child has exec'd, which on a loaded machine can take a
/// while; the event loop serves every other client meanwhile (the reap lock it holds is
/// shared: no kill waits for it).
async fn spawn_off_loop(
    ctx: &Arc<Context>,
    request: &Launch,
    prepared: Prepared,
    slot: Slot,
) -> Result<Spawned> {
    let job_ctx = ctx.clone();
    let request = request.clone();
    ctx.spawners
        .run(move || spawn_and_register(&job_ctx, &request, prepared, slot))
        .await
        .unwrap_or_else(|| Err(Error::Internal("the spawn did not finish".into())))
}

/// Spawns the leader and registers it, both under the reap lock, so the leader cannot be
/// reaped (and its pid reused) before it is known; nothing that touches the filesystem runs
/// under it. On failure the slot is given back and the dirs removed. Returns the browser's
/// stderr when the launch must wait for its endpoint.
fn spawn_and_register(
    ctx: &Context,
    request: &Launch,
    prepared: Prepared,
    slot: Slot,
) -> Result<Spawned> {
    let Prepared { argv, env, dirs } = prepared;
    let kind = request.kind();
    let id = slot.id().clone();
    let undo = |slot: Slot| {
        if let Slot::Session(admission) = slot {
            ctx.registry.cancel(admission);
        }
        ctx.members.release(&id);
        for dir in dirs.iter().flat_map(SessionDirs::owned) {
            crate::dirs::remove_dir(&dir);
        }
    };
    let cgroup = match contain(ctx, request, &id) {
        Ok(cgroup) => cgroup,
        Err(e) => {
            undo(slot);
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
    let reap = ctx.reaper.hold_registering();
    // Shutdown takes the registering lock once it has begun, then ends every session it
    // finds: a spawn that comes after must not start at all.
    if ctx.registry.is_shutting_down() {
        drop(reap);
        undo(slot);
        return Err(Error::ShuttingDown);
    }
    let leader = match spawn::spawn(spec, cgroup.as_deref()) {
        Ok(leader) => leader,
        Err(e) => {
            drop(reap);
            undo(slot);
            return Err(Error::LaunchFailed(format!(
                "cannot start `{}`: {e}",
                argv[0]
            )));
        }
    };
    let pid = leader.pid;
    ctx.reaper.watch(pid);
    // Unreaped (the reap lock is held), so its stat is readable even if it already died.
    let start_time = crate::procs::read_stat(pid).map_or(0, |p| p.start_time);
    let browser = (kind == SessionType::Browser).then(|| BrowserInfo {
        ws_endpoint: None,
        profile_dir: dirs
            .as_ref()
            .map(|d| browser::user_profile(&request.args).unwrap_or_else(|| d.profile.clone())),
    });
    let new = NewSession {
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
        spawner: Some(nix::unistd::gettid().as_raw()),
    };
    let registered = match slot {
        Slot::Session(admission) => {
            let session = ctx.registry.insert(admission, new);
            drop(reap);
            tracing::info!(session = %id, pid, "launched");
            Some(session)
        }
        Slot::Warm(_) => {
            ctx.registry.insert_warm(id.clone(), new);
            drop(reap);
            tracing::info!(warm = %id, pid, "launched a warm browser");
            None
        }
    };
    Ok(Spawned {
        id,
        registered,
        stderr: leader.stderr,
    })
}

/// A leader spawned and registered.
struct Spawned {
    id: SessionId,
    /// A client's session as registered (what a launch that need not wait answers).
    registered: Option<SessionInfo>,
    /// A browser's stderr, to read its DevTools endpoint from.
    stderr: Option<OwnedFd>,
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
