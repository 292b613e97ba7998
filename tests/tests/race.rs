//! The seeded race test of the one promise: once a forced kill-all answers, nothing of any
//! session is left. Many clients, each on its own connection, launch every tree shape
//! (polite, stubborn, `setsid` strays, leaders that exit at once leaving a stray, deep trees,
//! natural exits), kill by id, tracking id, workspace and `all` (forced or not, graces of
//! 0–300 ms), lease, release and kill leased sessions, all at once. After each round a
//! forced kill-all, then the invariants are checked where they are true or false: in `/proc`.
//! Every answer that says a session terminated is checked at once too: no live process
//! carries its marker, and, with sessions in cgroups, no process in `/proc` is in its
//! cgroup, not even a zombie.
//!
//! The seed fixes every client's sequence of operations (the interleaving is the kernel's),
//! so a failure is replayed by running its seed again, if need be a few times:
//! `BROWSERD_RACE_SEED=<seed> cargo test -p browserd-tests --test race`. Sizes:
//! `BROWSERD_RACE_ROUNDS` (rounds), `BROWSERD_RACE_OPS` (operations per round, shared by the
//! clients), `BROWSERD_RACE_CLIENTS` (concurrent clients). `BROWSERD_RACE_KEEP_GOING=1` runs
//! every round even after one failed, to see how often it fails; `BROWSERD_TEST_KEEP=1`
//! keeps the daemon's temp dir and full debug log.

use browserd_proto::{
    BulkTerminate, ErrorCode, Kill, Launch, LaunchResult, Lease, LeaseId, LeaseResult, Release,
    Request, SessionRef, SessionType, SessionsFilter, SessionsResult, StatusResult, Target,
    TerminateResult, WireError, Workspace,
};
use browserd_tests::cgroups::PrivateCgroup;
use browserd_tests::fixtures::SH;
use browserd_tests::procfs::{self, ProcInfo};
use browserd_tests::rng::{seed_from_env, size_from_env, Rng};
use browserd_tests::{wait_until, Client, DaemonGuard, Fixture};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEFAULT_ROUNDS: usize = 6;
const DEFAULT_OPS: usize = 500;
const DEFAULT_CLIENTS: usize = 8;

/// The daemon's default grace (a request without `grace_ms` gets it).
const GRACE: &str = "300ms";
/// The largest grace a request of this test asks for.
const MAX_GRACE_MS: u64 = 300;
/// How long after a round's final kill-all a session's cgroup may still be being removed.
const CGROUPS_REMOVED: Duration = Duration::from_secs(5);
/// How long the reaper may take to collect what a round's final kill left as zombies.
const REAP_DEADLINE: Duration = Duration::from_secs(5);
/// Tracking ids and workspaces are drawn from small pools so that requests collide.
const TRACKING_POOL: u64 = 24;
const WORKSPACES: &[&str] = &["ws-a", "ws-b", "ws-c"];
/// Kills and leases by id aim at one of the latest sessions launched in the round.
const RECENT: usize = 64;
/// At most this many violations are spelled out in the failure message.
const SHOWN: usize = 25;

#[test]
fn no_process_outlives_a_forced_kill_all_under_random_concurrent_launches_kills_and_leases() {
    race(Plan::from_env());
}

/// The same race with every session in a cgroup of its own: once the forced kill-all
/// answers, nothing is left, not even a session's cgroup.
#[test]
fn no_process_nor_cgroup_outlives_a_forced_kill_all_with_sessions_in_cgroups() {
    let cgroup = match PrivateCgroup::create("race") {
        Ok(cgroup) => cgroup,
        Err(why) => {
            eprintln!("race: skipped: {why}");
            return;
        }
    };
    race(Plan {
        cgroup: Some(cgroup),
        ..Plan::from_env()
    });
}

fn race(plan: Plan) {
    eprintln!("race: {plan}\nrace: replay with `{}`", plan.replay());
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(&plan)));
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(a panic without a message)");
        panic!(
            "{message}\n\nrace test failed with seed {} ({plan}); replay with:\n  {}\n\
             (BROWSERD_TEST_KEEP=1 keeps the daemon's full debug log)",
            plan.seed,
            plan.replay()
        );
    }
}

/// What one run does: its seed and size.
struct Plan {
    seed: u64,
    rounds: usize,
    ops: usize,
    clients: usize,
    /// Run every round even after one failed, and report all (to measure how often).
    keep_going: bool,
    /// Where the daemon puts each session in a cgroup of its own, if it does.
    cgroup: Option<PrivateCgroup>,
}

