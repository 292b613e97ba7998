//! A daemon state dir on tmpfs (`/dev/shm`), where `fdatasync` returns at once: the same
//! daemon with its journal on disk and on tmpfs shows what the disk syncs cost. The guard's
//! own `state` dir becomes a symlink to the tmpfs dir, so everything else about the daemon
//! (socket, log, flags) stays as the harness sets it up.

use crate::daemon::DaemonBuilder;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Where tmpfs is expected.
const SHM: &str = "/dev/shm";

/// A private dir on tmpfs, removed with everything in it when dropped.
#[derive(Debug)]
pub struct TmpfsDir {
    path: PathBuf,
}

impl TmpfsDir {
    /// Creates a fresh dir under `/dev/shm`; fails if that is missing or not a tmpfs.
    pub fn create() -> io::Result<TmpfsDir> {
        if !is_tmpfs(Path::new(SHM)) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{SHM} is not a tmpfs mount"),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("bd-state")
            .tempdir_in(SHM)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir.path().join("state"))?;
        Ok(TmpfsDir { path: dir.keep() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state dir the daemon is given (through the guard's `state` symlink).
    pub fn state_dir(&self) -> PathBuf {
        self.path.join("state")
    }

    /// Makes `builder`'s daemon keep its state here: its `state` dir, created beside the
    /// socket in the guard's temp dir, is replaced by a symlink to this one before it starts.
    pub fn hold_state_of(&self, builder: DaemonBuilder) -> DaemonBuilder {
        let target = self.state_dir();
        builder.state_dir_name("state").prepare(move |socket| {
            let link = socket.with_file_name("state");
            fs::remove_dir(&link).expect("remove the guard's own state dir");
            std::os::unix::fs::symlink(&target, &link).expect("link the state dir to tmpfs");
        })
    }
}

impl Drop for TmpfsDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Whether `path` is on a tmpfs mount, by its filesystem magic.
pub fn is_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}
