//! The in-process scheduler: starts pending jobs in FIFO order, never more
//! than `concurrency` at once, runs each job's chunks in order with the retry
//! policy, and wakes on the enqueue itself (no polling loop).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use lotsawa_core::retry::Backoff;
use lotsawa_core::step::{ChunkMeter, ChunkStep, StepInput, chunk_step};
use lotsawa_core::store::{Change, Checkpoint, ChunkDone, TransitionOutcome, transition};
use lotsawa_core::{
    ChunkPlan, ChunkRecord, ChunkStatus, EngineError, Job, JobId, RetryDecision, RetryPolicy,
    StoreError, pipeline,
};
use lotsawa_engines::EngineSet;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::Metrics;
use lotsawa_core::store::Finish;

/// Cancellation handles of running jobs, shared with the service.
pub type RunningJobs = Arc<Mutex<HashMap<JobId, (u32, CancellationToken)>>>;

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Most jobs processing at once.
    pub concurrency: u32,
    /// Per-chunk retry policy.
    pub retry: RetryPolicy,
    /// How long in-flight chunk calls may run after a shutdown request.
    pub shutdown_grace: Duration,
    /// Most chunks one submitted job may have.
    pub max_chunks: u32,
    /// Per-tenant job-creation rate (`None`: unlimited).
    pub rate: Option<lotsawa_core::rate::RateLimit>,
    /// Most jobs one tenant may have waiting (`None`: no cap).
    pub max_pending: Option<u32>,
    /// Most items one batch may have.
    pub max_batch_items: u32,
    /// Models jobs may name, as `(engine, model)`.
    pub models: Vec<(String, String)>,
    /// Only listed models (or each engine's default) even when none are
    /// listed: set when keys are required, so a key cannot pick a costly model.
    pub restrict_models: bool,
    /// How long finished jobs are kept (`None`: for ever).
    pub retention: Option<Duration>,
    /// When a commit is on disk.
    pub durability: crate::store::Durability,
    /// Webhook delivery; `None`: callback URLs are refused (no secret).
    pub webhooks: Option<crate::webhooks::WebhookSettings>,
    /// On a PostgreSQL database: this server's lease on the jobs it runs,
    /// its name and its connections.
    pub postgres: lotsawa_postgres::PgOptions,
}

impl Default for SchedulerConfig {
    /// Three jobs at once, the default retry policy, 10 s of grace, 2,000
    /// chunks a job, and no per-tenant limits (the keyless local default).
    fn default() -> Self {
        Self {
            concurrency: 3,
            retry: RetryPolicy::default(),
            shutdown_grace: Duration::from_secs(10),
            max_chunks: lotsawa_core::service::DEFAULT_MAX_CHUNKS,
            rate: None,
            max_pending: None,
            max_batch_items: lotsawa_core::batch::DEFAULT_MAX_ITEMS,
            models: Vec::new(),
            restrict_models: false,
            retention: None,
            durability: crate::store::Durability::Full,
            webhooks: None,
            postgres: lotsawa_postgres::PgOptions::default(),
        }
    }
}

/// Everything a job runner needs.
#[derive(Clone)]
pub(crate) struct Shared {
    pub store: crate::NodeStore,
    pub engines: EngineSet,
    pub metrics: Metrics,
    pub changes: Arc<crate::changes::Changes>,
    pub wake: Arc<Notify>,
    pub running: RunningJobs,
    pub config: SchedulerConfig,
    /// Stop starting chunks (graceful shutdown begins).
    pub draining: CancellationToken,
    /// Abort in-flight calls (grace period over).
    pub hard_stop: CancellationToken,
    /// Tenants' budgets, read at most a second ago.
    pub budgets: Arc<lotsawa_core::usage::BudgetCache>,
    /// When this server's leases were last renewed (a shared store).
    pub renewed: Arc<LeaseClock>,
    /// Jobs were queued here: the other servers are told (a shared store),
    /// once for however many queued meanwhile.
    pub announce: Arc<Notify>,
}

