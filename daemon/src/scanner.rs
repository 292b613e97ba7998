//! Coalesced process scans. A `/proc` pass costs time proportional to every process on the
//! machine, so concurrent needs share one: a caller asks for a scan that starts after its
//! request, and every caller waiting when a scan starts gets that same result. Scans run on
//! the blocking pool; the scanner owns the cache of environment markers it reads.

use crate::procs::{self, ProcInfo, ProcKey};
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
    /// The session's processes, zombies included.
    pub fn of(&self, id: &SessionId) -> &[ProcInfo] {
        self.by_session.get(id).map_or(&[], Vec::as_slice)
    }

    /// The session's live (non-zombie) processes.
    pub fn live_pids(&self, id: &SessionId) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .of(id)
            .iter()
            .filter(|p| !p.is_zombie())
            .map(|p| p.pid)
            .collect();
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
    pub async fn run(self: Arc<Self>, owners: impl Fn() -> Owners) {
        let mut markers = MarkerCache::default();
        loop {
            self.wake.notified().await;
            let generation = self.requested.load(Ordering::SeqCst);
            let view = owners();
            let job = tokio::task::spawn_blocking(move || {
                let by_session = scan_and_attribute(&view, &mut markers);
                (by_session, markers)
            });
            let (by_session, cache) = match job.await {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!("process scan failed: {e}");
                    (HashMap::new(), MarkerCache::default())
                }
            };
            markers = cache;
            self.latest.send_replace(Arc::new(Scan {
                generation,
                by_session,
            }));
        }
    }
}

/// Session markers read from orphans' environments, by process identity, so each orphan's
/// environment is read once.
#[derive(Default)]
struct MarkerCache {
    known: HashMap<ProcKey, Option<SessionId>>,
}

fn scan_and_attribute(
    owners: &Owners,
    markers: &mut MarkerCache,
) -> HashMap<SessionId, Vec<ProcInfo>> {
    let me = std::process::id() as i32;
    let snapshot = match procs::scan_descendants(me) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            tracing::error!("cannot read /proc: {e}");
            return HashMap::new();
        }
    };
    let roots: HashMap<i32, ProcInfo> = snapshot
        .descendants
        .iter()
        .filter(|(p, root)| p.pid == *root)
        .map(|(p, _)| (p.pid, *p))
        .collect();
    let mut owner_of_root: HashMap<i32, Option<SessionId>> = HashMap::new();
    for root in roots.values() {
        owner_of_root.insert(root.pid, owner_of(root, owners, markers));
    }
    markers
        .known
        .retain(|key, _| roots.get(&key.pid).is_some_and(|r| r.key() == *key));
    let mut by_session: HashMap<SessionId, Vec<ProcInfo>> = HashMap::new();
    for (process, root) in snapshot.descendants {
        if let Some(Some(id)) = owner_of_root.get(&root) {
            by_session.entry(id.clone()).or_default().push(process);
        }
    }
    by_session
}

/// Attributes a direct child of the daemon: a leader by identity; an adopted orphan by the
/// marker in its environment, else by the session or group it still carries. An orphan none
/// of these name is not the daemon's to touch (as PID 1 of a container, it may adopt
/// processes that were never part of a session).
fn owner_of(root: &ProcInfo, owners: &Owners, markers: &mut MarkerCache) -> Option<SessionId> {
    if let Some((id, start_time)) = owners.leaders.get(&root.pid) {
        if *start_time == root.start_time {
            return Some(id.clone());
        }
    }
    let marker = markers
        .known
        .entry(root.key())
        .or_insert_with(|| {
            procs::read_env_var(root.pid, SESSION_ENV).and_then(|v| v.parse::<SessionId>().ok())
        })
        .clone();
    marker
        .filter(|id| owners.live.contains(id))
        .or_else(|| owners.by_number.get(&root.sid).cloned())
        .or_else(|| owners.by_number.get(&root.pgid).cloned())
}
