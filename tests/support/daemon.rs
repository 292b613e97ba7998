//! `DaemonGuard`: one real `browserd` in a private temp dir, with typed shortcuts for every
//! operation and the `/proc` assertions tests make about its sessions. Dropping the guard
//! stops the daemon (SIGTERM, then SIGKILL after a deadline), SIGKILLs anything its sessions
//! left behind, and removes the temp dir; if the test is panicking it first prints the
//! daemon's log.

use crate::client::Client;
use crate::ctl::run_ctl;
use crate::fixtures::Fixture;
use crate::procfs::{self, ProcInfo};
use crate::tracked::Tracked;
use crate::wait::{wait_for, POLL};
use browserd_proto::{
    BulkTerminate, Kill, LaunchResult, Lease, LeaseId, LeaseResult, Release, Request, Response,
    SessionInfo, SessionsFilter, SessionsResult, StatusResult, Target, TerminateResult, WireError,
    SESSION_ENV,
};
use browserd_proto::{Launch, SessionId};
use serde::de::DeserializeOwned;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the daemon may take to accept its first connection.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon may take to exit after SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a fixture tree may take to start completely.
pub const TREE_TIMEOUT: Duration = Duration::from_secs(15);
/// How much of the log to print when a test fails.
const LOG_TAIL: u64 = 64 * 1024;

type Prepare = Box<dyn FnOnce(&Path)>;

/// Configures a daemon before starting it. Every flag is passed as given, so a test reads
/// like the command line it exercises.
pub struct DaemonBuilder {
    args: Vec<OsString>,
    log_level: &'static str,
    state_dir_name: String,
    env: Vec<(OsString, OsString)>,
    dir_mode: Option<u32>,
    prepare: Vec<Prepare>,
    activated: bool,
}

impl DaemonBuilder {
    /// Sets an environment variable of the daemon.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Appends one raw argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends `--name value`.
    pub fn flag(self, name: &str, value: impl ToString) -> Self {
        self.arg(name).arg(value.to_string())
    }

    /// `--grace DUR`: the default grace period (e.g. `300ms`).
    pub fn grace(self, duration: &str) -> Self {
        self.flag("--grace", duration)
    }

    /// `--max-grace DUR`.
    pub fn max_grace(self, duration: &str) -> Self {
        self.flag("--max-grace", duration)
    }

    /// `--log-level LEVEL` instead of the default `debug` (whose line per request costs a
    /// debug build more than answering the request).
    pub fn log_level(mut self, level: &'static str) -> Self {
        self.log_level = level;
        self
    }

    /// Names the state dir (inside the guard's temp dir; `state` by default), e.g. to give it
    /// a path as long as a real user's.
    pub fn state_dir_name(mut self, name: &str) -> Self {
        self.state_dir_name = name.to_owned();
        self
    }

    /// `--max-sessions N`.
    pub fn max_sessions(self, n: u32) -> Self {
        self.flag("--max-sessions", n)
    }

    /// `--default-ttl DUR`.
    pub fn default_ttl(self, duration: &str) -> Self {
        self.flag("--default-ttl", duration)
    }

    /// `--socket-mode MODE` (octal, e.g. `0666`).
    pub fn socket_mode(self, mode: &str) -> Self {
        self.flag("--socket-mode", mode)
    }

    /// `--allow-uid UID`.
    pub fn allow_uid(self, uid: u32) -> Self {
        self.flag("--allow-uid", uid)
    }

    /// Makes the temp dir holding the socket searchable by everyone (it is 0700 otherwise),
    /// so that only the socket's own mode and the daemon's peer check decide who gets in.
    pub fn public_dir(mut self) -> Self {
        self.dir_mode = Some(0o755);
        self
    }

    /// Hands the daemon its socket the way systemd's socket activation does: the harness binds
    /// it, and the daemon inherits it as fd 3 with `LISTEN_FDS=1` and `LISTEN_PID` set to the
    /// daemon's own pid (through `sh`, which knows its pid before it execs the daemon).
    pub fn socket_activated(mut self) -> Self {
        self.activated = true;
        self
    }

