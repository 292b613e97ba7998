//! What a run measured and how it is shown: the raw samples of every repetition, the rows
//! of the table (median over repetitions; latencies pooled over every sample), each against
//! its target, and the JSON file that carries all of it.

use crate::options::Options;
use crate::stats::{median, percentile};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// How many exited sessions the bench's daemon keeps listed (its default `--keep-exited`).
const KEEP_EXITED: usize = 1000;

/// One repetition of every scenario, on one side (browserd or the baseline).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Sample {
    pub launch_per_s: f64,
    pub bulk_polite_ms: f64,
    /// The same kill-all in pairs with the other side's, back to back (`paired`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bulk_polite_paired_ms: Vec<f64>,
    pub bulk_stubborn_ms: f64,
    pub bulk_stubborn_small_ms: f64,
    pub kill_one_ms: Vec<f64>,
    pub status_ms: Vec<f64>,
    pub natural_exit_ms: Vec<f64>,
    /// browserd: a bare `browserctl` start (`--version`), timed just before each kill but the
    /// first: the kill's reference, measured in the same moments as the kills.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bare_start_ms: Vec<f64>,
    /// browserd: the first `browserctl kill` after the idle window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_one_after_idle_ms: Option<f64>,
    /// browserd: a `kill` over the socket (no client start-up), right after a second idle
    /// window as long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_kill_one_after_idle_ms: Option<f64>,
    /// browserd: the same kill over the socket, warm (after the `browserctl` kills).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub socket_kill_one_ms: Vec<f64>,
    /// browserd: a bare `browserctl` start (no daemon involved) right after an idle window
    /// as long as the one before the first kill, in the same run: that kill's reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bare_start_after_idle_ms: Option<f64>,
    /// browserd: `browserctl ls`, everything listed: the N sessions and the kill and exit
    /// samples' (live or exited), and the exited sessions kept from earlier repetitions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ls_ms: Vec<f64>,
    /// browserd: `browserctl ls --state running` while exactly the N sessions run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ls_running_ms: Vec<f64>,
    /// From the polite bulk terminate's request until every session's first signal was
    /// sent: browserd's own log line; the baseline's `killpg` loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_signals_ms: Option<f64>,
    /// browserd: a `status` sent on another connection right after the bulk request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_during_bulk_ms: Option<f64>,
    /// browserd: the same `status`, from a client thread at real-time priority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_during_bulk_urgent_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_at_n_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fds_at_n: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_cpu_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_cpu_ticks_ms: Option<f64>,
    /// browserd only: the daemon's own CPU time per operation, by scenario.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub daemon_cpu_ms: BTreeMap<&'static str, f64>,
    /// browserd only: the same launches against a daemon whose state dir is on tmpfs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_tmpfs_per_s: Option<f64>,
    /// browserd only: reload op sent → `status` answered with `reloads` incremented.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reload_op_ms: Vec<f64>,
    /// browserd only: reload op sent → answered (the new binary's check).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reload_op_answer_ms: Vec<f64>,
    /// browserd only: SIGHUP sent → `status` answered with `reloads` incremented.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reload_sighup_ms: Vec<f64>,
    /// browserd only: per reload, the longest wait of a request of the status loop.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reload_worst_wait_ms: Vec<f64>,
    /// browserd only: requests the status loop sent during the reloads, and how many failed.
    #[serde(skip_serializing_if = "is_zero")]
    pub reload_loop_requests: usize,
    #[serde(skip_serializing_if = "is_zero")]
    pub reload_loop_failures: usize,
    /// browserd only: restart after SIGKILL → `status` with every session running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_adopt_ms: Option<f64>,
    /// browserd only: restart after SIGKILL with no live session → `status` answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_empty_ms: Option<f64>,
    /// browserd only: bulk terminate of the adopted sessions until every process is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulk_adopted_ms: Option<f64>,
    /// browserd only: a queued launch's slot freed → its session started (the daemon's log).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queue_admission_ms: Vec<f64>,
    /// browserd: kill sent → the queued launch answered; baseline: kill sent → answered,
    /// then a launch → answered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queue_after_kill_ms: Vec<f64>,
    /// browserd only, on a daemon also serving HTTP: the socket's `kill` of one session
    /// (forced, default grace), request → answer, N live.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub socket_kill_ms: Vec<f64>,
    /// browserd only: `GET /kill/{id}` on the same daemon, in turn with those.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_kill_ms: Vec<f64>,
    /// browserd only: the socket's polite bulk terminate of N on the HTTP daemon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_bulk_ms: Option<f64>,
    /// browserd only: `POST /v1/sessions/bulk-terminate` of N with the same body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_bulk_ms: Option<f64>,
    /// browserd only: the socket's bulk terminate of N with an SSE subscriber reading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribed_bulk_ms: Option<f64>,
    /// browserd only: the events that subscriber read, from the kill-all's request on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriber_events: Option<usize>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize)]
