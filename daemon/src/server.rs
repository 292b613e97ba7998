//! The socket server: the accept loop, one task per connection that owns its framing and
//! answers requests in order, and the peer check. For a reload the server drains: it stops
//! accepting (new clients wait in the kernel's backlog), lets every connection finish the
//! request it is answering, and takes each connection, at a frame boundary, out of its task,
//! so that the re-executed daemon serves it on; no client is refused or dropped. A launch
//! waiting in the queue is not finished but handed over unanswered, its request put back in
//! front of what the connection had read, so the next image queues it again.
//!
//! A connection that sends `watch` becomes an event stream (see `watch`) and stops counting
//! as a connection being answered: a drain does not wait for it. Event streams are sent
//! every event emitted while the drain lasts, and end once it is over (`hand_over`), with
//! a final `reload` event. The phase is also what the HTTP listener follows (see `http`).

use crate::caller::Caller;
use crate::config::Config;
use crate::context::Context;
use crate::ops;
use browserd_proto::{
    decode_request, Envelope, ErrorCode, Frame, LineDecoder, Request, Response, Watch, WireError,
};
use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::tokio::Listener as _;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Most connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;
/// Most `watch` streams at once; one more is refused with `capacity`.
const MAX_STREAMS: usize = 256;
/// Read size per syscall.
const READ_CHUNK: usize = 64 * 1024;

/// What the server is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// A reload: stop accepting, finish what is being answered, hand connections over.
    Draining,
    /// A reload, once drained: event streams send what is left and end.
    HandingOver,
    /// Shutdown: stop accepting; connections are served until the daemon exits.
    Stopping,
}

/// A connection taken out of its task at a frame boundary, for the next image to serve.
#[derive(Debug)]
pub struct Parked {
    pub fd: OwnedFd,
    /// Bytes read but not yet answered: the start of a pipelined request, or a queued launch
    /// handed over unanswered (and what followed it).
    pub pending: Vec<u8>,
    /// The queue ticket of a launch handed over unanswered: such connections are taken up
    /// first, in this order, so the launches queue again in the order they waited.
    pub queued: Option<u64>,
}

