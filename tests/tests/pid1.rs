//! browserd as PID 1 of a container: started as the first process of a new PID namespace
//! (`unshare --pid --fork --mount-proc`, what a container runtime does to an entrypoint), it
//! reaps every orphan its sessions leave, serves `browserctl` from outside the namespace,
//! and on SIGTERM terminates every session and exits 0.

use browserd_proto::{Launch, LaunchResult, Request, SessionInfo, SessionType, StatusResult};
use browserd_tests::service::Pid1Daemon;
use browserd_tests::{procfs, wait_until};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// How many sessions orphan grandchildren, and how many each.
const SESSIONS: usize = 2;
const ORPHANS: usize = 100;
const WAIT: Duration = Duration::from_secs(15);

/// A leader that double-forks `ORPHANS` helpers into sessions of their own (each blocks
/// opening the FIFO `$1` until the test opens it), records a SIGTERM in `$2`, and waits.
/// The helpers' parents exit at once, so every helper is re-parented to the daemon.
const ORPHANER: &str = r#"trap 'echo "$$" >> "$2"; exit 0' TERM
i=0
while [ "$i" -lt "$3" ]; do
  (setsid sh -c 'read -r _ < "$0"' "$1" &)
  i=$((i + 1))
done
sleep 1000 &
wait"#;

fn launch_orphaner(d: &Pid1Daemon, fifo: &Path, terms: &Path) -> SessionInfo {
    let command = ["/bin/sh", "-c", ORPHANER, "orphaner"]
        .into_iter()
        .map(str::to_owned)
        .chain([
            fifo.display().to_string(),
            terms.display().to_string(),
            ORPHANS.to_string(),
        ])
        .collect();
    let launch = Launch {
        session_type: Some(SessionType::Sandbox),
        command: Some(command),
        ..Launch::default()
    };
    let result: LaunchResult = d
        .client()
        .request(&Request::Launch(launch))
        .into_result()
        .expect("launch the orphaner");
    result.session
}

#[test]
fn as_pid_1_it_reaps_every_orphan_serves_clients_and_stops_cleanly() {
    let mut d = match Pid1Daemon::start(&["--grace", "5s"]) {
        Ok(d) => d,
        Err(reason) => {
            eprintln!("skipping: {reason}");
            return;
        }
    };
    let daemon = d.host_pid();

    // browserctl, from outside the namespace, talks to PID 1 of the namespace.
    let out = d.ctl(&["--json", "status"]);
    assert!(
        out.status.success(),
        "browserctl status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: StatusResult = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status.pid, 1, "browserd is PID 1 of its namespace");

    let terms = d.dir().join("terms");
    let mut sessions = Vec::new();
    let mut fifos = Vec::new();
    for i in 0..SESSIONS {
        let fifo = d.dir().join(format!("gate{i}"));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        sessions.push(launch_orphaner(&d, &fifo, &terms));
        fifos.push(fifo);
    }

    // Every helper ends up a child of the daemon: per session, its leader plus ORPHANS.
    wait_until(WAIT, "every orphan to be re-parented to the daemon", || {
        let mut per_session: HashMap<String, usize> = HashMap::new();
        for child in d.children() {
            if let Some(id) = child.session {
                *per_session.entry(id).or_default() += 1;
            }
        }
        sessions
            .iter()
            .all(|s| per_session.get(s.id.as_str()) == Some(&(ORPHANS + 1)))
    });

    // Release them all at once: opening the FIFOs for writing lets every `read` finish.
    for fifo in &fifos {
        drop(
            std::fs::OpenOptions::new()
                .write(true)
                .open(fifo)
                .expect("open the gate"),
        );
    }
    wait_until(WAIT, "the daemon to reap every orphan", || {
        let children = d.children();
        children.len() == SESSIONS && children.iter().all(|c| !c.is_zombie())
    });
    let zombies = procfs::zombie_children_of(daemon);
    assert!(zombies.is_empty(), "unreaped: {zombies:#?}");

    // A kill through browserctl from outside.
    let first = &sessions[0];
    let out = d.ctl(&["kill", first.id.as_str()]);
    assert!(
        out.status.success(),
        "browserctl kill failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(procfs::session_processes(first.id.as_str()).is_empty());

    // SIGTERM to PID 1: every remaining session is terminated (its leader records the
    // SIGTERM), the daemon exits 0 and removes its socket.
    d.signal(libc::SIGTERM);
    let exit = d.wait_exit(WAIT);
    assert!(exit.success(), "browserd (PID 1) exited with {exit}");
    let recorded = std::fs::read_to_string(&terms).unwrap_or_default();
    assert_eq!(
        recorded.lines().count(),
        SESSIONS,
        "every session's leader should have received SIGTERM from the daemon: {recorded:?}"
    );
    for session in &sessions {
        assert!(procfs::session_processes(session.id.as_str()).is_empty());
    }
    assert!(!d.socket().exists(), "the socket file should be removed");
    let log = d.log();
    assert!(!log.contains("ERROR"), "the daemon logged errors:\n{log}");
}
