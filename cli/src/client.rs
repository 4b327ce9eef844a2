//! The command-line client: talks to a Lotsawa server over its HTTP API and
//! follows jobs over SSE with a progress bar.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use lotsawa_http::dto::{ActionResponse, JobDto, JobListDto, ProgressEvent, SubmitResponse};
use lotsawa_http::error::Problem;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::{self, ProcessEnv};

/// Exit code when a followed job failed.
pub(crate) const EXIT_JOB_FAILED: u8 = 3;
/// Exit code when a followed job was cancelled.
pub(crate) const EXIT_JOB_CANCELLED: u8 = 4;

/// An error to print, with the process exit code.
pub(crate) struct Failure(pub(crate) String);

/// How `lotsawa submit` runs.
#[derive(Debug, Default)]
pub struct SubmitHow {
    /// Follow with a progress bar.
    pub follow: bool,
    /// Wait for the end without a bar.
    pub wait: bool,
    /// Target chunk size.
    pub chunk_size: Option<u32>,
    /// Engine.
    pub engine: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Chunks translated at once.
    pub parallel_chunks: Option<u32>,
    /// Queue priority.
    pub priority: Option<i8>,
}

impl SubmitHow {
    /// The `config` object these flags make.
    pub(crate) fn config(&self) -> serde_json::Map<String, Value> {
        let mut config = serde_json::Map::new();
        if let Some(c) = self.chunk_size {
            config.insert("chunkSize".into(), json!(c));
        }
        if let Some(e) = &self.engine {
            config.insert("engine".into(), json!(e));
        }
        if let Some(m) = &self.model {
            config.insert("model".into(), json!(m));
        }
        if let Some(p) = self.parallel_chunks {
            config.insert("parallelChunks".into(), json!(p));
        }
        if let Some(p) = self.priority {
            config.insert("priority".into(), json!(p));
        }
        config
    }
}

/// A file's bytes (`-`: stdin).
pub(crate) fn read_bytes(file: &Path) -> Result<Vec<u8>, Failure> {
    if file.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .map_err(|e| Failure(format!("cannot read stdin: {e}")))?;
        Ok(b)
    } else {
        std::fs::read(file).map_err(|e| Failure(format!("cannot read {}: {e}", file.display())))
    }
}

/// How long a request that carries files may take (the server reads them).
pub(crate) const FILE_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings as the query of a PDF submission.
pub(crate) fn pdf_query(config: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    let mut q: Vec<(String, String)> = config
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect();
    q.push(("type".into(), "translation".into()));
    q
}

/// API client.
pub struct Client {
    pub(crate) base: String,
    pub(crate) json: bool,
    pub(crate) http: reqwest::Client,
}

pub(crate) fn problem_detail(status: reqwest::StatusCode, body: &str) -> String {
    let detail = serde_json::from_str::<Problem>(body)
        .map(|p| p.detail)
        .unwrap_or_else(|_| body.trim().chars().take(300).collect());
    format!("{} (HTTP {})", terminal_safe(&detail), status.as_u16())
}

