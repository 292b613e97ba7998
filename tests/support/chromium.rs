//! Real Chromium sessions: a daemon for browser tests ([`Browsers`]) and what `/proc` shows
//! of its browsers. Chromium rewrites its argv/environ area for process titles, so most of
//! its processes no longer show the session marker: a session's processes are those carrying
//! its marker or its profile path on their command line, and all their descendants. Also:
//! the switch that skips browser tests on a machine without Chromium, and the lock that runs
//! them one at a time.

use crate::cdp::Cdp;
use crate::procfs::{self, ProcId, ProcInfo};
use crate::{wait_for, DaemonBuilder, DaemonGuard};
use browserd_proto::{Launch, SessionId, SessionInfo, SessionState, SessionType};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Setting this to `1` skips every test that runs a real Chromium (with a message) instead
/// of failing them on a machine without Chromium.
pub const SKIP_ENV: &str = "BROWSERD_TEST_SKIP_BROWSER";

/// How Chromium's temp files and dirs are named (`org.chromium.Chromium.XXXXXX` holds the
/// process singleton's socket; hidden `.org.chromium.Chromium.XXXXXX` are temp files).
pub const TEMP_PREFIXES: [&str; 2] = ["org.chromium.Chromium.", ".org.chromium.Chromium."];

/// Whether browser tests are to be skipped; says so if they are.
pub fn skipped() -> bool {
    let skip = std::env::var(SKIP_ENV).is_ok_and(|v| v == "1");
    if skip {
        eprintln!("skipped: {SKIP_ENV}=1 (this test runs a real Chromium)");
    }
    skip
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Held by a test while it runs browsers: a Chromium is ~9 processes and ~150 MiB, and
/// several tests' browsers starting at once on a 2-core CI machine make launches and kills
/// slow enough to hit timeouts.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    // A test that failed while holding the lock poisons it; the next one may still run.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The live processes of a browser session now: those carrying its marker or its profile
/// path, and all their descendants. Thread-group leaders only: `/proc` lists no threads.
pub fn session_processes(session: &SessionInfo) -> Vec<ProcInfo> {
    let profile = session.profile_dir.clone().unwrap_or_default();
    let all = procfs::all_processes();
    let mut members: BTreeSet<i32> = all
        .iter()
        .filter(|p| {
            p.session.as_deref() == Some(session.id.as_str())
                || (!profile.is_empty() && cmdline_mentions(p.pid, &profile))
        })
        .map(|p| p.pid)
        .collect();
    members.extend(descendants(&all, &members));
    all.into_iter()
        .filter(|p| members.contains(&p.pid) && !p.is_zombie())
        .collect()
}

/// Whether the process's command line (Chromium's rewritten title included) contains
/// `needle`.
pub fn cmdline_mentions(pid: i32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    })
}

/// The pids of every descendant of `roots` (roots excluded).
pub fn descendants(all: &[ProcInfo], roots: &BTreeSet<i32>) -> BTreeSet<i32> {
    let mut found = BTreeSet::new();
    let mut frontier: Vec<i32> = roots.iter().copied().collect();
    while let Some(parent) = frontier.pop() {
        for child in all.iter().filter(|p| p.ppid == parent) {
            if !roots.contains(&child.pid) && found.insert(child.pid) {
                frontier.push(child.pid);
            }
        }
    }
    found
}

