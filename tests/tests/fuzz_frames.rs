//! The real daemon under a stream of generated frames: several connections at once each send
//! thousands of lines — random bytes, damaged JSON, blank and oversized lines, and
//! plausible requests of every op with random field values — while another client keeps
//! asking for `status` and `sessions`. Every line must be answered, in order, with `ok` or an
//! error carrying a SPEC code; where the protocol crate rejects a line, the daemon must reject
//! it with the same code and `req_id`; and nothing the test started may outlive it.
//!
//! Safety: a `launch` only ever runs a command of [`HARMLESS`] (every generated frame that
//! decodes to a launch is checked before it is sent); kills only reach this daemon's own
//! sessions. The seed is printed; `BROWSERD_TEST_SEED` replays a run;
//! `BROWSERD_FUZZ_FRAMES=N` sends N frames per connection instead of 5000 (250000: a million
//! frames in all).

use browserd_proto::{
    decode_request, ErrorCode, Frame, Launch, LineDecoder, Request, Response, SessionsFilter,
    StatusResult, MAX_FRAME,
};
use browserd_tests::procfs;
use browserd_tests::rng::{seed, Rng};
use browserd_tests::{Client, DaemonGuard};
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Concurrent fuzzing connections, and the frames each sends.
const CONNECTIONS: usize = 4;
const FRAMES: usize = 5_000;

/// Frames per connection: `BROWSERD_FUZZ_FRAMES`, else [`FRAMES`].
fn frames() -> usize {
    std::env::var("BROWSERD_FUZZ_FRAMES")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(FRAMES)
}
/// The only commands a generated launch may run.
const HARMLESS: &[&[&str]] = &[
    &["true"],
    &["sleep", "0"],
    &["sleep", "1"],
    &["/bin/sh", "-c", "exit 3"],
];
/// Commands that no launch accepts.
const INVALID_COMMANDS: &[&str] = &[r#"[]"#, r#"[""]"#, r#"["a\u0000b"]"#, r#""true""#, "5"];
/// Tracking ids the generated requests share, so that leases and kills meet launches.
const TRACKING: &[&str] = &["fz-1", "fz-2", "fz-3", "fz-4"];
const WORKSPACES: &[&str] = &["fz-a", "fz-b", "default"];
/// Numbers for `ttl_ms` and `grace_ms`: plausible ones and every boundary.
const MILLIS: &[&str] = &[
    "0",
    "1",
    "10",
    "100",
    "1000",
    "60000",
    "60001",
    "3600000",
    "300000000000000",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "1.5",
    "1e19",
    "\"5s\"",
    "null",
];
/// Pieces of JSON for token soup.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\"op\"",
    "\"req_id\"",
    "\"kill\"",
    "\"status\"",
    "\"target\"",
    "\"all\"",
    "null",
    "true",
    "1e999",
    " ",
    "\\",
    "\\ud800",
    "\u{0}",
    "é",
];

/// Lines that are empty or blank.
const BLANKISH: &[&[u8]] = &[b"", b" ", b"\r", b"\t\r "];

/// What the daemon must answer to one frame.
#[derive(Debug)]
struct Expect {
    req_id: Option<Value>,
    /// The code of a rejection the protocol crate makes; `None` for a request it accepts,
    /// which the daemon may carry out or refuse with any SPEC code.
    code: Option<ErrorCode>,
    /// The start of the line, for messages.
    shown: String,
}

/// One connection's generated traffic.
struct Traffic {
    bytes: Vec<u8>,
    expected: Vec<Expect>,
    launches: usize,
}

/// Draws a random value for one field.
type FieldValue = fn(&mut Generator) -> Value;

/// Generates the frames of connection `conn`.
struct Generator {
    rng: Rng,
    conn: usize,
    seq: u64,
    oversized: usize,
}

impl Generator {
    fn req_id(&mut self) -> Value {
        self.seq += 1;
        match self.rng.index(10) {
            0 => Value::Null,
            1 => json!({"conn": self.conn, "seq": self.seq, "f": 0.1}),
            2 => json!(format!("c{}-{}", self.conn, self.seq)),
            _ => json!(self.conn as u64 * 1_000_000 + self.seq),
        }
    }

    fn millis(&mut self) -> Value {
        let text: &str = self.rng.choose(MILLIS);
        serde_json::from_str(text).expect("MILLIS are JSON")
    }

