//! `browserctl events`: follows the daemon's event stream (the `watch` op) and prints each
//! event as it arrives: a line for people, or with `--json` the daemon's own JSON line.
//! Across a daemon reload it subscribes again; it ends when the daemon drops it for falling
//! behind, when the daemon goes away, or when whoever reads its output does.

use crate::client::{self, ClientError, Lines};
use crate::exit::Exit;
use crate::render::{self, Report};
use browserd_proto::{Event, EventKind, Request, Watch};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a reload may take before the daemon counts as gone.
const RELOAD_WAIT: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_millis(20);

/// How one subscription ended.
enum Ended {
    /// The daemon re-executes itself: subscribe again.
    Reload,
    /// The daemon dropped this subscriber; it missed events.
    Lagged,
    /// The connection closed without a last event.
    Closed,
    /// Whoever reads our output went away (`| head`).
    ReaderGone,
    /// Something that is not an event arrived.
    Garbled(String),
}

/// Follows the events `filter` selects until the stream ends; returns how to exit. What the
/// daemon refuses (or an unreachable daemon) is rendered like any other command's failure.
pub fn follow(socket: &Path, filter: Watch, json: bool) -> Result<Exit, Report> {
    let request = Request::Watch(filter);
    let mut out = std::io::stdout().lock();
    let mut reloading_since: Option<Instant> = None;
    loop {
        let lines = subscribe(socket, &request, json, reloading_since)?;
        match relay(lines, json, &mut out) {
            Ended::Reload => reloading_since = Some(Instant::now()),
            Ended::Lagged => {
                eprintln!(
                    "browserctl: browserd dropped this subscriber: it read events more slowly than they came"
                );
                return Ok(Exit::TargetFailed);
            }
            Ended::Closed => {
                eprintln!("browserctl: browserd closed the event stream; it may have stopped");
                return Ok(Exit::Unreachable);
            }
            Ended::ReaderGone => return Ok(Exit::Done),
            Ended::Garbled(detail) => {
                eprintln!("browserctl: browserd sent something that is not an event ({detail})");
                return Ok(Exit::Unreachable);
            }
        }
    }
}

/// Opens a subscription; after a reload, retries until the daemon serves again.
fn subscribe(
    socket: &Path,
    request: &Request,
    json: bool,
    reloading_since: Option<Instant>,
) -> Result<Lines, Report> {
    loop {
        let error = match client::open_stream(socket, request) {
            Ok((lines, response)) if response.ok => return Ok(lines),
            Ok((_, response)) => return Err(render::report(request, response, json)),
            Err(error) => error,
        };
        let retry = reloading_since.is_some_and(|since| since.elapsed() < RELOAD_WAIT);
        if !retry || matches!(error, ClientError::BadAnswer { .. }) {
            return Err(render::local_failure(
                error.failure(),
                &error.to_string(),
                json,
            ));
        }
        std::thread::sleep(RETRY);
    }
}

/// Prints every event of one subscription; returns how it ended.
fn relay(mut lines: Lines, json: bool, out: &mut impl Write) -> Ended {
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return Ended::Closed,
            Ok(_) => {}
        }
        let event: Event = match serde_json::from_slice(&line) {
            Ok(event) => event,
            Err(e) => return Ended::Garbled(e.to_string()),
        };
        let printed = if json {
            out.write_all(&line)
        } else {
            out.write_all(render::event_line(&event).as_bytes())
        };
        if printed.and_then(|()| out.flush()).is_err() {
            return Ended::ReaderGone;
        }
        match event.event {
            EventKind::Reload => return Ended::Reload,
            EventKind::Lagged => return Ended::Lagged,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn lines(text: &str) -> Lines {
        // A BufReader over a socket pair carrying `text`, as the daemon would send it.
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        (&theirs).write_all(text.as_bytes()).unwrap();
        drop(theirs);
        let stream = interprocess::local_socket::Stream::from(
            interprocess::os::unix::uds_local_socket::Stream::from(ours),
        );
        std::io::BufReader::new(stream)
    }

    const LAUNCHED: &str = r#"{"seq":1,"at":"2024-05-01T12:00:00.000Z","event":"launched","session":"a-1","session_type":"sandbox","workspace":"default","pid":7}"#;

    #[test]
    fn events_are_relayed_until_the_stream_says_why_it_ends() {
        let mut out = Cursor::new(Vec::new());
        let text = format!("{LAUNCHED}\n{{\"seq\":0,\"at\":\"x\",\"event\":\"reload\"}}\n");
        assert!(matches!(
            relay(lines(&text), false, &mut out),
            Ended::Reload
        ));
        let printed = String::from_utf8(out.into_inner()).unwrap();
        assert!(
            printed.starts_with("2024-05-01T12:00:00.000Z  launched"),
            "{printed}"
        );
        assert_eq!(printed.lines().count(), 2);

        let mut out = Cursor::new(Vec::new());
        let text =
            format!("{LAUNCHED}\n{{\"seq\":0,\"at\":\"x\",\"event\":\"lagged\",\"missed\":3}}\n");
        assert!(matches!(relay(lines(&text), true, &mut out), Ended::Lagged));
        let printed = String::from_utf8(out.into_inner()).unwrap();
        assert_eq!(
            printed.lines().next().unwrap(),
            LAUNCHED,
            "--json relays the daemon's line"
        );

        let mut out = Cursor::new(Vec::new());
        assert!(matches!(
            relay(lines(&format!("{LAUNCHED}\n")), false, &mut out),
            Ended::Closed
        ));
        assert!(matches!(
            relay(lines("HTTP/1.1 400\n"), false, &mut Cursor::new(Vec::new())),
            Ended::Garbled(_)
        ));
    }
}
