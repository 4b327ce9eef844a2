//! The one typed configuration of the `lotsawa` binary: flags first, then
//! environment variables, then the configuration file (`--config FILE` or
//! LOTSAWA_CONFIG: the same settings under the variables' names without the
//! `LOTSAWA_` prefix, in lower case), then defaults. Nothing else reads the
//! environment. A bad value fails at start, naming the variable or flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lotsawa_core::RetryPolicy;
use lotsawa_engines::EngineSettings;

pub use lotsawa_core::settings::{ConfigError, ProcessEnv, Source};
use lotsawa_core::settings::{FileSettings, Layered, parse_num};

/// Every variable the server reads, and so every key a configuration file
/// may hold (client-side variables such as LOTSAWA_URL and LOTSAWA_API_KEY
/// are not server settings).
pub const SERVER_VARIABLES: &[&str] = &[
    "LOTSAWA_BIND",
    "LOTSAWA_DB",
    "LOTSAWA_CONCURRENCY",
    "LOTSAWA_RETRY_BASE_MS",
    "LOTSAWA_RETRY_MAX_ATTEMPTS",
    "LOTSAWA_BODY_LIMIT",
    "LOTSAWA_PDF_LIMIT",
    "LOTSAWA_PDF_BUDGET_MS",
    "LOTSAWA_REQUIRE_AUTH",
    "LOTSAWA_RATE_PER_MIN",
    "LOTSAWA_RATE_BURST",
    "LOTSAWA_MAX_PENDING",
    "LOTSAWA_MAX_BATCH_ITEMS",
    "LOTSAWA_MODELS",
    "LOTSAWA_DURABILITY",
    "LOTSAWA_LEASE_MS",
    "LOTSAWA_WEBHOOK_SECRET",
    "LOTSAWA_WEBHOOK_RETRY_BASE_MS",
    "LOTSAWA_WEBHOOK_ATTEMPTS",
    "LOTSAWA_WEBHOOK_ALLOW",
    "LOTSAWA_RETENTION_DAYS",
    "LOTSAWA_METRICS_BIND",
    "LOTSAWA_HEADER_TIMEOUT_MS",
    "LOTSAWA_REQUEST_TIMEOUT_MS",
    "LOTSAWA_MAX_CONNECTIONS",
    "LOTSAWA_MAX_STREAMS",
    "LOTSAWA_MAX_STREAMS_PER_TENANT",
    "LOTSAWA_MAX_CHUNKS",
    "LOTSAWA_SHUTDOWN_GRACE_MS",
    "LOTSAWA_GLOSSARY",
    "LOTSAWA_ALLOWED_HOSTS",
    "LOTSAWA_ENGINE",
    "LOTSAWA_MODEL",
    "LOTSAWA_BEDROCK_MODEL",
    "LOTSAWA_PROVIDER_TIMEOUT_MS",
    "LOTSAWA_SHARED_MEMORY",
    "LOTSAWA_LIMITS",
    "LOTSAWA_PRICES",
    "LOTSAWA_THROTTLE_BUDGET_MS",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "LOTSAWA_LOG",
    "LOTSAWA_LOG_FORMAT",
];

/// The configuration file named by `flag` or LOTSAWA_CONFIG, read and
/// checked (`None` when neither names one).
pub fn read_file(
    flag: Option<PathBuf>,
    env: &dyn Source,
) -> Result<Option<FileSettings>, ConfigError> {
    let Some(path) = flag.or_else(|| env.var("LOTSAWA_CONFIG").map(PathBuf::from)) else {
        return Ok(None);
    };
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ConfigError::new(&origin, format!("cannot read the configuration file: {e}"))
    })?;
    FileSettings::parse(&text, &origin, SERVER_VARIABLES).map(Some)
}

/// The database of the admin commands (`keys`, `backup`, `restore`):
/// `--db`, then LOTSAWA_DB, then the configuration file LOTSAWA_CONFIG
/// names, then `lotsawa.db` (as `serve`).
pub fn db_path(flag: Option<PathBuf>, env: &dyn Source) -> Result<PathBuf, ConfigError> {
    if let Some(path) = flag {
        return Ok(path);
    }
    let file = read_file(None, env)?;
    Ok(server_source(env, file.as_ref())
        .var("LOTSAWA_DB")
        .map_or_else(|| PathBuf::from("lotsawa.db"), PathBuf::from))
}