/// Server text made safe for a terminal: escape sequences (which could move
/// the cursor, retitle the window or hide text), other control characters
/// and bidirectional overrides are dropped; line breaks and tabs stay.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ params final / ESC ] ... BEL|ST / ESC x: drop the sequence.
            match chars.peek() {
                Some('[') => {
                    chars.next();
                    for n in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&n) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    chars.next();
                    while let Some(n) = chars.next() {
                        if n == '\u{7}' {
                            break;
                        }
                        if n == '\u{1b}' {
                            chars.next();
                            break;
                        }
                    }
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            }
        } else if !unsafe_char(c) {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The `type` of an SSE event's data.
#[derive(serde::Deserialize)]
pub(crate) struct EventKind {
    #[serde(rename = "type")]
    pub(crate) kind: String,
}

/// Print a DTO as the JSON the server sent.
pub(crate) fn print_json<T: Serialize>(v: &T) {
    match serde_json::to_string(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot print the answer: {e}"),
    }
}

pub(crate) fn fmt_ms(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl Client {
    /// A client for `--server` or LOTSAWA_URL.
    pub fn new(server: Option<String>, json: bool) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = config::api_key(&ProcessEnv)
            && let Ok(mut v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
        {
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        Self {
            base: config::server_url(server, &ProcessEnv),
            json,
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap_or_default(),
        }
    }

    /// One request, for commands that stop at any error.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, Failure> {
        match self.request(method, path, body.as_ref(), None).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err((_, detail))) => Err(Failure(detail)),
            Err(why) => Err(Failure(why)),
        }
    }

    pub(crate) fn finish(r: Result<ExitCode, Failure>) -> ExitCode {
        match r {
            Ok(c) => c,
            Err(Failure(m)) => {
                eprintln!("error: {m}");
                ExitCode::FAILURE
            }
        }
    }

    fn print_job(&self, job: &JobDto) {
        if self.json {
            print_json(job);
            return;
        }
        println!("id:        {}", job.id);
        println!("status:    {}", job.status);
        println!(
            "progress:  {}% ({}/{} chunks)",
            job.progress, job.chunks_completed, job.chunks_total
        );
        if let Some(eta) = job.estimated_time_remaining {
            println!("eta:       {}", fmt_ms(eta));
        }
        println!("created:   {}", job.created_at);
        println!("run:       {}", job.run);
        if let Some(e) = &job.error {
            println!("error:     {}", terminal_safe(e));
        }
        if let Some(r) = &job.result {
            println!("\n{}", terminal_safe(&r.translation));
        }
    }

    /// One request: the parsed answer, or the server's refusal with its
    /// status (problem detail); `Err` when the server was not reached or
    /// its answer cannot be read.
    pub(crate) async fn request<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Result<T, (reqwest::StatusCode, String)>, String> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method, &url)
            .timeout(Duration::from_secs(60));
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        self.send(req).await
    }

    /// Send a built request; the answer's text, or the server's refusal
    /// with its status (problem detail); `Err` when the server was not
    /// reached or its answer cannot be read.
    pub(crate) async fn send_text(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<Result<String, (reqwest::StatusCode, String)>, String> {
        let res = req
            .send()
            .await
            .map_err(|e| format!("cannot reach the server at {}: {e}", self.base))?;
        let status = res.status();
        let text = res
            .text()
            .await
            .map_err(|e| format!("reading the server's answer failed: {e}"))?;
        if !status.is_success() {
            return Ok(Err((status, problem_detail(status, &text))));
        }
        Ok(Ok(text))
    }

    /// Send a built request; the parsed answer, or the server's refusal.
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<Result<T, (reqwest::StatusCode, String)>, String> {
        Ok(match self.send_text(req).await? {
            Ok(text) => Ok(serde_json::from_str(&text).map_err(|e| {
                format!("the server sent an answer this client does not understand: {e}")
            })?),
            Err(refused) => Err(refused),
        })
    }

    /// `POST /api/jobs` with a PDF body and settings in the query.
    pub(crate) async fn post_pdf<T: DeserializeOwned>(
        &self,
        bytes: Vec<u8>,
        query: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> Result<Result<T, (reqwest::StatusCode, String)>, String> {
        let mut req = self
            .http
            .post(format!("{}/api/jobs", self.base))
            .query(query)
            .header("content-type", "application/pdf")
            .timeout(FILE_TIMEOUT)
            .body(bytes);
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        self.send(req).await
    }

    /// `lotsawa submit`: one file makes a job, several make a batch.
    pub async fn submit(&self, files: &[std::path::PathBuf], how: SubmitHow) -> ExitCode {
        match files {
            [one] => Self::finish(self.submit_inner(one, how).await),
            many => Self::finish(self.submit_batch(many, how).await),
        }
    }

    async fn submit_inner(&self, file: &Path, how: SubmitHow) -> Result<ExitCode, Failure> {
        let bytes = read_bytes(file)?;
        let config = how.config();
        let SubmitHow { follow, wait, .. } = how;
        let created: SubmitResponse = if lotsawa_pdf::is_pdf(&bytes) {
            // The server reads the PDF; a refusal says why.
            match self.post_pdf(bytes, &pdf_query(&config), None).await {
                Ok(Ok(v)) => v,
                Ok(Err((_, detail))) => {
                    return Err(Failure(format!("{}: {detail}", file.display())));
                }
                Err(why) => return Err(Failure(why)),
            }
        } else {
            let text = String::from_utf8(bytes).map_err(|_| {
                Failure(format!(
                    "{} is neither a PDF nor UTF-8 text",
                    file.display()
                ))
            })?;
            let body = json!({"sourceText": text, "type": "translation", "config": config});
            self.call(reqwest::Method::POST, "/api/jobs", Some(body))
                .await?
        };
        let id = created.job_id.clone();
        if !follow && !wait {
            if self.json {
                print_json(&created);
            } else {
                println!("{id}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        if !self.json && follow {
            eprintln!("job {id} submitted");
        }
        self.follow(&id, follow).await
    }

    /// Follow a job to its end over SSE (with a progress bar when `bar`),
    /// then print it: the translation, or the job as JSON with `--json`.
    async fn follow(&self, id: &str, bar: bool) -> Result<ExitCode, Failure> {
        let bar = if bar {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{bar:40}] {pos}/{len} chunks {percent:>3}% {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        let mut last_id: Option<String> = None;
        let mut failures = 0u32;
        let outcome = loop {
            let url = format!("{}/api/jobs/{id}/stream", self.base);
            let mut req = self.http.get(&url).header("accept", "text/event-stream");
            if let Some(l) = &last_id {
                req = req.header("last-event-id", l);
            }
            let res = match req.send().await {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    bar.finish_and_clear();
                    return Err(Failure(problem_detail(status, &body)));
                }
                Err(e) => {
                    failures += 1;
                    if failures > 10 {
                        bar.finish_and_clear();
                        return Err(Failure(format!("lost the server at {}: {e}", self.base)));
                    }
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(failures))).await;
                    continue;
                }
            };
            failures = 0;
            let mut events = res.bytes_stream().eventsource();
            let mut terminal: Option<String> = None;
            while let Some(ev) = events.next().await {
                let Ok(ev) = ev else { break };
                if !ev.id.is_empty() {
                    last_id = Some(ev.id.clone());
                }
                if ev.event == "close" {
                    break;
                }
                let Ok(EventKind { kind }) = serde_json::from_str(&ev.data) else {
                    continue;
                };
                match kind.as_str() {
                    "progress" => {
                        let Ok(p) = serde_json::from_str::<ProgressEvent>(&ev.data) else {
                            continue;
                        };
                        bar.set_length(u64::from(p.chunks_total));
                        bar.set_position(u64::from(p.chunks_completed));
                        let eta = p
                            .estimated_time_remaining
                            .map(|ms| format!(" ETA {}", fmt_ms(ms)))
                            .unwrap_or_default();
                        bar.set_message(format!("{}{eta}", terminal_safe(&p.status)));
                    }
                    "completed" | "failed" | "cancelled" => terminal = Some(kind),
                    _ => {}
                }
            }
            if let Some(t) = terminal {
                break t;
            }
            // The stream ended without a terminal event: reconnect and resume.
        };
        bar.finish_and_clear();
        let job: JobDto = self
            .call(reqwest::Method::GET, &format!("/api/jobs/{id}"), None)
            .await?;
        match outcome.as_str() {
            "completed" => {
                if self.json {
                    print_json(&job);
                } else if let Some(r) = &job.result {
                    println!("{}", terminal_safe(&r.translation));
                }
                Ok(ExitCode::SUCCESS)
            }
            "failed" => {
                if self.json {
                    print_json(&job);
                }
                let e = job.error.as_deref().unwrap_or("unknown error");
                eprintln!("job {id} failed: {}", terminal_safe(e));
                Ok(ExitCode::from(EXIT_JOB_FAILED))
            }
            _ => {
                if self.json {
                    print_json(&job);
                }
                eprintln!("job {id} was cancelled");
                Ok(ExitCode::from(EXIT_JOB_CANCELLED))
            }
        }
    }

    /// `lotsawa result`: the translation text only (raw when piped; on a
    /// terminal, control sequences from the server are dropped).
    pub async fn result(&self, id: &str, pages: bool) -> ExitCode {
        Self::finish(self.result_inner(id, pages).await)
    }

    /// A completed document's output with a `[page N]` line per page.
    async fn paged_result(&self, id: &str) -> Result<String, Failure> {
        let req = self
            .http
            .get(format!("{}/api/jobs/{id}/result?pages=true", self.base))
            .timeout(Duration::from_secs(60));
        match self.send_text(req).await {
            Ok(Ok(text)) => Ok(text),
            Ok(Err((_, detail))) => Err(Failure(detail)),
            Err(why) => Err(Failure(why)),
        }
    }

    async fn result_inner(&self, id: &str, pages: bool) -> Result<ExitCode, Failure> {
        use std::io::{IsTerminal, Write};
        let job: JobDto = self
            .call(reqwest::Method::GET, &format!("/api/jobs/{id}"), None)
            .await?;
        match job.status.as_str() {
            "completed" => {
                let text = if pages {
                    self.paged_result(id).await?
                } else {
                    // A document's page breaks (form feeds) are not printed.
                    job.result
                        .map(|r| r.translation.replace(lotsawa_core::ledger::PAGE_BREAK, ""))
                        .unwrap_or_default()
                };
                let mut out = std::io::stdout().lock();
                let shown = if out.is_terminal() {
                    terminal_safe(&text)
                } else {
                    std::borrow::Cow::Borrowed(text.as_str())
                };
                writeln!(out, "{shown}")
                    .map_err(|e| Failure(format!("cannot write the result: {e}")))?;
                Ok(ExitCode::SUCCESS)
            }
            "failed" => {
                let e = job.error.as_deref().unwrap_or("unknown error");
                eprintln!("job {id} failed: {}", terminal_safe(e));
                Ok(ExitCode::from(EXIT_JOB_FAILED))
            }
            "cancelled" => {
                eprintln!("job {id} was cancelled");
                Ok(ExitCode::from(EXIT_JOB_CANCELLED))
            }
            other => Err(Failure(format!(
                "job {id} is {}: it has no result yet (wait with `lotsawa submit --wait`)",
                terminal_safe(other)
            ))),
        }
    }

    /// `lotsawa status`.
    pub async fn status(&self, id: &str) -> ExitCode {
        Self::finish(
            self.call::<JobDto>(reqwest::Method::GET, &format!("/api/jobs/{id}"), None)
                .await
                .map(|job| {
                    self.print_job(&job);
                    ExitCode::SUCCESS
                }),
        )
    }

    /// `lotsawa health`: exit 0 when the server answers `/healthz` healthy
    /// (the container image's HEALTHCHECK), 1 otherwise.
    pub async fn health(&self) -> ExitCode {
        Self::finish(
            self.call::<serde_json::Value>(reqwest::Method::GET, "/healthz", None)
                .await
                .map(|health| {
                    if self.json {
                        print_json(&health);
                    } else {
                        println!("{}", health["status"].as_str().unwrap_or("ok"));
                    }
                    ExitCode::SUCCESS
                }),
        )
    }

    /// `lotsawa list`.
    pub async fn list(&self, status: Option<String>, limit: u32) -> ExitCode {
        let mut path = format!("/api/jobs?limit={limit}");
        if let Some(s) = status {
            path.push_str(&format!("&status={s}"));
        }
        Self::finish(
            self.call::<JobListDto>(reqwest::Method::GET, &path, None)
                .await
                .map(|page| {
                    if self.json {
                        print_json(&page);
                    } else {
                        println!(
                            "{:<36}  {:<10}  {:>4}  {:>11}  created",
                            "id", "status", "%", "chunks"
                        );
                        for j in &page.jobs {
                            println!(
                                "{:<36}  {:<10}  {:>4}  {:>11}  {}",
                                terminal_safe(&j.id),
                                terminal_safe(&j.status),
                                j.progress,
                                format!("{}/{}", j.chunks_completed, j.chunks_total),
                                terminal_safe(&j.created_at)
                            );
                        }
                    }
                    ExitCode::SUCCESS
                }),
        )
    }

    /// `lotsawa cancel`.
    pub async fn cancel(&self, id: &str) -> ExitCode {
        self.action(reqwest::Method::DELETE, &format!("/api/jobs/{id}"))
            .await
    }

    /// `lotsawa retry`.
    pub async fn retry(&self, id: &str) -> ExitCode {
        self.action(reqwest::Method::POST, &format!("/api/jobs/{id}/retry"))
            .await
    }

    async fn action(&self, method: reqwest::Method, path: &str) -> ExitCode {
        Self::finish(
            self.call::<ActionResponse>(method, path, None)
                .await
                .map(|v| {
                    if self.json {
                        print_json(&v);
                    } else {
                        println!("{}", terminal_safe(&v.message));
                    }
                    ExitCode::SUCCESS
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn terminal_sequences_and_controls_are_dropped() {
        assert_eq!(
            terminal_safe("Homage to Mañjuśrī.\n\tline"),
            "Homage to Mañjuśrī.\n\tline"
        );
        assert_eq!(terminal_safe("\u{1b}[2J\u{1b}[31mred\u{1b}[0m"), "red");
        assert_eq!(terminal_safe("a\u{1b}]0;owned title\u{7}b"), "ab");
        assert_eq!(terminal_safe("a\u{1b}]8;;http://x\u{1b}\\b"), "ab");
        assert_eq!(terminal_safe("bell\u{7}\rover\u{8}"), "bellover");
        assert_eq!(terminal_safe("\u{9b}31mc1"), "31mc1");
        assert_eq!(terminal_safe("x\u{202E}gnp.exe"), "xgnp.exe");
        assert_eq!(terminal_safe("trailing\u{1b}"), "trailing");
    }
}
