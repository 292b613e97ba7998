//! Sending signals: the only module that does. A signal goes either to a process group whose
//! leader the daemon has not reaped yet (the unreaped leader pins the pgid, so it cannot have
//! been reused), or to one process through a pidfd that was identity-checked against the
//! scan that found it. Nothing else is ever signalled: never pid or pgid 0 or 1, never the
//! daemon itself or its own group.

use crate::pidfd;
use crate::procs::{self, ProcInfo};
use nix::sys::signal::Signal;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

/// Whether a pid or pgid may be signalled at all.
fn is_signallable(id: i32) -> bool {
    let me = std::process::id() as i32;
    let my_group = nix::unistd::getpgrp().as_raw();
    id > 1 && id != me && id != my_group
}

/// Signals a whole process group. The caller must hold the reap lock and know the group's
/// leader is unreaped.
pub fn kill_group(pgid: i32, signal: Signal) -> io::Result<()> {
    if !is_signallable(pgid) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Signals one process found by a scan, if it is still that process. Returns whether the
/// signal was delivered (false: it is gone, or its pid now names another process).
pub fn kill_process(process: &ProcInfo, signal: Signal) -> io::Result<bool> {
    if !is_signallable(process.pid) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refusing to signal pid {}", process.pid),
        ));
    }
    let pidfd = match pidfd::open(process.pid) {
        Ok(fd) => Some(fd),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => None,
        Err(e) => return Err(e),
    };
    // The pidfd now pins the process; if the pid still has the scanned start time, the
    // pidfd refers to the process the scan attributed, not to a newcomer reusing its pid.
    match procs::read_stat(process.pid) {
        Some(now) if now.start_time == process.start_time => {}
        _ => return Ok(false),
    }
    let sent = match &pidfd {
        Some(fd) => pidfd_send_signal(fd, signal),
        // Kernels before 5.3: the identity check above narrows the race to microseconds.
        None => nix::sys::signal::kill(nix::unistd::Pid::from_raw(process.pid), signal)
            .map_err(io::Error::from),
    };
    match sent {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Signals an adopted leader through the pidfd opened when its identity was proven (a pidfd
/// names one process for good, whatever happens to its pid). Returns whether it was
/// delivered (false: the process is gone).
pub fn kill_pidfd(pidfd: &OwnedFd, signal: Signal) -> io::Result<bool> {
    match pidfd_send_signal(pidfd, signal) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

fn pidfd_send_signal(pidfd: &OwnedFd, signal: Signal) -> io::Result<()> {
    // SAFETY: a valid pidfd, a valid signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as i32,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The fewest groups a burst hands half of to the partner: below, the hand-off (a thread
/// wake-up each way) costs about what it saves.
const PARTNER_MIN: usize = 32;

/// A second thread that sends half of a burst of group signals on another core, at the same
/// time as the caller. It runs at the lowest real-time priority (as a [`burst`] does), so no
/// process woken by the signals preempts it; it sleeps between bursts. `killpg` costs the
/// kernel about 10 µs (waking the group's processes), most of a bulk kill's first signals:
/// with two cores sending, 1000 go out in about 10 ms rather than 13.
pub struct Partner {
    jobs: mpsc::Sender<PartnerJob>,
}

struct PartnerJob {
    groups: Vec<i32>,
    signal: Signal,
    done: mpsc::SyncSender<Vec<io::Result<u64>>>,
}

impl Partner {
    /// Starts the partner where there is a second core and real-time priority is allowed
    /// (root, `CAP_SYS_NICE`, or `RLIMIT_RTPRIO` ≥ 1); `None` otherwise: every signal is then
    /// sent by the caller. At normal priority the partner would wait behind the very
    /// processes the signals wake.
    pub fn start() -> Option<Partner> {
        if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
            return None;
        }
        let (jobs, inbox) = mpsc::channel::<PartnerJob>();
        let (ready, raised) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let policy = set_policy(libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, 1);
                let up = policy.is_ok();
                let _ = ready.send(policy);
                if !up {
                    return;
                }
                while let Ok(job) = inbox.recv() {
                    let _ = job.done.send(send_each(&job.groups, job.signal));
                }
            });
        if let Err(e) = spawned {
            tracing::info!("bulk kills send every first signal from one thread (no second: {e})");
            return None;
        }
        match raised.recv() {
            Ok(Ok(())) => Some(Partner { jobs }),
            Ok(Err(e)) => {
                tracing::info!(
                    "bulk kills send every first signal from one thread (real-time priority \
                     refused to a second: {e})"
                );
                None
            }
            Err(_) => None,
        }
    }

    /// Hands `groups` to the partner, returning where its answer comes; where it is gone,
    /// gives them back.
    fn hand(
        &self,
        groups: Vec<i32>,
        signal: Signal,
    ) -> Result<mpsc::Receiver<Vec<io::Result<u64>>>, Vec<i32>> {
        let (done, answer) = mpsc::sync_channel(1);
        match self.jobs.send(PartnerJob {
            groups,
            signal,
            done,
        }) {
            Ok(()) => Ok(answer),
            Err(mpsc::SendError(job)) => Err(job.groups),
        }
    }
}

/// Signals each group in `groups` (as [`kill_group`]: the caller holds the reap lock, every
/// leader is unreaped); with a partner and enough groups, the second half from the partner
/// at the same time. Returns, for each group in order, the boot tick (`/proc` start-time
/// units) read right after its signal went out, or why it could not be sent.
pub fn kill_groups(
    partner: Option<&Partner>,
    groups: &[i32],
    signal: Signal,
) -> Vec<io::Result<u64>> {
    let Some(partner) = partner.filter(|_| groups.len() >= PARTNER_MIN) else {
        return send_each(groups, signal);
    };
    let (mine, theirs) = groups.split_at(groups.len() / 2);
    let pending = partner.hand(theirs.to_vec(), signal);
    let mut sent = send_each(mine, signal);
    match pending {
        // The partner answers for every group it was handed. Without an answer it is gone
        // (it cannot panic: sending returns errors, never unwinds), and the half is sent
        // from here.
        Ok(answer) => match answer.recv() {
            Ok(theirs_sent) => sent.extend(theirs_sent),
            Err(_) => sent.extend(send_each(theirs, signal)),
        },
        Err(theirs) => sent.extend(send_each(&theirs, signal)),
    }
    sent
}

fn send_each(groups: &[i32], signal: Signal) -> Vec<io::Result<u64>> {
    groups
        .iter()
        .map(|&pgid| kill_group_at(pgid, signal))
        .collect()
}

/// [`kill_group`], then the boot tick (`/proc` start-time units) read right after the
/// signal went out: every process of the group started before it got the signal.
pub fn kill_group_at(pgid: i32, signal: Signal) -> io::Result<u64> {
    kill_group(pgid, signal).map(|()| procs::boot_ticks())
}

/// Whether raising the sending thread was refused once (then never tried again).
static BURST_REFUSED: AtomicBool = AtomicBool::new(false);

/// A burst of signals at real-time priority (see [`burst`]); back to normal when dropped.
pub struct Burst {
    raised: bool,
}

/// Runs the calling thread at the lowest real-time priority (`SCHED_FIFO` 1, reset on fork)
/// until the guard is dropped, where the daemon may (root, `CAP_SYS_NICE`, or
/// `RLIMIT_RTPRIO` ≥ 1: the unit sets `LimitRTPRIO=1`), and only if it runs under the normal
/// policy. Each `killpg` wakes a session's processes; at normal priority they preempt the
/// sender, so on a machine with few cores a burst of N first signals is spread over the
/// time N sessions take to exit (tens of milliseconds at N = 300 on 2 cores). At real-time
/// priority no wakeup preempts the sender, and every first signal is out before any session
/// runs. A burst is N syscalls long; where it is not allowed, signals go out as before.
pub fn burst() -> Burst {
    // SAFETY: queries the calling thread's policy; no pointers.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy != libc::SCHED_OTHER || BURST_REFUSED.load(Ordering::Relaxed) {
        return Burst { raised: false };
    }
    let raised = set_policy(libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, 1);
    if let Err(e) = &raised {
        BURST_REFUSED.store(true, Ordering::Relaxed);
        tracing::info!(
            "bulk kills send their first signals at normal priority (real-time priority 1 \
             refused: {e}; allow it with LimitRTPRIO=1 or CAP_SYS_NICE)"
        );
    }
    Burst {
        raised: raised.is_ok(),
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        if self.raised {
            if let Err(e) = set_policy(libc::SCHED_OTHER, 0) {
                tracing::error!("cannot return to normal priority after a burst of signals: {e}");
            }
        }
    }
}