/// The server's settings: the environment over the file, if any.
pub fn server_source<'a>(env: &'a dyn Source, file: Option<&'a FileSettings>) -> Layered<'a> {
    Layered { env, file }
}

/// Flags given to `lotsawa serve` (each overrides its variable).
#[derive(Debug, Clone, Default)]
pub struct ServeFlags {
    /// `--bind`.
    pub bind: Option<String>,
    /// `--db`.
    pub db: Option<PathBuf>,
    /// `--concurrency`.
    pub concurrency: Option<String>,
    /// `--engine`.
    pub engine: Option<String>,
    /// `--require-auth`.
    pub require_auth: bool,
    /// `--config`.
    pub config: Option<PathBuf>,
}

/// Everything `lotsawa serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen address (LOTSAWA_BIND, default 127.0.0.1:8080).
    pub bind: SocketAddr,
    /// Database file (LOTSAWA_DB, default lotsawa.db).
    pub db: PathBuf,
    /// Jobs processing at once (LOTSAWA_CONCURRENCY, default 3).
    pub concurrency: u32,
    /// Chunk retry policy (LOTSAWA_RETRY_BASE_MS, LOTSAWA_RETRY_MAX_ATTEMPTS).
    pub retry: RetryPolicy,
    /// Engines (LOTSAWA_ENGINE, OPENAI_BASE_URL, OPENAI_API_KEY, LOTSAWA_MODEL,
    /// LOTSAWA_PROVIDER_TIMEOUT_MS, LOTSAWA_GLOSSARY).
    pub engines: EngineSettings,
    /// Request body limit in bytes (LOTSAWA_BODY_LIMIT, default 1 MiB).
    pub body_limit: usize,
    /// Largest PDF accepted, in bytes (LOTSAWA_PDF_LIMIT, default 16 MiB).
    pub pdf_limit: usize,
    /// Longest time one PDF may take to read (LOTSAWA_PDF_BUDGET_MS, default 20000).
    pub pdf_budget: Duration,
    /// Grace period for in-flight chunks at shutdown (LOTSAWA_SHUTDOWN_GRACE_MS, default 10000).
    pub shutdown_grace: Duration,
    /// API keys required (`--require-auth`, LOTSAWA_REQUIRE_AUTH=1).
    pub require_auth: bool,
    /// Most chunks one job may have (LOTSAWA_MAX_CHUNKS, default 2000).
    pub max_chunks: u32,
    /// Host names a keyless server answers besides localhost and IP
    /// addresses (LOTSAWA_ALLOWED_HOSTS, comma separated).
    pub allowed_hosts: Vec<String>,
    /// Per-tenant job creation (LOTSAWA_RATE_PER_MIN, LOTSAWA_RATE_BURST):
    /// 100 a minute, burst 100, when keys are required; off otherwise
    /// unless set; 0 turns it off.
    pub rate: Option<lotsawa_core::rate::RateLimit>,
    /// Most jobs one tenant may have waiting (LOTSAWA_MAX_PENDING): 1000
    /// when keys are required, off otherwise unless set; 0 turns it off.
    pub max_pending: Option<u32>,
    /// Most items one batch may have (LOTSAWA_MAX_BATCH_ITEMS, default
    /// 1000, 1 to 100,000).
    pub max_batch_items: u32,
    /// Models jobs may name (LOTSAWA_MODELS, `engine:model,...`); with keys
    /// required and none listed, each engine's default model only.
    pub models: Vec<(String, String)>,
    /// When a commit is on disk (LOTSAWA_DURABILITY: `full`, the default,
    /// fsyncs every commit; `process` survives a process crash only).
    pub durability: lotsawa_local::Durability,
    /// On a PostgreSQL database: how long this server holds a running job
    /// without renewing its lease (LOTSAWA_LEASE_MS, default 30000, 500 to
    /// 3,600,000); another server takes the job over once it expires.
    pub lease: Duration,
    /// Days finished jobs are kept (LOTSAWA_RETENTION_DAYS; unset: for ever).
    pub retention_days: Option<u32>,
    /// A keyless `/metrics` listener (LOTSAWA_METRICS_BIND).
    pub metrics_bind: Option<SocketAddr>,
    /// Deadline for a request's headers (LOTSAWA_HEADER_TIMEOUT_MS, default 30000).
    pub header_timeout: Duration,
    /// Deadline for a response to start (LOTSAWA_REQUEST_TIMEOUT_MS, default 30000).
    pub request_timeout: Duration,
    /// Most open connections (LOTSAWA_MAX_CONNECTIONS, default 1024).
    pub max_connections: usize,
    /// Most open SSE streams (LOTSAWA_MAX_STREAMS, default 1000).
    pub max_streams: usize,
    /// Most open SSE streams per tenant (LOTSAWA_MAX_STREAMS_PER_TENANT, default 32).
    pub max_streams_per_tenant: usize,
    /// Webhook delivery (LOTSAWA_WEBHOOK_SECRET, LOTSAWA_WEBHOOK_RETRY_BASE_MS,
    /// LOTSAWA_WEBHOOK_ATTEMPTS, LOTSAWA_WEBHOOK_ALLOW); without a secret,
    /// callback URLs are refused.
    pub webhooks: Option<lotsawa_local::WebhookSettings>,
}

