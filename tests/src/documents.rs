//! PDF input through the API, on every deployment: a PDF body with settings
//! in the query, a form with a file and a config part, a batch of files,
//! the page of each chunk, the result with page markers, and the refusals
//! (scans, encrypted files, bodies that are no PDF).

use anyhow::{Result, ensure};
use serde_json::{Value, json};

use crate::pdfgen::{self, Doc, Font, Producer};
use crate::suite::JOB_TIMEOUT;
use crate::{Api, header};

async fn post_pdf(api: &Api, query: &str, bytes: Vec<u8>) -> Result<(u16, Value)> {
    let res = api
        .http
        .post(format!("{}/api/jobs{query}", api.base))
        .header("content-type", "application/pdf")
        .body(bytes)
        .send()
        .await?;
    let status = res.status().as_u16();
    let ct = header(&res, "content-type");
    let body = res.json::<Value>().await.unwrap_or(Value::Null);
    if status >= 400 {
        ensure!(
            ct.starts_with("application/problem+json"),
            "{status}: content type {ct}"
        );
    }
    Ok((status, body))
}

fn file_part(name: &str, bytes: Vec<u8>, mime: &str) -> Result<reqwest::multipart::Part> {
    Ok(reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str(mime)?)
}

/// PDF jobs from a body and from a form, their pages and result, a batch of
/// files, and the refusals.
pub async fn pdf_jobs(api: &Api) -> Result<()> {
    let pdf = pdfgen::pdf(Doc::MultiPage, Font::TibetanMachine, Producer::Chromium);

    // A PDF body, settings in the query.
    let (status, body) = post_pdf(
        api,
        "?engine=openai&chunkSize=300&type=translation",
        pdf.clone(),
    )
    .await?;
    ensure!(status == 202, "PDF body: {status} {body}");
    let id = body["jobId"].as_str().unwrap_or_default().to_owned();
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(
        job["chunkSize"] == 300 && job["engine"] == "openai",
        "{job}"
    );
    let total = job["chunksTotal"].as_u64().unwrap_or(0) as usize;
    let pages: Vec<u64> = job["sourcePages"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    ensure!(
        pages.len() == total && total > 2,
        "sourcePages {pages:?} for {total} chunks: {job}"
    );
    ensure!(
        pages[0] == 1 && pages.windows(2).all(|w| w[0] <= w[1]),
        "{pages:?}"
    );
    ensure!(
        *pages.last().unwrap_or(&0) >= 2,
        "a multi-page PDF: {pages:?}"
    );

    let (status, _, chunks) = api
        .request(reqwest::Method::GET, &format!("/api/jobs/{id}/chunks"))
        .await?;
    ensure!(status == 200, "chunks: {status}");
    let chunk_pages: Vec<u64> = chunks["chunks"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["sourcePage"].as_u64()).collect())
        .unwrap_or_default();
    ensure!(
        chunk_pages == pages,
        "chunk pages {chunk_pages:?} vs {pages:?}"
    );
    // What the job translated is the PDF's Tibetan.
    let source: String = chunks["chunks"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["source"].as_str()).collect())
        .unwrap_or_default();
    let want = pdfgen::paragraphs(Doc::MultiPage).join("\n");
    let accuracy = pdfgen::syllable_accuracy(&want, &source);
    ensure!(accuracy >= 0.995, "syllable accuracy {accuracy}");

    let res = api
        .http
        .get(format!("{}/api/jobs/{id}/result?pages=true", api.base))
        .send()
        .await?;
    ensure!(res.status().as_u16() == 200, "result: {}", res.status());
    ensure!(
        header(&res, "content-type").starts_with("text/plain"),
        "result type"
    );
    let marked = res.text().await?;
    ensure!(
        marked.starts_with("[page 1]\n") && marked.contains("\n[page 2]\n"),
        "page markers: {marked}"
    );
    let plain = api
        .http
        .get(format!("{}/api/jobs/{id}/result", api.base))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        !plain.contains('\u{000C}') && !plain.contains("[page"),
        "plain result: {plain}"
    );

    // A form: the file and a config part.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            file_part("sutra.pdf", pdf.clone(), "application/pdf")?,
        )
        .text("config", json!({"engine": "offline"}).to_string());
    let res = api
        .http
        .post(format!("{}/api/jobs", api.base))
        .multipart(form)
        .send()
        .await?;
    let status = res.status().as_u16();
    let body = res.json::<Value>().await.unwrap_or(Value::Null);
    ensure!(status == 202, "form: {status} {body}");
    let id = body["jobId"].as_str().unwrap_or_default().to_owned();
    let job = api.wait_status(&id, "completed", JOB_TIMEOUT).await?;
    ensure!(
        job["engine"] == "offline" && job["sourcePages"].is_array(),
        "{job}"
    );

    // A batch of files: a PDF and a text file, each an item named by its file.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            file_part(
                "a.pdf",
                pdfgen::pdf(Doc::Mixed, Font::Noto, Producer::LibreOffice),
                "application/pdf",
            )?,
        )
        .part(
            "file",
            file_part(
                "b.txt",
                "བྱང་ཆུབ་སེམས་དཔའ།\n".as_bytes().to_vec(),
                "text/plain",
            )?,
        )
        .text("config", json!({"engine": "offline"}).to_string());
    let res = api
        .http
        .post(format!("{}/api/batches", api.base))
        .multipart(form)
        .send()
        .await?;
    let status = res.status().as_u16();
    let body = res.json::<Value>().await.unwrap_or(Value::Null);
    ensure!(status == 202, "batch form: {status} {body}");
    ensure!(
        body["jobIds"].as_array().is_some_and(|a| a.len() == 2),
        "{body}"
    );

    // Refusals: each a problem that says why; nothing is queued.
    let (status, body) = post_pdf(api, "", pdfgen::scanned_pdf()).await?;
    ensure!(
        status == 422 && body["detail"].as_str().is_some_and(|d| d.contains("OCR")),
        "scan: {status} {body}"
    );
    let (status, body) = post_pdf(api, "", pdfgen::encrypted_pdf()).await?;
    ensure!(
        status == 422
            && body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("encrypted")),
        "encrypted: {status} {body}"
    );
    let (status, body) = post_pdf(api, "", b"not a pdf at all".to_vec()).await?;
    ensure!(status == 415, "not a PDF: {status} {body}");
    let mut cut = pdf.clone();
    cut.truncate(pdf.len() / 3);
    let (status, body) = post_pdf(api, "", cut).await?;
    ensure!(status == 422, "a damaged PDF: {status} {body}");
    let (status, body) = post_pdf(api, "?chunkSize=zero", pdf.clone()).await?;
    ensure!(status == 400, "bad query: {status} {body}");
    let (status, body) = post_pdf(api, "?colour=blue", pdf).await?;
    ensure!(status == 400, "unknown setting: {status} {body}");
    Ok(())
}
