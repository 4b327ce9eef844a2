//! The database file: its schema and the migrations of older files, and
//! how connections are opened (WAL, durability, private file mode).

use rusqlite::Transaction;
use rusqlite_migration::{HookResult, M, Migrations};

use super::*;

/// Schema 1, as created on an empty file.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    config TEXT NOT NULL,
    result TEXT,
    error TEXT,
    chunks_total INTEGER NOT NULL,
    chunks_completed INTEGER NOT NULL DEFAULT 0,
    queue_pos INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT,
    cancelled_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(queue_pos) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS jobs_running ON jobs(queue_pos) WHERE status = 'processing';
CREATE INDEX IF NOT EXISTS jobs_status_seq ON jobs(status, seq);
CREATE INDEX IF NOT EXISTS jobs_kind_seq ON jobs(kind, seq);
CREATE TABLE IF NOT EXISTS idempotency (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rate_buckets (
    tenant TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS chunks (
    job_seq INTEGER NOT NULL REFERENCES jobs(seq),
    idx INTEGER NOT NULL,
    source TEXT NOT NULL,
    chars INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    translation TEXT,
    error TEXT,
    duration_ms INTEGER,
    run INTEGER NOT NULL DEFAULT 0,
    confidence REAL,
    from_memory INTEGER NOT NULL DEFAULT 0,
    context TEXT,
    warning TEXT,
    PRIMARY KEY (job_seq, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    created_at TEXT NOT NULL,
    items TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_tenant_seq ON batches(tenant, seq);
CREATE TABLE IF NOT EXISTS memory (
    key TEXT PRIMARY KEY,
    translation TEXT NOT NULL,
    confidence REAL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
"#;

/// Columns added to the chunks table before schemas had versions.
const ADDED_CHUNK_COLUMNS: &[(&str, &str)] = &[
    ("confidence", "REAL"),
    ("from_memory", "INTEGER NOT NULL DEFAULT 0"),
    ("context", "TEXT"),
    ("warning", "TEXT"),
];

/// Columns added to the jobs table before schemas had versions: the tenant
/// (jobs from before tenants belong to the default one), the callback
/// delivery (its state as JSON and, while pending, when the next attempt is
/// due) and the batch (`<batch id>:<item index>`).
const ADDED_JOB_COLUMNS: &[(&str, &str)] = &[
    ("tenant", "TEXT NOT NULL DEFAULT 'default'"),
    ("callback", "TEXT"),
    ("callback_due", "TEXT"),
    ("batch", "TEXT"),
];

/// Schema 1's last step: a database file from before versions (user_version
/// 0) may be any of its shapes, so each column added since is added where
/// it is missing.
fn unversioned_columns(tx: &Transaction<'_>) -> HookResult {
    for (table, added) in [("jobs", ADDED_JOB_COLUMNS), ("chunks", ADDED_CHUNK_COLUMNS)] {
        let have: Vec<String> = tx
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for (name, ty) in added {
            if !have.iter().any(|h| h == name) {
                tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {name} {ty}"))?;
            }
        }
    }
    tx.execute_batch(
        "CREATE INDEX IF NOT EXISTS jobs_tenant_seq ON jobs(tenant, seq);
         CREATE INDEX IF NOT EXISTS jobs_tenant_pending ON jobs(tenant) WHERE status = 'pending';
         CREATE INDEX IF NOT EXISTS jobs_callback_due ON jobs(callback_due) WHERE callback_due IS NOT NULL;",
    )?;
    Ok(())
}

/// The schema's versions, in order; the database's `user_version` is the
/// number applied. Append only: a released step is never edited.
/// Step 4: what provider calls spent.
const USAGE_SCHEMA: &str = "
ALTER TABLE chunks ADD COLUMN usage_calls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE chunks ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE chunks ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0;
CREATE TABLE usage (
    tenant TEXT NOT NULL,
    day TEXT NOT NULL,
    engine TEXT NOT NULL,
    model TEXT NOT NULL,
    calls INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    PRIMARY KEY (tenant, day, engine, model)
) WITHOUT ROWID;
";

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        // 1: the schema as it stood when versions began, reached from any
        // older file by adding the columns it lacks.
        M::up_with_hook(SCHEMA, unversioned_columns),
        // 2: the job's run counter is called `run` everywhere.
        M::up("ALTER TABLE jobs RENAME COLUMN attempts TO run;"),
        // 3: the submitting request's trace, continued by every run.
        M::up("ALTER TABLE jobs ADD COLUMN trace TEXT;"),
        // 4: provider usage: per chunk, and per tenant, day, engine and
        // model for the usage report and the monthly budgets.
        M::up(USAGE_SCHEMA),
        // 5: queue priorities (the claim order is priority, then queue
        // position: turns and arrival, by an index of its own), and
        // tenants' monthly token budgets.
        M::up(
            "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
             UPDATE jobs SET priority = COALESCE(json_extract(config, '$.priority'), 0);
             CREATE INDEX jobs_claim ON jobs(priority DESC, queue_pos) WHERE status = 'pending';
             CREATE TABLE budgets (
                 tenant TEXT PRIMARY KEY,
                 monthly_tokens INTEGER NOT NULL
             ) WITHOUT ROWID;",
        ),
        // 6: corrections: each chunk's revisions (JSON, none until the
        // first edit), its current revision, reviewed flag and version;
        // each job's reviewed chunks and edits.
        M::up(
            "ALTER TABLE chunks ADD COLUMN revisions TEXT;
             ALTER TABLE chunks ADD COLUMN revs INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE chunks ADD COLUMN current_rev INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE chunks ADD COLUMN reviewed INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE chunks ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE jobs ADD COLUMN reviewed INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE jobs ADD COLUMN edits INTEGER NOT NULL DEFAULT 0;",
        ),
        // 7: tenants' glossaries (terms as JSON).
        M::up(
            "CREATE TABLE glossaries (
                 id TEXT PRIMARY KEY,
                 tenant TEXT NOT NULL,
                 name TEXT NOT NULL,
                 entries TEXT NOT NULL,
                 terms INTEGER NOT NULL,
                 created_at TEXT NOT NULL,
                 updated_at TEXT NOT NULL
             ) WITHOUT ROWID;
             CREATE INDEX glossaries_tenant ON glossaries(tenant, created_at);",
        ),
        // 8: the tenants' segment memory (engine answers and people's
        // translations, found exactly and by similarity), and the examples
        // each chunk was given.
        M::up(
            "CREATE TABLE segments (
                 tenant TEXT NOT NULL,
                 id INTEGER NOT NULL,
                 source TEXT NOT NULL,
                 target TEXT NOT NULL,
                 human INTEGER NOT NULL,
                 created_at TEXT NOT NULL,
                 PRIMARY KEY (tenant, id)
             ) WITHOUT ROWID;
             ALTER TABLE chunks ADD COLUMN examples TEXT;",
        ),
    ])
}

