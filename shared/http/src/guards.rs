//! The middleware every route runs behind, outermost first: the deadline
//! (a response must start within the request timeout), the `Host` and
//! cross-site check of a keyless local server, and authentication, which
//! puts the caller's [`lotsawa_core::Tenant`] in the request for the handlers. They are
//! layers rather than handler code so no route can forget one.

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState, Router, dashboard};

/// The deadline, the `Host` check (keyless local servers), then the
/// caller's tenant on every request (the default tenant when keys are
/// off); with keys on, a request other than `/healthz` and `/openapi.json`
/// without a valid key is answered 401.
pub(crate) fn with_guards(state: AppState, routes: Router<AppState>) -> Router<AppState> {
    routes
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_host,
        ))
        .layer(axum::middleware::from_fn_with_state(state, deadline))
}

/// Answer 503 when a response has not started within the request timeout
/// (a store stuck on a full disk, say), instead of holding the connection.
async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.config.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(seconds = limit.as_secs_f64(), "request timed out");
            let e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request took longer than {} s; try again",
                    limit.as_secs_f64()
                ),
            );
            e.with_retry_after(1).into_response()
        }
    }
}

/// The host part of a `Host` or `Origin` authority (no port, no brackets).
fn host_of(authority: &str) -> &str {
    let a = authority.trim();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match a.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => a,
    }
}

/// Whether a keyless server answers requests for `host`: an IP literal (a
/// rebinding attack needs a name), `localhost`, or a configured name.
pub fn host_allowed(host: &str, extra: &[String]) -> bool {
    let h = host_of(host).trim_end_matches('.');
    h.parse::<std::net::IpAddr>().is_ok()
        || h.eq_ignore_ascii_case("localhost")
        || extra.iter().any(|e| e.eq_ignore_ascii_case(h))
}

/// Refuse, on a keyless server, requests for a host it does not answer for
/// (421) and cross-site browser requests (403).
async fn check_host(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(extra) = &state.config.allowed_hosts {
        let headers = req.headers();
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        if let Some(host) = host
            && !host_allowed(&host, extra)
        {
            return Err(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this server answers only for localhost, IP addresses and LOTSAWA_ALLOWED_HOSTS, not '{}'",
                    host_of(&host)
                ),
            ));
        }
        let cross_site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
        let foreign_origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .filter(|o| *o != "null")
            .is_some_and(|o| {
                let authority = o.split_once("://").map_or(o, |(_, a)| a);
                !host_allowed(authority, extra)
            });
        if cross_site || foreign_origin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross-site browser requests are refused by a server without API keys",
            ));
        }
    }
    Ok(next.run(req).await)
}

/// Put the caller's tenant in the request, or answer 401 when keys are on
/// and the request has none or a wrong one.
async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = req.uri().path();
    // Health, the API description and the dashboard's page and assets (the
    // page asks for a key and sends it with its API calls).
    let open = matches!(path, "/healthz" | "/openapi.json") || dashboard::is_page(path);
    let caller = if !state.config.require_auth || open {
        lotsawa_core::auth::Caller::default()
    } else {
        let key = bearer(req.headers()).or_else(|| {
            // Browsers' EventSource cannot set headers: the stream route
            // alone takes the key as a query parameter.
            let stream = (path.starts_with("/api/jobs/") || path.starts_with("/api/batches/"))
                && path.ends_with("/stream");
            stream.then(|| access_token(req.uri())).flatten()
        });
        let Some(key) = key else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this server needs an API key: send Authorization: Bearer <key>",
            ));
        };
        state.service.authenticate(&key).await?
    };
    req.extensions_mut().insert(caller.tenant.clone());
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// The key of an `Authorization: Bearer <key>` header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim().to_owned())
}

/// The `access_token` query parameter (stream routes only), decoded as a
/// form value: the dashboard writes it with `encodeURIComponent`, so a key
/// is only found as it was if `%2B` reads as `+` (and `+` as a space). The
/// first one counts; a query that cannot be read has none.
fn access_token(uri: &Uri) -> Option<String> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs
        .into_iter()
        .find_map(|(k, v)| (k == "access_token").then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(uri: &str) -> Option<String> {
        access_token(&uri.parse::<Uri>().expect("uri"))
    }

    #[test]
    fn the_access_token_is_percent_decoded() {
        assert_eq!(token("/s?access_token=a%2Bb").as_deref(), Some("a+b"));
        assert_eq!(token("/s?access_token=a+b").as_deref(), Some("a b"));
        assert_eq!(
            token("/s?x=1&access_token=lts_%5Fk").as_deref(),
            Some("lts__k")
        );
        assert_eq!(
            token("/s?access_token=a&access_token=b").as_deref(),
            Some("a")
        );
    }

    #[test]
    fn no_access_token_is_none() {
        assert_eq!(token("/s"), None);
        assert_eq!(token("/s?"), None);
        assert_eq!(token("/s?token=a"), None);
    }
}
