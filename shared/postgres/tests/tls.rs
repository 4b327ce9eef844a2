//! TLS to the database: a throwaway server that takes TCP connections over
//! TLS only, with a certificate from a test authority. The store connects
//! with `sslmode=require` and the authority in `sslrootcert`; without the
//! authority the certificate is refused, and without TLS the server refuses.

use lotsawa_conformance::JobFactory;
use lotsawa_conformance::postgres::Cluster;
use lotsawa_core::JobStore;
use lotsawa_postgres::{PgOptions, PgStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_speaks_tls_when_the_url_asks_and_checks_the_certificate() {
    let cluster = Cluster::tls();
    let url = cluster.fresh_database();
    let ca = cluster.ca_file().expect("a CA").display().to_string();

    let store = PgStore::open(
        &format!("{url}?sslmode=require&sslrootcert={ca}"),
        PgOptions::default(),
    )
    .await
    .expect("a TLS connection verified by the test authority");
    let job = JobFactory::new().chunks(2).create(&store).await;
    assert_eq!(store.get(job.id).await.expect("read back").id, job.id);

    // The server's certificate is not from a public authority.
    let untrusted = PgStore::open(&format!("{url}?sslmode=require"), PgOptions::default())
        .await
        .expect_err("an unknown authority is refused");
    assert!(
        untrusted.to_string().to_lowercase().contains("certificate"),
        "{untrusted}"
    );

    // Without TLS the server lets no one in.
    let plain = PgStore::open(&format!("{url}?sslmode=disable"), PgOptions::default())
        .await
        .expect_err("no TLS, no connection");
    assert!(plain.to_string().contains("pg_hba.conf"), "{plain}");
}
