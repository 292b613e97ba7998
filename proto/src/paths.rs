//! Where the socket lives by default. Daemon and CLI must agree without talking to each
//! other, so the rule is here, as a pure function of the caller's identity and environment.

use std::path::PathBuf;

/// The default socket path: `/run/browserd/browserd.sock` for root, otherwise
/// `$XDG_RUNTIME_DIR/browserd.sock`, or `/tmp/browserd-UID/browserd.sock` when no runtime
/// dir is set.
pub fn default_socket_path(euid: u32, xdg_runtime_dir: Option<&str>) -> PathBuf {
    if euid == 0 {
        return PathBuf::from("/run/browserd/browserd.sock");
    }
    match xdg_runtime_dir {
        Some(dir) if dir.starts_with('/') => PathBuf::from(dir).join("browserd.sock"),
        _ => PathBuf::from(format!("/tmp/browserd-{euid}/browserd.sock")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_uses_run_and_users_their_runtime_dir() {
        assert_eq!(
            default_socket_path(0, Some("/run/user/0")),
            PathBuf::from("/run/browserd/browserd.sock")
        );
        assert_eq!(
            default_socket_path(1000, Some("/run/user/1000")),
            PathBuf::from("/run/user/1000/browserd.sock")
        );
        assert_eq!(
            default_socket_path(1000, None),
            PathBuf::from("/tmp/browserd-1000/browserd.sock")
        );
        assert_eq!(
            default_socket_path(1000, Some("relative")),
            PathBuf::from("/tmp/browserd-1000/browserd.sock")
        );
    }
}
