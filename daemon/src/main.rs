//! browserd: a supervisor daemon for headless browser sessions. This file only wires the
//! modules together; each concern lives in its own module.

mod activation;
mod browser;
mod config;
mod context;
mod dirs;
mod error;
mod launch;
mod notify;
mod ops;
mod procs;
mod reaper;
mod registry;
mod scanner;
mod server;
mod shutdown;
mod signals;
mod spawn;
mod supervise;
mod terminate;
mod termination;

use clap::Parser;
use config::{Args, Config, LogFormat};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // A blocked mask inherited from whoever started us would hold back SIGTERM and SIGCHLD
    // for good (threads started later inherit it); start from none blocked.
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    spawn::reset_inherited_signals();
    // The service manager's variables are taken out of the environment first, while the
    // process has a single thread and before anything could pass them on.
    let activation = activation::Env::take();
    let notify = notify::Env::take();
    let config = match Config::load(Args::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("browserd: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let notifier = notify::Notifier::new(notify);
    let inherited = match activation::inherited(activation) {
        Ok(inherited) => inherited,
        Err(e) => {
            tracing::error!("socket activation: {e}");
            eprintln!("browserd: socket activation: {e}");
            notifier.status(&format!("failed: socket activation: {e}"));
            return ExitCode::from(2);
        }
    };
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
    match runtime.block_on(run(config, inherited, notifier.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("browserd: {e}");
            notifier.status(&format!("failed: {e}"));
            ExitCode::FAILURE
        }
    }
}

async fn run(
    mut config: Config,
    inherited: Option<activation::Inherited>,
    notifier: notify::Notifier,
) -> Result<(), String> {
    let signals =
        shutdown::Signals::install().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let (listener, socket_file) = server::listen(&mut config, inherited)?;
    let socket = config.socket.clone();
    let ctx = Arc::new(context::Context::new(config));
    supervise::start(&ctx).map_err(|e| format!("cannot watch for child exits: {e}"))?;
    notifier.ready(&ctx.registry.counts());
    tracing::info!(
        socket = %socket.display(),
        pid = std::process::id(),
        activated = socket_file.is_inherited(),
        "browserd ready"
    );
    tokio::spawn(notifier.clone().run(ctx.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(server::serve(ctx.clone(), listener, stop_rx));
    shutdown::run(ctx, signals, stop_tx, &notifier).await;
    let _ = server.await;
    socket_file.remove(&socket);
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
