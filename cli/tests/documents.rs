//! PDFs through the CLI: `lotsawa submit file.pdf`, a batch of a PDF and a
//! text file, `lotsawa translate file.pdf` in-process, and `lotsawa watch`
//! taking a PDF and recording why it refuses a scan. The PDFs are made by
//! the tests (headless Chromium, LibreOffice).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lotsawa_apitests::FakeProvider;
use lotsawa_apitests::pdfgen::{self, Doc, Font, Producer};

mod support;

use support::{Server, temp_db};

fn lotsawa(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lotsawa"))
        .args(args)
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("run lotsawa")
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_translate_and_watch_take_pdfs() {
    let provider = FakeProvider::start().await;
    let (dir, db) = temp_db();
    let server = Server::start(&db, &provider, 2, &[]);
    let base = server.api.base.clone();
    let pdf = dir.path().join("sutra.pdf");
    std::fs::write(
        &pdf,
        pdfgen::pdf(Doc::MultiPage, Font::Noto, Producer::LibreOffice),
    )
    .expect("write");
    let text = dir.path().join("verse.txt");
    std::fs::write(&text, "བྱང་ཆུབ་སེམས་དཔའ།\n").expect("write");

    // One PDF: a job, waited for, as JSON.
    let (p, b) = (pdf.clone(), base.clone());
    let out = tokio::task::spawn_blocking(move || {
        lotsawa(&[
            "submit",
            path(&p),
            "--wait",
            "--json",
            "--engine",
            "offline",
            "--server",
            &b,
        ])
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("job JSON");
    assert_eq!(job["status"], "completed", "{job}");
    assert!(
        job["sourcePages"].as_array().is_some_and(|p| p.len() >= 2),
        "{job}"
    );

    // A PDF and a text file: one batch.
    let (p, t, b) = (pdf.clone(), text.clone(), base.clone());
    let out = tokio::task::spawn_blocking(move || {
        lotsawa(&[
            "submit",
            path(&p),
            path(&t),
            "--wait",
            "--engine",
            "offline",
            "--server",
            &b,
        ])
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A scan is refused with the reason, and the command fails.
    let scan = dir.path().join("scan.pdf");
    std::fs::write(&scan, pdfgen::scanned_pdf()).expect("write");
    let (s, b) = (scan.clone(), base.clone());
    let out = tokio::task::spawn_blocking(move || lotsawa(&["submit", path(&s), "--server", &b]))
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("OCR"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // In-process, no server.
    let out = lotsawa(&["translate", path(&pdf), "--engine", "offline", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("job JSON");
    assert_eq!(job["status"], "completed", "{job}");
    let out = lotsawa(&["translate", path(&scan), "--engine", "offline"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("OCR"));

    // The inbox: a PDF becomes a job, a scan a refusal record.
    let inbox = tempfile::tempdir().expect("inbox");
    std::fs::copy(&pdf, inbox.path().join("sutra.pdf")).expect("copy");
    std::fs::copy(&scan, inbox.path().join("scan.pdf")).expect("copy");
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_lotsawa"))
        .arg("watch")
        .arg(inbox.path())
        .args([
            "--server",
            &base,
            "--interval-ms",
            "100",
            "--settle-ms",
            "200",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("watch");
    let results = inbox.path().join("results");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !(results.join("sutra.json").exists()
        && results.join("sutra.en.txt").exists()
        && results.join("scan.json").exists())
    {
        assert!(Instant::now() < deadline, "the watcher wrote no results");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    let scan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("scan.json")).expect("read"))
            .expect("json");
    assert_eq!(scan["status"], "refused", "{scan}");
    assert!(
        scan["error"].as_str().is_some_and(|e| e.contains("OCR")),
        "{scan}"
    );
}
