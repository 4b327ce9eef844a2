//! Jobs for tests, built from defaults with the few fields a case needs:
//! `JobFactory::new().chunks(3).tenant(&t).create(&store)`, instead of a
//! struct literal in every case and every store's own tests.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use lotsawa_core::{BatchRef, Job, JobConfig, JobId, JobStatus, JobStore, JobType, Tenant};

/// Creation times strictly increase, so "newest first" is well defined on
/// every store (DynamoDB sorts by `createdAt`, in milliseconds).
pub fn created_at() -> DateTime<Utc> {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = Utc::now().timestamp_millis();
    let mut prev = LAST.load(Ordering::SeqCst);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => {
                return Utc
                    .timestamp_millis_opt(next)
                    .single()
                    .unwrap_or_else(Utc::now);
            }
            Err(p) => prev = p,
        }
    }
}

/// A pending translation job of the default tenant with one chunk, unless
/// told otherwise.
#[derive(Debug, Clone)]
pub struct JobFactory {
    job: Job,
    chunks: Vec<String>,
}

impl Default for JobFactory {
    fn default() -> Self {
        Self::new()
    }
}

impl JobFactory {
    /// The defaults: pending, one short Tibetan chunk, created now.
    pub fn new() -> Self {
        let chunks = vec!["ཀ་ཁ་0། ".to_owned()];
        let job = Job {
            tenant: Tenant::default(),
            id: JobId::new(),
            kind: JobType::Translation,
            status: JobStatus::Pending,
            source: chunks.concat(),
            config: JobConfig::default(),
            result: None,
            error: None,
            chunks_completed: 0,
            chunks_total: 1,
            created_at: created_at(),
            started_at: None,
            completed_at: None,
            cancelled_at: None,
            run: 0,
            callback: None,
            batch: None,
            trace: None,
            review: Default::default(),
        };
        Self { job, chunks }
    }

    /// `n` numbered chunks.
    pub fn chunks(self, n: usize) -> Self {
        self.texts((0..n).map(|i| format!("ཀ་ཁ་{i}། ")).collect())
    }

    /// These chunk texts; the source is their concatenation.
    pub fn texts(mut self, chunks: Vec<String>) -> Self {
        self.job.source = chunks.concat();
        self.job.chunks_total = chunks.len() as u32;
        self.chunks = chunks;
        self
    }

    /// Whose job.
    pub fn tenant(mut self, tenant: &Tenant) -> Self {
        self.job.tenant = tenant.clone();
        self
    }

    /// Its type.
    pub fn kind(mut self, kind: JobType) -> Self {
        self.job.kind = kind;
        self
    }

    /// Its id.
    pub fn id(mut self, id: JobId) -> Self {
        self.job.id = id;
        self
    }

    /// Its status and run number, as stored.
    pub fn status(mut self, status: JobStatus, run: u32) -> Self {
        self.job.status = status;
        self.job.run = run;
        self
    }

    /// An item of a batch.
    pub fn batch(mut self, batch: BatchRef) -> Self {
        self.job.batch = Some(batch);
        self
    }

    /// Any other change.
    pub fn with(mut self, f: impl FnOnce(&mut Job)) -> Self {
        f(&mut self.job);
        self
    }

    /// The job and its chunks, not stored.
    pub fn build(self) -> (Job, Vec<String>) {
        (self.job, self.chunks)
    }

    /// The job alone, not stored.
    pub fn job(self) -> Job {
        self.job
    }

    /// Store the job with its chunks; the job as created.
    ///
    /// # Panics
    /// When the store refuses it: a test's setup failed.
    pub async fn create<S: JobStore + ?Sized>(self, store: &S) -> Job {
        store
            .create(&self.job, &self.chunks)
            .await
            .expect("create a job");
        self.job
    }
}
