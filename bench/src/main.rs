//! `lotsawa-bench`: the queue's figures on this machine, reproducibly.
//!
//! ```sh
//! cargo run --release -p lotsawa-bench -- --out bench/results.json   # full (a few minutes)
//! cargo run -p lotsawa-bench -- --smoke                               # seconds; in the test command
//! ```
//!
//! Everything runs in one process on loopback with the echo engine and the
//! embedded SQLite store in its durable setting (WAL, `synchronous=FULL`,
//! one fsync per group commit). Each figure is measured `--runs` times
//! (default 3) and reported as median, min and max.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use lotsawa_core::{
    Engine, EngineError, EngineOutput, JobConfig, JobService, JobStatus, JobStore, JobType, NewJob,
    SourceText, Tenant, TranslateRequest,
};
use lotsawa_engines::{EchoEngine, EngineSet};
use lotsawa_local::{LocalBackend, SchedulerConfig, Store};
use serde_json::{Value, json};

/// Sizes of one run of the harness.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    enqueue: usize,
    drain_jobs: usize,
    multi_jobs: usize,
    multi_chunks: usize,
    http_secs: f64,
    pickup_secs: f64,
    fanout_streams: usize,
    fanout_jobs: usize,
    fanout_secs: f64,
    text_bytes: usize,
    scale: &'static [usize],
    scale_drain: usize,
    runs: usize,
}

const FULL: Sizes = Sizes {
    enqueue: 20_000,
    drain_jobs: 20_000,
    multi_jobs: 1_000,
    multi_chunks: 20,
    http_secs: 3.0,
    pickup_secs: 2.0,
    fanout_streams: 10_000,
    fanout_jobs: 50,
    fanout_secs: 5.0,
    text_bytes: 4 << 20,
    scale: &[1_000, 10_000, 100_000, 1_000_000],
    scale_drain: 5_000,
    runs: 3,
};

const SMOKE: Sizes = Sizes {
    enqueue: 200,
    drain_jobs: 200,
    multi_jobs: 10,
    multi_chunks: 5,
    http_secs: 0.3,
    pickup_secs: 0.3,
    fanout_streams: 50,
    fanout_jobs: 5,
    fanout_secs: 0.5,
    text_bytes: 64 << 10,
    scale: &[100, 1_000],
    scale_drain: 50,
    runs: 1,
};

/// One figure over repeated runs.
struct Figure {
    name: String,
    unit: &'static str,
    runs: Vec<f64>,
}

impl Figure {
    fn median(&self) -> f64 {
        let mut v = self.runs.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }
    fn json(&self) -> Value {
        let min = self.runs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        json!({"name": self.name, "unit": self.unit, "median": round(self.median()),
               "min": round(min), "max": round(max), "runs": self.runs.iter().map(|r| round(*r)).collect::<Vec<_>>()})
    }
}

fn round(x: f64) -> f64 {
    if x.abs() >= 100.0 {
        x.round()
    } else {
        (x * 1000.0).round() / 1000.0
    }
}

fn text(i: usize) -> String {
    format!("ཀ་ཁ་ག། #{i}")
}

