//! cgroup v2 containment: finding a writable (delegated) subtree, taking it over (the daemon
//! into a leaf, then controllers on), one child cgroup per session, atomic kill
//! (`cgroup.kill`), "empty" from `cgroup.events`, accounting and limits. Where the system
//! gives browserd no such subtree, sessions are tracked by process group and the process
//! table instead (see `members`).
//!
//! Kernel facts this relies on (checked on 6.18):
//! * `cgroup.kill` exists in every non-root cgroup since 5.14; `cgroup.events` (`populated`)
//!   since 4.5; `cpu.stat` with `usage_usec` is a core file, present without the cpu
//!   controller.
//! * `populated` drops to 0 when the last member *exits*: zombies do not count, so it does
//!   not wait for the reaper, and `rmdir` succeeds then.
//! * The no-internal-process rule: a non-root cgroup with processes cannot enable a domain
//!   controller for its children, and once controllers are enabled nobody can be moved into
//!   it. So the daemon first moves itself into `<root>/daemon`, then enables controllers.

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The leaf the daemon moves itself into.
pub const DAEMON_LEAF: &str = "daemon";
/// The controllers a session's limits need.
const WANTED: [&str; 2] = ["memory", "pids"];

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    // O_RDONLY, not O_PATH: CLONE_INTO_CGROUP on older kernels rejects O_PATH fds.
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("open {}: {e}", path.display()),
        )
    })
}

fn open_in(dir: BorrowedFd<'_>, name: &str, flags: OFlag) -> io::Result<OwnedFd> {
    Ok(openat(dir, name, flags | OFlag::O_CLOEXEC, Mode::empty())?)
}

/// Reads a small pseudo-file of a cgroup.
fn read_in(dir: BorrowedFd<'_>, name: &str) -> io::Result<Vec<u8>> {
    let file = fs::File::from(open_in(dir, name, OFlag::O_RDONLY)?);
    crate::procs::read_pseudo_file(file, 512)
}

/// Writes a cgroup file in one `write` (cgroupfs wants the whole value at once; that
/// write's error is the one that says what went wrong: EBUSY, ENOENT, ...).
fn write_in(dir: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let file = open_in(dir, name, OFlag::O_WRONLY)?;
    nix::unistd::write(&file, value)?;
    Ok(())
}

fn parse_pids(text: &[u8]) -> Vec<i32> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok()?.trim().parse().ok())
        .collect()
}

