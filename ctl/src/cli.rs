//! The command line: clap definitions, and their translation into protocol requests. Ids,
//! workspaces and durations are parsed with the protocol's own validated types, so bad input
//! is refused here, before anything is sent, with clap's usage error (exit status 2).

use crate::duration::{check_millis, parse_millis, parse_positive_millis};
use browserd_proto::{
    BulkTerminate, Kill, Launch, Lease, LeaseId, Release, Request, SessionRef, SessionState,
    SessionType, SessionsFilter, Target, TrackingId, Watch, Workspace,
};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

const EXAMPLES: &str = "\
Examples:
  browserctl launch --tracking-id job-42             start Chromium, print its DevTools endpoint
  browserctl launch --type sandbox --ttl 10m -- python3 worker.py
  browserctl ls --state running
  browserctl kill job-42                             SIGTERM, wait, report
  browserctl kill all --force --grace 2s             everything, SIGKILL after 2s
  browserctl terminate --workspace ci --force
  echo '{\"all\": true, \"session_type\": \"sandbox\"}' | browserctl terminate --request -
  browserctl --json ls | jq -r '.sessions[].id'
  browserctl events --workspace ci                   follow sessions starting and ending

Exit status:
  0  everything asked for was done
  1  the daemon answered, but some target failed (not found, leased, timed out, ...)
  2  bad usage or a request the daemon refused as invalid
  3  browserd is unreachable, or refused this user (permission denied)

With --json, every run prints exactly one JSON document on stdout: the daemon's result, or
an error object {\"code\", \"message\"}. Its code is the daemon's (not_found, invalid_request,
permission_denied, ...), or one browserctl uses for what it finds itself: invalid_request for
bad usage (exit 2), permission_denied when the socket's permissions keep you out, and
unreachable when no answer came from browserd: nothing listens on the socket, the connection
was lost, or what answered is not browserd (exit 3).";

/// `browserctl`: the everyday client of browserd.
#[derive(Debug, Parser)]
#[command(
    name = "browserctl",
    version,
    about = "Control browserd: launch, list, lease and terminate headless browser sessions",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// Path of browserd's socket [default: /run/browserd/browserd.sock for root, else
    /// $XDG_RUNTIME_DIR/browserd.sock, else /tmp/browserd-<uid>/browserd.sock]
    #[arg(
        long,
        global = true,
        env = "BROWSERD_SOCKET",
        hide_env_values = true,
        value_name = "PATH",
        help_heading = "Global options"
    )]
    pub socket: Option<PathBuf>,

    /// Print the outcome as one line of JSON on stdout: the result on success, the
    /// `{code, message}` error object on failure (see the end of --help for the codes)
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a session and wait until it is running
    ///
    /// Prints `launched <id> (pid <pid>)` and, for a browser, `endpoint <ws-url>` on a second
    /// line. Scripts should use --json, e.g.
    /// `browserctl --json launch | jq -r .session.ws_endpoint`.
    #[command(after_help = "\
Examples:
  browserctl launch                                   Chromium as detected by browserd
  browserctl launch --arg --window-size=1280,800      ... with an extra Chromium flag
  browserctl launch -- /opt/chrome/chrome --headless=new
  browserctl launch --type sandbox --env MODE=fast --cwd . -- ./run.sh")]
    Launch(LaunchArgs),

    /// List sessions (live ones, and recently exited ones with their exit status)
    Ls(LsArgs),

    /// Terminate one session by id or tracking id, or `all` of them (cannot be undone)
    ///
    /// Sends SIGTERM to the session's processes and waits up to the grace period for all of
    /// them to be gone. Without --force, leased sessions are left alone and nothing is
    /// SIGKILLed; with --force, leases are ignored and stragglers are SIGKILLed.
    Kill(KillArgs),

    /// Terminate several sessions at once (Chaser bulk-terminate)
    ///
    /// Selects every session (--all, optionally only of one --type), or the union of the
    /// given --id and --workspace selections. --request sends a bulk-terminate JSON body
    /// instead: `{all, force, ids, session_type, workspaces, grace_ms}`, every field optional
    /// or null, read from FILE or from stdin with `-`.
    Terminate(TerminateArgs),

    /// Protect a session from termination without --force, until the lease expires
    ///
    /// Prints `leased <id>: <lease-id> until <time>`.
    Lease(LeaseArgs),

    /// Drop a lease before it expires
    Release(ReleaseArgs),

    /// Show the daemon's version, uptime, session counts and limits
    Status,

    /// Print the daemon's metrics in the Prometheus text format (what `GET /metrics`
    /// serves, for hosts without the HTTP listener)
    Metrics,

    /// Follow session events as they happen, a line each, until interrupted
    ///
    /// Every state change of every session (launched, running, terminating, exited with its
    /// exit and reason, lease_expired, ttl_expired, adopted), in order per session. With
    /// --json, one JSON object per line (NDJSON), exactly as the daemon sends them. Follows
    /// on across a daemon reload. Exits 1 if the daemon dropped it for falling behind
    /// (a reader that cannot keep up), 3 if the daemon went away.
    Events(EventsArgs),

    /// Manage the daemon itself
    #[command(subcommand)]
    Daemon(DaemonCommand),
}

