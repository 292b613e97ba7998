//! The journal: what the daemon knows about its sessions, on disk, so that a daemon that
//! died without shutting down (SIGKILL, abort, OOM kill) can take its sessions up again.
//!
//! `<state-dir>/journal` is an append-only log, one record per line: the CRC-32 of the JSON
//! in hex, a space, the JSON. The registry submits records as it changes (under its own
//! lock, so they are in the order the changes happened); one writer thread appends every
//! record waiting with one `write` (a group commit) and tells the waiters; a second thread
//! syncs the file and tells them again, so that no record waits behind the disk to be
//! written. When the log has grown well past the state it describes, the
//! registry submits a snapshot instead, which the writer writes to a temporary file, syncs
//! and renames over the log (and syncs the dir): a crash leaves either the old log or the
//! new one, never a mix.
//!
//! Two marks, two failures. A record *written* is in the kernel: it survives any death of
//! the daemon, which is what the journal is for, so a `launch` or `lease` is acknowledged
//! once its record is written. A record *durable* is on the disk: it also survives a crash
//! of the machine. That crash ends every session anyway (there is nothing left to take up
//! after a reboot), so what must be durable before it is relied on is only what outlives
//! the sessions: the id counters, so that no id is handed out twice even across a power
//! loss. The registry waits for those to be durable; everything else is synced right after
//! it is written, without anyone waiting on the disk.
//!
//! Reading it back stops at the first line that is torn (the last one, written as the
//! daemon died) or does not match its checksum; everything before it is kept.

use crate::records::{SessionRecord, Snapshot};
use browserd_proto::SessionId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use tokio::sync::watch;

/// The journal format's version; a journal of another version is set aside, not read.
pub const VERSION: u32 = 1;
/// The log is rewritten as a snapshot once it holds this many bytes more than the last
/// snapshot, and at least twice the snapshot's size: the journal stays within a small
/// multiple of the state it describes.
const COMPACT_AFTER: u64 = 1 << 20;

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    /// The first line of every journal.
    Header { journal: u32 },
    /// The id counters. A sequence number below these may have been handed out; the
    /// registry writes them ahead of use, in blocks.
    Counters {
        nonce: u32,
        next_session: u64,
        next_lease: u64,
    },
    /// A session's whole record, replacing any earlier one.
    Put(Box<SessionRecord>),
    /// A session no longer listed.
    Forget(SessionId),
}

/// What the journal on disk says.
#[derive(Debug, Default)]
pub struct Replayed {
    pub snapshot: Snapshot,
    /// Whether a journal was found at all.
    pub found: bool,
    /// What was wrong with it, if anything (a torn or corrupt line, a wrong version): said
    /// in the log; the rest is still used.
    pub problem: Option<String>,
}

/// Reads the journal at `path`. A missing journal is an empty one. A journal of another
/// version is moved aside (`journal.unreadable`) and nothing of it is used.
pub fn read(path: &Path) -> Replayed {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Replayed::default(),
        Err(e) => {
            return Replayed {
                found: true,
                problem: Some(format!("cannot open {}: {e}", path.display())),
                ..Replayed::default()
            }
        }
    };
    let mut replayed = Replayed {
        found: true,
        ..Replayed::default()
    };
    let mut sessions: BTreeMap<SessionId, SessionRecord> = BTreeMap::new();
    let mut reader = BufReader::new(file);
    let mut raw = Vec::new();
    let mut number = 0;
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                replayed.problem = Some(format!("cannot read {}: {e}", path.display()));
                break;
            }
        }
        number += 1;
        let line = match decode(&raw) {
            Ok(line) => line,
            Err(why) => {
                replayed.problem = Some(format!(
                    "line {number} of {} is {why}; the {} line(s) before it are used",
                    path.display(),
                    number - 1
                ));
                break;
            }
        };
        match line {
            Line::Header { journal } if number == 1 && journal == VERSION => {}
            Line::Header { journal } if number == 1 => {
                let aside = path.with_extension("unreadable");
                let _ = std::fs::rename(path, &aside);
                return Replayed {
                    found: true,
                    problem: Some(format!(
                        "{} is a version {journal} journal; this browserd reads version {VERSION}. It was moved to {} and nothing in it is used",
                        path.display(),
                        aside.display()
                    )),
                    ..Replayed::default()
                };
            }
            _ if number == 1 => {
                replayed.problem = Some(format!(
                    "{} does not start with a journal header; nothing in it is used",
                    path.display()
                ));
                break;
            }
            Line::Header { .. } => {}
            Line::Counters {
                nonce,
                next_session,
                next_lease,
            } => {
                let snapshot = &mut replayed.snapshot;
                snapshot.nonce = nonce;
                snapshot.next_session = snapshot.next_session.max(next_session);
                snapshot.next_lease = snapshot.next_lease.max(next_lease);
            }
            Line::Put(record) => {
                sessions.insert(record.id.clone(), *record);
            }
            Line::Forget(id) => {
                sessions.remove(&id);
            }
        }
    }
    replayed.snapshot.sessions = sessions.into_values().collect();
    replayed
}

