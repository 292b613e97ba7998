//! Hostile and malformed input on the paths that are not the socket: the daemon's flags,
//! its config file and its environment, and browserctl's environment. Each gets a clear
//! error, the right exit status, and leaves nothing behind.

use browserd_tests::{browserctl_bin, browserd_bin, DaemonGuard};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A daemon run that is expected to end on its own; killed if it does not.
struct Run(Option<Child>);

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `browserd` with `args` and `env` in a fresh dir; returns its output and the dir.
fn run_daemon(args: &[&str], env: &[(&str, &str)]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("bd")
        .tempdir_in("/tmp")
        .unwrap();
    let mut command = Command::new(browserd_bin());
    command
        .args(args)
        .env_remove("BROWSERD_SOCKET")
        .env_remove("BROWSERD_CONFIG")
        .env("BROWSERD_STATE_DIR", dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !args.contains(&"--socket") && !env.iter().any(|(k, _)| *k == "BROWSERD_SOCKET") {
        command.arg("--socket").arg(dir.path().join("s.sock"));
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let mut run = Run(Some(command.spawn().expect("spawn browserd")));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let child = run.0.as_mut().unwrap();
        if child.try_wait().unwrap().is_some() {
            let output = run.0.take().unwrap().wait_with_output().unwrap();
            return (output, dir);
        }
        assert!(
            Instant::now() < deadline,
            "browserd {args:?} should have refused to start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[track_caller]
fn assert_refused(args: &[&str], env: &[(&str, &str)], code: i32, needle: &str) {
    let (output, dir) = run_daemon(args, env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{args:?} {env:?}: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{args:?} {env:?}: stderr should mention `{needle}`: {stderr}"
    );
    assert!(
        !dir.path().join("s.sock").exists(),
        "a refused start must not leave a socket"
    );
}

#[test]
fn malformed_flags_are_refused_with_exit_2_and_a_reason() {
    let long = format!("/tmp/{}", "x".repeat(200));
    for (args, needle) in [
        (&["--grace", "5"][..], "no unit"),
        (&["--grace", "soon"], "invalid duration"),
        (&["--socket-mode", "999"], "octal"),
        (&["--max-sessions", "0"], "max_sessions"),
        (&["--max-sessions", "99999999999"], "max-sessions"),
        (&["--grace", "10s", "--max-grace", "5s"], "max_grace"),
        (&["--log-format", "xml"], "xml"),
        (&["--no-such-flag"], "no-such-flag"),
        (&["--socket", &long], "107"),
        (&["--state-dir", "relative/dir"], "absolute"),
    ] {
        assert_refused(args, &[], 2, needle);
    }
}

fn config_file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(contents)
        .unwrap();
    path
}

#[test]
fn a_bad_config_file_is_refused_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let oversized = vec![b'#'; 2 << 20];
    for (name, contents, needle) in [
        ("unknown.toml", &b"graze = \"5s\"\n"[..], "graze"),
        ("type.toml", b"max_sessions = \"many\"\n", "max_sessions"),
        ("syntax.toml", b"grace = \n[[[", "invalid config"),
        ("duration.toml", b"grace = \"5\"\n", "grace"),
        ("binary.toml", b"\xff\xfe\x00\x01garbage", "binary.toml"),
        ("huge.toml", &oversized, "larger than 1 MiB"),
    ] {
        let path = config_file(dir.path(), name, contents);
        assert_refused(&["--config", path.to_str().unwrap()], &[], 2, needle);
    }
    assert_refused(
        &["--config", "/nonexistent/browserd.toml"],
        &[],
        2,
        "cannot read config",
    );
}

#[test]
fn hostile_environment_values_are_refused() {
    let long = format!("/tmp/{}", "y".repeat(300));
    assert_refused(&[], &[("BROWSERD_SOCKET", &long)], 2, "107");
    assert_refused(&[], &[("BROWSERD_SOCKET", "")], 2, "socket");
    assert_refused(
        &[],
        &[("BROWSERD_CONFIG", "/nonexistent.toml")],
        2,
        "cannot read config",
    );
}

#[test]
fn bad_pool_and_queue_settings_are_refused_in_flags_files_and_the_environment() {
    for (args, needle) in [
        (&["--warm", "-1"][..], "'-1'"),
        (&["--warm", "two"], "--warm"),
        (
            &["--max-sessions", "2", "--warm", "3"],
            "warm (3) exceeds max_sessions (2)",
        ),
        (&["--max-queue", "x"], "--max-queue"),
        (&["--max-queue", "100001"], "max_queue"),
        (&["--queue-timeout", "30"], "no unit"),
        (&["--queue-timeout", "0s"], "queue_timeout must be positive"),
    ] {
        assert_refused(args, &[], 2, needle);
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, contents, needle) in [
        ("warm.toml", &b"warm = -1\n"[..], "warm"),
        ("queue.toml", b"max_queue = \"many\"\n", "max_queue"),
        ("timeout.toml", b"queue_timeout = \"0s\"\n", "queue_timeout"),
        (
            "pool.toml",
            b"max_sessions = 2\nwarm = 5\n",
            "exceeds max_sessions",
        ),
    ] {
        let path = config_file(dir.path(), name, contents);
        assert_refused(&["--config", path.to_str().unwrap()], &[], 2, needle);
    }
    for (env, needle) in [
        (("BROWSERD_WARM", "lots"), "--warm"),
        (("BROWSERD_MAX_QUEUE", "-3"), "--max-queue"),
        (("BROWSERD_QUEUE_TIMEOUT", "forever"), "--queue-timeout"),
        (("BROWSERD_WARM", "1000"), "exceeds max_sessions"),
    ] {
        assert_refused(&[], &[env], 2, needle);
    }
}

#[test]
fn a_garbage_log_filter_falls_back_and_the_daemon_serves() {
    let d = DaemonGuard::builder().env("RUST_LOG", "=!%,,[[").start();
    assert_eq!(d.status().protocol, 1);
}

#[test]
fn a_missing_configured_browser_is_reported_by_status_and_launch() {
    let d = DaemonGuard::builder()
        .env("BROWSERD_BROWSER", "/nonexistent/chrome")
        .start();
    let error = d.status().browser.and_then(|b| b.error).unwrap_or_default();
    assert!(error.contains("/nonexistent/chrome"), "{error}");
    let launched = d.launch(browserd_proto::Launch::default());
    let error = launched.expect_err("a browser launch without a browser must fail");
    assert_eq!(error.code, browserd_proto::ErrorCode::LaunchFailed);
    assert!(
        error.message.contains("/nonexistent/chrome"),
        "{}",
        error.message
    );
}

#[test]
fn a_socket_path_that_is_not_a_socket_is_left_alone() {
    let dir = tempfile::Builder::new()
        .prefix("bd")
        .tempdir_in("/tmp")
        .unwrap();
    let path = dir.path().join("important.txt");
    std::fs::write(&path, "keep me").unwrap();
    let (output, _run_dir) = run_daemon(&["--socket", path.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

#[test]
fn browserctl_refuses_an_empty_or_bogus_socket_from_the_environment() {
    let run = |socket: &str| {
        Command::new(browserctl_bin())
            .arg("status")
            .env("BROWSERD_SOCKET", socket)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let empty = run("");
    assert_eq!(empty.status.code(), Some(2), "{empty:?}");
    let file = tempfile::NamedTempFile::new().unwrap();
    let not_a_socket = run(file.path().to_str().unwrap());
    assert_eq!(not_a_socket.status.code(), Some(3), "{not_a_socket:?}");
    let stderr = String::from_utf8_lossy(&not_a_socket.stderr);
    assert!(stderr.contains("browserd"), "{stderr}");
}

#[test]
fn an_inherited_blocked_signal_mask_does_not_make_the_daemon_unstoppable() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::Builder::new()
        .prefix("bd")
        .tempdir_in("/tmp")
        .unwrap();
    let socket = dir.path().join("s.sock");
    let mut command = Command::new(browserd_bin());
    command
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env_remove("BROWSERD_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only sigprocmask, which is async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let mut blocked = nix::sys::signal::SigSet::empty();
            blocked.add(nix::sys::signal::Signal::SIGTERM);
            blocked.add(nix::sys::signal::Signal::SIGCHLD);
            blocked.thread_block().map_err(std::io::Error::from)
        });
    }
    let mut run = Run(Some(command.spawn().unwrap()));
    browserd_tests::wait_until(Duration::from_secs(10), "browserd to listen", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let pid = nix::unistd::Pid::from_raw(run.0.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = run.0.as_mut().unwrap().try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "SIGTERM was held back by an inherited mask"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    run.0 = None;
    assert_eq!(status.code(), Some(0));
}
