//! The daemon's shared context and the loops that keep sessions' state true: the reaper
//! (SIGCHLD → reap → record), and the gone-checker, which turns "leader reaped" into
//! "session exited" once a scan shows nothing of the session remains.

use crate::config::Config;
use crate::procs;
use crate::reaper::Reaper;
use crate::registry::Registry;
use crate::scanner::Scanner;
use crate::signals;
use crate::terminate;
use browserd_proto::SessionId;
use nix::sys::signal::Signal;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

/// How long the polite close may take to reach the browser.
const POLITE_CONNECT: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Daemon {
    pub config: Config,
    pub registry: Registry,
    pub reaper: Reaper,
    pub scanner: Arc<Scanner>,
    pub started: Instant,
    /// Woken after every reap batch, to check whether sessions became gone.
    reaped: Notify,
}

impl Daemon {
    pub fn new(config: Config) -> Daemon {
        Daemon {
            registry: Registry::new(&config),
            config,
            reaper: Reaper::default(),
            scanner: Arc::new(Scanner::default()),
            started: Instant::now(),
            reaped: Notify::new(),
        }
    }

    /// Starts the background loops. The SIGCHLD stream is registered before this returns,
    /// so no child's exit can be missed.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let mut sigchld = signal(SignalKind::child())?;
        let daemon = self.clone();
        tokio::spawn(async move {
            loop {
                let reaped = daemon.reaper.reap_all(|batch| {
                    daemon.registry.record_reaped(batch);
                    !batch.is_empty()
                });
                if reaped {
                    daemon.reaped.notify_one();
                }
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        let daemon = self.clone();
        tokio::spawn(async move {
            loop {
                daemon.reaped.notified().await;
                daemon.check_gone().await;
            }
        });
        let daemon = self.clone();
        tokio::spawn(self.scanner.clone().run(move |root| {
            let marker = procs::read_env_var(root.pid, browserd_proto::SESSION_ENV)
                .and_then(|value| value.parse().ok());
            let _reap = daemon.reaper.hold();
            daemon.registry.owner_for(root, marker)
        }));
        // A first refresh lists /proc once, so later ones only meet newcomers.
        self.scanner.kick();
        tokio::spawn(crate::expiry::run(self.clone()));
        Ok(())
    }

    /// Finishes every session whose leader is reaped and of which nothing remains; a session
    /// whose leader exited on its own but left processes behind has them terminated, the way
    /// systemd stops a service whose main process exited.
    async fn check_gone(self: &Arc<Self>) {
        let candidates = self.registry.gone_candidates();
        if candidates.is_empty() {
            return;
        }
        let mut found = self.scanner.processes(candidates.clone()).await;
        for id in candidates {
            let processes = found.remove(&id).unwrap_or_default();
            if !procs::any_remaining(&processes) {
                self.finish(&id).await;
            } else if self.registry.take_left_behind(&id) {
                let pids = procs::live_pids(&processes);
                tracing::info!(session = %id, ?pids, "leader exited; terminating what it left behind");
                terminate::start_detached(self, &id, self.config.grace);
            }
        }
    }

    /// Marks a session exited, removes its dirs, then tells its termination (if any), so a
    /// kill's response is only sent once nothing of the session is left.
    async fn finish(self: &Arc<Self>, id: &SessionId) {
        let Some(finished) = self.registry.finish(id) else {
            return;
        };
        self.scanner.kick();
        if !finished.owned_dirs.is_empty() {
            let dirs = finished.owned_dirs;
            let removal = tokio::task::spawn_blocking(move || {
                for dir in dirs {
                    crate::launch::remove_dir(&dir);
                }
            });
            let _ = removal.await;
        }
        if let Some(termination) = finished.termination {
            termination.mark_gone();
        }
    }

    /// Sends `signal` to every process of the session: its group (while the leader is
    /// unreaped, which pins the pgid) and each process a fresh scan attributes to it. With
    /// `signalled`, a process already sent this signal is skipped, so sweeps repeated during
    /// the grace period only reach newcomers.
    pub async fn signal_session(
        &self,
        id: &SessionId,
        signal: Signal,
        mut signalled: Option<&mut HashSet<procs::ProcKey>>,
    ) {
        let first_sweep = signalled.as_ref().is_none_or(|s| s.is_empty());
        let group = {
            let _reap = self.reaper.hold();
            let group = self.registry.unreaped_leader(id);
            if let (Some(pgid), true) = (group, first_sweep) {
                if let Err(e) = signals::kill_group(pgid, signal) {
                    tracing::warn!(session = %id, pgid, "cannot signal group: {e}");
                }
            }
            group
        };
        let processes = self.scanner.processes_of(id).await;
        // Re-read each process: its group may have changed since the table first saw it
        // (a crash handler calls setsid after forking).
        for process in procs::current(&processes) {
            let in_group = group == Some(process.pgid);
            if let Some(seen) = signalled.as_deref_mut() {
                // A group member seen on the first sweep got the group signal.
                if !seen.insert(process.key()) || (first_sweep && in_group) {
                    continue;
                }
            } else if in_group {
                continue;
            }
            match signals::kill_process(&process, signal) {
                Ok(true) => tracing::debug!(session = %id, pid = process.pid, ?signal, "signalled"),
                Ok(false) => {}
                Err(e) => tracing::warn!(session = %id, pid = process.pid, "cannot signal: {e}"),
            }
        }
    }

    /// The session's live pids, from a fresh scan, sorted.
    pub async fn live_pids(&self, id: &SessionId) -> Vec<i32> {
        procs::live_pids(&self.scanner.processes_of(id).await)
    }

    /// The polite first step of a termination, before SIGTERM: a browser with a DevTools
    /// endpoint is asked to close itself. Returns whether it was asked; sandboxes have no
    /// such step.
    pub async fn polite_close(&self, id: &SessionId) -> bool {
        let endpoint = self
            .registry
            .update(id, |s| {
                s.browser.as_ref().and_then(|b| b.ws_endpoint.clone())
            })
            .flatten();
        match endpoint {
            Some(endpoint) => crate::browser::close(&endpoint, POLITE_CONNECT).await,
            None => false,
        }
    }
}
