//! `lotsawa translate` and `lotsawa transliterate --json`: one job, run
//! in-process on the embedded store, with a progress bar; the output goes to
//! stdout. `lotsawa transliterate` without `--json` streams instead: EWTS is
//! a pure function of the text.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use lotsawa_core::{
    ChunkSize, EngineName, JobConfig, JobService, JobStatus, JobType, NewJob, SourceText,
};
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

/// Bytes read at a time by [`transliterate_stream`].
const STREAM_BLOCK: usize = 1 << 20;

/// Where a piece of text may be cut without changing its transliteration:
/// just after the last tsheg, shad or line break (neither a syllable nor a
/// bracketed run of other text spans one; a space can sit inside a run);
/// `None` when there is none.
fn boundary_cut(bytes: &[u8]) -> Option<usize> {
    // ་ U+0F0B and ། U+0F0D are E0 BC 8B / E0 BC 8D in UTF-8.
    (1..=bytes.len()).rev().find(|&i| {
        let b = bytes[i - 1];
        b == b'\n'
            || ((b == 0x8B || b == 0x8D) && i >= 3 && bytes[i - 3] == 0xE0 && bytes[i - 2] == 0xBC)
    })
}

/// The end of the last whole character (for a block with no boundary at
/// all, which is cut anyway to keep memory bounded).
fn char_cut(bytes: &[u8]) -> usize {
    let mut j = bytes.len();
    while j > 0 && (bytes[j - 1] & 0xC0) == 0x80 {
        j -= 1;
    }
    if j == 0 {
        return bytes.len();
    }
    let need = match bytes[j - 1] {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    };
    if bytes.len() - (j - 1) >= need {
        bytes.len()
    } else {
        j - 1
    }
}

/// Transliterate `input` to EWTS on `output` as it is read: bounded memory
/// (about two blocks), cut only where no syllable spans the cut. The bytes
/// read, or why it stopped (the offset of the first byte that is not UTF-8).
pub fn transliterate_stream(
    mut input: impl std::io::Read,
    mut output: impl std::io::Write,
) -> Result<u64, String> {
    let mut carry: Vec<u8> = Vec::with_capacity(2 * STREAM_BLOCK);
    let mut block = vec![0u8; STREAM_BLOCK];
    let mut offset: u64 = 0;
    loop {
        let n = loop {
            match input.read(&mut block) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading failed: {e}")),
            }
        };
        carry.extend_from_slice(&block[..n]);
        let cut = if n == 0 {
            carry.len()
        } else {
            match boundary_cut(&carry) {
                Some(c) => c,
                // A syllable longer than a block: cut between characters.
                None if carry.len() >= STREAM_BLOCK => char_cut(&carry),
                None => 0,
            }
        };
        let text = std::str::from_utf8(&carry[..cut])
            .map_err(|e| format!("not UTF-8 text (byte {})", offset + e.valid_up_to() as u64))?;
        output
            .write_all(lotsawa_core::ewts::to_ewts(text).as_bytes())
            .map_err(|e| format!("writing failed: {e}"))?;
        offset += cut as u64;
        carry.drain(..cut);
        if n == 0 {
            output.flush().map_err(|e| format!("writing failed: {e}"))?;
            return Ok(offset);
        }
    }
}

/// `lotsawa transliterate FILE` without `--json`: the EWTS on stdout,
/// streamed.
pub fn transliterate(file: &Path) -> ExitCode {
    let stdout = std::io::stdout();
    let out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let result = if file.as_os_str() == "-" {
        transliterate_stream(std::io::stdin().lock(), out)
    } else {
        match std::fs::File::open(file) {
            Ok(f) => transliterate_stream(f, out),
            Err(e) => return fail(format!("cannot read {}: {e}", file.display())),
        }
    };
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(why) => fail(format!("{}: {why}", file.display())),
    }
}

