//! The warm pool with real Chromium (`--warm N`): default browser launches are handed a
//! browser launched ahead, whose DevTools endpoint already answers; the pool refills in the
//! background; warm browsers are no sessions (never listed, never selected by a kill), each
//! has a profile of its own that no second session ever gets, one killed from outside is
//! replaced, a reload keeps them, and a shutdown leaves nothing of them.
//!
//! Like every browser test these need Chromium (`BROWSERD_TEST_SKIP_BROWSER=1` skips them)
//! and run one at a time.

use browserd_proto::{
    BulkTerminate, ErrorCode, Launch, PoolStatus, ReloadResult, Request, SessionState,
    SessionsFilter,
};
use browserd_tests::cdp::Cdp;
use browserd_tests::chromium::{cdp, cmdline_mentions, Browsers, BROWSER_TIMEOUT};
use browserd_tests::procfs::{self, ProcId, ProcInfo};
use browserd_tests::{assert_terminated_exactly, failure_for, wait_for, wait_until, DaemonGuard};
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What only a browser's own process has on its command line (its helpers show other
/// flags), telling a warm browser's leader from a helper re-parented to the daemon.
const BROWSER_FLAG: &str = "--remote-debugging-port=0";
/// How long a warm browser's process tree must stay the same to count as settled.
const TREE_SETTLE: Duration = Duration::from_secs(1);

fn with_pool(warm: u32) -> Option<Browsers> {
    let b = Browsers::start_with(DaemonGuard::builder().flag("--warm", warm).grace("2s"))?;
    b.require_chromium();
    Some(b)
}

fn pool(b: &Browsers) -> PoolStatus {
    b.d.status().pool.expect("status reports the pool")
}

/// A warm browser's leader, as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Warm {
    leader: ProcId,
    /// Its profile dir, from its command line.
    profile: PathBuf,
}

