//! Provider throughput on the real binary, against a fake provider that
//! enforces its limits as providers do ([`LimitedProvider`]): the shared
//! limits held across jobs (observed rate and calls in flight), chunks of
//! one job in parallel yet streamed and assembled in order, resumed after
//! kill -9 without resending committed chunks, 429s that pause the engine
//! for every job without spending attempts (until the throttle budget is
//! spent), and token usage equal to what the provider reported.

use std::time::Duration;

use lotsawa_apitests::chunk_indices;
use lotsawa_apitests::limited::{LimitedProvider, ProviderLimits};
use lotsawa_apitests::suite::{JOB_TIMEOUT, expected_translation, numbered_text};
use serde_json::{Value, json};

mod support;

use support::{Server, temp_db};

fn limits(rpm: u32, concurrent: u32, latency_ms: (u64, u64)) -> ProviderLimits {
    ProviderLimits {
        rpm,
        concurrent,
        // The provider is a little more lenient than the limiter, as real
        // ones are: arrival jitter on loopback is not a client's fault.
        burst_secs: 2.0,
        latency_ms,
        retry_after_secs: 1,
    }
}

async fn submit(server: &Server, text: &str, config: Value) -> String {
    server.api.submit(text, config).await.expect("submit")
}

async fn metrics(server: &Server) -> String {
    reqwest::get(format!("{}/metrics", server.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_jobs_and_parallel_chunks_stream_in_order_with_usage() {
    let provider = LimitedProvider::start(limits(600, 4, (30, 90))).await;
    let (_dir, db) = temp_db();
    let server = Server::start_at(
        &db,
        &provider.base_url(),
        3,
        &[("LOTSAWA_LIMITS", "openai:fake-model rpm=600 concurrent=4")],
    );
    let (big_text, big_chunks, size) = numbered_text("par-", 40);
    let big = submit(
        &server,
        &big_text,
        json!({"chunkSize": size, "parallelChunks": 8}),
    )
    .await;
    let mut others = Vec::new();
    for j in 0..2 {
        let (text, chunks, size) = numbered_text(&format!("side{j}-"), 8);
        let id = submit(
            &server,
            &text,
            json!({"chunkSize": size, "parallelChunks": 2}),
        )
        .await;
        others.push((id, chunks));
    }
    let events = server
        .api
        .stream(&big, None, JOB_TIMEOUT)
        .await
        .expect("stream");
    let indices = chunk_indices(&events);
    assert_eq!(
        indices,
        (0..40).collect::<Vec<u64>>(),
        "chunk events in order"
    );
    let mut usage = (0u64, 0u64, 0u64);
    for (id, chunks) in std::iter::once((big.clone(), big_chunks)).chain(others) {
        let job = server
            .api
            .wait_status(&id, "completed", JOB_TIMEOUT)
            .await
            .expect("completed");
        assert_eq!(
            job["result"]["translation"],
            expected_translation(&chunks).as_str()
        );
        let u = &job["result"]["usage"];
        usage.0 += u["calls"].as_u64().expect("calls");
        usage.1 += u["promptTokens"].as_u64().expect("prompt tokens");
        usage.2 += u["completionTokens"].as_u64().expect("completion tokens");
        assert_eq!(u["costUsd"], Value::Null, "no price table: no cost");
        if id == big {
            assert_eq!(job["parallelChunks"], 8);
        }
    }
    // The limits held: never more calls in flight than allowed, and no
    // more calls in any second than its rate plus one burst (a second of
    // rate).
    assert!(
        provider.most_in_flight() <= 4,
        "{}",
        provider.most_in_flight()
    );
    let most = provider.most_accepted_within(Duration::from_secs(1));
    assert!(most <= 20, "{most} calls within one second");
    let (refused, calls) = provider.refused();
    assert_eq!(refused, 0, "limits set right: no 429 in {calls} calls");
    // Usage is what the provider reported, on the jobs and on /metrics.
    let (prompt, completion) = provider.tokens_reported();
    assert_eq!(usage, (calls as u64, prompt, completion));
    let text = metrics(&server).await;
    let kind = |k: &str| {
        metric(
            &text,
            &format!(
                "lotsawa_provider_tokens_total{{engine=\"openai\",kind=\"{k}\",model=\"fake-model\"}}"
            ),
        )
    };
    assert_eq!(
        (kind("prompt"), kind("completion")),
        (prompt, completion),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_the_engine_for_every_job_and_spends_no_attempt() {
    let provider = LimitedProvider::start(limits(6000, 16, (5, 20))).await;
    let (_dir, db) = temp_db();
    // One attempt per chunk: any 429 that counted would fail a job.
    let server = Server::start_at(
        &db,
        &provider.base_url(),
        3,
        &[
            ("LOTSAWA_LIMITS", "openai rpm=6000"),
            ("LOTSAWA_RETRY_MAX_ATTEMPTS", "1"),
        ],
    );
    provider.refuse_next(3);
    let mut jobs = Vec::new();
    for j in 0..2 {
        let (text, chunks, size) = numbered_text(&format!("storm{j}-"), 3);
        jobs.push((
            submit(&server, &text, json!({"chunkSize": size})).await,
            chunks,
        ));
    }
    for (id, chunks) in &jobs {
        let job = server
            .api
            .wait_status(id, "completed", JOB_TIMEOUT)
            .await
            .expect("completed despite the 429s");
        assert_eq!(
            job["result"]["translation"],
            expected_translation(chunks).as_str()
        );
    }
    let calls = provider.calls();
    let refused: Vec<Duration> = calls
        .iter()
        .filter(|c| c.status == 429)
        .map(|c| c.at)
        .collect();
    assert_eq!(refused.len(), 3, "{calls:?}");
    // No call arrived during the pause a 429 asked for (1 s), from either
    // job (but for one sent before that 429 was answered: the first 100 ms).
    for c in calls.iter().filter(|c| c.status == 200) {
        for r in &refused {
            assert!(
                c.at < *r + Duration::from_millis(100) || c.at >= *r + Duration::from_millis(900),
                "a call at {:?} inside the pause after the 429 at {r:?}",
                c.at
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_throttle_budget_429s_count_as_attempts() {
    let provider = LimitedProvider::start(limits(6000, 16, (5, 20))).await;
    let (_dir, db) = temp_db();
    let server = Server::start_at(
        &db,
        &provider.base_url(),
        3,
        &[
            ("LOTSAWA_LIMITS", "openai rpm=6000"),
            ("LOTSAWA_RETRY_MAX_ATTEMPTS", "2"),
            ("LOTSAWA_THROTTLE_BUDGET_MS", "1500"),
        ],
    );
    provider.refuse_next(1000);
    let (text, _, size) = numbered_text("budget-", 1);
    let id = submit(&server, &text, json!({"chunkSize": size})).await;
    let job = server
        .api
        .wait_status(&id, "failed", JOB_TIMEOUT)
        .await
        .expect("failed");
    let error = job["error"].as_str().unwrap_or("");
    assert!(error.contains("429"), "{error}");
    // Two 429s within the budget (1 s each), then the two attempts.
    assert_eq!(provider.refused().0, 4, "{:?}", provider.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_chunks_resume_after_kill_9_without_resending_committed_ones() {
    let provider = LimitedProvider::start(limits(60_000, 64, (60, 120))).await;
    let (_dir, db) = temp_db();
    let mut server = Server::start_at(&db, &provider.base_url(), 3, &[]);
    let (text, chunks, size) = numbered_text("resume-", 40);
    let id = submit(
        &server,
        &text,
        json!({"chunkSize": size, "parallelChunks": 4}),
    )
    .await;
    server
        .api
        .wait_for(&id, JOB_TIMEOUT, |j| {
            j["chunksCompleted"].as_u64() >= Some(10)
        })
        .await
        .expect("under way");
    server.kill9();
    server = Server::start_at(&db, &provider.base_url(), 3, &[]);
    let events = server
        .api
        .stream(&id, None, JOB_TIMEOUT)
        .await
        .expect("stream");
    let indices = chunk_indices(&events);
    assert_eq!(
        indices,
        (0..40).collect::<Vec<u64>>(),
        "chunk events in order"
    );
    let job = server
        .api
        .wait_status(&id, "completed", JOB_TIMEOUT)
        .await
        .expect("completed");
    assert_eq!(
        job["result"]["translation"],
        expected_translation(&chunks).as_str()
    );
    // Only the chunks in flight at the kill (at most 4) were sent again.
    let calls = provider.accepted_by_chunk();
    let twice = calls.values().filter(|n| **n > 1).count();
    assert!(calls.values().all(|n| *n <= 2), "{calls:?}");
    assert!(twice <= 4, "{twice} chunks sent twice: {calls:?}");
    assert_eq!(calls.len(), 40);
}

fn lotsawa(args: &[&str], db: &std::path::Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lotsawa"))
        .args(args)
        .arg("--db")
        .arg(db)
        .env_remove("LOTSAWA_DB")
        .output()
        .expect("run lotsawa");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_stop_jobs_refuse_submissions_and_usage_reports_them() {
    let provider = LimitedProvider::start(limits(60_000, 64, (5, 20))).await;
    let (_dir, db) = temp_db();
    // A budget of one token: the first chunk spends it.
    let key = lotsawa(
        &[
            "keys",
            "create",
            "--tenant",
            "acme",
            "--monthly-tokens",
            "1",
        ],
        &db,
    );
    let server = Server::start_at(
        &db,
        &provider.base_url(),
        3,
        &[
            ("LOTSAWA_REQUIRE_AUTH", "1"),
            ("LOTSAWA_PRICES", "openai:fake-model in=1 out=2"),
        ],
    );
    let api = server.api.clone().with_key(&key);
    let (text, chunks, size) = numbered_text("budget-", 5);
    let id = api
        .submit(&text, json!({"chunkSize": size}))
        .await
        .expect("submit");
    let job = api
        .wait_status(&id, "failed", JOB_TIMEOUT)
        .await
        .expect("stopped by the budget");
    assert_eq!(job["errorCode"], "budget_exhausted", "{job}");
    assert_eq!(job["chunksCompleted"], 1, "{job}");
    // A new submission is refused while the budget is spent.
    let (status, problem, _) = api
        .post_json(
            "/api/jobs",
            &json!({"sourceText": text, "config": {"chunkSize": size}}),
        )
        .await
        .expect("post");
    assert_eq!(status, 429, "{problem}");
    assert_eq!(problem["errorCode"], "budget_exhausted", "{problem}");
    assert_eq!(problem["budget"], 1, "{problem}");
    assert!(
        problem["resetsAt"]
            .as_str()
            .is_some_and(|r| r.ends_with('Z')),
        "{problem}"
    );
    // The operator raises it (as a reset would): a retry goes on from the
    // first unfinished chunk, and no chunk is sent twice.
    let shown = lotsawa(
        &[
            "keys",
            "budget",
            "--tenant",
            "acme",
            "--monthly-tokens",
            "100000000",
        ],
        &db,
    );
    assert!(shown.contains("of 100000000 tokens"), "{shown}");
    // The runner trusts a budget it read for a second.
    tokio::time::sleep(lotsawa_core::usage::BUDGET_TTL).await;
    let (status, body, _) = api
        .post_json(&format!("/api/jobs/{id}/retry"), &json!({}))
        .await
        .expect("retry");
    assert_eq!(status, 200, "{body}");
    let job = api
        .wait_status(&id, "completed", JOB_TIMEOUT)
        .await
        .expect("completed");
    assert_eq!(
        job["result"]["translation"],
        expected_translation(&chunks).as_str()
    );
    assert!(provider.accepted_by_chunk().values().all(|n| *n == 1));
    // The usage report: what the provider reported, priced.
    let (prompt, completion) = provider.tokens_reported();
    let (status, _, report) = api
        .request(reqwest::Method::GET, "/api/usage?groupBy=model")
        .await
        .expect("usage");
    assert_eq!(status, 200, "{report}");
    let total = &report["total"];
    assert_eq!(
        (
            total["promptTokens"].as_u64(),
            total["completionTokens"].as_u64()
        ),
        (Some(prompt), Some(completion)),
        "{report}"
    );
    let cost = (prompt as f64 + 2.0 * completion as f64) / 1e6;
    assert!(
        (total["costUsd"].as_f64().unwrap_or(-1.0) - cost).abs() < 1e-5,
        "{report}"
    );
    assert_eq!(report["lines"][0]["model"], "fake-model", "{report}");
    assert_eq!(report["budget"]["monthlyTokens"], 100_000_000, "{report}");
    assert_eq!(job["result"]["usage"]["promptTokens"], prompt, "{job}");
    let (status, _, by_day) = api
        .request(reqwest::Method::GET, "/api/usage")
        .await
        .expect("usage");
    assert_eq!(status, 200);
    assert_eq!(by_day["groupBy"], "day");
    assert_eq!(
        by_day["lines"].as_array().map(Vec::len),
        Some(1),
        "{by_day}"
    );
    for bad in [
        "/api/usage?groupBy=week",
        "/api/usage?from=2026-12-31&to=2026-01-01",
        "/api/usage?from=yesterday",
        "/api/usage?from=2020-01-01&to=2026-01-01",
        "/api/usage?colour=red",
    ] {
        let (status, _, problem) = api.request(reqwest::Method::GET, bad).await.expect("usage");
        assert_eq!(status, 400, "{bad}: {problem}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priorities_start_first_and_first_come_first_served_within_one() {
    let provider = LimitedProvider::start(limits(60_000, 64, (150, 150))).await;
    let (_dir, db) = temp_db();
    let server = Server::start_at(&db, &provider.base_url(), 1, &[]);
    // One slot, taken: the others wait and start in priority order.
    let (text, _, size) = numbered_text("blocker-", 3);
    let blocker = submit(&server, &text, json!({"chunkSize": size})).await;
    let mut waiting = Vec::new();
    for (name, priority) in [("low", -5), ("first", 0), ("high", 5), ("second", 0)] {
        let (text, _, size) = numbered_text(&format!("{name}-"), 1);
        let id = submit(
            &server,
            &text,
            json!({"chunkSize": size, "priority": priority}),
        )
        .await;
        waiting.push((name, id));
    }
    server
        .api
        .wait_status(&blocker, "completed", JOB_TIMEOUT)
        .await
        .expect("blocker");
    let mut started = Vec::new();
    for (name, id) in &waiting {
        let job = server
            .api
            .wait_status(id, "completed", JOB_TIMEOUT)
            .await
            .expect("completed");
        started.push((job["startedAt"].as_str().unwrap_or("").to_owned(), *name));
        if *name == "high" {
            assert_eq!(job["priority"], 5);
        }
    }
    started.sort();
    let order: Vec<&str> = started.iter().map(|(_, n)| *n).collect();
    assert_eq!(order, ["high", "first", "second", "low"]);
    let (status, problem) = {
        let (s, p, _) = server
            .api
            .post_json(
                "/api/jobs",
                &json!({"sourceText": "ཀ།", "config": {"priority": 11}}),
            )
            .await
            .expect("post");
        (s, p)
    };
    assert_eq!(status, 400, "{problem}");
}

/// Chunks already in flight when the budget runs out finish, and a job
/// whose last chunks spent it completes (nothing was left to start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_last_chunks_spend_the_budget_completes() {
    let provider = LimitedProvider::start(limits(60_000, 64, (20, 40))).await;
    let (_dir, db) = temp_db();
    let key = lotsawa(
        &[
            "keys",
            "create",
            "--tenant",
            "beta",
            "--monthly-tokens",
            "1",
        ],
        &db,
    );
    let server = Server::start_at(
        &db,
        &provider.base_url(),
        3,
        &[("LOTSAWA_REQUIRE_AUTH", "1")],
    );
    let api = server.api.clone().with_key(&key);
    let (text, chunks, size) = numbered_text("last-", 3);
    let id = api
        .submit(&text, json!({"chunkSize": size, "parallelChunks": 8}))
        .await
        .expect("submit");
    let job = api
        .wait_for(&id, JOB_TIMEOUT, |j| {
            j["status"] == "completed" || j["status"] == "failed"
        })
        .await
        .expect("ended");
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        job["result"]["translation"],
        expected_translation(&chunks).as_str()
    );
    // Spent now: the next submission is refused.
    let (status, problem, _) = api
        .post_json("/api/jobs", &json!({"sourceText": text}))
        .await
        .expect("post");
    assert_eq!(
        (status, problem["errorCode"].clone()),
        (429, json!("budget_exhausted"))
    );
}
