//! The SQLite store: one file in WAL mode, a single writer thread that
//! batches queued writes into one transaction (one fsync for many commits),
//! and a small pool of reader connections.
//!
//! Every status change is a compare-and-set on the old status (and, for a
//! running job, on its run number), so a stale worker can never move a job
//! backwards or write into a newer run.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use lotsawa_core::progress::ChunkTiming;
use lotsawa_core::store::{
    Applied, Change, Checkpoint, ChunkChange, ChunkDone, Field, IdempotencyRecord, JobPatch,
    JobStore, PageRequest, QueuePlace, SlotChange, StorePage,
};
use lotsawa_core::{
    ApiKeyRecord, ChunkRecord, ChunkStatus, Job, JobConfig, JobId, JobResult, JobStatus, Tenant,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use tokio::sync::oneshot;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// A stored JSON column did not parse.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The commit of a batch failed.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The writer thread is gone.
    #[error("the store is closed")]
    Closed,
    /// No such job.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// No such batch.
    #[error("batch {0} not found")]
    BatchNotFound(lotsawa_core::BatchId),
    /// A list position that is not one of ours.
    #[error("'{0}' is not a valid list position")]
    InvalidCursor(String),
    /// A blocking task panicked or was cancelled.
    #[error("store task failed: {0}")]
    Join(String),
}

impl StoreError {
    /// What is wrong with the storage itself, when that is the failure: a
    /// full disk, a read-only file or file system, an I/O error.
    pub fn storage_fault(&self) -> Option<&'static str> {
        let text = match self {
            StoreError::Sqlite(e) => match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DiskFull) => return Some("the disk is full"),
                Some(rusqlite::ErrorCode::ReadOnly) => {
                    return Some("the database is read-only");
                }
                Some(rusqlite::ErrorCode::SystemIoFailure) => {
                    return Some("the disk reported an I/O error");
                }
                Some(rusqlite::ErrorCode::CannotOpen) => {
                    return Some("the database file cannot be opened");
                }
                _ => return None,
            },
            StoreError::Commit(m) => m.as_str(),
            _ => return None,
        };
        if text.contains("database or disk is full") {
            Some("the disk is full")
        } else if text.contains("readonly database") {
            Some("the database is read-only")
        } else if text.contains("disk I/O error") {
            Some("the disk reported an I/O error")
        } else {
            None
        }
    }
}

impl From<StoreError> for lotsawa_core::StoreError {
    fn from(e: StoreError) -> Self {
        use lotsawa_core::StoreError as Port;
        match e {
            StoreError::NotFound(id) => Port::NotFound(id),
            StoreError::BatchNotFound(id) => Port::BatchNotFound(id),
            StoreError::InvalidCursor(c) => Port::InvalidCursor(c),
            StoreError::Closed => Port::Closed,
            StoreError::Corrupt(m) => Port::Corrupt(m),
            e if e.storage_fault().is_some() => {
                Port::Storage(e.storage_fault().unwrap_or_default().to_owned())
            }
            StoreError::Sqlite(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) =>
            {
                Port::Throttled(Box::new(e))
            }
            // A second job with an id already taken (a repeated create).
            StoreError::Sqlite(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) =>
            {
                Port::ConditionFailed(e.to_string())
            }
            other @ (StoreError::Sqlite(_) | StoreError::Commit(_) | StoreError::Join(_)) => {
                Port::backend("sqlite", other)
            }
        }
    }
}

type PortResult<T> = Result<T, lotsawa_core::StoreError>;

type Reply = Box<dyn FnOnce(Option<String>) + Send>;
/// A queued write: run on the writer's connection, or told why it cannot run.
type Op = Box<dyn FnOnce(Result<&Connection, String>) -> (bool, Reply) + Send>;

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

/// Columns added after the first schema, added to older databases at open.
const ADDED_CHUNK_COLUMNS: &[(&str, &str)] = &[
    ("confidence", "REAL"),
    ("from_memory", "INTEGER NOT NULL DEFAULT 0"),
    ("context", "TEXT"),
    ("warning", "TEXT"),
];

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    // Jobs from before tenants belong to the default tenant.
    let job_columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('jobs')")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if !job_columns.iter().any(|c| c == "tenant") {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default'")?;
    }
    // The callback delivery: its state (JSON) and, while pending, when the
    // next attempt is due.
    // ... and its batch (`<batch id>:<item index>`).
    for (name, ty) in [
        ("callback", "TEXT"),
        ("callback_due", "TEXT"),
        ("batch", "TEXT"),
    ] {
        if !job_columns.iter().any(|c| c == name) {
            conn.execute_batch(&format!("ALTER TABLE jobs ADD COLUMN {name} {ty}"))?;
        }
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS jobs_tenant_seq ON jobs(tenant, seq);
         CREATE INDEX IF NOT EXISTS jobs_tenant_pending ON jobs(tenant) WHERE status = 'pending';
         CREATE INDEX IF NOT EXISTS jobs_callback_due ON jobs(callback_due) WHERE callback_due IS NOT NULL;",
    )?;
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('chunks')")?;
    let have: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for (name, ty) in ADDED_CHUNK_COLUMNS {
        if !have.iter().any(|h| h == name) {
            conn.execute_batch(&format!("ALTER TABLE chunks ADD COLUMN {name} {ty}"))?;
        }
    }
    Ok(())
}

/// The claim statement: the oldest pending job, by the partial queue index
/// (finished rows are not in it, so it stays fast however many there are).
pub const CLAIM_NEXT_SQL: &str = "SELECT seq FROM jobs INDEXED BY jobs_queue WHERE status = 'pending' ORDER BY queue_pos LIMIT 1";
/// The chunk checkpoint statement, by primary key.
pub const CHECKPOINT_SQL: &str =
    "UPDATE chunks SET status = 'completed', translation = ?1, duration_ms = ?2,
    attempts = attempts + ?3, error = NULL, run = ?4, confidence = ?7, from_memory = ?8,
    context = ?9, warning = ?10
 WHERE job_seq = ?5 AND idx = ?6 AND status = 'pending'";

const JOB_COLUMNS: &str = "seq, id, kind, status, source, config, result, error, chunks_total, \
    chunks_completed, created_at, started_at, completed_at, cancelled_at, attempts, tenant, callback, \
    batch";
const LIST_COLUMNS: &str = "seq, id, kind, status, '' AS source, config, NULL AS result, error, \
    chunks_total, chunks_completed, created_at, started_at, completed_at, cancelled_at, attempts, \
    tenant, callback, batch";

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    s.map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| StoreError::Corrupt(format!("timestamp '{s}': {e}")))
    })
    .transpose()
}

