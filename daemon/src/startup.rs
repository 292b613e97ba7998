//! How the daemon comes up: fresh, after a crash (the journal says which sessions to take
//! up again; see `recovery`), or re-executed by a reload (the handover says everything).
//! Either way it ends with a context whose registry holds every session it should, a
//! journal that starts from that state, the loops running, and the listeners to serve.

use crate::activation::Inherited;
use crate::config::Config;
use crate::context::{Context, Parts};
use crate::dirs::Layout;
use crate::journal::{self, Journal};
use crate::notify::Notifier;
use crate::records::from_unix_ms;
use crate::registry::{Limits, Registry};
use crate::reload::{Invocation, TakenOver};
use crate::{browser, http, recovery, server, socket, supervise, terminate};
use browserd_proto::{EndReason, SessionId};
use interprocess::local_socket::tokio::Listener;
use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::time::SystemTime;

/// What `main` hands over to the runtime.
pub struct Start {
    pub config: Config,
    /// The HTTP token, if the config names its file (or why it could not be read).
    pub http_token: Result<Option<http::Token>, String>,
    pub inherited: Option<Inherited>,
    pub handover: Option<TakenOver>,
    pub notifier: Notifier,
}

/// What is up once [`bring_up`] returns.
pub struct Up {
    pub ctx: Arc<Context>,
    /// The socket's listener.
    pub listener: Listener,
    /// The HTTP listener and its token, when `--http` is set.
    pub http: Option<http::Opened>,
}

/// Builds the context and starts every loop; returns the listeners to serve.
pub async fn bring_up(start: Start) -> Result<Up, String> {
    let Start {
        mut config,
        http_token,
        inherited,
        handover,
        notifier,
    } = start;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.state_dir)
        .map_err(|e| {
            format!(
                "cannot create the state dir {}: {e}",
                config.state_dir.display()
            )
        })?;
    let limits = Limits {
        max_sessions: config.max_sessions,
        max_queue: config.max_queue,
        keep_exited: config.keep_exited,
        keep_exited_for: config.keep_exited_for.0,
    };
    let journal_path = config.state_dir.join("journal");
    let reloaded = handover.is_some();
    let (listener, parts, handed, http) = match handover {
        Some(taken) => {
            let listener = socket::adopt(taken.listener)?;
            // The listener was kept and the token re-read: a failure here is the new
            // config's, and the daemon serves its sessions on without HTTP.
            let http = http::open(&config, taken.http_listener, http_token).unwrap_or_else(|e| {
                tracing::error!("{e}; HTTP is not served after this reload");
                None
            });
            if taken.socket_file == socket::SocketFile::Managers {
                tracing::info!(
                    "serving the socket the service manager passed, as before the reload"
                );
            }
            let adopted = taken
                .adopted
                .into_iter()
                .map(|(id, fd)| (id, Arc::new(fd)))
                .collect();
            let registry = Registry::restore(limits, taken.registry, adopted);
            registry.events().resume_at(taken.events_seq);
            tracing::info!(reloads = taken.reloads, "reloaded: took over every session");
            let parts = Parts {
                registry,
                notifier,
                invocation: Invocation::current(),
                socket_file: taken.socket_file,
                reloads: taken.reloads,
                started_wall: from_unix_ms(taken.started_unix_ms),
                config: config.clone(),
            };
            let handed = Handed {
                connections: taken.connections,
                pipes: taken.pipes,
                terminate: Vec::new(),
            };
            (listener, parts, handed, http)
        }
        None => {
            let (listener, socket_file) = socket::listen(&mut config, inherited)?;
            let http = http::open(&config, None, http_token)?;
            let replayed = journal::read(&journal_path);
            if let Some(problem) = &replayed.problem {
                tracing::error!("journal: {problem}");
            }
            let found = replayed.found;
            let recovered = recovery::recover(replayed, config.on_restart);
            if found {
                tracing::info!("{}", recovered.summary);
            }
            let layout = Layout::new(&config.state_dir);
            let snapshot = recovered.snapshot.clone();
            let swept =
                tokio::task::spawn_blocking(move || recovery::sweep_dirs(&layout, &snapshot))
                    .await
                    .unwrap_or(0);
            if swept > 0 {
                tracing::info!(swept, "removed session dirs no live session owns");
            }
            let registry = Registry::restore(limits, recovered.snapshot, recovered.adopted);
            let parts = Parts {
                registry,
                notifier,
                invocation: Invocation::current(),
                socket_file,
                reloads: 0,
                started_wall: SystemTime::now(),
                config: config.clone(),
            };
            let handed = Handed {
                connections: Vec::new(),
                pipes: Vec::new(),
                terminate: recovered.terminate,
            };
            (listener, parts, handed, http)
        }
    };
    let journal = Journal::start(journal_path.clone(), parts.registry.snapshot())
        .map_err(|e| format!("cannot start the journal {}: {e}", journal_path.display()))?;
    parts.registry.attach(Arc::new(journal));
    // A first start or one after a crash serves only once the journal is rewritten (a
    // state dir that cannot be written to fails the start). After a reload the journal on
    // disk is already whole (the old image synced it before its exec): the rewrite goes on
    // in the background, and every record written later waits behind it.
    if !reloaded {
        parts
            .registry
            .synced()
            .await
            .map_err(|e| format!("cannot write the journal: {e}"))?;
    }
    let ctx = Arc::new(Context::new(parts));
    for (id, cgroup) in ctx.registry.cgroups() {
        ctx.members.take_up(&id, &cgroup);
    }
    ctx.metrics.set_max_sessions(ctx.config.max_sessions);
    crate::pressure::prime();
    supervise::start(&ctx).map_err(|e| format!("cannot watch for child exits: {e}"))?;
    take_up(&ctx, handed);
    ctx.notifier.ready(&ctx.registry.counts());
    Ok(Up {
        ctx,
        listener,
        http,
    })
}

/// What came with the start besides the registry.
struct Handed {
    connections: Vec<server::Parked>,
    pipes: Vec<(SessionId, std::os::fd::OwnedFd)>,
    terminate: Vec<SessionId>,
}

fn take_up(ctx: &Arc<Context>, handed: Handed) {
    let mut reading = HashMap::new();
    for (id, pipe) in handed.pipes {
        match ctx.pipes.keep(&id, pipe) {
            Ok(dup) => {
                reading.insert(id, dup);
            }
            Err(e) => tracing::warn!(session = %id, "cannot keep the browser's stderr: {e}"),
        }
    }
    for (_, dup) in reading {
        browser::drain(dup);
    }
    for id in handed.terminate {
        terminate::start_forced(ctx, &id, ctx.config.grace(), EndReason::Lost);
    }
    // Warm browsers a reload met while they were starting: nobody waits for their endpoint
    // any more. They go, and the pool launches others. (Ready ones stay in the pool.)
    for id in ctx.registry.warm_starting() {
        terminate::start_forced(ctx, &id, ctx.config.grace(), EndReason::LaunchFailed);
    }
    server::take_up(ctx, handed.connections);
}