fn new_job(i: usize, chunks: usize) -> NewJob {
    let source: String = (0..chunks).map(|c| format!("ཀ་ཁ་ག་{c}། #{i}\n")).collect();
    let config = JobConfig {
        engine: Some(lotsawa_core::EngineName::parse("echo").expect("engine")),
        chunk_size: lotsawa_core::ChunkSize::new(24).expect("size"),
        ..JobConfig::default()
    };
    NewJob {
        tenant: Tenant::default(),
        kind: JobType::Translation,
        source: SourceText::parse(if chunks == 1 { text(i) } else { source }).expect("text"),
        config,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The job a chunk of the harness belongs to (its text ends in `#<n>`).
fn job_number(text: &str) -> Option<usize> {
    text.rsplit('#').next().and_then(|n| n.trim().parse().ok())
}

/// An echo engine that notes when each job's chunk reaches it (pickup).
struct Clocked {
    seen: Mutex<HashMap<usize, Instant>>,
}

#[async_trait]
impl Engine for Clocked {
    fn name(&self) -> &str {
        "echo"
    }
    fn default_model(&self) -> Option<&str> {
        None
    }
    async fn translate(&self, req: &TranslateRequest) -> Result<EngineOutput, EngineError> {
        let at = Instant::now();
        if let Some(n) = job_number(&req.text)
            && let Ok(mut s) = self.seen.lock()
        {
            s.entry(n).or_insert(at);
        }
        Ok(EngineOutput::text(req.text.clone()))
    }
}

/// An engine whose call never returns: the job it runs holds its slot.
struct Stalled;

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

/// The durability the harness runs with (`--durability full|process`).
static DURABILITY: std::sync::OnceLock<lotsawa_local::Durability> = std::sync::OnceLock::new();

fn durability() -> lotsawa_local::Durability {
    DURABILITY.get().copied().unwrap_or_default()
}

async fn backend(db: PathBuf, concurrency: u32, engine: Arc<dyn Engine>) -> LocalBackend {
    LocalBackend::start(
        db,
        EngineSet::from_engines(vec![engine], "echo"),
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

async fn completed(store: &Arc<dyn JobStore>) -> u64 {
    store
        .counts()
        .await
        .expect("counts")
        .iter()
        .find(|(s, _)| *s == JobStatus::Completed)
        .map_or(0, |(_, n)| *n)
}

/// Enqueue in-process: one at a time, and 50 in flight at once.
async fn enqueue(sizes: Sizes) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    // One job runs and never ends: the figure is the intake alone (the
    // drain while clients submit is its own figure).
    let b = backend(dir.path().join("e.db"), 1, Arc::new(Stalled)).await;
    let svc = b.service();
    let t = Instant::now();
    for i in 0..sizes.enqueue {
        svc.submit(new_job(i, 1)).await.expect("submit");
    }
    let one = sizes.enqueue as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut left = sizes.enqueue;
    while left > 0 {
        let n = left.min(50);
        let batch = (0..n).map(|i| {
            let svc = svc.clone();
            async move { svc.submit(new_job(i, 1)).await }
        });
        for r in futures::future::join_all(batch).await {
            r.expect("submit");
        }
        left -= n;
    }
    let batched = sizes.enqueue as f64 / t.elapsed().as_secs_f64();
    let _ = b.shutdown().await;
    (one, batched)
}

/// Store `jobs` pending jobs of `chunks` chunks in a fresh database; their
/// ids, oldest first.
async fn prefill(db: &std::path::Path, jobs: usize, chunks: usize) -> Vec<lotsawa_core::JobId> {
    let store = Store::open_with(db, durability()).expect("store");
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

/// With `stored` pending jobs in the store: claim latency (one job, µs),
/// the drain of `drain_n` of them at concurrency 8 (jobs/s), and list
/// (first page of 50) and GET latency (ms), each p50 and p99.
async fn scale(stored: usize, drain_n: usize) -> Vec<(&'static str, &'static str, f64)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("s.db");
    let ids = prefill(&db, stored, 1).await;
    let drain_n = drain_n.min(stored);
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let claims = {
        let store = Store::open_with(&db, durability()).expect("store");
        let mut us = Vec::new();
        for _ in 0..200.min(stored / 4) {
            let t = Instant::now();
            store
                .claim_next(u32::MAX, Utc::now())
                .await
                .expect("claim")
                .expect("a pending job");
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        store.flush().await.expect("flush");
        sorted(us)
    };
    let t = Instant::now();
    let b = backend(db, 8, Arc::new(EchoEngine)).await;
    let svc = b.service();
    let store = svc.store().clone();
    while completed(&store).await < drain_n as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let drained = drain_n as f64 / t.elapsed().as_secs_f64();
    let mut list = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        svc.list(lotsawa_core::ListQuery {
            tenant: Tenant::default(),
            status: None,
            kind: None,
            limit: 50,
            cursor: None,
        })
        .await
        .expect("list");
        list.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut get = Vec::new();
    for k in 0..1000usize {
        let id = ids[(k * 7919 + 13) % ids.len()];
        let t = Instant::now();
        svc.get(&Tenant::default(), id).await.expect("get");
        get.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = b.shutdown().await;
    let (list, get) = (sorted(list), sorted(get));
    vec![
        ("claim, p50", "µs", percentile(&claims, 0.5)),
        ("claim, p99", "µs", percentile(&claims, 0.99)),
        ("drain, concurrency 8", "jobs/s", drained),
        ("list first page of 50, p50", "ms", percentile(&list, 0.5)),
        ("list first page of 50, p99", "ms", percentile(&list, 0.99)),
        ("GET a job, p50", "ms", percentile(&get, 0.5)),
        ("GET a job, p99", "ms", percentile(&get, 0.99)),
    ]
}

/// An echo engine that notes, per job, the time between one chunk's answer
/// and the next chunk's call: what the scheduler adds per chunk (the
/// checkpoint's commit and the bookkeeping around it).
#[derive(Default)]
struct Gaps {
    last: Mutex<HashMap<usize, Instant>>,
    gaps: Mutex<Vec<f64>>,
}

#[async_trait]
impl Engine for Gaps {
    fn name(&self) -> &str {
        "echo"
    }
    fn default_model(&self) -> Option<&str> {
        None
    }
    async fn translate(&self, req: &TranslateRequest) -> Result<EngineOutput, EngineError> {
        if let Some(job) = job_number(&req.text)
            && let Ok(mut last) = self.last.lock()
        {
            if let Some(prev) = last.get(&job)
                && let Ok(mut g) = self.gaps.lock()
            {
                g.push(prev.elapsed().as_secs_f64() * 1e6);
            }
            last.insert(job, Instant::now());
        }
        Ok(EngineOutput::text(req.text.clone()))
    }
}

/// Time the drain of `jobs` pre-enqueued jobs of `chunks` chunks: (jobs/s,
/// chunks/s, per-chunk overhead p50 and p99 in µs).
async fn drain(jobs: usize, chunks: usize, concurrency: u32) -> (f64, f64, f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("d.db");
    prefill(&db, jobs, chunks).await;
    let gaps = Arc::new(Gaps::default());
    let t = Instant::now();
    let b = backend(db, concurrency, gaps.clone()).await;
    let store = b.service().store().clone();
    while completed(&store).await < jobs as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let _ = b.shutdown().await;
    let mut g = gaps.gaps.lock().map(|g| g.clone()).unwrap_or_default();
    g.sort_by(f64::total_cmp);
    (
        jobs as f64 / secs,
        (jobs * chunks) as f64 / secs,
        percentile(&g, 0.5),
        percentile(&g, 0.99),
    )
}

/// A router on a loopback port over `svc`.
async fn serve(svc: Arc<dyn JobService>) -> (String, tokio::task::JoinHandle<()>) {
    let app = lotsawa_http::router(svc, lotsawa_http::ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// `clients` HTTP clients submitting for `secs`: (jobs/s, p50 ms, p99 ms).
async fn http_enqueue(url: &str, clients: usize, secs: f64) -> (f64, f64, f64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let counter = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let http = http.clone();
            let url = format!("{url}/api/jobs");
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < stop {
                    let i = counter.fetch_add(1, Ordering::Relaxed) + c * 10_000_000;
                    let body = json!({"sourceText": text(i), "config": {"engine": "echo"}});
                    let t = Instant::now();
                    let r = http.post(&url).json(&body).send().await;
                    if r.is_ok_and(|r| r.status().as_u16() == 202) {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                lat
            })
        })
        .collect();
    let t = Instant::now();
    let mut lat: Vec<f64> = Vec::new();
    for task in tasks {
        lat.extend(task.await.expect("client"));
    }
    let rate = lat.len() as f64 / t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    (rate, percentile(&lat, 0.5), percentile(&lat, 0.99))
}

/// Drain while 64 clients submit: (drained jobs/s, submitted jobs/s).
async fn drain_under_load(backlog: usize, secs: f64) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("l.db");
    prefill(&db, backlog, 1).await;
    let b = backend(db, 8, Arc::new(EchoEngine)).await;
    let store = b.service().store().clone();
    let (url, server) = serve(b.service() as Arc<dyn JobService>).await;
    let before = completed(&store).await;
    let t = Instant::now();
    let (submitted, _, _) = http_enqueue(&url, 64, secs).await;
    let drained = (completed(&store).await - before) as f64 / t.elapsed().as_secs_f64();
    server.abort();
    let _ = b.shutdown().await;
    (drained, submitted)
}

/// Open-loop arrivals at `rate`/s for `secs`: pickup (accepted → the engine
/// sees the chunk) p50, p99, p99.9 in microseconds.
async fn pickup(rate: f64, secs: f64) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clocked = Arc::new(Clocked {
        seen: Mutex::new(HashMap::new()),
    });
    let b = backend(dir.path().join("p.db"), 3, clocked.clone()).await;
    let svc = b.service();
    let n = (rate * secs) as usize;
    let accepted: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = Vec::new();
    for i in 0..n {
        interval.tick().await;
        let svc = svc.clone();
        let accepted = accepted.clone();
        sends.push(tokio::spawn(async move {
            svc.submit(new_job(i, 1)).await.expect("submit");
            if let Ok(mut a) = accepted.lock() {
                a.insert(i, Instant::now());
            }
        }));
    }
    for s in sends {
        let _ = s.await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while clocked.seen.lock().map(|s| s.len()).unwrap_or(0) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = clocked.seen.lock().map(|s| s.clone()).unwrap_or_default();
    let accepted = accepted.lock().map(|a| a.clone()).unwrap_or_default();
    let mut us: Vec<f64> = accepted
        .iter()
        .filter_map(|(i, at)| {
            let s = seen.get(i)?;
            Some(s.saturating_duration_since(*at).as_secs_f64() * 1e6)
        })
        .collect();
    us.sort_by(f64::total_cmp);
    let _ = b.shutdown().await;
    (
        percentile(&us, 0.5),
        percentile(&us, 0.99),
        percentile(&us, 0.999),
    )
}

/// An echo engine that takes `pace` per chunk and answers with the wall
/// clock (µs since the epoch) at which it returned, so a stream's client can
/// tell how long the chunk took to reach it.
struct Paced {
    pace: Duration,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[async_trait]
impl Engine for Paced {
    fn name(&self) -> &str {
        "echo"
    }
    fn default_model(&self) -> Option<&str> {
        None
    }
    async fn translate(&self, _: &TranslateRequest) -> Result<EngineOutput, EngineError> {
        tokio::time::sleep(self.pace).await;
        Ok(EngineOutput::text(format!("t{}", now_us())))
    }
}

/// The child process of the fan-out figure: a server whose engine takes
/// `pace_ms` per chunk, running `jobs` long jobs at once. Prints its URL and
/// the job ids, one line, then serves until its standard input closes.
async fn serve_fanout(pace_ms: u64, jobs: usize, streams: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = backend(
        dir.path().join("f.db"),
        jobs as u32,
        Arc::new(Paced {
            pace: Duration::from_millis(pace_ms),
        }),
    )
    .await;
    let svc = b.service();
    let mut ids = Vec::new();
    for i in 0..jobs {
        let job = svc.submit(new_job(i, 1500)).await.expect("submit");
        ids.push(job.id.to_string());
    }
    let config = lotsawa_http::ApiConfig {
        max_streams: streams + 16,
        max_streams_per_tenant: streams + 16,
        ..lotsawa_http::ApiConfig::default()
    };
    let app = lotsawa_http::router(svc as Arc<dyn JobService>, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!(
        "http://{} {}",
        listener.local_addr().expect("addr"),
        ids.join(",")
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink);
    })
    .await;
    server.abort();
    drop(b);
    std::process::exit(0);
}

/// Resident memory of a process, bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `streams` SSE clients on `jobs` running jobs of a server in a child
/// process: (resident bytes per stream, p50 and p99 delay in ms from a
/// chunk's translation returning to its event at the client, streams open).
async fn fanout(streams: usize, jobs: usize, pace_ms: u64, secs: f64) -> (f64, f64, f64, f64) {
    use std::io::BufRead;
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().expect("exe");
    // LOTSAWA_BENCH_WRAP runs the server under a profiler, e.g.
    // "valgrind --tool=massif".
    let wrap = std::env::var("LOTSAWA_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut child = match words.next() {
        Some(tool) => {
            let mut c = std::process::Command::new(tool);
            c.args(words).arg(exe);
            c
        }
        None => std::process::Command::new(exe),
    };
    let mut child = child
        .args([
            "--serve-fanout",
            &pace_ms.to_string(),
            &jobs.to_string(),
            &streams.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the fan-out server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server line");
    let (url, ids) = line.trim().split_once(' ').expect("url and ids");
    let ids: Vec<String> = ids.split(',').map(str::to_owned).collect();
    let pid = child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss(pid);
    // Chunks translated from this instant on count (0: not yet); earlier
    // ones reach a stream as it catches up, which is not a live delay.
    let measuring = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for s in 0..streams {
        let url = format!("{url}/api/jobs/{}/stream", ids[s % ids.len()]);
        let (measuring, open) = (measuring.clone(), open.clone());
        tasks.push(tokio::spawn(async move {
            let mut delays = Vec::new();
            let Ok(mut conn) = tokio::net::TcpStream::connect(url_addr(&url)).await else {
                return delays;
            };
            let path = &url[url.find("/api").unwrap_or(0)..];
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
            );
            if tokio::io::AsyncWriteExt::write_all(&mut conn, req.as_bytes())
                .await
                .is_err()
            {
                return delays;
            }
            let mut lines = tokio::io::BufReader::new(conn).lines();
            let mut counted = false;
            while let Ok(Some(l)) = lines.next_line().await {
                if !counted && l.starts_with("data:") {
                    counted = true;
                    open.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(i) = l.find("\"translation\":\"t") {
                    let digits: String = l[i + 16..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    let from = measuring.load(Ordering::Relaxed);
                    if let Ok(sent) = digits.parse::<u64>()
                        && from > 0
                        && sent >= from
                    {
                        delays.push(now_us().saturating_sub(sent) as f64 / 1000.0);
                    }
                }
            }
            delays
        }));
        if s % 256 == 255 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while open.load(Ordering::Relaxed) < streams && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opened = open.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(now_us(), Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let after = rss(pid);
    measuring.store(u64::MAX, Ordering::Relaxed);
    drop(child.stdin.take());
    let _ = child.wait();
    let mut delays = Vec::new();
    for t in tasks {
        delays.extend(t.await.unwrap_or_default());
    }
    delays.sort_by(f64::total_cmp);
    (
        after.saturating_sub(before) as f64 / opened.max(1) as f64,
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        opened as f64,
    )
}

fn url_addr(url: &str) -> String {
    let rest = url.trim_start_matches("http://");
    rest[..rest.find('/').unwrap_or(rest.len())].to_owned()
}

#[path = "../../shared/engines/benches/support/texts.rs"]
mod texts;

/// MB/s of `f` over `text`, median of `runs`.
fn throughput(text: &str, runs: usize, mut f: impl FnMut(&str) -> usize) -> f64 {
    let mut rates: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f(std::hint::black_box(text)));
            text.len() as f64 / 1e6 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// The text paths, MB/s: segmenter, transliterator, offline gloss with the
/// built-in glossary and with a hostile job glossary.
fn text_rates(bytes: usize) -> Vec<(&'static str, f64)> {
    let golden = include_str!("../../shared/core/tests/data/ewts_golden.tsv");
    let lines: String = golden
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t').map(|(bo, _)| format!("{bo} །\n")))
        .collect();
    let tibetan = lines.repeat(bytes / lines.len() + 1);
    let base = lotsawa_engines::builtin_glossary();
    let empty = lotsawa_core::Glossary::default();
    let glossed = texts::glossary_text(bytes);
    let job = texts::hostile_glossary();
    let hostile = texts::hostile_text(bytes);
    vec![
        (
            "segmenter (chunks of 1200)",
            throughput(&tibetan, 5, |t| {
                lotsawa_core::segment::segment(t, 1200).len()
            }),
        ),
        (
            "transliterator (EWTS)",
            throughput(&tibetan, 5, |t| lotsawa_core::ewts::to_ewts(t).len()),
        ),
        (
            "offline gloss, built-in glossary",
            throughput(&glossed, 5, |t| {
                lotsawa_core::glossary::gloss(t, &empty, &base).text.len()
            }),
        ),
        (
            "offline gloss, hostile job glossary of 10,000 terms",
            throughput(&hostile, 3, |t| {
                lotsawa_core::glossary::gloss(t, &job, &base).text.len()
            }),
        ),
    ]
}

/// `lotsawa transliterate FILE` end to end (a process, reading the file and
/// writing to a pipe) and then pyewts, the reference converter, on the same
/// file of `bytes` of Derge Kangyur text: MB/s of each, once per harness run
/// (the harness takes the medians). `None` when the `lotsawa` binary (built
/// next to this one) or pyewts (`LOTSAWA_VENV` or `.venv`, installed by
/// scripts/test) is missing.
fn transliterate_vs_pyewts(bytes: usize) -> Option<(f64, f64)> {
    let exe = std::env::current_exe().ok()?;
    let lotsawa = exe.with_file_name(format!("lotsawa{}", std::env::consts::EXE_SUFFIX));
    let venv = std::env::var_os("LOTSAWA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".venv"));
    let python = venv.join("bin").join("python");
    let has_pyewts = std::process::Command::new(&python)
        .args(["-c", "import pyewts"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !lotsawa.exists() || !has_pyewts {
        eprintln!(
            "transliterate: skipped ({} and pyewts in {} are needed)",
            lotsawa.display(),
            venv.display()
        );
        return None;
    }
    let corpus = include_str!("../../shared/core/tests/data/derge-kangyur-excerpt.txt");
    let dir = tempfile::tempdir().ok()?;
    let file = dir.path().join("derge.txt");
    std::fs::write(&file, corpus.repeat(bytes / corpus.len() + 1)).ok()?;
    let size = std::fs::metadata(&file).ok()?.len() as f64;
    let timed = |cmd: &mut std::process::Command| -> Option<f64> {
        let t = Instant::now();
        let out = cmd.stderr(std::process::Stdio::null()).output().ok()?;
        let secs = t.elapsed().as_secs_f64();
        (out.status.success() && !out.stdout.is_empty()).then_some(size / 1e6 / secs)
    };
    let ours = timed(
        std::process::Command::new(&lotsawa)
            .arg("transliterate")
            .arg(&file),
    )?;
    let reference = timed(
        std::process::Command::new(&python)
            .args([
                "-c",
                "import sys, pyewts; sys.stdout.write(pyewts.pyewts().toWylie(open(sys.argv[1], encoding='utf-8').read()))",
            ])
            .arg(&file),
    )?;
    Some((ours, reference))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve-fanout") {
        let n = |i: usize| -> u64 { args.get(i).and_then(|v| v.parse().ok()).unwrap_or(1) };
        serve_fanout(n(2), n(3) as usize, n(4) as usize).await;
        return;
    }
    let smoke = args.iter().any(|a| a == "--smoke");
    let mut sizes = if smoke { SMOKE } else { FULL };
    let mut out: Option<PathBuf> = None;
    let mut only: Option<Vec<String>> = None;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--smoke" => {}
            "--streams" => {
                i += 1;
                sizes.fanout_streams = args
                    .get(i)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(sizes.fanout_streams);
            }
            "--only" => {
                i += 1;
                only = args
                    .get(i)
                    .map(|v| v.split(',').map(str::to_owned).collect());
            }
            "--durability" => {
                i += 1;
                let d = args.get(i).and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                    eprintln!("error: --durability takes full or process");
                    std::process::exit(2)
                });
                let _ = DURABILITY.set(d);
            }
            "--out" => {
                i += 1;
                out = args.get(i).map(PathBuf::from);
            }
            "--runs" => {
                i += 1;
                sizes.runs = args
                    .get(i)
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| {
                        eprintln!("error: --runs takes a positive number");
                        std::process::exit(2)
                    });
            }
            other => {
                eprintln!(
                    "error: unknown argument '{other}' (use --smoke, --runs N, --out FILE, --durability full|process, --only PART,... with parts enqueue, drain, http, load, fanout, pickup, text, transliterate, scale)"
                );
                std::process::exit(2);
            }
        }
        i += 1;
    }
    let mut figures: Vec<Figure> = Vec::new();
    let mut add = |name: String, unit: &'static str, value: f64| match figures
        .iter_mut()
        .find(|f| f.name == name)
    {
        Some(f) => f.runs.push(value),
        None => figures.push(Figure {
            name,
            unit,
            runs: vec![value],
        }),
    };
    let want = |part: &str| only.as_ref().is_none_or(|o| o.iter().any(|p| p == part));
    for run in 0..sizes.runs {
        eprintln!("run {}/{}", run + 1, sizes.runs);
        if want("enqueue") {
            let (one, batched) = enqueue(sizes).await;
            add("enqueue in-process, one at a time".into(), "jobs/s", one);
            add("enqueue in-process, 50 in flight".into(), "jobs/s", batched);
        }
        for c in [3u32, 8, 32].into_iter().filter(|_| want("drain")) {
            let (jobs, _, _, _) = drain(sizes.drain_jobs, 1, c).await;
            add(
                format!(
                    "drain {} single-chunk jobs, concurrency {c}",
                    sizes.drain_jobs
                ),
                "jobs/s",
                jobs,
            );
        }
        for c in [3u32, 8].into_iter().filter(|_| want("drain")) {
            let (jobs, chunks, p50, p99) = drain(sizes.multi_jobs, sizes.multi_chunks, c).await;
            let what = format!(
                "drain {} jobs × {} chunks, concurrency {c}",
                sizes.multi_jobs, sizes.multi_chunks
            );
            add(format!("{what} (jobs)"), "jobs/s", jobs);
            add(format!("{what} (chunks)"), "chunks/s", chunks);
            add(format!("{what}: per-chunk overhead, p50"), "µs", p50);
            add(format!("{what}: per-chunk overhead, p99"), "µs", p99);
        }
        if want("http") {
            let dir = tempfile::tempdir().expect("tempdir");
            let b = backend(dir.path().join("h.db"), 1, Arc::new(Stalled)).await;
            let (url, server) = serve(b.service() as Arc<dyn JobService>).await;
            for clients in [1usize, 64] {
                let (rate, p50, p99) = http_enqueue(&url, clients, sizes.http_secs).await;
                add(
                    format!("enqueue over HTTP, {clients} clients"),
                    "jobs/s",
                    rate,
                );
                add(
                    format!("enqueue over HTTP, {clients} clients, p50"),
                    "ms",
                    p50,
                );
                add(
                    format!("enqueue over HTTP, {clients} clients, p99"),
                    "ms",
                    p99,
                );
            }
            server.abort();
            let _ = b.shutdown().await;
        }
        if want("load") {
            let (drained, submitted) = drain_under_load(sizes.drain_jobs, sizes.http_secs).await;
            add(
                "drain while 64 clients submit, concurrency 8 (drained)".into(),
                "jobs/s",
                drained,
            );
            add(
                "drain while 64 clients submit, concurrency 8 (submitted)".into(),
                "jobs/s",
                submitted,
            );
        }
        for pace in [2000u64, 500].into_iter().filter(|_| want("fanout")) {
            let (per_stream, p50, p99, opened) = fanout(
                sizes.fanout_streams,
                sizes.fanout_jobs,
                pace,
                sizes.fanout_secs,
            )
            .await;
            let what = format!(
                "SSE fan-out, {} streams on {} running jobs, a chunk each {pace} ms",
                sizes.fanout_streams, sizes.fanout_jobs
            );
            add(format!("{what}: streams open"), "streams", opened);
            add(
                format!("{what}: resident memory per stream"),
                "KB",
                per_stream / 1024.0,
            );
            add(format!("{what}: chunk to client, p50"), "ms", p50);
            add(format!("{what}: chunk to client, p99"), "ms", p99);
        }
        // Once: the largest store takes a minute to fill.
        for &stored in sizes.scale.iter().filter(|_| want("scale") && run == 0) {
            eprintln!("scale: {stored} stored jobs");
            for (what, unit, v) in scale(stored, sizes.scale_drain).await {
                add(format!("with {stored} jobs stored: {what}"), unit, v);
            }
        }
        if want("text") {
            for (name, rate) in text_rates(sizes.text_bytes) {
                add(name.into(), "MB/s", rate);
            }
        }
        if want("transliterate")
            && let Some((ours, pyewts)) = transliterate_vs_pyewts(sizes.text_bytes)
        {
            let what = format!(
                "transliterate a {:.1} MB file end to end",
                sizes.text_bytes as f64 / 1e6
            );
            add(format!("{what}: lotsawa transliterate"), "MB/s", ours);
            add(format!("{what}: pyewts (reference)"), "MB/s", pyewts);
            add(format!("{what}: lotsawa / pyewts"), "×", ours / pyewts);
        }
        for rate in [100.0, 1000.0].into_iter().filter(|_| want("pickup")) {
            let (p50, p99, p999) = pickup(rate, sizes.pickup_secs).await;
            add(format!("pickup at {rate} arrivals/s, p50"), "µs", p50);
            add(format!("pickup at {rate} arrivals/s, p99"), "µs", p99);
            add(format!("pickup at {rate} arrivals/s, p99.9"), "µs", p999);
        }
    }
    println!(
        "{:<70} {:>12} {:>12} {:>12}  unit",
        "figure", "median", "min", "max"
    );
    for f in &figures {
        let j = f.json();
        println!(
            "{:<70} {:>12} {:>12} {:>12}  {}",
            f.name, j["median"], j["min"], j["max"], f.unit
        );
    }
    let report = json!({
        "harness": "lotsawa-bench",
        "mode": if smoke { "smoke" } else { "full" },
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "durability": match durability() {
            lotsawa_local::Durability::Full => "full: SQLite WAL, synchronous=FULL, every acknowledged commit fsynced (group commit); survives a power loss",
            lotsawa_local::Durability::Process => "process: SQLite WAL, synchronous=NORMAL, every acknowledged commit in the WAL file; survives a process crash, not a power loss",
        },
        "engine": "echo",
        "runs": sizes.runs,
        "figures": figures.iter().map(Figure::json).collect::<Vec<_>>(),
    });
    if let Some(path) = out {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&report).expect("json") + "\n",
        )
        .unwrap_or_else(|e| {
            eprintln!("error: cannot write {}: {e}", path.display());
            std::process::exit(1)
        });
        eprintln!("results written to {}", path.display());
    }
}
