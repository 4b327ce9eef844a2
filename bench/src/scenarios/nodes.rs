//! The PostgreSQL store beside SQLite, in one run: the drain of a backlog,
//! intake with 50 submissions in flight, and pickup at 100 arrivals/s, on
//! SQLite (one server), and on one PostgreSQL database with one and with
//! three servers (in this process, each with its own pool, lease and
//! listener; one deployment-wide concurrency limit). Pickup with three
//! servers submits to the first only, so most jobs are picked up by
//! another server through the database's announcements.
//!
//! The PostgreSQL server is a throwaway one started for the run, with its
//! commits on disk before they are acknowledged when the harness runs
//! with `--durability full` (the default, as SQLite's), or not with
//! `process`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use lotsawa_conformance::postgres::Cluster;
use lotsawa_core::{Engine, EngineError, EngineOutput, JobService, JobStore, TranslateRequest};
use lotsawa_engines::EngineSet;
use lotsawa_local::{LocalBackend, PgOptions, PgStore, SchedulerConfig};

use crate::args::{Sizes, durability};
use crate::fixture::{Stalled, completed, new_job, prefill};
use crate::report::{Figures, percentile};
use crate::scenarios::pickup::{Clocked, arrivals};

/// The deployment-wide concurrency limit of the drain.
const CONCURRENCY: u32 = 8;

/// Where a deployment keeps its jobs.
#[derive(Clone)]
enum Db {
    Sqlite(PathBuf),
    Postgres(String),
}

