//! The socket file: binding it (refusing to displace a live daemon, replacing a stale
//! socket file, the mode set exactly), or taking the listener a service manager or an
//! earlier image of the daemon passed, and removing the file on exit if it is ours.

use crate::activation::Inherited;
use crate::config::Config;
use interprocess::local_socket::tokio::Listener;
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::Path;

/// Who removes the socket file when the daemon exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
pub fn adopt(fd: OwnedFd) -> Result<Listener, String> {
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

/// Removes the socket file if it is still ours (same inode as bound).
fn remove_socket(path: &Path, inode: Option<u64>) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if Some(meta.ino()) == inode || inode.is_none() => {
            let _ = std::fs::remove_file(path);
        }
        _ => {}
    }
}
