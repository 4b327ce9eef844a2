//! The translator's desk on any deployment: corrections under `If-Match`
//! (428 without, 412 stale, 409 untranslated), revisions and the reviewed
//! flag, the result built from current revisions, and the exchange files:
//! TMX and XLIFF read by translate-toolkit with the same segments, states
//! and languages, an XLIFF edited through translate-toolkit imported back
//! as revisions, and units that are not the job's refused.

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Value, json};

use super::{JOB_TIMEOUT, numbered_text, unique_tag};
use crate::provider::fake_translation;
use crate::{Api, FakeProvider};

/// An answer: status, `ETag`, content type and body text.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The `ETag` header ("" when none).
    pub etag: String,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The body.
    pub text: String,
}

impl Answer {
    /// The body as JSON (null when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

/// Any request with headers and an optional body.
pub async fn send(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Answer> {
    let mut req = api.http.request(method, format!("{}{path}", api.base));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    let etag = crate::header(&res, "etag");
    let content_type = crate::header(&res, "content-type");
    let text = res.text().await?;
    Ok(Answer {
        status,
        etag,
        content_type,
        text,
    })
}

/// `PUT …/chunks/{index}/translation` with `If-Match` (when given).
async fn put(api: &Api, id: &str, index: u32, tag: Option<&str>, body: Value) -> Result<Answer> {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(t) = tag {
        headers.push(("if-match", t));
    }
    send(
        api,
        reqwest::Method::PUT,
        &format!("/api/jobs/{id}/chunks/{index}/translation"),
        &headers,
        Some(serde_json::to_vec(&body)?),
    )
    .await
}

async fn chunks(api: &Api, id: &str) -> Result<Vec<Value>> {
    let (status, _, body) = api
        .request(reqwest::Method::GET, &format!("/api/jobs/{id}/chunks"))
        .await?;
    ensure!(status == 200, "chunks: {status} {body}");
    body["chunks"]
        .as_array()
        .cloned()
        .ok_or_else(|| anyhow!("no chunks in {body}"))
}

/// The Python of the venv the test command set up (translate-toolkit).
fn python() -> Result<std::path::PathBuf> {
    let venv = std::env::var_os("LOTSAWA_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv"));
    let py = venv.join("bin/python");
    ensure!(
        py.exists(),
        "{} is missing: ./scripts/test installs translate-toolkit there",
        py.display()
    );
    Ok(py)
}

/// Run one of `tests/tools/*.py` with translate-toolkit; its stdout.
fn ttk(script: &str, args: &[&std::path::Path], extra: &[&str]) -> Result<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools")
        .join(script);
    let out = std::process::Command::new(python()?)
        .arg(&path)
        .args(args)
        .args(extra)
        .output()
        .with_context(|| format!("running {script}"))?;
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

async fn export(api: &Api, id: &str, format: &str) -> Result<Answer> {
    let a = send(
        api,
        reqwest::Method::GET,
        &format!("/api/jobs/{id}/export?format={format}"),
        &[],
        None,
    )
    .await?;
    ensure!(a.status == 200, "export {format}: {} {}", a.status, a.text);
    Ok(a)
}

async fn import(api: &Api, id: &str, content_type: &str, body: Vec<u8>) -> Result<Answer> {
    send(
        api,
        reqwest::Method::POST,
        &format!("/api/jobs/{id}/import"),
        &[("content-type", content_type)],
        Some(body),
    )
    .await
}

/// Corrections with `If-Match`, revisions, review, the corrected result.
pub async fn corrections_and_exchange(api: &Api, provider: &FakeProvider) -> Result<()> {
    provider.set_delay_ms(0);
    let (text, src, size) = numbered_text(&unique_tag("desk"), 3);
    let id = api
        .submit(&text, json!({"engine": "openai", "chunkSize": size}))
        .await?;
    api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    let list = chunks(api, &id).await?;
    ensure!(list.len() == 3, "{list:?}");
    let c1 = &list[1];
    let tag = c1["etag"].as_str().unwrap_or("").to_owned();
    ensure!(
        tag.starts_with('"') && tag.len() > 2,
        "a chunk's etag: {c1}"
    );
    ensure!(
        c1["revision"] == 1
            && c1["reviewed"] == false
            && c1["revisions"].as_array().map(Vec::len) == Some(1)
            && c1["revisions"][0]["origin"] == "engine"
            && c1["revisions"][0]["engine"] == "openai"
            && c1["revisions"][0]["current"] == true,
        "the engine's output is revision 1: {c1}"
    );
    // One chunk answers with its tag in the header.
    let one = send(
        api,
        reqwest::Method::GET,
        &format!("/api/jobs/{id}/chunks/1"),
        &[],
        None,
    )
    .await?;
    ensure!(
        one.status == 200 && one.etag == tag,
        "{} {} {}",
        one.status,
        one.etag,
        one.text
    );

    let fix = json!({"text": "Corrected one.", "note": "a better word"});
    let a = put(api, &id, 1, None, fix.clone()).await?;
    ensure!(a.status == 428, "no If-Match: {} {}", a.status, a.text);
    ensure!(
        a.content_type.starts_with("application/problem+json"),
        "{}",
        a.content_type
    );
    let a = put(api, &id, 1, Some("\"1-t9-000000000000\""), fix.clone()).await?;
    ensure!(a.status == 412, "a stale If-Match: {} {}", a.status, a.text);
    let a = put(api, &id, 1, Some(&tag), fix.clone()).await?;
    ensure!(a.status == 200, "a correction: {} {}", a.status, a.text);
    let body = a.json();
    ensure!(
        !a.etag.is_empty() && a.etag != tag && body["etag"] == a.etag.as_str(),
        "a new tag: {}",
        a.text
    );
    ensure!(
        body["translation"] == "Corrected one."
            && body["revision"] == 2
            && body["revisions"][1]["origin"] == "human"
            && body["revisions"][1]["note"] == "a better word"
            && body["revisions"][1]["createdAt"].is_string()
            && body["revisions"][0]["text"] == fake_translation(&src[1]).as_str(),
        "{body}"
    );
    // The tag read before the correction is stale now.
    let again = put(api, &id, 1, Some(&tag), json!({"text": "Lost update."})).await?;
    ensure!(again.status == 412, "{} {}", again.status, again.text);
    let tag2 = a.etag.clone();
    let a = put(api, &id, 1, Some(&tag2), json!({"reviewed": true})).await?;
    ensure!(
        a.status == 200 && a.json()["reviewed"] == true,
        "{}",
        a.text
    );
    let tag3 = a.etag.clone();

    let job = api.job(&id).await?;
    let want = format!(
        "{}\nCorrected one.\n{}",
        fake_translation(&src[0]),
        fake_translation(&src[2])
    );
    ensure!(
        job["result"]["translation"].as_str().map(str::trim_end) == Some(want.as_str()),
        "the result uses current revisions: {}",
        job["result"]
    );
    ensure!(
        job["review"] == json!({"reviewed": 1, "total": 3}),
        "{}",
        job["review"]
    );
    let (status, _, plain) = api
        .request(reqwest::Method::GET, &format!("/api/jobs/{id}/result"))
        .await?;
    ensure!(
        status == 200 && plain.as_str().is_some_and(|t| t.contains("Corrected one.")),
        "{plain}"
    );

    // Bad requests: no such revision, text and revision together, an
    // empty text, a bad index, a chunk out of range, malformed JSON.
    for (body, want) in [
        (json!({"revision": 9}), 400),
        (json!({"text": "x", "revision": 1}), 400),
        (json!({"text": "  "}), 400),
        (json!({}), 400),
        (json!({"text": 5}), 400),
        (json!({"colour": "red"}), 400),
    ] {
        let a = put(api, &id, 1, Some(&tag3), body.clone()).await?;
        ensure!(a.status == want, "{body}: {} {}", a.status, a.text);
    }
    let a = put(api, &id, 7, Some(&tag3), json!({"text": "x"})).await?;
    ensure!(a.status == 404, "{} {}", a.status, a.text);
    let a = send(
        api,
        reqwest::Method::GET,
        &format!("/api/jobs/{id}/chunks/x1"),
        &[],
        None,
    )
    .await?;
    ensure!(a.status == 400, "{} {}", a.status, a.text);
    let a = send(
        api,
        reqwest::Method::PUT,
        &format!("/api/jobs/{id}/chunks/1/translation"),
        &[("content-type", "application/json"), ("if-match", &tag3)],
        Some(b"{not json".to_vec()),
    )
    .await?;
    ensure!(a.status == 400, "{} {}", a.status, a.text);
    // Choosing revision 1 (the engine's) and back by its text.
    let a = put(api, &id, 1, Some(&tag3), json!({"revision": 1})).await?;
    ensure!(
        a.status == 200
            && a.json()["translation"] == fake_translation(&src[1]).as_str()
            && a.json()["reviewed"] == false,
        "{}",
        a.text
    );
    let a = put(
        api,
        &id,
        1,
        Some(&a.etag),
        json!({"text": "Corrected one.", "reviewed": true}),
    )
    .await?;
    ensure!(
        a.status == 200
            && a.json()["revision"] == 2
            && a.json()["revisions"].as_array().map(Vec::len) == Some(2),
        "{}",
        a.text
    );

    untranslated_chunks_refuse_corrections(api, provider).await?;
    exchange_files(api, &id, &src).await
}

/// A chunk that was never translated answers 409.
async fn untranslated_chunks_refuse_corrections(api: &Api, provider: &FakeProvider) -> Result<()> {
    let (text, _, size) = numbered_text(&unique_tag("desk409"), 1);
    provider.start_outage(400, "");
    let id = api
        .submit(&text, json!({"engine": "openai", "chunkSize": size}))
        .await;
    let waited = match &id {
        Ok(id) => api.wait_status(id, "failed", JOB_TIMEOUT).await.map(|_| ()),
        Err(_) => Ok(()),
    };
    provider.end_outage();
    let id = id?;
    waited?;
    let c = &chunks(api, &id).await?[0];
    ensure!(
        c["translation"].is_null() && c["revisions"] == json!([]),
        "{c}"
    );
    let tag = c["etag"].as_str().unwrap_or("").to_owned();
    let a = put(api, &id, 0, Some(&tag), json!({"text": "x"})).await?;
    ensure!(
        a.status == 409,
        "an untranslated chunk: {} {}",
        a.status,
        a.text
    );
    let x = export(api, &id, "xliff").await?;
    ensure!(x.text.contains("state=\"initial\""), "{}", x.text);
    Ok(())
}

/// TMX, XLIFF and HTML exports; translate-toolkit reads them; an XLIFF it
/// edited imports back as revisions; units not of the job are refused.
async fn exchange_files(api: &Api, id: &str, src: &[String]) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tmx = export(api, id, "tmx").await?;
    ensure!(
        tmx.content_type.starts_with("application/x-tmx+xml"),
        "{}",
        tmx.content_type
    );
    let xlf = export(api, id, "xliff").await?;
    ensure!(
        xlf.content_type.starts_with("application/xliff+xml"),
        "{}",
        xlf.content_type
    );
    let html = export(api, id, "html").await?;
    ensure!(
        html.content_type.starts_with("text/html")
            && html.text.contains("lang=\"bo\"")
            && html.text.contains("Corrected one."),
        "{}",
        html.text
    );
    let bad = send(
        api,
        reqwest::Method::GET,
        &format!("/api/jobs/{id}/export?format=docx"),
        &[],
        None,
    )
    .await?;
    ensure!(bad.status == 400, "{} {}", bad.status, bad.text);

