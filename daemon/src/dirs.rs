//! The dirs the daemon creates for a browser session and removes once it is gone:
//! `<state-dir>/sessions/<id>/` holding `profile/` and the XDG `config/` and `cache/` homes,
//! and a private `TMPDIR`.
//!
//! Chromium binds its process-singleton socket at `$TMPDIR/org.chromium.Chromium.XXXXXX/
//! SingletonSocket`, and a Unix socket path has at most 107 bytes. So the session's TMPDIR
//! is `<state-dir>/sessions/<id>/tmp` only when that leaves room for the socket; with a
//! longer state dir (any user's `~/.local/state/browserd` with a long enough name) it is
//! `<tmp-root>/<id>` under a short root of the daemon's own: `$XDG_RUNTIME_DIR/browserd/<h>`,
//! else `/tmp/browserd-<uid>/<h>`, created private and checked to be ours, where `<h>` is a
//! hash of the state dir, so daemons with different state dirs never share (or sweep) one.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What Chromium appends to `$TMPDIR` for its singleton socket.
const SINGLETON: &str = "/org.chromium.Chromium.XXXXXX/SingletonSocket";
/// The longest path a Unix socket can be bound at (108 bytes of `sun_path`, with its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The longest session id the daemon generates (`%08x-%x` of a 64-bit sequence).
const MAX_ID_LEN: usize = 8 + 1 + 16;

/// Where session dirs go.
#[derive(Debug, Clone)]
pub struct Layout {
    sessions: PathBuf,
    /// The short root for session TMPDIRs, when `<sessions>/<id>/tmp` is too long.
    tmp_root: Option<PathBuf>,
}

impl Layout {
    pub fn new(state_dir: &Path) -> Layout {
        let sessions = state_dir.join("sessions");
        // A TMPDIR of this length leaves room for the singleton socket.
        let fits = |tmpdir_len: usize| tmpdir_len + SINGLETON.len() <= MAX_SOCKET_PATH;
        let id_under = |root: &Path| root.as_os_str().len() + 1 + MAX_ID_LEN;
        let tmp_root = if fits(id_under(&sessions) + "/tmp".len()) {
            None
        } else {
            let scope = format!(
                "{:08x}",
                crc32fast::hash(state_dir.as_os_str().as_encoded_bytes())
            );
            short_tmp_roots()
                .into_iter()
                .map(|root| root.join(&scope))
                .find(|root| fits(id_under(root)))
        };
        Layout { sessions, tmp_root }
    }

    /// The dir of every session's own dirs.
    pub fn sessions(&self) -> &Path {
        &self.sessions
    }

    /// The short root of session TMPDIRs, if they do not fit in the session dir.
    pub fn tmp_root(&self) -> Option<&Path> {
        self.tmp_root.as_deref()
    }

    /// Removes the short root of session TMPDIRs, and its parent, if nothing is left in them
    /// (at shutdown: every session's dirs are gone by then; another daemon's are not touched).
    pub fn release_tmp_root(&self) {
        let Some(root) = &self.tmp_root else {
            return;
        };
        for dir in [Some(root.as_path()), root.parent()].into_iter().flatten() {
            // Fails (and stops) while something is still in it.
            if std::fs::remove_dir(dir).is_err() {
                return;
            }
        }
    }

    /// Creates a session's dirs, all private.
    pub fn create(&self, session: &str) -> io::Result<SessionDirs> {
        let root = self.sessions.join(session);
        let tmp = match &self.tmp_root {
            None => root.join("tmp"),
            Some(tmp_root) => {
                ensure_private_root(tmp_root)?;
                tmp_root.join(session)
            }
        };
        let dirs = SessionDirs {
            profile: root.join("profile"),
            config: root.join("config"),
            cache: root.join("cache"),
            tmp,
            root,
        };
        let mut builder = DirBuilder::new();
        builder.recursive(true).mode(0o700);
        let made = [&dirs.profile, &dirs.tmp, &dirs.config, &dirs.cache]
            .into_iter()
            .try_for_each(|dir| builder.create(dir));
        if let Err(e) = made {
            for dir in dirs.owned() {
                remove_dir(&dir);
            }
            return Err(e);
        }
        Ok(dirs)
    }
}

/// Short roots for session TMPDIRs, best first: `$XDG_RUNTIME_DIR/browserd` for a user who
/// has one, then `/tmp/browserd-<uid>` (always short enough).
fn short_tmp_roots() -> Vec<PathBuf> {
    let euid = nix::unistd::geteuid().as_raw();
    let runtime = std::env::var("XDG_RUNTIME_DIR")
        .ok()
        .map(PathBuf::from)
        .filter(|dir| euid != 0 && dir.is_absolute())
        .map(|dir| dir.join("browserd"));
    runtime
        .into_iter()
        .chain([PathBuf::from(format!("/tmp/browserd-{euid}"))])
        .collect()
}

