//! The black-box API suite against the emulated cloud (`infra/emulate up`:
//! moto with Step Functions executing, the real Lambda functions under
//! `cargo lambda watch`), plus what only the cloud has: duplicate dispatch,
//! retries visible in the execution history, the global concurrency limit
//! and S3 ingest. One emulation serves every case; each case is a test of
//! its own (libtest-mimic), so a failure does not hide the cases after it.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use lotsawa_apitests::harness::{self, Deployment};
use lotsawa_apitests::suite::{self, Ctx, JOB_TIMEOUT, Target, numbered_text};
use lotsawa_apitests::{Api, FakeProvider};
use serde_json::{Value, json};

struct Emulation {
    dir: tempfile::TempDir,
    vars: std::collections::HashMap<String, String>,
    /// A case failed: the logs are shown when the emulation stops.
    failed: bool,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Emulation {
    fn up(provider: &FakeProvider) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(root().join("infra/emulate"))
            .arg("up")
            .env("LOTSAWA_EMULATE_DIR", dir.path())
            .env("OPENAI_BASE_URL", provider.base_url())
            .env("LOTSAWA_ENGINE", "openai")
            .env("LOTSAWA_MODEL", "fake-model")
            .env("LOTSAWA_CONCURRENCY", "3")
            .env("LOTSAWA_RETRY_DELAYS", "1,1,1")
            // Small segments: every job of more than 2 chunks hands its run
            // over to new executions.
            .env("LOTSAWA_CHUNKS_PER_EXECUTION", "2")
            .env("LOTSAWA_LOG", "warn")
            // No invocation in this suite takes more than a few seconds.
            .env("LOTSAWA_EMULATE_INVOKE_TIMEOUT", "30")
            // The webhook receivers of the tests listen on loopback.
            .env("LOTSAWA_WEBHOOK_ALLOW", "127.0.0.1")
            .env("LOTSAWA_WEBHOOK_RETRY_BASE_MS", "1000")
            .env_remove("OPENAI_API_KEY")
            .output()
            .expect("run infra/emulate up");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let em = Self {
            vars: stdout
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            dir,
            failed: false,
        };
        assert!(
            out.status.success(),
            "infra/emulate up failed:\n{}\n{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        em
    }

    fn var(&self, k: &str) -> &str {
        self.vars
            .get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {k} from emulate"))
    }

    async fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(self.var("AWS_ENDPOINT_URL"))
            .region(aws_config::Region::new("us-east-1"))
            // IAM is enforced: the tests act as the emulation's administrator.
            .credentials_provider(aws_sdk_sfn::config::Credentials::new(
                self.var("AWS_ACCESS_KEY_ID"),
                self.var("AWS_SECRET_ACCESS_KEY"),
                None,
                None,
                "emulate",
            ))
            .load()
            .await
    }
}

/// A log line cut to a readable length.
fn clip(line: &str) -> String {
    line.chars().take(400).collect()
}

impl Drop for Emulation {
    fn drop(&mut self) {
        // How often the emulator itself needed help (seen with --nocapture).
        let read =
            |log: &str| std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default();
        let lines_with = |log: &str, what: &str| -> Vec<String> {
            read(log)
                .lines()
                .filter(|l| l.contains(what))
                .map(clip)
                .collect()
        };
        let repeated = lines_with("poll.log", "invocation failed");
        let restarted = lines_with("lambda.log", "the runtime loop ended");
        eprintln!(
            "emulation: {} SQS deliveries repeated after a failed or lost invocation, {} runtime loops restarted",
            repeated.len(),
            restarted.len(),
        );
        for line in repeated.iter().chain(&restarted).take(10) {
            eprintln!("  {line}");
        }
        if self.failed || std::thread::panicking() {
            // The emulation's logs die with its temporary directory: show
            // their ends so a failure in CI can be understood.
            for log in ["lambda.log", "poll.log", "moto.log"] {
                let text = read(log);
                let lines: Vec<&str> = text.lines().collect();
                let alarming: Vec<&&str> = lines
                    .iter()
                    .filter(|l| {
                        let l = l.to_ascii_lowercase();
                        (l.contains("error")
                            || l.contains("warn")
                            || l.contains("panicked")
                            || l.contains("killed")
                            || l.contains("exited"))
                            && !l.contains("aws_lambda_max_concurrency")
                    })
                    .collect();
                eprintln!("---- errors and warnings in {log} (last 30) ----");
                for l in &alarming[alarming.len().saturating_sub(30)..] {
                    eprintln!("{}", clip(l));
                }
                eprintln!("---- last lines of {log} ----");
                for l in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{}", clip(l));
                }
            }
        }
        let _ = Command::new(root().join("infra/emulate"))
            .arg("down")
            .env("LOTSAWA_EMULATE_DIR", self.dir.path())
            .status();
    }
}

