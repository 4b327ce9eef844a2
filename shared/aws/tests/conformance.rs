//! The job store conformance suite on the DynamoDB store, against DynamoDB
//! and S3 on the moto server (`infra/emulate store`: started once for this
//! test binary, stopped when the binary exits; one table per case).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_dynamodb::config::Credentials;
use lotsawa_aws::{Clients, CloudConfig, DynamoStore};
use lotsawa_conformance::Fixture;

struct Moto {
    endpoint: String,
    prefix: String,
    tables: usize,
    bucket: String,
    next: AtomicUsize,
    // Held open for the life of the binary: moto stops when it closes.
    _stdin: Mutex<ChildStdin>,
}

fn moto() -> &'static Moto {
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

async fn dynamodb() -> Fixture {
    let m = moto();
    let i = m.next.fetch_add(1, Ordering::SeqCst);
    assert!(i < m.tables, "more cases than emulated tables");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&m.endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .load()
        .await;
    let config = CloudConfig {
        table: format!("{}{i}", m.prefix),
        job_queue_url: "http://127.0.0.1:1/unused".into(),
        state_machine_arn: "arn:aws:states:us-east-1:123456789012:stateMachine:unused".into(),
        bucket: m.bucket.clone(),
        concurrency: 3,
        stream_max: Duration::from_secs(60),
        job_ttl_days: 30,
        body_limit: 1024 * 1024,
        emulator: false,
    };
    Fixture {
        store: Arc::new(DynamoStore::new(Clients::from_sdk(&sdk), config)),
        guard: Box::new(()),
    }
}

lotsawa_conformance::conformance_tests!(dynamodb);
