//! What each status change writes, planned once: a [`Change`] asked of a job
//! becomes a [`JobPatch`] through [`JobStatus::apply`], and every store writes
//! that patch with a compare-and-set. No store decides on its own what a
//! transition sets or clears.

use chrono::{DateTime, Utc};

use crate::job::{Job, JobResult, JobStatus, Transition, TransitionError};

/// A field a transition sets, clears or leaves alone.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<T> {
    /// Leave the stored value.
    Keep,
    /// Write this value.
    Set(T),
    /// Remove the stored value.
    Clear,
}

impl<T> Field<T> {
    /// Apply to a value in memory.
    pub fn apply_to(&self, slot: &mut Option<T>)
    where
        T: Clone,
    {
        match self {
            Field::Keep => {}
            Field::Set(v) => *slot = Some(v.clone()),
            Field::Clear => *slot = None,
        }
    }
}

/// What a transition does with the job's concurrency slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotChange {
    /// Take one, only while fewer than `limit` jobs hold one.
    Take {
        /// The concurrency limit.
        limit: u32,
    },
    /// Give it back (the job held one: it was processing).
    Release,
    /// Neither.
    Keep,
}

/// Where a transition puts the job in the FIFO queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueuePlace {
    /// At the end (retry).
    Back,
    /// At the head (a requeued job resumes first).
    Front,
    /// Out of the queue or where it was.
    Keep,
}

/// What a transition does to the chunk ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkChange {
    /// Nothing.
    None,
    /// The failed chunk becomes pending again, its error cleared (retry).
    /// Chunks complete in order, so a failed chunk is the first unfinished
    /// one, named here for stores that address chunks by key.
    ResetFailed {
        /// The first chunk not completed, if any.
        first_unfinished: Option<u32>,
    },
    /// This pending chunk failed for good.
    Fail {
        /// Its index.
        index: u32,
    },
}

/// A status change with what it carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A worker claims the job.
    Start {
        /// The concurrency limit the claim must respect.
        limit: u32,
    },
    /// Every chunk is done: the job completes with its result.
    Complete(JobResult),
    /// The run failed, blaming a chunk when there is one.
    Fail {
        /// The job's error.
        error: String,
        /// The chunk that failed.
        chunk: Option<u32>,
    },
    /// A client cancelled the job.
    Cancel,
    /// A client queued a failed or cancelled job again.
    Retry,
    /// A processing job goes back to the queue head (restart with lower
    /// concurrency).
    Requeue,
}

impl Change {
    /// The bare transition.
    pub fn transition(&self) -> Transition {
        match self {
            Change::Start { .. } => Transition::Start,
            Change::Complete(_) => Transition::Complete,
            Change::Fail { .. } => Transition::Fail,
            Change::Cancel => Transition::Cancel,
            Change::Retry => Transition::Retry,
            Change::Requeue => Transition::Requeue,
        }
    }
}

/// Everything one status change writes, and the condition it is written
/// under: the job is still `from` in run `run`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPatch {
    /// The transition.
    pub transition: Transition,
    /// The job's owner (stores that count per tenant need it).
    pub tenant: crate::auth::Tenant,
    /// Status the job must still be in.
    pub from: JobStatus,
    /// Run number the job must still have.
    pub run: u32,
    /// New status.
    pub to: JobStatus,
    /// New run number.
    pub new_run: u32,
    /// When the current run started.
    pub started_at: Field<DateTime<Utc>>,
    /// When the job completed or failed.
    pub completed_at: Field<DateTime<Utc>>,
    /// When it was cancelled.
    pub cancelled_at: Field<DateTime<Utc>>,
    /// Why it failed.
    pub error: Field<String>,
    /// Its result.
    pub result: Field<JobResult>,
    /// The concurrency slot.
    pub slot: SlotChange,
    /// The queue position.
    pub queue: QueuePlace,
    /// The job's queue priority (where a queue place is set).
    pub priority: i8,
    /// The chunk ledger.
    pub chunks: ChunkChange,
    /// Written only if every chunk is completed (the completion).
    pub requires_all_chunks: bool,
    /// The delivery of the event this transition makes, for a job with a
    /// callback URL: written in the same commit.
    pub callback: Field<crate::job::Callback>,
}