/// A job row with its store-internal sequence number.
#[derive(Debug, Clone)]
pub struct StoredJob {
    /// Insertion order; the list order and the chunk table's key.
    pub seq: i64,
    /// The job.
    pub job: Job,
}

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, RawJob)> {
    Ok((
        row.get(0)?,
        RawJob {
            id: row.get(1)?,
            kind: row.get(2)?,
            status: row.get(3)?,
            source: row.get(4)?,
            config: row.get(5)?,
            result: row.get(6)?,
            error: row.get(7)?,
            chunks_total: row.get(8)?,
            chunks_completed: row.get(9)?,
            created_at: row.get(10)?,
            started_at: row.get(11)?,
            completed_at: row.get(12)?,
            cancelled_at: row.get(13)?,
            attempts: row.get(14)?,
            tenant: row.get(15)?,
            callback: row.get(16)?,
            batch: row.get(17)?,
        },
    ))
}

struct RawJob {
    id: String,
    kind: String,
    status: String,
    source: String,
    config: String,
    result: Option<String>,
    error: Option<String>,
    chunks_total: u32,
    chunks_completed: u32,
    created_at: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    cancelled_at: Option<String>,
    attempts: u32,
    tenant: String,
    callback: Option<String>,
    batch: Option<String>,
}

/// A job's batch as stored: `<batch id>:<item index>`.
fn batch_text(r: &lotsawa_core::BatchRef) -> String {
    format!("{}:{}", r.id, r.index)
}

fn parse_batch(text: &str) -> Result<lotsawa_core::BatchRef, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("batch '{text}'"));
    let (id, index) = text.split_once(':').ok_or_else(corrupt)?;
    Ok(lotsawa_core::BatchRef {
        id: id.parse().map_err(|_| corrupt())?,
        index: index.parse().map_err(|_| corrupt())?,
    })
}

/// Queue positions of one turn span this many values: a position is
/// `turn × TURN_SPAN + place in the turn`, so the one queue index orders
/// jobs by turn, then by arrival ([`lotsawa_core::batch`]).
const TURN_SPAN: i64 = 1 << 32;

/// The queue's current turn: that of the first pending job (0 when none).
const CURRENT_TURN_SQL: &str = "SELECT MAX(COALESCE(MIN(queue_pos), 0), 0) / 4294967296 \
    FROM jobs INDEXED BY jobs_queue WHERE status = 'pending'";

/// The queue position at the end of turn `current + ahead`.
fn end_of_turn(conn: &Connection, ahead: u32) -> Result<i64, StoreError> {
    let current: i64 = query_row(conn, CURRENT_TURN_SQL, [], |r| r.get(0))?;
    let lo = (current + i64::from(ahead)) * TURN_SPAN;
    let last: Option<i64> = query_row(
        conn,
        "SELECT MAX(queue_pos) FROM jobs INDEXED BY jobs_queue \
         WHERE status = 'pending' AND queue_pos >= ?1 AND queue_pos < ?2",
        params![lo, lo + TURN_SPAN],
        |r| r.get(0),
    )?;
    Ok(last.unwrap_or(lo) + 1)
}

impl RawJob {
    fn into_job(self) -> Result<Job, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(e);
        Ok(Job {
            id: self
                .id
                .parse()
                .map_err(|e: lotsawa_core::ValidationError| corrupt(e.0))?,
            tenant: Tenant::parse(&self.tenant).map_err(|e| corrupt(e.0))?,
            kind: self
                .kind
                .parse()
                .map_err(|e: lotsawa_core::ValidationError| corrupt(e.0))?,
            status: self
                .status
                .parse()
                .map_err(|e: lotsawa_core::ValidationError| corrupt(e.0))?,
            source: self.source,
            config: serde_json::from_str::<JobConfig>(&self.config)
                .map_err(|e| corrupt(format!("config: {e}")))?,
            result: self
                .result
                .map(|r| serde_json::from_str::<JobResult>(&r))
                .transpose()
                .map_err(|e| corrupt(format!("result: {e}")))?,
            error: self.error,
            chunks_completed: self.chunks_completed,
            chunks_total: self.chunks_total,
            created_at: parse_ts(Some(self.created_at))?.unwrap_or_default(),
            started_at: parse_ts(self.started_at)?,
            completed_at: parse_ts(self.completed_at)?,
            cancelled_at: parse_ts(self.cancelled_at)?,
            attempts: self.attempts,
            batch: self.batch.as_deref().map(parse_batch).transpose()?,
            callback: self
                .callback
                .map(|c| serde_json::from_str::<lotsawa_core::Callback>(&c))
                .transpose()
                .map_err(|e| corrupt(format!("callback: {e}")))?,
        })
    }
}

fn load_job(conn: &Connection, id: JobId) -> Result<StoredJob, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
    let (seq, raw) = query_row(conn, &sql, [id.to_string()], job_from_row)
        .optional()?
        .ok_or(StoreError::NotFound(id))?;
    Ok(StoredJob {
        seq,
        job: raw.into_job()?,
    })
}

/// The SQLite store.
#[derive(Clone)]
pub struct Store {
    writer: Arc<WriteQueue>,
    /// Dropped with the last clone of the store: closes the queue, so the
    /// writer finishes what is queued and stops.
    _open: Arc<QueueGuard>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// At most [`READERS`] reads at once, so connections stay bounded
    /// however many requests and streams read.
    read_permits: Arc<tokio::sync::Semaphore>,
    path: PathBuf,
}

/// The writer's queue: two lanes. Job creation (which a flood of clients
/// can fill) waits in the bulk lane; claims, checkpoints and status changes
/// go in the urgent lane, and every batch takes all urgent writes first, so
/// the drain is not starved by submissions.
struct WriteQueue {
    lanes: Mutex<Lanes>,
    ready: std::sync::Condvar,
}

#[derive(Default)]
struct Lanes {
    urgent: std::collections::VecDeque<Op>,
    bulk: std::collections::VecDeque<Op>,
    closed: bool,
    /// When urgent writes were last taken: while jobs are being worked on,
    /// a batch takes few bulk writes, so a flood of submissions (whose
    /// clients wait for their commit) slows down instead of the drain.
    last_urgent: Option<std::time::Instant>,
}

/// Bulk writes a batch takes while jobs are being worked on: this many per
/// urgent write it holds, and at least [`BULK_WHILE_BUSY`].
const BULK_PER_URGENT: usize = 1;
/// The fewest bulk writes a batch takes while jobs are being worked on.
const BULK_WHILE_BUSY: usize = 4;
/// How long after the last urgent write the writer counts as busy.
const BUSY_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// Which lane a write waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Claims, checkpoints, status changes: ahead of bulk writes.
    Urgent,
    /// New jobs and other writes clients can flood.
    Bulk,
}

struct QueueGuard(Arc<WriteQueue>);

impl Drop for QueueGuard {
    fn drop(&mut self) {
        if let Ok(mut l) = self.0.lanes.lock() {
            l.closed = true;
        }
        self.0.ready.notify_all();
    }
}

