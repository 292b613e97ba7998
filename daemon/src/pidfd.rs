//! pidfds: a descriptor that names one process for good, whatever later happens to its pid.
//! Opening one and then checking the process's start time proves the descriptor names the
//! process a scan or a record described, not a newcomer that reused its pid.

use crate::procs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// A pidfd for `pid` (kernel 5.3+).
pub fn open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A pidfd for the process `pid` that started at `start_time`, if it is still alive (not a
/// zombie): opened first, then checked, so it cannot name a process that reused the pid.
pub fn open_proven(pid: i32, start_time: u64) -> Option<OwnedFd> {
    if pid <= 1 {
        return None;
    }
    let pidfd = open(pid).ok()?;
    let now = procs::read_stat(pid)?;
    (now.start_time == start_time && !now.is_zombie() && !now.is_thread).then_some(pidfd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_is_proven_only_for_the_same_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let info = procs::read_stat(pid).unwrap();
        assert!(open_proven(pid, info.start_time).is_some());
        assert!(
            open_proven(pid, info.start_time + 1).is_none(),
            "another start time"
        );
        assert!(open_proven(1, 0).is_none());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(open_proven(pid, info.start_time).is_none(), "gone");
    }
}
