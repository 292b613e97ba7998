//! Reading the process table. Every process that descends from the daemon belongs to one of
//! its sessions; this module finds them with one pass over `/proc` (the kernel offers no
//! event for "a process was re-parented to you", and `/proc/PID/task/TID/children` is not
//! built into every kernel) and attributes each to its session.

use browserd_proto::SessionId;
use std::collections::{HashMap, HashSet};
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
    pub rss_pages: u64,
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
    let mut fields = rest.split_ascii_whitespace();
    // Fields after the name, numbered as in proc(5): 3 state, 4 ppid, 5 pgrp, 6 session,
    // 22 starttime, 24 rss.
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    let sid = fields.next()?.parse().ok()?;
    let mut fields = fields.skip(22 - 7);
    let start_time = fields.next()?.parse().ok()?;
    let rss_pages = fields.nth(1)?.parse::<i64>().ok()?.max(0) as u64;
    Some(ProcInfo {
        pid,
        ppid,
        pgid,
        sid,
        start_time,
        state,
        rss_pages,
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
}

struct Entry {
    /// The inode of `/proc/PID`, which procfs allocates afresh for each process instance:
    /// with the pid, it tells a known process from a newcomer reusing its pid, straight from
    /// the directory listing, without reading anything.
    ino: u64,
    info: ProcInfo,
    owner: Owner,
}

/// The process table, kept between refreshes.
///
/// A refresh must find every process started since the last one. The kernel hands out pids
/// cyclically and `/proc/loadavg` names the last one allocated, so when few pids were
/// allocated since, probing just those pids finds every newcomer (an incremental refresh:
/// its cost is the number of new processes, not of all processes). Otherwise, and at least
/// every `FULL_EVERY` so the table forgets the dead, it lists `/proc`; a listing reads
/// `stat` only for processes it has not seen before, recognised by pid and the inode of
/// `/proc/PID` (procfs allocates a new inode for each process instance).
#[derive(Default)]
pub struct ProcTable {
    entries: HashMap<i32, Entry>,
    /// The pids of each session's processes, kept in step with `entries`, so that asking
    /// for one session costs that session's size.
    sessions: HashMap<SessionId, HashSet<i32>>,
    /// The last pid allocated when the previous refresh began.
    last_pid: Option<i32>,
    /// How many tasks the kernel had created when the previous refresh began.
    forks: Option<u64>,
    last_listing: Option<Instant>,
}

/// Most pids probed one by one before a listing is cheaper.
const MAX_PROBE: i32 = 2048;
/// A background refresh lists `/proc` when the last listing is older than this, to drop
/// exited processes from the table.
const FULL_EVERY: Duration = Duration::from_secs(1);
/// Pids just below the previous refresh's last pid are probed again if still unknown: a
/// pid is allocated a moment before its process becomes visible in `/proc`.
const SLACK: i32 = 16;

impl ProcTable {
    /// Brings the table up to date. `root_owner` decides the owner of each new direct child
    /// of `ancestor` (a session leader, or an orphan the daemon adopted); it is called only
    /// after that process was read, so a leader spawned meanwhile is already registered.
    ///
    /// A `background` refresh (nobody is waiting on it) also lists `/proc` when the last
    /// listing is older than `FULL_EVERY`, to forget exited processes; one a caller waits on
    /// lists only when probing cannot be trusted (no listing yet, too many new pids, pids
    /// wrapped around).
    pub fn refresh(
        &mut self,
        ancestor: i32,
        background: bool,
        root_owner: impl FnMut(&ProcInfo) -> Owner,
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
                    && !(background && listed.elapsed() >= FULL_EVERY) =>
            {
                Some((prev, now))
            }
            _ => None,
        };
        let new = match probe {
            Some((prev, now)) => self.probe(prev, now),
            None => {
                let new = self.list()?;
                self.last_listing = Some(Instant::now());
                new
            }
        };
        if !new.is_empty() {
            self.resolve(new, ancestor, root_owner);
        }
        self.last_pid = last_pid;
        self.forks = forks;
        Ok(())
    }

    /// The processes of one session, as the table knows them (some may have exited since:
    /// see [`reread`]).
    pub fn of(&self, id: &SessionId) -> Vec<ProcInfo> {
        self.sessions.get(id).map_or_else(Vec::new, |pids| {
            pids.iter()
                .filter_map(|pid| self.entries.get(pid))
                .map(|entry| entry.info)
                .collect()
        })
    }

    fn insert(&mut self, pid: i32, entry: Entry) {
        if let Owner::Session(id) = &entry.owner {
            self.sessions.entry(id.clone()).or_default().insert(pid);
        }
        if let Some(old) = self.entries.insert(pid, entry) {
            self.unindex(pid, &old);
            if let Some(Entry {
                owner: Owner::Session(id),
                ..
            }) = self.entries.get(&pid)
            {
                self.sessions.entry(id.clone()).or_default().insert(pid);
            }
        }
    }

    fn remove(&mut self, pid: i32) -> Option<Entry> {
        let entry = self.entries.remove(&pid)?;
        self.unindex(pid, &entry);
        Some(entry)
    }

    fn unindex(&mut self, pid: i32, entry: &Entry) {
        if let Owner::Session(id) = &entry.owner {
            if let Some(pids) = self.sessions.get_mut(id) {
                pids.remove(&pid);
                if pids.is_empty() {
                    self.sessions.remove(id);
                }
            }
        }
    }

    /// Reads the pids allocated after `prev` (and unknown pids shortly before it).
    fn probe(&mut self, prev: i32, now: i32) -> HashMap<i32, (u64, ProcInfo)> {
        let mut new = HashMap::new();
        let mut buf = [0u8; 1024];
        for pid in (prev - SLACK).max(1)..=now {
            let known = self.entries.get(&pid);
            if pid <= prev && known.is_some() {
                continue;
            }
            let Some(info) = read_stat_into(pid, &mut buf) else {
                continue;
            };
            if known.is_some_and(|e| e.info.start_time == info.start_time) {
                continue;
            }
            self.remove(pid);
            // The inode, so the next listing recognises the process without reading it.
            let ino = fs::symlink_metadata(format!("/proc/{pid}")).map_or(0, |m| m.ino());
            new.insert(pid, (ino, info));
        }
        new
    }

    /// Lists `/proc`: keeps known processes, drops exited ones, returns the new ones.
    fn list(&mut self) -> io::Result<HashMap<i32, (u64, ProcInfo)>> {
        let mut listed: HashSet<i32> = HashSet::with_capacity(self.entries.len());
        let mut new = HashMap::new();
        let mut buf = [0u8; 1024];
        for entry in fs::read_dir("/proc")? {
            let Ok(entry) = entry else { continue };
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
        Ok(new)
    }

    /// Decides the owner of each new process, parent first; a chain of new processes is
    /// walked once.
    fn resolve(
        &mut self,
        mut new: HashMap<i32, (u64, ProcInfo)>,
        ancestor: i32,
        mut root_owner: impl FnMut(&ProcInfo) -> Owner,
    ) {
        let mut buf = [0u8; 1024];
        let pids: Vec<i32> = new.keys().copied().collect();
        for pid in pids {
            let mut chain = Vec::new();
            let mut cursor = pid;
            let owner = loop {
                if let Some(entry) = self.entries.get(&cursor) {
                    break entry.owner.clone();
                }
                let Some((_, info)) = new.get(&cursor) else {
                    // The parent vanished meanwhile, so its child was re-parented; read
                    // where it hangs now.
                    break match chain
                        .last()
                        .and_then(|&child| read_stat_into(child, &mut buf))
                    {
                        Some(now) if now.ppid == ancestor => root_owner(&now),
                        Some(now) => self
                            .entries
                            .get(&now.ppid)
                            .map_or(Owner::Foreign, |e| e.owner.clone()),
                        None => Owner::Foreign,
                    };
                };
                if info.ppid == ancestor {
                    break root_owner(info);
                }
                if info.ppid <= 0 || chain.len() > new.len() {
                    break Owner::Foreign;
                }
                chain.push(cursor);
                cursor = info.ppid;
            };
            chain.push(cursor);
            for pid in chain {
                if let Some((ino, info)) = new.remove(&pid) {
                    let owner = owner.clone();
                    self.insert(pid, Entry { ino, info, owner });
                }
            }
        }
    }
}

/// The last pid the kernel allocated in this pid namespace (the last field of
/// `/proc/loadavg`).
fn read_last_pid() -> Option<i32> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().nth(4)?.parse().ok()
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

/// Whether any of the processes the table listed still exists, zombies included (a zombie
/// is not gone until it is reaped).
pub fn any_remaining(known: &[ProcInfo]) -> bool {
    known.iter().any(|p| reread(p).is_some())
}

/// How many tasks (processes and threads, each taking a pid) the kernel has created since
/// boot: the `processes` line of `/proc/stat`.
fn read_fork_count() -> Option<u64> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("processes "))?
        .trim()
        .parse()
        .ok()
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

