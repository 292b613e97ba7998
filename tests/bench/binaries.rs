//! Which `browserd` and `browserctl` are measured: the ones in the bench's own profile dir
//! (`target/release` for `cargo run --release`), or those named by the harness's override
//! variables. `cargo run -p browserd-tests` builds only this crate, so binaries older than
//! their sources are refused rather than silently measured.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub struct Binaries {
    pub browserd: PathBuf,
    pub browserctl: PathBuf,
    /// `release` or `debug`: the profile dir the binaries were found in.
    pub profile: String,
}

const BUILD: &str = "cargo build --release --workspace --bins";

/// Finds both binaries and checks that they are at least as new as their sources.
pub fn locate(allow_stale: bool) -> Result<Binaries, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the bench's path: {e}"))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let profile = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let find = |name: &str, var: &str| -> Result<(PathBuf, bool), String> {
        if let Some(path) = std::env::var_os(var) {
            let path = PathBuf::from(path);
            return if path.is_file() {
                Ok((path, true))
            } else {
                Err(format!("{var}={} does not name a file", path.display()))
            };
        }
        let path = dir.join(name);
        if path.is_file() {
            Ok((path, false))
        } else {
            Err(format!(
                "`{name}` not found at {}: run `{BUILD}` first",
                path.display()
            ))
        }
    };
    let (browserd, browserd_override) = find("browserd", "BROWSERD_TEST_BROWSERD")?;
    let (browserctl, browserctl_override) = find("browserctl", "BROWSERD_TEST_BROWSERCTL")?;
    if !allow_stale {
        if !browserd_override {
            check_fresh(&browserd, &["proto", "daemon"])?;
        }
        if !browserctl_override {
            check_fresh(&browserctl, &["proto", "ctl"])?;
        }
    }
    Ok(Binaries {
        browserd,
        browserctl,
        profile,
    })
}

/// Fails if a source file of `crates` changed after `binary` was linked. Manifests and the
/// lock file are not compared: cargo does not relink a binary whose inputs they did not
/// change, so they would report a fresh build as stale.
fn check_fresh(binary: &Path, crates: &[&str]) -> Result<(), String> {
    let Some(workspace) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() else {
        return Ok(());
    };
    let built = modified(binary).ok_or_else(|| format!("cannot stat {}", binary.display()))?;
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut consider = |path: PathBuf| {
        if let Some(time) = modified(&path) {
            if newest.as_ref().is_none_or(|(t, _)| time > *t) {
                newest = Some((time, path));
            }
        }
    };
    for name in crates {
        for file in rust_files(&workspace.join(name).join("src")) {
            consider(file);
        }
    }
    match newest {
        Some((time, path)) if time > built => Err(format!(
            "{} is older than {}: run `{BUILD}` first (or pass --allow-stale)",
            binary.display(),
            path.strip_prefix(workspace).unwrap_or(&path).display()
        )),
        _ => Ok(()),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}