impl Plan {
    fn from_env() -> Plan {
        Plan {
            seed: seed_from_env("BROWSERD_RACE_SEED"),
            rounds: size_from_env("BROWSERD_RACE_ROUNDS", DEFAULT_ROUNDS),
            ops: size_from_env("BROWSERD_RACE_OPS", DEFAULT_OPS),
            clients: size_from_env("BROWSERD_RACE_CLIENTS", DEFAULT_CLIENTS),
            keep_going: std::env::var_os("BROWSERD_RACE_KEEP_GOING").is_some(),
            cgroup: None,
        }
    }

    /// The command that runs this plan again.
    fn replay(&self) -> String {
        let mut command = format!("BROWSERD_RACE_SEED={}", self.seed);
        for (var, value, default) in [
            ("BROWSERD_RACE_ROUNDS", self.rounds, DEFAULT_ROUNDS),
            ("BROWSERD_RACE_OPS", self.ops, DEFAULT_OPS),
            ("BROWSERD_RACE_CLIENTS", self.clients, DEFAULT_CLIENTS),
        ] {
            if value != default {
                command.push_str(&format!(" {var}={value}"));
            }
        }
        let test = match self.cgroup {
            Some(_) => "no_process_nor_cgroup_outlives",
            None => "no_process_outlives",
        };
        command + " cargo test -p browserd-tests --test race " + test
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}, {} rounds of {} operations by {} concurrent clients{}",
            self.seed,
            self.rounds,
            self.ops,
            self.clients,
            if self.cgroup.is_some() {
                ", sessions in cgroups"
            } else {
                ""
            }
        )
    }
}

fn run(plan: &Plan) {
    let mut builder = DaemonGuard::builder()
        .max_sessions(2_000)
        .grace(GRACE)
        // Listings stay small enough to take often (they would hold 1000 exited sessions).
        .flag("--keep-exited", 200);
    if let Some(cgroup) = &plan.cgroup {
        builder = builder.flag("--cgroup-root", cgroup.path().display());
    }
    let d = builder.start();
    let shapes = shapes();
    let ledger = Ledger::default();
    if let Some(cgroup) = &plan.cgroup {
        let _ = ledger.cgroup_prefix.set(cgroup.session_cgroup(""));
    }
    let mut failed_rounds = Vec::new();
    for round in 0..plan.rounds {
        let started = Instant::now();
        run_round(&d, &shapes, &ledger, plan, round);
        let ops_took = started.elapsed();
        let final_kill = d.kill("all", true, None);
        ledger.note_terminated(&final_kill.terminated);
        ledger.check_nothing_left("the final kill-all", &final_kill.terminated);
        if !final_kill.failed.is_empty() {
            ledger.violation(format!(
                "round {round}: the final forced kill-all failed: {:?}",
                final_kill.failed
            ));
        }
        check_round(&d, &ledger, round);
        if let Some(cgroup) = &plan.cgroup {
            // A session that ended on its own just before may still be having its cgroup
            // removed (only a kill's answer waits for that): a cgroup is left behind if it
            // is still there a while later.
            let deadline = Instant::now() + CGROUPS_REMOVED;
            let mut left = cgroup.session_dirs();
            while !left.is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                left = cgroup.session_dirs();
            }
            if !left.is_empty() {
                ledger.violation(format!(
                    "round {round}: session cgroups left after the final kill-all: {left:?}"
                ));
            }
        }
        check_daemon_serves(&d, &ledger, round);
        eprintln!(
            "race: round {round}: {} ops in {ops_took:.1?}, final kill-all of {} session(s), \
             checked in {:.1?}; so far {}",
            plan.ops,
            final_kill.terminated.len(),
            started.elapsed() - ops_took,
            ledger.tally_line()
        );
        let violations = ledger.take_violations();
        if !violations.is_empty() {
            let report = describe_violations(round, &violations);
            if !plan.keep_going {
                panic!("{report}");
            }
            eprintln!("race: {report}");
            failed_rounds.push(round);
        }
    }
    assert!(
        failed_rounds.is_empty(),
        "rounds {failed_rounds:?} of {} violated the contract (see above)",
        plan.rounds
    );
}

/// The daemon is still running and answers `status`.
fn check_daemon_serves(d: &DaemonGuard, ledger: &Ledger, round: usize) {
    if let Some(exit) = d.try_exit() {
        return ledger.violation(format!("round {round}: the daemon exited ({exit})"));
    }
    let status = d.status();
    if status.protocol != 1 || status.pid != d.pid() as u32 {
        ledger.violation(format!("round {round}: unexpected status {status:?}"));
    }
}