fn parse_words(text: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(text)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn parse_keyed(text: &[u8]) -> HashMap<String, u64> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

// ----- finding a subtree -----

/// A cgroup2 mount, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    point: PathBuf,
    /// The mount's root inside the hierarchy ("/" unless a subtree is bind-mounted, as in
    /// a container with its own cgroup namespace view).
    root: String,
    read_only: bool,
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every cgroup2 mount in mountinfo text, first one first.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split(' ').next() != Some("cgroup2") {
                return None;
            }
            let fields: Vec<&str> = left.split(' ').collect();
            Some(Mount {
                root: unescape(fields.get(3)?),
                point: PathBuf::from(unescape(fields.get(4)?)),
                read_only: fields.get(5)?.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// This process's cgroup v2 path, from `/proc/self/cgroup` (`0::/path`).
fn parse_own_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| path.trim_end_matches(" (deleted)").to_owned())
}

/// The name of process `pid`'s cgroup (the last part of its v2 path), from
/// `/proc/PID/cgroup`; `Ok(None)` if it has no v2 line. A process keeps its cgroup until
/// it is reaped, after it has left the cgroup's `cgroup.procs` and after the cgroup is
/// removed (the path then ends in ` (deleted)`, left out here).
pub fn leaf_of(pid: i32) -> io::Result<Option<String>> {
    let text = crate::procs::read_pseudo_file(fs::File::open(format!("/proc/{pid}/cgroup"))?, 512)?;
    Ok(parse_own_cgroup(&String::from_utf8_lossy(&text))
        .map(|path| path.rsplit('/').next().unwrap_or_default().to_owned()))
}

/// The directory of hierarchy path `cgroup` under `mount`.
fn dir_of(mount: &Mount, cgroup: &str) -> Option<PathBuf> {
    let relative = match mount.root.as_str() {
        "/" => cgroup,
        root => cgroup.strip_prefix(root)?,
    };
    let relative = relative.trim_start_matches('/');
    Some(match relative {
        "" => mount.point.clone(),
        relative => mount.point.join(relative),
    })
}

/// Why sessions are not contained in cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

/// Finds the subtree to use: `explicit` (`--cgroup-root`), else the daemon's own cgroup
/// (systemd `Delegate=yes`, a container's cgroup namespace), and checks it for real: a
/// cgroup2 filesystem, writable, a child cgroup can be made, and `cgroup.kill` exists.
fn find(explicit: Option<&Path>) -> Result<PathBuf, Unavailable> {
    let fail = |why: String| Unavailable(why);
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| fail(format!("cannot read /proc/self/mountinfo: {e}")))?;
    let mounts = parse_mountinfo(&mountinfo);
    let Some(mount) = mounts.first() else {
        return Err(fail("no cgroup2 filesystem is mounted".into()));
    };
    let root = match explicit {
        Some(path) => {
            let path = fs::canonicalize(path)
                .map_err(|e| fail(format!("--cgroup-root {}: {e}", path.display())))?;
            if !mounts
                .iter()
                .any(|m| path.starts_with(&m.point) && path != m.point)
            {
                return Err(fail(format!(
                    "--cgroup-root {} is not a cgroup below the root of a cgroup2 mount",
                    path.display()
                )));
            }
            path
        }
        None => {
            let text = fs::read_to_string("/proc/self/cgroup")
                .map_err(|e| fail(format!("cannot read /proc/self/cgroup: {e}")))?;
            let own = parse_own_cgroup(&text)
                .ok_or_else(|| fail("the daemon is in no cgroup v2".into()))?;
            // After a take-over (a reload, a restart in place) the daemon is in the leaf.
            let own = own
                .strip_suffix(&format!("/{DAEMON_LEAF}"))
                .map_or(own.clone(), str::to_owned);
            if own == "/" || own.is_empty() {
                return Err(fail(
                    "the daemon runs in the root cgroup, which is nobody's to delegate (run it \
                     under systemd with Delegate=yes, or pass --cgroup-root)"
                        .into(),
                ));
            }
            dir_of(mount, &own).ok_or_else(|| {
                fail(format!(
                    "its cgroup {own} is outside the mounted cgroup2 tree"
                ))
            })?
        }
    };
    if mount.read_only {
        return Err(fail(format!(
            "{} is mounted read-only (systemd's ProtectControlGroups=yes?)",
            mount.point.display()
        )));
    }
    let statfs = nix::sys::statfs::statfs(&root)
        .map_err(|e| fail(format!("statfs {}: {e}", root.display())))?;
    if statfs.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        return Err(fail(format!(
            "{} is not on a cgroup2 filesystem",
            root.display()
        )));
    }
    // The real test: make a child cgroup (and see what it offers).
    let probe = root.join(format!(".probe-{}", std::process::id()));
    if let Err(e) = fs::create_dir(&probe) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(fail(format!(
                "cannot create a cgroup under {}: {e} (not delegated to this user?)",
                root.display()
            )));
        }
    }
    let has_kill = probe.join("cgroup.kill").exists();
    let _ = fs::remove_dir(&probe);
    if !has_kill {
        return Err(fail(format!(
            "{} has no cgroup.kill (kernel before 5.14)",
            root.display()
        )));
    }
    Ok(root)
}

/// The subtree browserd owns: the daemon in `<root>/daemon`, a child cgroup per session.
#[derive(Debug)]
pub struct Tree {
    root: PathBuf,
    /// What `<root>/cgroup.subtree_control` enables: what each session cgroup has.
    enabled: Vec<String>,
    /// Wanted controllers that are not enabled, and why.
    refused: Vec<(String, String)>,
}