pub struct Repeat {
    pub browserd: Sample,
    pub baseline: Sample,
}

/// Real-browser measurements (`--browsers K`), pooled.
#[derive(Debug, Default, Clone, Serialize)]
pub struct BrowserRun {
    pub browserd_launch_ms: Vec<f64>,
    pub baseline_launch_ms: Vec<f64>,
    pub browserd_kill_ms: Vec<f64>,
    pub baseline_kill_ms: Vec<f64>,
    /// Processes per browser when its kill began.
    pub browserd_processes: Vec<usize>,
    pub baseline_processes: Vec<usize>,
}

/// The warm pool with real Chromium (`--browsers K`), pooled over its cycles.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PoolRun {
    /// Launch → CDP answers, no pool.
    pub cold_ms: Vec<f64>,
    /// Launch → CDP answers, from a pool of K.
    pub warm_ms: Vec<f64>,
    /// Of which: launch → browserd's answer.
    pub warm_answer_ms: Vec<f64>,
    /// A second CDP connection and `Browser.getVersion` to the same browser.
    pub cdp_again_ms: Vec<f64>,
    /// Browsers per second, from the first hand-out until K are ready again.
    pub refill_per_s: Vec<f64>,
    /// Each warm browser's PSS while it waits, in MiB.
    pub warm_pss_mib: Vec<f64>,
    /// Launches that found the pool empty.
    pub missed: u64,
}

/// How a value is judged.
#[derive(Debug, Clone, Copy)]
enum Target {
    RatioAtLeast(f64),
    RatioAtMost(f64),
    AtMost(f64),
    None,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub key: &'static str,
    pub scenario: String,
    pub unit: &'static str,
    pub browserd: Option<f64>,
    pub baseline: Option<f64>,
    /// browserd ÷ baseline.
    pub ratio: Option<f64>,
    pub target: String,
    /// `None` where there is no target or nothing to judge.
    pub met: Option<bool>,
}