impl WriteQueue {
    fn push(&self, lane: Lane, op: Op) -> Result<(), StoreError> {
        let mut l = self.lanes.lock().map_err(|_| StoreError::Closed)?;
        if l.closed {
            return Err(StoreError::Closed);
        }
        match lane {
            Lane::Urgent => l.urgent.push_back(op),
            Lane::Bulk => l.bulk.push_back(op),
        }
        drop(l);
        self.ready.notify_one();
        Ok(())
    }

    /// The next batch: every urgent write (up to the batch size), then bulk
    /// writes; empty once closed and drained.
    fn next_batch(&self) -> Vec<Op> {
        let Ok(mut l) = self.lanes.lock() else {
            return Vec::new();
        };
        while l.urgent.is_empty() && l.bulk.is_empty() && !l.closed {
            l = match self.ready.wait(l) {
                Ok(l) => l,
                Err(_) => return Vec::new(),
            };
        }
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH {
            match l.urgent.pop_front() {
                Some(op) => batch.push(op),
                None => break,
            }
        }
        let now = std::time::Instant::now();
        if !batch.is_empty() {
            l.last_urgent = Some(now);
        }
        let busy = l
            .last_urgent
            .is_some_and(|t| now.duration_since(t) < BUSY_WINDOW);
        let bulk = if busy {
            (batch.len() * BULK_PER_URGENT).max(BULK_WHILE_BUSY)
        } else {
            MAX_BATCH
        };
        let room = MAX_BATCH - batch.len();
        for _ in 0..bulk.min(room) {
            match l.bulk.pop_front() {
                Some(op) => batch.push(op),
                None => break,
            }
        }
        batch
    }
}

/// Read connections: the pool's size and the most reads at once.
const READERS: usize = 8;

/// Create the database file readable and writable by its owner only (SQLite
/// gives its WAL and shared-memory files the same mode).
fn create_private(path: &Path) -> Result<(), StoreError> {
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
        Err(e) => Err(StoreError::Commit(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;

/// Record a completed chunk of run `run` (the port's `checkpoint`), inside
/// the current write.
fn checkpoint_in(
    conn: &Connection,
    id: JobId,
    run: u32,
    done: &ChunkDone,
) -> Result<Checkpoint, StoreError> {
    let seq = seq_of(conn, id)?;
    let live: bool = query_row(
        conn,
        "SELECT EXISTS(SELECT 1 FROM jobs WHERE seq = ?1 AND status = 'processing' AND attempts = ?2)",
        params![seq, run],
        |r| r.get(0),
    )?;
    if !live {
        return Ok(Checkpoint::RunEnded);
    }
    let n = exec(
        conn,
        CHECKPOINT_SQL,
        params![
            done.translation,
            done.duration_ms.map(|d| d as i64),
            done.attempts,
            run,
            seq,
            done.index,
            done.confidence,
            done.from_memory,
            done.context,
            done.warning
        ],
    )?;
    if n != 1 {
        return Ok(Checkpoint::AlreadyDone);
    }
    exec(
        conn,
        "UPDATE jobs SET chunks_completed = chunks_completed + 1 WHERE seq = ?1",
        [seq],
    )?;
    Ok(Checkpoint::Recorded)
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

fn open_conn(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    open_conn_with(path, read_only, Durability::Full)
}

/// Run a statement through the connection's statement cache (preparing one
/// costs more than running it on the hot paths).
fn exec<P: rusqlite::Params>(conn: &Connection, sql: &str, params: P) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// One row through the statement cache.
fn query_row<T, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// A statement without parameters or rows, through the statement cache.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn open_conn_with(
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

impl Store {
    /// Open (creating if needed) the database file and start the writer,
    /// every commit fsynced.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, Durability::Full)
    }

    /// Open with the given durability of commits.
    pub fn open_with(path: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        create_private(&path)?;
        let conn = open_conn_with(&path, false, durability)?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        let queue = Arc::new(WriteQueue {
            lanes: Mutex::new(Lanes::default()),
            ready: std::sync::Condvar::new(),
        });
        let rx = queue.clone();
        thread::Builder::new()
            .name("lotsawa-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::Commit(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            _open: Arc::new(QueueGuard(queue.clone())),
            writer: queue,
            readers: Arc::new(Mutex::new(Vec::new())),
            read_permits: Arc::new(tokio::sync::Semaphore::new(READERS)),
            path,
        })
    }

    /// Run `f` on the writer inside the current batch's transaction, in
    /// the urgent lane.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_in(Lane::Urgent, f).await
    }

    /// Run `f` on the writer in `lane`.
    pub async fn write_in<T, F>(&self, lane: Lane, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, StoreError>>();
        let op: Op = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => f(conn),
                Err(e) => Err(StoreError::Commit(e)),
            };
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |commit_error| {
                let out = match commit_error {
                    Some(e) if ok => Err(StoreError::Commit(e)),
                    _ => result,
                };
                let _ = tx.send(out);
            });
            (ok, reply)
        });
        self.writer.push(lane, op)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Run `f` on a pooled read connection (WAL readers never block the writer).
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        let permit = self
            .read_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = match readers.lock().map(|mut v| v.pop()) {
                Ok(Some(c)) => c,
                _ => open_conn(&path, true)?,
            };
            let out = f(&conn);
            if let Ok(mut v) = readers.lock()
                && v.len() < READERS
            {
                v.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Record a job's last chunk and complete the job in one write (one
    /// commit): the result is assembled from the ledger as committed in the
    /// same transaction, through the same planned transition as a separate
    /// completion. A job with a chunk still unfinished is only checkpointed.
    /// With `hand_off` (the concurrency limit), a job that completed hands
    /// its slot on: the oldest pending job is claimed in the same commit and
    /// returned, so its runner goes on without a round through the
    /// scheduler.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_last_chunk(
        &self,
        id: JobId,
        run: u32,
        done: &ChunkDone,
        engine: String,
        model: Option<String>,
        hand_off: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<Finish, StoreError> {
        let done = done.clone();
        self.write(move |conn| {
            let kept = checkpoint_in(conn, id, run, &done)?;
            let mut finish = Finish {
                kept,
                completed: false,
                next: None,
            };
            if kept != Checkpoint::Recorded {
                return Ok(finish);
            }
            let stored = load_job(conn, id)?;
            let ledger = read_chunks(conn, stored.seq, 0)?;
            if ledger.iter().any(|c| c.status != ChunkStatus::Completed) {
                return Ok(finish);
            }
            let result =
                lotsawa_core::pipeline::job_result(stored.job.kind, &ledger, &engine, model);
            finish.completed = match JobPatch::plan(&stored.job, Change::Complete(result), now) {
                Ok(patch) => apply_patch(conn, stored.seq, &patch)?,
                Err(_) => false,
            };
            if finish.completed
                && let Some(limit) = hand_off
                && let Some(next) = claim_in(conn, limit, 1, now)?.pop()
            {
                let chunks = read_chunks(conn, next.seq, 0)?;
                finish.next = Some((next.job, chunks));
            }
            Ok(finish)
        })
        .await
    }

    /// Claim up to `max` of the oldest pending jobs under the concurrency
    /// `limit`, in one write (one commit for all of them): each through the
    /// same planned transition as a single claim.
    pub async fn claim_many(
        &self,
        limit: u32,
        max: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<Job>, StoreError> {
        self.write(move |conn| {
            Ok(claim_in(conn, limit, max, now)?
                .into_iter()
                .map(|s| s.job)
                .collect())
        })
        .await
    }

    /// Delete up to `limit` jobs (with their chunks) that finished before
    /// `before`, oldest first, and idempotency records past their window;
    /// the number of jobs deleted. Pending and processing jobs are kept
    /// however old they are.
    pub async fn purge_finished(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<usize, StoreError> {
        let cutoff = ts(before);
        let idem_cutoff = ts(Utc::now() - lotsawa_core::service::IDEMPOTENCY_WINDOW * 2);
        self.write(move |conn| {
            let seqs: Vec<i64> = conn
                .prepare_cached(
                    "SELECT seq FROM jobs
                     WHERE status IN ('completed', 'failed', 'cancelled')
                       AND COALESCE(completed_at, cancelled_at, created_at) < ?1
                     ORDER BY seq LIMIT ?2",
                )?
                .query_map(params![cutoff, limit], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut del_chunks = conn.prepare_cached("DELETE FROM chunks WHERE job_seq = ?1")?;
            let mut del_job = conn.prepare_cached("DELETE FROM jobs WHERE seq = ?1")?;
            for seq in &seqs {
                del_chunks.execute([seq])?;
                del_job.execute([seq])?;
            }
            conn.prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?
                .execute([&idem_cutoff])?;
            Ok(seqs.len())
        })
        .await
    }

    /// Wait until every write queued so far is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write(|_| Ok(())).await
    }

    /// `EXPLAIN QUERY PLAN` of a statement, for the plan tests.
    pub async fn query_plan(&self, sql: &'static str) -> Result<String, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            // Parameters stay NULL: the plan does not depend on their values.
            let nulls = vec![rusqlite::types::Value::Null; stmt.parameter_count()];
            let rows =
                stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?.join("\n"))
        })
        .await
    }

    /// Jobs left `processing` (by a crash or a shutdown), oldest first.
    pub async fn processing_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.write(move |conn| {
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_running WHERE status = 'processing' ORDER BY queue_pos"
            );
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map([], job_from_row)?;
            let mut out = Vec::new();
            for r in rows {
                let (_, raw) = r?;
                out.push(raw.into_job()?);
            }
            Ok(out)
        })
        .await
    }
}

