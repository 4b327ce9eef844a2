//! The job service: everything the HTTP API needs from a backend, written
//! once over the [`JobStore`] port. A backend supplies only a [`Runner`]:
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
use crate::store::{
    Change, Cursor, JobStore, ListFilter, PageRequest, StoreError, TransitionOutcome,
};

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
    /// An idempotency key used again with a different request.
    #[error("{0}")]
    IdempotencyMismatch(String),
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

/// A job with its derived progress and, while it runs, its partial output.
#[derive(Debug, Clone)]
pub struct JobView {
    /// The stored job.
    pub job: Job,
    /// Derived progress.
    pub progress: Progress,
    /// Output of the chunks translated so far, while not completed.
    pub partial: Option<String>,
}

/// A list request.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Whose jobs (the caller's tenant).
    pub tenant: crate::auth::Tenant,
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this type.
    pub kind: Option<JobType>,
    /// Page size, already clamped by the caller.
    pub limit: u32,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone)]
pub struct JobPage {
    /// The jobs, with their derived progress.
    pub jobs: Vec<JobView>,
    /// Cursor for the next page, when there is one.
    pub next_cursor: Option<String>,
}

/// A finished chunk, as streamed to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkOutput {
    /// Position in the job.
    pub index: u32,
    /// Its translation.
    pub translation: String,
}

/// One item of a batch submission.
#[derive(Debug, Clone)]
pub struct NewBatchItem {
    /// The client's name for it.
    pub name: String,
    /// Its job.
    pub job: NewJob,
}

/// A batch submission (every item's job has the batch's tenant).
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// Whose batch.
    pub tenant: Tenant,
    /// The items, in order.
    pub items: Vec<NewBatchItem>,
}

/// One item of a batch as clients see it.
#[derive(Debug, Clone)]
pub struct BatchItemView {
    /// The client's name for it.
    pub name: String,
    /// Its job (without source or result texts).
    pub job: Job,
    /// Its progress.
    pub progress: Progress,
}

/// A batch with its derived state.
#[derive(Debug, Clone)]
pub struct BatchView {
    /// The stored batch.
    pub batch: Batch,
    /// Status, counts and aggregate progress.
    pub summary: Summary,
    /// Its items, in order (an item whose job was purged is left out).
    pub items: Vec<BatchItemView>,
}

/// A page of batches, newest first.
#[derive(Debug, Clone)]
pub struct BatchPage {
    /// The batches.
    pub batches: Vec<BatchView>,
    /// Cursor for the next page, when there is one.
    pub next_cursor: Option<String>,
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
    /// The tenant of an API key; `Unauthorized` for an unknown or revoked key.
    async fn authenticate(&self, key: &str) -> Result<Tenant, ServiceError>;
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
}

/// The engines a deployment offers.
#[derive(Debug, Clone)]
pub struct EngineChoice {
    /// Names a job may ask for.
    pub names: Vec<String>,
    /// The one used when a job names none.
    pub default: String,
    /// Where they run, for messages ("server", "deployment").
    pub place: &'static str,
    /// Models an engine accepts (a deployment's rights may cover only
    /// these); an engine not listed takes any model.
    pub models: Vec<(String, Vec<String>)>,
}

/// Parse an allowlist of models (`LOTSAWA_MODELS`): comma-separated
/// `engine:model` entries (a model id may itself hold `:`, as Bedrock's do).
pub fn parse_model_list(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.split_once(':') {
            Some((engine, model)) if !engine.trim().is_empty() && !model.trim().is_empty() => {
                out.push((engine.trim().to_owned(), model.trim().to_owned()));
            }
            _ => {
                return Err(format!(
                    "expected comma-separated engine:model entries (openai:gpt-4o-mini), got '{entry}'"
                ));
            }
        }
    }
    Ok(out)
}

