//! What leaves the system: worker counters in /metrics, lifecycle events on
//! the bus and its rules, signed webhooks.

use super::*;

/// The workers' counters reach /metrics.
pub(crate) async fn worker_counters_reach_metrics(c: &Cloud) {
    let api = &c.ctx.api;
    // The workers' counters reach /metrics: every kind of attempt the suite
    // caused (successes, the injected 503s and 400, memory hits) is there.
    let (_, _, metrics) = api
        .request(reqwest::Method::GET, "/metrics")
        .await
        .expect("metrics");
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert!(value("lotsawa_chunk_attempts_total{outcome=\"success\"}") >= 10.0);
    assert!(value("lotsawa_chunk_attempts_total{outcome=\"transient_error\"}") >= 2.0);
    assert!(value("lotsawa_chunk_attempts_total{outcome=\"permanent_error\"}") >= 1.0);
    assert!(value("lotsawa_translation_memory_hits_total") >= 1.0);
    let count = value("lotsawa_chunk_duration_seconds_count{engine=\"openai\"}");
    assert_eq!(
        value("lotsawa_chunk_duration_seconds_bucket{engine=\"openai\",le=\"+Inf\"}"),
        count
    );
    assert!(count >= 10.0, "{metrics}");
    eprintln!("cloud metrics: {count} timed openai attempts");
}

/// Read a capture queue (a rule's target) until `done` holds for the
/// events read so far; each event is (DetailType, Detail).
async fn read_events(
    c: &Cloud,
    queue_var: &str,
    done: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let url = c.em.var(queue_var).to_owned();
    let deadline = Instant::now() + JOB_TIMEOUT;
    let mut seen = Vec::new();
    while !done(&seen) {
        assert!(
            Instant::now() < deadline,
            "the events on {queue_var} never made it: {seen:?}"
        );
        let out = c
            .sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive events");
        for m in out.messages() {
            let event: Value = serde_json::from_str(m.body().unwrap_or("{}")).expect("event JSON");
            assert_eq!(event["source"], "lotsawa", "{event}");
            seen.push((
                event["detail-type"].as_str().unwrap_or_default().to_owned(),
                event["detail"].clone(),
            ));
        }
    }
    seen
}

