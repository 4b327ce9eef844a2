//! DynamoDB item mapping: how jobs and chunks are stored. The domain types
//! know nothing of it.
//!
//! One table: `pk`/`sk`. A job is three items under `JOB#<id>`: `JOB` (small:
//! status, counters, timestamps, error, slot and execution, the listing
//! keys), `JOB#CONFIG` (its settings, read with `JOB` by every chunk step)
//! and `JOB#TEXT` (its source and result, or their S3 keys, read only by a
//! whole-job read). A chunk commit thus rewrites a few hundred bytes, not
//! the source. Its chunks are `JOB#<id>`/`CHUNK#<index, 6 digits>` (the
//! ledger: status, attempts, output) each followed by `CHUNK#<index>#S` (its
//! source), so a chunk commit rewrites only the ledger item; the
//! concurrency semaphore is `SEMAPHORE`/`SEMAPHORE`; memory entries are
//! `MEM#<key>`/`MEM`; jobs per status are counted in `COUNTS#<shard>`/`COUNTS`,
//! a tenant's waiting jobs in `TENANT#<tenant>`/`COUNTS` (`pending`).
//!
//! Three GSIs list jobs newest first, projecting keys only (a list reads
//! the small job items of one page): `gsi1` by status, `gsi2` all jobs,
//! `gsi3` by type, sort key `createdAt#id`. `gsi4` is the queue: only
//! pending jobs have its keys (`QUEUE#<shard>`, `<turn, 10 digits>#createdAt#id`),
//! so it orders them by turn, then arrival ([`lotsawa_core::batch`]). A
//! batch is `BATCH#<id>`/`BATCH` (its items as JSON), listed per tenant
//! through `gsi2` (`BATCHES#<tenant>`, `createdAt#id`). Each index key is spread over
//! [`LIST_SHARDS`] partitions by the job id (`STATUS#processing#2`), so no
//! one index partition takes every job's writes; a list merges the shards.
//! `expiresAt` is the TTL attribute.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use lotsawa_core::{JobId, JobStatus, JobType, Tenant};

/// An item.
pub type Item = HashMap<String, AttributeValue>;

/// Partition key of a job.
pub fn job_pk(id: JobId) -> String {
    format!("JOB#{id}")
}

/// Sort key of a chunk.
pub fn chunk_sk(index: u32) -> String {
    format!("CHUNK#{index:06}")
}

/// RFC 3339 with milliseconds.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A string attribute.
pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A number attribute.
pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Why an item could not be read.
#[derive(Debug, thiserror::Error)]
#[error("corrupt item: {0}")]
pub struct Corrupt(pub String);

/// Sort key of the listing indexes: newest first when read backwards.
pub fn list_sk(created_at: &str, id: JobId) -> String {
    format!("{created_at}#{id}")
}

/// Partitions of each listing index key and of the status counters.
pub const LIST_SHARDS: u32 = 4;

/// Sort key of a job's settings item.
pub const CONFIG_SK: &str = "JOB#CONFIG";

/// Sort key of a job's result item.
pub const RESULT_SK: &str = "JOB#RESULT";

/// Sort key of a job's source item (the last of a job's own items).
pub const TEXT_SK: &str = "JOB#TEXT";

/// The shard of a job: fixed by its id.
pub fn shard_of(id: JobId) -> u32 {
    let s = id.to_string();
    let last = s.as_bytes()[s.len() - 1];
    (last as char).to_digit(16).unwrap_or(0) % LIST_SHARDS
}

/// Partition key of the status index for `status` in `shard`.
pub fn status_pk(status: JobStatus, shard: u32) -> String {
    format!("STATUS#{}#{shard}", status.as_str())
}

/// Partition key of the queue index in `shard`.
pub fn queue_pk(shard: u32) -> String {
    format!("QUEUE#{shard}")
}

/// Sort key of the queue index: priority band (`00` for priority 10 to
/// `20` for -10, so higher priorities sort first), turn, then arrival.
pub fn queue_sk(priority: i8, turn: u64, created_at: &str, id: JobId) -> String {
    format!("{}{turn:010}#{created_at}#{id}", queue_band(priority))
}

/// The prefix of a priority's queue keys (`10#` for priority 0).
pub fn queue_band(priority: i8) -> String {
    let band = (i16::from(lotsawa_core::job::MAX_PRIORITY) - i16::from(priority)).clamp(0, 99);
    format!("{band:02}#")
}

