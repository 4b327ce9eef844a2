//! `lotsawa keys create|list|revoke`: API keys in the server's database.
//! A key is printed once, when it is made; the database keeps its hash.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use lotsawa_core::{KeyStore, Tenant, auth};
use lotsawa_local::SqliteStore;

use crate::config::{self, ProcessEnv};

/// What to do.
#[derive(Debug)]
pub enum Action {
    /// Make a key for a tenant.
    Create {
        /// Whose key.
        tenant: String,
    },
    /// Show every key (never the keys themselves).
    List,
    /// Revoke a key by its id.
    Revoke {
        /// The key's id (the part after `lts_`).
        id: String,
    },
}

/// Run a keys command.
pub async fn run(action: Action, db: Option<PathBuf>) -> ExitCode {
    let path = match config::db_path(db, &ProcessEnv) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || SqliteStore::open(path)).await
    };
    let store = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            eprintln!("error: cannot open the database {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match action {
        Action::Create { tenant } => {
            let tenant = match Tenant::parse(tenant.trim()) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: --tenant: {}", e.0);
                    return ExitCode::from(2);
                }
            };
            let (key, record) = auth::new_key(tenant, Utc::now());
            if let Err(e) = store.key_put(&record, &auth::key_hash(&key)).await {
                eprintln!("error: storing the key failed: {e}");
                return ExitCode::FAILURE;
            }
            eprintln!(
                "key {} for tenant {} (shown once; the database keeps only its hash):",
                record.id, record.tenant
            );
            println!("{key}");
            ExitCode::SUCCESS
        }
        Action::List => match store.keys().await {
            Ok(keys) => {
                println!("{:<14} {:<24} {:<26} revoked", "id", "tenant", "created");
                for k in keys {
                    println!(
                        "{:<14} {:<24} {:<26} {}",
                        k.id,
                        k.tenant.as_str(),
                        k.created_at.to_rfc3339(),
                        k.revoked_at.map_or("-".to_owned(), |t| t.to_rfc3339())
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: reading the keys failed: {e}");
                ExitCode::FAILURE
            }
        },
        Action::Revoke { id } => match store.key_revoke(id.trim(), Utc::now()).await {
            Ok(true) => {
                println!("key {} revoked", id.trim());
                ExitCode::SUCCESS
            }
            Ok(false) => {
                eprintln!("error: no key with id {}", id.trim());
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: revoking the key failed: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
