//! Who may use the socket: `--socket-group` gives the socket file a group whose members, by
//! primary or supplementary group, pass the kernel's permission check on connect; the mode
//! still decides; browserd's own peer check (`--allow-gid`, through `SO_PEERCRED` and
//! `SO_PEERGROUPS`) comes after it. browserctl runs as uid 65534 and reports each refusal as
//! `permission_denied`, saying which check refused.

use browserd_proto::StatusResult;
use browserd_tests::ctl::{run_ctl_as, Identity};
use browserd_tests::DaemonGuard;
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};

const NOBODY: u32 = 65534;
/// A group neither the daemon (root) nor `nobody` is in.
const GROUP: u32 = 4242;

fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("skipping {test}: needs root to run browserctl as uid {NOBODY}");
    }
    root
}

/// A daemon whose socket dir anyone may search, with the extra flags.
fn daemon(flags: &[(&str, &str)]) -> DaemonGuard {
    flags
        .iter()
        .fold(DaemonGuard::builder().public_dir(), |b, (name, value)| {
            b.flag(name, value)
        })
        .start()
}

fn nobody_with(gid: u32, groups: &[u32]) -> Identity {
    Identity {
        uid: NOBODY,
        gid,
        groups: groups.to_vec(),
    }
}

/// The `--json` error browserctl printed, checked to be `permission_denied` with exit 3.
#[track_caller]
fn permission_denied(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let error: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(error["code"], "permission_denied", "{error}");
    error["message"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn the_socket_file_gets_the_socket_group_and_exactly_the_mode() {
    if !root_or_skip("the_socket_file_gets_the_socket_group_and_exactly_the_mode") {
        return;
    }
    let d = daemon(&[("--socket-group", "4242"), ("--socket-mode", "0660")]);
    let meta = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(meta.gid(), GROUP);
    assert_eq!(meta.uid(), 0, "the owner is the daemon's user");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
}

#[test]
fn a_member_of_the_socket_group_connects_by_primary_or_supplementary_group() {
    if !root_or_skip("a_member_of_the_socket_group_connects_by_primary_or_supplementary_group") {
        return;
    }
    let d = daemon(&[("--socket-group", "4242"), ("--allow-gid", "4242")]);
    for who in [nobody_with(GROUP, &[]), nobody_with(NOBODY, &[100, GROUP])] {
        let output = run_ctl_as(&who, d.socket(), &["--json", "status"]);
        assert!(
            output.status.success(),
            "{who:?}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let status: StatusResult = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(status.pid as i32, d.pid());
    }
}

#[test]
fn outside_the_socket_group_the_kernel_refuses_and_browserctl_says_so() {
    if !root_or_skip("outside_the_socket_group_the_kernel_refuses_and_browserctl_says_so") {
        return;
    }
    let d = daemon(&[("--socket-group", "4242"), ("--allow-gid", "4242")]);
    let outsider = nobody_with(NOBODY, &[100]);
    let message = permission_denied(&run_ctl_as(&outsider, d.socket(), &["--json", "status"]));
    for expected in [
        "the socket file (mode 0660, owner uid 0, group 4242) does not let uid 65534 (groups [65534",
        "so the kernel refused before browserd saw the connection",
        "--socket-group",
    ] {
        assert!(message.contains(expected), "{expected:?} not in {message}");
    }
    assert!(
        !d.log().contains("refused a client"),
        "browserd never saw the connection:\n{}",
        d.log()
    );

    // The mode decides too: 0600 shuts the group out as well.
    let d = daemon(&[("--socket-group", "4242"), ("--socket-mode", "0600")]);
    let member = nobody_with(GROUP, &[]);
    let message = permission_denied(&run_ctl_as(&member, d.socket(), &["--json", "status"]));
    assert!(
        message.contains("(mode 0600, owner uid 0, group 4242)"),
        "{message}"
    );
}

#[test]
fn in_the_socket_group_but_not_allowed_browserd_refuses_and_browserctl_says_so() {
    if !root_or_skip("in_the_socket_group_but_not_allowed_browserd_refuses_and_browserctl_says_so")
    {
        return;
    }
    let d = daemon(&[("--socket-group", "4242")]);
    let member = nobody_with(NOBODY, &[GROUP]);
    let message = permission_denied(&run_ctl_as(&member, d.socket(), &["--json", "status"]));
    assert!(
        message.starts_with(
            "browserd refused uid 65534 (gid 65534, supplementary groups [4242]): it serves root"
        ),
        "{message}"
    );
    let output = run_ctl_as(&member, d.socket(), &["status"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("(permission_denied)"), "{stderr}");
    assert!(stderr.contains("browserd itself refused you"), "{stderr}");
}

#[test]
fn a_group_the_daemon_may_not_give_the_socket_keeps_it_from_starting() {
    if !root_or_skip("a_group_the_daemon_may_not_give_the_socket_keeps_it_from_starting") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.path().join("s.sock");
    let output = {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(browserd_tests::browserd_bin());
        command
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--socket-group", "4242"])
            .env_remove("BROWSERD_SOCKET")
            .uid(NOBODY)
            .gid(NOBODY);
        browserd_tests::command::output_within(&mut command, std::time::Duration::from_secs(10))
    };
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot give the socket") && stderr.contains("(--socket-group)"),
        "{stderr}"
    );
    assert!(!socket.exists(), "no socket is left behind");
}
