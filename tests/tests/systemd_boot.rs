//! browserd under a real systemd, booted as PID 1 of a throwaway container
//! (`systemd-nspawn --volatile=yes` over this machine's own /usr, the checkout bound
//! read-only): the shipped unit starts it (Type=notify), delegates it a cgroup it puts each
//! session in, `systemctl reload` re-executes it without losing a session, and `systemctl
//! stop` leaves nothing. Needs root and systemd-nspawn (`scripts/deps --test` installs
//! Debian's systemd-container); skips, saying why, where either is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long the container's systemd may take to boot.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// A booted container, stopped (and its PID 1 killed) when dropped.
struct Booted {
    nspawn: Child,
    leader: i32,
    name: String,
}

impl Booted {
    fn boot(checkout: &Path) -> Result<Booted, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("booting a container needs root".into());
        }
        if Command::new("systemd-nspawn")
            .arg("--version")
            .output()
            .is_err()
        {
            return Err("systemd-nspawn is not installed (Debian's systemd-container)".into());
        }
        let name = format!("browserd-test-{}", std::process::id());
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--volatile=yes",
                "-D",
                "/",
            ])
            .arg(format!("--machine={name}"))
            .arg(format!("--bind-ro={}:/opt/checkout", checkout.display()))
            .args(["-b", "--", "systemd.firstboot=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run systemd-nspawn: {e}"))?;
        let mut booted = Booted {
            leader: 0,
            nspawn,
            name,
        };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = booted.nspawn.try_wait() {
                return Err(format!(
                    "systemd-nspawn exited at boot ({status}): containers cannot run here"
                ));
            }
            if booted.leader == 0 {
                booted.leader = child_of(booted.nspawn.id() as i32).unwrap_or(0);
            } else {
                let state = booted.run(&["systemctl", "is-system-running"]);
                let state = String::from_utf8_lossy(&state.stdout);
                if matches!(state.trim(), "running" | "degraded") {
                    return Ok(booted);
                }
            }
            if start.elapsed() > BOOT_TIMEOUT {
                return Err(format!(
                    "the container's systemd did not boot within {BOOT_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a command inside the container.
    fn run(&self, argv: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a"])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    /// Runs `sh -c script` inside and expects it to succeed; returns its stdout.
    #[track_caller]
    fn sh(&self, script: &str) -> String {
        let out = self.run(&["sh", "-c", script]);
        assert!(
            out.status.success(),
            "in the container, `{script}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        if self.leader > 0 {
            let _ = self.run(&["systemctl", "poweroff"]);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = self.nspawn.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        eprintln!("container {} did not power off; killing it", self.name);
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// The first child of `pid` (the container's PID 1, as this machine sees it).
fn child_of(pid: i32) -> Option<i32> {
    let children = std::fs::read_dir("/proc").ok()?;
    children.flatten().find_map(|entry| {
        let child: i32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
        let ppid: i32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == pid).then_some(child)
    })
}

fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

#[test]
fn the_shipped_unit_runs_reloads_contains_and_stops_browserd_under_a_real_systemd() {
    let checkout = checkout();
    let bins = browserd_tests::browserd_bin()
        .parent()
        .expect("the binaries' dir")
        .strip_prefix(&checkout)
        .map(|dir| Path::new("/opt/checkout").join(dir))
        .expect("the binaries are inside the checkout");
    let booted = match Booted::boot(&checkout) {
        Ok(booted) => booted,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    // The shipped unit, with the binaries of this build for the install paths.
    booted.sh(&format!(
        "systemd-sysusers /opt/checkout/systemd/browserd.sysusers && \
         sed 's#/usr/local/bin/#{}/#g' /opt/checkout/systemd/browserd.service \
           > /etc/systemd/system/browserd.service && \
         systemctl daemon-reload && systemctl start browserd",
        bins.display()
    ));
    let ctl = format!(
        "{}/browserctl --socket /run/browserd/browserd.sock",
        bins.display()
    );
    let status = booted.sh(&format!("{ctl} status"));
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("containment") && l.contains(" cgroup in /sys/fs/cgroup")),
        "systemd delegates the service's cgroup (Delegate=yes): {status}"
    );
    let main_pid = booted.sh("systemctl show -p MainPID --value browserd");
    let launched = booted.sh(&format!(
        "{ctl} --json launch --type sandbox --tracking-id t -- sh -c '(setsid sleep 600 &); exec sleep 600'"
    ));
    let session: serde_json::Value = serde_json::from_str(&launched).expect("a JSON launch result");
    let id = session["session"]["id"]
        .as_str()
        .expect("a session id")
        .to_owned();
    // Every process of the session, its setsid stray included, is in the session's cgroup.
    let tree = booted.sh(&format!(
        "sleep 0.3; cat /sys/fs/cgroup/unified/system.slice/browserd.service/{id}/cgroup.procs \
         || cat /sys/fs/cgroup/system.slice/browserd.service/{id}/cgroup.procs"
    ));
    assert_eq!(
        tree.lines().count(),
        2,
        "leader and stray in the session's cgroup: {tree}"
    );
    // Reload: same main pid, the session still there.
    booted.sh("systemctl reload browserd");
    assert_eq!(
        booted.sh("systemctl show -p MainPID --value browserd"),
        main_pid
    );
    let after = booted.sh(&format!("{ctl} --json status"));
    assert!(after.contains("\"reloads\":1"), "{after}");
    let listed = booted.sh(&format!("{ctl} ls --state running"));
    assert!(listed.contains(&id), "{listed}");
    // Stop: every session terminated, the unit's cgroup gone.
    booted.sh("systemctl stop browserd");
    let left = booted.sh("pgrep -c -x sleep || true");
    assert_eq!(left.trim(), "0", "processes left after systemctl stop");
}