/// The server's shared state.
pub struct Server {
    phase: watch::Sender<Phase>,
    slots: Arc<Semaphore>,
    /// The listener, once the accept loop has let go of it for a reload.
    listener: Mutex<Option<Listener>>,
    /// Connections handed over by their tasks while draining.
    parked: Mutex<Vec<Parked>>,
    /// One permit per `watch` stream open.
    streams: Arc<Semaphore>,
    /// The HTTP listener's state, when `--http` is set; it follows this server's phase.
    pub http: crate::http::State,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            phase: watch::Sender::new(Phase::Serving),
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            listener: Mutex::new(None),
            parked: Mutex::new(Vec::new()),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            http: crate::http::State::default(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Server {
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Follows the phase (the HTTP listener and event streams do).
    pub fn phases(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Stops accepting for good (shutdown).
    pub fn stop(&self) {
        self.phase.send_replace(Phase::Stopping);
    }

    /// Drains for a reload: returns the listener and every connection, once each has
    /// finished the request it was answering, or once `timeout` has passed (connections
    /// still busy then, e.g. writing to a client that does not read, are left to close).
    pub async fn drain(&self, timeout: Duration) -> (Option<Listener>, Vec<Parked>) {
        self.phase.send_replace(Phase::Draining);
        if let Some(busy) = all_returned(&self.slots, MAX_CONNECTIONS, timeout).await {
            tracing::warn!(
                busy,
                "connections still busy after {timeout:?}; they are closed by the reload"
            );
        }
        let listener = lock(&self.listener).take();
        (listener, std::mem::take(&mut *lock(&self.parked)))
    }

    /// Ends every event stream, once each has sent what was emitted so far and a `reload`
    /// event, or once `timeout` has passed.
    pub async fn hand_over(&self, timeout: Duration) {
        self.phase.send_replace(Phase::HandingOver);
        if let Some(open) = all_returned(&self.streams, MAX_STREAMS, timeout).await {
            tracing::warn!(
                open,
                "event streams still open after {timeout:?}; the reload closes them"
            );
        }
    }

    /// Serves again after a drain whose reload did not happen.
    pub fn resume(&self) {
        self.phase.send_replace(Phase::Serving);
    }

    /// Resolves once the server drains for a reload.
    pub async fn draining(&self) {
        let mut phase = self.phase.subscribe();
        if phase.wait_for(|p| *p == Phase::Draining).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Orders parked connections for the next image: launches handed over from the queue
/// first, in queue order, then the rest.
pub fn in_take_up_order(parked: &mut [Parked]) {
    parked.sort_by_key(|p| p.queued.map_or((1, 0), |ticket| (0, ticket)));
}

/// Waits until every one of the `max` permits of `slots` is back, or `timeout`; `Some(n)`:
/// `n` were still out then.
async fn all_returned(slots: &Semaphore, max: usize, timeout: Duration) -> Option<usize> {
    match tokio::time::timeout(timeout, slots.acquire_many(max as u32)).await {
        Ok(Ok(_all)) => None,
        _ => Some(max - slots.available_permits()),
    }
}

/// Accepts connections while the server serves, each holding a permit of `slots` (no more
/// at once than it has: the rest wait in the kernel's backlog), and hands each to `serve`.
/// A failed accept (out of descriptors or memory) is retried after a pause that doubles up
/// to a second, never in a spin. Returns once the server stops serving. `what` names the
/// listener in the log.
pub async fn accept_while_serving<S, A>(
    server: &Server,
    slots: &Arc<Semaphore>,
    what: &str,
    mut accept: impl FnMut() -> A,
    mut serve: impl FnMut(S, OwnedSemaphorePermit),
) where
    A: std::future::Future<Output = io::Result<S>>,
{
    let mut phase = server.phase.subscribe();
    let mut backoff = Duration::from_millis(1);
    loop {
        if *phase.borrow_and_update() != Phase::Serving {
            break;
        }
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit,
            _ = phase.changed() => continue,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = accept() => accepted,
            _ = phase.changed() => continue,
        };
        match accepted {
            Ok(stream) => {
                backoff = Duration::from_millis(1);
                serve(stream, permit);
            }
            Err(e) => {
                tracing::warn!("{what} accept failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Accepts connections until the server stops or drains; when draining, the listener is
/// left in the server for the reload to take.
pub async fn serve(ctx: Arc<Context>, listener: Listener) {
    let server = &ctx.server;
    accept_while_serving(
        server,
        &server.slots,
        "socket",
        || listener.accept(),
        |stream, permit| spawn_connection(&ctx, stream, LineDecoder::default(), permit),
    )
    .await;
    if server.phase() != Phase::Stopping {
        *lock(&server.listener) = Some(listener);
    }
}

/// Serves connections an earlier image (or a drain that did not end in a reload) handed
/// over, from where they stopped.
pub fn take_up(ctx: &Arc<Context>, parked: Vec<Parked>) {
    for Parked { fd, pending, .. } in parked {
        let stream = match uds_stream(fd) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("cannot serve a handed-over connection: {e}");
                continue;
            }
        };
        let Ok(permit) = ctx.server.slots.clone().try_acquire_owned() else {
            tracing::warn!("too many connections to take up a handed-over one");
            continue;
        };
        let mut decoder = LineDecoder::default();
        decoder.push(&pending);
        spawn_connection(ctx, stream, decoder, permit);
    }
}

fn uds_stream(fd: OwnedFd) -> io::Result<Stream> {
    use interprocess::os::unix::uds_local_socket::tokio::Stream as UdsStream;
    UdsStream::try_from(fd).map(Stream::from)
}

fn spawn_connection(
    ctx: &Arc<Context>,
    stream: Stream,
    decoder: LineDecoder,
    permit: OwnedSemaphorePermit,
) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        match handle_connection(&ctx, stream, decoder).await {
            Ok(Ending::Parked(parked)) => lock(&ctx.server.parked).push(parked),
            Ok(Ending::Closed) => {}
            Ok(Ending::Watch(stream, req_id, filter)) => {
                drop(permit);
                return serve_watch(&ctx, stream, req_id, filter).await;
            }
            Err(e) => tracing::debug!("connection ended: {e}"),
        }
        drop(permit);
    });
}

/// How a connection's task let go of it.
enum Ending {
    Closed,
    /// Parked at a frame boundary for a reload.
    Parked(Parked),
    /// It asked to `watch`: from now on it carries events.
    Watch(Stream, Option<serde_json::Value>, Watch),
}

/// Serves one connection until it closes, parks for a drain, or turns into an event stream.
async fn handle_connection(
    ctx: &Arc<Context>,
    stream: Stream,
    mut decoder: LineDecoder,
) -> io::Result<Ending> {
    if let Err(reason) = check_peer(&ctx.config, &stream) {
        tracing::warn!("refused a client: {reason}");
        refuse(
            &stream,
            &WireError::new(ErrorCode::PermissionDenied, reason),
        )
        .await?;
        return Ok(Ending::Closed);
    }
    let mut phase = ctx.server.phase.subscribe();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let mut reader = &stream;
        while let Some(frame) = decoder.next_frame() {
            match answer_frame(ctx, &stream, &frame).await? {
                Answered::Written => {}
                Answered::HandedOver(ticket) => {
                    return park_unanswered(stream, frame, decoder, ticket)
                }
                Answered::Watch(req_id, filter) => {
                    return Ok(Ending::Watch(stream, req_id, filter))
                }
            }
        }
        if matches!(
            *phase.borrow_and_update(),
            Phase::Draining | Phase::HandingOver
        ) {
            return park(stream, decoder);
        }
        let read = tokio::select! {
            read = reader.read(&mut chunk) => read?,
            _ = phase.changed() => continue,
        };
        if read == 0 {
            if let Some(frame) = decoder.finish() {
                // The client sent its last request without a newline and shut down its
                // writing half: it still waits for the answer.
                match answer_frame(ctx, &stream, &frame).await? {
                    Answered::HandedOver(ticket) => {
                        return park_unanswered(stream, frame, decoder, ticket)
                    }
                    // It closed its side: nobody to stream to.
                    Answered::Written | Answered::Watch(..) => {}
                }
            }
            return Ok(Ending::Closed);
        }
        decoder.push(&chunk[..read]);
    }
}

/// Streams events to a connection that sent `watch`, within the limit of streams; past
/// it, the request is answered with `capacity` and the connection closed.
async fn serve_watch(
    ctx: &Arc<Context>,
    stream: Stream,
    req_id: Option<serde_json::Value>,
    filter: Watch,
) {
    let Ok(slot) = ctx.server.streams.clone().try_acquire_owned() else {
        let refusal = Response::failure(
            req_id,
            WireError::new(
                ErrorCode::Capacity,
                format!("{MAX_STREAMS} event streams are open already; close one first"),
            ),
        );
        let _ = (&stream).write_all(refusal.to_line().as_bytes()).await;
        return;
    };
    if let Err(e) = crate::watch::serve(ctx, &stream, req_id, filter).await {
        tracing::debug!("event stream ended: {e}");
    }
    drop(slot);
}

/// Takes a connection out of its task, with what it has read of the next request. One in
/// the middle of skipping an oversized line is closed instead (it could not be resumed).
fn park(stream: Stream, decoder: LineDecoder) -> io::Result<Ending> {
    let Some(pending) = decoder.into_pending() else {
        return Ok(Ending::Closed);
    };
    let Stream::UdSocket(stream) = stream;
    let fd = OwnedFd::try_from(stream)?;
    Ok(Ending::Parked(Parked {
        fd,
        pending,
        queued: None,
    }))
}

/// Parks a connection whose queued launch is handed over unanswered: its request goes back
/// in front of whatever the connection had read after it.
fn park_unanswered(
    stream: Stream,
    frame: Frame,
    decoder: LineDecoder,
    ticket: u64,
) -> io::Result<Ending> {
    let Frame::Line(mut request) = frame else {
        return Ok(Ending::Closed);
    };
    request.push(b'\n');
    let Some(after) = decoder.into_pending() else {
        return Ok(Ending::Closed);
    };
    request.extend_from_slice(&after);
    let Stream::UdSocket(stream) = stream;
    let fd = OwnedFd::try_from(stream)?;
    Ok(Ending::Parked(Parked {
        fd,
        pending: request,
        queued: Some(ticket),
    }))
}

/// The connection's descriptor, to watch for the client hanging up.
fn connection_fd(stream: &Stream) -> std::os::fd::BorrowedFd<'_> {
    let Stream::UdSocket(stream) = stream;
    stream.inner().as_fd()
}

/// Most requests a refused client gets answered (each with the refusal) before it is
/// disconnected, and how long it may take to send them.
const REFUSED_REQUESTS: usize = 16;
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// The longest request line read from a refused client.
const REFUSED_FRAME: usize = 64 * 1024;

/// Answers a refused client's requests with `error` until it hangs up (within limits), then
/// closes. Closing before reading what the client sent would reset the connection, and the
/// client would see the reset ("broken pipe") instead of the refusal.
async fn refuse(stream: &Stream, error: &WireError) -> io::Result<()> {
    let (mut reader, mut writer) = (stream, stream);
    let mut decoder = LineDecoder::new(REFUSED_FRAME);
    let mut chunk = vec![0u8; 4096];
    let linger = tokio::time::sleep(REFUSAL_LINGER);
    tokio::pin!(linger);
    let mut answered = 0;
    loop {
        while let Some(frame) = decoder.next_frame() {
            let req_id = match frame {
                Frame::Line(line) => match decode_request(&line) {
                    Ok(envelope) => envelope.req_id,
                    Err(rejected) => rejected.req_id,
                },
                Frame::TooLarge { .. } => None,
            };
            let response = Response::failure(req_id, error.clone());
            writer.write_all(response.to_line().as_bytes()).await?;
            answered += 1;
            if answered >= REFUSED_REQUESTS {
                return Ok(());
            }
        }
        let read = tokio::select! {
            read = reader.read(&mut chunk) => read?,
            () = &mut linger => return Ok(()),
        };
        if read == 0 {
            if decoder.finish().is_some() || answered == 0 {
                let response = Response::failure(None, error.clone());
                writer.write_all(response.to_line().as_bytes()).await?;
            }
            return Ok(());
        }
        decoder.push(&chunk[..read]);
    }
}

/// What a frame gets: its response line, or (for `watch`) the stream that follows.
enum Answer {
    Line(String),
    Watch(Option<serde_json::Value>, Watch),
}

/// What answering one frame of a connection left to do.
enum Answered {
    Written,
    /// A queued launch handed over to the next image, which answers it: the frame is
    /// parked with this ticket.
    HandedOver(u64),
    /// It asked to `watch`.
    Watch(Option<serde_json::Value>, Watch),
}

/// Answers one frame of `stream` and writes the answer, unless it is the next image's to
/// give or the connection turns into an event stream.
async fn answer_frame(ctx: &Arc<Context>, stream: &Stream, frame: &Frame) -> io::Result<Answered> {
    let caller = Caller::on(connection_fd(stream));
    match answer(ctx, frame, &caller).await {
        Answer::Line(_) if caller.handed_over().is_some() => Ok(Answered::HandedOver(
            caller.handed_over().unwrap_or_default(),
        )),
        Answer::Line(line) => {
            let mut writer = stream;
            writer.write_all(line.as_bytes()).await?;
            Ok(Answered::Written)
        }
        Answer::Watch(req_id, filter) => Ok(Answered::Watch(req_id, filter)),
    }
}

/// Answers one frame; never fails, never panics on input.
async fn answer(ctx: &Arc<Context>, frame: &Frame, caller: &Caller<'_>) -> Answer {
    let line = match frame {
        Frame::Line(line) => line,
        &Frame::TooLarge { len } => {
            return Answer::Line(
                Response::failure(
                    None,
                    WireError::new(
                        ErrorCode::FrameTooLarge,
                        format!(
                            "request line of {len} bytes exceeds the {} byte limit",
                            browserd_proto::MAX_FRAME
                        ),
                    ),
                )
                .to_line(),
            )
        }
    };
    Answer::Line(match decode_request(line) {
        Ok(Envelope {
            req_id,
            request: Request::Watch(filter),
        }) => return Answer::Watch(req_id, filter),
        Ok(envelope) => {
            let op = envelope.request.name();
            tracing::debug!(op, "request");
            match ops::apply(ctx, envelope.request, caller).await {
                Ok(result) => Response::success_line(envelope.req_id.as_ref(), &result),
                Err(error) => {
                    tracing::debug!(op, %error, "request failed");
                    Response::failure(envelope.req_id, error).to_line()
                }
            }
        }
        Err(rejected) => {
            tracing::debug!(error = %rejected.error, "rejected request");
            Response::failure(rejected.req_id, rejected.error).to_line()
        }
    })
}

/// Root, the daemon's own uid, and the configured uids and gids may connect.
fn check_peer(config: &Config, stream: &Stream) -> Result<(), String> {
    let creds = peer_creds(stream).map_err(|e| format!("cannot read peer credentials: {e}"))?;
    let uid = creds.uid();
    let me = nix::unistd::geteuid().as_raw();
    if uid == 0 || uid == me || config.allow_uid.contains(&uid) {
        return Ok(());
    }
    let allowed_gid = |gid: &u32| config.allow_gid.iter().any(|g| g.0 == *gid);
    if allowed_gid(&creds.gid()) {
        return Ok(());
    }
    let groups = peer_groups(stream);
    if groups.iter().any(allowed_gid) {
        return Ok(());
    }
    let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
    Err(format!(
        "browserd refused uid {uid} (gid {}, supplementary groups [{}]): it serves root, uid {me}, and the uids and gids allowed with --allow-uid/--allow-gid",
        creds.gid(),
        groups.join(", ")
    ))
}

/// The peer's `SO_PEERCRED`. Read directly rather than through `interprocess`, which takes
/// pid 0 for a reset connection: pid 0 is what the kernel reports for a peer outside the
/// daemon's PID namespace, i.e. every client of a daemon that is PID 1 of a container.
fn peer_creds(stream: &Stream) -> io::Result<tokio::net::unix::UCred> {
    let Stream::UdSocket(stream) = stream;
    stream.inner().peer_cred()
}

/// The peer's supplementary groups as the kernel recorded them at connect (`SO_PEERGROUPS`,
/// Linux 4.13; `SO_PEERCRED` carries only the primary gid). Unlike `/proc/PID/status` this
/// needs no pid, so it works for a client in another PID namespace (a sidecar container),
/// and no reused pid can stand in for the peer. Empty if the kernel cannot say.
fn peer_groups(stream: &Stream) -> Vec<u32> {
    use std::os::fd::AsRawFd;
    let Stream::UdSocket(stream) = stream;
    let fd = stream.inner().as_raw_fd();
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = (groups.len() * GID) as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `groups` and sets `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / GID;
        if rc == 0 {
            groups.truncate(needed);
            return groups;
        }
        // ERANGE: too small a buffer, and `len` says how large it must be.
        if io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) || needed <= groups.len()
        {
            return Vec::new();
        }
        groups.resize(needed, 0);
    }
}