impl JobPatch {
    /// Plan `change` on `job` at `now`: the one place where what each
    /// transition sets and clears is decided.
    pub fn plan(job: &Job, change: Change, now: DateTime<Utc>) -> Result<Self, TransitionError> {
        let transition = change.transition();
        let to = job.status.apply(transition)?;
        let mut p = JobPatch {
            transition,
            tenant: job.tenant.clone(),
            priority: job.config.priority,
            from: job.status,
            run: job.run,
            to,
            new_run: job.run,
            started_at: Field::Keep,
            completed_at: Field::Keep,
            cancelled_at: Field::Keep,
            error: Field::Keep,
            result: Field::Keep,
            slot: SlotChange::Keep,
            queue: QueuePlace::Keep,
            chunks: ChunkChange::None,
            requires_all_chunks: false,
            callback: Field::Keep,
        };
        match change {
            Change::Start { limit } => {
                p.new_run = job.run + 1;
                p.started_at = Field::Set(now);
                p.completed_at = Field::Clear;
                p.slot = SlotChange::Take { limit };
            }
            Change::Complete(result) => {
                p.completed_at = Field::Set(now);
                p.result = Field::Set(result);
                p.error = Field::Clear;
                p.slot = SlotChange::Release;
                p.requires_all_chunks = true;
            }
            Change::Fail { error, chunk } => {
                p.completed_at = Field::Set(now);
                p.error = Field::Set(error);
                p.slot = SlotChange::Release;
                if let Some(index) = chunk {
                    p.chunks = ChunkChange::Fail { index };
                }
            }
            Change::Cancel => {
                p.cancelled_at = Field::Set(now);
                if job.status == JobStatus::Processing {
                    p.slot = SlotChange::Release;
                }
            }
            Change::Retry => {
                p.error = Field::Clear;
                p.result = Field::Clear;
                p.started_at = Field::Clear;
                p.completed_at = Field::Clear;
                p.cancelled_at = Field::Clear;
                p.queue = QueuePlace::Back;
                p.chunks = ChunkChange::ResetFailed {
                    first_unfinished: (job.chunks_completed < job.chunks_total)
                        .then_some(job.chunks_completed),
                };
            }
            Change::Requeue => {
                p.slot = SlotChange::Release;
                p.queue = QueuePlace::Front;
            }
        }
        if job.config.callback_url.is_some()
            && let Some(kind) = crate::webhook::EventKind::terminal(to)
        {
            let event = crate::webhook::job_event(kind, &p.applied_to(job)).to_string();
            p.callback = Field::Set(crate::job::Callback::pending(event, now));
        }
        Ok(p)
    }

    /// The job as it is once the patch is written.
    pub fn applied_to(&self, job: &Job) -> Job {
        let mut j = job.clone();
        j.status = self.to;
        j.run = self.new_run;
        self.started_at.apply_to(&mut j.started_at);
        self.completed_at.apply_to(&mut j.completed_at);
        self.cancelled_at.apply_to(&mut j.cancelled_at);
        self.error.apply_to(&mut j.error);
        self.result.apply_to(&mut j.result);
        self.callback.apply_to(&mut j.callback);
        j
    }
}

/// What became of a compare-and-set write.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Written; the job as it is now.
    Done(Box<Job>),
    /// The job was no longer in the patch's status and run (or, for a
    /// start, no slot was free; for a completion, a chunk was unfinished).
    Lost,
}

