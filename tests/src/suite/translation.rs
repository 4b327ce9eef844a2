//! What the engines produce, as seen through the API: exact EWTS for
//! transliteration jobs, the offline engine's gloss, the translation memory
//! (one provider call per distinct chunk), and what reaches the model and
//! comes back from it (glossary, the previous chunk as context, the quality
//! retry, the reviewer's confidence).

use anyhow::{Result, ensure};
use reqwest::Method;
use serde_json::{Value, json};

use super::{JOB_TIMEOUT, numbered_text, unique_tag};
use crate::provider::fake_translation;
use crate::{Api, FakeProvider};

/// `transliteration` jobs return exact EWTS; the offline engine glosses.
pub async fn transliteration_and_offline(api: &Api) -> Result<()> {
    let text = "༄༅། །བྱང་ཆུབ་སེམས་དཔའི་སྤྱོད་པ་ལ་འཇུག་པ། །\nཨོཾ་མ་ཎི་པདྨེ་ཧཱུྃ།\n";
    let (status, body, _) = api
        .post_job(
            &json!({"sourceText": text, "type": "transliteration", "config": {"chunkSize": 20}}),
        )
        .await?;
    ensure!(status == 202, "{body}");
    let id = body["jobId"].as_str().unwrap_or_default().to_owned();
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(job["type"] == "transliteration", "{job}");
    ensure!(
        job["result"]["translation"]
            == "@#/_/byang chub sems dpa'i spyod pa la 'jug pa/_/\noM ma Ni pad+me hU~M/\n",
        "{job}"
    );
    ensure!(job["result"]["engine"] == "ewts", "{job}");
    ensure!(job["chunksTotal"].as_u64() > Some(1), "chunked: {job}");

    let id = api
        .submit(
            "སངས་རྒྱས་ཆོས་དང་ཚོགས་ཀྱི་མཆོག་རྣམས་ལ། །སྤྲེའུ་ཡིས།",
            json!({"engine": "offline"}),
        )
        .await?;
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(job["result"]["engine"] == "offline", "{job}");
    let t = job["result"]["translation"].as_str().unwrap_or_default();
    ensure!(
        t.contains("Buddha") && t.contains("assembly") && t.contains("[spre'u]"),
        "{job}"
    );
    let c = job["result"]["confidence"].as_f64().unwrap_or(-1.0);
    ensure!(c > 0.5 && c < 1.0, "confidence: {job}");
    Ok(())
}

