//! Browser sessions: finding Chromium, the flags that make it quiet and self-contained, a
//! private profile and TMPDIR per session, waiting for the DevTools endpoint, and the polite
//! CDP `Browser.close` that starts a termination.

use browserd_proto::SessionId;
use futures_util::SinkExt;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Where Chromium and Chrome are installed, best first. Debian's `/usr/bin/chromium` is a
/// shell wrapper that sources `/etc/chromium.d` and prints warnings, so the real binary
/// comes before it.
const INSTALL_PATHS: &[&str] = &[
    "/usr/lib/chromium/chromium",
    "/usr/lib/chromium-browser/chromium-browser",
    "/usr/lib64/chromium-browser/chromium-browser",
    "/opt/google/chrome/chrome",
    "/snap/bin/chromium",
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome-stable",
    "/usr/bin/google-chrome",
];
/// Names looked up on `PATH` when no install path has a browser.
const PATH_NAMES: &[&str] = &["chromium", "chromium-browser", "google-chrome", "chrome"];

/// Finds the browser: the configured path if any (it must exist), else the install paths,
/// else `PATH`. The error names everything searched.
pub fn detect(configured: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = configured {
        return if is_executable(path) {
            Ok(path.to_path_buf())
        } else {
            Err(format!(
                "the configured browser {} is not an executable file (set by --browser, the config file or BROWSERD_BROWSER)",
                path.display()
            ))
        };
    }
    if let Some(found) = INSTALL_PATHS
        .iter()
        .map(Path::new)
        .find(|p| is_executable(p))
    {
        return Ok(found.to_path_buf());
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path_var) {
        for name in PATH_NAMES {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "no Chromium found: searched {} and {} on PATH; install Debian's `chromium` package or pass --browser PATH",
        INSTALL_PATHS.join(", "),
        PATH_NAMES.join(", ")
    ))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The argv of a headless browser session. As root, Chromium refuses to start without
/// `--no-sandbox` ("Running as root without --no-sandbox is not supported"), so the sandbox
/// is kept for every other user and disabled only for root.
pub fn argv(browser: &Path, profile: &Path, as_root: bool, extra: &[String]) -> Vec<String> {
    let mut argv = vec![browser.display().to_string()];
    argv.extend(
        [
            "--headless",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
        ]
        .map(String::from),
    );
    if user_profile(extra).is_none() {
        argv.push(format!("--user-data-dir={}", profile.display()));
    }
    if as_root {
        argv.push("--no-sandbox".into());
    }
    argv.extend(extra.iter().cloned());
    argv
}

/// A profile dir the client chose with `--user-data-dir` in `args`: used instead of the
/// session's own (and, being the client's, never deleted).
pub fn user_profile(extra: &[String]) -> Option<PathBuf> {
    let mut args = extra.iter();
    while let Some(arg) = args.next() {
        if let Some(dir) = arg.strip_prefix("--user-data-dir=") {
            return Some(PathBuf::from(dir));
        }
        if arg == "--user-data-dir" {
            return args.next().map(PathBuf::from);
        }
    }
    None
}

/// How many bytes of the browser's stderr are kept for error messages.
const TAIL_BYTES: usize = 4096;

/// Browsers' stderr pipes (the read ends), by session. A browser keeps writing to stderr
/// for its whole life; the daemon keeps the read end open for as long, across a reload too,
/// so the browser never meets a closed pipe. A task drains each through a duplicate.
#[derive(Default)]
pub struct Pipes(Mutex<HashMap<SessionId, OwnedFd>>);

impl Pipes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, OwnedFd>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps a session's pipe; returns a duplicate to read from.
    pub fn keep(&self, id: &SessionId, pipe: OwnedFd) -> std::io::Result<OwnedFd> {
        let reading = pipe.try_clone()?;
        self.lock().insert(id.clone(), pipe);
        Ok(reading)
    }

    /// Closes a session's pipe (its session is gone).
    pub fn close(&self, id: &SessionId) {
        self.lock().remove(id);
    }

    /// Every pipe, by number, for the handover.
    pub fn raw(&self) -> Vec<(SessionId, RawFd)> {
        self.lock()
            .iter()
            .map(|(id, fd)| (id.clone(), fd.as_raw_fd()))
            .collect()
    }
}

/// Reads the browser's stderr until the DevTools endpoint is announced, then keeps draining
/// it (a full pipe would block the browser). Fails with the stderr tail if the browser
/// closes stderr (dies) or `timeout` passes first.
pub async fn wait_for_endpoint(stderr: OwnedFd, timeout: Duration) -> Result<String, String> {
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(stderr)
        .map_err(|e| format!("cannot read the browser's stderr: {e}"))?;
    let mut lines = BufReader::new(pipe).lines();
    let mut tail = Tail::default();
    let found = tokio::time::timeout(timeout, async {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    if let Some(endpoint) = endpoint_in(&line) {
                        return Some(endpoint);
                    }
                    tail.push(&line);
                }
                Ok(None) | Err(_) => return None,
            }
        }
    })
    .await;
    match found {
        Ok(Some(endpoint)) => {
            tokio::spawn(drain_lines(lines));
            Ok(endpoint)
        }
        Ok(None) => Err(format!(
            "the browser exited before announcing its DevTools endpoint{}",
            tail.render()
        )),
        Err(_) => Err(format!(
            "no DevTools endpoint within {}{}",
            humantime::format_duration(timeout),
            tail.render()
        )),
    }
}

