//! The cases, by facet of the store port. Each takes an empty store and
//! panics with a message on the first behaviour that differs from the
//! port's contract. The helpers here bring jobs to the state a case needs.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lotsawa_core::store::{
    Change, Checkpoint, ChunkDone, JobPatch, TransitionOutcome, transition, transition_by_id,
};
use lotsawa_core::{
    Applied, ChunkStatus, EngineChoice, Job, JobConfig, JobId, JobResult, JobService, JobStatus,
    JobType, ListQuery, Runner, Service, ServiceError, StoreError, Tenant,
};

use crate::factory::{JobFactory, created_at};

mod admission;
mod batches;
mod callbacks;
mod chunks;
mod claims;
mod desk;
mod keys;
mod lists;
mod memory;
mod review;
mod transitions;

pub use admission::*;
pub use batches::*;
pub use callbacks::*;
pub use chunks::*;
pub use claims::*;
pub use desk::*;
pub use keys::*;
pub use lists::*;
pub use memory::*;
pub use review::*;
pub use transitions::*;

/// The store under test, every facet.
pub type Handle = Arc<dyn lotsawa_core::Store>;

pub(crate) async fn create_with(store: &Handle, chunks: &[String]) -> Job {
    JobFactory::new()
        .texts(chunks.to_vec())
        .create(&**store)
        .await
}

pub(crate) async fn create(store: &Handle, n: usize) -> Job {
    JobFactory::new().chunks(n).create(&**store).await
}

pub(crate) fn applied(outcome: TransitionOutcome, what: &str) -> Job {
    match outcome {
        TransitionOutcome::Applied(j) => j,
        other => panic!("{what}: expected the change to apply, got {other:?}"),
    }
}

pub(crate) async fn change(store: &Handle, job: &Job, c: Change) -> TransitionOutcome {
    transition(&**store, job, c, Utc::now())
        .await
        .expect("store call")
}

pub(crate) async fn start(store: &Handle, job: &Job) -> Job {
    applied(
        change(store, job, Change::Start { limit: 100 }).await,
        "start",
    )
}

pub(crate) fn done(index: u32, text: &str) -> ChunkDone {
    ChunkDone {
        index,
        translation: text.to_owned(),
        duration_ms: Some(5),
        provider_calls: 1,
        confidence: Some(0.5),
        from_memory: false,
        context: None,
        warning: None,
        usage: None,
        examples: None,
    }
}

pub(crate) fn result(text: &str) -> JobResult {
    JobResult {
        translation: text.to_owned(),
        confidence: Some(0.5),
        processing_time: 5,
        engine: "echo".into(),
        model: None,
        warnings: vec![],
        chunks_from_memory: 0,
        usage: None,
    }
}

pub(crate) async fn checkpoint_all(store: &Handle, job: &Job) {
    for i in 0..job.chunks_total {
        let c = store
            .checkpoint(job.id, job.run, &done(i, &format!("out {i}")))
            .await
            .expect("checkpoint");
        assert_eq!(c, Checkpoint::Recorded, "checkpoint of chunk {i}");
    }
}

/// A fresh one-chunk job brought to `status` by legal changes only.
pub(crate) async fn job_in(store: &Handle, status: JobStatus) -> Job {
    let job = create(store, 1).await;
    match status {
        JobStatus::Pending => job,
        JobStatus::Processing => start(store, &job).await,
        JobStatus::Completed => {
            let j = start(store, &job).await;
            checkpoint_all(store, &j).await;
            let j = store.get(j.id).await.expect("get");
            applied(
                change(store, &j, Change::Complete(result("out 0"))).await,
                "complete",
            )
        }
        JobStatus::Failed => {
            let j = start(store, &job).await;
            let fail = Change::Fail {
                error: "chunk 0 failed: no".into(),
                chunk: Some(0),
            };
            applied(change(store, &j, fail).await, "fail")
        }
        JobStatus::Cancelled => applied(change(store, &job, Change::Cancel).await, "cancel"),
    }
}

pub(crate) fn every_change() -> Vec<Change> {
    vec![
        Change::Start { limit: 100 },
        Change::Complete(result("x")),
        Change::Fail {
            error: "failed".into(),
            chunk: None,
        },
        Change::Cancel,
        Change::Retry,
        Change::Requeue,
    ]
}

/// A service over the store, with a runner that starts nothing.
pub(crate) fn service(store: &Handle) -> Service {
    struct Idle;
    #[async_trait::async_trait]
    impl Runner for Idle {
        async fn queued(&self, _: &Job) -> Result<(), ServiceError> {
            Ok(())
        }
        async fn cancelled(&self, _: &Job, _: JobStatus) {}
        async fn wait_for_change(&self, _: JobId, _: &mut u64, max_wait: Duration) {
            tokio::time::sleep(max_wait).await;
        }
        async fn extra_metrics(&self) -> Result<String, ServiceError> {
            Ok(String::new())
        }
        fn ready(&self) -> Result<(), ServiceError> {
            Ok(())
        }
        async fn retranslate(
            &self,
            _: lotsawa_core::retranslate::Retranslation,
        ) -> Result<(), ServiceError> {
            Ok(())
        }
    }
    Service::new(
        store.clone(),
        Arc::new(Idle),
        EngineChoice {
            names: vec!["echo".into()],
            default: "echo".into(),
            place: "test",
            models: Vec::new(),
        },
    )
}

pub(crate) async fn page(svc: &Service, q: ListQuery) -> (Vec<JobId>, Option<String>) {
    let p = svc.list(q).await.expect("list");
    (p.jobs.iter().map(|v| v.job.id).collect(), p.next_cursor)
}

pub(crate) async fn create_for(store: &Handle, tenant: &Tenant, kind: JobType) -> Job {
    JobFactory::new()
        .tenant(tenant)
        .kind(kind)
        .create(&**store)
        .await
}

/// The ids of the jobs whose callbacks are due at `at`, as listed.
pub(crate) async fn due_ids(store: &Handle, at: DateTime<Utc>) -> Vec<JobId> {
    store
        .callbacks_due(at, 10)
        .await
        .expect("due")
        .iter()
        .map(|j| j.id)
        .collect()
}
