//! The job service: everything the HTTP API needs from a backend, written
//! once over the [`Store`] port. A backend supplies only a [`Runner`]:
//! how work is started and stopped, how a watcher learns of a change, and
//! the metrics only it has.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::auth::Tenant;
use chrono::Utc;

use crate::batch::{Batch, BatchItem, Summary};
use crate::job::{
    BatchId, BatchRef, EngineName, Job, JobId, JobStatus, JobType, NewJob, TransitionError,
};
use crate::ledger::{ChunkStatus, partial_output};
use crate::progress::Progress;
use crate::store::{Change, Cursor, ListFilter, PageRequest, Store, StoreError, TransitionOutcome};

mod api;
mod desk;
mod engines;
mod views;

pub use desk::{ChunkSheet, ImportReport, MAX_IMPORT_UNITS, label_of, segments_of, state_of};
pub use engines::{EngineChoice, model_allowlists, parse_model_list};
pub use views::*;

/// A backend failure, classified for the API.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No job with that id.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// No batch with that id.
    #[error("batch {0} not found")]
    BatchNotFound(BatchId),
    /// The job's status does not allow the request.
    #[error("job {id} is {}; {}", .error.from, conflict_hint(.error))]
    Conflict {
        /// The job.
        id: JobId,
        /// The refused transition.
        error: TransitionError,
    },
    /// The request is malformed in a way only the backend can tell.
    #[error("{0}")]
    Invalid(String),
    /// The backend is shutting down or overloaded.
    #[error("{0}")]
    Unavailable(String),
    /// No key, or a key that is unknown or revoked.
    #[error("{0}")]
    Unauthorized(String),
    /// The tenant's job-creation rate is spent; try again after this long.
    #[error("too many jobs created; try again in {} s", .0.as_secs().max(1))]
    RateLimited(std::time::Duration),
    /// The tenant has as many jobs waiting as it may.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The tenant's monthly token budget is spent.
    #[error(
        "the monthly token budget of {} tokens is spent ({} used this month); it resets at {}",
        .0.budget, .0.used, .0.resets_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )]
    BudgetExhausted(crate::usage::BudgetSpent),
    /// An idempotency key used again with a different request.
    #[error("{0}")]
    IdempotencyMismatch(String),
    /// The job has no chunk with that index.
    #[error("job {id} has no chunk {index}; its chunks are 0 to {}", .total.saturating_sub(1))]
    ChunkNotFound {
        /// The job.
        id: JobId,
        /// The index asked for.
        index: u32,
        /// Chunks in the job.
        total: u32,
    },
    /// The resource's state does not allow the change (a chunk not
    /// translated yet or keeping as many revisions as it may, a tenant
    /// with as many glossaries as it may keep).
    #[error("{0}")]
    Conflicted(String),
    /// No glossary with that id for the caller.
    #[error("no glossary with id {0}")]
    GlossaryNotFound(crate::job::GlossaryId),
    /// The resource changed since the client read it (`If-Match` names an
    /// older version).
    #[error("{0}")]
    Stale(String),
    /// A change that must name the version it replaces came without one.
    #[error("{0}")]
    PreconditionRequired(String),
    /// A well-formed request whose content does not fit the resource (an
    /// import whose units are not the job's chunks).
    #[error("{0}")]
    Unprocessable(String),
    /// A store failure; the source is logged, not shown.
    #[error(transparent)]
    Store(StoreError),
    /// Anything else; the source is logged, not shown.
    #[error(transparent)]
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

fn conflict_hint(e: &TransitionError) -> &'static str {
    match e.transition {
        crate::job::Transition::Cancel => "only pending or processing jobs can be cancelled",
        crate::job::Transition::Retry => "only failed or cancelled jobs can be retried",
        _ => "the job changed; try again",
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ServiceError::NotFound(id),
            StoreError::BatchNotFound(id) => ServiceError::BatchNotFound(id),
            StoreError::InvalidCursor(c) => {
                ServiceError::Invalid(format!("cursor '{c}' is not a valid cursor for this list"))
            }
            StoreError::Closed => ServiceError::Unavailable("the server is shutting down".into()),
            StoreError::Storage(m) => ServiceError::Unavailable(format!(
                "the server cannot store anything right now ({m}); nothing was changed, try again later"
            )),
            StoreError::Throttled(_)
            | StoreError::TransactionConflict(_)
            | StoreError::ServerError(_) => {
                ServiceError::Unavailable("the job store is busy; try again".into())
            }
            other => ServiceError::Store(other),
        }
    }
}

