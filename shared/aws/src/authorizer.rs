//! The HTTP API's Lambda authorizer: the same hashed keys as everywhere,
//! checked before a request reaches the `api` function (API Gateway caches
//! each answer for the key, so a client's requests cost one lookup per
//! cache period). The `api` and `stream` functions still check the key
//! themselves; the authorizer keeps keyless and wrong-key traffic from
//! invoking them at all.

use aws_lambda_events::apigw::{
    ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request,
};
use lotsawa_core::{JobService, ServiceError};
use serde_json::json;

/// The key of an authorizer request: `Authorization: Bearer <key>` (the
/// identity source), `None` when absent or not a bearer token.
pub fn bearer_of(req: &ApiGatewayV2CustomAuthorizerV2Request) -> Option<String> {
    let raw = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.identity_source.as_ref()?.first().cloned())?;
    let (scheme, key) = raw.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim().to_owned())
        .filter(|k| !k.is_empty())
}

/// Allow a request whose key is valid (its tenant in the context), deny
/// any other; a store failure is an error (API Gateway answers 500 and
/// caches nothing), never an allow.
pub async fn authorize(
    service: &dyn JobService,
    req: &ApiGatewayV2CustomAuthorizerV2Request,
) -> Result<ApiGatewayV2CustomAuthorizerSimpleResponse, ServiceError> {
    let mut answer = ApiGatewayV2CustomAuthorizerSimpleResponse::default();
    let Some(key) = bearer_of(req) else {
        return Ok(answer);
    };
    match service.authenticate(&key).await {
        Ok(caller) => {
            answer.is_authorized = true;
            answer.context = json!({"tenant": caller.tenant.as_str()});
            Ok(answer)
        }
        Err(ServiceError::Unauthorized(_)) => Ok(answer),
        Err(e) => Err(e),
    }
}
