//! browserd: a supervisor daemon for headless browser sessions. This file only wires the
//! modules together; each concern lives in its own module.

mod browser;
mod config;
mod daemon;
mod error;
mod expiry;
mod launch;
mod ops;
mod procs;
mod reaper;
mod registry;
mod scanner;
mod server;
mod shutdown;
mod signals;
mod spawn;
mod terminate;

use clap::Parser;
use config::{Args, Config, LogFormat};
use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = match Config::load(Args::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("browserd: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    if let Err(e) = reaper::become_subreaper() {
        tracing::warn!("cannot become a child subreaper ({e}); strays that outlive their parents will escape to init");
    }
    raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("browserd: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    let signals =
        shutdown::Signals::install().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let mut listener = server::bind(&config)?;
    interprocess::local_socket::traits::tokio::Listener::do_not_reclaim_name_on_drop(&mut listener);
    let socket = config.socket.clone();
    let inode = std::fs::metadata(&socket).ok().map(|m| m.ino());
    let daemon = Arc::new(daemon::Daemon::new(config));
    daemon
        .start()
        .map_err(|e| format!("cannot watch for child exits: {e}"))?;
    tracing::info!(socket = %socket.display(), pid = std::process::id(), "browserd ready");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(server::serve(daemon.clone(), listener, stop_rx));
    shutdown::run(daemon, signals, stop_tx).await;
    let _ = server.await;
    server::remove_socket(&socket, inode);
    tracing::info!("browserd stopped");
    Ok(())
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Each session costs the daemon a few descriptors at peak (pidfds, pipes); the soft limit
/// is often 1024, so take what the hard limit allows.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