    fn tracking(&mut self) -> Value {
        match self.rng.index(8) {
            0 => json!("all"),
            1 => json!("a b"),
            2 => json!("x".repeat(33)),
            3 => json!(5),
            _ => json!(self.rng.choose(TRACKING)),
        }
    }

    fn workspace(&mut self) -> Value {
        match self.rng.index(8) {
            0 => json!(""),
            1 => json!("é".repeat(65)),
            2 => json!("a\nb"),
            _ => json!(self.rng.choose(WORKSPACES)),
        }
    }

    fn flag(&mut self) -> Value {
        match self.rng.index(6) {
            0 => Value::Null,
            1 => json!("yes"),
            _ => json!(self.rng.percent(50)),
        }
    }

    fn list(&mut self, mut item: impl FnMut(&mut Self) -> Value) -> Value {
        match self.rng.index(8) {
            0 => json!("not-a-list"),
            _ => Value::Array((0..self.rng.index(4)).map(|_| item(self)).collect()),
        }
    }

    /// A launch of a harmless command, or one invalid by construction.
    fn launch_fields(&mut self, fields: &mut Map<String, Value>) {
        let command: Value = match self.rng.percent(85) {
            true => json!(self.rng.choose(HARMLESS)),
            false => {
                let text: &str = self.rng.choose(INVALID_COMMANDS);
                serde_json::from_str(text).expect("INVALID_COMMANDS are JSON")
            }
        };
        let sleeps = command.get(0) == Some(&json!("sleep"));
        fields.insert("command".into(), command);
        // A browser launch (the default type) of a command that exits at once fails fast;
        // only a browser launch without a command would start Chromium.
        if self.rng.percent(70) {
            let kind = self.rng.choose(&["sandbox", "sandbox", "browser", "vm"]);
            fields.insert("session_type".into(), json!(kind));
        }
        let optional: [(&str, FieldValue); 6] = [
            ("workspace", Self::workspace),
            ("tracking_id", Self::tracking),
            ("ttl_ms", Self::millis),
            ("env", |g| match g.rng.index(6) {
                0 => json!({"A=B": "x"}),
                1 => json!({"BROWSERD_SESSION": "other"}),
                _ => json!({"FUZZ_VAR": format!("{}", g.rng.next_u64())}),
            }),
            ("cwd", |g| {
                json!(g.rng.choose(&["/", "/tmp", "/nonexistent/dir", "relative"]))
            }),
            ("args", |g| {
                json!(["--fuzz", format!("{:x}", g.rng.next_u64())])
            }),
        ];
        for (name, value) in optional {
            if name == "args" && sleeps {
                continue;
            }
            if self.rng.percent(30) {
                let value = value(self);
                fields.insert(name.into(), value);
            }
        }
    }

    /// A request of `op` with random values in its fields.
    fn request(&mut self, op: &str) -> Value {
        let mut fields = Map::new();
        match op {
            "launch" => self.launch_fields(&mut fields),
            "sessions" => {
                for (name, p) in [("workspace", 30), ("tracking_id", 30)] {
                    if self.rng.percent(p) {
                        let value = match name {
                            "workspace" => self.workspace(),
                            _ => self.tracking(),
                        };
                        fields.insert(name.into(), value);
                    }
                }
                if self.rng.percent(30) {
                    let state = self.rng.choose(&["running", "exited", "starting", "dead"]);
                    fields.insert("state".into(), json!(state));
                }
                if self.rng.percent(20) {
                    let kind = self.rng.choose(&["browser", "sandbox", "vm"]);
                    fields.insert("session_type".into(), json!(kind));
                }
            }
            "kill" => {
                if self.rng.percent(95) {
                    let target = self.tracking();
                    fields.insert("target".into(), target);
                }
                if self.rng.percent(50) {
                    let force = self.flag();
                    fields.insert("force".into(), force);
                }
                if self.rng.percent(50) {
                    let grace = self.millis();
                    fields.insert("grace_ms".into(), grace);
                }
            }
            "bulk_terminate" => {
                if self.rng.percent(20) {
                    let all = self.flag();
                    fields.insert("all".into(), all);
                }
                if self.rng.percent(50) {
                    let ids = self.list(Self::tracking);
                    fields.insert("ids".into(), ids);
                }
                if self.rng.percent(40) {
                    let workspaces = self.list(Self::workspace);
                    fields.insert("workspaces".into(), workspaces);
                }
                for name in ["force", "session_type", "grace_ms"] {
                    if self.rng.percent(30) {
                        let value = match name {
                            "force" => self.flag(),
                            "session_type" => json!(self.rng.choose(&["browser", "sandbox"])),
                            _ => self.millis(),
                        };
                        fields.insert(name.into(), value);
                    }
                }
            }
            "lease" => {
                let id = self.tracking();
                fields.insert("id".into(), id);
                if self.rng.percent(50) {
                    let ttl = self.millis();
                    fields.insert("ttl_ms".into(), ttl);
                }
            }
            "release" => {
                let lease = match self.rng.index(3) {
                    0 => json!(format!(
                        "lease-{:08x}-{}",
                        self.rng.next_u64() as u32,
                        self.seq
                    )),
                    1 => json!(""),
                    _ => json!("lease-x"),
                };
                fields.insert("lease_id".into(), lease);
            }
            _ => {}
        }
        if self.rng.percent(3) {
            fields.insert("bogus".into(), json!(1));
        }
        fields.insert("op".into(), json!(op));
        if self.rng.percent(90) {
            let id = self.req_id();
            fields.insert("req_id".into(), id);
        }
        Value::Object(fields)
    }