/// The schema version this build writes (and the newest it opens).
pub const SCHEMA_VERSION: usize = 8;

/// Bring the file's schema to [`SCHEMA_VERSION`], each step in its own
/// transaction; a file written by a newer build is refused, untouched.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), SqliteError> {
    let migrations = migrations();
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let found = usize::try_from(found).unwrap_or(usize::MAX);
    if found > SCHEMA_VERSION {
        return Err(SqliteError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    migrations.to_latest(conn).map_err(|e| match e {
        rusqlite_migration::Error::RusqliteError { err, .. } => SqliteError::Sqlite(err),
        other => SqliteError::Commit(format!("schema migration failed: {other}")),
    })
}

/// Read connections: the pool's size and the most reads at once.
pub(super) const READERS: usize = 8;

/// Create the database file readable and writable by its owner only (SQLite
/// gives its WAL and shared-memory files the same mode).
pub(crate) fn create_private(path: &Path) -> Result<(), SqliteError> {
    if path.exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(SqliteError::Commit(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

/// When a commit is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is fsynced before anyone hears of it (`synchronous=FULL`):
    /// it survives a process crash and a power loss.
    #[default]
    Full,
    /// Commits are in the WAL file before anyone hears of them, fsynced at
    /// checkpoints (`synchronous=NORMAL`): they survive a process crash
    /// (`kill -9`); a power loss or OS crash may lose the last ones, never
    /// corrupt the database.
    Process,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "full" => Ok(Self::Full),
            "process" => Ok(Self::Process),
            other => Err(format!("expected full or process, got '{other}'")),
        }
    }
}

pub(super) fn open_conn(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    open_conn_with(path, read_only, Durability::Full)
}

/// Run a statement through the connection's statement cache (preparing one
/// costs more than running it on the hot paths).
pub(super) fn exec<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// One row through the statement cache.
pub(super) fn query_row<T, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// A statement without parameters or rows, through the statement cache.
pub(super) fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

pub(super) fn open_conn_with(
    path: &Path,
    read_only: bool,
    durability: Durability,
) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Full => "FULL",
            Durability::Process => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Every hot statement stays prepared (the default holds 16).
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}
