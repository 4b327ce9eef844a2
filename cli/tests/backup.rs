//! `lotsawa backup` while jobs run and clients submit, `lotsawa restore`
//! into a new database, and a server on the restored database: every job
//! acknowledged before the backup began is there and consistent (status,
//! chunks, result), the key still authenticates, and the jobs the backup
//! caught unfinished run to completion. A restore over a running server's
//! database is refused.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lotsawa_apitests::suite::JOB_TIMEOUT;
use lotsawa_apitests::{Api, FakeProvider};
use lotsawa_core::{ChunkStatus, JobId, JobStatus, JobStore};
use lotsawa_local::SqliteStore;
use serde_json::json;
use tokio::sync::Mutex;

mod support;

use support::{Server, temp_db};

fn lotsawa(args: &[&str], db: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lotsawa"))
        .args(args)
        .env("LOTSAWA_DB", db)
        .env_remove("LOTSAWA_CONFIG")
        .output()
        .expect("run lotsawa")
}

fn text(i: usize) -> String {
    (0..4).map(|k| format!("ཀ་ཁ་{i}་{k}། ")).collect()
}

/// Submit jobs until `stop`, recording each acknowledged id in order.
async fn submitter(api: Api, worker: usize, acked: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>) {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        if let Ok(id) = api
            .submit(&text(worker * 100_000 + i), json!({"chunkSize": 40}))
            .await
        {
            acked.lock().await.push(id);
        }
        i += 1;
    }
}

/// A job's stored state in the restored file is whole: it is there, its
/// completed chunks match its count, and a completed job has all its
/// chunks and a result (read before any server touches the file).
async fn assert_consistent(store: &SqliteStore, id: &str) {
    let id: JobId = id.parse().expect("job id");
    let job = store
        .get(id)
        .await
        .unwrap_or_else(|e| panic!("job {id} is not in the restored database: {e}"));
    let chunks = store.chunks(id, 0).await.expect("chunks");
    let done = chunks
        .iter()
        .filter(|c| c.status == ChunkStatus::Completed)
        .count();
    assert_eq!(job.chunks_completed as usize, done, "job {id}");
    assert_eq!(job.chunks_total as usize, chunks.len(), "job {id}");
    if job.status == JobStatus::Completed {
        assert_eq!(done, chunks.len(), "job {id}");
        assert!(job.result.is_some(), "completed job {id} has a result");
    } else {
        assert!(job.result.is_none(), "unfinished job {id} has no result");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_job_committed_before_it() {
    let provider = FakeProvider::start().await;
    provider.set_delay_ms(5);
    let (dir, db) = temp_db();
    let made = lotsawa(&["keys", "create", "--tenant", "default"], &db);
    assert!(made.status.success(), "{made:?}");
    let key_id = String::from_utf8_lossy(&made.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("lts_"))
        .and_then(|k| k.split('_').nth(1))
        .map(str::to_owned)
        .or_else(|| {
            String::from_utf8_lossy(&made.stderr)
                .split_whitespace()
                .nth(1)
                .map(str::to_owned)
        })
        .expect("a key id");

    let server = Server::start(&db, &provider, 3, &[]);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|w| {
            tokio::spawn(submitter(
                server.api.clone(),
                w,
                acked.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Every job acknowledged before the backup starts must be in it.
    let before: Vec<String> = acked.lock().await.clone();
    assert!(before.len() >= 10, "load ran: {} jobs", before.len());
    let copy = dir.path().join("backup.db");
    let backup = {
        let (copy, db) = (copy.clone(), db.clone());
        tokio::task::spawn_blocking(move || {
            lotsawa(&["backup", copy.to_str().expect("utf-8 path")], &db)
        })
        .await
        .expect("backup ran")
    };
    assert!(backup.status.success(), "{backup:?}");
    eprintln!(
        "{} jobs acknowledged before the backup; backup said: {}",
        before.len(),
        String::from_utf8_lossy(&backup.stderr).trim()
    );
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client");
    }

    // A backup never overwrites, and a running server's database is not
    // restored over.
    let again = lotsawa(&["backup", copy.to_str().expect("utf-8")], &db);
    assert!(!again.status.success());
    let over = lotsawa(&["restore", copy.to_str().expect("utf-8")], &db);
    assert!(!over.status.success());
    let said = String::from_utf8_lossy(&over.stderr);
    assert!(said.contains("server is running"), "{said}");

    let restored_dir = tempfile::tempdir().expect("tempdir");
    let restored = restored_dir.path().join("lotsawa.db");
    let out = lotsawa(&["restore", copy.to_str().expect("utf-8")], &restored);
    assert!(out.status.success(), "{out:?}");
    drop(server);

    let keys = lotsawa(&["keys", "list"], &restored);
    assert!(
        String::from_utf8_lossy(&keys.stdout).contains(&key_id),
        "{keys:?}"
    );

    {
        let store = SqliteStore::open(&restored).expect("the restored file opens");
        for id in &before {
            assert_consistent(&store, id).await;
        }
    }
    let server = Server::start(&restored, &provider, 3, &[]);
    // What the backup caught pending or processing runs to completion.
    for id in &before {
        let job = server
            .api
            .wait_status(id, "completed", JOB_TIMEOUT)
            .await
            .expect("completes after the restore");
        assert_eq!(job["chunksCompleted"], job["chunksTotal"]);
    }
}

#[test]
fn a_second_server_on_one_database_is_refused() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let provider = runtime.block_on(FakeProvider::start());
    let (_dir, db) = temp_db();
    let _first = Server::start(&db, &provider, 1, &[]);
    let second = Command::new(env!("CARGO_BIN_EXE_lotsawa"))
        .arg("serve")
        .env("LOTSAWA_BIND", "127.0.0.1:0")
        .env("LOTSAWA_DB", &db)
        .env_remove("LOTSAWA_CONFIG")
        .output()
        .expect("run");
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("another lotsawa server is running"), "{said}");
}
