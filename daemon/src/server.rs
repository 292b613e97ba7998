//! The socket server: binding (refusing to displace a live daemon, replacing a stale socket
//! file) or adopting a socket-activated listener, checking each peer's credentials, and one
//! task per connection that owns its framing and answers requests in order.

use crate::activation::Inherited;
use crate::config::Config;
use crate::context::Context;
use crate::ops;
use browserd_proto::{decode_request, ErrorCode, Frame, LineDecoder, Response, WireError};
use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};

/// Most connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;
/// Read size per syscall.
const READ_CHUNK: usize = 64 * 1024;

/// Who removes the socket file when the daemon exits.
pub enum SocketFile {
    /// The daemon bound it: removed if it is still the same file.
    Ours { inode: Option<u64> },
    /// A service manager bound it and keeps listening on it after the daemon exits.
    Managers,
}

impl SocketFile {
    pub fn is_inherited(&self) -> bool {
        matches!(self, SocketFile::Managers)
    }

    /// Removes the socket file at `path` if the daemon made it and it is still that file.
    pub fn remove(&self, path: &Path) {
        if let SocketFile::Ours { inode } = self {
            remove_socket(path, *inode);
        }
    }
}

/// The listener: the one a service manager passed, else a socket of our own.
pub fn listen(
    config: &mut Config,
    inherited: Option<Inherited>,
) -> Result<(Listener, SocketFile), String> {
    let Some(inherited) = inherited else {
        let mut listener = bind(config)?;
        listener.do_not_reclaim_name_on_drop();
        let inode = std::fs::metadata(&config.socket).ok().map(|m| m.ino());
        return Ok((listener, SocketFile::Ours { inode }));
    };
    match &inherited.path {
        Some(path) if *path != config.socket => {
            tracing::info!(
                configured = %config.socket.display(),
                inherited = %path.display(),
                "serving the socket the service manager passed, not the configured path"
            );
            config.socket = path.clone();
        }
        Some(_) => {}
        None => tracing::warn!(
            "the inherited socket has no path; clients need its address from the service manager"
        ),
    }
    tracing::info!(name = inherited.name.as_deref(), "socket-activated");
    let listener = adopt(inherited.fd)?;
    Ok((listener, SocketFile::Managers))
}

/// Binds the socket. A live daemon answering on the path makes this fail; a socket file
/// nobody answers on is stale and replaced; anything else at the path is left alone.
fn bind(config: &Config) -> Result<Listener, String> {
    let path = &config.socket;
    prepare_parent(path)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(format!(
                        "another browserd is already serving {}; stop it first, or pass a different --socket",
                        path.display()
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(socket = %path.display(), "replacing stale socket file");
                    std::fs::remove_file(path)
                        .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
                }
                Err(e) => return Err(format!("cannot probe existing socket {}: {e}", path.display())),
            }
        }
        Ok(_) => {
            return Err(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
    }
    let name = path
        .as_path()
        .to_fs_name::<GenericFilePath>()
        .map_err(|e| format!("invalid socket path {}: {e}", path.display()))?;
    // The umask would strip bits from the requested mode; bind under a umask that lets
    // exactly the mode through, so the socket is never reachable with other permissions.
    let mode = config.socket_mode.0;
    let mask = nix::sys::stat::Mode::from_bits_truncate(!mode & 0o777);
    let previous = nix::sys::stat::umask(mask);
    let listener = ListenerOptions::new()
        .name(name)
        .mode(mode as libc::mode_t)
        .create_tokio();
    nix::sys::stat::umask(previous);
    let listener = listener.map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
    Ok(listener)
}

/// Serves a listener a service manager bound and passed (see `activation`). Its file, mode and
/// owner are the manager's business; the live-daemon probe of `bind` does not apply, since
/// the one answering on that path is this very socket.
fn adopt(fd: std::os::fd::OwnedFd) -> Result<Listener, String> {
    use interprocess::os::unix::uds_local_socket::tokio::Listener as UdsListener;
    UdsListener::try_from(fd)
        .map(Listener::from)
        .map_err(|e| format!("cannot serve the inherited socket: {e}"))
}

