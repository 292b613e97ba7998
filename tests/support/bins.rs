//! Where the binaries under test are. `CARGO_BIN_EXE_*` only exists inside the crate that
//! defines a binary, so they are looked up in the target dir the test executable runs from
//! (`target/<profile>/deps/<test>` → `target/<profile>/<bin>`).

use std::path::PathBuf;

/// The `browserd` daemon binary.
pub fn browserd_bin() -> PathBuf {
    locate("browserd", "BROWSERD_TEST_BROWSERD")
}

/// The `browserctl` client binary.
pub fn browserctl_bin() -> PathBuf {
    locate("browserctl", "BROWSERD_TEST_BROWSERCTL")
}

/// The fixture binary that runs one process with many threads (`tests/fixtures/threads.rs`).
pub fn threads_bin() -> PathBuf {
    locate("browserd-test-threads", "BROWSERD_TEST_THREADS")
}

/// The fixture binary whose leader starts a process beside itself at SIGTERM
/// (`tests/fixtures/beside.rs`).
pub fn beside_bin() -> PathBuf {
    locate("browserd-test-beside", "BROWSERD_TEST_BESIDE")
}

/// Finds `name` in the profile dir of the running test executable, unless `override_var`
/// names a path explicitly (useful to test an installed build).
fn locate(name: &str, override_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(override_var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{override_var}={} does not name a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe
        .parent()
        .expect("the test executable lives in a directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "`{name}` not found at {}: run `cargo build --workspace --bins` first \
         (or set {override_var} to the binary to test)",
        path.display()
    );
    path
}
