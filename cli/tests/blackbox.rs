//! Black-box tests of the real `lotsawa` binary: start it on a free port with
//! a temporary database and a fake provider, talk HTTP, kill it, restart it.

use std::process::Command;
use std::time::{Duration, Instant};

use lotsawa_apitests::FakeProvider;
use lotsawa_apitests::suite::{JOB_TIMEOUT, expected_translation, numbered_text};
use serde_json::{Value, json};

mod support;

use support::{Server, temp_db};

/// Chunks of `chunks` with index < `done` must have been translated once.
fn assert_no_completed_chunk_retranslated(
    provider: &FakeProvider,
    chunks: &[String],
    done: usize,
) -> u32 {
    for (i, c) in chunks.iter().enumerate().take(done) {
        assert_eq!(
            provider.calls_for(c),
            1,
            "chunk {i}, completed before the crash, was translated again"
        );
    }
    let extra: u32 = chunks
        .iter()
        .map(|c| provider.calls_for(c).saturating_sub(1))
        .sum();
    extra
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_job_then_restart_resumes_without_retranslating() {
    let provider = FakeProvider::start().await;
    provider.set_delay_ms(150);
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &provider, 3, &[]);
    let mut jobs = Vec::new();
    for j in 0..2 {
        let (text, chunks, size) = numbered_text(&format!("kill{j}-"), 12);
        let id = server
            .api
            .submit(&text, json!({"chunkSize": size}))
            .await
            .expect("submit");
        jobs.push((id, chunks));
    }
    let first = jobs[0].0.clone();
    server
        .api
        .wait_for(&first, JOB_TIMEOUT, |j| {
            j["chunksCompleted"].as_u64() >= Some(4)
        })
        .await
        .expect("progress");
    let mut done_before = Vec::new();
    for (id, _) in &jobs {
        let j = server.api.job(id).await.expect("job");
        done_before.push(j["chunksCompleted"].as_u64().unwrap_or(0) as usize);
    }
    server.kill9();

    provider.set_delay_ms(5);
    let server = Server::start(&db, &provider, 3, &[]);
    let mut re_translated = 0;
    for ((id, chunks), done) in jobs.iter().zip(&done_before) {
        let job = server
            .api
            .wait_status(id, "completed", JOB_TIMEOUT)
            .await
            .expect("completes after restart");
        assert_eq!(
            job["result"]["translation"],
            expected_translation(chunks).as_str()
        );
        assert_eq!(job["attempts"], 1, "a resumed job is the same run: {job}");
        re_translated += assert_no_completed_chunk_retranslated(&provider, chunks, *done);
    }
    // At most the chunks in flight at the kill (one per processing job).
    assert!(
        re_translated <= 2,
        "{re_translated} chunks translated twice"
    );
    eprintln!(
        "kill -9: completed before kill {done_before:?}; chunks re-translated after restart: {re_translated}"
    );
    let (_, _, page) = server
        .api
        .request(reqwest::Method::GET, "/api/jobs?limit=100")
        .await
        .expect("list");
    assert_eq!(
        page["jobs"].as_array().map(Vec::len),
        Some(2),
        "no job lost or duplicated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_job_finishes_in_flight_chunk_and_exits_zero() {
    let provider = FakeProvider::start().await;
    provider.set_delay_ms(300);
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &provider, 3, &[("LOTSAWA_SHUTDOWN_GRACE_MS", "5000")]);
    let (text, chunks, size) = numbered_text("term-", 10);
    let id = server
        .api
        .submit(&text, json!({"chunkSize": size}))
        .await
        .expect("submit");
    server
        .api
        .wait_for(&id, JOB_TIMEOUT, |j| {
            j["chunksCompleted"].as_u64() >= Some(2)
        })
        .await
        .expect("progress");
    let status = server.sigterm();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    // The in-flight chunk was allowed to finish and was committed: every
    // chunk called so far is completed, so none will be called again.
    let called: usize = chunks.iter().filter(|c| provider.calls_for(c) > 0).count();

    provider.set_delay_ms(5);
    let server = Server::start(&db, &provider, 3, &[]);
    let job = server.api.job(&id).await.expect("job");
    assert!(
        job["chunksCompleted"].as_u64() >= Some(called as u64) || job["status"] == "completed",
        "chunks called before SIGTERM ({called}) were not all committed: {job}"
    );
    let job = server
        .api
        .wait_status(&id, "completed", JOB_TIMEOUT)
        .await
        .expect("completes");
    assert_eq!(
        job["result"]["translation"],
        expected_translation(&chunks).as_str()
    );
    for c in &chunks {
        assert_eq!(
            provider.calls_for(c),
            1,
            "chunk translated twice across SIGTERM: {c:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_start_order_and_concurrency_limit() {
    let provider = FakeProvider::start().await;
    provider.set_delay_ms(120);
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &provider, 2, &[]);
    let mut ids = Vec::new();
    for j in 0..6 {
        let (text, _, size) = numbered_text(&format!("fifo{j}-"), 2);
        ids.push(
            server
                .api
                .submit(&text, json!({"chunkSize": size}))
                .await
                .expect("submit"),
        );
    }
    let deadline = Instant::now() + JOB_TIMEOUT;
    let mut max_processing = 0;
    loop {
        let (_, _, page) = server
            .api
            .request(
                reqwest::Method::GET,
                "/api/jobs?status=processing&limit=100",
            )
            .await
            .expect("list");
        let n = page["jobs"].as_array().map(Vec::len).unwrap_or(0);
        max_processing = max_processing.max(n);
        let (_, _, done) = server
            .api
            .request(reqwest::Method::GET, "/api/jobs?status=completed&limit=100")
            .await
            .expect("list");
        if done["jobs"].as_array().map(Vec::len) == Some(6) {
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        max_processing <= 2,
        "{max_processing} jobs processing at once with concurrency 2"
    );
    assert!(max_processing >= 1);
    let mut started = Vec::new();
    for id in &ids {
        let j: Value = server.api.job(id).await.expect("job");
        started.push(j["startedAt"].as_str().unwrap_or_default().to_owned());
    }
    let mut sorted = started.clone();
    sorted.sort();
    assert_eq!(started, sorted, "jobs did not start in FIFO order");
}

#[test]
fn bad_configuration_fails_at_start_with_the_variable_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_lotsawa"))
        .arg("serve")
        .env("LOTSAWA_CONCURRENCY", "lots")
        .env("LOTSAWA_BIND", "127.0.0.1:0")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LOTSAWA_CONCURRENCY"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submit_follow_prints_the_translation_and_reports_failure() {
    let provider = FakeProvider::start().await;
    provider.set_delay_ms(30);
    let (dir, db) = temp_db();
    let server = Server::start(&db, &provider, 3, &[]);
    let (text, chunks, size) = numbered_text("cli-", 3);
    let file = dir.path().join("text.txt");
    std::fs::write(&file, &text).expect("write");
    let bin = env!("CARGO_BIN_EXE_lotsawa");
    let base = server.api.base.clone();
    let file2 = file.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args([
                "submit",
                file2.to_str().unwrap_or_default(),
                "--follow",
                "--chunk-size",
                &size.to_string(),
                "--server",
                &base,
            ])
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        expected_translation(&chunks).trim_end()
    );

    std::fs::write(&file, "cli FAIL400 ཀ་ཁ།").expect("write");
    let base = server.api.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args([
                "submit",
                file.to_str().unwrap_or_default(),
                "--follow",
                "--server",
                &base,
            ])
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(bin)
        .args(["status", "not-a-uuid", "--server", &server.api.base])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid job id"));
}

#[test]
fn transliterate_and_translate_run_in_process_without_a_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("verse.txt");
    std::fs::write(&file, "སངས་རྒྱས་ཆོས་དང་ཚོགས་ཀྱི་མཆོག་རྣམས་ལ། །\n").expect("write");
    let bin = env!("CARGO_BIN_EXE_lotsawa");
    let out = Command::new(bin)
        .args(["transliterate", file.to_str().unwrap_or_default()])
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "sangs rgyas chos dang tshogs kyi mchog rnams la/_/"
    );
    let out = Command::new(bin)
        .args(["translate", file.to_str().unwrap_or_default()])
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .env_remove("LOTSAWA_ENGINE")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gloss = String::from_utf8_lossy(&out.stdout);
    assert!(
        gloss.contains("Buddha") && gloss.contains("assembly"),
        "{gloss}"
    );

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "  \n").expect("write");
    let out = Command::new(bin)
        .args(["translate", empty.to_str().unwrap_or_default()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("non-whitespace"));
}
