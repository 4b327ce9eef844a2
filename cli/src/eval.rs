//! `lotsawa eval CORPUS.tsv`: translate each `bo<TAB>en` segment through the
//! normal engine path (an in-process backend: glossaries, translation
//! memory, retries) and score the output against the references with chrF,
//! chrF++ and BLEU as sacrebleu computes them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use lotsawa_core::{
    EngineName, JobConfig, JobService, JobType, NewBatch, NewBatchItem, NewJob, SourceText, Tenant,
};

use crate::oneshot::fail;

/// Options of an evaluation.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// Engine.
    pub engine: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Database (its translation memory is used); a temporary one when absent.
    pub db: Option<PathBuf>,
    /// One JSON object instead of a table.
    pub json: bool,
}

/// A segment of the corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Its line in the file.
    pub line: usize,
    /// Tibetan.
    pub source: String,
    /// The reference translation.
    pub reference: String,
}

/// Parse a corpus: one `bo<TAB>en` segment per line; blank lines and lines
/// starting with `#` are skipped.
pub fn parse_corpus(text: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((bo, en)) = line.split_once('\t') else {
            return Err(format!(
                "line {}: expected Tibetan, a tab, then the reference translation",
                i + 1
            ));
        };
        if bo.trim().is_empty() || en.trim().is_empty() {
            return Err(format!("line {}: an empty source or reference", i + 1));
        }
        out.push(Segment {
            line: i + 1,
            source: bo.trim().to_owned(),
            reference: en.trim().to_owned(),
        });
    }
    if out.is_empty() {
        return Err("no segments (each line: Tibetan, a tab, the reference)".into());
    }
    Ok(out)
}

/// Most segments submitted as one batch.
const BATCH: usize = 1000;

