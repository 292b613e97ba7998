//! A `watch` subscriber over the socket, for the event tests: it reads the stream's first
//! response, then one event per line.

use crate::daemon::DaemonGuard;
use browserd_proto::{encode_request, Event, EventKind, Request, Response, Watch, WatchResult};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

impl DaemonGuard {
    /// Waits until the daemon has `count` event subscribers (its metrics say so).
    #[track_caller]
    pub fn wait_subscribers(&self, count: u64) {
        let line = format!("browserd_event_subscribers {count}\n");
        crate::wait_until(
            Duration::from_secs(10),
            format!("{count} event subscriber(s)"),
            || {
                let metrics: browserd_proto::MetricsResult = self
                    .call(browserd_proto::Request::Metrics)
                    .expect("metrics");
                metrics.text.contains(&line)
            },
        );
    }
}

pub struct Watcher {
    reader: BufReader<UnixStream>,
    /// The `seq` of the first event that may come.
    pub next_seq: u64,
}

impl Watcher {
    /// Subscribes to the events `filter` selects.
    #[track_caller]
    pub fn open(socket: &Path, filter: Watch) -> Watcher {
        let mut stream = UnixStream::connect(socket).expect("connect to the daemon");
        stream
            .write_all(encode_request(None, &Request::Watch(filter)).as_bytes())
            .expect("send watch");
        let mut reader = BufReader::new(stream);
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        let mut line = String::new();
        reader.read_line(&mut line).expect("the watch response");
        let response: Response = serde_json::from_str(&line).expect("a response line");
        let ack: WatchResult = response.into_result().expect("watch is accepted");
        Watcher {
            reader,
            next_seq: ack.next_seq,
        }
    }

    /// The next event; `None` once the daemon closed the stream. Panics after `timeout`.
    #[track_caller]
    pub fn next(&mut self, timeout: Duration) -> Option<Event> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .expect("set a read timeout");
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not an event ({e}): {line:?}")),
            ),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no event within {timeout:?}")
            }
            Err(e) => panic!("reading the event stream failed: {e}"),
        }
    }

    /// Reads events until one satisfies `last` (included), within `timeout` in all.
    #[track_caller]
    pub fn until(&mut self, timeout: Duration, mut last: impl FnMut(&Event) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(event) = self.next(left.max(Duration::from_millis(1))) else {
                panic!("the stream ended before the awaited event; it sent {events:#?}");
            };
            let done = last(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// Reads everything until the daemon closes the stream.
    #[track_caller]
    pub fn to_end(&mut self, timeout: Duration) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left.max(Duration::from_millis(1))) {
                Some(event) => events.push(event),
                None => return events,
            }
        }
    }
}

/// The kinds of events each session went through, in the order they came.
pub fn kinds_by_session(events: &[Event]) -> BTreeMap<String, Vec<EventKind>> {
    let mut by_session: BTreeMap<String, Vec<EventKind>> = BTreeMap::new();
    for event in events {
        if let Some(session) = &event.session {
            by_session
                .entry(session.to_string())
                .or_default()
                .push(event.event);
        }
    }
    by_session
}

/// Asserts that `seq` only grows along the stream.
#[track_caller]
pub fn assert_in_order(events: &[Event]) {
    let seqs: Vec<u64> = events.iter().filter(|e| e.seq > 0).map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "events out of order: {seqs:?}"
    );
}
