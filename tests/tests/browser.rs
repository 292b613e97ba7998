//! Real Chromium sessions, end to end: the daemon launches Debian's `chromium`, the test
//! drives it over CDP like a user would, and every kill must leave nothing behind — no
//! process (in the group, out of it, or reparented to the daemon), no profile dir, no
//! TMPDIR, no Chromium temp dir in `/tmp`.
//!
//! Chromium rewrites its argv/environ area for process titles, so most of its processes
//! no longer show the session marker: a session's processes are found by the marker, by the
//! profile path on their command line, and by descent from those, and every process seen
//! is remembered (pid + start time) so a survivor is caught even if it lost all three.
//!
//! These tests need Chromium (CI installs Debian's `chromium`); they fail without it unless
//! `BROWSERD_TEST_SKIP_BROWSER=1` says to skip them. Browsers are heavy, so the tests run one
//! at a time.

use browserd_proto::{
    BulkTerminate, ErrorCode, ExitStatus, Launch, SessionId, SessionInfo, SessionState,
    SessionType, SessionsFilter,
};
use browserd_tests::cdp::{Cdp, CdpError, PageServer};
use browserd_tests::procfs::{self, ProcId, ProcInfo};
use browserd_tests::{assert_terminated_exactly, wait_for, DaemonBuilder, DaemonGuard};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Setting this to `1` skips every test here (with a message) instead of failing them on a
/// machine without Chromium.
const SKIP_ENV: &str = "BROWSERD_TEST_SKIP_BROWSER";
/// The title of the test page.
const TITLE: &str = "browserd-test";
/// How long a page may take to load, or a browser's tree to appear.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a browser's process tree must stay the same to count as fully started.
const SETTLE: Duration = Duration::from_millis(300);
/// How Chromium's temp files and dirs are named (`org.chromium.Chromium.XXXXXX` holds the
/// process singleton's socket; hidden `.org.chromium.Chromium.XXXXXX` are temp files).
const CHROMIUM_TEMP_PREFIXES: [&str; 2] = ["org.chromium.Chromium.", ".org.chromium.Chromium."];

/// One test at a time: a Chromium is ~9 processes and ~150 MiB, and several tests'
/// browsers starting at once on a 2-core CI machine make launches and kills slow enough to
/// hit timeouts.
static SERIAL: Mutex<()> = Mutex::new(());

/// A daemon for browser tests, and every Chromium process it has been seen to run.
struct Browsers {
    d: DaemonGuard,
    /// Every process observed in each session, zombies excluded.
    seen: Mutex<BTreeMap<SessionId, BTreeSet<ProcId>>>,
    /// Chromium temp dirs in `/tmp` before the test: none may be added.
    temp_before: BTreeSet<PathBuf>,
    /// Dropped last, after the daemon has stopped.
    _serial: MutexGuard<'static, ()>,
}

impl Browsers {
    /// A default daemon, once Chromium is known to be installed; `None` if the tests are
    /// skipped.
    #[track_caller]
    fn start() -> Option<Browsers> {
        let b = Browsers::start_with(DaemonGuard::builder())?;
        b.require_chromium();
        Some(b)
    }

