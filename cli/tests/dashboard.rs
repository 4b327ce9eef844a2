//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (Debian's chromium and chromium-driver, which the test command
//! installs) against the real `lotsawa serve` with the fake provider.
//! Submit, bad input, chunks arriving in order, a dropped stream (the
//! server killed and restarted under the page), cancel, retry and the
//! API's refusal shown; screenshots of the queue and job views at desktop
//! and phone width (`LOTSAWA_UPDATE_SCREENSHOTS=1` writes them to docs/).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use lotsawa_apitests::FakeProvider;
use lotsawa_apitests::provider::fake_translation;
use lotsawa_apitests::suite::numbered_text;
use serde_json::json;

mod support;

use support::{Server, temp_db};

const WAIT: Duration = Duration::from_secs(60);

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn program(var: &str, default: &str) -> PathBuf {
    let p = std::env::var(var).map_or_else(|_| PathBuf::from(default), PathBuf::from);
    assert!(
        p.exists(),
        "{} is missing: install Debian's chromium and chromium-driver (scripts/test does), \
         or point {var} at it",
        p.display()
    );
    p
}

async fn browser(profile: &Path) -> (Driver, Client) {
    let driver = program("LOTSAWA_CHROMEDRIVER", "/usr/bin/chromedriver");
    let chromium = program("LOTSAWA_CHROMIUM", "/usr/bin/chromium");
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        let http = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(http)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "chromedriver did not start: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    (driver, client)
}

/// Poll `f` until it gives `Some`, or fail with `what` after [`WAIT`].
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

