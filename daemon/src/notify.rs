//! Telling a service manager how the daemon is doing, through `NOTIFY_SOCKET` (systemd's
//! `Type=notify`): `READY=1` once the socket accepts connections, `STOPPING=1` when shutdown
//! begins, the session counts as `STATUS=`, and `WATCHDOG=1` from a timer of the event loop,
//! so that a wedged loop stops the pings and the manager restarts the daemon. Without
//! `NOTIFY_SOCKET` every call is a no-op; a failed send is logged and otherwise ignored.

use crate::context::Context;
use browserd_proto::StateCounts;
use sd_notify::NotifyState;
use std::ffi::OsString;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the status is refreshed when no watchdog asks for more.
const STATUS_PERIOD: Duration = Duration::from_secs(5);
/// The fastest tick, whatever `WATCHDOG_USEC` says.
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// The notification variables as found at startup, taken out of the environment so that no
/// session can notify on the daemon's behalf.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Env {
    socket: Option<OsString>,
    watchdog_usec: Option<OsString>,
    watchdog_pid: Option<OsString>,
}

impl Env {
    /// Reads and unsets `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`. Call it while the
    /// process has a single thread: changing the environment races any concurrent reader.
    pub fn take() -> Env {
        Env {
            socket: take_var("NOTIFY_SOCKET"),
            watchdog_usec: take_var("WATCHDOG_USEC"),
            watchdog_pid: take_var("WATCHDOG_PID"),
        }
    }
}

/// Reads and unsets one variable of the daemon's own environment (single-threaded startup
/// only: changing the environment races any concurrent reader).
pub fn take_var(name: &str) -> Option<OsString> {
    let value = std::env::var_os(name);
    std::env::remove_var(name);
    value
}

/// A handle on the service manager's notification socket; cheap to clone.
#[derive(Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
    /// The variables it was made from, handed over to a re-executed daemon.
    env: Arc<Env>,
}

struct Inner {
    addr: SocketAddr,
    watchdog: Option<Duration>,
    stopping: AtomicBool,
    /// The last `STATUS=` sent, so the periodic refresh sends only changes.
    last_status: Mutex<String>,
}

impl Notifier {
    /// A notifier for the socket `env` names, or a no-op one. Problems with the variables
    /// are logged, never fatal: the daemon works without a manager listening.
    pub fn new(env: Env) -> Notifier {
        let kept = Arc::new(env.clone());
        let Some(socket) = env.socket.filter(|s| !s.is_empty()) else {
            if env.watchdog_usec.is_some() {
                tracing::warn!("WATCHDOG_USEC is set without NOTIFY_SOCKET; no watchdog pings");
            }
            return Notifier {
                inner: None,
                env: kept,
            };
        };
        let addr = match address(&socket) {
            Ok(addr) => addr,
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET={socket:?} is unusable ({e}); not notifying");
                return Notifier::default();
            }
        };
        let watchdog = watchdog(env.watchdog_usec.as_ref(), env.watchdog_pid.as_ref());
        tracing::debug!(socket = ?socket, ?watchdog, "notifying the service manager");
        Notifier {
            inner: Some(Arc::new(Inner {
                addr,
                watchdog,
                stopping: AtomicBool::new(false),
                last_status: Mutex::new(String::new()),
            })),
            env: kept,
        }
    }

    /// The variables this notifier was made from.
    pub fn env(&self) -> Env {
        (*self.env).clone()
    }

    /// A reload begins (`RELOADING=1` with the monotonic time systemd requires); the
    /// re-executed daemon says `READY=1` once it serves again.
    pub fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        states.push(NotifyState::Status("reloading"));
        self.send(&states);
    }

    /// The socket is listening and the daemon's loops run: clients may come.
    pub fn ready(&self, counts: &StateCounts) {
        self.send_with_status(&[NotifyState::Ready], counts);
    }

    /// Shutdown has begun; the status from now on says so.
    pub fn stopping(&self, counts: &StateCounts) {
        if let Some(inner) = &self.inner {
            inner.stopping.store(true, Ordering::Relaxed);
        }
        self.send_with_status(&[NotifyState::Stopping], counts);
    }

    /// A free-form status, e.g. why startup failed.
    pub fn status(&self, text: &str) {
        self.send(&[NotifyState::Status(text)]);
    }

    /// Refreshes the status while the daemon runs, and pings the watchdog if one is armed.
    /// The pings come from a timer of the daemon's own event loop, and each tick also takes
    /// the registry lock (to count sessions): a blocked loop or a stuck lock stops the pings.
    pub async fn run(self, ctx: Arc<Context>) {
        let Some(inner) = self.inner.clone() else {
            return;
        };
        let mut ticks = tokio::time::interval(tick_period(inner.watchdog));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let counts = ctx.registry.counts();
            let status = self.status_line(&counts);
            let changed = {
                let mut last = lock(&inner.last_status);
                let changed = *last != status;
                if changed {
                    last.clone_from(&status);
                }
                changed
            };
            let mut states = Vec::with_capacity(2);
            if inner.watchdog.is_some() {
                states.push(NotifyState::Watchdog);
            }
            if changed {
                states.push(NotifyState::Status(&status));
            }
            if !states.is_empty() {
                self.send(&states);
            }
        }
    }

    fn send_with_status(&self, states: &[NotifyState], counts: &StateCounts) {
        let Some(inner) = &self.inner else {
            return;
        };
        let status = self.status_line(counts);
        let mut all = states.to_vec();
        all.push(NotifyState::Status(&status));
        self.send(&all);
        *lock(&inner.last_status) = status.clone();
    }

    fn status_line(&self, counts: &StateCounts) -> String {
        let stopping = self
            .inner
            .as_ref()
            .is_some_and(|inner| inner.stopping.load(Ordering::Relaxed));
        format!(
            "{}; sessions: {} running, {} starting, {} terminating",
            if stopping { "stopping" } else { "serving" },
            counts.running,
            counts.starting,
            counts.terminating
        )
    }

    fn send(&self, states: &[NotifyState]) {
        let Some(inner) = &self.inner else {
            return;
        };
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        if let Err(e) = send_datagram(&inner.addr, message.as_bytes()) {
            tracing::warn!("cannot notify the service manager: {e}");
        }
    }
}