/// How long an idempotency key holds its first request.
pub const IDEMPOTENCY_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// What [`JobService::submit_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The job.
    pub job_id: JobId,
    /// True when an earlier request with the key made it.
    pub replayed: bool,
}

/// Most chunks one job may have unless configured (`LOTSAWA_MAX_CHUNKS`).
pub const DEFAULT_MAX_CHUNKS: u32 = 2000;

/// What the HTTP API needs from a backend.
#[async_trait]
pub trait JobService: Send + Sync {
    /// Store a new job and queue it (FIFO).
    async fn submit(&self, job: NewJob) -> Result<Job, ServiceError>;
    /// Store and queue a job once per (tenant, `key`) within
    /// [`IDEMPOTENCY_WINDOW`]: the same request again answers with the first
    /// job (`replayed` true) and queues nothing; a different request under
    /// the same key is `IdempotencyMismatch`.
    async fn submit_once(&self, job: NewJob, key: &str) -> Result<Submitted, ServiceError>;
    /// The caller's job with its progress; another tenant's job is
    /// `NotFound`, as is every job-reading method below for one.
    async fn get(&self, tenant: &Tenant, id: JobId) -> Result<JobView, ServiceError>;
    /// The caller's jobs (`query.tenant`), newest first, with cursor pagination.
    async fn list(&self, query: ListQuery) -> Result<JobPage, ServiceError>;
    /// Cancel a pending or processing job.
    async fn cancel(&self, tenant: &Tenant, id: JobId) -> Result<Job, ServiceError>;
    /// Queue a failed or cancelled job again.
    async fn retry(&self, tenant: &Tenant, id: JobId) -> Result<Job, ServiceError>;
    /// Translations of completed chunks with index in `from..to`, in order.
    async fn chunks_from(
        &self,
        tenant: &Tenant,
        id: JobId,
        from: u32,
        to: u32,
    ) -> Result<Vec<ChunkOutput>, ServiceError>;
    /// Every chunk of the caller's job with its revisions, and what made
    /// their first revisions.
    async fn chunk_sheet(&self, tenant: &Tenant, id: JobId) -> Result<ChunkSheet, ServiceError>;
    /// One chunk of the caller's job, and what made its first revision.
    async fn chunk(
        &self,
        tenant: &Tenant,
        id: JobId,
        index: u32,
    ) -> Result<(crate::ledger::ChunkRecord, crate::review::EngineLabel), ServiceError>;
    /// Correct chunk `index` (a new human revision, another revision made
    /// current, or the reviewed flag) if `if_match` names its current
    /// `ETag`: `PreconditionRequired` without one, `Stale` when it changed,
    /// `Conflicted` when it is not translated.
    async fn correct_chunk(
        &self,
        caller: &crate::auth::Caller,
        id: JobId,
        index: u32,
        if_match: Option<&str>,
        request: &crate::review::EditRequest,
    ) -> Result<(crate::ledger::ChunkRecord, crate::review::EngineLabel), ServiceError>;
    /// Turn each changed target of an XLIFF 2 document (as exported, then
    /// edited elsewhere) into a human revision; `Unprocessable` when a unit
    /// does not match the job's chunks (then nothing is written).
    async fn import_xliff(
        &self,
        caller: &crate::auth::Caller,
        id: JobId,
        xml: &str,
    ) -> Result<ImportReport, ServiceError>;
    /// Re-translate chunk `index` of the caller's job with `engine` (and
    /// `model`) in the background, through the chunk path: the answer
    /// appears as a new engine revision beside the others.
    async fn retranslate(
        &self,
        tenant: &Tenant,
        id: JobId,
        index: u32,
        engine: &str,
        model: Option<String>,
    ) -> Result<(), ServiceError>;
    /// Take a TMX file's `bo`/`en` pairs into the caller's translation
    /// memory as people's translations; how many were taken.
    async fn import_memory(&self, tenant: &Tenant, xml: &str) -> Result<usize, ServiceError>;
    /// Store a new glossary for the caller's tenant.
    async fn create_glossary(
        &self,
        tenant: &Tenant,
        name: String,
        entries: Vec<crate::glossary::GlossaryEntry>,
    ) -> Result<crate::glossaries::GlossaryRecord, ServiceError>;
    /// The caller's glossary with its terms.
    async fn glossary(
        &self,
        tenant: &Tenant,
        id: crate::job::GlossaryId,
    ) -> Result<crate::glossaries::GlossaryRecord, ServiceError>;
    /// The caller's glossaries, oldest first, without their terms.
    async fn glossaries(
        &self,
        tenant: &Tenant,
    ) -> Result<Vec<crate::glossaries::GlossaryRecord>, ServiceError>;
    /// Replace the terms (and the name, when given) of the caller's
    /// glossary.
    async fn replace_glossary(
        &self,
        tenant: &Tenant,
        id: crate::job::GlossaryId,
        name: Option<String>,
        entries: Vec<crate::glossary::GlossaryEntry>,
    ) -> Result<crate::glossaries::GlossaryRecord, ServiceError>;
    /// Delete the caller's glossary (jobs that took its terms keep them).
    async fn delete_glossary(
        &self,
        tenant: &Tenant,
        id: crate::job::GlossaryId,
    ) -> Result<(), ServiceError>;
    /// Every chunk of the caller's job, in order, with source and output.
    async fn chunk_records(
        &self,
        tenant: &Tenant,
        id: JobId,
    ) -> Result<Vec<crate::ledger::ChunkRecord>, ServiceError>;
    /// What a watcher polls; it may lag a write by a moment.
    async fn pulse(&self, tenant: &Tenant, id: JobId) -> Result<crate::store::Pulse, ServiceError>;
    /// A job with its progress, for a watcher: no source text, no partial
    /// output; the result once completed.
    async fn watch(&self, tenant: &Tenant, id: JobId) -> Result<JobView, ServiceError>;
    /// The caller's provider usage from `from` to `to` (days, both
    /// included), grouped, priced, with its budget this month.
    async fn usage(
        &self,
        tenant: &Tenant,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
        group: crate::usage::UsageGroup,
    ) -> Result<crate::usage::UsageReport, ServiceError>;
    /// Store every item of a batch as a job, then the batch, then queue the
    /// items. Every item is checked before anything is stored, so a refused
    /// batch stores nothing.
    async fn submit_batch(&self, batch: NewBatch) -> Result<BatchView, ServiceError>;
    /// The caller's batch with its derived state; another tenant's batch is
    /// `BatchNotFound`.
    async fn batch(&self, tenant: &Tenant, id: BatchId) -> Result<BatchView, ServiceError>;
    /// The caller's batches, newest first, `limit` at most, after `cursor`.
    async fn list_batches(
        &self,
        tenant: &Tenant,
        limit: u32,
        cursor: Option<String>,
    ) -> Result<BatchPage, ServiceError>;
    /// Cancel every item that has not ended.
    async fn cancel_batch(&self, tenant: &Tenant, id: BatchId) -> Result<BatchView, ServiceError>;
    /// Queue every failed or cancelled item again.
    async fn retry_batch(&self, tenant: &Tenant, id: BatchId) -> Result<BatchView, ServiceError>;
    /// The tenant and id of an API key; `Unauthorized` for an unknown or
    /// revoked key.
    async fn authenticate(&self, key: &str) -> Result<crate::auth::Caller, ServiceError>;
    /// Return when the job may have changed, or after `max_wait`. `seen`
    /// is the caller's count of the job's changes (0 at first): a backend
    /// with a change feed returns at once when the job changed since, and
    /// sets `seen` to the count it returns at.
    async fn wait_for_change(&self, id: JobId, seen: &mut u64, max_wait: Duration);
    /// Engines a job may name.
    fn engines(&self) -> Vec<String>;
    /// Prometheus text exposition of the backend's metrics.
    async fn metrics(&self) -> Result<String, ServiceError>;
    /// True while the backend can take work.
    async fn healthy(&self) -> Result<(), ServiceError>;
}

