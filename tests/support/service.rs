//! Playing the service manager's side: systemd's notification socket ([`NotifySocket`]), and
//! a container runtime that starts the daemon as PID 1 of a new PID namespace
//! ([`Pid1Daemon`]). Both clean up after themselves when dropped, even when a test panics.

use crate::client::Client;
use crate::ctl::run_ctl;
use crate::daemon::{EXIT_TIMEOUT, MANAGER_ENV, READY_TIMEOUT};
use crate::procfs::{self, ProcId};
use crate::wait::{wait_for, POLL};
use browserd_proto::SESSION_ENV;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

// ----- sd_notify -----

/// One notification datagram: `KEY=VALUE` lines, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub fields: Vec<(String, String)>,
}

impl Notification {
    /// The value of `key`, if the datagram carries it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, key: &str, value: &str) -> bool {
        self.get(key) == Some(value)
    }
}

/// A datagram socket standing in for systemd's `NOTIFY_SOCKET`, in a private temp dir.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    #[track_caller]
    pub fn bind() -> NotifySocket {
        let dir = tempfile::Builder::new()
            .prefix("bdn")
            .tempdir_in("/tmp")
            .expect("create a temp dir for the notify socket");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The value to put in the daemon's `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next notification, or `None` if none arrives within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Notification> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .expect("set the notify socket's timeout");
        let mut buf = vec![0u8; 4096];
        let len = match self.socket.recv(&mut buf) {
            Ok(len) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(e) => panic!("receiving on the notify socket failed: {e}"),
        };
        let text = String::from_utf8_lossy(&buf[..len]);
        let fields = text
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| match line.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => panic!("notification line without `=`: {line:?} in {text:?}"),
            })
            .collect();
        Some(Notification { fields })
    }

    /// Receives until a notification satisfies `want`, returning it and everything received
    /// before it; panics after `timeout` naming what was awaited and what came instead.
    #[track_caller]
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        mut want: impl FnMut(&Notification) -> bool,
    ) -> (Notification, Vec<Notification>) {
        let start = Instant::now();
        let mut before = Vec::new();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match self.next(left) {
                Some(n) if want(&n) => return (n, before),
                Some(n) => before.push(n),
                None => panic!(
                    "no notification with {what} within {timeout:?}; received instead: {before:#?}"
                ),
            }
        }
    }

    /// Discards every notification already queued.
    pub fn drain(&self) {
        while self.next(Duration::from_millis(1)).is_some() {}
    }

    /// Every notification that arrives within `window` (for "nothing of this kind came").
    pub fn collect_for(&self, window: Duration) -> Vec<Notification> {
        let start = Instant::now();
        let mut got = Vec::new();
        while let Some(left) = window.checked_sub(start.elapsed()) {
            match self.next(left) {
                Some(n) => got.push(n),
                None => break,
            }
        }
        got
    }
}

