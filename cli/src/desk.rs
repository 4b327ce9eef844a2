//! `lotsawa export` and `lotsawa import`: a job's bilingual text to and
//! from the files CAT tools read (TMX, XLIFF 2.1, a printable HTML page).

use std::path::Path;
use std::process::ExitCode;

use crate::client::{Client, FILE_TIMEOUT, Failure, print_json};

impl Client {
    /// `lotsawa export ID --format F [--output FILE]`.
    pub async fn export(&self, id: &str, format: &str, output: Option<&Path>) -> ExitCode {
        Self::finish(self.export_inner(id, format, output).await)
    }

    async fn export_inner(
        &self,
        id: &str,
        format: &str,
        output: Option<&Path>,
    ) -> Result<ExitCode, Failure> {
        use std::io::Write;
        let req = self
            .http
            .get(format!("{}/api/jobs/{id}/export", self.base))
            .query(&[("format", format)])
            .timeout(FILE_TIMEOUT);
        let text = match self.send_text(req).await {
            Ok(Ok(text)) => text,
            Ok(Err((_, detail))) => return Err(Failure(detail)),
            Err(why) => return Err(Failure(why)),
        };
        match output {
            Some(path) => {
                std::fs::write(path, text.as_bytes())
                    .map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))?;
                eprintln!("wrote {} ({} bytes)", path.display(), text.len());
            }
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())
                    .and_then(|()| out.flush())
                    .map_err(|e| Failure(format!("cannot write the export: {e}")))?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// `lotsawa import ID FILE`.
    pub async fn import(&self, id: &str, file: &Path) -> ExitCode {
        Self::finish(self.import_inner(id, file).await)
    }

    async fn import_inner(&self, id: &str, file: &Path) -> Result<ExitCode, Failure> {
        let bytes = if file == Path::new("-") {
            use std::io::Read;
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .map_err(|e| Failure(format!("cannot read standard input: {e}")))?;
            b
        } else {
            std::fs::read(file)
                .map_err(|e| Failure(format!("cannot read {}: {e}", file.display())))?
        };
        let req = self
            .http
            .post(format!("{}/api/jobs/{id}/import", self.base))
            .header("content-type", "application/xliff+xml")
            .timeout(FILE_TIMEOUT)
            .body(bytes);
        let report: serde_json::Value = match self.send(req).await {
            Ok(Ok(v)) => v,
            Ok(Err((_, detail))) => return Err(Failure(detail)),
            Err(why) => return Err(Failure(why)),
        };
        if self.json {
            print_json(&report);
            return Ok(ExitCode::SUCCESS);
        }
        let count = |k: &str| report[k].as_array().map_or(0, Vec::len);
        println!(
            "{} chunks corrected, {} marked reviewed or not, {} unchanged",
            count("updated"),
            count("reviewed"),
            report["unchanged"].as_u64().unwrap_or(0)
        );
        for s in report["skipped"].as_array().into_iter().flatten() {
            println!(
                "chunk {} skipped: {}",
                s["index"],
                crate::client::terminal_safe(s["reason"].as_str().unwrap_or(""))
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
