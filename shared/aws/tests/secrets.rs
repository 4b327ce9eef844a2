//! The OpenAI-compatible endpoint's API key comes from Secrets Manager
//! (moto here): read once at start, as a plain string or JSON `apiKey`.

use lotsawa_aws::runtime::openai_key_from_secret;

// Only the emulator and its SDK configuration are used here.
#[allow(dead_code)]
mod support;

#[tokio::test]
async fn the_api_key_is_read_from_a_secret() {
    let sdk = support::sdk().await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let plain = client
        .create_secret()
        .name(format!("lotsawa-test-plain-{}", uuid::Uuid::new_v4()))
        .secret_string("sk-plain-key")
        .send()
        .await
        .expect("create secret");
    let json = client
        .create_secret()
        .name(format!("lotsawa-test-json-{}", uuid::Uuid::new_v4()))
        .secret_string(r#"{"apiKey":"sk-json-key"}"#)
        .send()
        .await
        .expect("create secret");
    let key = |arn: Option<&str>| openai_key_from_secret(&client, arn.expect("arn").to_owned());
    assert_eq!(key(plain.arn()).await.expect("plain"), "sk-plain-key");
    assert_eq!(key(json.arn()).await.expect("json"), "sk-json-key");
    let missing = openai_key_from_secret(
        &client,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:nothing-here".to_owned(),
    )
    .await
    .expect_err("no such secret");
    let message = missing.to_string();
    assert!(
        message.starts_with("OPENAI_API_KEY_SECRET_ARN:"),
        "{message}"
    );
}
