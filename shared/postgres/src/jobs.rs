//! The job facet and the scheduler's: creation, claims under the
//! deployment's concurrency limit, status changes, checkpoints, leases,
//! chunks and lists.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use lotsawa_core::progress::ChunkTiming;
use lotsawa_core::store::{
    Applied, Change, Checkpoint, ChunkChange, ChunkDone, Field, Finish, Held, JobPatch, JobStore,
    PageRequest, QueuePlace, QueueStore, SlotChange, StorePage,
};
use lotsawa_core::{ChunkRecord, ChunkStatus, Job, JobId, JobStatus, StoreError};
use tokio_postgres::types::ToSql;

use crate::rows::*;
use crate::{PgStore, pg};

/// Queue positions of one turn span this many values: a position is
/// `turn × TURN_SPAN + place in the turn` (see [`lotsawa_core::batch`]).
const TURN_SPAN: i64 = 1 << 32;

/// The advisory lock every taking of a slot holds until its commit, so
/// the count of held slots is exact across servers.
pub(crate) const SLOT_LOCK: i64 = 0x006c_6f74_7361_7762;

/// The channel a job's changes are announced on (payload: its id).
pub const JOB_CHANNEL: &str = "lotsawa_job";
/// The channel changes of the queue are announced on: a job became
/// pending or a slot was freed.
pub const QUEUE_CHANNEL: &str = "lotsawa_queue";

pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

pub(crate) fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The queue position at the end of turn `current + ahead`. Two creates at
/// once may take the same position: the claim orders ties by arrival.
async fn end_of_turn(tx: &Transaction<'_>, ahead: u32) -> Result<i64, StoreError> {
    let row = tx
        .query_one(
            "SELECT GREATEST(COALESCE(MIN(queue_pos), 0), 0) / 4294967296 FROM jobs WHERE status = 'pending'",
            &[],
        )
        .await
        .map_err(pg("queue position"))?;
    let current: i64 = row.get(0);
    let lo = (current + i64::from(ahead)) * TURN_SPAN;
    let last: Option<i64> = tx
        .query_one(
            "SELECT MAX(queue_pos) FROM jobs WHERE status = 'pending' AND queue_pos >= $1 AND queue_pos < $2",
            &[&lo, &(lo + TURN_SPAN)],
        )
        .await
        .map_err(pg("queue position"))?
        .get(0);
    Ok(last.unwrap_or(lo) + 1)
}

/// A job's announcement: `<id> <status> <run>`, so a server can tell
/// whether a job it runs moved on without reading it.
fn announce(id: JobId, status: JobStatus, run: u32) -> String {
    format!("{id} {} {run}", status.as_str())
}

async fn notify(tx: &Transaction<'_>, channel: &str, payload: &str) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached("SELECT pg_notify($1, $2)")
        .await
        .map_err(pg("notify"))?;
    tx.execute(&stmt, &[&channel, &payload])
        .await
        .map_err(pg("notify"))?;
    Ok(())
}

impl PgStore {
    /// The job with this id, with its sequence number, in `tx`.
    pub(crate) async fn load(
        &self,
        tx: &Transaction<'_>,
        id: JobId,
    ) -> Result<(i64, Job), StoreError> {
        let stmt = tx
            .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .await
            .map_err(pg("read a job"))?;
        let row = tx
            .query_opt(&stmt, &[&id.to_string()])
            .await
            .map_err(pg("read a job"))?
            .ok_or(StoreError::NotFound(id))?;
        job_from_row(&row)
    }

