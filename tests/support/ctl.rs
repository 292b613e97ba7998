//! Running the real `browserctl`, killed if it hangs.

use crate::command::output_within;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// How long one `browserctl` invocation may run.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `browserctl --socket <socket> args...` and returns its exit status and output.
#[track_caller]
pub fn run_ctl(socket: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(crate::browserctl_bin());
    command
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("BROWSERD_SOCKET");
    output_within(&mut command, CTL_TIMEOUT)
}

/// Who a command runs as: a uid, its primary gid and its supplementary groups.
#[derive(Debug, Clone)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Runs `browserctl --socket <socket> args...` as `who` (the test must be root).
#[track_caller]
pub fn run_ctl_as(who: &Identity, socket: &Path, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(crate::browserctl_bin());
    command
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("BROWSERD_SOCKET");
    let who = who.clone();
    let groups: Vec<libc::gid_t> = who.groups.clone();
    // SAFETY: only setgroups, setgid and setuid run between fork and exec, on data prepared
    // before the fork; all are async-signal-safe. (Command::uid would drop the groups.)
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(who.gid) != 0
                || libc::setuid(who.uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    output_within(&mut command, CTL_TIMEOUT)
}
