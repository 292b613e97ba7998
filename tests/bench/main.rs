//! `bench`: how fast and how completely browserd kills, and what it costs while idle,
//! against a baseline measured in the same run — the bench itself doing the same work with
//! no daemon (fork/exec the same trees, `killpg`, reap, poll `/proc` until gone) — and how
//! quickly it comes back from a reload or a crash with N sessions live. It starts its own
//! daemon on a temp socket, repeats every scenario, leaves nothing running, and prints a
//! table plus a JSON report. Performance is measured here, never asserted in tests.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p browserd-tests --bin bench -- --sessions 1000
//! ```

mod adopt;
mod baseline;
mod binaries;
mod browsers;
mod cleanup;
mod http;
mod http_client;
mod journal;
mod options;
mod paired;
mod pool;
mod procs;
mod queue;
mod reload;
mod report;
mod scenarios;
mod stats;

use browserd_tests::cgroups::PrivateCgroup;
use browserd_tests::DaemonGuard;
use options::{Options, Parsed};
use report::Repeat;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

fn main() -> ExitCode {
    let opts = match options::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(opts)) => opts,
        Ok(Parsed::Help) => {
            println!("{}", options::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    // browserd takes RUST_LOG over its --log-level (the harness passes `debug`, which would
    // cost the daemon measurable time at 1000 sessions). Set while no other thread exists.
    // `browserd::timing` says when every first signal of a bulk termination was out.
    std::env::set_var(
        "RUST_LOG",
        format!("{},browserd::timing=debug", opts.daemon_log),
    );
    if let Err(e) = cleanup::install() {
        eprintln!("bench: {e}");
        return ExitCode::FAILURE;
    }
    let bins = match binaries::locate(opts.allow_stale) {
        Ok(bins) => bins,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    let result = run(&opts, &bins);
    cleanup::wait_if_aborting();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Options, bins: &binaries::Binaries) -> Result<(), String> {
    let started = Instant::now();
    let load_before = loadavg();
    let started_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    eprintln!(
        "bench: {} sessions × {} repeat(s), browserd {} ({})",
        opts.sessions,
        opts.repeat,
        bins.browserd.display(),
        bins.profile
    );
    if bins.profile != "release" {
        eprintln!("bench: WARNING: not a release build; the numbers say little about browserd");
    }
    let mut notes = Vec::new();
    let live_at_most = scenarios::live_during_idle(opts) + opts.browsers;
    let cgroup = match opts.cgroup {
        true => {
            let cgroup = PrivateCgroup::create("bench").map_err(|e| format!("--cgroup: {e}"))?;
            cleanup::remove_cgroup_on_abort(cgroup.path());
            Some(cgroup)
        }
        false => None,
    };
    // The baseline's own subtree, with the controllers browserd enables for its sessions.
    let baseline_cgroup = match opts.cgroup {
        true => Some(baseline::containment()?),
        false => None,
    };
    let mut builder = DaemonGuard::builder()
        .max_sessions((live_at_most + 16) as u32)
        .grace(&format!("{}ms", opts.grace.as_millis()))
        .max_grace("60s");
    if let Some(cgroup) = &cgroup {
        builder = builder.flag("--cgroup-root", cgroup.path().display());
    }
    let mut d = builder.start();
    cleanup::set_daemon(d.pid(), d.dir().to_path_buf())?;
    std::thread::sleep(Duration::from_millis(200));
    let rss_empty = procs::rss_kib(d.pid());
    let first_pid = d.pid();
    let state_fs = journal::filesystem(d.state_dir());

    let mut repeats = Vec::new();
    for rep in 0..opts.repeat {
        eprintln!("bench: repeat {}/{}: baseline", rep + 1, opts.repeat);
        let mut baseline = baseline::run_once(
            opts,
            &bins.browserctl,
            baseline_cgroup.as_ref().map(PrivateCgroup::path),
        )?;
        eprintln!(
            "bench: repeat {}/{}: launches with the journal on tmpfs",
            rep + 1,
            opts.repeat
        );
        let launch_tmpfs = journal::launch_on_tmpfs(opts)?;
        eprintln!("bench: repeat {}/{}: browserd", rep + 1, opts.repeat);
        let mut browserd = scenarios::run_once(&d, opts, &bins.browserctl, rep, &mut notes)?;
        browserd.launch_tmpfs_per_s = Some(launch_tmpfs);
        eprintln!(
            "bench: repeat {}/{}: polite kill-alls paired with the baseline's",
            rep + 1,
            opts.repeat
        );
        let (ours, theirs) = paired::run_once(
            &d,
            opts.sessions,
            baseline_cgroup.as_ref().map(PrivateCgroup::path),
            rep,
            &mut notes,
        )?;
        browserd.bulk_polite_paired_ms = ours;
        baseline.bulk_polite_paired_ms = theirs;
        eprintln!(
            "bench: repeat {}/{}: crash and restart",
            rep + 1,
            opts.repeat
        );
        adopt::run_once(&mut d, opts, rep, &mut browserd, &mut notes)?;
        eprintln!("bench: repeat {}/{}: queued launches", rep + 1, opts.repeat);
        queue::run_once(opts.samples, &mut browserd, &mut baseline, &mut notes)?;
        eprintln!(
            "bench: repeat {}/{}: HTTP next to the socket, an event subscriber",
            rep + 1,
            opts.repeat
        );
        http::run_once(opts, rep, &mut browserd, &mut notes)?;
        repeats.push(Repeat { browserd, baseline });
    }
    let browsers = if opts.browsers > 0 {
        eprintln!(
            "bench: {} Chromium session(s) × {}",
            opts.browsers, opts.repeat
        );
        Some(browsers::run(&d, opts, &mut notes)?)
    } else {
        None
    };
    // With --browsers K: as many cycles of K launches as make about --samples launches.
    let pool = if let Some(per_browser) = opts.samples.checked_div(opts.browsers) {
        let cycles = per_browser.clamp(3, 20);
        eprintln!(
            "bench: a warm pool of {} Chromium × {cycles} cycles, and as many cold launches",
            opts.browsers
        );
        let run = pool::run(&d, opts.browsers, cycles)?;
        if run.missed > 0 {
            notes.push(format!(
                "warm pool: {} launches found the pool empty (cold starts among the warm figures)",
                run.missed
            ));
        }
        Some(run)
    } else {
        None
    };
    let rss_end = procs::rss_kib(d.pid());
    let daemon_pid = d.pid();
    let containment = d.status().containment.map(|c| c.mode);
    drop(d);
    drop(cgroup);
    drop(baseline_cgroup);
    cleanup::clear_daemon();
    let leftovers = cleanup::kill_descendants(Duration::from_secs(10));
    if leftovers > 0 {
        notes.push(format!(
            "{leftovers} process(es) were still running at the end and were SIGKILLed"
        ));
    }

    let rows = report::rows(opts, &repeats, rss_empty, browsers.as_ref(), pool.as_ref());
    println!();
    print!("{}", report::table(&rows));
    println!(
        "\nN = {}, {} repeat(s) (median; latencies pooled over {} samples per repeat), \
         {} CPU(s), {} build; sessions contained by {}",
        opts.sessions,
        opts.repeat,
        opts.samples,
        cpus(),
        bins.profile,
        containment.as_deref().unwrap_or("unknown")
    );
    print!(
        "\nbrowserd's own CPU time (median over repeats):\n{}",
        report::daemon_cpu(&repeats)
    );
    println!(
        "journal: the daemon's state dir is on {state_fs}; the comparison daemon's on {}",
        journal::filesystem(std::path::Path::new("/dev/shm"))
    );
    let load_after = loadavg();
    println!(
        "load average (1 min) before/after: {load_before} / {load_after}; other work on the \
         machine skews the numbers"
    );
    println!("leftover processes after the run: {leftovers}");
    for note in &notes {
        println!("note: {note}");
    }
    let path = opts.json.clone().unwrap_or_else(default_json);
    let json = json!({
        "meta": {
            "sessions": opts.sessions,
            "small_sessions": opts.small_sessions(),
            "repeat": opts.repeat,
            "samples": opts.samples,
            "grace_ms": opts.grace.as_millis() as u64,
            "idle_ms": opts.idle.as_millis() as u64,
            "browsers": opts.browsers,
            "cpus": cpus(),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default().trim(),
            "profile": bins.profile,
            "browserd": bins.browserd,
            "browserctl": bins.browserctl,
            "daemon_pid": first_pid,
            "daemon_pid_end": daemon_pid,
            "state_dir_fs": state_fs,
            "containment": containment,
            "started_unix": started_at,
            "duration_s": started.elapsed().as_secs_f64(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "rows": rows,
        "daemon": { "rss_empty_kib": rss_empty, "rss_end_kib": rss_end },
        "repeats": repeats,
        "browsers": browsers,
        "pool": pool,
        "leftover_processes": leftovers,
        "notes": notes,
    });
    report::write_json(&path, &json)?;
    println!("JSON report: {}", path.display());
    Ok(())
}

/// The 1-minute load average, as `/proc/loadavg` shows it.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `target/bench/bench.json`, next to the profile dir the bench runs from.
fn default_json() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .parent()
        .and_then(|profile| profile.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("bench").join("bench.json")
}