/// Drains a browser's stderr (read through `stderr`) until it closes, logging it at debug.
pub fn drain(stderr: OwnedFd) {
    match tokio::net::unix::pipe::Receiver::from_owned_fd(stderr) {
        Ok(pipe) => {
            tokio::spawn(drain_lines(BufReader::new(pipe).lines()));
        }
        Err(e) => tracing::warn!("cannot drain a browser's stderr: {e}"),
    }
}

async fn drain_lines(mut lines: tokio::io::Lines<BufReader<tokio::net::unix::pipe::Receiver>>) {
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "browserd::browser_stderr", "{line}");
    }
}

/// The endpoint in a `DevTools listening on ws://...` line.
fn endpoint_in(line: &str) -> Option<String> {
    let rest = line.split("DevTools listening on ").nth(1)?;
    let url = rest.split_whitespace().next()?;
    url.starts_with("ws://").then(|| url.to_owned())
}

#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: &str) {
        let line: String = line.chars().take(TAIL_BYTES).collect();
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.bytes > TAIL_BYTES {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.len(),
                None => break,
            }
        }
    }

    fn render(&self) -> String {
        if self.lines.is_empty() {
            return String::new();
        }
        let joined: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        format!("; its stderr ended with:\n{}", joined.join("\n"))
    }
}

/// Waits until the endpoint accepts a TCP connection, so a client given the endpoint can
/// connect at once.
pub async fn endpoint_answers(endpoint: &str, timeout: Duration) -> bool {
    let Some(addr) = endpoint
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
    else {
        return false;
    };
    tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .is_ok_and(|c| c.is_ok())
}

/// Asks the browser to close itself through CDP (`Browser.close`), the politest way: every
/// process exits with code 0 and the profile is flushed. Returns whether the request was
/// delivered.
pub async fn close(endpoint: &str, timeout: Duration) -> bool {
    let attempt = async {
        let (mut socket, _) = tokio_tungstenite::connect_async(endpoint).await.ok()?;
        let request = r#"{"id":1,"method":"Browser.close"}"#;
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(request))
            .await
            .ok()?;
        // Dropping the socket without a close handshake is fine: the browser is exiting.
        Some(())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .ok()
        .flatten()
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_endpoint_line() {
        let line = "DevTools listening on ws://127.0.0.1:41873/devtools/browser/5a1c-77";
        assert_eq!(
            endpoint_in(line).as_deref(),
            Some("ws://127.0.0.1:41873/devtools/browser/5a1c-77")
        );
        assert_eq!(endpoint_in("[123:ERROR] something else"), None);
        assert_eq!(endpoint_in("DevTools listening on http://x"), None);
    }

    #[test]
    fn argv_appends_user_args_and_disables_the_sandbox_only_for_root() {
        let extra = vec!["--window-size=800,600".to_owned()];
        let user = argv(Path::new("/b"), Path::new("/p"), false, &extra);
        assert_eq!(user[0], "/b");
        assert!(user.contains(&"--user-data-dir=/p".to_owned()));
        assert!(!user.contains(&"--no-sandbox".to_owned()));
        assert_eq!(user.last().unwrap(), "--window-size=800,600");
        assert!(
            argv(Path::new("/b"), Path::new("/p"), true, &[]).contains(&"--no-sandbox".to_owned())
        );
    }

    #[test]
    fn a_client_profile_dir_replaces_the_sessions_own() {
        let extra = vec!["--user-data-dir=/data/p1".to_owned()];
        let argv = argv(Path::new("/b"), Path::new("/p"), false, &extra);
        assert_eq!(
            argv.iter()
                .filter(|a| a.starts_with("--user-data-dir"))
                .count(),
            1
        );
        assert_eq!(user_profile(&extra), Some(PathBuf::from("/data/p1")));
        let split = ["--user-data-dir".to_owned(), "/data/p2".to_owned()];
        assert_eq!(user_profile(&split), Some(PathBuf::from("/data/p2")));
        assert_eq!(user_profile(&["--incognito".to_owned()]), None);
    }

    #[test]
    fn a_configured_browser_must_exist() {
        let err = detect(Some(Path::new("/nonexistent/chrome"))).unwrap_err();
        assert!(err.contains("/nonexistent/chrome"));
    }

    #[test]
    fn the_stderr_tail_is_bounded() {
        let mut tail = Tail::default();
        for i in 0..10_000 {
            tail.push(&format!("line {i}"));
        }
        assert!(tail.bytes <= TAIL_BYTES);
        assert!(tail.render().ends_with("line 9999"));
    }
}
