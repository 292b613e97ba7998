//! Configuration: command-line flags, environment, and an optional TOML file, merged in that
//! order of precedence over built-in defaults, and checked once at startup.

use browserd_proto::duration::parse_duration;
use clap::Parser;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// TOML config file; flags and environment override it.
    #[arg(long, value_name = "FILE", env = "BROWSERD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Unix socket path [default: /run/browserd/browserd.sock for root, else
    /// $XDG_RUNTIME_DIR/browserd.sock].
    #[arg(long, value_name = "PATH", env = "BROWSERD_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Permissions of the socket file, in octal [default: 0660].
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub socket_mode: Option<u32>,
    /// Also accept clients running as this uid (root and the daemon's own uid always are).
    #[arg(long = "allow-uid", value_name = "UID")]
    pub allow_uids: Vec<u32>,
    /// Also accept clients whose primary or supplementary group is this gid (or group name).
    #[arg(long = "allow-gid", value_name = "GID", value_parser = parse_gid)]
    pub allow_gids: Vec<u32>,
    /// Most live sessions at once; a launch beyond it fails with `capacity` [default: 256].
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<u32>,
    /// Default grace between SIGTERM and the end of a termination [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub grace: Option<Duration>,
    /// Largest grace a request may ask for [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_grace: Option<Duration>,
    /// TTL of sessions launched without one [default: none].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub default_ttl: Option<Duration>,
    /// Largest TTL a launch may ask for [default: none].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_ttl: Option<Duration>,
    /// TTL of leases taken without one [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lease_ttl: Option<Duration>,
    /// Largest TTL a lease may ask for [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_lease_ttl: Option<Duration>,
    /// How many exited sessions stay listed [default: 1000].
    #[arg(long, value_name = "N")]
    pub keep_exited: Option<usize>,
    /// How long an exited session stays listed [default: 10m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_exited_for: Option<Duration>,
    /// Where per-session profile and temp dirs are created [default: /var/lib/browserd for
    /// root, else $XDG_STATE_HOME/browserd].
    #[arg(long, value_name = "DIR", env = "BROWSERD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Chromium executable for browser sessions [default: detected; see README].
    #[arg(long, value_name = "PATH", env = "BROWSERD_BROWSER")]
    pub browser: Option<PathBuf>,
    /// How long a browser may take to announce its DevTools endpoint [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub launch_timeout: Option<Duration>,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive); RUST_LOG wins
    /// when set [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format [default: text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The config file: the same settings as the flags, durations as strings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    socket: Option<PathBuf>,
    socket_mode: Option<String>,
    #[serde(default)]
    allow_uids: Vec<u32>,
    #[serde(default)]
    allow_gids: Vec<u32>,
    max_sessions: Option<u32>,
    grace: Option<String>,
    max_grace: Option<String>,
    default_ttl: Option<String>,
    max_ttl: Option<String>,
    lease_ttl: Option<String>,
    max_lease_ttl: Option<String>,
    keep_exited: Option<usize>,
    keep_exited_for: Option<String>,
    state_dir: Option<PathBuf>,
    browser: Option<PathBuf>,
    launch_timeout: Option<String>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
}

/// The daemon's settled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub allow_uids: Vec<u32>,
    pub allow_gids: Vec<u32>,
    pub max_sessions: u32,
    pub grace: Duration,
    pub max_grace: Duration,
    pub default_ttl: Option<Duration>,
    pub max_ttl: Option<Duration>,
    pub lease_ttl: Duration,
    pub max_lease_ttl: Duration,
    pub keep_exited: usize,
    pub keep_exited_for: Duration,
    pub state_dir: PathBuf,
    pub browser: Option<PathBuf>,
    pub launch_timeout: Duration,
    pub log_level: String,
    pub log_format: LogFormat,
}

/// The most sessions `max_sessions` may allow: each costs file descriptors and memory.
pub const MAX_SESSIONS_LIMIT: u32 = 100_000;

