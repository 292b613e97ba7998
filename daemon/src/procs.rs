//! Reading the process table. Every process that descends from the daemon belongs to one of
//! its sessions; this module finds them with one pass over `/proc` (the kernel offers no
//! event for "a process was re-parented to you", and `/proc/PID/task/TID/children` is not
//! built into every kernel) and attributes each to its session.

use browserd_proto::SessionId;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::time::{Duration, Instant};

/// What the daemon needs to know about one process, from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// Clock ticks after boot; with `pid` it names a process uniquely, because a pid can be
    /// reused but not at the same instant.
    pub start_time: u64,
    pub state: u8,
    /// User + system CPU time of the whole process (all its threads), in clock ticks.
    pub cpu_ticks: u64,
    /// Whether this id names a thread other than its process's main thread. `/proc/TID`
    /// answers for every thread id although only processes are listed; a thread is not a
    /// process, so the table never keeps one.
    pub is_thread: bool,
}

impl ProcInfo {
    pub fn key(&self) -> ProcKey {
        ProcKey {
            pid: self.pid,
            start_time: self.start_time,
        }
    }

    pub fn is_zombie(&self) -> bool {
        self.state == b'Z'
    }
}

/// A process identity that survives pid reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcKey {
    pub pid: i32,
    pub start_time: u64,
}

/// Parses the contents of `/proc/PID/stat`. The command name (field 2) is in parentheses and
/// may itself contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &[u8]) -> Option<ProcInfo> {
    let open = text.iter().position(|&b| b == b'(')?;
    let close = text.iter().rposition(|&b| b == b')')?;
    let pid = std::str::from_utf8(&text[..open])
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let rest = std::str::from_utf8(text.get(close + 2..)?).ok()?;
    // Fields after the name, numbered as in proc(5) from 3: 3 state, 4 ppid, 5 pgrp,
    // 6 session, 14 utime, 15 stime, 22 starttime, 38 exit_signal.
    let fields: Vec<&str> = rest.split_ascii_whitespace().take(36).collect();
    let field = |n: usize| fields.get(n - 3).copied();
    let number = |n: usize| field(n)?.parse::<i64>().ok();
    let state = *field(3)?.as_bytes().first()?;
    let ticks = |n: usize| number(n).map_or(0, |t| t.max(0) as u64);
    Some(ProcInfo {
        pid,
        ppid: i32::try_from(number(4)?).ok()?,
        pgid: i32::try_from(number(5)?).ok()?,
        sid: i32::try_from(number(6)?).ok()?,
        start_time: u64::try_from(number(22)?).ok()?,
        state,
        cpu_ticks: ticks(14) + ticks(15),
        // Only a non-leader thread has no exit signal (CLONE_THREAD sets it to -1).
        is_thread: number(38) == Some(-1),
    })
}

/// Reads one process's stat; `None` if it is gone (or unreadable).
pub fn read_stat(pid: i32) -> Option<ProcInfo> {
    let mut buf = [0u8; 1024];
    read_stat_into(pid, &mut buf)
}

fn read_stat_into(pid: i32, buf: &mut [u8]) -> Option<ProcInfo> {
    let mut file = fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut len = 0;
    loop {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len == buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    parse_stat(&buf[..len])
}

/// Who a process belongs to, decided once, when the table first sees it: a process never
/// changes sessions, even when it is re-parented or moves to another group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Session(SessionId),
    /// A descendant of the daemon that no session claims (as PID 1, the daemon adopts
    /// processes that were never part of a session). Never signalled.
    Unowned,
    /// Not a descendant of the daemon.
    Foreign,
    /// Not known yet: an orphan read while its environment could not be (in the middle of
    /// `execve`, the kernel shows an empty one). It is not kept; later refreshes read it
    /// again, and no session is proven gone while such a process is undecided.
    Undecided,
}

struct Entry {
    /// The inode of `/proc/PID`, which procfs allocates afresh for each process instance:
    /// with the pid, it tells a known process from a newcomer reusing its pid, straight from
    /// the directory listing, without reading anything.
    ino: u64,
    info: ProcInfo,
    owner: Owner,
    /// Known to be gone (released): found so, or reaped by the daemon (see `mark_reaped`).
    /// It is not read again, since a process never comes back. Kept until a listing drops
    /// it, as the parent it was.
    gone: bool,
    /// The generation of the table in which it was read (see `mark_reaped`).
    learned: u64,
}

/// The process table, kept between refreshes.
///
/// A refresh must find every process started since the last one. The kernel hands out pids
/// cyclically and `/proc/loadavg` names the last one allocated, so when few pids were
/// allocated since, probing just those pids finds every newcomer (an incremental refresh:
/// its cost is the number of new processes, not of all processes). A pid is allocated a
/// moment before its process becomes visible in `/proc`, so a probed pid that was not there
/// is kept as a *hole* and probed again by the next refreshes for a while. Otherwise, and at
/// least every `FULL_EVERY` so the table forgets the dead, it lists `/proc`; a listing reads
/// `stat` only for processes it has not seen before, recognised by pid and the inode of
/// `/proc/PID` (procfs allocates a new inode for each process instance).
///
/// Probing is what keeps the table warm; it is not what proves a session gone. That is
/// [`ProcTable::confirm_gone`]: a listing that begins only after every known process of the
/// session was seen dead, when none of them can fork any more, so it meets every process
/// the session still has.
#[derive(Default)]
pub struct ProcTable {
    entries: HashMap<i32, Entry>,
    /// The pids of each session's processes, kept in step with `entries`, so that asking
    /// for one session costs that session's size.
    sessions: HashMap<SessionId, HashSet<i32>>,
    /// Probed pids that had no process yet, with when they were first missed.
    holes: HashMap<i32, Instant>,
    /// Processes whose owner could not be decided yet, with when they were first read, and
    /// in which generation.
    undecided: HashMap<i32, (Instant, u64)>,
    /// The last pid allocated when the previous refresh began.
    last_pid: Option<i32>,
    /// How many tasks the kernel had created when the previous refresh began.
    forks: Option<u64>,
    /// How many it had created when the last listing began: every process created before
    /// was visible to that listing, so while the count stays the same, no process exists
    /// that the table has not met (see `confirm_gone`).
    listed_forks: Option<u64>,
    /// The last pid allocated when the last listing began. A cursor that has moved since
    /// (a pid was allocated, or a checkpoint tool wrote `ns_last_pid`) says the listing may
    /// be out of date without the count of created tasks being read; one that has not says
    /// nothing (`clone3` with `set_tid` leaves it), and the count decides.
    listed_last_pid: Option<i32>,
    last_listing: Option<Instant>,
    /// Counts the scanner's batches (see `mark_reaped`).
    generation: u64,
}

