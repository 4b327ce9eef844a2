//! Lotsawa's embedded backend: a SQLite store (WAL, one file, a batching
//! single writer) and an in-process scheduler, exposed as a
//! [`lotsawa_core::JobService`].
//!
//! [`LocalBackend::start`] opens the store, resumes any job a crash or a
//! shutdown left `processing`, and starts the scheduler.

pub mod backup;
mod changes;
pub mod metrics;
mod retranslate;
pub mod scheduler;
pub mod service;
pub mod store;
mod traces;
pub mod webhooks;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lotsawa_engines::EngineSet;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use scheduler::SchedulerConfig;
pub use service::LocalRunner;
pub use store::{Durability, SCHEMA_VERSION, SqliteError, SqliteStore};
pub use webhooks::WebhookSettings;

use crate::metrics::Metrics;
use crate::scheduler::Shared;

/// A running embedded backend.
pub struct LocalBackend {
    service: Arc<lotsawa_core::Service>,
    scheduler: JoinHandle<()>,
    draining: CancellationToken,
    store: SqliteStore,
    /// Held for the server's life; declared last, so dropped after the
    /// store's handles.
    _lock: backup::DbLock,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("store", &self.store)
            .finish()
    }
}

impl LocalBackend {
    /// Open the database at `db` and start scheduling.
    pub async fn start(
        db: PathBuf,
        engines: EngineSet,
        config: SchedulerConfig,
    ) -> Result<Self, SqliteError> {
        let durability = config.durability;
        // One server per database: a second one is refused before it opens
        // anything, and a restore refuses the database while this one runs.
        let lock = backup::DbLock::acquire(&db).map_err(|e| match e {
            backup::BackupError::ServerRunning(path) => SqliteError::InUse(path),
            other => SqliteError::Commit(other.to_string()),
        })?;
        let store = tokio::task::spawn_blocking(move || SqliteStore::open_with(db, durability))
            .await
            .map_err(|e| SqliteError::Join(e.to_string()))??;
        let (max_chunks, rate, max_pending, max_batch_items) = (
            config.max_chunks,
            config.rate,
            config.max_pending,
            config.max_batch_items,
        );
        let model_engines: Vec<(String, String)> = engines
            .names()
            .into_iter()
            .filter_map(|n| {
                let default = engines.get(&n)?.default_model()?.to_owned();
                Some((n, default))
            })
            .collect();
        let models = lotsawa_core::service::model_allowlists(
            &config.models,
            &model_engines,
            config.restrict_models,
        );
        let changes = Arc::new(changes::Changes::default());
        let draining = CancellationToken::new();
        let metrics = Metrics::new();
        for name in engines.names() {
            // Expose every engine's histogram from the start, even at zero.
            metrics.chunk_duration.with_label_values(&[name.as_str()]);
        }
        let shared = Shared {
            store: store.clone(),
            engines,
            metrics,
            changes,
            wake: Arc::new(Notify::new()),
            running: Arc::new(Mutex::new(HashMap::new())),
            config,
            draining: draining.clone(),
            hard_stop: CancellationToken::new(),
            budgets: Arc::default(),
        };
        tokio::spawn(shared.changes.clone().sweep_loop(draining.clone()));
        if let Some(retention) = shared.config.retention {
            tokio::spawn(scheduler::purge_loop(
                store.clone(),
                retention,
                draining.clone(),
            ));
        }
        let callbacks = match &shared.config.webhooks {
            Some(settings) => {
                let callbacks = lotsawa_core::webhook::Callbacks::new(
                    settings.policy.clone(),
                    Arc::new(webhooks::DnsResolver),
                );
                tokio::spawn(webhooks::deliver_loop(
                    store.clone(),
                    Arc::new(settings.clone()),
                    callbacks.clone(),
                    draining.clone(),
                ));
                Ok(callbacks)
            }
            None => Err(
                "this server takes no callback URLs: it has no webhook secret (LOTSAWA_WEBHOOK_SECRET)"
                    .to_owned(),
            ),
        };
        let scheduler = tokio::spawn(scheduler::run(shared.clone()));
        let choice = lotsawa_core::EngineChoice {
            names: shared.engines.names(),
            default: shared.engines.default_name().to_owned(),
            place: "server",
            models,
        };
        let prices = shared.engines.prices().clone();
        let service = lotsawa_core::Service::new(
            Arc::new(store.clone()),
            Arc::new(LocalRunner { shared }),
            choice,
        )
        .with_prices(prices)
        .with_max_chunks(max_chunks)
        .with_rate(rate)
        .with_max_pending(max_pending)
        .with_max_batch_items(max_batch_items)
        .with_callbacks(callbacks);
        Ok(Self {
            service: Arc::new(service),
            scheduler,
            draining,
            store,
            _lock: lock,
        })
    }

    /// The job service, for the HTTP router.
    pub fn service(&self) -> Arc<lotsawa_core::Service> {
        self.service.clone()
    }

    /// A token cancelled when shutdown begins (SSE streams end on it).
    pub fn draining(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// Stop starting chunks, let in-flight calls finish within the grace
    /// period, and wait until every write is committed.
    pub async fn shutdown(self) -> Result<(), SqliteError> {
        self.draining.cancel();
        let _ = self.scheduler.await;
        self.store.flush().await
    }
}
