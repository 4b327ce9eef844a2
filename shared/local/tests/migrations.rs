//! Versioned schema migrations: a database written by an earlier schema
//! (the fixtures in `tests/fixtures/`, made by earlier builds) opens,
//! migrates and serves what it held; a database written by a newer build is
//! refused and left untouched.

use std::path::{Path, PathBuf};

use chrono::Utc;
use lotsawa_conformance::JobFactory;
use lotsawa_core::store::{ListFilter, PageRequest};
use lotsawa_core::{
    BatchId, BatchStore, ChunkStatus, JobId, JobStatus, JobStore, KeyStore, Tenant,
};
use lotsawa_local::{SCHEMA_VERSION, SqliteError, SqliteStore};

/// Unpack a gzipped fixture into a fresh directory.
fn fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let packed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.db.gz"));
    let mut reader =
        flate2::read::GzDecoder::new(std::fs::File::open(&packed).expect("fixture present"));
    let path = dir.path().join("lotsawa.db");
    let mut out = std::fs::File::create(&path).expect("create");
    std::io::copy(&mut reader, &mut out).expect("unpack");
    (dir, path)
}

fn user_version(path: &Path) -> usize {
    let conn = rusqlite::Connection::open(path).expect("open");
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version");
    usize::try_from(v).expect("non-negative")
}

/// The first page (up to 50) of `tenant`'s jobs.
async fn list_all(store: &SqliteStore, tenant: &Tenant) -> lotsawa_core::store::StorePage {
    store
        .list(&PageRequest {
            filter: ListFilter {
                tenant: tenant.clone(),
                status: None,
                kind: None,
                priority: None,
            },
            limit: 50,
            after: None,
        })
        .await
        .expect("list")
}

fn id(s: &str) -> JobId {
    s.parse().expect("job id")
}

#[tokio::test]
async fn a_database_of_schema_1_migrates_and_serves_what_it_held() {
    let (_dir, path) = fixture("schema-1");
    assert_eq!(user_version(&path), 0, "written before versions");
    let store = SqliteStore::open(&path).expect("opens and migrates");
    assert_eq!(user_version(&path), SCHEMA_VERSION);

    let tenant = Tenant::parse("team-a").expect("tenant");
    let page = list_all(&store, &tenant).await;
    assert_eq!(page.jobs.len(), 10);

    // The run counter moved from the `attempts` column to `run`.
    let retried = store
        .get(id("a158693f-a82a-47ac-9a19-bd1714ef5ad5"))
        .await
        .expect("retried job");
    assert_eq!(retried.status, JobStatus::Completed);
    assert_eq!(retried.run, 2);
    assert_eq!(retried.chunks_completed, 84);
    let translation = &retried.result.as_ref().expect("result").translation;
    assert!(!translation.is_empty());

    let cancelled_id = id("24c3a645-5c7a-458d-8608-646d8bf1573f");
    let cancelled = store.get(cancelled_id).await.expect("cancelled job");
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(cancelled.run, 1);
    let chunks = store.chunks(cancelled_id, 0).await.expect("chunks");
    assert_eq!(chunks.len(), 84);
    let done = chunks
        .iter()
        .filter(|c| c.status == ChunkStatus::Completed)
        .count();
    assert_eq!(done, 3);

    let keys = store.keys().await.expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].tenant, tenant);
    assert!(keys[0].revoked_at.is_none());

    let batch: BatchId = "4edd3343-7474-45a1-afba-a2ec211868a3"
        .parse()
        .expect("batch id");
    let batch = store.batch_get(batch).await.expect("batch");
    assert_eq!(batch.items.len(), 2);

    // And it takes new work: a job is created, claimed and runs as run 1.
    let (job, texts) = JobFactory::new().tenant(&tenant).build();
    store.create(&job, &texts).await.expect("create");
    let claimed = store
        .claim_next(3, Utc::now())
        .await
        .expect("claim")
        .expect("the new job is pending");
    assert_eq!(claimed.id, job.id);
    assert_eq!(claimed.run, 1);
}

#[tokio::test]
async fn a_database_of_schema_2_migrates_and_serves_what_it_held() {
    let (_dir, path) = fixture("schema-2");
    assert_eq!(user_version(&path), 2);
    let store = SqliteStore::open(&path).expect("opens and migrates");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let tenant = Tenant::parse("team-a").expect("tenant");
    let page = list_all(&store, &tenant).await;
    assert_eq!(page.jobs.len(), 10);
    let retried = store
        .get(id("fe973025-61b6-4116-bdff-537e1e86a7c7"))
        .await
        .expect("retried job");
    assert_eq!((retried.status, retried.run), (JobStatus::Completed, 2));
    assert_eq!(retried.trace, None, "jobs from before traces have none");
    let batch: BatchId = "7936630d-b6d4-42cd-bf24-97739b4da85c"
        .parse()
        .expect("batch id");
    assert_eq!(store.batch_get(batch).await.expect("batch").items.len(), 2);
    assert_eq!(store.keys().await.expect("keys").len(), 1);
    let (job, texts) = JobFactory::new()
        .tenant(&tenant)
        .with(|j| j.trace = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()))
        .build();
    store.create(&job, &texts).await.expect("create");
    assert!(store.get(job.id).await.expect("get").trace.is_some());
}

#[test]
fn opening_twice_migrates_once() {
    let (_dir, path) = fixture("schema-1");
    drop(SqliteStore::open(&path).expect("first open"));
    drop(SqliteStore::open(&path).expect("second open"));
    assert_eq!(user_version(&path), SCHEMA_VERSION);
}

#[test]
fn a_database_of_a_newer_schema_is_refused_and_left_untouched() {
    let (_dir, path) = fixture("schema-1");
    drop(SqliteStore::open(&path).expect("migrates"));
    let newer = SCHEMA_VERSION + 1;
    rusqlite::Connection::open(&path)
        .expect("open")
        .pragma_update(None, "user_version", newer as i64)
        .expect("set version");
    let before = std::fs::read(&path).expect("read");

    let err = SqliteStore::open(&path).expect_err("a newer schema is refused");
    assert!(
        matches!(err, SqliteError::TooNew { found, supported } if found == newer && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("schema version {newer}")) && message.contains("newer"),
        "{message}"
    );
    assert_eq!(std::fs::read(&path).expect("read"), before, "untouched");
}