/// `browserctl daemon ...`
#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Re-execute browserd in place, keeping every session (also how an upgrade is
    /// installed: replace the binary, then reload)
    ///
    /// The daemon first checks the binary on disk and its config file; if either is not
    /// usable, nothing changes and the reload fails with the reason. Otherwise this waits
    /// until the re-executed daemon serves again, and prints its pid and sessions. This is
    /// what `systemctl reload browserd` runs.
    Reload {
        /// How long to wait for the re-executed daemon to serve again
        #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_positive_millis)]
        timeout: u64,
    },
}

/// The two kinds of session, as spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TypeArg {
    /// A Chromium with a DevTools endpoint
    Browser,
    /// Any other command
    Sandbox,
}

impl From<TypeArg> for SessionType {
    fn from(value: TypeArg) -> SessionType {
        match value {
            TypeArg::Browser => SessionType::Browser,
            TypeArg::Sandbox => SessionType::Sandbox,
        }
    }
}

/// Session states, as spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Starting,
    Running,
    Terminating,
    Exited,
}

impl From<StateArg> for SessionState {
    fn from(value: StateArg) -> SessionState {
        match value {
            StateArg::Starting => SessionState::Starting,
            StateArg::Running => SessionState::Running,
            StateArg::Terminating => SessionState::Terminating,
            StateArg::Exited => SessionState::Exited,
        }
    }
}

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// What to run; without it, a browser
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub session_type: Option<TypeArg>,

    /// Workspace to put the session in [daemon default: default]
    #[arg(long, value_name = "W")]
    pub workspace: Option<Workspace>,

    /// Your own name for the session (1-32 of [A-Za-z0-9_-], not `all`), usable wherever a
    /// session id is
    #[arg(long, value_name = "T")]
    pub tracking_id: Option<TrackingId>,

    /// Terminate the session (with force) after this long, e.g. 30s, 10m, 2h (at most 100y)
    #[arg(long, value_name = "DUR", value_parser = parse_positive_millis)]
    pub ttl: Option<u64>,

    /// When browserd is at its session limit, wait at most this long in its launch queue for
    /// a free slot, e.g. 30s; 0s fails at once [daemon default: its --queue-timeout]
    #[arg(long, value_name = "DUR", value_parser = parse_millis)]
    pub queue_timeout: Option<u64>,

    /// Most memory the session may use, e.g. 2G or 512M (binary units); beyond it the
    /// kernel kills the session. Needs browserd to contain sessions in cgroups with the
    /// memory controller (see `browserctl status`)
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub memory_max: Option<u64>,

    /// Most processes and threads the session may have; a fork beyond fails. Needs cgroup
    /// containment with the pids controller
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub pids_max: Option<u64>,

    /// Set an environment variable for the session (repeatable)
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env_pair)]
    pub env: Vec<(String, String)>,

    /// Working directory; a relative path is taken relative to the current directory
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,

    /// Extra argument appended to the command, or to the detected browser's defaults when no
    /// CMD is given (repeatable; may start with `-`)
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    pub args: Vec<String>,

    /// The command to run (required for --type sandbox; for a browser, replaces the
    /// detected Chromium)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only sessions in this workspace
    #[arg(long, value_name = "W")]
    pub workspace: Option<Workspace>,

    /// Only sessions of this type
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub session_type: Option<TypeArg>,

    /// Only sessions in this state
    #[arg(long, value_enum, value_name = "STATE")]
    pub state: Option<StateArg>,

    /// Only the session with this tracking id
    #[arg(long, value_name = "T")]
    pub tracking_id: Option<TrackingId>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events of sessions in this workspace
    #[arg(long, value_name = "W")]
    pub workspace: Option<Workspace>,

    /// Only events of sessions of this type
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub session_type: Option<TypeArg>,
}

