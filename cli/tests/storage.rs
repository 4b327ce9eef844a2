//! Storage faults through the real binary: the database on a small tmpfs
//! that fills up, then on one remounted read-only. The server answers 503
//! problem+json naming the cause (never a 500), keeps serving reads, loses
//! no accepted job, and carries on once the storage takes writes again.
//! Needs the right to mount (root in a container that allows it); without
//! it the test prints why it is skipped.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lotsawa_apitests::FakeProvider;
use lotsawa_apitests::suite::JOB_TIMEOUT;
use serde_json::json;

mod support;

use support::Server;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Result<Self, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self(dir.to_path_buf()))
    }

    fn remount(&self, options: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "remount {options}: {out:?}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_then_read_only_disk_refuses_writes_clearly_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mount = match Mount::tmpfs(dir.path(), "640k") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED storage faults: cannot mount a tmpfs here ({why})");
            return;
        }
    };
    let db = dir.path().join("lotsawa.db");
    let provider = FakeProvider::start().await;
    let server = Server::start(&db, &provider, 3, &[]);
    let api = &server.api;

    // Fill the disk with accepted jobs until the server refuses one.
    let filler = "ཀ་ཁ་ག་ང་། ".repeat(600);
    let mut accepted = Vec::new();
    let refusal = loop {
        assert!(accepted.len() < 400, "640 KiB never filled up");
        let (status, body, _) = api
            .post_job(&json!({"sourceText": filler, "config": {"engine": "echo"}}))
            .await
            .expect("post");
        match status {
            202 => accepted.push(body["jobId"].as_str().expect("id").to_owned()),
            _ => break (status, body),
        }
    };
    let (status, body) = refusal;
    assert_eq!(status, 503, "a full disk is 503, not 500: {body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("disk is full")),
        "{body}"
    );
    eprintln!(
        "storage: {} jobs accepted before the disk filled; then 503 \"{}\"",
        accepted.len(),
        body["detail"].as_str().unwrap_or("")
    );
    let (status, _, _) = api
        .request(reqwest::Method::GET, "/api/jobs?limit=5")
        .await
        .expect("list");
    assert_eq!(status, 200, "reads go on while the disk is full");

    // Room again: every accepted job completes, new ones are taken.
    mount.remount("size=64m");
    for id in &accepted {
        api.wait_status(id, "completed", JOB_TIMEOUT)
            .await
            .expect("an accepted job completes");
    }
    let id = api
        .submit("ཀ་ཁ། ", json!({"engine": "echo"}))
        .await
        .expect("submit with room");
    api.wait_status(&id, "completed", JOB_TIMEOUT)
        .await
        .expect("completes");

    // Read-only: the server starts and serves reads; writes are refused
    // with their own reason.
    server.kill9();
    mount.remount("ro");
    let server = Server::start(&db, &provider, 3, &[]);
    let (status, body, _) = server
        .api
        .post_job(&json!({"sourceText": "ཀ་ཁ། ", "config": {"engine": "echo"}}))
        .await
        .expect("post");
    assert_eq!(status, 503, "a read-only disk is 503, not 500: {body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("read-only")),
        "{body}"
    );
    eprintln!(
        "storage: read-only: 503 \"{}\"",
        body["detail"].as_str().unwrap_or("")
    );
    let job = server
        .api
        .job(&id)
        .await
        .expect("a read on a read-only disk");
    assert_eq!(job["status"], "completed");
    server.kill9();
    mount.remount("rw");

    // A restart on the same file finds every job, intact, and takes more.
    let server = Server::start(&db, &provider, 3, &[]);
    let id2 = server
        .api
        .submit("ཀ་ཁ། ", json!({"engine": "echo"}))
        .await
        .expect("writable again");
    server
        .api
        .wait_status(&id2, "completed", JOB_TIMEOUT)
        .await
        .expect("completes");
    for id in accepted.iter().chain([&id, &id2]) {
        let job = server.api.job(id).await.expect("after a restart");
        assert_eq!(job["status"], "completed", "{job}");
    }
    drop(server);
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(mount);
}