/// Lifecycle events reach the EventBridge bus declared in the template:
/// every event of a completed and of a failed job, and `batch.completed`,
/// on a rule taking them all; only `job.failed` on the template's own
/// rule (its pattern, as written there).
pub(crate) async fn lifecycle_events_reach_the_bus_and_its_rules(c: &Cloud) {
    let api = &c.ctx.api;
    let (text, _, size) = numbered_text("evt-ok-", 1);
    let ok = api
        .submit(&text, json!({"chunkSize": size}))
        .await
        .expect("submit");
    api.wait_status(&ok, "completed", JOB_TIMEOUT)
        .await
        .expect("completes");
    c.ctx.provider.start_outage(400, "0");
    let (text, _, size) = numbered_text("evt-fail-", 1);
    let bad = api
        .submit(&text, json!({"chunkSize": size}))
        .await
        .expect("submit");
    api.wait_status(&bad, "failed", JOB_TIMEOUT)
        .await
        .expect("fails");
    c.ctx.provider.end_outage();
    let (status, body, _) = api
        .post_json(
            "/api/batches",
            &json!({"items": [
                {"sourceText": numbered_text("evt-b1-", 1).0, "name": "one"},
                {"sourceText": numbered_text("evt-b2-", 1).0, "name": "two"},
            ]}),
        )
        .await
        .expect("batch");
    assert_eq!(status, 202, "{body}");
    let batch = body["batchId"].as_str().expect("batch id").to_owned();

    // A standard queue keeps no order: compared sorted.
    let of = |events: &[(String, Value)], id: &str| -> Vec<String> {
        let mut kinds: Vec<String> = events
            .iter()
            .filter(|(_, d)| {
                d["jobId"] == id || d["batchId"] == id && d["type"] == "batch.completed"
            })
            .map(|(t, _)| t.clone())
            .collect();
        kinds.sort();
        kinds
    };
    let all = read_events(c, "EVENTS_QUEUE_ALL", |seen| {
        of(seen, &ok).contains(&"job.completed".to_owned())
            && of(seen, &bad).contains(&"job.failed".to_owned())
            && of(seen, &batch).contains(&"batch.completed".to_owned())
    })
    .await;
    assert_eq!(
        of(&all, &ok),
        vec!["job.completed", "job.created", "job.started"],
        "{} events read",
        all.len()
    );
    assert_eq!(
        of(&all, &bad),
        vec!["job.created", "job.failed", "job.started"],
        "{} events read",
        all.len()
    );
    let failed = all
        .iter()
        .find(|(t, d)| t == "job.failed" && d["jobId"] == bad.as_str())
        .map(|(_, d)| d.clone())
        .expect("the failed event");
    assert_eq!(failed["errorCode"], "provider_rejected", "{failed}");
    assert_eq!(failed["tenant"], "emulate", "{failed}");
    assert!(
        failed.get("sourceText").is_none() && failed.get("result").is_none(),
        "never the texts: {failed}"
    );
    let done = all
        .iter()
        .find(|(t, d)| t == "batch.completed" && d["batchId"] == batch.as_str())
        .map(|(_, d)| d.clone())
        .expect("the batch event");
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["counts"]["completed"], 2, "{done}");

    let routed = read_events(c, "EVENTS_QUEUE_JOBFAILEDRULE", |seen| {
        seen.iter().any(|(_, d)| d["jobId"] == bad.as_str())
    })
    .await;
    assert!(
        routed.iter().all(|(t, _)| t == "job.failed"),
        "the template's rule takes job.failed only: {routed:?}"
    );
    assert!(
        routed.iter().all(|(_, d)| d["jobId"] != ok.as_str()),
        "{routed:?}"
    );
}

/// Signed webhooks in the cloud: the store queues the delivery with the
/// job's end, the webhooks function signs it with the secret from Secrets
/// Manager and retries a receiver's 500 after its backoff; the job shows
/// the outcome. A private address is refused at submission.
pub(crate) async fn webhooks_are_signed_retried_and_recorded(c: &Cloud) {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let api = &c.ctx.api;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let (text, _, size) = numbered_text("hook-", 1);
    let id = api
        .submit(
            &text,
            json!({"chunkSize": size, "callbackUrl": format!("{}/hook", receiver.uri())}),
        )
        .await
        .expect("submit with a callback");
    api.wait_status(&id, "completed", JOB_TIMEOUT)
        .await
        .expect("completes");
    let job = api
        .wait_for(&id, JOB_TIMEOUT, |j| j["callback"]["status"] == "delivered")
        .await
        .expect("the callback is delivered");
    assert_eq!(job["callback"]["attempts"], 2, "{job}");
    assert!(job["callback"]["deliveredAt"].is_string(), "{job}");
    let requests = receiver.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 2, "one 500, then the retry");
    let secret = c.em.var("WEBHOOK_SECRET").as_bytes().to_vec();
    for r in &requests {
        let sig = r
            .headers
            .get("lotsawa-signature")
            .and_then(|v| v.to_str().ok())
            .expect("signed");
        let now = chrono_now();
        lotsawa_core::webhook::verify(&secret, sig, &r.body, now, 300)
            .expect("the signature checks out with the deployment's secret");
        let event: Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(event["type"], "job.completed", "{event}");
        assert_eq!(event["jobId"], id.as_str(), "{event}");
        assert_eq!(
            r.headers.get("lotsawa-event").and_then(|v| v.to_str().ok()),
            Some("job.completed")
        );
    }
    // A private address is refused when the job is submitted.
    let (status, body, _) = api
        .post_job(&json!({"sourceText": "ཀ་ཁ།", "config": {"callbackUrl": "http://10.0.0.7/hook"}}))
        .await
        .expect("post");
    assert_eq!(status, 400, "{body}");
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