/// The figures of this scenario, added to `figures`.
pub(crate) async fn run(sizes: Sizes, figures: &mut Figures) {
    let cluster = match durability() {
        lotsawa_local::Durability::Full => Cluster::durable(),
        lotsawa_local::Durability::Process => Cluster::get(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut file = 0;
    let mut fresh = |kind: &str| -> Db {
        file += 1;
        match kind {
            "sqlite" => Db::Sqlite(dir.path().join(format!("n{file}.db"))),
            _ => Db::Postgres(cluster.fresh_database()),
        }
    };
    let (p50, p99) = live_across(fresh("postgres"), sizes.multi_chunks.max(10) * 4).await;
    figures.add(
        "nodes: SSE chunk event on another node after the answer, p50",
        "ms",
        p50,
    );
    figures.add(
        "nodes: SSE chunk event on another node after the answer, p99",
        "ms",
        p99,
    );
    for (label, kind, n) in [
        ("sqlite", "sqlite", 1usize),
        ("postgres, 1 node", "postgres", 1),
        ("postgres, 3 nodes", "postgres", 3),
    ] {
        let jobs = drain(fresh(kind), n, sizes.drain_jobs).await;
        figures.add(
            format!(
                "nodes: drain {} single-chunk jobs, concurrency {CONCURRENCY}, {label}",
                sizes.drain_jobs
            ),
            "jobs/s",
            jobs,
        );
        let rate = enqueue(fresh(kind), n, sizes.enqueue).await;
        figures.add(
            format!("nodes: enqueue, 50 in flight, {label}"),
            "jobs/s",
            rate,
        );
        let (p50, p99) = pickup(fresh(kind), n, 100.0, sizes.pickup_secs.max(1.0)).await;
        figures.add(
            format!("nodes: pickup at 100 arrivals/s, p50, {label}"),
            "µs",
            p50,
        );
        figures.add(
            format!("nodes: pickup at 100 arrivals/s, p99, {label}"),
            "µs",
            p99,
        );
    }
}

/// `n` servers on `db` with `engine`, under one concurrency limit.
async fn servers(
    db: &Db,
    n: usize,
    concurrency: u32,
    engine: Arc<dyn Engine>,
) -> Vec<LocalBackend> {
    let path = match db {
        Db::Sqlite(p) => p.clone(),
        Db::Postgres(url) => PathBuf::from(url),
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let config = SchedulerConfig {
            concurrency,
            durability: durability(),
            shutdown_grace: Duration::from_millis(100),
            postgres: PgOptions {
                node: format!("bench-{i}"),
                ..PgOptions::default()
            },
            ..SchedulerConfig::default()
        };
        let engines = EngineSet::from_engines(vec![engine.clone()], "echo");
        out.push(
            LocalBackend::start(path.clone(), engines, config)
                .await
                .expect("backend"),
        );
    }
    out
}

async fn stop(servers: Vec<LocalBackend>) {
    for s in servers {
        let _ = s.shutdown().await;
    }
}

/// Store `jobs` pending single-chunk jobs in `db` ahead of the drain.
async fn fill(db: &Db, jobs: usize) {
    match db {
        Db::Sqlite(path) => {
            prefill(path, jobs, 1).await;
        }
        Db::Postgres(url) => {
            let store = PgStore::open(url, PgOptions::default())
                .await
                .expect("store");
            let engine = lotsawa_core::EngineName::parse("echo").expect("engine");
            let mut i = 0;
            while i < jobs {
                let n = (jobs - i).min(256);
                let writes = (i..i + n).map(|k| {
                    let store = store.clone();
                    let (job, parts) =
                        lotsawa_core::pipeline::new_job(new_job(k, 1), engine.clone(), Utc::now());
                    async move { store.create(&job, &parts).await }
                });
                for r in futures::future::join_all(writes).await {
                    r.expect("create");
                }
                i += n;
            }
            store.close();
        }
    }
}

/// Jobs per second draining a backlog of `jobs` with `n` servers.
async fn drain(db: Db, n: usize, jobs: usize) -> f64 {
    fill(&db, jobs).await;
    let engine: Arc<dyn Engine> = Arc::new(lotsawa_engines::EchoEngine);
    let t = Instant::now();
    let nodes = servers(&db, n, CONCURRENCY, engine).await;
    let store = nodes[0].service().store().clone();
    while completed(&store).await < jobs as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    stop(nodes).await;
    jobs as f64 / secs
}

/// Jobs per second accepted with 50 submissions in flight, spread over
/// the servers, while one job holds the only slot.
async fn enqueue(db: Db, n: usize, jobs: usize) -> f64 {
    let nodes = servers(&db, n, 1, Arc::new(Stalled)).await;
    let services: Vec<Arc<lotsawa_core::Service>> = nodes.iter().map(|b| b.service()).collect();
    let t = Instant::now();
    let mut done = 0;
    while done < jobs {
        let k = (jobs - done).min(50);
        let batch = (done..done + k).map(|i| {
            let svc = services[i % services.len()].clone();
            async move { svc.submit(new_job(i, 1)).await }
        });
        for r in futures::future::join_all(batch).await {
            r.expect("submit");
        }
        done += k;
    }
    let rate = jobs as f64 / t.elapsed().as_secs_f64();
    stop(nodes).await;
    rate
}

/// Pickup (accepted by the first server → the engine of any server sees
/// the chunk) p50 and p99 in µs, at `rate` arrivals per second.
async fn pickup(db: Db, n: usize, rate: f64, secs: f64) -> (f64, f64) {
    let clocked = Arc::new(Clocked::default());
    let nodes = servers(&db, n, 3, clocked.clone()).await;
    let lat = arrivals(nodes[0].service(), &clocked, rate, secs).await;
    stop(nodes).await;
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

/// Microseconds since the epoch.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A job of `chunks` chunks runs on one server while a client streams it
/// from another: the delay from each chunk's answer (its translation is
/// the answer's time) to its event on the other server's stream, which
/// covers the commit, the announcement, the read and the write; p50 and
/// p99 in ms.
async fn live_across(db: Db, chunks: usize) -> (f64, f64) {
    let runner = servers(&db, 1, 3, Arc::new(Stamped)).await;
    let job = runner[0]
        .service()
        .submit(new_job(0, chunks))
        .await
        .expect("submit");
    let store = runner[0].service().store().clone();
    while store.get_brief(job.id).await.expect("job").status == lotsawa_core::JobStatus::Pending {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The other server has nothing to claim: the one job is running.
    let watcher = servers(&db, 1, 3, Arc::new(Stamped)).await;
    let (url, _task) = crate::fixture::serve(watcher[0].service()).await;
    let from = now_us();
    let mut res = reqwest::get(format!("{url}/api/jobs/{}/stream", job.id))
        .await
        .expect("stream");
    let mut delays = Vec::new();
    let mut buf = String::new();
    'read: while let Ok(Some(bytes)) = res.chunk().await {
        let arrived = now_us();
        buf.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = buf.find('\n') {
            let line: String = buf.drain(..=end).collect();
            if let Some(i) = line.find("\"translation\":\"t") {
                let digits: String = line[i + 16..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(sent) = digits.parse::<u64>()
                    && sent >= from
                {
                    delays.push(arrived.saturating_sub(sent) as f64 / 1000.0);
                }
            }
            if line.contains("\"completed\"") && line.contains("\"status\"") {
                break 'read;
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    stop(watcher).await;
    stop(runner).await;
    (percentile(&delays, 0.5), percentile(&delays, 0.99))
}

/// An engine that takes 10 ms and answers with the time it answered.
struct Stamped;

#[async_trait]
impl Engine for Stamped {
    fn name(&self) -> &str {
        "echo"
    }
    fn default_model(&self) -> Option<&str> {
        None
    }
    async fn translate(&self, _: &TranslateRequest) -> Result<EngineOutput, EngineError> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(EngineOutput::text(format!("t{}", now_us())))
    }
}
