//! `lotsawa watch DIR`: the local inbox, twin of the cloud's upload trigger.
//!
//! Each `*.txt` or `*.pdf` file that appears in DIR becomes one job on the server, and
//! when the job ends its result is written under `DIR/results/`:
//! `<name>.en.txt` (the translation) and `<name>.json` (the job), or the
//! `.json` alone, with the error, when it failed or was cancelled.
//!
//! - **Once**: what was taken is kept in `DIR/.lotsawa-watch.json` (written
//!   by rename, so never half-written). A file is taken again only when its
//!   content changes. A crash between a submission and the state write is
//!   covered by the `Idempotency-Key` (the directory, name and content's
//!   hash): the server answers the first job again.
//! - **Whole files only**: a file is taken once its size and modification
//!   time have not moved for one scan and it was last modified at least
//!   `--settle` ago, so a file still being written is left for later.
//! - Jobs are followed by polling their status every `--interval` (one
//!   request per unfinished file; streams are capped per tenant).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use lotsawa_http::dto::{JobDto, SubmitResponse};
use serde::{Deserialize, Serialize};

use crate::client::{Client, terminal_safe};

/// Where the watcher keeps what it took.
pub const STATE_FILE: &str = ".lotsawa-watch.json";
/// Where results go.
pub const RESULTS_DIR: &str = "results";

/// How the watcher runs.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Between two scans of the directory (and two status polls).
    pub interval: Duration,
    /// How long a file must be left alone before it is taken.
    pub settle: Duration,
    /// Stop once every file present is taken and its job ended.
    pub once: bool,
}

/// One taken file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Taken {
    /// SHA-256 of the content taken.
    sha256: String,
    /// The job it became (none when it was refused).
    job_id: Option<String>,
    /// Its results are written.
    done: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    files: BTreeMap<String, Taken>,
}

fn load_state(dir: &Path) -> Result<State, String> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{} is damaged ({e}); move it away to take every file again",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Write `bytes` to `path` by way of a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn save_state(dir: &Path, state: &State) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
    write_atomic(&dir.join(STATE_FILE), &bytes)
}

/// What a scan saw of a file last time: size and modification time.
type Seen = HashMap<String, (u64, SystemTime)>;

/// `*.txt` files directly in `dir` that have settled: unchanged since the
/// last scan and older than `settle`.
fn settled_files(dir: &Path, seen: &mut Seen, settle: Duration) -> Result<Vec<String>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut now_seen = Seen::new();
    let mut ready = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || !(name.ends_with(".txt") || name.ends_with(".pdf")) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let now = (meta.len(), modified);
        let old_enough = modified.elapsed().is_ok_and(|age| age >= settle);
        if seen.get(&name) == Some(&now) && old_enough {
            ready.push(name.clone());
        }
        now_seen.insert(name, now);
    }
    *seen = now_seen;
    ready.sort();
    Ok(ready)
}

/// The file name without `.txt` or `.pdf`.
fn stem(name: &str) -> &str {
    name.strip_suffix(".txt")
        .or_else(|| name.strip_suffix(".pdf"))
        .unwrap_or(name)
}

/// Write a finished job's results; the translation only when it completed.
fn write_results(dir: &Path, name: &str, job: &serde_json::Value) -> Result<(), String> {
    let out = dir.join(RESULTS_DIR);
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let text_path = out.join(format!("{}.en.txt", stem(name)));
    let translation = job
        .get("result")
        .and_then(|r| r.get("translation"))
        .and_then(|t| t.as_str());
    match translation {
        Some(t) if job.get("status").and_then(|s| s.as_str()) == Some("completed") => {
            write_atomic(&text_path, t.as_bytes())?;
        }
        _ => {
            // A stale translation of an earlier version would mislead.
            let _ = std::fs::remove_file(&text_path);
        }
    }
    let bytes = serde_json::to_vec_pretty(job).map_err(|e| e.to_string())?;
    write_atomic(&out.join(format!("{}.json", stem(name))), &bytes)
}

