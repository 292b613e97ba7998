//! browserd under systemd: the unit files verify clean and say what the contract needs, the
//! notify protocol is spoken for real (the test plays systemd's side of `NOTIFY_SOCKET`), and
//! a socket-activated daemon serves the listener it inherits as fd 3.

use browserd_proto::duration::parse_duration;
use browserd_proto::{encode_request, Request, Response, StatusResult};
use browserd_tests::daemon::{EXIT_TIMEOUT, READY_TIMEOUT};
use browserd_tests::service::{run_browserd_via_sh, socket_inode, socket_inodes, NotifySocket};
use browserd_tests::{DaemonGuard, Fixture};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

/// The watchdog interval the notify tests arm: pings every 100 ms.
const WATCHDOG_USEC: &str = "200000";

fn unit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .join("systemd")
}

fn read_unit(name: &str) -> String {
    let path = unit_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every `Key=value` of `section` in a unit file, in order (comments and blanks skipped).
fn settings(unit: &str, section: &str) -> BTreeMap<String, Vec<String>> {
    let mut current = String::new();
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
        } else if current == section {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not a setting: {line:?}"));
            found
                .entry(key.trim().to_owned())
                .or_default()
                .push(value.trim().to_owned());
        }
    }
    found
}

fn one<'a>(settings: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match settings.get(key).map(Vec::as_slice) {
        Some([value]) => value,
        other => panic!("expected exactly one {key}=, found {other:?}"),
    }
}

/// The entries of process `pid`'s environment whose names are in `names`.
fn env_of(pid: i32, names: &[&str]) -> Vec<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read the environ");
    environ
        .split(|&b| b == 0)
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .filter(|entry| {
            names
                .iter()
                .any(|name| entry.starts_with(&format!("{name}=")))
        })
        .collect()
}

/// One request on an already connected stream.
fn request_on(stream: UnixStream, request: &Request) -> Response {
    stream
        .set_read_timeout(Some(READY_TIMEOUT))
        .expect("set a read timeout");
    (&stream)
        .write_all(encode_request(None, request).as_bytes())
        .expect("send the request");
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .expect("read the response");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a response ({e}): {line:?}"))
}

// ----- the unit files -----