/// An in-process backend with the configured engines, on `db` or on a
/// temporary database (removed when the returned directory is dropped).
pub(crate) async fn start_backend(
    db: Option<PathBuf>,
    engine: Option<String>,
) -> Result<(LocalBackend, Option<tempfile::TempDir>), String> {
    let temp = match &db {
        Some(_) => None,
        None => Some(
            tempfile::tempdir().map_err(|e| format!("cannot create a temporary database: {e}"))?,
        ),
    };
    let db = db.or_else(|| temp.as_ref().map(|d| d.path().join("lotsawa.db")));
    let config = ServeConfig::load(
        ServeFlags {
            db,
            engine,
            ..Default::default()
        },
        &ProcessEnv,
    )
    .map_err(|e| e.to_string())?;
    let (engines, _) = lotsawa_local::build_engines(&config.db, &config.engines).await?;
    let backend = LocalBackend::start(config.db.clone(), engines, config.scheduler())
        .await
        .map_err(|e| {
            format!(
                "cannot open the database {}: {e}",
                lotsawa_local::Db::of(&config.db).shown()
            )
        })?;
    Ok((backend, temp))
}

pub(crate) fn fail(msg: impl std::fmt::Display) -> ExitCode {
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
    let text = if lotsawa_pdf::is_pdf(&bytes) {
        match lotsawa_pdf::extract(&bytes, &lotsawa_pdf::Options::default()) {
            Ok(x) => x.text,
            Err(e) => return fail(format!("{}: {e}", file.display())),
        }
    } else {
        let Ok(text) = String::from_utf8(bytes) else {
            return fail(format!(
                "{} is neither a PDF nor UTF-8 text",
                file.display()
            ));
        };
        text
    };
    let source = match SourceText::parse(text) {
        Ok(s) => s,
        Err(e) => return fail(format!("{}: {}", file.display(), e.0)),
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
    let (backend, _temp) = match start_backend(opts.db.clone(), opts.engine.clone()).await {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let service: Arc<dyn JobService> = backend.service();
    let job = match service
        .submit(NewJob {
            trace: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader handing out `step` bytes at a time, to cut everywhere.
    struct Trickle<'a>(&'a [u8], usize);
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn streaming_gives_what_the_whole_text_gives_wherever_reads_end() {
        let text = "༄༅། །བྱང་ཆུབ་སེམས་དཔའི་སྤྱོད་པ་ལ་འཇུག་པ། །\nབསྲུང་བ་ཨོཾ་མ་ཎི་པདྨེ་ཧཱུྃ། Mixed text, ཀ་ཁ།";
        let whole = lotsawa_core::ewts::to_ewts(text);
        for step in [1, 2, 3, 5, 7, 64] {
            let mut out = Vec::new();
            let n = transliterate_stream(Trickle(text.as_bytes(), step), &mut out).expect("ok");
            assert_eq!(n, text.len() as u64);
            assert_eq!(
                String::from_utf8(out).expect("utf-8"),
                whole,
                "reads of {step}"
            );
        }
    }

    #[test]
    fn cuts_fall_after_a_boundary_or_a_whole_character() {
        let tsheg = "ཀ་ཁ".as_bytes();
        assert_eq!(boundary_cut(tsheg), Some("ཀ་".len()));
        assert_eq!(
            boundary_cut(b"ab cd"),
            None,
            "a space may sit inside a bracketed run"
        );
        assert_eq!(boundary_cut(b"ab\ncd"), Some(3));
        assert_eq!(boundary_cut("ཀཁ".as_bytes()), None);
        let ka = "ཀཁ".as_bytes();
        assert_eq!(char_cut(ka), ka.len());
        assert_eq!(char_cut(&ka[..4]), 3, "half of ཁ stays for the next read");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_named_by_offset() {
        let mut bad = "ཀ་ཁ་".as_bytes().to_vec();
        bad.extend_from_slice(&[0xFF, b' ']);
        let e = transliterate_stream(&bad[..], Vec::new()).expect_err("bad");
        assert!(e.contains("byte 12"), "{e}");
    }
}