/// Creates the socket's directory if missing. A directory of our own making is private
/// unless it is the system runtime dir, where group members must reach the socket.
fn prepare_parent(path: &Path) -> Result<(), String> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    if parent.exists() {
        return Ok(());
    }
    let mode = if parent.starts_with("/run") {
        0o755
    } else {
        0o700
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(parent)
        .map_err(|e| format!("cannot create socket directory {}: {e}", parent.display()))
}

/// Accepts connections until `stop` turns true.
pub async fn serve(ctx: Arc<Context>, listener: Listener, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::from_millis(1);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok(stream) => {
                backoff = Duration::from_millis(1);
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle_connection(&ctx, stream).await {
                        tracing::debug!("connection ended: {e}");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn handle_connection(ctx: &Arc<Context>, stream: Stream) -> io::Result<()> {
    if let Err(reason) = check_peer(&ctx.config, &stream) {
        tracing::warn!("refused a client: {reason}");
        return refuse(
            &stream,
            &WireError::new(ErrorCode::PermissionDenied, reason),
        )
        .await;
    }
    let (mut reader, mut writer) = (&stream, &stream);
    let mut decoder = LineDecoder::default();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        while let Some(frame) = decoder.next_frame() {
            let response = answer(ctx, frame).await;
            writer.write_all(response.to_line().as_bytes()).await?;
        }
        let read = reader.read(&mut chunk).await?;
        if read == 0 {
            if let Some(frame) = decoder.finish() {
                let response = answer(ctx, frame).await;
                writer.write_all(response.to_line().as_bytes()).await?;
            }
            return Ok(());
        }
        decoder.push(&chunk[..read]);
    }
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

/// Answers one frame; never fails, never panics on input.
async fn answer(ctx: &Arc<Context>, frame: Frame) -> Response {
    let line = match frame {
        Frame::Line(line) => line,
        Frame::TooLarge { len } => {
            return Response::failure(
                None,
                WireError::new(
                    ErrorCode::FrameTooLarge,
                    format!(
                        "request line of {len} bytes exceeds the {} byte limit",
                        browserd_proto::MAX_FRAME
                    ),
                ),
            )
        }
    };
    match decode_request(&line) {
        Ok(envelope) => {
            let op = op_name(&envelope.request);
            tracing::debug!(op, "request");
            match ops::apply(ctx, envelope.request).await {
                Ok(result) => Response {
                    req_id: envelope.req_id,
                    ok: true,
                    result: Some(result),
                    error: None,
                },
                Err(error) => {
                    tracing::debug!(op, %error, "request failed");
                    Response::failure(envelope.req_id, error)
                }
            }
        }
        Err(rejected) => {
            tracing::debug!(error = %rejected.error, "rejected request");
            Response::failure(rejected.req_id, rejected.error)
        }
    }
}

fn op_name(request: &browserd_proto::Request) -> &'static str {
    use browserd_proto::Request::*;
    match request {
        Launch(_) => "launch",
        Sessions(_) => "sessions",
        Kill(_) => "kill",
        BulkTerminate(_) => "bulk_terminate",
        Lease(_) => "lease",
        Release(_) => "release",
        Status => "status",
    }
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
    if let Some(pid) = creds.pid().filter(|&pid| pid > 0) {
        if supplementary_groups(pid).iter().any(allowed_gid) {
            return Ok(());
        }
    }
    Err(format!(
        "uid {uid} may not use this browserd; the daemon accepts root, uid {me}, and those allowed with --allow-uid/--allow-gid"
    ))
}

/// The peer's `SO_PEERCRED`. Read directly rather than through `interprocess`, which takes
/// pid 0 for a reset connection: pid 0 is what the kernel reports for a peer outside the
/// daemon's PID namespace, i.e. every client of a daemon that is PID 1 of a container. Such a
/// peer's supplementary groups cannot be looked up; its uid and primary gid still count.
fn peer_creds(stream: &Stream) -> io::Result<tokio::net::unix::UCred> {
    let Stream::UdSocket(stream) = stream;
    stream.inner().peer_cred()
}

/// A peer's supplementary groups, from `/proc` (SO_PEERCRED carries only the primary gid).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the socket file if it is still ours (same inode as bound).
fn remove_socket(path: &Path, inode: Option<u64>) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if Some(meta.ino()) == inode || inode.is_none() => {
            let _ = std::fs::remove_file(path);
        }
        _ => {}
    }
}
