//! The dashboard in headless Chromium through the emulated API Gateway.

use super::*;

/// The dashboard through API Gateway in headless Chromium: `GET {ApiUrl}/`
/// renders without a key (page, assets and config are open routes), the
/// page's API calls pass the authorizer with the key it keeps, and a job
/// page opened while the job runs fills in chunk by chunk from the stream
/// function's URL (an EventSource with the key in its query), in order.
pub(crate) async fn the_dashboard_works_through_api_gateway(c: &Cloud) {
    use fantoccini::{ClientBuilder, Locator};
    let api = &c.ctx.api;
    let base = c.em.var("API_URL");
    let root = reqwest::get(format!("{base}/")).await.expect("GET /");
    assert_eq!(root.status().as_u16(), 200, "GET {{ApiUrl}}/ without a key");
    for asset in ["/assets/app.js", "/assets/app.css", "/assets/config.json"] {
        let r = reqwest::get(format!("{base}{asset}")).await.expect("asset");
        assert_eq!(r.status().as_u16(), 200, "{asset} without a key");
    }
    let config: Value = reqwest::get(format!("{base}/assets/config.json"))
        .await
        .expect("config")
        .json()
        .await
        .expect("config json");
    assert_eq!(config["streamUrl"], c.em.var("STREAM_URL"), "{config}");

    let profile = tempfile::tempdir().expect("profile");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let mut driver = Command::new(
        std::env::var("LOTSAWA_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into()),
    )
    .arg(format!("--port={port}"))
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("start chromedriver");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": std::env::var("LOTSAWA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let browser = loop {
        let http = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(http)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(b) => break b,
            Err(e) => {
                assert!(Instant::now() < deadline, "chromedriver did not start: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let outcome = async {
        browser
            .goto(&format!("{base}/"))
            .await
            .expect("open the page");
        // The page asks for a key (keys are required): give it one, as the
        // key dialog does.
        browser
            .find(Locator::Css("#key-input"))
            .await
            .expect("the page asks for a key");
        browser
            .execute(
                "sessionStorage.setItem('lotsawa-key', arguments[0]); return true;",
                vec![json!(c.em.var("API_KEY"))],
            )
            .await
            .expect("keep the key");
        c.ctx.provider.set_delay_ms(700);
        let (text, chunks, size) = numbered_text("dash-", 6);
        let id = api
            .submit(&text, json!({"chunkSize": size}))
            .await
            .expect("submit");
        browser
            .goto(&format!("{base}/jobs/{id}"))
            .await
            .expect("open the job page");
        let script = r#"return Array.from(document.querySelectorAll('[data-chunk]')).map(
            cell => (cell.querySelector('.translation') || {textContent: ''}).textContent);"#;
        let expected: Vec<String> = chunks
            .iter()
            .map(|c| lotsawa_apitests::provider::fake_translation(c))
            .collect();
        let mut partial = 0;
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            let shown: Vec<String> = browser
                .execute(script, vec![])
                .await
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            let filled = shown.iter().take_while(|t| !t.trim().is_empty()).count();
            let any = shown.iter().filter(|t| !t.trim().is_empty()).count();
            assert_eq!(filled, any, "chunks fill in order: {shown:?}");
            for (got, want) in shown.iter().zip(&expected).take(filled) {
                assert_eq!(got.trim(), want.trim());
            }
            if filled > 0 && filled < expected.len() {
                partial += 1;
            }
            if filled == expected.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the job page did not fill in: {shown:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c.ctx.provider.set_delay_ms(0);
        assert!(
            partial >= 2,
            "the page showed the job part done only {partial} times: events arrived in a block"
        );
        eprintln!("dashboard through API Gateway: {partial} partial views before the last chunk");
    }
    .await;
    let _ = browser.close().await;
    let _ = driver.kill();
    let _ = driver.wait();
    outcome
}
