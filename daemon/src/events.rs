//! The event bus: every session state change, in order per session (the registry emits
//! them while it holds its lock), fanned out to subscribers (the `watch` op, SSE). A
//! subscriber that falls too far behind is told it lagged and dropped; emitting never waits
//! for anyone.

use browserd_proto::{format_rfc3339, Event, EventKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::broadcast;

/// How many events a subscriber may be behind before it is dropped.
pub const BACKLOG: usize = 4096;

pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
    seq: AtomicU64,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::Sender::new(BACKLOG),
            seq: AtomicU64::new(1),
        }
    }
}

impl Events {
    /// Emits an event; `fill` sets its session fields. Nothing is built while nobody
    /// listens.
    pub fn emit(&self, kind: EventKind, fill: impl FnOnce(&mut Event)) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        if self.tx.receiver_count() == 0 {
            return;
        }
        let mut event = blank(seq, kind);
        fill(&mut event);
        let _ = self.tx.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

/// An event of `kind` with no session fields.
pub fn blank(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        at: format_rfc3339(SystemTime::now()),
        event: kind,
        session: None,
        tracking_id: None,
        session_type: None,
        workspace: None,
        pid: None,
        exit: None,
        reason: None,
        lease_id: None,
        missed: None,
    }
}

/// The final event of a subscriber that lagged by `missed` events.
pub fn lagged(missed: u64) -> Event {
    let mut event = blank(0, EventKind::Lagged);
    event.missed = Some(missed);
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_get_events_in_order_and_a_slow_one_learns_it_lagged() {
        let events = Events::default();
        events.emit(EventKind::Launched, |_| unreachable!("nobody listens"));
        let mut rx = events.subscribe();
        for _ in 0..3 {
            events.emit(EventKind::Running, |e| e.pid = Some(1));
        }
        let seqs: Vec<u64> = (0..3).map(|_| rx.try_recv().unwrap().seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        for _ in 0..BACKLOG + 10 {
            events.emit(EventKind::Running, |_| {});
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
    }
}
