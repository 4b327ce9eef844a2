//! `systemctl reload lotsawa` is SIGHUP: the server reads its configuration
//! file again. The log filter changes at once; a file that no longer
//! checks is refused and the running settings stay; settings that need a
//! restart are named in the log.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Running {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &Path, db: &Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lotsawa"))
        .args(["serve", "--config"])
        .arg(config)
        .env("LOTSAWA_BIND", "127.0.0.1:0")
        .env("LOTSAWA_DB", db)
        .env_remove("LOTSAWA_LOG")
        .env_remove("LOTSAWA_CONFIG")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lotsawa");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().expect("stderr");
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("log")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    Running { child, url, log }
}

fn hangup(server: &Running) {
    let ok = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn wait_for_log(server: &Running, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log.lock().expect("log").clone();
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn submit(server: &Running) {
    let res = reqwest::Client::new()
        .post(format!("{}/api/jobs", server.url))
        .json(&serde_json::json!({"sourceText": "ཀ་ཁ། ", "config": {"engine": "offline"}}))
        .send()
        .await
        .expect("submit");
    assert_eq!(res.status().as_u16(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_configuration_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("lotsawa.toml");
    let db = dir.path().join("lotsawa.db");
    std::fs::write(&config, "log = \"error\"\nconcurrency = 2\n").expect("write");
    let server = start(&config, &db);

    submit(&server).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !server.log.lock().expect("log").contains("job enqueued"),
        "log = error hides the info lines"
    );

    // The log filter changes at once.
    std::fs::write(&config, "log = \"info\"\nconcurrency = 2\n").expect("write");
    hangup(&server);
    wait_for_log(&server, "configuration reloaded");
    submit(&server).await;
    wait_for_log(&server, "job enqueued");

    // A file that no longer checks is refused; the server goes on.
    std::fs::write(&config, "log = \"info\"\nconcurrency = \"many\"\n").expect("write");
    hangup(&server);
    let log = wait_for_log(&server, "reload refused");
    assert!(log.contains("LOTSAWA_CONCURRENCY"), "{log}");
    submit(&server).await;

    // A setting that needs a restart is named.
    std::fs::write(&config, "log = \"info\"\nconcurrency = 5\n").expect("write");
    hangup(&server);
    let log = wait_for_log(&server, "restart_needed");
    assert!(log.contains("LOTSAWA_CONCURRENCY"), "{log}");
}
