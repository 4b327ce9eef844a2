//! S3 ingest: an object created under `incoming/` becomes a job; when the
//! job ends its result is written under `results/`: `<name>.json` (the
//! record) and `<name>.en.txt` (the translation), where `<name>` is the
//! whole key after `incoming/`, so no two uploads share a result.
//!
//! S3 and SQS deliver at least once: the job id is derived from the bucket,
//! key and the event's version (or sequencer), so a repeated event finds its
//! job instead of making a second one.

use chrono::Utc;
use lotsawa_core::{
    JobConfig, JobId, JobStatus, JobStore, JobType, NewJob, Service, SourceText, StoreError,
};
use percent_encoding::percent_decode_str;
use serde_json::json;

use crate::error::CloudError;
use crate::store::DynamoStore;

/// Incoming prefix.
pub const INCOMING: &str = "incoming/";
/// Results prefix.
pub const RESULTS: &str = "results/";

/// An S3 event key, decoded (`+` is a space, then percent-decoding).
pub fn decode_key(raw: &str) -> String {
    let plus = raw.replace('+', " ");
    percent_decode_str(&plus).decode_utf8_lossy().into_owned()
}

/// Where an upload's outcome goes: `incoming/a/b.txt` → `results/a/b.txt`
/// (the record is `<that>.json`, the translation `<that>.en.txt`).
pub fn result_stem(key: &str) -> String {
    let rest = key.strip_prefix(INCOMING).unwrap_or(key);
    format!("{RESULTS}{rest}")
}

/// One uploaded object, from its S3 event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// Bucket.
    pub bucket: String,
    /// Key, decoded.
    pub key: String,
    /// What tells this upload of the key from another: the version id, else
    /// the event sequencer, else the ETag.
    pub version: String,
    /// Size in bytes, as the event reports it.
    pub size: Option<i64>,
}

impl Upload {
    /// The job this upload becomes, the same for every delivery of its event.
    pub fn job_id(&self) -> JobId {
        JobId::derived(&format!(
            "s3://{}/{}@{}",
            self.bucket, self.key, self.version
        ))
    }
}

/// What ingest did with an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// A job was created.
    Job(JobId),
    /// The event was seen before: its job exists.
    Duplicate(JobId),
    /// The object could not be a job: a failed record was written.
    Rejected(String),
    /// Not under `incoming/`.
    Ignored,
}