impl EventsArgs {
    pub fn watch(&self) -> Watch {
        Watch {
            workspace: self.workspace.clone(),
            session_type: self.session_type.map(SessionType::from),
        }
    }
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Session id, tracking id, or `all`
    #[arg(value_name = "TARGET")]
    pub target: Target,

    /// Also terminate leased sessions, and SIGKILL processes that outlive the grace period
    #[arg(long)]
    pub force: bool,

    /// How long to wait after SIGTERM, e.g. 500ms or 5s [daemon default]
    #[arg(long, value_name = "DUR", value_parser = parse_millis)]
    pub grace: Option<u64>,
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("selection")
        .required(true)
        .multiple(true)
        .args(["all", "ids", "workspaces", "request"])
))]
pub struct TerminateArgs {
    /// Every session (of --type, if given)
    #[arg(long, conflicts_with_all = ["ids", "workspaces"])]
    pub all: bool,

    /// A session id or tracking id (repeatable)
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<SessionRef>,

    /// Every session of this workspace (repeatable)
    #[arg(long = "workspace", value_name = "W")]
    pub workspaces: Vec<Workspace>,

    /// With --all: only sessions of this type
    // `session_type` only filters `all`; with explicit ids it would be silently ignored.
    #[arg(
        long = "type",
        value_enum,
        value_name = "TYPE",
        conflicts_with_all = ["ids", "workspaces"]
    )]
    pub session_type: Option<TypeArg>,

    /// Also terminate leased sessions, and SIGKILL processes that outlive the grace period
    #[arg(long)]
    pub force: bool,

    /// How long to wait after SIGTERM, e.g. 500ms or 5s [daemon default]
    #[arg(long, value_name = "DUR", value_parser = parse_millis)]
    pub grace: Option<u64>,

    /// Send this bulk-terminate JSON body instead of building one from flags (`-`: stdin)
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["all", "ids", "workspaces", "session_type", "force", "grace"]
    )]
    pub request: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// Session id or tracking id
    #[arg(value_name = "ID")]
    pub id: SessionRef,

    /// How long the lease lasts, e.g. 30s or 10m [daemon default]
    #[arg(long, value_name = "DUR", value_parser = parse_positive_millis)]
    pub ttl: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The lease id that `browserctl lease` printed
    #[arg(value_name = "LEASE_ID")]
    pub lease_id: LeaseId,
}

/// Input that clap's parser accepted but that still cannot make a valid request (an
/// unreadable `--request` file, a sandbox without a command, ...). Exits 2 like a clap error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A size in bytes with an optional binary unit: `1073741824`, `512K`, `256M`, `2G`, `1T`
/// (`KiB`, `MB` and the like mean the same: browserd counts in powers of 1024).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 512M or 2G"))?;
    let shift = match unit
        .trim()
        .to_ascii_lowercase()
        .trim_end_matches('b')
        .trim_end_matches('i')
    {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("`{text}` has an unknown unit; use K, M, G or T")),
    };
    match number.checked_mul(1 << shift) {
        Some(0) => Err("a size must be positive".into()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("`{text}` is too large")),
    }
}

impl Cli {
    /// The socket to connect to: `--socket` / `BROWSERD_SOCKET`, else the default the daemon
    /// also uses (see [`browserd_proto::default_socket_path`]); when a user has no daemon of
    /// their own but the system service's socket exists, that one. A non-UTF-8
    /// `XDG_RUNTIME_DIR` is treated as unset.
    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| {
            let euid = nix::unistd::geteuid().as_raw();
            let runtime_dir = std::env::var("XDG_RUNTIME_DIR").ok();
            let own = browserd_proto::default_socket_path(euid, runtime_dir.as_deref());
            let system = browserd_proto::default_socket_path(0, None);
            if !own.exists() && system.exists() {
                system
            } else {
                own
            }
        })
    }
}

