//! HTTP next to the socket, on one daemon serving both (loopback, with a token): a kill of
//! one session by `GET /kill/{id}` against the socket's `kill`, in turn, with N live; a
//! polite `POST /v1/sessions/bulk-terminate` of N against the same body over the socket;
//! and that socket kill-all with an SSE subscriber on `GET /v1/events` reading every event
//! it causes. The three kill-alls run in an order rotated by repetition, so that none is
//! always the first. The daemon's state is on tmpfs: its disk syncs are no part of the
//! comparison, and its launches (set-up, not measured) go fast.

use crate::baseline::GONE_TIMEOUT;
use crate::cleanup;
use crate::http_client::Connection;
use crate::options::Options;
use crate::procs;
use crate::report::Sample;
use crate::scenarios::{call, finished, launch_many, terminate, wait_trees};
use crate::stats::ms;
use browserd_proto::{BulkTerminate, Kill, Request, SessionInfo, TerminateResult};
use browserd_tests::http::TokenFile;
use browserd_tests::tmpfs::TmpfsDir;
use browserd_tests::{Client, DaemonGuard, Fixture, ProcId};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The events a kill-all causes per session: `terminating`, `exited`.
pub const EVENTS_PER_KILL: usize = 2;
/// How long the subscriber may take to read the events of a kill-all.
const EVENTS_TIMEOUT: Duration = Duration::from_secs(10);
const TOKEN: &str = "bench-http-token";

/// How a kill-all of N is sent.
#[derive(Clone, Copy)]
enum KillAll {
    Socket,
    Http,
    SocketSubscribed,
}

