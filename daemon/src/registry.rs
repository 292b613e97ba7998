//! The session registry: the one owner of session state. Its fields are private; everything
//! else changes a session through named transitions (admit, insert, mark running, begin and
//! end a termination, record a reaped leader, finish, lease, release, expire, forget), each
//! of which takes the lock, changes or copies a little, and lets go: none holds it across an
//! `.await` or a blocking syscall. Leases and TTLs are deadlines kept here in one ordered
//! set, which the expiry loop sleeps on.
//!
//! Two things live here besides sessions, because both are decided with the session count
//! under the same lock:
//!
//! * **Warm browsers** of the pool are entries in a hidden state (`warm`): they have an id,
//!   a leader, dirs and a cgroup like any session, so the one design that tells which
//!   processes are a session's (marker, leader, cgroup) covers them, and reaping,
//!   termination and the journal treat them like sessions. They are listed nowhere, counted
//!   against no limit and selected by no kill. A hand-out turns one into a session in place:
//!   its id, processes, profile and cgroup are the session's from then on.
//! * **The launch queue**: launches waiting, first come first served, for a slot at
//!   `max_sessions`. A slot that frees (a session finishes, an admission is given back) goes
//!   to the head of the queue at once, under the lock that freed it, so nothing polls and
//!   no later launch can take it first.

use crate::error::{Error, Result};
use crate::events::Events;
use crate::journal::{Journal, Line, Mark};
use crate::procs::{Marker, Owner, ProcInfo, ProcKey, Root};
use crate::records::{
    self, from_unix_ms, instant_of, unix_ms, BrowserRecord, LeaderRecord, LeaseRecord,
    SessionRecord, Snapshot, StateRecord,
};
use crate::termination::{Control, Outcome, Termination};
use browserd_proto::{
    Encoded, EndReason, Event, EventKind, ExitStatus, LeaseId, SessionId, SessionInfo, SessionRef,
    SessionState, SessionType, SessionsFilter, StateCounts, TrackingId, Workspace,
};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{oneshot, Notify};

mod listing;

pub use listing::ListedUsage;
use listing::{ListedText, LISTED_SIZE};

/// Where a session is in its life; each phase carries what only it has.
#[derive(Debug, Clone)]
enum Phase {
    /// Spawned, not yet ready (a browser waiting for its DevTools endpoint).
    Starting,
    Running,
    /// Being terminated; requests that also target it join this termination.
    Terminating(Arc<Termination>),
    /// Every process is gone and reaped.
    Exited {
        exit: ExitStatus,
        ended_at: SystemTime,
        reason: EndReason,
    },
}

/// A deadline both as the daemon's clock sees it and as it is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub at: Instant,
    pub wall: SystemTime,
}

impl Deadline {
    pub fn after(duration: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + duration,
            wall: SystemTime::now() + duration,
        }
    }
}

/// What a browser session has beyond a sandbox.
#[derive(Debug, Clone, Default)]
pub struct BrowserInfo {
    pub ws_endpoint: Option<String>,
    pub profile_dir: Option<PathBuf>,
}

/// A spawned session, as the launcher registers it.
#[derive(Debug)]
pub struct NewSession {
    pub tracking_id: Option<TrackingId>,
    pub kind: SessionType,
    pub workspace: Workspace,
    pub command: Vec<String>,
    pub pid: i32,
    /// The leader's start time (clock ticks), its identity against pid reuse.
    pub start_time: u64,
    /// Whether it must still become ready (a browser waiting for its endpoint).
    pub starting: bool,
    pub browser: Option<BrowserInfo>,
    /// Dirs the daemon created for the session, removed once it is gone.
    pub owned_dirs: Vec<PathBuf>,
    /// Its own cgroup, where browserd contains sessions in cgroups.
    pub cgroup: Option<PathBuf>,
    /// The daemon's thread that spawned the leader (see `spawners`).
    pub spawner: Option<i32>,
}

#[derive(Debug)]
struct Session {
    id: SessionId,
    tracking_id: Option<TrackingId>,
    kind: SessionType,
    workspace: Workspace,
    command: Vec<String>,
    pid: i32,
    start_time: u64,
    /// Taken up after a restart: its processes are not the daemon's descendants.
    adopted: bool,
    /// An adopted leader that was alive at the restart: a pidfd opened while its identity
    /// was proven, the only way it is watched and signalled.
    leader_pidfd: Option<Arc<OwnedFd>>,
    started_at: SystemTime,
    expires: Option<Deadline>,
    leases: BTreeSet<LeaseId>,
    /// Set once the leader is reaped (or, adopted, seen to exit); the session may still have
    /// other processes.
    leader_exit: Option<ExitStatus>,
    /// The leader exited on its own (not during a termination) and what it left behind is
    /// still to be dealt with.
    left_behind: bool,
    phase: Phase,
    browser: Option<BrowserInfo>,
    owned_dirs: Vec<PathBuf>,
    cgroup: Option<PathBuf>,
    /// A warm browser of the pool, not handed out yet: hidden from clients, and its changes
    /// are not announced.
    warm: bool,
    /// The daemon's thread that spawned the leader, while this daemon knows it (not across
    /// a reload: the threads are new).
    spawner: Option<i32>,
    /// The fields a listing writes that do not change, written once.
    listed: ListedText,
}

impl Session {
    fn state(&self) -> SessionState {
        match self.phase {
            Phase::Starting => SessionState::Starting,
            Phase::Running => SessionState::Running,
            Phase::Terminating(_) => SessionState::Terminating,
            Phase::Exited { .. } => SessionState::Exited,
        }
    }

    fn is_live(&self) -> bool {
        !matches!(self.phase, Phase::Exited { .. })
    }

    /// The session as `launch` and `info` return it: its listing without figures.
    fn info(&self) -> SessionInfo {
        listing::info(self)
    }
}

/// The sessions a listing with `filter` shows (never a warm browser), oldest first.
fn matching<'a>(state: &'a State, filter: &SessionsFilter) -> Vec<&'a Session> {
    let mut found: Vec<&Session> = state
        .sessions
        .values()
        .filter(|s| shown(s, filter))
        .collect();
    found.sort_by(|a, b| oldest_first(a, b));
    found
}

/// Whether a listing with `filter` shows `session`.
fn shown(session: &Session, filter: &SessionsFilter) -> bool {
    !session.warm
        && filter
            .workspace
            .as_ref()
            .is_none_or(|w| *w == session.workspace)
        && filter.session_type.is_none_or(|t| t == session.kind)
        && filter.state.is_none_or(|st| st == session.state())
        && (filter.tracking_id.is_none() || filter.tracking_id == session.tracking_id)
}

/// Listing order: oldest first, ties by id.
fn oldest_first(a: &Session, b: &Session) -> std::cmp::Ordering {
    a.started_at
        .cmp(&b.started_at)
        .then_with(|| a.id.cmp(&b.id))
}

/// A deadline the expiry loop acts on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Expiry {
    Lease(LeaseId),
    /// The session's TTL: terminate it with force.
    Ttl(SessionId),
    /// An exited session has been listed long enough.
    Forget(SessionId),
}

/// The answer to "terminate this session".
pub enum Begin {
    /// It had already exited: nothing to do, report it terminated.
    AlreadyGone,
    /// It holds leases and the request did not force.
    Leased(usize),
    /// A new termination; the caller must drive it.
    Started(Arc<Termination>),
    /// A termination already in flight; `upgraded` if this request strengthened it.
    Joined {
        termination: Arc<Termination>,
        upgraded: bool,
    },
}

/// A session that has just become gone: who to tell and what to clean.
pub struct Finished {
    pub termination: Option<Arc<Termination>>,
    pub owned_dirs: Vec<PathBuf>,
    /// A warm browser that ended before it was handed out: how long after its launch.
    pub warm_for: Option<Duration>,
}

/// The answer to a launch asking for a slot.
pub enum Admitted {
    Now(Admission),
    /// At capacity: the launch waits its turn.
    Queued(Queued),
}

/// A launch's place in the queue. The slot comes through [`Queued::granted`]; a launch that
/// stops waiting (timeout, client gone) must hand this to [`Registry::leave_queue`].
#[must_use]
pub struct Queued {
    pub ticket: u64,
    granted: oneshot::Receiver<Result<Admission>>,
}

impl Queued {
    /// Waits for the slot; fails if the daemon shuts down first.
    pub async fn granted(&mut self) -> Result<Admission> {
        (&mut self.granted)
            .await
            .unwrap_or(Err(Error::ShuttingDown))
    }
}

/// A queued launch, as the registry keeps it.
struct Waiter {
    ticket: u64,
    /// The id its session will have, and its tracking id (reserved while it waits).
    id: SessionId,
    tracking_id: Option<TrackingId>,
    ttl: Option<Duration>,
    grant: oneshot::Sender<Result<Admission>>,
}

/// Warm browsers by readiness, for the pool and `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmCounts {
    /// Ready to hand out.
    pub ready: usize,
    /// Launched, endpoint not yet answering.
    pub starting: usize,
}

/// A launch's reserved slot: its id, its tracking id taken, its place counted against
/// `max_sessions`. It becomes a session with [`Registry::insert`], or is given back with
/// [`Registry::cancel`].
#[derive(Debug)]
#[must_use]
pub struct Admission {
    pub id: SessionId,
    pub expires: Option<Deadline>,
    tracking_id: Option<TrackingId>,
    /// For a launch that waited in the queue: when its slot freed.
    pub granted_at: Option<Instant>,
}

/// The registry's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_sessions: u32,
    /// How many launches may wait for a slot.
    pub max_queue: u32,
    /// How many exited sessions stay listed, and for how long.
    pub keep_exited: usize,
    pub keep_exited_for: Duration,
}

