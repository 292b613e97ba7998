//! Configuration. Every setting is declared once, in the `settings!` table below: its flag
//! (and environment variable, where it has one), its config-file key (the field name), its
//! type and its default. From that one declaration come the command-line parser, the TOML
//! file's schema and the settled [`Config`]. Precedence: flag or environment, then file,
//! then default; a flag replaces the file's value, lists included.

use crate::recovery::OnRestart;
use browserd_proto::duration::parse_duration;
use clap::Parser;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Declares the settings. Each entry: doc comment (the flag's help), `#[arg(...)]` (its clap
/// attributes), then `name: Type = default` for a setting that always has
/// a value, or `name: Type = None` for one that may be unset.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        #[arg($($arg:tt)*)]
        $(#[serde($($serde:tt)*)])?
        $name:ident : $ty:ty = $default:tt;
    )*) => {
        /// One layer of settings: what the command line (with the environment) or the
        /// config file says. Unset settings are `None`.
        #[derive(Debug, Clone, Default, clap::Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Layer {
            $(
                $(#[doc = $doc])*
                #[arg($($arg)*)]
                #[serde(default $(, $($serde)*)?)]
                pub $name: Option<$ty>,
            )*
        }

        /// The settled configuration: every layer merged over the defaults. A handover
        /// document written by a daemon that predates a setting lacks it; it reads as the
        /// default.
        #[derive(Debug, Clone, serde::Serialize, Deserialize)]
        #[serde(default)]
        pub struct Config {
            $( pub $name: settings!(@out $ty, $default), )*
        }

        impl Default for Config {
            fn default() -> Config {
                Layer::default().settle()
            }
        }

        impl Layer {
            /// This layer's settings, the `lower` layer's where this one has none.
            fn over(self, lower: Layer) -> Layer {
                Layer { $( $name: self.$name.or(lower.$name), )* }
            }

            fn settle(self) -> Config {
                Config { $( $name: settings!(@settle self.$name, $default), )* }
            }
        }

    };
    (@out $ty:ty, None) => { Option<$ty> };
    (@out $ty:ty, $default:tt) => { $ty };
    (@settle $value:expr, None) => { $value };
    (@settle $value:expr, $default:tt) => { $value.unwrap_or_else(|| $default) };
}