/// Most pids probed one by one before a listing is cheaper.
const MAX_PROBE: i32 = 2048;
/// A background refresh lists `/proc` when the last listing is older than this, to drop
/// exited processes from the table.
const FULL_EVERY: Duration = Duration::from_secs(1);
/// How long a probed pid without a process is probed again: far longer than a fork takes
/// from allocating the pid to making its child visible (microseconds), yet short, because
/// nearly every hole is a process that has already exited, and each costs every refresh a
/// probe while it is kept (a machine forking a thousand short-lived processes a second
/// would otherwise have every refresh probe thousands of them). Probes only keep the table
/// warm; a process they miss is met by the next listing, and no session is proven gone
/// without a listing or the daemon's children (see `confirm_gone`).
const HOLE_TTL: Duration = Duration::from_millis(100);
/// Most holes kept; beyond it the next refresh lists instead.
const MAX_HOLES: usize = 8192;
/// How long an orphan whose environment cannot be read stays undecided: an `execve` takes
/// far less; a process that really has no environment is then decided without it.
pub const UNDECIDED_FOR: Duration = Duration::from_secs(1);

/// New processes found by a refresh: pid → (inode of `/proc/PID`, stat).
type Found = HashMap<i32, (u64, ProcInfo)>;

impl ProcTable {
    /// Brings the table up to date. `root_owner` decides the owner of a new process at the
    /// top of the tree the table knows (see `resolve`); it is called only after that process
    /// was read, so a leader spawned meanwhile is already registered.
    ///
    /// A `background` refresh (nobody is waiting on it) also lists `/proc` when the last
    /// listing is older than `FULL_EVERY`, to forget exited processes; one a caller waits on
    /// lists only when probing cannot be trusted (no listing yet, too many new pids, pids
    /// wrapped around, too many holes).
    pub fn refresh(
        &mut self,
        ancestor: i32,
        background: bool,
        root_owner: impl FnMut(&ProcInfo, Root) -> Owner,
    ) -> io::Result<()> {
        // Read before looking, so a process started meanwhile is found next time.
        let forks = read_fork_count();
        let last_pid = read_last_pid();
        // The pid range since the last refresh holds every newcomer only if fewer pids
        // than a whole cycle were allocated: the kernel's count of created tasks bounds
        // that exactly, however long ago the last refresh was.
        let few_forks = matches!((self.forks, forks), (Some(prev), Some(now))
            if now >= prev && now - prev <= MAX_PROBE as u64);
        let probe = match (self.last_pid, last_pid, self.last_listing) {
            (Some(prev), Some(now), Some(listed))
                if few_forks
                    && now >= prev
                    && now - prev <= MAX_PROBE
                    && self.holes.len() <= MAX_HOLES
                    && !(background && listed.elapsed() >= FULL_EVERY) =>
            {
                Some((prev, now))
            }
            _ => None,
        };
        let new = match probe {
            Some((prev, now)) => self.probe(prev, now),
            None => self.list(forks, last_pid)?,
        };
        if !new.is_empty() {
            self.resolve(new, ancestor, root_owner);
        }
        self.last_pid = last_pid;
        self.forks = forks;
        Ok(())
    }

    /// Of `candidates` (sessions whose leader is reaped), those of which nothing is left,
    /// proven in two steps: every process the table knows of the session is gone (zombies
    /// count as still there: they are not reaped yet), and then a full listing, begun after
    /// that, finds no process of the session either. A process can only be born of a live
    /// one, so once all of a session's known processes are dead the session gains no new
    /// ones, and the listing sees every one it still has (it may have been missed before).
    ///
    /// The listing is skipped when the kernel has created no task since the last listing
    /// began (its count of created tasks is unchanged): every process alive now existed
    /// then and was listed, so the table already knows them all. A probe would not do: a
    /// process whose pid was allocated before a listing but which became visible only after
    /// the listing passed it is found by neither.
    ///
    /// Otherwise the daemon's children stand in for the listing where `children` gives them
    /// (the daemon's direct children that are not unreaped session leaders, read while
    /// nothing could be reaped). The daemon is a subreaper and reaps every child itself: once
    /// every known process of a session is gone (released, so their children were
    /// re-parented first), every process the session still has is in the tree of a direct
    /// child of the daemon that is not another session's leader and not known to the table
    /// as another session's, or is such a child itself (a session adopted after a restart is
    /// not the daemon's descendant: `children` gives nothing then, and a listing is made).
    /// Such a child is an orphan handed to the daemon, a child of its main thread, or one a
    /// process whose parent is a thread of the daemon started with `CLONE_PARENT`: a child
    /// of that thread. Of the daemon's own children only leaders start session processes, so
    /// `children` may read just the main thread and the threads that spawned the candidates'
    /// leaders (see `spawners`). With reaping held off, no child leaves the daemon's lists
    /// while they are read, so each child there at the start is met; reading costs those
    /// threads' children, not every process of the machine.
    ///
    /// While a process whose owner cannot be decided yet exists, nothing is confirmed: it
    /// could be any session's. `Confirmed::retry` then says to ask again shortly.
    ///
    /// With [`Reads::Light`] it does only what costs a few reads: `Ok(None)` where it would
    /// have to list `/proc` or decide the owner of a process it has not met (which may wait
    /// for a spawn to register its leader), having changed nothing but which known processes
    /// it marked gone. With [`Reads::Any`] the answer is always `Some`.
    pub fn confirm_gone(
        &mut self,
        candidates: Vec<SessionId>,
        reads: Reads,
        ancestor: i32,
        root_owner: impl FnMut(&ProcInfo, Root) -> Owner,
        children: impl FnOnce() -> Option<Vec<i32>>,
    ) -> io::Result<Option<Confirmed>> {
        let pending: Vec<SessionId> = candidates
            .into_iter()
            .filter(|id| self.all_gone(id))
            .collect();
        if pending.is_empty() {
            return Ok(Some(Confirmed::default()));
        }
        // The pid cursor first: one line of `/proc/loadavg`, where `/proc/stat` costs a
        // line per CPU and a count per interrupt. A cursor that moved since the listing
        // makes it out of date whatever the count would say (see `listed_last_pid`).
        let last_pid = read_last_pid();
        let moved =
            matches!((last_pid, self.listed_last_pid), (Some(now), Some(listed)) if now != listed);
        let forks = if moved { None } else { read_fork_count() };
        let complete = forks.is_some() && forks == self.listed_forks;
        if !complete {
            let new = match children() {
                Some(children) => self.read_children(children),
                None if reads == Reads::Light => return Ok(None),
                None => {
                    // Both read before looking, as a refresh does.
                    let forks = if moved { read_fork_count() } else { forks };
                    let last_pid = read_last_pid();
                    let new = self.list(forks, last_pid)?;
                    self.last_pid = last_pid;
                    self.forks = forks;
                    new
                }
            };
            if !new.is_empty() {
                if reads == Reads::Light {
                    return Ok(None);
                }
                self.resolve(new, ancestor, root_owner);
            }
        }
        if !self.undecided.is_empty() {
            return Ok(Some(Confirmed {
                gone: Vec::new(),
                retry: true,
            }));
        }
        Ok(Some(Confirmed {
            gone: pending.into_iter().filter(|id| self.all_gone(id)).collect(),
            retry: false,
        }))
    }