/// The same text twice calls the provider once per distinct chunk.
/// `memory_metric`: the deployment exports `lotsawa_translation_memory_hits_total`.
pub async fn translation_memory(
    api: &Api,
    provider: &FakeProvider,
    memory_metric: bool,
) -> Result<()> {
    provider.set_delay_ms(0);
    let (text, chunks, size) = numbered_text(&unique_tag("tm"), 3);
    let config = json!({"engine": "openai", "chunkSize": size});
    let first = api.submit(&text, config.clone()).await?;
    let a = api.wait_status(&first, "completed", JOB_TIMEOUT).await?;
    let second = api.submit(&text, config).await?;
    let b = api.wait_status(&second, "completed", JOB_TIMEOUT).await?;
    for c in &chunks {
        ensure!(
            provider.calls_for(c) == 1,
            "chunk {c:?} called {} times",
            provider.calls_for(c)
        );
    }
    ensure!(a["result"]["chunksFromMemory"] == 0, "{a}");
    ensure!(b["result"]["chunksFromMemory"] == 3, "{b}");
    ensure!(
        a["result"]["translation"] == b["result"]["translation"],
        "{a} {b}"
    );
    if !memory_metric {
        return Ok(());
    }
    let (_, _, metrics) = api.request(Method::GET, "/metrics").await?;
    let hits = metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("lotsawa_translation_memory_hits_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    ensure!(hits >= 3.0, "memory hits metric: {hits}");
    Ok(())
}

/// Glossary terms reach the model; context of the previous chunk is sent;
/// bad answers get one quality retry; the reviewer's low confidence is a
/// warning.
pub async fn glossary_context_quality(api: &Api, provider: &FakeProvider) -> Result<()> {
    provider.set_delay_ms(0);
    let tag = unique_tag("q");
    // Glossary and context.
    let (text, chunks, size) = numbered_text(&format!("{tag}g"), 2);
    let id = api
        .submit(
            &text,
            json!({"engine": "openai", "chunkSize": size,
            "glossary": [{"bo": "བྱང་ཆུབ་སེམས་དཔའ", "en": "awakening warrior"}]}),
        )
        .await?;
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(
        job["result"]["warnings"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "{job}"
    );
    let second = provider.requests_for(&chunks[1]);
    let messages = second
        .first()
        .map(|b| b["messages"].clone())
        .unwrap_or(Value::Null);
    ensure!(
        messages[0]["content"]
            .as_str()
            .is_some_and(|s| s.contains(r#"{"bo":"བྱང་ཆུབ་སེམས་དཔའ","en":"awakening warrior"}"#)),
        "glossary not in the system message: {messages}"
    );
    ensure!(
        messages.as_array().map(Vec::len) == Some(4),
        "context turns: {messages}"
    );
    ensure!(
        messages[1]["content"] == chunks[0].as_str(),
        "context source: {messages}"
    );
    ensure!(
        messages[2]["content"]
            .as_str()
            .is_some_and(|s| s.starts_with(&fake_translation(&chunks[0]))),
        "context translation: {messages}"
    );
    ensure!(
        messages[3]["content"] == chunks[1].as_str(),
        "last message is the chunk: {messages}"
    );

    // A glossary the model ignores: one quality retry, then a warning.
    let ignored = format!("{tag} IGNORE_GLOSSARY བྱང་ཆུབ་སེམས་དཔའ།");
    let id = api
        .submit(
            &ignored,
            json!({"engine": "openai",
            "glossary": [{"bo": "བྱང་ཆུབ་སེམས་དཔའ", "en": "awakening warrior"}]}),
        )
        .await?;
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(
        provider.calls_for(&ignored) == 2,
        "quality retry: {} calls",
        provider.calls_for(&ignored)
    );
    ensure!(
        job["result"]["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("awakening warrior")),
        "{job}"
    );

    // Still Tibetan once: retried and completed; always: failed.
    // Mostly Tibetan, so that an answer repeating it is rejected.
    let verse = "བྱང་ཆུབ་སེམས་དཔའི་སྤྱོད་པ་ལ་འཇུག་པ་བདེ་གཤེགས་ཆོས་ཀྱི་སྐུ་མངའ་སྲས་བཅས་དང་།";
    let once = format!("{tag} TIBETAN_ONCE {verse}");
    let id = api.submit(&once, json!({"engine": "openai"})).await?;
    api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(
        provider.calls_for(&once) == 2,
        "{} calls",
        provider.calls_for(&once)
    );
    let always = format!("{tag} TIBETAN_ALWAYS {verse}");
    let id = api.submit(&always, json!({"engine": "openai"})).await?;
    let job = api.wait_status(&id, "failed", JOB_TIMEOUT).await?;
    ensure!(
        job["error"]
            .as_str()
            .is_some_and(|e| e.contains("quality check")),
        "{job}"
    );

    // The reviewer.
    let low = format!("{tag} LOWCONF ཀ་ཁ་ག་ང།");
    let id = api
        .submit(
            &low,
            json!({"engine": "openai", "useHelperAI": true, "qualityThreshold": 0.8}),
        )
        .await?;
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(job["result"]["confidence"] == 0.3, "{job}");
    ensure!(
        job["result"]["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("reviewer confidence 0.30")),
        "{job}"
    );
    Ok(())
}
