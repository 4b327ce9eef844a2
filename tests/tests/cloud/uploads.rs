//! S3 ingest: uploads become jobs and results; cancelled and settled
//! uploads write their records; repeated upload events make one job.

use super::*;

/// S3 ingest: uploads become jobs, results land under results/.
pub(crate) async fn uploads_become_jobs_and_results(c: &Cloud) {
    let api = &c.ctx.api;
    let provider = &c.ctx.provider;
    let s3 = &c.s3;
    // S3 ingest: a URL-encoded key under incoming/ becomes a job and its
    // result lands under results/; a non-UTF-8 object becomes a failed job.
    provider.set_delay_ms(0);
    let bucket = c.em.var("BUCKET");
    s3.put_object()
        .bucket(bucket)
        .key("incoming/my verse ཀ.txt")
        .body("ingest ཀ་ཁ་ག་ང།".as_bytes().to_vec().into())
        .send()
        .await
        .expect("upload");
    s3.put_object()
        .bucket(bucket)
        .key("incoming/binary.bin")
        .body(vec![0xff, 0xfe, 0x00].into())
        .send()
        .await
        .expect("upload");
    let deadline = Instant::now() + Duration::from_secs(90);
    let text = wait_result(c, "results/my verse ཀ.txt.en.txt", deadline).await;
    assert_eq!(
        text,
        lotsawa_apitests::provider::fake_translation("ingest ཀ་ཁ་ག་ང།")
    );
    let record: serde_json::Value = serde_json::from_str(
        &read_result(c, "results/my verse ཀ.txt.json")
            .await
            .expect("record"),
    )
    .expect("json");
    assert_eq!(record["status"], "completed", "{record}");
    let failed = wait_result(c, "results/binary.bin.json", deadline).await;
    let failed: serde_json::Value = serde_json::from_str(&failed).expect("json");
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("not UTF-8")),
        "{failed}"
    );
    let id = failed["jobId"].as_str().expect("job id");
    assert_eq!(api.job(id).await.expect("job")["status"], "failed");

    // A PDF upload becomes a job on its text, with its pages; a scan a
    // failed record that says OCR is needed.
    use lotsawa_apitests::pdfgen::{self, Doc, Font, Producer};
    for (name, bytes) in [
        (
            "incoming/sutra.pdf",
            pdfgen::pdf(Doc::MultiPage, Font::TibetanMachine, Producer::Chromium),
        ),
        ("incoming/scan.pdf", pdfgen::scanned_pdf()),
    ] {
        s3.put_object()
            .bucket(bucket)
            .key(name)
            .body(bytes.into())
            .send()
            .await
            .expect("upload");
    }
    wait_result(c, "results/sutra.pdf.en.txt", deadline).await;
    let record: serde_json::Value = serde_json::from_str(
        &read_result(c, "results/sutra.pdf.json")
            .await
            .expect("record"),
    )
    .expect("json");
    assert_eq!(record["status"], "completed", "{record}");
    let job = api
        .job(record["jobId"].as_str().expect("job id"))
        .await
        .expect("job");
    assert!(job["sourcePages"].is_array(), "{job}");
    let scan: serde_json::Value =
        serde_json::from_str(&wait_result(c, "results/scan.pdf.json", deadline).await)
            .expect("json");
    assert_eq!(scan["status"], "failed", "{scan}");
    assert!(
        scan["error"].as_str().is_some_and(|e| e.contains("OCR")),
        "{scan}"
    );
}

/// Cancelling an uploaded job writes its record.
pub(crate) async fn cancelling_an_upload_writes_its_record(c: &Cloud) {
    let api = &c.ctx.api;
    let provider = &c.ctx.provider;
    let s3 = &c.s3;
    // Cancelling an uploaded job writes its record (status cancelled) and no
    // translation under results/.
    let bucket = c.em.var("BUCKET");
    provider.set_delay_ms(1500);
    let (text, _, _) = numbered_text("cancel-upload-", 200);
    s3.put_object()
        .bucket(bucket)
        .key("incoming/cancel me.txt")
        .body(text.into_bytes().into())
        .send()
        .await
        .expect("put");
    // The upload's job, as its pending record names it (another test's job
    // may be processing too), once it runs.
    let id = upload_job(c, "results/cancel me.txt.json").await;
    api.wait_for(&id, JOB_TIMEOUT, |j| j["status"] == "processing")
        .await
        .expect("the upload's job runs");
    let (status, _, body) = api
        .request(reqwest::Method::DELETE, &format!("/api/jobs/{id}"))
        .await
        .expect("cancel");
    assert_eq!(status, 200, "{body}");
    let record: serde_json::Value = serde_json::from_str(
        &read_result(c, "results/cancel me.txt.json")
            .await
            .expect("record"),
    )
    .expect("json");
    assert_eq!(record["status"], "cancelled", "{record}");
    assert_eq!(record["jobId"], id.as_str(), "{record}");
    assert!(
        read_result(c, "results/cancel me.txt.en.txt")
            .await
            .is_none()
    );
    provider.set_delay_ms(0);
}

