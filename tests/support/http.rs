//! HTTP clients for the HTTP tests: the ones browserless and Chaser users have, `curl` and
//! Debian's Python with `requests` (their SDK examples use it), plus the Prometheus org's
//! text parser (`python3-prometheus-client`). `scripts/deps --test` installs them. Every
//! client process is waited for, or killed and reaped, before its helper returns.

use crate::daemon::{DaemonBuilder, DaemonGuard};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Debian's Python, where `python3-requests` installs (a `python3` earlier on `PATH`, e.g.
/// pyenv's, may not have it).
pub const PYTHON: &str = "/usr/bin/python3";

impl DaemonBuilder {
    /// `--http 127.0.0.1:0`: HTTP on a loopback port the kernel picks (see
    /// [`DaemonGuard::http_url`]).
    pub fn http(self) -> Self {
        self.flag("--http", "127.0.0.1:0")
    }

    /// `--http-token-file` with `token`'s file.
    pub fn http_token(self, token: &TokenFile) -> Self {
        self.flag("--http-token-file", token.path.display())
    }
}

impl DaemonGuard {
    /// `http://ADDR` of the daemon's HTTP listener, as its `status` reports it.
    #[track_caller]
    pub fn http_url(&self) -> String {
        let addr = self
            .status()
            .http
            .expect("the daemon serves HTTP (start it with .http())");
        format!("http://{addr}")
    }
}

/// A token in a file of its own (mode 0600), as an operator would keep it.
pub struct TokenFile {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub token: String,
}

impl TokenFile {
    pub fn new(token: &str) -> TokenFile {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("a temp dir for the token");
        let path = dir.path().join("http-token");
        std::fs::write(&path, format!("{token}\n")).expect("write the token file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the token file");
        TokenFile {
            _dir: dir,
            path,
            token: token.to_owned(),
        }
    }

    /// `Authorization: Bearer TOKEN`, as a curl `-H` argument.
    pub fn bearer(&self) -> String {
        format!("Authorization: Bearer {}", self.token)
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The header block, names lowercased.
    pub headers: String,
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self:?}"))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    }

    /// The `{"error": {"code", "message"}}` body's code.
    #[track_caller]
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {self:?}"))
            .to_owned()
    }
}

/// Runs `curl` with `args` (the URL among them) and returns what the server answered.
#[track_caller]
pub fn curl(args: &[&str]) -> Answer {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-D", "-"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl (scripts/deps --test installs it)");
    assert!(
        output.status.success(),
        "curl {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header block in curl's output: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = head
        .lines()
        .skip(1)
        .map(|line| match line.split_once(':') {
            Some((name, value)) => format!("{}:{value}", name.to_ascii_lowercase()),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Runs a Python script with Debian's Python (`requests` importable), with `env` set, and
/// returns its stdout; panics with its stderr if it fails.
#[track_caller]
pub fn python(script: &str, env: &[(&str, &str)]) -> String {
    let output = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run /usr/bin/python3 (scripts/deps --test installs python3-requests)");
    assert!(
        output.status.success(),
        "the Python client failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An exposition as the Prometheus org's parser read it.
#[derive(Debug)]
pub struct Exposition {
    /// Every family's name and type.
    pub families: BTreeMap<String, String>,
    /// Every sample: `{"name", "labels", "value"}`.
    pub samples: Vec<Value>,
}

impl Exposition {
    /// The sum of the samples named `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &Value) -> f64 {
        let wanted = labels.as_object().expect("labels are an object");
        self.samples
            .iter()
            .filter(|s| s["name"] == name)
            .filter(|s| wanted.iter().all(|(k, v)| &s["labels"][k] == v))
            .map(|s| s["value"].as_f64().expect("a numeric value"))
            .sum()
    }
}

/// Parses an OpenMetrics exposition with the Prometheus org's parser (strict: it fails on
/// anything the format does not allow).
#[track_caller]
pub fn parse_openmetrics(text: &str) -> Exposition {
    const SCRIPT: &str = r#"
import json, os
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families, samples = {}, []
for family in text_string_to_metric_families(os.environ["EXPOSITION"]):
    families[family.name] = family.type
    for s in family.samples:
        samples.append({"name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps({"families": families, "samples": samples}))
"#;
    let printed = python(SCRIPT, &[("EXPOSITION", text)]);
    let parsed: Value = serde_json::from_str(&printed).expect("the parser's output as JSON");
    Exposition {
        families: serde_json::from_value(parsed["families"].clone()).expect("family types"),
        samples: serde_json::from_value(parsed["samples"].clone()).expect("samples"),
    }
}

/// A Server-Sent Events stream read by `curl -N`, line by line in a thread; the curl
/// process is killed and reaped when this is dropped.
pub struct SseStream {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl SseStream {
    /// Opens `url` with curl and the extra `args`.
    pub fn open(url: &str, args: &[&str]) -> SseStream {
        let mut child = Command::new("curl")
            .args(["-sS", "-N", "--max-time", "60"])
            .args(args)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run curl");
        let stdout = child.stdout.take().expect("curl's stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        SseStream { child, lines }
    }

    /// The next event's `data:` as JSON, or `None` if the stream ended or `timeout` passed
    /// first. Comments (keep-alives), `event:` and `id:` lines are skipped.
    pub fn next_event(&self, timeout: Duration) -> Option<Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            if let Some(data) = line.strip_prefix("data: ") {
                return Some(serde_json::from_str(data).expect("SSE data is JSON"));
            }
        }
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