    /// One of `choices`, each as likely as its weight says.
    fn weighted<'a>(&mut self, choices: &[(&'a str, usize)]) -> &'a str {
        let total: usize = choices.iter().map(|(_, w)| w).sum();
        let mut at = self.rng.index(total);
        for (choice, weight) in choices {
            if at < *weight {
                return choice;
            }
            at -= weight;
        }
        unreachable!("`at` is below the total weight")
    }

    /// One chunk of traffic, ending with a newline (it may hold several lines).
    fn chunk(&mut self) -> Vec<u8> {
        // Weighted towards cheap operations: launches and kills cost the daemon a fork or a
        // wait, and this test is about framing and decoding more than about terminations.
        const OPS: &[(&str, usize)] = &[
            ("launch", 2),
            ("sessions", 1),
            ("kill", 1),
            ("bulk_terminate", 1),
            ("lease", 12),
            ("release", 12),
            ("status", 11),
        ];
        let mut line = match self.rng.index(100) {
            0..=54 => {
                let op = self.weighted(OPS);
                serde_json::to_vec(&self.request(op)).expect("values serialize")
            }
            55..=64 => {
                let op = self.weighted(OPS);
                let mut text = serde_json::to_vec(&self.request(op)).expect("serialize");
                match self.rng.index(3) {
                    0 => text.truncate(self.rng.index(text.len())),
                    1 => {
                        let at = self.rng.index(text.len());
                        text[at] = self.rng.byte();
                    }
                    _ => text.insert(self.rng.index(text.len()), b'\0'),
                }
                text
            }
            65..=74 => {
                let len = self.rng.index(200);
                self.rng.bytes(len)
            }
            75..=84 => (0..self.rng.index(30))
                .flat_map(|_| self.rng.choose(TOKENS).as_bytes().to_vec())
                .collect(),
            85..=89 => self.rng.choose(BLANKISH).to_vec(),
            90..=94 => {
                let op = self
                    .rng
                    .choose(&["fly", "STATUS", "", "launch "])
                    .to_string();
                serde_json::to_vec(&json!({"op": op, "req_id": self.req_id()})).expect("JSON")
            }
            _ if self.oversized < 2 && self.rng.percent(5) => {
                self.oversized += 1;
                let mut big = br#"{"op":"status","req_id":""#.to_vec();
                big.extend(std::iter::repeat_n(b'x', MAX_FRAME));
                big.extend_from_slice(br#""}"#);
                big
            }
            _ => br#"{"op":"status"}"#.to_vec(),
        };
        line.push(b'\n');
        line
    }
}

/// Whether a launch only runs what this test allows.
fn is_harmless(launch: &Launch) -> bool {
    let command: Vec<&str> = launch
        .command
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    HARMLESS.contains(&command.as_slice())
        && (launch.args.is_empty() || command[0] != "sleep")
        && launch.env.keys().all(|k| k.starts_with("FUZZ_"))
}

