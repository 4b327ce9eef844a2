//! The job store conformance suite on the PostgreSQL store: a throwaway
//! server for the test binary, a fresh database per case.

use std::sync::Arc;

use lotsawa_conformance::Fixture;
use lotsawa_conformance::postgres::Cluster;
use lotsawa_postgres::{PgOptions, PgStore};

async fn postgres() -> Fixture {
    let url = Cluster::get().fresh_database();
    let options = PgOptions {
        pool_size: 8,
        ..PgOptions::default()
    };
    let store = PgStore::open(&url, options).await.expect("open the store");
    Fixture {
        store: Arc::new(store.clone()),
        guard: Box::new(store),
    }
}

lotsawa_conformance::conformance_tests!(postgres);