    /// Of the daemon's children `pids`, those the table has not met.
    fn read_children(&mut self, pids: Vec<i32>) -> Found {
        let mut new = HashMap::new();
        let mut buf = [0u8; 1024];
        for pid in pids {
            if let Probe::New(ino, info) = self.read_new(pid, &mut buf) {
                new.insert(pid, (ino, info));
            }
        }
        new
    }

    /// Whether some process's owner is not decided yet (a later refresh decides it).
    pub fn has_undecided(&self) -> bool {
        !self.undecided.is_empty()
    }

    /// The processes of one session, as the table knows them (some may have exited since:
    /// see [`reread`]).
    pub fn of(&self, id: &SessionId) -> Vec<ProcInfo> {
        self.sessions.get(id).map_or_else(Vec::new, |pids| {
            pids.iter()
                .filter_map(|pid| self.entries.get(pid))
                .filter(|entry| !entry.gone)
                .map(|entry| entry.info)
                .collect()
        })
    }

    /// Begins generation `generation` (greater than every one before), and marks gone the
    /// processes the daemon reaped: `(pid, generation)`, the generation begun last when the
    /// reaper released the pid. An entry read in an earlier generation was read before the
    /// pid was released (the generations run one after another), so it is that process or
    /// an older one of the same pid: gone either way. One read since may be a newcomer
    /// reusing the pid; it is left to be read.
    pub fn begin(&mut self, generation: u64, reaped: &[(i32, u64)]) {
        self.generation = generation;
        for &(pid, reaped_in) in reaped {
            if let Some(entry) = self.entries.get_mut(&pid) {
                if entry.learned < reaped_in {
                    entry.gone = true;
                }
            }
            // An undecided process the daemon reaped (a zombie child whose owner it could
            // not read) is gone, whoever's it was.
            if self
                .undecided
                .get(&pid)
                .is_some_and(|&(_, learned)| learned < reaped_in)
            {
                self.undecided.remove(&pid);
            }
        }
    }

    /// Whether every process the table knows of session `id` is gone (a zombie is not: it
    /// is not reaped yet). Each one found gone is marked, and not read again.
    fn all_gone(&mut self, id: &SessionId) -> bool {
        let Some(pids) = self.sessions.get(id) else {
            return true;
        };
        for pid in pids {
            let Some(entry) = self.entries.get_mut(pid) else {
                continue;
            };
            if entry.gone {
                continue;
            }
            if reread(&entry.info).is_some() {
                return false;
            }
            entry.gone = true;
        }
        true
    }

    fn insert(&mut self, pid: i32, entry: Entry) {
        if let Some(old) = self.remove(pid) {
            drop(old);
        }
        if let Owner::Session(id) = &entry.owner {
            self.sessions.entry(id.clone()).or_default().insert(pid);
        }
        self.entries.insert(pid, entry);
    }

    fn remove(&mut self, pid: i32) -> Option<Entry> {
        let entry = self.entries.remove(&pid)?;
        if let Owner::Session(id) = &entry.owner {
            if let Some(pids) = self.sessions.get_mut(id) {
                pids.remove(&pid);
                if pids.is_empty() {
                    self.sessions.remove(id);
                }
            }
        }
        Some(entry)
    }

    /// Reads the pids allocated after `prev`, and the holes of earlier probes.
    fn probe(&mut self, prev: i32, now: i32) -> Found {
        let mut new = HashMap::new();
        let mut buf = [0u8; 1024];
        let probed_at = Instant::now();
        self.holes
            .retain(|_, missed| probed_at.duration_since(*missed) < HOLE_TTL);
        let mut pids: Vec<i32> = self
            .holes
            .keys()
            .chain(self.undecided.keys())
            .copied()
            .filter(|&p| p <= prev)
            .collect();
        pids.extend(prev + 1..=now);
        for pid in pids {
            match self.read_new(pid, &mut buf) {
                Probe::Known | Probe::Thread => {
                    self.holes.remove(&pid);
                }
                Probe::Missing => {
                    self.holes.entry(pid).or_insert(probed_at);
                    self.undecided.remove(&pid);
                }
                Probe::New(ino, info) => {
                    self.holes.remove(&pid);
                    new.insert(pid, (ino, info));
                }
            }
        }
        new
    }