/// One round: every client runs its share of the operations at once.
fn run_round(d: &DaemonGuard, shapes: &[Shape], ledger: &Ledger, plan: &Plan, round: usize) {
    std::thread::scope(|scope| {
        for client in 0..plan.clients {
            let ops = plan.ops / plan.clients + usize::from(client < plan.ops % plan.clients);
            let worker = Worker {
                ledger,
                shapes,
                client: d.client(),
                rng: Rng::derive(plan.seed, &[round as u64, client as u64]),
                round,
                who: format!("round {round} client {client}"),
                step: 0,
            };
            scope.spawn(move || worker.run(ops));
        }
    });
}

// ----- session shapes -----

/// A session tree to launch, and how often.
struct Shape {
    fixture: Fixture,
    weight: u32,
}

/// Every tree shape, weighted toward the two of the reproduction recipe.
fn shapes() -> Vec<Shape> {
    let shape = |weight, fixture| Shape { fixture, weight };
    vec![
        shape(
            20,
            script(
                "stubborn-leader-stray",
                "trap '' TERM; (setsid sleep 3600 &); sleep 3600",
            ),
        ),
        shape(
            20,
            script("exit-leaving-stray", "(setsid sleep 3600 &); exit 0"),
        ),
        shape(6, Fixture::polite()),
        shape(6, Fixture::stubborn()),
        shape(6, Fixture::stubborn_children()),
        shape(6, Fixture::polite_stray()),
        shape(6, Fixture::stubborn_stray()),
        shape(5, Fixture::deep()),
        shape(4, Fixture::stubborn_sleeper()),
        shape(8, script("natural-exit", "sleep 0.05")),
        shape(3, script("instant-exit", "exit 3")),
        shape(4, Fixture::fake_browser()),
    ]
}

/// A sandbox running `sh -c script`; its shape is not waited for, so it is left unset.
fn script(name: &'static str, script: &str) -> Fixture {
    Fixture {
        name,
        session_type: SessionType::Sandbox,
        argv: vec![SH.into(), "-c".into(), script.into(), name.into()],
        processes: 0,
        sleepers: 0,
        ignoring_term: 0,
        strays: 0,
    }
}

// ----- what the clients saw -----

/// A session some client launched.
#[derive(Debug, Clone)]
struct Launched {
    id: String,
    shape: &'static str,
    round: usize,
    leader: i32,
    /// The leader's start time, if it was still there to be read after the launch answered.
    leader_start: Option<u64>,
}

/// What every client reports, shared: launched sessions, ids reported terminated (with the
/// order in which they were), active leases, and violations of the contract.
#[derive(Default)]
struct Ledger {
    /// The per-daemon prefix of session ids (`<nonce>-`), from the first launch.
    prefix: OnceLock<String>,
    launched: Mutex<Vec<Launched>>,
    /// Each id reported terminated, with the sequence number of the report.
    terminated: Mutex<HashMap<String, u64>>,
    reports: AtomicU64,
    leases: Mutex<Vec<(LeaseId, String)>>,
    violations: Mutex<Vec<String>>,
    tally: Mutex<BTreeMap<String, usize>>,
    /// Where sessions are in cgroups: a session's cgroup as `/proc/PID/cgroup` names it,
    /// without the session id at its end.
    cgroup_prefix: OnceLock<String>,
}

impl Ledger {
    fn violation(&self, what: String) {
        lock(&self.violations).push(what);
    }

    fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.violations))
    }

    fn count(&self, what: impl Into<String>) {
        *lock(&self.tally).entry(what.into()).or_default() += 1;
    }

    fn tally_line(&self) -> String {
        lock(&self.tally)
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn note_launched(&self, launched: Launched) {
        let prefix = launched
            .id
            .split_once('-')
            .map_or(launched.id.as_str(), |(nonce, _)| nonce);
        let prefix = self.prefix.get_or_init(|| format!("{prefix}-"));
        if !launched.id.starts_with(prefix.as_str()) {
            self.violation(format!(
                "session id {} does not share this daemon's prefix {prefix}",
                launched.id
            ));
        }
        lock(&self.launched).push(launched);
    }

    /// Whether `id` names a session of this daemon (true while no launch has answered yet).
    fn is_ours(&self, id: &str) -> bool {
        self.prefix.get().is_none_or(|p| id.starts_with(p.as_str()))
    }

    /// A session id launched recently in `round`, if any.
    fn recent(&self, rng: &mut Rng, round: usize) -> Option<String> {
        let launched = lock(&self.launched);
        let this_round: Vec<&Launched> = launched
            .iter()
            .rev()
            .take_while(|l| l.round == round)
            .take(RECENT)
            .collect();
        rng.pick(&this_round).map(|l| l.id.clone())
    }

    fn note_terminated(&self, ids: &[String]) {
        let seq = self.reports.fetch_add(1, Ordering::SeqCst);
        let mut terminated = lock(&self.terminated);
        for id in ids {
            terminated.entry(id.clone()).or_insert(seq);
        }
    }

    /// The sequence number below which every terminated id was reported before now.
    /// A session answered terminated is gone, checked at once (a process seen alive after
    /// the answer was alive at it): no live process carries its marker, and, where sessions
    /// are in cgroups, no process in `/proc` is in its cgroup, not even a zombie (one that was
    /// still exiting at the answer may be gone by the time it is read; a zombie waiting to
    /// be reaped stays a while).
    fn check_nothing_left(&self, what: &str, terminated: &[String]) {
        if terminated.is_empty() {
            return;
        }
        let ids: HashSet<&str> = terminated.iter().map(String::as_str).collect();
        for process in procfs::all_processes() {
            if process
                .session
                .as_deref()
                .is_some_and(|marker| ids.contains(marker))
            {
                self.violation(format!(
                    "{what} answered a session terminated with its process still alive: \
                     {process:?}"
                ));
            }
        }
        let Some(prefix) = self.cgroup_prefix.get() else {
            return;
        };
        let cgroups: HashSet<String> = terminated
            .iter()
            .map(|id| format!("{prefix}{id}"))
            .collect();
        for (pid, cgroup) in browserd_tests::cgroups::processes_in(&cgroups) {
            let process = procfs::process(pid);
            self.violation(format!(
                "{what} answered a session terminated with process {pid} still in its cgroup \
                 {cgroup}: {process:?}"
            ));
        }
    }

    fn reports_so_far(&self) -> u64 {
        self.reports.load(Ordering::SeqCst)
    }

    /// Whether `id` was reported terminated by a response received before `seq` was read.
    fn terminated_before(&self, id: &str, seq: u64) -> bool {
        lock(&self.terminated).get(id).is_some_and(|&s| s < seq)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

// ----- one client -----

#[derive(Debug, Clone, Copy)]
enum Op {
    Launch,
    KillById,
    KillByTrackingId,
    KillAll,
    BulkAll,
    BulkWorkspaces,
    BulkIds,
    Lease,
    Release,
    KillLeased,
    List,
    Status,
}

/// Operations and their weights: half of them launches, a good share of them kills of
/// everything, which is what races launches hardest.
const OPS: &[(Op, u32)] = &[
    (Op::Launch, 50),
    (Op::KillById, 7),
    (Op::KillByTrackingId, 3),
    (Op::KillAll, 5),
    (Op::BulkAll, 4),
    (Op::BulkWorkspaces, 4),
    (Op::BulkIds, 3),
    (Op::Lease, 6),
    (Op::Release, 4),
    (Op::KillLeased, 4),
    (Op::List, 8),
    (Op::Status, 2),
];

struct Worker<'a> {
    ledger: &'a Ledger,
    shapes: &'a [Shape],
    client: Client,
    rng: Rng,
    round: usize,
    who: String,
    step: usize,
}

/// What a termination request selected, for judging its failures.
struct Selection {
    force: bool,
    /// References the request named one by one (only these may be `not_found`).
    refs: Vec<String>,
}

impl Worker<'_> {
    fn run(mut self, ops: usize) {
        let weights: Vec<u32> = OPS.iter().map(|(_, w)| *w).collect();
        for step in 0..ops {
            self.step = step;
            match OPS[self.rng.weighted(&weights)].0 {
                Op::Launch => self.launch(),
                Op::KillById => {
                    let id = self.some_id();
                    self.kill(&id);
                }
                Op::KillByTrackingId => {
                    let tracking = self.tracking_id();
                    self.kill(&tracking);
                }
                Op::KillAll => self.kill_all(),
                Op::BulkAll => self.bulk_all(),
                Op::BulkWorkspaces => self.bulk_workspaces(),
                Op::BulkIds => self.bulk_ids(),
                Op::Lease => self.lease(),
                Op::Release => self.release(),
                Op::KillLeased => self.kill_leased(),
                Op::List => self.list(),
                Op::Status => self.status(),
            }
        }
    }

    fn violation(&self, what: impl fmt::Display) {
        self.ledger
            .violation(format!("{} step {}: {what}", self.who, self.step));
    }

    fn tracking_id(&mut self) -> String {
        format!("r{}t{}", self.round, self.rng.below(TRACKING_POOL))
    }

    fn workspace(&mut self) -> &'static str {
        WORKSPACES[self.rng.below(WORKSPACES.len() as u64) as usize]
    }

    /// A recent session of this round, or now and then an id that names nothing.
    fn some_id(&mut self) -> String {
        match self.ledger.recent(&mut self.rng, self.round) {
            Some(id) if !self.rng.chance(1, 20) => id,
            _ => format!("ghost-{}", self.rng.below(1000)),
        }
    }

    fn grace_ms(&mut self) -> Option<u64> {
        (!self.rng.chance(1, 5)).then(|| self.rng.between(0, MAX_GRACE_MS))
    }

    fn launch(&mut self) {
        let weights: Vec<u32> = self.shapes.iter().map(|s| s.weight).collect();
        let shape = &self.shapes[self.rng.weighted(&weights)].fixture;
        let workspace = self.rng.chance(3, 4).then(|| self.workspace().to_owned());
        let tracking_id = self.rng.chance(1, 3).then(|| self.tracking_id());
        // Now and then a short TTL, whose expiry is one more forced termination racing.
        let ttl_ms = self.rng.chance(1, 10).then(|| self.rng.between(50, 1500));
        let launch = Launch {
            workspace: workspace
                .as_deref()
                .map(|w| w.parse().expect("a valid workspace")),
            tracking_id: tracking_id
                .as_deref()
                .map(|t| t.parse().expect("a valid tracking id")),
            ttl_ms,
            ..shape.launch()
        };
        let result: Result<LaunchResult, WireError> =
            self.client.request(&Request::Launch(launch)).into_result();
        let session = match result {
            Ok(launched) => launched.session,
            Err(e) => {
                self.ledger.count(format!("launch {}", e.code));
                let expected = match e.code {
                    ErrorCode::Capacity => true,
                    ErrorCode::Conflict => tracking_id.is_some(),
                    _ => false,
                };
                if !expected {
                    self.violation(format!("launch of `{}` failed: {e}", shape.name));
                }
                return;
            }
        };
        self.ledger.count("launch ok");
        // Read at once: a leader that exits at once may already be gone (and its pid reused).
        let leader_start = procfs::process(session.pid)
            .filter(|p| p.session.as_deref() == Some(session.id.as_str()))
            .map(|p| p.start_time);
        if session.state != browserd_proto::SessionState::Running {
            self.violation(format!(
                "launch of `{}` answered session {} in state {}, not running",
                shape.name, session.id, session.state
            ));
        }
        let workspace = workspace.unwrap_or_else(|| Workspace::default().to_string());
        if session.workspace.as_str() != workspace
            || session.tracking_id.as_ref().map(|t| t.to_string()) != tracking_id
            || session.session_type != shape.session_type
        {
            self.violation(format!(
                "launch of `{}` in {workspace} as {tracking_id:?} answered {session:?}",
                shape.name
            ));
        }
        self.ledger.note_launched(Launched {
            id: session.id.to_string(),
            shape: shape.name,
            round: self.round,
            leader: session.pid,
            leader_start,
        });
        // Leased at once now and then, so that kills meet sessions that are still leased.
        if self.rng.chance(1, 6) {
            self.lease_session(session.id.to_string());
        }
    }

    fn kill(&mut self, reference: &str) {
        let target: Target = reference.parse().expect("a valid kill target");
        let force = self.rng.chance(1, 2);
        let grace_ms = self.grace_ms();
        let selection = Selection {
            force,
            refs: vec![reference.to_owned()],
        };
        self.terminate(
            Request::Kill(Kill {
                target,
                force,
                grace_ms,
            }),
            selection,
        );
    }

    fn kill_all(&mut self) {
        let force = self.rng.chance(3, 4);
        let grace_ms = self.grace_ms();
        let selection = Selection {
            force,
            refs: Vec::new(),
        };
        self.terminate(
            Request::Kill(Kill {
                target: Target::All,
                force,
                grace_ms,
            }),
            selection,
        );
    }

    fn bulk_all(&mut self) {
        let force = self.rng.chance(3, 4);
        let session_type = match self.rng.below(4) {
            0 => Some(SessionType::Sandbox),
            1 => Some(SessionType::Browser),
            _ => None,
        };
        let body = BulkTerminate {
            all: Some(true),
            force: Some(force),
            session_type,
            grace_ms: self.grace_ms(),
            ..Default::default()
        };
        let selection = Selection {
            force,
            refs: Vec::new(),
        };
        self.terminate(Request::BulkTerminate(body), selection);
    }

    fn bulk_workspaces(&mut self) {
        let force = self.rng.chance(1, 2);
        let count = self.rng.between(1, 2);
        let workspaces = (0..count)
            .map(|_| self.workspace().parse().expect("a valid workspace"))
            .collect();
        let body = BulkTerminate {
            force: Some(force),
            workspaces: Some(workspaces),
            grace_ms: self.grace_ms(),
            ..Default::default()
        };
        let selection = Selection {
            force,
            refs: Vec::new(),
        };
        self.terminate(Request::BulkTerminate(body), selection);
    }

    fn bulk_ids(&mut self) {
        let force = self.rng.chance(1, 2);
        let count = self.rng.between(1, 4);
        let mut refs: Vec<String> = (0..count)
            .map(|_| {
                if self.rng.chance(1, 3) {
                    self.tracking_id()
                } else {
                    self.some_id()
                }
            })
            .collect();
        // The daemon answers a reference named twice twice; this test names each once.
        refs.sort();
        refs.dedup();
        let body = BulkTerminate {
            force: Some(force),
            ids: Some(
                refs.iter()
                    .map(|r| r.parse::<SessionRef>().expect("a valid reference"))
                    .collect(),
            ),
            workspaces: self
                .rng
                .chance(1, 4)
                .then(|| vec![self.workspace().parse().expect("a valid workspace")]),
            grace_ms: self.grace_ms(),
            ..Default::default()
        };
        self.terminate(Request::BulkTerminate(body), Selection { force, refs });
    }

    /// Sends a termination request and checks its answer: failures only with the codes the
    /// request could earn, every id of this daemon, none twice.
    fn terminate(&mut self, request: Request, selection: Selection) {
        let what = format!("{request:?}");
        let result: Result<TerminateResult, WireError> =
            self.client.request(&request).into_result();
        let result = match result {
            Ok(result) => result,
            Err(e) => {
                self.violation(format!("{what} was refused: {e}"));
                return;
            }
        };
        self.ledger.note_terminated(&result.terminated);
        let asker = format!("{} step {}: {what}", self.who, self.step);
        self.ledger.check_nothing_left(&asker, &result.terminated);
        self.ledger.count("terminated");
        let mut seen = HashSet::new();
        for id in &result.terminated {
            self.ledger.count("terminated ids");
            if !self.ledger.is_ours(id) || !seen.insert(id.as_str()) {
                self.violation(format!("{what} answered a foreign or repeated id {id}"));
            }
        }
        for failure in &result.failed {
            self.ledger.count(format!("failed {}", failure.code));
            let expected = match failure.code {
                ErrorCode::NotFound => selection.refs.contains(&failure.id),
                ErrorCode::Leased | ErrorCode::Timeout => {
                    !selection.force && self.ledger.is_ours(&failure.id)
                }
                _ => false,
            };
            if !expected || !seen.insert(failure.id.as_str()) {
                self.violation(format!("{what} answered an unexpected failure {failure:?}"));
            }
        }
        // A session id named one by one is answered exactly once, one way or the other.
        for reference in &selection.refs {
            let is_session_id = self.ledger.is_ours(reference) && reference.contains('-');
            if is_session_id && !seen.contains(reference.as_str()) {
                self.violation(format!("{what} did not answer for {reference}: {result:?}"));
            }
        }
        if !result.terminated.is_empty() && self.rng.chance(1, 3) {
            self.list();
        }
    }

    fn lease(&mut self) {
        let id = self.some_id();
        self.lease_session(id);
    }

    fn lease_session(&mut self, id: String) {
        let lease = Lease {
            id: id.parse().expect("a valid reference"),
            ttl_ms: Some(self.rng.between(100, 5_000)),
        };
        let result: Result<LeaseResult, WireError> =
            self.client.request(&Request::Lease(lease)).into_result();
        match result {
            Ok(lease) => {
                self.ledger.count("lease ok");
                lock(&self.ledger.leases).push((lease.lease_id, id));
            }
            Err(e) if matches!(e.code, ErrorCode::NotFound | ErrorCode::NotRunning) => {
                self.ledger.count(format!("lease {}", e.code));
            }
            Err(e) => self.violation(format!("lease of {id} failed: {e}")),
        }
    }

    fn take_lease(&mut self) -> Option<(LeaseId, String)> {
        let mut leases = lock(&self.ledger.leases);
        if leases.is_empty() {
            return None;
        }
        let i = self.rng.below(leases.len() as u64) as usize;
        Some(leases.swap_remove(i))
    }

    fn release(&mut self) {
        let Some((lease_id, id)) = self.take_lease() else {
            return;
        };
        let result: Result<serde_json::Value, WireError> = self
            .client
            .request(&Request::Release(Release {
                lease_id: lease_id.clone(),
            }))
            .into_result();
        match result {
            Ok(_) => self.ledger.count("release ok"),
            // Expired, or dropped by a forced kill or by the session's exit.
            Err(e) if e.code == ErrorCode::NotFound => self.ledger.count("release not_found"),
            Err(e) => self.violation(format!("release of {lease_id} (on {id}) failed: {e}")),
        }
    }

    fn kill_leased(&mut self) {
        let leased = {
            let leases = lock(&self.ledger.leases);
            self.rng.pick(&leases).map(|(_, id)| id.clone())
        };
        match leased {
            Some(id) => self.kill(&id),
            None => {
                let id = self.some_id();
                self.kill(&id);
            }
        }
    }

    /// Lists sessions and checks that no session reported terminated before the listing was
    /// asked for is listed live.
    fn list(&mut self) {
        let before = self.ledger.reports_so_far();
        let filter = match self.rng.below(4) {
            0 => SessionsFilter {
                workspace: Some(self.workspace().parse().expect("a valid workspace")),
                ..Default::default()
            },
            _ => SessionsFilter::default(),
        };
        let result: Result<SessionsResult, WireError> = self
            .client
            .request(&Request::Sessions(filter))
            .into_result();
        let sessions = match result {
            Ok(result) => result.sessions,
            Err(e) => return self.violation(format!("sessions failed: {e}")),
        };
        self.ledger.count("sessions");
        for session in sessions {
            let id = session.id.as_str();
            if !self.ledger.is_ours(id) {
                self.violation(format!("sessions listed a foreign id {id}"));
            }
            if session.state.is_live() && self.ledger.terminated_before(id, before) {
                self.violation(format!(
                    "session {id} was reported terminated, yet a later listing shows it {}",
                    session.state
                ));
            }
        }
    }

    fn status(&mut self) {
        let result: Result<StatusResult, WireError> =
            self.client.request(&Request::Status).into_result();
        match result {
            Ok(status) if status.protocol == 1 => self.ledger.count("status"),
            Ok(status) => self.violation(format!("status reports protocol {}", status.protocol)),
            Err(e) => self.violation(format!("status failed: {e}")),
        }
    }
}

