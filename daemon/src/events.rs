//! The event bus: every session state change, in order per session (the registry emits
//! them while it holds its lock), fanned out to subscribers (the `watch` op, SSE). Emitting
//! never waits for anyone: each subscriber keeps its own bounded queue, and one that falls
//! too far behind is told it lagged and dropped.

use browserd_proto::{Event, EventKind, Watch};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

/// How many events the bus holds for a subscriber that has not taken them into its own
/// queue yet. Subscribers take them as soon as they are scheduled, so this only has to
/// cover what one task emits without yielding: a kill of all sessions starts every
/// termination in one pass, one `terminating` each (about 40 bytes a slot). The backlog a
/// subscriber is allowed is its queue's.
const BUS_CAPACITY: usize = 8192;

pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
    seq: AtomicU64,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::Sender::new(BUS_CAPACITY),
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
        let mut event = Event::new(seq, kind);
        fill(&mut event);
        let _ = self.tx.send(Arc::new(event));
    }

    /// The `seq` the next event will have.
    pub fn next_seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// Carries the sequence on from an earlier image of the daemon (a reload), so that a
    /// subscriber that reconnects never sees a number twice.
    pub fn resume_at(&self, seq: u64) {
        self.seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// A subscription to the events `filter` matches, allowed to fall `backlog` events
    /// behind.
    pub fn follow(&self, filter: Watch, backlog: usize) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
            filter,
            queue: VecDeque::new(),
            backlog: backlog.max(1),
            end: End::Open,
        }
    }
}

/// Where a subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    /// It fell behind by this many events; `lagged` is the next thing it gives.
    Lagged(u64),
    /// It gave everything it will (its `lagged`, or the bus is gone).
    Finished,
}

/// One subscriber's view of the bus: the events its filter matches, in order, queued until
/// its consumer (a socket, an SSE response) takes them. Its consumer calls [`absorb`]
/// whenever it is not ready for more (e.g. while a write is pending), so the queue, not the
/// consumer's pace, decides when it lags: past `backlog` queued events the queue is dropped
/// and the subscription ends with one `lagged` event.
///
/// [`absorb`]: Subscription::absorb
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Event>>,
    filter: Watch,
    queue: VecDeque<Arc<Event>>,
    backlog: usize,
    end: End,
}

impl Subscription {
    /// Waits for the next event of the bus and queues it if it matches. Never completes
    /// once the subscription has lagged or finished, so it can sit in a `select!`.
    pub async fn absorb(&mut self) {
        if self.end != End::Open {
            return std::future::pending().await;
        }
        let received = self.rx.recv().await;
        self.take(received.map_err(|e| match e {
            RecvError::Lagged(missed) => Missed::Some(missed),
            RecvError::Closed => Missed::BusGone,
        }));
    }

    /// Queues every event already on the bus, without waiting.
    pub fn absorb_ready(&mut self) {
        while self.end == End::Open {
            match self.rx.try_recv() {
                Ok(event) => self.take(Ok(event)),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Lagged(missed)) => self.take(Err(Missed::Some(missed))),
                Err(TryRecvError::Closed) => self.take(Err(Missed::BusGone)),
            }
        }
    }

    fn take(&mut self, received: Result<Arc<Event>, Missed>) {
        match received {
            Ok(event) if self.filter.matches(&event) => {
                if self.queue.len() >= self.backlog {
                    self.lag(1);
                } else {
                    self.queue.push_back(event);
                }
            }
            Ok(_) => {}
            Err(Missed::Some(missed)) => self.lag(missed),
            Err(Missed::BusGone) => self.end = End::Finished,
        }
    }

    /// Drops what is queued: the subscriber gets `lagged` next, then nothing.
    fn lag(&mut self, missed: u64) {
        let missed = missed + self.queue.len() as u64;
        self.queue.clear();
        self.end = End::Lagged(missed);
    }

    /// Whether [`Subscription::pop`] has something to give.
    pub fn has_ready(&self) -> bool {
        !self.queue.is_empty() || matches!(self.end, End::Lagged(_))
    }

    /// The next queued event; after a lag, the final `lagged` event.
    pub fn pop(&mut self) -> Option<Arc<Event>> {
        if let Some(event) = self.queue.pop_front() {
            return Some(event);
        }
        match self.end {
            End::Lagged(missed) => {
                self.end = End::Finished;
                Some(Arc::new(lagged(missed)))
            }
            End::Open | End::Finished => None,
        }
    }

    /// Whether the subscription has given its last event.
    pub fn is_finished(&self) -> bool {
        self.end == End::Finished && self.queue.is_empty()
    }
}

/// Why the bus gave no event.
enum Missed {
    Some(u64),
    BusGone,
}

/// The final event of a subscriber that lagged by `missed` events.
pub fn lagged(missed: u64) -> Event {
    let mut event = Event::new(0, EventKind::Lagged);
    event.missed = Some(missed);
    event
}

/// The final event of every stream when the daemon re-executes itself.
pub fn reload() -> Event {
    Event::new(0, EventKind::Reload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use browserd_proto::{SessionType, Workspace};

    fn emit_running(events: &Events, workspace: &str) {
        events.emit(EventKind::Running, |e| {
            e.session = Some("s-1".parse().unwrap());
            e.workspace = Some(workspace.parse::<Workspace>().unwrap());
            e.session_type = Some(SessionType::Sandbox);
        });
    }

    fn drain(subscription: &mut Subscription) -> Vec<Arc<Event>> {
        subscription.absorb_ready();
        std::iter::from_fn(|| subscription.pop()).collect()
    }

    #[test]
    fn subscribers_get_the_events_their_filter_matches_in_order() {
        let events = Events::default();
        events.emit(EventKind::Launched, |_| unreachable!("nobody listens"));
        let filter = Watch {
            workspace: Some("ci".parse().unwrap()),
            session_type: None,
        };
        let mut ci = events.follow(filter, 16);
        let mut all = events.follow(Watch::default(), 16);
        for workspace in ["ci", "other", "ci"] {
            emit_running(&events, workspace);
        }
        let seqs = |got: Vec<Arc<Event>>| got.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(drain(&mut ci)), [2, 4]);
        assert_eq!(seqs(drain(&mut all)), [2, 3, 4]);
        assert_eq!(events.next_seq(), 5);
        assert!(!ci.is_finished());
    }

    #[test]
    fn a_subscriber_past_its_backlog_gets_lagged_and_nothing_more() {
        let events = Events::default();
        let mut slow = events.follow(Watch::default(), 3);
        for _ in 0..5 {
            emit_running(&events, "ci");
        }
        let got = drain(&mut slow);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].event, EventKind::Lagged);
        assert_eq!(
            got[0].missed,
            Some(4),
            "three queued and the one that overflowed"
        );
        assert!(slow.is_finished());
        emit_running(&events, "ci");
        assert!(drain(&mut slow).is_empty());
    }

    #[test]
    fn a_subscriber_behind_the_bus_itself_learns_it_lagged() {
        let events = Events::default();
        let mut stalled = events.follow(Watch::default(), usize::MAX);
        for _ in 0..BUS_CAPACITY + 10 {
            emit_running(&events, "ci");
        }
        let got = drain(&mut stalled);
        assert_eq!(got.last().unwrap().event, EventKind::Lagged);
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn the_sequence_carries_on_after_a_reload() {
        let events = Events::default();
        events.resume_at(42);
        assert_eq!(events.next_seq(), 42);
        events.resume_at(7);
        assert_eq!(events.next_seq(), 42, "never backwards");
    }
}