settings! {
    /// Unix socket path [default: /run/browserd/browserd.sock for root, else
    /// $XDG_RUNTIME_DIR/browserd.sock, else /tmp/browserd-UID/browserd.sock]
    #[arg(long, value_name = "PATH", env = "BROWSERD_SOCKET")]
    socket: PathBuf = (default_socket());
    /// Permissions of the socket file, in octal [default: 0660]
    #[arg(long, value_name = "MODE")]
    socket_mode: Mode = (Mode(0o660));
    /// Group of the socket file (a name or gid), so that its members pass the file's
    /// permission check; the daemon must be root or a member [default: the daemon's group]
    #[arg(long, value_name = "GROUP")]
    socket_group: Gid = None;
    /// Also accept clients running as this uid (repeatable; root and the daemon's own uid
    /// always are)
    #[arg(long = "allow-uid", value_name = "UID")]
    #[serde(alias = "allow_uids")]
    allow_uid: Vec<u32> = (Vec::new());
    /// Also accept clients whose primary or supplementary group is this gid or group name
    /// (repeatable)
    #[arg(long = "allow-gid", value_name = "GID")]
    #[serde(alias = "allow_gids")]
    allow_gid: Vec<Gid> = (Vec::new());
    /// Most live sessions at once; a launch beyond it fails with `capacity` [default: 256]
    #[arg(long, value_name = "N")]
    max_sessions: u32 = 256;
    /// Default browsers kept launched and ready (at most max_sessions): a browser launch
    /// with no command, args, env or cwd takes one [default: 0]
    #[arg(long, value_name = "N", env = "BROWSERD_WARM")]
    warm: u32 = 0;
    /// Launches that may wait, first come first served, for a slot at max_sessions; 0 fails
    /// them with `capacity` at once [default: 0]
    #[arg(long, value_name = "N", env = "BROWSERD_MAX_QUEUE")]
    max_queue: u32 = 0;
    /// How long a queued launch waits for a slot unless it says otherwise
    /// (`queue_timeout_ms`) [default: 30s]
    #[arg(long, value_name = "DURATION", env = "BROWSERD_QUEUE_TIMEOUT")]
    queue_timeout: Human = (Human::secs(30));
    /// Default grace between SIGTERM and the end of a termination [default: 5s]
    #[arg(long, value_name = "DURATION")]
    grace: Human = (Human::secs(5));
    /// Largest grace a request may ask for [default: 60s]
    #[arg(long, value_name = "DURATION")]
    max_grace: Human = (Human::secs(60));
    /// TTL of sessions launched without one [default: none]
    #[arg(long, value_name = "DURATION")]
    default_ttl: Human = None;
    /// Largest TTL a launch may ask for [default: none]
    #[arg(long, value_name = "DURATION")]
    max_ttl: Human = None;
    /// TTL of leases taken without one [default: 60s]
    #[arg(long, value_name = "DURATION")]
    lease_ttl: Human = (Human::secs(60));
    /// Largest TTL a lease may ask for [default: 1h]
    #[arg(long, value_name = "DURATION")]
    max_lease_ttl: Human = (Human::secs(3600));
    /// How many exited sessions stay listed [default: 1000]
    #[arg(long, value_name = "N")]
    keep_exited: usize = 1000;
    /// How long an exited session stays listed [default: 10m]
    #[arg(long, value_name = "DURATION")]
    keep_exited_for: Human = (Human::secs(600));
    /// Where the daemon keeps its state: per-session profile dirs [default: /var/lib/browserd
    /// for root, else $XDG_STATE_HOME/browserd, else ~/.local/state/browserd]
    #[arg(long, value_name = "DIR", env = "BROWSERD_STATE_DIR")]
    state_dir: PathBuf = (default_state_dir());
    /// Chromium executable for browser sessions [default: detected; see README]
    #[arg(long, value_name = "PATH", env = "BROWSERD_BROWSER")]
    browser: PathBuf = None;
    /// How long a browser may take to announce its DevTools endpoint [default: 30s]
    #[arg(long, value_name = "DURATION")]
    launch_timeout: Human = (Human::secs(30));
    /// A cgroup v2 subtree browserd may use: each session gets its own cgroup below it
    /// [default: browserd's own cgroup, where systemd delegates it (Delegate=yes)]
    #[arg(long, value_name = "PATH", env = "BROWSERD_CGROUP_ROOT")]
    cgroup_root: PathBuf = None;
    /// What to do with sessions still running from before a crash: take them up again
    /// (adopt) or terminate them with force (kill) [default: adopt]
    #[arg(long, value_name = "POLICY")]
    on_restart: OnRestart = (OnRestart::Adopt);
    /// Log filter (error, warn, info, debug, trace, or a tracing directive); RUST_LOG wins
    /// when set [default: info]
    #[arg(long, value_name = "LEVEL")]
    log_level: String = (String::from("info"));
    /// Log format [default: text]
    #[arg(long, value_name = "FORMAT")]
    log_format: LogFormat = (LogFormat::Text);
    /// Also serve HTTP on this address, e.g. 127.0.0.1:8000: the browserless and Chaser
    /// endpoints, /sessions, /pressure, /metrics, /v1/events [default: off]
    #[arg(long, value_name = "ADDR", env = "BROWSERD_HTTP")]
    http: SocketAddr = None;
    /// File holding the token HTTP clients must send (its first line), as ?token= or
    /// Authorization: Bearer; required unless --http is a loopback address
    #[arg(long, value_name = "PATH")]
    http_token_file: PathBuf = None;
    /// Largest HTTP request body, in bytes [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    http_max_body: usize = (1 << 20);
    /// How long an HTTP client may take to send a request's headers, or its body, and how
    /// long an idle keep-alive connection is kept [default: 10s]
    #[arg(long, value_name = "DURATION")]
    http_client_timeout: Human = (Human::secs(10));
    /// How many events a subscriber (watch, /v1/events) may fall behind before it is sent
    /// `lagged` and dropped [default: 8192]
    #[arg(long, value_name = "N")]
    event_backlog: usize = 8192;
}