impl Row {
    fn new(
        key: &'static str,
        scenario: String,
        unit: &'static str,
        browserd: Option<f64>,
        baseline: Option<f64>,
        target: Target,
    ) -> Row {
        let ratio = match (browserd, baseline) {
            (Some(b), Some(base)) if base > 0.0 => Some(b / base),
            _ => None,
        };
        let (text, met) = match target {
            Target::RatioAtLeast(r) => (format!("≥ {r}× baseline"), ratio.map(|x| x >= r)),
            Target::RatioAtMost(r) => (format!("≤ {r}× baseline"), ratio.map(|x| x <= r)),
            Target::AtMost(v) => (
                format!("≤ {}", format_value(v, unit)),
                browserd.map(|x| x <= v),
            ),
            Target::None => ("—".to_owned(), None),
        };
        Row {
            key,
            scenario,
            unit,
            browserd,
            baseline,
            ratio,
            target: text,
            met,
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Ours,
    Base,
}

impl Side {
    fn of(self, repeat: &Repeat) -> &Sample {
        match self {
            Side::Ours => &repeat.browserd,
            Side::Base => &repeat.baseline,
        }
    }
}

/// The table's rows, from every repetition.
pub fn rows(
    opts: &Options,
    repeats: &[Repeat],
    rss_empty_kib: Option<u64>,
    browsers: Option<&BrowserRun>,
    pool: Option<&PoolRun>,
) -> Vec<Row> {
    let n = opts.sessions;
    let g = opts.grace.as_millis() as f64;
    let scalar = |side: Side, get: fn(&Sample) -> Option<f64>| {
        let values: Vec<f64> = repeats.iter().filter_map(|r| get(side.of(r))).collect();
        median(&values)
    };
    let pooled = |side: Side, get: fn(&Sample) -> &Vec<f64>, p: f64| {
        let values: Vec<f64> = repeats
            .iter()
            .flat_map(|r| get(side.of(r)).clone())
            .collect();
        percentile(&values, p)
    };
    let both = |get| (scalar(Side::Ours, get), scalar(Side::Base, get));
    let both_pooled = |get, p| (pooled(Side::Ours, get, p), pooled(Side::Base, get, p));

    let mut rows = Vec::new();
    let mut push =
        |key, scenario: String, unit, (ours, base): (Option<f64>, Option<f64>), target| {
            rows.push(Row::new(key, scenario, unit, ours, base, target))
        };
    push(
        "launch",
        format!("launch {n} sessions (journaled, sequential, 1 connection)"),
        "/s",
        both(|s| Some(s.launch_per_s)),
        Target::RatioAtLeast(0.8),
    );
    let tmpfs = scalar(Side::Ours, |s| s.launch_tmpfs_per_s);
    push(
        "launch_tmpfs",
        format!("launch {n} sessions, journal on tmpfs (no disk sync)"),
        "/s",
        (tmpfs, scalar(Side::Base, |s| Some(s.launch_per_s))),
        Target::None,
    );
    let on_disk = scalar(Side::Ours, |s| Some(s.launch_per_s));
    push(
        "journal_cost",
        "journal's disk sync per launch (1/rate on disk − 1/rate on tmpfs)".to_owned(),
        "ms",
        (
            per_launch_ms(on_disk)
                .zip(per_launch_ms(tmpfs))
                .map(|(d, t)| d - t),
            None,
        ),
        Target::None,
    );
    push(
        "bulk_polite",
        format!("bulk terminate all {n}, polite"),
        "ms",
        both(|s| Some(s.bulk_polite_ms)),
        Target::RatioAtMost(1.1),
    );
    push(
        "bulk_polite_paired",
        format!(
            "  the same in pairs with the baseline's, back to back ({} pairs a repeat)",
            crate::paired::PAIRS
        ),
        "ms",
        both_pooled(|s| &s.bulk_polite_paired_ms, 50.0),
        Target::RatioAtMost(1.1),
    );
    push(
        "first_signals",
        format!("  of which: request → all {n} first signals sent"),
        "ms",
        both(|s| s.first_signals_ms),
        Target::AtMost(if n <= 300 { 5.0 } else { 15.0 }),
    );
    push(
        "status_during_bulk",
        "  status answered meanwhile (another connection)".to_owned(),
        "ms",
        (scalar(Side::Ours, |s| s.status_during_bulk_ms), None),
        Target::None,
    );
    push(
        "status_during_bulk_urgent",
        "  status answered meanwhile, real-time client (the daemon's delay alone)".to_owned(),
        "ms",
        (scalar(Side::Ours, |s| s.status_during_bulk_urgent_ms), None),
        Target::None,
    );
    push(
        "bulk_stubborn",
        format!("bulk terminate all {n}, stubborn, force, G={g} ms"),
        "ms",
        both(|s| Some(s.bulk_stubborn_ms)),
        Target::AtMost(g + 150.0),
    );
    push(
        "bulk_stubborn_small",
        format!(
            "bulk terminate all {}, stubborn, force, G={g} ms",
            opts.small_sessions()
        ),
        "ms",
        both(|s| Some(s.bulk_stubborn_small_ms)),
        Target::AtMost(g + 150.0),
    );
    push(
        "kill_one_median",
        format!("kill one of {n}: median (browserctl kill)"),
        "ms",
        both_pooled(|s| &s.kill_one_ms, 50.0),
        Target::AtMost(3.0),
    );
    let bare_start = pooled(Side::Ours, |s| &s.bare_start_ms, 50.0);
    push(
        "kill_one_over_start",
        format!("kill one of {n}: median − bare browserctl start (timed between the kills)"),
        "ms",
        (
            pooled(Side::Ours, |s| &s.kill_one_ms, 50.0)
                .zip(bare_start)
                .map(|(k, b)| k - b),
            None,
        ),
        Target::AtMost(1.0),
    );
    let idle_s = opts.idle.as_secs_f64();
    let after_idle = scalar(Side::Ours, |s| s.kill_one_after_idle_ms);
    // The reference, measured in browserd's run: shown in the baseline's column.
    push(
        "bare_start_after_idle",
        format!("bare browserctl start right after {idle_s} s idle"),
        "ms",
        (None, scalar(Side::Ours, |s| s.bare_start_after_idle_ms)),
        Target::None,
    );
    // Each repeat's kill against its own reference: the median of the differences.
    push(
        "kill_one_after_idle",
        format!(
            "kill one right after {idle_s} s idle − bare start right after {idle_s} s idle (same run; median of differences)"
        ),
        "ms",
        (
            scalar(Side::Ours, |s| {
                Some(s.kill_one_after_idle_ms? - s.bare_start_after_idle_ms?)
            }),
            None,
        ),
        Target::AtMost(1.0),
    );
    push(
        "kill_one_after_idle_over_warm_start",
        format!("kill one right after {idle_s} s idle − bare browserctl start (between kills)"),
        "ms",
        (after_idle.zip(bare_start).map(|(k, b)| k - b), None),
        Target::None,
    );
    let socket_after_idle = scalar(Side::Ours, |s| s.socket_kill_one_after_idle_ms);
    let socket_warm = pooled(Side::Ours, |s| &s.socket_kill_one_ms, 50.0);
    push(
        "socket_kill_one",
        format!("kill one of {n} over the socket, no client start-up: median, warm"),
        "ms",
        (socket_warm, None),
        Target::None,
    );
    push(
        "socket_kill_one_after_idle",
        format!(
            "the same right after {idle_s} s idle − warm (the idle's cost, no client start-up)"
        ),
        "ms",
        (socket_after_idle.zip(socket_warm).map(|(k, w)| k - w), None),
        Target::None,
    );
    push(
        "kill_one_p99",
        format!("kill one of {n}: p99"),
        "ms",
        both_pooled(|s| &s.kill_one_ms, 99.0),
        Target::None,
    );
    push(
        "status_median",
        format!("browserctl status, {n} live: median"),
        "ms",
        both_pooled(|s| &s.status_ms, 50.0),
        Target::AtMost(2.0),
    );
    push(
        "ls_median",
        format!(
            "browserctl ls of the {n} sessions (--state running): median (baseline column: status)"
        ),
        "ms",
        (
            pooled(Side::Ours, |s| &s.ls_running_ms, 50.0),
            pooled(Side::Ours, |s| &s.status_ms, 50.0),
        ),
        Target::RatioAtMost(2.0),
    );
    push(
        "ls_all_median",
        format!(
            "browserctl ls, everything kept ({n} + {} live, up to {KEEP_EXITED} exited): median (baseline column: status)",
            opts.samples
        ),
        "ms",
        (
            pooled(Side::Ours, |s| &s.ls_ms, 50.0),
            pooled(Side::Ours, |s| &s.status_ms, 50.0),
        ),
        Target::None,
    );
    push(
        "natural_exit_median",
        format!("natural exit noticed, {n} live: median"),
        "ms",
        both_pooled(|s| &s.natural_exit_ms, 50.0),
        Target::AtMost(5.0),
    );
    push(
        "rss_empty",
        "daemon RSS, 0 sessions".to_owned(),
        "MiB",
        (rss_empty_kib.map(|k| k as f64 / 1024.0), None),
        Target::None,
    );
    push(
        "rss_at_n",
        format!("daemon RSS, {n} sessions"),
        "MiB",
        (
            scalar(Side::Ours, |s| s.rss_at_n_kib.map(|k| k as f64 / 1024.0)),
            None,
        ),
        Target::AtMost(16.0),
    );
    push(
        "idle_cpu",
        format!(
            "daemon CPU over {} s idle, {} sessions",
            opts.idle.as_secs_f64(),
            crate::scenarios::live_during_idle(opts)
        ),
        "ms",
        (scalar(Side::Ours, |s| s.idle_cpu_ms), None),
        // 10 ms per 10 s, scaled to the window.
        Target::AtMost(opts.idle.as_secs_f64()),
    );
    push(
        "reload_op",
        format!("reload op → serving again, {n} live: median"),
        "ms",
        (pooled(Side::Ours, |s| &s.reload_op_ms, 50.0), None),
        Target::AtMost(100.0),
    );
    push(
        "reload_op_answer",
        "  of which: op answered (new binary checked)".to_owned(),
        "ms",
        (pooled(Side::Ours, |s| &s.reload_op_answer_ms, 50.0), None),
        Target::None,
    );
    push(
        "reload_sighup",
        format!("SIGHUP → serving again, {n} live: median"),
        "ms",
        (pooled(Side::Ours, |s| &s.reload_sighup_ms, 50.0), None),
        Target::AtMost(100.0),
    );
    push(
        "reload_wait_median",
        "status loop during a reload: worst wait, median".to_owned(),
        "ms",
        (pooled(Side::Ours, |s| &s.reload_worst_wait_ms, 50.0), None),
        Target::None,
    );
    push(
        "reload_wait_max",
        "status loop during a reload: worst wait, max".to_owned(),
        "ms",
        (pooled(Side::Ours, |s| &s.reload_worst_wait_ms, 100.0), None),
        Target::None,
    );
    push(
        "restart_adopt",
        format!("SIGKILL, restart → serving, {n} adopted"),
        "ms",
        (scalar(Side::Ours, |s| s.restart_adopt_ms), None),
        Target::AtMost(500.0),
    );
    push(
        "restart_empty",
        "SIGKILL, restart → serving, none live".to_owned(),
        "ms",
        (scalar(Side::Ours, |s| s.restart_empty_ms), None),
        Target::None,
    );
    push(
        "bulk_adopted",
        format!("bulk terminate all {n} adopted, polite (baseline: as above)"),
        "ms",
        (
            scalar(Side::Ours, |s| s.bulk_adopted_ms),
            scalar(Side::Base, |s| Some(s.bulk_polite_ms)),
        ),
        Target::None,
    );
    push(
        "queue_admission_median",
        "queued launch: slot freed → its session started (daemon), median".to_owned(),
        "ms",
        (pooled(Side::Ours, |s| &s.queue_admission_ms, 50.0), None),
        Target::AtMost(1.0),
    );
    push(
        "queue_admission_p99",
        "queued launch: slot freed → its session started (daemon), p99".to_owned(),
        "ms",
        (pooled(Side::Ours, |s| &s.queue_admission_ms, 99.0), None),
        Target::None,
    );
    push(
        "queue_after_kill_median",
        "kill → queued launch answered (baseline: kill, then launch)".to_owned(),
        "ms",
        both_pooled(|s| &s.queue_after_kill_ms, 50.0),
        Target::None,
    );
    let socket_kill = pooled(Side::Ours, |s| &s.socket_kill_ms, 50.0);
    let http_kill = pooled(Side::Ours, |s| &s.http_kill_ms, 50.0);
    push(
        "socket_kill_one_median",
        format!("kill one, {n} live, over the socket (forced): median"),
        "ms",
        (socket_kill, None),
        Target::None,
    );
    push(
        "http_kill_one_median",
        format!("kill one, {n} live, GET /kill/{{id}}: median (baseline: the socket)"),
        "ms",
        (http_kill, socket_kill),
        Target::None,
    );
    push(
        "http_kill_one_over_socket",
        "  GET /kill/{id} − the socket's kill, medians".to_owned(),
        "ms",
        (http_kill.zip(socket_kill).map(|(h, s)| h - s), None),
        Target::AtMost(1.0),
    );
    let socket_bulk = scalar(Side::Ours, |s| s.socket_bulk_ms);
    let http_bulk = scalar(Side::Ours, |s| s.http_bulk_ms);
    push(
        "socket_bulk",
        format!("bulk terminate all {n}, polite, over the socket (HTTP daemon)"),
        "ms",
        (socket_bulk, None),
        Target::None,
    );
    push(
        "http_bulk",
        format!("POST bulk-terminate all {n}, polite (baseline: the socket)"),
        "ms",
        (http_bulk, socket_bulk),
        Target::None,
    );
    push(
        "http_bulk_over_socket",
        "  POST bulk-terminate − the socket's bulk terminate".to_owned(),
        "ms",
        (http_bulk.zip(socket_bulk).map(|(h, s)| h - s), None),
        Target::AtMost(1.0),
    );
    push(
        "bulk_subscribed",
        format!("bulk terminate all {n}, polite, an SSE subscriber reading (baseline: none)"),
        "ms",
        (scalar(Side::Ours, |s| s.subscribed_bulk_ms), socket_bulk),
        Target::RatioAtMost(1.05),
    );
    push(
        "subscriber_events",
        format!(
            "  events the subscriber read (baseline: {} per session killed)",
            crate::http::EVENTS_PER_KILL
        ),
        "events",
        (
            scalar(Side::Ours, |s| s.subscriber_events.map(|e| e as f64)),
            Some((crate::http::EVENTS_PER_KILL * n) as f64),
        ),
        Target::None,
    );
    if let Some(run) = pool {
        let k = opts.browsers;
        push(
            "browser_warm_launch_median",
            format!("Chromium, pool of {k}: launch → CDP answers, median (baseline: no pool)"),
            "ms",
            (median(&run.warm_ms), median(&run.cold_ms)),
            Target::AtMost(5.0),
        );
        push(
            "browser_warm_launch_p99",
            format!("Chromium, pool of {k}: launch → CDP answers, p99 (baseline: no pool)"),
            "ms",
            (
                percentile(&run.warm_ms, 99.0),
                percentile(&run.cold_ms, 99.0),
            ),
            Target::AtMost(20.0),
        );
        push(
            "browser_warm_answer_median",
            "  of which: launch → browserd answered, median (baseline: CDP alone)".to_owned(),
            "ms",
            (median(&run.warm_answer_ms), median(&run.cdp_again_ms)),
            Target::None,
        );
        push(
            "browser_pool_refill",
            format!("Chromium, pool of {k}: refill, first hand-out → {k} ready"),
            "browsers/s",
            (median(&run.refill_per_s), None),
            Target::None,
        );
        push(
            "browser_warm_pss",
            "Chromium: memory of one warm browser waiting (PSS)".to_owned(),
            "MiB",
            (median(&run.warm_pss_mib), None),
            Target::None,
        );
    }
    if let Some(run) = browsers {
        let k = opts.browsers;
        push(
            "browser_launch_median",
            format!("Chromium ×{k}: launch → endpoint answers, median"),
            "ms",
            (
                median(&run.browserd_launch_ms),
                median(&run.baseline_launch_ms),
            ),
            Target::None,
        );
        push(
            "browser_kill_median",
            format!("Chromium ×{k}: kill → all processes gone, median"),
            "ms",
            (median(&run.browserd_kill_ms), median(&run.baseline_kill_ms)),
            Target::None,
        );
    }
    rows
}

/// Milliseconds per launch at `rate` launches per second.
fn per_launch_ms(rate: Option<f64>) -> Option<f64> {
    rate.filter(|r| *r > 0.0).map(|r| 1000.0 / r)
}

fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "/s" => format!("{value:.0}/s"),
        "events" => format!("{value:.0}"),
        "MiB" => format!("{value:.1} MiB"),
        _ if value < 10.0 => format!("{value:.2} {unit}"),
        _ if value < 100.0 => format!("{value:.1} {unit}"),
        _ => format!("{value:.0} {unit}"),
    }
}