// ----- after a round -----

/// A process of one of this daemon's sessions that outlived the final forced kill-all.
struct Leak {
    process: ProcInfo,
    /// The session it belongs to: its marker, else the session whose group or sid it carries.
    session: String,
}

/// Checks the invariants that must hold once the final forced kill-all answered, in the
/// listing and in `/proc`; records each violation, and SIGKILLs whatever leaked (after
/// recording it), so the test leaves nothing behind even when it fails.
fn check_round(d: &DaemonGuard, ledger: &Ledger, round: usize) {
    let live: Vec<_> = d
        .sessions(SessionsFilter::default())
        .into_iter()
        .filter(|s| s.state.is_live())
        .collect();
    if !live.is_empty() {
        ledger.violation(format!(
            "round {round}: after the final forced kill-all, sessions still listed live: {live:?}"
        ));
    }
    let leaks = find_leaks(d, ledger);
    if !leaks.is_empty() {
        let log = std::fs::read(d.log_path()).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        let launched = lock(&ledger.launched).clone();
        for leak in &leaks {
            ledger.violation(describe_leak(d, leak, &launched, &log));
        }
        for leak in &leaks {
            procfs::signal_exact(leak.process.id(), libc::SIGKILL);
        }
        wait_until(
            REAP_DEADLINE,
            "the leaked processes to die after SIGKILL",
            || leaks.iter().all(|l| l.process.id().current().is_none()),
        );
    }
    // Checked last: a violation recorded above must not be lost to a timeout here (the
    // panic still names the seed, and the guard still cleans up).
    wait_until(
        REAP_DEADLINE,
        format!("the daemon to reap all its children (round {round})"),
        || procfs::zombie_children_of(d.pid()).is_empty(),
    );
    let sessions_dir = d.dir().join("state").join("sessions");
    wait_until(
        REAP_DEADLINE,
        format!("{} to be empty", sessions_dir.display()),
        || std::fs::read_dir(&sessions_dir).map_or(true, |mut dir| dir.next().is_none()),
    );
}