impl Tree {
    /// Finds a subtree and takes it over: moves every process of `<root>` (the daemon
    /// first) into `<root>/daemon`, then enables the memory and pids controllers where
    /// `<root>/cgroup.controllers` offers them.
    pub fn take(explicit: Option<&Path>) -> Result<Tree, Unavailable> {
        let root = find(explicit)?;
        Tree::take_over(root).map_err(|e| Unavailable(e.to_string()))
    }

    fn take_over(root: PathBuf) -> io::Result<Tree> {
        let root_fd = open_dir(&root)?;
        let leaf = root.join(DAEMON_LEAF);
        match fs::create_dir(&leaf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("mkdir {}: {e}", leaf.display()),
                ))
            }
        }
        let leaf_procs = open_in(open_dir(&leaf)?.as_fd(), "cgroup.procs", OFlag::O_WRONLY)?;
        // "0": the writing process, all its threads.
        nix::unistd::write(&leaf_procs, b"0").map_err(|e| {
            io::Error::other(format!("cannot move browserd into {}: {e}", leaf.display()))
        })?;
        // Anything else living in the root (a process forked meanwhile) follows.
        for _ in 0..100 {
            let left = parse_pids(&read_in(root_fd.as_fd(), "cgroup.procs")?);
            if left.is_empty() {
                break;
            }
            for pid in left {
                match nix::unistd::write(&leaf_procs, pid.to_string().as_bytes()) {
                    Ok(_) | Err(nix::errno::Errno::ESRCH) => {}
                    Err(e) => {
                        return Err(io::Error::other(format!(
                            "cannot move pid {pid} into {}: {e}",
                            leaf.display()
                        )))
                    }
                }
            }
        }
        let offered = parse_words(&read_in(root_fd.as_fd(), "cgroup.controllers")?);
        let mut refused = Vec::new();
        for controller in WANTED {
            if !offered.iter().any(|c| c == controller) {
                refused.push((
                    controller.to_owned(),
                    format!(
                        "the {controller} controller is not available to {} (it offers: {}); every \
                         ancestor must enable it for its children (systemd: Delegate=yes)",
                        root.display(),
                        if offered.is_empty() { "none".to_owned() } else { offered.join(" ") }
                    ),
                ));
                continue;
            }
            let enable = format!("+{controller}");
            if let Err(e) = write_in(root_fd.as_fd(), "cgroup.subtree_control", enable.as_bytes()) {
                refused.push((
                    controller.to_owned(),
                    format!("cannot enable {controller} in {}: {e}", root.display()),
                ));
            }
        }
        let enabled = parse_words(&read_in(root_fd.as_fd(), "cgroup.subtree_control")?);
        Ok(Tree {
            root,
            enabled,
            refused,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The controllers each session cgroup has.
    pub fn enabled(&self) -> &[String] {
        &self.enabled
    }

    /// Whether `memory_max` / `pids_max` can be enforced; the reason when not.
    pub fn check_limits(&self, memory_max: bool, pids_max: bool) -> Result<(), String> {
        for (wanted, controller, field) in [
            (memory_max, "memory", "memory_max"),
            (pids_max, "pids", "pids_max"),
        ] {
            if wanted && !self.enabled.iter().any(|c| c == controller) {
                let why = self
                    .refused
                    .iter()
                    .find(|(c, _)| c == controller)
                    .map_or_else(
                        || format!("the {controller} controller is not enabled"),
                        |(_, why)| why.clone(),
                    );
                return Err(format!("`{field}` cannot be enforced: {why}"));
            }
        }
        Ok(())
    }

    /// Creates a session's cgroup, `<root>/<name>`.
    pub fn create(&self, name: &str) -> io::Result<Cgroup> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') || name == DAEMON_LEAF {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{name}` cannot name a session cgroup"),
            ));
        }
        let path = self.root.join(name);
        fs::create_dir(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", path.display())))?;
        Cgroup::open(&path)
    }
}

