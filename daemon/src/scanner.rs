//! Coalesced process scans. The scanner owns the process table; a caller asks a question
//! about some sessions (their processes, whether they are gone, what they use) as of a
//! refresh that starts after its request, and every request waiting when a refresh starts is
//! answered by that one refresh. Refreshes run on the blocking pool.

use crate::procs::{self, Confirmed, Owner, ProcInfo, ProcTable, Reads, Root};
use browserd_proto::SessionId;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// What a session uses, measured from its processes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub processes: u32,
    /// Summed PSS.
    pub memory_bytes: u64,
    pub cpu_seconds: f64,
}

/// One question and where its answer goes.
enum Request {
    /// A refresh nobody waits for (keeps the table warm, forgets the dead).
    Background,
    Processes(
        Vec<SessionId>,
        oneshot::Sender<HashMap<SessionId, Vec<ProcInfo>>>,
    ),
    ConfirmGone(Vec<SessionId>, oneshot::Sender<Confirmed>),
    Usage(Vec<SessionId>, oneshot::Sender<HashMap<SessionId, Usage>>),
}

/// A gone check waiting for its answer: its candidates, and where the answer goes.
type Asker = (Vec<SessionId>, oneshot::Sender<Confirmed>);

/// How long a kick waits for others to join it.
const KICK_DELAY: Duration = Duration::from_millis(20);

/// Decides who owns a new process at the top of the known tree.
pub type RootOwner = dyn Fn(&ProcInfo, Root) -> Owner + Send + Sync;

/// The daemon's direct children where a process of the given sessions could be, less the
/// unreaped session leaders, read with reaping held off; `None` where they cannot prove a
/// session gone (see `ProcTable::confirm_gone`).
pub type DaemonChildren = dyn Fn(&[SessionId]) -> Option<Vec<i32>> + Send + Sync;

/// What the scanner asks the daemon.
pub struct Daemon {
    pub root_owner: Arc<RootOwner>,
    pub children: Arc<DaemonChildren>,
}

#[derive(Default)]
pub struct Scanner {
    queue: Mutex<Vec<Request>>,
    wake: Notify,
    /// A kicked refresh is pending.
    kicked: AtomicBool,
    /// Counts the batches begun: the table's generation (see `ProcTable::begin`).
    generation: AtomicU64,
    /// Pids the daemon reaped, each with the generation begun last when it was reaped.
    reaped: Mutex<Vec<(i32, u64)>>,
}

/// Most reaped pids kept for the next batch; beyond it they are dropped (they only spare
/// reads: the table then reads those processes instead).
const MAX_REAPED: usize = 1 << 16;

