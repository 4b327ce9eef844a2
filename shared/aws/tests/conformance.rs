//! The job store conformance suite on the DynamoDB store, against DynamoDB
//! and S3 on the moto server (one table per case).

use std::sync::Arc;

use lotsawa_aws::{Clients, DynamoStore};
use lotsawa_conformance::Fixture;

mod support;

async fn dynamodb() -> Fixture {
    let sdk = support::sdk().await;
    Fixture {
        store: Arc::new(DynamoStore::new(
            Clients::from_sdk(&sdk),
            support::fresh_config(),
        )),
        guard: Box::new(()),
    }
}

lotsawa_conformance::conformance_tests!(dynamodb);