    let tmx_path = dir.path().join("job.tmx");
    std::fs::write(&tmx_path, &tmx.text)?;
    let read: Value = serde_json::from_str(&ttk("ttk_read.py", &[&tmx_path], &[])?)?;
    let units = read["units"].as_array().cloned().unwrap_or_default();
    ensure!(
        units.len() == 3,
        "translate-toolkit found {} TMX units: {read}",
        units.len()
    );
    ensure!(
        read["sourcelang"]
            .as_str()
            .is_some_and(|l| l.starts_with("bo")),
        "{read}"
    );
    ensure!(
        read["targetlang"]
            .as_str()
            .is_some_and(|l| l.starts_with("en")),
        "{read}"
    );
    for (i, u) in units.iter().enumerate() {
        ensure!(u["source"] == src[i].as_str(), "TMX unit {i} source: {u}");
    }
    ensure!(units[1]["target"] == "Corrected one.", "{}", units[1]);

    let xlf_path = dir.path().join("job.xlf");
    std::fs::write(&xlf_path, &xlf.text)?;
    let read: Value = serde_json::from_str(&ttk("ttk_read.py", &[&xlf_path], &[])?)?;
    let units = read["units"].as_array().cloned().unwrap_or_default();
    ensure!(
        units.len() == 3,
        "translate-toolkit found {} XLIFF units: {read}",
        units.len()
    );
    ensure!(
        read["sourcelang"] == "bo" && read["targetlang"] == "en",
        "{read}"
    );
    let states: Vec<&str> = units
        .iter()
        .map(|u| u["state"].as_str().unwrap_or(""))
        .collect();
    ensure!(
        states == ["translated", "final", "translated"],
        "states {states:?}"
    );
    for (i, u) in units.iter().enumerate() {
        ensure!(
            u["id"] == format!("c{i}").as_str() && u["source"] == src[i].as_str(),
            "XLIFF unit {i}: {u}"
        );
    }