/// The models each model engine accepts. `engines` are (name, default
/// model) of the engines that call a model. With `restrict` false and no
/// list, any model goes; otherwise an engine accepts the models listed for
/// it, or only its default model when none are.
pub fn model_allowlists(
    listed: &[(String, String)],
    engines: &[(String, String)],
    restrict: bool,
) -> Vec<(String, Vec<String>)> {
    if listed.is_empty() && !restrict {
        return Vec::new();
    }
    engines
        .iter()
        .map(|(engine, default)| {
            let mut models: Vec<String> = listed
                .iter()
                .filter(|(e, _)| e == engine)
                .map(|(_, m)| m.clone())
                .collect();
            if models.is_empty() {
                models.push(default.clone());
            }
            (engine.clone(), models)
        })
        .collect()
}

impl EngineChoice {
    /// The engine a submission runs on, or why it cannot.
    pub fn resolve(&self, asked: Option<&EngineName>) -> Result<EngineName, ServiceError> {
        let engine = match asked {
            Some(e) => e.clone(),
            None => EngineName::parse(&self.default).map_err(|e| ServiceError::Invalid(e.0))?,
        };
        if !self.names.iter().any(|n| n == engine.as_str()) {
            return Err(ServiceError::Invalid(format!(
                "engine '{engine}' is not available on this {} (available: {})",
                self.place,
                self.names.join(", ")
            )));
        }
        Ok(engine)
    }