    /// The job with this id, read with `columns` ([`JOB_COLUMNS`], or
    /// [`LIST_COLUMNS`] without its texts).
    async fn read_job(&self, id: JobId, columns: &str) -> Result<Job, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {columns} FROM jobs WHERE id = $1"))
            .await
            .map_err(pg("read a job"))?;
        let row = client
            .query_opt(&stmt, &[&id.to_string()])
            .await
            .map_err(pg("read a job"))?
            .ok_or(StoreError::NotFound(id))?;
        Ok(job_from_row(&row)?.1)
    }

    async fn read_chunks(
        tx: &Transaction<'_>,
        seq: i64,
        from: u32,
        to: Option<u32>,
    ) -> Result<Vec<ChunkRecord>, StoreError> {
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT {CHUNK_COLUMNS} FROM chunks WHERE job_seq = $1 AND idx >= $2 AND idx < $3 ORDER BY idx"
            ))
            .await
            .map_err(pg("read chunks"))?;
        let to = to.map_or(i32::MAX, int);
        tx.query(&stmt, &[&seq, &int(from), &to])
            .await
            .map_err(pg("read chunks"))?
            .iter()
            .map(chunk_from_row)
            .collect()
    }

    /// Write a planned patch with a compare-and-set on status and run,
    /// inside `tx`; false when the job moved on (or no slot was free, or a
    /// chunk is unfinished).
    async fn apply_in(
        &self,
        tx: &Transaction<'_>,
        seq: i64,
        id: JobId,
        patch: &JobPatch,
    ) -> Result<bool, StoreError> {
        if let SlotChange::Take { limit } = patch.slot {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SLOT_LOCK])
                .await
                .map_err(pg("slot lock"))?;
            let held: i64 = tx
                .query_one("SELECT COUNT(*) FROM jobs WHERE status = 'processing'", &[])
                .await
                .map_err(pg("count slots"))?
                .get(0);
            if held >= i64::from(limit) {
                return Ok(false);
            }
        }
        let mut params: Vec<Param> = vec![
            Box::new(patch.to.as_str().to_owned()),
            Box::new(int(patch.new_run)),
        ];
        let mut sets = vec!["status = $1".to_owned(), "run = $2".to_owned()];
        let mut set = |column: &str, value: Option<Param>, sets: &mut Vec<String>| match value {
            Some(v) => {
                params.push(v);
                sets.push(format!("{column} = ${}", params.len()));
            }
            None => sets.push(format!("{column} = NULL")),
        };
        fn time(f: &Field<DateTime<Utc>>) -> Option<Option<Param>> {
            match f {
                Field::Keep => None,
                Field::Set(t) => Some(Some(Box::new(ms(*t)))),
                Field::Clear => Some(None),
            }
        }
        for (column, field) in [
            ("started_at", &patch.started_at),
            ("completed_at", &patch.completed_at),
            ("cancelled_at", &patch.cancelled_at),
        ] {
            if let Some(v) = time(field) {
                set(column, v, &mut sets);
            }
        }
        match &patch.error {
            Field::Keep => {}
            Field::Set(e) => set("error", Some(Box::new(e.clone())), &mut sets),
            Field::Clear => set("error", None, &mut sets),
        }
        match &patch.result {
            Field::Keep => {}
            Field::Set(r) => set("result", Some(Box::new(json(r)?)), &mut sets),
            Field::Clear => set("result", None, &mut sets),
        }
        callback_sets(&patch.callback, &mut |c, v| set(c, v, &mut sets))?;
        match patch.queue {
            QueuePlace::Back => {
                let pos = end_of_turn(tx, 0).await?;
                set("queue_pos", Some(Box::new(pos)), &mut sets);
            }
            QueuePlace::Front => sets.push(
                "queue_pos = (SELECT COALESCE(MIN(queue_pos), 1) - 1 FROM jobs WHERE status = 'pending')"
                    .into(),
            ),
            QueuePlace::Keep => {}
        }
        if patch.to == JobStatus::Processing {
            set(
                "lease_owner",
                Some(Box::new(self.options.node.clone())),
                &mut sets,
            );
            let lease = self.options.lease.as_millis() as f64;
            sets.push(format!(
                "lease_until = clock_timestamp() + {lease} * interval '1 millisecond'"
            ));
        } else if patch.from == JobStatus::Processing {
            sets.push("lease_owner = NULL".into());
            sets.push("lease_until = NULL".into());
        }
        params.push(Box::new(seq));
        let n_seq = params.len();
        params.push(Box::new(patch.from.as_str().to_owned()));
        let n_from = params.len();
        params.push(Box::new(int(patch.run)));
        let n_run = params.len();
        let mut sql = format!(
            "UPDATE jobs SET {} WHERE seq = ${n_seq} AND status = ${n_from} AND run = ${n_run}",
            sets.join(", ")
        );
        if patch.requires_all_chunks {
            sql.push_str(" AND chunks_completed = chunks_total");
        }
        let stmt = tx.prepare_cached(&sql).await.map_err(pg("write a job"))?;
        if tx
            .execute(&stmt, &refs(&params))
            .await
            .map_err(pg("write a job"))?
            != 1
        {
            return Ok(false);
        }
        match patch.chunks {
            ChunkChange::None => {}
            ChunkChange::ResetFailed { .. } => {
                tx.execute(
                    "UPDATE chunks SET status = 'pending', error = NULL WHERE job_seq = $1 AND status = 'failed'",
                    &[&seq],
                )
                .await
                .map_err(pg("reset chunks"))?;
            }
            ChunkChange::Fail { index } => {
                tx.execute(
                    "UPDATE chunks SET status = 'failed' WHERE job_seq = $1 AND idx = $2 AND status = 'pending'",
                    &[&seq, &int(index)],
                )
                .await
                .map_err(pg("fail a chunk"))?;
            }
        }
        notify(tx, JOB_CHANNEL, &announce(id, patch.to, patch.new_run)).await?;
        if patch.to == JobStatus::Pending || patch.slot == SlotChange::Release {
            notify(tx, QUEUE_CHANNEL, "").await?;
        }
        Ok(true)
    }

    /// Claim up to `max` jobs under `limit` in `tx`: first those whose
    /// server's lease expired (they hold their slot already; their run
    /// moves on), then pending ones in claim order.
    async fn claim_in(
        &self,
        tx: &Transaction<'_>,
        limit: u32,
        max: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, Job)>, StoreError> {
        let mut claimed = Vec::new();
        if max == 0 {
            return Ok(claimed);
        }
        let expired = tx
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'processing' \
                 AND lease_until < clock_timestamp() \
                 ORDER BY priority DESC, queue_pos, seq LIMIT $1 FOR UPDATE SKIP LOCKED"
            ))
            .await
            .map_err(pg("claim"))?;
        let lease = self.options.lease.as_millis() as f64;
        let take_over = tx
            .prepare_cached(&format!(
                "UPDATE jobs SET run = run + 1, started_at = $1, lease_owner = $2, \
                 lease_until = clock_timestamp() + {lease} * interval '1 millisecond' \
                 WHERE seq = $3 AND status = 'processing' AND run = $4"
            ))
            .await
            .map_err(pg("claim"))?;
        for row in tx
            .query(&expired, &[&i64::from(max)])
            .await
            .map_err(pg("claim"))?
        {
            let (seq, mut job) = job_from_row(&row)?;
            let started = ms(now);
            let n = tx
                .execute(
                    &take_over,
                    &[&started, &self.options.node, &seq, &int(job.run)],
                )
                .await
                .map_err(pg("claim"))?;
            if n == 1 {
                tracing::warn!(job_id = %job.id, from_run = job.run, "lease expired; job taken over");
                job.run += 1;
                job.started_at = Some(started);
                notify(tx, JOB_CHANNEL, &announce(job.id, job.status, job.run)).await?;
                claimed.push((seq, job));
            }
        }
        let room = max.saturating_sub(claimed.len() as u32);
        if room == 0 {
            return Ok(claimed);
        }
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SLOT_LOCK])
            .await
            .map_err(pg("slot lock"))?;
        let pending = tx
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'pending' \
                 ORDER BY priority DESC, queue_pos, seq LIMIT $1 FOR UPDATE SKIP LOCKED"
            ))
            .await
            .map_err(pg("claim"))?;
        for row in tx
            .query(&pending, &[&i64::from(room)])
            .await
            .map_err(pg("claim"))?
        {
            let (seq, job) = job_from_row(&row)?;
            let Ok(patch) = JobPatch::plan(&job, Change::Start { limit }, now) else {
                continue;
            };
            if !self.apply_in(tx, seq, job.id, &patch).await? {
                break; // no slot left
            }
            claimed.push((seq, patch.applied_to(&job)));
        }
        Ok(claimed)
    }

    /// Record a completed chunk of run `run` in `tx`; the transaction is to
    /// be committed only when the answer is `Recorded`.
    async fn checkpoint_in(
        tx: &Transaction<'_>,
        id: JobId,
        run: u32,
        done: &ChunkDone,
    ) -> Result<(Checkpoint, i64), StoreError> {
        let bump = tx
            .prepare_cached(
                "UPDATE jobs SET chunks_completed = chunks_completed + 1 \
                 WHERE id = $1 AND status = 'processing' AND run = $2 RETURNING seq",
            )
            .await
            .map_err(pg("checkpoint"))?;
        let Some(row) = tx
            .query_opt(&bump, &[&id.to_string(), &int(run)])
            .await
            .map_err(pg("checkpoint"))?
        else {
            return Ok((Checkpoint::RunEnded, 0));
        };
        let seq: i64 = row.get(0);
        let usage = done.usage.as_ref().map(|u| u.usage).unwrap_or_default();
        let write = tx
            .prepare_cached(
                "UPDATE chunks SET status = 'completed', translation = $1, duration_ms = $2,
                    attempts = attempts + $3, error = NULL, run = $4, confidence = $7,
                    from_memory = $8, context = $9, warning = $10, usage_calls = $11,
                    prompt_tokens = $12, completion_tokens = $13, examples = $14
                 WHERE job_seq = $5 AND idx = $6 AND status = 'pending'",
            )
            .await
            .map_err(pg("checkpoint"))?;
        let n = tx
            .execute(
                &write,
                &[
                    &done.translation,
                    &done.duration_ms.map(|d| d as i64),
                    &int(done.provider_calls),
                    &int(run),
                    &seq,
                    &int(done.index),
                    &done.confidence,
                    &done.from_memory,
                    &done.context,
                    &done.warning,
                    &(usage.calls as i64),
                    &(usage.prompt_tokens as i64),
                    &(usage.completion_tokens as i64),
                    &done.examples,
                ],
            )
            .await
            .map_err(pg("checkpoint"))?;
        if n != 1 {
            return Ok((Checkpoint::AlreadyDone, seq));
        }
        if let Some(u) = &done.usage
            && !u.usage.is_zero()
        {
            crate::facets::add_usage_in(tx, u).await?;
        }
        notify(tx, JOB_CHANNEL, &announce(id, JobStatus::Processing, run)).await?;
        Ok((Checkpoint::Recorded, seq))
    }

    async fn insert_job(
        tx: &Transaction<'_>,
        job: &Job,
        chunks: &[String],
    ) -> Result<(), StoreError> {
        let pos = end_of_turn(tx, job.batch.map_or(0, |b| b.index)).await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO jobs (id, kind, status, source, config, error, chunks_total, queue_pos,
                    created_at, completed_at, run, tenant, batch, trace, priority)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                 RETURNING seq",
            )
            .await
            .map_err(pg("create a job"))?;
        let row = tx
            .query_one(
                &stmt,
                &[
                    &job.id.to_string(),
                    &job.kind.as_str(),
                    &job.status.as_str(),
                    &job.source,
                    &json(&job.config)?,
                    &job.error,
                    &(chunks.len() as i32),
                    &pos,
                    &ms(job.created_at),
                    &job.completed_at.map(ms),
                    &int(job.run),
                    &job.tenant.as_str(),
                    &job.batch.as_ref().map(batch_text),
                    &job.trace,
                    &i16::from(job.config.priority),
                ],
            )
            .await
            .map_err(pg("create a job"))?;
        let seq: i64 = row.get(0);
        if !chunks.is_empty() {
            // One statement for every chunk, however many.
            let idx: Vec<i32> = (0..chunks.len() as i32).collect();
            let chars: Vec<i32> = chunks.iter().map(|c| c.chars().count() as i32).collect();
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO chunks (job_seq, idx, source, chars, status)
                     SELECT $1, i, s, n, 'pending' FROM UNNEST($2::INTEGER[], $3::TEXT[], $4::INTEGER[]) AS t(i, s, n)",
                )
                .await
                .map_err(pg("create chunks"))?;
            tx.execute(&stmt, &[&seq, &idx, &chunks, &chars])
                .await
                .map_err(pg("create chunks"))?;
        }
        // The queue is announced by the service once the submission (a
        // whole batch) is stored ([`QueueStore::announce_queue`]): a claim
        // woken between a batch's items would see its turns half made.
        notify(tx, JOB_CHANNEL, &announce(job.id, job.status, job.run)).await?;
        Ok(())
    }
}