/// The turn in a queue index sort key (also of keys written before
/// priorities, which start with the turn).
pub fn turn_of(queue_sk: &str) -> Option<u64> {
    let mut parts = queue_sk.split('#');
    let first = parts.next()?;
    if first.len() == 10 {
        return first.parse().ok();
    }
    parts.next()?.parse().ok()
}

/// Partition key of a batch.
pub fn batch_pk(id: lotsawa_core::BatchId) -> String {
    format!("BATCH#{id}")
}

/// Partition key of a tenant's batches in `gsi2`.
pub fn batches_pk(tenant: &Tenant) -> String {
    format!("BATCHES#{tenant}")
}

/// A job's batch as stored: `<batch id>:<item index>`.
pub fn batch_text(r: &lotsawa_core::BatchRef) -> String {
    format!("{}:{}", r.id, r.index)
}

/// Partition key of a tenant's all-jobs index in `shard`.
pub fn all_pk(tenant: &Tenant, shard: u32) -> String {
    format!("ALL#{tenant}#{shard}")
}

/// Partition key of a tenant's status index (`gsi5`) for `status` in
/// `shard`: a tenant's status list reads its own jobs only.
pub fn tenant_status_pk(tenant: &Tenant, status: JobStatus, shard: u32) -> String {
    format!("TSTATUS#{tenant}#{}#{shard}", status.as_str())
}

/// Partition key of a tenant's type index for `kind` in `shard`.
pub fn type_pk(tenant: &Tenant, kind: JobType, shard: u32) -> String {
    format!("TYPE#{tenant}#{}#{shard}", kind.as_str())
}

/// Partition key of an API key item (by the key's hash).
pub fn key_pk(hash: &str) -> String {
    format!("KEY#{hash}")
}

/// Partition key of the status counters of `shard`.
pub fn counts_pk(shard: u32) -> String {
    format!("COUNTS#{shard}")
}

/// Partition key of a tenant's counters (`pending`: jobs waiting to start).
pub fn tenant_counts_pk(tenant: &Tenant) -> String {
    format!("TENANT#{tenant}")
}

/// Sort key of a chunk's source item: right after its ledger item, so one
/// key range reads both.
pub fn chunk_source_sk(index: u32) -> String {
    format!("CHUNK#{index:06}#S")
}
/// Whether an item is a chunk's source item.
pub fn is_chunk_source(item: &Item) -> bool {
    item.get("sk")
        .and_then(|v| v.as_s().ok())
        .is_some_and(|k| k.starts_with("CHUNK#") && k.ends_with("#S"))
}

/// Partition key of an idempotency record: the tenant and the hash of
/// the caller's key.
pub fn idempotency_pk(tenant: &Tenant, key: &str) -> String {
    format!("IDEM#{tenant}#{}", lotsawa_core::auth::key_hash(key))
}

/// Partition key of a tenant's rate bucket.
pub fn rate_pk(tenant: &Tenant) -> String {
    format!("RATE#{tenant}")
}

/// Partition key of a translation memory entry.
pub fn memory_pk(key: &str) -> String {
    format!("MEM#{key}")
}

/// The sort key of a job's pending-callback marker.
pub const CALLBACK_SK: &str = "CALLBACK";

/// The `gsi2` partition listing pending callbacks by due time.
pub const CALLBACKS_PK: &str = "CALLBACKS";

mod desk;
mod kinds;
mod records;

pub use desk::*;
pub use kinds::*;
pub use records::*;

#[cfg(test)]
mod tests {
    use lotsawa_core::store::IdempotencyRecord;
    use lotsawa_core::{ApiKeyRecord, ChunkStatus, Job, JobConfig};

    use super::*;

    /// A pending one-chunk job with `config`.
    fn pending_job(config: JobConfig) -> Job {
        Job {
            id: JobId::new(),
            tenant: Tenant::default(),
            kind: JobType::Translation,
            status: JobStatus::Pending,
            source: "ཀ།".into(),
            config,
            result: None,
            error: None,
            chunks_completed: 0,
            chunks_total: 1,
            created_at: Utc::now(),
            started_at: None,
            completed_at: None,
            cancelled_at: None,
            run: 0,
            callback: None,
            batch: None,
            trace: None,
            review: Default::default(),
        }
    }

    /// Bytes DynamoDB counts for an item: attribute names and values.
    fn item_size(item: &Item) -> usize {
        item.iter()
            .map(|(k, v)| {
                k.len()
                    + match v {
                        AttributeValue::S(x) | AttributeValue::N(x) => x.len(),
                        other => format!("{other:?}").len(),
                    }
            })
            .sum()
    }

