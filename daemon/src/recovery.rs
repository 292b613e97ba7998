//! Starting after a crash: what the journal says, checked against what is running.
//!
//! For each session the journal lists as live:
//! * its leader is provably the same process (same boot, same pid, same start time, checked
//!   after a pidfd pinned it): it is **adopted**: listed, killable with the whole contract,
//!   watched and signalled through that pidfd (it is no longer the daemon's child, so its
//!   exit status is unknown);
//! * otherwise its leader is gone, and so is the session: it is taken up only to terminate,
//!   with force, whatever processes it left (found by their `BROWSERD_SESSION` marker, and
//!   only ever signalled through identity-checked pidfds), then listed as exited, "lost
//!   while browserd was down".
//!
//! Warm browsers of the pool are never adopted: whatever is left of them is terminated (a
//! provably identical leader through its pidfd) and they are forgotten; the pool launches
//! new ones. With `--on-restart kill`, adopted sessions are terminated too. Exited sessions stay
//! listed for the rest of their retention. Every dir under the session dirs that no live
//! session owns is removed.

use crate::dirs::Layout;
use crate::journal::Replayed;
use crate::pidfd;
use crate::records::{boot_id, unix_ms, SessionRecord, Snapshot, StateRecord};
use browserd_proto::{EndReason, ExitStatus, SessionId};
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// What to do with sessions found running after a crash.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum OnRestart {
    /// Take them up again.
    #[default]
    Adopt,
    /// Terminate them with force.
    Kill,
}

/// The registry's starting point after recovery.
pub struct Recovered {
    pub snapshot: Snapshot,
    /// A pidfd for each adopted leader.
    pub adopted: HashMap<SessionId, Arc<OwnedFd>>,
    /// Sessions to terminate with force at once: what gone leaders left behind, and with
    /// `--on-restart kill` every adopted session.
    pub terminate: Vec<SessionId>,
    /// One line for the log.
    pub summary: String,
}

/// Decides, for every session the journal lists, whether it is still there.
pub fn recover(replayed: Replayed, on_restart: OnRestart) -> Recovered {
    let boot = boot_id();
    let mut snapshot = replayed.snapshot;
    let mut adopted = HashMap::new();
    let mut terminate = Vec::new();
    let (mut kept, mut lost, mut exited, mut warm) = (0, 0, 0, 0);
    for record in &mut snapshot.sessions {
        if !record.state.is_live() {
            exited += 1;
            continue;
        }
        let proven =
            (!boot.is_empty() && record.leader.boot_id == boot && record.leader.exit.is_none())
                .then(|| pidfd::open_proven(record.leader.pid, record.leader.start_time))
                .flatten();
        // A termination in flight was asked for by a request that died with the daemon.
        if matches!(record.state, StateRecord::Terminating { .. }) {
            record.state = StateRecord::Running;
        }
        record.leader.adopted = true;
        if record.warm {
            // A warm browser is no session anyone waits for: whatever is left of it goes,
            // and the pool launches new ones.
            warm += 1;
            if let Some(pidfd) = proven {
                adopted.insert(record.id.clone(), Arc::new(pidfd));
                terminate.push(record.id.clone());
            } else if record.leader.boot_id == boot {
                record.leader.exit = Some(record.leader.exit.unwrap_or(ExitStatus::Unknown));
                terminate.push(record.id.clone());
            } else {
                end_lost(record);
            }
            continue;
        }
        match proven {
            Some(pidfd) => {
                kept += 1;
                adopted.insert(record.id.clone(), Arc::new(pidfd));
                if on_restart == OnRestart::Kill {
                    terminate.push(record.id.clone());
                }
            }
            None if record.leader.boot_id != boot => {
                // Another boot: nothing of it can be running.
                lost += 1;
                end_lost(record);
            }
            None => {
                lost += 1;
                record.leader.exit = Some(record.leader.exit.unwrap_or(ExitStatus::Unknown));
                terminate.push(record.id.clone());
            }
        }
    }
    // A warm browser that cannot be running any more is forgotten at once.
    snapshot
        .sessions
        .retain(|record| !record.warm || record.state.is_live());
    let summary = format!(
        "journal: {kept} session(s) adopted, {lost} lost while browserd was down, {exited} recently exited, {warm} warm browser(s) of the pool to terminate{}",
        match on_restart {
            OnRestart::Kill if kept > 0 => " (--on-restart kill: terminating the adopted ones)",
            _ => "",
        }
    );
    Recovered {
        snapshot,
        adopted,
        terminate,
        summary,
    }
}