    /// A daemon from `builder`, without checking for Chromium.
    #[track_caller]
    fn start_with(builder: DaemonBuilder) -> Option<Browsers> {
        if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
            eprintln!("skipped: {SKIP_ENV}=1 (these tests run a real Chromium)");
            return None;
        }
        // A test that failed while holding the lock poisons it; the next one may still run.
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        Some(Browsers {
            temp_before: chromium_temp_dirs(),
            d: builder.start(),
            seen: Mutex::default(),
            _serial: serial,
        })
    }

    #[track_caller]
    fn require_chromium(&self) {
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

    fn sessions_dir(&self) -> PathBuf {
        self.d.dir().join("state").join("sessions")
    }

    /// Launches a browser session and checks it is reported ready.
    #[track_caller]
    fn launch(&self, launch: Launch) -> SessionInfo {
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
    fn launch_default(&self) -> SessionInfo {
        self.launch(Launch::default())
    }

    /// The session's live processes now (and remembers them): those carrying its marker or
    /// its profile path, and all their descendants.
    fn processes(&self, session: &SessionInfo) -> Vec<ProcInfo> {
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
        let procs: Vec<ProcInfo> = all
            .into_iter()
            .filter(|p| members.contains(&p.pid) && !p.is_zombie())
            .collect();
        lock(&self.seen)
            .entry(session.id.clone())
            .or_default()
            .extend(procs.iter().map(ProcInfo::id));
        procs
    }

    /// Waits until the session has at least `count` processes, and returns them.
    #[track_caller]
    fn wait_processes(&self, session: &SessionInfo, count: usize) -> Vec<ProcInfo> {
        wait_for(
            BROWSER_TIMEOUT,
            format!("session {} to have {count} processes", session.id),
            || Some(self.processes(session)).filter(|p| p.len() >= count),
        )
    }

    /// Asserts that Chromium put its temp dir (the process singleton's socket, which the
    /// profile links to) in the session's TMPDIR, not in `/tmp`.
    #[track_caller]
    fn assert_temp_in_session_tmpdir(&self, session: &SessionInfo) {
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
    fn wait_settled(&self, session: &SessionInfo) -> Vec<ProcInfo> {
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
    fn remaining(&self, session: &SessionInfo) -> Vec<ProcInfo> {
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
    fn assert_gone(&self, session: &SessionInfo) {
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
    fn assert_clean(&self) {
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
        let added: Vec<_> = chromium_temp_dirs()
            .difference(&self.temp_before)
            .cloned()
            .collect();
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
        for id in seen.values().flatten() {
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

/// Whether the process's command line (Chromium's rewritten title included) contains
/// `needle`.
fn cmdline_mentions(pid: i32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    })
}

/// The pids of every descendant of `roots` (roots excluded).
fn descendants(all: &[ProcInfo], roots: &BTreeSet<i32>) -> BTreeSet<i32> {
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
fn chromium_temp_dirs() -> BTreeSet<PathBuf> {
    std::fs::read_dir("/tmp")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    CHROMIUM_TEMP_PREFIXES.iter().any(|p| name.starts_with(p))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn cdp(session: &SessionInfo) -> Cdp {
    let endpoint = session
        .ws_endpoint
        .as_deref()
        .expect("a browser's endpoint");
    Cdp::connect(endpoint).unwrap_or_else(|e| panic!("CDP connect to {endpoint}: {e}"))
}

fn in_workspace(workspace: &str) -> Launch {
    Launch {
        workspace: Some(workspace.parse().expect("a valid workspace")),
        ..Launch::default()
    }
}

#[test]
fn a_browser_serves_cdp_loads_a_page_and_closes_politely_when_killed() {
    let Some(b) = Browsers::start() else { return };
    let server = PageServer::start(TITLE);
    let session = b.launch_default();

    let mut cdp = cdp(&session);
    let product = cdp.product().expect("Browser.getVersion");
    assert!(
        product.contains("Chrome") || product.contains("Chromium"),
        "Browser.getVersion product: {product}"
    );
    let page = cdp.open_page(&server.url()).expect("open the test page");
    cdp.wait_title(&page, TITLE, BROWSER_TIMEOUT);
    b.assert_temp_in_session_tmpdir(&session);
    b.wait_settled(&session);

    let result = b.d.kill(session.id.as_str(), false, None);

    assert_terminated_exactly(&result, &[&session.id]);
    b.assert_gone(&session);
    assert_eq!(
        b.d.session(&session.id).exit,
        Some(ExitStatus::Code(0)),
        "Browser.close makes Chromium exit 0"
    );
    b.assert_clean();
}

#[test]
fn a_forced_kill_without_grace_leaves_nothing_of_a_browser() {
    let Some(b) = Browsers::start() else { return };
    let session = b.launch_default();
    b.wait_settled(&session);

    let result = b.d.kill(session.id.as_str(), true, Some(0));

    assert_terminated_exactly(&result, &[&session.id]);
    b.assert_gone(&session);
    b.assert_clean();
}

#[test]
fn a_browser_whose_page_busy_loops_is_still_killed_completely() {
    let Some(b) = Browsers::start() else { return };
    let session = b.launch_default();
    let mut cdp = cdp(&session);
    let page = cdp.open_page("about:blank").expect("open a blank page");
    assert_eq!(cdp.evaluate(&page, "1 + 1").expect("evaluate"), json!(2));
    cdp.send(
        Some(&page.session_id),
        "Runtime.evaluate",
        json!({ "expression": "while (true) {}" }),
    )
    .expect("send the busy loop");
    let probe = cdp
        .send(
            Some(&page.session_id),
            "Runtime.evaluate",
            json!({ "expression": "1" }),
        )
        .expect("send a probe");
    assert!(
        matches!(
            cdp.answer(probe, Duration::from_millis(500)),
            Err(CdpError::Timeout)
        ),
        "the page should be stuck in its loop"
    );
    b.processes(&session);

    let result = b.d.kill(session.id.as_str(), false, None);

    assert_terminated_exactly(&result, &[&session.id]);
    b.assert_gone(&session);
    b.assert_clean();
}

#[test]
fn crash_handlers_that_leave_the_group_die_with_their_browser() {
    let Some(b) = Browsers::start() else { return };
    let session = b.launch(Launch {
        args: vec!["--enable-crash-reporter".into()],
        ..Launch::default()
    });
    let root = b.sessions_dir().join(session.id.as_str());
    let handlers = wait_for(
        BROWSER_TIMEOUT,
        "chrome_crashpad_handler processes in the session",
        || {
            let handlers: Vec<ProcInfo> = b
                .processes(&session)
                .into_iter()
                .filter(|p| p.comm.starts_with("chrome_crashpad"))
                .collect();
            (!handlers.is_empty()).then_some(handlers)
        },
    );
    for handler in &handlers {
        assert_eq!(
            handler.session.as_deref(),
            Some(session.id.as_str()),
            "a crash handler carries the session marker: {handler:?}"
        );
        assert_ne!(
            handler.pgid, session.pgid,
            "the crash handler left the browser's group: {handler:?}"
        );
        assert_eq!(
            handler.ppid,
            b.d.pid(),
            "the crash handler was reparented to the daemon: {handler:?}"
        );
        let database = format!("--database={}/", root.display());
        assert!(
            cmdline_mentions(handler.pid, &database),
            "the crash handler keeps its database in the session dir ({database}…), \
             not in the daemon user's home: {handler:?}"
        );
    }

    let result = b.d.kill(session.id.as_str(), false, None);

    assert_terminated_exactly(&result, &[&session.id]);
    for handler in &handlers {
        assert!(
            handler.id().current().is_none(),
            "crash handler {} survived",
            handler.pid
        );
    }
    b.assert_gone(&session);
    b.assert_clean();
}

#[test]
fn a_browser_that_exits_at_start_fails_the_launch_with_its_stderr() {
    let Some(b) = Browsers::start() else { return };
    // Without the pipes it asks for, Chromium exits at once and says why on stderr.
    let error =
        b.d.launch(Launch {
            args: vec!["--remote-debugging-pipe".into()],
            ..Launch::default()
        })
        .expect_err("Chromium cannot start without its debugging pipes");

    assert_eq!(error.code, ErrorCode::LaunchFailed, "{error}");
    assert!(
        error
            .message
            .contains("Remote debugging pipe file descriptors are not open"),
        "the error carries Chromium's stderr: {error}"
    );
    assert_failed_launch_left_nothing(&b);
}

#[test]
fn a_browser_that_never_announces_its_endpoint_times_out_and_is_cleaned_up() {
    let builder = DaemonGuard::builder().flag("--launch-timeout", "1s");
    let Some(b) = Browsers::start_with(builder) else {
        return;
    };
    b.require_chromium();
    // An invalid port makes Chromium run without ever opening its DevTools server.
    let start = Instant::now();
    let error =
        b.d.launch(Launch {
            args: vec!["--remote-debugging-port=-5".into()],
            ..Launch::default()
        })
        .expect_err("no endpoint is ever announced");

    assert_eq!(error.code, ErrorCode::LaunchFailed, "{error}");
    assert!(
        error.message.contains("no DevTools endpoint within 1s"),
        "{error}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the launch timeout is honoured (took {:?})",
        start.elapsed()
    );
    assert_failed_launch_left_nothing(&b);
}

#[test]
fn a_missing_browser_fails_the_launch_and_status_says_why() {
    let missing = "/nonexistent/chromium";
    let Some(b) = Browsers::start_with(DaemonGuard::builder().flag("--browser", missing)) else {
        return;
    };
    let browser = b.d.status().browser.expect("status reports the browser");
    assert_eq!(browser.path, None, "{browser:?}");
    let status_error = browser.error.expect("status says why there is no browser");
    assert!(status_error.contains(missing), "{status_error}");

    let error =
        b.d.launch(Launch::default())
            .expect_err("there is no browser to launch");

    assert_eq!(error.code, ErrorCode::LaunchFailed, "{error}");
    assert!(error.message.contains(missing), "{error}");
    assert_failed_launch_left_nothing(&b);
}

/// After a failed launch: no live session, no session dir, no process.
#[track_caller]
fn assert_failed_launch_left_nothing(b: &Browsers) {
    let live: Vec<SessionInfo> =
        b.d.sessions(SessionsFilter::default())
            .into_iter()
            .filter(|s| s.state != SessionState::Exited)
            .collect();
    assert!(live.is_empty(), "a failed launch left sessions: {live:#?}");
    for session in b.d.sessions(SessionsFilter::default()) {
        b.assert_gone(&session);
    }
    b.assert_clean();
}

#[test]
fn bulk_terminate_of_a_workspace_kills_its_five_browsers_at_once_and_spares_others() {
    let Some(b) = Browsers::start() else { return };
    let doomed: Vec<SessionInfo> = (0..5).map(|_| b.launch(in_workspace("w5"))).collect();
    let survivor = b.launch(in_workspace("w6"));
    for session in doomed.iter().chain([&survivor]) {
        b.wait_processes(session, 3);
    }

    let result = b.d.bulk(BulkTerminate {
        workspaces: Some(vec!["w5".parse().unwrap()]),
        ..Default::default()
    });

    let ids: Vec<&SessionId> = doomed.iter().map(|s| &s.id).collect();
    assert_terminated_exactly(&result, &ids);
    for session in &doomed {
        b.assert_gone(session);
    }
    assert_eq!(b.d.session(&survivor.id).state, SessionState::Running);
    let product = cdp(&survivor)
        .product()
        .expect("the survivor still answers");
    assert!(!product.is_empty());

    assert_terminated_exactly(
        &b.d.kill(survivor.id.as_str(), false, None),
        &[&survivor.id],
    );
    b.assert_gone(&survivor);
    b.assert_clean();
}

#[test]
fn the_listing_of_a_live_browser_shows_its_endpoint_profile_and_resources() {
    let Some(b) = Browsers::start() else { return };
    let session = b.launch_default();

    let listed = wait_for(
        BROWSER_TIMEOUT,
        "the listing to count at least 3 processes",
        || Some(b.d.session(&session.id)).filter(|s| s.processes.is_some_and(|n| n >= 3)),
    );

    assert_eq!(listed.state, SessionState::Running);
    assert_eq!(listed.ws_endpoint, session.ws_endpoint);
    assert_eq!(listed.profile_dir, session.profile_dir);
    assert!(
        listed.memory_bytes.is_some_and(|bytes| bytes > 0),
        "memory_bytes of a live browser: {listed:?}"
    );
    b.processes(&session);
    assert_terminated_exactly(&b.d.kill(session.id.as_str(), false, None), &[&session.id]);
    b.assert_gone(&session);
    b.assert_clean();
}