    /// The largest glossary a job may have (the router's limits: 10,000
    /// terms, 256 KiB of terms) fits the 400 KB item limit, and reads back
    /// term for term, quotes and backslashes included.
    #[test]
    fn the_largest_allowed_glossary_fits_one_settings_item() {
        use lotsawa_core::glossary::{MAX_JOB_GLOSSARY_BYTES, MAX_JOB_TERMS};
        let per_term = MAX_JOB_GLOSSARY_BYTES / MAX_JOB_TERMS;
        let bo = "ཀ".repeat(3);
        let en = "\"\\".repeat((per_term - bo.len()) / 2);
        let config = JobConfig {
            glossary: (0..MAX_JOB_TERMS)
                .map(|i| lotsawa_core::GlossaryEntry {
                    bo: bo.clone(),
                    en: format!("{en}{}", i % 10),
                })
                .collect(),
            ..JobConfig::default()
        };
        let bytes: usize = config
            .glossary
            .iter()
            .map(|t| t.bo.len() + t.en.len())
            .sum();
        assert!(bytes <= MAX_JOB_GLOSSARY_BYTES && bytes > MAX_JOB_GLOSSARY_BYTES * 9 / 10);
        let job = pending_job(config);
        let item = new_config_item(&job, 1).expect("config");
        let size = item_size(&item);
        assert!(size < 400 * 1024, "settings item of {size} bytes");
        let job_item = new_job_item(&job, 0).expect("job item");
        let back = job_from_items(&job_item, Some(&item), None, None).expect("job");
        assert_eq!(back.job.config, job.config);
    }

    /// An item as the table holds it: `name TYPE value` lines, sorted.
    fn shape(item: &Item) -> Vec<String> {
        let mut lines: Vec<String> = item
            .iter()
            .map(|(k, v)| match v {
                AttributeValue::S(x) => format!("{k} S {x}"),
                AttributeValue::N(x) => format!("{k} N {x}"),
                AttributeValue::Bool(x) => format!("{k} BOOL {x}"),
                other => format!("{k} ? {other:?}"),
            })
            .collect();
        lines.sort();
        lines
    }

    /// That `item` holds exactly `expected` (`name TYPE value`, any order).
    fn assert_shape(item: &Item, expected: &[&str]) {
        let mut want: Vec<String> = expected.iter().map(|l| (*l).to_owned()).collect();
        want.sort();
        assert_eq!(shape(item), want);
    }

