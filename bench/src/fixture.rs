//! What the scenarios share to set a deployment up: the jobs they submit
//! (numbered so an engine can tell which job a chunk belongs to), a local
//! backend with the durability chosen on the command line, a store filled
//! ahead of a scenario, an HTTP router on a loopback port, and an engine
//! that never answers. Kept apart from the scenarios so each of them reads
//! as what it measures, not how it builds its deployment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use lotsawa_core::{
    Engine, EngineError, EngineOutput, JobConfig, JobService, JobStatus, JobStore, JobType, NewJob,
    SourceText, Tenant, TranslateRequest,
};
use lotsawa_engines::EngineSet;
use lotsawa_local::{LocalBackend, SchedulerConfig, SqliteStore};

use crate::args::durability;

/// The text of single-chunk job `i`, its number last (see [`job_number`]).
pub(crate) fn text(i: usize) -> String {
    format!("ཀ་ཁ་ག། #{i}")
}

/// Job `i` for the echo engine, `chunks` lines long, every line ending in
/// the job's number so an engine can tell which job a chunk belongs to.
pub(crate) fn new_job(i: usize, chunks: usize) -> NewJob {
    let source: String = (0..chunks).map(|c| format!("ཀ་ཁ་ག་{c}། #{i}\n")).collect();
    let config = JobConfig {
        engine: Some(lotsawa_core::EngineName::parse("echo").expect("engine")),
        chunk_size: lotsawa_core::ChunkSize::new(24).expect("size"),
        ..JobConfig::default()
    };
    NewJob {
        trace: None,
        tenant: Tenant::default(),
        kind: JobType::Translation,
        source: SourceText::parse(if chunks == 1 { text(i) } else { source }).expect("text"),
        config,
    }
}

/// The job a chunk of the harness belongs to (its text ends in `#<n>`).
pub(crate) fn job_number(text: &str) -> Option<usize> {
    text.rsplit('#').next().and_then(|n| n.trim().parse().ok())
}

/// An engine whose call never returns: the job it runs holds its slot.
pub(crate) struct Stalled;

#[async_trait]
impl Engine for Stalled {
    fn name(&self) -> &str {
        "echo"
    }
    fn default_model(&self) -> Option<&str> {
        None
    }
    async fn translate(&self, _: &TranslateRequest) -> Result<EngineOutput, EngineError> {
        std::future::pending().await
    }
}

pub(crate) async fn backend(
    db: PathBuf,
    concurrency: u32,
    engine: Arc<dyn Engine>,
) -> LocalBackend {
    backend_with(
        db,
        concurrency,
        EngineSet::from_engines(vec![engine], "echo"),
    )
    .await
}

/// A backend over `engines` (e.g. a provider's engine under its limits),
/// set up as [`backend`] sets up the echo engine's.
pub(crate) async fn backend_with(
    db: PathBuf,
    concurrency: u32,
    engines: EngineSet,
) -> LocalBackend {
    LocalBackend::start(
        db,
        engines,
        SchedulerConfig {
            concurrency,
            durability: durability(),
            shutdown_grace: Duration::from_millis(100),
            ..SchedulerConfig::default()
        },
    )
    .await
    .expect("backend")
}

pub(crate) async fn completed(store: &Arc<dyn lotsawa_core::Store>) -> u64 {
    store
        .counts()
        .await
        .expect("counts")
        .iter()
        .find(|(s, _)| *s == JobStatus::Completed)
        .map_or(0, |(_, n)| *n)
}

/// Store `jobs` pending jobs of `chunks` chunks in a fresh database; their
/// ids, oldest first.
pub(crate) async fn prefill(
    db: &std::path::Path,
    jobs: usize,
    chunks: usize,
) -> Vec<lotsawa_core::JobId> {
    let store = SqliteStore::open_with(db, durability()).expect("store");
    let engine = lotsawa_core::EngineName::parse("echo").expect("engine");
    let mut ids = Vec::with_capacity(jobs);
    let mut i = 0;
    while i < jobs {
        let n = (jobs - i).min(512);
        let writes = (i..i + n).map(|k| {
            let store = store.clone();
            let (job, parts) =
                lotsawa_core::pipeline::new_job(new_job(k, chunks), engine.clone(), Utc::now());
            ids.push(job.id);
            async move { store.create(&job, &parts).await }
        });
        for r in futures::future::join_all(writes).await {
            r.expect("create");
        }
        i += n;
    }
    store.flush().await.expect("flush");
    ids
}

/// A router on a loopback port over `svc`.
pub(crate) async fn serve(svc: Arc<dyn JobService>) -> (String, tokio::task::JoinHandle<()>) {
    serve_app(lotsawa_http::router(
        svc,
        lotsawa_http::ApiConfig::default(),
    ))
    .await
}

/// `app` on a loopback port: its base URL and the server's task.
pub(crate) async fn serve_app(app: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}
