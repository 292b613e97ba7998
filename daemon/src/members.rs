//! Which processes are a session's, and what is done to all of them at once. One design for
//! the two kinds of session:
//!
//! * A session with a cgroup (browserd owns a delegated cgroup v2 subtree): the kernel keeps
//!   the list. Members are `cgroup.procs` (no process can leave by `setsid` or a double
//!   fork), SIGKILL is `cgroup.kill` (atomic, even against a fork loop), "gone" is
//!   `populated 0` in `cgroup.events` (an inotify event wakes the gone checker; nothing is
//!   scanned) and nothing of it left in `/proc` (a process leaves its cgroup early in its
//!   exit, before it is a zombie and long before it is reaped): every process a sweep met
//!   in it gone, and none of the daemon's children still in it (see
//!   [`Members::confirm_gone`]), and what it uses is `cpu.stat` / `memory.current`.
//! * A session without one: its process group and whatever descends from it, found in the
//!   process table (`procs`, kept by the `scanner`), and "gone" proven by a listing.
//!
//! Which one a session is never changes: it is decided at launch and written down, so a
//! session started before a restart is tracked the same way after it.

use crate::cgroup::{self, Cgroup};
use crate::procs::{self, Confirmed, ProcInfo};
use crate::scanner::{Scanner, Usage};
use browserd_proto::SessionId;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// How sessions are contained, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Containment {
    /// `cgroup` or `process-group`.
    pub mode: &'static str,
    /// Without cgroups: why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With cgroups: the subtree, and the controllers each session's cgroup has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_root: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<String>,
}

type Seen = HashMap<SessionId, Vec<ProcInfo>>;

/// Lists the daemon's children that are not sessions' leaders and gives them to `look`,
/// with reaping held off until it returns: each stays the daemon's child, and its pid its
/// own, while it is looked at. `None` instead of the list where the daemon's children are
/// not where `sessions`' processes end up (a session adopted after a restart is not the
/// daemon's descendant) or cannot be read: then every process is looked at.
pub type HeldChildren = dyn Fn(&[SessionId], &mut dyn FnMut(Option<Vec<i32>>)) + Send + Sync;

/// The cgroup name of each child of the daemon's read so far, until it is reaped.
type ChildCgroups = HashMap<i32, Option<String>>;

pub struct Members {
    tree: Result<cgroup::Tree, cgroup::Unavailable>,
    /// Each session's cgroup, open.
    cgroups: Mutex<HashMap<SessionId, Arc<Cgroup>>>,
    /// The processes met in each session's cgroup, by the sweeps. A read of a cgroup's
    /// processes and their recording here happen under this lock, and so does a gone check's
    /// read of `populated` and of what was met: a process a sweep found in the cgroup is
    /// either among what the check looks at, or was found after the check saw the cgroup
    /// empty (it cannot have been in it then).
    seen: Arc<Mutex<Seen>>,
    /// What the gone checks read of the daemon's children: a child's cgroup is read once.
    child_cgroups: Arc<Mutex<ChildCgroups>>,
    /// Tells when a session's cgroup becomes empty.
    watcher: Option<Watcher>,
}