#[test]
fn unit_files_verify_clean() {
    let dir = tempfile::tempdir().expect("temp dir");
    // verify checks that ExecStart= and ExecReload= name executables; point them at the
    // binaries under test instead of the install paths. Nothing else changes.
    let path = |bin: PathBuf| bin.to_str().expect("a UTF-8 path").to_owned();
    let service = read_unit("browserd.service")
        .replace(
            "/usr/local/bin/browserctl",
            &path(browserd_tests::browserctl_bin()),
        )
        .replace(
            "/usr/local/bin/browserd",
            &path(browserd_tests::browserd_bin()),
        );
    std::fs::write(dir.path().join("browserd.service"), service).unwrap();
    std::fs::write(
        dir.path().join("browserd.socket"),
        read_unit("browserd.socket"),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("browserd.service"))
        .arg(dir.path().join("browserd.socket"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze ({e}); install Debian's `systemd` (scripts/deps does)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Only complaints about our units count; the host's own units are not ours to judge.
    let ours: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("browserd") || line.contains(&*dir.path().to_string_lossy()))
        .collect();
    assert!(
        output.status.success() && ours.is_empty(),
        "systemd-analyze verify ({}) complained:\n{text}",
        output.status
    );
}

#[test]
fn service_unit_states_the_contract() {
    let unit = read_unit("browserd.service");
    let service = settings(&unit, "Service");
    assert_eq!(one(&service, "Type"), "notify");
    assert_eq!(one(&service, "KillMode"), "mixed");
    assert_eq!(one(&service, "Restart"), "on-failure");
    assert_eq!(one(&service, "RuntimeDirectory"), "browserd");
    assert_eq!(one(&service, "StateDirectory"), "browserd");
    assert_eq!(one(&service, "User"), "browserd");
    assert_eq!(one(&service, "Group"), "browserd");
    assert!(service.contains_key("WatchdogSec"));
    let reload = one(&service, "ExecReload");
    assert!(
        reload.ends_with("browserctl --socket %t/browserd/browserd.sock daemon reload"),
        "systemctl reload must re-execute browserd in place and wait for it: {reload}"
    );
    let exec = one(&service, "ExecStart");
    assert!(
        exec.contains("--socket %t/browserd/browserd.sock")
            && exec.contains("--allow-gid browserd"),
        "ExecStart= must serve the runtime dir's socket to the browserd group: {exec}"
    );
    // Options that would disable Chromium's setuid sandbox (see the unit's comments).
    for breaks_chromium in [
        "NoNewPrivileges",
        "RestrictSUIDSGID",
        "RestrictNamespaces",
        "SystemCallFilter",
        "MemoryDenyWriteExecute",
        "DynamicUser",
        "ProtectProc",
    ] {
        assert!(
            !service.contains_key(breaks_chromium),
            "{breaks_chromium}= breaks Chromium's sandbox or the peer check"
        );
    }

    let socket = settings(&read_unit("browserd.socket"), "Socket");
    assert_eq!(
        one(&socket, "ListenStream"),
        "%t/browserd/browserd.sock",
        "the socket unit and the service must agree on the path"
    );
    assert_eq!(one(&socket, "SocketGroup"), "browserd");
    assert_eq!(one(&socket, "SocketMode"), "0660");
}

#[test]
fn stop_timeout_outlasts_the_largest_grace() {
    let service = settings(&read_unit("browserd.service"), "Service");
    let timeout = parse_duration(one(&service, "TimeoutStopSec")).expect("a duration with a unit");
    // The unit passes no --max-grace, so the daemon's default applies; ask the daemon.
    let d = DaemonGuard::start();
    let status = d.status();
    let max_grace = Duration::from_millis(status.limits.max_grace_ms);
    // After the grace, a forced kill gets 5 s to verify every process is gone.
    assert!(
        timeout > max_grace + Duration::from_secs(5),
        "TimeoutStopSec={timeout:?} must exceed the max grace {max_grace:?} plus the SIGKILL wait"
    );
}

#[test]
fn sysusers_file_creates_the_user_and_group_the_units_name() {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let output = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg(unit_dir().join("browserd.sysusers"))
        .output()
        .expect("run systemd-sysusers (Debian's `systemd`)");
    assert!(
        output.status.success(),
        "systemd-sysusers failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(
        passwd.lines().any(|l| l.starts_with("browserd:")),
        "{passwd}"
    );
    assert!(group.lines().any(|l| l.starts_with("browserd:")), "{group}");
}

// ----- Type=notify -----

#[test]
fn notify_ready_after_the_socket_accepts_then_status_watchdog_and_stopping() {
    let notify = NotifySocket::bind();
    let notify_path = notify.path().to_owned();
    // The test, like systemd, learns of readiness only from READY=1; the checker connects the
    // moment it arrives, once, with no retry.
    let (path_tx, path_rx) = mpsc::channel();
    let checker = std::thread::spawn(move || {
        let socket: PathBuf = path_rx.recv().expect("the socket path");
        let (ready, before) = notify.wait_for(READY_TIMEOUT, "READY=1", |n| n.has("READY", "1"));
        let connected = UnixStream::connect(&socket);
        (notify, ready, before, connected)
    });
    let d = DaemonGuard::builder()
        .env("NOTIFY_SOCKET", notify_path)
        .env("WATCHDOG_USEC", WATCHDOG_USEC)
        .prepare(move |socket| path_tx.send(socket.to_owned()).unwrap())
        .start();
    let (notify, ready, before, connected) = checker.join().expect("the checker thread");
    assert!(
        before.is_empty(),
        "nothing should precede READY=1, got {before:?}"
    );
    let stream = connected.unwrap_or_else(|e| {
        panic!("READY=1 arrived but the socket refused a connection at that moment: {e}")
    });
    let status: StatusResult = request_on(stream, &Request::Status)
        .into_result()
        .expect("status over the connection made at READY=1");
    assert_eq!(status.pid, d.pid() as u32);
    assert_eq!(
        ready.get("STATUS"),
        Some("serving; sessions: 0 running, 0 starting, 0 terminating")
    );

    // The session counts follow launches, and sessions never see the daemon's variables.
    let (session, _tree) = d.spawn(&Fixture::sleeper());
    notify.wait_for(Duration::from_secs(5), "STATUS with 1 running", |n| {
        n.get("STATUS")
            .is_some_and(|s| s.contains("sessions: 1 running"))
    });
    let leaked = env_of(
        session.pid,
        &["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"],
    );
    assert!(leaked.is_empty(), "a session inherited {leaked:?}");

    // Watchdog pings keep coming (every 100 ms; the period itself is unit-tested in the
    // daemon, since a loaded machine delays datagrams in either direction).
    notify.drain();
    for n in 1..=3 {
        notify.wait_for(Duration::from_secs(5), &format!("WATCHDOG=1 #{n}"), |n| {
            n.has("WATCHDOG", "1")
        });
    }

    d.send_signal(Signal::SIGTERM);
    let (stopping, _) = notify.wait_for(EXIT_TIMEOUT, "STOPPING=1", |n| n.has("STOPPING", "1"));
    assert!(
        stopping
            .get("STATUS")
            .is_some_and(|s| s.starts_with("stopping;")),
        "{stopping:?}"
    );
    let exit = d.wait_exit(EXIT_TIMEOUT);
    assert!(exit.success(), "browserd exited with {exit}");
    d.assert_all_sessions_gone();
}

#[test]
fn a_reload_says_reloading_then_ready_and_keeps_the_watchdog_and_sessions() {
    let notify = NotifySocket::bind();
    let d = DaemonGuard::builder()
        .env("NOTIFY_SOCKET", notify.path())
        .env("WATCHDOG_USEC", WATCHDOG_USEC)
        .start();
    notify.wait_for(READY_TIMEOUT, "READY=1", |n| n.has("READY", "1"));
    let (session, tree) = d.spawn(&Fixture::polite());
    let reload = d.ctl(&["daemon", "reload"]);
    assert!(
        reload.status.success(),
        "browserctl daemon reload: {}",
        String::from_utf8_lossy(&reload.stderr)
    );
    let (reloading, _) = notify.wait_for(READY_TIMEOUT, "RELOADING=1", |n| n.has("RELOADING", "1"));
    let usec: u64 = reloading
        .get("MONOTONIC_USEC")
        .expect("RELOADING=1 comes with MONOTONIC_USEC, as systemd requires")
        .parse()
        .expect("a number");
    assert!(usec > 0);
    notify.wait_for(READY_TIMEOUT, "READY=1 from the re-executed daemon", |n| {
        n.has("READY", "1")
    });
    // The re-executed daemon pings the watchdog, from the same pid systemd knows.
    notify.drain();
    notify.wait_for(Duration::from_secs(5), "WATCHDOG=1 after the reload", |n| {
        n.has("WATCHDOG", "1")
    });
    let status = d.status();
    assert_eq!((status.pid as i32, status.reloads), (d.pid(), 1));
    assert_eq!(d.session(&session.id).pid, session.pid);
    d.assert_tree_alive(&tree);
    let leaked = env_of(session.pid, &["BROWSERD_HANDOVER"]);
    assert!(leaked.is_empty(), "a session inherited {leaked:?}");
    d.send_signal(Signal::SIGTERM);
    notify.wait_for(EXIT_TIMEOUT, "STOPPING=1", |n| n.has("STOPPING", "1"));
    assert!(d.wait_exit(EXIT_TIMEOUT).success());
    d.assert_all_sessions_gone();
}

#[test]
fn no_watchdog_pings_when_the_watchdog_is_meant_for_another_process() {
    let notify = NotifySocket::bind();
    let d = DaemonGuard::builder()
        .env("NOTIFY_SOCKET", notify.path())
        .env("WATCHDOG_USEC", WATCHDOG_USEC)
        .env("WATCHDOG_PID", "1")
        .start();
    notify.wait_for(READY_TIMEOUT, "READY=1", |n| n.has("READY", "1"));
    // Armed, the watchdog would have pinged about 5 times in this window.
    let got = notify.collect_for(Duration::from_millis(500));
    assert!(
        got.iter().all(|n| n.get("WATCHDOG").is_none()),
        "WATCHDOG_PID=1 is not browserd, yet it pinged: {got:?}"
    );
    drop(d);
}

// ----- socket activation -----

#[test]
fn socket_activated_daemon_serves_the_inherited_socket_and_leaves_it_in_place() {
    let d = DaemonGuard::builder().socket_activated().start();
    let status = d.status();
    assert_eq!(Path::new(&status.socket), d.socket());
    let listener =
        socket_inode(d.pid(), 3).expect("the daemon keeps the inherited listener as fd 3");

    let (session, tree) = d.spawn(&Fixture::polite());
    for process in &tree.procs {
        assert!(
            !socket_inodes(process.pid).contains(&listener),
            "session process {} inherited the daemon's listener",
            process.pid
        );
    }
    let leaked = env_of(session.pid, &["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"]);
    assert!(leaked.is_empty(), "a session inherited {leaked:?}");

    let out = d.ctl(&["kill", session.id.as_str()]);
    assert!(
        out.status.success(),
        "browserctl kill through the inherited socket failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.assert_session_gone(&session.id);

    d.send_signal(Signal::SIGTERM);
    let exit = d.wait_exit(EXIT_TIMEOUT);
    assert!(exit.success(), "browserd exited with {exit}");
    let meta = std::fs::symlink_metadata(d.socket())
        .expect("the socket file belongs to the service manager and must stay");
    assert!(meta.file_type().is_socket());
}

/// A start the daemon must refuse: `sh` runs `script` (ending in `exec "$0" "$@"`).
struct Refusal {
    script: &'static str,
    env: &'static [(&'static str, &'static str)],
    says: &'static str,
}

#[test]
fn socket_activation_refuses_what_it_cannot_serve() {
    let cases = [
        Refusal {
            script: r#"exec "$0" "$@""#,
            env: &[("LISTEN_PID", "1"), ("LISTEN_FDS", "1")],
            says: "LISTEN_PID=1 names another process",
        },
        Refusal {
            script: r#"export LISTEN_PID=$$ LISTEN_FDS=2; exec "$0" "$@""#,
            env: &[],
            says: "exactly one socket",
        },
        Refusal {
            script: r#"export LISTEN_PID=$$ LISTEN_FDS=1; exec 3</dev/null "$0" "$@""#,
            env: &[],
            says: "is not a socket",
        },
        Refusal {
            script: r#"export LISTEN_PID=$$ LISTEN_FDS=1; exec 3<&- "$0" "$@""#,
            env: &[],
            says: "fd 3 is not open",
        },
    ];
    for Refusal { script, env, says } in cases {
        let (status, stderr) = run_browserd_via_sh(script, env, &[], Duration::from_secs(10));
        assert_eq!(
            status.code(),
            Some(2),
            "`{script}` with {env:?}: expected exit 2, got {status}; stderr:\n{stderr}"
        );
        assert!(
            stderr.contains(says),
            "`{script}` with {env:?}: stderr should say {says:?}:\n{stderr}"
        );
    }
}