/// An uploaded job whose execution ends outside the worker (stopped, as a
/// timeout would end it) is settled by the dispatcher, which writes its
/// record: `results/<name>.json` says failed, not the "pending" written
/// when it was created.
pub(crate) async fn a_settled_upload_writes_its_record(c: &Cloud) {
    let api = &c.ctx.api;
    let provider = &c.ctx.provider;
    let bucket = c.em.var("BUCKET");
    provider.set_delay_ms(1500);
    let (text, _, _) = numbered_text("settled-upload-", 50);
    c.s3.put_object()
        .bucket(bucket)
        .key("incoming/settled.txt")
        .body(text.into_bytes().into())
        .send()
        .await
        .expect("put");
    let id = upload_job(c, "results/settled.txt.json").await;
    let arn = first_execution(c, &id, Duration::from_secs(60)).await;
    c.sfn
        .stop_execution()
        .execution_arn(&arn)
        .send()
        .await
        .expect("stop");
    api.wait_status(&id, "failed", JOB_TIMEOUT)
        .await
        .expect("the job fails");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let record = read_result(c, "results/settled.txt.json")
            .await
            .and_then(|r| serde_json::from_str::<Value>(&r).ok())
            .unwrap_or_default();
        if record["status"] == "failed" {
            assert_eq!(record["jobId"], id.as_str(), "{record}");
            assert!(
                record["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("execution ended")),
                "{record}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the record still says {record}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    provider.set_delay_ms(0);
}

/// S3 and SQS deliver at least once: the same upload event delivered twice
/// makes one job; an object over the size limit becomes a failed job that
/// says so; two uploads that differ only in their extension keep separate
/// results.
pub(crate) async fn repeated_upload_events_make_one_job(c: &Cloud) {
    let (api, s3, sqs) = (&c.ctx.api, &c.s3, &c.sqs);
    let bucket = c.em.var("BUCKET");
    let key = "incoming/twice.txt";
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body("twice ཀ་ཁ།".as_bytes().to_vec().into())
        .send()
        .await
        .expect("upload");
    // Wait for the upload's own event to be handled.
    let deadline = Instant::now() + Duration::from_secs(90);
    wait_result(c, "results/twice.txt.en.txt", deadline).await;
    let newest =
        |page: &serde_json::Value, i: usize| page["jobs"][i]["id"].as_str().map(str::to_owned);
    let (_, _, before) = api
        .request(reqwest::Method::GET, "/api/jobs?limit=5")
        .await
        .expect("list");
    // The same event, delivered twice more.
    let event = json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-01T00:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:TEST"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {},
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket},
               "object": {"key": "incoming/twice.txt", "size": 17, "sequencer": "00TESTSEQ"}}
    }]});
    for _ in 0..2 {
        sqs.send_message()
            .queue_url(c.em.var("INGEST_QUEUE_URL"))
            .message_body(event.to_string())
            .send()
            .await
            .expect("redeliver");
    }
    let id = lotsawa_core::JobId::derived(&format!("s3://{bucket}/{key}@00TESTSEQ")).to_string();
    // The ingest queue is polled: the job appears once the event is handled.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, _, _) = api
            .request(reqwest::Method::GET, &format!("/api/jobs/{id}"))
            .await
            .expect("get");
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the redelivered event made no job"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let job = api
        .wait_status(&id, "completed", JOB_TIMEOUT)
        .await
        .expect("the redelivered event's job completes");
    assert_eq!(job["id"], id.as_str());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, _, after) = api
        .request(reqwest::Method::GET, "/api/jobs?limit=5")
        .await
        .expect("list");
    // One new job, the event's; the one before it is the newest from before.
    assert_eq!(newest(&after, 0).as_deref(), Some(id.as_str()), "{after}");
    assert_eq!(
        newest(&after, 1),
        newest(&before, 0),
        "two deliveries made one job: {after}"
    );

    // Too large: a failed job that says why, without reading the object.
    let big = vec![b'a'; 1024 * 1024 + 1];
    s3.put_object()
        .bucket(bucket)
        .key("incoming/big.txt")
        .body(big.into())
        .send()
        .await
        .expect("upload");
    let deadline = Instant::now() + Duration::from_secs(90);
    let record = wait_result(c, "results/big.txt.json", deadline).await;
    let record: serde_json::Value = serde_json::from_str(&record).expect("json");
    assert_eq!(record["status"], "failed", "{record}");
    assert!(
        record["error"]
            .as_str()
            .is_some_and(|e| e.contains("uploads may be at most")),
        "{record}"
    );
}

/// The job an upload made, as its record under results/ names it (another
/// test's job may be running too), waited for until [`JOB_TIMEOUT`].
async fn upload_job(c: &Cloud, record: &str) -> String {
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let named = read_result(c, record)
            .await
            .and_then(|r| serde_json::from_str::<Value>(&r).ok());
        if let Some(id) = named.as_ref().and_then(|r| r["jobId"].as_str()) {
            return id.to_owned();
        }
        assert!(Instant::now() < deadline, "the upload made no job");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