    /// What `pid` is now, against what the table knows.
    fn read_new(&mut self, pid: i32, buf: &mut [u8]) -> Probe {
        let Some(info) = read_stat_into(pid, buf) else {
            return Probe::Missing;
        };
        if info.is_thread {
            return Probe::Thread;
        }
        if self
            .entries
            .get(&pid)
            .is_some_and(|e| e.info.start_time == info.start_time)
        {
            return Probe::Known;
        }
        self.remove(pid);
        // The inode, so the next listing recognises the process without reading it.
        let ino = fs::symlink_metadata(format!("/proc/{pid}")).map_or(0, |m| m.ino());
        Probe::New(ino, info)
    }

    /// Lists `/proc`: keeps known processes, drops exited ones, returns the new ones.
    /// `forks` is the kernel's count of created tasks and `last_pid` the last pid it
    /// allocated, both read before.
    fn list(&mut self, forks: Option<u64>, last_pid: Option<i32>) -> io::Result<Found> {
        let mut listed: HashSet<i32> = HashSet::with_capacity(self.entries.len());
        let mut new = HashMap::new();
        let mut buf = [0u8; 1024];
        for entry in fs::read_dir("/proc")? {
            // A listing cut short would prove nothing.
            let entry = entry?;
            let Some(pid) = parse_pid(entry.file_name().as_bytes()) else {
                continue;
            };
            listed.insert(pid);
            let ino = entry.ino();
            let known = self.entries.get_mut(&pid);
            if known.as_ref().is_some_and(|e| e.ino == ino) {
                continue;
            }
            let Some(info) = read_stat_into(pid, &mut buf) else {
                continue;
            };
            match known {
                // Same process, newly seen through another inode (the dentry was evicted).
                Some(entry) if entry.info.start_time == info.start_time => entry.ino = ino,
                _ => {
                    self.remove(pid);
                    new.insert(pid, (ino, info));
                }
            }
        }
        let gone: Vec<i32> = self
            .entries
            .keys()
            .filter(|pid| !listed.contains(pid))
            .copied()
            .collect();
        for pid in gone {
            self.remove(pid);
        }
        self.undecided.retain(|pid, _| listed.contains(pid));
        self.holes.clear();
        self.last_listing = Some(Instant::now());
        self.listed_forks = forks;
        self.listed_last_pid = last_pid;
        Ok(new)
    }

    /// Decides the owner of each new process, parent first; a chain of new processes is
    /// walked once. The top of a chain asks `root_owner` when its parent is the daemon (a
    /// leader, or an orphan the daemon adopted) or a process no session owns (the
    /// descendants of a session adopted after a restart hang there). A parent no refresh has
    /// read yet is read now, so a child is never judged without its parent.
    fn resolve(
        &mut self,
        mut new: Found,
        ancestor: i32,
        mut root_owner: impl FnMut(&ProcInfo, Root) -> Owner,
    ) {
        let mut buf = [0u8; 1024];
        let now = Instant::now();
        let pids: Vec<i32> = new.keys().copied().collect();
        for pid in pids {
            if !new.contains_key(&pid) {
                continue;
            }
            let mut chain = vec![pid];
            let owner = loop {
                let top = *chain.last().unwrap_or(&pid);
                let Some((_, info)) = new.get(&top).copied() else {
                    break Owner::Foreign;
                };
                let root = |child_of_daemon| Root {
                    child_of_daemon,
                    may_wait: self
                        .undecided
                        .get(&top)
                        .is_none_or(|(first, _)| now.duration_since(*first) < UNDECIDED_FOR),
                };
                if info.ppid == ancestor {
                    break root_owner(&info, root(true));
                }
                if let Some(parent) = self.entries.get(&info.ppid) {
                    break match &parent.owner {
                        Owner::Session(id) => Owner::Session(id.clone()),
                        _ => root_owner(&info, root(false)),
                    };
                }
                if chain.len() > new.len() + 1 {
                    break Owner::Foreign;
                }
                if new.contains_key(&info.ppid) {
                    chain.push(info.ppid);
                    continue;
                }
                // A parent no refresh has met (or one that died meanwhile): read it.
                if info.ppid > 0 {
                    if let Some(parent) =
                        read_stat_into(info.ppid, &mut buf).filter(|p| !p.is_thread)
                    {
                        let ino = fs::symlink_metadata(format!("/proc/{}", parent.pid))
                            .map_or(0, |m| m.ino());
                        new.insert(parent.pid, (ino, parent));
                        chain.push(parent.pid);
                        continue;
                    }
                }
                // The parent is gone, so the process was re-parented; read where it hangs.
                break match read_stat_into(top, &mut buf) {
                    Some(now) if now.ppid == ancestor => root_owner(&now, root(true)),
                    Some(now) => match self.entries.get(&now.ppid).map(|e| &e.owner) {
                        Some(Owner::Session(id)) => Owner::Session(id.clone()),
                        _ => root_owner(&now, root(false)),
                    },
                    None => Owner::Foreign,
                };
            };
            if owner == Owner::Undecided {
                for pid in chain {
                    if new.remove(&pid).is_some() {
                        self.undecided.entry(pid).or_insert((now, self.generation));
                    }
                }
                continue;
            }
            // Top down: a process below one no session owns is judged on its own (an
            // adopted session's processes hang below init); below a session's process,
            // everything is that session's.
            let top = chain.last().copied();
            let mut owner = owner;
            for pid in chain.into_iter().rev() {
                let Some((ino, info)) = new.remove(&pid) else {
                    continue;
                };
                if Some(pid) != top && matches!(owner, Owner::Foreign | Owner::Unowned) {
                    let root = Root {
                        child_of_daemon: info.ppid == ancestor,
                        may_wait: false,
                    };
                    owner = match root_owner(&info, root) {
                        Owner::Undecided => Owner::Unowned,
                        decided => decided,
                    };
                }
                self.undecided.remove(&pid);
                self.insert(
                    pid,
                    Entry {
                        ino,
                        info,
                        owner: owner.clone(),
                        gone: false,
                        learned: self.generation,
                    },
                );
            }
        }
    }
}

