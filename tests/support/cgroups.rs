//! A private cgroup v2 subtree for one test, given to a daemon as `--cgroup-root`. Dropping
//! it kills whatever is still inside (`cgroup.kill`), waits for every cgroup below it to
//! empty, and removes them all, so no test leaves a cgroup behind, even when it fails.

use crate::wait::POLL;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the cleanup waits for a killed cgroup to empty.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PrivateCgroup {
    path: PathBuf,
    /// The path below the hierarchy's root, as `/proc/PID/cgroup` shows it.
    relative: String,
}

impl PrivateCgroup {
    /// Creates `<cgroup2 mount>/browserd-test-<pid>-<name>`; `Err` says why a test cannot
    /// have one here (no cgroup2 mount, not writable), to print before skipping.
    pub fn create(name: &str) -> Result<PrivateCgroup, String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let mount = mountinfo
            .lines()
            .find_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let fields: Vec<&str> = left.split(' ').collect();
                let point = fields.get(4)?;
                (right.starts_with("cgroup2 ") && fields.get(3) == Some(&"/"))
                    .then(|| PathBuf::from(point))
            })
            .ok_or("no cgroup2 hierarchy is mounted at its root here")?;
        let leaf = format!("browserd-test-{}-{name}", std::process::id());
        let path = mount.join(&leaf);
        fs::create_dir(&path)
            .map_err(|e| format!("cannot create a cgroup at {}: {e}", path.display()))?;
        Ok(PrivateCgroup {
            path,
            relative: format!("/{leaf}"),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup (as `/proc/PID/cgroup` names it) of a session `id` of a daemon given this
    /// root.
    pub fn session_cgroup(&self, id: &str) -> String {
        format!("{}/{id}", self.relative)
    }

    /// The session cgroups still there (not counting the daemon's own leaf).
    pub fn session_dirs(&self) -> Vec<String> {
        fs::read_dir(&self.path)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name != "daemon")
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The controllers a session cgroup below this root can have.
    pub fn offered_controllers(&self) -> Vec<String> {
        fs::read_to_string(self.path.join("cgroup.controllers"))
            .map(|text| text.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

/// The cgroup v2 path of `pid`, as `/proc/PID/cgroup`'s `0::` line says.
pub fn cgroup_of(pid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_owned)
}

/// Every process in `/proc` whose cgroup is one of `cgroups` (as `/proc/PID/cgroup` names
/// them), with it. A process keeps its cgroup until it is reaped: exiting ones and zombies
/// are found too (a removed cgroup's name ends in ` (deleted)`, left out here).
pub fn processes_in(cgroups: &std::collections::HashSet<String>) -> Vec<(i32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let cgroup = cgroup_of(pid)?;
            let cgroup = cgroup.trim_end_matches(" (deleted)");
            cgroups.contains(cgroup).then(|| (pid, cgroup.to_owned()))
        })
        .collect()
}

/// Kills everything in `dir` and below, waits for it to empty, and removes it, deepest
/// first.
pub fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    let start = Instant::now();
    while fs::read_to_string(dir.join("cgroup.events")).is_ok_and(|e| e.contains("populated 1")) {
        if start.elapsed() > EMPTY_TIMEOUT {
            eprintln!("cgroup {} did not empty after cgroup.kill", dir.display());
            break;
        }
        std::thread::sleep(POLL);
    }
    if let Err(e) = fs::remove_dir(dir) {
        eprintln!("cannot remove the test cgroup {}: {e}", dir.display());
    }
}

impl Drop for PrivateCgroup {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}