impl Config {
    /// Merges flags over the config file over defaults and checks the result.
    pub fn load(args: Args) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let dur = |flag: Option<Duration>, text: Option<String>, name: &str| match (flag, text) {
            (Some(d), _) => Ok(Some(d)),
            (None, Some(t)) => parse_duration(&t)
                .map(Some)
                .map_err(|e| format!("config `{name}`: {e}")),
            (None, None) => Ok(None),
        };
        let socket_mode = match (args.socket_mode, file.socket_mode) {
            (Some(m), _) => m,
            (None, Some(text)) => {
                parse_mode(&text).map_err(|e| format!("config `socket_mode`: {e}"))?
            }
            (None, None) => 0o660,
        };
        let euid = nix::unistd::geteuid().as_raw();
        let config = Config {
            socket: args.socket.or(file.socket).unwrap_or_else(|| {
                let xdg = std::env::var("XDG_RUNTIME_DIR").ok();
                browserd_proto::default_socket_path(euid, xdg.as_deref())
            }),
            socket_mode,
            allow_uids: [args.allow_uids, file.allow_uids].concat(),
            allow_gids: [args.allow_gids, file.allow_gids].concat(),
            max_sessions: args.max_sessions.or(file.max_sessions).unwrap_or(256),
            grace: dur(args.grace, file.grace, "grace")?.unwrap_or(Duration::from_secs(5)),
            max_grace: dur(args.max_grace, file.max_grace, "max_grace")?
                .unwrap_or(Duration::from_secs(60)),
            default_ttl: dur(args.default_ttl, file.default_ttl, "default_ttl")?,
            max_ttl: dur(args.max_ttl, file.max_ttl, "max_ttl")?,
            lease_ttl: dur(args.lease_ttl, file.lease_ttl, "lease_ttl")?
                .unwrap_or(Duration::from_secs(60)),
            max_lease_ttl: dur(args.max_lease_ttl, file.max_lease_ttl, "max_lease_ttl")?
                .unwrap_or(Duration::from_secs(3600)),
            keep_exited: args.keep_exited.or(file.keep_exited).unwrap_or(1000),
            keep_exited_for: dur(
                args.keep_exited_for,
                file.keep_exited_for,
                "keep_exited_for",
            )?
            .unwrap_or(Duration::from_secs(600)),
            state_dir: args
                .state_dir
                .or(file.state_dir)
                .unwrap_or_else(|| default_state_dir(euid)),
            browser: args.browser.or(file.browser),
            launch_timeout: dur(args.launch_timeout, file.launch_timeout, "launch_timeout")?
                .unwrap_or(Duration::from_secs(30)),
            log_level: args
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.max_sessions == 0 || self.max_sessions > MAX_SESSIONS_LIMIT {
            return Err(format!(
                "max_sessions must be between 1 and {MAX_SESSIONS_LIMIT}, got {}",
                self.max_sessions
            ));
        }
        if self.grace > self.max_grace {
            return Err(format!(
                "grace ({}) exceeds max_grace ({})",
                humantime::format_duration(self.grace),
                humantime::format_duration(self.max_grace)
            ));
        }
        if let (Some(ttl), Some(max)) = (self.default_ttl, self.max_ttl) {
            if ttl > max {
                return Err("default_ttl exceeds max_ttl".into());
            }
        }
        if self.default_ttl == Some(Duration::ZERO) || self.max_ttl == Some(Duration::ZERO) {
            return Err("TTLs must be positive".into());
        }
        if self.lease_ttl.is_zero() || self.lease_ttl > self.max_lease_ttl {
            return Err("lease_ttl must be positive and at most max_lease_ttl".into());
        }
        if self.launch_timeout.is_zero() {
            return Err("launch_timeout must be positive".into());
        }
        if self.socket_mode > 0o777 {
            return Err(format!(
                "socket_mode {:o} is not a permission mode",
                self.socket_mode
            ));
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
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    const MAX_CONFIG: u64 = 1 << 20;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    if meta.len() > MAX_CONFIG {
        return Err(format!("config {} is larger than 1 MiB", path.display()));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))
}

/// Parses an octal permission mode such as `0660` or `660`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "`{text}` is not an octal permission mode such as 0660"
        )),
    }
}

/// Parses a gid, or a group name resolved through the system's group database (so a unit
/// file can say `--allow-gid browserd` without knowing the number sysusers picked).
pub fn parse_gid(text: &str) -> Result<u32, String> {
    if let Ok(gid) = text.parse() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(text) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("no group named `{text}`")),
        Err(e) => Err(format!("cannot look up group `{text}`: {e}")),
    }
}

fn default_state_dir(euid: u32) -> PathBuf {
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

    #[test]
    fn defaults_are_sane() {
        let config = Config::load(args(&["--socket", "/tmp/x.sock"])).unwrap();
        assert_eq!(config.grace, Duration::from_secs(5));
        assert_eq!(config.socket_mode, 0o660);
        assert_eq!(config.max_sessions, 256);
        assert!(config.default_ttl.is_none());
    }

    #[test]
    fn flags_override_the_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "grace = \"2s\"\nmax_sessions = 7\nsocket_mode = \"0600\"\nallow_uids = [5]"
        )
        .unwrap();
        let path = file.path().to_str().unwrap();
        let config = Config::load(args(&[
            "--config", path, "--grace", "1s", "--socket", "/tmp/s",
        ]))
        .unwrap();
        assert_eq!(config.grace, Duration::from_secs(1));
        assert_eq!(config.max_sessions, 7);
        assert_eq!(config.socket_mode, 0o600);
        assert_eq!(config.allow_uids, vec![5]);
    }

    #[test]
    fn bad_files_and_values_are_explained() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "graze = \"2s\"").unwrap();
        let path = file.path().to_str().unwrap().to_owned();
        let err = Config::load(args(&["--config", &path])).unwrap_err();
        assert!(err.contains("graze"), "{err}");

        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "grace = \"soon\"").unwrap();
        let path = file.path().to_str().unwrap().to_owned();
        assert!(Config::load(args(&["--config", &path]))
            .unwrap_err()
            .contains("grace"));

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
            &["--bogus"],
        ] {
            let argv = std::iter::once("browserd").chain(bad.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn gids_may_be_group_names() {
        assert_eq!(parse_gid("991").unwrap(), 991);
        assert_eq!(parse_gid("root").unwrap(), 0);
        assert!(parse_gid("no-such-group-here")
            .unwrap_err()
            .contains("no group"));
        let config = Config::load(args(&["--allow-gid", "root", "--allow-gid", "7"])).unwrap();
        assert_eq!(config.allow_gids, vec![0, 7]);
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("0660").unwrap(), 0o660);
        assert_eq!(parse_mode("600").unwrap(), 0o600);
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("7777").is_err());
    }
}
