//! Lotsawa's PostgreSQL store: every facet of the store port on one
//! database that any number of servers share.
//!
//! - Claims take the slot lock (a transaction-scoped advisory lock), count
//!   the jobs holding a slot across the deployment, and take the first
//!   pending rows with `FOR UPDATE SKIP LOCKED`: one queue, one
//!   concurrency limit, a job claimed by exactly one server.
//! - A running job is held by its server's lease (`lease_owner`,
//!   `lease_until`), renewed while it works; a job whose lease expired is
//!   taken over by the next claim with its run number moved on, so the old
//!   server's commits into it are refused (the run compare-and-set).
//! - Every commit that changes a job notifies `lotsawa_job` with its id,
//!   and every one that changes the queue notifies `lotsawa_queue`
//!   ([`listen`]): servers wake and streams move without polling.

mod facets;
mod gate;
mod jobs;
pub mod listen;
mod rows;
mod schema;

use std::sync::Arc;
use std::time::Duration;

use lotsawa_core::StoreError;
use tokio_postgres::error::SqlState;

pub use gate::PgGate;
pub use schema::SCHEMA_VERSION;

/// The database's client side: a pool of connections.
type Pool = deadpool_postgres::Pool;

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL does not parse.
    #[error("the database URL is not valid: {0}")]
    Url(String),
    /// The database refused or could not be reached.
    #[error("cannot reach the database: {0}")]
    Connect(String),
    /// A migration failed.
    #[error("the database schema cannot be brought up to date: {0}")]
    Migrate(String),
    /// The database was written by a newer build.
    #[error(
        "the database has schema version {found}, newer than this build's {supported}; \
         run the lotsawa version that wrote it, or a newer one"
    )]
    TooNew {
        /// The database's version.
        found: i32,
        /// The newest this build opens.
        supported: i32,
    },
}

/// Settings of a store on one database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// How long a server's hold on a running job lasts without renewal.
    pub lease: Duration,
    /// Most connections this server opens.
    pub pool_size: usize,
    /// This server's name in leases (unique per process).
    pub node: String,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_millis(30_000),
            pool_size: 16,
            node: default_node_name(),
        }
    }
}

/// `<host>-<pid>-<random>`: unique per process, readable in the table.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &tag[..8])
}

/// The store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    options: Arc<PgOptions>,
    /// The URL as given, password left out (for messages).
    shown: Arc<str>,
    /// What [`listen`] needs to open its own connection.
    config: Arc<tokio_postgres::Config>,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("db", &self.shown)
            .field("node", &self.options.node)
            .finish()
    }
}

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// The URL with its password replaced by `***`, for logs and messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let mut out = format!("{scheme}://");
    // The credentials run to the first '@', as the driver reads them (a
    // password may hold '/', '?' or ':').
    let tail = match rest.split_once('@') {
        Some((user, after)) => {
            match user.split_once(':') {
                Some((name, _)) => out.push_str(&format!("{name}:***@")),
                None => out.push_str(&format!("{user}@")),
            }
            after
        }
        None => rest,
    };
    // A password given as a parameter is hidden too.
    let tail: Vec<String> = tail
        .split('&')
        .map(|part| match part.split_once("password=") {
            Some((before, _)) => format!("{before}password=***"),
            None => part.to_owned(),
        })
        .collect();
    out.push_str(&tail.join("&"));
    out
}

/// Split the parameters tokio-postgres does not read (`sslrootcert`) off
/// the URL.
fn split_params(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut root = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| match p.strip_prefix("sslrootcert=") {
            Some(path) => {
                root = Some(path.to_owned());
                false
            }
            None => !p.is_empty(),
        })
        .collect();
    if kept.is_empty() {
        (base.to_owned(), root)
    } else {
        (format!("{base}?{}", kept.join("&")), root)
    }
}

