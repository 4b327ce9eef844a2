//! The job facet: creation, claims, status changes, checkpoints, chunks
//! and lists, over the writer and the readers.

use super::*;

/// The claim statement: the oldest pending job, by the partial queue index
/// (finished rows are not in it, so it stays fast however many there are).
pub const CLAIM_NEXT_SQL: &str = "SELECT seq FROM jobs INDEXED BY jobs_claim WHERE status = 'pending' ORDER BY priority DESC, queue_pos LIMIT 1";
/// The chunk checkpoint statement, by primary key.
pub const CHECKPOINT_SQL: &str =
    "UPDATE chunks SET status = 'completed', translation = ?1, duration_ms = ?2,
    attempts = attempts + ?3, error = NULL, run = ?4, confidence = ?7, from_memory = ?8,
    context = ?9, warning = ?10, usage_calls = ?11, prompt_tokens = ?12,
    completion_tokens = ?13, examples = ?14
 WHERE job_seq = ?5 AND idx = ?6 AND status = 'pending'";

/// One committed attempt's usage added to its tenant's day.
const ADD_USAGE_SQL: &str = "INSERT INTO usage
    (tenant, day, engine, model, calls, prompt_tokens, completion_tokens)
 SELECT tenant, ?2, ?3, ?4, ?5, ?6, ?7 FROM jobs WHERE seq = ?1
 ON CONFLICT (tenant, day, engine, model) DO UPDATE SET
    calls = calls + excluded.calls,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens";

/// Queue positions of one turn span this many values: a position is
/// `turn × TURN_SPAN + place in the turn`, so the one queue index orders
/// jobs by turn, then by arrival ([`lotsawa_core::batch`]).
pub(super) const TURN_SPAN: i64 = 1 << 32;

/// The queue's current turn: that of the first pending job (0 when none).
pub(super) const CURRENT_TURN_SQL: &str = "SELECT MAX(COALESCE(MIN(queue_pos), 0), 0) / 4294967296 \
    FROM jobs INDEXED BY jobs_queue WHERE status = 'pending'";

