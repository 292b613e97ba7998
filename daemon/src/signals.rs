//! Sending signals: the only module that does. A signal goes either to a process group whose
//! leader the daemon has not reaped yet (the unreaped leader pins the pgid, so it cannot have
//! been reused), or to one process through a pidfd that was identity-checked against the
//! scan that found it. Nothing else is ever signalled: never pid or pgid 0 or 1, never the
//! daemon itself or its own group.

use crate::pidfd;
use crate::procs::{self, ProcInfo};
use nix::sys::signal::Signal;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Whether a pid or pgid may be signalled at all.
fn is_signallable(id: i32) -> bool {
    let me = std::process::id() as i32;
    let my_group = nix::unistd::getpgrp().as_raw();
    id > 1 && id != me && id != my_group
}

/// Signals a whole process group. The caller must hold the reap lock and know the group's
/// leader is unreaped.
pub fn kill_group(pgid: i32, signal: Signal) -> io::Result<()> {
    if !is_signallable(pgid) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Signals one process found by a scan, if it is still that process. Returns whether the
/// signal was delivered (false: it is gone, or its pid now names another process).
pub fn kill_process(process: &ProcInfo, signal: Signal) -> io::Result<bool> {
    if !is_signallable(process.pid) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refusing to signal pid {}", process.pid),
        ));
    }
    let pidfd = match pidfd::open(process.pid) {
        Ok(fd) => Some(fd),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => None,
        Err(e) => return Err(e),
    };
    // The pidfd now pins the process; if the pid still has the scanned start time, the
    // pidfd refers to the process the scan attributed, not to a newcomer reusing its pid.
    match procs::read_stat(process.pid) {
        Some(now) if now.start_time == process.start_time => {}
        _ => return Ok(false),
    }
    let sent = match &pidfd {
        Some(fd) => pidfd_send_signal(fd, signal),
        // Kernels before 5.3: the identity check above narrows the race to microseconds.
        None => nix::sys::signal::kill(nix::unistd::Pid::from_raw(process.pid), signal)
            .map_err(io::Error::from),
    };
    match sent {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Signals an adopted leader through the pidfd opened when its identity was proven (a pidfd
/// names one process for good, whatever happens to its pid). Returns whether it was
/// delivered (false: the process is gone).
pub fn kill_pidfd(pidfd: &OwnedFd, signal: Signal) -> io::Result<bool> {
    match pidfd_send_signal(pidfd, signal) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

fn pidfd_send_signal(pidfd: &OwnedFd, signal: Signal) -> io::Result<()> {
    // SAFETY: a valid pidfd, a valid signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as i32,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_init_zero_and_itself() {
        for id in [
            0,
            1,
            -5,
            std::process::id() as i32,
            nix::unistd::getpgrp().as_raw(),
        ] {
            assert!(kill_group(id, Signal::SIGTERM).is_err(), "{id}");
        }
    }

    #[test]
    fn kills_a_scanned_process_but_not_a_stale_identity() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let info = procs::read_stat(pid).unwrap();
        let stale = ProcInfo {
            start_time: info.start_time + 1,
            ..info
        };
        assert!(!kill_process(&stale, Signal::SIGKILL).unwrap());
        assert!(procs::read_stat(pid).is_some_and(|p| !p.is_zombie()));
        assert!(kill_process(&info, Signal::SIGKILL).unwrap());
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(!kill_process(&info, Signal::SIGKILL).unwrap());
    }
}
