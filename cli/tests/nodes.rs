//! Several `lotsawa serve` processes on one PostgreSQL database (a
//! throwaway server this test starts): one queue, one concurrency limit
//! for the whole deployment, and no job lost when a node dies.
//!
//! Three nodes share many multi-chunk jobs through a fake provider that
//! records which node made each call and how many were in flight. One node
//! is killed with SIGKILL at random moments and restarted, several times;
//! another is stopped with SIGSTOP past its lease (a network cut) and let
//! go. At the end every job completed with the right translation, the
//! provider never saw more calls at once than the deployment's limit, and
//! every chunk called twice was in flight on a node that was killed or
//! stopped (no completed chunk is sent again).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lotsawa_apitests::limited::{Call, LimitedProvider, ProviderLimits};
use lotsawa_apitests::suite::{expected_translation, numbered_text};
use lotsawa_conformance::postgres::Cluster;
use serde_json::json;

mod support;

use support::{Server, lotsawa};

/// The deployment's concurrency limit, given to every node.
const LIMIT: u32 = 4;
/// Each node's lease on the jobs it runs.
const LEASE_MS: u64 = 1500;
const JOBS: usize = 48;
const CHUNKS: usize = 8;

fn node(db: &str, provider: &LimitedProvider, name: &str) -> Server {
    Server::start_at(
        Path::new(db),
        &provider.base_url_for(name),
        LIMIT as usize,
        &[
            ("LOTSAWA_LEASE_MS", &LEASE_MS.to_string()),
            ("LOTSAWA_SHUTDOWN_GRACE_MS", "500"),
        ],
    )
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {sig} {pid}");
}

/// A xorshift for the chaos schedule; its seed is printed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// An interruption of a node: killed at `from` (`to` = `from`), or stopped
/// from `from` to `to`, on the provider's clock.
#[derive(Debug, Clone)]
struct Outage {
    node: String,
    from: Duration,
    to: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_queue_and_lose_nothing_when_one_dies() {
    let db = Cluster::get().fresh_database();
    let provider = LimitedProvider::start(ProviderLimits {
        rpm: 1_000_000,
        // The provider admits far more than the deployment's limit: what
        // it saw in flight is what the nodes sent.
        concurrent: 1000,
        burst_secs: 60.0,
        latency_ms: (40, 120),
        retry_after_secs: 1,
    })
    .await;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("chaos seed {seed}");
    let mut rng = Rng(seed);
    let n0 = node(&db, &provider, "n0");
    let mut n1 = Some(node(&db, &provider, "n1"));
    let n2 = node(&db, &provider, "n2");

    let mut jobs = Vec::new();
    for j in 0..JOBS {
        let (text, chunks, size) = numbered_text(&format!("job{j:02}-"), CHUNKS);
        // Submitted to every node in turn: one queue whichever takes it.
        let api = match j % 3 {
            0 => &n0.api,
            1 => &n1.as_ref().expect("n1").api,
            _ => &n2.api,
        };
        let id = api
            .submit(&text, json!({"chunkSize": size}))
            .await
            .expect("submit");
        jobs.push((id, chunks));
    }

    // Kill n1 at random moments, restarting it each time.
    let mut outages = Vec::new();
    let kills = 4;
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
        let at = provider.elapsed();
        n1.take().expect("n1").kill9();
        outages.push(Outage {
            node: format!("n1-{k}"),
            from: at,
            to: at,
        });
        tokio::time::sleep(Duration::from_millis(100 + rng.below(300))).await;
        n1 = Some(node(&db, &provider, &format!("n1-{}", k + 1)));
    }
    // Cut n2 off past its lease, then let it come back.
    tokio::time::sleep(Duration::from_millis(200 + rng.below(400))).await;
    let from = provider.elapsed();
    signal(n2.pid(), "-STOP");
    tokio::time::sleep(Duration::from_millis(LEASE_MS * 2)).await;
    signal(n2.pid(), "-CONT");
    outages.push(Outage {
        node: "n2".into(),
        from,
        to: provider.elapsed(),
    });

    // Every job completes, with every chunk's translation in order.
    let deadline = Duration::from_secs(120);
    for (id, chunks) in &jobs {
        let job = n0
            .api
            .wait_status(id, "completed", deadline)
            .await
            .unwrap_or_else(|e| panic!("job {id} did not complete: {e}"));
        assert_eq!(
            job["result"]["translation"],
            expected_translation(chunks).as_str(),
            "job {id}"
        );
    }