macro_rules! in_tx {
    ($store:expr, $what:literal, |$tx:ident| $body:expr) => {{
        let mut client = $store.client().await?;
        let $tx = client.transaction().await.map_err(pg($what))?;
        let out = $body;
        $tx.commit().await.map_err(pg($what))?;
        out
    }};
}
pub(crate) use in_tx;

#[async_trait]
impl JobStore for PgStore {
    async fn create(&self, job: &Job, chunks: &[String]) -> Result<(), StoreError> {
        in_tx!(self, "create a job", |tx| Self::insert_job(
            &tx, job, chunks
        )
        .await?);
        Ok(())
    }

    async fn create_failed(&self, job: &Job) -> Result<(), StoreError> {
        in_tx!(self, "create a job", |tx| Self::insert_job(&tx, job, &[])
            .await?);
        Ok(())
    }

    async fn get(&self, id: JobId) -> Result<Job, StoreError> {
        self.read_job(id, JOB_COLUMNS).await
    }

    async fn get_brief(&self, id: JobId) -> Result<Job, StoreError> {
        self.read_job(id, LIST_COLUMNS).await
    }

    async fn list(&self, page: &PageRequest) -> Result<StorePage, StoreError> {
        let mut sql = format!("SELECT {LIST_COLUMNS} FROM jobs WHERE tenant = $1");
        let mut params: Vec<Param> = vec![Box::new(page.filter.tenant.as_str().to_owned())];
        if let Some(s) = page.filter.status {
            params.push(Box::new(s.as_str().to_owned()));
            sql.push_str(&format!(" AND status = ${}", params.len()));
        }
        if let Some(k) = page.filter.kind {
            params.push(Box::new(k.as_str().to_owned()));
            sql.push_str(&format!(" AND kind = ${}", params.len()));
        }
        if let Some(p) = page.filter.priority {
            params.push(Box::new(i16::from(p)));
            sql.push_str(&format!(" AND priority = ${}", params.len()));
        }
        if let Some(after) = &page.after {
            let before: i64 = after
                .parse()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| StoreError::InvalidCursor(after.clone()))?;
            params.push(Box::new(before));
            sql.push_str(&format!(" AND seq < ${}", params.len()));
        }
        params.push(Box::new(i64::from(page.limit) + 1));
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", params.len()));
        let client = self.client().await?;
        let stmt = client.prepare_cached(&sql).await.map_err(pg("list"))?;
        let rows = client
            .query(&stmt, &refs(&params))
            .await
            .map_err(pg("list"))?;
        let mut out = rows
            .iter()
            .map(job_from_row)
            .collect::<Result<Vec<_>, _>>()?;
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
    }

    async fn apply(&self, id: JobId, patch: &JobPatch) -> Result<Applied, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("write a job"))?;
        let (seq, _) = self.load(&tx, id).await?;
        if !self.apply_in(&tx, seq, id, patch).await? {
            return Ok(Applied::Lost);
        }
        let (_, job) = self.load(&tx, id).await?;
        tx.commit().await.map_err(pg("write a job"))?;
        Ok(Applied::Done(Box::new(job)))
    }

    async fn next_pending(&self, n: u32) -> Result<Vec<JobId>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id FROM jobs WHERE status = 'pending' ORDER BY priority DESC, queue_pos, seq LIMIT $1",
                &[&i64::from(n)],
            )
            .await
            .map_err(pg("read the queue"))?;
        rows.iter()
            .map(|r| {
                r.get::<_, String>(0)
                    .parse()
                    .map_err(|e: lotsawa_core::ValidationError| corrupt(e.0))
            })
            .collect()
    }

    async fn claim_next(&self, limit: u32, now: DateTime<Utc>) -> Result<Option<Job>, StoreError> {
        Ok(self.claim_many(limit, 1, now).await?.pop())
    }

    async fn checkpoint(
        &self,
        id: JobId,
        run: u32,
        done: &ChunkDone,
    ) -> Result<Checkpoint, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("checkpoint"))?;
        let (kept, _) = Self::checkpoint_in(&tx, id, run, done).await?;
        if kept == Checkpoint::Recorded {
            tx.commit().await.map_err(pg("checkpoint"))?;
        }
        Ok(kept)
    }

    async fn note_chunk_error(&self, id: JobId, index: u32, error: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE chunks SET error = $1, attempts = attempts + 1
                 WHERE job_seq = (SELECT seq FROM jobs WHERE id = $2) AND idx = $3 AND status = 'pending'",
                &[&error, &id.to_string(), &int(index)],
            )
            .await
            .map_err(pg("note a chunk error"))?;
        if n == 0 {
            // Unknown job or no such pending chunk: only the former is an error.
            self.get_brief(id).await?;
        }
        Ok(())
    }

    async fn chunks(&self, id: JobId, from: u32) -> Result<Vec<ChunkRecord>, StoreError> {
        self.chunks_between(id, from, u32::MAX).await
    }

    async fn chunks_between(
        &self,
        id: JobId,
        from: u32,
        to: u32,
    ) -> Result<Vec<ChunkRecord>, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(pg("read chunks"))?;
        let seq: i64 = tx
            .query_opt("SELECT seq FROM jobs WHERE id = $1", &[&id.to_string()])
            .await
            .map_err(pg("read chunks"))?
            .ok_or(StoreError::NotFound(id))?
            .get(0);
        let to = (to != u32::MAX).then_some(to);
        Self::read_chunks(&tx, seq, from, to).await
    }

    async fn progress_inputs(&self, job: &Job) -> Result<(u64, Vec<ChunkTiming>), StoreError> {
        let client = self.client().await?;
        let id = job.id.to_string();
        let remaining: i64 = client
            .query_one(
                "SELECT COALESCE(SUM(chars), 0)::BIGINT FROM chunks
                 WHERE job_seq = (SELECT seq FROM jobs WHERE id = $1) AND status != 'completed'",
                &[&id],
            )
            .await
            .map_err(pg("progress"))?
            .get(0);
        let rows = client
            .query(
                "SELECT chars, duration_ms FROM chunks
                 WHERE job_seq = (SELECT seq FROM jobs WHERE id = $1) AND status = 'completed'
                   AND run = $2 AND NOT from_memory AND duration_ms IS NOT NULL
                 ORDER BY idx DESC LIMIT $3",
                &[&id, &int(job.run), &(lotsawa_core::progress::WINDOW as i64)],
            )
            .await
            .map_err(pg("progress"))?;
        let mut timings: Vec<ChunkTiming> = rows
            .iter()
            .map(|r| ChunkTiming {
                chars: r.get::<_, i32>(0).max(0) as u64,
                duration_ms: r.get::<_, Option<i64>>(1).unwrap_or(0).max(0) as u64,
            })
            .collect();
        timings.reverse();
        Ok((remaining.max(0) as u64, timings))
    }

    async fn get_briefs(&self, ids: &[JobId]) -> Result<Vec<Job>, StoreError> {
        let client = self.client().await?;
        let wanted: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {LIST_COLUMNS} FROM jobs WHERE id = ANY($1)"
            ))
            .await
            .map_err(pg("read jobs"))?;
        let rows = client
            .query(&stmt, &[&wanted])
            .await
            .map_err(pg("read jobs"))?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let (_, job) = job_from_row(row)?;
            found.insert(job.id, job);
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }
}