/// Submit `n` numbered one-line chunks and wait until the job is processing.
async fn start_job(api: &Api, tag: &str, n: usize) -> String {
    let (text, _, size) = numbered_text(tag, n);
    let id = api
        .submit(&text, json!({"chunkSize": size}))
        .await
        .expect("submit");
    api.wait_for(&id, JOB_TIMEOUT, |j| j["status"] == "processing")
        .await
        .expect("starts");
    id
}

async fn executions_of(sfn: &aws_sdk_sfn::Client, arn: &str, job: &str) -> Vec<String> {
    let out = sfn
        .list_executions()
        .state_machine_arn(arn)
        .max_results(1000)
        .send()
        .await
        .expect("list executions");
    out.executions()
        .iter()
        .filter(|e| e.name().starts_with(job))
        .map(|e| e.execution_arn().to_owned())
        .collect()
}

/// The emulated cloud under test, and the clients the cloud-only cases use.
struct Cloud {
    ctx: Ctx,
    em: Emulation,
    sfn: aws_sdk_sfn::Client,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    sm: String,
}

impl Deployment for Cloud {
    fn ctx(&self) -> &Ctx {
        &self.ctx
    }
    fn finish(self: Box<Self>, failed: bool) {
        let mut em = self.em;
        em.failed = failed;
        drop(em);
    }
}

fn setup(rt: &tokio::runtime::Runtime) -> Cloud {
    let provider = rt.block_on(FakeProvider::start());
    let em = Emulation::up(&provider);
    let api = Api::new(em.var("API_URL"), em.var("STREAM_URL")).with_key(em.var("API_KEY"));
    let sdk = rt.block_on(em.sdk());
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    Cloud {
        sfn: aws_sdk_sfn::Client::new(&sdk),
        sqs: aws_sdk_sqs::Client::new(&sdk),
        s3,
        sm: em.var("STATE_MACHINE_ARN").to_owned(),
        ctx: Ctx {
            api,
            provider,
            target: Target::Cloud,
            concurrency: 3,
        },
        em,
    }
}