    // Killed nodes were named n1-0.. by the calls they made; the first
    // one is "n1".
    let calls = provider.calls();
    let renamed = |c: &Call| -> String {
        if c.node == "n1" {
            "n1-0".into()
        } else {
            c.node.clone()
        }
    };
    assert!(
        provider.most_in_flight() <= LIMIT,
        "the provider saw {} calls at once; the deployment's limit is {LIMIT}",
        provider.most_in_flight()
    );
    let mut by_chunk: HashMap<&str, Vec<&Call>> = HashMap::new();
    for c in &calls {
        by_chunk.entry(c.chunk.as_str()).or_default().push(c);
    }
    // A call may be followed by another for the same chunk only if its
    // node was interrupted while it was in flight or just after its answer
    // (before the commit): a completed chunk is never sent again.
    let slack = Duration::from_millis(1000);
    let mut resent = 0;
    let mut takeovers = Vec::new();
    for (chunk, list) in &by_chunk {
        for pair in list.windows(2) {
            let (first, next) = (pair[0], pair[1]);
            let node = renamed(first);
            let outage = outages
                .iter()
                .find(|o| o.node == node && o.to >= first.at && o.from <= first.ended + slack);
            match outage {
                Some(o) => {
                    resent += 1;
                    takeovers.push(next.at.saturating_sub(o.from.max(first.at)));
                }
                None => panic!(
                    "chunk {chunk:?} was sent again by {} at {:?} after {node}'s call at {:?}–{:?}, \
                     with no interruption of {node} in between",
                    next.node, next.at, first.at, first.ended
                ),
            }
        }
    }
    for (_, chunks) in &jobs {
        for c in chunks {
            let text = c.trim_end();
            assert!(
                by_chunk.keys().any(|k| k.trim_end() == text),
                "chunk {text:?} was never sent"
            );
        }
    }
    takeovers.sort();
    // The work outlasted the chaos: the last outage ended before the last
    // call (so every interruption hit a deployment at work).
    let last_call = calls.iter().map(|c| c.at).max().unwrap_or_default();
    assert!(
        outages.iter().all(|o| o.to < last_call),
        "the jobs finished before the chaos did; give them more work"
    );
    eprintln!(
        "nodes: {JOBS} jobs × {CHUNKS} chunks, {kills} kills and 1 stop of {} ms survived; \
         0 jobs lost; {resent} interrupted calls sent again, 0 completed chunks; \
         most in flight {} (limit {LIMIT}); re-sent after an interruption p50 {:?}, max {:?}",
        LEASE_MS * 2,
        provider.most_in_flight(),
        percentile(&takeovers, 0.5),
        percentile(&takeovers, 1.0)
    );
}

