//! What an operation knows of the client that asked, for the one operation that may wait
//! long for nothing but its turn (a launch in the queue): whether the client has hung up,
//! and the mark that hands the request over unanswered when a reload drains the server.

use std::os::fd::BorrowedFd;
use std::sync::Mutex;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub struct Caller<'a> {
    /// The client's connection; `None` where there is none to watch or hand over.
    conn: Option<BorrowedFd<'a>>,
    /// Set when the request is to be handed over unanswered: its ticket in the queue, so
    /// the next image takes such requests up in queue order.
    handed_over: Mutex<Option<u64>>,
}

impl<'a> Caller<'a> {
    /// A client on the socket.
    pub fn on(conn: BorrowedFd<'a>) -> Caller<'a> {
        Caller {
            conn: Some(conn),
            handed_over: Mutex::new(None),
        }
    }

    /// A caller with no connection to watch (nothing can tell it left), for an operation
    /// that does not come from the socket.
    pub fn detached() -> Caller<'static> {
        Caller {
            conn: None,
            handed_over: Mutex::new(None),
        }
    }

    /// Whether the request can be handed over to a re-executed daemon unanswered.
    pub fn can_hand_over(&self) -> bool {
        self.conn.is_some()
    }

    /// Marks the request to be handed over unanswered; `ticket` is its place in the queue.
    pub fn hand_over(&self, ticket: u64) {
        *self
            .handed_over
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(ticket);
    }

    /// The queue ticket of a request marked to be handed over.
    pub fn handed_over(&self) -> Option<u64> {
        *self
            .handed_over
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Resolves once the client has closed its connection; never for a detached caller.
    ///
    /// A hang-up is the kernel's `POLLHUP` (both directions shut), not the end of what the
    /// client sends: a client that only shut down its writing half (`socat`, `nc -N`) still
    /// waits for its answer. The connection is watched through a duplicate registered for
    /// nothing but priority data, which a Unix socket never has, so only `POLLHUP` and
    /// `POLLERR` wake it, and nothing it sends is read here.
    pub async fn hung_up(&self) {
        let Some(conn) = self.conn else {
            return std::future::pending().await;
        };
        // SAFETY: the AsyncFd owns the duplicate, so the fd it watches stays open and the
        // same for its whole life.
        let watched = conn.try_clone_to_owned().and_then(|fd| {
            unsafe { AsyncFd::register_with_interest(fd, Interest::PRIORITY) }
                .map_err(|e| e.into_parts().1)
        });
        let watched = match watched {
            Ok(watched) => watched,
            Err(e) => {
                tracing::warn!("cannot watch a queued client's connection: {e}");
                return std::future::pending().await;
            }
        };
        loop {
            let Ok(mut ready) = watched.ready(Interest::PRIORITY).await else {
                return std::future::pending().await;
            };
            if ready.ready().is_read_closed() || ready.ready().is_write_closed() {
                return;
            }
            ready.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Duration;
    use tokio::time::timeout;

    #[test]
    fn a_hang_up_is_a_close_not_a_half_close() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            ours.set_nonblocking(true).unwrap();
            let ours = tokio::net::UnixStream::from_std(ours).unwrap();
            let caller = Caller::on(ours.as_fd());
            theirs.shutdown(std::net::Shutdown::Write).unwrap();
            let quiet = Duration::from_millis(50);
            assert!(
                timeout(quiet, caller.hung_up()).await.is_err(),
                "a client that only stopped sending is still there"
            );
            drop(theirs);
            timeout(Duration::from_secs(5), caller.hung_up())
                .await
                .expect("a closed connection is a hang-up");
            assert!(timeout(quiet, Caller::detached().hung_up()).await.is_err());
        });
    }
}