/// Lists a session whose leader cannot be running any more as exited.
fn end_lost(record: &mut SessionRecord) {
    record.state = StateRecord::Exited {
        exit: record.leader.exit.unwrap_or(ExitStatus::Unknown),
        ended_at_ms: unix_ms(SystemTime::now()),
        reason: EndReason::Lost,
    };
}

/// Removes every session dir (and session TMPDIR) that no live session owns: left by
/// sessions that ended while the daemon was down, or by a journal that was lost. Blocking.
pub fn sweep_dirs(layout: &Layout, snapshot: &Snapshot) -> usize {
    let owned: HashSet<PathBuf> = snapshot
        .sessions
        .iter()
        .filter(|r| r.state.is_live())
        .flat_map(|r| r.dirs.iter().cloned())
        .collect();
    let roots = std::iter::once(layout.sessions()).chain(layout.tmp_root());
    let mut swept = 0;
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !owned.contains(&path) {
                crate::dirs::remove_dir(&path);
                swept += 1;
            }
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::LeaderRecord;
    use browserd_proto::{SessionType, Workspace};

    fn record(id: &str, pid: i32, start_time: u64, boot: &str) -> SessionRecord {
        SessionRecord {
            id: id.parse().unwrap(),
            tracking_id: None,
            session_type: SessionType::Sandbox,
            workspace: Workspace::default(),
            command: vec!["sleep".into()],
            leader: LeaderRecord {
                pid,
                start_time,
                boot_id: boot.into(),
                adopted: false,
                exit: None,
            },
            started_at_ms: 1,
            expires_at_ms: None,
            leases: Vec::new(),
            dirs: Vec::new(),
            browser: None,
            cgroup: None,
            warm: false,
            state: StateRecord::Running,
        }
    }

    fn replayed(records: Vec<SessionRecord>) -> Replayed {
        Replayed {
            snapshot: Snapshot {
                nonce: 1,
                next_session: 10,
                next_lease: 10,
                sessions: records,
            },
            found: true,
            problem: None,
        }
    }

    /// A live process to stand for a leader: the child, its pid and its start time.
    fn live_leader() -> (std::process::Child, i32, u64) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let start = crate::procs::read_stat(pid).unwrap().start_time;
        (child, pid, start)
    }

    #[test]
    fn only_a_provably_identical_leader_is_adopted() {
        let (mut child, pid, start) = live_leader();
        let boot = boot_id();
        let recovered = recover(
            replayed(vec![
                record("s-1", pid, start, &boot),
                record("s-2", pid, start + 1, &boot),
                record("s-3", pid, start, "another-boot"),
            ]),
            OnRestart::Adopt,
        );
        assert_eq!(recovered.adopted.len(), 1);
        assert!(recovered.adopted.contains_key("s-1"));
        assert_eq!(
            recovered.terminate,
            vec!["s-2".parse::<SessionId>().unwrap()]
        );
        let s3 = &recovered.snapshot.sessions[2];
        assert!(matches!(
            s3.state,
            StateRecord::Exited {
                reason: EndReason::Lost,
                exit: ExitStatus::Unknown,
                ..
            }
        ));
        let killed = recover(
            replayed(vec![record("s-1", pid, start, &boot)]),
            OnRestart::Kill,
        );
        assert_eq!(killed.terminate.len(), 1, "kill terminates the adopted too");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn warm_browsers_are_terminated_never_adopted() {
        let (mut child, pid, start) = live_leader();
        let boot = boot_id();
        let warm = |id: &str, boot: &str| SessionRecord {
            warm: true,
            ..record(id, pid, start, boot)
        };
        let recovered = recover(
            replayed(vec![warm("w-1", &boot), warm("w-2", "another-boot")]),
            OnRestart::Adopt,
        );
        assert_eq!(
            recovered.terminate,
            vec!["w-1".parse::<SessionId>().unwrap()],
            "an alive warm browser is terminated"
        );
        assert!(recovered.adopted.contains_key("w-1"), "through its pidfd");
        assert_eq!(
            recovered.snapshot.sessions.len(),
            1,
            "a warm browser of another boot is forgotten"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn dirs_no_live_session_owns_are_swept() {
        let state = tempfile::tempdir().unwrap();
        let layout = Layout::new(state.path());
        let live = layout.create("live-1").unwrap();
        let dead = layout.create("dead-1").unwrap();
        let mut owner = record("live-1", 1, 1, "b");
        owner.dirs = live.owned();
        let snapshot = Snapshot {
            sessions: vec![owner],
            ..Snapshot::default()
        };
        assert_eq!(sweep_dirs(&layout, &snapshot), 1);
        assert!(live.root.exists() && !dead.root.exists());
    }
}