/// An object under results/, waited for until `deadline`.
async fn wait_result(c: &Cloud, key: &str, deadline: Instant) -> String {
    loop {
        if let Some(t) = read_result(c, key).await {
            return t;
        }
        assert!(Instant::now() < deadline, "no {key} in time");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// An object under results/, when it is there.
async fn read_result(c: &Cloud, key: &str) -> Option<String> {
    let bucket = c.em.var("BUCKET");
    let out =
        c.s3.get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .ok()?;
    let bytes = out.body.collect().await.ok()?.into_bytes();
    String::from_utf8(bytes.to_vec()).ok()
}

/// A transient failure is retried by Step Functions: visible in the history.
async fn retries_visible_in_the_execution_history(c: &Cloud) {
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
/// A duplicate dispatch message starts no second execution; a long run continues in segments.
async fn a_duplicate_dispatch_starts_no_second_execution(c: &Cloud) {
    let api = &c.ctx.api;
    let provider = &c.ctx.provider;
    let sfn = &c.sfn;
    let sqs = &c.sqs;
    let sm = c.sm.as_str();
    provider.set_delay_ms(300);
    let id = start_job(api, "dup-", 3).await;
    sqs.send_message()
        .queue_url(c.em.var("JOB_QUEUE_URL"))
        .message_body(json!({"jobId": id, "generation": 1, "segment": 0}).to_string())
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
async fn the_concurrency_limit_holds(c: &Cloud) {
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
async fn an_ended_execution_fails_its_job_and_frees_its_slot(c: &Cloud) {
    let api = &c.ctx.api;
    let provider = &c.ctx.provider;
    let sfn = &c.sfn;
    let sm = c.sm.as_str();
    // An execution that ends outside the worker (here: stopped behind the
    // API's back, as a timeout would end it) fails its job and frees its slot.
    provider.set_delay_ms(1500);
    let id = start_job(api, "reap-", 4).await;
    // The dispatcher claims the job (it shows `processing`) before it starts
    // the execution.
    let deadline = Instant::now() + Duration::from_secs(30);
    let arn = loop {
        if let Some(arn) = executions_of(sfn, sm, &id).await.into_iter().next() {
            break arn;
        }
        assert!(Instant::now() < deadline, "no execution for job {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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
/// S3 ingest: uploads become jobs, results land under results/.
async fn uploads_become_jobs_and_results(c: &Cloud) {
    let api = &c.ctx.api;
    let provider = &c.ctx.provider;
    let s3 = &c.s3;
    // S3 ingest: a URL-encoded key under incoming/ becomes a job and its
    // result lands under results/; a non-UTF-8 object becomes a failed job.
    provider.set_delay_ms(0);
    let bucket = c.em.var("BUCKET");
    s3.put_object()
        .bucket(bucket)
        .key("incoming/my verse ཀ.txt")
        .body("ingest ཀ་ཁ་ག་ང།".as_bytes().to_vec().into())
        .send()
        .await
        .expect("upload");
    s3.put_object()
        .bucket(bucket)
        .key("incoming/binary.bin")
        .body(vec![0xff, 0xfe, 0x00].into())
        .send()
        .await
        .expect("upload");
    let deadline = Instant::now() + Duration::from_secs(90);
    let text = wait_result(c, "results/my verse ཀ.txt.en.txt", deadline).await;
    assert_eq!(
        text,
        lotsawa_apitests::provider::fake_translation("ingest ཀ་ཁ་ག་ང།")
    );
    let record: serde_json::Value = serde_json::from_str(
        &read_result(c, "results/my verse ཀ.txt.json")
            .await
            .expect("record"),
    )
    .expect("json");
    assert_eq!(record["status"], "completed", "{record}");
    let failed = wait_result(c, "results/binary.bin.json", deadline).await;
    let failed: serde_json::Value = serde_json::from_str(&failed).expect("json");
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("not UTF-8")),
        "{failed}"
    );
    let id = failed["jobId"].as_str().expect("job id");
    assert_eq!(api.job(id).await.expect("job")["status"], "failed");

    // A PDF upload becomes a job on its text, with its pages; a scan a
    // failed record that says OCR is needed.
    use lotsawa_apitests::pdfgen::{self, Doc, Font, Producer};
    for (name, bytes) in [
        (
            "incoming/sutra.pdf",
            pdfgen::pdf(Doc::MultiPage, Font::TibetanMachine, Producer::Chromium),
        ),
        ("incoming/scan.pdf", pdfgen::scanned_pdf()),
    ] {
        s3.put_object()
            .bucket(bucket)
            .key(name)
            .body(bytes.into())
            .send()
            .await
            .expect("upload");
    }
    wait_result(c, "results/sutra.pdf.en.txt", deadline).await;
    let record: serde_json::Value = serde_json::from_str(
        &read_result(c, "results/sutra.pdf.json")
            .await
            .expect("record"),
    )
    .expect("json");
    assert_eq!(record["status"], "completed", "{record}");
    let job = api
        .job(record["jobId"].as_str().expect("job id"))
        .await
        .expect("job");
    assert!(job["sourcePages"].is_array(), "{job}");
    let scan: serde_json::Value =
        serde_json::from_str(&wait_result(c, "results/scan.pdf.json", deadline).await)
            .expect("json");
    assert_eq!(scan["status"], "failed", "{scan}");
    assert!(
        scan["error"].as_str().is_some_and(|e| e.contains("OCR")),
        "{scan}"
    );
}
/// Cancelling an uploaded job writes its record.
async fn cancelling_an_upload_writes_its_record(c: &Cloud) {
    let api = &c.ctx.api;
    let provider = &c.ctx.provider;
    let s3 = &c.s3;
    // Cancelling an uploaded job writes its record (status cancelled) and no
    // translation under results/.
    let bucket = c.em.var("BUCKET");
    provider.set_delay_ms(1500);
    let (text, _, _) = numbered_text("cancel-upload-", 200);
    s3.put_object()
        .bucket(bucket)
        .key("incoming/cancel me.txt")
        .body(text.into_bytes().into())
        .send()
        .await
        .expect("put");
    // The upload's job, as its pending record names it (another test's job
    // may be processing too), once it runs.
    let deadline = Instant::now() + JOB_TIMEOUT;
    let id = loop {
        let record = read_result(c, "results/cancel me.txt.json")
            .await
            .and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok());
        if let Some(id) = record.as_ref().and_then(|r| r["jobId"].as_str()) {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "the upload made no job");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    api.wait_for(&id, JOB_TIMEOUT, |j| j["status"] == "processing")
        .await
        .expect("the upload's job runs");
    let (status, _, body) = api
        .request(reqwest::Method::DELETE, &format!("/api/jobs/{id}"))
        .await
        .expect("cancel");
    assert_eq!(status, 200, "{body}");
    let record: serde_json::Value = serde_json::from_str(
        &read_result(c, "results/cancel me.txt.json")
            .await
            .expect("record"),
    )
    .expect("json");
    assert_eq!(record["status"], "cancelled", "{record}");
    assert_eq!(record["jobId"], id.as_str(), "{record}");
    assert!(
        read_result(c, "results/cancel me.txt.en.txt")
            .await
            .is_none()
    );
    provider.set_delay_ms(0);
}
/// An uploaded job whose execution ends outside the worker (stopped, as a
/// timeout would end it) is settled by the dispatcher, which writes its
/// record: `results/<name>.json` says failed, not the "pending" written
/// when it was created.
async fn a_settled_upload_writes_its_record(c: &Cloud) {
    let api = &c.ctx.api;
    let provider = &c.ctx.provider;
    let bucket = c.em.var("BUCKET");
    provider.set_delay_ms(1500);
    let (text, _, _) = numbered_text("settled-upload-", 50);
    c.s3.put_object()
        .bucket(bucket)
        .key("incoming/settled.txt")
        .body(text.into_bytes().into())
        .send()
        .await
        .expect("put");
    let deadline = Instant::now() + JOB_TIMEOUT;
    let id = loop {
        let record = read_result(c, "results/settled.txt.json")
            .await
            .and_then(|r| serde_json::from_str::<Value>(&r).ok());
        if let Some(id) = record.as_ref().and_then(|r| r["jobId"].as_str()) {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "the upload made no job");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let arn = loop {
        if let Some(arn) = executions_of(&c.sfn, &c.sm, &id).await.into_iter().next() {
            break arn;
        }
        assert!(Instant::now() < deadline, "no execution for job {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    c.sfn
        .stop_execution()
        .execution_arn(&arn)
        .send()
        .await
        .expect("stop");
    api.wait_status(&id, "failed", JOB_TIMEOUT)
        .await
        .expect("the job fails");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let record = read_result(c, "results/settled.txt.json")
            .await
            .and_then(|r| serde_json::from_str::<Value>(&r).ok())
            .unwrap_or_default();
        if record["status"] == "failed" {
            assert_eq!(record["jobId"], id.as_str(), "{record}");
            assert!(
                record["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("execution ended")),
                "{record}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the record still says {record}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    provider.set_delay_ms(0);
}

/// The workers' counters reach /metrics.
async fn worker_counters_reach_metrics(c: &Cloud) {
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
        .input(json!({"jobId": job, "generation": 1, "segment": 0}).to_string())
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

/// S3 and SQS deliver at least once: the same upload event delivered twice
/// makes one job; an object over the size limit becomes a failed job that
/// says so; two uploads that differ only in their extension keep separate
/// results.
async fn repeated_upload_events_make_one_job(c: &Cloud) {
    let (api, s3, sqs) = (&c.ctx.api, &c.s3, &c.sqs);
    let bucket = c.em.var("BUCKET");
    let key = "incoming/twice.txt";
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body("twice ཀ་ཁ།".as_bytes().to_vec().into())
        .send()
        .await
        .expect("upload");
    // Wait for the upload's own event to be handled.
    let deadline = Instant::now() + Duration::from_secs(90);
    wait_result(c, "results/twice.txt.en.txt", deadline).await;
    let newest =
        |page: &serde_json::Value, i: usize| page["jobs"][i]["id"].as_str().map(str::to_owned);
    let (_, _, before) = api
        .request(reqwest::Method::GET, "/api/jobs?limit=5")
        .await
        .expect("list");
    // The same event, delivered twice more.
    let event = json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-01T00:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:TEST"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {},
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket},
               "object": {"key": "incoming/twice.txt", "size": 17, "sequencer": "00TESTSEQ"}}
    }]});
    for _ in 0..2 {
        sqs.send_message()
            .queue_url(c.em.var("INGEST_QUEUE_URL"))
            .message_body(event.to_string())
            .send()
            .await
            .expect("redeliver");
    }
    let id = lotsawa_core::JobId::derived(&format!("s3://{bucket}/{key}@00TESTSEQ")).to_string();
    // The ingest queue is polled: the job appears once the event is handled.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, _, _) = api
            .request(reqwest::Method::GET, &format!("/api/jobs/{id}"))
            .await
            .expect("get");
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the redelivered event made no job"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let job = api
        .wait_status(&id, "completed", JOB_TIMEOUT)
        .await
        .expect("the redelivered event's job completes");
    assert_eq!(job["id"], id.as_str());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, _, after) = api
        .request(reqwest::Method::GET, "/api/jobs?limit=5")
        .await
        .expect("list");
    // One new job, the event's; the one before it is the newest from before.
    assert_eq!(newest(&after, 0).as_deref(), Some(id.as_str()), "{after}");
    assert_eq!(
        newest(&after, 1),
        newest(&before, 0),
        "two deliveries made one job: {after}"
    );

    // Too large: a failed job that says why, without reading the object.
    let big = vec![b'a'; 1024 * 1024 + 1];
    s3.put_object()
        .bucket(bucket)
        .key("incoming/big.txt")
        .body(big.into())
        .send()
        .await
        .expect("upload");
    let deadline = Instant::now() + Duration::from_secs(90);
    let record = wait_result(c, "results/big.txt.json", deadline).await;
    let record: serde_json::Value = serde_json::from_str(&record).expect("json");
    assert_eq!(record["status"], "failed", "{record}");
    assert!(
        record["error"]
            .as_str()
            .is_some_and(|e| e.contains("uploads may be at most")),
        "{record}"
    );
}

/// A job id for a state-machine-only run.
fn uuid_like(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

async fn one_attempt(c: &Cloud) {
    max_attempts_are_honoured(c, 1).await;
}

async fn five_attempts(c: &Cloud) {
    max_attempts_are_honoured(c, 5).await;
}

type Step = lotsawa_apitests::harness::Extra<Cloud>;

/// Keys and tenants on the deployed functions: no key is 401 (API
/// Gateway's own answer before the api function, the stream function's
/// problem), a wrong key 403 at API Gateway (the authorizer's denial) and
/// 401 at the stream function; another tenant's job is 404 at get, cancel,
/// retry and stream, and absent from its lists.
async fn tenants_are_isolated(c: &Cloud) {
    let api = &c.ctx.api;
    let other =
        Api::new(c.em.var("API_URL"), c.em.var("STREAM_URL")).with_key(c.em.var("API_KEY_OTHER"));
    let anonymous = Api::new(c.em.var("API_URL"), c.em.var("STREAM_URL"));
    let id = api
        .submit("ཀ་ཁ་ག། tenants", json!({"engine": "echo"}))
        .await
        .expect("submit");
    let job = format!("{}/api/jobs/{id}", api.base);
    let stream = format!("{}/api/jobs/{id}/stream", api.stream_base);
    let status = |r: reqwest::Response| r.status().as_u16();
    // The key with its last character changed (to another one: a key
    // ending in 0 would otherwise be sent unchanged).
    let key = c.em.var("API_KEY");
    let last = if key.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &key[..key.len() - 1]);
    for (url, what, wrong_key_status) in [
        (format!("{}/api/jobs", api.base), "list", 403),
        (job.clone(), "get", 403),
        (stream.clone(), "stream", 401),
    ] {
        let r = anonymous.http.get(&url).send().await.expect("request");
        assert_eq!(status(r), 401, "{what} without a key");
        let r = anonymous
            .http
            .get(&url)
            .bearer_auth(&wrong)
            .send()
            .await
            .expect("request");
        assert_eq!(status(r), wrong_key_status, "{what} with a wrong key");
    }
    assert_eq!(status(api.http.get(&job).send().await.expect("get")), 200);
    assert_eq!(status(other.http.get(&job).send().await.expect("get")), 404);
    assert_eq!(
        status(other.http.delete(&job).send().await.expect("cancel")),
        404
    );
    assert_eq!(
        status(
            other
                .http
                .post(format!("{job}/retry"))
                .send()
                .await
                .expect("retry")
        ),
        404
    );
    assert_eq!(
        status(other.http.get(&stream).send().await.expect("stream")),
        404
    );
    let list: Value = other
        .http
        .get(format!("{}/api/jobs?limit=100", api.base))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert!(
        list["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().all(|j| j["id"] != id.as_str())),
        "{list}"
    );
    api.wait_status(&id, "completed", JOB_TIMEOUT)
        .await
        .expect("the owner's job completes");
}

/// Clients acting with credentials of one of the template's roles (the
/// administrator assumes it, as Lambda does for a function).
async fn as_role(c: &Cloud, role: &str) -> aws_config::SdkConfig {
    let admin = c.em.sdk().await;
    let provider = aws_config::sts::AssumeRoleProvider::builder(c.em.var(&format!("ROLE_{role}")))
        .session_name("lotsawa-test")
        .configure(&admin)
        .build()
        .await;
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(c.em.var("AWS_ENDPOINT_URL"))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(provider)
        .load()
        .await
}

/// IAM is enforced with each function's own role, from the template's
/// policies: a call a role's policies allow passes, one they do not allow
/// is refused as AWS refuses it (the authorizer may read keys but write
/// nothing; the stream function may not send wake-ups; the worker may not
/// start executions; the state machine's role may not send to the ingest
/// queue).
async fn calls_outside_a_role_are_refused(c: &Cloud) {
    let table = "lotsawa-jobs";
    let key = |pk: &str| {
        [
            (
                "pk".to_owned(),
                aws_sdk_dynamodb::types::AttributeValue::S(pk.into()),
            ),
            (
                "sk".to_owned(),
                aws_sdk_dynamodb::types::AttributeValue::S("X".into()),
            ),
        ]
        .into_iter()
        .collect::<std::collections::HashMap<_, _>>()
    };
    let authorizer = aws_sdk_dynamodb::Client::new(&as_role(c, "AuthorizerFunctionRole").await);
    authorizer
        .get_item()
        .table_name(table)
        .set_key(Some(key("KEY#none")))
        .send()
        .await
        .expect("the authorizer reads keys");
    let refused = authorizer
        .put_item()
        .table_name(table)
        .set_item(Some(key("KEY#forged")))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "the authorizer wrote an item: {refused:?}"
    );
    let admin = aws_sdk_dynamodb::Client::new(&c.em.sdk().await);
    let forged = admin
        .get_item()
        .table_name(table)
        .set_key(Some(key("KEY#forged")))
        .send()
        .await
        .expect("read");
    assert!(forged.item.is_none(), "nothing was written");

    let stream = aws_sdk_sqs::Client::new(&as_role(c, "StreamFunctionRole").await);
    let refused = stream
        .send_message()
        .queue_url(c.em.var("JOB_QUEUE_URL"))
        .message_body("{}")
        .message_group_id("test")
        .message_deduplication_id("test-refused")
        .send()
        .await;
    assert!(
        refused.is_err(),
        "the stream function sent a wake-up: {refused:?}"
    );
    let dispatch = aws_sdk_sqs::Client::new(&as_role(c, "DispatchFunctionRole").await);
    let sent = dispatch
        .get_queue_attributes()
        .queue_url(c.em.var("JOB_QUEUE_URL"))
        .send()
        .await;
    // The dispatcher sends wake-ups but has no other SQS right on the queue
    // (its event source mapping receives for it).
    assert!(
        sent.is_err(),
        "the dispatcher read queue attributes: {sent:?}"
    );

    let worker = aws_sdk_sfn::Client::new(&as_role(c, "WorkerFunctionRole").await);
    let refused = worker
        .start_execution()
        .state_machine_arn(&c.sm)
        .name("refused-start")
        .input("{}")
        .send()
        .await;
    assert!(
        refused.is_err(),
        "the worker started an execution: {refused:?}"
    );

    let states = aws_sdk_sqs::Client::new(&as_role(c, "JobStateMachineRole").await);
    let refused = states
        .send_message()
        .queue_url(c.em.var("INGEST_QUEUE_URL"))
        .message_body("{}")
        .send()
        .await;
    assert!(
        refused.is_err(),
        "the state machine's role sent to the ingest queue: {refused:?}"
    );
}

/// The dashboard through API Gateway in headless Chromium: `GET {ApiUrl}/`
/// renders without a key (page, assets and config are open routes), the
/// page's API calls pass the authorizer with the key it keeps, and a job
/// page opened while the job runs fills in chunk by chunk from the stream
/// function's URL (an EventSource with the key in its query), in order.
async fn the_dashboard_works_through_api_gateway(c: &Cloud) {
    use fantoccini::{ClientBuilder, Locator};
    let api = &c.ctx.api;
    let base = c.em.var("API_URL");
    let root = reqwest::get(format!("{base}/")).await.expect("GET /");
    assert_eq!(root.status().as_u16(), 200, "GET {{ApiUrl}}/ without a key");
    for asset in ["/assets/app.js", "/assets/app.css", "/assets/config.json"] {
        let r = reqwest::get(format!("{base}{asset}")).await.expect("asset");
        assert_eq!(r.status().as_u16(), 200, "{asset} without a key");
    }
    let config: Value = reqwest::get(format!("{base}/assets/config.json"))
        .await
        .expect("config")
        .json()
        .await
        .expect("config json");
    assert_eq!(config["streamUrl"], c.em.var("STREAM_URL"), "{config}");

    let profile = tempfile::tempdir().expect("profile");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let mut driver = Command::new(
        std::env::var("LOTSAWA_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into()),
    )
    .arg(format!("--port={port}"))
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("start chromedriver");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": std::env::var("LOTSAWA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let browser = loop {
        let http = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(http)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(b) => break b,
            Err(e) => {
                assert!(Instant::now() < deadline, "chromedriver did not start: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let outcome = async {
        browser
            .goto(&format!("{base}/"))
            .await
            .expect("open the page");
        // The page asks for a key (keys are required): give it one, as the
        // key dialog does.
        browser
            .find(Locator::Css("#key-input"))
            .await
            .expect("the page asks for a key");
        browser
            .execute(
                "sessionStorage.setItem('lotsawa-key', arguments[0]); return true;",
                vec![json!(c.em.var("API_KEY"))],
            )
            .await
            .expect("keep the key");
        c.ctx.provider.set_delay_ms(700);
        let (text, chunks, size) = numbered_text("dash-", 6);
        let id = api
            .submit(&text, json!({"chunkSize": size}))
            .await
            .expect("submit");
        browser
            .goto(&format!("{base}/jobs/{id}"))
            .await
            .expect("open the job page");
        let script = r#"return Array.from(document.querySelectorAll('[data-chunk]')).map(
            cell => (cell.querySelector('.translation') || {textContent: ''}).textContent);"#;
        let expected: Vec<String> = chunks
            .iter()
            .map(|c| lotsawa_apitests::provider::fake_translation(c))
            .collect();
        let mut partial = 0;
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            let shown: Vec<String> = browser
                .execute(script, vec![])
                .await
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            let filled = shown.iter().take_while(|t| !t.trim().is_empty()).count();
            let any = shown.iter().filter(|t| !t.trim().is_empty()).count();
            assert_eq!(filled, any, "chunks fill in order: {shown:?}");
            for (got, want) in shown.iter().zip(&expected).take(filled) {
                assert_eq!(got.trim(), want.trim());
            }
            if filled > 0 && filled < expected.len() {
                partial += 1;
            }
            if filled == expected.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the job page did not fill in: {shown:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c.ctx.provider.set_delay_ms(0);
        assert!(
            partial >= 2,
            "the page showed the job part done only {partial} times: events arrived in a block"
        );
        eprintln!("dashboard through API Gateway: {partial} partial views before the last chunk");
    }
    .await;
    let _ = browser.close().await;
    let _ = driver.kill();
    let _ = driver.wait();
    outcome
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
async fn lifecycle_events_reach_the_bus_and_its_rules(c: &Cloud) {
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
async fn webhooks_are_signed_retried_and_recorded(c: &Cloud) {
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

const CLOUD_CASES: &[Step] = &[
    ("cloud::calls_outside_a_role_are_refused", |c| {
        Box::pin(calls_outside_a_role_are_refused(c))
    }),
    ("cloud::the_dashboard_works_through_api_gateway", |c| {
        Box::pin(the_dashboard_works_through_api_gateway(c))
    }),
    ("cloud::webhooks_are_signed_retried_and_recorded", |c| {
        Box::pin(webhooks_are_signed_retried_and_recorded(c))
    }),
    ("cloud::lifecycle_events_reach_the_bus_and_its_rules", |c| {
        Box::pin(lifecycle_events_reach_the_bus_and_its_rules(c))
    }),
    ("cloud::tenants_are_isolated", |c| {
        Box::pin(tenants_are_isolated(c))
    }),
    ("cloud::repeated_upload_events_make_one_job", |c| {
        Box::pin(repeated_upload_events_make_one_job(c))
    }),
    ("cloud::max_attempts_1", |c| Box::pin(one_attempt(c))),
    ("cloud::max_attempts_5", |c| Box::pin(five_attempts(c))),
    ("cloud::retries_visible_in_the_execution_history", |c| {
        Box::pin(retries_visible_in_the_execution_history(c))
    }),
    (
        "cloud::a_duplicate_dispatch_starts_no_second_execution",
        |c| Box::pin(a_duplicate_dispatch_starts_no_second_execution(c)),
    ),
    ("cloud::the_concurrency_limit_holds", |c| {
        Box::pin(the_concurrency_limit_holds(c))
    }),
    (
        "cloud::an_ended_execution_fails_its_job_and_frees_its_slot",
        |c| Box::pin(an_ended_execution_fails_its_job_and_frees_its_slot(c)),
    ),
    ("cloud::uploads_become_jobs_and_results", |c| {
        Box::pin(uploads_become_jobs_and_results(c))
    }),
    ("cloud::a_settled_upload_writes_its_record", |c| {
        Box::pin(a_settled_upload_writes_its_record(c))
    }),
    ("cloud::cancelling_an_upload_writes_its_record", |c| {
        Box::pin(cancelling_an_upload_writes_its_record(c))
    }),
    ("cloud::worker_counters_reach_metrics", |c| {
        Box::pin(worker_counters_reach_metrics(c))
    }),
];

fn main() -> ExitCode {
    harness::run(setup, CLOUD_CASES)
}