    /// Runs `f` with the socket path before the daemon starts (e.g. to leave a stale socket).
    pub fn prepare(mut self, f: impl FnOnce(&Path) + 'static) -> Self {
        self.prepare.push(Box::new(f));
        self
    }

    /// Starts the daemon and waits until its socket accepts connections.
    #[track_caller]
    pub fn start(self) -> DaemonGuard {
        let dir = tempfile::Builder::new()
            .prefix("bd")
            .tempdir_in("/tmp")
            .expect("create a temp dir under /tmp");
        if let Some(mode) = self.dir_mode {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode))
                .expect("chmod the temp dir");
        }
        let socket = dir.path().join("d.sock");
        let state_dir = dir.path().join(&self.state_dir_name);
        fs::create_dir(&state_dir).expect("create the state dir");
        let log_path = dir.path().join("browserd.log");
        for prepare in self.prepare {
            prepare(&socket);
        }
        let inherited = self
            .activated
            .then(|| UnixListener::bind(&socket).expect("bind the socket to hand over"));
        let child = spawn_browserd(
            &socket,
            &state_dir,
            &log_path,
            self.log_level,
            &self.args,
            &self.env,
            inherited.as_ref(),
        );
        // The daemon holds its own copy now.
        drop(inherited);
        let guard = DaemonGuard {
            pid: child.id() as i32,
            child: Mutex::new(child),
            exit: Mutex::new(None),
            socket,
            log_path,
            state_dir,
            tracked: Arc::new(Tracked::default()),
            log_level: self.log_level,
            args: self.args,
            env: self.env,
            dir: Some(dir),
        };
        guard.wait_ready();
        guard
    }
}

/// What a service manager tells the process it starts; none of it may leak into a daemon
/// under test from the environment the tests run in.
pub const MANAGER_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// Starts `browserd` with its output appended to `log`.
fn spawn_browserd(
    socket: &Path,
    state_dir: &Path,
    log: &Path,
    log_level: &str,
    extra: &[OsString],
    env: &[(OsString, OsString)],
    inherited: Option<&UnixListener>,
) -> Child {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the daemon log");
    let mut command = match inherited {
        Some(listener) => activated_command(listener),
        None => Command::new(crate::browserd_bin()),
    };
    // The test runner's own service manager, if any, is not the daemon's.
    for name in MANAGER_ENV {
        command.env_remove(name);
    }
    if inherited.is_some() {
        command.env("LISTEN_FDS", "1");
    }
    stop_with_parent(&mut command);
    command
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--log-level", log_level])
        .args(extra)
        .env_remove("BROWSERD_SOCKET")
        .env_remove(SESSION_ENV)
        .env("RUST_BACKTRACE", "1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup the log file"))
        .stderr(log)
        .spawn()
        .expect("spawn browserd")
}

/// Has the daemon shut down (SIGTERM: it terminates its sessions) when the thread that
/// started it ends, so a test run killed from outside (a timeout, Ctrl-C) leaves no daemon
/// behind even though no guard could be dropped. The setting survives the daemon's `exec`
/// (and its re-exec on reload).
fn stop_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid before the fork; prctl and getppid, both async-signal-safe, after it.
    let parent = unsafe { libc::getpid() };
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the setting took effect.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// `sh` exporting its own pid as `LISTEN_PID`, then exec'ing `browserd` (with the arguments
/// added next) with `listener` as fd 3.
fn activated_command(listener: &UnixListener) -> Command {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", "export LISTEN_PID=$$; exec \"$0\" \"$@\""])
        .arg(crate::browserd_bin());
    // SAFETY: only dup2 and fcntl run between fork and exec; both are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let moved = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if moved < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// A running daemon owned by one test.
pub struct DaemonGuard {
    pid: i32,
    child: Mutex<Child>,
    /// Set once the daemon has been reaped; after that its pid must not be signalled.
    exit: Mutex<Option<ExitStatus>>,
    socket: PathBuf,
    log_path: PathBuf,
    state_dir: PathBuf,
    tracked: Arc<Tracked>,
    /// The daemon's own log level, flags and environment, for a restart.
    log_level: &'static str,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    dir: Option<tempfile::TempDir>,
}