#[async_trait]
impl QueueStore for PgStore {
    async fn claim_many(
        &self,
        limit: u32,
        max: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<Job>, StoreError> {
        let claimed = in_tx!(self, "claim", |tx| self
            .claim_in(&tx, limit, max, now)
            .await?);
        Ok(claimed.into_iter().map(|(_, j)| j).collect())
    }

    async fn finish_last_chunk(
        &self,
        id: JobId,
        run: u32,
        done: &ChunkDone,
        label: lotsawa_core::pipeline::ResultLabel,
        hand_off: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<Finish, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("checkpoint"))?;
        let (kept, seq) = Self::checkpoint_in(&tx, id, run, done).await?;
        let mut finish = Finish {
            kept,
            completed: false,
            next: None,
        };
        if kept != Checkpoint::Recorded {
            return Ok(finish);
        }
        let (_, job) = self.load(&tx, id).await?;
        let ledger = Self::read_chunks(&tx, seq, 0, None).await?;
        if ledger.iter().all(|c| c.status == ChunkStatus::Completed) {
            let result = lotsawa_core::pipeline::job_result(job.kind, &ledger, &label);
            if let Ok(patch) = JobPatch::plan(&job, Change::Complete(result), now) {
                finish.completed = self.apply_in(&tx, seq, id, &patch).await?;
            }
            if finish.completed
                && let Some(limit) = hand_off
                && let Some((next_seq, next)) = self.claim_in(&tx, limit, 1, now).await?.pop()
            {
                let chunks = Self::read_chunks(&tx, next_seq, 0, None).await?;
                finish.next = Some((next, chunks));
            }
        }
        tx.commit().await.map_err(pg("checkpoint"))?;
        Ok(finish)
    }

