//! `--browsers K` with a warm pool: a launch answered from a pool of K warm browsers against
//! the same launch with no pool (a cold start), both timed from the request until a CDP
//! client connected to the answered endpoint has its `Browser.getVersion` answered; how
//! fast the pool refills (from its first browser handed out until K are ready again, one
//! browser launched at a time); and what a warm browser costs in memory while it waits (PSS summed over its
//! processes, so pages they share count once).

use crate::cleanup;
use crate::procs;
use crate::report::PoolRun;
use crate::scenarios::call;
use crate::stats::ms;
use browserd_proto::{
    Kill, Launch, LaunchResult, Request, SessionInfo, SessionType, StatusResult, Target,
    TerminateResult,
};
use browserd_tests::cdp::Cdp;
use browserd_tests::{Client, DaemonGuard};
use std::time::{Duration, Instant};

/// How long a pool may take to fill.
const FILL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a full pool is left alone before its memory is measured: Chromium starts
/// helpers for a while after its endpoint answers.
const SETTLE: Duration = Duration::from_secs(3);

fn browser() -> Launch {
    Launch {
        session_type: Some(SessionType::Browser),
        ..Launch::default()
    }
}

/// One launch, timed.
struct Timed {
    /// Request → CDP `Browser.getVersion` answered.
    total_ms: f64,
    /// Request → browserd's answer.
    answer_ms: f64,
    /// A second CDP connection and `Browser.getVersion` to the same browser: the part no
    /// launcher can take away.
    cdp_again_ms: f64,
}

fn cdp_version(endpoint: &str) -> Result<(), String> {
    Cdp::connect(endpoint)
        .and_then(|mut cdp| cdp.product())
        .map(drop)
        .map_err(|e| format!("CDP on {endpoint}: {e}"))
}

/// Launches a browser and connects to it over CDP.
fn launch_and_connect(client: &mut Client) -> Result<(SessionInfo, Timed), String> {
    let start = Instant::now();
    let session = call::<LaunchResult>(client, &Request::Launch(browser()))?.session;
    let answer_ms = ms(start.elapsed());
    let endpoint = session
        .ws_endpoint
        .clone()
        .ok_or("a browser session without an endpoint")?;
    cdp_version(&endpoint)?;
    let total_ms = ms(start.elapsed());
    let again = Instant::now();
    cdp_version(&endpoint)?;
    let timed = Timed {
        total_ms,
        answer_ms,
        cdp_again_ms: ms(again.elapsed()),
    };
    Ok((session, timed))
}

fn kill_all(client: &mut Client) -> Result<(), String> {
    let kill = Kill {
        target: Target::All,
        force: true,
        grace_ms: Some(5000),
    };
    let result: TerminateResult = call(client, &Request::Kill(kill))?;
    match result.failed.as_slice() {
        [] => Ok(()),
        failed => Err(format!("kill all failed: {failed:?}")),
    }
}

/// Waits until the pool has `k` ready browsers; returns how long that took.
fn wait_full(client: &mut Client, k: usize) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let status: StatusResult = call(client, &Request::Status)?;
        if status.pool.is_some_and(|p| p.ready as usize >= k) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > FILL_TIMEOUT {
            return Err(format!("the pool did not fill within {FILL_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The PSS of each warm browser (the daemon's children running no session), in MiB.
fn warm_pss_mib(daemon: i32) -> Vec<f64> {
    let all = procs::scan();
    all.iter()
        .filter(|s| s.ppid == daemon)
        .filter(|s| cmdline_has(s.pid, "--remote-debugging-port=0"))
        .map(|leader| {
            let below = procs::descendants(leader.pid, &all);
            let tree = std::iter::once(leader.pid).chain(below.iter().map(|s| s.pid));
            tree.filter_map(pss_kib).sum::<u64>() as f64 / 1024.0
        })
        .collect()
}

fn cmdline_has(pid: i32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// `Pss:` of `/proc/PID/smaps_rollup`, in KiB.
fn pss_kib(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Cold launches on `d` (no pool), then `cycles` rounds of K launches from a pool of K.
pub fn run(d: &DaemonGuard, k: usize, cycles: usize) -> Result<PoolRun, String> {
    let mut run = PoolRun::default();
    let mut client = d.client();
    for _ in 0..cycles {
        for _ in 0..k {
            let (_, took) = launch_and_connect(&mut client)?;
            run.cold_ms.push(took.total_ms);
        }
        kill_all(&mut client)?;
    }

    let warm = DaemonGuard::builder()
        .max_sessions((2 * k) as u32)
        .flag("--warm", k)
        .start();
    cleanup::remove_on_abort(warm.dir());
    let mut client = warm.client();
    wait_full(&mut client, k)?;
    std::thread::sleep(SETTLE);
    run.warm_pss_mib = warm_pss_mib(warm.pid());
    for _ in 0..cycles {
        wait_full(&mut client, k)?;
        let first_out = Instant::now();
        for _ in 0..k {
            let (_, took) = launch_and_connect(&mut client)?;
            run.warm_ms.push(took.total_ms);
            run.warm_answer_ms.push(took.answer_ms);
            run.cdp_again_ms.push(took.cdp_again_ms);
        }
        wait_full(&mut client, k)?;
        run.refill_per_s
            .push(k as f64 / first_out.elapsed().as_secs_f64());
        kill_all(&mut client)?;
    }
    let status: StatusResult = call(&mut client, &Request::Status)?;
    run.missed = status.pool.map_or(0, |p| p.missed);
    Ok(run)
}
