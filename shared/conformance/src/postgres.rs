//! A throwaway PostgreSQL server for tests: initialised in a temporary
//! directory from Debian's `postgresql` package, run as an unprivileged
//! user (`nobody` when the tests run as root), listening on loopback only,
//! with one fresh database per caller. It is started once per test binary
//! and stopped when the binary exits, by a watchdog process that outlives
//! it (so a killed test run leaves no server behind).
//!
//! `LOTSAWA_TEST_PG` names a server to use instead (a URL whose user may
//! create databases); `LOTSAWA_PG_BIN` the directory of `initdb`,
//! `pg_ctl` and `psql` when they are not under `/usr/lib/postgresql`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A running server.
#[derive(Debug)]
pub struct Cluster {
    /// `postgres://USER@127.0.0.1:PORT`, without a database.
    base: String,
    bin: PathBuf,
    /// The data directory, when this process started the server.
    data: Option<PathBuf>,
    /// The command prefix that runs a program as the server's user.
    as_user: Vec<String>,
    /// The certificate authority of the server's TLS certificate, when it
    /// takes TLS connections.
    ca: Option<PathBuf>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static DURABLE: OnceLock<Result<Cluster, String>> = OnceLock::new();
static TLS: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(0);

/// The binary directory of the newest PostgreSQL installed.
fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("LOTSAWA_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| {
            "PostgreSQL is not installed (no /usr/lib/postgresql): run ./scripts/test, \
             which installs it, or set LOTSAWA_TEST_PG"
                .to_owned()
        })?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| "no PostgreSQL server binaries under /usr/lib/postgresql".to_owned())
}

fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl Cluster {
    /// The server of this test binary, started at the first call.
    ///
    /// # Panics
    /// When no server can be started: the tests that need one cannot run.
    pub fn get() -> &'static Cluster {
        match CLUSTER.get_or_init(|| Self::start(false, false)) {
            Ok(c) => c,
            Err(e) => panic!("cannot start a throwaway PostgreSQL server: {e}"),
        }
    }

    /// A second server of this process whose commits are on disk before
    /// they are acknowledged (`fsync` and `synchronous_commit` on, as a
    /// production server runs): what benchmarks compare with SQLite's
    /// durable setting. The tests' server trades that for speed.
    ///
    /// # Panics
    /// When no server can be started.
    pub fn durable() -> &'static Cluster {
        match DURABLE.get_or_init(|| Self::start(true, false)) {
            Ok(c) => c,
            Err(e) => panic!("cannot start a throwaway PostgreSQL server: {e}"),
        }
    }

    /// A server of this process that also takes TLS connections, with a
    /// certificate for 127.0.0.1 from a certificate authority made for it
    /// ([`Cluster::ca_file`]), by the `openssl` command.
    ///
    /// # Panics
    /// When no server can be started.
    pub fn tls() -> &'static Cluster {
        match TLS.get_or_init(|| Self::start(false, true)) {
            Ok(c) => c,
            Err(e) => panic!("cannot start a throwaway PostgreSQL server with TLS: {e}"),
        }
    }

    /// The certificate authority (PEM) of a [`Cluster::tls`] server.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    fn start(durable: bool, tls: bool) -> Result<Cluster, String> {
        if let Ok(url) = std::env::var("LOTSAWA_TEST_PG") {
            let base = url.trim_end_matches('/').to_owned();
            return Ok(Cluster {
                base,
                bin: bin_dir().unwrap_or_else(|_| PathBuf::from("/usr/bin")),
                data: None,
                as_user: Vec::new(),
                ca: None,
            });
        }
        let bin = bin_dir()?;
        let dir = std::env::temp_dir().join(format!(
            "lotsawa-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let data = dir.join("data");
        let sock = dir.join("sock");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&sock).map_err(|e| e.to_string())?;
        let ca = if tls { Some(certificates(&dir)?) } else { None };
        let as_user: Vec<String> = if is_root() {
            // PostgreSQL refuses to run as root.
            run(
                Command::new("chown")
                    .args(["-R", "nobody:nogroup"])
                    .arg(&dir),
                "chown",
            )?;
            run(Command::new("chmod").args(["700"]).arg(&data), "chmod")?;
            [
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--reset-env",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
        } else {
            Vec::new()
        };
        let program = |name: &str| -> Command {
            let path = bin.join(name);
            match as_user.split_first() {
                Some((first, rest)) => {
                    let mut c = Command::new(first);
                    c.args(rest).arg(path);
                    c
                }
                None => Command::new(path),
            }
        };
        run(
            program("initdb").arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ]),
            "initdb",
        )?;
        if tls {
            // TCP connections must use TLS: one that succeeds proves it.
            let hba = data.join("pg_hba.conf");
            let text = std::fs::read_to_string(&hba).map_err(|e| e.to_string())?;
            let only_tls: String = text
                .lines()
                .map(|l| match l.strip_prefix("host ") {
                    Some(rest) => format!("hostssl {rest}\n"),
                    None => format!("{l}\n"),
                })
                .collect();
            std::fs::write(&hba, only_tls).map_err(|e| e.to_string())?;
        }
        let port = free_port()?;
        let speed = if durable {
            ""
        } else {
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        };
        let ssl = if tls {
            format!(
                "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                dir.join("server.crt").display(),
                dir.join("server.key").display()
            )
        } else {
            String::new()
        };
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 {speed} {ssl} \
             -c max_connections=500 -c shared_buffers=64MB",
            sock.display()
        );
        run(
            program("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]),
            "pg_ctl start",
        )?;
        // The watchdog stops the server and deletes its files once this
        // process is gone, however it ends.
        let stop = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {user} {pg_ctl} -D {data} stop -m immediate >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            user = as_user.join(" "),
            pg_ctl = bin.join("pg_ctl").display(),
            data = data.display(),
            dir = dir.display(),
        );
        Command::new("sh")
            .args(["-c", &stop])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("watchdog: {e}"))?;
        Ok(Cluster {
            base: format!("postgres://postgres@127.0.0.1:{port}"),
            bin,
            data: Some(data),
            as_user,
            ca,
        })
    }

    /// A new empty database; its URL.
    ///
    /// # Panics
    /// When the server refuses: the test cannot run.
    pub fn fresh_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        self.psql(&format!("CREATE DATABASE {name}"));
        format!("{}/{name}", self.base)
    }

    /// Run one SQL statement on the `postgres` database.
    ///
    /// # Panics
    /// When it fails.
    pub fn psql(&self, sql: &str) -> String {
        run(
            Command::new(self.bin.join("psql"))
                .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d"])
                .arg(format!("{}/postgres", self.base))
                .args(["-c", sql]),
            "psql",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The data directory, when this process runs the server.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data.as_deref()
    }

    /// The server's base URL (no database).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The prefix that runs a program as the server's user.
    pub fn as_user(&self) -> &[String] {
        &self.as_user
    }
}

/// A certificate authority and a server certificate for 127.0.0.1 it
/// signed, in `dir` (`ca.pem`, `server.crt`, `server.key`); the authority.
fn certificates(dir: &Path) -> Result<PathBuf, String> {
    let openssl = |args: &[&str], what: &str| -> Result<String, String> {
        run(Command::new("openssl").current_dir(dir).args(args), what)
    };
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=lotsawa test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        "openssl (the test CA)",
    )?;
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        "openssl (the server key)",
    )?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
        "openssl (the server certificate)",
    )?;
    // PostgreSQL takes a key only its owner can read.
    run(
        Command::new("chmod").arg("600").arg(dir.join("server.key")),
        "chmod",
    )?;
    Ok(dir.join("ca.pem"))
}