/// A webhook receiver on loopback: the bodies it got.
async fn receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    let got: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let inbox = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let inbox = inbox.clone();
            async move {
                if let Ok(v) = serde_json::from_slice(&body) {
                    inbox.lock().expect("inbox").push(v);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_cancels_and_webhooks_span_the_nodes() {
    // The throwaway server trusts loopback, so any password is taken; it
    // stands for a real one that must never be printed.
    let db = Cluster::get()
        .fresh_database()
        .replacen("postgres@", "postgres:pg-s3cret@", 1);
    let made = lotsawa(&["keys", "create", "--tenant", "acme", "--db", &db]);
    assert!(made.status.success(), "{made:?}");
    let key = String::from_utf8(made.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert!(key.starts_with("lts_"), "{key}");
    let listed = lotsawa(&["keys", "list", "--db", &db]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("acme"));
    let refused = lotsawa(&["backup", "copy.db", "--db", &db]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(
        said.contains("pg_dump") && !said.contains("pg-s3cret"),
        "{said}"
    );

    // Calls take 2 s: a cancelled job's call is seen cut short.
    let provider = LimitedProvider::start(ProviderLimits {
        rpm: 1_000_000,
        concurrent: 1000,
        burst_secs: 60.0,
        latency_ms: (2000, 2000),
        retry_after_secs: 1,
    })
    .await;
    let env = [
        ("LOTSAWA_REQUIRE_AUTH", "1"),
        ("LOTSAWA_WEBHOOK_SECRET", "test-webhook-secret-0123"),
        ("LOTSAWA_LEASE_MS", "3000"),
    ];
    // One job at a time in the whole deployment.
    let a = Server::start_at(Path::new(&db), &provider.base_url_for("a"), 1, &env);
    let b = Server::start_at(Path::new(&db), &provider.base_url_for("b"), 1, &env);
    let (a_api, b_api) = (a.api.clone().with_key(&key), b.api.clone().with_key(&key));

    // A key made against the database opens both nodes; none opens without it.
    assert_eq!(
        reqwest::get(format!("{}/api/jobs", b.url))
            .await
            .expect("get")
            .status()
            .as_u16(),
        401
    );

    // Cancelled on one node while its call runs on the other: the call is
    // dropped there, so the next job's call never overlaps it.
    let (text, _, size) = numbered_text("cut-", 4);
    let first = a_api
        .submit(&text, json!({"chunkSize": size}))
        .await
        .expect("submit");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let runner = loop {
        if let Some(c) = provider.calls_in_flight().first() {
            break c.clone();
        }
        assert!(std::time::Instant::now() < deadline, "the job never called");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let other = if runner == "a" { &b_api } else { &a_api };
    let (status, body, _) = other
        .request(reqwest::Method::DELETE, &format!("/api/jobs/{first}"))
        .await
        .expect("cancel");
    assert_eq!(status, 200, "{body}");
    let (text, chunks, size) = numbered_text("next-", 2);
    let second = other
        .submit(&text, json!({"chunkSize": size}))
        .await
        .expect("submit");
    let done = a_api
        .wait_status(&second, "completed", Duration::from_secs(30))
        .await
        .expect("the next job completes");
    assert_eq!(
        done["result"]["translation"],
        expected_translation(&chunks).as_str()
    );
    let cancelled = b_api.job(&first).await.expect("job");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(
        provider.most_in_flight(),
        1,
        "the cancelled job's call on {runner} was still running when the next job's began"
    );

    // Webhooks: every job's terminal event is delivered once, whichever
    // node ran it and however many nodes look for due deliveries.
    let (hook, got) = receiver().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let api = if i % 2 == 0 { &a_api } else { &b_api };
        let (status, body, _) = api
            .post_job(
                &json!({"sourceText": format!("ཀ་ཁ་ག། hook{i}"), "config": {"callbackUrl": hook}}),
            )
            .await
            .expect("submit");
        assert_eq!(status, 202, "{body}");
        ids.push(body["jobId"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        a_api
            .wait_for(id, Duration::from_secs(60), |j| {
                j["callback"]["status"] == "delivered"
            })
            .await
            .expect("delivered");
    }
    // Both nodes poll for due deliveries five times a second: a second
    // more would show a second delivery.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = got.lock().expect("inbox").clone();
    for id in &ids {
        let n = got.iter().filter(|e| e["jobId"] == id.as_str()).count();
        assert_eq!(n, 1, "job {id}'s event was delivered {n} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_limits_hold_across_nodes() {
    let db = Cluster::get().fresh_database();
    // The provider admits anything: what it saw is what the nodes sent.
    let provider = LimitedProvider::start(ProviderLimits {
        rpm: 1_000_000,
        concurrent: 1000,
        burst_secs: 60.0,
        latency_ms: (30, 60),
        retry_after_secs: 1,
    })
    .await;
    // Six jobs may run in the deployment, but the provider's limits allow
    // two calls at once and 600 a minute, whichever node makes them.
    let env = [("LOTSAWA_LIMITS", "openai:fake-model rpm=600 concurrent=2")];
    let a = Server::start_at(Path::new(&db), &provider.base_url_for("a"), 6, &env);
    let b = Server::start_at(Path::new(&db), &provider.base_url_for("b"), 6, &env);
    let mut jobs = Vec::new();
    for j in 0..12 {
        let (text, chunks, size) = numbered_text(&format!("lim{j:02}-"), 4);
        let api = if j % 2 == 0 { &a.api } else { &b.api };
        let id = api
            .submit(&text, json!({"chunkSize": size}))
            .await
            .expect("submit");
        jobs.push((id, chunks));
    }
    for (id, chunks) in &jobs {
        let job = a
            .api
            .wait_status(id, "completed", Duration::from_secs(120))
            .await
            .expect("completed");
        assert_eq!(
            job["result"]["translation"],
            expected_translation(chunks).as_str()
        );
    }
    let calls = provider.calls();
    let nodes: std::collections::HashSet<&str> = calls.iter().map(|c| c.node.as_str()).collect();
    assert_eq!(nodes.len(), 2, "both nodes called the provider: {nodes:?}");
    assert!(
        provider.most_in_flight() <= 2,
        "{} calls at once across the nodes; the limit is 2",
        provider.most_in_flight()
    );
    // 10 a second, and a bucket of one second's rate.
    let most = provider.most_accepted_within(Duration::from_secs(1));
    assert!(
        most <= 21,
        "{most} calls within a second; the limit allows 20"
    );
}