/// TLS to the database: the web's roots and, from `sslrootcert`, the
/// server's own CA. Used when the URL asks (`sslmode=require`, or
/// `prefer` and the server offers it).
fn tls(root: Option<&str>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = root {
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| PgError::Url(format!("sslrootcert {path}: {e}")))?;
        for cert in certs {
            let cert = cert.map_err(|e| PgError::Url(format!("sslrootcert {path}: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| PgError::Url(format!("sslrootcert {path}: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Url(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl PgStore {
    /// Connect to the database at `url` and bring its schema up to date.
    pub async fn open(url: &str, options: PgOptions) -> Result<Self, PgError> {
        let shown: Arc<str> = redact(url).into();
        let (url, root) = split_params(url);
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| PgError::Url(format!("{shown}: {e}")))?;
        // A server that stalls inside a transaction (stopped, cut off)
        // must not hold its locks past half a lease: the database ends its
        // session, so the others can claim and take over.
        let idle = (options.lease.as_millis() / 2).max(250);
        let extra = format!("-c idle_in_transaction_session_timeout={idle}");
        let joined = match config.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} {extra}"),
            _ => extra,
        };
        config.options(joined);
        let tls = tls(root.as_deref())?;
        let manager = deadpool_postgres::Manager::from_config(
            config.clone(),
            tls.clone(),
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| PgError::Connect(e.to_string()))?;
        let store = Self {
            pool,
            options: Arc::new(options),
            shown,
            config: Arc::new(config),
            tls,
        };
        let mut client =
            store.pool.get().await.map_err(|e| {
                PgError::Connect(format!("{}: {}", store.shown, pool_error_text(&e)))
            })?;
        schema::migrate(&mut client).await?;
        Ok(store)
    }

    /// The database, password hidden.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// This server's name in leases.
    pub fn node(&self) -> &str {
        &self.options.node
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => pg("connect")(e),
            deadpool_postgres::PoolError::Timeout(_) => {
                StoreError::Throttled(pool_error_text(&e).into())
            }
            other => StoreError::ServerError(pool_error_text(&other).into()),
        })
    }

    /// Close every connection (the pool refuses new ones).
    pub fn close(&self) {
        self.pool.close();
    }
}

fn pool_error_text(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_text(e),
        other => other.to_string(),
    }
}

/// The server's message when there is one (tokio-postgres's own text is
/// "db error").
fn db_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

/// Map a driver error to the port's kinds: a unique violation is a taken
/// id, a serialization failure or deadlock a conflict worth retrying, a
/// dropped connection a server error worth retrying.
pub(crate) fn pg(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| {
        let code = e.code().cloned();
        match code {
            Some(c) if c == SqlState::UNIQUE_VIOLATION => StoreError::ConditionFailed(db_text(&e)),
            Some(c)
                if c == SqlState::T_R_SERIALIZATION_FAILURE
                    || c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                StoreError::TransactionConflict(Box::new(e))
            }
            Some(c) if c == SqlState::DISK_FULL => {
                StoreError::Storage("the database's disk is full".into())
            }
            Some(c) if c == SqlState::READ_ONLY_SQL_TRANSACTION => {
                StoreError::Storage("the database is read-only".into())
            }
            Some(c)
                if c == SqlState::ADMIN_SHUTDOWN
                    || c == SqlState::CRASH_SHUTDOWN
                    || c == SqlState::CANNOT_CONNECT_NOW
                    || c == SqlState::TOO_MANY_CONNECTIONS =>
            {
                StoreError::ServerError(Box::new(e))
            }
            None if e.is_closed() || e.as_db_error().is_none() => {
                StoreError::ServerError(Box::new(e))
            }
            _ => StoreError::Backend {
                what,
                source: Box::new(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://lotsawa:s3cret@db.example:5432/jobs?sslmode=require"),
            "postgres://lotsawa:***@db.example:5432/jobs?sslmode=require"
        );
        assert_eq!(
            redact("postgresql://db/jobs?user=a&password=s3cret"),
            "postgresql://db/jobs?user=a&password=***"
        );
        assert_eq!(redact("postgres://a@db/jobs"), "postgres://a@db/jobs");
        assert!(!redact("postgres://u:p@h/d?password=x").contains('x'));
        let odd = redact("postgres://u:pa/ss?w:rd@db:5432/jobs");
        assert_eq!(odd, "postgres://u:***@db:5432/jobs");
    }

    #[test]
    fn the_root_certificate_is_read_apart() {
        let (url, root) = split_params("postgres://h/d?sslmode=require&sslrootcert=/ca.pem");
        assert_eq!(url, "postgres://h/d?sslmode=require");
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        assert_eq!(split_params("postgres://h/d").0, "postgres://h/d");
    }

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("postgres://h/d"));
        assert!(is_url("postgresql://h/d"));
        assert!(!is_url("/var/lib/lotsawa/jobs.db"));
        assert!(!is_url("postgres.db"));
    }
}