    /// The stored format of every item kind, attribute by attribute (name,
    /// DynamoDB type, value): what earlier builds wrote and later builds
    /// must read. Each item also reads back to what it was built from.
    #[test]
    fn items_keep_their_stored_format() {
        const ID: &str = "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a47"; // shard 7 % 4 = 3
        const BATCH: &str = "0d6c1f3e-7a2b-4c5d-9e8f-1a2b3c4d5e6f";
        const T0: &str = "2024-05-06T07:08:09.120Z";
        const T1: &str = "2024-05-07T00:00:00.000Z";
        let created: DateTime<Utc> = T0.parse().expect("time");
        let later: DateTime<Utc> = T1.parse().expect("time");
        let id: JobId = ID.parse().expect("id");
        let tenant = Tenant::parse("acme").expect("tenant");
        let mut job = pending_job(JobConfig {
            model: Some("m".into()),
            glossary: [("ཀ", "ka"), ("ཁ", "kha \"quoted\"")]
                .map(|(bo, en)| lotsawa_core::GlossaryEntry {
                    bo: bo.into(),
                    en: en.into(),
                })
                .to_vec(),
            ..JobConfig::default()
        });
        job.id = id;
        job.tenant = tenant.clone();
        job.chunks_total = 3;
        job.created_at = created;
        job.batch = Some(lotsawa_core::BatchRef {
            id: BATCH.parse().expect("batch id"),
            index: 2,
        });

        // The job item: chunksCompleted and run start at 0; in the queue
        // index at its turn.
        let item = new_job_item(&job, 12).expect("job item");
        assert_shape(
            &item,
            &[
                &format!("pk S JOB#{ID}"),
                "sk S JOB",
                &format!("id S {ID}"),
                "tenant S acme",
                "kind S translation",
                "status S pending",
                "chunksTotal N 3",
                "chunksCompleted N 0",
                "run N 0",
                &format!("createdAt S {T0}"),
                "gsi1pk S STATUS#pending#3",
                &format!("gsi1sk S {T0}#{ID}"),
                "gsi2pk S ALL#acme#3",
                &format!("gsi2sk S {T0}#{ID}"),
                "gsi3pk S TYPE#acme#translation#3",
                &format!("gsi3sk S {T0}#{ID}"),
                "gsi5pk S TSTATUS#acme#pending#3",
                &format!("gsi5sk S {T0}#{ID}"),
                &format!("batch S {BATCH}:2"),
                "gsi4pk S QUEUE#3",
                &format!("gsi4sk S 10#0000000012#{T0}#{ID}"),
            ],
        );
        // A job failed before it started: not queued; its error, its end
        // and its time to live.
        let mut failed = job.clone();
        failed.status = JobStatus::Failed;
        failed.error = Some("unreadable upload".into());
        failed.completed_at = Some(later);
        let failed_item = failed_job_item(&failed, Some(1_700_000_000)).expect("failed item");
        let queued = new_job_item(&failed, 12).expect("job item");
        let only = |a: &Item, b: &Item| -> Vec<String> {
            let other = shape(b);
            shape(a)
                .into_iter()
                .filter(|l| !other.contains(l))
                .collect()
        };
        assert_eq!(
            only(&failed_item, &queued),
            [
                format!("completedAt S {T1}"),
                "error S unreadable upload".into(),
                "expiresAt N 1700000000".into(),
            ]
        );
        assert_eq!(
            only(&queued, &failed_item),
            [
                "gsi4pk S QUEUE#3".to_owned(),
                format!("gsi4sk S 10#0000000012#{T0}#{ID}")
            ]
        );
        assert!(shape(&failed_item).contains(&"gsi1pk S STATUS#failed#3".to_owned()));
        let back = job_from_items(&failed_item, None, None, None).expect("failed job");
        assert_eq!(back.job.error, failed.error);
        assert_eq!(back.job.completed_at, Some(later));
        assert_eq!(back.job.status, JobStatus::Failed);

        // The settings item: the job's settings as JSON, its glossary as
        // lines of `bo<TAB>en`.
        let config = new_config_item(&job, 1_700_000_000).expect("config");
        let settings = serde_json::to_string(&JobConfig {
            glossary: Vec::new(),
            ..job.config.clone()
        })
        .expect("json");
        assert_shape(
            &config,
            &[
                &format!("pk S JOB#{ID}"),
                "sk S JOB#CONFIG",
                &format!("config S {settings}"),
                "glossary S ཀ\tka\nཁ\tkha \"quoted\"\n",
                "expiresAt N 1700000000",
            ],
        );
        let bare = pending_job(JobConfig::default());
        let bare_config = new_config_item(&bare, 5).expect("config");
        assert!(!bare_config.contains_key("glossary"));

        // The texts item: the source inline, or its S3 key.
        let text = new_text_item(id, Some("ཀ།"), None, 1_700_000_000).expect("text item");
        assert_shape(
            &text,
            &[
                &format!("pk S JOB#{ID}"),
                "sk S JOB#TEXT",
                "source S ཀ།",
                "expiresAt N 1700000000",
            ],
        );
        assert_shape(
            &new_text_item(id, None, Some("sources/x.txt"), 9).expect("text item"),
            &[
                &format!("pk S JOB#{ID}"),
                "sk S JOB#TEXT",
                "sourceKey S sources/x.txt",
                "expiresAt N 9",
            ],
        );
        let back = job_from_items(&item, Some(&config), Some(&text), None).expect("job");
        assert_eq!(back.job, job);

        // A chunk's ledger item and its source item.
        let chunk = new_chunk_item(id, 7, 2, 99).expect("chunk item");
        assert_shape(
            &chunk,
            &[
                &format!("pk S JOB#{ID}"),
                "sk S CHUNK#000007",
                "idx N 7",
                "chars N 2",
                "status S pending",
                "attempts N 0",
                "expiresAt N 99",
            ],
        );
        let source = new_chunk_source_item(id, 7, Some("ཀ།"), None, 99).expect("source item");
        assert_shape(
            &source,
            &[
                &format!("pk S JOB#{ID}"),
                "sk S CHUNK#000007#S",
                "source S ཀ།",
                "expiresAt N 99",
            ],
        );
        assert_shape(
            &new_chunk_source_item(id, 7, None, Some("chunks/k"), 99).expect("source item"),
            &[
                &format!("pk S JOB#{ID}"),
                "sk S CHUNK#000007#S",
                "sourceKey S chunks/k",
                "expiresAt N 99",
            ],
        );
        let mut back = chunk_from_item(&chunk).expect("chunk");
        add_chunk_source(&mut back, &source).expect("source");
        assert_eq!(
            (back.record.index, back.chars, back.record.source.as_str()),
            (7, 2, "ཀ།")
        );

        // An API key item, listed under `KEYS` in `gsi2`.
        let mut key = ApiKeyRecord {
            id: "key-1".into(),
            tenant: tenant.clone(),
            created_at: created,
            revoked_at: Some(later),
        };
        let key_item = new_key_item(&key, "abc123").expect("key item");
        assert_shape(
            &key_item,
            &[
                "pk S KEY#abc123",
                "sk S KEY",
                "id S key-1",
                "tenant S acme",
                &format!("createdAt S {T0}"),
                &format!("revokedAt S {T1}"),
                "gsi2pk S KEYS",
                &format!("gsi2sk S {T0}#key-1"),
            ],
        );
        assert_eq!(key_from_item(&key_item).expect("key"), key);
        key.revoked_at = None;
        let key_item = new_key_item(&key, "abc123").expect("key item");
        assert!(!key_item.contains_key("revokedAt"));
        assert_eq!(key_from_item(&key_item).expect("key"), key);
    }