#[derive(Default)]
struct State {
    sessions: HashMap<SessionId, Session>,
    /// Live sessions' (and reserved launches') tracking ids.
    tracking: HashMap<TrackingId, SessionId>,
    /// Unreaped leaders by pid.
    leaders: HashMap<i32, SessionId>,
    /// Live sessions by their leader's pid number, which is also the pgid their processes
    /// carry unless they moved (the number stays pinned while any does).
    numbers: HashMap<i32, SessionId>,
    leases: HashMap<LeaseId, (SessionId, Deadline)>,
    /// Exited sessions, oldest first, with when they are to be forgotten.
    exited: VecDeque<(SessionId, Instant)>,
    expiries: BTreeSet<(Instant, Expiry)>,
    /// Launches admitted but not yet registered.
    reserved: usize,
    /// Warm browsers among `sessions`.
    warm: usize,
    /// Ready warm browsers, in the order they became ready (some may have died since).
    warm_ready: VecDeque<SessionId>,
    /// Launches waiting for a slot, first come first served.
    queue: VecDeque<Waiter>,
    next_ticket: u64,
    /// Live sessions adopted after a restart.
    adopted: usize,
    /// Sessions whose leader exited, among them every live one (the rest are dropped when
    /// next looked at): where the gone check looks, not at every session.
    leader_exited: HashSet<SessionId>,
    next_session: u64,
    next_lease: u64,
    /// The counters as last written to the journal: ids below them may have been handed out.
    persisted_session: u64,
    persisted_lease: u64,
    shutting_down: bool,
}

impl State {
    /// Live sessions, warm browsers not counted.
    fn live(&self) -> usize {
        self.sessions.len() - self.exited.len() - self.warm
    }

    /// Slots taken against `max_sessions`: live sessions and admitted launches.
    fn taken(&self) -> usize {
        self.live() + self.reserved
    }

    /// Frees a tracking id held for `id`.
    fn release_tracking(&mut self, tracking_id: Option<&TrackingId>, id: &SessionId) {
        if let Some(tracking_id) = tracking_id {
            if self.tracking.get(tracking_id) == Some(id) {
                self.tracking.remove(tracking_id);
            }
        }
    }
}

pub struct Registry {
    state: Mutex<State>,
    /// Woken when a deadline is added, so the expiry loop can sleep until the earliest.
    expiry_changed: Notify,
    nonce: u32,
    limits: Limits,
    /// Where every change is written, once the daemon has one (see [`Registry::attach`]).
    journal: OnceLock<Arc<Journal>>,
    /// The journal record of the last id counters written: a launch or lease waits for it
    /// to be on disk.
    counters_seq: AtomicU64,
    /// This boot's id, written with every leader's identity.
    boot_id: String,
    /// Where every state change is announced, in order per session.
    events: Events,
}

/// How many ids are reserved in the journal at a time.
const ID_BLOCK: u64 = 1024;

impl Registry {
    #[cfg(test)]
    pub fn new(limits: Limits) -> Registry {
        Registry::restore(
            limits,
            Snapshot {
                nonce: instance_nonce(),
                next_session: 1,
                next_lease: 1,
                sessions: Vec::new(),
            },
            HashMap::new(),
        )
    }

    /// A registry holding what `snapshot` describes (a reload's handover, or a journal after
    /// recovery decided which sessions are still there). `adopted` holds a pidfd for every
    /// leader that is not the daemon's child.
    pub fn restore(
        limits: Limits,
        snapshot: Snapshot,
        mut adopted: HashMap<SessionId, Arc<OwnedFd>>,
    ) -> Registry {
        let mut state = State {
            next_session: snapshot.next_session.max(1),
            next_lease: snapshot.next_lease.max(1),
            persisted_session: snapshot.next_session,
            persisted_lease: snapshot.next_lease,
            ..State::default()
        };
        for record in snapshot.sessions {
            let pidfd = adopted.remove(&record.id);
            restore_session(&mut state, &limits, record, pidfd);
        }
        // No counters written down (a first start, or a journal lost before them): a new
        // nonce keeps every id new.
        let nonce = match snapshot.nonce {
            0 => instance_nonce(),
            nonce => nonce,
        };
        Registry {
            state: Mutex::new(state),
            expiry_changed: Notify::new(),
            nonce,
            limits,
            journal: OnceLock::new(),
            counters_seq: AtomicU64::new(0),
            boot_id: records::boot_id(),
            events: Events::default(),
        }
    }

    /// The event bus, to subscribe to.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Announces a change of `session` (call with the lock held: events of one session
    /// are emitted in the order its changes happen). A warm browser's are not: its session
    /// begins when it is handed out.
    fn emit(&self, kind: EventKind, session: &Session, extra: impl FnOnce(&mut Event)) {
        if session.warm {
            return;
        }
        self.events.emit(kind, |event| {
            event.session = Some(session.id.clone());
            event.tracking_id = session.tracking_id.clone();
            event.session_type = Some(session.kind);
            event.workspace = Some(session.workspace.clone());
            event.pid = Some(session.pid);
            extra(event);
        });
    }