impl Scanner {
    /// The processes of `sessions` (as the table lists them: re-read before relying on a
    /// process's state), from a refresh that started after this call.
    pub async fn processes(&self, sessions: Vec<SessionId>) -> HashMap<SessionId, Vec<ProcInfo>> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Request::Processes(sessions, reply));
        // The scanner task is gone only at shutdown, when nothing is tracked any more.
        answer.await.unwrap_or_default()
    }

    /// Of `candidates` (sessions whose leader is reaped), those proven gone: see
    /// [`ProcTable::confirm_gone`].
    pub async fn confirm_gone(&self, candidates: Vec<SessionId>) -> Confirmed {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Request::ConfirmGone(candidates, reply));
        answer.await.unwrap_or_default()
    }

    /// What each of `sessions` uses now.
    pub async fn usage(&self, sessions: Vec<SessionId>) -> HashMap<SessionId, Usage> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Request::Usage(sessions, reply));
        answer.await.unwrap_or_default()
    }

    /// Asks for a refresh nobody waits for, soon: after a launch, so the table is warm when
    /// a kill needs it (it would otherwise meet the new session's processes at its kill);
    /// after a session ends, so exited processes are forgotten off the request path. Kicks
    /// within `KICK_DELAY` of each other share one refresh.
    pub fn kick(self: &Arc<Self>) {
        if self.kicked.swap(true, Ordering::AcqRel) {
            return;
        }
        let scanner = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(KICK_DELAY).await;
            scanner.kicked.store(false, Ordering::Release);
            scanner.enqueue(Request::Background);
        });
    }

    /// Tells the table which pids the daemon just reaped, so that it need not read them to
    /// know they are gone. Call after they were reaped.
    pub fn reaped(&self, pids: impl IntoIterator<Item = i32>) {
        let generation = self.generation.load(Ordering::SeqCst);
        let mut reaped = self
            .reaped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if reaped.len() >= MAX_REAPED {
            reaped.clear();
        }
        reaped.extend(pids.into_iter().map(|pid| (pid, generation)));
    }

    fn enqueue(&self, request: Request) {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(request);
        self.wake.notify_one();
    }

    /// The scanner loop. `daemon.root_owner` decides who owns a new direct child of the
    /// daemon; it runs on the blocking pool, after the child was read from `/proc`.
    pub async fn run(self: Arc<Self>, daemon: Arc<Daemon>) {
        let mut table = ProcTable::default();
        loop {
            self.wake.notified().await;
            let requests = std::mem::take(
                &mut *self
                    .queue
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            if requests.is_empty() {
                continue;
            }
            // Pids reaped from here on carry this generation or a later one.
            let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
            let reaped = std::mem::take(
                &mut *self
                    .reaped
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            // A gone check of a few sessions is answered here when a few reads do: the hop
            // to the blocking pool and back (to a core that may be asleep) would cost more.
            let left = if is_light(&requests) {
                table.begin(generation, &reaped);
                answer_light(&mut table, requests, &daemon)
            } else {
                Some(requests)
            };
            if let Some(requests) = left {
                let daemon = daemon.clone();
                let job = tokio::task::spawn_blocking(move || {
                    table.begin(generation, &reaped);
                    answer(&mut table, requests, &daemon);
                    table
                });
                table = match job.await {
                    Ok(table) => table,
                    Err(e) => {
                        tracing::error!("process scan failed: {e}");
                        ProcTable::default()
                    }
                };
            }
            // A process caught in the middle of `execve` is decided by the next refresh.
            if table.has_undecided() {
                self.kick();
            }
        }
    }
}

/// Refreshes the table once and answers every request with it. Proving sessions gone
/// needs no refresh (it looks for what the table has not met itself): a batch of only those
/// skips it.
fn answer(table: &mut ProcTable, requests: Vec<Request>, daemon: &Daemon) {
    let root_owner = &*daemon.root_owner;
    let me = std::process::id() as i32;
    let started = std::time::Instant::now();
    let background = requests.iter().all(|r| matches!(r, Request::Background));
    let only_confirm = requests
        .iter()
        .all(|r| matches!(r, Request::ConfirmGone(..)));
    if !only_confirm {
        if let Err(e) = table.refresh(me, background, root_owner) {
            tracing::error!("cannot read /proc: {e}");
        }
    }
    let mut confirm: Vec<Asker> = Vec::new();
    for request in requests {
        match request {
            Request::Background => {}
            Request::Processes(sessions, reply) => {
                let found = sessions
                    .into_iter()
                    .map(|id| {
                        let processes = table.of(&id);
                        (id, processes)
                    })
                    .collect();
                let _ = reply.send(found);
            }
            Request::Usage(sessions, reply) => {
                let found = sessions
                    .into_iter()
                    .map(|id| {
                        let usage = usage(&table.of(&id));
                        (id, usage)
                    })
                    .collect();
                let _ = reply.send(found);
            }
            Request::ConfirmGone(candidates, reply) => confirm.push((candidates, reply)),
        }
    }
    if !confirm.is_empty() {
        let confirmed = prove(table, &confirm, Reads::Any, daemon)
            .map(Option::unwrap_or_default)
            .unwrap_or_else(|e| {
                tracing::error!("cannot list /proc to confirm sessions gone: {e}");
                Confirmed {
                    gone: Vec::new(),
                    retry: true,
                }
            });
        reply_confirmed(confirm, confirmed);
    }
    tracing::trace!(background, took = ?started.elapsed(), "process table refreshed");
}

/// Most sessions a gone check proves on the event loop: each costs a few reads (of its
/// processes not yet known gone, at most one read each, and of the daemon's children).
const LIGHT_CANDIDATES: usize = 8;

/// Whether `requests` are only gone checks, of at most [`LIGHT_CANDIDATES`] sessions in all.
fn is_light(requests: &[Request]) -> bool {
    let mut count = 0;
    requests.iter().all(|request| match request {
        Request::ConfirmGone(candidates, _) => {
            count += candidates.len();
            count <= LIGHT_CANDIDATES
        }
        _ => false,
    })
}

/// Answers a light batch (see [`is_light`]) if that takes only a few reads
/// ([`Reads::Light`]); otherwise gives the requests back, for the blocking pool. Call after
/// `begin`.
fn answer_light(
    table: &mut ProcTable,
    requests: Vec<Request>,
    daemon: &Daemon,
) -> Option<Vec<Request>> {
    let confirm: Vec<Asker> = requests
        .into_iter()
        .filter_map(|request| match request {
            Request::ConfirmGone(candidates, reply) => Some((candidates, reply)),
            _ => None,
        })
        .collect();
    match prove(table, &confirm, Reads::Light, daemon) {
        Ok(Some(confirmed)) => {
            reply_confirmed(confirm, confirmed);
            None
        }
        // It needs more than a few reads: the blocking pool does it all.
        Ok(None) | Err(_) => Some(
            confirm
                .into_iter()
                .map(|(c, r)| Request::ConfirmGone(c, r))
                .collect(),
        ),
    }
}

/// Proves which of the askers' sessions are gone, in one check for all of them, reading no
/// more than `reads` allows (see [`ProcTable::confirm_gone`]).
fn prove(
    table: &mut ProcTable,
    confirm: &[Asker],
    reads: Reads,
    daemon: &Daemon,
) -> std::io::Result<Option<Confirmed>> {
    let all: Vec<SessionId> = confirm
        .iter()
        .flat_map(|(c, _)| c.iter().cloned())
        .collect();
    let me = std::process::id() as i32;
    let children = || (daemon.children)(&all);
    table.confirm_gone(all.clone(), reads, me, &*daemon.root_owner, children)
}

/// Tells each asker of a shared gone check which of its sessions were proven gone.
fn reply_confirmed(mut confirm: Vec<Asker>, confirmed: Confirmed) {
    if confirm.len() == 1 {
        // One asker (the usual case): every session proven gone is one of its own.
        if let Some((_, reply)) = confirm.pop() {
            let _ = reply.send(confirmed);
        }
    } else {
        // A set: a kill-all's check has a thousand candidates and as many proven gone.
        let gone: HashSet<&SessionId> = confirmed.gone.iter().collect();
        for (candidates, reply) in confirm {
            let _ = reply.send(Confirmed {
                gone: candidates
                    .into_iter()
                    .filter(|id| gone.contains(id))
                    .collect(),
                retry: confirmed.retry,
            });
        }
    }
}

/// Counts the live processes among `known` and sums what they use.
fn usage(known: &[ProcInfo]) -> Usage {
    let live = procs::current(known);
    let ticks = procs::ticks_per_second() as f64;
    Usage {
        processes: u32::try_from(live.len()).unwrap_or(u32::MAX),
        memory_bytes: live.iter().filter_map(|p| procs::read_pss(p.pid)).sum(),
        cpu_seconds: live.iter().map(|p| p.cpu_ticks).sum::<u64>() as f64 / ticks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<SessionId> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// A daemon whose children are `children` (`None`: they cannot be read).
    fn daemon(children: Option<Vec<i32>>) -> Daemon {
        Daemon {
            root_owner: Arc::new(|_: &ProcInfo, _: Root| Owner::Unowned),
            children: Arc::new(move |_: &[SessionId]| children.clone()),
        }
    }

    fn gone_checks(
        batches: Vec<Vec<SessionId>>,
    ) -> (Vec<Request>, Vec<oneshot::Receiver<Confirmed>>) {
        batches
            .into_iter()
            .map(|candidates| {
                let (reply, answer) = oneshot::channel();
                (Request::ConfirmGone(candidates, reply), answer)
            })
            .unzip()
    }

    /// Asks for proofs of `batches` in one refresh; returns what each asker was told.
    fn confirm_in_one_batch(batches: Vec<Vec<SessionId>>) -> Vec<Confirmed> {
        // No child of the daemon is left where these sessions' processes could be.
        let daemon = daemon(Some(Vec::new()));
        let (requests, answers) = gone_checks(batches);
        answer(&mut ProcTable::default(), requests, &daemon);
        answers
            .into_iter()
            .map(|mut answer| answer.try_recv().expect("every asker is answered"))
            .collect()
    }

    #[test]
    fn each_asker_of_a_shared_refresh_is_told_of_its_own_sessions_only() {
        // Sessions the table never met have no process left: each is proven gone.
        let told = confirm_in_one_batch(vec![ids(&["a-1", "a-2"]), ids(&["b-1"]), ids(&[])]);
        let gone: Vec<Vec<SessionId>> = told.iter().map(|c| c.gone.clone()).collect();
        assert_eq!(gone, [ids(&["a-1", "a-2"]), ids(&["b-1"]), ids(&[])]);
        assert!(told.iter().all(|c| !c.retry));
    }

    #[test]
    fn a_lone_asker_is_told_of_every_one_of_its_sessions_proven_gone() {
        let many: Vec<SessionId> = (0..1000)
            .map(|i| format!("s-{i}").parse().unwrap())
            .collect();
        let told = confirm_in_one_batch(vec![many.clone()]);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].gone, many);
        assert!(!told[0].retry);
    }

    #[test]
    fn only_gone_checks_of_a_few_sessions_are_light() {
        let (few, _answers) = gone_checks(vec![ids(&["a-1"]), ids(&["b-1", "b-2"])]);
        assert!(is_light(&few));
        let names: Vec<String> = (0..=LIGHT_CANDIDATES).map(|i| format!("c-{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (many, _answers) = gone_checks(vec![ids(&names)]);
        assert!(!is_light(&many), "more sessions than a few reads cover");
        let (mut mixed, _answers) = gone_checks(vec![ids(&["a-1"])]);
        mixed.push(Request::Background);
        assert!(!is_light(&mixed), "a refresh is never light");
    }

    #[test]
    fn a_light_batch_is_answered_where_it_is_asked_when_a_few_reads_prove_it() {
        let (requests, answers) = gone_checks(vec![ids(&["a-1"]), ids(&["b-1"])]);
        let left = answer_light(
            &mut ProcTable::default(),
            requests,
            &daemon(Some(Vec::new())),
        );
        assert!(left.is_none(), "answered");
        let gone: Vec<Vec<SessionId>> = answers
            .into_iter()
            .map(|mut a| a.try_recv().expect("answered at once").gone)
            .collect();
        assert_eq!(gone, [ids(&["a-1"]), ids(&["b-1"])]);
    }

    #[test]
    fn a_light_batch_that_needs_a_listing_is_handed_back_unanswered() {
        let (requests, mut answers) = gone_checks(vec![ids(&["a-1"])]);
        // The daemon's children cannot be read: only a listing of /proc could prove it.
        let left =
            answer_light(&mut ProcTable::default(), requests, &daemon(None)).expect("handed back");
        assert!(answers[0].try_recv().is_err(), "not answered yet");
        assert!(matches!(&left[..], [Request::ConfirmGone(c, _)] if *c == ids(&["a-1"])));
        // The blocking pool's answer then proves it.
        answer(&mut ProcTable::default(), left, &daemon(None));
        assert_eq!(answers[0].try_recv().unwrap().gone, ids(&["a-1"]));
    }
}