/// The processes of one session, as observed once the fixture tree was complete.
#[derive(Debug, Clone)]
pub struct Tree {
    pub session: SessionId,
    pub leader: i32,
    pub procs: Vec<ProcInfo>,
}

impl Tree {
    pub fn pids(&self) -> Vec<i32> {
        self.procs.iter().map(|p| p.pid).collect()
    }

    /// The processes outside the leader's process group (double-forked strays).
    pub fn strays(&self) -> Vec<&ProcInfo> {
        self.procs
            .iter()
            .filter(|p| p.pgid != self.leader)
            .collect()
    }
}

impl DaemonGuard {
    /// A daemon with default settings.
    #[track_caller]
    pub fn start() -> DaemonGuard {
        DaemonGuard::builder().start()
    }

    pub fn builder() -> DaemonBuilder {
        DaemonBuilder {
            args: Vec::new(),
            log_level: "debug",
            state_dir_name: "state".to_owned(),
            env: Vec::new(),
            dir_mode: None,
            prepare: Vec::new(),
            activated: false,
        }
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

    /// The daemon's `--state-dir` (session dirs live in its `sessions/`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Kills the daemon the way a crash or the OOM killer would (SIGKILL), and reaps it.
    /// Its sessions keep running, re-parented away from it.
    #[track_caller]
    pub fn crash(&self) {
        self.send_signal(nix::sys::signal::Signal::SIGKILL);
        let status = self.wait_exit(EXIT_TIMEOUT);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "browserd died of SIGKILL"
        );
    }

    /// Starts the daemon again after it exited, on the same socket, state dir and log, with
    /// its flags and `extra` ones; waits until it accepts connections.
    #[track_caller]
    pub fn restart(&mut self, extra: &[&str]) {
        assert!(
            self.try_exit().is_some(),
            "restart a daemon that has exited"
        );
        let mut args = self.args.clone();
        args.extend(extra.iter().map(OsString::from));
        let child = spawn_browserd(
            &self.socket,
            &self.state_dir,
            &self.log_path,
            self.log_level,
            &args,
            &self.env,
            None,
        );
        self.pid = child.id() as i32;
        *lock(&self.child) = child;
        *lock(&self.exit) = None;
        self.wait_ready();
        // The socket accepts before the daemon has taken its sessions up; an answer means
        // it has.
        let mut client = self.client();
        client.set_timeout(READY_TIMEOUT);
        client
            .try_request(&Request::Status)
            .expect("the restarted daemon answers");
    }

