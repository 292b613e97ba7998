//! Coalesced process scans. A `/proc` pass costs time proportional to every process on the
//! machine, so concurrent needs share one: a caller asks for a scan that starts after its
//! request, and every caller waiting when a scan starts gets that same result. Scans run on
//! the blocking pool; the scanner owns the cache of environment markers it reads.

use crate::procs::{self, Owner, ProcInfo, ProcTable};
use browserd_proto::{SessionId, SESSION_ENV};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Who owns what, as the registry sees it when a scan starts.
#[derive(Debug, Default, Clone)]
pub struct Owners {
    /// Unreaped leaders: pid → (session, start time).
    pub leaders: HashMap<i32, (SessionId, u64)>,
    /// Every session not yet exited, by its leader's pid number, which is also the sid and
    /// pgid its processes carry unless they moved.
    pub by_number: HashMap<i32, SessionId>,
    /// Every session not yet exited.
    pub live: HashSet<SessionId>,
}

/// One scan's result: each session's processes.
#[derive(Debug, Default)]
pub struct Scan {
    generation: u64,
    by_session: HashMap<SessionId, Vec<ProcInfo>>,
}

impl Scan {
    /// The session's processes as the table knows them: some may have exited since.
    pub fn of(&self, id: &SessionId) -> &[ProcInfo] {
        self.by_session.get(id).map_or(&[], Vec::as_slice)
    }

    /// Whether any process of the session still exists, zombies included (a zombie is not
    /// gone until it is reaped).
    pub fn any_remaining(&self, id: &SessionId) -> bool {
        self.of(id).iter().any(|p| procs::reread(p).is_some())
    }

    /// The session's processes as they are now (re-read), zombies and vanished ones left
    /// out.
    pub fn current(&self, id: &SessionId) -> Vec<ProcInfo> {
        self.of(id)
            .iter()
            .filter_map(procs::reread)
            .filter(|p| !p.is_zombie())
            .collect()
    }

    /// The session's live (non-zombie) pids.
    pub fn live_pids(&self, id: &SessionId) -> Vec<i32> {
        let mut pids: Vec<i32> = self.current(id).iter().map(|p| p.pid).collect();
        pids.sort_unstable();
        pids
    }
}

pub struct Scanner {
    requested: AtomicU64,
    wake: Notify,
    latest: watch::Sender<Arc<Scan>>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            requested: AtomicU64::new(0),
            wake: Notify::new(),
            latest: watch::Sender::new(Arc::new(Scan::default())),
        }
    }
}

impl Scanner {
    /// A scan that started after this call.
    pub async fn fresh(&self) -> Arc<Scan> {
        let mut rx = self.latest.subscribe();
        let want = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify_one();
        let scan = match rx.wait_for(|scan| scan.generation >= want).await {
            Ok(scan) => scan.clone(),
            // The scanner task is gone (shutdown): an empty scan is the truthful answer
            // for a daemon that is no longer tracking anything.
            Err(_) => Arc::new(Scan::default()),
        };
        scan
    }

    /// The scanner loop; `owners` is asked for the registry's view at each scan's start.
    /// The scanner loop. `owners` gives the registry's view; it is asked after the new
    /// processes are read (see [`ProcTable::refresh`]) and must hold the reap lock while it
    /// reads the registry, so that a leader being spawned is either not yet forked or already
    /// registered.
    pub async fn run(self: Arc<Self>, owners: impl Fn() -> Owners + Send + Sync + 'static) {
        let owners = Arc::new(owners);
        let mut table = ProcTable::default();
        loop {
            self.wake.notified().await;
            let generation = self.requested.load(Ordering::SeqCst);
            let owners = owners.clone();
            let job = tokio::task::spawn_blocking(move || {
                let me = std::process::id() as i32;
                let resolver = || {
                    let view = owners();
                    move |root: &ProcInfo| owner_of(root, &view)
                };
                if let Err(e) = table.refresh(me, resolver) {
                    tracing::error!("cannot read /proc: {e}");
                }
                let by_session = table.by_session();
                (by_session, table)
            });
            let (by_session, kept) = match job.await {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!("process scan failed: {e}");
                    (HashMap::new(), ProcTable::default())
                }
            };
            table = kept;
            self.latest.send_replace(Arc::new(Scan {
                generation,
                by_session,
            }));
        }
    }
}

/// Attributes a direct child of the daemon: a leader by identity; an adopted orphan by the
/// marker in its environment, else by the session or group it still carries. An orphan none
/// of these name is not the daemon's to touch (as PID 1 of a container, it may adopt
/// processes that were never part of a session).
fn owner_of(root: &ProcInfo, owners: &Owners) -> Owner {
    if let Some((id, start_time)) = owners.leaders.get(&root.pid) {
        if *start_time == root.start_time {
            return Owner::Session(id.clone());
        }
    }
    procs::read_env_var(root.pid, SESSION_ENV)
        .and_then(|v| v.parse::<SessionId>().ok())
        .filter(|id| owners.live.contains(id))
        .or_else(|| owners.by_number.get(&root.sid).cloned())
        .or_else(|| owners.by_number.get(&root.pgid).cloned())
        .map_or(Owner::Unowned, Owner::Session)
}