/// Encodes one line, newline included.
fn encode(line: &Line) -> Vec<u8> {
    let json = serde_json::to_vec(line).unwrap_or_default();
    let mut out = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    out.extend_from_slice(&json);
    out.push(b'\n');
    out
}

/// Decodes one line, newline included; says what is wrong otherwise.
fn decode(raw: &[u8]) -> Result<Line, &'static str> {
    let Some(body) = raw.strip_suffix(b"\n") else {
        return Err("torn (no end of line)");
    };
    let (crc, json) = match body.iter().position(|&b| b == b' ') {
        Some(space) => (&body[..space], &body[space + 1..]),
        None => return Err("not a journal line"),
    };
    let crc = std::str::from_utf8(crc)
        .ok()
        .and_then(|text| u32::from_str_radix(text, 16).ok())
        .ok_or("not a journal line")?;
    if crc32fast::hash(json) != crc {
        return Err("corrupt (checksum mismatch)");
    }
    serde_json::from_slice(json).map_err(|_| "not a record this browserd understands")
}

/// What the writer thread is asked to do, in order.
enum Item {
    Append(Line),
    Compact(Snapshot),
}

/// Where writes stand: every record up to `written` is in the kernel, every one up to
/// `durable` on disk. After a failed write, `failed_from` names its first record: that
/// record and every later one are neither until a snapshot is written, which rewrites the
/// whole journal.
#[derive(Debug, Clone, Default)]
struct Progress {
    written: u64,
    durable: u64,
    failed_from: Option<(u64, String)>,
}

/// Which mark a waiter needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// In the kernel: survives the daemon's death.
    Written,
    /// On disk: survives the machine's.
    Durable,
}

struct Queue {
    items: Vec<(u64, Item)>,
    next_seq: u64,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
    /// Bytes appended since the last snapshot, and that snapshot's size.
    appended: AtomicU64,
    snapshot_size: AtomicU64,
    /// A write failed: the next snapshot rewrites the journal from scratch.
    broken: AtomicBool,
    /// A snapshot is queued and not yet written: no other is asked for meanwhile. Until
    /// the writer has written it, `appended` still says the log is long, and every change
    /// would otherwise queue a snapshot of its own: a copy of every session for each
    /// session a bulk kill ends, while the writer waits for the CPU those copies take.
    compacting: AtomicBool,
    /// What the syncer is to sync next, and whether the writer has stopped.
    sync: Mutex<SyncState>,
    sync_wake: Condvar,
}

/// The syncer's inbox: the records to make durable (the first, for an error; the last) and
/// the file they were written to.
#[derive(Default)]
struct SyncState {
    pending: Option<(u64, u64, Arc<File>)>,
    closed: bool,
}

