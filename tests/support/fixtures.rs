//! Fake session trees, built from `sh`, `sleep`, `trap` and `setsid` only, shaped like what
//! browsers do to a supervisor: children, children that ignore SIGTERM, helpers that leave
//! the process group by double-forking into a new session, deep nesting.
//!
//! Each fixture also says what its finished tree looks like, so a test can wait until the
//! whole tree exists (every child exec'd into `sleep`, every `trap` applied) before it kills
//! anything; otherwise a kill could race a child that is not stubborn *yet*.

use crate::procfs::ProcInfo;
use browserd_proto::{Launch, SessionType, SESSION_ENV};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// The shell every fixture runs under.
pub const SH: &str = "/bin/sh";

/// `argv` started the way the daemon starts a session, without a daemon: the leader of a
/// new session and process group, `marker` in its environment as a session's id, its stdio
/// on /dev/null.
pub fn session_command(argv: &[String], marker: &str) -> Command {
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env(SESSION_ENV, marker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
    }
    command
}

/// A fake session tree and the shape it has once fully started.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: &'static str,
    pub session_type: SessionType,
    pub argv: Vec<String>,
    /// Live processes in the finished tree, leader included.
    pub processes: usize,
    /// Of those, how many have exec'd `sleep`.
    pub sleepers: usize,
    /// Of those, how many ignore SIGTERM.
    pub ignoring_term: usize,
    /// Of those, how many are in another session than the leader's (double-forked strays).
    pub strays: usize,
}

impl Fixture {
    fn sh(name: &'static str, script: &str) -> Fixture {
        Fixture {
            name,
            session_type: SessionType::Sandbox,
            argv: vec![SH.into(), "-c".into(), script.into(), name.into()],
            processes: 0,
            sleepers: 0,
            ignoring_term: 0,
            strays: 0,
        }
    }

    fn shape(
        mut self,
        processes: usize,
        sleepers: usize,
        ignoring_term: usize,
        strays: usize,
    ) -> Fixture {
        self.processes = processes;
        self.sleepers = sleepers;
        self.ignoring_term = ignoring_term;
        self.strays = strays;
        self
    }

    /// One process: the leader execs `sleep`.
    pub fn sleeper() -> Fixture {
        Fixture::sh("sleeper", "exec sleep 1000").shape(1, 1, 0, 0)
    }

    /// One process that ignores SIGTERM: only SIGKILL ends it.
    pub fn stubborn_sleeper() -> Fixture {
        Fixture::sh("stubborn-sleeper", "trap '' TERM; exec sleep 1000").shape(1, 1, 1, 0)
    }

    /// A leader `sh` waiting on two `sleep` children; all of them exit on SIGTERM.
    pub fn polite() -> Fixture {
        Fixture::sh("polite", "sleep 1000 & sleep 1000 & wait").shape(3, 2, 0, 0)
    }

    /// A polite leader whose two children ignore SIGTERM (the ignored disposition survives
    /// their `exec`).
    pub fn stubborn_children() -> Fixture {
        Fixture::sh(
            "stubborn-children",
            "(trap '' TERM; exec sleep 1000) & (trap '' TERM; exec sleep 1000) & wait",
        )
        .shape(3, 2, 2, 0)
    }

    /// A leader and two children that all ignore SIGTERM.
    pub fn stubborn() -> Fixture {
        Fixture::sh("stubborn", "trap '' TERM; sleep 1000 & sleep 1000 & wait").shape(3, 2, 3, 0)
    }

    /// A leader plus a grandchild that left via `setsid` after its parent exited, so it is
    /// in another session and process group and was reparented to the daemon (subreaper).
    /// Everything exits on SIGTERM.
    pub fn polite_stray() -> Fixture {
        Fixture::sh("polite-stray", "(setsid sleep 1000 &); exec sleep 1000").shape(2, 2, 0, 1)
    }

    /// Like [`Fixture::polite_stray`], but the stray ignores SIGTERM.
    pub fn stubborn_stray() -> Fixture {
        Fixture::sh(
            "stubborn-stray",
            "(trap '' TERM; setsid sleep 1000 &); exec sleep 1000",
        )
        .shape(2, 2, 1, 1)
    }

    /// Four levels of children below the leader, each a `sh` waiting on the next; the
    /// deepest execs `sleep`. The script passes itself down as `$2`.
    pub fn deep() -> Fixture {
        let script = r#"if [ "$1" -gt 0 ]; then /bin/sh -c "$2" deep "$(($1 - 1))" "$2" & wait; else exec sleep 1000; fi"#;
        let mut fixture = Fixture::sh("deep", script).shape(5, 1, 0, 0);
        fixture.argv.extend(["4".into(), script.into()]);
        fixture
    }

    /// A `browser` session with an explicit command, used as "the other session type" next
    /// to sandboxes. It ignores any arguments the daemon appends, writes a
    /// `DevToolsActivePort` file into a `--user-data-dir` if given and prints the line
    /// Chromium prints, then sleeps.
    pub fn fake_browser() -> Fixture {
        let script = r#"for a in "$@"; do case "$a" in --user-data-dir=*) d="${a#--user-data-dir=}"; mkdir -p "$d" && printf '9222\n/devtools/browser/fake\n' > "$d/DevToolsActivePort";; esac; done
echo 'DevTools listening on ws://127.0.0.1:9222/devtools/browser/fake' >&2
exec sleep 1000"#;
        let mut fixture = Fixture::sh("fake-browser", script).shape(1, 1, 0, 0);
        fixture.session_type = SessionType::Browser;
        fixture
    }

    /// How many live processes the finished tree has.
    pub fn expected_processes(&self) -> usize {
        self.processes
    }

    /// A launch request for this fixture; adjust its fields with struct update syntax.
    pub fn launch(&self) -> Launch {
        Launch {
            session_type: Some(self.session_type),
            command: Some(self.argv.clone()),
            ..Launch::default()
        }
    }

    /// Whether `procs` (the live marked processes of a session led by `leader`) are the
    /// finished tree.
    pub fn is_ready(&self, leader: i32, procs: &[ProcInfo]) -> bool {
        let count = |f: &dyn Fn(&ProcInfo) -> bool| procs.iter().filter(|p| f(p)).count();
        procs.len() == self.processes
            && count(&|p| p.comm == "sleep") == self.sleepers
            && count(&|p| p.ignores_term) == self.ignoring_term
            && count(&|p| p.pgid != leader) == self.strays
    }
}
