//! S3 ingest: an object created under `incoming/` becomes a job; when the
//! job ends its result is written under `results/`: the translation text and
//! a JSON record.

use chrono::Utc;
use lotsawa_core::{
    JobConfig, JobId, JobService, JobStatus, JobStore, JobType, NewJob, SourceText,
};
use percent_encoding::percent_decode_str;
use serde_json::json;

use crate::store::{CloudError, DynamoStore};

/// Incoming prefix.
pub const INCOMING: &str = "incoming/";
/// Results prefix.
pub const RESULTS: &str = "results/";

/// An S3 event key, decoded (`+` is a space, then percent-decoding).
pub fn decode_key(raw: &str) -> String {
    let plus = raw.replace('+', " ");
    percent_decode_str(&plus).decode_utf8_lossy().into_owned()
}

/// The results key stem for an incoming key: `incoming/a/b.txt` → `results/a/b`.
pub fn result_stem(key: &str) -> String {
    let rest = key.strip_prefix(INCOMING).unwrap_or(key);
    let stem = rest
        .rsplit_once('.')
        .map(|(s, _)| s)
        .filter(|s| !s.is_empty())
        .unwrap_or(rest);
    format!("{RESULTS}{stem}")
}

/// What ingest did with an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// A job was created.
    Job(JobId),
    /// The object could not be a job: a failed record was written.
    Rejected(String),
    /// Not under `incoming/`.
    Ignored,
}

/// Create a job from `s3://bucket/key` (key already decoded). An object that
/// is not usable text becomes a failed job with the reason.
pub async fn ingest(
    store: &DynamoStore,
    service: &dyn JobService,
    bucket: &str,
    key: &str,
) -> Result<Ingested, CloudError> {
    if !key.starts_with(INCOMING) || key.ends_with('/') {
        return Ok(Ingested::Ignored);
    }
    let bytes = store.get_bytes(bucket, key).await?;
    let why = match String::from_utf8(bytes) {
        Err(_) => Err("the object is not UTF-8 text".to_owned()),
        Ok(text) => SourceText::parse(text).map_err(|e| e.0),
    };
    let source = match why {
        Ok(source) => source,
        Err(why) => {
            let error = format!("s3://{bucket}/{key}: {why}");
            let job = lotsawa_core::pipeline::rejected_job(
                JobType::Translation,
                JobConfig::default(),
                error,
                Utc::now(),
            )
            .map_err(|e| CloudError::Build(e.to_string()))?;
            store.create_failed(&job).await?;
            store.set_ingest_key(job.id, key).await?;
            write_result(store, key, job.id).await?;
            return Ok(Ingested::Rejected(why));
        }
    };
    let job = service
        .submit(NewJob {
            kind: JobType::Translation,
            source,
            config: JobConfig::default(),
        })
        .await?;
    store.set_ingest_key(job.id, key).await?;
    store
        .put_text(
            &format!("{}.json", result_stem(key)),
            &json!({"source": format!("s3://{bucket}/{key}"), "jobId": job.id.to_string(), "status": "pending"})
                .to_string(),
            "application/json",
        )
        .await?;
    Ok(Ingested::Job(job.id))
}

/// Write the outcome of an ingested job: `<stem>.txt` (the translation, when
/// completed) and `<stem>.json` (the record).
pub async fn write_result(store: &DynamoStore, key: &str, id: JobId) -> Result<bool, CloudError> {
    let j = store.get(id).await?;
    if !j.status.is_terminal() {
        return Ok(false);
    }
    let stem = result_stem(key);
    if j.status == JobStatus::Completed
        && let Some(r) = &j.result
    {
        store
            .put_text(
                &format!("{stem}.txt"),
                &r.translation,
                "text/plain; charset=utf-8",
            )
            .await?;
    }
    let record = json!({
        "source": format!("s3://{}/{key}", store.config.bucket),
        "jobId": j.id.to_string(),
        "status": j.status.as_str(),
        "error": j.error,
        "result": j.result,
    });
    store
        .put_text(
            &format!("{stem}.json"),
            &record.to_string(),
            "application/json",
        )
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_decoded_and_mapped() {
        assert_eq!(
            decode_key("incoming/my+text%20%E0%BD%80.txt"),
            "incoming/my text ཀ.txt"
        );
        assert_eq!(result_stem("incoming/a/b.txt"), "results/a/b");
        assert_eq!(result_stem("incoming/noext"), "results/noext");
    }
}
