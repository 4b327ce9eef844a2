//! The job store conformance suite on the SQLite store (a fresh database
//! file per case).

use std::sync::Arc;

use lotsawa_conformance::Fixture;
use lotsawa_local::SqliteStore;

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("jobs.db")).expect("open the store");
    Fixture {
        store: Arc::new(store),
        guard: Box::new(dir),
    }
}

lotsawa_conformance::conformance_tests!(sqlite);
