//! Running the real `browserctl`. Output goes to files rather than pipes, so a large output
//! can never deadlock the wait, and a hung client is killed after a deadline.

use crate::wait::POLL;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one `browserctl` invocation may run.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `browserctl --socket <socket> args...` and returns its exit status and output.
#[track_caller]
pub fn run_ctl(socket: &Path, args: &[&str]) -> Output {
    let mut stdout = tempfile::tempfile().expect("temp file for stdout");
    let mut stderr = tempfile::tempfile().expect("temp file for stderr");
    let mut child = Command::new(crate::browserctl_bin())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("BROWSERD_SOCKET")
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().expect("dup stdout file"))
        .stderr(stderr.try_clone().expect("dup stderr file"))
        .spawn()
        .expect("spawn browserctl");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitpid on browserctl") {
            break status;
        }
        if start.elapsed() > CTL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("browserctl {args:?} did not finish within {CTL_TIMEOUT:?}");
        }
        std::thread::sleep(POLL);
    };
    let read = |file: &mut std::fs::File| {
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).expect("rewind output file");
        file.read_to_end(&mut bytes).expect("read output file");
        bytes
    };
    Output {
        status,
        stdout: read(&mut stdout),
        stderr: read(&mut stderr),
    }
}