/// Whether a spawner thread was refused real-time priority already (said once in the log).
static SPAWNER_REFUSED: AtomicBool = AtomicBool::new(false);

/// Runs the calling thread, a spawner (it starts sessions' leaders), at the lowest real-time
/// priority (`SCHED_FIFO` 1, reset on fork: the leaders it starts run under the normal
/// policy, a negative nice value reset to 0), where the daemon may (as for a burst). A
/// spawn is a `vfork`: the thread sleeps until its child has `exec`ed the session's program,
/// and is woken then on the child's core. At normal priority the child, now the program,
/// keeps that core until its time slice is used up (its whole start-up, half a millisecond
/// or more), and the launch is answered only after it; at real-time priority the thread
/// takes the core back at once. A spawner runs only for a spawn and its registration, and
/// sleeps otherwise. Where it is refused, the thread stays as it is.
pub fn spawner_thread() {
    if let Err(e) = set_policy(libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, 1) {
        if !SPAWNER_REFUSED.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "leaders are spawned at normal priority (real-time priority 1 refused: {e}; \
                 allow it with LimitRTPRIO=1 or CAP_SYS_NICE)"
            );
        }
    }
}

/// Runs the calling thread, one of the daemon's helpers (the journal's writer and syncer,
/// the cgroup watcher), under `SCHED_BATCH`: the same priority and share of the CPU as
/// before, but waking it does not preempt the thread that woke it. When the event loop
/// hands a helper work (a journal record for each session a bulk kill ends), the loop goes
/// on, and the helper takes what has piled up when it runs, on another core or once the
/// loop waits, instead of taking the loop's core back and forth once per record. A child
/// would inherit the policy (`SCHED_RESET_ON_FORK` resets only real-time ones), so only
/// threads that never start a process are helpers: not the spawners, not the blocking pool
/// (which spawns where no spawner thread could be started). Where it is refused, the thread
/// stays as it is.
pub fn helper_thread() {
    if let Err(e) = set_policy(libc::SCHED_BATCH, 0) {
        tracing::debug!("a helper thread keeps the normal policy (SCHED_BATCH refused: {e})");
    }
}

