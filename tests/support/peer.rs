//! Talking to the daemon as another user, to exercise its `SO_PEERCRED` check. The test
//! process forks; the child drops to the given uid/gid and makes one request using raw
//! syscalls only (the parent is multi-threaded, so the child must not allocate or take
//! locks), then pipes back whether its request could be sent, and the answer.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// Why a request as another user could not be made.
#[derive(Debug)]
pub enum PeerError {
    /// Dropping privileges failed (not root?).
    Setup(&'static str),
    /// `connect` failed with this errno (e.g. EACCES from the socket's file mode).
    Connect(i32),
}

/// What a request as another user got.
#[derive(Debug)]
pub struct PeerAnswer {
    /// The errno with which sending the request failed (EPIPE: the daemon had closed the
    /// connection already), if it did.
    pub send_error: Option<i32>,
    /// Whatever the daemon answered, until the first newline or end of stream.
    pub answer: Vec<u8>,
}

/// Connects to `socket` as `uid`/`gid` (no supplementary groups), sends `line` and returns
/// whatever the daemon answered until the first newline or end of stream.
pub fn request_as(socket: &Path, uid: u32, gid: u32, line: &[u8]) -> Result<Vec<u8>, PeerError> {
    request_as_after(socket, uid, gid, line, Duration::ZERO).map(|peer| peer.answer)
}

/// Like [`request_as`], but waits `delay` between connecting and sending, as a slow client
/// does, and reports whether the request could still be sent.
pub fn request_as_after(
    socket: &Path,
    uid: u32,
    gid: u32,
    line: &[u8],
    delay: Duration,
) -> Result<PeerAnswer, PeerError> {
    // Everything the child needs is prepared before the fork.
    let path = CString::new(socket.as_os_str().as_bytes()).expect("socket path has no NUL");
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes_with_nul();
    assert!(bytes.len() <= addr.sun_path.len(), "socket path too long");
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    let pause = libc::timespec {
        tv_sec: delay.as_secs() as libc::time_t,
        tv_nsec: delay.subsec_nanos() as libc::c_long,
    };

    // SAFETY: the child only makes async-signal-safe syscalls on data prepared above and
    // ends with `_exit`.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => unsafe {
            child_request(&addr, line, write_end.as_raw_fd(), uid, gid, &pause)
        },
        nix::unistd::ForkResult::Parent { child } => {
            drop(write_end);
            let mut answer = Vec::new();
            let _ = std::fs::File::from(read_end).read_to_end(&mut answer);
            let status = nix::sys::wait::waitpid(child, None).expect("waitpid on the peer");
            match status {
                nix::sys::wait::WaitStatus::Exited(_, 0) => {
                    // The first byte is the send errno (0: sent), the rest the answer.
                    let (status, answer) = answer.split_first().unwrap_or((&0, &[]));
                    Ok(PeerAnswer {
                        send_error: (*status != 0).then_some(i32::from(*status)),
                        answer: answer.to_vec(),
                    })
                }
                nix::sys::wait::WaitStatus::Exited(_, 1) => Err(PeerError::Setup("setgroups")),
                nix::sys::wait::WaitStatus::Exited(_, 2) => Err(PeerError::Setup("setgid")),
                nix::sys::wait::WaitStatus::Exited(_, 3) => Err(PeerError::Setup("setuid")),
                nix::sys::wait::WaitStatus::Exited(_, 4) => Err(PeerError::Setup("socket")),
                nix::sys::wait::WaitStatus::Exited(_, code) if code >= 100 => {
                    Err(PeerError::Connect(code - 100))
                }
                other => panic!("the peer process ended unexpectedly: {other:?}"),
            }
        }
    }
}

/// The forked child: drop privileges, connect, wait `pause`, send, write the send's errno
/// (one byte, 0 if sent) and then the answer to `out`, `_exit`.
///
/// # Safety
/// Must only be called in a freshly forked child.
unsafe fn child_request(
    addr: &libc::sockaddr_un,
    line: &[u8],
    out: i32,
    uid: u32,
    gid: u32,
    pause: &libc::timespec,
) -> ! {
    if libc::setgroups(0, std::ptr::null()) != 0 {
        libc::_exit(1);
    }
    if libc::setgid(gid) != 0 {
        libc::_exit(2);
    }
    if libc::setuid(uid) != 0 {
        libc::_exit(3);
    }
    let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
    if fd < 0 {
        libc::_exit(4);
    }
    let timeout = libc::timeval {
        tv_sec: 10,
        tv_usec: 0,
    };
    libc::setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        (&timeout as *const libc::timeval).cast(),
        std::mem::size_of::<libc::timeval>() as libc::socklen_t,
    );
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    if libc::connect(fd, (addr as *const libc::sockaddr_un).cast(), len) != 0 {
        let errno = *libc::__errno_location();
        libc::_exit(100 + errno.min(150));
    }
    if pause.tv_sec > 0 || pause.tv_nsec > 0 {
        libc::nanosleep(pause, std::ptr::null_mut());
    }
    // The daemon may answer and close before reading; the answer is still read.
    let mut sent = 0;
    let mut send_error: u8 = 0;
    while sent < line.len() {
        let n = libc::send(
            fd,
            line[sent..].as_ptr().cast(),
            line.len() - sent,
            libc::MSG_NOSIGNAL,
        );
        if n <= 0 {
            send_error = (*libc::__errno_location()).clamp(1, 255) as u8;
            break;
        }
        sent += n as usize;
    }
    libc::write(out, (&send_error as *const u8).cast(), 1);
    let mut buf = [0u8; 4096];
    loop {
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        if n <= 0 {
            break;
        }
        let chunk = &buf[..n as usize];
        libc::write(out, chunk.as_ptr().cast(), chunk.len());
        if chunk.contains(&b'\n') {
            break;
        }
    }
    libc::_exit(0)
}
