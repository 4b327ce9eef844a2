//! `lotsawa watch` end to end: the real binary watches a directory and talks
//! to a real server (with the fake provider); each file becomes one job,
//! once, across a killed watcher and a lost state file, and a file still
//! being written is not taken half-done.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lotsawa_apitests::FakeProvider;
use lotsawa_apitests::provider::fake_translation;

mod support;

use support::{Server, temp_db};

fn watcher(dir: &Path, url: &str, once: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lotsawa"));
    cmd.arg("watch")
        .arg(dir)
        .args([
            "--server",
            url,
            "--interval-ms",
            "100",
            "--settle-ms",
            "300",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if once {
        cmd.arg("--once");
    }
    cmd.spawn().expect("start the watcher")
}

fn text(tag: &str) -> String {
    format!("{tag} བྱང་ཆུབ་སེམས་དཔའ།\n")
}

fn wait_for(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn result_json(dir: &Path, stem: &str) -> serde_json::Value {
    let bytes = std::fs::read(dir.join(format!("results/{stem}.json"))).expect("result json");
    serde_json::from_slice(&bytes).expect("json")
}

async fn job_count(server: &Server) -> usize {
    let (status, _, body) = server
        .api
        .request(reqwest::Method::GET, "/api/jobs?limit=100")
        .await
        .expect("list");
    assert_eq!(status, 200, "{body}");
    body["jobs"].as_array().expect("jobs").len()
}

#[tokio::test]
async fn a_watched_directory_makes_one_job_per_file_across_restarts() {
    let provider = FakeProvider::start().await;
    let (_db_dir, db) = temp_db();
    let server = Server::start(&db, &provider, 2, &[]);
    let inbox = tempfile::tempdir().expect("inbox");
    let dir = inbox.path();
    let timeout = Duration::from_secs(60);

    // Two files, then the watcher.
    std::fs::write(dir.join("a.txt"), text("wa")).expect("write");
    std::fs::write(dir.join("b.txt"), text("wb")).expect("write");
    std::fs::write(dir.join("ignored.md"), text("wm")).expect("write");
    let mut first = watcher(dir, &server.url, false);
    // The record is written after the translation: once it is there, both are.
    wait_for(&dir.join("results/a.json"), timeout);
    wait_for(&dir.join("results/b.json"), timeout);
    for (stem, tag) in [("a", "wa"), ("b", "wb")] {
        let en = std::fs::read_to_string(dir.join(format!("results/{stem}.en.txt")))
            .expect("translation");
        assert_eq!(en.trim(), fake_translation(&text(tag)));
        let job = result_json(dir, stem);
        assert_eq!(job["status"], "completed");
    }
    // A file being written while the watcher runs: appended to for a while,
    // each write before the settle time runs out.
    let growing = dir.join("c.txt");
    let mut content = String::new();
    for i in 0..8 {
        content.push_str(&text(&format!("wc{i}")));
        std::fs::write(&growing, &content).expect("write");
        std::thread::sleep(Duration::from_millis(120));
    }
    wait_for(&dir.join("results/c.json"), timeout);
    let en = std::fs::read_to_string(dir.join("results/c.en.txt")).expect("translation");
    assert_eq!(
        en.trim(),
        fake_translation(&content),
        "the whole file was taken, not a part of it"
    );

    // The watcher dies; meanwhile a file arrives and one that is not text.
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    std::fs::write(dir.join("d.txt"), text("wd")).expect("write");
    std::fs::write(dir.join("e.txt"), [0xff, 0xfe, 0x00, 0x01]).expect("write");
    // Back with --once: it takes what is new, waits for it, and exits 0.
    let status = watcher(dir, &server.url, true).wait().expect("watcher");
    assert!(status.success(), "{status}");
    assert_eq!(result_json(dir, "d")["status"], "completed");
    let refused = result_json(dir, "e");
    assert_eq!(refused["status"], "refused");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("UTF-8"))
    );
    assert!(!dir.join("results/e.en.txt").exists());
    assert_eq!(job_count(&server).await, 4, "a, b, c, d: once each");

    // The state file is lost: every file is offered again, and the server
    // answers each with its first job (same idempotency key).
    std::fs::remove_file(dir.join(".lotsawa-watch.json")).expect("rm state");
    let status = watcher(dir, &server.url, true).wait().expect("watcher");
    assert!(status.success(), "{status}");
    assert_eq!(job_count(&server).await, 4, "no file was submitted twice");

    // A changed file is a new version: one more job.
    std::fs::write(dir.join("a.txt"), text("wa2")).expect("write");
    let status = watcher(dir, &server.url, true).wait().expect("watcher");
    assert!(status.success(), "{status}");
    assert_eq!(job_count(&server).await, 5);
    let en = std::fs::read_to_string(dir.join("results/a.en.txt")).expect("translation");
    assert_eq!(en.trim(), fake_translation(&text("wa2")));
}

#[test]
fn watch_refuses_a_missing_directory() {
    let out = Command::new(env!("CARGO_BIN_EXE_lotsawa"))
        .args([
            "watch",
            "/nonexistent/inbox",
            "--server",
            "http://127.0.0.1:9",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a directory"), "{err}");
}

fn lotsawa(args: &[&str], url: &str, stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lotsawa"))
        .args(args)
        .args(["--server", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lotsawa");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("output")
}

#[tokio::test]
async fn submit_wait_json_and_result_drive_a_pipeline() {
    let provider = FakeProvider::start().await;
    let (_db_dir, db) = temp_db();
    let server = Server::start(&db, &provider, 2, &[]);
    let files = tempfile::tempdir().expect("files");
    let file = files.path().join("verse.txt");
    std::fs::write(&file, text("pw")).expect("write");
    let path = file.to_str().expect("path");

    // --wait: no bar, the translation on stdout, exit 0.
    let out = lotsawa(&["submit", path, "--wait"], &server.url, None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(stdout.trim(), fake_translation(&text("pw")));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains('['),
        "no progress bar"
    );

    // --wait --json from stdin: one JSON object, the job.
    let out = lotsawa(
        &["submit", "-", "--wait", "--json"],
        &server.url,
        Some(&text("pj")),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(job["status"], "completed");
    let id = job["id"].as_str().expect("id").to_owned();

    // result: the translation text only.
    let out = lotsawa(&["result", &id], &server.url, None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).expect("utf-8").trim(),
        fake_translation(&text("pj"))
    );

    // A job that fails: exit 3 from --wait and from result.
    provider.start_outage(400, "0");
    let out = lotsawa(
        &["submit", "-", "--wait", "--json"],
        &server.url,
        Some(&text("pf")),
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let failed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(failed["status"], "failed");
    let failed_id = failed["id"].as_str().expect("id");
    let out = lotsawa(&["result", failed_id], &server.url, None);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stdout.is_empty());
    provider.end_outage();

    // No such job, and no server: exit 1 with a plain message.
    let out = lotsawa(
        &["result", "00000000-0000-4000-8000-000000000000"],
        &server.url,
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = lotsawa(&["submit", path, "--wait"], "http://127.0.0.1:9", None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

#[tokio::test]
async fn several_files_make_one_batch_followed_as_one() {
    let provider = FakeProvider::start().await;
    let (_db_dir, db) = temp_db();
    let server = Server::start(&db, &provider, 2, &[]);
    let files = tempfile::tempdir().expect("files");
    // Files of new texts each time (a text seen before is served from the
    // translation memory, without the provider).
    let write = |tags: [&str; 3]| -> Vec<String> {
        tags.iter()
            .map(|tag| {
                let file = files.path().join(format!("{tag}.txt"));
                std::fs::write(&file, text(tag)).expect("write");
                file.to_str().expect("path").to_owned()
            })
            .collect()
    };
    let paths = write(["ba", "bb", "bc"]);
    let submit = |paths: &[String], more: &[&str]| -> Vec<String> {
        ["submit"]
            .iter()
            .map(|a| (*a).to_owned())
            .chain(paths.iter().cloned())
            .chain(more.iter().map(|a| (*a).to_owned()))
            .collect()
    };
    let args: Vec<String> = submit(&paths, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // --wait --json: one JSON object, the batch, with an item per file.
    let mut wait = args.clone();
    wait.extend(["--wait", "--json"]);
    let out = lotsawa(&wait, &server.url, None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let batch: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(batch["counts"]["completed"], 3, "{batch}");
    let items = batch["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    for (item, path) in items.iter().zip(&paths) {
        assert_eq!(item["name"], path.as_str(), "named by their paths");
        let id = item["jobId"].as_str().expect("job id");
        let out = lotsawa(&["result", id], &server.url, None);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    let id = batch["id"].as_str().expect("id").to_owned();

    // batch status: the same batch; batch retry of a completed batch
    // changes nothing.
    let out = lotsawa(&["batch", "status", &id, "--json"], &server.url, None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["id"], id.as_str());
    assert_eq!(status["progress"], 100);
    let out = lotsawa(&["batch", "retry", &id], &server.url, None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("completed"));

    // A batch whose items fail: exit 3, a line per file.
    provider.start_outage(400, "0");
    let failing = submit(&write(["fa", "fb", "fc"]), &["--wait"]);
    let failing: Vec<&str> = failing.iter().map(String::as_str).collect();
    let out = lotsawa(&failing, &server.url, None);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with("failed")), "{stdout}");
    provider.end_outage();

    // A batch cancelled while `submit --wait` follows it: exit 4.
    provider.set_delay_ms(2000);
    let (_, _, before) = server
        .api
        .request(reqwest::Method::GET, "/api/batches?limit=100")
        .await
        .expect("list");
    let known: Vec<String> = before["batches"]
        .as_array()
        .expect("batches")
        .iter()
        .filter_map(|b| b["id"].as_str().map(str::to_owned))
        .collect();
    let waiter = {
        let (url, args) = (
            server.url.clone(),
            submit(&write(["ca", "cb", "cc"]), &["--wait"]),
        );
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            lotsawa(&args, &url, None)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let cancelled_id = loop {
        let (_, _, page) = server
            .api
            .request(reqwest::Method::GET, "/api/batches?limit=1")
            .await
            .expect("list");
        let newest = page["batches"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !newest.is_empty() && !known.contains(&newest) {
            break newest;
        }
        assert!(
            Instant::now() < deadline,
            "the waiting batch never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = lotsawa(&["batch", "cancel", &cancelled_id], &server.url, None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = waiter.join().expect("the waiting submit");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    provider.set_delay_ms(0);

    // An unknown batch: exit 1 with a plain message.
    let out = lotsawa(
        &["batch", "status", "00000000-0000-4000-8000-000000000000"],
        &server.url,
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no batch"));
}