impl Members {
    /// Takes over the cgroup subtree if there is one (`explicit`: `--cgroup-root`). Must run
    /// inside the runtime (the empty-cgroup watcher is a tokio task).
    pub fn new(explicit: Option<&Path>, on_empty: impl Fn() + Send + Sync + 'static) -> Members {
        let tree = cgroup::Tree::take(explicit);
        let watcher = match &tree {
            Ok(tree) => match Watcher::start(Box::new(on_empty), memory_on(tree)) {
                Ok(watcher) => Some(watcher),
                Err(e) => {
                    tracing::error!("cannot watch cgroups for emptiness: {e}");
                    None
                }
            },
            Err(_) => None,
        };
        let tree = match (tree, &watcher) {
            (Ok(tree), Some(_)) => Ok(tree),
            (Ok(_), None) => Err(cgroup::Unavailable(
                "cannot watch cgroup.events (inotify)".into(),
            )),
            (Err(why), _) => Err(why),
        };
        match &tree {
            Ok(tree) => tracing::info!(
                root = %tree.root().display(),
                controllers = ?tree.enabled(),
                "containment: each session in its own cgroup"
            ),
            Err(why) => tracing::info!(
                reason = %why.0,
                "containment: process groups (no cgroup subtree to use)"
            ),
        }
        Members {
            tree,
            cgroups: Mutex::new(HashMap::new()),
            seen: Arc::default(),
            child_cgroups: Arc::default(),
            watcher,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<Cgroup>>> {
        self.cgroups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        lock_seen(&self.seen)
    }

    pub fn containment(&self) -> Containment {
        match &self.tree {
            Ok(tree) => Containment {
                mode: "cgroup",
                reason: None,
                cgroup_root: Some(tree.root().display().to_string()),
                controllers: tree.enabled().to_vec(),
            },
            Err(why) => Containment {
                mode: "process-group",
                reason: Some(why.0.clone()),
                cgroup_root: None,
                controllers: Vec::new(),
            },
        }
    }

    /// Whether `memory_max` / `pids_max` can be enforced; the reason when not.
    pub fn check_limits(&self, memory_max: bool, pids_max: bool) -> Result<(), String> {
        if !(memory_max || pids_max) {
            return Ok(());
        }
        match &self.tree {
            Ok(tree) => tree.check_limits(memory_max, pids_max),
            Err(why) => Err(format!(
                "limits need each session in its own cgroup, and sessions are in process groups here: {}",
                why.0
            )),
        }
    }

    /// A new session's cgroup, watched, where browserd contains sessions in cgroups.
    pub fn create(&self, id: &SessionId) -> std::io::Result<Option<Arc<Cgroup>>> {
        let Ok(tree) = &self.tree else {
            return Ok(None);
        };
        let cgroup = Arc::new(tree.create(id.as_str())?);
        self.watch(id, cgroup.clone());
        Ok(Some(cgroup))
    }

    /// Takes up the cgroup of a session started before a reload or restart.
    pub fn take_up(&self, id: &SessionId, path: &Path) {
        match Cgroup::open(path) {
            Ok(cgroup) => self.watch(id, Arc::new(cgroup)),
            // Removed once it was empty, while the session was being terminated.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(session = %id, "its cgroup is gone: nothing of it is left in one")
            }
            Err(e) => tracing::warn!(session = %id, "cannot open its cgroup: {e}"),
        }
    }

    fn watch(&self, id: &SessionId, cgroup: Arc<Cgroup>) {
        if let Some(watcher) = &self.watcher {
            watcher.add(&cgroup);
        }
        self.lock().insert(id.clone(), cgroup);
    }

    /// The session is being terminated: its cgroup goes as soon as it is empty, before its
    /// processes are reaped (see `Cgroup::remove_if_empty`).
    pub fn closing(&self, id: &SessionId) {
        if let Some(cgroup) = self.cgroup(id) {
            cgroup.close();
        }
    }

    pub fn cgroup(&self, id: &SessionId) -> Option<Arc<Cgroup>> {
        self.lock().get(id).cloned()
    }

    /// A session is gone: its cgroup is removed. Blocking (rmdir).
    pub fn release(&self, id: &SessionId) {
        let Some(cgroup) = self.lock().remove(id) else {
            return;
        };
        self.seen().remove(id);
        if let Some(watcher) = &self.watcher {
            watcher.remove(&cgroup);
        }
        if let Err(e) = cgroup.remove() {
            tracing::warn!(session = %id, "cannot remove its cgroup: {e}");
        }
    }

    /// SIGKILLs every process of a session with a cgroup at once; false for one without.
    pub fn kill_all(&self, id: &SessionId) -> bool {
        let Some(cgroup) = self.cgroup(id) else {
            return false;
        };
        if let Err(e) = cgroup.kill() {
            tracing::warn!(session = %id, "cgroup.kill: {e}");
        }
        true
    }

    /// Splits `ids` into sessions with a cgroup and the others.
    fn split(&self, ids: Vec<SessionId>) -> (Vec<(SessionId, Arc<Cgroup>)>, Vec<SessionId>) {
        let cgroups = self.lock();
        let mut contained = Vec::new();
        let mut tabled = Vec::new();
        for id in ids {
            match cgroups.get(&id) {
                Some(cgroup) => contained.push((id, cgroup.clone())),
                None => tabled.push(id),
            }
        }
        (contained, tabled)
    }

    /// The processes of `ids` now (as last known: re-read before relying on one's state).
    /// Cgroups are read off the event loop, alongside the scanner's refresh.
    pub async fn of(
        &self,
        scanner: &Scanner,
        ids: Vec<SessionId>,
    ) -> HashMap<SessionId, Vec<ProcInfo>> {
        let (contained, tabled) = self.split(ids);
        let seen = self.seen.clone();
        let read = off_loop(!contained.is_empty(), move || {
            contained
                .into_iter()
                .map(|(id, cgroup)| {
                    let mut seen = lock_seen(&seen);
                    let processes = in_cgroup(&cgroup);
                    // Nothing recorded for an empty cgroup: it may be one released meanwhile,
                    // whose entry would then never be taken out.
                    if !processes.is_empty() {
                        let known = seen.entry(id.clone()).or_default();
                        for process in &processes {
                            if !known.iter().any(|k| k.key() == process.key()) {
                                known.push(*process);
                            }
                        }
                    }
                    (id, processes)
                })
                .collect::<Vec<_>>()
        });
        let mut found = if tabled.is_empty() {
            HashMap::new()
        } else {
            scanner.processes(tabled).await
        };
        // A read that failed leaves those sessions out (swept again later, proven gone only
        // by their cgroup).
        let read = read.await.unwrap_or_default();
        for (id, processes) in read {
            let live = processes.into_iter().filter(|p| !p.is_zombie()).collect();
            found.insert(id, live);
        }
        found
    }

    /// Of `candidates` (sessions whose leader is reaped), those proven gone; without a
    /// cgroup, see `ProcTable::confirm_gone`. With one: it is empty, and nothing that was
    /// in it is still in `/proc`, zombies included. An empty cgroup is not enough: a process
    /// leaves it early in its exit, and a zombie is in `/proc` until it is reaped. So:
    ///
    /// * every process a sweep met in it is gone (one moved in from outside the session
    ///   need not be the daemon's descendant), and
    /// * no child of the daemon's is still in it (`children`). Any process the session still
    ///   has in `/proc` is one, or a descendant of one: the leader is reaped, and an orphan
    ///   is handed to the daemon, its subreaper, before its parent is a zombie. No process
    ///   can join an empty cgroup of its own (an exiting one cannot fork), and a child stays
    ///   in the daemon's lists while reaping is held off, so the children listed are every
    ///   one that can be. A process keeps its cgroup until it is reaped, so its
    ///   `/proc/PID/cgroup` still names the session's, the cgroup removed or not. Each
    ///   child's is read once (a child of the daemon's is the same process until the daemon
    ///   reaps it: see [`Members::reaped`]); mostly the orphans of a bulk kill, once each.
    pub async fn confirm_gone(
        &self,
        scanner: &Scanner,
        candidates: Vec<SessionId>,
        children: &Arc<HeldChildren>,
    ) -> Confirmed {
        let (contained, tabled) = self.split(candidates);
        let seen = self.seen.clone();
        let child_cgroups = self.child_cgroups.clone();
        let children = children.clone();
        let empty = off_loop(!contained.is_empty(), move || {
            let emptied = contained
                .into_iter()
                .filter(|(id, cgroup)| {
                    let met = {
                        let seen = lock_seen(&seen);
                        if cgroup.populated() {
                            return false;
                        }
                        seen.get(id).cloned().unwrap_or_default()
                    };
                    all_gone(&met)
                })
                .map(|(id, _)| id)
                .collect::<Vec<_>>();
            nothing_left(emptied, &*children, &child_cgroups)
        });
        let mut confirmed = if tabled.is_empty() {
            Confirmed::default()
        } else {
            scanner.confirm_gone(tabled).await
        };
        // A read that failed proves nothing.
        if let Some(empty) = empty.await {
            confirmed.gone.extend(empty.gone);
            confirmed.retry |= empty.retry;
        }
        confirmed
    }

    /// The daemon reaped `pids` (called with reaping held, so none of them was read since):
    /// what was read of them is forgotten, as their pids may be reused.
    pub fn reaped(&self, pids: impl IntoIterator<Item = i32>) {
        let mut known = lock_child_cgroups(&self.child_cgroups);
        if known.is_empty() {
            return;
        }
        for pid in pids {
            known.remove(&pid);
        }
    }

    /// What each of `ids` uses now.
    pub async fn usage(&self, scanner: &Scanner, ids: Vec<SessionId>) -> HashMap<SessionId, Usage> {
        let (contained, tabled) = self.split(ids);
        let measured = off_loop(!contained.is_empty(), move || {
            contained
                .into_iter()
                .map(|(id, cgroup)| {
                    let procs = cgroup.procs().unwrap_or_default();
                    let memory = cgroup.memory_current().unwrap_or_else(|| {
                        procs.iter().filter_map(|&pid| procs::read_pss(pid)).sum()
                    });
                    let usage = Usage {
                        processes: u32::try_from(procs.len()).unwrap_or(u32::MAX),
                        memory_bytes: memory,
                        cpu_seconds: cgroup.cpu_seconds().unwrap_or(0.0),
                    };
                    (id, usage)
                })
                .collect::<Vec<_>>()
        });
        let mut used = if tabled.is_empty() {
            HashMap::new()
        } else {
            scanner.usage(tabled).await
        };
        used.extend(measured.await.unwrap_or_default());
        used
    }

    /// Whether the kernel killed a session for running out of its memory. Without the memory
    /// controller there is no `memory.events` to read (and nothing is tried).
    pub fn oom_killed(&self, id: &SessionId) -> bool {
        if !self.tree.as_ref().is_ok_and(memory_on) {
            return false;
        }
        self.cgroup(id).is_some_and(|cgroup| {
            cgroup.oom_killed_at_removal().unwrap_or_else(|| {
                cgroup
                    .memory_events()
                    .is_some_and(|events| events.oom_kill > 0)
            })
        })
    }
}

/// Whether sessions' cgroups have the memory controller (and so `memory.events`).
fn memory_on(tree: &cgroup::Tree) -> bool {
    tree.enabled().iter().any(|c| c == "memory")
}

/// Runs `read` (files of cgroups and `/proc`) on the blocking pool, if there is anything to
/// read (`any`); `None` if it panicked or there was nothing. Started at once, so it runs
/// while the caller awaits something else.
fn off_loop<T: Send + 'static>(
    any: bool,
    read: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = Option<T>> {
    let job = any.then(|| tokio::task::spawn_blocking(read));
    async move {
        job?.await
            .map_err(|e| tracing::error!("reading cgroups failed: {e}"))
            .ok()
    }
}

/// The processes in a cgroup, read now (zombies among them).
fn in_cgroup(cgroup: &Cgroup) -> Vec<ProcInfo> {
    cgroup
        .procs()
        .unwrap_or_default()
        .into_iter()
        .filter_map(procs::read_stat)
        .collect()
}

fn lock_seen(seen: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Of `emptied` (sessions whose cgroups are empty and whose processes met there are gone),
/// those no process of which is left in `/proc`: no child of the daemon's (or, where
/// `children` gives no list, no process at all) is in one of their cgroups. A cgroup that
/// could not be read proves nothing: `retry` then.
fn nothing_left(
    emptied: Vec<SessionId>,
    children: &HeldChildren,
    child_cgroups: &Mutex<ChildCgroups>,
) -> Confirmed {
    if emptied.is_empty() {
        return Confirmed::default();
    }
    let mut holding: HashSet<String> = HashSet::new();
    let mut unread = false;
    children(&emptied, &mut |listed| match listed {
        Some(children) => {
            let mut known = lock_child_cgroups(child_cgroups);
            for pid in children {
                let leaf = match known.get(&pid) {
                    Some(leaf) => leaf.clone(),
                    // It cannot be gone (reaping is held off): any failure is a real one.
                    None => match cgroup::leaf_of(pid) {
                        Ok(leaf) => known.entry(pid).or_insert(leaf).clone(),
                        Err(e) => {
                            tracing::debug!(pid, "cannot read its cgroup: {e}");
                            unread = true;
                            continue;
                        }
                    },
                };
                holding.extend(leaf);
            }
        }
        None => match procs::all_pids() {
            Ok(pids) => {
                for pid in pids {
                    match cgroup::leaf_of(pid) {
                        Ok(leaf) => holding.extend(leaf),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::debug!(pid, "cannot read its cgroup: {e}");
                            unread = true;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!("cannot list /proc: {e}");
                unread = true;
            }
        },
    });
    if unread {
        return Confirmed {
            gone: Vec::new(),
            retry: true,
        };
    }
    Confirmed {
        gone: emptied
            .into_iter()
            .filter(|id| !holding.contains(id.as_str()))
            .collect(),
        retry: false,
    }
}

fn lock_child_cgroups(known: &Mutex<ChildCgroups>) -> MutexGuard<'_, ChildCgroups> {
    known
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether none of `met` is left, not even as a zombie.
fn all_gone(met: &[ProcInfo]) -> bool {
    met.iter().all(|p| procs::reread(p).is_none())
}

/// Watches `cgroup.events` of every session cgroup through one inotify descriptor, on a
/// thread of its own, and calls `on_empty` when one may have become empty: the gone checker
/// then looks. The cgroups of sessions being terminated that are empty are removed there
/// and then, without waiting for the event loop: during a bulk kill the event loop is busy
/// reaping (or waits for the CPU the dying sessions take), and their cgroups can go first.
struct Watcher {
    shared: Arc<Watched>,
}

/// What the watcher's thread and the event loop share.
struct Watched {
    inotify: Inotify,
    /// Each watch, by the cgroup file watched and by its descriptor.
    watches: Mutex<Watches>,
}

#[derive(Default)]
struct Watches {
    by_path: HashMap<std::path::PathBuf, WatchDescriptor>,
    by_wd: HashMap<WatchDescriptor, Arc<Cgroup>>,
}

impl Watcher {
    /// `memory`: whether cgroups have `memory.events` (read before a cgroup is removed).
    fn start(on_empty: Box<dyn Fn() + Send + Sync>, memory: bool) -> std::io::Result<Watcher> {
        let shared = Arc::new(Watched {
            inotify: Inotify::init(InitFlags::IN_CLOEXEC)?,
            watches: Mutex::default(),
        });
        let watched = shared.clone();
        std::thread::Builder::new()
            .name("cgroup-events".into())
            .spawn(move || {
                crate::signals::helper_thread();
                loop {
                    match watched.inotify.read_events() {
                        Ok(events) => {
                            if !events.is_empty() {
                                watched.remove_emptied(&events, memory);
                                on_empty();
                            }
                        }
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => {
                            return tracing::error!(
                            "reading cgroup events: {e}; empty cgroups are noticed by sweeps only"
                        )
                        }
                    }
                }
            })?;
        Ok(Watcher { shared })
    }

    fn add(&self, cgroup: &Arc<Cgroup>) {
        let events = cgroup.path().join("cgroup.events");
        match self
            .shared
            .inotify
            .add_watch(&events, AddWatchFlags::IN_MODIFY)
        {
            Ok(wd) => {
                let mut watches = self.shared.lock();
                watches.by_path.insert(events, wd);
                watches.by_wd.insert(wd, cgroup.clone());
            }
            Err(e) => tracing::warn!(file = %events.display(), "cannot watch: {e}"),
        }
    }

    fn remove(&self, cgroup: &Cgroup) {
        self.shared.unwatch(cgroup);
    }
}

impl Watched {
    fn lock(&self) -> MutexGuard<'_, Watches> {
        self.watches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn unwatch(&self, cgroup: &Cgroup) {
        let events = cgroup.path().join("cgroup.events");
        let wd = {
            let mut watches = self.lock();
            let wd = watches.by_path.remove(&events);
            if let Some(wd) = wd {
                watches.by_wd.remove(&wd);
            }
            wd
        };
        if let Some(wd) = wd {
            // Removing the cgroup does not end the watch (cgroupfs sends no `IN_IGNORED` at
            // `rmdir`, and the watch stays listed): it is taken off here, or it would stay
            // until the daemon exits.
            let _ = self.inotify.rm_watch(wd);
        }
    }

    /// Of the cgroups whose `cgroup.events` changed, removes those of sessions being
    /// terminated that are empty now (and stops watching them). Each is removed again,
    /// harmlessly, when its session is finished.
    fn remove_emptied(&self, events: &[nix::sys::inotify::InotifyEvent], memory: bool) {
        let closing: Vec<Arc<Cgroup>> = {
            let watches = self.lock();
            events
                .iter()
                .filter_map(|event| watches.by_wd.get(&event.wd))
                .filter(|cgroup| cgroup.is_closing())
                .cloned()
                .collect()
        };
        for cgroup in closing {
            if cgroup.remove_if_empty(memory) {
                self.unwatch(&cgroup);
            }
        }
    }
}
