//! Socket activation: a service manager (systemd's `browserd.socket`, or anything speaking the
//! same protocol) binds the socket itself and passes it as fd 3, announced by `LISTEN_FDS` and
//! `LISTEN_PID`. The daemon then serves that listener instead of binding, and leaves the socket
//! file to its owner when it exits.

use nix::sys::socket::{getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike};
use nix::sys::socket::{SockaddrStorage, UnixAddr};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// The first descriptor a service manager passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// The activation variables as found at startup, taken out of the environment so that no
/// session (nor anything else the daemon runs) can mistake them for its own.
#[derive(Debug, Default)]
pub struct Env {
    pid: Option<OsString>,
    fds: Option<OsString>,
    names: Option<OsString>,
}

impl Env {
    /// Reads and unsets `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`. Call it while the
    /// process has a single thread: changing the environment races any concurrent reader.
    pub fn take() -> Env {
        use crate::notify::take_var;
        Env {
            pid: take_var("LISTEN_PID"),
            fds: take_var("LISTEN_FDS"),
            names: take_var("LISTEN_FDNAMES"),
        }
    }
}

/// The listening socket a service manager handed over.
#[derive(Debug)]
pub struct Inherited {
    pub fd: OwnedFd,
    /// The socket's path, if it is bound to one (not abstract or unnamed).
    pub path: Option<PathBuf>,
    /// The name the manager gave it (`FileDescriptorName=`), for the log.
    pub name: Option<String>,
}

/// The socket passed by a service manager, `None` when the daemon was not socket-activated.
/// Anything inconsistent is an error that names the variable at fault: the daemon serves
/// exactly one Unix stream socket, so more descriptors (or another kind of socket) mean the
/// `.socket` unit is not the one shipped with browserd, and guessing would leave clients
/// connecting to a socket nobody serves.
pub fn inherited(env: Env) -> Result<Option<Inherited>, String> {
    let (pid, fds) = match (env.pid, env.fds) {
        (None, None) => return Ok(None),
        (Some(_), None) => return Err("LISTEN_PID is set without LISTEN_FDS".into()),
        (None, Some(_)) => return Err("LISTEN_FDS is set without LISTEN_PID".into()),
        (Some(pid), Some(fds)) => (pid, fds),
    };
    let me = std::process::id();
    let pid = number(&pid, "LISTEN_PID")?;
    if pid != me {
        return Err(format!(
            "LISTEN_PID={pid} names another process (browserd is pid {me}): the sockets were \
             passed to a wrapper that did not exec browserd; exec it, or unset LISTEN_PID and \
             LISTEN_FDS"
        ));
    }
    match number(&fds, "LISTEN_FDS")? {
        0 => return Ok(None),
        1 => {}
        n => {
            return Err(format!(
                "LISTEN_FDS={n}: browserd serves exactly one socket; give its .socket unit a \
                 single ListenStream="
            ))
        }
    }
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(FIRST_FD, libc::F_GETFD) } < 0 {
        return Err(format!("LISTEN_FDS=1 but fd {FIRST_FD} is not open"));
    }
    // SAFETY: fd 3 is open, was passed to this very process (LISTEN_PID says so), and nothing
    // else in the daemon refers to it; from here on this OwnedFd is its only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(FIRST_FD) };
    set_cloexec(&fd)?;
    let path = check_listener(&fd)?;
    let name = env
        .names
        .map(|names| names.to_string_lossy().into_owned())
        .filter(|name| !name.is_empty());
    Ok(Some(Inherited { fd, path, name }))
}

fn number(value: &OsString, name: &str) -> Result<u32, String> {
    value
        .to_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("{name}={value:?} is not a number"))
}

/// Sessions must not inherit the listener: one that did could accept the daemon's clients.
fn set_cloexec(fd: &OwnedFd) -> Result<(), String> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function borrows; no memory is passed.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFD) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(raw, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(format!(
            "cannot set close-on-exec on the inherited socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Checks that `fd` is a listening Unix stream socket and returns its path.
fn check_listener(fd: &OwnedFd) -> Result<Option<PathBuf>, String> {
    let what = format!("the inherited fd {FIRST_FD}");
    let kind =
        getsockopt(fd, sockopt::SockType).map_err(|e| format!("{what} is not a socket ({e})"))?;
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd())
        .map_err(|e| format!("cannot read the address of {what}: {e}"))?;
    if addr.family() != Some(AddressFamily::Unix) || kind != SockType::Stream {
        return Err(format!(
            "{what} is not a Unix stream socket; browserd serves only ListenStream=/path/to.sock"
        ));
    }
    let listening =
        getsockopt(fd, sockopt::AcceptConn).map_err(|e| format!("cannot inspect {what}: {e}"))?;
    if !listening {
        return Err(format!("{what} is a Unix socket that is not listening"));
    }
    Ok(addr
        .as_unix_addr()
        .and_then(UnixAddr::path)
        .map(|path| path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pid: Option<&str>, fds: Option<&str>) -> Env {
        Env {
            pid: pid.map(OsString::from),
            fds: fds.map(OsString::from),
            names: None,
        }
    }

    #[test]
    fn no_variables_means_not_activated() {
        assert!(inherited(Env::default()).unwrap().is_none());
    }

    #[test]
    fn sockets_meant_for_another_process_are_refused() {
        let err = inherited(env(Some("1"), Some("1"))).unwrap_err();
        assert!(err.contains("LISTEN_PID=1 names another process"), "{err}");
    }

    #[test]
    fn malformed_or_partial_variables_are_refused() {
        let me = std::process::id().to_string();
        let err = inherited(env(Some(&me), Some("many"))).unwrap_err();
        assert!(err.contains("LISTEN_FDS=\"many\" is not a number"), "{err}");
        let err = inherited(env(Some("x"), Some("1"))).unwrap_err();
        assert!(err.contains("LISTEN_PID"), "{err}");
        assert!(inherited(env(None, Some("1"))).is_err());
        assert!(inherited(env(Some(&me), None)).is_err());
    }

    #[test]
    fn more_than_one_socket_is_refused() {
        let me = std::process::id().to_string();
        let err = inherited(env(Some(&me), Some("2"))).unwrap_err();
        assert!(err.contains("exactly one socket"), "{err}");
    }

    #[test]
    fn zero_sockets_means_not_activated() {
        let me = std::process::id().to_string();
        assert!(inherited(env(Some(&me), Some("0"))).unwrap().is_none());
    }
}
