//! The schema and its versions: `lotsawa_schema` holds the version
//! applied; each step runs in its own transaction under an advisory lock,
//! so servers that start together migrate once.

use crate::PgError;

/// The schema's steps, in order. Append only: a released step is never
/// edited.
const STEPS: &[&str] = &[
    // 1: every table of the SQLite store's schema 8, and the leases of
    // running jobs.
    r#"
CREATE TABLE jobs (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    config TEXT NOT NULL,
    result TEXT,
    error TEXT,
    chunks_total INTEGER NOT NULL,
    chunks_completed INTEGER NOT NULL DEFAULT 0,
    queue_pos BIGINT NOT NULL,
    priority SMALLINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    cancelled_at TIMESTAMPTZ,
    run INTEGER NOT NULL DEFAULT 0,
    callback TEXT,
    callback_due TIMESTAMPTZ,
    callback_claim TIMESTAMPTZ,
    batch TEXT,
    trace TEXT,
    reviewed INTEGER NOT NULL DEFAULT 0,
    edits INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until TIMESTAMPTZ
);
CREATE INDEX jobs_claim ON jobs (priority DESC, queue_pos, seq) WHERE status = 'pending';
CREATE INDEX jobs_queue ON jobs (queue_pos) WHERE status = 'pending';
CREATE INDEX jobs_running ON jobs (lease_until) WHERE status = 'processing';
CREATE INDEX jobs_tenant_seq ON jobs (tenant, seq);
CREATE INDEX jobs_tenant_pending ON jobs (tenant) WHERE status = 'pending';
CREATE INDEX jobs_callback_due ON jobs (callback_due) WHERE callback_due IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (COALESCE(completed_at, cancelled_at, created_at))
    WHERE status IN ('completed', 'failed', 'cancelled');
CREATE TABLE chunks (
    job_seq BIGINT NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    source TEXT NOT NULL,
    chars INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    translation TEXT,
    error TEXT,
    duration_ms BIGINT,
    run INTEGER NOT NULL DEFAULT 0,
    confidence DOUBLE PRECISION,
    from_memory BOOLEAN NOT NULL DEFAULT FALSE,
    context TEXT,
    warning TEXT,
    usage_calls BIGINT NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    revisions TEXT,
    revs INTEGER NOT NULL DEFAULT 0,
    current_rev INTEGER NOT NULL DEFAULT 0,
    reviewed BOOLEAN NOT NULL DEFAULT FALSE,
    version INTEGER NOT NULL DEFAULT 0,
    examples TEXT,
    PRIMARY KEY (job_seq, idx)
);
CREATE TABLE idempotency (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE INDEX idempotency_created ON idempotency (created_at);
CREATE TABLE rate_buckets (
    tenant TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    at TIMESTAMPTZ NOT NULL
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE TABLE batches (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    items TEXT NOT NULL
);
CREATE INDEX batches_tenant_seq ON batches (tenant, seq);
CREATE TABLE memory (
    key TEXT PRIMARY KEY,
    translation TEXT NOT NULL,
    confidence DOUBLE PRECISION,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE usage (
    tenant TEXT NOT NULL,
    day DATE NOT NULL,
    engine TEXT NOT NULL,
    model TEXT NOT NULL,
    calls BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    PRIMARY KEY (tenant, day, engine, model)
);
CREATE TABLE budgets (
    tenant TEXT PRIMARY KEY,
    monthly_tokens BIGINT NOT NULL
);
CREATE TABLE glossaries (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    entries TEXT NOT NULL,
    terms INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX glossaries_tenant ON glossaries (tenant, created_at);
CREATE TABLE segments (
    tenant TEXT NOT NULL,
    id BIGINT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    human BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE segment_keys (
    tenant TEXT NOT NULL,
    key BIGINT NOT NULL,
    id BIGINT NOT NULL,
    PRIMARY KEY (tenant, key, id)
);
"#,
    // 2: the provider limits every server shares (one limiter per key).
    "CREATE TABLE provider_limits (key TEXT PRIMARY KEY, state TEXT NOT NULL);",
];

/// The schema version this build writes (and the newest it opens).
pub const SCHEMA_VERSION: i32 = STEPS.len() as i32;

/// The advisory lock key migrations run under ("lotsawa" in ASCII).
const MIGRATION_LOCK: i64 = 0x006c_6f74_7361_7761;

/// Bring the database to [`SCHEMA_VERSION`]; a database written by a
/// newer build is refused, untouched.
pub(crate) async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), PgError> {
    let fail = |e: tokio_postgres::Error| PgError::Migrate(crate::db_text(&e));
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS lotsawa_schema (version INTEGER NOT NULL)")
        .await
        .or_else(|e| {
            // Two servers creating the table at once: one wins.
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                Ok(())
            } else {
                Err(fail(e))
            }
        })?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(fail)?;
    let result = migrate_locked(client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result?;
    unlock.map_err(fail)?;
    Ok(())
}

async fn migrate_locked(client: &mut deadpool_postgres::Object) -> Result<(), PgError> {
    let fail = |e: tokio_postgres::Error| PgError::Migrate(crate::db_text(&e));
    let found: i32 = client
        .query_opt("SELECT version FROM lotsawa_schema", &[])
        .await
        .map_err(fail)?
        .map(|r| r.get(0))
        .unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(PgError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, step) in STEPS.iter().enumerate().skip(found.max(0) as usize) {
        let version = i as i32 + 1;
        let tx = client.transaction().await.map_err(fail)?;
        tx.batch_execute(step).await.map_err(fail)?;
        tx.execute("DELETE FROM lotsawa_schema", &[])
            .await
            .map_err(fail)?;
        tx.execute(
            "INSERT INTO lotsawa_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(version, "database schema step applied");
    }
    Ok(())
}
