//! Reading the process table. Every process that descends from the daemon belongs to one of
//! its sessions; this module finds them with one pass over `/proc` (the kernel offers no
//! event for "a process was re-parented to you", and `/proc/PID/task/TID/children` is not
//! built into every kernel) and attributes each to its session.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;

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

/// The processes that descend from one ancestor, each with the ancestor's direct child it
/// hangs below (its "root").
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Descendants of the ancestor, with the pid of their root.
    pub descendants: Vec<(ProcInfo, i32)>,
}

/// Scans `/proc` once and returns every descendant of `ancestor`.
pub fn scan_descendants(ancestor: i32) -> io::Result<Snapshot> {
    let mut all: HashMap<i32, ProcInfo> = HashMap::new();
    let mut buf = [0u8; 1024];
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = parse_pid(entry.file_name().as_bytes()) else {
            continue;
        };
        if let Some(info) = read_stat_into(pid, &mut buf) {
            all.insert(pid, info);
        }
    }
    // A process whose parent vanished during the scan was re-parented meanwhile (possibly
    // to us); read it again so it is not lost between two parents.
    let orphaned: Vec<i32> = all
        .values()
        .filter(|p| p.ppid > 0 && p.ppid != ancestor && !all.contains_key(&p.ppid))
        .map(|p| p.pid)
        .collect();
    for pid in orphaned {
        match read_stat_into(pid, &mut buf) {
            Some(info) => {
                all.insert(pid, info);
            }
            None => {
                all.remove(&pid);
            }
        }
    }
    Ok(Snapshot {
        descendants: descendants_of(ancestor, &all),
    })
}

fn parse_pid(name: &[u8]) -> Option<i32> {
    if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// Walks each process's parent chain up to `ancestor`; memoised so the walk is linear.
fn descendants_of(ancestor: i32, all: &HashMap<i32, ProcInfo>) -> Vec<(ProcInfo, i32)> {
    // root_of[pid] = Some(root) if pid descends from ancestor, None if it does not.
    let mut root_of: HashMap<i32, Option<i32>> = HashMap::with_capacity(all.len());
    let mut chain = Vec::new();
    for &start in all.keys() {
        let mut pid = start;
        let verdict = loop {
            if let Some(known) = root_of.get(&pid) {
                break *known;
            }
            let Some(info) = all.get(&pid) else {
                break None;
            };
            if info.ppid == ancestor {
                root_of.insert(pid, Some(pid));
                break Some(pid);
            }
            if info.ppid <= 0 || pid == ancestor || chain.len() > all.len() {
                break None;
            }
            chain.push(pid);
            pid = info.ppid;
        };
        for pid in chain.drain(..) {
            root_of.insert(pid, verdict);
        }
        root_of.entry(start).or_insert(verdict);
    }
    all.values()
        .filter_map(|info| {
            root_of
                .get(&info.pid)
                .copied()
                .flatten()
                .map(|root| (*info, root))
        })
        .collect()
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
    fn finds_descendants_with_their_roots() {
        let mk = |pid, ppid| ProcInfo {
            pid,
            ppid,
            pgid: pid,
            sid: pid,
            start_time: 1,
            state: b'S',
            rss_pages: 0,
        };
        let all: HashMap<i32, ProcInfo> = [
            mk(10, 1),
            mk(11, 10),
            mk(12, 11),
            mk(13, 12),
            mk(20, 1),
            mk(14, 10),
        ]
        .into_iter()
        .map(|p| (p.pid, p))
        .collect();
        let mut found: Vec<(i32, i32)> = descendants_of(10, &all)
            .into_iter()
            .map(|(p, root)| (p.pid, root))
            .collect();
        found.sort();
        assert_eq!(found, vec![(11, 11), (12, 11), (13, 11), (14, 14)]);
    }

    #[test]
    fn finds_a_real_child_and_its_marker() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("BROWSERD_TEST_MARK", "m-1")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let snap = scan_descendants(me).unwrap();
        let pid = child.id() as i32;
        assert!(snap
            .descendants
            .iter()
            .any(|(p, root)| p.pid == pid && *root == pid));
        assert_eq!(
            read_env_var(pid, "BROWSERD_TEST_MARK").as_deref(),
            Some("m-1")
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
