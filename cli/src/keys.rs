//! `lotsawa keys create|budget|list|revoke`: API keys in the server's
//! database, and tenants' monthly token budgets. A key is printed once,
//! when it is made; the database keeps its hash.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use lotsawa_core::{Tenant, auth};

use crate::config::{self, ProcessEnv};

/// What to do.
#[derive(Debug)]
pub enum Action {
    /// Make a key for a tenant.
    Create {
        /// Whose key.
        tenant: String,
        /// The tenant's monthly token budget, to set with it.
        monthly_tokens: Option<u64>,
    },
    /// Show or change a tenant's monthly token budget.
    Budget {
        /// Whose budget.
        tenant: String,
        /// What to do with it.
        set: BudgetChange,
    },
    /// Show every key (never the keys themselves).
    List,
    /// Revoke a key by its id.
    Revoke {
        /// The key's id (the part after `lts_`).
        id: String,
    },
}

/// A change to a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetChange {
    /// Show it and what is used of it.
    Show,
    /// Set it to this many tokens a month.
    Set(u64),
    /// No budget.
    Lift,
}

fn tenant_arg(raw: &str) -> Result<Tenant, ExitCode> {
    Tenant::parse(raw.trim()).map_err(|e| {
        eprintln!("error: --tenant: {}", e.0);
        ExitCode::from(2)
    })
}

async fn show_budget(store: &dyn lotsawa_core::Store, tenant: &Tenant) -> ExitCode {
    let now = Utc::now();
    let budget = match store.budget(tenant).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: reading the budget failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (used, resets) = match lotsawa_core::usage::month_used(store, tenant, now).await {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: reading the usage failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match budget {
        Some(b) => println!(
            "tenant {tenant}: {used} of {b} tokens used this month; resets {}",
            resets.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => println!("tenant {tenant}: no monthly budget; {used} tokens used this month"),
    }
    ExitCode::SUCCESS
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
    let store = match lotsawa_local::open_store(&path).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot open the database {}: {e}",
                lotsawa_local::Db::of(&path).shown()
            );
            return ExitCode::FAILURE;
        }
    };
    match action {
        Action::Budget { tenant, set } => {
            let tenant = match tenant_arg(&tenant) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let change = match set {
                BudgetChange::Show => return show_budget(&*store, &tenant).await,
                BudgetChange::Set(n) => Some(n),
                BudgetChange::Lift => None,
            };
            if let Err(e) = store.set_budget(&tenant, change).await {
                eprintln!("error: storing the budget failed: {e}");
                return ExitCode::FAILURE;
            }
            show_budget(&*store, &tenant).await
        }
        Action::Create {
            tenant,
            monthly_tokens,
        } => {
            let tenant = match tenant_arg(&tenant) {
                Ok(t) => t,
                Err(code) => return code,
            };
            if let Some(n) = monthly_tokens {
                if let Err(e) = store.set_budget(&tenant, Some(n)).await {
                    eprintln!("error: storing the budget failed: {e}");
                    return ExitCode::FAILURE;
                }
                eprintln!("tenant {tenant}: monthly budget {n} tokens");
            }
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