    /// Everything the registry holds, as records.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_locked(&self.lock())
    }

    fn snapshot_locked(&self, state: &State) -> Snapshot {
        let mut sessions: Vec<&Session> = state.sessions.values().collect();
        sessions.sort_by(|a, b| oldest_first(a, b));
        Snapshot {
            nonce: self.nonce,
            next_session: state.next_session,
            next_lease: state.next_lease,
            sessions: sessions
                .into_iter()
                .map(|s| self.record(state, s))
                .collect(),
        }
    }

    fn record(&self, state: &State, session: &Session) -> SessionRecord {
        let lease_deadline = |lease: &LeaseId| state.leases.get(lease).map(|(_, d)| d.wall);
        SessionRecord {
            id: session.id.clone(),
            tracking_id: session.tracking_id.clone(),
            session_type: session.kind,
            workspace: session.workspace.clone(),
            command: session.command.clone(),
            leader: LeaderRecord {
                pid: session.pid,
                start_time: session.start_time,
                boot_id: self.boot_id.clone(),
                adopted: session.adopted,
                exit: session.leader_exit,
            },
            started_at_ms: unix_ms(session.started_at),
            expires_at_ms: session.expires.map(|d| unix_ms(d.wall)),
            leases: session
                .leases
                .iter()
                .filter_map(|lease| {
                    Some(LeaseRecord {
                        id: lease.clone(),
                        expires_at_ms: unix_ms(lease_deadline(lease)?),
                    })
                })
                .collect(),
            dirs: session.owned_dirs.clone(),
            cgroup: session.cgroup.clone(),
            warm: session.warm,
            browser: session.browser.as_ref().map(|b| BrowserRecord {
                ws_endpoint: b.ws_endpoint.clone(),
                profile_dir: b.profile_dir.clone(),
            }),
            state: match &session.phase {
                Phase::Starting => StateRecord::Starting,
                Phase::Running => StateRecord::Running,
                Phase::Terminating(t) => {
                    let control = t.control();
                    let left = control.deadline.saturating_duration_since(Instant::now());
                    StateRecord::Terminating {
                        force: control.force,
                        deadline_ms: unix_ms(SystemTime::now() + left),
                        reason: t.reason(),
                    }
                }
                Phase::Exited {
                    exit,
                    ended_at,
                    reason,
                } => StateRecord::Exited {
                    exit: *exit,
                    ended_at_ms: unix_ms(*ended_at),
                    reason: *reason,
                },
            },
        }
    }

    /// From now on every change is written to `journal`.
    pub fn attach(&self, journal: Arc<Journal>) {
        let _ = self.journal.set(journal);
    }

    /// Writes the session's current record (call with the lock held, so records reach the
    /// journal in the order of the changes).
    fn persist(&self, state: &State, id: &SessionId) {
        let Some(journal) = self.journal.get() else {
            return;
        };
        match state.sessions.get(id) {
            Some(session) => journal.append(Line::Put(Box::new(self.record(state, session)))),
            None => journal.append(Line::Forget(id.clone())),
        };
        if journal.wants_compaction() {
            journal.compact(self.snapshot_locked(state));
        }
    }

    /// Writes the id counters ahead of use, a block at a time, so no id handed out is ever
    /// handed out again, even after a crash.
    fn reserve_ids(&self, state: &mut State) {
        let Some(journal) = self.journal.get() else {
            return;
        };
        if state.next_session < state.persisted_session && state.next_lease < state.persisted_lease
        {
            return;
        }
        state.persisted_session = state.persisted_session.max(state.next_session + ID_BLOCK);
        state.persisted_lease = state.persisted_lease.max(state.next_lease + ID_BLOCK);
        let seq = journal.append(Line::Counters {
            nonce: self.nonce,
            next_session: state.persisted_session,
            next_lease: state.persisted_lease,
        });
        self.counters_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// Waits until every change made so far is written to the journal, and the id counters
    /// are on disk (see `journal`): what a `launch` or `lease` waits for before it is
    /// acknowledged.
    pub async fn recorded(&self) -> Result<()> {
        let Some(journal) = self.journal.get() else {
            return Ok(());
        };
        let counters = self.counters_seq.load(Ordering::Relaxed);
        if counters > 0 {
            journal
                .reached(counters, Mark::Durable)
                .await
                .map_err(Error::Internal)?;
        }
        journal
            .reached(journal.last_seq(), Mark::Written)
            .await
            .map_err(Error::Internal)
    }

    /// Waits until every change made so far is on disk (before a reload's exec, at
    /// shutdown).
    pub async fn synced(&self) -> Result<()> {
        let Some(journal) = self.journal.get() else {
            return Ok(());
        };
        journal
            .synced(journal.last_seq())
            .await
            .map_err(Error::Internal)
    }

    /// A poisoned lock means a panic happened while the state was being changed; every
    /// transition leaves the state consistent before it can panic, so the data is used as is
    /// and the daemon keeps serving.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks that a launch may proceed and reserves its slot, id and tracking id. At
    /// capacity, a launch that may wait (`queue`) joins the queue when it has room; its id
    /// and tracking id are reserved meanwhile.
    pub fn admit(
        &self,
        tracking_id: Option<&TrackingId>,
        ttl: Option<Duration>,
        queue: bool,
    ) -> Result<Admitted> {
        let mut state = self.lock();
        if state.shutting_down {
            return Err(Error::ShuttingDown);
        }
        if let Some(tracking_id) = tracking_id {
            if let Some(owner) = state.tracking.get(tracking_id) {
                return Err(Error::Conflict(format!(
                    "tracking id `{tracking_id}` is already used by session {owner} (live, starting or queued)"
                )));
            }
        }
        let max = self.limits.max_sessions as usize;
        let taken = state.taken();
        // Whoever waits is first in line for a slot.
        let full = taken >= max || !state.queue.is_empty();
        if full {
            let max_queue = self.limits.max_queue;
            let waiting = state.queue.len();
            let refusal = if max_queue == 0 {
                Some(format!(
                    "{taken} sessions are live or starting and max_sessions is {max}; kill some, or start browserd with a larger --max-sessions (or with a launch queue: --max-queue)"
                ))
            } else if !queue {
                Some(format!(
                    "{taken} sessions are live or starting (max_sessions {max}) and the launch asked not to wait in the queue (queue_timeout_ms 0)"
                ))
            } else if waiting >= max_queue as usize {
                Some(format!(
                    "the launch queue is full: {taken} sessions are live or starting (max_sessions {max}) and {waiting} launches are waiting (max_queue {max_queue}); retry later, or start browserd with a larger --max-queue or --max-sessions"
                ))
            } else {
                None
            };
            if let Some(refusal) = refusal {
                return Err(Error::Capacity(refusal));
            }
        }
        let id = self.next_id(&mut state);
        if let Some(tracking_id) = tracking_id {
            state.tracking.insert(tracking_id.clone(), id.clone());
        }
        if !full {
            state.reserved += 1;
            return Ok(Admitted::Now(Admission {
                id,
                expires: ttl.map(Deadline::after),
                tracking_id: tracking_id.cloned(),
                granted_at: None,
            }));
        }
        let (grant, granted) = oneshot::channel();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back(Waiter {
            ticket,
            id,
            tracking_id: tracking_id.cloned(),
            ttl,
            grant,
        });
        // The queue's lines are written under the lock, so the log shows its true order.
        tracing::debug!(target: "browserd::queue", ticket, depth = state.queue.len(), "queued");
        Ok(Admitted::Queued(Queued { ticket, granted }))
    }

    /// A new session id.
    fn next_id(&self, state: &mut State) -> SessionId {
        let seq = state.next_session;
        state.next_session += 1;
        self.reserve_ids(state);
        SessionId::generate(self.nonce, seq)
    }

    /// Gives free slots to the launches at the head of the queue; their TTL starts now.
    /// Called wherever a slot frees, under the same lock.
    fn grant_queued(&self, state: &mut State) {
        let max = self.limits.max_sessions as usize;
        while state.taken() < max {
            let Some(waiter) = state.queue.pop_front() else {
                return;
            };
            state.reserved += 1;
            tracing::debug!(target: "browserd::queue", ticket = waiter.ticket, session = %waiter.id, "granted");
            let admission = Admission {
                id: waiter.id,
                expires: waiter.ttl.map(Deadline::after),
                tracking_id: waiter.tracking_id,
                granted_at: Some(Instant::now()),
            };
            if let Err(Ok(unwanted)) = waiter.grant.send(Ok(admission)) {
                // Nobody waits for it any more: the slot goes to the next in line.
                state.reserved -= 1;
                state.release_tracking(unwanted.tracking_id.as_ref(), &unwanted.id);
            }
        }
    }

    /// Takes a launch out of the queue (it timed out, or its client left). Returns its
    /// admission if it was granted a slot meanwhile: the caller uses it or gives it back.
    pub fn leave_queue(&self, mut queued: Queued) -> Option<Admission> {
        let mut state = self.lock();
        if let Some(at) = state.queue.iter().position(|w| w.ticket == queued.ticket) {
            if let Some(waiter) = state.queue.remove(at) {
                tracing::debug!(target: "browserd::queue", ticket = waiter.ticket, "left");
                state.release_tracking(waiter.tracking_id.as_ref(), &waiter.id);
            }
            return None;
        }
        drop(state);
        // Not queued any more: granted (sent under the lock, so it is there) or refused.
        match queued.granted.try_recv() {
            Ok(Ok(admission)) => Some(admission),
            _ => None,
        }
    }

    /// Checks that a slot granted while its launch waited may still be used: the daemon may
    /// have begun to shut down since (the launch then registers nothing).
    pub fn still_admitted(&self, admission: Admission) -> Result<Admission> {
        if self.lock().shutting_down {
            self.cancel(admission);
            return Err(Error::ShuttingDown);
        }
        Ok(admission)
    }

    /// How many launches wait for a slot.
    pub fn queue_depth(&self) -> usize {
        self.lock().queue.len()
    }

    /// Gives back an admission that did not become a session; its slot goes to the queue.
    pub fn cancel(&self, admission: Admission) {
        let mut state = self.lock();
        state.reserved -= 1;
        state.release_tracking(admission.tracking_id.as_ref(), &admission.id);
        self.grant_queued(&mut state);
    }

    /// An id for a warm browser about to be launched. Warm browsers take no slot; none are
    /// launched once the daemon shuts down.
    pub fn admit_warm(&self) -> Result<SessionId> {
        let mut state = self.lock();
        if state.shutting_down {
            return Err(Error::ShuttingDown);
        }
        Ok(self.next_id(&mut state))
    }

    /// Registers a spawned session under its admission. Call with the reap lock held, so the
    /// leader cannot be reaped before it is known.
    /// Returns the session as registered (a launch answers with that, whatever another
    /// client does to it a moment later).
    pub fn insert(&self, admission: Admission, new: NewSession) -> SessionInfo {
        let mut state = self.lock();
        state.reserved -= 1;
        let id = admission.id;
        if let Some(deadline) = admission.expires {
            state
                .expiries
                .insert((deadline.at, Expiry::Ttl(id.clone())));
            self.expiry_changed.notify_one();
        }
        self.register(&mut state, id, new, admission.expires, false)
    }

    /// Registers a spawned warm browser (starting). Call with the reap lock held.
    pub fn insert_warm(&self, id: SessionId, new: NewSession) {
        let mut state = self.lock();
        state.warm += 1;
        self.register(&mut state, id, new, None, true);
    }

    fn register(
        &self,
        state: &mut State,
        id: SessionId,
        new: NewSession,
        expires: Option<Deadline>,
        warm: bool,
    ) -> SessionInfo {
        state.leaders.insert(new.pid, id.clone());
        state.numbers.insert(new.pid, id.clone());
        let mut session = Session {
            id: id.clone(),
            tracking_id: new.tracking_id,
            kind: new.kind,
            workspace: new.workspace,
            command: new.command,
            pid: new.pid,
            start_time: new.start_time,
            adopted: false,
            leader_pidfd: None,
            started_at: SystemTime::now(),
            expires,
            leases: BTreeSet::new(),
            leader_exit: None,
            left_behind: false,
            phase: if new.starting {
                Phase::Starting
            } else {
                Phase::Running
            },
            browser: new.browser,
            owned_dirs: new.owned_dirs,
            cgroup: new.cgroup,
            warm,
            spawner: new.spawner,
            listed: ListedText::default(),
        };
        session.listed = ListedText::of(&session);
        self.emit(EventKind::Launched, &session, |_| {});
        if matches!(session.phase, Phase::Running) {
            self.emit(EventKind::Running, &session, |_| {});
        }
        let info = session.info();
        state.sessions.insert(id.clone(), session);
        self.persist(state, &id);
        info
    }

    /// A starting browser is ready: records its endpoint and makes it running. Fails if it
    /// was terminated (or ended) while starting.
    pub fn mark_running(&self, id: &SessionId, endpoint: String) -> Result<SessionInfo> {
        let mut state = self.lock();
        let session = state
            .sessions
            .get_mut(id)
            .filter(|s| matches!(s.phase, Phase::Starting))
            .ok_or_else(|| {
                Error::LaunchFailed(format!("session {id} was terminated while starting"))
            })?;
        session.phase = Phase::Running;
        if let Some(browser) = &mut session.browser {
            browser.ws_endpoint = Some(endpoint);
        }
        let info = session.info();
        self.emit(EventKind::Running, session, |_| {});
        let warm = session.warm;
        if warm {
            state.warm_ready.push_back(id.clone());
        }
        self.persist(&state, id);
        Ok(info)
    }

    /// Hands the warm browser that has waited longest out as the admitted launch's session:
    /// it takes the admission's slot, tracking id and TTL, and `workspace`, and its session
    /// begins now. Gives the admission back when no warm browser is ready.
    pub fn hand_out(
        &self,
        admission: Admission,
        workspace: Workspace,
    ) -> Result<SessionInfo, Admission> {
        let mut state = self.lock();
        let id = loop {
            let Some(id) = state.warm_ready.pop_front() else {
                return Err(admission);
            };
            let ready = state.sessions.get(&id).is_some_and(|s| {
                s.warm && matches!(s.phase, Phase::Running) && s.leader_exit.is_none()
            });
            if ready {
                break id;
            }
        };
        if let Some(tracking_id) = &admission.tracking_id {
            state.tracking.insert(tracking_id.clone(), id.clone());
        }
        if let Some(deadline) = admission.expires {
            state
                .expiries
                .insert((deadline.at, Expiry::Ttl(id.clone())));
            self.expiry_changed.notify_one();
        }
        let Some(session) = state.sessions.get_mut(&id) else {
            return Err(admission);
        };
        session.warm = false;
        session.tracking_id = admission.tracking_id;
        session.workspace = workspace;
        session.started_at = SystemTime::now();
        session.listed = ListedText::of(session);
        session.expires = admission.expires;
        self.emit(EventKind::Launched, session, |_| {});
        self.emit(EventKind::Running, session, |_| {});
        let info = session.info();
        state.reserved -= 1;
        state.warm -= 1;
        self.persist(&state, &id);
        Ok(info)
    }

    /// Warm browsers that are alive, by readiness.
    pub fn warm_counts(&self) -> WarmCounts {
        let state = self.lock();
        let mut counts = WarmCounts::default();
        for session in state.sessions.values() {
            if !session.warm || session.leader_exit.is_some() {
                continue;
            }
            match session.phase {
                Phase::Starting => counts.starting += 1,
                Phase::Running => counts.ready += 1,
                Phase::Terminating(_) | Phase::Exited { .. } => {}
            }
        }
        counts
    }

    /// Warm browsers still starting: after a reload nobody waits for their endpoint.
    pub fn warm_starting(&self) -> Vec<SessionId> {
        let state = self.lock();
        state
            .sessions
            .values()
            .filter(|s| s.warm && matches!(s.phase, Phase::Starting))
            .map(|s| s.id.clone())
            .collect()
    }

    pub fn info(&self, id: &SessionId) -> Option<SessionInfo> {
        self.lock().sessions.get(id).map(Session::info)
    }

    /// The DevTools endpoint of a live browser session, if it has one.
    pub fn endpoint(&self, id: &SessionId) -> Option<String> {
        let state = self.lock();
        let session = state.sessions.get(id).filter(|s| s.is_live())?;
        session.browser.as_ref()?.ws_endpoint.clone()
    }

    /// Sessions matching every given filter, oldest first, as [`Registry::list_json`] writes
    /// them without their figures.
    #[cfg(test)]
    pub fn list(&self, filter: &SessionsFilter) -> Vec<SessionInfo> {
        let state = self.lock();
        matching(&state, filter)
            .into_iter()
            .map(Session::info)
            .collect()
    }

    /// The live sessions a listing with `filter` shows.
    pub fn live_listed(&self, filter: &SessionsFilter) -> Vec<SessionId> {
        let state = self.lock();
        state
            .sessions
            .values()
            .filter(|s| s.is_live() && shown(s, filter))
            .map(|s| s.id.clone())
            .collect()
    }

    /// The `sessions` result for `filter`, as JSON: every session it shows, oldest first,
    /// each live one with its figures from `usage`, written straight from the registry (a
    /// listing of a thousand sessions copies none of their strings).
    pub fn list_json(
        &self,
        filter: &SessionsFilter,
        usage: impl Fn(&SessionId) -> Option<ListedUsage>,
    ) -> Encoded {
        let state = self.lock();
        let found = matching(&state, filter);
        let mut text = Vec::with_capacity(64 + found.len() * LISTED_SIZE);
        text.extend_from_slice(b"{\"sessions\":[");
        for (i, session) in found.into_iter().enumerate() {
            if i > 0 {
                text.push(b',');
            }
            let used = session.is_live().then(|| usage(&session.id)).flatten();
            listing::write(&mut text, session, used);
        }
        text.extend_from_slice(b"]}");
        // serde_json writes UTF-8 only: the fallback never runs.
        let text = String::from_utf8(text)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Encoded::from_serde_text(text)
    }

    /// Sessions by state and type, every pair listed.
    pub fn counts_by_type(&self) -> Vec<(SessionState, SessionType, u64)> {
        let state = self.lock();
        let mut counts = Vec::with_capacity(8);
        for kind in [SessionType::Browser, SessionType::Sandbox] {
            for phase in [
                SessionState::Starting,
                SessionState::Running,
                SessionState::Terminating,
                SessionState::Exited,
            ] {
                let n = state
                    .sessions
                    .values()
                    .filter(|s| !s.warm && s.kind == kind && s.state() == phase)
                    .count();
                counts.push((phase, kind, n as u64));
            }
        }
        counts
    }

    pub fn counts(&self) -> StateCounts {
        let state = self.lock();
        let mut counts = StateCounts::default();
        for session in state.sessions.values().filter(|s| !s.warm) {
            match session.state() {
                SessionState::Starting => counts.starting += 1,
                SessionState::Running => counts.running += 1,
                SessionState::Terminating => counts.terminating += 1,
                SessionState::Exited => counts.exited += 1,
            }
        }
        counts
    }

    /// Resolves what a client named: a session id (live or exited), else the live session
    /// with that tracking id, else the latest exited one that had it (so a kill racing a
    /// natural exit is answered `terminated`, not `not_found`).
    pub fn resolve(&self, reference: &SessionRef) -> Option<SessionId> {
        Self::resolve_locked(&self.lock(), reference)
    }

    fn resolve_locked(state: &State, reference: &SessionRef) -> Option<SessionId> {
        if let Some(session) = state.sessions.get(reference.as_str()).filter(|s| !s.warm) {
            return Some(session.id.clone());
        }
        if let Some(id) = state
            .tracking
            .get(reference.as_str())
            .filter(|id| state.sessions.contains_key(*id))
        {
            return Some(id.clone());
        }
        state
            .exited
            .iter()
            .rev()
            .map(|(id, _)| id)
            .find(|id| {
                state.sessions.get(*id).is_some_and(|s| {
                    s.tracking_id
                        .as_ref()
                        .is_some_and(|t| t.as_str() == reference.as_str())
                })
            })
            .cloned()
    }

    /// Live sessions, oldest first, optionally of one type.
    pub fn live_ids(&self, kind: Option<SessionType>) -> Vec<SessionId> {
        self.live_where(|s| kind.is_none_or(|k| k == s.kind))
    }

    /// Whether the session is listed and not exited.
    pub fn is_live(&self, id: &SessionId) -> bool {
        self.lock()
            .sessions
            .get(id)
            .is_some_and(|s| !matches!(s.phase, Phase::Exited { .. }))
    }

    /// Live sessions in any of the given workspaces, oldest first.
    pub fn in_workspaces(&self, workspaces: &[Workspace]) -> Vec<SessionId> {
        self.live_where(|s| workspaces.contains(&s.workspace))
    }

    fn live_where(&self, keep: impl Fn(&Session) -> bool) -> Vec<SessionId> {
        let state = self.lock();
        let mut found: Vec<&Session> = state
            .sessions
            .values()
            .filter(|s| s.is_live() && !s.warm && keep(s))
            .collect();
        found.sort_by(|a, b| oldest_first(a, b));
        found.into_iter().map(|s| s.id.clone()).collect()
    }

    /// Every live session and every warm browser: what a shutdown terminates.
    pub fn live_and_warm_ids(&self) -> Vec<SessionId> {
        let state = self.lock();
        state
            .sessions
            .values()
            .filter(|s| s.is_live())
            .map(|s| s.id.clone())
            .collect()
    }

    /// Starts or joins the termination of a session. `reason` becomes its exit reason if
    /// this starts the termination that ends it.
    pub fn begin_termination(
        &self,
        id: &SessionId,
        control: Control,
        reason: EndReason,
    ) -> Option<Begin> {
        let mut state = self.lock();
        let session = state.sessions.get_mut(id)?;
        let begin = match &session.phase {
            Phase::Exited { .. } => Begin::AlreadyGone,
            Phase::Terminating(termination) => Begin::Joined {
                upgraded: termination.join(control.force, control.deadline),
                termination: termination.clone(),
            },
            Phase::Starting | Phase::Running => {
                if !control.force && !session.leases.is_empty() {
                    return Some(Begin::Leased(session.leases.len()));
                }
                let termination = Arc::new(Termination::new(control, reason));
                session.phase = Phase::Terminating(termination.clone());
                self.emit(EventKind::Terminating, session, |_| {});
                Begin::Started(termination)
            }
        };
        // A forced termination ends the session's leases; the journal needs a line only
        // when there were some. The terminating phase needs none: after a crash nobody
        // waits for it any more, and the session is taken up as running (see `recovery`);
        // a reload hands the phase over in its snapshot.
        if control.force
            && !matches!(begin, Begin::AlreadyGone)
            && Self::drop_leases(&mut state, id)
        {
            self.persist(&state, id);
        }
        Some(begin)
    }

    /// Every session being terminated, with its termination.
    pub fn terminating(&self) -> Vec<(SessionId, Arc<Termination>)> {
        let state = self.lock();
        state
            .sessions
            .values()
            .filter_map(|s| match &s.phase {
                Phase::Terminating(t) => Some((s.id.clone(), t.clone())),
                _ => None,
            })
            .collect()
    }

    /// Records how a termination ended when the session outlived it: it is running again
    /// (its processes ignored SIGTERM, or even SIGKILL could not finish them).
    pub fn end_termination(
        &self,
        id: &SessionId,
        termination: &Arc<Termination>,
        outcome: &Outcome,
    ) {
        if matches!(outcome, Outcome::Terminated) {
            return;
        }
        let mut state = self.lock();
        if let Some(session) = state.sessions.get_mut(id) {
            if matches!(&session.phase, Phase::Terminating(t) if Arc::ptr_eq(t, termination)) {
                session.phase = Phase::Running;
                self.emit(EventKind::Running, session, |_| {});
            }
        }
    }

    /// Ends every lease of the session; whether it had any.
    fn drop_leases(state: &mut State, id: &SessionId) -> bool {
        let Some(session) = state.sessions.get_mut(id) else {
            return false;
        };
        let leases = std::mem::take(&mut session.leases);
        for lease in &leases {
            state.leases.remove(lease);
        }
        !leases.is_empty()
    }

    /// Records reaped children; called by the reaper with the reap lock held. Returns how
    /// many of them were session leaders.
    pub fn record_reaped(&self, batch: &[(i32, ExitStatus)]) -> usize {
        let mut state = self.lock();
        let mut leaders = 0;
        for (pid, status) in batch {
            let Some(id) = state.leaders.remove(pid) else {
                continue;
            };
            if let Some(session) = state.sessions.get_mut(&id) {
                session.leader_exit = Some(*status);
                session.left_behind = matches!(session.phase, Phase::Starting | Phase::Running);
                tracing::debug!(session = %id, pid, %status, "leader exited");
                leaders += 1;
                state.leader_exited.insert(id);
            }
        }
        leaders
    }

    /// `pids` less the unreaped leaders (sessions' and warm browsers') among them. With the
    /// reap lock held, each leader pid still names its leader.
    pub fn not_leaders(&self, mut pids: Vec<i32>) -> Vec<i32> {
        let state = self.lock();
        pids.retain(|pid| !state.leaders.contains_key(pid));
        pids
    }

    /// The threads that spawned the leaders of `ids`, or `None` where one is not known (a
    /// session from before a reload, or one no longer registered).
    pub fn spawner_threads(&self, ids: &[SessionId]) -> Option<Vec<i32>> {
        let state = self.lock();
        let mut threads = ids
            .iter()
            .map(|id| state.sessions.get(id)?.spawner)
            .collect::<Option<Vec<i32>>>()?;
        threads.sort_unstable();
        threads.dedup();
        Some(threads)
    }

    /// The session's pgid while its leader is unreaped (only then is the pgid pinned).
    /// Call with the reap lock held.
    pub fn unreaped_leader(&self, id: &SessionId) -> Option<i32> {
        let state = self.lock();
        let session = state.sessions.get(id)?;
        let child = !session.adopted;
        (child && session.leader_exit.is_none() && session.pid > 0).then_some(session.pid)
    }

    /// The pidfd (and identity) of an adopted session's leader while it has not exited: the
    /// only way an adopted leader is signalled.
    pub fn adopted_leader(&self, id: &SessionId) -> Option<(Arc<OwnedFd>, ProcKey)> {
        let state = self.lock();
        let session = state.sessions.get(id)?;
        let pidfd = session
            .leader_pidfd
            .clone()
            .filter(|_| session.leader_exit.is_none())?;
        Some((
            pidfd,
            ProcKey {
                pid: session.pid,
                start_time: session.start_time,
            },
        ))
    }

    /// Every adopted session whose leader has not exited, with its pidfd, to watch for the
    /// exit.
    pub fn adopted_leaders(&self) -> Vec<(SessionId, Arc<OwnedFd>)> {
        let state = self.lock();
        state
            .sessions
            .values()
            .filter(|s| s.is_live() && s.leader_exit.is_none())
            .filter_map(|s| Some((s.id.clone(), s.leader_pidfd.clone()?)))
            .collect()
    }

    /// An adopted leader exited (its pidfd became readable): its exit status is unknown, only
    /// its parent could read it.
    pub fn record_adopted_exit(&self, id: &SessionId) {
        let mut state = self.lock();
        if let Some(session) = state.sessions.get_mut(id) {
            if session.adopted && session.leader_exit.is_none() {
                session.leader_exit = Some(ExitStatus::Unknown);
                session.left_behind = matches!(session.phase, Phase::Starting | Phase::Running);
                tracing::debug!(session = %id, pid = session.pid, "adopted leader exited");
                state.leader_exited.insert(id.clone());
            }
        }
    }

    /// Whether the session's leader exited on its own, leaving processes behind that nobody
    /// has started terminating yet; clears the mark.
    pub fn take_left_behind(&self, id: &SessionId) -> bool {
        self.lock().sessions.get_mut(id).is_some_and(|s| {
            let left = s.left_behind && matches!(s.phase, Phase::Running | Phase::Starting);
            s.left_behind = false;
            left
        })
    }

    /// Sessions whose leader is reaped but which are not yet known to be gone.
    pub fn gone_candidates(&self) -> Vec<SessionId> {
        let mut state = self.lock();
        let state = &mut *state;
        let sessions = &state.sessions;
        state.leader_exited.retain(|id| {
            sessions
                .get(id)
                .is_some_and(|s| s.is_live() && s.leader_exit.is_some())
        });
        state.leader_exited.iter().cloned().collect()
    }

    /// Marks a session exited: it leaves live listings and its tracking id is free again,
    /// and its slot goes to the queue. A warm browser is forgotten at once. Only a session
    /// whose leader is reaped can finish.
    pub fn finish(&self, id: &SessionId, oom_killed: bool) -> Option<Finished> {
        let mut state = self.lock();
        let session = state.sessions.get_mut(id)?;
        let exit = session.leader_exit?;
        let (termination, reason) = match &session.phase {
            Phase::Exited { .. } => return None,
            Phase::Terminating(termination) => (Some(termination.clone()), termination.reason()),
            Phase::Starting | Phase::Running if oom_killed => (None, EndReason::OutOfMemory),
            Phase::Starting | Phase::Running => (None, EndReason::Exited),
        };
        session.phase = Phase::Exited {
            exit,
            ended_at: SystemTime::now(),
            reason,
        };
        self.emit(EventKind::Exited, session, |event| {
            event.exit = Some(exit);
            event.reason = Some(reason);
        });
        let owned_dirs = std::mem::take(&mut session.owned_dirs);
        let tracking_id = session.tracking_id.clone();
        let was_adopted = session.adopted;
        let warm_for = session.warm.then(|| {
            SystemTime::now()
                .duration_since(session.started_at)
                .unwrap_or_default()
        });
        session.leader_pidfd = None;
        let number = session.pid;
        if state.numbers.get(&number) == Some(id) {
            state.numbers.remove(&number);
        }
        state.release_tracking(tracking_id.as_ref(), id);
        Self::drop_leases(&mut state, id);
        if was_adopted {
            state.adopted -= 1;
        }
        if warm_for.is_some() {
            state.sessions.remove(id);
            state.warm -= 1;
            state.warm_ready.retain(|ready| ready != id);
            self.persist(&state, id);
            tracing::info!(warm = %id, %exit, %reason, "warm browser ended");
            return Some(Finished {
                termination,
                owned_dirs,
                warm_for,
            });
        }
        let forget_at = Instant::now() + self.limits.keep_exited_for;
        state.exited.push_back((id.clone(), forget_at));
        state
            .expiries
            .insert((forget_at, Expiry::Forget(id.clone())));
        while state.exited.len() > self.limits.keep_exited {
            if let Some((oldest, at)) = state.exited.pop_front() {
                state.sessions.remove(&oldest);
                state.expiries.remove(&(at, Expiry::Forget(oldest.clone())));
                self.persist(&state, &oldest);
            }
        }
        self.grant_queued(&mut state);
        self.persist(&state, id);
        self.expiry_changed.notify_one();
        tracing::info!(session = %id, %exit, %reason, "session exited");
        Some(Finished {
            termination,
            owned_dirs,
            warm_for,
        })
    }

    /// Who owns a process at the top of the tree the process table knows, read from
    /// `/proc` (call with the reap lock held, so a leader being spawned is either not forked
    /// yet or registered).
    ///
    /// A direct child of the daemon (`child_of_daemon`) is a leader, by pid and start time,
    /// or an orphan the daemon adopted: the session the `marker` in its environment names,
    /// else the session whose leader's pid is the session or group it still carries. An
    /// orphan none of these name is not a session's (as PID 1, the daemon may adopt
    /// processes that never were) and is never signalled; while its environment cannot be
    /// read (mid-`execve`, or a zombie), for up to `UNDECIDED_FOR`, it is undecided instead.
    ///
    /// Anything else can only belong to a session adopted after a restart, whose processes
    /// are not the daemon's descendants: its leader, by pid and start time, or a process
    /// whose marker names it. A zombie has no marker left to read: one whose group or
    /// session is such a session's leader's pid is counted that session's, so the session
    /// is not proven gone before it is reaped (a pid that carries a group or session is not
    /// handed out again while any member lives; a zombie cannot be harmed by a signal, and
    /// the worst a wrong guess costs is that wait).
    pub fn owner_for(&self, process: &ProcInfo, marker: &Marker, root: Root) -> Owner {
        let state = self.lock();
        let marked = match marker {
            Marker::Marked(value) => value
                .parse::<SessionId>()
                .ok()
                .filter(|id| state.sessions.get(id).is_some_and(Session::is_live)),
            Marker::Unmarked | Marker::Unreadable => None,
        };
        // A session's leader, by pid and start time, even once reaped while its session
        // lives (a refresh may read it a moment before its reap).
        let led = state.numbers.get(&process.pid).filter(|id| {
            state
                .sessions
                .get(*id)
                .is_some_and(|s| s.start_time == process.start_time)
        });
        let adopted = |id: &SessionId| state.sessions.get(id).is_some_and(|s| s.adopted);
        if !root.child_of_daemon {
            let grouped = || {
                [process.sid, process.pgid]
                    .iter()
                    .find_map(|number| state.numbers.get(number))
                    .filter(|_| process.is_zombie())
            };
            return match led
                .or(marked.as_ref())
                .or_else(grouped)
                .filter(|id| adopted(id))
            {
                Some(id) => Owner::Session(id.clone()),
                None => Owner::Foreign,
            };
        }
        if let Some(id) = led.cloned().or(marked) {
            return Owner::Session(id);
        }
        if *marker == Marker::Unreadable && root.may_wait && !process.is_zombie() {
            return Owner::Undecided;
        }
        match [process.sid, process.pgid]
            .iter()
            .find_map(|number| state.numbers.get(number))
            .filter(|id| !adopted(id))
        {
            Some(id) => Owner::Session(id.clone()),
            // A zombie has no environment left to read: it may be a session's that no
            // refresh met alive (a stray in a group and session of its own). The daemon
            // reaps it in a moment; until then no session is proven gone.
            None if *marker == Marker::Unreadable && root.may_wait => Owner::Undecided,
            None => Owner::Unowned,
        }
    }

    /// The cgroup of every live session that has one.
    pub fn cgroups(&self) -> Vec<(SessionId, PathBuf)> {
        let state = self.lock();
        state
            .sessions
            .values()
            .filter(|s| s.is_live())
            .filter_map(|s| Some((s.id.clone(), s.cgroup.clone()?)))
            .collect()
    }

    /// Whether any live session was adopted after a restart.
    pub fn has_adopted(&self) -> bool {
        self.lock().adopted > 0
    }

    /// Whether any of `ids` is a live session adopted after a restart.
    pub fn any_adopted(&self, ids: &[SessionId]) -> bool {
        let state = self.lock();
        state.adopted > 0
            && ids.iter().any(|id| {
                state
                    .sessions
                    .get(id)
                    .is_some_and(|s| s.adopted && s.is_live())
            })
    }

    /// Takes a lease on a live session.
    pub fn lease(&self, reference: &SessionRef, ttl: Duration) -> Result<(LeaseId, SystemTime)> {
        let mut state = self.lock();
        let id = Self::resolve_locked(&state, reference)
            .ok_or_else(|| Error::NotFound(format!("no session `{reference}`")))?;
        let seq = state.next_lease;
        let Some(session) = state.sessions.get_mut(&id) else {
            return Err(Error::NotFound(format!("no session `{reference}`")));
        };
        if !matches!(session.phase, Phase::Starting | Phase::Running) {
            return Err(Error::NotRunning(format!(
                "session {id} is {}; only a starting or running session can be leased",
                session.state()
            )));
        }
        let lease_id = LeaseId::generate(self.nonce, seq);
        session.leases.insert(lease_id.clone());
        state.next_lease += 1;
        self.reserve_ids(&mut state);
        let deadline = Deadline::after(ttl);
        state
            .leases
            .insert(lease_id.clone(), (id.clone(), deadline));
        state
            .expiries
            .insert((deadline.at, Expiry::Lease(lease_id.clone())));
        self.persist(&state, &id);
        self.expiry_changed.notify_one();
        Ok((lease_id, deadline.wall))
    }

    pub fn release(&self, lease_id: &LeaseId) -> Result<()> {
        let mut state = self.lock();
        let (id, _) = state.leases.remove(lease_id).ok_or_else(|| {
            Error::NotFound(format!(
                "no active lease `{lease_id}` (released, expired, or dropped by a forced kill)"
            ))
        })?;
        if let Some(session) = state.sessions.get_mut(&id) {
            session.leases.remove(lease_id);
        }
        self.persist(&state, &id);
        Ok(())
    }

    /// Removes the deadlines that are due and returns them with the next one.
    pub fn take_due(&self, now: Instant) -> (Vec<Expiry>, Option<Instant>) {
        let mut state = self.lock();
        let mut due = Vec::new();
        while let Some((deadline, _)) = state.expiries.first() {
            if *deadline > now {
                break;
            }
            let Some((deadline, expiry)) = state.expiries.pop_first() else {
                break;
            };
            let current = match &expiry {
                Expiry::Lease(lease) => state
                    .leases
                    .get(lease)
                    .is_some_and(|(_, d)| d.at == deadline),
                Expiry::Ttl(id) => state.sessions.get(id).is_some_and(Session::is_live),
                Expiry::Forget(id) => state.sessions.get(id).is_some_and(|s| !s.is_live()),
            };
            if current {
                if let Expiry::Ttl(id) = &expiry {
                    if let Some(session) = state.sessions.get(id) {
                        self.emit(EventKind::TtlExpired, session, |_| {});
                    }
                }
                due.push(expiry);
            }
        }
        (due, state.expiries.first().map(|(d, _)| *d))
    }

    /// Waits until a deadline is added (the expiry loop then looks again).
    pub async fn expiry_changed(&self) {
        self.expiry_changed.notified().await;
    }

    /// Drops an expired lease.
    pub fn expire_lease(&self, lease_id: &LeaseId) {
        let mut state = self.lock();
        let Some((id, _)) = state.leases.remove(lease_id) else {
            return;
        };
        if let Some(session) = state.sessions.get_mut(&id) {
            session.leases.remove(lease_id);
            self.emit(EventKind::LeaseExpired, session, |event| {
                event.lease_id = Some(lease_id.clone());
            });
        }
        self.persist(&state, &id);
        tracing::info!(lease = %lease_id, "lease expired");
    }

    /// Forgets an exited session that has been listed long enough.
    pub fn forget(&self, id: &SessionId) {
        let mut state = self.lock();
        if state.sessions.get(id).is_some_and(|s| !s.is_live()) {
            state.sessions.remove(id);
            state.exited.retain(|(e, _)| e != id);
            self.persist(&state, id);
        }
    }

    /// Whether shutdown has begun (nothing new is registered any more).
    pub fn is_shutting_down(&self) -> bool {
        self.lock().shutting_down
    }

    /// Refuses new launches from now on, and fails every queued one. Returns false if
    /// already shutting down.
    pub fn begin_shutdown(&self) -> bool {
        let mut state = self.lock();
        if std::mem::replace(&mut state.shutting_down, true) {
            return false;
        }
        for waiter in std::mem::take(&mut state.queue) {
            state.release_tracking(waiter.tracking_id.as_ref(), &waiter.id);
            let _ = waiter.grant.send(Err(Error::ShuttingDown));
        }
        true
    }
}