// ----- one session's cgroup -----

/// What `memory.events` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryEvents {
    pub oom_kill: u64,
}

/// A session's cgroup, held by an open directory fd (so it keeps working if someone
/// renames its parent).
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    dir: OwnedFd,
    /// Its session is being terminated: nothing will be started in it again, so it can be
    /// removed the moment it is empty (see [`Cgroup::remove_if_empty`]).
    closing: AtomicBool,
    /// Removed already, by [`Cgroup::remove_if_empty`].
    removed: AtomicBool,
    /// Whether the kernel's OOM killer had killed in it, read just before it was removed
    /// (where the memory controller is on): afterwards there is no `memory.events` to read.
    oom_killed_at_removal: OnceLock<bool>,
}

impl Cgroup {
    pub fn open(path: &Path) -> io::Result<Cgroup> {
        Ok(Cgroup {
            dir: open_dir(path)?,
            path: path.to_owned(),
            closing: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            oom_killed_at_removal: OnceLock::new(),
        })
    }

    /// Its session is being terminated (see [`Cgroup::remove_if_empty`]).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Removes it if its session is being terminated and it is empty, and says whether it
    /// did (blocking: `rmdir`). A process leaves its cgroup early in its exit, long before
    /// it is reaped, so the cgroups of a bulk kill go while their processes wait to be
    /// reaped, not after. Nothing reads or kills in a removed cgroup: reads fail (the
    /// cgroup is empty), `cgroup.kill` has nothing to do. `memory` says whether to keep
    /// what the OOM killer did first.
    pub fn remove_if_empty(&self, memory: bool) -> bool {
        if !self.is_closing() || self.removed.load(Ordering::Relaxed) || self.populated() {
            return false;
        }
        if memory {
            let killed = self.memory_events().is_some_and(|e| e.oom_kill > 0);
            let _ = self.oom_killed_at_removal.set(killed);
        }
        // An rmdir that fails leaves it for the session's end (it is tried again there).
        let removed = fs::remove_dir(&self.path).is_ok();
        self.removed.fetch_or(removed, Ordering::Relaxed);
        removed
    }