/// What differs between backends: how work starts and stops.
#[async_trait]
pub trait Runner: Send + Sync {
    /// A job was stored pending (new or retried): get it started.
    async fn queued(&self, job: &Job) -> Result<(), ServiceError>;
    /// A job was cancelled (it was `was`): stop what runs it.
    async fn cancelled(&self, job: &Job, was: JobStatus);
    /// Return when the job may have changed, or after `max_wait`. `seen`
    /// is the caller's count of the job's changes (0 at first): a backend
    /// with a change feed returns at once when the job changed since, and
    /// sets `seen` to the count it returns at.
    async fn wait_for_change(&self, id: JobId, seen: &mut u64, max_wait: Duration);
    /// Metrics only this backend has (chunk counters), Prometheus text.
    async fn extra_metrics(&self) -> Result<String, ServiceError>;
    /// `Err` while the backend cannot take work (shutting down).
    fn ready(&self) -> Result<(), ServiceError>;
    /// Start a re-translation of one chunk (checked by the service): its
    /// attempts run in the background, retried as a chunk's are.
    async fn retranslate(
        &self,
        request: crate::retranslate::Retranslation,
    ) -> Result<(), ServiceError>;
}

/// The one job service, over a store and a runner.
#[derive(Clone)]
pub struct Service {
    max_batch_items: u32,
    store: Arc<dyn Store>,
    runner: Arc<dyn Runner>,
    engines: EngineChoice,
    max_chunks: u32,
    rate: Option<crate::rate::RateLimit>,
    max_pending: Option<u32>,
    /// The callback guard, or why this deployment takes no callback URL.
    callbacks: Result<Arc<crate::webhook::Callbacks>, String>,
    /// The price table of usage reports.
    prices: Arc<crate::usage::Prices>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("store", &self.store)
            .field("engines", &self.engines)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service.
    pub fn new(store: Arc<dyn Store>, runner: Arc<dyn Runner>, engines: EngineChoice) -> Self {
        Self {
            max_chunks: DEFAULT_MAX_CHUNKS,
            max_batch_items: crate::batch::DEFAULT_MAX_ITEMS,
            rate: None,
            max_pending: None,
            callbacks: Err("this deployment does not deliver callbacks".into()),
            prices: Arc::default(),
            store,
            runner,
            engines,
        }
    }