    /// None: a shared database's jobs left processing by a server that
    /// died are taken over by claims once their lease expires; this
    /// server's own (if it restarted under the same name) likewise.
    async fn resumable(&self) -> Result<Vec<Job>, StoreError> {
        Ok(Vec::new())
    }

    async fn renew(&self, held: &[Held], _now: DateTime<Utc>) -> Result<Vec<Held>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = held.iter().map(|(id, _)| id.to_string()).collect();
        let client = self.client().await?;
        let lease = self.options.lease.as_millis() as f64;
        let stmt = client
            .prepare_cached(&format!(
                "UPDATE jobs SET lease_until = clock_timestamp() + {lease} * interval '1 millisecond' \
                 WHERE id = ANY($1) AND status = 'processing' AND lease_owner = $2 RETURNING id, run"
            ))
            .await
            .map_err(pg("renew leases"))?;
        let rows = client
            .query(&stmt, &[&ids, &self.options.node])
            .await
            .map_err(pg("renew leases"))?;
        let kept: std::collections::HashSet<(String, u32)> = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1).max(0) as u32))
            .collect();
        Ok(held
            .iter()
            .filter(|(id, run)| !kept.contains(&(id.to_string(), *run)))
            .copied()
            .collect())
    }

    fn lease(&self) -> Option<std::time::Duration> {
        Some(self.options.lease)
    }

    async fn announce_queue(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute("SELECT pg_notify($1, '')", &[&QUEUE_CHANNEL])
            .await
            .map_err(pg("notify"))?;
        Ok(())
    }

    /// Each processing job this server holds goes back to the queue's
    /// head through the planned requeue (slot released, lease dropped).
    async fn hand_back(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("hand back"))?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'processing' AND lease_owner = $1 \
                     ORDER BY queue_pos DESC FOR UPDATE"
                ),
                &[&self.options.node],
            )
            .await
            .map_err(pg("hand back"))?;
        let mut n = 0;
        // The last in the queue first, so that each requeue to the head
        // keeps their order.
        for row in &rows {
            let (seq, job) = job_from_row(row)?;
            if let Ok(patch) = JobPatch::plan(&job, Change::Requeue, now)
                && self.apply_in(&tx, seq, job.id, &patch).await?
            {
                n += 1;
            }
        }
        tx.commit().await.map_err(pg("hand back"))?;
        Ok(n)
    }

    /// Due callbacks, each claimed for [`CALLBACK_HOLD`]: another server
    /// takes it only if this one did not record the attempt by then.
    async fn take_callbacks(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Job>, StoreError> {
        let client = self.client().await?;
        let hold = CALLBACK_HOLD.as_millis() as f64;
        let stmt = client
            .prepare_cached(&format!(
                "UPDATE jobs SET callback_claim = clock_timestamp() + {hold} * interval '1 millisecond' \
                 WHERE seq IN (SELECT seq FROM jobs WHERE callback_due IS NOT NULL AND callback_due <= $1 \
                   AND (callback_claim IS NULL OR callback_claim < clock_timestamp()) \
                   ORDER BY callback_due LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 RETURNING {JOB_COLUMNS}"
            ))
            .await
            .map_err(pg("take callbacks"))?;
        client
            .query(&stmt, &[&ms(now), &i64::from(limit)])
            .await
            .map_err(pg("take callbacks"))?
            .iter()
            .map(|r| job_from_row(r).map(|(_, j)| j))
            .collect()
    }

    async fn purge_finished(&self, before: DateTime<Utc>, limit: u32) -> Result<usize, StoreError> {
        let idem_cutoff = Utc::now() - lotsawa_core::service::IDEMPOTENCY_WINDOW * 2;
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM jobs WHERE seq IN (
                    SELECT seq FROM jobs
                    WHERE status IN ('completed', 'failed', 'cancelled')
                      AND COALESCE(completed_at, cancelled_at, created_at) < $1
                    ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&before, &i64::from(limit)],
            )
            .await
            .map_err(pg("purge"))?;
        client
            .execute(
                "DELETE FROM idempotency WHERE created_at < $1",
                &[&idem_cutoff],
            )
            .await
            .map_err(pg("purge"))?;
        Ok(n as usize)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every write is committed before its caller hears of it.
        Ok(())
    }
}

/// How long a server holds a callback it took for delivery: longer than
/// an attempt may take.
pub const CALLBACK_HOLD: std::time::Duration = std::time::Duration::from_secs(120);

/// The SQL of a callback field: its state and when it is next due (a
/// written state ends any server's hold on it).
pub(crate) fn callback_sets(
    field: &Field<lotsawa_core::Callback>,
    set: &mut dyn FnMut(&str, Option<Param>),
) -> Result<(), StoreError> {
    match field {
        Field::Keep => {}
        Field::Clear => {
            set("callback", None);
            set("callback_due", None);
            set("callback_claim", None);
        }
        Field::Set(c) => {
            set("callback", Some(Box::new(json(c)?)));
            set("callback_claim", None);
            match (c.status, c.next_attempt_at) {
                (lotsawa_core::CallbackStatus::Pending, Some(t)) => {
                    set("callback_due", Some(Box::new(ms(t))))
                }
                _ => set("callback_due", None),
            }
        }
    }
    Ok(())
}