/// Generates a connection's traffic and works out, with the protocol crate's own decoder,
/// what each line's answer must be. Chunks that would launch anything not harmless are
/// dropped before they are sent.
fn traffic(seed: u64, conn: usize) -> Traffic {
    let mut generator = Generator {
        rng: Rng::new(seed ^ (conn as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        conn,
        seq: 0,
        oversized: 0,
    };
    let mut traffic = Traffic {
        bytes: Vec::new(),
        expected: Vec::new(),
        launches: 0,
    };
    let wanted = frames();
    while traffic.expected.len() < wanted {
        let chunk = generator.chunk();
        let mut decoder = LineDecoder::default();
        decoder.push(&chunk);
        let frames: Vec<Frame> = std::iter::from_fn(|| decoder.next_frame()).collect();
        let mut expected = Vec::new();
        let mut safe = true;
        for frame in frames {
            expected.push(match frame {
                Frame::TooLarge { len } => Expect {
                    req_id: None,
                    code: Some(ErrorCode::FrameTooLarge),
                    shown: format!("a line of {len} bytes"),
                },
                Frame::Line(line) => {
                    let shown = String::from_utf8_lossy(&line[..line.len().min(300)]).into();
                    match decode_request(&line) {
                        Ok(envelope) => {
                            if let Request::Launch(launch) = &envelope.request {
                                safe &= is_harmless(launch);
                                traffic.launches += 1;
                            }
                            Expect {
                                req_id: envelope.req_id,
                                code: None,
                                shown,
                            }
                        }
                        Err(rejected) => Expect {
                            req_id: rejected.req_id,
                            code: Some(rejected.error.code),
                            shown,
                        },
                    }
                }
            });
        }
        if safe {
            traffic.bytes.extend_from_slice(&chunk);
            traffic.expected.extend(expected);
        }
    }
    traffic
}

/// What one connection did.
struct Stats {
    frames: usize,
    launches: usize,
    carried_out: usize,
}

/// Generates connection `conn`'s traffic, sends it on a new connection from one thread in
/// random-sized writes, reads the answers on this one, and checks each against its frame.
fn run_connection(d: &DaemonGuard, seed: u64, conn: usize) -> Stats {
    let traffic = traffic(seed, conn);
    let stream = UnixStream::connect(d.socket()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut writer = stream.try_clone().expect("clone the stream");
    let closer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    let bytes = &traffic.bytes;
    std::thread::scope(|scope| {
        // If the reader fails, the writer must not block forever on a daemon that stopped
        // reading: closing the socket makes its next write fail.
        let _close = ShutdownOnDrop(closer);
        scope.spawn(move || {
            let mut rng = Rng::new(seed.rotate_left(conn as u32 + 1));
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                let n = (1 + rng.index(16 * 1024)).min(rest.len());
                // A write error means the daemon closed: the reader reports it.
                if writer.write_all(&rest[..n]).is_err() {
                    return;
                }
                rest = &rest[n..];
            }
        });
        let mut carried_out = 0;
        let mut line = Vec::new();
        for (i, expect) in traffic.expected.iter().enumerate() {
            line.clear();
            let read = reader.read_until(b'\n', &mut line);
            assert!(
                matches!(read, Ok(n) if n > 0),
                "frame {i} of {}: no answer ({read:?}) to {:?}; the daemon closed the \
                 connection or stopped answering",
                traffic.expected.len(),
                expect.shown
            );
            let response: Response = serde_json::from_slice(&line).unwrap_or_else(|e| {
                panic!(
                    "frame {i}: the answer to {:?} is not a response with a SPEC code ({e}): {}",
                    expect.shown,
                    String::from_utf8_lossy(&line)
                )
            });
            // On the wire, not through `Response`: serde reads `"req_id": null` as absent.
            let raw: Value = serde_json::from_slice(&line).expect("a response is JSON");
            assert_eq!(
                raw.get("req_id"),
                expect.req_id.as_ref(),
                "frame {i}: answers out of order, or req_id not echoed, for {:?}: {response:?}",
                expect.shown
            );
            match (&expect.code, &response.error) {
                (Some(code), Some(error)) => assert_eq!(
                    error.code, *code,
                    "frame {i}: {:?} was answered {error}",
                    expect.shown
                ),
                (Some(code), None) => panic!(
                    "frame {i}: {:?} must be refused with {code}, got {response:?}",
                    expect.shown
                ),
                (None, None) => {
                    assert!(response.ok && response.result.is_some(), "{response:?}");
                    carried_out += 1;
                }
                (None, Some(_)) => assert!(!response.ok, "{response:?}"),
            }
        }
        Stats {
            frames: traffic.expected.len(),
            launches: traffic.launches,
            carried_out,
        }
    })
}

struct ShutdownOnDrop(UnixStream);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// Asks for `status` and `sessions` every few milliseconds on its own connection until
/// `done`, failing on any error or an answer slower than two seconds.
fn probe(d: &DaemonGuard, done: &AtomicBool, failure: &Mutex<Option<String>>) -> usize {
    let mut client = Client::connect(d.socket()).expect("connect the prober");
    client.set_timeout(Duration::from_secs(10));
    let mut probes = 0;
    while !done.load(Ordering::SeqCst) {
        let request = match probes % 4 {
            0 => Request::Sessions(SessionsFilter::default()),
            _ => Request::Status,
        };
        let start = Instant::now();
        let asked = browserd_proto::format_rfc3339(std::time::SystemTime::now());
        let outcome = client.try_request(&request);
        let took = start.elapsed();
        let problem = match outcome {
            Ok(response) if response.ok && took < Duration::from_secs(2) => None,
            Ok(response) if response.ok => {
                Some(format!("{request:?} asked at {asked} took {took:?}"))
            }
            Ok(response) => Some(format!("{request:?} failed: {response:?}")),
            Err(e) => Some(format!("{request:?} got no answer: {e}")),
        };
        if let Some(problem) = problem {
            *failure.lock().unwrap() = Some(format!("probe {probes}: {problem}"));
            return probes;
        }
        probes += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    probes
}

#[test]
fn tens_of_thousands_of_generated_frames_are_each_answered_in_order_with_a_spec_code() {
    let seed = seed("fuzz_frames");
    let start = Instant::now();
    let d = DaemonGuard::builder()
        .grace("200ms")
        .log_level("info")
        .start();

    let done = AtomicBool::new(false);
    let failure = Mutex::new(None);
    let (stats, probes) = std::thread::scope(|scope| {
        let prober = scope.spawn(|| probe(&d, &done, &failure));
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|conn| {
                let d = &d;
                scope.spawn(move || run_connection(d, seed, conn))
            })
            .collect();
        let results: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        done.store(true, Ordering::SeqCst);
        let probes = prober.join().expect("the prober does not panic");
        let stats: Vec<Stats> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect();
        (stats, probes)
    });
    if let Some(failure) = failure.lock().unwrap().take() {
        panic!("another client was not served throughout (seed {seed:#x}): {failure}");
    }

    let sum = |f: fn(&Stats) -> usize| stats.iter().map(f).sum::<usize>();
    eprintln!(
        "{} frames on {CONNECTIONS} connections ({} valid launches, {} requests carried out), \
         {probes} probes of another client, in {:?}",
        sum(|s| s.frames),
        sum(|s| s.launches),
        sum(|s| s.carried_out),
        start.elapsed()
    );
    assert!(probes > 0, "the prober got to ask");
    let status: StatusResult = d.call(Request::Status).expect("the daemon still serves");
    assert_eq!(status.pid, d.pid() as u32);
    assert_everything_started_is_gone(&d);
}

/// After a forced kill of everything, no process carries the marker of any session of this
/// daemon (its ids share the daemon's prefix), and the daemon has no unreaped child.
fn assert_everything_started_is_gone(d: &DaemonGuard) {
    let result = d.kill("all", true, Some(0));
    assert!(result.failed.is_empty(), "{result:?}");
    let sessions = d.sessions(SessionsFilter::default());
    assert!(sessions.iter().all(|s| !s.state.is_live()), "{sessions:?}");
    d.assert_all_sessions_gone();
    let Some(prefix) = sessions.first().map(|s| {
        let id = s.id.as_str();
        id[..=id.find('-').unwrap_or(0)].to_owned()
    }) else {
        return;
    };
    let left: Vec<_> = procfs::all_processes()
        .into_iter()
        .filter(|p| p.session.as_deref().is_some_and(|s| s.starts_with(&prefix)))
        .collect();
    assert!(
        left.is_empty(),
        "processes of this daemon's sessions are left: {left:#?}"
    );
}