fn seq_of(conn: &Connection, id: JobId) -> Result<i64, StoreError> {
    query_row(
        conn,
        "SELECT seq FROM jobs WHERE id = ?1",
        [id.to_string()],
        |r| r.get(0),
    )
    .optional()?
    .ok_or(StoreError::NotFound(id))
}

fn insert_job(conn: &Connection, job: &Job, chunks: &[String]) -> Result<(), StoreError> {
    let config =
        serde_json::to_string(&job.config).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let queue_pos = end_of_turn(conn, job.batch.map_or(0, |b| b.index))?;
    exec(
        conn,
        "INSERT INTO jobs (id, kind, status, source, config, error, chunks_total, queue_pos,
                           created_at, completed_at, attempts, tenant, batch)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?12, ?8, ?9, ?10, ?11, ?13)",
        params![
            job.id.to_string(),
            job.kind.as_str(),
            job.status.as_str(),
            job.source,
            config,
            job.error,
            chunks.len() as i64,
            ts(job.created_at),
            job.completed_at.map(ts),
            job.attempts,
            job.tenant.as_str(),
            queue_pos,
            job.batch.as_ref().map(batch_text)
        ],
    )?;
    let seq = conn.last_insert_rowid();
    let mut stmt = conn.prepare_cached(
        "INSERT INTO chunks (job_seq, idx, source, chars, status) VALUES (?1, ?2, ?3, ?4, 'pending')",
    )?;
    for (i, c) in chunks.iter().enumerate() {
        stmt.execute(params![seq, i as i64, c, c.chars().count() as i64])?;
    }
    Ok(())
}

/// What [`Store::finish_last_chunk`] did.
#[derive(Debug, Clone)]
pub struct Finish {
    /// The checkpoint's outcome.
    pub kept: Checkpoint,
    /// Whether the job completed in the same commit.
    pub completed: bool,
    /// The job claimed in the same commit to take the freed slot, with its
    /// chunks as they stood then.
    pub next: Option<(Job, Vec<ChunkRecord>)>,
}

