//! Signed webhooks end to end: the real binary delivers a job's terminal
//! event to a receiver in this test (on loopback), signed, retried after
//! the receiver's errors, resumed after a crash; bad callback URLs are
//! refused at submission (checked on the address, without connecting).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use lotsawa_apitests::FakeProvider;
use lotsawa_core::webhook::verify;
use serde_json::{Value, json};

mod support;

use support::{Server, temp_db};

const SECRET: &str = "test-webhook-secret-0123";

/// What the receiver got, and how many requests it still fails.
#[derive(Default)]
struct Inbox {
    got: Vec<(HeaderMap, Vec<u8>)>,
    fail_next: usize,
}

type Shared = Arc<Mutex<Inbox>>;

async fn hook(
    State(inbox): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let mut i = inbox.lock().expect("inbox");
    i.got.push((headers, body.to_vec()));
    if i.fail_next > 0 {
        i.fail_next -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// A receiver on `listener`: its inbox.
fn receiver(listener: tokio::net::TcpListener, fail_first: usize) -> Shared {
    let inbox: Shared = Arc::new(Mutex::new(Inbox {
        got: Vec::new(),
        fail_next: fail_first,
    }));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(inbox.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    inbox
}

fn webhook_env(base_ms: &str) -> Vec<(&'static str, String)> {
    vec![
        ("LOTSAWA_WEBHOOK_SECRET", SECRET.to_owned()),
        ("LOTSAWA_WEBHOOK_RETRY_BASE_MS", base_ms.to_owned()),
    ]
}

fn start(db: &std::path::Path, provider: &FakeProvider, env: &[(&'static str, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start(db, provider, 2, &env)
}

async fn submit(server: &Server, text: &str, callback: &str) -> (u16, Value) {
    let (status, body, _) = server
        .api
        .post_job(&json!({"sourceText": text, "config": {"callbackUrl": callback}}))
        .await
        .expect("submit");
    (status, body)
}

/// Wait until the job's callback reaches `status`; the job.
async fn callback_reaches(server: &Server, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = server.api.job(id).await.expect("job");
        if job["callback"]["status"] == status {
            return job;
        }
        assert!(Instant::now() < deadline, "callback never {status}: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn terminal_events_are_signed_retried_and_shown_on_the_job() {
    let provider = FakeProvider::start().await;
    let (_d, db) = temp_db();
    let server = start(&db, &provider, &webhook_env("50"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    // The receiver fails twice, then takes it.
    let inbox = receiver(listener, 2);

    let (status, body) = submit(&server, "ཀ་ཁ་ག། webhook", &url).await;
    assert_eq!(status, 202, "{body}");
    let id = body["jobId"].as_str().expect("id").to_owned();
    let job = callback_reaches(&server, &id, "delivered").await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["callback"]["attempts"], 3);
    assert!(job["callback"]["deliveredAt"].is_string());
    assert_eq!(job["callbackUrl"], url);

    let got = inbox.lock().expect("inbox").got.clone();
    assert_eq!(got.len(), 3, "two failures and the delivery");
    let now = chrono::Utc::now().timestamp();
    for (headers, body) in &got {
        let sig = headers
            .get("lotsawa-signature")
            .and_then(|v| v.to_str().ok())
            .expect("a signature");
        assert_eq!(verify(SECRET.as_bytes(), sig, body, now, 300), Ok(()));
        assert!(verify(b"another-secret-000000", sig, body, now, 300).is_err());
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        assert_eq!(
            headers.get("lotsawa-event").and_then(|v| v.to_str().ok()),
            Some("job.completed")
        );
        let event: Value = serde_json::from_slice(body).expect("json");
        assert_eq!(event["type"], "job.completed");
        assert_eq!(event["jobId"], id);
        assert_eq!(event["status"], "completed");
        assert!(!String::from_utf8_lossy(body).contains("ཀ་ཁ"), "no texts");
    }
    // The same event each time (fixed when the job ended).
    assert!(got.windows(2).all(|w| w[0].1 == w[1].1));

    // A job that fails sends job.failed with its error code.
    provider.start_outage(400, "0");
    let (_, body) = submit(&server, "ཀ་ཁ་ག། failing", &url).await;
    let failed_id = body["jobId"].as_str().expect("id").to_owned();
    callback_reaches(&server, &failed_id, "delivered").await;
    provider.end_outage();
    let got = inbox.lock().expect("inbox").got.clone();
    let event: Value = serde_json::from_slice(&got.last().expect("event").1).expect("json");
    assert_eq!(event["type"], "job.failed");
    assert_eq!(event["errorCode"], "provider_rejected");
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_ends_failed_after_the_attempts() {
    let provider = FakeProvider::start().await;
    let (_d, db) = temp_db();
    let mut env = webhook_env("20");
    env.push(("LOTSAWA_WEBHOOK_ATTEMPTS", "3".to_owned()));
    let server = start(&db, &provider, &env);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let inbox = receiver(listener, usize::MAX);
    let (_, body) = submit(&server, "ཀ་ཁ་ག། doomed", &url).await;
    let id = body["jobId"].as_str().expect("id").to_owned();
    let job = callback_reaches(&server, &id, "failed").await;
    assert_eq!(job["callback"]["attempts"], 3);
    assert_eq!(
        job["callback"]["lastError"],
        "the receiver answered HTTP 500"
    );
    assert_eq!(inbox.lock().expect("inbox").got.len(), 3);
}

#[tokio::test]
async fn a_pending_delivery_survives_a_crash() {
    let provider = FakeProvider::start().await;
    let (_d, db) = temp_db();
    // A port with nobody listening yet.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    let env = webhook_env("300");
    let server = start(&db, &provider, &env);
    let (_, body) = submit(&server, "ཀ་ཁ་ག། crash", &url).await;
    let id = body["jobId"].as_str().expect("id").to_owned();
    // The first attempt fails (connection refused) and the delivery waits.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = server.api.job(&id).await.expect("job");
        if job["callback"]["attempts"].as_u64().unwrap_or(0) >= 1 {
            assert_eq!(job["callback"]["status"], "pending", "{job}");
            assert_eq!(
                job["callback"]["lastError"],
                "cannot connect to the receiver"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no attempt: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    // The receiver comes up; the server restarts on the same database.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the receiver's port");
    let inbox = receiver(listener, 0);
    let server = start(&db, &provider, &env);
    let job = callback_reaches(&server, &id, "delivered").await;
    assert!(job["callback"]["attempts"].as_u64().unwrap_or(0) >= 2);
    let got = inbox.lock().expect("inbox").got.clone();
    assert_eq!(got.len(), 1, "delivered once after the restart");
}

#[tokio::test]
async fn bad_callback_urls_are_refused_at_submission() {
    let provider = FakeProvider::start().await;
    let (_d, db) = temp_db();
    let server = start(&db, &provider, &webhook_env("50"));
    for (url, part) in [
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://[fd00:ec2::254]/x", "metadata"),
        ("ftp://127.0.0.1/hook", "http or https"),
        ("http://user:pw@127.0.0.1/hook", "credentials"),
        ("not a url", "not a URL"),
    ] {
        let (status, body) = submit(&server, "ཀ་ཁ་ག། refused", url).await;
        assert_eq!(status, 400, "{url}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(part), "{url}: {detail}");
    }
    // Nothing was stored.
    let (_, _, list) = server
        .api
        .request(reqwest::Method::GET, "/api/jobs")
        .await
        .expect("list");
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(0));

    // A server without a secret takes no callback URL.
    let (_d2, db2) = temp_db();
    let plain = start(&db2, &provider, &[]);
    let (status, body) = submit(&plain, "ཀ་ཁ་ག། nosecret", "http://127.0.0.1:9/hook").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("LOTSAWA_WEBHOOK_SECRET")),
        "{body}"
    );
}