    /// Whether `engine` accepts `model` (a job without a model uses the
    /// engine's default, which is always allowed).
    pub fn check_model(
        &self,
        engine: &EngineName,
        model: Option<&str>,
    ) -> Result<(), ServiceError> {
        let Some(model) = model else { return Ok(()) };
        match self.models.iter().find(|(e, _)| e == engine.as_str()) {
            Some((_, allowed)) if !allowed.iter().any(|m| m == model) => {
                Err(ServiceError::Invalid(format!(
                    "model '{model}' is not allowed for engine '{engine}' on this {} (allowed: {})",
                    self.place,
                    allowed.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The one job service, over a store and a runner.
#[derive(Clone)]
pub struct Service {
    max_batch_items: u32,
    store: Arc<dyn JobStore>,
    runner: Arc<dyn Runner>,
    engines: EngineChoice,
    max_chunks: u32,
    rate: Option<crate::rate::RateLimit>,
    max_pending: Option<u32>,
    /// The callback guard, or why this deployment takes no callback URL.
    callbacks: Result<Arc<crate::webhook::Callbacks>, String>,
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
    pub fn new(store: Arc<dyn JobStore>, runner: Arc<dyn Runner>, engines: EngineChoice) -> Self {
        Self {
            max_chunks: DEFAULT_MAX_CHUNKS,
            max_batch_items: crate::batch::DEFAULT_MAX_ITEMS,
            rate: None,
            max_pending: None,
            callbacks: Err("this deployment does not deliver callbacks".into()),
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
    pub fn store(&self) -> &Arc<dyn JobStore> {
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

#[async_trait]
impl JobService for Service {
    async fn submit(&self, new: NewJob) -> Result<Job, ServiceError> {
        self.admit(&new.tenant).await?;
        self.create(new).await
    }

    async fn submit_once(&self, new: NewJob, key: &str) -> Result<Submitted, ServiceError> {
        let now = Utc::now();
        let fingerprint = new.fingerprint();
        let ours = crate::store::IdempotencyRecord {
            tenant: new.tenant.clone(),
            key: key.to_owned(),
            fingerprint: fingerprint.clone(),
            job_id: JobId::new(),
            created_at: now,
        };
        let held = self
            .store
            .idempotency_put(&ours, now - IDEMPOTENCY_WINDOW)
            .await?;
        if held.fingerprint != fingerprint {
            return Err(ServiceError::IdempotencyMismatch(format!(
                "Idempotency-Key '{key}' was used with a different request (job {})",
                held.job_id
            )));
        }
        let replayed = held.job_id != ours.job_id;
        if !replayed {
            // Only a request that creates spends a token; a replay is free.
            self.admit(&new.tenant).await?;
        }
        if replayed {
            match self.store.get(held.job_id).await {
                Ok(_) => {
                    return Ok(Submitted {
                        job_id: held.job_id,
                        replayed,
                    });
                }
                // The first request stopped between its record and its job
                // (or was refused, or is making it now): make it, once.
                Err(StoreError::NotFound(_)) => self.admit(&new.tenant).await?,
                Err(e) => return Err(e.into()),
            }
        }
        match self.create_as(held.job_id, new).await {
            Ok(job) => self.queue(&job).await?,
            Err(ServiceError::Store(StoreError::ConditionFailed(_))) if replayed => {}
            Err(e) => return Err(e),
        }
        Ok(Submitted {
            job_id: held.job_id,
            replayed,
        })
    }

    async fn get(&self, tenant: &Tenant, id: JobId) -> Result<JobView, ServiceError> {
        let job = owned(tenant, self.store.get(id).await?)?;
        self.view(job, true).await
    }

    async fn list(&self, query: ListQuery) -> Result<JobPage, ServiceError> {
        let filter = ListFilter {
            tenant: query.tenant.clone(),
            status: query.status,
            kind: query.kind,
        };
        let after = query
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(&filter, c))
            .transpose()?;
        let page = self
            .store
            .list(&PageRequest {
                filter: filter.clone(),
                limit: query.limit,
                after,
            })
            .await?;
        let mut jobs = Vec::with_capacity(page.jobs.len());
        for j in page.jobs {
            jobs.push(self.view(j, false).await?);
        }
        Ok(JobPage {
            jobs,
            next_cursor: page.next.map(|p| Cursor::encode(&filter, &p)),
        })
    }

    async fn cancel(&self, tenant: &Tenant, id: JobId) -> Result<Job, ServiceError> {
        let (before, after) = self.client_change(tenant, id, Change::Cancel).await?;
        self.runner.cancelled(&after, before.status).await;
        Ok(after)
    }

    async fn retry(&self, tenant: &Tenant, id: JobId) -> Result<Job, ServiceError> {
        let (_, after) = self.client_change(tenant, id, Change::Retry).await?;
        self.runner.queued(&after).await?;
        Ok(after)
    }

    async fn chunks_from(
        &self,
        tenant: &Tenant,
        id: JobId,
        from: u32,
        to: u32,
    ) -> Result<Vec<ChunkOutput>, ServiceError> {
        self.pulse(tenant, id).await?;
        Ok(self
            .store
            .chunks_between(id, from, to)
            .await?
            .into_iter()
            .filter(|c| c.status == ChunkStatus::Completed)
            .map(|c| ChunkOutput {
                index: c.index,
                translation: c.translation.unwrap_or_default(),
            })
            .collect())
    }

    async fn chunk_records(
        &self,
        tenant: &Tenant,
        id: JobId,
    ) -> Result<Vec<crate::ledger::ChunkRecord>, ServiceError> {
        self.pulse(tenant, id).await?;
        Ok(self.store.chunks(id, 0).await?)
    }

    async fn pulse(&self, tenant: &Tenant, id: JobId) -> Result<crate::store::Pulse, ServiceError> {
        let pulse = self.store.pulse(id).await?;
        if pulse.tenant != *tenant {
            return Err(ServiceError::NotFound(id));
        }
        Ok(pulse)
    }

    async fn watch(&self, tenant: &Tenant, id: JobId) -> Result<JobView, ServiceError> {
        let brief = owned(tenant, self.store.get_brief(id).await?)?;
        let job = match brief.status {
            JobStatus::Completed => {
                // The result, without the source a watcher has no use for.
                let mut full = self.store.get(id).await?;
                full.source = String::new();
                full
            }
            _ => brief,
        };
        self.view(job, false).await
    }

    async fn submit_batch(&self, new: NewBatch) -> Result<BatchView, ServiceError> {
        let n = new.items.len();
        if n == 0 {
            return Err(ServiceError::Invalid(
                "items: a batch needs at least one item".into(),
            ));
        }
        if n > self.max_batch_items as usize {
            return Err(ServiceError::Invalid(format!(
                "items: a batch may have at most {} items; this one has {n}: split it",
                self.max_batch_items
            )));
        }
        let mut names = std::collections::HashSet::with_capacity(n);
        for (i, item) in new.items.iter().enumerate() {
            crate::batch::check_name(&item.name)
                .map_err(|e| ServiceError::Invalid(format!("items[{i}].name {e}")))?;
            if !names.insert(item.name.as_str()) {
                return Err(ServiceError::Invalid(format!(
                    "items[{i}].name '{}' is used by an earlier item; names must be unique",
                    item.name
                )));
            }
            if item.job.tenant != new.tenant {
                return Err(ServiceError::Invalid(format!(
                    "items[{i}] belongs to another tenant"
                )));
            }
        }
        // Every item is checked before anything is stored.
        let id = BatchId::new();
        let mut prepared = Vec::with_capacity(n);
        for (i, item) in new.items.into_iter().enumerate() {
            let (mut job, chunks) = self.prepare(item.job).await.map_err(|e| match e {
                ServiceError::Invalid(m) => ServiceError::Invalid(format!("items[{i}]: {m}")),
                other => other,
            })?;
            job.batch = Some(BatchRef {
                id,
                index: i as u32,
            });
            prepared.push((item.name, job, chunks));
        }
        self.admit_n(&new.tenant, n as u32).await?;
        // The jobs first, then the batch: a stop in between leaves jobs that
        // run as singles, never a batch naming jobs that do not exist.
        for (_, job, chunks) in &prepared {
            self.store.create(job, chunks).await?;
        }
        let batch = Batch {
            id,
            tenant: new.tenant,
            created_at: Utc::now(),
            items: prepared
                .iter()
                .map(|(name, job, _)| BatchItem {
                    name: name.clone(),
                    job_id: job.id,
                })
                .collect(),
        };
        self.store.batch_put(&batch).await?;
        for (_, job, _) in &prepared {
            self.runner.queued(job).await?;
        }
        self.batch_view(batch).await
    }

    async fn batch(&self, tenant: &Tenant, id: BatchId) -> Result<BatchView, ServiceError> {
        let batch = self.owned_batch(tenant, id).await?;
        self.batch_view(batch).await
    }

    async fn list_batches(
        &self,
        tenant: &Tenant,
        limit: u32,
        cursor: Option<String>,
    ) -> Result<BatchPage, ServiceError> {
        let tag = Cursor::batches_tag(tenant);
        let after = cursor
            .as_deref()
            .map(|c| Cursor::decode_tagged(&tag, c))
            .transpose()?;
        let (batches, next) = self
            .store
            .batch_list(tenant, limit, after.as_deref())
            .await?;
        let mut views = Vec::with_capacity(batches.len());
        for b in batches {
            views.push(self.batch_view(b).await?);
        }
        Ok(BatchPage {
            batches: views,
            next_cursor: next.map(|p| Cursor::encode_tagged(&tag, &p)),
        })
    }

    async fn cancel_batch(&self, tenant: &Tenant, id: BatchId) -> Result<BatchView, ServiceError> {
        let batch = self.owned_batch(tenant, id).await?;
        let ids: Vec<JobId> = batch.items.iter().map(|i| i.job_id).collect();
        for job in self.store.get_briefs(&ids).await? {
            if job.status.is_terminal() {
                continue;
            }
            match self.cancel(tenant, job.id).await {
                // It ended meanwhile.
                Ok(_) | Err(ServiceError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.batch_view(batch).await
    }

    async fn retry_batch(&self, tenant: &Tenant, id: BatchId) -> Result<BatchView, ServiceError> {
        let batch = self.owned_batch(tenant, id).await?;
        let ids: Vec<JobId> = batch.items.iter().map(|i| i.job_id).collect();
        for job in self.store.get_briefs(&ids).await? {
            if !matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) {
                continue;
            }
            match self.retry(tenant, job.id).await {
                Ok(_) | Err(ServiceError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.batch_view(batch).await
    }

    async fn authenticate(&self, key: &str) -> Result<Tenant, ServiceError> {
        let refused = || ServiceError::Unauthorized("unknown or revoked API key".into());
        if !crate::auth::looks_like_key(key) {
            return Err(refused());
        }
        match self.store.key_find(&crate::auth::key_hash(key)).await? {
            Some(k) if k.revoked_at.is_none() => Ok(k.tenant),
            _ => Err(refused()),
        }
    }

    async fn wait_for_change(&self, id: JobId, seen: &mut u64, max_wait: Duration) {
        self.runner.wait_for_change(id, seen, max_wait).await;
    }

    fn engines(&self) -> Vec<String> {
        self.engines.names.clone()
    }

    async fn metrics(&self) -> Result<String, ServiceError> {
        let mut out = self.gauges().await?;
        out.push_str(&self.runner.extra_metrics().await?);
        Ok(out)
    }

    async fn healthy(&self) -> Result<(), ServiceError> {
        self.runner.ready()?;
        self.store.slots_in_use().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_checked_against_the_engine_allowlist() {
        let choice = EngineChoice {
            names: vec!["bedrock".into(), "openai".into()],
            default: "bedrock".into(),
            place: "deployment",
            models: vec![("bedrock".into(), vec!["anthropic.claude-3-haiku".into()])],
        };
        let bedrock = EngineName::parse("bedrock").expect("name");
        let openai = EngineName::parse("openai").expect("name");
        assert!(choice.check_model(&bedrock, None).is_ok());
        assert!(
            choice
                .check_model(&bedrock, Some("anthropic.claude-3-haiku"))
                .is_ok()
        );
        let err = choice
            .check_model(&bedrock, Some("anthropic.claude-3-opus"))
            .expect_err("not allowed");
        assert!(
            err.to_string()
                .contains("allowed: anthropic.claude-3-haiku"),
            "{err}"
        );
        assert!(choice.check_model(&openai, Some("anything")).is_ok());
    }

    #[test]
    fn model_lists_parse_engine_model_pairs() {
        let l = parse_model_list(
            " openai:gpt-4o-mini, bedrock:anthropic.claude-3-haiku-20240307-v1:0,,",
        )
        .expect("valid");
        assert_eq!(
            l,
            vec![
                ("openai".to_owned(), "gpt-4o-mini".to_owned()),
                (
                    "bedrock".to_owned(),
                    "anthropic.claude-3-haiku-20240307-v1:0".to_owned()
                ),
            ]
        );
        assert!(parse_model_list("").expect("empty").is_empty());
        for bad in ["gpt-4o", "openai:", ":gpt-4o"] {
            let e = parse_model_list(bad).expect_err(bad);
            assert!(e.contains("engine:model"), "{e}");
        }
    }

    #[test]
    fn allowlists_hold_listed_models_or_the_default() {
        let engines = vec![
            ("openai".to_owned(), "gpt-4o-mini".to_owned()),
            ("bedrock".to_owned(), "haiku".to_owned()),
        ];
        assert!(model_allowlists(&[], &engines, false).is_empty(), "open");
        assert_eq!(
            model_allowlists(&[], &engines, true),
            vec![
                ("openai".to_owned(), vec!["gpt-4o-mini".to_owned()]),
                ("bedrock".to_owned(), vec!["haiku".to_owned()]),
            ],
            "keys required: defaults only"
        );
        let listed = vec![
            ("openai".to_owned(), "gpt-4o".to_owned()),
            ("openai".to_owned(), "gpt-4o-mini".to_owned()),
        ];
        assert_eq!(
            model_allowlists(&listed, &engines, false),
            vec![
                (
                    "openai".to_owned(),
                    vec!["gpt-4o".to_owned(), "gpt-4o-mini".to_owned()]
                ),
                ("bedrock".to_owned(), vec!["haiku".to_owned()]),
            ]
        );
    }
}