/// Live processes that carry the marker of one of this daemon's sessions, or the group or
/// session id of one of its leaders (a group outlives its leader; the number cannot be
/// reused while a member is alive, and only descendants of the daemon are counted).
fn find_leaks(d: &DaemonGuard, ledger: &Ledger) -> Vec<Leak> {
    let Some(prefix) = ledger.prefix.get() else {
        return Vec::new();
    };
    let all = procfs::all_processes();
    let by_pid: HashMap<i32, &ProcInfo> = all.iter().map(|p| (p.pid, p)).collect();
    let launched = lock(&ledger.launched);
    let mut leaders: HashMap<i32, Vec<&Launched>> = HashMap::new();
    for l in launched.iter() {
        leaders.entry(l.leader).or_default().push(l);
    }
    // The session whose (former) leader's number `number` is, if that group is still ours:
    // the leader is gone, or still the very process the launch answered.
    let group_owner = |number: i32| -> Option<String> {
        let sessions = leaders.get(&number)?;
        let latest = sessions.last()?;
        match by_pid.get(&number) {
            None => Some(latest.id.clone()),
            Some(now) => sessions
                .iter()
                .find(|l| l.leader_start == Some(now.start_time))
                .map(|l| l.id.clone()),
        }
    };
    all.iter()
        .filter(|p| !p.is_zombie() && p.pid != d.pid())
        .filter_map(|p| {
            let session = match &p.session {
                Some(marker) if marker.starts_with(prefix.as_str()) => Some(marker.clone()),
                _ if descends_from(p, d.pid(), &by_pid) => {
                    group_owner(p.pgid).or_else(|| group_owner(p.sid))
                }
                _ => None,
            }?;
            Some(Leak {
                process: p.clone(),
                session,
            })
        })
        .collect()
}