/// Jobs a tenant may have waiting when keys are required and
/// LOTSAWA_MAX_PENDING is not set.
pub const DEFAULT_MAX_PENDING: u32 = 1000;

impl ServeConfig {
    /// Resolve flags, then `env`, then defaults.
    pub fn load(flags: ServeFlags, env: &dyn Source) -> Result<Self, ConfigError> {
        let (bind_name, bind_raw) = match flags.bind {
            Some(b) => ("--bind", b),
            None => (
                "LOTSAWA_BIND",
                env.var("LOTSAWA_BIND")
                    .unwrap_or_else(|| "127.0.0.1:8080".into()),
            ),
        };
        let bind: SocketAddr = bind_raw.parse().map_err(|_| ConfigError {
            name: bind_name.into(),
            message: format!("expected an address like 127.0.0.1:8080, got '{bind_raw}'"),
        })?;
        let db = flags
            .db
            .or_else(|| env.var("LOTSAWA_DB").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("lotsawa.db"));
        let concurrency = match flags.concurrency {
            Some(c) => parse_num("--concurrency", &c, 1u32, 256)?,
            None => match env.var("LOTSAWA_CONCURRENCY") {
                Some(c) => parse_num("LOTSAWA_CONCURRENCY", &c, 1u32, 256)?,
                None => 3,
            },
        };
        let base_ms = match env.var("LOTSAWA_RETRY_BASE_MS") {
            Some(v) => parse_num("LOTSAWA_RETRY_BASE_MS", &v, 0u64, 3_600_000)?,
            None => 1000,
        };
        let max_attempts = match env.var("LOTSAWA_RETRY_MAX_ATTEMPTS") {
            Some(v) => parse_num("LOTSAWA_RETRY_MAX_ATTEMPTS", &v, 1u32, 100)?,
            None => 3,
        };
        let throttle_budget_ms = match env.var("LOTSAWA_THROTTLE_BUDGET_MS") {
            Some(v) => parse_num("LOTSAWA_THROTTLE_BUDGET_MS", &v, 0u64, 86_400_000)?,
            None => lotsawa_core::retry::DEFAULT_THROTTLE_BUDGET.as_millis() as u64,
        };
        let body_limit = match env.var("LOTSAWA_BODY_LIMIT") {
            Some(v) => parse_num("LOTSAWA_BODY_LIMIT", &v, 1024usize, 1 << 30)?,
            None => lotsawa_http::DEFAULT_BODY_LIMIT,
        };
        let pdf_limit = match env.var("LOTSAWA_PDF_LIMIT") {
            Some(v) => parse_num("LOTSAWA_PDF_LIMIT", &v, 1024usize, 1 << 30)?,
            None => lotsawa_http::DEFAULT_PDF_LIMIT,
        };
        let pdf_budget = match env.var("LOTSAWA_PDF_BUDGET_MS") {
            Some(v) => {
                Duration::from_millis(parse_num("LOTSAWA_PDF_BUDGET_MS", &v, 100u64, 600_000)?)
            }
            None => lotsawa_http::DEFAULT_PDF_BUDGET,
        };
        let require_auth = flags.require_auth
            || match env.var("LOTSAWA_REQUIRE_AUTH").as_deref().map(str::trim) {
                None | Some("" | "0" | "false") => false,
                Some("1" | "true") => true,
                Some(other) => {
                    return Err(ConfigError {
                        name: "LOTSAWA_REQUIRE_AUTH".into(),
                        message: format!("expected 1, true, 0 or false, got '{other}'"),
                    });
                }
            };
        let per_minute = match env.var("LOTSAWA_RATE_PER_MIN") {
            Some(v) => Some(parse_num("LOTSAWA_RATE_PER_MIN", &v, 0u32, 1_000_000)?),
            None => require_auth.then_some(100),
        };
        let rate = match per_minute {
            None | Some(0) => None,
            Some(per_minute) => Some(lotsawa_core::rate::RateLimit {
                per_minute,
                burst: match env.var("LOTSAWA_RATE_BURST") {
                    Some(v) => parse_num("LOTSAWA_RATE_BURST", &v, 1u32, 1_000_000)?,
                    None => per_minute,
                },
            }),
        };
        let max_pending = match env.var("LOTSAWA_MAX_PENDING") {
            Some(v) => Some(parse_num("LOTSAWA_MAX_PENDING", &v, 0u32, 10_000_000)?),
            None => require_auth.then_some(DEFAULT_MAX_PENDING),
        }
        .filter(|n| *n > 0);
        let max_batch_items = match env.var("LOTSAWA_MAX_BATCH_ITEMS") {
            Some(v) => parse_num("LOTSAWA_MAX_BATCH_ITEMS", &v, 1u32, 100_000)?,
            None => lotsawa_core::batch::DEFAULT_MAX_ITEMS,
        };
        let models =
            lotsawa_core::service::parse_model_list(&env.var("LOTSAWA_MODELS").unwrap_or_default())
                .map_err(|message| ConfigError {
                    name: "LOTSAWA_MODELS".into(),
                    message,
                })?;
        let durability = match env.var("LOTSAWA_DURABILITY") {
            Some(v) => v.parse().map_err(|message| ConfigError {
                name: "LOTSAWA_DURABILITY".into(),
                message,
            })?,
            None => lotsawa_local::Durability::Full,
        };
        let lease = match env.var("LOTSAWA_LEASE_MS") {
            Some(v) => Duration::from_millis(parse_num("LOTSAWA_LEASE_MS", &v, 500u64, 3_600_000)?),
            None => Duration::from_millis(30_000),
        };
        let webhooks = match env.var("LOTSAWA_WEBHOOK_SECRET") {
            Some(secret) if !secret.is_empty() => {
                if secret.len() < 16 {
                    return Err(ConfigError {
                        name: "LOTSAWA_WEBHOOK_SECRET".into(),
                        message: "use at least 16 characters (receivers check signatures with it)"
                            .into(),
                    });
                }
                let retry_base_ms = match env.var("LOTSAWA_WEBHOOK_RETRY_BASE_MS") {
                    Some(v) => parse_num("LOTSAWA_WEBHOOK_RETRY_BASE_MS", &v, 1u64, 3_600_000)?,
                    None => 1000,
                };
                let max_attempts = match env.var("LOTSAWA_WEBHOOK_ATTEMPTS") {
                    Some(v) => parse_num("LOTSAWA_WEBHOOK_ATTEMPTS", &v, 1u32, 20)?,
                    None => 5,
                };
                let allow = env.var("LOTSAWA_WEBHOOK_ALLOW").unwrap_or_default();
                let policy = lotsawa_core::webhook::CallbackPolicy::with_allow_list(true, &allow)
                    .map_err(|message| ConfigError {
                    name: "LOTSAWA_WEBHOOK_ALLOW".into(),
                    message,
                })?;
                Some(lotsawa_local::WebhookSettings {
                    secret: secret.into_bytes(),
                    retry_base: Duration::from_millis(retry_base_ms),
                    max_attempts,
                    policy,
                })
            }
            _ => None,
        };
        let retention_days = match env.var("LOTSAWA_RETENTION_DAYS") {
            Some(v) => Some(parse_num("LOTSAWA_RETENTION_DAYS", &v, 1u32, 36_500)?),
            None => None,
        };
        let metrics_bind = match env.var("LOTSAWA_METRICS_BIND") {
            Some(raw) => Some(raw.trim().parse::<SocketAddr>().map_err(|_| ConfigError {
                name: "LOTSAWA_METRICS_BIND".into(),
                message: format!("expected an address like 127.0.0.1:9090, got '{raw}'"),
            })?),
            None => None,
        };
        let ms = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_millis(match env.var(name) {
                Some(v) => parse_num(name, &v, 100u64, 3_600_000)?,
                None => default,
            }))
        };
        let header_timeout = ms("LOTSAWA_HEADER_TIMEOUT_MS", 30_000)?;
        let request_timeout = ms("LOTSAWA_REQUEST_TIMEOUT_MS", 30_000)?;
        let count = |name: &str, default: usize| -> Result<usize, ConfigError> {
            match env.var(name) {
                Some(v) => parse_num(name, &v, 1usize, 1_000_000),
                None => Ok(default),
            }
        };
        let max_connections = count("LOTSAWA_MAX_CONNECTIONS", 1024)?;
        let max_streams = count("LOTSAWA_MAX_STREAMS", lotsawa_http::DEFAULT_MAX_STREAMS)?;
        let max_streams_per_tenant = count(
            "LOTSAWA_MAX_STREAMS_PER_TENANT",
            lotsawa_http::DEFAULT_MAX_STREAMS_PER_TENANT,
        )?;
        let max_chunks = match env.var("LOTSAWA_MAX_CHUNKS") {
            Some(v) => parse_num("LOTSAWA_MAX_CHUNKS", &v, 1u32, 1_000_000)?,
            None => lotsawa_core::service::DEFAULT_MAX_CHUNKS,
        };
        let grace_ms = match env.var("LOTSAWA_SHUTDOWN_GRACE_MS") {
            Some(v) => parse_num("LOTSAWA_SHUTDOWN_GRACE_MS", &v, 0u64, 3_600_000)?,
            None => 10_000,
        };
        let mut engines = EngineSettings::from_source(env, flags.engine).map_err(|e| match e {
            lotsawa_engines::EngineConfigError::Invalid(e) => e,
            other => ConfigError {
                name: "engines".into(),
                message: other.to_string(),
            },
        })?;
        let mut glossary = lotsawa_core::Glossary::default();
        if let Some(paths) = env.var("LOTSAWA_GLOSSARY") {
            for path in paths.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    name: "LOTSAWA_GLOSSARY".into(),
                    message: format!("cannot read {path}: {e}"),
                })?;
                let g = lotsawa_core::Glossary::parse_tsv(&text).map_err(|e| ConfigError {
                    name: "LOTSAWA_GLOSSARY".into(),
                    message: format!("{path}: {e}"),
                })?;
                glossary.extend(&g);
            }
        }
        engines.glossary = glossary;
        Ok(Self {
            bind,
            db,
            concurrency,
            retry: RetryPolicy {
                max_attempts,
                base_delay: Duration::from_millis(base_ms),
                max_delay: Duration::from_secs(60),
                throttle_budget: Duration::from_millis(throttle_budget_ms),
            },
            engines,
            body_limit,
            pdf_limit,
            pdf_budget,
            shutdown_grace: Duration::from_millis(grace_ms),
            require_auth,
            max_chunks,
            rate,
            max_pending,
            max_batch_items,
            models,
            durability,
            lease,
            retention_days,
            metrics_bind,
            header_timeout,
            request_timeout,
            max_connections,
            max_streams,
            max_streams_per_tenant,
            webhooks,
            allowed_hosts: env
                .var("LOTSAWA_ALLOWED_HOSTS")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
}

impl ServeConfig {
    /// The settings that differ between `self` and `other`, by variable
    /// (secrets compared, never shown).
    pub fn differs_from(&self, other: &Self) -> Vec<&'static str> {
        let mut names = Vec::new();
        let mut check = |name: &'static str, same: bool| {
            if !same {
                names.push(name);
            }
        };
        check("LOTSAWA_BIND", self.bind == other.bind);
        check("LOTSAWA_DB", self.db == other.db);
        check("LOTSAWA_CONCURRENCY", self.concurrency == other.concurrency);
        check("LOTSAWA_RETRY_*", self.retry == other.retry);
        check(
            "engines",
            format!("{:?}", self.engines) == format!("{:?}", other.engines),
        );
        check("LOTSAWA_BODY_LIMIT", self.body_limit == other.body_limit);
        check("LOTSAWA_PDF_LIMIT", self.pdf_limit == other.pdf_limit);
        check("LOTSAWA_PDF_BUDGET_MS", self.pdf_budget == other.pdf_budget);
        check(
            "LOTSAWA_SHUTDOWN_GRACE_MS",
            self.shutdown_grace == other.shutdown_grace,
        );
        check(
            "LOTSAWA_REQUIRE_AUTH",
            self.require_auth == other.require_auth,
        );
        check("LOTSAWA_MAX_CHUNKS", self.max_chunks == other.max_chunks);
        check(
            "LOTSAWA_ALLOWED_HOSTS",
            self.allowed_hosts == other.allowed_hosts,
        );
        check("LOTSAWA_RATE_*", self.rate == other.rate);
        check("LOTSAWA_MAX_PENDING", self.max_pending == other.max_pending);
        check(
            "LOTSAWA_MAX_BATCH_ITEMS",
            self.max_batch_items == other.max_batch_items,
        );
        check("LOTSAWA_MODELS", self.models == other.models);
        check("LOTSAWA_DURABILITY", self.durability == other.durability);
        check("LOTSAWA_LEASE_MS", self.lease == other.lease);
        check(
            "LOTSAWA_RETENTION_DAYS",
            self.retention_days == other.retention_days,
        );
        check(
            "LOTSAWA_METRICS_BIND",
            self.metrics_bind == other.metrics_bind,
        );
        check(
            "LOTSAWA_*_TIMEOUT_MS",
            self.header_timeout == other.header_timeout
                && self.request_timeout == other.request_timeout,
        );
        check(
            "LOTSAWA_MAX_CONNECTIONS",
            self.max_connections == other.max_connections,
        );
        check(
            "LOTSAWA_MAX_STREAMS*",
            self.max_streams == other.max_streams
                && self.max_streams_per_tenant == other.max_streams_per_tenant,
        );
        check(
            "LOTSAWA_WEBHOOK_*",
            self.webhooks
                .as_ref()
                .map(|w| (&w.secret, w.retry_base, w.max_attempts))
                == other
                    .webhooks
                    .as_ref()
                    .map(|w| (&w.secret, w.retry_base, w.max_attempts)),
        );
        names
    }

    /// The scheduler settings of the embedded backend.
    pub fn scheduler(&self) -> lotsawa_local::SchedulerConfig {
        lotsawa_local::SchedulerConfig {
            max_chunks: self.max_chunks,
            rate: self.rate,
            max_pending: self.max_pending,
            max_batch_items: self.max_batch_items,
            models: self.models.clone(),
            restrict_models: self.require_auth,
            durability: self.durability,
            webhooks: self.webhooks.clone(),
            retention: self
                .retention_days
                .map(|d| Duration::from_secs(u64::from(d) * 86_400)),
            concurrency: self.concurrency,
            retry: self.retry,
            shutdown_grace: self.shutdown_grace,
            postgres: lotsawa_local::PgOptions {
                lease: self.lease,
                ..Default::default()
            },
        }
    }
}