/// The table, one row per scenario, columns padded to their widest cell.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "scenario", "browserd", "baseline", "ratio", "target", "met?",
    ]
    .map(String::from);
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let value = |v: Option<f64>| v.map_or("—".to_owned(), |v| format_value(v, r.unit));
            [
                r.scenario.clone(),
                value(r.browserd),
                value(r.baseline),
                r.ratio.map_or("—".to_owned(), |x| format!("{x:.2}×")),
                r.target.clone(),
                match r.met {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "NO".to_owned(),
                    None => "—".to_owned(),
                },
            ]
        })
        .collect();
    let width = |i: usize| {
        cells
            .iter()
            .chain(std::iter::once(&header))
            .map(|c| c[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..6).map(width).collect();
    let line = |c: &[String; 6]| {
        let padded: Vec<String> = c
            .iter()
            .zip(&widths)
            .map(|(text, w)| format!("{text}{}", " ".repeat(w - text.chars().count())))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let mut out = line(&header);
    out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
    for c in &cells {
        out.push_str(&line(c));
    }
    out
}

/// The daemon's CPU time per operation, median over repetitions, one line per scenario.
pub fn daemon_cpu(repeats: &[Repeat]) -> String {
    let keys: Vec<&str> = repeats
        .iter()
        .flat_map(|r| r.browserd.daemon_cpu_ms.keys().copied())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut out = String::new();
    for key in keys {
        let values: Vec<f64> = repeats
            .iter()
            .filter_map(|r| r.browserd.daemon_cpu_ms.get(key).copied())
            .collect();
        if let Some(ms) = median(&values) {
            out.push_str(&format!("  {key}: {}\n", format_value(ms, "ms")));
        }
    }
    out
}

/// Writes `report` as pretty JSON, creating the directory.
pub fn write_json(path: &Path, report: &serde_json::Value) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}
