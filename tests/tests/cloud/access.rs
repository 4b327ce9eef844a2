//! Keys, tenants and IAM: isolation through API Gateway and the stream
//! function, and calls outside a function's role refused.

use super::*;

/// Keys and tenants on the deployed functions: no key is 401 (API
/// Gateway's own answer before the api function, the stream function's
/// problem), a wrong key 403 at API Gateway (the authorizer's denial) and
/// 401 at the stream function; another tenant's job is 404 at get, cancel,
/// retry and stream, and absent from its lists.
pub(crate) async fn tenants_are_isolated(c: &Cloud) {
    let api = &c.ctx.api;
    let other =
        Api::new(c.em.var("API_URL"), c.em.var("STREAM_URL")).with_key(c.em.var("API_KEY_OTHER"));
    let anonymous = Api::new(c.em.var("API_URL"), c.em.var("STREAM_URL"));
    let id = api
        .submit("ཀ་ཁ་ག། tenants", json!({"engine": "echo"}))
        .await
        .expect("submit");
    let job = format!("{}/api/jobs/{id}", api.base);
    let stream = format!("{}/api/jobs/{id}/stream", api.stream_base);
    let status = |r: reqwest::Response| r.status().as_u16();
    // The key with its last character changed (to another one: a key
    // ending in 0 would otherwise be sent unchanged).
    let key = c.em.var("API_KEY");
    let last = if key.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &key[..key.len() - 1]);
    for (url, what, wrong_key_status) in [
        (format!("{}/api/jobs", api.base), "list", 403),
        (job.clone(), "get", 403),
        (stream.clone(), "stream", 401),
    ] {
        let r = anonymous.http.get(&url).send().await.expect("request");
        assert_eq!(status(r), 401, "{what} without a key");
        let r = anonymous
            .http
            .get(&url)
            .bearer_auth(&wrong)
            .send()
            .await
            .expect("request");
        assert_eq!(status(r), wrong_key_status, "{what} with a wrong key");
    }
    assert_eq!(status(api.http.get(&job).send().await.expect("get")), 200);
    assert_eq!(status(other.http.get(&job).send().await.expect("get")), 404);
    assert_eq!(
        status(other.http.delete(&job).send().await.expect("cancel")),
        404
    );
    assert_eq!(
        status(
            other
                .http
                .post(format!("{job}/retry"))
                .send()
                .await
                .expect("retry")
        ),
        404
    );
    assert_eq!(
        status(other.http.get(&stream).send().await.expect("stream")),
        404
    );
    let list: Value = other
        .http
        .get(format!("{}/api/jobs?limit=100", api.base))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert!(
        list["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().all(|j| j["id"] != id.as_str())),
        "{list}"
    );
    api.wait_status(&id, "completed", JOB_TIMEOUT)
        .await
        .expect("the owner's job completes");
}

/// Clients acting with credentials of one of the template's roles (the
/// administrator assumes it, as Lambda does for a function).
async fn as_role(c: &Cloud, role: &str) -> aws_config::SdkConfig {
    let admin = c.em.sdk().await;
    let provider = aws_config::sts::AssumeRoleProvider::builder(c.em.var(&format!("ROLE_{role}")))
        .session_name("lotsawa-test")
        .configure(&admin)
        .build()
        .await;
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(c.em.var("AWS_ENDPOINT_URL"))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(provider)
        .load()
        .await
}

/// IAM is enforced with each function's own role, from the template's
/// policies: a call a role's policies allow passes, one they do not allow
/// is refused as AWS refuses it (the authorizer may read keys but write
/// nothing; the stream function may not send wake-ups; the worker may not
/// start executions; the state machine's role may not send to the ingest
/// queue).
pub(crate) async fn calls_outside_a_role_are_refused(c: &Cloud) {
    let table = "lotsawa-jobs";
    let key = |pk: &str| {
        [
            (
                "pk".to_owned(),
                aws_sdk_dynamodb::types::AttributeValue::S(pk.into()),
            ),
            (
                "sk".to_owned(),
                aws_sdk_dynamodb::types::AttributeValue::S("X".into()),
            ),
        ]
        .into_iter()
        .collect::<std::collections::HashMap<_, _>>()
    };
    let authorizer = aws_sdk_dynamodb::Client::new(&as_role(c, "AuthorizerFunctionRole").await);
    authorizer
        .get_item()
        .table_name(table)
        .set_key(Some(key("KEY#none")))
        .send()
        .await
        .expect("the authorizer reads keys");
    let refused = authorizer
        .put_item()
        .table_name(table)
        .set_item(Some(key("KEY#forged")))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "the authorizer wrote an item: {refused:?}"
    );
    let admin = aws_sdk_dynamodb::Client::new(&c.em.sdk().await);
    let forged = admin
        .get_item()
        .table_name(table)
        .set_key(Some(key("KEY#forged")))
        .send()
        .await
        .expect("read");
    assert!(forged.item.is_none(), "nothing was written");

    let stream = aws_sdk_sqs::Client::new(&as_role(c, "StreamFunctionRole").await);
    let refused = stream
        .send_message()
        .queue_url(c.em.var("JOB_QUEUE_URL"))
        .message_body("{}")
        .message_group_id("test")
        .message_deduplication_id("test-refused")
        .send()
        .await;
    assert!(
        refused.is_err(),
        "the stream function sent a wake-up: {refused:?}"
    );
    let dispatch = aws_sdk_sqs::Client::new(&as_role(c, "DispatchFunctionRole").await);
    let sent = dispatch
        .get_queue_attributes()
        .queue_url(c.em.var("JOB_QUEUE_URL"))
        .send()
        .await;
    // The dispatcher sends wake-ups but has no other SQS right on the queue
    // (its event source mapping receives for it).
    assert!(
        sent.is_err(),
        "the dispatcher read queue attributes: {sent:?}"
    );

    let worker = aws_sdk_sfn::Client::new(&as_role(c, "WorkerFunctionRole").await);
    let refused = worker
        .start_execution()
        .state_machine_arn(&c.sm)
        .name("refused-start")
        .input("{}")
        .send()
        .await;
    assert!(
        refused.is_err(),
        "the worker started an execution: {refused:?}"
    );

    let states = aws_sdk_sqs::Client::new(&as_role(c, "JobStateMachineRole").await);
    let refused = states
        .send_message()
        .queue_url(c.em.var("INGEST_QUEUE_URL"))
        .message_body("{}")
        .send()
        .await;
    assert!(
        refused.is_err(),
        "the state machine's role sent to the ingest queue: {refused:?}"
    );
}