/// Where a new process at the top of the known tree hangs, for the owner decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    /// Its parent is the daemon (else a process no session owns).
    pub child_of_daemon: bool,
    /// It may still be left undecided: it was first read less than `UNDECIDED_FOR` ago.
    pub may_wait: bool,
}

/// How much a gone check may read (see [`ProcTable::confirm_gone`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Whatever it takes: a listing of `/proc`, the environment of processes not met yet.
    Any,
    /// A few small reads, as the event loop may do.
    Light,
}

/// What a gone check found.
#[derive(Debug, Default)]
pub struct Confirmed {
    /// The sessions proven gone.
    pub gone: Vec<SessionId>,
    /// Nothing could be proven because some process is undecided: ask again shortly.
    pub retry: bool,
}

/// What one probed pid turned out to be.
enum Probe {
    /// A process the table already has.
    Known,
    /// A thread, not a process.
    Thread,
    /// Nothing (yet): exited already, or not visible yet.
    Missing,
    New(u64, ProcInfo),
}

/// The last pid the kernel allocated in this pid namespace (the last field of
/// `/proc/loadavg`).
fn read_last_pid() -> Option<i32> {
    let text = read_small("/proc/loadavg", 256).ok()?;
    std::str::from_utf8(&text)
        .ok()?
        .split_whitespace()
        .nth(4)?
        .parse()
        .ok()
}

/// Reads a procfs file in as few `read` calls as `capacity` allows.
fn read_small(path: &str, capacity: usize) -> io::Result<Vec<u8>> {
    read_pseudo_file(fs::File::open(path)?, capacity)
}