    /// Whether the OOM killer killed in it, as read before it was removed early; `None` if
    /// it was not (read `memory.events` then).
    pub fn oom_killed_at_removal(&self) -> Option<bool> {
        self.oom_killed_at_removal.get().copied()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory fd, for `CLONE_INTO_CGROUP`.
    pub fn dir_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// `cgroup.procs` opened for writing, for a pre-exec move into the cgroup.
    pub fn procs_for_writing(&self) -> io::Result<OwnedFd> {
        open_in(self.dir.as_fd(), "cgroup.procs", OFlag::O_WRONLY)
    }

    /// The processes in it (processes, not threads: those are `cgroup.threads`).
    pub fn procs(&self) -> io::Result<Vec<i32>> {
        Ok(parse_pids(&read_in(self.dir.as_fd(), "cgroup.procs")?))
    }

    /// Whether any process is in it (`populated` of `cgroup.events`; an exited process that
    /// is not reaped yet does not count). A removed cgroup is empty.
    pub fn populated(&self) -> bool {
        let events = match read_in(self.dir.as_fd(), "cgroup.events") {
            Ok(events) => events,
            Err(_) => return false,
        };
        String::from_utf8_lossy(&events)
            .lines()
            .any(|line| line.trim() == "populated 1")
    }

    /// SIGKILLs every process in it at once, forks in flight included. A removed cgroup
    /// has nobody left to kill.
    pub fn kill(&self) -> io::Result<()> {
        if self.removed.load(Ordering::Relaxed) {
            return Ok(());
        }
        write_in(self.dir.as_fd(), "cgroup.kill", b"1")
    }

    /// User + system CPU time of every process it had, exited ones included.
    pub fn cpu_seconds(&self) -> io::Result<f64> {
        let stat = parse_keyed(&read_in(self.dir.as_fd(), "cpu.stat")?);
        Ok(stat.get("usage_usec").copied().unwrap_or(0) as f64 / 1e6)
    }

    /// `memory.current`, where the memory controller is enabled.
    pub fn memory_current(&self) -> Option<u64> {
        let text = read_in(self.dir.as_fd(), "memory.current").ok()?;
        String::from_utf8_lossy(&text).trim().parse().ok()
    }

    /// `memory.events`, where the memory controller is enabled.
    pub fn memory_events(&self) -> Option<MemoryEvents> {
        let events = parse_keyed(&read_in(self.dir.as_fd(), "memory.events").ok()?);
        Some(MemoryEvents {
            oom_kill: events.get("oom_kill").copied().unwrap_or(0),
        })
    }

    /// Caps its memory; past it the kernel's OOM killer kills the whole session (the cgroup
    /// is one OOM group).
    pub fn set_memory_max(&self, bytes: u64) -> io::Result<()> {
        write_in(self.dir.as_fd(), "memory.max", bytes.to_string().as_bytes())?;
        write_in(self.dir.as_fd(), "memory.oom.group", b"1")
    }

    /// Caps its number of tasks (processes and threads): a fork beyond fails.
    pub fn set_pids_max(&self, max: u64) -> io::Result<()> {
        write_in(self.dir.as_fd(), "pids.max", max.to_string().as_bytes())
    }

    /// Removes it (it must be empty; zombies do not count).
    pub fn remove(&self) -> io::Result<()> {
        if self.removed.load(Ordering::Relaxed) {
            return Ok(());
        }
        match fs::remove_dir(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("rmdir {}: {e}", self.path.display()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_names_cgroup2_mounts_with_escapes_and_bind_roots() {
        let text = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate
31 25 0:27 / /sys/fs/cgroup/memory rw shared:5 - cgroup cgroup rw,memory
40 30 0:26 /payload /opt/with\\040space ro,relatime - cgroup2 cgroup2 rw";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert!(!mounts[0].read_only);
        assert_eq!(mounts[1].point, PathBuf::from("/opt/with space"));
        assert_eq!(mounts[1].root, "/payload");
        assert!(mounts[1].read_only);
        assert_eq!(
            dir_of(&mounts[1], "/payload/x/y"),
            Some(PathBuf::from("/opt/with space/x/y"))
        );
        assert_eq!(dir_of(&mounts[1], "/elsewhere"), None);
    }

    #[test]
    fn the_own_cgroup_is_the_v2_line() {
        let text = "12:memory:/a\n0::/system.slice/browserd.service/daemon\n";
        assert_eq!(
            parse_own_cgroup(text).as_deref(),
            Some("/system.slice/browserd.service/daemon")
        );
        assert_eq!(parse_own_cgroup("4:pids:/\n"), None);
        assert_eq!(
            parse_own_cgroup("0::/browserd/s-1 (deleted)\n").as_deref(),
            Some("/browserd/s-1")
        );
    }

    #[test]
    fn a_process_names_its_cgroup() {
        let own = parse_own_cgroup(&fs::read_to_string("/proc/self/cgroup").unwrap());
        let leaf = leaf_of(std::process::id() as i32).unwrap();
        assert_eq!(
            leaf,
            own.map(|path| path.rsplit('/').next().unwrap().to_owned())
        );
        assert!(leaf_of(i32::MAX).is_err(), "no such process");
    }

    #[test]
    fn keyed_files_parse() {
        let stat = parse_keyed(b"usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n");
        assert_eq!(stat["usage_usec"], 1_500_000);
        assert_eq!(parse_pids(b"12\n34\n\n"), vec![12, 34]);
        assert_eq!(parse_words(b"memory pids\n"), vec!["memory", "pids"]);
    }
}