    #[track_caller]
    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.try_exit() {
                panic!(
                    "browserd exited ({status}) before its socket {} accepted a connection",
                    self.socket.display()
                );
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "browserd did not accept connections on {} within {READY_TIMEOUT:?}",
                    self.socket.display()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    // ----- the daemon process -----

    /// Sends `signal` to the daemon (while it has not been reaped, its pid is still its own).
    #[track_caller]
    pub fn send_signal(&self, signal: nix::sys::signal::Signal) {
        let exit = lock(&self.exit);
        assert!(exit.is_none(), "the daemon already exited ({exit:?})");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), signal)
            .expect("signal the daemon");
    }

    /// The daemon's exit status if it has exited (and reaps it).
    pub fn try_exit(&self) -> Option<ExitStatus> {
        let mut exit = lock(&self.exit);
        if exit.is_none() {
            // An error here cannot be acted on; the caller's deadline handles a daemon that
            // never reports an exit.
            *exit = lock(&self.child).try_wait().unwrap_or(None);
        }
        *exit
    }

    /// Waits for the daemon to exit.
    #[track_caller]
    pub fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        wait_for(timeout, "browserd to exit", || self.try_exit())
    }

    /// Starts a second `browserd` on this daemon's socket (with its own state dir and log)
    /// and returns its exit status and log. Panics if it is still running after `timeout`.
    #[track_caller]
    pub fn start_second_instance(&self, timeout: Duration) -> (ExitStatus, String) {
        let state_dir = self.dir().join("state2");
        fs::create_dir_all(&state_dir).expect("create the second state dir");
        let log = self.dir().join("second.log");
        let mut child = KillOnDrop(spawn_browserd(
            &self.socket,
            &state_dir,
            &log,
            "debug",
            &[],
            &[],
            None,
        ));
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.0.try_wait().expect("waitpid on the second daemon") {
                break status;
            }
            if start.elapsed() > timeout {
                panic!(
                    "a second browserd on the same socket kept running for {timeout:?}; log:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(POLL);
        };
        (status, fs::read_to_string(&log).unwrap_or_default())
    }

    // ----- protocol -----

    /// A new connection whose responses feed the leak guard.
    #[track_caller]
    pub fn client(&self) -> Client {
        Client::connect(&self.socket)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.socket.display()))
            .tracking(Arc::clone(&self.tracked))
    }

    /// Sends one request on a fresh connection.
    #[track_caller]
    pub fn request(&self, request: Request) -> Response {
        self.client().request(&request)
    }

    /// Sends one request and decodes its result.
    #[track_caller]
    pub fn call<T: DeserializeOwned>(&self, request: Request) -> Result<T, WireError> {
        self.request(request).into_result()
    }

    #[track_caller]
    fn expect<T: DeserializeOwned>(&self, request: Request) -> T {
        let what = format!("{request:?}");
        self.call(request)
            .unwrap_or_else(|e| panic!("request {what} failed: {e}"))
    }

    /// `launch`, returning the session or the daemon's error.
    #[track_caller]
    pub fn launch(&self, launch: Launch) -> Result<SessionInfo, WireError> {
        let result: Result<LaunchResult, _> = self.call(Request::Launch(launch));
        result.map(|r| self.observe(r.session))
    }

    /// Launches a `sandbox` session running `command`.
    #[track_caller]
    pub fn launch_sandbox(&self, command: &[&str]) -> SessionInfo {
        let launch = Launch {
            session_type: Some(browserd_proto::SessionType::Sandbox),
            command: Some(command.iter().map(|s| s.to_string()).collect()),
            ..Launch::default()
        };
        self.launch(launch)
            .unwrap_or_else(|e| panic!("launch of {command:?} failed: {e}"))
    }

    /// Launches the `beside` fixture (`tests/fixtures/beside.rs`: a leader that starts a
    /// process beside itself, `CLONE_PARENT`) with `when` (`start`, or a delay in ms after
    /// SIGTERM) and its directory, and waits until it is ready: SIGTERM held (and, with
    /// `start`, its process started).
    #[track_caller]
    pub fn launch_beside(&self, when: &str) -> (SessionInfo, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let bin = crate::beside_bin();
        let session = self.launch_sandbox(&[
            bin.to_str().expect("a UTF-8 path"),
            dir.path().to_str().expect("a UTF-8 path"),
            when,
        ]);
        crate::wait_until(
            Duration::from_secs(10),
            format!("the fixture (pid {}, {when}) to be ready", session.pid),
            || dir.path().join("ready").exists(),
        );
        (session, dir)
    }

    /// Launches `launch` (usually `fixture.launch()` with changes) and waits until the
    /// fixture's whole tree exists.
    #[track_caller]
    pub fn spawn_with(&self, fixture: &Fixture, launch: Launch) -> (SessionInfo, Tree) {
        let session = self
            .launch(launch)
            .unwrap_or_else(|e| panic!("launch of fixture `{}` failed: {e}", fixture.name));
        let tree = self.wait_tree(&session, fixture);
        (session, tree)
    }

    /// Launches `fixture` and waits until its whole tree exists.
    #[track_caller]
    pub fn spawn(&self, fixture: &Fixture) -> (SessionInfo, Tree) {
        self.spawn_with(fixture, fixture.launch())
    }

    /// A polite `kill` of `target` sent from a thread, on a connection of its own: the test
    /// goes on while the daemon works on it.
    #[track_caller]
    pub fn kill_in_background(&self, target: &str) -> PendingKill {
        let target: Target = target
            .parse()
            .unwrap_or_else(|e| panic!("`{target}` is not a kill target: {e}"));
        let mut client = self.client();
        PendingKill(std::thread::spawn(move || {
            client.request(&Request::Kill(Kill {
                target,
                force: false,
                grace_ms: None,
            }))
        }))
    }

    /// `kill` with `target` a session id, tracking id or `all`.
    #[track_caller]
    pub fn kill(&self, target: &str, force: bool, grace_ms: Option<u64>) -> TerminateResult {
        let target: Target = target
            .parse()
            .unwrap_or_else(|e| panic!("`{target}` is not a kill target: {e}"));
        self.expect(Request::Kill(Kill {
            target,
            force,
            grace_ms,
        }))
    }

    /// `bulk_terminate`, panicking on a request-level error.
    #[track_caller]
    pub fn bulk(&self, body: BulkTerminate) -> TerminateResult {
        self.expect(Request::BulkTerminate(body))
    }

    /// `bulk_terminate`, returning a request-level error.
    #[track_caller]
    pub fn try_bulk(&self, body: BulkTerminate) -> Result<TerminateResult, WireError> {
        self.call(Request::BulkTerminate(body))
    }

    #[track_caller]
    pub fn sessions(&self, filter: SessionsFilter) -> Vec<SessionInfo> {
        let result: SessionsResult = self.expect(Request::Sessions(filter));
        result.sessions
    }

    /// The listing entry of session `id`.
    #[track_caller]
    pub fn session(&self, id: &SessionId) -> SessionInfo {
        self.sessions(SessionsFilter::default())
            .into_iter()
            .find(|s| &s.id == id)
            .unwrap_or_else(|| panic!("session {id} is not listed"))
    }

    #[track_caller]
    pub fn status(&self) -> StatusResult {
        self.expect(Request::Status)
    }

    /// Leases session `id` (session id or tracking id).
    #[track_caller]
    pub fn lease(&self, id: &str, ttl_ms: Option<u64>) -> Result<LeaseResult, WireError> {
        let id = id.parse().expect("a valid session reference");
        self.call(Request::Lease(Lease { id, ttl_ms }))
    }

    #[track_caller]
    pub fn release(&self, lease_id: &LeaseId) -> Result<serde_json::Value, WireError> {
        self.call(Request::Release(Release {
            lease_id: lease_id.clone(),
        }))
    }

    /// Runs `browserctl --socket <this daemon's socket> args...`.
    #[track_caller]
    pub fn ctl(&self, args: &[&str]) -> Output {
        run_ctl(&self.socket, args)
    }

    // ----- /proc -----

    /// Remembers a session (and its leader, if already visible) for the leak guard.
    fn observe(&self, session: SessionInfo) -> SessionInfo {
        self.tracked.note_session(session.id.as_str());
        if let Some(leader) = procfs::process(session.pid) {
            if leader.session.as_deref() == Some(session.id.as_str()) {
                self.tracked.note_processes(session.id.as_str(), [&leader]);
            }
        }
        session
    }

    /// The live processes marked with `id`, remembered for later zombie checks.
    pub fn session_processes(&self, id: &SessionId) -> Vec<ProcInfo> {
        let procs = procfs::session_processes(id.as_str());
        self.tracked.note_processes(id.as_str(), &procs);
        procs
    }

    /// Waits until `session` has exactly the finished tree of `fixture`.
    #[track_caller]
    pub fn wait_tree(&self, session: &SessionInfo, fixture: &Fixture) -> Tree {
        self.wait_trees(&[(session, fixture)]).remove(0)
    }

    /// Waits until every listed session has its fixture's finished tree, scanning `/proc`
    /// once per poll however many sessions there are.
    #[track_caller]
    pub fn wait_trees(&self, sessions: &[(&SessionInfo, &Fixture)]) -> Vec<Tree> {
        let timeout = TREE_TIMEOUT + Duration::from_millis(20 * sessions.len() as u64);
        let start = Instant::now();
        loop {
            let all = procfs::all_processes();
            let mut trees = Vec::with_capacity(sessions.len());
            let mut pending = None;
            for (session, fixture) in sessions {
                let id = session.id.as_str();
                let procs: Vec<ProcInfo> = all
                    .iter()
                    .filter(|p| p.session.as_deref() == Some(id))
                    .cloned()
                    .collect();
                self.tracked.note_processes(id, &procs);
                if !fixture.is_ready(session.pid, &procs) && pending.is_none() {
                    pending = Some((session, fixture, procs.clone()));
                }
                trees.push(Tree {
                    session: session.id.clone(),
                    leader: session.pid,
                    procs,
                });
            }
            let Some((session, fixture, procs)) = pending else {
                return trees;
            };
            if start.elapsed() > timeout {
                panic!(
                    "session {} never became the complete `{}` tree ({} processes, {} sleeping, \
                     {} ignoring SIGTERM, {} strays) within {timeout:?}; its processes: {procs:#?}",
                    session.id,
                    fixture.name,
                    fixture.processes,
                    fixture.sleepers,
                    fixture.ignoring_term,
                    fixture.strays
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The processes of session `id` that still exist: live ones carrying its marker, and
    /// any process the harness saw in it before that still exists in any state (a zombie
    /// left for the daemon to reap counts: the contract says "gone and reaped").
    pub fn remaining(&self, id: &SessionId) -> Vec<ProcInfo> {
        let mut left = self.session_processes(id);
        for known in self.tracked.identities(id.as_str()) {
            if let Some(p) = known.current() {
                if !left.iter().any(|l| l.pid == p.pid) {
                    left.push(p);
                }
            }
        }
        left
    }

    /// The processes seen in session `id` that are now zombies nobody has reaped.
    pub fn session_zombies(&self, id: &SessionId) -> Vec<ProcInfo> {
        self.tracked
            .identities(id.as_str())
            .iter()
            .filter_map(|known| known.current())
            .filter(ProcInfo::is_zombie)
            .collect()
    }

    /// Asserts that no process of session `id` exists, zombies included.
    #[track_caller]
    pub fn assert_session_gone(&self, id: &SessionId) {
        let left = self.remaining(id);
        assert!(
            left.is_empty(),
            "session {id} still has processes (daemon pid {}): {}",
            self.pid,
            describe(&left, self.pid)
        );
    }

    /// Waits until no process of session `id` exists (for exits the daemon learns of on its
    /// own, e.g. TTL expiry or a leader exiting), then asserts it once more.
    #[track_caller]
    pub fn wait_session_gone(&self, id: &SessionId, timeout: Duration) {
        let start = Instant::now();
        while !self.remaining(id).is_empty() && start.elapsed() < timeout {
            std::thread::sleep(POLL);
        }
        self.assert_session_gone(id);
    }

    /// Asserts that every process of `tree` is still alive (the same processes, not zombies).
    #[track_caller]
    pub fn assert_tree_alive(&self, tree: &Tree) {
        let dead: Vec<_> = tree
            .procs
            .iter()
            .filter(|p| p.id().current().is_none_or(|now| now.is_zombie()))
            .collect();
        assert!(
            dead.is_empty(),
            "session {} lost processes it should still have: {dead:#?}",
            tree.session
        );
    }

    /// Asserts that no session this guard has seen has a process left and that the daemon
    /// has no unreaped children.
    #[track_caller]
    pub fn assert_all_sessions_gone(&self) {
        for id in self.tracked.session_ids() {
            let id: SessionId = id.parse().expect("daemon session ids are valid");
            self.assert_session_gone(&id);
        }
        if self.try_exit().is_none() {
            let zombies = procfs::zombie_children_of(self.pid);
            assert!(
                zombies.is_empty(),
                "the daemon has unreaped children: {zombies:#?}"
            );
        }
    }

    /// The daemon's children (sessions it started or adopted), zombies included.
    pub fn daemon_children(&self) -> Vec<ProcInfo> {
        procfs::children_of(self.pid)
    }

    // ----- cleanup -----

    fn print_log(&self) {
        let Ok(mut file) = File::open(&self.log_path) else {
            eprintln!("(no browserd log at {})", self.log_path.display());
            return;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let from = len.saturating_sub(LOG_TAIL);
        let _ = file.seek(SeekFrom::Start(from));
        let mut tail = Vec::new();
        let _ = file.read_to_end(&mut tail);
        eprintln!(
            "----- browserd log {} (pid {}){} -----\n{}\n----- end of browserd log -----",
            self.log_path.display(),
            self.pid,
            if from > 0 { ", last 64 KiB" } else { "" },
            String::from_utf8_lossy(&tail)
        );
    }

    /// Stops the daemon: SIGTERM, then SIGKILL if it is still there after the deadline.
    fn stop(&self) {
        if self.try_exit().is_some() {
            return;
        }
        // Learn the ids of sessions started behind the harness's back (e.g. by browserctl).
        if let Ok(client) = Client::connect(&self.socket) {
            let mut client = client.tracking(Arc::clone(&self.tracked));
            client.set_timeout(Duration::from_secs(2));
            let _ = client.try_request(&Request::Sessions(SessionsFilter::default()));
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let start = Instant::now();
        while self.try_exit().is_none() {
            if start.elapsed() > EXIT_TIMEOUT {
                eprintln!("browserd did not exit within {EXIT_TIMEOUT:?} of SIGTERM; killing it");
                let mut child = lock(&self.child);
                let _ = child.kill();
                *lock(&self.exit) = child.wait().ok();
                break;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Last-resort leak guard: SIGKILLs every process still carrying the marker of one of
    /// this daemon's sessions, and every process seen in one that still exists.
    fn kill_leftovers(&self) {
        let ids = self.tracked.session_ids();
        let mut leaked: Vec<ProcInfo> = procfs::all_processes()
            .into_iter()
            .filter(|p| p.session.as_ref().is_some_and(|s| ids.contains(s)))
            .collect();
        for id in &ids {
            for known in self.tracked.identities(id) {
                if let Some(p) = known.current().filter(|p| !p.is_zombie()) {
                    if !leaked.iter().any(|l| l.pid == p.pid) {
                        leaked.push(p);
                    }
                }
            }
        }
        if !leaked.is_empty() {
            eprintln!(
                "leak guard: SIGKILL to {} process(es) left by browserd {}: {}",
                leaked.len(),
                self.pid,
                describe(&leaked, self.pid)
            );
            for p in &leaked {
                procfs::signal_exact(p.id(), libc::SIGKILL);
            }
        }
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log();
        }
        self.stop();
        self.kill_leftovers();
        if let Some(dir) = self.dir.take() {
            if std::env::var_os("BROWSERD_TEST_KEEP").is_some() {
                eprintln!("keeping {}", dir.keep().display());
            }
        }
    }
}

/// A child process killed and reaped when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One line per process: pid, state, command, parent (marking the daemon), group, session.
fn describe(procs: &[ProcInfo], daemon: i32) -> String {
    procs
        .iter()
        .map(|p| {
            format!(
                "\n  pid {} state {} comm {} ppid {}{} pgid {} sid {} marker {:?}",
                p.pid,
                p.state,
                p.comm,
                p.ppid,
                if p.ppid == daemon {
                    " (the daemon)"
                } else {
                    ""
                },
                p.pgid,
                p.sid,
                p.session
            )
        })
        .collect()
}

/// A kill sent by [`DaemonGuard::kill_in_background`].
pub struct PendingKill(std::thread::JoinHandle<Response>);

impl PendingKill {
    /// Whether it has been answered.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Waits for its answer, panicking on a request-level error.
    #[track_caller]
    pub fn result(self) -> TerminateResult {
        self.0
            .join()
            .expect("the kill's client thread")
            .into_result()
            .unwrap_or_else(|e| panic!("kill: {e:?}"))
    }

    /// Waits for its answer and checks that it says `session` terminated, and nothing else.
    #[track_caller]
    pub fn assert_terminated(self, session: &SessionId) {
        let result = self.result();
        assert_eq!(result.terminated, vec![session.to_string()], "{result:?}");
        assert!(result.failed.is_empty(), "{result:?}");
    }
}