    /// The same for the store's other items: batches, idempotency records,
    /// rate buckets, memory entries and callback markers.
    #[test]
    fn store_items_keep_their_stored_format() {
        const ID: &str = "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a47";
        const BATCH: &str = "0d6c1f3e-7a2b-4c5d-9e8f-1a2b3c4d5e6f";
        const T0: &str = "2024-05-06T07:08:09.120Z";
        let created: DateTime<Utc> = T0.parse().expect("time");
        let tenant = Tenant::parse("acme").expect("tenant");

        let batch = lotsawa_core::batch::Batch {
            id: BATCH.parse().expect("batch id"),
            tenant: tenant.clone(),
            created_at: created,
            items: vec![lotsawa_core::batch::BatchItem {
                name: "a \"b\".txt".into(),
                job_id: ID.parse().expect("id"),
            }],
        };
        let item = batch_item(&batch).expect("batch item");
        assert_shape(
            &item,
            &[
                &format!("pk S BATCH#{BATCH}"),
                "sk S BATCH",
                "tenant S acme",
                &format!("createdAt S {T0}"),
                &format!(r#"items S [{{"name":"a \"b\".txt","job_id":"{ID}"}}]"#),
                "gsi2pk S BATCHES#acme",
                &format!("gsi2sk S {T0}#{BATCH}"),
            ],
        );
        assert_eq!(batch_from_item(batch.id, &item).expect("batch"), batch);

        let record = IdempotencyRecord {
            tenant: tenant.clone(),
            key: "client-key".into(),
            fingerprint: "f1".into(),
            job_id: ID.parse().expect("id"),
            created_at: created,
        };
        let item = idempotency_item(&record).expect("idempotency item");
        let hash = lotsawa_core::auth::key_hash("client-key");
        assert_shape(
            &item,
            &[
                &format!("pk S IDEM#acme#{hash}"),
                "sk S IDEM",
                "fingerprint S f1",
                &format!("jobId S {ID}"),
                &format!("createdAt S {T0}"),
                &format!("expiresAt N {}", created.timestamp() + 2 * 86_400),
            ],
        );
        assert_eq!(
            idempotency_from_item(&record, &item).expect("record"),
            record
        );

        let item = rate_item(&tenant, 2.5, created, "w-1").expect("rate item");
        assert_shape(
            &item,
            &[
                "pk S RATE#acme",
                "sk S RATE",
                "tokens N 2.5",
                &format!("at S {T0}"),
                "writer S w-1",
                &format!("expiresAt N {}", created.timestamp() + 86_400),
            ],
        );
        let bucket = RateBucket {
            tokens: Some(2.5),
            at: Some(created),
            writer: Some("w-1".into()),
        };
        assert_eq!(rate_from_item(&item), bucket);
        assert_eq!(rate_from_item(&Item::new()), RateBucket::default());

        let item = memory_item("m-key", "ka", Some(0.75), 42).expect("memory item");
        assert_shape(
            &item,
            &[
                "pk S MEM#m-key",
                "sk S MEM",
                "translation S ka",
                "confidence N 0.75",
                "expiresAt N 42",
            ],
        );
        assert_eq!(memory_from_item(&item), Some(("ka".into(), Some(0.75))));
        let item = memory_item("m-key", "ka", None, 42).expect("memory item");
        assert!(!item.contains_key("confidence"));
        assert_eq!(memory_from_item(&item), Some(("ka".into(), None)));

        let item = callback_marker_item(ID.parse().expect("id"), created, 43).expect("marker item");
        assert_shape(
            &item,
            &[
                &format!("pk S JOB#{ID}"),
                "sk S CALLBACK",
                "gsi2pk S CALLBACKS",
                &format!("gsi2sk S {T0}#{ID}"),
                "expiresAt N 43",
            ],
        );
    }

    /// An item that cannot be read is `Corrupt`, named by its kind and the
    /// attribute at fault.
    #[test]
    fn unreadable_items_name_what_is_wrong() {
        let job = pending_job(JobConfig::default());
        let item = new_job_item(&job, 0).expect("job item");
        let with = |item: &Item, k: &str, v: AttributeValue| {
            let mut item = item.clone();
            item.insert(k.into(), v);
            item
        };
        let job_error = |item: &Item| {
            job_from_items(item, None, None, None)
                .expect_err("corrupt")
                .0
        };
        let mut no_id = item.clone();
        no_id.remove("id");
        for (bad, names) in [
            (with(&item, "status", s("bogus")), ["job item", "status"]),
            (
                with(&item, "chunksTotal", s("3")),
                ["job item", "chunksTotal"],
            ),
            (
                with(&item, "createdAt", s("yesterday")),
                ["createdAt", "timestamp yesterday"],
            ),
            (
                with(&item, "tenant", s("Not A Tenant")),
                ["job item", "tenant"],
            ),
            (with(&item, "batch", s("nope")), ["batch 'nope'", "batch"]),
            (no_id, ["job item", "`id`"]),
        ] {
            let message = job_error(&bad);
            assert!(names.iter().all(|n| message.contains(n)), "{message}");
        }
        let config = with(&new_config_item(&job, 1).expect("config"), "config", s("{"));
        let message = job_from_items(&item, Some(&config), None, None)
            .expect_err("corrupt")
            .0;
        assert!(message.contains("settings item: config"), "{message}");
        let chunk = with(
            &new_chunk_item(job.id, 1, 1, 1).expect("chunk item"),
            "idx",
            s("1"),
        );
        let message = chunk_from_item(&chunk).expect_err("corrupt").0;
        assert!(message.contains("chunk item: idx"), "{message}");
    }

    #[test]
    fn jobs_round_trip_through_items() {
        let job = pending_job(JobConfig::default());
        let item = new_job_item(&job, 0).expect("job item");
        let config = new_config_item(&job, 1).expect("config");
        let text = new_text_item(job.id, Some("ཀ།"), None, 1).expect("text item");
        let back = job_from_items(&item, Some(&config), Some(&text), None).expect("job");
        assert_eq!(back.job.id, job.id);
        assert_eq!(back.job.source, "ཀ།");
        assert_eq!(back.job.config, job.config);
        assert_eq!(back.job.status, JobStatus::Pending);
        let shard = shard_of(job.id);
        assert!(shard < LIST_SHARDS);
        assert_eq!(
            item.get("gsi1pk").and_then(|v| v.as_s().ok()),
            Some(&format!("STATUS#pending#{shard}"))
        );
        assert!(!item.contains_key("source") && !item.contains_key("config"));
        let brief = job_from_items(&item, Some(&config), None, None).expect("brief");
        assert_eq!(brief.job.source, "");
        let c = new_chunk_item(job.id, 7, 2, 1).expect("chunk item");
        assert_eq!(
            c.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str),
            Some("CHUNK#000007")
        );
        let src = new_chunk_source_item(job.id, 7, Some("ཀ།"), None, 1).expect("source item");
        assert!(is_chunk_source(&src) && !is_chunk_source(&c));
        // The source item sorts between its chunk and the next one.
        assert!(chunk_sk(7) < chunk_source_sk(7) && chunk_source_sk(7) < chunk_sk(8));
        let mut back = chunk_from_item(&c).expect("chunk");
        add_chunk_source(&mut back, &src).expect("source");
        assert_eq!(back.record.source, "ཀ།");
        assert_eq!(back.record.index, 7);
        assert_eq!(back.record.status, ChunkStatus::Pending);
    }
}
