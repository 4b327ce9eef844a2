//! What a job costs in DynamoDB capacity, measured on the emulator.
//!
//! moto answers `ReturnConsumedCapacity` with constants (1 unit a call, none
//! for transactions), so a meter on the SDK client works the units out from
//! what really travels: every request and answer is read, every write's
//! item is fetched after it (by a second, unmetered client) and compared
//! with its image before, and DynamoDB's published rules are applied —
//! writes 1 unit per started KB of the larger image (twice in a
//! transaction), each index entry that appears, changes or goes 1 unit per
//! started KB of the entry; reads 1 unit per started 4 KB (of the item, or
//! of a query page's items together, or of each item of a batch), half for
//! an eventually consistent read.
//!
//! The worker's own code runs every chunk step (claim, chunk, completion)
//! and the one SSE route watches the job, so the figures are those of the
//! deployed functions. They are printed; the assertions hold the per-chunk
//! figures under bounds that the cost model in `infra/README.md` relies on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::types::{AttributeValue, ProjectionType};
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use chrono::Utc;
use http_body_util::BodyExt;
use lotsawa_aws::service::cloud_service;
use lotsawa_aws::worker::{Step, Task, Worker};
use lotsawa_aws::{Clients, DynamoStore};
use lotsawa_core::{JobConfig, JobId, JobStatus, JobStore, JobType, NewJob};
use serde_json::Value;
use tower::ServiceExt;

mod support;

type Image = HashMap<String, AttributeValue>;

/// A global secondary index: its key attributes and what it projects
/// (`None`: every attribute).
#[derive(Debug, Clone)]
struct Index {
    keys: Vec<String>,
    projects: Option<Vec<String>>,
}

/// Units consumed, by operation.
#[derive(Debug, Default, Clone)]
struct Units {
    read: f64,
    write: f64,
    calls: usize,
    by_op: std::collections::BTreeMap<String, (usize, f64, f64)>,
}

impl Units {
    fn add(&mut self, op: &str, read: f64, write: f64) {
        self.read += read;
        self.write += write;
        self.calls += 1;
        let e = self.by_op.entry(op.to_owned()).or_default();
        e.0 += 1;
        e.1 += read;
        e.2 += write;
    }
}

#[derive(Debug)]
struct MeterState {
    /// Every item's image as last seen, by `pk`/`sk`.
    images: HashMap<(String, String), Image>,
    units: Units,
}

