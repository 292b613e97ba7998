//! The session registry: the one owner of session state. Everything else asks it through
//! short methods that take the lock, change or copy a little, and let go; none holds it
//! across an `.await` or a blocking syscall. Leases and TTLs are deadlines kept here in one
//! ordered set, which the expiry task sleeps on.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::procs::{Owner, ProcInfo};
use crate::terminate::{Control, Outcome, Termination};
use browserd_proto::{
    ExitStatus, LeaseId, SessionId, SessionInfo, SessionRef, SessionState, SessionType,
    SessionsFilter, StateCounts, TrackingId, Workspace,
};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// Where a session is in its life; each phase carries what only it has.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Spawned, not yet ready (a browser waiting for its DevTools endpoint).
    Starting,
    Running,
    /// Being terminated; requests that also target it join this termination.
    Terminating(Arc<Termination>),
    /// Every process is gone and reaped.
    Exited {
        exit: ExitStatus,
        ended_at: SystemTime,
    },
}

/// What a browser session has beyond a sandbox.
#[derive(Debug, Clone, Default)]
pub struct BrowserInfo {
    pub ws_endpoint: Option<String>,
    pub profile_dir: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Session {
    pub id: SessionId,
    pub tracking_id: Option<TrackingId>,
    pub kind: SessionType,
    pub workspace: Workspace,
    pub command: Vec<String>,
    pub pid: i32,
    /// The leader's start time (clock ticks), its identity against pid reuse.
    pub start_time: u64,
    pub started_at: SystemTime,
    pub expires: Option<(Instant, SystemTime)>,
    pub leases: BTreeSet<LeaseId>,
    /// Set once the leader is reaped; the session may still have other processes.
    pub leader_exit: Option<ExitStatus>,
    /// The leader exited on its own (not during a termination) and what it left behind is
    /// still to be dealt with.
    pub left_behind: bool,
    pub phase: Phase,
    pub browser: Option<BrowserInfo>,
    /// Dirs the daemon created for the session, removed once it is gone.
    pub owned_dirs: Vec<PathBuf>,
}

impl Session {
    pub fn state(&self) -> SessionState {
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

    pub fn info(&self) -> SessionInfo {
        let (exit, ended_at) = match &self.phase {
            Phase::Exited { exit, ended_at } => (Some(*exit), Some(rfc3339(*ended_at))),
            _ => (None, None),
        };
        SessionInfo {
            id: self.id.clone(),
            tracking_id: self.tracking_id.clone(),
            session_type: self.kind,
            workspace: self.workspace.clone(),
            state: self.state(),
            pid: self.pid,
            pgid: self.pid,
            started_at: rfc3339(self.started_at),
            command: self.command.clone(),
            leases: u32::try_from(self.leases.len()).unwrap_or(u32::MAX),
            exit,
            ended_at,
            expires_at: self
                .expires
                .map(|(_, at)| rfc3339(at))
                .filter(|_| self.is_live()),
            ws_endpoint: self.browser.as_ref().and_then(|b| b.ws_endpoint.clone()),
            profile_dir: self
                .browser
                .as_ref()
                .and_then(|b| b.profile_dir.as_ref())
                .map(|p| p.display().to_string()),
            processes: None,
            rss_bytes: None,
        }
    }
}

/// Listing order: oldest first, ties by id.
fn oldest_first(a: &Session, b: &Session) -> std::cmp::Ordering {
    a.started_at
        .cmp(&b.started_at)
        .then_with(|| a.id.cmp(&b.id))
}

pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// A deadline the expiry task acts on.
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
    /// A new termination; the caller must run it.
    Started(Arc<Termination>),
    /// A termination already in flight, now possibly upgraded.
    Joined(Arc<Termination>),
}

/// A session that has just become gone: who to tell and what to clean.
pub struct Finished {
    pub termination: Option<Arc<Termination>>,
    pub owned_dirs: Vec<PathBuf>,
}

/// What a launch was admitted as.
pub struct Admission {
    pub id: SessionId,
    pub expires: Option<(Instant, SystemTime)>,
}

struct State {
    sessions: HashMap<SessionId, Session>,
    tracking: HashMap<TrackingId, SessionId>,
    /// Unreaped leaders by pid.
    leaders: HashMap<i32, SessionId>,
    /// Live sessions by their leader's pid number, which is also the sid and pgid their
    /// processes carry unless they moved (the number stays pinned while any does).
    numbers: HashMap<i32, SessionId>,
    leases: HashMap<LeaseId, (SessionId, Instant)>,
    /// Exited sessions, oldest first, with when they are to be forgotten.
    exited: VecDeque<(SessionId, Instant)>,
    expiries: BTreeSet<(Instant, Expiry)>,
    next_session: u64,
    next_lease: u64,
    shutting_down: bool,
}

pub struct Registry {
    state: Mutex<State>,
    /// Woken when a deadline is added, so the expiry task can sleep until the earliest.
    pub expiry_changed: Notify,
    nonce: u32,
    max_sessions: u32,
    keep_exited: usize,
    keep_exited_for: Duration,
}

impl Registry {
    pub fn new(config: &Config) -> Registry {
        Registry {
            state: Mutex::new(State {
                sessions: HashMap::new(),
                tracking: HashMap::new(),
                leaders: HashMap::new(),
                numbers: HashMap::new(),
                leases: HashMap::new(),
                exited: VecDeque::new(),
                expiries: BTreeSet::new(),
                next_session: 1,
                next_lease: 1,
                shutting_down: false,
            }),
            expiry_changed: Notify::new(),
            nonce: instance_nonce(),
            max_sessions: config.max_sessions,
            keep_exited: config.keep_exited,
            keep_exited_for: config.keep_exited_for,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks that a launch may proceed and reserves its id. The caller holds the reap lock
    /// until it has inserted the session, which makes check-and-insert atomic across
    /// concurrent launches.
    pub fn admit(
        &self,
        tracking_id: Option<&TrackingId>,
        ttl: Option<Duration>,
    ) -> Result<Admission> {
        let mut state = self.lock();
        if state.shutting_down {
            return Err(Error::ShuttingDown);
        }
        let live = state.sessions.len() - state.exited.len();
        if live >= self.max_sessions as usize {
            return Err(Error::Capacity(format!(
                "{live} sessions are live and max_sessions is {}; kill some, or start browserd with a larger --max-sessions",
                self.max_sessions
            )));
        }
        if let Some(tracking_id) = tracking_id {
            if let Some(owner) = state.tracking.get(tracking_id) {
                return Err(Error::Conflict(format!(
                    "tracking id `{tracking_id}` is already used by live session {owner}"
                )));
            }
        }
        let seq = state.next_session;
        state.next_session += 1;
        let expires = ttl.map(|ttl| (Instant::now() + ttl, SystemTime::now() + ttl));
        Ok(Admission {
            id: SessionId::generate(self.nonce, seq),
            expires,
        })
    }

    /// Registers a spawned session.
    pub fn insert(&self, session: Session) {
        let mut state = self.lock();
        if let Some(tracking_id) = &session.tracking_id {
            state
                .tracking
                .insert(tracking_id.clone(), session.id.clone());
        }
        if let Some((deadline, _)) = session.expires {
            state
                .expiries
                .insert((deadline, Expiry::Ttl(session.id.clone())));
            self.expiry_changed.notify_one();
        }
        state.leaders.insert(session.pid, session.id.clone());
        state.numbers.insert(session.pid, session.id.clone());
        state.sessions.insert(session.id.clone(), session);
    }

    /// Applies `change` to a session, if it exists.
    pub fn update<R>(&self, id: &SessionId, change: impl FnOnce(&mut Session) -> R) -> Option<R> {
        self.lock().sessions.get_mut(id).map(change)
    }

    pub fn info(&self, id: &SessionId) -> Option<SessionInfo> {
        self.lock().sessions.get(id).map(Session::info)
    }

    /// Sessions matching every given filter, oldest first.
    pub fn list(&self, filter: &SessionsFilter) -> Vec<SessionInfo> {
        let state = self.lock();
        let mut found: Vec<&Session> = state
            .sessions
            .values()
            .filter(|s| filter.workspace.as_ref().is_none_or(|w| *w == s.workspace))
            .filter(|s| filter.session_type.is_none_or(|t| t == s.kind))
            .filter(|s| filter.state.is_none_or(|st| st == s.state()))
            .filter(|s| filter.tracking_id.is_none() || filter.tracking_id == s.tracking_id)
            .collect();
        found.sort_by(|a, b| oldest_first(a, b));
        found.into_iter().map(Session::info).collect()
    }

    pub fn counts(&self) -> StateCounts {
        let state = self.lock();
        let mut counts = StateCounts::default();
        for session in state.sessions.values() {
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
        let state = self.lock();
        Self::resolve_locked(&state, reference)
    }

    fn resolve_locked(state: &State, reference: &SessionRef) -> Option<SessionId> {
        if let Some(session) = state.sessions.get(reference.as_str()) {
            return Some(session.id.clone());
        }
        if let Some(id) = state.tracking.get(reference.as_str()) {
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

    /// Live sessions in any of the given workspaces, oldest first.
    pub fn in_workspaces(&self, workspaces: &[Workspace]) -> Vec<SessionId> {
        self.live_where(|s| workspaces.contains(&s.workspace))
    }

    fn live_where(&self, keep: impl Fn(&Session) -> bool) -> Vec<SessionId> {
        let state = self.lock();
        let mut found: Vec<&Session> = state
            .sessions
            .values()
            .filter(|s| s.is_live() && keep(s))
            .collect();
        found.sort_by(|a, b| oldest_first(a, b));
        found.into_iter().map(|s| s.id.clone()).collect()
    }

    /// Starts or joins the termination of a session.
    pub fn begin_termination(
        &self,
        id: &SessionId,
        force: bool,
        deadline: Instant,
    ) -> Option<Begin> {
        let mut state = self.lock();
        let session = state.sessions.get_mut(id)?;
        let begin = match &session.phase {
            Phase::Exited { .. } => Begin::AlreadyGone,
            Phase::Terminating(termination) => {
                let termination = termination.clone();
                termination.join(force, deadline);
                if force {
                    Self::drop_leases(&mut state, id);
                }
                Begin::Joined(termination)
            }
            Phase::Starting | Phase::Running => {
                if !force && !session.leases.is_empty() {
                    return Some(Begin::Leased(session.leases.len()));
                }
                let termination = Arc::new(Termination::new(Control { force, deadline }));
                session.phase = Phase::Terminating(termination.clone());
                if force {
                    Self::drop_leases(&mut state, id);
                }
                Begin::Started(termination)
            }
        };
        Some(begin)
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
            }
        }
    }

    fn drop_leases(state: &mut State, id: &SessionId) {
        if let Some(session) = state.sessions.get_mut(id) {
            for lease in std::mem::take(&mut session.leases) {
                state.leases.remove(&lease);
            }
        }
    }

    /// Records reaped children; called by the reaper with the reap lock held. Returns
    /// whether any of them was a session leader.
    pub fn record_reaped(&self, batch: &[(i32, ExitStatus)]) -> bool {
        let mut state = self.lock();
        let mut any_leader = false;
        for (pid, status) in batch {
            if let Some(id) = state.leaders.remove(pid) {
                if let Some(session) = state.sessions.get_mut(&id) {
                    session.leader_exit = Some(*status);
                    session.left_behind = matches!(session.phase, Phase::Starting | Phase::Running);
                    tracing::debug!(session = %id, pid, %status, "leader exited");
                    any_leader = true;
                }
            }
        }
        any_leader
    }

    /// The session's pgid while its leader is unreaped (only then is the pgid pinned).
    /// Call with the reap lock held.
    pub fn unreaped_leader(&self, id: &SessionId) -> Option<i32> {
        let state = self.lock();
        let session = state.sessions.get(id)?;
        (session.leader_exit.is_none() && session.pid > 0).then_some(session.pid)
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
        let state = self.lock();
        state
            .sessions
            .values()
            .filter(|s| s.is_live() && s.leader_exit.is_some())
            .map(|s| s.id.clone())
            .collect()
    }

    /// Marks a session exited: it leaves live listings and its tracking id is free again.
    pub fn finish(&self, id: &SessionId) -> Option<Finished> {
        let mut state = self.lock();
        let session = state.sessions.get_mut(id)?;
        let exit = session.leader_exit?;
        if !session.is_live() {
            return None;
        }
        let ended_at = SystemTime::now();
        let termination =
            match std::mem::replace(&mut session.phase, Phase::Exited { exit, ended_at }) {
                Phase::Terminating(termination) => Some(termination),
                Phase::Starting | Phase::Running | Phase::Exited { .. } => None,
            };
        let owned_dirs = std::mem::take(&mut session.owned_dirs);
        let tracking_id = session.tracking_id.clone();
        let number = session.pid;
        if state.numbers.get(&number) == Some(id) {
            state.numbers.remove(&number);
        }
        if let Some(tracking_id) = tracking_id {
            if state.tracking.get(&tracking_id) == Some(id) {
                state.tracking.remove(&tracking_id);
            }
        }
        Self::drop_leases(&mut state, id);
        let forget_at = Instant::now() + self.keep_exited_for;
        state.exited.push_back((id.clone(), forget_at));
        state
            .expiries
            .insert((forget_at, Expiry::Forget(id.clone())));
        while state.exited.len() > self.keep_exited {
            if let Some((oldest, at)) = state.exited.pop_front() {
                state.sessions.remove(&oldest);
                state.expiries.remove(&(at, Expiry::Forget(oldest)));
            }
        }
        self.expiry_changed.notify_one();
        tracing::info!(session = %id, %exit, "session exited");
        Some(Finished {
            termination,
            owned_dirs,
        })
    }

    /// Who owns a direct child of the daemon, read from `/proc` (call with the reap lock
    /// held, so a leader being spawned is either not forked yet or registered): a leader, by
    /// pid and start time; an adopted orphan, by the session `marker` in its environment,
    /// else by the session or group it still carries. An orphan none of these name is not a
    /// session's (as PID 1, the daemon may adopt processes that never were), and is never
    /// signalled.
    pub fn owner_for(&self, root: &ProcInfo, marker: Option<SessionId>) -> Owner {
        let state = self.lock();
        let live = |id: &SessionId| state.sessions.get(id).is_some_and(Session::is_live);
        if let Some(id) = state.leaders.get(&root.pid) {
            if state
                .sessions
                .get(id)
                .is_some_and(|s| s.start_time == root.start_time)
            {
                return Owner::Session(id.clone());
            }
        }
        if let Some(id) = marker.filter(|id| live(id)) {
            return Owner::Session(id);
        }
        [root.sid, root.pgid]
            .iter()
            .find_map(|number| state.numbers.get(number))
            .map_or(Owner::Unowned, |id| Owner::Session(id.clone()))
    }

    /// Takes a lease on a live session.
    pub fn lease(&self, reference: &SessionRef, ttl: Duration) -> Result<(LeaseId, SystemTime)> {
        let mut state = self.lock();
        let id = Self::resolve_locked(&state, reference)
            .ok_or_else(|| Error::NotFound(format!("no session `{reference}`")))?;
        let seq = state.next_lease;
        let session = state.sessions.get_mut(&id).expect("resolved ids exist");
        if !matches!(session.phase, Phase::Starting | Phase::Running) {
            return Err(Error::NotRunning(format!(
                "session {id} is {}; only a starting or running session can be leased",
                session.state()
            )));
        }
        let lease_id = LeaseId::generate(self.nonce, seq);
        session.leases.insert(lease_id.clone());
        state.next_lease += 1;
        let deadline = Instant::now() + ttl;
        state.leases.insert(lease_id.clone(), (id, deadline));
        state
            .expiries
            .insert((deadline, Expiry::Lease(lease_id.clone())));
        self.expiry_changed.notify_one();
        Ok((lease_id, SystemTime::now() + ttl))
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
            let (deadline, expiry) = state.expiries.pop_first().expect("just peeked");
            let current = match &expiry {
                Expiry::Lease(lease) => {
                    state.leases.get(lease).is_some_and(|(_, d)| *d == deadline)
                }
                Expiry::Ttl(id) => state.sessions.get(id).is_some_and(|s| s.is_live()),
                Expiry::Forget(id) => state.sessions.get(id).is_some_and(|s| !s.is_live()),
            };
            if current {
                due.push(expiry);
            }
        }
        (due, state.expiries.first().map(|(d, _)| *d))
    }

    /// Drops an expired lease.
    pub fn expire_lease(&self, lease_id: &LeaseId) {
        if self.release(lease_id).is_ok() {
            tracing::info!(lease = %lease_id, "lease expired");
        }
    }

    /// Forgets an exited session that has been listed long enough.
    pub fn forget(&self, id: &SessionId) {
        let mut state = self.lock();
        if state.sessions.get(id).is_some_and(|s| !s.is_live()) {
            state.sessions.remove(id);
            state.exited.retain(|(e, _)| e != id);
        }
    }

    /// Refuses new launches from now on. Returns false if already shutting down.
    pub fn begin_shutdown(&self) -> bool {
        !std::mem::replace(&mut self.lock().shutting_down, true)
    }
}

/// A value that differs between daemon instances, so that session ids are never reused
/// across restarts either.
fn instance_nonce() -> u32 {
    let mut bytes = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok()
    {
        return u32::from_ne_bytes(bytes);
    }
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}
