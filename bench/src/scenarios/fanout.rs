//! SSE fan-out: thousands of streams on a few running jobs, with a chunk
//! every 2000 ms and then every 500 ms. The server runs in a child process
//! (this same binary with `--serve-fanout`) so its resident memory can be
//! read on its own; the figures are memory per stream, streams open, and
//! the delay from a chunk's translation to its event at the client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lotsawa_core::{Engine, EngineError, EngineOutput, JobService, TranslateRequest};

use crate::args::Sizes;
use crate::fixture::{backend, new_job};
use crate::report::{Figures, percentile};

/// The figures of this scenario, added to `figures`.
pub(crate) async fn run(sizes: Sizes, figures: &mut Figures) {
    for pace in [2000u64, 500] {
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
        figures.add(format!("{what}: streams open"), "streams", opened);
        figures.add(
            format!("{what}: resident memory per stream"),
            "KB",
            per_stream / 1024.0,
        );
        figures.add(format!("{what}: chunk to client, p50"), "ms", p50);
        figures.add(format!("{what}: chunk to client, p99"), "ms", p99);
    }
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
pub(crate) async fn serve_fanout(pace_ms: u64, jobs: usize, streams: usize) {
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