/// The translations shown per chunk index, in the page's order, read in
/// one script call so the snapshot is not torn by an update between reads.
async fn shown_chunks(c: &Client) -> Vec<(u32, String)> {
    let script = r#"return Array.from(document.querySelectorAll('[data-chunk]')).map(
        cell => [Number(cell.getAttribute('data-chunk')),
                 (cell.querySelector('.translation') || {textContent: ''}).textContent]);"#;
    let Ok(value) = c.execute(script, vec![]).await else {
        return Vec::new();
    };
    value
        .as_array()
        .map(|cells| {
            cells
                .iter()
                .map(|cell| {
                    (
                        cell[0].as_u64().map_or(u32::MAX, |i| i as u32),
                        cell[1].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn submit_text(c: &Client, base: &str, text: &str, chunk_size: u32) -> String {
    c.goto(&format!("{base}/")).await.expect("open the queue");
    let area = until("the submit form", || async {
        c.find(Locator::Css("#s-text")).await.ok()
    })
    .await;
    area.send_keys(text).await.expect("type the text");
    c.find(Locator::Css("#s-chunk"))
        .await
        .expect("chunk size")
        .send_keys(&chunk_size.to_string())
        .await
        .expect("type the size");
    c.find(Locator::Css("#submit-form button[type=submit]"))
        .await
        .expect("submit button")
        .click()
        .await
        .expect("click submit");
    until("the job page", || async {
        let url = c.current_url().await.ok()?;
        url.path()
            .strip_prefix("/jobs/")
            .map(str::to_owned)
            .filter(|id| id.len() == 36)
    })
    .await
}

/// Click the element `css` finds, finding it again if the page replaced it
/// meanwhile.
async fn click(c: &Client, css: &str) {
    until(css, || async {
        let e = c.find(Locator::Css(css)).await.ok()?;
        e.click().await.ok()
    })
    .await;
}

async fn screenshot(c: &Client, name: &str, out: &Path) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(out.join(name), png).expect("write the screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_submits_streams_cancels_and_retries_in_a_browser() {
    let provider = FakeProvider::start().await;
    let (_db_dir, db) = temp_db();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let server = Server::start(&db, &provider, 1, &[("LOTSAWA_BIND", &bind)]);
    let base = server.url.clone();
    let profile = tempfile::tempdir().expect("profile");
    let (_driver, c) = browser(profile.path()).await;
    let shots = if std::env::var("LOTSAWA_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
    } else {
        tempfile::tempdir().expect("shots").keep()
    };
    std::fs::create_dir_all(&shots).expect("screenshot folder");

    // Bad input: the problem's detail is shown.
    c.goto(&format!("{base}/")).await.expect("open");
    until("the submit form", || async {
        c.find(Locator::Css("#submit-form")).await.ok()
    })
    .await;
    let (status, _, body) = server
        .api
        .request(reqwest::Method::GET, "/healthz")
        .await
        .expect("health");
    assert_eq!(status, 200, "{body}");
    // A model name longer than the API takes (the browser's own checks
    // pass it).
    c.find(Locator::Css("#s-model"))
        .await
        .expect("model")
        .send_keys(&"m".repeat(201))
        .await
        .expect("type");
    c.find(Locator::Css("#s-text"))
        .await
        .expect("text")
        .send_keys("ཀ་ཁ།")
        .await
        .expect("type");
    c.find(Locator::Css("#submit-form button[type=submit]"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    let shown = until("the error", || async {
        text_of(&c, "#submit-error").await.filter(|t| !t.is_empty())
    })
    .await;
    assert!(
        shown.contains("config.model must be 1 to 200 characters"),
        "the API's detail: {shown}"
    );

    // Chunks arrive in order, side by side with their source.
    provider.set_delay_ms(250);
    let (text, chunks, size) = numbered_text("dash-", 6);
    let id = submit_text(&c, &base, &text, size).await;
    let seen_filled = std::sync::atomic::AtomicUsize::new(0);
    let finished = until("every chunk translated", || async {
        let shown = shown_chunks(&c).await;
        let filled = shown.iter().filter(|(_, t)| !t.is_empty()).count();
        // Filled cells are always a prefix: chunk i never shows before i-1.
        let prefix = shown.iter().take_while(|(_, t)| !t.is_empty()).count();
        assert_eq!(prefix, filled, "chunks filled out of order: {shown:?}");
        let before = seen_filled.swap(filled, std::sync::atomic::Ordering::SeqCst);
        assert!(filled >= before, "a chunk disappeared: {shown:?}");
        (filled == chunks.len()).then_some(shown)
    })
    .await;
    for (i, (index, t)) in finished.iter().enumerate() {
        assert_eq!(*index as usize, i);
        assert_eq!(t, &fake_translation(&chunks[i]), "chunk {i}");
    }
    until("completed", || async {
        text_of(&c, "#job-status")
            .await
            .filter(|s| s == "completed")
    })
    .await;
    let src = text_of(&c, "#chunks .src.tibetan")
        .await
        .unwrap_or_default();
    assert!(src.contains("བྱང་ཆུབ"), "the Tibetan source beside it: {src}");
    screenshot(&c, "dashboard-job-desktop.png", &shots).await;
    c.set_window_size(390, 844).await.expect("phone width");
    screenshot(&c, "dashboard-job-phone.png", &shots).await;
    c.set_window_size(1280, 900).await.expect("desktop width");
    // The EWTS toggle shows the source transliterated.
    c.find(Locator::Css("#ewts-toggle"))
        .await
        .expect("toggle")
        .click()
        .await
        .expect("click");
    let ewts = until("EWTS", || async {
        text_of(&c, "#chunks .chunk:not(.head) .src")
            .await
            .filter(|t| t.is_ascii())
    })
    .await;
    assert!(ewts.contains("byang chub"), "EWTS source: {ewts}");
    let downloads = c
        .find_all(Locator::Css("a[download]"))
        .await
        .expect("links");
    assert_eq!(downloads.len(), 2, ".txt and .json");
    assert!(id.len() == 36);

    // A dropped stream: the server dies mid-job and comes back on the same
    // address; the page reconnects (Last-Event-ID) and misses no chunk.
    provider.set_delay_ms(400);
    let (text, chunks, size) = numbered_text("drop-", 8);
    let id = submit_text(&c, &base, &text, size).await;
    until("two chunks", || async {
        let n = shown_chunks(&c)
            .await
            .iter()
            .filter(|(_, t)| !t.is_empty())
            .count();
        (n >= 2).then_some(())
    })
    .await;
    server.kill9();
    let server = Server::start(&db, &provider, 1, &[("LOTSAWA_BIND", &bind)]);
    let finished = until("every chunk after the restart", || async {
        let shown = shown_chunks(&c).await;
        let filled = shown.iter().filter(|(_, t)| !t.is_empty()).count();
        (filled == chunks.len()).then_some(shown)
    })
    .await;
    for (i, (index, t)) in finished.iter().enumerate() {
        assert_eq!(
            *index as usize, i,
            "no chunk twice, none missing: {finished:?}"
        );
        assert_eq!(t, &fake_translation(&chunks[i]), "chunk {i} of {id}");
    }

    // Cancel and retry from the queue, and the API's refusal shown.
    provider.set_delay_ms(1500);
    let (text, _, size) = numbered_text("queue-", 4);
    let id = server
        .api
        .submit(&text, json!({"chunkSize": size}))
        .await
        .expect("submit");
    c.goto(&format!("{base}/")).await.expect("queue");
    click(
        &c,
        &format!("tr[data-job='{id}'] button[aria-label^='Cancel']"),
    )
    .await;
    let retry = format!("tr[data-job='{id}'] button[aria-label^='Retry']");
    until("the retry button", || async {
        c.find(Locator::Css(&retry)).await.ok()
    })
    .await;
    assert_eq!(
        server.api.job(&id).await.expect("job")["status"],
        "cancelled"
    );
    // Retried elsewhere meanwhile: the page's retry is refused, and says why.
    let (status, _, _) = server
        .api
        .request(reqwest::Method::POST, &format!("/api/jobs/{id}/retry"))
        .await
        .expect("retry");
    assert_eq!(status, 200);
    click(&c, &retry).await;
    let refusal = until("the refusal", || async {
        text_of(&c, "#queue-error").await.filter(|t| !t.is_empty())
    })
    .await;
    assert!(
        refusal.contains("only failed or cancelled jobs can be retried"),
        "{refusal}"
    );
    provider.set_delay_ms(20);
    server
        .api
        .wait_status(&id, "completed", WAIT)
        .await
        .expect("the retried job completes");
    c.goto(&format!("{base}/")).await.expect("queue");
    until("the jobs table", || async {
        c.find(Locator::Css("tr[data-job]")).await.ok()
    })
    .await;
    screenshot(&c, "dashboard-queue-desktop.png", &shots).await;
    c.set_window_size(390, 844).await.expect("phone width");
    screenshot(&c, "dashboard-queue-phone.png", &shots).await;
    c.close().await.expect("close the browser");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_submits_a_pdf_and_offers_its_pages() {
    use lotsawa_apitests::pdfgen::{self, Doc, Font, Producer};
    let provider = FakeProvider::start().await;
    let (db_dir, db) = temp_db();
    let server = Server::start(&db, &provider, 2, &[]);
    let base = server.url.clone();
    let pdf = db_dir.path().join("sutra.pdf");
    std::fs::write(
        &pdf,
        pdfgen::pdf(Doc::MultiPage, Font::Noto, Producer::Chromium),
    )
    .expect("write");
    let scan = db_dir.path().join("scan.pdf");
    std::fs::write(&scan, pdfgen::scanned_pdf()).expect("write");
    let profile = tempfile::tempdir().expect("profile");
    let (_driver, c) = browser(profile.path()).await;

    // A scan: the server's reason is shown, and nothing is queued.
    c.goto(&format!("{base}/")).await.expect("open");
    let files = until("the file input", || async {
        c.find(Locator::Css("#s-files")).await.ok()
    })
    .await;
    files
        .send_keys(scan.to_str().unwrap_or_default())
        .await
        .expect("choose the scan");
    click(&c, "#submit-form button[type=submit]").await;
    let shown = until("the refusal", || async {
        text_of(&c, "#submit-error").await.filter(|t| !t.is_empty())
    })
    .await;
    assert!(shown.contains("OCR"), "{shown}");

    // A PDF: its job page fills in, and offers the result with page markers.
    c.goto(&format!("{base}/")).await.expect("open");
    let files = until("the file input", || async {
        c.find(Locator::Css("#s-files")).await.ok()
    })
    .await;
    files
        .send_keys(pdf.to_str().unwrap_or_default())
        .await
        .expect("choose the PDF");
    click(&c, "#submit-form button[type=submit]").await;
    let id = until("the job page", || async {
        let url = c.current_url().await.ok()?;
        url.path()
            .strip_prefix("/jobs/")
            .map(str::to_owned)
            .filter(|id| id.len() == 36)
    })
    .await;
    until("the download with page markers", || async {
        c.find(Locator::Css(&format!("a[download='{id}.pages.txt']")))
            .await
            .ok()
    })
    .await;
    let job = server.api.job(&id).await.expect("job");
    assert_eq!(job["status"], "completed", "{job}");
    assert!(
        job["sourcePages"].as_array().is_some_and(|p| p.len() > 1),
        "{job}"
    );
}

/// Send keys to whatever has the focus (a WebDriver key string: `\u{E007}`
/// Enter, `\u{E009}` Ctrl, `\u{E008}` Shift, `\u{E00C}` Escape, `\u{E000}`
/// releases the modifiers).
async fn keys(c: &Client, keys: &str) {
    let active = c.active_element().await.expect("the focused element");
    active.send_keys(keys).await.expect("send keys");
}

/// The focused element's `data-chunk`, or its chunk cell's.
async fn focused_chunk(c: &Client) -> Option<u32> {
    let v = c
        .execute(
            "const e = document.activeElement; const cell = e && e.closest('[data-chunk]');\
             return cell ? Number(cell.getAttribute('data-chunk')) : null;",
            vec![],
        )
        .await
        .ok()?;
    v.as_u64().map(|i| i as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_edits_reviews_retranslates_and_exchanges_by_keyboard() {
    let provider = FakeProvider::start().await;
    let (db_dir, db) = temp_db();
    let server = Server::start(&db, &provider, 2, &[]);
    let base = server.url.clone();
    let profile = tempfile::tempdir().expect("profile");
    let (_driver, c) = browser(profile.path()).await;

    // A glossary uploaded through the page, then chosen for a job.
    let tsv = db_dir.path().join("heart.tsv");
    std::fs::write(&tsv, "བྱང་ཆུབ་སེམས་དཔའ\tawakening hero\n").expect("write");
    c.goto(&format!("{base}/")).await.expect("open");
    until("the glossary form", || async {
        c.find(Locator::Css("#g-file")).await.ok()
    })
    .await
    .send_keys(tsv.to_str().unwrap_or_default())
    .await
    .expect("choose the glossary");
    c.find(Locator::Css("#g-name"))
        .await
        .expect("name")
        .send_keys("Heart")
        .await
        .expect("type");
    click(&c, "#glossary-form button[type=submit]").await;
    until("the glossary listed and offered", || async {
        let listed = text_of(&c, "#glossaries li[data-glossary]").await?;
        let offered = c
            .find(Locator::Css("#s-glossaries input[type=checkbox]"))
            .await
            .ok()?;
        listed.contains("Heart").then_some(offered)
    })
    .await
    .click()
    .await
    .expect("choose the glossary for the job");
    let (text, chunks, size) = numbered_text("desk-", 3);
    let area = c.find(Locator::Css("#s-text")).await.expect("text");
    area.send_keys(&text).await.expect("type the text");
    c.find(Locator::Css("#s-chunk"))
        .await
        .expect("chunk size")
        .send_keys(&size.to_string())
        .await
        .expect("type the size");
    click(&c, "#submit-form button[type=submit]").await;
    let id = until("the job page", || async {
        let url = c.current_url().await.ok()?;
        url.path()
            .strip_prefix("/jobs/")
            .map(str::to_owned)
            .filter(|id| id.len() == 36)
    })
    .await;
    until("every chunk translated", || async {
        let shown = shown_chunks(&c).await;
        (shown.len() == 3 && shown.iter().all(|(_, t)| !t.is_empty())).then_some(())
    })
    .await;
    let system = provider.requests_for(&chunks[0])[0]["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        system.contains("awakening hero"),
        "the chosen glossary reaches the provider: {system}"
    );

    // By keyboard only: focus chunk 0, Enter edits, Ctrl+Enter saves and
    // moves to chunk 1's editor; Ctrl+Shift+Enter saves and marks it
    // reviewed; Escape leaves chunk 2's editor; Alt+↑ goes back.
    c.execute(
        "document.querySelector('[data-chunk=\"0\"]').focus();",
        vec![],
    )
    .await
    .expect("focus chunk 0");
    keys(&c, "\u{E007}").await;
    until("chunk 0's editor focused", || async {
        c.find(Locator::Css("[data-chunk='0'] textarea.editor"))
            .await
            .ok()?;
        (focused_chunk(&c).await == Some(0)).then_some(())
    })
    .await;
    // Select the text and type over it (WebDriver's Clear would move the
    // focus away).
    keys(&c, "\u{E009}a\u{E000}Corrected zero.").await;
    keys(&c, "\u{E009}\u{E007}\u{E000}").await;
    until("chunk 1's editor focused", || async {
        (focused_chunk(&c).await == Some(1)).then_some(())
    })
    .await;
    keys(&c, "\u{E009}a\u{E000}Corrected one.").await;
    keys(&c, "\u{E009}\u{E008}\u{E007}\u{E000}").await;
    until("chunk 1 reviewed", || async {
        text_of(&c, "#job-reviewed").await.filter(|t| t == "1/3")
    })
    .await;
    until("chunk 2's editor focused", || async {
        (focused_chunk(&c).await == Some(2)).then_some(())
    })
    .await;
    keys(&c, "\u{E00C}").await;
    until("chunk 2's editor closed", || async {
        c.find(Locator::Css("[data-chunk='2'] textarea.editor"))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let shown = shown_chunks(&c).await;
    assert_eq!(shown[0].1, "Corrected zero.", "{shown:?}");
    assert_eq!(shown[1].1, "Corrected one.", "{shown:?}");
    let (_, _, stored) = server
        .api
        .request(reqwest::Method::GET, &format!("/api/jobs/{id}/chunks"))
        .await
        .expect("chunks");
    assert_eq!(
        stored["chunks"][0]["revisions"][1]["origin"], "human",
        "{stored}"
    );
    assert_eq!(stored["chunks"][1]["reviewed"], true, "{stored}");

    // Revisions side by side, and another engine on chunk 0.
    click(&c, "[data-chunk='0'] .chunk-actions button[aria-expanded]").await;
    until("two revisions side by side", || async {
        let n = c
            .find_all(Locator::Css("[data-chunk='0'] .revision"))
            .await
            .ok()?
            .len();
        (n == 2).then_some(())
    })
    .await;
    let select = c
        .find(Locator::Css("[data-chunk='0'] .retranslate select"))
        .await
        .expect("engine choice");
    select.select_by_value("offline").await.expect("offline");
    click(&c, "[data-chunk='0'] .retranslate button[type=submit]").await;
    until("the offline revision beside the others", || async {
        let n = c
            .find_all(Locator::Css("[data-chunk='0'] .revision"))
            .await
            .ok()?
            .len();
        (n == 3).then_some(())
    })
    .await;
    let first = stored["chunks"][0]["revisions"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!first.is_empty(), "{stored}");
    click(&c, "[data-chunk='0'] .revision[data-revision='1'] button").await;
    until("revision 1 current again", || async {
        let shown = shown_chunks(&c).await;
        (shown[0].1 == first).then_some(())
    })
    .await;

    // Exchange: the export buttons, and an XLIFF edited elsewhere imported
    // through the page.
    click(&c, "#export-xliff").await;
    until("the export's report", || async {
        text_of(&c, "#import-report")
            .await
            .filter(|t| t.contains(&format!("exported {id}.xlf")))
    })
    .await;
    let xliff = server
        .api
        .http
        .get(format!("{base}/api/jobs/{id}/export?format=xliff"))
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("text");
    assert!(xliff.contains("state=\"final\""), "{xliff}");
    let third = stored["chunks"][2]["translation"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // As the XLIFF writes it: escaped.
    let escaped = third
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let edited = xliff.replace(&escaped, "Edited in a CAT tool.");
    assert_ne!(edited, xliff, "chunk 2's target is in the export");
    let file = db_dir.path().join("edited.xlf");
    std::fs::write(&file, edited).expect("write");
    c.find(Locator::Css("#xliff-file"))
        .await
        .expect("file input")
        .send_keys(file.to_str().unwrap_or_default())
        .await
        .expect("choose");
    click(&c, "#import-xliff").await;
    until("the import's report", || async {
        text_of(&c, "#import-report")
            .await
            .filter(|t| t.starts_with("1 chunks corrected"))
    })
    .await;
    until("chunk 2 shows the imported text", || async {
        let shown = shown_chunks(&c).await;
        (shown[2].1 == "Edited in a CAT tool.").then_some(())
    })
    .await;
}