    /// The same service taking callback URLs checked by `callbacks`, or
    /// refusing them with the reason given.
    pub fn with_callbacks(mut self, callbacks: Result<crate::webhook::Callbacks, String>) -> Self {
        self.callbacks = callbacks.map(Arc::new);
        self
    }

    /// The same service pricing usage reports by `prices`.
    pub fn with_prices(mut self, prices: crate::usage::Prices) -> Self {
        self.prices = Arc::new(prices);
        self
    }

    /// The same service refusing jobs of more than `n` chunks.
    pub fn with_max_chunks(mut self, n: u32) -> Self {
        self.max_chunks = n;
        self
    }

    /// The same service refusing batches of more than `n` items.
    pub fn with_max_batch_items(mut self, n: u32) -> Self {
        self.max_batch_items = n;
        self
    }

    /// The same service limiting each tenant's job creation.
    pub fn with_rate(mut self, rate: Option<crate::rate::RateLimit>) -> Self {
        self.rate = rate;
        self
    }

    /// The same service refusing a tenant's new job while it has `n` jobs
    /// waiting (`None`: no cap).
    pub fn with_max_pending(mut self, n: Option<u32>) -> Self {
        self.max_pending = n;
        self
    }

    /// Let `tenant` create a job: under its pending cap (checked first, so a
    /// refusal spends nothing), then a creation token when rate limited.
    pub async fn admit(&self, tenant: &Tenant) -> Result<(), ServiceError> {
        self.admit_n(tenant, 1).await
    }

