//! A lean `/proc` reader for timing loops: one `stat` read per process (no environment, no
//! status), so polling thousands of processes stays cheap next to what is measured. Also the
//! daemon's resource counters (RSS, CPU time, descriptors) and pidfd-pinned signalling.

use browserd_tests::{Fixture, ProcId};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The fields of `/proc/PID/stat` the bench needs.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub pid: i32,
    pub ppid: i32,
    /// The process group: a session's leader's pid, for every process that did not leave.
    pub pgid: i32,
    pub state: u8,
    pub start_time: u64,
    /// Whether the command name is `sleep` (the fixtures' leaves, once exec'd).
    pub is_sleep: bool,
}

impl Stat {
    pub fn id(&self) -> ProcId {
        ProcId {
            pid: self.pid,
            start_time: self.start_time,
        }
    }

    pub fn is_zombie(&self) -> bool {
        self.state == b'Z' || self.state == b'X'
    }
}

/// Reads one process's stat; `None` once it is gone (reaped).
pub fn read_stat(pid: i32) -> Option<Stat> {
    let mut buf = [0u8; 512];
    let mut file = fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    parse_stat(pid, &buf[..len])
}

fn parse_stat(pid: i32, text: &[u8]) -> Option<Stat> {
    let open = text.iter().position(|&b| b == b'(')?;
    let close = text.iter().rposition(|&b| b == b')')?;
    let comm = text.get(open + 1..close)?;
    let rest = std::str::from_utf8(text.get(close + 2..)?).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().take(20).collect();
    // Numbered as in proc(5) minus 3: state(3) ppid(4) pgrp(5) session(6) starttime(22).
    Some(Stat {
        pid,
        state: *fields.first()?.as_bytes().first()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
        is_sleep: comm == b"sleep",
    })
}

/// Every process now (threads excluded).
pub fn scan() -> Vec<Stat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// The process `id` names, if it still exists (zombies included).
pub fn current(id: ProcId) -> Option<Stat> {
    read_stat(id.pid).filter(|s| s.start_time == id.start_time)
}

/// How many of `ids` still exist, zombies included.
pub fn count_present(ids: &[ProcId]) -> usize {
    ids.iter().filter(|id| current(**id).is_some()).count()
}

