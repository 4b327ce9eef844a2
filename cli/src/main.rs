//! `lotsawa`: the local server (`serve`) and the command-line client.

mod backup;
mod batch;
mod client;
mod config;
mod desk;
mod eval;
mod keys;
mod listen;
mod oneshot;
mod serve;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Durable Tibetan to English translation jobs.
#[derive(Debug, Parser)]
#[command(name = "lotsawa", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// Server URL [env: LOTSAWA_URL] [default: http://127.0.0.1:8080]
    #[arg(long, global = true)]
    server: Option<String>,
    /// Print JSON instead of text (for scripts)
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: HTTP API, scheduler and its store (an embedded
    /// SQLite file, or a PostgreSQL database several servers share)
    Serve {
        /// Listen address [env: LOTSAWA_BIND] [default: 127.0.0.1:8080]
        #[arg(long)]
        bind: Option<String>,
        /// SQLite database file, or postgres://USER@HOST/DB [env:
        /// LOTSAWA_DB] [default: lotsawa.db]
        #[arg(long)]
        db: Option<PathBuf>,
        /// Jobs processing at once [env: LOTSAWA_CONCURRENCY] [default: 3]
        #[arg(long)]
        concurrency: Option<String>,
        /// Default engine [env: LOTSAWA_ENGINE]
        #[arg(long)]
        engine: Option<String>,
        /// Require an API key on every /api request and /metrics; jobs then
        /// belong to the key's tenant [env: LOTSAWA_REQUIRE_AUTH=1]
        #[arg(long)]
        require_auth: bool,
        /// Configuration file (TOML: every setting of the environment, each
        /// under its variable's name without LOTSAWA_, in lower case; a
        /// variable that is set wins) [env: LOTSAWA_CONFIG]
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Copy the server's database to FILE while it runs (a consistent
    /// snapshot: every job committed before the copy began, none after)
    Backup {
        /// The copy (must not exist)
        file: PathBuf,
        /// SQLite database file [env: LOTSAWA_DB] [default: lotsawa.db]
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Replace the database with a backup; refused while a server runs on it
    Restore {
        /// The backup
        file: PathBuf,
        /// SQLite database file [env: LOTSAWA_DB] [default: lotsawa.db]
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Manage API keys in the server's database
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
        /// SQLite database file, or postgres://USER@HOST/DB [env:
        /// LOTSAWA_DB] [default: lotsawa.db]
        #[arg(long, global = true)]
        db: Option<PathBuf>,
    },
    /// Submit a text file ('-' for stdin) as a job, or several files as one
    /// batch
    Submit {
        /// Files to translate ('-' for stdin); several make a batch
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Follow progress (a progress bar; for a batch, one bar and a line
        /// per file) and print the translation (for a batch, a line per file)
        #[arg(long)]
        follow: bool,
        /// Wait for the job to end, without a progress bar (for pipelines);
        /// exit 0 completed, 3 failed, 4 cancelled
        #[arg(long, conflicts_with = "follow")]
        wait: bool,
        /// Target chunk size in characters
        #[arg(long)]
        chunk_size: Option<u32>,
        /// Engine
        #[arg(long)]
        engine: Option<String>,
        /// Model
        #[arg(long)]
        model: Option<String>,
        /// Chunks of the job translated at once (1-64), under the
        /// provider's limits
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
        parallel_chunks: Option<u32>,
        /// Queue priority (-10 to 10): higher first
        #[arg(long, value_name = "P", allow_negative_numbers = true,
              value_parser = clap::value_parser!(i8).range(-10..=10))]
        priority: Option<i8>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Translate a file ('-' for stdin) in-process, without a server
    Translate {
        /// File to translate
        file: PathBuf,
        /// Engine [env: LOTSAWA_ENGINE]
        #[arg(long)]
        engine: Option<String>,
        /// Model
        #[arg(long)]
        model: Option<String>,
        /// Target chunk size in characters
        #[arg(long)]
        chunk_size: Option<u32>,
        /// SQLite database (default: a temporary one; give one to keep the
        /// translation memory, but not one a running server uses)
        #[arg(long)]
        db: Option<PathBuf>,
        /// Print the job as JSON
        #[arg(long)]
        json: bool,
    },
    /// Transliterate a file ('-' for stdin) to EWTS, streamed to stdout
    Transliterate {
        /// File to transliterate
        file: PathBuf,
        /// Run it as a job in-process and print the job as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a completed job's translation, nothing else (exit 3 failed,
    /// 4 cancelled, 1 not finished)
    Result {
        /// Job id
        id: String,
        /// For a document (PDF): a `[page N]` line where each page starts
        #[arg(long)]
        pages: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Watch a directory: each new *.txt file becomes a job, and its results
    /// are written to DIR/results/<name>.en.txt and <name>.json
    Watch {
        /// The directory to watch
        dir: PathBuf,
        /// Between two scans of the directory, ms
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// A file is taken once left alone this long, ms
        #[arg(long, default_value_t = 1000)]
        settle_ms: u64,
        /// Stop once every file present is taken and its job ended
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Score an engine on a corpus: each line `bo<TAB>en` (Tibetan, a tab,
    /// the reference); chrF, chrF++ and BLEU as sacrebleu computes them
    Eval {
        /// The corpus (TSV)
        corpus: PathBuf,
        /// Engine [env: LOTSAWA_ENGINE]
        #[arg(long)]
        engine: Option<String>,
        /// Model
        #[arg(long)]
        model: Option<String>,
        /// SQLite database whose translation memory is used (default: a
        /// temporary one)
        #[arg(long)]
        db: Option<PathBuf>,
        /// One JSON object: engine, model, segments, chrf, chrfpp, bleu
        #[arg(long)]
        json: bool,
    },
    /// Show, cancel or retry a batch
    Batch {
        #[command(subcommand)]
        action: BatchCommand,
    },
    /// Ask the server whether it is healthy (exit 0 healthy, 1 not)
    Health {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a job
    Status {
        /// Job id
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List jobs, newest first
    List {
        /// Only jobs in this status
        #[arg(long)]
        status: Option<String>,
        /// Most jobs to show (1..=100)
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a pending or processing job
    Cancel {
        /// Job id
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Queue a failed or cancelled job again
    Retry {
        /// Job id
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write a job's bilingual text for CAT tools: TMX, XLIFF 2.1 or a
    /// printable HTML page (each chunk's current revision)
    Export {
        /// Job id
        id: String,
        /// tmx, xliff or html
        #[arg(long, value_parser = ["tmx", "xliff", "html"])]
        format: String,
        /// Write to this file instead of standard output
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Import an XLIFF 2 file exported from a job and edited elsewhere: each
    /// changed target becomes a human revision of its chunk
    Import {
        /// Job id
        id: String,
        /// The XLIFF file ('-' for stdin)
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
enum BatchCommand {
    /// Show a batch: status, aggregate progress, a line per item
    Status {
        /// Batch id
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel every unfinished item of a batch
    Cancel {
        /// Batch id
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Queue a batch's failed and cancelled items again
    Retry {
        /// Batch id
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a key for a tenant and print it (once)
    Create {
        /// Whose jobs the key's requests make and see
        #[arg(long)]
        tenant: String,
        /// Set the tenant's monthly token budget (prompt and completion
        /// tokens; the tenant's, shared by all its keys)
        #[arg(long, value_name = "N")]
        monthly_tokens: Option<u64>,
    },
    /// Show, set or lift a tenant's monthly token budget
    Budget {
        /// Whose budget
        #[arg(long)]
        tenant: String,
        /// The new budget, tokens a month
        #[arg(long, value_name = "N", conflicts_with = "unlimited")]
        monthly_tokens: Option<u64>,
        /// Lift the budget
        #[arg(long)]
        unlimited: bool,
    },
    /// List keys (ids, tenants, dates; never the keys)
    List,
    /// Revoke a key by its id
    Revoke {
        /// The key's id (`lts_<id>_…`)
        key_id: String,
    },
}

/// `lotsawa --version`: the release and the database schema it writes.
fn version() -> String {
    format!(
        "{} (database schema {})",
        env!("CARGO_PKG_VERSION"),
        lotsawa_local::SCHEMA_VERSION
    )
}

fn main() -> ExitCode {
    let version: &'static str = version().leak();
    let matches = Cli::command().version(version).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve {
                bind,
                db,
                concurrency,
                engine,
                require_auth,
                config,
            } => {
                serve::run(config::ServeFlags {
                    bind,
                    db,
                    concurrency,
                    engine,
                    require_auth,
                    config,
                })
                .await
            }
            Command::Backup { file, db } => backup::run(backup::Action::Backup(file), db).await,
            Command::Restore { file, db } => backup::run(backup::Action::Restore(file), db).await,
            Command::Keys { action, db } => {
                let action = match action {
                    KeysCommand::Create {
                        tenant,
                        monthly_tokens,
                    } => keys::Action::Create {
                        tenant,
                        monthly_tokens,
                    },
                    KeysCommand::Budget {
                        tenant,
                        monthly_tokens,
                        unlimited,
                    } => keys::Action::Budget {
                        tenant,
                        set: match (monthly_tokens, unlimited) {
                            (Some(n), _) => keys::BudgetChange::Set(n),
                            (None, true) => keys::BudgetChange::Lift,
                            (None, false) => keys::BudgetChange::Show,
                        },
                    },
                    KeysCommand::List => keys::Action::List,
                    KeysCommand::Revoke { key_id } => keys::Action::Revoke { id: key_id },
                };
                keys::run(action, db).await
            }
            Command::Submit {
                files,
                follow,
                wait,
                chunk_size,
                engine,
                model,
                parallel_chunks,
                priority,
                client,
            } => {
                let how = client::SubmitHow {
                    follow,
                    wait,
                    chunk_size,
                    engine,
                    model,
                    parallel_chunks,
                    priority,
                };
                client::Client::new(client.server, client.json)
                    .submit(&files, how)
                    .await
            }
            Command::Result { id, pages, client } => {
                client::Client::new(client.server, client.json)
                    .result(&id, pages)
                    .await
            }
            Command::Watch {
                dir,
                interval_ms,
                settle_ms,
                once,
                client,
            } => {
                let options = watch::WatchOptions {
                    interval: std::time::Duration::from_millis(interval_ms),
                    settle: std::time::Duration::from_millis(settle_ms),
                    once,
                };
                watch::run(client::Client::new(client.server, false), dir, options).await
            }
            Command::Translate {
                file,
                engine,
                model,
                chunk_size,
                db,
                json,
            } => {
                oneshot::run(
                    &file,
                    lotsawa_core::JobType::Translation,
                    oneshot::OneShot {
                        db,
                        engine,
                        model,
                        chunk_size,
                        json,
                    },
                )
                .await
            }
            Command::Transliterate { file, json: false } => oneshot::transliterate(&file),
            Command::Transliterate { file, json } => {
                oneshot::run(
                    &file,
                    lotsawa_core::JobType::Transliteration,
                    oneshot::OneShot {
                        json,
                        ..Default::default()
                    },
                )
                .await
            }
            Command::Eval {
                corpus,
                engine,
                model,
                db,
                json,
            } => {
                eval::run(
                    &corpus,
                    eval::EvalOptions {
                        engine,
                        model,
                        db,
                        json,
                    },
                )
                .await
            }
            Command::Batch { action } => {
                let (action, id, client) = match action {
                    BatchCommand::Status { id, client } => (batch::BatchAction::Status, id, client),
                    BatchCommand::Cancel { id, client } => (batch::BatchAction::Cancel, id, client),
                    BatchCommand::Retry { id, client } => (batch::BatchAction::Retry, id, client),
                };
                client::Client::new(client.server, client.json)
                    .batch(action, &id)
                    .await
            }
            Command::Health { client } => {
                client::Client::new(client.server, client.json)
                    .health()
                    .await
            }
            Command::Status { id, client } => {
                client::Client::new(client.server, client.json)
                    .status(&id)
                    .await
            }
            Command::List {
                status,
                limit,
                client,
            } => {
                client::Client::new(client.server, client.json)
                    .list(status, limit)
                    .await
            }
            Command::Cancel { id, client } => {
                client::Client::new(client.server, client.json)
                    .cancel(&id)
                    .await
            }
            Command::Export {
                id,
                format,
                output,
                client,
            } => {
                client::Client::new(client.server, client.json)
                    .export(&id, &format, output.as_deref())
                    .await
            }
            Command::Import { id, file, client } => {
                client::Client::new(client.server, client.json)
                    .import(&id, &file)
                    .await
            }
            Command::Retry { id, client } => {
                client::Client::new(client.server, client.json)
                    .retry(&id)
                    .await
            }
        }
    })
}