/// The journal's writing end.
pub struct Journal {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Journal {
    /// Starts the writer for the journal at `path`; its first job is `snapshot`, which
    /// replaces whatever the file held.
    pub fn start(path: PathBuf, snapshot: Snapshot) -> io::Result<Journal> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                items: vec![(1, Item::Compact(snapshot))],
                next_seq: 2,
                closed: false,
            }),
            wake: Condvar::new(),
            progress: watch::Sender::new(Progress::default()),
            appended: AtomicU64::new(0),
            snapshot_size: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            compacting: AtomicBool::new(false),
            sync: Mutex::new(SyncState::default()),
            sync_wake: Condvar::new(),
        });
        let syncer_shared = shared.clone();
        let syncer_path = path.clone();
        let syncer = std::thread::Builder::new()
            .name("journal-sync".into())
            .spawn(move || {
                crate::signals::helper_thread();
                sync_loop(&syncer_path, &syncer_shared)
            })?;
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || {
                crate::signals::helper_thread();
                write_loop(&path, &writer_shared)
            })?;
        Ok(Journal {
            shared,
            writer: Mutex::new(Some(writer)),
            syncer: Mutex::new(Some(syncer)),
        })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn submit(&self, item: Item) -> u64 {
        let mut queue = self.queue();
        let seq = queue.next_seq;
        queue.next_seq += 1;
        queue.items.push((seq, item));
        self.shared.wake.notify_one();
        seq
    }

    /// Queues a record; returns its sequence number, to wait for with [`Journal::synced`].
    pub fn append(&self, line: Line) -> u64 {
        self.submit(Item::Append(line))
    }

    /// Queues a snapshot that replaces the whole journal.
    pub fn compact(&self, snapshot: Snapshot) -> u64 {
        self.shared.broken.store(false, Ordering::Relaxed);
        self.shared.compacting.store(true, Ordering::Release);
        self.submit(Item::Compact(snapshot))
    }

    /// The sequence number of the last record queued.
    pub fn last_seq(&self) -> u64 {
        self.queue().next_seq - 1
    }

    /// Whether the log has grown enough (or a write failed) that the next change should be
    /// written as a snapshot, and none is on its way already.
    pub fn wants_compaction(&self) -> bool {
        if self.shared.compacting.load(Ordering::Acquire) {
            return false;
        }
        let appended = self.shared.appended.load(Ordering::Relaxed);
        let snapshot = self.shared.snapshot_size.load(Ordering::Relaxed);
        self.shared.broken.load(Ordering::Relaxed)
            || appended > COMPACT_AFTER.max(snapshot.saturating_mul(2))
    }

    /// Waits until every record up to `seq` has reached `mark`, or says why it has not.
    pub async fn reached(&self, seq: u64, mark: Mark) -> Result<(), String> {
        let at = |p: &Progress| match mark {
            Mark::Written => p.written,
            Mark::Durable => p.durable,
        };
        let mut progress = self.shared.progress.subscribe();
        let progress = progress
            .wait_for(|p| {
                at(p) >= seq || p.failed_from.as_ref().is_some_and(|(from, _)| seq >= *from)
            })
            .await
            .map_err(|_| "the journal writer stopped".to_owned())?;
        match &progress.failed_from {
            _ if at(&progress) >= seq => Ok(()),
            Some((_, why)) => Err(why.clone()),
            None => Ok(()),
        }
    }

    /// Waits until every record up to `seq` is on disk, or says why it is not.
    pub async fn synced(&self, seq: u64) -> Result<(), String> {
        self.reached(seq, Mark::Durable).await
    }

    /// Writes everything queued and stops the writer.
    pub fn close(&self) {
        self.queue().closed = true;
        self.shared.wake.notify_one();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        // The writer has handed the syncer its last records: sync them, and stop.
        lock(&self.shared.sync).closed = true;
        self.shared.sync_wake.notify_one();
        let syncer = lock(&self.syncer).take();
        if let Some(syncer) = syncer {
            let _ = syncer.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread: takes everything queued, writes it (one `write`), reports it written,
/// hands it to the syncer, repeats.
fn write_loop(path: &Path, shared: &Shared) {
    let mut file: Option<Arc<File>> = None;
    loop {
        let (items, closed) = {
            let mut queue = lock(&shared.queue);
            while queue.items.is_empty() && !queue.closed {
                queue = shared
                    .wake
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            (std::mem::take(&mut queue.items), queue.closed)
        };
        if let (Some(first), Some(last)) = (
            items.first().map(|(seq, _)| *seq),
            items.last().map(|(seq, _)| *seq),
        ) {
            let compacted = items
                .iter()
                .any(|(_, item)| matches!(item, Item::Compact(_)));
            match write_batch(path, &mut file, items, shared) {
                Ok(Batch::Synced) => {
                    report(path, shared, first, last, Ok(()), Mark::Durable, compacted)
                }
                Ok(Batch::Written) => {
                    report(path, shared, first, last, Ok(()), Mark::Written, compacted);
                    if let Some(out) = &file {
                        let mut sync = lock(&shared.sync);
                        let from = sync.pending.as_ref().map_or(first, |(from, ..)| *from);
                        sync.pending = Some((from, last, out.clone()));
                        shared.sync_wake.notify_one();
                    }
                }
                Err(e) => {
                    file = None;
                    report(path, shared, first, last, Err(e), Mark::Durable, compacted);
                }
            }
        }
        if closed {
            return;
        }
    }
}

/// The syncer thread: makes what the writer wrote durable, as many records per sync as
/// were written meanwhile.
fn sync_loop(path: &Path, shared: &Shared) {
    loop {
        let (first, last, file) = {
            let mut sync = lock(&shared.sync);
            loop {
                if let Some(pending) = sync.pending.take() {
                    break pending;
                }
                if sync.closed {
                    return;
                }
                sync = shared
                    .sync_wake
                    .wait(sync)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        let synced = file.sync_data();
        report(path, shared, first, last, synced, Mark::Durable, false);
    }
}

/// Records how far records `first..=last` got: `mark` reached, or the error that stopped
/// them (every record from `first` on then fails until a snapshot is written).
fn report(
    path: &Path,
    shared: &Shared,
    first: u64,
    last: u64,
    done: io::Result<()>,
    mark: Mark,
    compacted: bool,
) {
    shared.progress.send_modify(|progress| {
        let reached = match done {
            Ok(()) if compacted => {
                progress.failed_from = None;
                true
            }
            Ok(()) => progress
                .failed_from
                .as_ref()
                .is_none_or(|(from, _)| last < *from),
            Err(e) => {
                tracing::error!(journal = %path.display(), "cannot write the journal: {e}");
                shared.broken.store(true, Ordering::Relaxed);
                let why = format!("cannot write the journal {}: {e}", path.display());
                progress.failed_from.get_or_insert((first, why));
                false
            }
        };
        if reached {
            progress.written = progress.written.max(last);
            if mark == Mark::Durable {
                progress.durable = progress.durable.max(last);
            }
        }
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How far a batch got.
enum Batch {
    /// Written and synced (a snapshot alone, or nothing to do).
    Synced,
    /// Appended to the log; not synced yet.
    Written,
}

/// Writes a batch: a snapshot (synced) and the records queued after it (appended, not
/// synced: the caller syncs them once it has said they are written).
fn write_batch(
    path: &Path,
    file: &mut Option<Arc<File>>,
    items: Vec<(u64, Item)>,
    shared: &Shared,
) -> io::Result<Batch> {
    let mut pending = Vec::new();
    for (_, item) in items {
        match item {
            Item::Append(line) => pending.extend_from_slice(&encode(&line)),
            Item::Compact(snapshot) => {
                // The snapshot already holds every change queued before it.
                pending.clear();
                let written = write_snapshot(path, &snapshot);
                if let Ok(size) = written {
                    shared.snapshot_size.store(size, Ordering::Relaxed);
                    shared.appended.store(0, Ordering::Relaxed);
                }
                // Written or not (a failure marks the journal broken, which asks for the
                // next one), the next snapshot may be asked for.
                shared.compacting.store(false, Ordering::Release);
                written?;
                *file = None;
            }
        }
    }
    if pending.is_empty() {
        return Ok(Batch::Synced);
    }
    let out = match file {
        Some(file) => file,
        None => file.insert(Arc::new(
            OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)?,
        )),
    };
    (&**out).write_all(&pending)?;
    shared
        .appended
        .fetch_add(pending.len() as u64, Ordering::Relaxed);
    Ok(Batch::Written)
}

/// Writes `snapshot` as a new journal: a temporary file, synced, renamed over the old one,
/// and the dir synced. Returns its size.
fn write_snapshot(path: &Path, snapshot: &Snapshot) -> io::Result<u64> {
    let mut bytes = encode(&Line::Header { journal: VERSION });
    bytes.extend(encode(&Line::Counters {
        nonce: snapshot.nonce,
        next_session: snapshot.next_session,
        next_lease: snapshot.next_lease,
    }));
    for record in &snapshot.sessions {
        bytes.extend(encode(&Line::Put(Box::new(record.clone()))));
    }
    let temp = path.with_extension("new");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&temp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{LeaderRecord, StateRecord};
    use browserd_proto::{SessionType, Workspace};

    fn record(id: &str) -> SessionRecord {
        SessionRecord {
            id: id.parse().unwrap(),
            tracking_id: None,
            session_type: SessionType::Sandbox,
            workspace: Workspace::default(),
            command: vec!["sleep".into(), "1".into()],
            leader: LeaderRecord {
                pid: 42,
                start_time: 7,
                boot_id: "b".into(),
                adopted: false,
                exit: None,
            },
            started_at_ms: 1,
            expires_at_ms: None,
            leases: Vec::new(),
            dirs: Vec::new(),
            browser: None,
            cgroup: None,
            warm: false,
            state: StateRecord::Running,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    fn snapshot(records: Vec<SessionRecord>) -> Snapshot {
        Snapshot {
            nonce: 5,
            next_session: 10,
            next_lease: 20,
            sessions: records,
        }
    }

    #[test]
    fn appended_records_are_durable_once_synced_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::start(path.clone(), snapshot(vec![record("a-1")])).unwrap();
        journal.append(Line::Put(Box::new(record("a-2"))));
        journal.append(Line::Forget("a-1".parse().unwrap()));
        let seq = journal.append(Line::Counters {
            nonce: 5,
            next_session: 1000,
            next_lease: 20,
        });
        runtime().block_on(journal.synced(seq)).unwrap();
        let replayed = read(&path);
        assert!(replayed.problem.is_none(), "{:?}", replayed.problem);
        assert_eq!(replayed.snapshot.nonce, 5);
        assert_eq!(replayed.snapshot.next_session, 1000);
        let ids: Vec<&str> = replayed
            .snapshot
            .sessions
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(ids, ["a-2"]);
    }

    #[test]
    fn a_torn_or_corrupt_line_ends_the_replay_and_keeps_what_precedes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::start(path.clone(), snapshot(vec![record("a-1")])).unwrap();
        let seq = journal.append(Line::Put(Box::new(record("a-2"))));
        runtime().block_on(journal.synced(seq)).unwrap();
        journal.close();
        let intact = std::fs::read(&path).unwrap();

        // Torn: the last record lost its end.
        std::fs::write(&path, &intact[..intact.len() - 5]).unwrap();
        let replayed = read(&path);
        assert!(replayed.problem.as_deref().unwrap().contains("torn"));
        assert_eq!(replayed.snapshot.sessions.len(), 1);

        // Corrupt: a flipped byte in the first session record.
        let mut corrupt = intact.clone();
        let second_line = corrupt.iter().position(|&b| b == b'\n').unwrap() + 1;
        let third_line = second_line
            + corrupt[second_line..]
                .iter()
                .position(|&b| b == b'\n')
                .unwrap()
            + 1;
        corrupt[third_line + 20] ^= 0x20;
        std::fs::write(&path, &corrupt).unwrap();
        let replayed = read(&path);
        assert!(
            replayed.problem.as_deref().unwrap().contains("checksum"),
            "{:?}",
            replayed.problem
        );
        assert!(replayed.snapshot.sessions.is_empty());
        assert_eq!(
            replayed.snapshot.next_session, 10,
            "the counters before it are kept"
        );
    }

    #[test]
    fn another_version_is_set_aside_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        std::fs::write(&path, encode(&Line::Header { journal: 99 })).unwrap();
        let replayed = read(&path);
        assert!(replayed.problem.as_deref().unwrap().contains("version 99"));
        assert!(!path.exists() && path.with_extension("unreadable").exists());

        std::fs::write(&path, b"\x00\xffgarbage\n").unwrap();
        let replayed = read(&path);
        assert!(replayed.found && replayed.problem.is_some());
        assert!(replayed.snapshot.sessions.is_empty());

        assert!(!read(&dir.path().join("missing")).found);
    }

    #[test]
    fn a_snapshot_replaces_the_log_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::start(path.clone(), snapshot(vec![record("a-1")])).unwrap();
        for i in 2..50 {
            journal.append(Line::Put(Box::new(record(&format!("a-{i}")))));
        }
        let seq = journal.compact(snapshot(vec![record("b-1")]));
        runtime().block_on(journal.synced(seq)).unwrap();
        let replayed = read(&path);
        let ids: Vec<&str> = replayed
            .snapshot
            .sessions
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(ids, ["b-1"]);
        assert!(!path.with_extension("new").exists());
        assert!(!journal.wants_compaction());
    }

    #[test]
    fn a_snapshot_is_asked_for_once_until_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::start(path.clone(), snapshot(vec![record("a-1")])).unwrap();
        // Grow the log past the point where a snapshot is due.
        let mut long = record("a-2");
        long.command = vec!["x".repeat(64 * 1024)];
        let mut seq = 0;
        for _ in 0..=COMPACT_AFTER / (64 * 1024) {
            seq = journal.append(Line::Put(Box::new(long.clone())));
        }
        runtime().block_on(journal.synced(seq)).unwrap();
        assert!(journal.wants_compaction());

        // What the registry does at each change of a bulk kill: one snapshot is queued,
        // and no change after it asks for another while the writer writes it.
        let mut asked = 0;
        for i in 0..200 {
            journal.append(Line::Forget(format!("b-{i}").parse().unwrap()));
            if journal.wants_compaction() {
                journal.compact(snapshot(vec![record("a-1")]));
                asked += 1;
            }
        }
        assert_eq!(asked, 1);
        runtime()
            .block_on(journal.synced(journal.last_seq()))
            .unwrap();
        assert!(!journal.wants_compaction());
        let replayed = read(&path);
        assert!(replayed.problem.is_none(), "{:?}", replayed.problem);
        assert_eq!(replayed.snapshot.sessions.len(), 1);
    }

    #[test]
    fn a_failed_snapshot_is_asked_for_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("journal");
        let journal = Journal::start(path, Snapshot::default()).unwrap();
        let seq = journal.compact(Snapshot::default());
        runtime().block_on(journal.synced(seq)).unwrap_err();
        assert!(
            journal.wants_compaction(),
            "the journal is broken: rewrite it"
        );
    }

    #[test]
    fn a_failed_write_is_reported_to_its_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("journal");
        let journal = Journal::start(path, Snapshot::default()).unwrap();
        let seq = journal.append(Line::Forget("x".parse().unwrap()));
        let err = runtime().block_on(journal.synced(seq)).unwrap_err();
        assert!(err.contains("cannot write the journal"), "{err}");
        let err = runtime()
            .block_on(journal.reached(seq, Mark::Written))
            .unwrap_err();
        assert!(err.contains("cannot write the journal"), "{err}");
        assert!(journal.wants_compaction());
    }

    #[test]
    fn a_written_record_is_read_back_by_the_next_start_without_waiting_for_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::start(path.clone(), snapshot(vec![record("a-1")])).unwrap();
        let seq = journal.append(Line::Put(Box::new(record("a-2"))));
        runtime()
            .block_on(journal.reached(seq, Mark::Written))
            .unwrap();
        // What a daemon killed at this point leaves: the file as the kernel has it.
        let ids: Vec<String> = read(&path)
            .snapshot
            .sessions
            .iter()
            .map(|r| r.id.to_string())
            .collect();
        assert_eq!(ids, ["a-1", "a-2"]);
        runtime().block_on(journal.synced(seq)).unwrap();
    }
}
