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

mod access;
mod dashboard;
mod events;
mod executions;
mod uploads;

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
            // Every provider call of the suite goes through the limiter the
            // workers share in the table (generous: it never has to wait
            // but for a 429).
            .env("LOTSAWA_LIMITS", "openai:fake-model rpm=60000 concurrent=8")
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

/// The first execution of `job`, waited for until `within` has passed (the
/// dispatcher claims a job, showing it processing, before it starts it).
async fn first_execution(c: &Cloud, job: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(arn) = executions_of(&c.sfn, &c.sm, job).await.into_iter().next() {
            return arn;
        }
        assert!(Instant::now() < deadline, "no execution for job {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    ddb: aws_sdk_dynamodb::Client,
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
        ddb: aws_sdk_dynamodb::Client::new(&sdk),
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

type Step = lotsawa_apitests::harness::Extra<Cloud>;

const CLOUD_CASES: &[Step] = &[
    ("cloud::calls_outside_a_role_are_refused", |c| {
        Box::pin(access::calls_outside_a_role_are_refused(c))
    }),
    ("cloud::the_dashboard_works_through_api_gateway", |c| {
        Box::pin(dashboard::the_dashboard_works_through_api_gateway(c))
    }),
    ("cloud::webhooks_are_signed_retried_and_recorded", |c| {
        Box::pin(events::webhooks_are_signed_retried_and_recorded(c))
    }),
    ("cloud::lifecycle_events_reach_the_bus_and_its_rules", |c| {
        Box::pin(events::lifecycle_events_reach_the_bus_and_its_rules(c))
    }),
    ("cloud::tenants_are_isolated", |c| {
        Box::pin(access::tenants_are_isolated(c))
    }),
    ("cloud::repeated_upload_events_make_one_job", |c| {
        Box::pin(uploads::repeated_upload_events_make_one_job(c))
    }),
    ("cloud::max_attempts_1", |c| {
        Box::pin(executions::one_attempt(c))
    }),
    ("cloud::max_attempts_5", |c| {
        Box::pin(executions::five_attempts(c))
    }),
    (
        "cloud::a_429_waits_in_the_state_machine_without_spending_an_attempt",
        |c| Box::pin(executions::a_429_waits_in_the_state_machine_without_spending_an_attempt(c)),
    ),
    ("cloud::retries_visible_in_the_execution_history", |c| {
        Box::pin(executions::retries_visible_in_the_execution_history(c))
    }),
    (
        "cloud::a_duplicate_dispatch_starts_no_second_execution",
        |c| {
            Box::pin(executions::a_duplicate_dispatch_starts_no_second_execution(
                c,
            ))
        },
    ),
    ("cloud::the_concurrency_limit_holds", |c| {
        Box::pin(executions::the_concurrency_limit_holds(c))
    }),
    (
        "cloud::an_ended_execution_fails_its_job_and_frees_its_slot",
        |c| Box::pin(executions::an_ended_execution_fails_its_job_and_frees_its_slot(c)),
    ),
    ("cloud::uploads_become_jobs_and_results", |c| {
        Box::pin(uploads::uploads_become_jobs_and_results(c))
    }),
    ("cloud::a_settled_upload_writes_its_record", |c| {
        Box::pin(uploads::a_settled_upload_writes_its_record(c))
    }),
    ("cloud::cancelling_an_upload_writes_its_record", |c| {
        Box::pin(uploads::cancelling_an_upload_writes_its_record(c))
    }),
    ("cloud::worker_counters_reach_metrics", |c| {
        Box::pin(events::worker_counters_reach_metrics(c))
    }),
];

fn main() -> ExitCode {
    harness::run(setup, CLOUD_CASES)
}
