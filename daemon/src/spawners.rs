//! The threads leaders are spawned from. A process is the child of the thread that started
//! it (the kernel keeps a list of children per thread: `/proc/self/task/TID/children`), and
//! proving a session gone reads the daemon's children (see `ProcTable::confirm_gone`): a
//! process of the session the table has not met is a child of the main thread (an orphan
//! handed to the subreaper) or of the thread that spawned the session's leader (one the
//! leader started beside itself, with `CLONE_PARENT`). So only those two lists need reading,
//! and they are short only if the leaders are spread over threads that stay: a thread of
//! tokio's blocking pool ends after an idle spell and hands its children to the main
//! thread, whose list would then hold every leader. Leaders are spawned round-robin from a
//! fixed set of long-lived threads, started at the first launch, each at real-time priority
//! where allowed (see `signals::spawner_thread`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::OnceLock;
use tokio::sync::oneshot;

/// How many threads spawn leaders: each thread's list of children holds about one in this
/// many of the leaders.
const THREADS: usize = 16;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
pub struct Spawners {
    /// Where each thread takes its jobs from; empty where no thread could be started.
    lanes: OnceLock<Vec<mpsc::Sender<Job>>>,
    next: AtomicUsize,
}

impl Spawners {
    /// Runs `job` on the next spawner thread (inside the runtime, which it may use) and
    /// returns what it returned; `None` if it panicked. Where no spawner thread can be
    /// started, it runs on the blocking pool.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let lanes = self.lanes.get_or_init(start);
        if lanes.is_empty() {
            return tokio::task::spawn_blocking(job).await.ok();
        }
        let (reply, answer) = oneshot::channel();
        let lane = &lanes[self.next.fetch_add(1, Ordering::Relaxed) % lanes.len()];
        let job: Job = Box::new(move || {
            let _ = reply.send(job());
        });
        // A thread whose receiver is gone has ended: nothing answers then.
        lane.send(job).ok()?;
        answer.await.ok()
    }
}

/// Starts the spawner threads, each inside the current runtime.
fn start() -> Vec<mpsc::Sender<Job>> {
    let runtime = tokio::runtime::Handle::current();
    let mut lanes = Vec::with_capacity(THREADS);
    for n in 0..THREADS {
        let (jobs, queue) = mpsc::channel::<Job>();
        let runtime = runtime.clone();
        let started = std::thread::Builder::new()
            .name(format!("spawner-{n}"))
            .spawn(move || {
                let _inside = runtime.enter();
                crate::signals::spawner_thread();
                for job in queue {
                    // A panic drops the job's reply (its caller sees it); the thread goes on.
                    let _ = catch_unwind(AssertUnwindSafe(job));
                }
            });
        match started {
            Ok(_) => lanes.push(jobs),
            Err(e) => {
                tracing::warn!("cannot start a spawner thread ({e}); spawning from fewer");
                break;
            }
        }
    }
    lanes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_round_robin_on_threads_that_stay_and_a_panic_spares_its_thread() {
        let spawners = Spawners::default();
        let mut tids = Vec::new();
        for _ in 0..THREADS * 2 {
            tids.push(
                spawners
                    .run(|| nix::unistd::gettid().as_raw())
                    .await
                    .unwrap(),
            );
        }
        let (first, second) = tids.split_at(THREADS);
        assert_eq!(first, second, "the same threads, in turn");
        let mut distinct = first.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), THREADS);
        let me = nix::unistd::gettid().as_raw();
        assert!(!first.contains(&me));

        assert_eq!(
            spawners.run(|| -> () { panic!("a job that panics") }).await,
            None
        );
        for _ in 1..THREADS {
            spawners.run(|| ()).await.unwrap();
        }
        let again = spawners.run(|| nix::unistd::gettid().as_raw()).await;
        assert_eq!(again, Some(first[0]), "the thread survived its job's panic");
        // Runs inside the runtime.
        let spawned = spawners
            .run(|| tokio::spawn(async { 7 }))
            .await
            .unwrap()
            .await;
        assert_eq!(spawned.unwrap(), 7);
    }
}
