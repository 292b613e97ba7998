//! `--browsers K`: real Chromium through browserd, against the same Chromium (the argv
//! browserd used, with a profile of the bench's own) started directly. Launch is timed until
//! the DevTools endpoint accepts connections (what browserd waits for before answering);
//! kill until every process of the browser is gone and reaped. Both sides start all K
//! browsers, then kill them one by one; both send SIGTERM, and SIGKILL after a grace period,
//! but browserd first asks the browser to close itself over CDP.

use crate::baseline::GONE_TIMEOUT;
use crate::cleanup;
use crate::options::Options;
use crate::procs::{self, Stat};
use crate::report::BrowserRun;
use crate::scenarios::call;
use crate::stats::ms;
use browserd_proto::{
    Kill, Launch, LaunchResult, Request, SessionType, TerminateResult, SESSION_ENV,
};
use browserd_tests::{DaemonGuard, ProcId};
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a browser may take to announce its endpoint.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace between SIGTERM and SIGKILL, on both sides.
const GRACE: Duration = Duration::from_secs(5);

pub fn run(d: &DaemonGuard, opts: &Options, notes: &mut Vec<String>) -> Result<BrowserRun, String> {
    let mut run = BrowserRun::default();
    let mut client = d.client();
    for rep in 0..opts.repeat {
        let mut sessions = Vec::new();
        for _ in 0..opts.browsers {
            let launch = Launch {
                session_type: Some(SessionType::Browser),
                ..Default::default()
            };
            let start = Instant::now();
            let launched: LaunchResult = call(&mut client, &Request::Launch(launch))?;
            run.browserd_launch_ms.push(ms(start.elapsed()));
            sessions.push(launched.session);
        }
        let argv = sessions
            .first()
            .map(|s| s.command.clone())
            .unwrap_or_default();
        for session in &sessions {
            let known = tree_of(session.pid);
            run.browserd_processes.push(known.len());
            let kill = Kill {
                target: session.id.as_str().parse().map_err(|e| format!("{e}"))?,
                force: true,
                grace_ms: Some(GRACE.as_millis() as u64),
            };
            let start = Instant::now();
            let result: TerminateResult = call(&mut client, &Request::Kill(kill))?;
            let mut took = ms(start.elapsed());
            if !result.failed.is_empty() {
                notes.push(format!(
                    "rep {rep}: browser kill failed: {:?}",
                    result.failed
                ));
            }
            if !is_gone(session.pid, &known) {
                notes.push(format!(
                    "rep {rep}: browser session {} had processes left when browserd answered",
                    session.id
                ));
                wait_gone(session.pid, &known, false, GONE_TIMEOUT)?;
                took = ms(start.elapsed());
            }
            run.browserd_kill_ms.push(took);
        }
        // The same pattern without browserd: all K started, then each killed.
        let mut direct = Vec::new();
        for i in 0..opts.browsers {
            let (browser, took) = launch_direct(&argv, rep, i)?;
            run.baseline_launch_ms.push(took);
            direct.push(browser);
        }
        for browser in direct {
            let (took, processes) = kill_direct(browser)?;
            run.baseline_kill_ms.push(took);
            run.baseline_processes.push(processes);
        }
    }
    Ok(run)
}

/// The browser's processes now: the leader and everything below it.
fn tree_of(leader: i32) -> Vec<ProcId> {
    let all = procs::scan();
    let mut tree: Vec<ProcId> = procs::descendants(leader, &all)
        .iter()
        .map(Stat::id)
        .collect();
    if let Some(me) = all.iter().find(|s| s.pid == leader) {
        tree.push(me.id());
    }
    tree
}

/// Whether every known process is gone and nothing else is left in the leader's process group.
fn is_gone(leader: i32, known: &[ProcId]) -> bool {
    procs::count_present(known) == 0 && !procs::scan().iter().any(|s| s.pgid == leader)
}

fn wait_gone(leader: i32, known: &[ProcId], reap: bool, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    procs::wait_gone(known, timeout, reap)
        .map_err(|left| format!("{left} browser process(es) outlived the kill"))?;
    while procs::scan().iter().any(|s| s.pgid == leader) {
        if start.elapsed() > timeout {
            return Err(format!("browser session {leader} still has processes"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// A Chromium the bench started itself; dropping it SIGKILLs whatever is left of it.
struct Direct {
    leader: i32,
    /// Holds the profile and TMPDIR; removed on drop.
    _dir: tempfile::TempDir,
    killed: bool,
}

impl Drop for Direct {
    fn drop(&mut self) {
        if !self.killed {
            cleanup::killpg(self.leader, Signal::SIGKILL);
            let _ = wait_gone(self.leader, &tree_of(self.leader), true, GONE_TIMEOUT);
        }
    }
}

/// Starts Chromium with `argv` (browserd's, with a profile of the bench's own) and waits
/// until its endpoint accepts connections. Returns it and the launch time.
fn launch_direct(argv: &[String], rep: usize, i: usize) -> Result<(Direct, f64), String> {
    let dir = tempfile::Builder::new()
        .prefix("bench-browser")
        .tempdir()
        .map_err(|e| format!("cannot create a profile dir: {e}"))?;
    let (profile, tmp) = (dir.path().join("profile"), dir.path().join("tmp"));
    for d in [&profile, &tmp] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let argv: Vec<String> = argv
        .iter()
        .map(|a| match a.strip_prefix("--user-data-dir=") {
            Some(_) => format!("--user-data-dir={}", profile.display()),
            None => a.clone(),
        })
        .collect();
    let (program, args) = argv
        .split_first()
        .ok_or("browserd reported no browser argv")?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env(
            SESSION_ENV,
            format!("bench-{}-browser-{rep}-{i}", std::process::id()),
        )
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
    }
    let start = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let leader = child.id() as i32;
    cleanup::register_leader(leader);
    let stderr = child.stderr.take().ok_or("no stderr pipe")?;
    drop(child);
    let direct = Direct {
        leader,
        _dir: dir,
        killed: false,
    };
    // Read until the endpoint line, then keep draining so Chromium never blocks on stderr.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    sent = tx.send(url.trim().to_owned()).is_ok();
                }
            }
        }
    });
    let url = rx
        .recv_timeout(LAUNCH_TIMEOUT)
        .map_err(|_| format!("Chromium announced no endpoint within {LAUNCH_TIMEOUT:?}"))?;
    let addr = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("unexpected endpoint `{url}`"))?;
    std::net::TcpStream::connect(addr).map_err(|e| format!("endpoint {addr} refused: {e}"))?;
    Ok((direct, ms(start.elapsed())))
}

/// SIGTERM to the browser's group, SIGKILL to all of it after the grace; returns the time
/// until every process is gone and reaped, and how many there were.
fn kill_direct(mut direct: Direct) -> Result<(f64, usize), String> {
    let leader = direct.leader;
    let known = tree_of(leader);
    let start = Instant::now();
    cleanup::killpg(leader, Signal::SIGTERM);
    if wait_gone(leader, &known, true, GRACE).is_err() {
        cleanup::killpg(leader, Signal::SIGKILL);
        let all = tree_of(leader);
        for id in &all {
            if let Some(pidfd) = procs::PidFd::open(*id) {
                pidfd.signal(libc::SIGKILL);
            }
        }
        wait_gone(leader, &[known.clone(), all].concat(), true, GONE_TIMEOUT)?;
    }
    direct.killed = true;
    Ok((ms(start.elapsed()), known.len()))
}
