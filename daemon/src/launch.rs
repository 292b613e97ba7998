//! The `launch` operation: admission (capacity, tracking id, TTL), spawning under the reap
//! lock, and registration. A browser session without a `command` gets the detected
//! Chromium with quiet, self-contained flags, its own profile and TMPDIR, and is reported
//! only once its DevTools endpoint answers.

use crate::browser::{self, SessionDirs};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::registry::{BrowserInfo, Phase, Session};
use crate::spawn::{self, SpawnSpec};
use crate::terminate;
use browserd_proto::duration::{as_millis, format_millis};
use browserd_proto::{Launch, SessionId, SessionInfo, SessionType};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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
pub async fn launch(daemon: &Arc<Daemon>, request: Launch) -> Result<SessionInfo> {
    let ttl = session_ttl(daemon, request.ttl_ms)?;
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
            browser::detect(daemon.config.browser.as_deref()).map_err(Error::LaunchFailed)?,
        ),
    };
    let started = Instant::now();
    let (id, stderr) = start(daemon, &request, plan, ttl)?;
    daemon.scanner.kick();
    let Some(stderr) = stderr else {
        return info(daemon, &id);
    };
    let timeout = daemon.config.launch_timeout;
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
        Ok(endpoint) => mark_running(daemon, &id, endpoint, started.elapsed()),
        Err(reason) => Err(fail(daemon, &id, reason).await),
    }
}

/// Admits, prepares and spawns the session, all under the reap lock, and registers it.
/// Returns the browser's stderr when the caller must wait for its endpoint.
fn start(
    daemon: &Arc<Daemon>,
    request: &Launch,
    plan: Plan,
    ttl: Option<Duration>,
) -> Result<(SessionId, Option<OwnedFd>)> {
    let _reap = daemon.reaper.hold();
    let admission = daemon.registry.admit(request.tracking_id.as_ref(), ttl)?;
    let id = admission.id;
    let mut env = request.env.clone();
    let (argv, dirs) = match plan {
        Plan::Command(argv) => (argv, None),
        Plan::Browser(path) => {
            let dirs = SessionDirs::create(&daemon.config.state_dir, id.as_str()).map_err(|e| {
                Error::LaunchFailed(format!(
                    "cannot create the session dir under {}: {e}",
                    daemon.config.state_dir.display()
                ))
            })?;
            for (name, dir) in dirs.env() {
                env.entry(name.into())
                    .or_insert_with(|| dir.display().to_string());
            }
            let as_root = nix::unistd::geteuid().is_root();
            (
                browser::argv(&path, &dirs.profile, as_root, &request.args),
                Some(dirs),
            )
        }
    };
    let spawned = spawn_leader(&argv, &env, request, &id, dirs.is_some());
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            if let Some(dirs) = &dirs {
                remove_dir(&dirs.root);
            }
            return Err(e);
        }
    };
    let pid = child.id() as i32;
    // Unreaped (the reap lock is held), so its stat is readable even if it already died.
    let start_time = crate::procs::read_stat(pid).map_or(0, |p| p.start_time);
    let kind = request.kind();
    daemon.registry.insert(Session {
        id: id.clone(),
        tracking_id: request.tracking_id.clone(),
        kind,
        workspace: request.workspace.clone().unwrap_or_default(),
        command: argv.clone(),
        pid,
        start_time,
        started_at: SystemTime::now(),
        expires: admission.expires,
        leases: BTreeSet::new(),
        leader_exit: None,
        left_behind: false,
        phase: if dirs.is_some() {
            Phase::Starting
        } else {
            Phase::Running
        },
        browser: (kind == SessionType::Browser).then(|| BrowserInfo {
            ws_endpoint: None,
            profile_dir: dirs
                .as_ref()
                .map(|d| browser::user_profile(&request.args).unwrap_or_else(|| d.profile.clone())),
        }),
        owned_dirs: dirs.map(|d| vec![d.root]).unwrap_or_default(),
    });
    tracing::info!(session = %id, pid, command = ?argv, "launched");
    Ok((id, child.stderr.take().map(OwnedFd::from)))
}

fn spawn_leader(
    argv: &[String],
    env: &BTreeMap<String, String>,
    request: &Launch,
    id: &SessionId,
    browser: bool,
) -> Result<std::process::Child> {
    spawn::spawn(SpawnSpec {
        argv,
        env,
        cwd: request.cwd.as_deref().map(Path::new),
        session: id,
        // A browser's stderr carries its DevTools endpoint; its stdout is noise.
        stdout: if browser {
            Stdio::null()
        } else {
            Stdio::inherit()
        },
        stderr: if browser {
            Stdio::piped()
        } else {
            Stdio::inherit()
        },
    })
    .map_err(|e| Error::LaunchFailed(format!("cannot start `{}`: {e}", argv[0])))
}

/// Records the endpoint and reports the session running, unless it was terminated while
/// starting.
fn mark_running(
    daemon: &Daemon,
    id: &SessionId,
    endpoint: String,
    took: Duration,
) -> Result<SessionInfo> {
    let promoted = daemon.registry.update(id, |session| {
        if !matches!(session.phase, Phase::Starting) {
            return false;
        }
        session.phase = Phase::Running;
        if let Some(browser) = &mut session.browser {
            browser.ws_endpoint = Some(endpoint.clone());
        }
        true
    });
    if promoted != Some(true) {
        return Err(Error::LaunchFailed(format!(
            "session {id} was terminated while starting"
        )));
    }
    tracing::info!(session = %id, %endpoint, ms = as_millis(took), "browser ready");
    info(daemon, id)
}

/// Terminates a browser that failed to start, so nothing of it is left, and explains.
async fn fail(daemon: &Arc<Daemon>, id: &SessionId, reason: String) -> Error {
    tracing::warn!(session = %id, "launch failed: {reason}");
    let grace = daemon.config.grace.min(FAILED_LAUNCH_GRACE);
    let results = terminate::terminate_all(daemon, vec![id.clone()], true, grace).await;
    let leftover = results
        .into_iter()
        .filter_map(Result::err)
        .map(|f| format!(" (and it could not be cleaned up: {})", f.message))
        .collect::<String>();
    Error::LaunchFailed(format!("{reason}{leftover}"))
}

fn info(daemon: &Daemon, id: &SessionId) -> Result<SessionInfo> {
    daemon
        .registry
        .info(id)
        .ok_or_else(|| Error::Internal(format!("session {id} vanished during launch")))
}

/// The session's TTL: the request's, else the configured default, never above the maximum.
fn session_ttl(daemon: &Daemon, ttl_ms: Option<u64>) -> Result<Option<Duration>> {
    let ttl = ttl_ms
        .map(Duration::from_millis)
        .or(daemon.config.default_ttl);
    if let (Some(ttl), Some(max)) = (ttl, daemon.config.max_ttl) {
        if ttl > max {
            return Err(Error::InvalidRequest(format!(
                "ttl {} exceeds the maximum {}",
                format_millis(as_millis(ttl)),
                format_millis(as_millis(max))
            )));
        }
    }
    Ok(ttl)
}

/// Removes a dir the daemon created, retrying briefly: a process that is exiting may still
/// be writing into it.
pub fn remove_dir(dir: &Path) {
    for attempt in 0..5 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if attempt == 4 => {
                tracing::warn!(dir = %dir.display(), "cannot remove session dir: {e}");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20 << attempt)),
        }
    }
}