/// What became of a requested transition.
#[derive(Debug, Clone, PartialEq)]
pub enum TransitionOutcome {
    /// Written; the job as it is now.
    Applied(Job),
    /// Another writer moved the job first (or the run changed).
    LostRace(Job),
    /// The job's status does not allow it.
    NotAllowed(TransitionError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobConfig, JobId, JobStatus::*, JobType};
    use rstest::rstest;

    fn job(status: JobStatus, attempts: u32) -> Job {
        Job {
            tenant: crate::auth::Tenant::default(),
            id: JobId::new(),
            kind: JobType::Translation,
            status,
            source: "ཀ།".into(),
            config: JobConfig::default(),
            result: None,
            error: Some("old".into()),
            chunks_completed: 0,
            chunks_total: 1,
            created_at: Utc::now(),
            started_at: Some(Utc::now()),
            completed_at: Some(Utc::now()),
            cancelled_at: None,
            run: attempts,
            callback: None,
            batch: None,
            trace: None,
            review: Default::default(),
        }
    }

    #[test]
    fn start_takes_a_slot_and_opens_a_new_run() {
        let now = Utc::now();
        let p = JobPatch::plan(&job(Pending, 2), Change::Start { limit: 3 }, now).expect("plan");
        assert_eq!(
            (p.from, p.run, p.to, p.new_run),
            (Pending, 2, Processing, 3)
        );
        assert_eq!(p.slot, SlotChange::Take { limit: 3 });
        assert_eq!(p.started_at, Field::Set(now));
        assert_eq!(p.completed_at, Field::Clear);
    }

    #[test]
    fn retry_clears_the_run_and_goes_to_the_back() {
        let p = JobPatch::plan(&job(Failed, 1), Change::Retry, Utc::now()).expect("plan");
        let after = p.applied_to(&job(Failed, 1));
        assert_eq!(after.status, Pending);
        assert_eq!(after.error, None);
        assert_eq!(after.started_at, None);
        assert_eq!(after.completed_at, None);
        assert_eq!(p.queue, QueuePlace::Back);
        assert_eq!(
            p.chunks,
            ChunkChange::ResetFailed {
                first_unfinished: Some(0)
            }
        );
        assert_eq!(p.slot, SlotChange::Keep);
    }

    #[rstest]
    #[case(Pending, SlotChange::Keep)]
    #[case(Processing, SlotChange::Release)]
    fn cancel_releases_a_slot_only_when_one_is_held(
        #[case] from: JobStatus,
        #[case] slot: SlotChange,
    ) {
        let p = JobPatch::plan(&job(from, 1), Change::Cancel, Utc::now()).expect("plan");
        assert_eq!(p.slot, slot);
        assert!(matches!(p.cancelled_at, Field::Set(_)));
    }

    #[test]
    fn endings_release_the_slot_and_say_why() {
        let fail = Change::Fail {
            error: "chunk 0 failed".into(),
            chunk: Some(0),
        };
        let p = JobPatch::plan(&job(Processing, 1), fail, Utc::now()).expect("plan");
        assert_eq!(p.slot, SlotChange::Release);
        assert_eq!(p.chunks, ChunkChange::Fail { index: 0 });
        assert_eq!(p.error, Field::Set("chunk 0 failed".into()));
        let result = JobResult {
            translation: "x".into(),
            confidence: Some(1.0),
            processing_time: 1,
            engine: "echo".into(),
            model: None,
            warnings: vec![],
            chunks_from_memory: 0,
            usage: None,
        };
        let p = JobPatch::plan(&job(Processing, 1), Change::Complete(result), Utc::now())
            .expect("plan");
        assert!(p.requires_all_chunks);
        assert_eq!(p.error, Field::Clear);
    }

    #[test]
    fn illegal_changes_are_refused_before_any_write() {
        assert!(JobPatch::plan(&job(Completed, 1), Change::Cancel, Utc::now()).is_err());
        assert!(JobPatch::plan(&job(Pending, 0), Change::Retry, Utc::now()).is_err());
    }
}