/// Runs `browserd` through `sh` with `script` (which must end by exec'ing `"$0" "$@"`), with
/// `env` set, and waits for it to exit; returns its status and stderr. Panics if it is still
/// running after `timeout` (killing it first).
#[track_caller]
pub fn run_browserd_via_sh(
    script: &str,
    env: &[(&str, &str)],
    args: &[&str],
    timeout: Duration,
) -> (ExitStatus, String) {
    let dir = tempfile::Builder::new()
        .prefix("bds")
        .tempdir_in("/tmp")
        .expect("create a temp dir");
    let stderr = dir.path().join("stderr");
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", script])
        .arg(crate::browserd_bin())
        .arg("--socket")
        .arg(dir.path().join("d.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(args);
    for name in MANAGER_ENV {
        command.env_remove(name);
    }
    let mut child = command
        .envs(env.iter().copied())
        .env_remove("BROWSERD_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr).expect("create the stderr file"))
        .spawn()
        .expect("spawn sh to run browserd");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitpid on browserd") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "browserd ({script}) kept running for {timeout:?}; stderr:\n{}",
                fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(POLL);
    };
    (status, fs::read_to_string(&stderr).unwrap_or_default())
}

// ----- PID 1 -----

/// `browserd` as PID 1 of a new PID namespace (with its own `/proc`), the way a container
/// runtime starts an entrypoint: `unshare --pid --fork --mount-proc --kill-child browserd ...`.
/// The socket and state dir live in a private temp dir on the host's filesystem, so clients
/// outside the namespace reach the daemon through it.
///
/// Dropping the guard sends SIGTERM to the daemon and, if it has not exited by the deadline,
/// SIGKILL to `unshare`; `--kill-child` then SIGKILLs the daemon, and the kernel kills every
/// process left in a namespace whose PID 1 died, so nothing can outlive the test.
pub struct Pid1Daemon {
    unshare: Child,
    exit: Option<ExitStatus>,
    daemon: ProcId,
    socket: PathBuf,
    log_path: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Pid1Daemon {
    /// Starts the daemon with `extra` flags and waits until its socket accepts connections.
    /// `Err` carries the reason when this machine does not permit a new PID namespace.
    #[track_caller]
    pub fn start(extra: &[&str]) -> Result<Pid1Daemon, String> {
        pid_namespaces_permitted()?;
        let dir = tempfile::Builder::new()
            .prefix("bdp")
            .tempdir_in("/tmp")
            .expect("create a temp dir under /tmp");
        let socket = dir.path().join("d.sock");
        let state_dir = dir.path().join("state");
        fs::create_dir(&state_dir).expect("create the state dir");
        let log_path = dir.path().join("browserd.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open the daemon log");
        let mut command = unshare_command();
        command
            .arg(crate::browserd_bin())
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["--log-level", "debug"])
            .args(extra);
        for name in MANAGER_ENV {
            command.env_remove(name);
        }
        command
            .env_remove("BROWSERD_SOCKET")
            .env_remove(SESSION_ENV)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log file"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe. If the test process dies, `unshare` gets SIGKILL,
        // and with it (through --kill-child) the whole namespace.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let unshare = command.spawn().expect("spawn unshare");
        let unshare_pid = unshare.id() as i32;
        let mut guard = Pid1Daemon {
            unshare,
            exit: None,
            // Replaced below, once the daemon has exec'd; until then stop() only kills unshare.
            daemon: ProcId {
                pid: 0,
                start_time: 0,
            },
            socket,
            log_path,
            dir: Some(dir),
        };
        guard.daemon = guard.wait_for_daemon(unshare_pid);
        guard.wait_ready();
        Ok(guard)
    }

    /// The daemon's pid as the host sees it (inside its namespace it is 1).
    pub fn host_pid(&self) -> i32 {
        self.daemon.pid
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The private temp dir (socket, state dir and log live in it).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("temp dir exists while the guard lives")
            .path()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    #[track_caller]
    pub fn client(&self) -> Client {
        Client::connect(&self.socket)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.socket.display()))
    }

    /// Runs `browserctl --socket <socket> args...` from outside the namespace.
    #[track_caller]
    pub fn ctl(&self, args: &[&str]) -> Output {
        run_ctl(&self.socket, args)
    }

    /// Sends `signal` to the daemon (PID 1 of its namespace), identity-checked.
    #[track_caller]
    pub fn signal(&self, signal: i32) {
        assert!(
            procfs::signal_exact(self.daemon, signal),
            "the daemon (host pid {}) is gone; could not send signal {signal}",
            self.daemon.pid
        );
    }

    /// The exit status of `unshare`, which exits with its child's (the daemon's) status.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.unshare.try_wait().unwrap_or(None);
        }
        self.exit
    }

    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        wait_for(timeout, "browserd (PID 1) to exit", || self.try_exit())
    }

    /// The daemon's children as the host sees them, zombies included.
    pub fn children(&self) -> Vec<procfs::ProcInfo> {
        procfs::children_of(self.daemon.pid)
    }

    /// Waits until `unshare`'s forked child has exec'd `browserd`.
    #[track_caller]
    fn wait_for_daemon(&mut self, unshare_pid: i32) -> ProcId {
        let start = Instant::now();
        loop {
            if let Some(daemon) = procfs::children_of(unshare_pid)
                .into_iter()
                .find(|p| p.comm == "browserd")
            {
                return daemon.id();
            }
            if let Some(status) = self.try_exit() {
                panic!(
                    "unshare exited ({status}) before browserd started; log:\n{}",
                    self.log()
                );
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!("browserd did not start under unshare within {READY_TIMEOUT:?}");
            }
            std::thread::sleep(POLL);
        }
    }

    #[track_caller]
    fn wait_ready(&mut self) {
        let start = Instant::now();
        while UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self.try_exit() {
                panic!(
                    "browserd (PID 1) exited ({status}) before accepting connections; log:\n{}",
                    self.log()
                );
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!("browserd (PID 1) did not accept connections within {READY_TIMEOUT:?}");
            }
            std::thread::sleep(POLL);
        }
    }

    fn stop(&mut self) {
        if self.try_exit().is_some() {
            return;
        }
        if self.daemon.pid > 0 {
            procfs::signal_exact(self.daemon, libc::SIGTERM);
            let start = Instant::now();
            while self.try_exit().is_none() && start.elapsed() < EXIT_TIMEOUT {
                std::thread::sleep(POLL);
            }
        }
        if self.try_exit().is_none() {
            eprintln!("browserd (PID 1) did not exit after SIGTERM; killing its namespace");
            let _ = self.unshare.kill();
            self.exit = self.unshare.wait().ok();
        }
    }
}

impl Drop for Pid1Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- browserd (PID 1) log {} -----\n{}\n----- end of browserd log -----",
                self.log_path.display(),
                self.log()
            );
        }
        self.stop();
        if let Some(dir) = self.dir.take() {
            if std::env::var_os("BROWSERD_TEST_KEEP").is_some() {
                eprintln!("keeping {}", dir.keep().display());
            }
        }
    }
}

/// `unshare` making a new PID namespace with its own `/proc`; as a non-root user, inside a
/// new user namespace mapped to root (where the kernel allows that).
fn unshare_command() -> Command {
    let mut command = Command::new("unshare");
    command.args(["--pid", "--fork", "--mount-proc", "--kill-child"]);
    if !nix::unistd::Uid::effective().is_root() {
        command.arg("--map-root-user");
    }
    command.arg("--");
    command
}

/// Whether this machine lets the tests create a PID namespace; `Err` says why not. Only a
/// refusal by the kernel counts: a missing `unshare` is a broken test setup, not a skip.
fn pid_namespaces_permitted() -> Result<(), String> {
    let output = unshare_command()
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run unshare ({e}); install util-linux (scripts/deps does)")
        });
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let refused = [
        "Operation not permitted",
        "Permission denied",
        "No space left",
    ]
    .iter()
    .any(|reason| stderr.contains(reason));
    if refused {
        return Err(format!(
            "`unshare --pid --fork --mount-proc` is not permitted here: {stderr}"
        ));
    }
    panic!(
        "unshare --pid --fork --mount-proc true failed ({}): {stderr}",
        output.status
    );
}

/// The sockfs inode a `/proc/PID/fd/N` link names (`socket:[12345]`), if it is a socket.
pub fn socket_inode(pid: i32, fd: i32) -> Option<u64> {
    let target: OsString = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?.into();
    let target = target.to_str()?;
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Every socket inode among the open descriptors of `pid`.
pub fn socket_inodes(pid: i32) -> Vec<u64> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|fd| socket_inode(pid, fd))
        .collect()
}
