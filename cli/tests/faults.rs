//! The fault suite: the real binary killed with SIGKILL at random moments
//! during a run of many multi-chunk jobs, a provider outage with
//! Retry-After that ends within the retry budget, and progress streams whose
//! clients stop reading. Each test bounds its own time and stops by itself.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lotsawa_apitests::FakeProvider;
use lotsawa_apitests::suite::{JOB_TIMEOUT, expected_translation, numbered_text};
use serde_json::{Value, json};

mod support;

use support::{Server, temp_db};

/// A small deterministic generator (the seed is printed, so a failing run
/// can be repeated).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below.max(1)
    }
}

/// Every job of the first page of 100: id → chunks completed.
async fn completed_chunks(server: &Server) -> HashMap<String, u64> {
    let (status, _, page) = server
        .api
        .request(reqwest::Method::GET, "/api/jobs?limit=100")
        .await
        .expect("list");
    assert_eq!(status, 200, "{page}");
    page["jobs"]
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .map(|j| {
                    (
                        j["id"].as_str().unwrap_or("").to_owned(),
                        j["chunksCompleted"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_kill_9s_lose_no_job_duplicate_none_and_resend_no_completed_chunk() {
    const JOBS: usize = 30;
    const CHUNKS: usize = 6;
    const KILLS: usize = 10;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let mut rng = Lcg(seed);
    let provider = FakeProvider::start().await;
    provider.set_delay_ms(60);
    let (_dir, db) = temp_db();
    let mut server = Server::start(&db, &provider, 3, &[]);
    let mut jobs: Vec<(String, Vec<String>)> = Vec::new();
    for j in 0..JOBS {
        let (text, chunks, size) = numbered_text(&format!("crash{j:02}-"), CHUNKS);
        let id = server
            .api
            .submit(&text, json!({"chunkSize": size, "engine": "openai"}))
            .await
            .expect("submit");
        jobs.push((id, chunks));
    }
    // Chunks seen committed (through the API) just before a kill, with the
    // provider calls they had had then: no call may follow.
    let chunks_of: HashMap<String, Vec<String>> = jobs.iter().cloned().collect();
    let mut committed: HashMap<(String, usize), u32> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut kills = 0;
    while kills < KILLS {
        assert!(Instant::now() < deadline, "the kill loop ran out of time");
        tokio::time::sleep(Duration::from_millis(80 + rng.next(400))).await;
        for (id, done) in completed_chunks(&server).await {
            for i in 0..done as usize {
                if let Some(c) = chunks_of.get(&id).and_then(|c| c.get(i)) {
                    committed
                        .entry((id.clone(), i))
                        .or_insert_with(|| provider.calls_for(c));
                }
            }
        }
        server.kill9();
        kills += 1;
        server = Server::start(&db, &provider, 3, &[]);
    }
    let mut resent_completed = 0u32;
    let mut resent_in_flight = 0u32;
    let mut offenders = Vec::new();
    for (id, chunks) in &jobs {
        let job = server
            .api
            .wait_status(id, "completed", JOB_TIMEOUT)
            .await
            .expect("every job completes");
        assert_eq!(
            job["result"]["translation"],
            expected_translation(chunks).as_str(),
            "each chunk's translation exactly once, in order: {job}"
        );
        for (i, c) in chunks.iter().enumerate() {
            let calls = provider.calls_for(c);
            assert!(calls >= 1, "chunk {i} of {id} never reached the provider");
            resent_in_flight += calls - 1;
            if let Some(then) = committed.get(&(id.clone(), i)) {
                let after = calls - then;
                resent_completed += after;
                if after > 0 {
                    offenders.push(format!(
                        "{id} chunk {i}: {then} calls when seen committed, {calls} at the end"
                    ));
                }
            }
        }
    }
    let listed = completed_chunks(&server).await;
    let ids: HashSet<&String> = jobs.iter().map(|(id, _)| id).collect();
    assert_eq!(listed.len(), JOBS, "no job lost or duplicated: {listed:?}");
    assert!(listed.keys().all(|id| ids.contains(id)));
    eprintln!(
        "crash suite (seed {seed}): {JOBS} jobs of {CHUNKS} chunks, {kills} kill -9s survived, \
         0 jobs lost, 0 duplicated, {} chunks seen committed at a kill, completed chunks \
         re-sent: {resent_completed}, chunks re-sent in all (in flight at a kill): \
         {resent_in_flight}",
        committed.len()
    );
    assert_eq!(
        resent_completed, 0,
        "a completed chunk went to the provider again: {offenders:#?}"
    );
    assert!(
        resent_in_flight <= (KILLS * 3) as u32,
        "at most the calls in flight at each kill are repeated: {resent_in_flight}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_outage_within_the_retry_budget_fails_no_job() {
    let provider = FakeProvider::start().await;
    let (_dir, db) = temp_db();
    // Three attempts; the provider's Retry-After of 1 s sets the waits. No
    // throttle budget: every 429 and 503 counts as an attempt here (the
    // budget's own tests are in throughput.rs).
    let server = Server::start(
        &db,
        &provider,
        3,
        &[
            ("LOTSAWA_RETRY_MAX_ATTEMPTS", "3"),
            ("LOTSAWA_THROTTLE_BUDGET_MS", "0"),
        ],
    );
    provider.start_outage(503, "1");
    let mut jobs = Vec::new();
    for j in 0..4 {
        let (text, chunks, size) = numbered_text(&format!("outage{j}-"), 2);
        let id = server
            .api
            .submit(&text, json!({"chunkSize": size, "engine": "openai"}))
            .await
            .expect("submit");
        jobs.push((id, chunks));
    }
    // The outage lasts until every running job has seen it, well inside the
    // two waits of 1 s that three attempts allow.
    let deadline = Instant::now() + Duration::from_secs(20);
    while provider.total_calls() < 3 {
        assert!(Instant::now() < deadline, "no call during the outage");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let outage_calls = provider.total_calls();
    tokio::time::sleep(Duration::from_millis(300)).await;
    provider.end_outage();
    for (id, chunks) in &jobs {
        let job = server
            .api
            .wait_status(id, "completed", JOB_TIMEOUT)
            .await
            .expect("a job outlives an outage shorter than its retry budget");
        assert_eq!(
            job["result"]["translation"],
            expected_translation(chunks).as_str()
        );
        for c in chunks {
            assert!(
                provider.calls_for(c) <= 3,
                "attempts never exceed the policy: {}",
                provider.calls_for(c)
            );
        }
    }
    eprintln!(
        "outage: {outage_calls} calls answered 503 Retry-After: 1; all {} jobs completed",
        jobs.len()
    );

    // A long outage beyond the budget fails the job, with a safe message.
    provider.start_outage(429, "1");
    let (text, chunks, size) = numbered_text("outage-long-", 1);
    let id = server
        .api
        .submit(&text, json!({"chunkSize": size, "engine": "openai"}))
        .await
        .expect("submit");
    let job = server
        .api
        .wait_status(&id, "failed", JOB_TIMEOUT)
        .await
        .expect("fails after its attempts");
    provider.end_outage();
    assert_eq!(provider.calls_for(&chunks[0]), 3, "three attempts");
    let error = job["error"].as_str().unwrap_or("");
    assert!(
        error.starts_with("provider_unavailable: ") && !error.contains("injected"),
        "{job}"
    );
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_do_not_hold_up_work_or_memory() {
    let provider = FakeProvider::start().await;
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &provider, 3, &[]);
    // Many chunks, each streamed as an event nobody reads.
    let (text, chunks, size) = numbered_text("slow-", 1500);
    let id = server
        .api
        .submit(&text, json!({"chunkSize": size, "engine": "echo"}))
        .await
        .expect("submit");
    let before = rss_kib(server.pid());
    // Sixteen clients open the stream and never read a byte.
    let addr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.write_all(
            format!("GET /api/jobs/{id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
        )
        .expect("request");
        stalled.push(s);
    }
    let job = server
        .api
        .wait_status(&id, "completed", JOB_TIMEOUT)
        .await
        .expect("the job completes while its watchers stall");
    assert!(
        job["chunksTotal"].as_u64() >= Some(chunks.len() as u64),
        "{}",
        job["chunksTotal"]
    );
    // Another job runs normally beside them.
    let other = server
        .api
        .submit("ཀ་ཁ། ", json!({"engine": "echo"}))
        .await
        .expect("submit");
    server
        .api
        .wait_status(&other, "completed", JOB_TIMEOUT)
        .await
        .expect("completes");
    let after = rss_kib(server.pid());
    if let (Some(b), Some(a)) = (before, after) {
        eprintln!(
            "slow consumers: 16 stalled streams on a {}-chunk job; server RSS {b} KiB → {a} KiB",
            chunks.len()
        );
        assert!(
            a.saturating_sub(b) < 64 * 1024,
            "memory grew by {} KiB with stalled streams",
            a - b
        );
    }
    drop(stalled);
    let _: Value = server.api.job(&id).await.expect("still serving");
}
