//! Batches from the command line: `lotsawa submit` of several files, and
//! `lotsawa batch status|cancel|retry`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lotsawa_http::dto::{BatchDto, BatchSubmitResponse};
use serde_json::json;

use crate::client::{
    Client, EXIT_JOB_CANCELLED, EXIT_JOB_FAILED, EventKind, Failure, SubmitHow, fmt_ms, print_json,
    problem_detail, terminal_safe,
};

/// The item name of a file: its path as given (`stdin` for `-`), so two
/// files of one name in different folders stay apart.
fn item_name(file: &std::path::Path) -> String {
    if file.as_os_str() == "-" {
        "stdin".to_owned()
    } else {
        file.display().to_string()
    }
}

/// The exit code of a batch that ended: 0 completed, 3 failed, 4 cancelled.
fn exit_of(status: &str) -> ExitCode {
    match status {
        "completed" => ExitCode::SUCCESS,
        "failed" => ExitCode::from(EXIT_JOB_FAILED),
        _ => ExitCode::from(EXIT_JOB_CANCELLED),
    }
}

/// One line per item: its status, progress and job.
fn item_lines(batch: &BatchDto) -> Vec<String> {
    batch
        .items
        .iter()
        .flatten()
        .map(|i| {
            let error = i
                .error
                .as_deref()
                .map(|e| format!("  {}", terminal_safe(e)))
                .unwrap_or_default();
            format!(
                "{:<10} {:>3}%  {}  {}{error}",
                terminal_safe(&i.status),
                i.progress,
                terminal_safe(&i.job_id),
                terminal_safe(&i.name)
            )
        })
        .collect()
}

impl Client {
    /// `lotsawa submit FILE FILE...`: the files as one batch.
    pub(crate) async fn submit_batch(
        &self,
        files: &[PathBuf],
        how: SubmitHow,
    ) -> Result<ExitCode, Failure> {
        let config = how.config();
        let contents = files
            .iter()
            .map(|f| crate::client::read_bytes(f))
            .collect::<Result<Vec<_>, _>>()?;
        let created: BatchSubmitResponse = if contents.iter().any(|b| lotsawa_pdf::is_pdf(b)) {
            // PDFs go as a form of files; the server reads them.
            let mut form = reqwest::multipart::Form::new()
                .text("config", serde_json::Value::Object(config).to_string())
                .text("type", "translation");
            for (f, bytes) in files.iter().zip(contents) {
                let mime = if lotsawa_pdf::is_pdf(&bytes) {
                    "application/pdf"
                } else {
                    "text/plain"
                };
                let part = reqwest::multipart::Part::bytes(bytes)
                    .file_name(item_name(f))
                    .mime_str(mime)
                    .map_err(|e| Failure(format!("cannot send {}: {e}", f.display())))?;
                form = form.part("file", part);
            }
            let req = self
                .http
                .post(format!("{}/api/batches", self.base))
                .timeout(crate::client::FILE_TIMEOUT)
                .multipart(form);
            match self.send(req).await {
                Ok(Ok(v)) => v,
                Ok(Err((_, detail))) => return Err(Failure(detail)),
                Err(why) => return Err(Failure(why)),
            }
        } else {
            let mut items = Vec::with_capacity(files.len());
            for (f, bytes) in files.iter().zip(contents) {
                let text = String::from_utf8(bytes).map_err(|_| {
                    Failure(format!("{} is neither a PDF nor UTF-8 text", f.display()))
                })?;
                items.push(json!({
                    "sourceText": text,
                    "name": item_name(f),
                    "type": "translation",
                }));
            }
            let body = json!({"items": items, "config": config});
            self.call(reqwest::Method::POST, "/api/batches", Some(body))
                .await?
        };
        if !how.follow && !how.wait {
            if self.json {
                print_json(&created);
            } else {
                println!("{}", created.batch_id);
            }
            return Ok(ExitCode::SUCCESS);
        }
        if !self.json && how.follow {
            eprintln!(
                "batch {} submitted: {} files",
                created.batch_id,
                created.job_ids.len()
            );
        }
        self.follow_batch(&created.batch_id, how.follow).await
    }

    async fn get_batch(&self, id: &str) -> Result<BatchDto, Failure> {
        self.call(reqwest::Method::GET, &format!("/api/batches/{id}"), None)
            .await
    }