/// Supervisor daemon for headless browser sessions.
#[derive(Debug, Parser, Default)]
#[command(
    name = "browserd",
    version,
    about = "Supervisor daemon for headless browser sessions",
    after_help = "Durations take a unit: 500ms, 5s, 2m.\n\
                  Every flag can also be set in the --config TOML file (same names, with _ for -).\n\
                  Talk to it with browserctl, or with any client speaking JSON lines on the socket."
)]
pub struct Args {
    /// TOML config file; flags and environment override it
    #[arg(long, value_name = "FILE", env = "BROWSERD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Check the flags and config file, print what the daemon would use as JSON, and exit
    /// (0 if valid, 2 if not); a reload runs this with the new binary first
    #[arg(long)]
    pub check_config: bool,
    #[command(flatten)]
    pub settings: Layer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The most sessions `max_sessions` may allow: each costs file descriptors and memory.
pub const MAX_SESSIONS_LIMIT: u32 = 100_000;
/// The most launches `max_queue` may let wait: each holds a client's connection.
pub const MAX_QUEUE_LIMIT: u32 = 100_000;
/// The largest config file read.
const MAX_CONFIG: u64 = 1 << 20;

impl Config {
    /// Merges the flags over the config file over the defaults and checks the result.
    pub fn load(args: Args) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => Layer::default(),
        };
        let config = args.settings.over(file).settle();
        config.check()?;
        Ok(config)
    }

    pub fn grace(&self) -> Duration {
        self.grace.0
    }

    fn check(&self) -> Result<(), String> {
        if self.max_sessions == 0 || self.max_sessions > MAX_SESSIONS_LIMIT {
            return Err(format!(
                "max_sessions must be between 1 and {MAX_SESSIONS_LIMIT}, got {}",
                self.max_sessions
            ));
        }
        if self.warm > self.max_sessions {
            return Err(format!(
                "warm ({}) exceeds max_sessions ({}): a pool larger than the sessions that can be live at once is never used up; lower --warm or raise --max-sessions",
                self.warm, self.max_sessions
            ));
        }
        if self.max_queue > MAX_QUEUE_LIMIT {
            return Err(format!(
                "max_queue must be at most {MAX_QUEUE_LIMIT}, got {}",
                self.max_queue
            ));
        }
        if self.queue_timeout == Human::ZERO {
            return Err(
                "queue_timeout must be positive (a launch that must not wait says queue_timeout_ms: 0)"
                    .into(),
            );
        }
        if self.grace > self.max_grace {
            return Err(format!(
                "grace ({}) exceeds max_grace ({})",
                self.grace, self.max_grace
            ));
        }
        if let (Some(ttl), Some(max)) = (self.default_ttl, self.max_ttl) {
            if ttl > max {
                return Err(format!("default_ttl ({ttl}) exceeds max_ttl ({max})"));
            }
        }
        if [self.default_ttl, self.max_ttl].contains(&Some(Human::ZERO)) {
            return Err("TTLs must be positive".into());
        }
        if self.lease_ttl == Human::ZERO || self.lease_ttl > self.max_lease_ttl {
            return Err("lease_ttl must be positive and at most max_lease_ttl".into());
        }
        if self.launch_timeout == Human::ZERO {
            return Err("launch_timeout must be positive".into());
        }
        // sun_path holds 108 bytes including the terminating NUL.
        let len = self.socket.as_os_str().len();
        if len == 0 || len > 107 {
            return Err(format!(
                "socket path is {len} bytes; a Unix socket path must be 1 to 107 bytes"
            ));
        }
        if !self.state_dir.is_absolute() {
            return Err("state_dir must be an absolute path".into());
        }
        self.check_http()?;
        if self.event_backlog == 0 {
            return Err("event_backlog must be at least 1".into());
        }
        Ok(())
    }

    /// HTTP reachable from other hosts must not be open to them: a non-loopback address
    /// needs a token.
    fn check_http(&self) -> Result<(), String> {
        let Some(addr) = self.http else {
            return Ok(());
        };
        if !addr.ip().is_loopback() && self.http_token_file.is_none() {
            return Err(format!(
                "--http {addr} is reachable from other hosts and no --http-token-file is set; \
                 give the token clients must send in a file (--http-token-file PATH), or listen \
                 on a loopback address such as 127.0.0.1:{}",
                addr.port()
            ));
        }
        if self.http_max_body < 1024 {
            return Err(format!(
                "http_max_body must be at least 1024 bytes, got {}",
                self.http_max_body
            ));
        }
        if self.http_client_timeout == Human::ZERO {
            return Err("http_client_timeout must be positive".into());
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<Layer, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    if meta.len() > MAX_CONFIG {
        return Err(format!("config {} is larger than 1 MiB", path.display()));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))
}