fn descends_from(p: &ProcInfo, ancestor: i32, by_pid: &HashMap<i32, &ProcInfo>) -> bool {
    let mut cursor = p.ppid;
    for _ in 0..64 {
        if cursor == ancestor {
            return true;
        }
        match by_pid.get(&cursor) {
            Some(parent) if cursor > 1 => cursor = parent.ppid,
            _ => return false,
        }
    }
    false
}

/// One leaked process, where it hangs, when it started, and what the daemon logged about
/// its session.
fn describe_leak(d: &DaemonGuard, leak: &Leak, launched: &[Launched], log: &str) -> String {
    let p = &leak.process;
    let session = launched.iter().find(|l| l.id == leak.session);
    let shape = session.map_or("?", |l| l.shape);
    let leader = session.map_or(String::from("?"), |l| {
        format!(
            "{} (started {})",
            l.leader,
            l.leader_start.map_or("?".into(), clock_time)
        )
    });
    let history: String = log
        .lines()
        .filter(|line| line.contains(leak.session.as_str()))
        .take(12)
        .map(|line| format!("\n      {line}"))
        .collect();
    format!(
        "process {} of session {} (`{shape}`, leader {leader}) outlived the final forced \
         kill-all: ppid {}{}, pgid {}, sid {}, state {}, comm {}, marker {:?}, started {}; \
         the daemon's log of that session:{history}",
        p.pid,
        leak.session,
        p.ppid,
        if p.ppid == d.pid() {
            " (the daemon)"
        } else {
            ""
        },
        p.pgid,
        p.sid,
        p.state,
        p.comm,
        p.session,
        clock_time(p.start_time),
    )
}

/// A process start time (clock ticks after boot) as a UTC time of day, comparable with the
/// daemon's log timestamps (to the 10 ms of a clock tick).
fn clock_time(start_ticks: u64) -> String {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64;
    let since_boot = start_ticks as f64 / ticks_per_second;
    let mut boot = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut boot) };
    let boot = boot.tv_sec as f64 + boot.tv_nsec as f64 / 1e9;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let at = now - boot + since_boot;
    let of_day = at.rem_euclid(86_400.0);
    format!(
        "{:02}:{:02}:{:06.3}Z",
        (of_day / 3600.0) as u32,
        (of_day % 3600.0 / 60.0) as u32,
        of_day % 60.0
    )
}

fn describe_violations(round: usize, violations: &[String]) -> String {
    let shown: String = violations
        .iter()
        .take(SHOWN)
        .map(|v| format!("\n  - {v}"))
        .collect();
    let more = violations.len().saturating_sub(SHOWN);
    format!(
        "round {round}: {} violation(s) of the contract:{shown}{}",
        violations.len(),
        if more > 0 {
            format!("\n  ... and {more} more")
        } else {
            String::new()
        }
    )
}
