//! The daemon's shared context: the state every task reads and changes, and nothing that
//! runs. The loops that keep sessions moving live in `supervise`; the procedures that act on
//! sessions (launch, terminate, reload) take the context as an argument.

use crate::browser::Pipes;
use crate::config::Config;
use crate::dirs::Layout;
use crate::members::Members;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::pool::Pool;
use crate::reaper::Reaper;
use crate::registry::Registry;
use crate::reload::Invocation;
use crate::scanner::Scanner;
use crate::server::Server;
use crate::signals::Partner;
use crate::socket::SocketFile;
use crate::spawners::Spawners;
use crate::terminate::Terminator;
use crate::usage::UsageCache;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::Notify;

pub struct Context {
    pub config: Config,
    /// Where session dirs are made.
    pub layout: Layout,
    pub registry: Registry,
    /// The warm pool's target and tally (its browsers are in the registry).
    pub pool: Pool,
    pub reaper: Reaper,
    /// Which processes are each session's: its cgroup, or the process table.
    pub members: Members,
    pub scanner: Arc<Scanner>,
    /// The threads leaders are spawned from.
    pub spawners: Spawners,
    /// What sessions use, as last measured.
    pub usage: UsageCache,
    pub terminator: Terminator,
    /// The second thread a bulk kill's first signals go out from, where there is one.
    pub partner: Option<Partner>,
    pub server: Server,
    pub notifier: Notifier,
    pub metrics: Metrics,
    /// Browsers' stderr pipes, kept across a reload.
    pub pipes: Pipes,
    /// How the daemon was started: what a reload executes again.
    pub invocation: Invocation,
    pub socket_file: SocketFile,
    /// How many reloads this daemon has been through.
    pub reloads: u64,
    /// A reload is scheduled or under way.
    pub reload_pending: AtomicBool,
    /// Held while a reload request checks the new binary.
    pub reload_check: tokio::sync::Mutex<()>,
    /// When the daemon started, before any reload.
    pub started: Instant,
    pub started_wall: SystemTime,
    /// Woken when sessions may have become gone (a reap, an emptied cgroup, a sweep that
    /// found nothing alive).
    gone_check: Arc<Notify>,
}

/// What a context is made of.
pub struct Parts {
    pub config: Config,
    pub registry: Registry,
    pub notifier: Notifier,
    pub invocation: Invocation,
    pub socket_file: SocketFile,
    pub reloads: u64,
    pub started_wall: SystemTime,
}

impl Context {
    /// Builds the context; inside the runtime (it takes over the cgroup subtree, if there is
    /// one, and starts watching it).
    pub fn new(parts: Parts) -> Context {
        let layout = Layout::new(&parts.config.state_dir);
        if let Some(root) = layout.tmp_root() {
            tracing::info!(
                tmp = %root.display(),
                "the state dir's path is too long for Chromium's singleton socket; browser sessions get their TMPDIR under a shorter root"
            );
        }
        let up_for = SystemTime::now()
            .duration_since(parts.started_wall)
            .unwrap_or_default();
        let gone_check = Arc::new(Notify::new());
        let on_empty = gone_check.clone();
        let members = Members::new(parts.config.cgroup_root.as_deref(), move || {
            on_empty.notify_one()
        });
        let metrics = Metrics::default();
        metrics.set_reloads(parts.reloads);
        Context {
            metrics,
            pool: Pool::new(parts.config.warm),
            layout,
            config: parts.config,
            registry: parts.registry,
            reaper: Reaper::default(),
            members,
            scanner: Arc::new(Scanner::default()),
            spawners: Spawners::default(),
            usage: UsageCache::default(),
            terminator: Terminator::default(),
            partner: Partner::start(),
            server: Server::default(),
            notifier: parts.notifier,
            pipes: Pipes::default(),
            invocation: parts.invocation,
            socket_file: parts.socket_file,
            reloads: parts.reloads,
            reload_pending: AtomicBool::new(false),
            reload_check: tokio::sync::Mutex::new(()),
            started: Instant::now()
                .checked_sub(up_for)
                .unwrap_or_else(Instant::now),
            started_wall: parts.started_wall,
            gone_check,
        }
    }

    /// Asks the gone checker to look at the sessions whose leader is reaped.
    pub fn check_gone(&self) {
        self.gone_check.notify_one();
    }

    /// Waits until a gone check is asked for.
    pub async fn gone_check_asked(&self) {
        self.gone_check.notified().await;
    }
}