/// A duration with a unit (`500ms`, `5s`, `2m`), from a flag or a config string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Human(pub Duration);

impl Human {
    const ZERO: Human = Human(Duration::ZERO);

    const fn secs(secs: u64) -> Human {
        Human(Duration::from_secs(secs))
    }
}

impl FromStr for Human {
    type Err = String;
    fn from_str(text: &str) -> Result<Human, String> {
        parse_duration(text).map(Human)
    }
}

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Human {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Human {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Human, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An octal permission mode such as `0660` or `660`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl FromStr for Mode {
    type Err = String;
    fn from_str(text: &str) -> Result<Mode, String> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if mode <= 0o777 => Ok(Mode(mode)),
            _ => Err(format!(
                "`{text}` is not an octal permission mode such as 0660"
            )),
        }
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:04o}", self.0))
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Mode, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A gid, or a group name resolved through the system's group database (so a unit file or
/// config can say `browserd` without knowing the number sysusers picked). The flag and the
/// config file accept the same forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gid(pub u32);

impl FromStr for Gid {
    type Err = String;
    fn from_str(text: &str) -> Result<Gid, String> {
        if let Ok(gid) = text.parse() {
            return Ok(Gid(gid));
        }
        match nix::unistd::Group::from_name(text) {
            Ok(Some(group)) => Ok(Gid(group.gid.as_raw())),
            Ok(None) => Err(format!("no group named `{text}`")),
            Err(e) => Err(format!("cannot look up group `{text}`: {e}")),
        }
    }
}

impl Serialize for Gid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Gid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Gid, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Number(u32),
            Name(String),
        }
        match Form::deserialize(deserializer)? {
            Form::Number(gid) => Ok(Gid(gid)),
            Form::Name(name) => name.parse().map_err(serde::de::Error::custom),
        }
    }
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn default_socket() -> PathBuf {
    let xdg = std::env::var("XDG_RUNTIME_DIR").ok();
    browserd_proto::default_socket_path(euid(), xdg.as_deref())
}

