//! The `launch` operation: admission (capacity, tracking id, TTL), spawning under the reap
//! lock, and registration. Browser-specific preparation (executable detection, profile and
//! temp dirs, the DevTools endpoint) is layered on top for `browser` sessions.

use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::registry::{Phase, Session};
use crate::spawn::{self, SpawnSpec};
use browserd_proto::duration::format_millis;
use browserd_proto::{Launch, SessionInfo, SessionType};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    let kind = request.kind();
    let argv: Vec<String> = match &request.command {
        Some(command) => command.iter().chain(&request.args).cloned().collect(),
        None => return Err(Error::LaunchFailed(
            "browser sessions need a `command` (the path of a Chromium executable and its flags)"
                .into(),
        )),
    };
    let id = {
        let _reap = daemon.reaper.hold();
        let admission = daemon.registry.admit(request.tracking_id.as_ref(), ttl)?;
        let child = spawn::spawn(SpawnSpec {
            argv: &argv,
            env: &request.env,
            cwd: request.cwd.as_deref().map(Path::new),
            session: &admission.id,
            stdout: Stdio::inherit(),
            stderr: Stdio::inherit(),
        })
        .map_err(|e| Error::LaunchFailed(format!("cannot start `{}`: {e}", argv[0])))?;
        let pid = child.id() as i32;
        // Unreaped (the reap lock is held), so its stat is readable even if it already died.
        let start_time = crate::procs::read_stat(pid).map_or(0, |p| p.start_time);
        daemon.registry.insert(Session {
            id: admission.id.clone(),
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
            phase: Phase::Running,
            browser: (kind == SessionType::Browser).then(Default::default),
            owned_dirs: Vec::new(),
        });
        tracing::info!(session = %admission.id, pid, command = ?argv, "launched");
        admission.id
    };
    daemon
        .registry
        .info(&id)
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
                format_millis(browserd_proto::duration::as_millis(ttl)),
                format_millis(browserd_proto::duration::as_millis(max))
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