/// Rebuilds one session and its indexes from its record.
fn restore_session(
    state: &mut State,
    limits: &Limits,
    record: SessionRecord,
    leader_pidfd: Option<Arc<OwnedFd>>,
) {
    let id = record.id.clone();
    let expires = record.expires_at_ms.map(|ms| Deadline {
        at: instant_of(ms),
        wall: from_unix_ms(ms),
    });
    let phase = match record.state {
        StateRecord::Starting => Phase::Starting,
        StateRecord::Running => Phase::Running,
        StateRecord::Terminating {
            force,
            deadline_ms,
            reason,
        } => Phase::Terminating(Arc::new(Termination::new(
            Control {
                force,
                deadline: instant_of(deadline_ms),
            },
            reason,
        ))),
        StateRecord::Exited {
            exit,
            ended_at_ms,
            reason,
        } => Phase::Exited {
            exit,
            ended_at: from_unix_ms(ended_at_ms),
            reason,
        },
    };
    let mut session = Session {
        id: id.clone(),
        tracking_id: record.tracking_id,
        kind: record.session_type,
        workspace: record.workspace,
        command: record.command,
        pid: record.leader.pid,
        start_time: record.leader.start_time,
        adopted: record.leader.adopted,
        leader_pidfd,
        started_at: from_unix_ms(record.started_at_ms),
        expires,
        leases: record.leases.iter().map(|l| l.id.clone()).collect(),
        leader_exit: record.leader.exit,
        left_behind: false,
        phase,
        browser: record.browser.map(|b| BrowserInfo {
            ws_endpoint: b.ws_endpoint,
            profile_dir: b.profile_dir,
        }),
        owned_dirs: record.dirs,
        cgroup: record.cgroup,
        warm: record.warm,
        spawner: None,
        listed: ListedText::default(),
    };
    session.listed = ListedText::of(&session);
    if session.warm && !session.is_live() {
        return;
    }
    if session.warm {
        state.warm += 1;
        let ready = session.leader_exit.is_none()
            && matches!(session.phase, Phase::Running)
            && session
                .browser
                .as_ref()
                .is_some_and(|b| b.ws_endpoint.is_some());
        if ready {
            state.warm_ready.push_back(id.clone());
        }
    }
    if session.is_live() {
        if session.adopted {
            state.adopted += 1;
        }
        if let Some(tracking_id) = &session.tracking_id {
            state.tracking.insert(tracking_id.clone(), id.clone());
        }
        if !session.adopted && session.leader_exit.is_none() {
            state.leaders.insert(session.pid, id.clone());
        }
        state.numbers.insert(session.pid, id.clone());
        if let Some(deadline) = expires {
            state
                .expiries
                .insert((deadline.at, Expiry::Ttl(id.clone())));
        }
        for lease in record.leases {
            let deadline = Deadline {
                at: instant_of(lease.expires_at_ms),
                wall: from_unix_ms(lease.expires_at_ms),
            };
            state
                .expiries
                .insert((deadline.at, Expiry::Lease(lease.id.clone())));
            state.leases.insert(lease.id, (id.clone(), deadline));
        }
    } else if let Phase::Exited { ended_at, .. } = session.phase {
        let listed_for = SystemTime::now()
            .duration_since(ended_at)
            .unwrap_or_default();
        let forget_at = Instant::now() + limits.keep_exited_for.saturating_sub(listed_for);
        state.exited.push_back((id.clone(), forget_at));
        state
            .expiries
            .insert((forget_at, Expiry::Forget(id.clone())));
    }
    if session.is_live() && session.leader_exit.is_some() {
        state.leader_exited.insert(id.clone());
    }
    state.sessions.insert(id, session);
}

