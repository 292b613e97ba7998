//! browserd: a supervisor daemon for headless browser sessions. This file only wires the
//! modules together; each concern lives in its own module.

mod activation;
mod browser;
mod caller;
mod cgroup;
mod config;
mod context;
mod dirs;
mod error;
mod events;
mod http;
mod journal;
mod launch;
mod members;
mod metrics;
mod notify;
mod ops;
mod pidfd;
mod pool;
mod pressure;
mod procs;
mod reaper;
mod records;
mod recovery;
mod registry;
mod reload;
mod scanner;
mod server;
mod shutdown;
mod signals;
mod socket;
mod spawn;
mod spawn_cgroup;
mod spawners;
mod startup;
mod supervise;
mod terminate;
mod termination;
mod usage;
mod watch;

use clap::Parser;
use config::{Args, Config, LogFormat};
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // An earlier image of this daemon may have re-executed it: its handover is read first,
    // while the process has a single thread (it is named in the environment).
    let handover = reload::take();
    if handover.is_none() {
        // A blocked mask inherited from whoever started us would hold back SIGTERM and
        // SIGCHLD for good (threads started later inherit it); start from none blocked. After
        // a reload the signals the earlier image blocked stay blocked until the handlers are
        // in place.
        let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    }
    spawn::reset_inherited_signals();
    // The service manager's variables are taken out of the environment first, while the
    // process has a single thread and before anything could pass them on.
    let activation = activation::Env::take();
    let notify = notify::Env::take();
    let args = Args::parse();
    if args.check_config {
        return check_config(args);
    }
    let (handover, handover_error) = match handover {
        Some(Ok(taken)) => (Some(taken), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let config = match (Config::load(args), &handover) {
        (Ok(config), _) => config,
        (Err(e), Some(taken)) => {
            eprintln!("browserd: the config is not usable after the reload ({e}); keeping the one in use before it");
            taken.config.clone()
        }
        (Err(e), None) => {
            eprintln!("browserd: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    // Read before anything is bound, so a bad token file is refused like a bad flag. After
    // a reload the daemon serves on without HTTP instead (see `http::open`).
    let http_token = config
        .http_token_file
        .as_deref()
        .map(http::Token::load)
        .transpose();
    if let (Err(e), None) = (&http_token, &handover) {
        eprintln!("browserd: {e}");
        return ExitCode::from(2);
    }
    if let Some(e) = handover_error {
        tracing::error!("reload: {e}; recovering from the journal instead");
    }
    let notify = handover
        .as_ref()
        .map_or(notify, |taken| taken.notify.clone());
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
        // Threads of the blocking pool (process scans, spawns, dir removal) stay ready
        // through idle minutes: the first kill after a quiet spell does not start them anew.
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = startup::Start {
        config,
        http_token,
        inherited,
        handover,
        notifier: notifier.clone(),
    };
    match runtime.block_on(run(start)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("browserd: {e}");
            notifier.status(&format!("failed: {e}"));
            ExitCode::FAILURE
        }
    }
}

async fn run(start: startup::Start) -> Result<(), String> {
    let signals =
        shutdown::Signals::install().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let startup::Up {
        ctx,
        listener,
        http,
    } = startup::bring_up(start).await?;
    reload::unblock_signals();
    tracing::info!(
        socket = %ctx.config.socket.display(),
        pid = std::process::id(),
        activated = ctx.socket_file.is_inherited(),
        reloads = ctx.reloads,
        "browserd ready"
    );
    tokio::spawn(ctx.notifier.clone().run(ctx.clone()));
    if let Some(http) = http {
        http::start(&ctx, http);
    }
    let server = tokio::spawn(server::serve(ctx.clone(), listener));
    shutdown::run(ctx.clone(), signals).await;
    let _ = server.await;
    let _ = ctx.registry.synced().await;
    ctx.socket_file.remove(&ctx.config.socket);
    ctx.layout.release_tmp_root();
    tracing::info!("browserd stopped");
    Ok(())
}

/// How long an idle thread of the blocking pool is kept.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(3600);

/// `--check-config`: prints what the daemon would use, or why it cannot start.
fn check_config(args: Args) -> ExitCode {
    let loaded = Config::load(args).and_then(|config| {
        // A token file the daemon could not read would leave HTTP unserved after a reload.
        if let Some(path) = &config.http_token_file {
            http::Token::load(path)?;
        }
        Ok(config)
    });
    match loaded {
        Ok(config) => {
            let check = reload::Check::of(&config);
            println!("{}", serde_json::to_string(&check).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("browserd: {e}");
            ExitCode::from(2)
        }
    }
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