/// The idempotency key of a file's version: the same directory, name and
/// content always make the same key.
fn idempotency_key(dir: &Path, name: &str, sha256: &str) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let id =
        lotsawa_core::digest::sha256_hex(format!("{}\0{name}\0{sha256}", dir.display()).as_bytes());
    format!("watch-{}", &id[..40])
}

/// A refusal the watcher records rather than retries.
fn refused(name: &str, error: &str) -> serde_json::Value {
    serde_json::json!({"file": name, "status": "refused", "error": error})
}

/// Take one settled file: submit it (or record why it cannot be). False
/// when it is to be tried again (the server was busy or not reached).
async fn take(client: &Client, dir: &Path, name: &str, state: &mut State) -> Result<bool, String> {
    let path = dir.join(name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        // Gone meanwhile: nothing to take.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let sha256 = lotsawa_core::digest::sha256_hex(&bytes);
    if state.files.get(name).is_some_and(|t| t.sha256 == sha256) {
        return Ok(true);
    }
    let refuse = |state: &mut State, why: &str| -> Result<bool, String> {
        eprintln!("refused {name}: {}", terminal_safe(why));
        write_results(dir, name, &refused(name, why))?;
        state.files.insert(
            name.to_owned(),
            Taken {
                sha256: sha256.clone(),
                job_id: None,
                done: true,
            },
        );
        save_state(dir, state).map(|()| true)
    };
    let key = idempotency_key(dir, name, &sha256);
    let sent = if name.ends_with(".pdf") {
        // The server reads the PDF; a file it cannot read is refused with why.
        let query = [("type".to_owned(), "translation".to_owned())];
        client
            .post_pdf::<SubmitResponse>(bytes, &query, Some(&key))
            .await
    } else {
        let Ok(text) = String::from_utf8(bytes) else {
            return refuse(state, "the file is not UTF-8 text");
        };
        let body = serde_json::json!({"sourceText": text, "type": "translation"});
        client
            .request::<SubmitResponse>(reqwest::Method::POST, "/api/jobs", Some(&body), Some(&key))
            .await
    };
    match sent {
        Ok(Ok(created)) => {
            let SubmitResponse { job_id, .. } = created;
            println!("submitted {name} as job {job_id}");
            state.files.insert(
                name.to_owned(),
                Taken {
                    sha256,
                    job_id: Some(job_id),
                    done: false,
                },
            );
            save_state(dir, state).map(|()| true)
        }
        // The server refused the text itself (4xx other than 429): final.
        Ok(Err((status, why))) if status.is_client_error() && status.as_u16() != 429 => {
            refuse(state, &why)
        }
        // Busy, rate-limited or unreachable: try again at the next scan.
        Ok(Err((_, why))) | Err(why) => {
            eprintln!("{name}: {} (will try again)", terminal_safe(&why));
            Ok(false)
        }
    }
}

/// Poll the unfinished jobs; write the results of those that ended.
async fn poll(client: &Client, dir: &Path, state: &mut State) -> Result<(), String> {
    let open: Vec<(String, String)> = state
        .files
        .iter()
        .filter(|(_, t)| !t.done)
        .filter_map(|(n, t)| Some((n.clone(), t.job_id.clone()?)))
        .collect();
    for (name, id) in open {
        let job = match client
            .request::<serde_json::Value>(
                reqwest::Method::GET,
                &format!("/api/jobs/{id}"),
                None,
                None,
            )
            .await
        {
            Ok(Ok(v)) => v,
            Ok(Err((status, why))) if status.as_u16() == 404 => {
                let v = serde_json::json!({"id": id, "file": name, "status": "missing",
                    "error": format!("the server no longer has job {id}: {why}")});
                write_results(dir, &name, &v)?;
                if let Some(t) = state.files.get_mut(&name) {
                    t.done = true;
                }
                save_state(dir, state)?;
                continue;
            }
            Ok(Err((_, why))) | Err(why) => {
                eprintln!("{name}: {} (will ask again)", terminal_safe(&why));
                continue;
            }
        };
        let Ok(dto) = serde_json::from_value::<JobDto>(job.clone()) else {
            return Err("the server sent a job this client does not understand".into());
        };
        if !matches!(dto.status.as_str(), "completed" | "failed" | "cancelled") {
            continue;
        }
        write_results(dir, &name, &job)?;
        match dto.status.as_str() {
            "completed" => println!("completed {name}: {}/{}.en.txt", RESULTS_DIR, stem(&name)),
            other => println!(
                "{other} {name}: {}",
                terminal_safe(dto.error.as_deref().unwrap_or(other))
            ),
        }
        if let Some(t) = state.files.get_mut(&name) {
            t.done = true;
        }
        save_state(dir, state)?;
    }
    Ok(())
}

/// `lotsawa watch`.
pub async fn run(client: Client, dir: PathBuf, options: WatchOptions) -> ExitCode {
    match watch(&client, &dir, &options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn watch(client: &Client, dir: &Path, options: &WatchOptions) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let mut state = load_state(dir)?;
    let mut seen = Seen::new();
    eprintln!(
        "watching {} for *.txt and *.pdf files; results in {}",
        dir.display(),
        dir.join(RESULTS_DIR).display()
    );
    loop {
        let ready = settled_files(dir, &mut seen, options.settle)?;
        let mut dealt = 0;
        for name in &ready {
            if take(client, dir, name, &mut state).await? {
                dealt += 1;
            }
        }
        poll(client, dir, &mut state).await?;
        // Done when every file present has settled and was dealt with, and
        // every job ended.
        if options.once && dealt == seen.len() && state.files.values().all(|t| t.done) {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(options.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_taken_only_once_it_has_settled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seen = Seen::new();
        std::fs::write(dir.path().join("a.txt"), "ཀ").expect("write");
        std::fs::write(dir.path().join("notes.md"), "x").expect("write");
        std::fs::write(dir.path().join(".hidden.txt"), "x").expect("write");
        // First sight: not yet (it may still be written).
        assert!(
            settled_files(dir.path(), &mut seen, Duration::ZERO)
                .expect("scan")
                .is_empty()
        );
        // Unchanged since: taken; other names never.
        assert_eq!(
            settled_files(dir.path(), &mut seen, Duration::ZERO).expect("scan"),
            vec!["a.txt".to_owned()]
        );
        // Grown meanwhile: wait again.
        std::fs::write(dir.path().join("a.txt"), "ཀཁ").expect("write");
        assert!(
            settled_files(dir.path(), &mut seen, Duration::ZERO)
                .expect("scan")
                .is_empty()
        );
        // Recently modified: wait for the settle time.
        assert!(
            settled_files(dir.path(), &mut seen, Duration::from_secs(3600))
                .expect("scan")
                .is_empty()
        );
    }

    #[test]
    fn results_of_a_failed_job_drop_an_older_translation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let done = serde_json::json!({"status": "completed", "result": {"translation": "hello"}});
        write_results(dir.path(), "a.txt", &done).expect("write");
        let text = dir.path().join("results/a.en.txt");
        assert_eq!(std::fs::read_to_string(&text).expect("read"), "hello");
        let failed = serde_json::json!({"status": "failed", "error": "provider_unavailable: x"});
        write_results(dir.path(), "a.txt", &failed).expect("write");
        assert!(!text.exists());
        let json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("results/a.json")).expect("read"),
        )
        .expect("json");
        assert_eq!(json["status"], "failed");
    }

    #[test]
    fn the_same_file_version_always_makes_the_same_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = idempotency_key(dir.path(), "a.txt", "00");
        assert_eq!(a, idempotency_key(dir.path(), "a.txt", "00"));
        assert_ne!(a, idempotency_key(dir.path(), "a.txt", "01"));
        assert_ne!(a, idempotency_key(dir.path(), "b.txt", "00"));
        assert!(a.len() <= 255 && a.is_ascii());
    }
}