/// The API key client commands send (LOTSAWA_API_KEY; an environment
/// variable, not a flag, so it shows in no process list).
pub fn api_key(env: &dyn Source) -> Option<String> {
    env.var("LOTSAWA_API_KEY")
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
}

/// The server URL for client commands (`--server`, then LOTSAWA_URL).
pub fn server_url(flag: Option<String>, env: &dyn Source) -> String {
    flag.or_else(|| env.var("LOTSAWA_URL"))
        .unwrap_or_else(|| "http://127.0.0.1:8080".into())
        .trim_end_matches('/')
        .to_owned()
}

/// Log filter (LOTSAWA_LOG, default `info`) and whether to log JSON
/// (LOTSAWA_LOG_FORMAT=json).
pub fn logging(env: &dyn Source) -> (String, bool) {
    (
        env.var("LOTSAWA_LOG").unwrap_or_else(|| "info".into()),
        env.var("LOTSAWA_LOG_FORMAT").as_deref() == Some("json"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<&'static str, &'static str>);
    impl Source for Map {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
    }

    #[test]
    fn a_configuration_file_sits_under_the_environment_and_the_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lotsawa.toml");
        std::fs::write(
            &path,
            "bind = \"127.0.0.1:9191\"\nconcurrency = 5\nmax_chunks = 40\n\
             allowed_hosts = [\"a.example\", \"b.example\"]\nrequire_auth = true\n",
        )
        .expect("write");
        let env = Map(HashMap::from([("LOTSAWA_MAX_CHUNKS", "50")]));
        let file = read_file(Some(path.clone()), &env)
            .expect("readable")
            .expect("named");
        let settings = server_source(&env, Some(&file));
        let flags = ServeFlags {
            concurrency: Some("6".into()),
            ..Default::default()
        };
        let c = ServeConfig::load(flags, &settings).expect("ok");
        assert_eq!(c.bind.to_string(), "127.0.0.1:9191", "from the file");
        assert_eq!(c.max_chunks, 50, "the environment wins over the file");
        assert_eq!(c.concurrency, 6, "the flag wins over both");
        assert_eq!(c.allowed_hosts, ["a.example", "b.example"]);
        assert!(c.require_auth);

        // LOTSAWA_CONFIG names the file when no flag does.
        let by_env = Map(HashMap::from([(
            "LOTSAWA_CONFIG",
            Box::leak(path.display().to_string().into_boxed_str()) as &str,
        )]));
        assert!(read_file(None, &by_env).expect("readable").is_some());
        assert!(
            read_file(None, &Map(HashMap::new()))
                .expect("none")
                .is_none()
        );
    }

    #[test]
    fn a_bad_configuration_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lotsawa.toml");
        std::fs::write(&path, "concurency = 5\n").expect("write");
        let err = read_file(Some(path.clone()), &Map(HashMap::new())).expect_err("typo");
        assert!(err.to_string().contains("concurency"), "{err}");
        let missing = dir.path().join("absent.toml");
        let err = read_file(Some(missing), &Map(HashMap::new())).expect_err("absent");
        assert!(err.to_string().contains("absent.toml"), "{err}");
        std::fs::write(&path, "concurrency = 0\n").expect("write");
        let file = read_file(Some(path), &Map(HashMap::new()))
            .expect("readable")
            .expect("named");
        let env = Map(HashMap::new());
        let err = ServeConfig::load(ServeFlags::default(), &server_source(&env, Some(&file)))
            .expect_err("out of range");
        assert_eq!(err.name, "LOTSAWA_CONCURRENCY");
    }

    #[test]
    fn defaults() {
        let c = ServeConfig::load(ServeFlags::default(), &Map(HashMap::new())).expect("ok");
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.concurrency, 3);
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.retry.base_delay, Duration::from_millis(1000));
        assert!(c.engines.openai.is_none());
    }

    #[test]
    fn flags_override_env() {
        let env = Map(HashMap::from([
            ("LOTSAWA_CONCURRENCY", "5"),
            ("LOTSAWA_BIND", "127.0.0.1:1"),
        ]));
        let flags = ServeFlags {
            concurrency: Some("7".into()),
            ..Default::default()
        };
        let c = ServeConfig::load(flags, &env).expect("ok");
        assert_eq!(c.concurrency, 7);
        assert_eq!(c.bind.port(), 1);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (k, v) in [
            ("LOTSAWA_CONCURRENCY", "zero"),
            ("LOTSAWA_CONCURRENCY", "0"),
            ("LOTSAWA_RETRY_BASE_MS", "-1"),
            ("LOTSAWA_BIND", "localhost"),
            ("OPENAI_BASE_URL", "ftp://x"),
        ] {
            let err = ServeConfig::load(ServeFlags::default(), &Map(HashMap::from([(k, v)])))
                .expect_err(k);
            assert!(err.to_string().starts_with(k), "{err}");
        }
    }

    #[test]
    fn glossary_files_load_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("g.tsv");
        std::fs::write(&good, "ཆོས\tphenomena\n").expect("write");
        let bad = dir.path().join("b.tsv");
        std::fs::write(&bad, "only one column\n").expect("write");
        let good_s: &'static str = Box::leak(good.display().to_string().into_boxed_str());
        let c = ServeConfig::load(
            ServeFlags::default(),
            &Map(HashMap::from([("LOTSAWA_GLOSSARY", good_s)])),
        )
        .expect("ok");
        assert_eq!(c.engines.glossary.get("ཆོས"), Some("phenomena"));
        let bad_s: &'static str = Box::leak(bad.display().to_string().into_boxed_str());
        let err = ServeConfig::load(
            ServeFlags::default(),
            &Map(HashMap::from([("LOTSAWA_GLOSSARY", bad_s)])),
        )
        .expect_err("bad file");
        assert!(
            err.to_string().contains("LOTSAWA_GLOSSARY") && err.to_string().contains("line 1"),
            "{err}"
        );
    }

    #[test]
    fn api_key_alone_enables_openai() {
        let env = Map(HashMap::from([("OPENAI_API_KEY", "sk-x")]));
        let c = ServeConfig::load(ServeFlags::default(), &env).expect("ok");
        let o = c.engines.openai.expect("openai");
        assert_eq!(o.base_url, "https://api.openai.com/v1");
        assert!(!format!("{o:?}").contains("sk-x"));
    }
}