/// Claim up to `max` of the oldest pending jobs under `limit`, inside the
/// caller's transaction; each with its row's sequence number.
fn claim_in(
    conn: &Connection,
    limit: u32,
    max: u32,
    now: DateTime<Utc>,
) -> Result<Vec<StoredJob>, StoreError> {
    let ids: Vec<String> = conn
        .prepare_cached(
            "SELECT id FROM jobs INDEXED BY jobs_queue WHERE status = 'pending' \
             ORDER BY queue_pos LIMIT ?1",
        )?
        .query_map([max], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut claimed = Vec::with_capacity(ids.len());
    for raw in ids {
        let id: JobId = raw
            .parse()
            .map_err(|e: lotsawa_core::ValidationError| StoreError::Corrupt(e.0))?;
        let stored = load_job(conn, id)?;
        let patch = match JobPatch::plan(&stored.job, Change::Start { limit }, now) {
            Ok(p) => p,
            Err(_) => continue,
        };
        if !apply_patch(conn, stored.seq, &patch)? {
            break; // no slot left
        }
        claimed.push(StoredJob {
            seq: stored.seq,
            job: patch.applied_to(&stored.job),
        });
    }
    Ok(claimed)
}

/// Push `field`'s SQL for `column` onto `sets`.
fn set_field<T>(
    sets: &mut Vec<String>,
    args: &mut Vec<rusqlite::types::Value>,
    column: &str,
    field: &Field<T>,
    to_sql: impl Fn(&T) -> Result<rusqlite::types::Value, StoreError>,
) -> Result<(), StoreError> {
    match field {
        Field::Keep => {}
        Field::Clear => sets.push(format!("{column} = NULL")),
        Field::Set(v) => {
            args.push(to_sql(v)?);
            sets.push(format!("{column} = ?{}", args.len()));
        }
    }
    Ok(())
}

/// Push the callback's SQL: its state and when it is next due.
fn set_callback(
    sets: &mut Vec<String>,
    args: &mut Vec<rusqlite::types::Value>,
    field: &Field<lotsawa_core::Callback>,
) -> Result<(), StoreError> {
    set_field(sets, args, "callback", field, |c| {
        serde_json::to_string(c)
            .map(rusqlite::types::Value::Text)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    })?;
    let due = match field {
        Field::Keep => Field::Keep,
        Field::Set(c) => match (c.status, c.next_attempt_at) {
            (lotsawa_core::CallbackStatus::Pending, Some(t)) => Field::Set(t),
            _ => Field::Clear,
        },
        Field::Clear => Field::Clear,
    };
    set_field(sets, args, "callback_due", &due, |t| {
        Ok(rusqlite::types::Value::Text(ts(*t)))
    })
}

/// Write a planned patch with a compare-and-set on status and run.
fn apply_patch(conn: &Connection, seq: i64, patch: &JobPatch) -> Result<bool, StoreError> {
    if let SlotChange::Take { limit } = patch.slot {
        let held: i64 = query_row(conn, RUNNING_SQL, [], |r| r.get(0))?;
        if held >= i64::from(limit) {
            return Ok(false);
        }
    }
    let text = |s: &String| Ok(rusqlite::types::Value::Text(s.clone()));
    let time = |t: &DateTime<Utc>| Ok(rusqlite::types::Value::Text(ts(*t)));
    let mut args: Vec<rusqlite::types::Value> = vec![
        patch.to.as_str().to_owned().into(),
        i64::from(patch.attempts).into(),
    ];
    let mut sets = vec!["status = ?1".to_owned(), "attempts = ?2".to_owned()];
    set_field(&mut sets, &mut args, "started_at", &patch.started_at, time)?;
    set_field(
        &mut sets,
        &mut args,
        "completed_at",
        &patch.completed_at,
        time,
    )?;
    set_field(
        &mut sets,
        &mut args,
        "cancelled_at",
        &patch.cancelled_at,
        time,
    )?;
    set_field(&mut sets, &mut args, "error", &patch.error, text)?;
    set_field(&mut sets, &mut args, "result", &patch.result, |r| {
        serde_json::to_string(r)
            .map(rusqlite::types::Value::Text)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    })?;
    set_callback(&mut sets, &mut args, &patch.callback)?;
    match patch.queue {
        QueuePlace::Back => {
            args.push(end_of_turn(conn, 0)?.into());
            sets.push(format!("queue_pos = ?{}", args.len()));
        }
        QueuePlace::Front => sets.push(
            "queue_pos = (SELECT COALESCE(MIN(queue_pos), 1) - 1 FROM jobs INDEXED BY jobs_queue WHERE status = 'pending')".into(),
        ),
        QueuePlace::Keep => {}
    }
    args.push(seq.into());
    let n_seq = args.len();
    args.push(patch.from.as_str().to_owned().into());
    let n_from = args.len();
    args.push(i64::from(patch.run).into());
    let n_run = args.len();
    let mut sql = format!(
        "UPDATE jobs SET {} WHERE seq = ?{n_seq} AND status = ?{n_from} AND attempts = ?{n_run}",
        sets.join(", ")
    );
    if patch.requires_all_chunks {
        sql.push_str(" AND chunks_completed = chunks_total");
    }
    if exec(conn, &sql, rusqlite::params_from_iter(args))? != 1 {
        return Ok(false);
    }
    match patch.chunks {
        ChunkChange::None => {}
        ChunkChange::ResetFailed { .. } => {
            exec(
                conn,
                "UPDATE chunks SET status = 'pending', error = NULL
                 WHERE job_seq = ?1 AND status = 'failed'",
                [seq],
            )?;
        }
        ChunkChange::Fail { index } => {
            exec(
                conn,
                "UPDATE chunks SET status = 'failed' WHERE job_seq = ?1 AND idx = ?2 AND status = 'pending'",
                params![seq, index],
            )?;
        }
    }
    Ok(true)
}

/// Slots in use: jobs processing, by the partial index of running jobs.
const RUNNING_SQL: &str =
    "SELECT COUNT(*) FROM jobs INDEXED BY jobs_running WHERE status = 'processing'";

fn read_chunks(conn: &Connection, seq: i64, from: u32) -> Result<Vec<ChunkRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT idx, source, status, attempts, translation, error, duration_ms, run,
                confidence, from_memory, context, warning
         FROM chunks WHERE job_seq = ?1 AND idx >= ?2 ORDER BY idx",
    )?;
    let rows = stmt.query_map(params![seq, from], |r| {
        Ok((
            (
                r.get::<_, u32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, u32>(7)?,
            ),
            (
                r.get::<_, Option<f64>>(8)?,
                r.get::<_, bool>(9)?,
                r.get::<_, Option<String>>(10)?,
                r.get::<_, Option<String>>(11)?,
            ),
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (
            (index, source, status, attempts, translation, error, duration, run),
            (confidence, from_memory, context, warning),
        ) = r?;
        out.push(ChunkRecord {
            index,
            source,
            status: ChunkStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("chunk status '{status}'")))?,
            attempts,
            translation,
            error,
            duration_ms: duration.map(|d| d.max(0) as u64),
            run,
            confidence,
            from_memory,
            context,
            warning,
        });
    }
    Ok(out)
}

#[async_trait]
impl JobStore for Store {
    async fn create(&self, job: &Job, chunks: &[String]) -> PortResult<()> {
        let job = job.clone();
        let chunks = chunks.to_vec();
        Ok(self
            .write_in(Lane::Bulk, move |conn| insert_job(conn, &job, &chunks))
            .await?)
    }

    async fn create_failed(&self, job: &Job) -> PortResult<()> {
        let job = job.clone();
        Ok(self.write(move |conn| insert_job(conn, &job, &[])).await?)
    }

    async fn get(&self, id: JobId) -> PortResult<Job> {
        Ok(self.read(move |conn| load_job(conn, id)).await?.job)
    }

