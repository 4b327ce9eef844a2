//! Lotsawa's server backend: a store and an in-process scheduler, exposed
//! as a [`lotsawa_core::JobService`]. The store is a SQLite file (WAL, a
//! batching single writer; one server owns it) or a PostgreSQL database
//! that any number of servers share ([`lotsawa_postgres`]).
//!
//! [`LocalBackend::start`] opens the store, resumes what this server must
//! (every job a crash or a shutdown left `processing` in its own file; on a
//! shared database, jobs whose server's lease expired are taken over by
//! claims), and starts the scheduler.

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

pub use lotsawa_postgres::{PgError, PgOptions, PgStore};
pub use scheduler::SchedulerConfig;
pub use service::LocalRunner;
pub use store::{Durability, SCHEMA_VERSION, SqliteError, SqliteStore};
pub use webhooks::WebhookSettings;

use crate::metrics::Metrics;
use crate::scheduler::Shared;

/// The scheduler's store: a SQLite file or a shared PostgreSQL database.
pub type NodeStore = Arc<dyn lotsawa_core::store::QueueStore>;

/// Where the jobs are kept: `--db` / `LOTSAWA_DB` is a path (SQLite) or a
/// `postgres://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file that this server owns.
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by any number of servers.
    Postgres(String),
}

impl Db {
    /// The database `--db` names.
    pub fn of(db: &std::path::Path) -> Self {
        match db.to_str() {
            Some(url) if lotsawa_postgres::is_url(url) => Db::Postgres(url.to_owned()),
            _ => Db::Sqlite(db.to_path_buf()),
        }
    }

    /// How it is shown: a path, or the URL without its password.
    pub fn shown(&self) -> String {
        match self {
            Db::Sqlite(p) => p.display().to_string(),
            Db::Postgres(url) => lotsawa_postgres::redact(url),
        }
    }
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The SQLite store.
    #[error(transparent)]
    Sqlite(#[from] SqliteError),
    /// The PostgreSQL store.
    #[error(transparent)]
    Postgres(#[from] PgError),
}

impl BackendError {
    /// What is wrong with the storage itself, when that is the failure.
    pub fn storage_fault(&self) -> Option<&'static str> {
        match self {
            BackendError::Sqlite(e) => e.storage_fault(),
            BackendError::Postgres(_) => None,
        }
    }
}

/// Open the store `db` names for a command that is not a server (keys,
/// budgets): a SQLite file (beside a running server, as WAL allows) or a
/// PostgreSQL database.
pub async fn open_store(
    db: &std::path::Path,
) -> Result<Arc<dyn lotsawa_core::Store>, BackendError> {
    match Db::of(db) {
        Db::Sqlite(path) => {
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(path))
                .await
                .map_err(|e| SqliteError::Join(e.to_string()))??;
            Ok(Arc::new(store))
        }
        Db::Postgres(url) => {
            let options = PgOptions {
                pool_size: 2,
                ..PgOptions::default()
            };
            Ok(Arc::new(PgStore::open(&url, options).await?))
        }
    }
}

/// Build the engines a server on `db` runs with: on a PostgreSQL
/// database their provider limits are shared with every server on it
/// ([`PgGate`]); on a SQLite file they are kept in this process.
pub async fn build_engines(
    db: &std::path::Path,
    settings: &lotsawa_engines::EngineSettings,
) -> Result<(EngineSet, lotsawa_engines::DefaultChoice), String> {
    match Db::of(db) {
        Db::Postgres(url) if !settings.limits.is_empty() => {
            let options = PgOptions {
                pool_size: 4,
                ..PgOptions::default()
            };
            let store = PgStore::open(&url, options)
                .await
                .map_err(|e| format!("cannot open the database {}: {e}", Db::of(db).shown()))?;
            // A lease outlives any provider call (a server that died
            // mid-call gives its share back when it lapses).
            let gate = lotsawa_postgres::PgGate::new(store, settings.timeout * 2);
            EngineSet::build_with_gate(settings, Arc::new(gate))
                .await
                .map_err(|e| e.to_string())
        }
        _ => EngineSet::build(settings).await.map_err(|e| e.to_string()),
    }
}

/// A running embedded backend.
pub struct LocalBackend {
    service: Arc<lotsawa_core::Service>,
    scheduler: JoinHandle<()>,
    draining: CancellationToken,
    store: NodeStore,
    /// Held for the server's life on a SQLite file; declared last, so
    /// dropped after the store's handles.
    _lock: Option<backup::DbLock>,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("store", &self.store)
            .finish()
    }
}

impl LocalBackend {
    /// Open the database `db` names (a SQLite path or a `postgres://`
    /// URL) and start scheduling.
    pub async fn start(
        db: PathBuf,
        engines: EngineSet,
        config: SchedulerConfig,
    ) -> Result<Self, BackendError> {
        let (store, lock, pg): (NodeStore, _, _) = match Db::of(&db) {
            Db::Sqlite(db) => {
                let durability = config.durability;
                // One server per database file: a second one is refused
                // before it opens anything, and a restore refuses the
                // database while this one runs.
                let lock = backup::DbLock::acquire(&db).map_err(|e| match e {
                    backup::BackupError::ServerRunning(path) => SqliteError::InUse(path),
                    other => SqliteError::Commit(other.to_string()),
                })?;
                let store =
                    tokio::task::spawn_blocking(move || SqliteStore::open_with(db, durability))
                        .await
                        .map_err(|e| SqliteError::Join(e.to_string()))??;
                (Arc::new(store), Some(lock), None)
            }
            Db::Postgres(url) => {
                let store = PgStore::open(&url, config.postgres.clone()).await?;
                (Arc::new(store.clone()), None, Some(store))
            }
        };
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
            renewed: Arc::default(),
            announce: Arc::new(Notify::new()),
        };
        tokio::spawn(shared.changes.clone().sweep_loop(draining.clone()));
        if let Some(pg) = pg {
            tokio::spawn(scheduler::announce_loop(shared.clone(), draining.clone()));
            let listener = Arc::new(scheduler::Announcements {
                shared: shared.clone(),
            });
            let stop = draining.clone();
            tokio::spawn(async move {
                pg.listen(listener, async move { stop.cancelled().await })
                    .await
            });
        }
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
            store.clone() as Arc<dyn lotsawa_core::Store>,
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
    /// period, hand running jobs back when other servers share the store,
    /// and wait until every write is committed.
    pub async fn shutdown(self) -> Result<(), lotsawa_core::StoreError> {
        self.draining.cancel();
        let _ = self.scheduler.await;
        self.store.flush().await
    }
}