/// A value that differs between daemon instances, so that session ids are never reused
/// across restarts either.
fn instance_nonce() -> u32 {
    let mut bytes = [0u8; 4];
    loop {
        let nonce = if std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .is_ok()
        {
            u32::from_ne_bytes(bytes)
        } else {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            nanos ^ std::process::id().rotate_left(16)
        };
        // 0 means "no nonce yet".
        if nonce != 0 {
            return nonce;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max_sessions: u32) -> Registry {
        queueing(max_sessions, 0)
    }

    fn queueing(max_sessions: u32, max_queue: u32) -> Registry {
        Registry::new(Limits {
            max_sessions,
            max_queue,
            keep_exited: 2,
            keep_exited_for: Duration::from_secs(600),
        })
    }

    impl Registry {
        /// Admits without queueing.
        fn admit_now(
            &self,
            tracking_id: Option<&TrackingId>,
            ttl: Option<Duration>,
        ) -> Result<Admission> {
            match self.admit(tracking_id, ttl, false)? {
                Admitted::Now(admission) => Ok(admission),
                Admitted::Queued(_) => unreachable!("a launch that may not wait never queues"),
            }
        }

        /// Admits, queueing at capacity.
        fn admit_or_queue(&self, tracking_id: Option<&str>) -> Result<Admitted> {
            self.admit(tracking_id.map(tracking).as_ref(), None, true)
        }
    }

    /// The admission a queued launch was granted, if any yet.
    fn granted(queued: &mut Queued) -> Option<Result<Admission>> {
        queued.granted.try_recv().ok()
    }

    fn queued(admitted: Result<Admitted>) -> Queued {
        match admitted {
            Ok(Admitted::Queued(queued)) => queued,
            Ok(Admitted::Now(_)) => panic!("admitted at once"),
            Err(e) => panic!("refused: {e}"),
        }
    }

    /// Launches and readies a warm browser led by `pid`.
    fn warm(registry: &Registry, pid: i32) -> SessionId {
        let id = registry.admit_warm().unwrap();
        registry.insert_warm(
            id.clone(),
            NewSession {
                kind: SessionType::Browser,
                starting: true,
                browser: Some(BrowserInfo::default()),
                ..new_session(pid, None)
            },
        );
        registry
            .mark_running(&id, format!("ws://127.0.0.1:1/devtools/browser/{pid}"))
            .unwrap();
        id
    }

    fn tracking(name: &str) -> TrackingId {
        name.parse().unwrap()
    }

    fn new_session(pid: i32, tracking_id: Option<&str>) -> NewSession {
        NewSession {
            tracking_id: tracking_id.map(tracking),
            kind: SessionType::Sandbox,
            workspace: Workspace::default(),
            command: vec!["sleep".into()],
            pid,
            start_time: 42,
            starting: false,
            browser: None,
            owned_dirs: Vec::new(),
            cgroup: None,
            spawner: None,
        }
    }

    /// Admits and inserts a running session led by `pid`.
    fn launch(registry: &Registry, pid: i32, tracking_id: Option<&str>) -> SessionId {
        let admission = registry
            .admit_now(tracking_id.map(tracking).as_ref(), None)
            .unwrap();
        registry.insert(admission, new_session(pid, tracking_id)).id
    }

    /// The leader is reaped with `code` and the session finishes.
    fn exit(registry: &Registry, id: &SessionId, pid: i32, code: i32) {
        assert_eq!(registry.record_reaped(&[(pid, ExitStatus::Code(code))]), 1);
        registry.finish(id, false).expect("finishes");
    }

    fn control(force: bool) -> Control {
        Control {
            force,
            deadline: Instant::now() + Duration::from_secs(1),
        }
    }

    #[test]
    fn capacity_counts_live_sessions_and_pending_launches() {
        let r = registry(2);
        let first = launch(&r, 100, None);
        let pending = r.admit_now(None, None).unwrap();
        assert!(matches!(r.admit_now(None, None), Err(Error::Capacity(_))));
        r.cancel(pending);
        let second = launch(&r, 101, None);
        assert!(matches!(r.admit_now(None, None), Err(Error::Capacity(_))));
        exit(&r, &first, 100, 0);
        assert!(
            r.admit_now(None, None).is_ok(),
            "an exited session frees its slot"
        );
        assert_ne!(first, second);
    }

    #[test]
    fn a_tracking_id_is_unique_among_live_sessions_and_free_once_exited() {
        let r = registry(10);
        let first = launch(&r, 100, Some("job"));
        assert!(matches!(
            r.admit_now(Some(&tracking("job")), None),
            Err(Error::Conflict(_))
        ));
        let reserved = r.admit_now(Some(&tracking("other")), None).unwrap();
        assert!(
            matches!(
                r.admit_now(Some(&tracking("other")), None),
                Err(Error::Conflict(_))
            ),
            "a pending launch holds its tracking id"
        );
        r.cancel(reserved);
        assert!(r.admit_now(Some(&tracking("other")), None).is_ok());
        exit(&r, &first, 100, 0);
        let second = launch(&r, 101, Some("job"));
        assert_eq!(r.resolve(&"job".parse().unwrap()), Some(second.clone()));
        exit(&r, &second, 101, 0);
        assert_eq!(
            r.resolve(&"job".parse().unwrap()),
            Some(second),
            "the latest exited session answers for its tracking id"
        );
    }

    #[test]
    fn listed_sessions_read_back_as_their_info() {
        let r = registry(10);
        let plain = launch(&r, 500, None);
        let tracked = launch(&r, 501, Some("job-1"));
        r.lease(&tracked.as_str().parse().unwrap(), Duration::from_secs(60))
            .unwrap();
        let admission = r.admit_now(None, None).unwrap();
        let browser = r
            .insert(
                admission,
                NewSession {
                    kind: SessionType::Browser,
                    starting: true,
                    browser: Some(BrowserInfo {
                        ws_endpoint: None,
                        profile_dir: Some("/tmp/profile ü".into()),
                    }),
                    ..new_session(502, None)
                },
            )
            .id;
        r.mark_running(&browser, "ws://127.0.0.1:9/devtools/browser/x".into())
            .unwrap();
        let admission = r.admit_now(None, Some(Duration::from_secs(3600))).unwrap();
        let expiring = r
            .insert(
                admission,
                NewSession {
                    command: vec!["sh".into(), "-c".into(), "echo \"ü\"\n\t\\".into()],
                    workspace: "team a/β".parse().unwrap(),
                    ..new_session(503, None)
                },
            )
            .id;
        let gone = launch(&r, 504, Some("gone"));
        exit(&r, &gone, 504, 3);
        let used = |id: &SessionId| {
            (*id != plain).then_some(ListedUsage {
                processes: 3,
                memory_bytes: 1 << 20,
                cpu_seconds: 0.25,
                age_ms: 1500,
            })
        };
        for filter in [
            SessionsFilter::default(),
            SessionsFilter {
                state: Some(SessionState::Exited),
                ..Default::default()
            },
            SessionsFilter {
                tracking_id: Some(tracking("job-1")),
                ..Default::default()
            },
        ] {
            let mut expected = r.list(&filter);
            for info in expected.iter_mut().filter(|s| s.state.is_live()) {
                if let Some(u) = used(&info.id) {
                    info.processes = Some(u.processes);
                    info.memory_bytes = Some(u.memory_bytes);
                    info.cpu_seconds = Some(u.cpu_seconds);
                    info.usage_age_ms = Some(u.age_ms);
                }
            }
            let json = r.list_json(&filter, used);
            let listed: browserd_proto::SessionsResult =
                serde_json::from_str(json.get()).expect("a listing reads back");
            assert_eq!(listed.sessions, expected, "{filter:?}");
            assert_eq!(
                json.get(),
                serde_json::to_string(&browserd_proto::SessionsResult { sessions: expected })
                    .unwrap(),
                "the same text, field for field"
            );
        }
        let all = r.list(&SessionsFilter::default());
        assert_eq!(all.len(), 5);
        assert!(all
            .iter()
            .any(|s| s.id == expiring && s.expires_at.is_some()));
        assert!(all
            .iter()
            .any(|s| s.id == browser && s.ws_endpoint.is_some()));
        assert!(all
            .iter()
            .any(|s| s.id == gone && s.exit.is_some() && s.ended_at.is_some()));
        let mut live = r.live_listed(&SessionsFilter::default());
        live.sort();
        assert_eq!(live, vec![plain, tracked, browser, expiring]);
    }

    #[test]
    fn exited_sessions_are_kept_up_to_the_bound_oldest_dropped_first() {
        let r = registry(10);
        let ids: Vec<SessionId> = (0..3).map(|i| launch(&r, 200 + i, None)).collect();
        for (i, id) in ids.iter().enumerate() {
            exit(&r, id, 200 + i as i32, i as i32);
        }
        assert!(r.info(&ids[0]).is_none(), "the oldest exit is forgotten");
        let kept = r.info(&ids[2]).unwrap();
        assert_eq!(kept.state, SessionState::Exited);
        assert_eq!(kept.exit, Some(ExitStatus::Code(2)));
        assert_eq!(kept.reason, Some(EndReason::Exited));
        assert_eq!(r.counts().exited, 2);
    }

    #[test]
    fn leases_hold_off_a_plain_termination_and_force_drops_them() {
        let r = registry(10);
        let id = launch(&r, 300, None);
        let (lease, _) = r
            .lease(&id.as_str().parse().unwrap(), Duration::from_secs(60))
            .unwrap();
        assert!(matches!(
            r.begin_termination(&id, control(false), EndReason::Terminated),
            Some(Begin::Leased(1))
        ));
        assert_eq!(r.info(&id).unwrap().state, SessionState::Running);
        assert!(matches!(
            r.begin_termination(&id, control(true), EndReason::Terminated),
            Some(Begin::Started(_))
        ));
        assert_eq!(r.info(&id).unwrap().leases, 0);
        assert!(matches!(r.release(&lease), Err(Error::NotFound(_))));
    }

    #[test]
    fn a_second_termination_joins_and_upgrades_the_first() {
        let r = registry(10);
        let id = launch(&r, 400, None);
        let Some(Begin::Started(first)) =
            r.begin_termination(&id, control(false), EndReason::Terminated)
        else {
            panic!("expected a new termination")
        };
        let Some(Begin::Joined {
            termination,
            upgraded,
        }) = r.begin_termination(&id, control(true), EndReason::TtlExpired)
        else {
            panic!("expected to join")
        };
        assert!(Arc::ptr_eq(&first, &termination) && upgraded);
        assert!(first.control().force);
        // It ends the session with the first termination's reason.
        assert_eq!(r.record_reaped(&[(400, ExitStatus::Signal(9))]), 1);
        let finished = r.finish(&id, false).unwrap();
        assert!(finished.termination.is_some());
        assert_eq!(r.info(&id).unwrap().reason, Some(EndReason::Terminated));
        assert!(matches!(
            r.begin_termination(&id, control(true), EndReason::Terminated),
            Some(Begin::AlreadyGone)
        ));
    }

    #[test]
    fn a_timed_out_termination_leaves_the_session_running() {
        let r = registry(10);
        let id = launch(&r, 500, None);
        let Some(Begin::Started(t)) =
            r.begin_termination(&id, control(false), EndReason::Terminated)
        else {
            panic!("expected a new termination")
        };
        r.end_termination(&id, &t, &Outcome::Timeout(vec![500]));
        assert_eq!(r.info(&id).unwrap().state, SessionState::Running);
    }

    #[test]
    fn only_a_reaped_leader_lets_a_session_finish() {
        let r = registry(10);
        let id = launch(&r, 600, None);
        assert!(r.finish(&id, false).is_none());
        assert_eq!(
            r.record_reaped(&[(9999, ExitStatus::Code(0))]),
            0,
            "not a leader"
        );
        assert_eq!(r.unreaped_leader(&id), Some(600));
        r.record_reaped(&[(600, ExitStatus::Code(0))]);
        assert_eq!(r.unreaped_leader(&id), None);
        assert_eq!(r.gone_candidates(), vec![id.clone()]);
        assert!(r.take_left_behind(&id), "it exited on its own");
        assert!(!r.take_left_behind(&id), "the mark is taken once");
        assert!(r.finish(&id, false).is_some());
        assert!(r.gone_candidates().is_empty());
    }

    #[test]
    fn deadlines_come_due_in_order_and_stale_ones_are_skipped() {
        let r = registry(10);
        let id = launch(&r, 700, None);
        let (lease, _) = r
            .lease(&id.as_str().parse().unwrap(), Duration::from_millis(1))
            .unwrap();
        r.release(&lease).unwrap();
        let (due, _) = r.take_due(Instant::now() + Duration::from_secs(1));
        assert!(due.is_empty(), "a released lease does not expire: {due:?}");
        let admission = r.admit_now(None, Some(Duration::from_millis(5))).unwrap();
        let ttl_id = r.insert(admission, new_session(701, None)).id;
        let (due, _) = r.take_due(Instant::now() + Duration::from_secs(1));
        assert_eq!(due, vec![Expiry::Ttl(ttl_id)]);
    }

    #[test]
    fn queued_launches_get_freed_slots_in_order() {
        let r = queueing(1, 3);
        let first = launch(&r, 100, None);
        let mut a = queued(r.admit_or_queue(Some("a")));
        let mut b = queued(r.admit_or_queue(None));
        let mut c = queued(r.admit_or_queue(None));
        let err = r.admit_or_queue(None).err().unwrap().to_string();
        assert!(err.contains("queue is full"), "{err}");
        assert_eq!(r.queue_depth(), 3);
        assert!(
            matches!(r.admit_or_queue(Some("a")), Err(Error::Conflict(_))),
            "a queued launch holds its tracking id"
        );
        assert!(granted(&mut a).is_none());

        exit(&r, &first, 100, 0);
        let admission = granted(&mut a).expect("the head gets the slot").unwrap();
        assert!(granted(&mut b).is_none(), "one slot, one launch");
        assert_eq!(r.queue_depth(), 2);
        let second = r.insert(admission, new_session(101, Some("a"))).id;
        assert_eq!(r.resolve(&"a".parse().unwrap()), Some(second.clone()));

        // A launch that gives its slot back passes it on.
        exit(&r, &second, 101, 0);
        let admission = granted(&mut b).unwrap().unwrap();
        r.cancel(admission);
        assert!(granted(&mut c).is_some(), "the next in line gets it");
        assert_eq!(r.queue_depth(), 0);
    }

    #[test]
    fn a_launch_that_leaves_the_queue_frees_its_place_or_its_slot() {
        let r = queueing(1, 2);
        let first = launch(&r, 100, None);
        let a = queued(r.admit_or_queue(Some("a")));
        let b = queued(r.admit_or_queue(None));
        assert!(r.leave_queue(a).is_none(), "not granted yet");
        assert_eq!(r.queue_depth(), 1);
        assert!(
            r.admit_or_queue(Some("a")).is_ok(),
            "its tracking id is free again"
        );
        exit(&r, &first, 100, 0);
        // Granted while it was giving up: the admission comes back to the caller.
        let admission = r.leave_queue(b).expect("granted meanwhile");
        r.cancel(admission);
    }

    #[test]
    fn without_a_queue_or_a_wait_a_launch_at_capacity_fails_at_once() {
        let r = registry(1);
        launch(&r, 100, None);
        let err = r.admit_or_queue(None).err().unwrap().to_string();
        assert!(err.contains("--max-queue"), "{err}");
        let r = queueing(1, 5);
        launch(&r, 100, None);
        let err = r.admit_now(None, None).unwrap_err().to_string();
        assert!(err.contains("queue_timeout_ms 0"), "{err}");
    }

    #[test]
    fn shutdown_fails_every_queued_launch() {
        let r = queueing(1, 2);
        launch(&r, 100, None);
        let mut a = queued(r.admit_or_queue(Some("a")));
        assert!(r.begin_shutdown());
        assert!(matches!(granted(&mut a), Some(Err(Error::ShuttingDown))));
        assert_eq!(r.queue_depth(), 0);
    }

    #[test]
    fn warm_browsers_are_no_sessions_until_handed_out() {
        let r = queueing(1, 0);
        let w1 = warm(&r, 200);
        let w2 = warm(&r, 201);
        assert_eq!(
            r.warm_counts(),
            WarmCounts {
                ready: 2,
                starting: 0
            }
        );
        assert!(r.list(&SessionsFilter::default()).is_empty());
        assert_eq!(r.counts(), StateCounts::default());
        assert!(r.live_ids(None).is_empty());
        assert_eq!(r.resolve(&w1.as_str().parse().unwrap()), None);
        assert!(r
            .lease(&w1.as_str().parse().unwrap(), Duration::from_secs(1))
            .is_err());
        assert_eq!(r.live_and_warm_ids().len(), 2, "a shutdown still sees them");

        let admission = r
            .admit_now(Some(&tracking("job")), Some(Duration::from_secs(60)))
            .expect("warm browsers take no slot");
        let session = r
            .hand_out(admission, "scrape".parse().unwrap())
            .unwrap_or_else(|_| panic!("a warm browser is ready"));
        assert_eq!(session.id, w1, "the one that waited longest");
        assert_eq!(session.pid, 200);
        assert_eq!(session.tracking_id, Some(tracking("job")));
        assert_eq!(session.workspace.as_str(), "scrape");
        assert!(session.expires_at.is_some() && session.ws_endpoint.is_some());
        assert_eq!(
            r.list_json(&SessionsFilter::default(), |_| None).get(),
            serde_json::to_string(&browserd_proto::SessionsResult {
                sessions: vec![session.clone()]
            })
            .unwrap(),
            "a hand-out is listed with its tracking id, workspace and start"
        );
        assert_eq!(r.resolve(&"job".parse().unwrap()), Some(w1.clone()));
        assert_eq!(r.live_ids(None), vec![w1.clone()]);
        assert_eq!(
            r.warm_counts(),
            WarmCounts {
                ready: 1,
                starting: 0
            }
        );
        assert!(
            matches!(r.admit_now(None, None), Err(Error::Capacity(_))),
            "the hand-out took the slot"
        );

        // A warm browser that dies is forgotten, not listed as exited.
        assert_eq!(r.record_reaped(&[(201, ExitStatus::Signal(9))]), 1);
        let finished = r.finish(&w2, false).unwrap();
        assert!(finished.warm_for.is_some());
        assert_eq!(r.warm_counts(), WarmCounts::default());
        assert_eq!(r.counts().exited, 0);
        assert!(r.info(&w2).is_none());
    }

    #[test]
    fn no_hand_out_without_a_ready_warm_browser() {
        let r = registry(2);
        let id = r.admit_warm().unwrap();
        r.insert_warm(
            id,
            NewSession {
                starting: true,
                ..new_session(300, None)
            },
        );
        let starting = r.admit_now(None, None).unwrap();
        let starting = r
            .hand_out(starting, Workspace::default())
            .expect_err("a starting warm browser is not handed out");
        r.cancel(starting);
        let w = warm(&r, 301);
        r.record_reaped(&[(301, ExitStatus::Signal(9))]);
        let admission = r.admit_now(None, None).unwrap();
        assert!(
            r.hand_out(admission, Workspace::default()).is_err(),
            "nor one whose leader died ({w})"
        );
    }

    #[test]
    fn shutdown_refuses_new_launches() {
        let r = registry(10);
        assert!(r.begin_shutdown());
        assert!(!r.begin_shutdown());
        assert!(matches!(r.admit_now(None, None), Err(Error::ShuttingDown)));
        assert!(matches!(r.admit_warm(), Err(Error::ShuttingDown)));
    }
}
