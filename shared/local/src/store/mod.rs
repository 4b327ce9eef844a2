//! The SQLite store: one file in WAL mode, a single writer thread that
//! batches queued writes into one transaction (one fsync for many commits),
//! and a small pool of reader connections.
//!
//! Every status change is a compare-and-set on the old status (and, for a
//! running job, on its run number), so a stale worker can never move a job
//! backwards or write into a newer run.

mod admission;
mod batches;
mod callbacks;
mod glossaries;
mod jobs;
mod keys;
mod memory;
mod review;
mod rows;
mod schema;
mod segments;
mod usage;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use lotsawa_core::progress::ChunkTiming;
use lotsawa_core::store::{
    AdmissionStore, Applied, BatchStore, CallbackStore, Change, Checkpoint, ChunkChange, ChunkDone,
    Field, IdempotencyRecord, JobPatch, JobStore, KeyStore, MemoryStore, PageRequest, QueuePlace,
    SlotChange, StorePage,
};
use lotsawa_core::{
    ApiKeyRecord, ChunkRecord, ChunkStatus, Job, JobConfig, JobId, JobResult, JobStatus, Tenant,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use tokio::sync::oneshot;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
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
    /// Another server holds the database.
    #[error("another lotsawa server is running on {}", .0.display())]
    InUse(PathBuf),
    /// The database file was written by a newer build.
    #[error(
        "the database has schema version {found}, newer than this build's {supported}; \
         run the lotsawa version that wrote it, or a newer one"
    )]
    TooNew {
        /// The file's version.
        found: usize,
        /// The newest this build opens.
        supported: usize,
    },
}

impl SqliteError {
    /// What is wrong with the storage itself, when that is the failure: a
    /// full disk, a read-only file or file system, an I/O error.
    pub fn storage_fault(&self) -> Option<&'static str> {
        let text = match self {
            SqliteError::Sqlite(e) => match e.sqlite_error_code() {
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
            SqliteError::Commit(m) => m.as_str(),
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

impl From<SqliteError> for lotsawa_core::StoreError {
    fn from(e: SqliteError) -> Self {
        use lotsawa_core::StoreError as Port;
        match e {
            SqliteError::NotFound(id) => Port::NotFound(id),
            SqliteError::BatchNotFound(id) => Port::BatchNotFound(id),
            SqliteError::InvalidCursor(c) => Port::InvalidCursor(c),
            SqliteError::Closed => Port::Closed,
            SqliteError::Corrupt(m) => Port::Corrupt(m),
            e if e.storage_fault().is_some() => {
                Port::Storage(e.storage_fault().unwrap_or_default().to_owned())
            }
            SqliteError::Sqlite(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) =>
            {
                Port::Throttled(Box::new(e))
            }
            // A second job with an id already taken (a repeated create).
            SqliteError::Sqlite(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) =>
            {
                Port::ConditionFailed(e.to_string())
            }
            other @ (SqliteError::Sqlite(_)
            | SqliteError::Commit(_)
            | SqliteError::Join(_)
            | SqliteError::TooNew { .. }
            | SqliteError::InUse(_)) => Port::backend("sqlite", other),
        }
    }
}

type PortResult<T> = Result<T, lotsawa_core::StoreError>;

type Reply = Box<dyn FnOnce(Option<String>) + Send>;
/// A queued write: run on the writer's connection, or told why it cannot run.
type Op = Box<dyn FnOnce(Result<&Connection, String>) -> (bool, Reply) + Send>;

use jobs::*;
use rows::*;
use schema::*;
use writer::*;

pub use jobs::{CHECKPOINT_SQL, CLAIM_NEXT_SQL};
pub use lotsawa_core::store::Finish;
pub(crate) use schema::create_private as create_private_file;
pub use schema::{Durability, SCHEMA_VERSION};
pub use writer::Lane;

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<WriteQueue>,
    /// Dropped with the last clone of the store: closes the queue, so the
    /// writer finishes what is queued and stops.
    _open: Arc<QueueGuard>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// At most [`READERS`] reads at once, so connections stay bounded
    /// however many requests and streams read.
    read_permits: Arc<tokio::sync::Semaphore>,
    path: PathBuf,
    /// Each tenant's fuzzy index over its segments, built at its first
    /// lookup and kept up to date by this process's writes.
    fuzzy: Arc<segments::FuzzyIndexes>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Open (creating if needed) the database file and start the writer,
    /// every commit fsynced.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SqliteError> {
        Self::open_with(path, Durability::Full)
    }

    /// Open with the given durability of commits.
    pub fn open_with(path: impl AsRef<Path>, durability: Durability) -> Result<Self, SqliteError> {
        let path = path.as_ref().to_path_buf();
        create_private(&path)?;
        let mut conn = open_conn_with(&path, false, durability)?;
        migrate(&mut conn)?;
        let queue = Arc::new(WriteQueue {
            lanes: Mutex::new(Lanes::default()),
            ready: std::sync::Condvar::new(),
        });
        let rx = queue.clone();
        thread::Builder::new()
            .name("lotsawa-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| SqliteError::Commit(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            _open: Arc::new(QueueGuard(queue.clone())),
            writer: queue,
            readers: Arc::new(Mutex::new(Vec::new())),
            read_permits: Arc::new(tokio::sync::Semaphore::new(READERS)),
            path,
            fuzzy: Arc::default(),
        })
    }

