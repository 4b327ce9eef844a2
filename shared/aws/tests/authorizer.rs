//! The HTTP API authorizer over the real key items, against DynamoDB on the
//! moto server: requests shaped as API Gateway sends them (payload 2.0).

use chrono::Utc;
use lotsawa_aws::authorizer::{authorize, bearer_of};
use lotsawa_aws::service::cloud_service;
use lotsawa_aws::{Clients, DynamoStore};
use lotsawa_core::{KeyStore, Tenant};
use serde_json::json;

mod support;

fn request(
    authorization: Option<&str>,
) -> aws_lambda_events::apigw::ApiGatewayV2CustomAuthorizerV2Request {
    let mut headers = json!({"host": "abc123.execute-api.us-east-1.amazonaws.com"});
    let mut identity = json!(null);
    if let Some(a) = authorization {
        headers["authorization"] = json!(a);
        identity = json!([a]);
    }
    serde_json::from_value(json!({
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": "arn:aws:execute-api:us-east-1:123456789012:abc123/$default/GET/api/jobs",
        "identitySource": identity,
        "routeKey": "ANY /{proxy+}",
        "rawPath": "/api/jobs",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": "GET", "path": "/api/jobs", "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "curl/8"},
            "requestId": "req-1",
            "routeKey": "ANY /{proxy+}",
            "stage": "$default",
            "time": "01/Dec/2026:10:00:00 +0000",
            "timeEpoch": 1796119200000u64
        },
        "pathParameters": {"proxy": "api/jobs"}
    }))
    .expect("an API Gateway authorizer request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_keys_are_allowed_with_their_tenant_and_the_rest_denied() {
    let sdk = support::sdk().await;
    let store = DynamoStore::new(Clients::from_sdk(&sdk), support::fresh_config());
    let tenant = Tenant::parse("authz").expect("tenant");
    let (key, record) = lotsawa_core::auth::new_key(tenant.clone(), Utc::now());
    store
        .key_put(&record, &lotsawa_core::auth::key_hash(&key))
        .await
        .expect("key");
    let (revoked, rrec) = lotsawa_core::auth::new_key(tenant.clone(), Utc::now());
    store
        .key_put(&rrec, &lotsawa_core::auth::key_hash(&revoked))
        .await
        .expect("key");
    assert!(
        store
            .key_revoke(&rrec.id, Utc::now())
            .await
            .expect("revoke")
    );
    let service = cloud_service(store, vec!["echo".into()], "echo".into(), Vec::new());

    let ok = authorize(&service, &request(Some(&format!("Bearer {key}"))))
        .await
        .expect("answer");
    assert!(ok.is_authorized);
    assert_eq!(ok.context["tenant"], "authz");
    let lower = authorize(&service, &request(Some(&format!("bearer {key}"))))
        .await
        .expect("answer");
    assert!(lower.is_authorized, "the scheme is case-insensitive");

    // Its last character changed (a key ending in 0 would be unchanged).
    let last = if key.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &key[..key.len() - 1]);
    for (auth, what) in [
        (None, "no header"),
        (Some(format!("Bearer {wrong}")), "a wrong key"),
        (Some(format!("Bearer {revoked}")), "a revoked key"),
        (Some(format!("Basic {key}")), "another scheme"),
        (Some("Bearer ".to_owned()), "an empty key"),
        (Some("Bearer lts_../../etc".to_owned()), "a malformed key"),
    ] {
        let answer = authorize(&service, &request(auth.as_deref()))
            .await
            .expect("answer");
        assert!(!answer.is_authorized, "{what}");
    }
    assert_eq!(bearer_of(&request(None)), None);
}
