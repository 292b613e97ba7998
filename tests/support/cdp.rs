//! Talking to a real Chromium the way a browserd user does: a blocking Chrome DevTools
//! Protocol client over the session's `ws_endpoint`, and a tiny HTTP server for it to load
//! pages from. Blocking, like the rest of the harness: every read has a deadline, so a hung
//! browser fails the test instead of hanging it.

use serde_json::{json, Value};
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

/// How long a CDP command may take by default.
pub const CDP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a CDP command produced no result.
#[derive(Debug)]
pub enum CdpError {
    /// The browser answered with a protocol error.
    Protocol(Value),
    /// No answer before the deadline.
    Timeout,
    /// The websocket failed or closed.
    Closed(String),
}

impl fmt::Display for CdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CdpError::Protocol(error) => write!(f, "CDP error {error}"),
            CdpError::Timeout => write!(f, "no CDP answer in time"),
            CdpError::Closed(why) => write!(f, "the DevTools websocket failed: {why}"),
        }
    }
}

/// A page target attached in flat mode: commands for it carry its `session_id`.
#[derive(Debug, Clone)]
pub struct Page {
    pub target_id: String,
    pub session_id: String,
}

/// One DevTools websocket connection. Events are read and dropped while waiting for a
/// command's answer.
pub struct Cdp {
    socket: WebSocket<TcpStream>,
    next_id: u64,
}

impl Cdp {
    /// Connects to a `ws://host:port/devtools/browser/...` endpoint.
    pub fn connect(endpoint: &str) -> Result<Cdp, CdpError> {
        let addr = endpoint
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .and_then(|authority| authority.parse::<SocketAddr>().ok())
            .ok_or_else(|| CdpError::Closed(format!("`{endpoint}` is not a ws://IP:PORT/ URL")))?;
        let closed = |e: &dyn fmt::Display| CdpError::Closed(format!("{endpoint}: {e}"));
        let stream = TcpStream::connect_timeout(&addr, CDP_TIMEOUT).map_err(|e| closed(&e))?;
        stream
            .set_read_timeout(Some(CDP_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(CDP_TIMEOUT)))
            .map_err(|e| closed(&e))?;
        let (socket, _) = tungstenite::client::client(endpoint, stream).map_err(|e| closed(&e))?;
        Ok(Cdp { socket, next_id: 1 })
    }

    /// Sends a command without waiting for its answer; returns its id.
    pub fn send(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<u64, CdpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(command.to_string()))
            .map_err(|e| CdpError::Closed(e.to_string()))?;
        Ok(id)
    }

    /// Reads until the answer to command `id` arrives, or `timeout` passes.
    pub fn answer(&mut self, id: u64, timeout: Duration) -> Result<Value, CdpError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CdpError::Timeout);
            }
            self.socket
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|e| CdpError::Closed(e.to_string()))?;
            let message = match self.socket.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => return Err(CdpError::Closed(e.to_string())),
            };
            let Message::Text(text) = message else {
                continue;
            };
            let Ok(reply) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            return match reply.get("error") {
                Some(error) => Err(CdpError::Protocol(error.clone())),
                None => Ok(reply.get("result").cloned().unwrap_or(Value::Null)),
            };
        }
    }

    /// Sends a browser-level command and waits for its result.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, CdpError> {
        let id = self.send(None, method, params)?;
        self.answer(id, CDP_TIMEOUT)
    }

    /// Sends a command to an attached page and waits for its result.
    pub fn call_on(&mut self, page: &Page, method: &str, params: Value) -> Result<Value, CdpError> {
        let id = self.send(Some(&page.session_id), method, params)?;
        self.answer(id, CDP_TIMEOUT)
    }

    /// `Browser.getVersion`'s `product`, e.g. `HeadlessChrome/131.0.6778.85`.
    pub fn product(&mut self) -> Result<String, CdpError> {
        let version = self.call("Browser.getVersion", json!({}))?;
        Ok(version["product"].as_str().unwrap_or_default().to_owned())
    }

    /// Opens a new page on `url` and attaches to it in flat mode.
    pub fn open_page(&mut self, url: &str) -> Result<Page, CdpError> {
        let created = self.call("Target.createTarget", json!({ "url": url }))?;
        let target_id = created["targetId"].as_str().unwrap_or_default().to_owned();
        let attached = self.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        )?;
        let session_id = attached["sessionId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok(Page {
            target_id,
            session_id,
        })
    }

    /// Evaluates `expression` in the page and returns its value.
    pub fn evaluate(&mut self, page: &Page, expression: &str) -> Result<Value, CdpError> {
        let result = self.call_on(
            page,
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        )?;
        Ok(result["result"]["value"].clone())
    }

    /// Polls `document.title` until it is `expected` (the page has loaded), or panics after
    /// `timeout` with the last title seen.
    #[track_caller]
    pub fn wait_title(&mut self, page: &Page, expected: &str, timeout: Duration) {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            match self.evaluate(page, "document.title") {
                Ok(Value::String(title)) if title == expected => return,
                Ok(other) => last = other.to_string(),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(crate::wait::POLL);
        }
        panic!("the page never got the title {expected:?} within {timeout:?}; last: {last}");
    }
}

/// A one-page HTTP server on `127.0.0.1:<ephemeral>`, answering every request with the same
/// HTML. Stopped (and its thread joined) on drop.
pub struct PageServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PageServer {
    /// Serves `<title>{title}</title>`.
    pub fn start(title: &str) -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test page server");
        let addr = listener.local_addr().expect("the page server's address");
        let body = format!(
            "<!doctype html><html><head><title>{title}</title></head><body>browserd</body></html>"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                // A thread per connection: Chromium opens speculative connections that may
                // never carry a request.
                if let Ok(stream) = stream {
                    let body = body.clone();
                    std::thread::spawn(move || serve(stream, &body));
                }
            }
        });
        PageServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

/// Answers one request (whatever it asked for) and closes the connection.
fn serve(mut stream: TcpStream, body: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
