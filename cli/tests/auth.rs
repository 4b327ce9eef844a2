//! API keys and tenants through the real binary: keys made with `lotsawa
//! keys`, a server with `--require-auth`, and every endpoint asked by no
//! key, a wrong key, the owner and another tenant.

use std::process::Command;

use lotsawa_apitests::FakeProvider;
use serde_json::{Value, json};

mod support;

use support::{Server, lotsawa, temp_db};

fn make_key(db: &str, tenant: &str) -> String {
    let out = lotsawa(&["keys", "create", "--tenant", tenant, "--db", db]);
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert!(key.starts_with("lts_"), "{key}");
    key
}

struct Caller {
    http: reqwest::Client,
    base: String,
}

impl Caller {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_guard_every_endpoint_and_tenants_see_only_their_jobs() {
    let provider = FakeProvider::start().await;
    let (_dir, db) = temp_db();
    let db_s = db.to_str().expect("path");
    let alpha = make_key(db_s, "alpha");
    let beta = make_key(db_s, "beta");
    let bad = lotsawa(&["keys", "create", "--tenant", "Not Valid", "--db", db_s]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");

    let listed = lotsawa(&["keys", "list", "--db", db_s]);
    let listed = String::from_utf8(listed.stdout).expect("utf-8");
    assert!(
        listed.contains("alpha") && listed.contains("beta"),
        "{listed}"
    );
    assert!(
        !listed.contains(&alpha[17..]) && !listed.contains(&beta[17..]),
        "a key list shows no secret: {listed}"
    );

    let server = Server::start(&db, &provider, 1, &[("LOTSAWA_REQUIRE_AUTH", "1")]);
    let c = Caller {
        http: reqwest::Client::new(),
        base: server.url.trim_end_matches('/').to_owned(),
    };
    use reqwest::Method as M;

    // Open: health and the API description.
    assert_eq!(c.send(M::GET, "/healthz", None, None).await.0, 200);
    assert_eq!(c.send(M::GET, "/openapi.json", None, None).await.0, 200);

    // No key, a wrong key: 401 problem+json with a Bearer challenge.
    // Its last character changed (a key ending in 0 would be unchanged).
    let last = if alpha.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &alpha[..alpha.len() - 1]);
    for (key, what) in [(None, "no key"), (Some(wrong.as_str()), "wrong key")] {
        for (method, path) in [
            (M::GET, "/api/jobs"),
            (M::POST, "/api/jobs"),
            (M::GET, "/metrics"),
            (M::GET, "/api/jobs/00000000-0000-4000-8000-000000000000"),
        ] {
            let (status, body, headers) = c.send(method.clone(), path, key, None).await;
            assert_eq!(status, 401, "{what} {method} {path}: {body}");
            assert_eq!(body["status"], 401, "{body}");
            assert_eq!(
                headers
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap_or("")),
                Some("Bearer")
            );
            assert_eq!(
                headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap_or("")),
                Some("application/problem+json")
            );
        }
    }

    // Alpha's job.
    let (status, body, _) = c
        .send(
            M::POST,
            "/api/jobs",
            Some(&alpha),
            Some(json!({"sourceText": "ཀ་ཁ་ག། ", "config": {"engine": "echo"}})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["jobId"].as_str().expect("job id").to_owned();
    let job_path = format!("/api/jobs/{id}");
    assert_eq!(c.send(M::GET, &job_path, Some(&alpha), None).await.0, 200);

    // Beta sees no such job anywhere.
    let (status, body, _) = c.send(M::GET, &job_path, Some(&beta), None).await;
    assert_eq!(status, 404, "{body}");
    for (method, path) in [
        (M::DELETE, job_path.clone()),
        (M::POST, format!("{job_path}/retry")),
        (M::GET, format!("{job_path}/stream")),
    ] {
        let (status, body, _) = c.send(method.clone(), &path, Some(&beta), None).await;
        assert_eq!(status, 404, "beta {method} {path}: {body}");
    }
    let (status, body, _) = c
        .send(
            M::GET,
            &format!("{job_path}/stream?access_token={beta}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 404, "beta's token on the stream route: {body}");
    let (_, list_b, _) = c.send(M::GET, "/api/jobs", Some(&beta), None).await;
    assert_eq!(list_b["jobs"].as_array().map(Vec::len), Some(0), "{list_b}");
    let (_, list_a, _) = c.send(M::GET, "/api/jobs", Some(&alpha), None).await;
    assert_eq!(list_a["jobs"][0]["id"], id.as_str(), "{list_a}");
    assert_eq!(
        c.send(M::GET, "/metrics", Some(&beta), None).await.0,
        200,
        "any valid key reads the metrics"
    );

    // The stream route alone takes the key as a query parameter.
    let res = reqwest::Client::new()
        .get(format!("{}{job_path}/stream?access_token={alpha}", c.base))
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status().as_u16(), 200);
    drop(res);
    let (status, _, _) = c
        .send(
            M::GET,
            &format!("/api/jobs?access_token={alpha}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 401, "access_token works on the stream route only");

    // The CLI client sends LOTSAWA_API_KEY.
    let status = Command::new(env!("CARGO_BIN_EXE_lotsawa"))
        .args(["status", &id, "--server", &c.base])
        .env("LOTSAWA_API_KEY", &alpha)
        .output()
        .expect("lotsawa status");
    assert!(status.status.success(), "{status:?}");
    let refused = Command::new(env!("CARGO_BIN_EXE_lotsawa"))
        .args(["status", &id, "--server", &c.base])
        .env_remove("LOTSAWA_API_KEY")
        .output()
        .expect("lotsawa status");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("API key") && err.contains("401"), "{err}");

    // The translation memory is per tenant: the same text from another
    // tenant goes to the provider again and reports no memory hit.
    let text = "ཀ་ཁ་ག་ང་ཅ། memory-per-tenant";
    let mut results = Vec::new();
    for key in [&alpha, &beta, &alpha] {
        let (status, body, _) = c
            .send(
                M::POST,
                "/api/jobs",
                Some(key),
                Some(json!({"sourceText": text, "config": {"engine": "openai"}})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let path = format!("/api/jobs/{}", body["jobId"].as_str().expect("id"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let job = loop {
            let (_, job, _) = c.send(M::GET, &path, Some(key), None).await;
            if job["status"] == "completed" {
                break job;
            }
            assert!(job["status"] != "failed", "{job}");
            assert!(std::time::Instant::now() < deadline, "{job}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        results.push(job["result"]["chunksFromMemory"].as_u64());
    }
    assert_eq!(
        results,
        vec![Some(0), Some(0), Some(1)],
        "memory hits per submission"
    );
    assert_eq!(provider.calls_for(text), 2, "one provider call per tenant");

    // A revoked key is refused at once (the server reads the same database).
    let alpha_id = &alpha[4..16];
    let out = lotsawa(&["keys", "revoke", alpha_id, "--db", db_s]);
    assert!(out.status.success(), "{out:?}");
    let (status, _, _) = c.send(M::GET, &job_path, Some(&alpha), None).await;
    assert_eq!(status, 401, "revoked key");
    let out = lotsawa(&["keys", "revoke", "ffffffffffff", "--db", db_s]);
    assert!(!out.status.success());
    server.kill9();
}