/// Half the watchdog interval, as sd_watchdog_enabled(3) recommends, so one late tick does not
/// trip it; the status alone is refreshed every `STATUS_PERIOD`.
fn tick_period(watchdog: Option<Duration>) -> Duration {
    watchdog.map_or(STATUS_PERIOD, |w| (w / 2).clamp(MIN_PERIOD, STATUS_PERIOD))
}

/// One datagram on a fresh socket, as libsystemd does, so a manager that re-created its
/// socket is still reached. Non-blocking: an overloaded manager loses a ping rather than
/// stalling the event loop.
fn send_datagram(addr: &SocketAddr, message: &[u8]) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    let sent = socket.send_to_addr(message, addr)?;
    if sent != message.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            "the notification was truncated",
        ));
    }
    Ok(())
}

/// `NOTIFY_SOCKET` is a path, or `@name` for the abstract namespace.
fn address(socket: &OsString) -> std::io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        None => SocketAddr::from_pathname(socket),
    }
}

/// The watchdog interval, if the manager armed one for this process: `WATCHDOG_USEC` positive
/// and `WATCHDOG_PID`, when present, naming this process.
fn watchdog(usec: Option<&OsString>, pid: Option<&OsString>) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        let me = std::process::id();
        if pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(me) {
            tracing::debug!(
                ?pid,
                "WATCHDOG_PID names another process; no watchdog pings"
            );
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    #[test]
    fn watchdog_is_armed_only_for_this_process() {
        let me = std::process::id().to_string();
        let usec = os("2000000");
        assert_eq!(watchdog(Some(&usec), None), Some(Duration::from_secs(2)));
        assert_eq!(
            watchdog(Some(&usec), Some(&os(&me))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(watchdog(Some(&usec), Some(&os("1"))), None);
        assert_eq!(watchdog(Some(&os("0")), None), None);
        assert_eq!(watchdog(Some(&os("soon")), None), None);
        assert_eq!(watchdog(None, None), None);
    }

    #[test]
    fn pings_come_at_half_the_watchdog_interval() {
        let ms = Duration::from_millis;
        assert_eq!(tick_period(Some(ms(200))), ms(100));
        assert_eq!(tick_period(Some(Duration::from_secs(3))), ms(1500));
        assert_eq!(tick_period(Some(Duration::from_secs(30))), STATUS_PERIOD);
        assert_eq!(tick_period(Some(Duration::from_micros(1))), MIN_PERIOD);
        assert_eq!(tick_period(None), STATUS_PERIOD);
    }

    #[test]
    fn abstract_and_path_sockets_are_understood() {
        use std::os::linux::net::SocketAddrExt;
        let abstract_addr = address(&os("@/org/freedesktop/systemd1/notify")).unwrap();
        assert_eq!(
            abstract_addr.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify"[..])
        );
        let path = address(&os("/run/systemd/notify")).unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
    }

    #[test]
    fn without_a_socket_nothing_is_sent() {
        let notifier = Notifier::new(Env::default());
        assert!(notifier.inner.is_none());
        notifier.ready(&StateCounts::default());
        notifier.status("anything");
    }

    #[test]
    fn messages_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(Env {
            socket: Some(path.into_os_string()),
            ..Env::default()
        });
        notifier.ready(&StateCounts {
            running: 2,
            ..StateCounts::default()
        });
        let mut buf = [0u8; 512];
        let n = receiver.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(
            text,
            "READY=1\nSTATUS=serving; sessions: 2 running, 0 starting, 0 terminating\n"
        );
    }
}