/// Sets the calling thread's scheduling policy (the nice value is kept).
fn set_policy(policy: i32, priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_init_zero_and_itself() {
        for id in [
            0,
            1,
            -5,
            std::process::id() as i32,
            nix::unistd::getpgrp().as_raw(),
        ] {
            assert!(kill_group(id, Signal::SIGTERM).is_err(), "{id}");
        }
    }

    #[test]
    fn kills_a_scanned_process_but_not_a_stale_identity() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let info = procs::read_stat(pid).unwrap();
        let stale = ProcInfo {
            start_time: info.start_time + 1,
            ..info
        };
        assert!(!kill_process(&stale, Signal::SIGKILL).unwrap());
        assert!(procs::read_stat(pid).is_some_and(|p| !p.is_zombie()));
        assert!(kill_process(&info, Signal::SIGKILL).unwrap());
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(!kill_process(&info, Signal::SIGKILL).unwrap());
    }

    /// A process's (or thread's) scheduling policy and nice value (fields 41 and 19 of its
    /// stat).
    fn scheduling_of(pid: i32) -> Option<(i32, i32)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
        Some((fields.get(38)?.parse().ok()?, fields.get(16)?.parse().ok()?))
    }

    fn policy_of(pid: i32) -> Option<i32> {
        scheduling_of(pid).map(|(policy, _)| policy)
    }

    /// The scheduling policy and nice value of a child the calling thread starts (with
    /// `posix_spawn`, a `vfork`, as the daemon starts leaders); the child is killed and
    /// reaped before this returns.
    fn a_childs_scheduling() -> Option<(i32, i32)> {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let scheduling = scheduling_of(child.id() as i32);
        child.kill().unwrap();
        child.wait().unwrap();
        scheduling
    }

    #[test]
    fn a_burst_runs_at_real_time_priority_and_returns_to_normal_and_children_never_inherit_it() {
        std::thread::spawn(|| {
            // SAFETY: queries the calling thread's policy.
            let policy = || unsafe { libc::sched_getscheduler(0) };
            assert_eq!(policy(), libc::SCHED_OTHER);
            let burst = burst();
            if !burst.raised {
                eprintln!("real-time priority refused here: the burst runs at normal priority");
                assert_eq!(policy(), libc::SCHED_OTHER);
                return;
            }
            assert_eq!(policy() & !libc::SCHED_RESET_ON_FORK, libc::SCHED_FIFO);
            let child_policy = a_childs_scheduling().map(|(policy, _)| policy);
            assert_eq!(child_policy, Some(libc::SCHED_OTHER), "reset on fork");
            drop(burst);
            assert_eq!(policy(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_spawner_thread_runs_at_real_time_priority_and_its_children_under_the_normal_policy() {
        std::thread::spawn(|| {
            // SAFETY: queries the calling thread's policy.
            let policy = || unsafe { libc::sched_getscheduler(0) };
            assert_eq!(policy(), libc::SCHED_OTHER);
            spawner_thread();
            if policy() == libc::SCHED_OTHER {
                eprintln!("real-time priority refused here: the spawner keeps the normal policy");
                return;
            }
            assert_eq!(policy() & !libc::SCHED_RESET_ON_FORK, libc::SCHED_FIFO);
            assert_eq!(
                a_childs_scheduling(),
                Some((libc::SCHED_OTHER, 0)),
                "reset on fork"
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_helper_thread_runs_as_a_batch_thread() {
        std::thread::spawn(|| {
            // SAFETY: queries the calling thread's policy.
            let policy = || unsafe { libc::sched_getscheduler(0) };
            assert_eq!(policy(), libc::SCHED_OTHER);
            helper_thread();
            assert_eq!(policy(), libc::SCHED_BATCH);
        })
        .join()
        .unwrap();
    }

    /// Children, each the leader of its own process group; killed and reaped when dropped,
    /// whatever a test asserted.
    struct Groups(Vec<std::process::Child>);

    impl Groups {
        fn start(count: usize) -> Groups {
            use std::os::unix::process::CommandExt;
            Groups(
                (0..count)
                    .map(|_| {
                        std::process::Command::new("sleep")
                            .arg("30")
                            .process_group(0)
                            .spawn()
                            .unwrap()
                    })
                    .collect(),
            )
        }

        fn pgids(&self) -> Vec<i32> {
            self.0.iter().map(|c| c.id() as i32).collect()
        }
    }

    impl Drop for Groups {
        fn drop(&mut self) {
            for child in &mut self.0 {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Every group gets the signal once, each answer in its group's place, whether the
    /// partner sends half of them or not, and each tick is read after its signal.
    #[test]
    fn a_burst_split_with_the_partner_signals_every_group_and_answers_in_order() {
        let partner = Partner::start();
        if partner.is_none() {
            eprintln!("no partner here (one core, or real-time priority refused): one sender");
        }
        for count in [PARTNER_MIN - 1, PARTNER_MIN, 3 * PARTNER_MIN + 1] {
            let mut groups = Groups::start(count);
            let mut pgids = groups.pgids();
            // Refused ones among them, in both halves: their errors stay in their places.
            let refused = [0, 1, std::process::id() as i32];
            pgids.insert(1, refused[0]);
            pgids.insert(pgids.len() / 2 + 1, refused[1]);
            pgids.push(refused[2]);
            let before = procs::boot_ticks();
            let sent = kill_groups(partner.as_ref(), &pgids, Signal::SIGTERM);
            let after = procs::boot_ticks();
            assert_eq!(sent.len(), pgids.len());
            for (pgid, sent) in pgids.iter().zip(&sent) {
                match sent {
                    Ok(at) => {
                        assert!(!refused.contains(pgid), "{pgid} signalled");
                        assert!((before..=after).contains(at), "{pgid}: tick {at}");
                    }
                    Err(e) => assert!(refused.contains(pgid), "{pgid}: {e}"),
                }
            }
            for child in &mut groups.0 {
                let status = child.wait().unwrap();
                assert_eq!(
                    std::os::unix::process::ExitStatusExt::signal(&status),
                    Some(libc::SIGTERM),
                    "{count} groups"
                );
            }
        }
    }

    #[test]
    fn the_partner_runs_at_real_time_priority_and_sleeps_between_bursts() {
        let Some(partner) = Partner::start() else {
            eprintln!("no partner here (one core, or real-time priority refused)");
            return;
        };
        let me = std::process::id();
        let partner_thread = std::fs::read_dir(format!("/proc/{me}/task"))
            .unwrap()
            .flatten()
            .filter_map(|t| t.file_name().to_str()?.parse::<i32>().ok())
            .find(|tid| {
                std::fs::read_to_string(format!("/proc/{me}/task/{tid}/comm"))
                    .is_ok_and(|c| c.trim() == "signals")
            })
            .expect("the partner's thread");
        let state = procs::read_stat(partner_thread).map(|p| p.state);
        assert_eq!(state, Some(b'S'), "asleep between bursts");
        assert_eq!(policy_of(partner_thread), Some(libc::SCHED_FIFO));
        drop(partner);
    }
}