/// Waits until every session led by one of `leaders` (its leader started it with `setsid`)
/// has grown into `fixture`'s complete tree; returns each tree's processes, in `leaders`'
/// order. Trees must be complete before a kill is timed, or the kill races their start.
pub fn wait_trees(
    leaders: &[i32],
    fixture: &Fixture,
    timeout: Duration,
) -> Result<Vec<Vec<ProcId>>, String> {
    let wanted: HashSet<i32> = leaders.iter().copied().collect();
    let start = Instant::now();
    loop {
        let mut by_group: HashMap<i32, Vec<Stat>> = HashMap::new();
        for stat in scan() {
            if wanted.contains(&stat.pgid) && !stat.is_zombie() {
                by_group.entry(stat.pgid).or_default().push(stat);
            }
        }
        let complete = |procs: &Vec<Stat>| {
            procs.len() == fixture.processes
                && procs.iter().filter(|p| p.is_sleep).count() == fixture.sleepers
        };
        let incomplete = leaders
            .iter()
            .filter(|l| !by_group.get(l).is_some_and(complete))
            .count();
        if incomplete == 0 {
            return Ok(leaders
                .iter()
                .map(|l| by_group[l].iter().map(Stat::id).collect())
                .collect());
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "{incomplete} of {} `{}` trees did not complete within {timeout:?}",
                leaders.len(),
                fixture.name
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until none of `ids` exists. With `reap`, this process reaps its own exited
/// children as they come (the baseline is the trees' parent, and subreaper of their orphans)
/// and reads `/proc` only for what is left once nothing is waiting to be reaped; without,
/// the processes are somebody else's to reap, and a zombie still counts as there. Returns
/// how many are left on timeout.
pub fn wait_gone(ids: &[ProcId], timeout: Duration, reap: bool) -> Result<(), usize> {
    let me = std::process::id() as i32;
    let start = Instant::now();
    let mut pending = ids.to_vec();
    loop {
        if reap {
            let reaped: HashSet<i32> = crate::cleanup::reap_exited().into_iter().collect();
            if !reaped.is_empty() {
                pending.retain(|id| !reaped.contains(&id.pid));
                if !pending.is_empty() {
                    continue;
                }
            }
        }
        pending.retain(|id| match current(*id) {
            None => false,
            Some(s) if reap && s.is_zombie() && s.ppid == me => !crate::cleanup::reap(id.pid),
            Some(_) => true,
        });
        if pending.is_empty() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(pending.len());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Every descendant of `root` in `all`, found by walking parent links.
pub fn descendants(root: i32, all: &[Stat]) -> Vec<Stat> {
    let parent: HashMap<i32, i32> = all.iter().map(|s| (s.pid, s.ppid)).collect();
    all.iter()
        .filter(|s| {
            let mut cursor = s.ppid;
            for _ in 0..64 {
                if cursor == root {
                    return true;
                }
                match parent.get(&cursor) {
                    Some(&up) if up > 0 && up != cursor => cursor = up,
                    _ => return false,
                }
            }
            false
        })
        .copied()
        .collect()
}

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Open descriptors of `pid`.
pub fn fd_count(pid: i32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// A process's CPU counters at one instant: per-thread nanoseconds on CPU
/// (`/proc/PID/task/TID/schedstat`) and the process's `utime + stime` in clock ticks, which
/// also covers threads that have exited but only has 10 ms resolution.
pub struct CpuSample {
    threads: HashMap<i32, u64>,
    ticks: u64,
}

/// CPU used between two samples.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// Nanosecond-precise sum over threads; `None` if a thread exited in between (its time
    /// would be missing), in which case only `ticks_ms` is trustworthy.
    pub precise_ms: Option<f64>,
    pub ticks_ms: f64,
}

impl CpuUse {
    pub fn best_ms(&self) -> f64 {
        self.precise_ms.unwrap_or(self.ticks_ms)
    }
}

pub fn cpu_sample(pid: i32) -> Option<CpuSample> {
    let mut threads = HashMap::new();
    for entry in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let text = fs::read_to_string(entry.path().join("schedstat")).unwrap_or_default();
        if let Some(ns) = text.split_whitespace().next().and_then(|f| f.parse().ok()) {
            threads.insert(tid, ns);
        }
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // utime(14) and stime(15), counted from state(3).
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(CpuSample { threads, ticks })
}

pub fn cpu_between(before: &CpuSample, after: &CpuSample) -> CpuUse {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks_ms = after.ticks.saturating_sub(before.ticks) as f64 * 1000.0 / hz;
    let lost = before
        .threads
        .keys()
        .any(|t| !after.threads.contains_key(t));
    let precise_ms = (!lost).then(|| {
        let ns: u64 = after
            .threads
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(before.threads.get(tid).copied().unwrap_or(0)))
            .sum();
        ns as f64 / 1e6
    });
    CpuUse {
        precise_ms,
        ticks_ms,
    }
}

/// A pidfd: a handle on one process that a reused pid cannot redirect.
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd on `id`, if that very process still exists.
    pub fn open(id: ProcId) -> Option<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, id.pid, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the kernel just returned this descriptor and nothing else owns it.
        let pidfd = PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        // The pidfd pins the process; the start time proves it is the one `id` names.
        current(id).map(|_| pidfd)
    }

    /// Sends `signal`; false if the process has already exited.
    pub fn signal(&self, signal: i32) -> bool {
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            ) == 0
        }
    }

    /// Waits until the process has exited (a pidfd polls readable then); true if it did.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let mut poll = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut poll, 1, ms) > 0 }
    }
}

/// Runs `command` with no input or output and returns how long it took from spawn to exit,
/// in milliseconds; fails if it did not exit 0.
pub fn time_command(command: &mut std::process::Command) -> Result<f64, String> {
    use std::process::Stdio;
    let start = Instant::now();
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let took = crate::stats::ms(start.elapsed());
    if !status.success() {
        return Err(format!("{command:?} failed: {status}"));
    }
    Ok(took)
}