    async fn list(&self, page: &PageRequest) -> PortResult<StorePage> {
        let page = page.clone();
        Ok(self
            .read(move |conn| {
                let mut sql = format!("SELECT {LIST_COLUMNS} FROM jobs WHERE tenant = ?");
                let mut args: Vec<rusqlite::types::Value> =
                    vec![page.filter.tenant.as_str().to_owned().into()];
                if let Some(s) = page.filter.status {
                    sql.push_str(" AND status = ?");
                    args.push(s.as_str().to_owned().into());
                }
                if let Some(k) = page.filter.kind {
                    sql.push_str(" AND kind = ?");
                    args.push(k.as_str().to_owned().into());
                }
                if let Some(after) = &page.after {
                    let before: i64 = after
                        .parse()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| StoreError::InvalidCursor(after.clone()))?;
                    sql.push_str(" AND seq < ?");
                    args.push(before.into());
                }
                sql.push_str(" ORDER BY seq DESC LIMIT ?");
                args.push((i64::from(page.limit) + 1).into());
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(args), job_from_row)?;
                let mut out = Vec::new();
                for r in rows {
                    let (seq, raw) = r?;
                    out.push((seq, raw.into_job()?));
                }
                let more = out.len() > page.limit as usize;
                out.truncate(page.limit as usize);
                let next = if more {
                    out.last().map(|(seq, _)| seq.to_string())
                } else {
                    None
                };
                Ok(StorePage {
                    jobs: out.into_iter().map(|(_, j)| j).collect(),
                    next,
                })
            })
            .await?)
    }

    async fn apply(&self, id: JobId, patch: &JobPatch) -> PortResult<Applied> {
        let patch = patch.clone();
        Ok(self
            .write(move |conn| {
                let seq = seq_of(conn, id)?;
                if apply_patch(conn, seq, &patch)? {
                    Ok(Applied::Done(Box::new(load_job(conn, id)?.job)))
                } else {
                    Ok(Applied::Lost)
                }
            })
            .await?)
    }

    async fn next_pending(&self, n: u32) -> PortResult<Vec<JobId>> {
        Ok(self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id FROM jobs INDEXED BY jobs_queue WHERE status = 'pending' ORDER BY queue_pos LIMIT ?1",
                )?;
                let rows = stmt.query_map([n], |r| r.get::<_, String>(0))?;
                let mut out = Vec::new();
                for r in rows {
                    let id = r?;
                    out.push(
                        id.parse()
                            .map_err(|e: lotsawa_core::ValidationError| StoreError::Corrupt(e.0))?,
                    );
                }
                Ok(out)
            })
            .await?)
    }

    /// One write: the oldest pending job by the queue index, started with
    /// the patch core plans, under the limit.
    async fn claim_next(&self, limit: u32, now: DateTime<Utc>) -> PortResult<Option<Job>> {
        Ok(self
            .write(move |conn| {
                let seq: Option<i64> = conn
                    .query_row(CLAIM_NEXT_SQL, [], |r| r.get(0))
                    .optional()?;
                let Some(seq) = seq else { return Ok(None) };
                let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ?1");
                let (_, raw) = query_row(conn, &sql, [seq], job_from_row)?;
                let job = raw.into_job()?;
                let Ok(patch) = JobPatch::plan(&job, Change::Start { limit }, now) else {
                    return Ok(None);
                };
                if apply_patch(conn, seq, &patch)? {
                    Ok(Some(patch.applied_to(&job)))
                } else {
                    Ok(None)
                }
            })
            .await?)
    }

    async fn checkpoint(&self, id: JobId, run: u32, done: &ChunkDone) -> PortResult<Checkpoint> {
        let done = done.clone();
        Ok(self
            .write(move |conn| checkpoint_in(conn, id, run, &done))
            .await?)
    }

    async fn note_chunk_error(&self, id: JobId, index: u32, error: &str) -> PortResult<()> {
        let error = error.to_owned();
        Ok(self
            .write(move |conn| {
                let seq = seq_of(conn, id)?;
                exec(
                    conn,
                    "UPDATE chunks SET error = ?1, attempts = attempts + 1
                     WHERE job_seq = ?2 AND idx = ?3 AND status = 'pending'",
                    params![error, seq, index],
                )?;
                Ok(())
            })
            .await?)
    }

    async fn chunks(&self, id: JobId, from: u32) -> PortResult<Vec<ChunkRecord>> {
        Ok(self
            .read(move |conn| read_chunks(conn, seq_of(conn, id)?, from))
            .await?)
    }

    async fn progress_inputs(&self, job: &Job) -> PortResult<(u64, Vec<ChunkTiming>)> {
        let (id, run) = (job.id, job.attempts);
        Ok(self
            .read(move |conn| {
                let seq = seq_of(conn, id)?;
                let remaining: i64 = query_row(conn,
                    "SELECT COALESCE(SUM(chars), 0) FROM chunks WHERE job_seq = ?1 AND status != 'completed'",
                    [seq],
                    |r| r.get(0),
                )?;
                let mut stmt = conn.prepare_cached(
                    "SELECT chars, duration_ms FROM chunks
                     WHERE job_seq = ?1 AND status = 'completed' AND run = ?2
                       AND from_memory = 0 AND duration_ms IS NOT NULL
                     ORDER BY idx DESC LIMIT ?3",
                )?;
                let mut timings = stmt
                    .query_map(params![seq, run, lotsawa_core::progress::WINDOW as i64], |r| {
                        Ok(ChunkTiming {
                            chars: r.get::<_, i64>(0)?.max(0) as u64,
                            duration_ms: r.get::<_, Option<i64>>(1)?.unwrap_or(0).max(0) as u64,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                timings.reverse();
                Ok((remaining.max(0) as u64, timings))
            })
            .await?)
    }

    async fn memory_get(&self, key: &str) -> PortResult<Option<(String, Option<f64>)>> {
        let key = key.to_owned();
        Ok(self
            .read(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT translation, confidence FROM memory WHERE key = ?1",
                        [key],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?)
            })
            .await?)
    }

    async fn memory_put(
        &self,
        key: &str,
        translation: &str,
        confidence: Option<f64>,
    ) -> PortResult<()> {
        let (key, translation) = (key.to_owned(), translation.to_owned());
        Ok(self
            .write(move |conn| {
                exec(conn,
                    "INSERT OR IGNORE INTO memory (key, translation, confidence, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![key, translation, confidence, ts(Utc::now())],
                )?;
                Ok(())
            })
            .await?)
    }

    async fn counts(&self) -> PortResult<Vec<(JobStatus, u64)>> {
        Ok(self
            .read(move |conn| {
                let mut out = Vec::new();
                let mut stmt =
                    conn.prepare_cached("SELECT COUNT(*) FROM jobs WHERE status = ?1")?;
                for s in JobStatus::ALL {
                    let n: i64 = stmt.query_row([s.as_str()], |r| r.get(0))?;
                    out.push((*s, n.max(0) as u64));
                }
                Ok(out)
            })
            .await?)
    }

    async fn pending_count(&self, tenant: &lotsawa_core::Tenant) -> PortResult<u64> {
        let tenant = tenant.as_str().to_owned();
        Ok(self
            .read(move |conn| {
                let n: i64 = conn
                    .prepare_cached(
                        "SELECT COUNT(*) FROM jobs WHERE tenant = ?1 AND status = 'pending'",
                    )?
                    .query_row([tenant], |r| r.get(0))?;
                Ok(n.max(0) as u64)
            })
            .await?)
    }

    async fn callbacks_due(&self, now: DateTime<Utc>, limit: u32) -> PortResult<Vec<Job>> {
        let now = ts(now);
        Ok(self
            .read(move |conn| {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_callback_due \
                     WHERE callback_due IS NOT NULL AND callback_due <= ?1 \
                     ORDER BY callback_due LIMIT ?2"
                );
                let rows: Vec<(i64, RawJob)> = conn
                    .prepare_cached(&sql)?
                    .query_map(params![now, limit], job_from_row)?
                    .collect::<Result<_, _>>()?;
                rows.into_iter().map(|(_, r)| r.into_job()).collect()
            })
            .await?)
    }

    async fn callback_update(
        &self,
        id: JobId,
        before: &lotsawa_core::Callback,
        after: &lotsawa_core::Callback,
    ) -> PortResult<bool> {
        let before =
            serde_json::to_string(before).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let after = after.clone();
        Ok(self
            .write(move |conn| {
                let mut sets = Vec::new();
                let mut args: Vec<rusqlite::types::Value> = Vec::new();
                set_callback(&mut sets, &mut args, &Field::Set(after))?;
                args.push(id.to_string().into());
                let n_id = args.len();
                args.push(before.into());
                let n_before = args.len();
                let sql = format!(
                    "UPDATE jobs SET {} WHERE id = ?{n_id} AND callback = ?{n_before}",
                    sets.join(", ")
                );
                Ok(exec(conn, &sql, rusqlite::params_from_iter(args))? == 1)
            })
            .await?)
    }

    async fn slots_in_use(&self) -> PortResult<u32> {
        Ok(self
            .read(move |conn| {
                let n: i64 = query_row(conn, RUNNING_SQL, [], |r| r.get(0))?;
                Ok(n.max(0) as u32)
            })
            .await?)
    }

    async fn idempotency_put(
        &self,
        record: &IdempotencyRecord,
        expired_before: DateTime<Utc>,
    ) -> PortResult<IdempotencyRecord> {
        let r = record.clone();
        Ok(self
            .write(move |conn| {
                exec(
                    conn,
                    "INSERT INTO idempotency (tenant, key, fingerprint, job_id, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (tenant, key) DO UPDATE SET
                        fingerprint = excluded.fingerprint, job_id = excluded.job_id,
                        created_at = excluded.created_at
                     WHERE idempotency.created_at < ?6",
                    params![
                        r.tenant.as_str(),
                        r.key,
                        r.fingerprint,
                        r.job_id.to_string(),
                        ts(r.created_at),
                        ts(expired_before)
                    ],
                )?;
                let (fingerprint, job_id, created_at): (String, String, String) = query_row(
                    conn,
                    "SELECT fingerprint, job_id, created_at FROM idempotency
                         WHERE tenant = ?1 AND key = ?2",
                    params![r.tenant.as_str(), r.key],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )?;
                Ok(IdempotencyRecord {
                    tenant: r.tenant,
                    key: r.key,
                    fingerprint,
                    job_id: job_id
                        .parse()
                        .map_err(|e: lotsawa_core::ValidationError| StoreError::Corrupt(e.0))?,
                    created_at: parse_ts(Some(created_at))?.unwrap_or_default(),
                })
            })
            .await?)
    }

    /// Read, refill and write the bucket on the writer: one at a time.
    async fn take_token(
        &self,
        tenant: &Tenant,
        limit: lotsawa_core::rate::RateLimit,
        now: DateTime<Utc>,
    ) -> PortResult<Option<std::time::Duration>> {
        let tenant = tenant.clone();
        Ok(self
            .write(move |conn| {
                let row: Option<(f64, String)> = conn
                    .query_row(
                        "SELECT tokens, at FROM rate_buckets WHERE tenant = ?1",
                        [tenant.as_str()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let (tokens, at) = match row {
                    Some((t, at)) => (Some(t), parse_ts(Some(at))?),
                    None => (None, None),
                };
                let (left, wait) = lotsawa_core::rate::take(limit, tokens, at, now);
                exec(
                    conn,
                    "INSERT INTO rate_buckets (tenant, tokens, at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
                    params![tenant.as_str(), left, ts(now)],
                )?;
                Ok(wait)
            })
            .await?)
    }

    async fn batch_put(&self, batch: &lotsawa_core::batch::Batch) -> PortResult<()> {
        let b = batch.clone();
        let items =
            serde_json::to_string(&b.items).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(self
            .write(move |conn| {
                exec(
                    conn,
                    "INSERT INTO batches (id, tenant, created_at, items) VALUES (?1, ?2, ?3, ?4)",
                    params![b.id.to_string(), b.tenant.as_str(), ts(b.created_at), items],
                )?;
                Ok(())
            })
            .await?)
    }

    async fn batch_get(&self, id: lotsawa_core::BatchId) -> PortResult<lotsawa_core::batch::Batch> {
        Ok(self
            .read(move |conn| {
                query_row(
                    conn,
                    "SELECT seq, id, tenant, created_at, items FROM batches WHERE id = ?1",
                    [id.to_string()],
                    batch_from_row,
                )
                .optional()?
                .ok_or(StoreError::BatchNotFound(id))?
                .into_batch()
            })
            .await?)
    }

    async fn batch_list(
        &self,
        tenant: &Tenant,
        limit: u32,
        after: Option<&str>,
    ) -> PortResult<(Vec<lotsawa_core::batch::Batch>, Option<String>)> {
        let before: i64 = match after {
            Some(p) => p
                .parse()
                .map_err(|_| lotsawa_core::StoreError::InvalidCursor(p.to_owned()))?,
            None => i64::MAX,
        };
        let tenant = tenant.as_str().to_owned();
        Ok(self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, id, tenant, created_at, items FROM batches \
                     WHERE tenant = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
                )?;
                let rows = stmt.query_map(
                    params![tenant, before, i64::from(limit) + 1],
                    batch_from_row,
                )?;
                let mut raws = Vec::new();
                for r in rows {
                    raws.push(r?);
                }
                let more = raws.len() > limit as usize;
                raws.truncate(limit as usize);
                let next = if more {
                    raws.last().map(|r| r.seq.to_string())
                } else {
                    None
                };
                let mut out = Vec::with_capacity(raws.len());
                for r in raws {
                    out.push(r.into_batch()?);
                }
                Ok((out, next))
            })
            .await?)
    }

    async fn get_briefs(&self, ids: &[JobId]) -> PortResult<Vec<Job>> {
        let ids = ids.to_vec();
        Ok(self
            .read(move |conn| {
                let sql = format!("SELECT {LIST_COLUMNS} FROM jobs WHERE id = ?1");
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some((_, raw)) =
                        stmt.query_row([id.to_string()], job_from_row).optional()?
                    {
                        out.push(raw.into_job()?);
                    }
                }
                Ok(out)
            })
            .await?)
    }

    async fn key_put(&self, record: &ApiKeyRecord, hash: &str) -> PortResult<()> {
        let (r, hash) = (record.clone(), hash.to_owned());
        Ok(self
            .write(move |conn| {
                exec(
                    conn,
                    "INSERT INTO api_keys (id, hash, tenant, created_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        r.id,
                        hash,
                        r.tenant.as_str(),
                        ts(r.created_at),
                        r.revoked_at.map(ts)
                    ],
                )?;
                Ok(())
            })
            .await?)
    }

    async fn key_find(&self, hash: &str) -> PortResult<Option<ApiKeyRecord>> {
        let hash = hash.to_owned();
        Ok(self
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT id, tenant, created_at, revoked_at FROM api_keys WHERE hash = ?1",
                )?
                .query_row([hash], key_from_row)
                .optional()?
                .map(RawKey::into_record)
                .transpose()
            })
            .await?)
    }

    async fn keys(&self) -> PortResult<Vec<ApiKeyRecord>> {
        Ok(self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                "SELECT id, tenant, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
            )?;
                let rows = stmt.query_map([], key_from_row)?;
                let mut out = Vec::new();
                for r in rows {
                    out.push(r?.into_record()?);
                }
                Ok(out)
            })
            .await?)
    }

    async fn key_revoke(&self, id: &str, at: DateTime<Utc>) -> PortResult<bool> {
        let id = id.to_owned();
        Ok(self
            .write(move |conn| {
                let n = exec(
                    conn,
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                    params![id, ts(at)],
                )?;
                Ok(n > 0)
            })
            .await?)
    }
}