    /// Follow a batch to its end over SSE: with `bars`, one aggregate bar
    /// and a line per file; then print the batch (JSON with `--json`, else
    /// a line per file) and exit by its status.
    async fn follow_batch(&self, id: &str, bars: bool) -> Result<ExitCode, Failure> {
        let first = self.get_batch(id).await?;
        let multi = MultiProgress::new();
        if !bars {
            multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let total = multi.add(ProgressBar::new(100));
        total.set_style(
            ProgressStyle::with_template("{spinner} [{bar:40}] {pos:>3}% {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        total.enable_steady_tick(Duration::from_millis(200));
        let lines: Vec<ProgressBar> = item_lines(&first)
            .into_iter()
            .map(|l| {
                let line = multi.add(ProgressBar::new_spinner());
                line.set_style(
                    ProgressStyle::with_template("  {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                line.set_message(l);
                line
            })
            .collect();
        let show = |b: &BatchDto| {
            total.set_position(u64::from(b.progress));
            let eta = b
                .estimated_time_remaining
                .filter(|_| b.status == "processing")
                .map(|ms| format!(" ETA {}", fmt_ms(ms)))
                .unwrap_or_default();
            total.set_message(format!(
                "{} {}/{} files done{eta}",
                terminal_safe(&b.status),
                b.counts.completed + b.counts.failed + b.counts.cancelled,
                b.total
            ));
            for (line, text) in lines.iter().zip(item_lines(b)) {
                line.set_message(text);
            }
        };
        show(&first);
        let mut failures = 0u32;
        let last = loop {
            let url = format!("{}/api/batches/{id}/stream", self.base);
            let res = match self
                .http
                .get(&url)
                .header("accept", "text/event-stream")
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    multi.clear().ok();
                    return Err(Failure(problem_detail(status, &body)));
                }
                Err(e) => {
                    failures += 1;
                    if failures > 10 {
                        multi.clear().ok();
                        return Err(Failure(format!("lost the server at {}: {e}", self.base)));
                    }
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(failures))).await;
                    continue;
                }
            };
            failures = 0;
            let mut events = res.bytes_stream().eventsource();
            let mut ended = false;
            while let Some(ev) = events.next().await {
                let Ok(ev) = ev else { break };
                if ev.event == "close" {
                    break;
                }
                let Ok(EventKind { kind }) = serde_json::from_str(&ev.data) else {
                    continue;
                };
                match kind.as_str() {
                    // The lines want each item's progress: read the batch.
                    "progress" | "item" => {
                        if let Ok(b) = self.get_batch(id).await {
                            show(&b);
                        }
                    }
                    "completed" | "failed" | "cancelled" => ended = true,
                    _ => {}
                }
            }
            if ended {
                break self.get_batch(id).await?;
            }
            // The stream ended without the batch's end: open it again.
        };
        show(&last);
        total.finish_and_clear();
        for l in &lines {
            l.finish_and_clear();
        }
        if self.json {
            print_json(&last);
        } else {
            for l in item_lines(&last) {
                println!("{l}");
            }
            eprintln!(
                "batch {id} {}: {} completed, {} failed, {} cancelled",
                terminal_safe(&last.status),
                last.counts.completed,
                last.counts.failed,
                last.counts.cancelled
            );
        }
        Ok(exit_of(&last.status))
    }

    /// `lotsawa batch status|cancel|retry ID`.
    pub async fn batch(&self, action: BatchAction, id: &str) -> ExitCode {
        let (method, path) = match action {
            BatchAction::Status => (reqwest::Method::GET, format!("/api/batches/{id}")),
            BatchAction::Cancel => (reqwest::Method::DELETE, format!("/api/batches/{id}")),
            BatchAction::Retry => (reqwest::Method::POST, format!("/api/batches/{id}/retry")),
        };
        Self::finish(
            self.call::<BatchDto>(method, &path, None)
                .await
                .map(|b| {
                    if self.json {
                        print_json(&b);
                    } else {
                        println!("id:        {}", terminal_safe(&b.id));
                        println!("status:    {}", terminal_safe(&b.status));
                        println!(
                            "progress:  {}% ({} completed, {} failed, {} cancelled, {} running, {} waiting of {})",
                            b.progress,
                            b.counts.completed,
                            b.counts.failed,
                            b.counts.cancelled,
                            b.counts.processing,
                            b.counts.pending,
                            b.total
                        );
                        if let Some(eta) = b.estimated_time_remaining.filter(|_| b.status == "processing") {
                            println!("eta:       {}", fmt_ms(eta));
                        }
                        println!("created:   {}", terminal_safe(&b.created_at));
                        for l in item_lines(&b) {
                            println!("  {l}");
                        }
                    }
                    ExitCode::SUCCESS
                }),
        )
    }
}

/// What `lotsawa batch` does.
#[derive(Debug, Clone, Copy)]
pub enum BatchAction {
    /// Show it.
    Status,
    /// Cancel every unfinished item.
    Cancel,
    /// Queue the failed and cancelled items again.
    Retry,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_by_their_path_and_stdin_by_name() {
        assert_eq!(item_name(std::path::Path::new("a/b.txt")), "a/b.txt");
        assert_eq!(item_name(std::path::Path::new("-")), "stdin");
    }

    #[test]
    fn the_exit_code_follows_the_batch() {
        assert_eq!(exit_of("completed"), ExitCode::SUCCESS);
        assert_eq!(exit_of("failed"), ExitCode::from(EXIT_JOB_FAILED));
        assert_eq!(exit_of("cancelled"), ExitCode::from(EXIT_JOB_CANCELLED));
    }
}
