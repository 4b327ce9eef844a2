//! DynamoDB and S3 on the moto server for the store tests
//! (`infra/emulate store`: started once per test binary, stopped when the
//! binary exits), one fresh table per test.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_dynamodb::config::Credentials;
use lotsawa_aws::CloudConfig;

pub struct Moto {
    pub endpoint: String,
    prefix: String,
    tables: usize,
    bucket: String,
    next: AtomicUsize,
    // Held open for the life of the binary: moto stops when it closes.
    _stdin: Mutex<ChildStdin>,
}

pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut child = Command::new(root.join("infra/emulate"))
            .args(["store", "40"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start infra/emulate store");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut vars = std::collections::HashMap::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read infra/emulate store");
            if line == "READY" {
                break;
            }
            if let Some((k, v)) = line.split_once('=') {
                vars.insert(k.to_owned(), v.to_owned());
            }
        }
        let var = |k: &str| {
            vars.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("infra/emulate store did not print {k}"))
        };
        // The process lives on until this binary exits and closes its stdin.
        std::mem::forget(child);
        Moto {
            endpoint: var("AWS_ENDPOINT_URL"),
            prefix: var("TABLE_PREFIX"),
            tables: var("TABLES").parse().expect("TABLES"),
            bucket: var("BUCKET"),
            next: AtomicUsize::new(0),
            _stdin: Mutex::new(stdin),
        }
    })
}

/// The SDK configuration for the emulator.
pub async fn sdk() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&moto().endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .load()
        .await
}

/// A store configuration on a table no other test uses.
pub fn fresh_config() -> CloudConfig {
    let m = moto();
    let i = m.next.fetch_add(1, Ordering::SeqCst);
    assert!(i < m.tables, "more tests than emulated tables");
    CloudConfig {
        table: format!("{}{i}", m.prefix),
        job_queue_url: "http://127.0.0.1:1/unused".into(),
        worker_queue_url: None,
        state_machine_arn: "arn:aws:states:us-east-1:123456789012:stateMachine:unused".into(),
        bucket: m.bucket.clone(),
        concurrency: 3,
        stream_max: Duration::from_secs(60),
        job_ttl_days: 30,
        memory_ttl_days: 90,
        body_limit: 1024 * 1024,
        pdf_limit: 4 * 1024 * 1024,
        bedrock_models: Vec::new(),
        openai_key_secret: None,
        ingest_tenant: lotsawa_core::Tenant::default(),
        max_chunks: 2000,
        rate: None,
        max_pending: None,
        max_batch_items: 1000,
        require_auth: false,
        emulator: false,
        event_bus: None,
        webhooks: None,
        stream_url: None,
        throttle_budget: lotsawa_core::retry::DEFAULT_THROTTLE_BUDGET,
    }
}