/// The value of `name` in a process's initial environment, if readable.
///
/// A process may rewrite that memory (Chromium does, for its process titles), so this is one
/// attribution signal among several, never the only one.
pub fn read_env_var(pid: i32, name: &str) -> Option<String> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .and_then(|value| std::str::from_utf8(value).ok())
        .map(str::to_owned)
}

/// The size of a memory page, for converting RSS pages to bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
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
        assert_eq!(info.rss_pages, 250);
    }

    #[test]
    fn rejects_truncated_stat() {
        assert!(parse_stat(b"12 (x) S 1 2").is_none());
        assert!(parse_stat(b"").is_none());
        assert!(parse_stat(b"abc (x) S 1 2 3").is_none());
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
        table.refresh(me, false, |_| Owner::Unowned).unwrap();
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
            .refresh(me, false, |p| {
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
        table.refresh(me, false, |_| Owner::Unowned).unwrap();
        let stale = Instant::now() - FULL_EVERY * 2;
        table.last_listing = Some(stale);
        table.refresh(me, false, |_| Owner::Unowned).unwrap();
        assert_eq!(
            table.last_listing,
            Some(stale),
            "a waited-on refresh probes"
        );
        table.refresh(me, true, |_| Owner::Unowned).unwrap();
        assert!(
            table.last_listing.unwrap() > stale,
            "a background refresh lists"
        );
    }

    #[test]
    fn a_pid_cycle_since_the_last_refresh_forces_a_listing() {
        let me = std::process::id() as i32;
        let mut table = ProcTable::default();
        table.refresh(me, false, |_| Owner::Unowned).unwrap();
        let listed = table.last_listing;
        // As if a whole cycle of pids was allocated since: the pid range alone cannot tell.
        table.forks = table.forks.map(|f| f - MAX_PROBE as u64 - 1);
        table.refresh(me, false, |_| Owner::Unowned).unwrap();
        assert_ne!(table.last_listing, listed, "too many forks: it must list");
        assert!(read_fork_count().is_some());
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
        let mut owner = |p: &ProcInfo| {
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
            read_env_var(pid, "BROWSERD_TEST_MARK").as_deref(),
            Some("m-1")
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