impl Command {
    /// Builds the request this command sends, checking what clap could not: the things
    /// that depend on several flags together, or on a file's contents.
    pub fn into_request(self) -> Result<Request, UsageError> {
        Ok(match self {
            Command::Launch(args) => Request::Launch(args.into_launch()?),
            Command::Ls(args) => Request::Sessions(args.into_filter()),
            Command::Kill(args) => Request::Kill(Kill {
                target: args.target,
                force: args.force,
                grace_ms: args.grace,
            }),
            Command::Terminate(args) => Request::BulkTerminate(args.into_bulk_terminate()?),
            Command::Lease(args) => Request::Lease(Lease {
                id: args.id,
                ttl_ms: args.ttl,
            }),
            Command::Release(args) => Request::Release(Release {
                lease_id: args.lease_id,
            }),
            Command::Status => Request::Status,
            Command::Metrics => Request::Metrics,
            Command::Events(args) => Request::Watch(args.watch()),
            Command::Daemon(DaemonCommand::Reload { .. }) => Request::Reload,
        })
    }

    /// How long to wait for a reload this command asks for to be done, if it asks for one.
    pub fn reload_timeout(&self) -> Option<std::time::Duration> {
        match self {
            Command::Daemon(DaemonCommand::Reload { timeout }) => {
                Some(std::time::Duration::from_millis(*timeout))
            }
            _ => None,
        }
    }
}

impl LaunchArgs {
    fn into_launch(self) -> Result<Launch, UsageError> {
        let launch = Launch {
            session_type: self.session_type.map(SessionType::from),
            workspace: self.workspace,
            tracking_id: self.tracking_id,
            command: (!self.command.is_empty()).then_some(self.command),
            args: self.args,
            env: self.env.into_iter().collect::<BTreeMap<_, _>>(),
            cwd: self.cwd.as_deref().map(absolute_cwd).transpose()?,
            ttl_ms: self.ttl,
            memory_max: self.memory_max,
            pids_max: self.pids_max,
            queue_timeout_ms: self.queue_timeout,
        };
        launch.validate().map_err(|e| {
            let hint = match launch.kind() {
                SessionType::Sandbox if launch.command.is_none() => {
                    "; give it after `--`, e.g. `browserctl launch --type sandbox -- sleep 60`"
                }
                _ => "",
            };
            UsageError(format!("cannot launch: {e}{hint}"))
        })?;
        Ok(launch)
    }
}

/// The daemon runs elsewhere (its own cwd), so a relative `--cwd` is resolved here, where
/// the user meant it. Lexically only: the directory's existence is the daemon's concern.
fn absolute_cwd(dir: &Path) -> Result<String, UsageError> {
    let absolute = std::path::absolute(dir)
        .map_err(|e| UsageError(format!("cannot resolve --cwd {}: {e}", dir.display())))?;
    absolute
        .into_os_string()
        .into_string()
        .map_err(|path| UsageError(format!("--cwd {path:?} is not valid UTF-8")))
}

impl LsArgs {
    fn into_filter(self) -> SessionsFilter {
        SessionsFilter {
            workspace: self.workspace,
            session_type: self.session_type.map(SessionType::from),
            state: self.state.map(SessionState::from),
            tracking_id: self.tracking_id,
        }
    }
}

impl TerminateArgs {
    fn into_bulk_terminate(self) -> Result<BulkTerminate, UsageError> {
        let body = match &self.request {
            Some(source) => read_bulk_terminate(source)?,
            None => BulkTerminate {
                all: self.all.then_some(true),
                force: self.force.then_some(true),
                ids: (!self.ids.is_empty()).then_some(self.ids),
                session_type: self.session_type.map(SessionType::from),
                workspaces: (!self.workspaces.is_empty()).then_some(self.workspaces),
                grace_ms: self.grace,
            },
        };
        let refused = |e| UsageError(format!("cannot terminate: {e}"));
        body.validate().map_err(refused)?;
        // The flags are bounded as they are parsed; a `--request` body is checked here.
        if let Some(ms) = body.grace_ms {
            check_millis("grace_ms", ms).map_err(refused)?;
        }
        Ok(body)
    }
}

/// Reads a Chaser bulk-terminate body from a file, or from stdin for `-`.
fn read_bulk_terminate(source: &Path) -> Result<BulkTerminate, UsageError> {
    let (name, text) = if source == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| UsageError(format!("cannot read --request from stdin: {e}")))?;
        ("stdin".to_owned(), text)
    } else {
        let name = source.display().to_string();
        let text = std::fs::read_to_string(source)
            .map_err(|e| UsageError(format!("cannot read --request file {name}: {e}")))?;
        (name, text)
    };
    parse_bulk_terminate(&text).map_err(|e| {
        // serde lists the accepted fields itself when it meets an unknown one.
        let hint = if e.contains("expected one of") {
            ""
        } else {
            "\nexpected a JSON object with any of: all, force, ids, session_type, workspaces, \
             grace_ms"
        };
        UsageError(format!("invalid bulk-terminate body in {name}: {e}{hint}"))
    })
}

