//! `lotsawa serve`: build the backend and the router once, serve until
//! SIGINT/SIGTERM, then drain and exit 0.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use lotsawa_engines::DefaultChoice;
use lotsawa_http::ApiConfig;
use lotsawa_local::LocalBackend;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};

use crate::config::{self, ProcessEnv, ServeConfig, ServeFlags, Source};
use lotsawa_telemetry::{self as telemetry, Telemetry};

/// The log filter, swappable while the server runs (SIGHUP).
type FilterHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

fn init_tracing(settings: &dyn Source, telemetry: Option<&Telemetry>) -> FilterHandle {
    let (filter, json) = config::logging(settings);
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(telemetry.map(Telemetry::layer));
    if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
    handle
}

/// On SIGHUP, read the configuration file again: the log filter changes at
/// once; a file that no longer reads or checks is refused (the running
/// settings stay); other changed settings take effect at the next restart,
/// and the log says so.
#[cfg(unix)]
fn reload_on_hangup(flags: ServeFlags, running: ServeConfig, filter: FilterHandle) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot listen for SIGHUP; reloads need a restart");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let file = match config::read_file(flags.config.clone(), &ProcessEnv) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "reload refused; the running settings stay");
                    continue;
                }
            };
            let settings = config::server_source(&ProcessEnv, file.as_ref());
            let fresh = match ServeConfig::load(flags.clone(), &settings) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "reload refused; the running settings stay");
                    continue;
                }
            };
            let (wanted, _) = config::logging(&settings);
            match EnvFilter::try_new(&wanted) {
                Ok(f) => {
                    if let Err(e) = filter.reload(f) {
                        tracing::error!(error = %e, "the log filter could not be swapped");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, filter = %wanted, "bad log filter; kept the old one")
                }
            }
            let restart = running.differs_from(&fresh);
            if restart.is_empty() {
                tracing::info!(log = %wanted, "configuration reloaded");
            } else {
                tracing::warn!(
                    log = %wanted,
                    restart_needed = %restart.join(", "),
                    "configuration reloaded; these settings change at the next restart"
                );
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Run the server.
pub async fn run(flags: ServeFlags) -> ExitCode {
    let file = match config::read_file(flags.config.clone(), &ProcessEnv) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = config::server_source(&ProcessEnv, file.as_ref());
    let telemetry = match telemetry::init(&ProcessEnv) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = init_tracing(&settings, telemetry.as_ref());
    let config = match ServeConfig::load(flags.clone(), &settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    #[cfg(unix)]
    reload_on_hangup(flags, config.clone(), filter);
    #[cfg(not(unix))]
    drop(filter);
    let (engines, choice) = match lotsawa_local::build_engines(&config.db, &config.engines).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match choice {
        DefaultChoice::Fallback => eprintln!(
            "note: no translation provider is configured, so the default engine is 'offline' \
             (a word-by-word gloss from the built-in glossary).\n      \
             Available engines: {}. Set OPENAI_BASE_URL (and OPENAI_API_KEY) for 'openai', \
             or LOTSAWA_BEDROCK_MODEL for 'bedrock' (builds with --features bedrock).",
            engines.names().join(", ")
        ),
        _ => eprintln!(
            "engines: {} (default: {})",
            engines.names().join(", "),
            engines.default_name()
        ),
    }
    let backend = match LocalBackend::start(config.db.clone(), engines, config.scheduler()).await {
        Ok(b) => b,
        Err(e) => {
            match e.storage_fault() {
                Some(fault) => eprintln!(
                    "error: cannot open the database {}: {fault} ({e})",
                    lotsawa_local::Db::of(&config.db).shown()
                ),
                None => eprintln!(
                    "error: cannot open the database {}: {e}",
                    lotsawa_local::Db::of(&config.db).shown()
                ),
            }
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.bind).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", config.bind);
            let _ = backend.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let draining = backend.draining();
    let app = lotsawa_http::router(
        backend.service() as Arc<dyn lotsawa_core::JobService>,
        ApiConfig {
            body_limit: config.body_limit,
            stream_max: Duration::from_secs(24 * 3600),
            shutdown: draining.clone(),
            require_auth: config.require_auth,
            allowed_hosts: (!config.require_auth).then(|| config.allowed_hosts.clone()),
            max_streams: config.max_streams,
            max_streams_per_tenant: config.max_streams_per_tenant,
            request_timeout: config.request_timeout,
            // Same origin: the page's streams come from this server.
            stream_url: None,
            pdf_limit: config.pdf_limit,
            pdf_budget: config.pdf_budget,
        },
    );
    let limits = crate::listen::Limits {
        header_timeout: config.header_timeout,
        max_connections: config.max_connections,
        drain: config.shutdown_grace + Duration::from_secs(5),
    };
    println!(
        "Lotsawa listening on http://{addr} — dashboard at http://{addr}/ (database: {}, concurrency: {})",
        lotsawa_local::Db::of(&config.db).shown(),
        config.concurrency
    );
    tracing::info!(%addr, "listening");
    let metrics = match config.metrics_bind {
        Some(bind) => match tokio::net::TcpListener::bind(bind).await {
            Ok(l) => {
                let addr = l.local_addr().map_or(bind, |a| a);
                // Not println!: a closed stdout must not stop the server.
                let _ = writeln!(
                    std::io::stdout(),
                    "Lotsawa metrics on http://{addr}/metrics"
                );
                let app = lotsawa_http::metrics_router(
                    backend.service() as Arc<dyn lotsawa_core::JobService>
                );
                let stop = draining.clone();
                Some(tokio::spawn(crate::listen::serve(
                    l,
                    app,
                    crate::listen::Limits {
                        max_connections: 64,
                        ..limits
                    },
                    async move { stop.cancelled().await },
                )))
            }
            Err(e) => {
                eprintln!("error: cannot listen on {bind} (LOTSAWA_METRICS_BIND): {e}");
                let _ = backend.shutdown().await;
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };

    let signal_draining = draining.clone();
    crate::listen::serve(listener, app, limits, async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested: finishing in-flight chunks");
        signal_draining.cancel();
    })
    .await;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    let stopped = backend.shutdown().await;
    if let Some(t) = telemetry {
        tokio::task::spawn_blocking(move || t.shutdown()).await.ok();
    }
    match stopped {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: flushing the store failed: {e}");
            ExitCode::FAILURE
        }
    }
}
