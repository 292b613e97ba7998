//! `GET /v1/events`: the session events as Server-Sent Events, one per state change, named
//! by kind (`event: exited`), numbered by `seq` (`id:`), the event's JSON as `data:`. The
//! same filters as `watch` (`?workspace=`, `?type=`); the same ends: a subscriber that falls
//! behind gets `event: lagged` and the stream closes; at a reload, `event: reload` (an
//! `EventSource` then reconnects by itself).
//!
//! hyper only takes the next event when the client can receive it, so a task per stream
//! keeps the subscription taking events from the bus meanwhile (see `events::Subscription`),
//! and the response reads them from a one-slot channel.

use super::reply::Failure;
use crate::context::Context;
use crate::events::{self, Subscription};
use crate::server::Phase;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use browserd_proto::{Event, EventKind, SessionType, Watch, Workspace};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a reload waits for a stream to take what is left.
const FLUSH: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    workspace: Option<Workspace>,
    #[serde(alias = "type", alias = "sessionType")]
    session_type: Option<SessionType>,
    /// Taken by auth.
    #[allow(dead_code)]
    token: Option<IgnoredAny>,
}

pub async fn events(
    State(ctx): State<Arc<Context>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let Query(query) = query.map_err(|e| Failure::invalid(e.body_text()))?;
    let filter = Watch {
        workspace: query.workspace,
        session_type: query.session_type,
    };
    let subscription = ctx
        .registry
        .events()
        .follow(filter, ctx.config.event_backlog);
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(pump(ctx.clone(), subscription, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        Some((Ok::<_, Infallible>(sse_event(&event)), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

fn sse_event(event: &Event) -> SseEvent {
    let data = serde_json::to_string(event).unwrap_or_default();
    let sse = SseEvent::default().event(event.event.as_str()).data(data);
    // Events about the stream itself are not numbered.
    match event.seq {
        0 => sse,
        seq => sse.id(seq.to_string()),
    }
}

/// Moves events from the subscription to the response as the client takes them, until the
/// client leaves, the subscription ends, or a reload.
async fn pump(ctx: Arc<Context>, mut subscription: Subscription, tx: mpsc::Sender<Arc<Event>>) {
    let _counted = ctx.metrics.event_subscriber();
    let mut phase = ctx.server.phases();
    loop {
        if *phase.borrow_and_update() == Phase::HandingOver {
            return hand_over(subscription, tx).await;
        }
        tokio::select! {
            slot = tx.reserve(), if subscription.has_ready() => {
                let (Ok(slot), Some(event)) = (slot, subscription.pop()) else {
                    return;
                };
                let lagged = event.event == EventKind::Lagged;
                slot.send(event);
                if lagged {
                    ctx.metrics.event_subscriber_lagged();
                    tracing::info!("an HTTP event subscriber fell behind and was dropped");
                    return;
                }
            }
            () = subscription.absorb() => {}
            () = tx.closed() => return,
            _ = phase.changed() => {}
        }
    }
}

/// A reload: sends what is left and a `reload` event, within [`FLUSH`].
async fn hand_over(mut subscription: Subscription, tx: mpsc::Sender<Arc<Event>>) {
    subscription.absorb_ready();
    let send_all = async {
        while let Some(event) = subscription.pop() {
            if tx.send(event).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Arc::new(events::reload())).await;
    };
    let _ = tokio::time::timeout(FLUSH, send_all).await;
}