/// Tell the other servers of queued jobs until `stop`.
pub(crate) async fn announce_loop(shared: Shared, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = shared.announce.notified() => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = shared.store.announce_queue().await {
            tracing::warn!(error = %e, "announcing queued jobs failed; other servers find them within a quarter lease");
        }
    }
}

/// When this server last renewed its leases, on the monotonic clock (which
/// runs on while the process is stopped): a server that was stopped or cut
/// off past its lease sees it before it starts another call.
#[derive(Debug)]
pub(crate) struct LeaseClock {
    base: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Default for LeaseClock {
    fn default() -> Self {
        Self {
            base: std::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl LeaseClock {
    /// Leases were renewed by a request sent at `at`.
    fn renewed(&self, at: std::time::Instant) {
        let ms = at.duration_since(self.base).as_millis() as u64;
        self.last_ms
            .fetch_max(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Since the last renewal.
    fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::SeqCst));
        self.base.elapsed().saturating_sub(last)
    }
}

/// Before a chunk's call on a shared store: wait until this server's
/// leases are known to be current (renewed within two thirds of the
/// lease); false when the job stops meanwhile (its lease was lost, or the
/// server drains).
async fn lease_held(shared: &Shared, cancel: &CancellationToken) -> bool {
    let Some(lease) = shared.store.lease() else {
        return true;
    };
    loop {
        if cancel.is_cancelled() || shared.draining.is_cancelled() {
            return false;
        }
        if shared.renewed.age() < lease * 2 / 3 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Shared {
    fn publish(&self, id: JobId) {
        self.changes.publish(id);
    }
}

/// Run until `draining` is cancelled, then let in-flight chunk calls finish
/// within the grace period and return.
pub(crate) async fn run(shared: Shared) {
    let mut tasks: JoinSet<(JobId, u32)> = JoinSet::new();

    // Resume jobs a crash or shutdown left processing in a store this
    // server owns, oldest first.
    match shared.store.resumable().await {
        Ok(jobs) => {
            for (i, job) in jobs.into_iter().enumerate() {
                if i < shared.config.concurrency as usize {
                    tracing::info!(job_id = %job.id, done = job.chunks_completed,
                        total = job.chunks_total, "resuming job");
                    spawn_runner(&shared, &mut tasks, job);
                } else {
                    let id = job.id;
                    match transition(&*shared.store, &job, Change::Requeue, Utc::now()).await {
                        Ok(TransitionOutcome::Applied(_)) => {}
                        Ok(other) => {
                            tracing::warn!(job_id = %id, outcome = ?other, "job moved before it was requeued")
                        }
                        Err(e) => tracing::error!(job_id = %id, error = %e, "cannot requeue job"),
                    }
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot load processing jobs"),
    }

    // On a shared store: renew this server's leases, and look for jobs
    // whose server's lease expired (no announcement tells of that).
    let lease = shared.store.lease();
    let lease_stop = CancellationToken::new();
    let renewing =
        lease.map(|lease| tokio::spawn(lease_loop(shared.clone(), lease, lease_stop.clone())));
    let look_every = lease.map_or(Duration::from_secs(3600), |l| {
        (l / 4).max(Duration::from_millis(50))
    });
    loop {
        // Every free slot is claimed in one write (one commit), not one
        // claim per commit: the drain is no longer bounded by fsyncs in a row.
        let free = (shared.config.concurrency as usize).saturating_sub(tasks.len());
        if free > 0 && !shared.draining.is_cancelled() {
            let asked = std::time::Instant::now();
            match shared
                .store
                .claim_many(shared.config.concurrency, free as u32, Utc::now())
                .await
            {
                Ok(jobs) => {
                    if !jobs.is_empty() {
                        // A claim gives its jobs a fresh lease.
                        shared.renewed.renewed(asked);
                    }
                    for job in jobs {
                        shared.publish(job.id);
                        spawn_runner(&shared, &mut tasks, job);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "claiming the next jobs failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let finished = |done: Result<(JobId, u32), tokio::task::JoinError>| {
            if let Ok((id, run)) = done
                && let Ok(mut r) = shared.running.lock()
            {
                // A retried job may already run again under a newer run.
                if r.get(&id).is_some_and(|(current, _)| *current == run) {
                    r.remove(&id);
                }
            }
        };
        tokio::select! {
            _ = shared.wake.notified() => {}
            Some(done) = tasks.join_next(), if !tasks.is_empty() => finished(done),
            _ = tokio::time::sleep(look_every), if lease.is_some() => {}
            _ = shared.draining.cancelled() => break,
        }
        // Every runner that ended meanwhile frees its slot now, so the next
        // claim takes all of them at once rather than one per commit.
        while let Some(done) = tasks.try_join_next() {
            finished(done);
        }
    }

    // Draining: runners finish their in-flight call and stop before the next
    // chunk. After the grace period, abort what is still running; the jobs
    // stay `processing` and resume at the next start.
    let grace = tokio::time::sleep(shared.config.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = &mut grace => {
                tracing::warn!(running = tasks.len(), "grace period over; aborting in-flight chunk calls");
                shared.hard_stop.cancel();
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
    }
    // Other servers share the store: they go on with this one's jobs now
    // rather than after the lease (renewals stop first: they would lock the
    // same rows).
    lease_stop.cancel();
    if let Some(task) = renewing {
        let _ = task.await;
    }
    if lease.is_some() {
        match shared.store.hand_back(Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "running jobs handed back to the queue"),
            Err(e) => {
                tracing::warn!(error = %e, "handing jobs back failed; they are taken over when the lease expires")
            }
        }
    }
}

/// Renew this server's leases every third of the lease; a job it no
/// longer holds (taken over after this server stalled, or moved on) stops
/// its runner.
async fn lease_loop(shared: Shared, lease: Duration, stop: CancellationToken) {
    let mut every = tokio::time::interval(lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        let held: Vec<(JobId, u32)> = match shared.running.lock() {
            Ok(r) => r.iter().map(|(id, (run, _))| (*id, *run)).collect(),
            Err(_) => continue,
        };
        let sent = std::time::Instant::now();
        match shared.store.renew(&held, Utc::now()).await {
            Ok(lost) => {
                // Runners of lost jobs stop before the others may go on.
                for (id, run) in lost {
                    tracing::warn!(job_id = %id, run, "lease lost; the runner stops");
                    stop_runner(&shared, id, Some(run));
                }
                if !held.is_empty() {
                    shared.renewed.renewed(sent);
                }
            }
            Err(e) => tracing::warn!(error = %e, "renewing leases failed"),
        }
    }
}

/// Stop the local runner of job `id` (of run `run`, or any).
fn stop_runner(shared: &Shared, id: JobId, run: Option<u32>) {
    if let Ok(running) = shared.running.lock()
        && let Some((held, token)) = running.get(&id)
        && run.is_none_or(|r| r == *held)
    {
        token.cancel();
    }
}

/// What this server does with a shared store's announcements.
pub(crate) struct Announcements {
    pub shared: Shared,
}

impl lotsawa_postgres::listen::Listener for Announcements {
    fn job(&self, id: JobId, now: Option<(lotsawa_core::JobStatus, u32)>) {
        self.shared.publish(id);
        // A job this server runs that was cancelled, requeued or taken
        // over on another server: its runner stops now, its call aborted.
        // Announcements of earlier runs (arriving late) are not news.
        if let Some((status, run)) = now
            && let Ok(running) = self.shared.running.lock()
            && let Some((held, token)) = running.get(&id)
            && (run > *held || (run == *held && status != lotsawa_core::JobStatus::Processing))
        {
            token.cancel();
        }
    }

    fn queue(&self) {
        self.shared.wake.notify_one();
    }

    fn connected(&self) {
        self.shared.wake.notify_one();
        self.shared.changes.publish_all();
    }
}

/// Delete jobs finished longer than `retention` ago: at start, then hourly,
/// in batches, until the backend drains.
pub(crate) async fn purge_loop(
    store: crate::NodeStore,
    retention: Duration,
    draining: CancellationToken,
) {
    const BATCH: u32 = 500;
    loop {
        let before =
            Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let mut purged = 0usize;
        loop {
            match store.purge_finished(before, BATCH).await {
                Ok(n) => {
                    purged += n;
                    if n < BATCH as usize || draining.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "purging finished jobs failed");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(purged, "finished jobs past their retention deleted");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = draining.cancelled() => return,
        }
    }
}

/// A runner stopped on a store error (a full or read-only disk): put its
/// job back in the queue, retrying with backoff while the storage refuses
/// writes, so it runs again once they succeed. A drain stops trying; the
/// next start resumes the job.
async fn requeue_after_store_error(shared: &Shared, job: &Job) {
    let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    for round in 0.. {
        match transition(&*shared.store, job, Change::Requeue, Utc::now()).await {
            Ok(TransitionOutcome::Applied(_)) => {
                tracing::info!(job_id = %job.id, "job back in the queue after a store error");
                shared.wake.notify_one();
                return;
            }
            // Cancelled or moved on meanwhile: nothing to put back.
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(job_id = %job.id, error = %e, "requeue failed; trying again");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.ceiling(round)) => {}
            _ = shared.draining.cancelled() => return,
        }
    }
}

fn spawn_runner(shared: &Shared, tasks: &mut JoinSet<(JobId, u32)>, job: Job) {
    let token = CancellationToken::new();
    hold(shared, &job, &token);
    let shared = shared.clone();
    tasks.spawn(async move {
        let (mut job, mut token, mut chunks) = (job, token, None);
        loop {
            let (id, run) = (job.id, job.run);
            let span = crate::traces::run_span(&job);
            let next = match run_job(&shared, &job, chunks.take(), &token)
                .instrument(span)
                .await
            {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(job_id = %id, error = %e, "job runner stopped on a store error");
                    // The job is read again: the run may have moved it before failing.
                    let current = match shared.store.get(id).await {
                        Ok(j) => j,
                        Err(_) => job.clone(),
                    };
                    if current.status == lotsawa_core::JobStatus::Processing
                        && current.run == run
                    {
                        requeue_after_store_error(&shared, &current).await;
                    }
                    None
                }
            };
            shared.publish(id);
            let Some((next, its_chunks)) = next else {
                return (id, run);
            };
            chunks = Some(its_chunks);
            // The slot was handed on in the completion's commit: this
            // runner goes on with the next job.
            token = CancellationToken::new();
            if let Ok(mut r) = shared.running.lock()
                && r.get(&id).is_some_and(|(current, _)| *current == run)
            {
                r.remove(&id);
            }
            hold(&shared, &next, &token);
            shared.publish(next.id);
            job = next;
        }
    });
}

/// Note that this server runs `job` under `token`. A runner of an earlier
/// run of the same job (this server took its own job over after its lease
/// lapsed) is stopped: its run ended.
fn hold(shared: &Shared, job: &Job, token: &CancellationToken) {
    if let Ok(mut r) = shared.running.lock()
        && let Some((run, old)) = r.insert(job.id, (job.run, token.clone()))
        && run != job.run
    {
        old.cancel();
    }
}

/// Outcome of translating one chunk (its attempts and their commit).
enum ChunkOutcome {
    /// Committed: what the commit said, and for the last chunk what its
    /// commit with the job's completion did.
    Committed {
        done: ChunkDone,
        kept: Checkpoint,
        finish: Option<Box<Finish>>,
    },
    Failed {
        attempts: u32,
        err: EngineError,
    },
    Stopped,
}

/// End the run with `change`; a run that moved on meanwhile is left alone.
async fn end_run(shared: &Shared, job: &Job, change: Change) -> Result<(), StoreError> {
    match transition(&*shared.store, job, change, Utc::now()).await? {
        TransitionOutcome::Applied(_) => {}
        other => tracing::info!(outcome = ?other, "the run ended elsewhere"),
    }
    Ok(())
}

/// Run a job's chunks in order (`chunks`: its ledger when the caller has
/// it already). A job that completes may hand its slot on: the job claimed
/// in its commit is returned, with its chunks.
async fn run_job(
    shared: &Shared,
    job: &Job,
    chunks: Option<Vec<ChunkRecord>>,
    cancel: &CancellationToken,
) -> Result<Option<(Job, Vec<ChunkRecord>)>, StoreError> {
    let chunks = match chunks {
        Some(c) => c,
        None => shared.store.chunks(job.id, 0).await?,
    };
    if job.config.parallel_chunks > 1 {
        return run_parallel(shared, job, &chunks, cancel).await;
    }
    let mut prev: Option<ChunkRecord> = None;
    for chunk in chunks.iter() {
        if chunk.status == ChunkStatus::Completed {
            prev = Some(chunk.clone());
            continue;
        }
        if cancel.is_cancelled() || shared.draining.is_cancelled() {
            return Ok(None);
        }
        if let Some(spent) = shared
            .budgets
            .spent(&*shared.store, &job.tenant, Utc::now())
            .await?
        {
            return stop_for_budget(shared, job, spent).await;
        }
        let plan = match ChunkPlan::new(job, chunk, prev.as_ref(), &shared.engines) {
            Ok(p) => p,
            Err(error) => {
                return end_run(shared, job, Change::Fail { error, chunk: None })
                    .await
                    .map(|()| None);
            }
        };
        match translate_chunk(shared, job, &plan, chunk, cancel, true).await? {
            ChunkOutcome::Stopped => return Ok(None),
            ChunkOutcome::Committed { done, kept, finish } => {
                let mut finished = chunk.clone();
                finished.status = ChunkStatus::Completed;
                finished.translation = Some(done.translation);
                prev = Some(finished);
                if let Some(f) = finish.map(|f| *f) {
                    if f.completed || f.kept == Checkpoint::RunEnded {
                        return Ok(f.next);
                    }
                    continue;
                }
                if kept == Checkpoint::RunEnded {
                    // Cancelled (or retried) while the call was in flight.
                    return Ok(None);
                }
            }
            ChunkOutcome::Failed { attempts, err } => {
                let error =
                    pipeline::describe_failure(chunk.index, attempts, err.class, &err.public());
                tracing::warn!(job_id = %job.id, chunk = chunk.index, attempts, error = %err.public(),
                    detail = err.detail.as_deref().unwrap_or(""), "chunk failed for good");
                return end_run(
                    shared,
                    job,
                    Change::Fail {
                        error,
                        chunk: Some(chunk.index),
                    },
                )
                .await
                .map(|()| None);
            }
        }
    }

    complete_from_ledger(shared, job).await
}

/// Run a job's unfinished chunks `config.parallelChunks` at a time. Each
/// chunk commits as soon as it is translated (the ledger keeps any order;
/// readers show chunks in order); a chunk that fails for good fails the run
/// and drops the calls still in flight; a cancel or a drain stops starting
/// chunks and drops them too (their chunks stay pending and run again on
/// resume). Once every chunk is committed the job completes from its ledger.
async fn run_parallel(
    shared: &Shared,
    job: &Job,
    chunks: &[ChunkRecord],
    cancel: &CancellationToken,
) -> Result<Option<(Job, Vec<ChunkRecord>)>, StoreError> {
    use futures::StreamExt;
    let width = job.config.parallel_chunks.max(1) as usize;
    let mut todo: std::collections::VecDeque<usize> = chunks
        .iter()
        .enumerate()
        .filter(|(_, c)| c.status != ChunkStatus::Completed)
        .map(|(i, _)| i)
        .collect();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut spent = None;
    loop {
        while in_flight.len() < width
            && spent.is_none()
            && !cancel.is_cancelled()
            && !shared.draining.is_cancelled()
        {
            // The budget is checked only for a chunk about to start: a job
            // whose last chunks spent it still completes.
            if todo.is_empty() {
                break;
            }
            spent = shared
                .budgets
                .spent(&*shared.store, &job.tenant, Utc::now())
                .await?;
            if spent.is_some() {
                // The chunks in flight finish; no other starts.
                break;
            }
            let Some((i, chunk)) = todo.pop_front().and_then(|i| Some((i, chunks.get(i)?))) else {
                break;
            };
            let prev = i.checked_sub(1).and_then(|p| chunks.get(p));
            let plan = match ChunkPlan::new(job, chunk, prev, &shared.engines) {
                Ok(p) => p,
                Err(error) => {
                    return end_run(shared, job, Change::Fail { error, chunk: None })
                        .await
                        .map(|()| None);
                }
            };
            in_flight.push(async move {
                let out = translate_chunk(shared, job, &plan, chunk, cancel, false).await;
                (chunk.index, out)
            });
        }
        let Some((index, out)) = in_flight.next().await else {
            break;
        };
        match out? {
            ChunkOutcome::Stopped => return Ok(None),
            ChunkOutcome::Committed { kept, .. } => {
                if kept == Checkpoint::RunEnded {
                    return Ok(None);
                }
            }
            ChunkOutcome::Failed { attempts, err } => {
                let error = pipeline::describe_failure(index, attempts, err.class, &err.public());
                tracing::warn!(job_id = %job.id, chunk = index, attempts, error = %err.public(),
                    detail = err.detail.as_deref().unwrap_or(""), "chunk failed for good");
                return end_run(
                    shared,
                    job,
                    Change::Fail {
                        error,
                        chunk: Some(index),
                    },
                )
                .await
                .map(|()| None);
            }
        }
    }
    if cancel.is_cancelled() || shared.draining.is_cancelled() {
        return Ok(None);
    }
    if let Some(spent) = spent {
        return stop_for_budget(shared, job, spent).await;
    }
    complete_from_ledger(shared, job).await
}

/// Fail the run of `job` because its tenant's monthly token budget is
/// spent (`budget_exhausted`); its committed chunks stay, so a retry after
/// the reset goes on from the first unfinished one.
async fn stop_for_budget(
    shared: &Shared,
    job: &Job,
    spent: lotsawa_core::usage::BudgetSpent,
) -> Result<Option<(Job, Vec<ChunkRecord>)>, StoreError> {
    tracing::warn!(job_id = %job.id, budget = spent.budget, used = spent.used,
        "monthly token budget spent; the job stops");
    end_run(
        shared,
        job,
        Change::Fail {
            error: spent.job_error(),
            chunk: None,
        },
    )
    .await
    .map(|()| None)
}

/// Complete `job` from its committed ledger, when every chunk is done.
async fn complete_from_ledger(
    shared: &Shared,
    job: &Job,
) -> Result<Option<(Job, Vec<ChunkRecord>)>, StoreError> {
    let ledger = shared.store.chunks(job.id, 0).await?;
    if ledger.iter().any(|c| c.status != ChunkStatus::Completed) {
        return Ok(None);
    }
    let result = pipeline::job_result(
        job.kind,
        &ledger,
        &pipeline::result_label(job, &shared.engines),
    );
    end_run(shared, job, Change::Complete(result))
        .await
        .map(|()| None)
}

/// Translate one chunk: the core's chunk step (translation memory, one
/// attempt, the commit, the memory write), again after each transport
/// failure with backoff until the retry policy gives up. With `in_order`
/// (chunks one at a time), the last chunk is committed with the job's
/// completion, which may hand the slot on.
async fn translate_chunk(
    shared: &Shared,
    job: &Job,
    plan: &ChunkPlan,
    chunk: &ChunkRecord,
    cancel: &CancellationToken,
    in_order: bool,
) -> Result<ChunkOutcome, StoreError> {
    let run = job.run;
    let last = in_order && chunk.index + 1 == job.chunks_total;
    let meter = Meter {
        metrics: &shared.metrics,
        shared,
        cancel,
    };
    // Counted attempts; a rate limit within the throttle budget is not one.
    let (mut attempt, mut counted, mut throttled) = (0u32, 0u32, Duration::ZERO);
    loop {
        attempt += 1;
        counted += 1;
        let finish: Mutex<Option<Finish>> = Mutex::new(None);
        let finish_slot = &finish;
        let stop = async {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = shared.hard_stop.cancelled() => {}
            }
        };
        let commit = move |done: ChunkDone| async move {
            let kept = if last {
                // The chunks before it are completed: they run in order and
                // a failure ends the run.
                let label = pipeline::result_label(job, &shared.engines);
                let hand_off =
                    (!shared.draining.is_cancelled()).then_some(shared.config.concurrency);
                let f = shared
                    .store
                    .finish_last_chunk(job.id, run, &done, label, hand_off, Utc::now())
                    .await?;
                let kept = f.kept;
                if let Ok(mut slot) = finish_slot.lock() {
                    *slot = Some(f);
                }
                kept
            } else {
                shared.store.checkpoint(job.id, run, &done).await?
            };
            shared.publish(job.id);
            Ok((done, kept))
        };
        let input = StepInput {
            job,
            plan,
            chunk,
            attempt,
        };
        let step = chunk_step(&*shared.store, &meter, input, stop, commit).await?;
        let err = match step {
            ChunkStep::Committed { done, kept } => {
                let finish = finish.lock().ok().and_then(|mut f| f.take()).map(Box::new);
                return Ok(ChunkOutcome::Committed { done, kept, finish });
            }
            ChunkStep::Stopped => {
                tracing::info!(chunk = chunk.index, "stopped; in-flight call aborted");
                return Ok(ChunkOutcome::Stopped);
            }
            ChunkStep::Failed(err) => err,
        };
        let jitter: f64 = rand::random();
        match shared
            .config
            .retry
            .after_failure(counted, throttled, &err, jitter)
        {
            RetryDecision::Throttled(wait) => {
                // A rate limit: the shared limiter has paused the engine
                // for every job; this chunk waits, its attempt not spent.
                counted -= 1;
                throttled += wait;
                tracing::info!(job_id = %job.id, chunk = chunk.index, wait_ms = wait.as_millis() as u64,
                    throttled_ms = throttled.as_millis() as u64, "rate limited; waiting without spending an attempt");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return Ok(ChunkOutcome::Stopped),
                    _ = shared.draining.cancelled() => return Ok(ChunkOutcome::Stopped),
                }
            }
            RetryDecision::RetryAfter(wait) => {
                tracing::warn!(job_id = %job.id, chunk = chunk.index, attempt = counted, error = %err.public(),
                    detail = err.detail.as_deref().unwrap_or(""), wait_ms = wait.as_millis() as u64, "chunk failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return Ok(ChunkOutcome::Stopped),
                    _ = shared.draining.cancelled() => return Ok(ChunkOutcome::Stopped),
                }
            }
            RetryDecision::GiveUp => {
                return Ok(ChunkOutcome::Failed {
                    attempts: counted,
                    err,
                });
            }
        }
    }
}

/// The process's counters for a chunk step, and its last check of the
/// lease before a call.
struct Meter<'a> {
    metrics: &'a Metrics,
    shared: &'a Shared,
    cancel: &'a CancellationToken,
}

#[async_trait::async_trait]
impl ChunkMeter for Meter<'_> {
    async fn may_call(&self) -> bool {
        lease_held(self.shared, self.cancel).await
    }

    async fn memory_hit(&self) {
        self.metrics.memory_hits.inc();
    }

    async fn attempt(
        &self,
        outcome: &'static str,
        engine: &str,
        elapsed: Option<Duration>,
        quality_retried: bool,
    ) {
        if quality_retried {
            self.metrics.quality_retries.inc();
        }
        self.metrics
            .chunk_attempts
            .with_label_values(&[outcome])
            .inc();
        if let Some(elapsed) = elapsed {
            self.metrics
                .chunk_duration
                .with_label_values(&[engine])
                .observe(elapsed.as_secs_f64());
        }
    }

    async fn tokens(&self, engine: &str, model: &str, usage: lotsawa_core::usage::Usage) {
        let t = &self.metrics.provider_tokens;
        t.with_label_values(&[engine, model, "prompt"])
            .inc_by(usage.prompt_tokens);
        t.with_label_values(&[engine, model, "completion"])
            .inc_by(usage.completion_tokens);
    }
}
