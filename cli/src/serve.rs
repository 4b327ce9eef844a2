//! `lotsawa serve`: build the backend and the router once, serve until
//! SIGINT/SIGTERM, then drain and exit 0.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use lotsawa_engines::{DefaultChoice, EngineSet};
use lotsawa_http::ApiConfig;
use lotsawa_local::LocalBackend;
use tracing_subscriber::EnvFilter;

use crate::config::{self, ProcessEnv, ServeConfig, ServeFlags, Source};

fn init_tracing(settings: &dyn Source) {
    let (filter, json) = config::logging(settings);
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
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
    init_tracing(&settings);
    let config = match ServeConfig::load(flags, &settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (engines, choice) = match EngineSet::build(&config.engines).await {
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
                    config.db.display()
                ),
                None => eprintln!(
                    "error: cannot open the database {}: {e}",
                    config.db.display()
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
    )
    .layer(tower_http::trace::TraceLayer::new_for_http());
    let limits = crate::listen::Limits {
        header_timeout: config.header_timeout,
        max_connections: config.max_connections,
        drain: config.shutdown_grace + Duration::from_secs(5),
    };
    println!(
        "Lotsawa listening on http://{addr} — dashboard at http://{addr}/ (database: {}, concurrency: {})",
        config.db.display(),
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
    match backend.shutdown().await {
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
