//! `lotsawa translate` and `lotsawa transliterate`: one job, run in-process
//! on the embedded store, with a progress bar; the output goes to stdout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use lotsawa_core::{
    ChunkSize, EngineName, JobConfig, JobService, JobStatus, JobType, NewJob, SourceText,
};
use lotsawa_engines::EngineSet;
use lotsawa_local::LocalBackend;

use crate::config::{ProcessEnv, ServeConfig, ServeFlags};

/// Options of a one-off run.
#[derive(Debug, Clone, Default)]
pub struct OneShot {
    /// Database; a temporary one when absent.
    pub db: Option<PathBuf>,
    /// Engine (translate only).
    pub engine: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Chunk size.
    pub chunk_size: Option<u32>,
    /// Print the job as JSON.
    pub json: bool,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}

/// Run one job to its end.
pub async fn run(file: &Path, kind: JobType, opts: OneShot) -> ExitCode {
    let bytes = if file.as_os_str() == "-" {
        let mut b = Vec::new();
        if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut b) {
            return fail(format!("cannot read stdin: {e}"));
        }
        b
    } else {
        match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => return fail(format!("cannot read {}: {e}", file.display())),
        }
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return fail(format!("{} is not UTF-8 text", file.display()));
    };
    let source = match SourceText::parse(text) {
        Ok(s) => s,
        Err(e) => return fail(format!("{}: {}", file.display(), e.0)),
    };
    let temp = match &opts.db {
        Some(_) => None,
        None => match tempfile::tempdir() {
            Ok(d) => Some(d),
            Err(e) => return fail(format!("cannot create a temporary database: {e}")),
        },
    };
    let db = opts
        .db
        .clone()
        .or_else(|| temp.as_ref().map(|d| d.path().join("lotsawa.db")));
    let flags = ServeFlags {
        db,
        engine: opts.engine.clone(),
        ..Default::default()
    };
    let config = match ServeConfig::load(flags, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut job_config = JobConfig::default();
    if let Some(e) = &opts.engine {
        match EngineName::parse(e) {
            Ok(n) => job_config.engine = Some(n),
            Err(e) => return fail(e.0),
        }
    }
    job_config.model = opts.model.clone();
    if let Some(n) = opts.chunk_size {
        match ChunkSize::new(n) {
            Ok(c) => job_config.chunk_size = c,
            Err(e) => return fail(format!("--chunk-size: {}", e.0)),
        }
    }
    let (engines, _) = match EngineSet::build(&config.engines).await {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let backend = match LocalBackend::start(config.db.clone(), engines, config.scheduler()).await {
        Ok(b) => b,
        Err(e) => {
            return fail(format!(
                "cannot open the database {}: {e}",
                config.db.display()
            ));
        }
    };
    let service: Arc<dyn JobService> = backend.service();
    let job = match service
        .submit(NewJob {
            tenant: lotsawa_core::Tenant::default(),
            kind,
            source,
            config: job_config,
        })
        .await
    {
        Ok(j) => j,
        Err(e) => {
            let _ = backend.shutdown().await;
            return fail(e);
        }
    };
    let bar = ProgressBar::new(u64::from(job.chunks_total));
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} chunks {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut seen = 0u64;
    let outcome = loop {
        let view = match service.get(&lotsawa_core::Tenant::default(), job.id).await {
            Ok(v) => v,
            Err(e) => break Err(e.to_string()),
        };
        bar.set_position(u64::from(view.job.chunks_completed));
        if let Some(ms) = view.progress.estimated_time_remaining_ms {
            bar.set_message(format!("ETA {}s", ms / 1000));
        }
        if view.job.status.is_terminal() {
            break Ok(view);
        }
        tokio::select! {
            _ = service.wait_for_change(job.id, &mut seen, Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => {
                let _ = service.cancel(&lotsawa_core::Tenant::default(), job.id).await;
                bar.finish_and_clear();
                let _ = backend.shutdown().await;
                eprintln!("cancelled");
                return ExitCode::from(130);
            }
        }
    };
    bar.finish_and_clear();
    let _ = backend.shutdown().await;
    let view = match outcome {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let j = &view.job;
    if opts.json {
        let value = serde_json::json!({
            "id": j.id.to_string(),
            "type": j.kind.as_str(),
            "status": j.status.as_str(),
            "error": j.error,
            "result": j.result.as_ref().map(|r| serde_json::json!({
                "translation": r.translation, "confidence": r.confidence,
                "engine": r.engine, "model": r.model, "warnings": r.warnings,
                "processingTime": r.processing_time, "chunksFromMemory": r.chunks_from_memory,
            })),
        });
        println!("{value}");
    }
    match j.status {
        JobStatus::Completed => {
            if !opts.json
                && let Some(r) = &j.result
            {
                println!("{}", r.translation.trim_end());
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
            }
            ExitCode::SUCCESS
        }
        JobStatus::Failed => {
            eprintln!("failed: {}", j.error.as_deref().unwrap_or("unknown error"));
            ExitCode::from(3)
        }
        _ => ExitCode::from(4),
    }
}