/// One repetition: fills `sample`'s HTTP and subscriber figures.
pub fn run_once(
    opts: &Options,
    rep: usize,
    sample: &mut Sample,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let token = TokenFile::new(TOKEN);
    if let Some(dir) = token.path.parent() {
        cleanup::remove_on_abort(dir);
    }
    let shm = TmpfsDir::create().map_err(|e| format!("no tmpfs for the HTTP daemon: {e}"))?;
    cleanup::remove_on_abort(shm.path());
    let d = shm
        .hold_state_of(DaemonGuard::builder())
        .http()
        .http_token(&token)
        .max_sessions((opts.sessions + 2 * opts.samples + 16) as u32)
        .grace("5s")
        .max_grace("60s")
        .start();
    cleanup::remove_on_abort(d.dir());
    let addr = d.http_url().trim_start_matches("http://").to_owned();
    let polite = Fixture::polite();
    let mut client = d.client();

    let sessions = launch_many(&mut client, &polite, opts.sessions, |_| None)?;
    let targets = launch_many(&mut client, &polite, 2 * opts.samples, |_| None)?;
    let mut trees = wait_trees(&sessions, &polite)?.concat();
    let target_trees = wait_trees(&targets, &polite)?;
    let mut http = connect(&addr)?;
    let mut pairs = targets.iter().zip(&target_trees);
    while let (Some(by_socket), Some(by_http)) = (pairs.next(), pairs.next()) {
        let took = kill_by_socket(&mut client, by_socket.0)?;
        check_gone(by_socket, "the socket's `kill`", rep, notes);
        sample.socket_kill_ms.push(took);
        let took = kill_by_http(&mut http, by_http.0)?;
        check_gone(by_http, "GET /kill/{id}", rep, notes);
        sample.http_kill_ms.push(took);
    }
    drop(http);

    let bulk = BulkTerminate {
        all: Some(true),
        grace_ms: Some(GONE_TIMEOUT.as_millis() as u64),
        ..Default::default()
    };
    let mut order = [KillAll::Socket, KillAll::Http, KillAll::SocketSubscribed];
    let turns = rep % order.len();
    order.rotate_left(turns);
    for (i, way) in order.into_iter().enumerate() {
        if i > 0 {
            let sessions = launch_many(&mut client, &polite, opts.sessions, |_| None)?;
            trees = wait_trees(&sessions, &polite)?.concat();
        }
        let bulk = bulk.clone();
        match way {
            KillAll::Socket => {
                let took = terminate(&mut client, bulk, &trees, "socket bulk", rep, notes)?;
                sample.socket_bulk_ms = Some(took);
            }
            KillAll::Http => {
                let mut http = connect(&addr)?;
                sample.http_bulk_ms = Some(bulk_by_http(&mut http, &bulk, &trees, rep, notes)?);
            }
            KillAll::SocketSubscribed => {
                let subscriber = Subscriber::attach(&addr)?;
                let took = terminate(&mut client, bulk, &trees, "subscribed bulk", rep, notes)?;
                sample.subscribed_bulk_ms = Some(took);
                let expected = EVENTS_PER_KILL * opts.sessions;
                subscriber.wait_for(expected);
                let kinds = subscriber.close();
                let read: usize = kinds.values().sum();
                sample.subscriber_events = Some(read);
                if kinds.contains_key("lagged") {
                    notes.push(format!(
                        "rep {rep}: the SSE subscriber fell behind during the kill-all and was \
                         dropped (`lagged`; the time is partly without it): {kinds:?}"
                    ));
                } else if read < expected {
                    notes.push(format!(
                        "rep {rep}: the SSE subscriber read {read} of {expected} events: {kinds:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A new HTTP connection, its first request already answered so that none of the timed
/// ones pays for the accept.
fn connect(addr: &str) -> Result<Connection, String> {
    let mut http = Connection::open(addr, TOKEN).map_err(|e| format!("HTTP on {addr}: {e}"))?;
    let answer = http
        .request("GET", "/active", None)
        .map_err(|e| format!("GET /active: {e}"))?;
    match answer.status {
        204 => Ok(http),
        status => Err(format!("GET /active answered {status}: {}", answer.text())),
    }
}

/// The socket's `kill` of one session, as `GET /kill/{id}` does it (forced, default grace);
/// timed from the request to its answer.
fn kill_by_socket(client: &mut Client, session: &SessionInfo) -> Result<f64, String> {
    let kill = Kill {
        target: session.id.as_str().parse().map_err(|e| format!("{e}"))?,
        force: true,
        grace_ms: None,
    };
    let start = Instant::now();
    let result: TerminateResult = call(client, &Request::Kill(kill))?;
    let took = ms(start.elapsed());
    match result.failed.as_slice() {
        [] => Ok(took),
        failed => Err(format!("the kill of {} failed: {failed:?}", session.id)),
    }
}

/// `GET /kill/{id}`, timed from the request to its answer (`204`).
fn kill_by_http(http: &mut Connection, session: &SessionInfo) -> Result<f64, String> {
    let path = format!("/kill/{}", session.id);
    let start = Instant::now();
    let answer = http
        .request("GET", &path, None)
        .map_err(|e| format!("GET {path}: {e}"))?;
    let took = ms(start.elapsed());
    match answer.status {
        204 => Ok(took),
        status => Err(format!("GET {path} answered {status}: {}", answer.text())),
    }
}

/// Notes a killed session whose processes outlived the answer.
fn check_gone(
    (session, tree): (&SessionInfo, &Vec<ProcId>),
    how: &str,
    rep: usize,
    notes: &mut Vec<String>,
) {
    let left = procs::count_present(tree);
    if left > 0 {
        notes.push(format!(
            "rep {rep}: {how} of {} answered with {left} process(es) of the session left",
            session.id
        ));
    }
}

/// `POST /v1/sessions/bulk-terminate` with `bulk`, timed like the socket's (see
/// [`terminate`]).
fn bulk_by_http(
    http: &mut Connection,
    bulk: &BulkTerminate,
    ids: &[ProcId],
    rep: usize,
    notes: &mut Vec<String>,
) -> Result<f64, String> {
    const PATH: &str = "/v1/sessions/bulk-terminate";
    let body = serde_json::to_vec(bulk).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let answer = http
        .request("POST", PATH, Some(&body))
        .map_err(|e| format!("POST {PATH}: {e}"))?;
    if answer.status != 200 {
        return Err(format!(
            "POST {PATH} answered {}: {}",
            answer.status,
            answer.text()
        ));
    }
    let result: TerminateResult = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("POST {PATH}: not `{{terminated, failed}}` ({e})"))?;
    finished(start, &result, ids, "HTTP bulk", rep, notes)
}

/// An SSE subscriber on `GET /v1/events`, reading in a thread of its own and counting the
/// events by kind. Its connection is shut down, and the thread joined, when it is closed
/// or dropped.
struct Subscriber {
    socket: TcpStream,
    seen: Arc<AtomicUsize>,
    reader: Option<JoinHandle<BTreeMap<String, usize>>>,
}

impl Subscriber {
    /// Subscribes; once this returns, the daemon sends the subscriber every event.
    fn attach(addr: &str) -> Result<Subscriber, String> {
        const PATH: &str = "/v1/events";
        let http = Connection::open(addr, TOKEN).map_err(|e| format!("HTTP on {addr}: {e}"))?;
        let socket = http.socket().map_err(|e| format!("{PATH}: {e}"))?;
        let (status, stream) = http
            .open_stream(PATH)
            .map_err(|e| format!("GET {PATH}: {e}"))?;
        if status != 200 {
            let _ = socket.shutdown(Shutdown::Both);
            return Err(format!("GET {PATH} answered {status}"));
        }
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        let reader = std::thread::Builder::new()
            .name("sse".into())
            .spawn(move || count_events(stream, &counter))
            .map_err(|e| format!("cannot start the subscriber's thread: {e}"))?;
        Ok(Subscriber {
            socket,
            seen,
            reader: Some(reader),
        })
    }

    /// Waits until the subscriber has read `count` events, its stream has ended (e.g. after
    /// `lagged`), or [`EVENTS_TIMEOUT`].
    fn wait_for(&self, count: usize) {
        let start = Instant::now();
        let reading = || self.reader.as_ref().is_some_and(|r| !r.is_finished());
        while self.seen.load(Ordering::Acquire) < count
            && reading()
            && start.elapsed() < EVENTS_TIMEOUT
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Ends the subscription; returns how many events of each kind it read.
    fn close(mut self) -> BTreeMap<String, usize> {
        let _ = self.socket.shutdown(Shutdown::Both);
        self.reader
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Reads an SSE stream until it ends, counting `event:` lines by kind.
fn count_events(stream: impl BufRead, seen: &AtomicUsize) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for line in stream.lines() {
        let Ok(line) = line else { break };
        if let Some(kind) = line.strip_prefix("event:") {
            *kinds.entry(kind.trim().to_owned()).or_default() += 1;
            seen.fetch_add(1, Ordering::Release);
        }
    }
    kinds
}
