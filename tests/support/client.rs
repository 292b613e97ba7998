//! A blocking wire-protocol client: newline-delimited JSON over a Unix stream socket. It can
//! also send arbitrary bytes, which is what the protocol robustness tests need.

use crate::tracked::Tracked;
use browserd_proto::{encode_request, Request, Response};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long a response may take by default. Terminations wait up to their grace period, so
/// this is generous; a hung daemon still fails the test instead of hanging it.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    tracked: Option<Arc<Tracked>>,
}

impl Client {
    /// Connects to the daemon listening on `socket`.
    pub fn connect(socket: &Path) -> std::io::Result<Client> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
        stream.set_write_timeout(Some(RESPONSE_TIMEOUT))?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            tracked: None,
        })
    }

    /// Reports every session id seen in responses to `tracked` (for the leak guard).
    pub(crate) fn tracking(mut self, tracked: Arc<Tracked>) -> Client {
        self.tracked = Some(tracked);
        self
    }

    /// Changes how long [`Client::read_response`] waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.writer
            .set_read_timeout(Some(timeout))
            .expect("set the socket read timeout");
    }

    /// Writes raw bytes, exactly as given.
    #[track_caller]
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .and_then(|()| self.writer.flush())
            .unwrap_or_else(|e| panic!("writing {} bytes to the daemon failed: {e}", bytes.len()));
    }

    /// Writes one request line under `req_id`.
    #[track_caller]
    pub fn send(&mut self, req_id: Option<&Value>, request: &Request) {
        self.send_raw(encode_request(req_id, request).as_bytes());
    }

    /// Writes `value` as one request line (for requests the typed API cannot express).
    #[track_caller]
    pub fn send_json(&mut self, value: &Value) {
        let mut line = value.to_string();
        line.push('\n');
        self.send_raw(line.as_bytes());
    }

    /// Sends `value` as one request line and reads its response.
    #[track_caller]
    pub fn request_json(&mut self, value: &Value) -> Response {
        self.send_json(value);
        self.read_response()
    }

    /// Closes the sending direction, as `printf ... | nc -U` does at end of input.
    pub fn shutdown_write(&mut self) {
        self.writer
            .shutdown(Shutdown::Write)
            .expect("shut down the write half");
    }

    /// Reads one line (without the newline); `None` at end of stream.
    #[track_caller]
    pub fn read_line(&mut self) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                Some(line)
            }
            Err(e) => panic!("no response line from the daemon: {e}"),
        }
    }

    /// Reads and decodes one response line.
    #[track_caller]
    pub fn read_response(&mut self) -> Response {
        let line = self
            .read_line()
            .expect("the daemon closed the connection instead of answering");
        let response: Response = serde_json::from_slice(&line).unwrap_or_else(|e| {
            panic!(
                "the daemon sent a line that is not a response ({e}): {}",
                String::from_utf8_lossy(&line)
            )
        });
        if let (Some(tracked), Some(result)) = (&self.tracked, &response.result) {
            tracked.note_result(result);
        }
        response
    }

    /// Sends `request` and reads its response, reporting failures instead of panicking (for
    /// cleanup code that must not panic).
    pub fn try_request(&mut self, request: &Request) -> std::io::Result<Response> {
        self.writer
            .write_all(encode_request(None, request).as_bytes())?;
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        let response: Response = serde_json::from_slice(&line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if let (Some(tracked), Some(result)) = (&self.tracked, &response.result) {
            tracked.note_result(result);
        }
        Ok(response)
    }

    /// Sends `request` and reads its response.
    #[track_caller]
    pub fn request(&mut self, request: &Request) -> Response {
        self.send(None, request);
        self.read_response()
    }

    /// Sends `request` under `req_id` and reads its response.
    #[track_caller]
    pub fn request_with_id(&mut self, req_id: &Value, request: &Request) -> Response {
        self.send(Some(req_id), request);
        self.read_response()
    }
}
