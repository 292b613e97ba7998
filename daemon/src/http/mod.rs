//! The HTTP listener (`--http ADDR`, off by default): the browserless `/kill` and Chaser
//! bulk-terminate endpoints, listings, launches, pressure, metrics and an event stream, over
//! HTTP/1.1. Every route calls the same operations as the socket (`routes`); this file owns
//! the listener and its connections.
//!
//! * At most [`MAX_CONNECTIONS`] connections at once; more wait in the kernel's backlog.
//!   hyper closes a connection whose request headers take longer than the client timeout,
//!   which covers an idle keep-alive connection waiting for its next request too; `io`
//!   closes one that does not read what it is sent; layers bound a body's size and the time
//!   to read it.
//! * A reload keeps the listener open across the exec (clients wait in the backlog) and
//!   names it in the handover, as it does the socket. Connections are not handed over: when
//!   the drain begins each finishes the request it is answering and closes (idle ones at
//!   once); the reload waits for every operation HTTP started, then ends event streams.

mod auth;
mod io;
mod reply;
mod routes;
mod sse;

pub use auth::Token;

use crate::config::Config;
use crate::context::Context;
use crate::server::Phase;
use browserd_proto::{ErrorCode, WireError};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most HTTP connections served at once.
const MAX_CONNECTIONS: usize = 1024;
/// Most operations HTTP requests may have running at once.
const MAX_IN_FLIGHT: usize = 4096;
/// Connections waiting to be accepted.
const BACKLOG: u32 = 1024;

/// The listener's shared state.
pub struct State {
    /// The listener, once the accept loop has let go of it for a reload.
    listener: Mutex<Option<TcpListener>>,
    /// Where it listens, once it does.
    addr: OnceLock<SocketAddr>,
    token: OnceLock<Option<Arc<Token>>>,
    /// One permit per open connection, and one for the accept loop itself: all of them
    /// back means nothing of HTTP is left but the listener.
    connections: Arc<Semaphore>,
    /// One permit per operation an HTTP request started.
    in_flight: Arc<Semaphore>,
}

impl Default for State {
    fn default() -> Self {
        State {
            listener: Mutex::new(None),
            addr: OnceLock::new(),
            token: OnceLock::new(),
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS + 1)),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl State {
    /// Where HTTP is served, if it is.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr.get().copied()
    }

    /// Waits until every operation an HTTP request started has finished, or `timeout`.
    pub async fn settle(&self, timeout: Duration) {
        let all = MAX_IN_FLIGHT as u32;
        match tokio::time::timeout(timeout, self.in_flight.acquire_many(all)).await {
            Ok(Ok(permits)) => drop(permits),
            _ => tracing::warn!(
                running = MAX_IN_FLIGHT - self.in_flight.available_permits(),
                "HTTP requests still running after {timeout:?}; the reload goes on without their answers"
            ),
        }
    }

    /// Waits until every connection has closed, or `timeout`; returns the listener, which
    /// the accept loop left here when the drain stopped it.
    pub async fn take_listener(&self, timeout: Duration) -> Option<OwnedFd> {
        let all = (MAX_CONNECTIONS + 1) as u32;
        match tokio::time::timeout(timeout, self.connections.acquire_many(all)).await {
            Ok(Ok(permits)) => drop(permits),
            _ => tracing::warn!(
                open = MAX_CONNECTIONS + 1 - self.connections.available_permits(),
                "HTTP connections still open after {timeout:?}; the reload closes them"
            ),
        }
        let listener = lock(&self.listener).take()?;
        listener.into_std().ok().map(OwnedFd::from)
    }

    /// A permit held while an operation runs, so that a reload waits for it. Once a reload
    /// has begun draining, no operation starts: this image could not answer it.
    fn start_operation(&self, phase: Phase) -> Result<OwnedSemaphorePermit, WireError> {
        if matches!(phase, Phase::Draining | Phase::HandingOver) {
            return Err(WireError::new(
                ErrorCode::Reloading,
                "browserd is re-executing itself; retry: the new image answers in a moment",
            ));
        }
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            WireError::new(
                ErrorCode::Capacity,
                format!("{MAX_IN_FLIGHT} HTTP requests are being answered already"),
            )
        })
    }
}

/// What startup opened for HTTP.
pub struct Opened {
    listener: TcpListener,
    token: Option<Token>,
}

