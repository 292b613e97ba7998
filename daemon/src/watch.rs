//! The `watch` op: a socket connection turned into a stream of session events, one JSON
//! object per line, after a first response line (`{"ok": true, "result": {"next_seq"}}`).
//! Anything the client sends afterwards is read and ignored; the stream ends when the client
//! closes, when it falls `event_backlog` events behind (a final `lagged` event), or at a
//! reload (a final `reload` event, once every event emitted before it was sent).
//!
//! The daemon never waits for a subscriber: while a write is pending, the subscription
//! keeps taking events into its bounded queue (see `events::Subscription`).

use crate::context::Context;
use crate::events::{self, Subscription};
use crate::server::Phase;
use browserd_proto::{Event, EventKind, Response, Watch, WatchResult};
use interprocess::local_socket::tokio::Stream;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The kernel's send buffer of a stream. A subscriber is judged by how far behind it is; a
/// default buffer (hundreds of KiB) would hide a stalled one behind many events.
const SEND_BUFFER: usize = 16 * 1024;
/// Most events written at once.
const BATCH: usize = 64;
/// How long a stream that ended (lagged) may take to send its last lines before it is
/// closed anyway, and how long a reload waits for a stream to send what is left.
const LINGER: Duration = Duration::from_secs(5);
const FLUSH: Duration = Duration::from_secs(1);

/// Streams events to `stream` until it ends.
pub async fn serve(
    ctx: &Arc<Context>,
    stream: &Stream,
    req_id: Option<serde_json::Value>,
    filter: Watch,
) -> io::Result<()> {
    shrink_send_buffer(stream);
    let (mut reader, mut writer) = (stream, stream);
    // Subscribed before the first line names the next seq: nothing falls in between.
    let mut subscription = ctx
        .registry
        .events()
        .follow(filter, ctx.config.event_backlog);
    let _counted = ctx.metrics.event_subscriber();
    let ack = WatchResult {
        next_seq: ctx.registry.events().next_seq(),
    };
    writer
        .write_all(Response::success(req_id, &ack).to_line().as_bytes())
        .await?;
    let mut phase = ctx.server.phases();
    let mut out = Outbox::default();
    let mut ignored = vec![0u8; 4096];
    let linger = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(linger);
    let mut lingering = false;
    loop {
        if *phase.borrow_and_update() == Phase::HandingOver {
            return hand_over(stream, subscription, out).await;
        }
        if out.is_empty() {
            if out.fill(ctx, &mut subscription) {
                linger.as_mut().reset(tokio::time::Instant::now() + LINGER);
                lingering = true;
            }
            if out.is_empty() && subscription.is_finished() {
                return Ok(());
            }
        }
        tokio::select! {
            written = writer.write(out.pending()), if !out.is_empty() => out.advance(written?),
            () = subscription.absorb() => {}
            read = reader.read(&mut ignored) => {
                if read? == 0 {
                    return Ok(());
                }
            }
            _ = phase.changed() => {}
            () = &mut linger, if lingering => return Ok(()),
        }
    }
}

/// Bytes of whole event lines, part of them written.
#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    written: usize,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.written == self.bytes.len()
    }

    fn pending(&self) -> &[u8] {
        &self.bytes[self.written..]
    }

    fn advance(&mut self, written: usize) {
        self.written += written;
        if self.is_empty() {
            self.bytes.clear();
            self.written = 0;
        }
    }

    fn push(&mut self, event: &Event) {
        // An event always serializes: it is plain data.
        let _ = serde_json::to_writer(&mut self.bytes, event);
        self.bytes.push(b'\n');
    }

    /// Takes up to a batch of queued events; returns true if the last was `lagged`.
    fn fill(&mut self, ctx: &Context, subscription: &mut Subscription) -> bool {
        for _ in 0..BATCH {
            let Some(event) = subscription.pop() else {
                break;
            };
            self.push(&event);
            if event.event == EventKind::Lagged {
                ctx.metrics.event_subscriber_lagged();
                tracing::info!(
                    missed = event.missed,
                    "an event subscriber fell behind and was dropped"
                );
                return true;
            }
        }
        false
    }
}

/// A reload: sends what is left and a `reload` event, within [`FLUSH`].
async fn hand_over(
    stream: &Stream,
    mut subscription: Subscription,
    mut out: Outbox,
) -> io::Result<()> {
    subscription.absorb_ready();
    while let Some(event) = subscription.pop() {
        out.push(&event);
    }
    out.push(&events::reload());
    let mut writer = stream;
    match tokio::time::timeout(FLUSH, writer.write_all(out.pending())).await {
        Ok(written) => written,
        Err(_) => Ok(()),
    }
}

fn shrink_send_buffer(stream: &Stream) {
    use nix::sys::socket::{setsockopt, sockopt::SndBuf};
    let Stream::UdSocket(stream) = stream;
    if let Err(e) = setsockopt(stream.inner(), SndBuf, &SEND_BUFFER) {
        tracing::debug!("cannot shrink an event stream's send buffer: {e}");
    }
}