/// Reads a pseudo-file (procfs, cgroupfs) to its end in as few `read` calls as `capacity`
/// allows. They report no size, so a plain read to the end asks for one (`statx`) and then
/// starts with small probing reads.
pub fn read_pseudo_file(mut file: fs::File, capacity: usize) -> io::Result<Vec<u8>> {
    let mut text = vec![0u8; capacity.max(1)];
    let mut len = 0;
    loop {
        if len == text.len() {
            text.resize(text.len() * 2, 0);
        }
        match file.read(&mut text[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    text.truncate(len);
    Ok(text)
}

/// Of processes the table listed, those still alive now (re-read; zombies left out).
pub fn current(known: &[ProcInfo]) -> Vec<ProcInfo> {
    known
        .iter()
        .filter_map(reread)
        .filter(|p| !p.is_zombie())
        .collect()
}

/// The pids of [`current`], sorted.
pub fn live_pids(known: &[ProcInfo]) -> Vec<i32> {
    let mut pids: Vec<i32> = current(known).iter().map(|p| p.pid).collect();
    pids.sort_unstable();
    pids
}

/// How many tasks (processes and threads, each taking a pid) the kernel has created since
/// boot: the `processes` line of `/proc/stat`.
/// The daemon's direct children: `/proc/self/task/TID/children` of the threads `of` (all of
/// them if `None`) and of the main thread, the main thread's last. A thread that exits hands
/// its children to the main thread (the first live thread of the group), which is read after
/// every other one, so no child is missed by moving between them; the same way, a process
/// whose parent exits is handed to the main thread of the daemon, its subreaper. Call with
/// reaping held off (see [`ProcTable::confirm_gone`]). Fails where the kernel does not offer
/// the file.
pub fn daemon_children(of: Option<&[i32]>) -> io::Result<Vec<i32>> {
    let me = std::process::id() as i32;
    let mut threads: Vec<i32> = match of {
        Some(threads) => threads.iter().copied().filter(|&tid| tid != me).collect(),
        None => {
            let mut all = Vec::new();
            for entry in fs::read_dir("/proc/self/task")? {
                if let Some(tid) = parse_pid(entry?.file_name().as_bytes()) {
                    if tid != me {
                        all.push(tid);
                    }
                }
            }
            all
        }
    };
    threads.push(me);
    let mut children = Vec::new();
    let mut path = String::with_capacity(48);
    for tid in threads {
        path.clear();
        let _ = write!(path, "/proc/self/task/{tid}/children");
        // Sized for a few hundred children in one read.
        match read_small(&path, 8 * 1024) {
            Ok(text) => children.extend(
                text.split(|b| b.is_ascii_whitespace())
                    .filter_map(parse_pid),
            ),
            // A thread that ended meanwhile: its children are the main thread's by now.
            Err(e) if e.kind() == io::ErrorKind::NotFound && tid != me => {}
            Err(e) => return Err(e),
        }
    }
    Ok(children)
}

/// Every pid in `/proc` now.
pub fn all_pids() -> io::Result<Vec<i32>> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc")? {
        if let Some(pid) = parse_pid(entry?.file_name().as_bytes()) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

fn read_fork_count() -> Option<u64> {
    let text = read_small("/proc/stat", 16 * 1024).ok()?;
    std::str::from_utf8(&text)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("processes "))?
        .trim()
        .parse()
        .ok()
}

/// The process group of whatever process has `pid` now (`getpgid`: one system call, no read
/// of `/proc`), or `None` if none has. It says nothing of which process that is: the pid
/// may have been reused.
pub fn group_of_pid(pid: i32) -> Option<i32> {
    nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
        .ok()
        .map(|pgid| pgid.as_raw())
}

/// The process's current stat, if it is still the process `known` describes.
pub fn reread(known: &ProcInfo) -> Option<ProcInfo> {
    read_stat(known.pid).filter(|now| now.start_time == known.start_time)
}

fn parse_pid(name: &[u8]) -> Option<i32> {
    if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// A process's proportional set size in bytes: each page it maps divided by the number of
/// processes sharing it, so summing it over a session counts a shared page once in total
/// (`Pss:` of `/proc/PID/smaps_rollup`). `None` if the process is gone or unreadable.
pub fn read_pss(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Now, in clock ticks since boot: the clock a process's start time is read on.
pub fn boot_ticks() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .unwrap_or_default();
    let ticks = ticks_per_second();
    now.as_secs() * ticks + u64::from(now.subsec_nanos()) * ticks / 1_000_000_000
}

/// Clock ticks per second, the unit of `/proc/PID/stat` times.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// What a process's environment says about its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// It carries `BROWSERD_SESSION=<value>`.
    Marked(String),
    /// It has an environment without the marker.
    Unmarked,
    /// Its environment reads as empty or not at all: in the middle of `execve`, a zombie,
    /// a process that cleared it, or one that is gone.
    Unreadable,
}

/// The most of an environment read; a larger one is taken as unreadable.
const MAX_ENVIRON: usize = 256 * 1024;

/// Reads `name` from a process's initial environment.
///
/// The environment is read with one `read` call: the kernel pins the process's memory for
/// one call at a time, so a process that executes a new program between two calls would
/// answer the second with nothing, leaving a truncated old environment (a marker lost in
/// the part not read). One call returns the whole environment of one program image, or
/// nothing at all in the middle of `execve`.
///
/// A process may rewrite that memory (Chromium does, for its process titles), so this is one
/// attribution signal among several, never the only one.
pub fn read_marker(pid: i32, name: &str) -> Marker {
    let Ok(mut file) = fs::File::open(format!("/proc/{pid}/environ")) else {
        return Marker::Unreadable;
    };
    let mut environ = vec![0u8; MAX_ENVIRON];
    let len = loop {
        match file.read(&mut environ) {
            Ok(len) => break len,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Marker::Unreadable,
        }
    };
    let environ = &environ[..len];
    // Empty (mid-`execve`, a zombie), too large to be whole, or cut short.
    if environ.is_empty() || len == MAX_ENVIRON || environ.last() != Some(&0) {
        return Marker::Unreadable;
    }
    let prefix = format!("{name}=");
    environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .and_then(|value| std::str::from_utf8(value).ok())
        .map_or(Marker::Unmarked, |value| Marker::Marked(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_hostile_command_names() {
        let line = b"4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 250 18446744073709551615\n";
        let info = parse_stat(line).unwrap();
        assert_eq!(info.pid, 4242);
        assert_eq!(info.state, b'S');
        assert_eq!(info.ppid, 1);
        assert_eq!(info.pgid, 4242);
        assert_eq!(info.sid, 4242);
        assert_eq!(info.start_time, 987654);
        assert_eq!(info.cpu_ticks, 0);
        assert!(!info.is_thread);
    }

    #[test]
    fn rejects_truncated_stat() {
        assert!(parse_stat(b"12 (x) S 1 2").is_none());
        assert!(parse_stat(b"").is_none());
        assert!(parse_stat(b"abc (x) S 1 2 3").is_none());
    }

    #[test]
    fn a_thread_is_told_from_a_process() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let _ = stop_rx.recv();
        });
        let tid = rx.recv().unwrap();
        let info = read_stat(tid).expect("/proc/TID/stat answers for a thread");
        assert!(info.is_thread, "{info:?}");
        let me = read_stat(std::process::id() as i32).unwrap();
        assert!(!me.is_thread);
        stop_tx.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn pss_of_a_live_process_is_positive() {
        assert!(read_pss(std::process::id() as i32).is_some_and(|p| p > 0));
        assert!(ticks_per_second() > 0);
    }

    #[test]
    fn reads_its_own_stat() {
        let me = std::process::id() as i32;
        let info = read_stat(me).unwrap();
        assert_eq!(info.pid, me);
        assert!(info.start_time > 0);
    }

    #[test]
    fn a_refresh_soon_after_a_listing_finds_newcomers_by_probing() {
        let me = std::process::id() as i32;
        let id: SessionId = "s-2".parse().unwrap();
        let mut table = ProcTable::default();
        table
            .refresh(me, false, |_, _: Root| Owner::Unowned)
            .unwrap();
        assert!(table.last_listing.is_some());
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let grandchild: i32 = line.trim().parse().unwrap();
        let pid = child.id() as i32;
        let listed_at = table.last_listing;
        table
            .refresh(me, false, |p, _: Root| {
                // Other tests of this process start children of their own meanwhile.
                if p.pid == pid {
                    Owner::Session(id.clone())
                } else {
                    Owner::Unowned
                }
            })
            .unwrap();
        assert_eq!(
            table.last_listing, listed_at,
            "this refresh probed, it did not list"
        );
        let mut found: Vec<i32> = table.of(&id).iter().map(|p| p.pid).collect();
        found.sort_unstable();
        let mut expected = vec![pid, grandchild];
        expected.sort_unstable();
        assert_eq!(found, expected);
        child.kill().unwrap();
        child.wait().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(grandchild),
            nix::sys::signal::SIGKILL,
        )
        .ok();
    }

    #[test]
    fn only_background_refreshes_list_to_forget_the_dead() {
        let me = std::process::id() as i32;
        let mut table = ProcTable::default();
        table
            .refresh(me, false, |_, _: Root| Owner::Unowned)
            .unwrap();
        let stale = Instant::now() - FULL_EVERY * 2;
        table.last_listing = Some(stale);
        table
            .refresh(me, false, |_, _: Root| Owner::Unowned)
            .unwrap();
        assert_eq!(
            table.last_listing,
            Some(stale),
            "a waited-on refresh probes"
        );
        table
            .refresh(me, true, |_, _: Root| Owner::Unowned)
            .unwrap();
        assert!(
            table.last_listing.unwrap() > stale,
            "a background refresh lists"
        );
    }

    #[test]
    fn a_pid_cycle_since_the_last_refresh_forces_a_listing() {
        let me = std::process::id() as i32;
        let mut table = a_listed_table();
        let listed = table.last_listing;
        // As if a whole cycle of pids was allocated since: the pid range alone cannot tell.
        table.forks = table.forks.map(|f| f - MAX_PROBE as u64 - 1);
        table
            .refresh(me, false, |_, _: Root| Owner::Unowned)
            .unwrap();
        assert_ne!(table.last_listing, listed, "too many forks: it must list");
        assert!(read_fork_count().is_some());
    }

    /// A `sleep` child of the test, killed and reaped when dropped (if the test has not
    /// ended it), so that a failing test leaves nothing running.
    struct Sleeper(Option<std::process::Child>);

    impl Sleeper {
        fn start() -> Sleeper {
            let child = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            Sleeper(Some(child))
        }

        fn pid(&self) -> i32 {
            self.0.as_ref().map_or(0, |c| c.id() as i32)
        }

        /// Kills and reaps it.
        fn end(&mut self) {
            if let Some(mut child) = self.0.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            self.end();
        }
    }

    /// A table that has just listed `/proc`.
    fn a_listed_table() -> ProcTable {
        let me = std::process::id() as i32;
        let mut table = ProcTable::default();
        table
            .refresh(me, false, |_, _: Root| Owner::Unowned)
            .unwrap();
        table
    }

    /// A table that has listed `/proc`, and a child of the test started after it.
    fn a_listed_table_and_a_newcomer() -> (ProcTable, Sleeper) {
        (a_listed_table(), Sleeper::start())
    }

    /// Decides that `pid` is session `id`'s, and any other process nobody's.
    fn owned_by(pid: i32, id: &SessionId) -> impl Fn(&ProcInfo, Root) -> Owner + Copy + '_ {
        move |p: &ProcInfo, _: Root| {
            if p.pid == pid {
                Owner::Session(id.clone())
            } else {
                Owner::Unowned
            }
        }
    }

    /// A process started after the table's last refresh (one the table has not met) keeps
    /// its session from being proven gone until it has exited; `children` is what
    /// `confirm_gone` is given. Returns the table and when it last listed before the proofs.
    fn a_newcomer_holds_off_gone(
        session: &str,
        children: impl Fn() -> Option<Vec<i32>> + Copy,
    ) -> (ProcTable, Option<Instant>) {
        let me = std::process::id() as i32;
        let id: SessionId = session.parse().unwrap();
        let (mut table, mut child) = a_listed_table_and_a_newcomer();
        let listed = table.last_listing;
        let owner = owned_by(child.pid(), &id);
        let confirmed = table
            .confirm_gone(vec![id.clone()], Reads::Any, me, owner, children)
            .unwrap()
            .unwrap();
        assert!(confirmed.gone.is_empty(), "{confirmed:?}");
        assert!(table.of(&id).iter().any(|p| p.pid == child.pid()));
        child.end();
        let confirmed = table
            .confirm_gone(vec![id.clone()], Reads::Any, me, owner, children)
            .unwrap()
            .unwrap();
        assert_eq!(confirmed.gone, vec![id]);
        (table, listed)
    }

    #[test]
    fn a_process_created_since_the_last_listing_is_found_before_anything_is_proven_gone() {
        a_newcomer_holds_off_gone("s-3", || None);
    }

    #[test]
    fn no_listing_proves_anything_when_no_task_was_created_since_the_last() {
        let me = std::process::id() as i32;
        let id: SessionId = "s-4".parse().unwrap();
        let mut table = a_listed_table();
        let listed = table.last_listing;
        // As if the kernel had created no task since that listing began.
        table.listed_forks = read_fork_count();
        table.listed_last_pid = read_last_pid();
        let confirmed = table
            .confirm_gone(
                vec![id.clone()],
                Reads::Any,
                me,
                |_, _: Root| Owner::Unowned,
                || None,
            )
            .unwrap()
            .unwrap();
        if table.listed_forks == read_fork_count() {
            assert_eq!(table.last_listing, listed, "nothing new: no listing");
        }
        assert_eq!(confirmed.gone, vec![id]);
        // One more task, and the table must look again.
        table.listed_forks = table.listed_forks.map(|f| f - 1);
        table
            .confirm_gone(
                vec!["s-5".parse().unwrap()],
                Reads::Any,
                me,
                |_, _: Root| Owner::Unowned,
                || None,
            )
            .unwrap();
        assert_ne!(table.last_listing, listed, "a task was created: it lists");
    }

    #[test]
    fn a_moved_pid_cursor_sends_the_check_to_the_daemons_children_whatever_the_count_says() {
        let me = std::process::id() as i32;
        let mut table = a_listed_table();
        let look = |table: &mut ProcTable| {
            let mut asked = false;
            table
                .confirm_gone(
                    vec!["s-8".parse().unwrap()],
                    Reads::Light,
                    me,
                    |_, _: Root| Owner::Unowned,
                    || {
                        asked = true;
                        Some(Vec::new())
                    },
                )
                .unwrap();
            asked
        };
        // The count says nothing was created, but a pid was allocated since the listing
        // (as `ns_last_pid` can also say): the table is not trusted as complete.
        table.listed_forks = read_fork_count();
        table.listed_last_pid = read_last_pid().map(|pid| pid - 1);
        assert!(look(&mut table), "a moved cursor: the children are read");
        // Neither moved (another process of the machine may fork meanwhile: then the
        // children are read, rightly, and nothing is shown).
        let cursor = read_last_pid();
        table.listed_forks = read_fork_count();
        table.listed_last_pid = cursor;
        let asked = look(&mut table);
        if read_last_pid() == cursor && table.listed_forks == read_fork_count() {
            assert!(
                !asked,
                "nothing created since the listing: the table is complete"
            );
        }
    }

    #[test]
    fn a_light_check_declines_rather_than_list_proc() {
        let me = std::process::id() as i32;
        let mut table = a_listed_table();
        let listed = table.last_listing;
        // As if a task had been created since the listing, and no children could be read.
        table.listed_forks = read_fork_count().map(|f| f - 1);
        let declined = table
            .confirm_gone(
                vec!["s-6".parse().unwrap()],
                Reads::Light,
                me,
                |_, _: Root| Owner::Unowned,
                || None,
            )
            .unwrap();
        assert!(declined.is_none(), "{declined:?}");
        assert_eq!(table.last_listing, listed, "a light check never lists");
    }

    #[test]
    fn a_light_check_declines_a_process_it_has_not_met_and_proves_once_nothing_is_new() {
        let me = std::process::id() as i32;
        let id: SessionId = "s-7".parse().unwrap();
        let (mut table, mut child) = a_listed_table_and_a_newcomer();
        let pid = child.pid();
        let owner = owned_by(pid, &id);
        let check = |table: &mut ProcTable, reads: Reads, children: Vec<i32>| {
            table
                .confirm_gone(vec![id.clone()], reads, me, owner, || Some(children))
                .unwrap()
        };
        // The child is one the table has not met: whose it is takes deciding.
        assert!(check(&mut table, Reads::Light, vec![pid]).is_none());
        assert!(table.of(&id).is_empty(), "declined: nothing was decided");
        let confirmed = check(&mut table, Reads::Any, vec![pid]).unwrap();
        assert!(confirmed.gone.is_empty(), "{confirmed:?}");
        child.end();
        // Its one process is gone and no child is left: proven without anything heavy.
        let confirmed = check(&mut table, Reads::Light, Vec::new()).unwrap();
        assert_eq!(confirmed.gone, vec![id.clone()]);
    }

    #[test]
    fn the_daemons_children_of_every_thread_are_read() {
        let mut here = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut elsewhere = std::thread::spawn(|| {
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap()
        })
        .join()
        .unwrap();
        let children = daemon_children(None).unwrap();
        for child in [&mut here, &mut elsewhere] {
            assert!(children.contains(&(child.id() as i32)), "{children:?}");
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    #[test]
    fn the_daemons_children_find_a_process_created_since_the_last_listing_without_a_listing() {
        let (table, listed) =
            a_newcomer_holds_off_gone("s-6", || Some(daemon_children(None).unwrap()));
        assert_eq!(table.last_listing, listed, "no listing");
    }

    #[test]
    fn the_children_of_the_named_threads_and_of_the_main_thread_are_read() {
        let (spawned, reported) = std::sync::mpsc::channel();
        let (done, wait_done) = std::sync::mpsc::channel::<()>();
        let spawner = std::thread::spawn(move || {
            let child = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            spawned
                .send((nix::unistd::gettid().as_raw(), child.id() as i32))
                .unwrap();
            // Alive (so its child stays its own) until the test has read.
            let _ = wait_done.recv();
            child
        });
        let (tid, pid) = reported.recv().unwrap();
        let named = daemon_children(Some(&[tid])).unwrap();
        let main_only = daemon_children(Some(&[])).unwrap();
        drop(done);
        let mut child = spawner.join().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(named.contains(&pid), "{named:?}");
        assert!(!main_only.contains(&pid), "{main_only:?}");
    }

    /// A `sleep` child of the test, and a table (refreshed in generation 1) that knows it as
    /// session `id`'s only process.
    fn a_table_knowing_a_child_of(id: &SessionId) -> (ProcTable, std::process::Child) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut table = ProcTable::default();
        table.begin(1, &[]);
        let mut owner = |p: &ProcInfo, _: Root| {
            if p.pid == pid {
                Owner::Session(id.clone())
            } else {
                Owner::Unowned
            }
        };
        table
            .refresh(std::process::id() as i32, false, &mut owner)
            .unwrap();
        (table, child)
    }

    #[test]
    fn a_process_found_gone_is_marked_and_no_longer_listed_but_a_zombie_is_not_gone() {
        let id: SessionId = "s-9".parse().unwrap();
        let (mut table, mut child) = a_table_knowing_a_child_of(&id);
        let pid = child.id() as i32;
        assert!(!table.all_gone(&id));
        assert_eq!(table.of(&id).len(), 1);

        child.kill().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !read_stat(pid).is_some_and(|p| p.is_zombie()) {
            assert!(Instant::now() < deadline, "pid {pid} never became a zombie");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!table.all_gone(&id), "a zombie is not reaped yet");
        assert!(!table.entries[&pid].gone);

        child.wait().unwrap();
        assert!(table.all_gone(&id));
        assert!(table.entries[&pid].gone, "marked, so not read again");
        assert!(table.of(&id).is_empty());
        assert!(table.all_gone(&id));
    }

    #[test]
    fn a_reaped_pid_ends_an_undecided_process_read_in_an_earlier_generation() {
        let mut table = ProcTable::default();
        table.begin(1, &[]);
        table.undecided.insert(4242, (Instant::now(), 1));
        assert!(table.has_undecided());
        // Reaped while generation 1 ran: it may be a newcomer that reused the pid.
        table.begin(2, &[(4242, 1)]);
        assert!(table.has_undecided());
        // Reaped once generation 2 had begun: the process read undecided is gone.
        table.begin(3, &[(4242, 2)]);
        assert!(!table.has_undecided());
    }

    #[test]
    fn a_reaped_pid_marks_only_an_entry_read_in_an_earlier_generation() {
        let id: SessionId = "s-10".parse().unwrap();
        let (mut table, mut child) = a_table_knowing_a_child_of(&id);
        let pid = child.id() as i32;
        // Reaped while generation 1 ran: the entry may be a newcomer that reused the pid.
        table.begin(2, &[(pid, 1)]);
        assert!(!table.entries[&pid].gone);
        assert_eq!(table.of(&id).len(), 1);
        // Reaped once generation 2 had begun: the entry was read before.
        table.begin(3, &[(pid, 2)]);
        assert!(table.entries[&pid].gone);
        assert!(table.of(&id).is_empty());
        assert!(table.all_gone(&id), "taken as gone without reading it");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn finds_a_real_child_and_its_marker() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("BROWSERD_TEST_MARK", "m-1")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let pid = child.id() as i32;
        let id: SessionId = "s-1".parse().unwrap();
        let mut table = ProcTable::default();
        let mut asked = 0;
        let mut owner = |p: &ProcInfo, _: Root| {
            if p.pid == pid {
                asked += 1;
                Owner::Session(id.clone())
            } else {
                Owner::Unowned
            }
        };
        table.refresh(me, false, &mut owner).unwrap();
        assert!(table.of(&id).iter().any(|p| p.pid == pid));
        table.refresh(me, false, &mut owner).unwrap();
        assert_eq!(asked, 1, "a known process is not resolved again");
        assert_eq!(
            read_marker(pid, "BROWSERD_TEST_MARK"),
            Marker::Marked("m-1".into())
        );
        assert_eq!(read_marker(pid, "BROWSERD_NO_SUCH_VAR"), Marker::Unmarked);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