    /// Let `tenant` create `n` jobs at once (a batch): all of them must fit
    /// under its pending cap; one creation token is spent.
    async fn admit_n(&self, tenant: &Tenant, n: u32) -> Result<(), ServiceError> {
        if let Some(spent) = crate::usage::budget_spent(&*self.store, tenant, Utc::now()).await? {
            return Err(ServiceError::BudgetExhausted(spent));
        }
        if let Some(cap) = self.max_pending {
            let waiting = self.store.pending_count(tenant).await?;
            if waiting + u64::from(n) > u64::from(cap) {
                return Err(ServiceError::QuotaExceeded(if n == 1 {
                    format!(
                        "{waiting} of your jobs are waiting to start and at most {cap} may wait; \
                         submit more once some have started"
                    )
                } else {
                    format!(
                        "{waiting} of your jobs are waiting to start, this batch adds {n} and \
                         at most {cap} may wait; submit it once some have started, or split it"
                    )
                }));
            }
        }
        if let Some(limit) = self.rate
            && let Some(wait) = self.store.take_token(tenant, limit, Utc::now()).await?
        {
            return Err(ServiceError::RateLimited(wait));
        }
        Ok(())
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A job with its progress; its partial output when asked.
    pub async fn view(&self, job: Job, with_partial: bool) -> Result<JobView, ServiceError> {
        let finished = job.status == JobStatus::Completed;
        let progress = if job.status == JobStatus::Processing {
            let (remaining, recent) = self.store.progress_inputs(&job).await?;
            Progress::derive(
                job.chunks_completed,
                job.chunks_total,
                remaining,
                false,
                &recent,
            )
        } else {
            Progress::derive(job.chunks_completed, job.chunks_total, 0, finished, &[])
        };
        let partial = if with_partial && !finished && job.chunks_completed > 0 {
            Some(partial_output(&self.store.chunks(job.id, 0).await?))
        } else {
            None
        };
        Ok(JobView {
            job,
            progress,
            partial,
        })
    }

    /// Store a validated submission and queue it; the new job.
    pub async fn create(&self, new: NewJob) -> Result<Job, ServiceError> {
        let job = self.create_as(JobId::new(), new).await?;
        self.runner.queued(&job).await?;
        Ok(job)
    }

    /// Store a validated submission under `id` without queueing it, for a
    /// caller that records something first (then [`Service::queue`]).
    pub async fn create_as(&self, id: JobId, new: NewJob) -> Result<Job, ServiceError> {
        let (mut job, chunks) = self.prepare(new).await?;
        job.id = id;
        self.store.create(&job, &chunks).await?;
        Ok(job)
    }

    /// Check a submission and make its job and chunks, storing nothing.
    async fn prepare(&self, new: NewJob) -> Result<(Job, Vec<String>), ServiceError> {
        new.source
            .check_for(new.kind)
            .map_err(|e| ServiceError::Invalid(e.0))?;
        let engine = self.engines.resolve(new.config.engine.as_ref())?;
        self.engines
            .check_model(&engine, new.config.model.as_deref())?;
        if let Some(url) = &new.config.callback_url {
            let guard = self
                .callbacks
                .as_ref()
                .map_err(|why| ServiceError::Invalid(format!("config.callbackUrl: {why}")))?;
            guard.check(url).await.map_err(ServiceError::Invalid)?;
        }
        let mut new = new;
        if !new.config.glossary_ids.is_empty() {
            let mut named = Vec::with_capacity(new.config.glossary_ids.len());
            for (i, id) in new.config.glossary_ids.iter().enumerate() {
                match self.store.glossary_get(&new.tenant, *id).await? {
                    Some(g) => named.push(g),
                    None => {
                        return Err(ServiceError::Invalid(format!(
                            "config.glossaryIds[{i}]: no glossary with id {id}"
                        )));
                    }
                }
            }
            new.config.glossary = crate::glossaries::merge(&new.config.glossary, &named)
                .map_err(|e| ServiceError::Invalid(format!("config.glossaryIds: {e}")))?;
        }
        let (job, chunks) = crate::pipeline::new_job(new, engine, Utc::now());
        if chunks.len() > self.max_chunks as usize {
            // Refused before anything is stored: a small chunkSize on a large
            // text would otherwise make (and bill) a chunk per sentence.
            return Err(ServiceError::Invalid(format!(
                "this text makes {} chunks of at most {} characters; a job may have at most {}: \
                 raise config.chunkSize or split the text",
                chunks.len(),
                job.config.chunk_size.get(),
                self.max_chunks
            )));
        }
        Ok((job, chunks))
    }

    /// A batch with its items' jobs and derived state.
    async fn batch_view(&self, batch: Batch) -> Result<BatchView, ServiceError> {
        let ids: Vec<JobId> = batch.items.iter().map(|i| i.job_id).collect();
        let jobs = self.store.get_briefs(&ids).await?;
        let by_id: std::collections::HashMap<JobId, Job> =
            jobs.into_iter().map(|j| (j.id, j)).collect();
        let mut items = Vec::with_capacity(batch.items.len());
        for item in &batch.items {
            if let Some(job) = by_id.get(&item.job_id) {
                let view = self.view(job.clone(), false).await?;
                items.push(BatchItemView {
                    name: item.name.clone(),
                    job: view.job,
                    progress: view.progress,
                });
            }
        }
        let refs: Vec<&Job> = items.iter().map(|i| &i.job).collect();
        let summary = crate::batch::summarize(&refs, Utc::now());
        Ok(BatchView {
            batch,
            summary,
            items,
        })
    }

    /// The caller's batch.
    async fn owned_batch(&self, tenant: &Tenant, id: BatchId) -> Result<Batch, ServiceError> {
        let batch = self.store.batch_get(id).await?;
        if batch.tenant == *tenant {
            Ok(batch)
        } else {
            Err(ServiceError::BatchNotFound(id))
        }
    }

    /// Queue a stored pending job (again: queueing is idempotent per run).
    pub async fn queue(&self, job: &Job) -> Result<(), ServiceError> {
        self.runner.queued(job).await
    }

    /// A client's change: planned on the job as it is, written with a
    /// compare-and-set; a race with a worker is planned again on the new
    /// state, a few times.
    async fn client_change(
        &self,
        tenant: &Tenant,
        id: JobId,
        change: Change,
    ) -> Result<(Job, Job), ServiceError> {
        for _ in 0..5 {
            let before = owned(tenant, self.store.get(id).await?)?;
            match crate::store::transition(&*self.store, &before, change.clone(), Utc::now())
                .await?
            {
                TransitionOutcome::Applied(after) => return Ok((before, after)),
                TransitionOutcome::NotAllowed(error) => {
                    return Err(ServiceError::Conflict { id, error });
                }
                TransitionOutcome::LostRace(_) => continue,
            }
        }
        Err(ServiceError::Unavailable(format!(
            "job {id} keeps changing; try again"
        )))
    }

    /// The job gauges, from the store: jobs by status, queue depth, slots.
    pub async fn gauges(&self) -> Result<String, ServiceError> {
        let counts = self.store.counts().await?;
        let slots = self.store.slots_in_use().await?;
        Ok(render_gauges(&counts, slots))
    }
}

/// Prometheus text of the job gauges.
pub fn render_gauges(counts: &[(JobStatus, u64)], slots: u32) -> String {
    let mut out = String::from("# HELP lotsawa_jobs Jobs by status\n# TYPE lotsawa_jobs gauge\n");
    for (st, n) in counts {
        let _ = writeln!(out, "lotsawa_jobs{{status=\"{}\"}} {n}", st.as_str());
    }
    let pending = counts
        .iter()
        .find(|(s, _)| *s == JobStatus::Pending)
        .map_or(0, |(_, n)| *n);
    out.push_str(
        "# HELP lotsawa_queue_depth Jobs waiting to start\n# TYPE lotsawa_queue_depth gauge\n",
    );
    let _ = writeln!(out, "lotsawa_queue_depth{{queue=\"default\"}} {pending}");
    out.push_str(
        "# HELP lotsawa_slots_in_use Concurrency slots held\n# TYPE lotsawa_slots_in_use gauge\n",
    );
    let _ = writeln!(out, "lotsawa_slots_in_use {slots}");
    out
}

/// The job if `tenant` owns it; another tenant's job does not exist for it.
fn owned(tenant: &Tenant, job: Job) -> Result<Job, ServiceError> {
    if job.tenant == *tenant {
        Ok(job)
    } else {
        Err(ServiceError::NotFound(job.id))
    }
}
