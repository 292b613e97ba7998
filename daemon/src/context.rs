//! The daemon's shared context: the state every task reads and changes, and nothing that
//! runs. The loops that keep sessions moving live in `supervise`; the procedures that act on
//! sessions (launch, terminate) take the context as an argument.

use crate::config::Config;
use crate::dirs::Layout;
use crate::reaper::Reaper;
use crate::registry::{Limits, Registry};
use crate::scanner::Scanner;
use crate::terminate::Terminator;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;

pub struct Context {
    pub config: Config,
    /// Where session dirs are made.
    pub layout: Layout,
    pub registry: Registry,
    pub reaper: Reaper,
    pub scanner: Arc<Scanner>,
    pub terminator: Terminator,
    pub started: Instant,
    /// Woken when sessions may have become gone (a reap, a sweep that found nothing alive).
    gone_check: Notify,
}

impl Context {
    pub fn new(config: Config) -> Context {
        let limits = Limits {
            max_sessions: config.max_sessions,
            keep_exited: config.keep_exited,
            keep_exited_for: config.keep_exited_for.0,
        };
        let layout = Layout::new(&config.state_dir);
        if let Some(root) = layout.tmp_root() {
            tracing::info!(
                tmp = %root.display(),
                "the state dir's path is too long for Chromium's singleton socket; browser sessions get their TMPDIR under a shorter root"
            );
        }
        Context {
            layout,
            registry: Registry::new(limits),
            config,
            reaper: Reaper::default(),
            scanner: Arc::new(Scanner::default()),
            terminator: Terminator::default(),
            started: Instant::now(),
            gone_check: Notify::new(),
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