/// Opens the listener `config` asks for: the one an earlier image handed over if it listens
/// where the config says (port 0: anywhere), else a new one. `None` when HTTP is off. A
/// token the config names but that could not be read means no HTTP at all, never HTTP
/// without the token.
pub fn open(
    config: &Config,
    handed: Option<OwnedFd>,
    token: Result<Option<Token>, String>,
) -> Result<Option<Opened>, String> {
    let Some(wanted) = config.http else {
        if handed.is_some() {
            tracing::info!("HTTP is off in the config now; its listener is closed");
        }
        return Ok(None);
    };
    let token = token?;
    if token.is_none() {
        tracing::warn!(
            "HTTP on {wanted} without a token: every local user can use it (the socket's peer check does not apply); set --http-token-file"
        );
    }
    let listener = match handed.map(adopt).transpose()? {
        Some(listener) if listens_at(&listener, wanted) => listener,
        Some(listener) => {
            tracing::info!(
                was = ?listener.local_addr().ok(),
                now = %wanted,
                "the HTTP address changed with the reload"
            );
            bind(wanted)?
        }
        None => bind(wanted)?,
    };
    Ok(Some(Opened { listener, token }))
}

fn listens_at(listener: &TcpListener, wanted: SocketAddr) -> bool {
    listener.local_addr().is_ok_and(|at| {
        at.ip() == wanted.ip() && (wanted.port() == 0 || at.port() == wanted.port())
    })
}

fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    };
    let listener = socket
        .and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(BACKLOG)
        })
        .map_err(|e| format!("cannot listen for HTTP on {addr}: {e}"))?;
    Ok(listener)
}

fn adopt(fd: OwnedFd) -> Result<TcpListener, String> {
    let listener = std::net::TcpListener::from(fd);
    listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
        .map_err(|e| format!("cannot serve the HTTP listener handed over: {e}"))
}

/// Serves HTTP from now on.
pub fn start(ctx: &Arc<Context>, opened: Opened) {
    let state = &ctx.server.http;
    if let Ok(addr) = opened.listener.local_addr() {
        let _ = state.addr.set(addr);
        tracing::info!(%addr, token = opened.token.is_some(), "serving HTTP");
    }
    let _ = state.token.set(opened.token.map(Arc::new));
    tokio::spawn(serve(ctx.clone(), opened.listener));
}

/// Serves HTTP again, on the listener `take_listener` gave, after a reload that did not
/// happen.
pub fn resume(ctx: &Arc<Context>, listener: Option<OwnedFd>) {
    match listener.map(adopt) {
        Some(Ok(listener)) => {
            tokio::spawn(serve(ctx.clone(), listener));
        }
        Some(Err(e)) => tracing::error!("{e}; HTTP is no longer served"),
        None => {}
    }
}

/// Accepts connections until the daemon stops or drains; when draining, the listener is
/// left in the state for the reload to take.
async fn serve(ctx: Arc<Context>, listener: TcpListener) {
    let state = &ctx.server.http;
    let Ok(_accepting) = state.connections.clone().try_acquire_owned() else {
        tracing::error!("the HTTP listener is served twice");
        return;
    };
    let token = state.token.get().cloned().flatten();
    let router = routes::router(ctx.clone(), token);
    crate::server::accept_while_serving(
        &ctx.server,
        &state.connections,
        "HTTP",
        || async { listener.accept().await.map(|(stream, _)| stream) },
        |stream, permit| {
            tokio::spawn(serve_connection(
                ctx.clone(),
                stream,
                router.clone(),
                permit,
            ));
        },
    )
    .await;
    if ctx.server.phase() != Phase::Stopping {
        *lock(&state.listener) = Some(listener);
    }
}

/// Serves one connection until it closes; asks it to finish up once the daemon drains.
async fn serve_connection(
    ctx: Arc<Context>,
    stream: TcpStream,
    router: axum::Router,
    permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let timeout = ctx.config.http_client_timeout.0;
    let io = TokioIo::new(io::TimedIo::new(stream, timeout));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(true)
        .serve_connection(io, TowerToHyperService::new(router));
    tokio::pin!(connection);
    let mut phase = ctx.server.phases();
    let mut closing = false;
    loop {
        if !closing && *phase.borrow_and_update() != Phase::Serving {
            connection.as_mut().graceful_shutdown();
            closing = true;
        }
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!("HTTP connection ended: {e}");
                }
                break;
            }
            _ = phase.changed(), if !closing => {}
        }
    }
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_operation_starts_once_a_reload_drains() {
        let state = State::default();
        let running = state.start_operation(Phase::Serving).expect("serving");
        for draining in [Phase::Draining, Phase::HandingOver] {
            let refused = state.start_operation(draining).unwrap_err();
            assert_eq!(refused.code, ErrorCode::Reloading);
        }
        assert!(
            state.start_operation(Phase::Stopping).is_ok(),
            "a shutdown lets kills run to their end"
        );
        drop(running);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_handed_over_listener_is_kept_where_the_config_still_points() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listens_at(&listener, "127.0.0.1:0".parse().unwrap()));
        assert!(listens_at(
            &listener,
            format!("127.0.0.1:{port}").parse().unwrap()
        ));
        assert!(!listens_at(&listener, "127.0.0.2:0".parse().unwrap()));
        let other = if port == 65535 { port - 1 } else { port + 1 };
        assert!(!listens_at(
            &listener,
            format!("127.0.0.1:{other}").parse().unwrap()
        ));
    }
}