/// Creates `root` and its parent if missing, and checks both are real dirs of ours that
/// nobody else can write into: a shared `/tmp` could hold a planted dir or symlink there.
fn ensure_private_root(root: &Path) -> io::Result<()> {
    let mut tries = 0;
    loop {
        if let Some(parent) = root.parent() {
            ensure_private_dir(parent)?;
        }
        match ensure_private_dir(root) {
            // Another daemon stopping removed the (empty) parent meanwhile: make it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 3 => tries += 1,
            done => return done,
        }
    }
}

fn ensure_private_dir(root: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(root)?;
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != euid || meta.permissions().mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a private dir owned by uid {euid}; remove it or set a shorter --state-dir",
                root.display()
            ),
        ));
    }
    Ok(())
}

/// One browser session's dirs.
pub struct SessionDirs {
    pub root: PathBuf,
    pub profile: PathBuf,
    pub tmp: PathBuf,
    config: PathBuf,
    cache: PathBuf,
}

impl SessionDirs {
    /// The environment that keeps the browser inside its dirs. Besides the profile,
    /// Chromium writes to `$TMPDIR` (its process singleton), to `$XDG_CONFIG_HOME/chromium/
    /// Crash Reports` (the crashpad database, shared by every session if left in `$HOME`)
    /// and to `$XDG_CACHE_HOME` (dconf).
    pub fn env(&self) -> [(&'static str, &Path); 3] {
        [
            ("TMPDIR", &self.tmp),
            ("XDG_CONFIG_HOME", &self.config),
            ("XDG_CACHE_HOME", &self.cache),
        ]
    }

    /// The dirs to remove once the session is gone.
    pub fn owned(&self) -> Vec<PathBuf> {
        let mut owned = vec![self.root.clone()];
        if !self.tmp.starts_with(&self.root) {
            owned.push(self.tmp.clone());
        }
        owned
    }
}

/// Removes a dir the daemon created, retrying briefly: a process that is exiting may still
/// be writing into it. Blocking: call it off the event loop.
pub fn remove_dir(dir: &Path) {
    for attempt in 0..5 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) if attempt == 4 => {
                tracing::warn!(dir = %dir.display(), "cannot remove session dir: {e}");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20 << attempt)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn singleton_path(dirs: &SessionDirs) -> usize {
        dirs.tmp.as_os_str().len() + SINGLETON.len()
    }

    #[test]
    fn a_short_state_dir_keeps_everything_in_the_session_dir() {
        let state = tempfile::tempdir().unwrap();
        let layout = Layout::new(state.path());
        assert!(layout.tmp_root().is_none());
        let dirs = layout.create("s1").unwrap();
        assert_eq!(dirs.root, state.path().join("sessions/s1"));
        for (name, dir) in dirs.env() {
            assert!(dir.starts_with(&dirs.root), "{name}={}", dir.display());
            assert!(dir.is_dir(), "{name}={} exists", dir.display());
        }
        assert_eq!(dirs.owned(), vec![dirs.root.clone()]);
        let names: Vec<&str> = dirs.env().iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["TMPDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"]);
        remove_dir(&dirs.root);
    }

    #[test]
    fn a_long_state_dir_gets_a_short_tmpdir_the_singleton_socket_fits_in() {
        let base = tempfile::tempdir().unwrap();
        let state = base
            .path()
            .join("a-state-dir-with-a-long-name-like-a-real-users-home");
        let layout = Layout::new(&state);
        let root = layout.tmp_root().expect("a short tmp root").to_path_buf();
        let id = "deadbeef-0123456789abcdef";
        let dirs = layout.create(id).unwrap();
        assert!(
            singleton_path(&dirs) <= MAX_SOCKET_PATH,
            "{}",
            dirs.tmp.display()
        );
        assert_eq!(dirs.tmp, root.join(id));
        assert!(dirs.tmp.is_dir() && dirs.profile.is_dir());
        let owned = dirs.owned();
        assert_eq!(owned, vec![dirs.root.clone(), dirs.tmp.clone()]);
        for dir in owned {
            remove_dir(&dir);
            assert!(!dir.exists());
        }
        layout.release_tmp_root();
        assert!(!root.exists(), "{}", root.display());
    }

    #[test]
    fn the_short_tmp_root_is_removed_when_empty_and_kept_while_in_use() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("browserd-test").join("0123abcd");
        let layout = Layout {
            sessions: base.path().join("sessions"),
            tmp_root: Some(root.clone()),
        };
        let dirs = layout.create("s-1").unwrap();
        layout.release_tmp_root();
        assert!(
            dirs.tmp.exists(),
            "a session's TMPDIR is never removed from under it"
        );
        remove_dir(&dirs.root);
        remove_dir(&dirs.tmp);
        layout.release_tmp_root();
        assert!(!root.exists());
        assert!(!root.parent().unwrap().exists());
    }

    #[test]
    fn a_planted_tmp_root_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("planted");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir(&root).unwrap_err();
        assert!(err.to_string().contains("not a private dir"), "{err}");
        let link = base.path().join("link");
        std::os::unix::fs::symlink(base.path(), &link).unwrap();
        assert!(ensure_private_dir(&link).is_err());
    }
}
