//! How jobs, batches and keys are stored as rows, and read back.

use super::*;

pub(super) const JOB_COLUMNS: &str = "seq, id, kind, status, source, config, result, error, chunks_total, \
    chunks_completed, created_at, started_at, completed_at, cancelled_at, run, tenant, callback, \
    batch, trace, reviewed, edits";
pub(super) const LIST_COLUMNS: &str = "seq, id, kind, status, '' AS source, config, NULL AS result, error, \
    chunks_total, chunks_completed, created_at, started_at, completed_at, cancelled_at, run, \
    tenant, callback, batch, NULL AS trace, reviewed, edits";

pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(super) fn parse_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>, SqliteError> {
    s.map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| SqliteError::Corrupt(format!("timestamp '{s}': {e}")))
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

pub(super) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, RawJob)> {
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
            run: row.get(14)?,
            tenant: row.get(15)?,
            callback: row.get(16)?,
            batch: row.get(17)?,
            trace: row.get(18)?,
            reviewed: row.get(19)?,
            edits: row.get(20)?,
        },
    ))
}

pub(super) struct RawJob {
    pub(super) id: String,
    pub(super) kind: String,
    pub(super) status: String,
    pub(super) source: String,
    pub(super) config: String,
    pub(super) result: Option<String>,
    pub(super) error: Option<String>,
    pub(super) chunks_total: u32,
    pub(super) chunks_completed: u32,
    pub(super) created_at: String,
    pub(super) started_at: Option<String>,
    pub(super) completed_at: Option<String>,
    pub(super) cancelled_at: Option<String>,
    pub(super) run: u32,
    pub(super) tenant: String,
    pub(super) callback: Option<String>,
    pub(super) batch: Option<String>,
    pub(super) trace: Option<String>,
    pub(super) reviewed: u32,
    pub(super) edits: u32,
}

/// A job's batch as stored: `<batch id>:<item index>`.
pub(super) fn batch_text(r: &lotsawa_core::BatchRef) -> String {
    format!("{}:{}", r.id, r.index)
}

pub(super) fn parse_batch(text: &str) -> Result<lotsawa_core::BatchRef, SqliteError> {
    let corrupt = || SqliteError::Corrupt(format!("batch '{text}'"));
    let (id, index) = text.split_once(':').ok_or_else(corrupt)?;
    Ok(lotsawa_core::BatchRef {
        id: id.parse().map_err(|_| corrupt())?,
        index: index.parse().map_err(|_| corrupt())?,
    })
}

impl RawJob {
    pub(super) fn into_job(self) -> Result<Job, SqliteError> {
        let corrupt = |e: String| SqliteError::Corrupt(e);
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
            run: self.run,
            batch: self.batch.as_deref().map(parse_batch).transpose()?,
            trace: self.trace,
            review: lotsawa_core::review::ReviewCounts {
                reviewed: self.reviewed,
                edits: self.edits,
            },
            callback: self
                .callback
                .map(|c| serde_json::from_str::<lotsawa_core::Callback>(&c))
                .transpose()
                .map_err(|e| corrupt(format!("callback: {e}")))?,
        })
    }
}

pub(super) fn load_job(conn: &Connection, id: JobId) -> Result<StoredJob, SqliteError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
    let (seq, raw) = query_row(conn, &sql, [id.to_string()], job_from_row)
        .optional()?
        .ok_or(SqliteError::NotFound(id))?;
    Ok(StoredJob {
        seq,
        job: raw.into_job()?,
    })
}

pub(super) fn seq_of(conn: &Connection, id: JobId) -> Result<i64, SqliteError> {
    query_row(
        conn,
        "SELECT seq FROM jobs WHERE id = ?1",
        [id.to_string()],
        |r| r.get(0),
    )
    .optional()?
    .ok_or(SqliteError::NotFound(id))
}

pub(super) fn insert_job(
    conn: &Connection,
    job: &Job,
    chunks: &[String],
) -> Result<(), SqliteError> {
    let config =
        serde_json::to_string(&job.config).map_err(|e| SqliteError::Corrupt(e.to_string()))?;
    let queue_pos = end_of_turn(conn, job.batch.map_or(0, |b| b.index))?;
    exec(
        conn,
        "INSERT INTO jobs (id, kind, status, source, config, error, chunks_total, queue_pos,
                           created_at, completed_at, run, tenant, batch, trace, priority)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?12, ?8, ?9, ?10, ?11, ?13, ?14, ?15)",
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
            job.run,
            job.tenant.as_str(),
            queue_pos,
            job.batch.as_ref().map(batch_text),
            job.trace,
            job.config.priority
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

pub(super) struct RawBatch {
    pub(super) seq: i64,
    pub(super) id: String,
    pub(super) tenant: String,
    pub(super) created_at: String,
    pub(super) items: String,
}

pub(super) fn batch_from_row(row: &Row<'_>) -> rusqlite::Result<RawBatch> {
    Ok(RawBatch {
        seq: row.get(0)?,
        id: row.get(1)?,
        tenant: row.get(2)?,
        created_at: row.get(3)?,
        items: row.get(4)?,
    })
}

impl RawBatch {
    pub(super) fn into_batch(self) -> Result<lotsawa_core::batch::Batch, SqliteError> {
        let corrupt = |e: String| SqliteError::Corrupt(e);
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

pub(super) struct RawKey(String, String, String, Option<String>);

pub(super) fn key_from_row(row: &Row<'_>) -> rusqlite::Result<RawKey> {
    Ok(RawKey(row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

impl RawKey {
    pub(super) fn into_record(self) -> Result<ApiKeyRecord, SqliteError> {
        Ok(ApiKeyRecord {
            id: self.0,
            tenant: Tenant::parse(&self.1).map_err(|e| SqliteError::Corrupt(e.0))?,
            created_at: parse_ts(Some(self.2))?.unwrap_or_default(),
            revoked_at: parse_ts(self.3)?,
        })
    }
}