/// Chromium's temp files and dirs directly in `/tmp`.
pub fn temp_dirs() -> BTreeSet<PathBuf> {
    std::fs::read_dir("/tmp")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    TEMP_PREFIXES.iter().any(|p| name.starts_with(p))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// How long a page may take to load, or a browser's tree to appear.
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a browser's process tree must stay the same to count as fully started.
pub const SETTLE: Duration = Duration::from_millis(300);

/// A daemon for browser tests, and every Chromium process it has been seen to run. Every
/// process seen is remembered (pid + start time), so a survivor is caught even if it lost
/// its marker, its profile path and its parent.
pub struct Browsers {
    pub d: DaemonGuard,
    /// Every process observed in each session, zombies excluded.
    seen: Mutex<BTreeMap<SessionId, BTreeSet<ProcId>>>,
    /// Every process observed below the daemon (warm browsers of the pool included).
    below: Mutex<BTreeSet<ProcId>>,
    /// Chromium temp dirs in `/tmp` before the test: none may be added.
    temp_before: BTreeSet<PathBuf>,
    /// Dropped last, after the daemon has stopped.
    _serial: MutexGuard<'static, ()>,
}

impl Browsers {
    /// A default daemon, once Chromium is known to be installed; `None` if the tests are
    /// skipped.
    #[track_caller]
    pub fn start() -> Option<Browsers> {
        let b = Browsers::start_with(DaemonGuard::builder())?;
        b.require_chromium();
        Some(b)
    }

    /// A daemon from `builder`, without checking for Chromium.
    #[track_caller]
    pub fn start_with(builder: DaemonBuilder) -> Option<Browsers> {
        if skipped() {
            return None;
        }
        let serial = one_at_a_time();
        Some(Browsers {
            temp_before: temp_dirs(),
            d: builder.start(),
            seen: Mutex::default(),
            below: Mutex::default(),
            _serial: serial,
        })
    }

    #[track_caller]
    pub fn require_chromium(&self) {
        let browser = self.d.status().browser.unwrap_or_else(|| {
            panic!("`status` reports no `browser` field, so Chromium support cannot be checked")
        });
        if let Some(error) = browser.error {
            panic!(
                "Chromium is not installed, but these tests need it: browserd says `{error}`. \
                 Install Debian's chromium (`apt-get install chromium`; CI installs it), or set \
                 {SKIP_ENV}=1 to skip the browser tests explicitly."
            );
        }
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.d.state_dir().join("sessions")
    }

    /// Launches a browser session and checks it is reported ready.
    #[track_caller]
    pub fn launch(&self, launch: Launch) -> SessionInfo {
        let what = format!("{launch:?}");
        let session = self
            .d
            .launch(Launch {
                session_type: Some(SessionType::Browser),
                ..launch
            })
            .unwrap_or_else(|e| panic!("launch of a browser ({what}) failed: {e}"));
        assert_eq!(session.state, SessionState::Running, "{session:?}");
        assert!(
            session
                .ws_endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("ws://127.0.0.1:")),
            "a running browser reports its DevTools endpoint: {session:?}"
        );
        let profile = session.profile_dir.as_deref().map(Path::new);
        let expected = self
            .sessions_dir()
            .join(session.id.as_str())
            .join("profile");
        assert_eq!(
            profile,
            Some(expected.as_path()),
            "the profile dir is the daemon's own: {session:?}"
        );
        assert!(expected.is_dir(), "{} exists", expected.display());
        self.processes(&session);
        session
    }

    /// Launches a browser with the daemon's defaults.
    #[track_caller]
    pub fn launch_default(&self) -> SessionInfo {
        self.launch(Launch::default())
    }

    /// The session's live processes now (and remembers them): those carrying its marker or
    /// its profile path, and all their descendants.
    pub fn processes(&self, session: &SessionInfo) -> Vec<ProcInfo> {
        let procs = session_processes(session);
        lock(&self.seen)
            .entry(session.id.clone())
            .or_default()
            .extend(procs.iter().map(ProcInfo::id));
        procs
    }

    /// Waits until the session has at least `count` processes, and returns them.
    #[track_caller]
    pub fn wait_processes(&self, session: &SessionInfo, count: usize) -> Vec<ProcInfo> {
        wait_for(
            BROWSER_TIMEOUT,
            format!("session {} to have {count} processes", session.id),
            || Some(self.processes(session)).filter(|p| p.len() >= count),
        )
    }

    /// Every live process below the daemon now (sessions' and warm browsers' alike), and
    /// remembers them for the leak guard.
    pub fn daemon_tree(&self) -> Vec<ProcInfo> {
        let all = procfs::all_processes();
        let below = descendants(&all, &BTreeSet::from([self.d.pid()]));
        let procs: Vec<ProcInfo> = all
            .into_iter()
            .filter(|p| below.contains(&p.pid) && !p.is_zombie())
            .collect();
        lock(&self.below).extend(procs.iter().map(ProcInfo::id));
        procs
    }

    /// The processes ever seen below the daemon that still exist (zombies included).
    pub fn remaining_below(&self) -> Vec<ProcInfo> {
        lock(&self.below)
            .iter()
            .filter_map(ProcId::current)
            .collect()
    }

    /// Asserts that Chromium put its temp dir (the process singleton's socket, which the
    /// profile links to) in the session's TMPDIR, not in `/tmp`.
    #[track_caller]
    pub fn assert_temp_in_session_tmpdir(&self, session: &SessionInfo) {
        let tmp = self.sessions_dir().join(session.id.as_str()).join("tmp");
        let profile = Path::new(session.profile_dir.as_deref().expect("a profile dir"));
        let link = profile.join("SingletonSocket");
        let socket = wait_for(
            BROWSER_TIMEOUT,
            format!("the process singleton link {}", link.display()),
            || std::fs::read_link(&link).ok(),
        );
        assert!(
            socket.starts_with(&tmp),
            "Chromium's temp dir {} is not in the session's TMPDIR {}",
            socket.display(),
            tmp.display()
        );
    }

    /// Waits until the session's process tree has at least 3 processes and stopped
    /// changing for [`SETTLE`] (Chromium starts its helpers after announcing its endpoint),
    /// and returns it.
    #[track_caller]
    pub fn wait_settled(&self, session: &SessionInfo) -> Vec<ProcInfo> {
        let mut last: (BTreeSet<ProcId>, Instant) = (BTreeSet::new(), Instant::now());
        wait_for(
            BROWSER_TIMEOUT,
            format!("the process tree of session {} to settle", session.id),
            || {
                let procs = self.processes(session);
                let ids: BTreeSet<ProcId> = procs.iter().map(ProcInfo::id).collect();
                if ids != last.0 {
                    last = (ids, Instant::now());
                    return None;
                }
                (procs.len() >= 3 && last.1.elapsed() >= SETTLE).then_some(procs)
            },
        )
    }

    /// The processes of the session that still exist: found afresh, or seen before and
    /// still the same process (zombies included: gone means reaped).
    pub fn remaining(&self, session: &SessionInfo) -> Vec<ProcInfo> {
        let mut left = self.processes(session);
        for id in lock(&self.seen).get(&session.id).into_iter().flatten() {
            if let Some(p) = id.current() {
                if !left.iter().any(|l| l.pid == p.pid) {
                    left.push(p);
                }
            }
        }
        left
    }

    /// Asserts that nothing of the session is left: no process, no dir.
    #[track_caller]
    pub fn assert_gone(&self, session: &SessionInfo) {
        let left = self.remaining(session);
        assert!(
            left.is_empty(),
            "session {} still has processes: {left:#?}",
            session.id
        );
        self.d.assert_session_gone(&session.id);
        let root = self.sessions_dir().join(session.id.as_str());
        assert!(
            !root.exists(),
            "the session dir {} (profile and TMPDIR) is still there",
            root.display()
        );
        let listed = self.d.session(&session.id);
        assert_eq!(listed.state, SessionState::Exited, "{listed:?}");
    }

    /// Asserts that the daemon runs nothing, holds no session dir, and that no Chromium temp
    /// dir was added to `/tmp` (sessions get their own TMPDIR).
    #[track_caller]
    pub fn assert_clean(&self) {
        self.d.assert_all_sessions_gone();
        let all = procfs::all_processes();
        let left: Vec<&ProcInfo> = {
            let below = descendants(&all, &BTreeSet::from([self.d.pid()]));
            all.iter().filter(|p| below.contains(&p.pid)).collect()
        };
        assert!(
            left.is_empty(),
            "processes still descend from the daemon: {left:#?}"
        );
        let dirs: Vec<_> = std::fs::read_dir(self.sessions_dir())
            .map(|entries| entries.filter_map(|e| Some(e.ok()?.file_name())).collect())
            .unwrap_or_default();
        assert!(dirs.is_empty(), "session dirs left behind: {dirs:?}");
        let added: Vec<_> = temp_dirs().difference(&self.temp_before).cloned().collect();
        assert!(
            added.is_empty(),
            "Chromium temp dirs appeared in /tmp during the test: a session ignored its TMPDIR \
             (or a Chromium outside these tests ran meanwhile): {added:?}"
        );
    }
}

impl Drop for Browsers {
    /// A leak guard for what the harness's own cannot see: Chromium processes that lost
    /// their marker.
    fn drop(&mut self) {
        let seen = lock(&self.seen);
        let below = lock(&self.below);
        for id in seen.values().flatten().chain(below.iter()) {
            if id.current().is_some_and(|p| !p.is_zombie()) {
                eprintln!("leak guard: SIGKILL to Chromium process {}", id.pid);
                procfs::signal_exact(*id, libc::SIGKILL);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn cdp(session: &SessionInfo) -> Cdp {
    let endpoint = session
        .ws_endpoint
        .as_deref()
        .expect("a browser's endpoint");
    Cdp::connect(endpoint).unwrap_or_else(|e| panic!("CDP connect to {endpoint}: {e}"))
}

pub fn in_workspace(workspace: &str) -> Launch {
    Launch {
        workspace: Some(workspace.parse().expect("a valid workspace")),
        ..Launch::default()
    }
}