fn default_state_dir() -> PathBuf {
    let euid = euid();
    if euid == 0 {
        return PathBuf::from("/var/lib/browserd");
    }
    let absolute = |v: String| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(dir) = std::env::var("XDG_STATE_HOME").ok().and_then(absolute) {
        return dir.join("browserd");
    }
    if let Some(home) = std::env::var("HOME").ok().and_then(absolute) {
        return home.join(".local/state/browserd");
    }
    PathBuf::from(format!("/tmp/browserd-{euid}/state"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("browserd").chain(list.iter().copied())).unwrap()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn defaults_are_sane() {
        let config = Config::load(args(&["--socket", "/tmp/x.sock"])).unwrap();
        assert_eq!(config.grace(), Duration::from_secs(5));
        assert_eq!(config.socket_mode, Mode(0o660));
        assert_eq!(config.max_sessions, 256);
        assert!(config.default_ttl.is_none());
        assert!(config.allow_uid.is_empty());
    }

    #[test]
    fn flags_override_the_file() {
        let f = file("grace = \"2s\"\nmax_sessions = 7\nsocket_mode = \"0600\"\nallow_uid = [5]\n");
        let path = f.path().to_str().unwrap();
        let config = Config::load(args(&[
            "--config", path, "--grace", "1s", "--socket", "/tmp/s",
        ]))
        .unwrap();
        assert_eq!(config.grace(), Duration::from_secs(1));
        assert_eq!(config.max_sessions, 7);
        assert_eq!(config.socket_mode, Mode(0o600));
        assert_eq!(config.allow_uid, vec![5]);
        let config = Config::load(args(&["--config", path, "--allow-uid", "9"])).unwrap();
        assert_eq!(config.allow_uid, vec![9], "a flag replaces the file's list");
    }

    #[test]
    fn file_and_flags_accept_the_same_forms() {
        let f = file("allow_gid = [\"root\", 7]\n");
        let config = Config::load(args(&["--config", f.path().to_str().unwrap()])).unwrap();
        assert_eq!(config.allow_gid, vec![Gid(0), Gid(7)]);
        let config = Config::load(args(&["--allow-gid", "root", "--allow-gid", "7"])).unwrap();
        assert_eq!(config.allow_gid, vec![Gid(0), Gid(7)]);
        // The plural keys of earlier versions still read.
        let f = file("allow_gids = [991]\nallow_uids = [5]\n");
        let config = Config::load(args(&["--config", f.path().to_str().unwrap()])).unwrap();
        assert_eq!(config.allow_gid, vec![Gid(991)]);
        assert_eq!(config.allow_uid, vec![5]);
    }

    #[test]
    fn bad_files_and_values_are_explained() {
        let f = file("graze = \"2s\"\n");
        let err = Config::load(args(&["--config", f.path().to_str().unwrap()])).unwrap_err();
        assert!(err.contains("graze"), "{err}");
        let f = file("grace = \"soon\"\n");
        let err = Config::load(args(&["--config", f.path().to_str().unwrap()])).unwrap_err();
        assert!(err.contains("grace") || err.contains("soon"), "{err}");
        let f = file("allow_gid = [\"no-such-group-here\"]\n");
        let err = Config::load(args(&["--config", f.path().to_str().unwrap()])).unwrap_err();
        assert!(err.contains("no group"), "{err}");
        let err = Config::load(args(&["--config", "/nonexistent/b.toml"])).unwrap_err();
        assert!(err.contains("cannot read config"), "{err}");
        let err = Config::load(args(&["--grace", "10s", "--max-grace", "5s"])).unwrap_err();
        assert!(err.contains("max_grace"));
        let err = Config::load(args(&["--max-sessions", "0"])).unwrap_err();
        assert!(err.contains("max_sessions"));
        let long = format!("/tmp/{}", "x".repeat(200));
        assert!(Config::load(args(&["--socket", &long]))
            .unwrap_err()
            .contains("107"));
    }

    #[test]
    fn flags_reject_malformed_values() {
        for bad in [
            &["--grace", "5"][..],
            &["--socket-mode", "999"],
            &["--max-sessions", "-1"],
            &["--log-format", "xml"],
            &["--allow-gid", "no-such-group-here"],
            &["--bogus"],
        ] {
            let argv = std::iter::once("browserd").chain(bad.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_settled_config_survives_a_handover() {
        let config = Config::load(args(&["--allow-gid", "7", "--default-ttl", "5m"])).unwrap();
        let json = serde_json::to_string(&config).unwrap();
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back.allow_gid, vec![Gid(7)]);
        assert_eq!(back.default_ttl, Some(Human::secs(300)));
        assert_eq!(back.socket_mode, Mode(0o660));
    }

    #[test]
    fn a_handed_over_config_that_predates_a_setting_reads_it_as_the_default() {
        let mut json = serde_json::to_value(Config::load(args(&[])).unwrap()).unwrap();
        json.as_object_mut().unwrap().remove("event_backlog");
        let back: Config = serde_json::from_value(json).unwrap();
        assert_eq!(back.event_backlog, 8192);
    }

    #[test]
    fn http_off_the_loopback_needs_a_token() {
        let err = Config::load(args(&["--http", "0.0.0.0:8000"])).unwrap_err();
        assert!(err.contains("--http-token-file"), "{err}");
        let err = Config::load(args(&["--http", "[::]:8000"])).unwrap_err();
        assert!(err.contains("127.0.0.1:8000"), "{err}");
        for loopback in ["127.0.0.1:8000", "[::1]:8000", "127.0.0.2:0"] {
            let config = Config::load(args(&["--http", loopback])).unwrap();
            assert_eq!(config.http, Some(loopback.parse().unwrap()));
        }
        let config = Config::load(args(&[
            "--http",
            "0.0.0.0:8000",
            "--http-token-file",
            "/etc/browserd/token",
        ]))
        .unwrap();
        assert!(config.http_token_file.is_some());
        let argv = ["browserd", "--http", "localhost:80"];
        assert!(
            Args::try_parse_from(argv).is_err(),
            "an address, not a name"
        );
    }

    #[test]
    fn the_pool_and_the_queue_are_bounded_in_every_layer() {
        let config = Config::load(args(&["--warm", "2", "--max-queue", "3"])).unwrap();
        assert_eq!((config.warm, config.max_queue), (2, 3));
        assert_eq!(config.queue_timeout, Human::secs(30));
        let f = file("warm = 4\nmax_queue = 10\nqueue_timeout = \"2s\"\n");
        let config = Config::load(args(&["--config", f.path().to_str().unwrap()])).unwrap();
        assert_eq!((config.warm, config.max_queue), (4, 10));
        assert_eq!(config.queue_timeout, Human::secs(2));

        let err = Config::load(args(&["--warm", "300"])).unwrap_err();
        assert!(
            err.contains("warm") && err.contains("max_sessions"),
            "{err}"
        );
        let err = Config::load(args(&["--max-sessions", "2", "--warm", "3"])).unwrap_err();
        assert!(err.contains("warm (3) exceeds max_sessions (2)"), "{err}");
        let err = Config::load(args(&["--max-queue", "100001"])).unwrap_err();
        assert!(err.contains("max_queue"), "{err}");
        let err = Config::load(args(&["--queue-timeout", "0s"])).unwrap_err();
        assert!(err.contains("queue_timeout"), "{err}");
        for bad in [
            "warm = -1\n",
            "warm = \"two\"\n",
            "max_queue = 1.5\n",
            "queue_timeout = 30\n",
        ] {
            let f = file(bad);
            let err = Config::load(args(&["--config", f.path().to_str().unwrap()])).unwrap_err();
            assert!(err.contains("invalid config"), "{bad}: {err}");
        }
        for bad in [
            &["--warm", "-1"][..],
            &["--warm", "two"],
            &["--max-queue", "x"],
            &["--queue-timeout", "30"],
        ] {
            let argv = std::iter::once("browserd").chain(bad.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_handover_without_the_newer_settings_takes_their_defaults() {
        let config = Config::load(args(&["--warm", "1"])).unwrap();
        let mut json = serde_json::to_value(&config).unwrap();
        let fields = json.as_object_mut().unwrap();
        for newer in ["warm", "max_queue", "queue_timeout"] {
            fields.remove(newer);
        }
        let back: Config = serde_json::from_value(json).unwrap();
        assert_eq!((back.warm, back.max_queue), (0, 0));
        assert_eq!(back.socket, config.socket);
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!("0660".parse::<Mode>().unwrap(), Mode(0o660));
        assert_eq!("600".parse::<Mode>().unwrap(), Mode(0o600));
        assert!("0999".parse::<Mode>().is_err());
        assert!("7777".parse::<Mode>().is_err());
    }
}
