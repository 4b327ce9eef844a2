//! The state machine and the dispatcher: retries in the execution history,
//! duplicate dispatch, the global concurrency limit, ended executions, and
//! MaxAttempts on the state machine itself.

use super::*;
use aws_sdk_dynamodb::types::AttributeValue;

/// A transient failure is retried by Step Functions: visible in the history.
pub(crate) async fn retries_visible_in_the_execution_history(c: &Cloud) {
    let api = &c.ctx.api;
    let provider = &c.ctx.provider;
    let sfn = &c.sfn;
    let sm = c.sm.as_str();
    provider.set_delay_ms(0);
    let flaky = "cloud FAIL503x2 ཀ་ཁ་ག།";
    let id = api
        .submit(flaky, json!({"engine": "openai"}))
        .await
        .expect("submit");
    api.wait_status(&id, "completed", JOB_TIMEOUT)
        .await
        .expect("completes");
    let execs = executions_of(sfn, sm, &id).await;
    assert_eq!(execs.len(), 1, "{execs:?}");
    let history = sfn
        .get_execution_history()
        .execution_arn(&execs[0])
        .max_results(1000)
        .send()
        .await
        .expect("history");
    let failed = history
        .events()
        .iter()
        .filter(|e| e.r#type().as_str() == "TaskFailed")
        .count();
    let waits = history
        .events()
        .iter()
        .filter(|e| e.r#type().as_str() == "WaitStateEntered")
        .count();
    assert_eq!(
        (failed, waits),
        (2, 2),
        "two failed attempts, two backoff waits"
    );
    eprintln!(
        "execution history of a job with 2 transient failures: {failed} TaskFailed, {waits} waits"
    );
}

/// A 429 is answered `throttled`: the state machine waits (its
/// `WaitThrottled` state, no Lambda held) and asks again without spending
/// an attempt: no task fails.
pub(crate) async fn a_429_waits_in_the_state_machine_without_spending_an_attempt(c: &Cloud) {
    let api = &c.ctx.api;
    let provider = &c.ctx.provider;
    provider.set_delay_ms(0);
    let limited = "cloud RATE429 ཀ་ཁ་ག་ང།";
    let id = api
        .submit(limited, json!({"engine": "openai"}))
        .await
        .expect("submit");
    api.wait_status(&id, "completed", JOB_TIMEOUT)
        .await
        .expect("completes");
    assert_eq!(provider.calls_for(limited), 2, "one 429, then the answer");
    // A throttled wait counts toward the segment's history like a retry:
    // the run may continue in a second execution; every one is read.
    let (mut failed, mut throttled_waits) = (0, 0);
    for exec in executions_of(&c.sfn, c.sm.as_str(), &id).await {
        let history = c
            .sfn
            .get_execution_history()
            .execution_arn(&exec)
            .max_results(1000)
            .send()
            .await
            .expect("history");
        failed += history
            .events()
            .iter()
            .filter(|e| e.r#type().as_str() == "TaskFailed")
            .count();
        throttled_waits += history
            .events()
            .iter()
            .filter(|e| e.r#type().as_str() == "WaitStateEntered")
            .filter(|e| {
                e.state_entered_event_details()
                    .is_some_and(|d| d.name() == "WaitThrottled")
            })
            .count();
    }
    assert_eq!(
        (failed, throttled_waits),
        (0, 1),
        "no failed task, one throttled wait"
    );
    // The 429 reached the limiter the workers share in the table: it
    // paused the engine for all of them, and no lease is left.
    let item = c
        .ddb
        .get_item()
        .table_name(c.em.var("TABLE"))
        .key("pk", AttributeValue::S("LIMIT#openai:fake-model".into()))
        .key("sk", AttributeValue::S("STATE".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("limiter item")
        .item
        .expect("the limiter's item");
    let state: serde_json::Value = item
        .get("state")
        .and_then(|v| v.as_s().ok())
        .and_then(|s| serde_json::from_str(s).ok())
        .expect("the limiter's state");
    assert!(state["paused_until_ms"].as_i64() > Some(0), "{state}");
    assert_eq!(state["leases"], json!([]), "{state}");
}

/// A duplicate dispatch message starts no second execution; a long run continues in segments.
pub(crate) async fn a_duplicate_dispatch_starts_no_second_execution(c: &Cloud) {
    let api = &c.ctx.api;
    let provider = &c.ctx.provider;
    let sfn = &c.sfn;
    let sqs = &c.sqs;
    let sm = c.sm.as_str();
    provider.set_delay_ms(300);
    let id = start_job(api, "dup-", 3).await;
    sqs.send_message()
        .queue_url(c.em.var("JOB_QUEUE_URL"))
        .message_body(json!({"jobId": id, "run": 1, "segment": 0}).to_string())
        .message_group_id("jobs")
        .message_deduplication_id(format!("{id}-duplicate"))
        .send()
        .await
        .expect("duplicate message");
    api.wait_status(&id, "completed", JOB_TIMEOUT)
        .await
        .expect("completes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let execs = executions_of(sfn, sm, &id).await;
    let first = execs
        .iter()
        .filter(|a| a.ends_with(&format!("{id}-1-0")))
        .count();
    assert_eq!(first, 1, "one execution per run segment: {execs:?}");
    // 3 chunks, 2 per execution: the run continued in a second execution.
    assert_eq!(execs.len(), 2, "segments: {execs:?}");
    assert_eq!(
        api.job(&id).await.expect("job")["result"]["translation"],
        suite::expected_translation(&numbered_text("dup-", 3).1).as_str()
    );
}

/// The concurrency limit holds across the deployment.
pub(crate) async fn the_concurrency_limit_holds(c: &Cloud) {
    let api = &c.ctx.api;
    let provider = &c.ctx.provider;
    let sfn = &c.sfn;
    let sm = c.sm.as_str();
    provider.set_delay_ms(250);
    let mut ids = Vec::new();
    for j in 0..6 {
        let (text, _, size) = numbered_text(&format!("conc{j}-"), 2);
        ids.push(
            api.submit(&text, json!({"chunkSize": size}))
                .await
                .expect("submit"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut max_processing = 0;
    loop {
        let (_, _, page) = api
            .request(
                reqwest::Method::GET,
                "/api/jobs?status=processing&limit=100",
            )
            .await
            .expect("list");
        max_processing = max_processing.max(page["jobs"].as_array().map(Vec::len).unwrap_or(0));
        let mut unfinished = Vec::new();
        for id in &ids {
            let job = api.job(id).await.expect("job");
            if job["status"] != "completed" {
                unfinished.push(job);
            }
        }
        if unfinished.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let mut execs = Vec::new();
            for j in &unfinished {
                let id = j["id"].as_str().unwrap_or_default();
                execs.push(executions_of(sfn, sm, id).await);
            }
            panic!("jobs did not finish: {unfinished:?}\nexecutions: {execs:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        (1..=3).contains(&max_processing),
        "{max_processing} jobs processing with a limit of 3"
    );
    eprintln!("concurrency: at most {max_processing} of 6 jobs processing (limit 3)");
}

/// An execution ended outside the worker fails its job and frees its slot.
pub(crate) async fn an_ended_execution_fails_its_job_and_frees_its_slot(c: &Cloud) {
    let api = &c.ctx.api;
    let provider = &c.ctx.provider;
    let sfn = &c.sfn;
    // An execution that ends outside the worker (here: stopped behind the
    // API's back, as a timeout would end it) fails its job and frees its slot.
    provider.set_delay_ms(1500);
    let id = start_job(api, "reap-", 4).await;
    // The dispatcher claims the job (it shows `processing`) before it starts
    // the execution.
    let arn = first_execution(c, &id, Duration::from_secs(30)).await;
    sfn.stop_execution()
        .execution_arn(&arn)
        .send()
        .await
        .expect("stop");
    let job = api
        .wait_status(&id, "failed", JOB_TIMEOUT)
        .await
        .expect("the job fails");
    // AWS reports a stopped execution as ABORTED; moto's interpreter thread,
    // when it ends after the stop (seen on a loaded machine), can record it
    // as FAILED instead. Either way the job must fail with that status.
    assert!(
        job["error"].as_str().is_some_and(|e| {
            e.contains("execution ended as ABORTED") || e.contains("execution ended as FAILED")
        }),
        "{job}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, metrics) = api
            .request(reqwest::Method::GET, "/metrics")
            .await
            .expect("metrics");
        if metrics
            .as_str()
            .is_some_and(|m| m.contains("lotsawa_slots_in_use 0"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "slots not released: {metrics}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Run the state machine with `max_attempts`, its worker tasks answered by
/// this test on a queue of its own: every chunk attempt fails transiently.
/// The chunk must be tried exactly `max_attempts` times and the run end in
/// the fail task; a failure the fail task recorded ends the execution
/// SUCCEEDED (an ordinary job failure must not trip the ExecutionsFailed
/// alarm), never FAILED and never `States.Runtime`.
async fn max_attempts_are_honoured(c: &Cloud, max_attempts: u32) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let queue = c
        .sqs
        .create_queue()
        .queue_name(format!("lotsawa-test-attempts-{max_attempts}"))
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("queue url");
    let mut definition =
        std::fs::read_to_string(root.join("infra/statemachine/job.asl.json")).expect("asl");
    for (k, v) in [
        ("WorkerQueueUrl", queue.as_str()),
        ("JobQueueUrl", queue.as_str()),
        ("MaxAttempts", &max_attempts.to_string()),
        ("RetryDelay1", "1"),
        ("RetryDelay2", "1"),
        ("RetryDelay3", "1"),
        ("ChunksPerExecution", "1000"),
        ("Partition", "aws"),
    ] {
        definition = definition.replace(&format!("${{{k}}}"), v);
    }
    assert!(!definition.contains("${"), "unsubstituted: {definition}");
    let sm = c
        .sfn
        .create_state_machine()
        .name(format!("lotsawa-test-attempts-{max_attempts}"))
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/lotsawa-states")
        .send()
        .await
        .expect("state machine")
        .state_machine_arn;
    let job = uuid_like(max_attempts);
    let exec = c
        .sfn
        .start_execution()
        .state_machine_arn(&sm)
        .name(format!("attempts-{max_attempts}"))
        .input(json!({"jobId": job, "run": 1, "segment": 0}).to_string())
        .send()
        .await
        .expect("start")
        .execution_arn;
    let (mut chunk_tasks, mut fail_tasks) = (0u32, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = c
            .sfn
            .describe_execution()
            .execution_arn(&exec)
            .send()
            .await
            .expect("describe")
            .status;
        if status.as_str() != "RUNNING" {
            break;
        }
        assert!(Instant::now() < deadline, "the execution did not end");
        let got = c
            .sqs
            .receive_message()
            .queue_url(&queue)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for m in got.messages() {
            let body: serde_json::Value =
                serde_json::from_str(m.body().unwrap_or("{}")).expect("task json");
            let token = body["taskToken"].as_str().expect("token").to_owned();
            match body["action"].as_str() {
                Some("chunk") => {
                    chunk_tasks += 1;
                    c.sfn
                        .send_task_failure()
                        .task_token(&token)
                        .error("Lotsawa.Transient")
                        .cause("injected")
                        .send()
                        .await
                        .expect("answer");
                }
                Some(other) => {
                    fail_tasks.push((other.to_owned(), body["reason"].clone()));
                    c.sfn
                        .send_task_success()
                        .task_token(&token)
                        .output(json!({"state": "failed"}).to_string())
                        .send()
                        .await
                        .expect("answer");
                }
                None => panic!("task without an action: {body}"),
            }
            if let Some(h) = m.receipt_handle() {
                c.sqs
                    .delete_message()
                    .queue_url(&queue)
                    .receipt_handle(h)
                    .send()
                    .await
                    .expect("delete");
            }
        }
    }
    let history = c
        .sfn
        .get_execution_history()
        .execution_arn(&exec)
        .max_results(1000)
        .send()
        .await
        .expect("history");
    let failure = history
        .events()
        .iter()
        .find_map(|e| e.execution_failed_event_details())
        .map(|d| format!("{d:?}"));
    let status = c
        .sfn
        .describe_execution()
        .execution_arn(&exec)
        .send()
        .await
        .expect("describe")
        .status;
    assert_eq!(chunk_tasks, max_attempts, "chunk attempts");
    assert_eq!(
        fail_tasks,
        vec![("fail".to_owned(), json!("transient"))],
        "the run ends in the transient fail task"
    );
    assert_eq!(
        failure, None,
        "a recorded failure does not fail the execution"
    );
    assert_eq!(status.as_str(), "SUCCEEDED");
    eprintln!("MaxAttempts {max_attempts}: {chunk_tasks} attempts, then the fail task");
}

/// A job id for a state-machine-only run.
fn uuid_like(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

pub(crate) async fn one_attempt(c: &Cloud) {
    max_attempts_are_honoured(c, 1).await;
}

pub(crate) async fn five_attempts(c: &Cloud) {
    max_attempts_are_honoured(c, 5).await;
}
