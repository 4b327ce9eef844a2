//! The `lotsawa` binary as a test server: started on a free port with a
//! temporary database and the fake provider.

#![allow(dead_code)] // Each test binary uses a part of it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lotsawa_apitests::{Api, FakeProvider};

pub struct Server {
    child: Child,
    pub api: Api,
    pub url: String,
}

impl Server {
    pub fn start(
        db: &Path,
        provider: &FakeProvider,
        concurrency: usize,
        extra: &[(&str, &str)],
    ) -> Self {
        Self::start_at(db, &provider.base_url(), concurrency, extra)
    }

    /// Start it against the provider at `base_url`.
    pub fn start_at(db: &Path, base_url: &str, concurrency: usize, extra: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lotsawa"));
        cmd.arg("serve")
            .env("LOTSAWA_BIND", "127.0.0.1:0")
            .env("LOTSAWA_DB", db)
            .env("LOTSAWA_CONCURRENCY", concurrency.to_string())
            .env("LOTSAWA_RETRY_BASE_MS", "20")
            .env("LOTSAWA_ENGINE", "openai")
            .env("OPENAI_BASE_URL", base_url)
            .env("LOTSAWA_MODEL", "fake-model")
            .env("LOTSAWA_LOG", "warn")
            .env_remove("OPENAI_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start lotsawa");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned();
        Self {
            child,
            api: Api::new(&url, &url),
            url,
        }
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    pub fn sigterm(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a `lotsawa` client command (keys, backup, …) with neither a
/// database nor a key from the environment: only what `args` say.
pub fn lotsawa(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lotsawa"))
        .args(args)
        .env_remove("LOTSAWA_DB")
        .env_remove("LOTSAWA_API_KEY")
        .output()
        .expect("run lotsawa")
}

pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("lotsawa.db");
    (dir, db)
}
