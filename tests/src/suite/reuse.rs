//! Reuse on any deployment: glossaries as resources (TSV, TBX, JSON;
//! named by jobs), a person's correction winning over engines for the same
//! source, similar segments reaching the provider as examples, a TMX taken
//! into the memory, and another engine on one chunk kept as a revision.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use serde_json::{Value, json};

use super::desk::{Answer, send};
use super::{JOB_TIMEOUT, unique_tag};
use crate::{Api, FakeProvider};

/// A line of Tibetan long enough that one changed syllable keeps it
/// similar (and unlike every other test's lines), tagged.
fn line(tag: &str, variant: &str) -> String {
    format!(
        "{tag} བཅོམ་ལྡན་འདས་རྒྱལ་པོའི་ཁབ་ན་བྱ་རྒོད་ཕུང་པོའི་རི་ལ་དགེ་སློང་གི་དགེ་འདུན་ཆེན་པོ་དང་{variant}་བྱང་ཆུབ་སེམས་དཔའི་དགེ་འདུན་ཆེན་པོ་དང་ཐབས་ཅིག་ཏུ་བཞུགས་ཏེ།\n"
    )
}

async fn upload(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    ct: &str,
    body: &str,
) -> Result<Answer> {
    send(
        api,
        method,
        path,
        &[("content-type", ct)],
        Some(body.as_bytes().to_vec()),
    )
    .await
}

async fn chunk(api: &Api, id: &str, index: u32) -> Result<Value> {
    let (status, _, body) = api
        .request(
            reqwest::Method::GET,
            &format!("/api/jobs/{id}/chunks/{index}"),
        )
        .await?;
    ensure!(status == 200, "chunk {index}: {status} {body}");
    Ok(body)
}

