//! Coalesced process scans. The scanner owns the process table; a caller asks for the
//! processes of some sessions as of a refresh that starts after its request, and every
//! request waiting when a refresh starts is answered by that one refresh, each with only the
//! sessions it asked for. Refreshes run on the blocking pool.

use crate::procs::{Owner, ProcInfo, ProcTable};
use browserd_proto::SessionId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// One caller waiting for a refresh.
struct Request {
    sessions: Vec<SessionId>,
    reply: Option<oneshot::Sender<HashMap<SessionId, Vec<ProcInfo>>>>,
}

/// How long a kick waits for others to join it.
const KICK_DELAY: Duration = Duration::from_millis(20);

#[derive(Default)]
pub struct Scanner {
    queue: Mutex<Vec<Request>>,
    wake: Notify,
    /// A kicked refresh is pending.
    kicked: AtomicBool,
}

impl Scanner {
    /// The processes of `sessions` (as the table lists them: re-read before relying on a
    /// process's state), from a refresh that started after this call.
    pub async fn processes(&self, sessions: Vec<SessionId>) -> HashMap<SessionId, Vec<ProcInfo>> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Request {
            sessions,
            reply: Some(reply),
        });
        // The scanner task is gone only at shutdown, when nothing is tracked any more.
        answer.await.unwrap_or_default()
    }

    /// The processes of one session, from a refresh that started after this call.
    pub async fn processes_of(&self, id: &SessionId) -> Vec<ProcInfo> {
        let mut found = self.processes(vec![id.clone()]).await;
        found.remove(id).unwrap_or_default()
    }

    /// Asks for a refresh nobody waits for, soon: after a launch, so the table is warm when
    /// a kill needs it (it would otherwise meet the new session's processes at its kill);
    /// after a session ends, so exited processes are forgotten off the request path. Kicks
    /// within `KICK_DELAY` of each other share one refresh.
    pub fn kick(self: &Arc<Self>) {
        if self.kicked.swap(true, Ordering::AcqRel) {
            return;
        }
        let scanner = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(KICK_DELAY).await;
            scanner.kicked.store(false, Ordering::Release);
            scanner.enqueue(Request {
                sessions: Vec::new(),
                reply: None,
            });
        });
    }

    fn enqueue(&self, request: Request) {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(request);
        self.wake.notify_one();
    }

    /// The scanner loop. `root_owner` decides who owns a new direct child of the daemon; it
    /// runs on the blocking pool, after the child was read from `/proc`.
    pub async fn run(
        self: Arc<Self>,
        root_owner: impl Fn(&ProcInfo) -> Owner + Send + Sync + 'static,
    ) {
        let root_owner = Arc::new(root_owner);
        let mut table = ProcTable::default();
        loop {
            self.wake.notified().await;
            let requests = std::mem::take(
                &mut *self
                    .queue
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            if requests.is_empty() {
                continue;
            }
            let root_owner = root_owner.clone();
            let background = requests.iter().all(|r| r.reply.is_none());
            let job = tokio::task::spawn_blocking(move || {
                let me = std::process::id() as i32;
                let started = std::time::Instant::now();
                if let Err(e) = table.refresh(me, background, |root| root_owner(root)) {
                    tracing::error!("cannot read /proc: {e}");
                }
                tracing::debug!(background, took = ?started.elapsed(), "process table refreshed");
                for mut request in requests {
                    if let Some(reply) = request.reply.take() {
                        let found = request
                            .sessions
                            .into_iter()
                            .map(|id| {
                                let processes = table.of(&id);
                                (id, processes)
                            })
                            .collect();
                        let _ = reply.send(found);
                    }
                }
                table
            });
            table = match job.await {
                Ok(table) => table,
                Err(e) => {
                    tracing::error!("process scan failed: {e}");
                    ProcTable::default()
                }
            };
        }
    }
}