/// The queue position at the end of turn `current + ahead`.
pub(super) fn end_of_turn(conn: &Connection, ahead: u32) -> Result<i64, SqliteError> {
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

/// Record a completed chunk of run `run` (the port's `checkpoint`), inside
/// the current write.
pub(super) fn checkpoint_in(
    conn: &Connection,
    id: JobId,
    run: u32,
    done: &ChunkDone,
) -> Result<Checkpoint, SqliteError> {
    let seq = seq_of(conn, id)?;
    let live: bool = query_row(
        conn,
        "SELECT EXISTS(SELECT 1 FROM jobs WHERE seq = ?1 AND status = 'processing' AND run = ?2)",
        params![seq, run],
        |r| r.get(0),
    )?;
    if !live {
        return Ok(Checkpoint::RunEnded);
    }
    let usage = done.usage.as_ref().map(|u| u.usage).unwrap_or_default();
    let n = exec(
        conn,
        CHECKPOINT_SQL,
        params![
            done.translation,
            done.duration_ms.map(|d| d as i64),
            done.provider_calls,
            run,
            seq,
            done.index,
            done.confidence,
            done.from_memory,
            done.context,
            done.warning,
            usage.calls as i64,
            usage.prompt_tokens as i64,
            usage.completion_tokens as i64,
            done.examples
        ],
    )?;
    if n != 1 {
        return Ok(Checkpoint::AlreadyDone);
    }
    if let Some(u) = &done.usage
        && !u.usage.is_zero()
    {
        exec(
            conn,
            ADD_USAGE_SQL,
            params![
                seq,
                chrono::Utc::now().format("%Y-%m-%d").to_string(),
                u.engine,
                u.model.as_deref().unwrap_or(""),
                u.usage.calls as i64,
                u.usage.prompt_tokens as i64,
                u.usage.completion_tokens as i64
            ],
        )?;
    }
    exec(
        conn,
        "UPDATE jobs SET chunks_completed = chunks_completed + 1 WHERE seq = ?1",
        [seq],
    )?;
    Ok(Checkpoint::Recorded)
}

/// Claim up to `max` of the oldest pending jobs under `limit`, inside the
/// caller's transaction; each with its row's sequence number.
pub(super) fn claim_in(
    conn: &Connection,
    limit: u32,
    max: u32,
    now: DateTime<Utc>,
) -> Result<Vec<StoredJob>, SqliteError> {
    let ids: Vec<String> = conn
        .prepare_cached(
            "SELECT id FROM jobs INDEXED BY jobs_claim WHERE status = 'pending' \
             ORDER BY priority DESC, queue_pos LIMIT ?1",
        )?
        .query_map([max], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut claimed = Vec::with_capacity(ids.len());
    for raw in ids {
        let id: JobId = raw
            .parse()
            .map_err(|e: lotsawa_core::ValidationError| SqliteError::Corrupt(e.0))?;
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
pub(super) fn set_field<T>(
    sets: &mut Vec<String>,
    args: &mut Vec<rusqlite::types::Value>,
    column: &str,
    field: &Field<T>,
    to_sql: impl Fn(&T) -> Result<rusqlite::types::Value, SqliteError>,
) -> Result<(), SqliteError> {
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
pub(super) fn set_callback(
    sets: &mut Vec<String>,
    args: &mut Vec<rusqlite::types::Value>,
    field: &Field<lotsawa_core::Callback>,
) -> Result<(), SqliteError> {
    set_field(sets, args, "callback", field, |c| {
        serde_json::to_string(c)
            .map(rusqlite::types::Value::Text)
            .map_err(|e| SqliteError::Corrupt(e.to_string()))
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
pub(super) fn apply_patch(
    conn: &Connection,
    seq: i64,
    patch: &JobPatch,
) -> Result<bool, SqliteError> {
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
        i64::from(patch.new_run).into(),
    ];
    let mut sets = vec!["status = ?1".to_owned(), "run = ?2".to_owned()];
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
            .map_err(|e| SqliteError::Corrupt(e.to_string()))
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
        "UPDATE jobs SET {} WHERE seq = ?{n_seq} AND status = ?{n_from} AND run = ?{n_run}",
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
pub(super) const RUNNING_SQL: &str =
    "SELECT COUNT(*) FROM jobs INDEXED BY jobs_running WHERE status = 'processing'";

pub(super) fn read_chunks(
    conn: &Connection,
    seq: i64,
    from: u32,
) -> Result<Vec<ChunkRecord>, SqliteError> {
    let mut stmt = conn.prepare_cached(
        "SELECT idx, source, status, attempts, translation, error, duration_ms, run,
                confidence, from_memory, context, warning,
                usage_calls, prompt_tokens, completion_tokens,
                revisions, current_rev, reviewed, version, examples
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
            lotsawa_core::usage::Usage {
                calls: r.get::<_, i64>(12)?.max(0) as u64,
                prompt_tokens: r.get::<_, i64>(13)?.max(0) as u64,
                completion_tokens: r.get::<_, i64>(14)?.max(0) as u64,
            },
            (
                r.get::<_, Option<String>>(15)?,
                r.get::<_, u32>(16)?,
                r.get::<_, bool>(17)?,
                r.get::<_, u32>(18)?,
            ),
            r.get::<_, Option<String>>(19)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (
            (index, source, status, attempts, translation, error, duration, run),
            (confidence, from_memory, context, warning),
            usage,
            (revisions, current, reviewed, version),
            examples,
        ) = r?;
        let revisions = match revisions {
            Some(text) => lotsawa_core::review::decode(&text).map_err(SqliteError::Corrupt)?,
            None => Vec::new(),
        };
        out.push(ChunkRecord {
            index,
            source,
            status: ChunkStatus::parse(&status)
                .ok_or_else(|| SqliteError::Corrupt(format!("chunk status '{status}'")))?,
            provider_calls: attempts,
            translation,
            error,
            duration_ms: duration.map(|d| d.max(0) as u64),
            run,
            confidence,
            from_memory,
            context,
            warning,
            usage,
            review: lotsawa_core::review::ChunkReview {
                revisions,
                current,
                reviewed,
                version,
            },
            examples,
        });
    }
    Ok(out)
}

#[async_trait]
impl JobStore for SqliteStore {
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
                if let Some(p) = page.filter.priority {
                    sql.push_str(" AND priority = ?");
                    args.push(i64::from(p).into());
                }
                if let Some(after) = &page.after {
                    let before: i64 = after
                        .parse()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| SqliteError::InvalidCursor(after.clone()))?;
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
                    "SELECT id FROM jobs INDEXED BY jobs_claim WHERE status = 'pending' ORDER BY priority DESC, queue_pos LIMIT ?1",
                )?;
                let rows = stmt.query_map([n], |r| r.get::<_, String>(0))?;
                let mut out = Vec::new();
                for r in rows {
                    let id = r?;
                    out.push(
                        id.parse()
                            .map_err(|e: lotsawa_core::ValidationError| SqliteError::Corrupt(e.0))?,
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
        let (id, run) = (job.id, job.run);
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
}