/// The system message the provider got for `source`'s first call.
fn system_of(provider: &FakeProvider, source: &str) -> String {
    provider
        .requests_for(source)
        .first()
        .and_then(|b| b["messages"][0]["content"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Glossaries, memory and re-translation.
pub async fn memory_glossaries_and_retranslation(api: &Api, provider: &FakeProvider) -> Result<()> {
    provider.set_delay_ms(0);
    glossaries(api, provider).await?;
    memory(api, provider).await?;
    retranslation(api).await
}

async fn glossaries(api: &Api, provider: &FakeProvider) -> Result<()> {
    use reqwest::Method;
    let tsv = "# terms\nདགེ་སློང\tmonk\nབྱ་རྒོད་ཕུང་པོ\tVulture Peak\n";
    let a = upload(
        api,
        Method::POST,
        "/api/glossaries?name=Heart",
        "text/tab-separated-values",
        tsv,
    )
    .await?;
    ensure!(a.status == 201, "create: {} {}", a.status, a.text);
    let g = a.json();
    let id = g["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no id: {g}"))?
        .to_owned();
    ensure!(g["name"] == "Heart" && g["terms"] == 2, "{g}");
    let (status, _, one) = api
        .request(Method::GET, &format!("/api/glossaries/{id}"))
        .await?;
    ensure!(
        status == 200 && one["entries"][1] == json!({"bo": "བྱ་རྒོད་ཕུང་པོ", "en": "Vulture Peak"}),
        "{one}"
    );
    let (status, _, list) = api.request(Method::GET, "/api/glossaries").await?;
    ensure!(
        status == 200
            && list["glossaries"].as_array().is_some_and(|l| l
                .iter()
                .any(|x| x["id"] == id.as_str() && x["entries"].is_null())),
        "{list}"
    );
    let tbx = r#"<?xml version="1.0" encoding="UTF-8"?>
<tbx type="TBX-Core" style="dca" xml:lang="en" xmlns="urn:iso:std:iso:30042:ed-2">
  <tbxHeader><fileDesc><sourceDesc><p>test</p></sourceDesc></fileDesc></tbxHeader>
  <text><body>
    <conceptEntry id="c1">
      <langSec xml:lang="bo"><termSec><term>སྟོང་པ་ཉིད</term></termSec></langSec>
      <langSec xml:lang="en"><termSec><term>emptiness</term></termSec></langSec>
    </conceptEntry>
  </body></text>
</tbx>"#;
    let a = upload(
        api,
        Method::POST,
        "/api/glossaries?name=Terms",
        "application/x-tbx",
        tbx,
    )
    .await?;
    ensure!(
        a.status == 201 && a.json()["terms"] == 1,
        "TBX: {} {}",
        a.status,
        a.text
    );
    let tbx_id = a.json()["id"].as_str().unwrap_or("").to_owned();
    // Replaced with JSON: the name comes from the file.
    let body = json!({"name": "Heart sutra", "entries": [{"bo": "དགེ་སློང", "en": "bhikshu"}, {"bo": "བྱ་རྒོད་ཕུང་པོ", "en": "Vulture Peak"}]}).to_string();
    let a = upload(
        api,
        Method::PUT,
        &format!("/api/glossaries/{id}"),
        "application/json",
        &body,
    )
    .await?;
    ensure!(
        a.status == 200 && a.json()["name"] == "Heart sutra" && a.json()["terms"] == 2,
        "{} {}",
        a.status,
        a.text
    );
    for (ct, body, want) in [
        ("text/tab-separated-values", "no tab here\n", 400),
        ("application/json", "{", 400),
        ("application/x-tbx", "<tbx", 400),
        ("image/png", "x", 415),
    ] {
        let a = upload(api, Method::POST, "/api/glossaries?name=x", ct, body).await?;
        ensure!(a.status == want, "{ct} {body:?}: {} {}", a.status, a.text);
    }
    let a = upload(
        api,
        Method::POST,
        "/api/glossaries",
        "text/tab-separated-values",
        tsv,
    )
    .await?;
    ensure!(a.status == 400, "no name: {} {}", a.status, a.text);
    let (status, _, body) = api
        .request(Method::GET, "/api/glossaries/not-an-id")
        .await?;
    ensure!(status == 400, "{body}");
    let (status, _, body) = api
        .request(
            Method::GET,
            &format!("/api/glossaries/{}", lotsawa_core::JobId::new()),
        )
        .await?;
    ensure!(status == 404, "{body}");

    // A job naming the glossary: its terms reach the provider.
    let tag = unique_tag("gl");
    let text = line(&tag, "ཀ");
    let job = api
        .submit(
            &text,
            json!({"engine": "openai", "glossaryIds": [id, tbx_id], "chunkSize": 2000}),
        )
        .await?;
    api.wait_status(&job, "completed", JOB_TIMEOUT).await?;
    let system = system_of(provider, &text);
    ensure!(
        system.contains(r#"{"bo":"དགེ་སློང","en":"bhikshu"}"#),
        "the glossary's term: {system}"
    );
    let (status, body, _) = api
        .post_job(&json!({"sourceText": text, "config": {"glossaryIds": [lotsawa_core::JobId::new().to_string()]}}))
        .await?;
    ensure!(
        status == 400
            && body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("glossaryIds")),
        "{status} {body}"
    );
    let a = send(
        api,
        Method::DELETE,
        &format!("/api/glossaries/{tbx_id}"),
        &[],
        None,
    )
    .await?;
    ensure!(a.status == 204, "{} {}", a.status, a.text);
    let a = send(
        api,
        Method::DELETE,
        &format!("/api/glossaries/{tbx_id}"),
        &[],
        None,
    )
    .await?;
    ensure!(a.status == 404, "{} {}", a.status, a.text);
    Ok(())
}

async fn memory(api: &Api, provider: &FakeProvider) -> Result<()> {
    let tag = unique_tag("mem");
    let first = line(&tag, "ཀ");
    let id = api.submit(&first, json!({"engine": "openai"})).await?;
    api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    let c = chunk(api, &id, 0).await?;
    let tag0 = c["etag"].as_str().unwrap_or("").to_owned();
    let a = send(
        api,
        reqwest::Method::PUT,
        &format!("/api/jobs/{id}/chunks/0/translation"),
        &[("content-type", "application/json"), ("if-match", &tag0)],
        Some(
            json!({"text": "A person's translation."})
                .to_string()
                .into_bytes(),
        ),
    )
    .await?;
    ensure!(a.status == 200, "{} {}", a.status, a.text);

    // The same source again: the person's translation, no provider call.
    let calls = provider.calls_for(&first);
    let again = api.submit(&first, json!({"engine": "openai"})).await?;
    let job = api.wait_status(&again, "completed", JOB_TIMEOUT).await?;
    ensure!(
        job["result"]["translation"].as_str().map(str::trim) == Some("A person's translation.")
            && job["result"]["chunksFromMemory"] == 1,
        "a person's translation wins: {}",
        job["result"]
    );
    ensure!(
        provider.calls_for(&first) == calls,
        "no provider call for a remembered source"
    );

    // A similar source: the person's translation reaches the provider as an
    // example, and the chunk records it with its similarity.
    let similar = line(&tag, "ཁ");
    let id = api.submit(&similar, json!({"engine": "openai"})).await?;
    api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    let system = system_of(provider, &similar);
    ensure!(
        system.contains("<examples>") && system.contains("A person's translation."),
        "the example reaches the provider: {system}"
    );
    let c = chunk(api, &id, 0).await?;
    let examples = c["examples"].as_array().cloned().unwrap_or_default();
    ensure!(
        examples
            .iter()
            .any(|e| e["translation"] == "A person's translation."
                && e["origin"] == "human"
                && e["similarity"]
                    .as_f64()
                    .is_some_and(|s| (0.6..1.0).contains(&s))),
        "the chunk records its examples: {c}"
    );
    // Examples turned off.
    let other = line(&tag, "ག");
    let id = api
        .submit(&other, json!({"engine": "openai", "examples": 0}))
        .await?;
    api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(
        !system_of(provider, &other).contains("<examples>"),
        "examples: 0"
    );
    let (status, body, _) = api
        .post_job(&json!({"sourceText": other, "config": {"examples": 11}}))
        .await?;
    ensure!(status == 400, "{status} {body}");

    // A TMX taken into the memory serves its source.
    let imported = line(&tag, "ང");
    let tmx = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<tmx version="1.4"><header creationtool="test" creationtoolversion="1" datatype="plaintext" segtype="paragraph" adminlang="en" srclang="bo" o-tmf="test"/>
<body><tu><tuv xml:lang="bo"><seg>{}</seg></tuv><tuv xml:lang="en"><seg>Imported from a TMX.</seg></tuv></tu></body></tmx>"#,
        imported.trim_end()
    );
    let a = send(
        api,
        reqwest::Method::POST,
        "/api/memory/import",
        &[("content-type", "application/x-tmx+xml")],
        Some(tmx.into_bytes()),
    )
    .await?;
    ensure!(
        a.status == 200 && a.json()["imported"] == 1,
        "{} {}",
        a.status,
        a.text
    );
    let id = api.submit(&imported, json!({"engine": "openai"})).await?;
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(
        job["result"]["translation"].as_str().map(str::trim) == Some("Imported from a TMX."),
        "{}",
        job["result"]
    );
    ensure!(
        provider.calls_for(&imported) == 0,
        "an imported segment needs no call"
    );
    let a = send(
        api,
        reqwest::Method::POST,
        "/api/memory/import",
        &[("content-type", "text/plain")],
        Some(b"x".to_vec()),
    )
    .await?;
    ensure!(a.status == 415, "{} {}", a.status, a.text);
    let a = send(
        api,
        reqwest::Method::POST,
        "/api/memory/import",
        &[("content-type", "application/x-tmx+xml")],
        Some(b"<tmx".to_vec()),
    )
    .await?;
    ensure!(a.status == 400, "{} {}", a.status, a.text);
    Ok(())
}

async fn retranslation(api: &Api) -> Result<()> {
    let tag = unique_tag("re");
    let text = line(&tag, "ཅ");
    let id = api.submit(&text, json!({"engine": "openai"})).await?;
    api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    let path = format!("/api/jobs/{id}/chunks/0/retranslate");
    let post = |body: Value| {
        let path = path.clone();
        async move {
            send(
                api,
                reqwest::Method::POST,
                &path,
                &[("content-type", "application/json")],
                Some(body.to_string().into_bytes()),
            )
            .await
        }
    };
    for (body, want) in [
        (json!({"engine": "no-such-engine"}), 400),
        (json!({"model": "m"}), 400),
        (json!({"engine": "offline", "colour": 1}), 400),
    ] {
        let a = post(body.clone()).await?;
        ensure!(a.status == want, "{body}: {} {}", a.status, a.text);
    }
    let a = post(json!({"engine": "offline"})).await?;
    ensure!(a.status == 202, "{} {}", a.status, a.text);
    let started = Instant::now();
    let c = loop {
        let c = chunk(api, &id, 0).await?;
        if c["revisions"].as_array().map(Vec::len) == Some(2) {
            break c;
        }
        ensure!(started.elapsed() < JOB_TIMEOUT, "no second revision: {c}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        c["revisions"][1]["origin"] == "engine"
            && c["revisions"][1]["engine"] == "offline"
            && c["revision"] == 1
            && c["revisions"][0]["current"] == true,
        "the new revision sits beside the first: {c}"
    );
    let etag = c["etag"].as_str().unwrap_or("").to_owned();
    let a = send(
        api,
        reqwest::Method::PUT,
        &format!("/api/jobs/{id}/chunks/0/translation"),
        &[("content-type", "application/json"), ("if-match", &etag)],
        Some(json!({"revision": 2}).to_string().into_bytes()),
    )
    .await?;
    ensure!(
        a.status == 200 && a.json()["translation"] == c["revisions"][1]["text"],
        "{} {}",
        a.status,
        a.text
    );
    // A transliteration has no engine to choose.
    let (status, body, _) = api
        .post_job(&json!({"sourceText": "ཀ་ཁ།", "type": "transliteration"}))
        .await?;
    ensure!(status == 202, "{body}");
    let tid = body["jobId"].as_str().unwrap_or("").to_owned();
    api.wait_status(&tid, "completed", JOB_TIMEOUT).await?;
    let a = send(
        api,
        reqwest::Method::POST,
        &format!("/api/jobs/{tid}/chunks/0/retranslate"),
        &[("content-type", "application/json")],
        Some(json!({"engine": "offline"}).to_string().into_bytes()),
    )
    .await?;
    ensure!(a.status == 409, "{} {}", a.status, a.text);
    Ok(())
}