/// Parses a bulk-terminate body exactly as the daemon would, so unknown fields and bad ids
/// are reported before anything is sent. It must be an object: serde would otherwise also
/// take a struct from a positional array such as `[true]`.
fn parse_bulk_terminate(text: &str) -> Result<BulkTerminate, String> {
    match serde_json::from_str(text).map_err(|e| e.to_string())? {
        object @ serde_json::Value::Object(_) => {
            serde_json::from_value(object).map_err(|e| e.to_string())
        }
        _ => Err("the body is not a JSON object".to_owned()),
    }
}

/// `--env K=V`: split at the first `=`, so values may contain `=`.
fn parse_env_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some(("", _)) => Err(format!("`{text}` has an empty variable name")),
        Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
        None => Err(format!(
            "`{text}` is not K=V; write e.g. `--env {text}=value`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;
    use proptest::prelude::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("browserctl").chain(args.iter().copied()))
    }

    fn request(args: &[&str]) -> Result<Request, UsageError> {
        parse(args).expect("arguments parse").command.into_request()
    }

    fn usage_error(args: &[&str]) -> clap::Error {
        let error = parse(args).expect_err("arguments must be refused");
        assert_eq!(error.exit_code(), 2, "{error}");
        error
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_bad_tracking_id_is_a_usage_error() {
        let error = usage_error(&["launch", "--tracking-id", "all"]);
        assert!(error.to_string().contains("reserved"), "{error}");
        let error = usage_error(&["ls", "--tracking-id", "has space"]);
        assert!(error.to_string().contains("A-Za-z0-9"), "{error}");
        usage_error(&["kill", "a;rm"]);
        usage_error(&["lease", ""]);
    }

    #[test]
    fn a_bad_duration_is_a_usage_error() {
        let error = usage_error(&["kill", "abc", "--grace", "5"]);
        assert!(error.to_string().contains("no unit"), "{error}");
        usage_error(&["launch", "--ttl", "soon"]);
        usage_error(&["launch", "--ttl", "0s"]);
        usage_error(&["lease", "abc", "--ttl", "-1s"]);
    }

    #[test]
    fn durations_are_sent_as_milliseconds() {
        let Request::Kill(kill) = request(&["kill", "all", "--force", "--grace", "2s"]).unwrap()
        else {
            panic!("not a kill")
        };
        assert_eq!(kill.target, Target::All);
        assert!(kill.force);
        assert_eq!(kill.grace_ms, Some(2000));
    }

    #[test]
    fn terminate_with_nothing_selected_is_a_usage_error() {
        usage_error(&["terminate"]);
        usage_error(&["terminate", "--force", "--grace", "1s"]);
    }

    #[test]
    fn a_request_body_that_selects_nothing_is_refused_before_sending() {
        assert!(parse_bulk_terminate(r#"{"all": false, "ids": []}"#)
            .unwrap()
            .validate()
            .is_err());
    }

    #[test]
    fn request_conflicts_with_the_selection_flags() {
        for flag in [
            &["--all"][..],
            &["--id", "abc"],
            &["--workspace", "w"],
            &["--force"],
            &["--grace", "1s"],
        ] {
            let mut args = vec!["terminate", "--request", "-"];
            args.extend_from_slice(flag);
            let error = usage_error(&args);
            assert_eq!(error.kind(), ErrorKind::ArgumentConflict, "{flag:?}");
        }
    }

    #[test]
    fn all_conflicts_with_explicit_selections_and_type_needs_all() {
        usage_error(&["terminate", "--all", "--id", "abc"]);
        usage_error(&["terminate", "--id", "abc", "--type", "browser"]);
        let Request::BulkTerminate(body) =
            request(&["terminate", "--all", "--type", "sandbox"]).unwrap()
        else {
            panic!("not a bulk terminate")
        };
        assert_eq!(body.all, Some(true));
        assert_eq!(body.session_type, Some(SessionType::Sandbox));
        assert_eq!(body.ids, None);
    }

    #[test]
    fn terminate_builds_the_union_of_ids_and_workspaces() {
        let Request::BulkTerminate(body) = request(&[
            "terminate",
            "--id",
            "a",
            "--id",
            "job-1",
            "--workspace",
            "ci",
            "--force",
        ])
        .unwrap() else {
            panic!("not a bulk terminate")
        };
        let ids: Vec<&str> = body.ids.iter().flatten().map(SessionRef::as_str).collect();
        assert_eq!(ids, ["a", "job-1"]);
        assert_eq!(body.workspaces.unwrap()[0].as_str(), "ci");
        assert_eq!(body.force, Some(true));
        assert_eq!(body.all, None);
    }

    #[test]
    fn request_bodies_take_the_chaser_shape_with_nulls_and_grace() {
        let body = parse_bulk_terminate(
            r#"{"all": null, "force": true, "ids": ["abc"], "session_type": null,
                "workspaces": null, "grace_ms": 250}"#,
        )
        .unwrap();
        assert_eq!(body.force, Some(true));
        assert_eq!(body.grace_ms, Some(250));
        assert!(body.validate().is_ok());
    }

    #[test]
    fn request_bodies_with_unknown_fields_or_bad_ids_are_refused() {
        let error = parse_bulk_terminate(r#"{"all": true, "sessionType": "browser"}"#);
        assert!(error.unwrap_err().contains("sessionType"));
        assert!(parse_bulk_terminate(r#"{"ids": ["a b"]}"#).is_err());
        assert!(parse_bulk_terminate("[true]").is_err());
        assert!(parse_bulk_terminate("{").is_err());
    }

    #[test]
    fn an_unreadable_request_file_is_a_usage_error() {
        let error = request(&["terminate", "--request", "/nonexistent/body.json"]).unwrap_err();
        assert!(error.0.contains("/nonexistent/body.json"), "{error}");
    }

    #[test]
    fn launch_without_a_command_leaves_the_browser_to_the_daemon() {
        let Request::Launch(launch) =
            request(&["launch", "--arg", "--window-size=800,600", "--ttl", "1m"]).unwrap()
        else {
            panic!("not a launch")
        };
        assert_eq!(launch.session_type, None);
        assert_eq!(launch.command, None);
        assert_eq!(launch.args, ["--window-size=800,600"]);
        assert_eq!(launch.ttl_ms, Some(60_000));
        assert_eq!(launch.queue_timeout_ms, None, "the daemon's default");
    }

    #[test]
    fn launch_takes_a_queue_timeout_zero_included() {
        for (flag, ms) in [("30s", 30_000), ("0s", 0), ("250ms", 250)] {
            let Request::Launch(launch) = request(&["launch", "--queue-timeout", flag]).unwrap()
            else {
                panic!("not a launch")
            };
            assert_eq!(launch.queue_timeout_ms, Some(ms), "{flag}");
        }
        usage_error(&["launch", "--queue-timeout", "soon"]);
        usage_error(&["launch", "--queue-timeout", "30"]);
        let error = usage_error(&["launch", "--queue-timeout", "200y"]);
        assert!(error.to_string().contains("100years"), "{error}");
    }

    #[test]
    fn launch_takes_the_command_after_a_double_dash_and_resolves_cwd() {
        let Request::Launch(launch) = request(&[
            "launch", "--type", "sandbox", "--env", "A=b=c", "--cwd", "sub", "--", "sleep", "--",
            "10",
        ])
        .unwrap() else {
            panic!("not a launch")
        };
        assert_eq!(launch.session_type, Some(SessionType::Sandbox));
        assert_eq!(launch.command.unwrap(), ["sleep", "--", "10"]);
        assert_eq!(launch.env["A"], "b=c");
        let expected = std::env::current_dir().unwrap().join("sub");
        assert_eq!(launch.cwd.unwrap(), expected.to_str().unwrap());
    }

    #[test]
    fn a_sandbox_without_a_command_is_a_usage_error() {
        let error = request(&["launch", "--type", "sandbox"]).unwrap_err();
        assert!(error.0.contains("needs `command`"), "{error}");
    }

    #[test]
    fn malformed_env_pairs_are_usage_errors() {
        usage_error(&["launch", "--env", "NOVALUE"]);
        usage_error(&["launch", "--env", "=x"]);
        assert!(request(&["launch", "--env", "BROWSERD_SESSION=x"]).is_err());
    }

    /// The id grammars of the SPEC, written out independently of the protocol crate.
    fn is_token(text: &str, max: usize) -> bool {
        (1..=max).contains(&text.chars().count())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    fn is_workspace(text: &str) -> bool {
        (1..=64).contains(&text.chars().count()) && !text.chars().any(char::is_control)
    }

    /// Ids near the grammar: tokens around the length limits, `all`, and stray characters.
    fn id_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9_-]{0,70}",
            "[A-Za-z0-9_ ./;é\\-]{0,40}",
            Just("all".to_owned()),
            any::<String>(),
        ]
    }

    /// Parses `args` with `value` in place of `{}`: the command, or `None` after checking
    /// that clap refused it as a usage error (exit 2).
    fn parse_with(args: &[&str], value: &str) -> Option<Command> {
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "{}" { value } else { a })
            .collect();
        match parse(&args) {
            Ok(cli) => Some(cli.command),
            Err(error) => {
                // `-h…` and `-V…` ask for help or the version, which is no value either.
                let help = matches!(
                    error.kind(),
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
                );
                assert!(help || error.exit_code() == 2, "{args:?}: {error}");
                None
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn generated_ids_are_accepted_exactly_when_the_grammar_allows(text in id_text()) {
            let kill = parse_with(&["kill", "{}"], &text);
            let lease = parse_with(&["lease", "{}"], &text);
            let release = parse_with(&["release", "{}"], &text);
            let tracking = parse_with(&["launch", "--tracking-id", "{}"], &text);
            let workspace = parse_with(&["ls", "--workspace", "{}"], &text);
            let accepted = [
                ("kill", kill.is_some(), text == "all" || is_token(&text, 64)),
                ("lease", lease.is_some(), is_token(&text, 64)),
                ("release", release.is_some(), is_token(&text, 64)),
                ("tracking id", tracking.is_some(), text != "all" && is_token(&text, 32)),
                ("workspace", workspace.is_some(), is_workspace(&text)),
            ];
            for (what, accepted, valid) in accepted {
                // A value starting with `-` reads as a flag: clap may refuse even a valid one.
                if text.starts_with('-') {
                    prop_assert!(!accepted || valid, "{} {:?} accepted", what, text);
                } else {
                    prop_assert_eq!(accepted, valid, "{} {:?}", what, text);
                }
            }
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn generated_durations_on_every_flag_are_bounded_or_usage_errors(
            text in "[0-9]{1,22}(ns|ms|s|m|h|d|w|y| y|years)|[0-9 a-z.-]{0,12}",
        ) {
            for args in [
                &["launch", "--ttl", "{}"][..],
                &["launch", "--queue-timeout", "{}"],
                &["lease", "abc", "--ttl", "{}"],
                &["kill", "all", "--grace", "{}"],
                &["terminate", "--all", "--grace", "{}"],
            ] {
                let ms = match parse_with(args, &text) {
                    None => continue,
                    Some(Command::Launch(launch)) => launch.ttl.or(launch.queue_timeout),
                    Some(Command::Lease(lease)) => lease.ttl,
                    Some(Command::Kill(kill)) => kill.grace,
                    Some(Command::Terminate(terminate)) => terminate.grace,
                    Some(other) => panic!("{other:?}"),
                };
                let ms = ms.expect("the flag was given");
                prop_assert!(ms <= crate::duration::MAX_DURATION_MS, "{:?} gave {}", args, ms);
            }
        }
    }

    #[test]
    fn huge_durations_are_refused_before_anything_is_sent() {
        for args in [
            &["launch", "--ttl", "10000y"][..],
            &["lease", "abc", "--ttl", "1000000000h"],
            &["kill", "all", "--grace", "200y"],
            &["terminate", "--all", "--grace", "5000000d"],
        ] {
            let error = usage_error(args);
            assert!(error.to_string().contains("100years"), "{args:?}: {error}");
        }
    }

    #[test]
    fn a_request_body_with_a_huge_grace_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let body = dir.path().join("body.json");
        std::fs::write(&body, r#"{"all": true, "grace_ms": 18446744073709551615}"#).unwrap();
        let error = request(&["terminate", "--request", body.to_str().unwrap()]).unwrap_err();
        assert!(error.0.contains("grace_ms"), "{error}");
    }

    #[test]
    fn socket_and_json_are_accepted_after_the_subcommand() {
        let cli = parse(&["ls", "--json", "--socket", "/tmp/x.sock"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.socket, Some(PathBuf::from("/tmp/x.sock")));
    }
}
