//! The socket file: binding it (refusing to displace a live daemon, replacing a stale
//! socket file, its group and mode set exactly), or taking the listener a service manager or
//! an earlier image of the daemon passed, and removing the file on exit if it is ours.

use crate::activation::Inherited;
use crate::config::{Config, Gid};
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
    if let Some(group) = config.socket_group {
        tracing::warn!(
            gid = group.0,
            "socket_group is not applied to a socket the service manager made; set its group \
             there (systemd: SocketGroup=)"
        );
    }
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
    // The group before the mode: the mode is then exactly what was asked, whatever chown did.
    if let Some(group) = config.socket_group {
        set_group(path, group)?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
    Ok(listener)
}

/// Gives the socket file `group`, so that the group's members pass the kernel's permission
/// check on connect (which needs write permission on the file). Only root, or a daemon user
/// that is a member of the group, may do so.
fn set_group(path: &Path, group: Gid) -> Result<(), String> {
    nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(group.0))).map_err(|e| {
        format!(
            "cannot give the socket {} the group {} (--socket-group): {e}; the daemon must run \
             as root or as a member of that group",
            path.display(),
            group.0
        )
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Args;
    use clap::Parser;
    use std::os::unix::fs::PermissionsExt;

    fn config(socket: &Path, extra: &[&str]) -> Config {
        let argv = ["browserd", "--socket", socket.to_str().unwrap()];
        let args = Args::try_parse_from(argv.iter().chain(extra)).unwrap();
        Config::load(args).unwrap()
    }

    #[tokio::test]
    async fn the_socket_gets_the_configured_group_and_exactly_the_mode() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: giving a file another group than one's own needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let config = config(&path, &["--socket-group", "65534", "--socket-mode", "0660"]);
        let _listener = bind(&config).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.gid(), 65534, "the socket's group");
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o660,
            "the socket's mode"
        );
    }

    #[tokio::test]
    async fn without_a_socket_group_the_file_keeps_the_daemons_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _listener = bind(&config(&path, &[])).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.gid(), nix::unistd::getegid().as_raw());
    }
}