/// Run an evaluation.
pub async fn run(corpus: &Path, opts: EvalOptions) -> ExitCode {
    let text = match std::fs::read(corpus).map(String::from_utf8) {
        Ok(Ok(t)) => t,
        Ok(Err(_)) => return fail(format!("{} is not UTF-8 text", corpus.display())),
        Err(e) => return fail(format!("cannot read {}: {e}", corpus.display())),
    };
    let segments = match parse_corpus(&text) {
        Ok(s) => s,
        Err(e) => return fail(format!("{}: {e}", corpus.display())),
    };
    let mut config = JobConfig::default();
    if let Some(e) = &opts.engine {
        match EngineName::parse(e) {
            Ok(n) => config.engine = Some(n),
            Err(e) => return fail(e.0),
        }
    }
    config.model = opts.model.clone();
    let mut jobs = Vec::with_capacity(segments.len());
    for s in &segments {
        match SourceText::parse(s.source.clone()) {
            Ok(source) => jobs.push(NewJob {
                trace: None,
                tenant: Tenant::default(),
                kind: JobType::Translation,
                source,
                config: config.clone(),
            }),
            Err(e) => return fail(format!("line {}: {}", s.line, e.0)),
        }
    }
    let (backend, _temp) =
        match crate::oneshot::start_backend(opts.db.clone(), opts.engine.clone()).await {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
    let service: Arc<dyn JobService> = backend.service();
    let outcome = translate_all(&*service, jobs).await;
    let _ = backend.shutdown().await;
    let hypotheses = match outcome {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    report(&segments, &hypotheses, &opts)
}

/// What came back for one segment.
struct Hypothesis {
    text: String,
    engine: Option<String>,
    model: Option<String>,
    error: Option<String>,
}

/// Translate every segment as batch items, with a progress bar; the
/// outputs in order.
async fn translate_all(
    service: &dyn JobService,
    jobs: Vec<NewJob>,
) -> Result<Vec<Hypothesis>, String> {
    let total = jobs.len();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{bar:40}] {pos}/{len} segments {percent:>3}% {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let tenant = Tenant::default();
    let mut out = Vec::with_capacity(total);
    let mut done_before = 0u64;
    let mut jobs = jobs.into_iter().peekable();
    while jobs.peek().is_some() {
        let items: Vec<NewBatchItem> = jobs
            .by_ref()
            .take(BATCH)
            .enumerate()
            .map(|(i, job)| NewBatchItem {
                name: format!("segment {}", done_before as usize + i + 1),
                job,
            })
            .collect();
        let view = service
            .submit_batch(NewBatch {
                tenant: tenant.clone(),
                items,
            })
            .await
            .map_err(|e| e.to_string())?;
        let id = view.batch.id;
        let ids: Vec<_> = view.batch.items.iter().map(|i| i.job_id).collect();
        loop {
            let v = service
                .batch(&tenant, id)
                .await
                .map_err(|e| e.to_string())?;
            let c = v.summary.counts;
            bar.set_position(done_before + u64::from(c.completed + c.failed + c.cancelled));
            if let Some(ms) = v.summary.progress.estimated_time_remaining_ms {
                bar.set_message(format!("ETA {}s", ms / 1000));
            }
            if v.summary.status.is_terminal() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for job_id in ids {
            let j = service
                .get(&tenant, job_id)
                .await
                .map_err(|e| e.to_string())?
                .job;
            out.push(match j.result {
                Some(r) => Hypothesis {
                    text: r.translation.trim().to_owned(),
                    engine: Some(r.engine),
                    model: r.model,
                    error: None,
                },
                None => Hypothesis {
                    text: String::new(),
                    engine: j.config.engine.map(|e| e.to_string()),
                    model: j.config.model,
                    error: Some(j.error.unwrap_or_else(|| j.status.as_str().to_owned())),
                },
            });
        }
        done_before = out.len() as u64;
    }
    bar.finish_and_clear();
    Ok(out)
}

fn report(segments: &[Segment], hyps: &[Hypothesis], opts: &EvalOptions) -> ExitCode {
    let pairs: Vec<(&str, &str)> = hyps
        .iter()
        .zip(segments)
        .map(|(h, s)| (h.text.as_str(), s.reference.as_str()))
        .collect();
    let scores = lotsawa_core::score::score(&pairs);
    let engine = hyps.iter().find_map(|h| h.engine.clone());
    let model = hyps.iter().find_map(|h| h.model.clone());
    let failed = hyps.iter().filter(|h| h.error.is_some()).count();
    if opts.json {
        let value = serde_json::json!({
            "engine": engine,
            "model": model,
            "segments": segments.iter().zip(hyps).zip(&scores.segment_chrf).map(|((s, h), c)| {
                let mut v = serde_json::json!({
                    "source": s.source, "reference": s.reference,
                    "hypothesis": h.text, "chrf": c,
                });
                if let Some(e) = &h.error {
                    v["error"] = serde_json::json!(e);
                }
                v
            }).collect::<Vec<_>>(),
            "chrf": scores.chrf,
            "chrfpp": scores.chrfpp,
            "bleu": scores.bleu,
        });
        println!("{value}");
    } else {
        println!("{:>5}  {:>6}  hypothesis | reference", "line", "chrF");
        for ((s, h), c) in segments.iter().zip(hyps).zip(&scores.segment_chrf) {
            let shown = h
                .error
                .as_deref()
                .map_or_else(|| h.text.clone(), |e| format!("(failed: {e})"));
            println!(
                "{:>5}  {:>6.2}  {} | {}",
                s.line,
                c,
                crate::client::terminal_safe(&shown),
                crate::client::terminal_safe(&s.reference)
            );
        }
        println!(
            "\nengine {}{}  segments {}  chrF {:.2}  chrF++ {:.2}  BLEU {:.2}",
            engine.as_deref().unwrap_or("?"),
            model.map(|m| format!(" ({m})")).unwrap_or_default(),
            segments.len(),
            scores.chrf,
            scores.chrfpp,
            scores.bleu
        );
    }
    if failed > 0 {
        eprintln!(
            "{failed} of {} segments failed (scored as empty)",
            segments.len()
        );
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpora_are_parsed_with_their_line_numbers() {
        let c = parse_corpus("# a sample\n\nཀ་ཁ།\tka kha\r\nག།\tga\n").expect("ok");
        assert_eq!(
            c,
            vec![
                Segment {
                    line: 3,
                    source: "ཀ་ཁ།".into(),
                    reference: "ka kha".into()
                },
                Segment {
                    line: 4,
                    source: "ག།".into(),
                    reference: "ga".into()
                },
            ]
        );
        assert!(
            parse_corpus("ཀ་ཁ། ka kha\n")
                .expect_err("no tab")
                .contains("line 1")
        );
        assert!(
            parse_corpus("ཀ\t \n")
                .expect_err("empty")
                .contains("line 1")
        );
        assert!(parse_corpus("# only a comment\n").is_err());
    }
}
