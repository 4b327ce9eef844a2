//! The router's settings ([`ApiConfig`]) and the state its handlers share
//! ([`AppState`]): kept apart from the routes so the guards, the handlers
//! and the router read one definition of what a deployment can tune.

use std::sync::Arc;
use std::time::Duration;

use lotsawa_core::JobService;
use tokio_util::sync::CancellationToken;

use crate::{documents, sse};

/// Default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Router settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted (413 above).
    pub body_limit: usize,
    /// Longest time one SSE response stays open; the client is then told to
    /// reconnect (Lambda streams end at 15 minutes).
    pub stream_max: Duration,
    /// Cancelled when the server shuts down: open SSE streams end.
    pub shutdown: CancellationToken,
    /// Every `/api` request (and `/metrics`) needs `Authorization: Bearer
    /// <key>`; jobs belong to the key's tenant. Off: everything is the
    /// default tenant's.
    pub require_auth: bool,
    /// Host names a keyless local server answers besides `localhost` and IP
    /// literals (`LOTSAWA_ALLOWED_HOSTS`); `None`: no `Host` check (the
    /// cloud, or keys required). A web page cannot then drive the server
    /// through DNS rebinding, and cross-site browser requests are refused.
    pub allowed_hosts: Option<Vec<String>>,
    /// Most SSE streams open at once on this process (then 503).
    pub max_streams: usize,
    /// Most SSE streams one tenant may hold open at once (then 429).
    pub max_streams_per_tenant: usize,
    /// Longest time a request may take until its response starts (then 503;
    /// a stream's events are not counted, only its start).
    pub request_timeout: Duration,
    /// Where the dashboard opens SSE streams, when not on this origin (the
    /// cloud's stream function URL, `STREAM_URL`).
    pub stream_url: Option<String>,
    /// Largest PDF (or form of files) accepted (413 above).
    pub pdf_limit: usize,
    /// Longest time one PDF may take to read (then 422).
    pub pdf_budget: Duration,
}

/// Default cap on open streams in all.
pub const DEFAULT_MAX_STREAMS: usize = 1000;
/// Default cap on one tenant's open streams.
pub const DEFAULT_MAX_STREAMS_PER_TENANT: usize = 32;
/// Default time until a response starts.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            body_limit: DEFAULT_BODY_LIMIT,
            stream_max: Duration::from_secs(24 * 3600),
            shutdown: CancellationToken::new(),
            require_auth: false,
            stream_url: None,
            allowed_hosts: None,
            max_streams: DEFAULT_MAX_STREAMS,
            max_streams_per_tenant: DEFAULT_MAX_STREAMS_PER_TENANT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            pdf_limit: documents::DEFAULT_PDF_LIMIT,
            pdf_budget: documents::DEFAULT_PDF_BUDGET,
        }
    }
}

/// Router state.
#[derive(Clone)]
pub struct AppState {
    pub(crate) service: Arc<dyn JobService>,
    pub(crate) config: ApiConfig,
    pub(crate) streams: Arc<sse::StreamSlots>,
    pub(crate) reads: Arc<sse::JobReads>,
    pub(crate) pdf_readers: documents::Readers,
}

impl AppState {
    pub(crate) fn new(service: Arc<dyn JobService>, config: ApiConfig) -> Self {
        Self {
            service,
            config,
            streams: Arc::default(),
            reads: Arc::default(),
            pdf_readers: documents::Readers::default(),
        }
    }
}