/// Create a job from an upload. An object that is too large or not usable
/// text becomes a failed job with the reason.
pub async fn ingest(
    store: &DynamoStore,
    service: &Service,
    upload: &Upload,
) -> Result<Ingested, CloudError> {
    let (bucket, key) = (upload.bucket.as_str(), upload.key.as_str());
    if !key.starts_with(INCOMING) || key.ends_with('/') {
        return Ok(Ingested::Ignored);
    }
    let id = upload.job_id();
    match store.item(id, false).await {
        Ok(existing) => {
            // Created by an earlier delivery; one that stopped before
            // queueing it is finished here (queueing is idempotent).
            if existing.job.status == JobStatus::Pending && existing.job.run == 0 {
                if existing.ingest_key.is_none() {
                    store.set_ingest_key(id, key).await?;
                }
                service.queue(&existing.job).await?;
            }
            return Ok(Ingested::Duplicate(id));
        }
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    // Uploads are the ingest tenant's submissions: under its pending cap and
    // creation rate like any other, checked before the object is read. A
    // refusal is an error, so the upload's message comes back after its
    // visibility timeout and is tried again.
    service.admit(&store.config.ingest_tenant).await?;
    // A PDF's limit is the file's (LOTSAWA_PDF_LIMIT); a text's the body's.
    let pdf = key.to_ascii_lowercase().ends_with(".pdf");
    let (limit, limit_name) = if pdf {
        (store.config.pdf_limit as u64, "LOTSAWA_PDF_LIMIT")
    } else {
        (store.config.body_limit as u64, "LOTSAWA_BODY_LIMIT")
    };
    let size = match upload.size {
        Some(n) => n.max(0) as u64,
        None => store.object_size(bucket, key).await?,
    };
    let why = if size > limit {
        Err(format!(
            "the object is {size} bytes; uploads may be at most {limit} bytes ({limit_name})"
        ))
    } else {
        let bytes = store.get_bytes(bucket, key).await?;
        let text = if pdf || lotsawa_pdf::is_pdf(&bytes) {
            read_pdf(bytes).await
        } else {
            String::from_utf8(bytes).map_err(|_| "the object is not UTF-8 text".to_owned())
        };
        text.and_then(|text| {
            SourceText::parse(text)
                .and_then(|t| t.check_for(JobType::Translation).map(|()| t))
                .map_err(|e| e.0)
        })
    };
    let source = match why {
        Ok(source) => source,
        Err(why) => {
            // The bucket's name stays out of the job: the key is the uploader's.
            let error = format!("invalid_source: {key}: {why}");
            let mut job = lotsawa_core::pipeline::rejected_job(
                store.config.ingest_tenant.clone(),
                JobType::Translation,
                JobConfig::default(),
                error,
                Utc::now(),
            )
            .map_err(|e| CloudError::Build(e.to_string()))?;
            job.id = id;
            match store.create_failed(&job).await {
                Ok(()) => {}
                Err(StoreError::ConditionFailed(_)) => return Ok(Ingested::Duplicate(id)),
                Err(e) => return Err(e.into()),
            }
            store.set_ingest_key(id, key).await?;
            write_result(store, key, id).await?;
            return Ok(Ingested::Rejected(why));
        }
    };
    let new = NewJob {
        trace: None,
        tenant: store.config.ingest_tenant.clone(),
        kind: JobType::Translation,
        source,
        config: JobConfig::default(),
    };
    let job = match service.create_as(id, new).await {
        Ok(j) => j,
        Err(lotsawa_core::ServiceError::Store(StoreError::ConditionFailed(_))) => {
            return Ok(Ingested::Duplicate(id));
        }
        Err(e) => return Err(e.into()),
    };
    // The key is on the job before it can run, so its end always finds it.
    store.set_ingest_key(id, key).await?;
    store
        .put_text(
            &format!("{}.json", result_stem(key)),
            &json!({"source": format!("s3://{bucket}/{key}"), "jobId": id.to_string(), "status": "pending"})
                .to_string(),
            "application/json",
        )
        .await?;
    service.queue(&job).await?;
    Ok(Ingested::Job(id))
}

/// Time one uploaded PDF may take to read: a delivery holds up to ten
/// uploads and the function has 120 s.
const PDF_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// A PDF's text, read off the runtime; a PDF that cannot be read gives
/// the reason (a scan, encryption, damage, unrecoverable Tibetan).
async fn read_pdf(bytes: Vec<u8>) -> Result<String, String> {
    let options = lotsawa_pdf::Options {
        budget: PDF_BUDGET,
        ..lotsawa_pdf::Options::default()
    };
    match tokio::task::spawn_blocking(move || lotsawa_pdf::extract(&bytes, &options)).await {
        Ok(Ok(x)) => Ok(x.text),
        Ok(Err(e)) => Err(e.to_string()),
        Err(join) => {
            tracing::error!(error = %join, "the PDF reader failed");
            Err(
                lotsawa_pdf::PdfError::Broken("its structure made the reader fail".into())
                    .to_string(),
            )
        }
    }
}

/// Write the outcome of an ingested job: `<stem>.en.txt` (the translation,
/// when completed) and `<stem>.json` (the record).
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
                &format!("{stem}.en.txt"),
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
        assert_eq!(result_stem("incoming/a/b.txt"), "results/a/b.txt");
        assert_eq!(result_stem("incoming/noext"), "results/noext");
        // Two uploads that differ only in their extension keep their results apart.
        assert_ne!(result_stem("incoming/a.txt"), result_stem("incoming/a.md"));
    }

    #[test]
    fn repeated_events_name_the_same_job() {
        let up = |version: &str| Upload {
            bucket: "b".into(),
            key: "incoming/a.txt".into(),
            version: version.into(),
            size: Some(3),
        };
        assert_eq!(
            up("0055AED6DCD90281E5").job_id(),
            up("0055AED6DCD90281E5").job_id()
        );
        assert_ne!(
            up("0055AED6DCD90281E5").job_id(),
            up("0055AED6DCD90281E6").job_id()
        );
    }
}