impl Warm {
    /// Its id: the name of its session dir.
    fn id(&self) -> String {
        self.profile
            .parent()
            .and_then(|dir| dir.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The browsers the daemon runs that no live session leads: its warm browsers.
fn warm_browsers(b: &Browsers) -> BTreeSet<Warm> {
    let leaders: BTreeSet<i32> =
        b.d.sessions(SessionsFilter::default())
            .iter()
            .filter(|s| s.state.is_live())
            .map(|s| s.pid)
            .collect();
    b.daemon_tree()
        .into_iter()
        .filter(|p| p.ppid == b.d.pid() && !leaders.contains(&p.pid))
        .filter(|p| cmdline_mentions(p.pid, BROWSER_FLAG))
        .filter_map(|p| {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid)).ok()?;
            let profile = cmdline
                .split(|&b| b == 0)
                .find_map(|arg| arg.strip_prefix(b"--user-data-dir="))?;
            Some(Warm {
                leader: p.id(),
                profile: PathBuf::from(String::from_utf8_lossy(profile).into_owned()),
            })
        })
        .collect()
}

/// Waits until the pool holds `n` ready browsers and `/proc` shows them; returns them.
#[track_caller]
fn wait_full(b: &Browsers, n: usize) -> BTreeSet<Warm> {
    wait_for(BROWSER_TIMEOUT, format!("{n} ready warm browsers"), || {
        let status = pool(b);
        let warm = warm_browsers(b);
        (status.ready as usize == n && status.starting == 0 && warm.len() == n).then_some(warm)
    })
}

fn leaders(warm: &BTreeSet<Warm>) -> BTreeSet<i32> {
    warm.iter().map(|w| w.leader.pid).collect()
}

/// Every process of the warm browsers (leaders and their helpers), once their trees have
/// stopped changing: Chromium starts and ends helpers for a while after its endpoint
/// answers.
#[track_caller]
fn settled_trees(b: &Browsers, warm: &BTreeSet<Warm>) -> Vec<ProcInfo> {
    let mut last: (BTreeSet<ProcId>, Instant) = (BTreeSet::new(), Instant::now());
    wait_for(
        BROWSER_TIMEOUT,
        "the warm browsers' trees to settle",
        || {
            b.daemon_tree();
            let all = procfs::all_processes();
            let roots = leaders(warm);
            let below = browserd_tests::chromium::descendants(&all, &roots);
            let procs: Vec<ProcInfo> = all
                .into_iter()
                .filter(|p| roots.contains(&p.pid) || below.contains(&p.pid))
                .filter(|p| !p.is_zombie())
                .collect();
            let ids: BTreeSet<ProcId> = procs.iter().map(ProcInfo::id).collect();
            if ids != last.0 {
                last = (ids, Instant::now());
                return None;
            }
            (last.1.elapsed() >= TREE_SETTLE).then_some(procs)
        },
    )
}

/// Asserts that every warm browser's leader is the same process as before, and that its
/// DevTools endpoint (from the `DevToolsActivePort` file Chromium writes into its profile)
/// still answers CDP.
#[track_caller]
fn assert_serving(warm: &BTreeSet<Warm>, what: &str) {
    for w in warm {
        assert!(
            w.leader.current().is_some_and(|p| !p.is_zombie()),
            "{what}: the warm browser {w:?} died"
        );
        let active = std::fs::read_to_string(w.profile.join("DevToolsActivePort"))
            .unwrap_or_else(|e| panic!("{what}: no DevToolsActivePort in {w:?}: {e}"));
        let mut lines = active.lines();
        let (port, path) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
        let endpoint = format!("ws://127.0.0.1:{port}{path}");
        let product = Cdp::connect(&endpoint)
            .and_then(|mut cdp| cdp.product())
            .unwrap_or_else(|e| panic!("{what}: the warm browser {w:?} does not answer CDP: {e}"));
        assert!(product.contains("Chrom"), "{product}");
    }
}

/// Asserts that the warm browsers serve as before and that none of their processes (taken
/// once their trees settled) is gone.
#[track_caller]
fn assert_untouched(procs: &[ProcInfo], warm: &BTreeSet<Warm>, what: &str) {
    assert_serving(warm, what);
    let gone: Vec<String> = procs
        .iter()
        .filter(|p| p.id().current().is_none_or(|now| now.is_zombie()))
        .map(|p| format!("{} ({})", p.pid, p.comm))
        .collect();
    assert!(
        gone.is_empty(),
        "{what}: warm browsers' processes are gone: {gone:?}"
    );
}

#[test]
fn a_default_launch_gets_a_ready_browser_from_the_pool_and_the_pool_refills() {
    let Some(b) = with_pool(2) else { return };
    let before = wait_full(&b, 2);

    let session = b.launch_default();

    assert!(
        leaders(&before).contains(&session.pid),
        "the session's browser {} was running before the launch: one of {before:?}",
        session.pid
    );
    let status = pool(&b);
    assert_eq!((status.handed_out, status.missed), (1, 0), "{status:?}");
    let product = cdp(&session).product().expect("Browser.getVersion");
    assert!(product.contains("Chrom"), "{product}");
    let listed = b.d.sessions(SessionsFilter::default());
    assert_eq!(listed.len(), 1, "warm browsers are not listed: {listed:#?}");
    assert_eq!(b.d.status().sessions.running, 1);

    let after = wait_full(&b, 2);
    assert!(
        !leaders(&after).contains(&session.pid),
        "the handed-out browser left the pool"
    );
    assert_eq!(
        leaders(&after).intersection(&leaders(&before)).count(),
        1,
        "one new browser replaced the one handed out"
    );

    assert_terminated_exactly(&b.d.kill(session.id.as_str(), false, None), &[&session.id]);
    b.assert_gone(&session);
}

#[test]
fn no_two_sessions_or_warm_browsers_share_a_profile_dir() {
    let Some(b) = with_pool(2) else { return };
    let mut profiles: BTreeSet<PathBuf> = BTreeSet::new();
    let mut sessions = Vec::new();
    for round in 0..2 {
        let warm = wait_full(&b, 2);
        for w in &warm {
            profiles.insert(w.profile.clone());
        }
        // Two from the pool, and a third while it refills.
        for _ in 0..3 {
            let session = b.launch_default();
            let profile = PathBuf::from(session.profile_dir.clone().expect("a profile"));
            assert!(
                b.processes(&session)
                    .iter()
                    .all(|p| !warm.iter().any(|w| w.profile != profile
                        && cmdline_mentions(p.pid, &w.profile.display().to_string()))),
                "session {} runs with another browser's profile",
                session.id
            );
            profiles.insert(profile);
            sessions.push(session);
        }
        let killed = b.d.kill("all", true, Some(2000));
        assert!(killed.failed.is_empty(), "round {round}: {killed:?}");
    }
    let warm = wait_full(&b, 2);
    for w in &warm {
        assert!(
            profiles.insert(w.profile.clone()),
            "the warm browser {w:?} reuses a profile dir seen before"
        );
    }
    let session_profiles: BTreeSet<_> = sessions
        .iter()
        .map(|s| s.profile_dir.clone().unwrap())
        .collect();
    assert_eq!(
        session_profiles.len(),
        sessions.len(),
        "each session its own"
    );
    for session in &sessions {
        b.assert_gone(session);
    }
}

#[test]
fn kills_never_touch_a_warm_browser() {
    let Some(b) = with_pool(2) else { return };
    wait_full(&b, 2);
    let first = b.launch_default();
    let second = b.launch_default();
    let warm = wait_full(&b, 2);
    let trees = settled_trees(&b, &warm);

    assert_terminated_exactly(&b.d.kill(first.id.as_str(), true, None), &[&first.id]);
    assert_untouched(&trees, &warm, "after killing one session");

    let all = b.d.kill("all", false, None);
    assert_terminated_exactly(&all, &[&second.id]);
    let bulk = b.d.bulk(BulkTerminate {
        all: Some(true),
        session_type: Some(browserd_proto::SessionType::Browser),
        force: Some(true),
        ..Default::default()
    });
    assert!(
        bulk.terminated.is_empty() && bulk.failed.is_empty(),
        "{bulk:?}"
    );
    for w in &warm {
        let id = w.id();
        let result = b.d.kill(&id, true, Some(0));
        assert_eq!(
            failure_for(&result, &id).code,
            ErrorCode::NotFound,
            "{result:?}"
        );
        let workspace = b.d.bulk(BulkTerminate {
            workspaces: Some(vec!["default".parse().unwrap()]),
            force: Some(true),
            ..Default::default()
        });
        assert!(workspace.terminated.is_empty(), "{workspace:?}");
        assert!(
            b.d.lease(&id, None).is_err(),
            "a warm browser cannot be leased"
        );
    }
    assert_untouched(
        &trees,
        &warm,
        "after kill all, bulk terminates and kills by id",
    );
    assert_eq!(
        warm_browsers(&b),
        warm,
        "the same warm browsers, still in the pool"
    );
    assert_eq!(pool(&b).ready, 2);
    b.assert_gone(&first);
    b.assert_gone(&second);
}

#[test]
fn a_warm_browser_killed_from_outside_is_replaced_and_cleaned_up() {
    let Some(b) = with_pool(2) else { return };
    let warm = wait_full(&b, 2);
    let victim = warm.iter().next().expect("a warm browser").clone();
    let victim_tree: Vec<ProcId> = settled_trees(&b, &BTreeSet::from([victim.clone()]))
        .iter()
        .map(ProcInfo::id)
        .collect();
    assert!(procfs::signal_exact(victim.leader, libc::SIGKILL));

    let after = wait_for(BROWSER_TIMEOUT, "a replacement warm browser", || {
        let now = wait_full(&b, 2);
        (!now.contains(&victim)).then_some(now)
    });
    assert_eq!(after.len(), 2);
    wait_until(
        BROWSER_TIMEOUT,
        "every process of the killed warm browser to be gone",
        || victim_tree.iter().all(|id| id.current().is_none()),
    );
    let dir = victim.profile.parent().unwrap().to_path_buf();
    wait_until(
        BROWSER_TIMEOUT,
        format!("{} to be removed", dir.display()),
        || !dir.exists(),
    );
    assert!(
        b.d.sessions(SessionsFilter::default()).is_empty(),
        "a lost warm browser is no exited session"
    );
    let status = pool(&b);
    assert_eq!(status.failures, 1, "one death is counted: {status:?}");
    assert_eq!(status.retry_in_ms, None, "no back-off after one death");
}

#[test]
fn a_launch_with_its_own_flags_starts_its_own_browser() {
    let Some(b) = with_pool(1) else { return };
    let warm = wait_full(&b, 1);
    let own = b.launch(Launch {
        args: vec!["--window-size=800,600".into()],
        ..Launch::default()
    });
    assert!(!leaders(&warm).contains(&own.pid));
    assert_eq!(wait_full(&b, 1), warm, "the pool is untouched");
    let status = pool(&b);
    assert_eq!((status.handed_out, status.missed), (0, 0), "{status:?}");
    b.d.kill(own.id.as_str(), true, None);
    b.assert_gone(&own);
}

#[test]
fn warm_browsers_stay_in_the_pool_across_a_reload() {
    let Some(b) = with_pool(2) else { return };
    let warm = wait_full(&b, 2);
    let trees = settled_trees(&b, &warm);

    let reload: ReloadResult = b.d.call(Request::Reload).expect("reload accepted");
    wait_until(BROWSER_TIMEOUT, "the reloaded daemon", || {
        b.d.status().reloads == reload.reloads
    });

    assert_eq!(wait_full(&b, 2), warm, "the same browsers after the reload");
    assert_untouched(&trees, &warm, "across the reload");
    let session = b.launch_default();
    assert!(
        leaders(&warm).contains(&session.pid),
        "handed out after the reload"
    );
    assert_eq!(session.state, SessionState::Running);
    b.d.kill(session.id.as_str(), true, None);
    b.assert_gone(&session);
}

#[test]
fn shutdown_leaves_nothing_of_the_pool() {
    let Some(b) = with_pool(2) else { return };
    wait_full(&b, 2);
    let session = b.launch_default();
    // Shut down while the pool refills: a browser starting then goes too.
    let below = b.daemon_tree();
    assert!(!below.is_empty());

    b.d.send_signal(Signal::SIGTERM);
    let status = b.d.wait_exit(Duration::from_secs(60));

    assert!(status.success(), "browserd exited with {status}");
    let left = b.remaining_below();
    assert!(
        left.is_empty(),
        "processes outlived the shutdown: {left:#?}"
    );
    b.assert_clean();
    let _ = session;
}