    // Edited through translate-toolkit: unit c2 gets a new text and is
    // final; c0 is left as it was.
    let edited = dir.path().join("edited.xlf");
    let changes = json!({"c2": {"target": "Imported two.", "state": "final"}}).to_string();
    ttk("ttk_edit.py", &[&xlf_path, &edited], &[&changes])?;
    let a = import(api, id, "application/xliff+xml", std::fs::read(&edited)?).await?;
    ensure!(a.status == 200, "import: {} {}", a.status, a.text);
    let report = a.json();
    ensure!(
        report["updated"] == json!([2]) && report["reviewed"] == json!([2]),
        "{report}"
    );
    let c2 = &chunks(api, id).await?[2];
    ensure!(
        c2["translation"] == "Imported two."
            && c2["reviewed"] == true
            && c2["revisions"][1]["origin"] == "human",
        "{c2}"
    );
    // The same file again changes nothing.
    let a = import(api, id, "application/xliff+xml", std::fs::read(&edited)?).await?;
    ensure!(
        a.status == 200 && a.json()["updated"] == json!([]),
        "{}",
        a.text
    );

    // Units that are not the job's chunks: nothing imported.
    let foreign = xlf.text.replace("id=\"c2\"", "id=\"c9\"");
    let a = import(api, id, "application/xliff+xml", foreign.into_bytes()).await?;
    ensure!(
        a.status == 422,
        "a unit of no chunk: {} {}",
        a.status,
        a.text
    );
    let a = import(api, id, "text/plain", xlf.text.clone().into_bytes()).await?;
    ensure!(a.status == 415, "{} {}", a.status, a.text);
    let a = import(api, id, "application/xliff+xml", b"<not xliff".to_vec()).await?;
    ensure!(a.status == 400, "{} {}", a.status, a.text);
    let a = import(
        api,
        id,
        "application/xliff+xml",
        b"<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e \"boom\">]><xliff/>".to_vec(),
    )
    .await?;
    ensure!(
        a.status == 400,
        "a DOCTYPE is refused: {} {}",
        a.status,
        a.text
    );
    Ok(())
}