    /// Run `f` on the writer inside the current batch's transaction, in
    /// the urgent lane.
    pub async fn write<T, F>(&self, f: F) -> Result<T, SqliteError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, SqliteError> + Send + 'static,
    {
        self.write_in(Lane::Urgent, f).await
    }

    /// Run `f` on the writer in `lane`.
    pub async fn write_in<T, F>(&self, lane: Lane, f: F) -> Result<T, SqliteError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, SqliteError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, SqliteError>>();
        let op: Op = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => f(conn),
                Err(e) => Err(SqliteError::Commit(e)),
            };
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |commit_error| {
                let out = match commit_error {
                    Some(e) if ok => Err(SqliteError::Commit(e)),
                    _ => result,
                };
                let _ = tx.send(out);
            });
            (ok, reply)
        });
        self.writer.push(lane, op)?;
        rx.await.map_err(|_| SqliteError::Closed)?
    }

    /// Run `f` on a pooled read connection (WAL readers never block the writer).
    pub async fn read<T, F>(&self, f: F) -> Result<T, SqliteError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, SqliteError> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        let permit = self
            .read_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SqliteError::Closed)?;
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
        .map_err(|e| SqliteError::Join(e.to_string()))?
    }

    /// Record a job's last chunk and complete the job in one write (one
    /// commit): the result is assembled from the ledger as committed in the
    /// same transaction, through the same planned transition as a separate
    /// completion. A job with a chunk still unfinished is only checkpointed.
    /// With `hand_off` (the concurrency limit), a job that completed hands
    /// its slot on: the oldest pending job is claimed in the same commit and
    /// returned, so its runner goes on without a round through the
    /// scheduler.
    pub async fn finish_last_chunk(
        &self,
        id: JobId,
        run: u32,
        done: &ChunkDone,
        label: lotsawa_core::pipeline::ResultLabel,
        hand_off: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<Finish, SqliteError> {
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
            let result = lotsawa_core::pipeline::job_result(stored.job.kind, &ledger, &label);
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
    ) -> Result<Vec<Job>, SqliteError> {
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
    ) -> Result<usize, SqliteError> {
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
    pub async fn flush(&self) -> Result<(), SqliteError> {
        self.write(|_| Ok(())).await
    }

    /// `EXPLAIN QUERY PLAN` of a statement, for the plan tests.
    pub async fn query_plan(&self, sql: &'static str) -> Result<String, SqliteError> {
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
    pub async fn processing_jobs(&self) -> Result<Vec<Job>, SqliteError> {
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

#[async_trait]
impl lotsawa_core::store::QueueStore for SqliteStore {
    async fn claim_many(&self, limit: u32, max: u32, now: DateTime<Utc>) -> PortResult<Vec<Job>> {
        Ok(SqliteStore::claim_many(self, limit, max, now).await?)
    }

    async fn finish_last_chunk(
        &self,
        id: JobId,
        run: u32,
        done: &ChunkDone,
        label: lotsawa_core::pipeline::ResultLabel,
        hand_off: Option<u32>,
        now: DateTime<Utc>,
    ) -> PortResult<Finish> {
        Ok(SqliteStore::finish_last_chunk(self, id, run, done, label, hand_off, now).await?)
    }

    /// Every job left processing: this server owns the file, so whatever
    /// runs in it was its own before it stopped.
    async fn resumable(&self) -> PortResult<Vec<Job>> {
        Ok(self.processing_jobs().await?)
    }

    async fn purge_finished(&self, before: DateTime<Utc>, limit: u32) -> PortResult<usize> {
        Ok(SqliteStore::purge_finished(self, before, limit).await?)
    }

    async fn flush(&self) -> PortResult<()> {
        Ok(SqliteStore::flush(self).await?)
    }
}