struct RawBatch {
    seq: i64,
    id: String,
    tenant: String,
    created_at: String,
    items: String,
}

fn batch_from_row(row: &Row<'_>) -> rusqlite::Result<RawBatch> {
    Ok(RawBatch {
        seq: row.get(0)?,
        id: row.get(1)?,
        tenant: row.get(2)?,
        created_at: row.get(3)?,
        items: row.get(4)?,
    })
}

impl RawBatch {
    fn into_batch(self) -> Result<lotsawa_core::batch::Batch, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(e);
        Ok(lotsawa_core::batch::Batch {
            id: self
                .id
                .parse()
                .map_err(|e: lotsawa_core::ValidationError| corrupt(e.0))?,
            tenant: Tenant::parse(&self.tenant).map_err(|e| corrupt(e.0))?,
            created_at: parse_ts(Some(self.created_at))?.unwrap_or_default(),
            items: serde_json::from_str(&self.items)
                .map_err(|e| corrupt(format!("batch items: {e}")))?,
        })
    }
}

struct RawKey(String, String, String, Option<String>);

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<RawKey> {
    Ok(RawKey(row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

impl RawKey {
    fn into_record(self) -> Result<ApiKeyRecord, StoreError> {
        Ok(ApiKeyRecord {
            id: self.0,
            tenant: Tenant::parse(&self.1).map_err(|e| StoreError::Corrupt(e.0))?,
            created_at: parse_ts(Some(self.2))?.unwrap_or_default(),
            revoked_at: parse_ts(self.3)?,
        })
    }
}

fn writer_loop(conn: Connection, queue: Arc<WriteQueue>) {
    loop {
        let batch = queue.next_batch();
        if batch.is_empty() {
            return;
        }
        let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
        if let Err(e) = run(&conn, "BEGIN IMMEDIATE") {
            let msg = e.to_string();
            for op in batch {
                // Run nothing; tell every caller the batch could not start.
                let (_, reply) = op(Err(msg.clone()));
                reply(None);
            }
            continue;
        }
        // A write runs inside its own savepoint, so a failing write leaves
        // nothing behind and the rest of the batch commits. If the savepoint
        // itself cannot be set, undone or released, the batch is abandoned:
        // nothing of it is committed and every caller hears why.
        let mut abandoned: Option<String> = None;
        for op in batch {
            if let Some(why) = &abandoned {
                let (_, reply) = op(Err(why.clone()));
                replies.push(reply);
                continue;
            }
            if let Err(e) = run(&conn, "SAVEPOINT op") {
                abandoned = Some(format!("savepoint: {e}"));
                let (_, reply) = op(Err(format!("savepoint: {e}")));
                replies.push(reply);
                continue;
            }
            let (ok, reply) = op(Ok(&conn));
            replies.push(reply);
            let undo = if ok {
                Ok(())
            } else {
                run(&conn, "ROLLBACK TO op")
            };
            if let Err(e) = undo.and_then(|()| run(&conn, "RELEASE op")) {
                abandoned = Some(format!("savepoint: {e}"));
            }
        }
        let commit = match abandoned {
            Some(why) => Some(why),
            None => run(&conn, "COMMIT").err().map(|e| e.to_string()),
        };
        if commit.is_some()
            && !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "rolling back an abandoned batch failed");
        }
        for r in replies {
            r(commit.clone());
        }
    }
}

#[cfg(test)]
mod lane_tests {
    use super::*;

    fn op(tag: &'static str, log: &Arc<Mutex<Vec<&'static str>>>) -> Op {
        let log = log.clone();
        Box::new(move |_| {
            log.lock().expect("log").push(tag);
            (true, Box::new(|_| {}))
        })
    }

    fn run(batch: Vec<Op>) {
        for o in batch {
            let (_, reply) = o(Err(String::new()));
            reply(None);
        }
    }

    #[test]
    fn a_flood_of_creates_waits_behind_claims_while_jobs_are_worked_on() {
        let q = WriteQueue {
            lanes: Mutex::new(Lanes::default()),
            ready: std::sync::Condvar::new(),
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..2000 {
            q.push(Lane::Bulk, op("create", &log)).expect("push");
        }
        // Idle writer: creates go in full batches.
        run(q.next_batch());
        assert_eq!(log.lock().expect("log").len(), MAX_BATCH);
        log.lock().expect("log").clear();
        // Work arrives: urgent writes first, and a few creates beside them.
        for _ in 0..10 {
            q.push(Lane::Urgent, op("claim", &log)).expect("push");
        }
        run(q.next_batch());
        let taken = log.lock().expect("log").clone();
        assert_eq!(&taken[..10], &["claim"; 10]);
        assert_eq!(
            taken.len(),
            10 + (10 * BULK_PER_URGENT).max(BULK_WHILE_BUSY)
        );
        log.lock().expect("log").clear();
        // Still busy (within the window) with no urgent write: the floor.
        run(q.next_batch());
        assert_eq!(log.lock().expect("log").len(), BULK_WHILE_BUSY);
        log.lock().expect("log").clear();
        // The window passes: full batches again.
        std::thread::sleep(BUSY_WINDOW + std::time::Duration::from_millis(5));
        run(q.next_batch());
        assert_eq!(log.lock().expect("log").len(), MAX_BATCH);
    }
}