/// The meter: an interceptor on the metered client.
#[derive(Clone)]
struct Meter {
    state: Arc<Mutex<MeterState>>,
    probe: aws_sdk_dynamodb::Client,
    table: String,
    indexes: Arc<Vec<Index>>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct Sent {
    op: String,
    body: Value,
}

impl Storable for Sent {
    type Storer = StoreReplace<Self>;
}

const KB: f64 = 1024.0;

/// An attribute value's size by DynamoDB's rules.
fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// A number: one byte per two significant digits, plus one.
fn number_size(n: &str) -> usize {
    let digits = n
        .trim_start_matches('-')
        .split(['e', 'E'])
        .next()
        .unwrap_or("")
        .replace('.', "");
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.div_ceil(2) + 1
}

fn item_size(item: &Image) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// The size of an item in the wire format (`{"name": {"S": "…"}}`).
fn wire_item_size(item: &Value) -> usize {
    item.as_object()
        .map(|m| m.iter().map(|(k, v)| k.len() + wire_value_size(v)).sum())
        .unwrap_or(0)
}

fn wire_value_size(v: &Value) -> usize {
    let Some((ty, x)) = v.as_object().and_then(|m| m.iter().next()) else {
        return 0;
    };
    match ty.as_str() {
        "S" => x.as_str().map_or(0, str::len),
        "N" => x.as_str().map_or(0, number_size),
        // Base64 on the wire.
        "B" => x.as_str().map_or(0, |b| b.len() * 3 / 4),
        "BOOL" | "NULL" => 1,
        "SS" | "NS" | "BS" => x.as_array().map_or(0, |a| {
            a.iter().filter_map(Value::as_str).map(str::len).sum()
        }),
        "L" => {
            3 + x
                .as_array()
                .map_or(0, |a| a.iter().map(|v| 1 + wire_value_size(v)).sum())
        }
        "M" => {
            3 + x.as_object().map_or(0, |m| {
                m.iter()
                    .map(|(k, v)| 1 + k.len() + wire_value_size(v))
                    .sum()
            })
        }
        _ => 0,
    }
}

fn write_units(bytes: usize) -> f64 {
    (bytes as f64 / KB).ceil().max(1.0)
}

fn read_units(bytes: usize, consistent: bool) -> f64 {
    let u = (bytes as f64 / (4.0 * KB)).ceil().max(1.0);
    if consistent { u } else { u / 2.0 }
}

fn key_of(v: &Value) -> Option<(String, String)> {
    let s = |k: &str| v.get(k)?.get("S")?.as_str().map(str::to_owned);
    Some((s("pk")?, s("sk")?))
}

impl Meter {
    /// The index entry of an item: its keys and what the index projects.
    fn entry(&self, index: &Index, item: &Image) -> Option<Image> {
        if !index.keys.iter().all(|k| item.contains_key(k)) {
            return None;
        }
        let keep = |k: &str| {
            k == "pk"
                || k == "sk"
                || index.keys.iter().any(|x| x == k)
                || index
                    .projects
                    .as_ref()
                    .is_none_or(|p| p.iter().any(|x| x == k))
        };
        Some(
            item.iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    /// Units of one item going from `before` to `after`.
    fn item_write(&self, before: Option<&Image>, after: Option<&Image>, tx: bool) -> f64 {
        let size = before
            .map(item_size)
            .unwrap_or(0)
            .max(after.map(item_size).unwrap_or(0));
        let mut units = write_units(size) * if tx { 2.0 } else { 1.0 };
        for index in self.indexes.iter() {
            let b = before.and_then(|i| self.entry(index, i));
            let a = after.and_then(|i| self.entry(index, i));
            let same_keys = |x: &Image, y: &Image| index.keys.iter().all(|k| x.get(k) == y.get(k));
            units += match (b, a) {
                (None, None) => 0.0,
                (Some(x), None) | (None, Some(x)) => write_units(item_size(&x)),
                (Some(b), Some(a)) if !same_keys(&b, &a) => {
                    write_units(item_size(&b)) + write_units(item_size(&a))
                }
                (Some(b), Some(a)) if b != a => write_units(item_size(&b).max(item_size(&a))),
                _ => 0.0,
            };
        }
        units
    }

    /// Fetch the images of `keys` now (unmetered, consistent).
    fn fetch(&self, keys: &[(String, String)]) -> Vec<Option<Image>> {
        let probe = self.probe.clone();
        let table = self.table.clone();
        let keys = keys.to_vec();
        tokio::task::block_in_place(move || {
            tokio::runtime::Handle::current().block_on(async move {
                let mut out = Vec::new();
                for (pk, sk) in keys {
                    let got = probe
                        .get_item()
                        .table_name(&table)
                        .key("pk", AttributeValue::S(pk))
                        .key("sk", AttributeValue::S(sk))
                        .consistent_read(true)
                        .send()
                        .await
                        .expect("meter probe");
                    out.push(got.item);
                }
                out
            })
        })
    }

    fn writes(&self, keys: Vec<(String, String)>, tx: bool) -> f64 {
        let after = self.fetch(&keys);
        let mut st = self.state.lock().expect("meter");
        let mut units = 0.0;
        for (k, a) in keys.into_iter().zip(after) {
            let before = st.images.get(&k).cloned();
            units += self.item_write(before.as_ref(), a.as_ref(), tx);
            match a {
                Some(a) => st.images.insert(k, a),
                None => st.images.remove(&k),
            };
        }
        units
    }

    fn record(&self, sent: &Sent, answer: &Value) {
        let body = &sent.body;
        let consistent = body
            .get("ConsistentRead")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let (read, write) = match sent.op.as_str() {
            "GetItem" => {
                let size = answer.get("Item").map(wire_item_size).unwrap_or(0);
                (read_units(size, consistent), 0.0)
            }
            "Query" | "Scan" => {
                let size = answer
                    .get("Items")
                    .and_then(Value::as_array)
                    .map_or(0, |a| a.iter().map(wire_item_size).sum());
                (read_units(size, consistent), 0.0)
            }
            "BatchGetItem" => {
                let consistent = body
                    .pointer(&format!("/RequestItems/{}/ConsistentRead", self.table))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let read = answer
                    .pointer(&format!("/Responses/{}", self.table))
                    .and_then(Value::as_array)
                    .map_or(0.0, |a| {
                        a.iter()
                            .map(|i| read_units(wire_item_size(i), consistent))
                            .sum()
                    });
                (read, 0.0)
            }
            "PutItem" => (
                0.0,
                self.writes(
                    body.get("Item").and_then(key_of).into_iter().collect(),
                    false,
                ),
            ),
            "UpdateItem" | "DeleteItem" => (
                0.0,
                self.writes(
                    body.get("Key").and_then(key_of).into_iter().collect(),
                    false,
                ),
            ),
            "BatchWriteItem" => {
                let keys = body
                    .pointer(&format!("/RequestItems/{}", self.table))
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|r| {
                                r.pointer("/PutRequest/Item")
                                    .or_else(|| r.pointer("/DeleteRequest/Key"))
                                    .and_then(key_of)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (0.0, self.writes(keys, false))
            }
            "TransactWriteItems" => {
                let items = body
                    .get("TransactItems")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut keys = Vec::new();
                let mut checks = 0.0;
                for t in &items {
                    if let Some(k) = t.pointer("/Put/Item").and_then(key_of) {
                        keys.push(k);
                    } else if let Some(k) = t
                        .pointer("/Update/Key")
                        .or_else(|| t.pointer("/Delete/Key"))
                        .and_then(key_of)
                    {
                        keys.push(k);
                    } else if t.get("ConditionCheck").is_some() {
                        checks += 2.0;
                    }
                }
                (0.0, checks + self.writes(keys, true))
            }
            _ => (0.0, 0.0),
        };
        self.state
            .lock()
            .expect("meter")
            .units
            .add(&sent.op, read, write);
    }

    fn take(&self) -> Units {
        std::mem::take(&mut self.state.lock().expect("meter").units)
    }
}

impl Intercept for Meter {
    fn name(&self) -> &'static str {
        "lotsawa-test-capacity-meter"
    }

    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = ctx
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit_once('.'))
            .map(|(_, op)| op.to_owned())
            .unwrap_or_default();
        let body = ctx
            .request()
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        cfg.interceptor_state().store_put(Sent { op, body });
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        ctx: &AfterDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if !ctx.response().status().is_success() {
            return Ok(());
        }
        if let Some(sent) = cfg.load::<Sent>() {
            let answer = ctx
                .response()
                .body()
                .bytes()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            self.record(sent, &answer);
        }
        Ok(())
    }
}

/// A store on a fresh table whose DynamoDB client is metered.
async fn metered() -> (DynamoStore, Meter, DynamoStore) {
    let sdk = support::sdk().await;
    let config = support::fresh_config();
    let probe = aws_sdk_dynamodb::Client::new(&sdk);
    let table = probe
        .describe_table()
        .table_name(&config.table)
        .send()
        .await
        .expect("describe table")
        .table
        .expect("table");
    let indexes = table
        .global_secondary_indexes()
        .iter()
        .map(|g| Index {
            keys: g
                .key_schema()
                .iter()
                .map(|k| k.attribute_name().to_owned())
                .collect(),
            projects: g.projection().and_then(|p| match p.projection_type() {
                Some(ProjectionType::All) | None => None,
                Some(ProjectionType::KeysOnly) => Some(Vec::new()),
                Some(_) => Some(p.non_key_attributes().to_vec()),
            }),
        })
        .collect();
    let meter = Meter {
        state: Arc::new(Mutex::new(MeterState {
            images: HashMap::new(),
            units: Units::default(),
        })),
        probe,
        table: config.table.clone(),
        indexes: Arc::new(indexes),
    };
    let ddb = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .interceptor(meter.clone())
        .build();
    let plain = DynamoStore::new(Clients::from_sdk(&sdk), config.clone());
    let mut clients = Clients::from_sdk(&sdk);
    clients.ddb = aws_sdk_dynamodb::Client::from_conf(ddb);
    (DynamoStore::new(clients, config), meter, plain)
}

fn engines() -> lotsawa_engines::EngineSet {
    lotsawa_engines::EngineSet::from_engines(vec![Arc::new(lotsawa_engines::EchoEngine)], "echo")
}

/// A Tibetan text of `chunks` sentences of about `chars` characters, each
/// one distinct (the translation memory never answers).
fn text(chunks: usize, chars: usize) -> String {
    const DIGITS: [char; 10] = ['༠', '༡', '༢', '༣', '༤', '༥', '༦', '༧', '༨', '༩'];
    let mut out = String::new();
    for i in 0..chunks {
        let n: String = i
            .to_string()
            .chars()
            .map(|d| DIGITS[d as usize - 48])
            .collect();
        let mut s = format!("{n}་");
        while s.chars().count() + 2 < chars {
            s.push_str("བཀྲ་ཤིས་");
        }
        s.push_str("། ");
        out.push_str(&s);
    }
    out
}

fn report(label: &str, u: &Units, per: f64, unit: &str) {
    eprintln!(
        "{label}: {:.2} write units and {:.2} read units per {unit} ({} calls in all)",
        u.write / per,
        u.read / per,
        u.calls
    );
    for (op, (calls, r, w)) in &u.by_op {
        eprintln!(
            "    {op:<20} {:>8.2} calls {:>8.2} read {:>8.2} write per {unit}",
            *calls as f64 / per,
            r / per,
            w / per
        );
    }
}

/// Create a job of `chunks` chunks, claim it and run every chunk and the
/// completion through the worker, metering each phase.
async fn run_job(chunks: usize, chars: usize, label: &str) -> (Units, Units, Units) {
    let (store, meter, _) = metered().await;
    let service = cloud_service(
        store.clone(),
        vec!["echo".into()],
        "echo".into(),
        Vec::new(),
    );
    let config = JobConfig {
        engine: Some(lotsawa_core::EngineName::parse("echo").expect("name")),
        chunk_size: lotsawa_core::ChunkSize::new(chars as u32 + 8).expect("chunk size"),
        ..JobConfig::default()
    };
    let job = service
        .create_as(
            JobId::new(),
            NewJob {
                trace: None,
                tenant: lotsawa_core::Tenant::default(),
                kind: JobType::Translation,
                source: lotsawa_core::SourceText::parse(text(chunks, chars)).expect("source"),
                config,
            },
        )
        .await
        .expect("create");
    assert_eq!(job.chunks_total as usize, chunks, "one chunk per sentence");
    let create = meter.take();
    report(&format!("{label}, creation"), &create, 1.0, "job");

    let claimed = store
        .claim_next(3, Utc::now())
        .await
        .expect("claim")
        .expect("a job to claim");
    assert_eq!(claimed.id, job.id);
    let worker = Worker {
        store: store.clone(),
        engines: engines(),
        budgets: Default::default(),
    };
    let task = |step| Task {
        task_token: "token".into(),
        job_id: job.id,
        run: 1,
        step,
    };
    for _ in 0..chunks {
        worker
            .answer(&task(Step::Chunk {
                attempt: 0,
                throttled: 0,
            }))
            .await
            .expect("chunk step");
    }
    let run = meter.take();
    report(label, &run, chunks as f64, "chunk");
    worker
        .answer(&task(Step::Complete))
        .await
        .expect("complete");
    let end = meter.take();
    report(&format!("{label}, completion"), &end, 1.0, "job");
    assert_eq!(
        store.get(job.id).await.expect("job").status,
        JobStatus::Completed
    );
    (create, run, end)
}

/// Chunks of the large job: 200 in the test command (the figures are per
/// chunk); `LOTSAWA_COST_CHUNKS=1000` for the figures of the cost model.
fn large_job_chunks() -> usize {
    std::env::var("LOTSAWA_COST_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Characters per chunk of the large job: 300 (a 1,000-chunk job then fits
/// the API's 1 MiB body); `LOTSAWA_COST_CHARS` for others.
fn large_job_chars() -> usize {
    std::env::var("LOTSAWA_COST_CHARS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_per_chunk_of_a_large_job() {
    let chunks = large_job_chunks();
    let chars = large_job_chars();
    let (_, run, _) = run_job(
        chunks,
        chars,
        &format!("{chunks} chunks of {chars} characters"),
    )
    .await;
    let per_chunk = run.write / chunks as f64;
    let bound = commit_bound(chars);
    assert!(
        per_chunk <= bound,
        "{per_chunk:.2} write units per chunk, over {bound}: a chunk step writes more than its ledger item, the small job item and a counter"
    );
}

/// What a chunk step may write: the commit transaction of the chunk's ledger
/// item (the echo engine's translation is as long as the source, 3 bytes a
/// character, plus about 200 bytes of attributes) and the small job item,
/// twice each, and one metric counter; half a unit to spare for a claim.
fn commit_bound(chars: usize) -> f64 {
    let ledger_kb = ((chars * 3 + 200) as f64 / 1024.0).ceil();
    2.0 * ledger_kb + 2.0 + 1.0 + 0.5
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_per_chunk_with_an_inline_source() {
    let (_, run, _) = run_job(
        100,
        300,
        "100 chunks of 300 characters (90 KB source inline)",
    )
    .await;
    let per_chunk = run.write / 100.0;
    let bound = commit_bound(300);
    assert!(
        per_chunk <= bound,
        "{per_chunk:.2} write units per chunk, over {bound}: the source is rewritten with each chunk"
    );
}

/// One SSE viewer on a running job for `secs` seconds while chunks complete
/// every `every` (none when `None`): units per watching minute.
async fn watch(every: Option<Duration>, secs: u64, label: &str) -> (Units, f64) {
    let (store, meter, plain) = metered().await;
    // The job runs through an unmetered client: only the viewer is metered.
    let service = cloud_service(
        plain.clone(),
        vec!["echo".into()],
        "echo".into(),
        Vec::new(),
    );
    let chunks = 200;
    let job = service
        .create_as(
            JobId::new(),
            NewJob {
                trace: None,
                tenant: lotsawa_core::Tenant::default(),
                kind: JobType::Translation,
                source: lotsawa_core::SourceText::parse(text(chunks, 300)).expect("source"),
                config: JobConfig {
                    engine: Some(lotsawa_core::EngineName::parse("echo").expect("name")),
                    chunk_size: lotsawa_core::ChunkSize::new(308).expect("chunk size"),
                    ..JobConfig::default()
                },
            },
        )
        .await
        .expect("create");
    plain
        .claim_next(3, Utc::now())
        .await
        .expect("claim")
        .expect("claimed");
    let worker = Worker {
        store: plain.clone(),
        engines: engines(),
        budgets: Default::default(),
    };
    let task = Task {
        task_token: "token".into(),
        job_id: job.id,
        run: 1,
        step: Step::Chunk {
            attempt: 0,
            throttled: 0,
        },
    };
    // Half the job done before the viewer arrives.
    for _ in 0..chunks / 2 {
        worker.answer(&task).await.expect("chunk");
    }
    let viewer = cloud_service(store, vec!["echo".into()], "echo".into(), Vec::new());
    let router = lotsawa_http::stream_router(Arc::new(viewer), lotsawa_http::ApiConfig::default());
    let res = router
        .oneshot(
            axum::http::Request::get(format!("/api/jobs/{}/stream", job.id))
                .header("last-event-id", (chunks / 2).to_string())
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("stream");
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let reader = tokio::spawn(async move {
        let mut chunk_events = 0;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                chunk_events += String::from_utf8_lossy(d).matches("\"chunk\"").count();
            }
        }
        chunk_events
    });
    meter.take();
    let started = std::time::Instant::now();
    let mut done = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        match every {
            Some(gap) => {
                tokio::time::sleep(gap).await;
                worker.answer(&task).await.expect("chunk");
                done += 1;
            }
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let units = meter.take();
    reader.abort();
    report(label, &units, minutes, "watching minute");
    eprintln!("    ({done} chunks completed while watching)");
    (units, minutes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_per_watching_minute() {
    let (idle, idle_minutes) = watch(None, 10, "a viewer while no chunk completes").await;
    let (busy, _) = watch(
        Some(Duration::from_millis(500)),
        10,
        "a viewer while 2 chunks a second complete",
    )
    .await;
    assert!(idle.calls > 0 && busy.calls > 0, "the viewer read nothing");
    // An idle viewer reads the small job item once a second: 60 half units
    // a minute, with room for a slow machine's extra reads.
    let idle_per_minute = idle.read / idle_minutes;
    assert!(
        idle_per_minute <= 60.0,
        "an idle viewer read {idle_per_minute:.1} units a minute: more than the job's pulse"
    );
}
