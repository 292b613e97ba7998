//! Running a program with a deadline. Output goes to files rather than pipes, so a large
//! output can never deadlock the wait, and a hung program is killed once the deadline passes.

use crate::wait::POLL;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `command` (stdin empty) to its end and returns its exit status and output; panics,
/// after killing it, if it runs longer than `timeout`.
#[track_caller]
pub fn output_within(command: &mut Command, timeout: Duration) -> Output {
    let mut stdout = tempfile::tempfile().expect("temp file for stdout");
    let mut stderr = tempfile::tempfile().expect("temp file for stderr");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().expect("dup stdout file"))
        .stderr(stderr.try_clone().expect("dup stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {timeout:?}");
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
