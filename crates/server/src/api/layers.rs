//! What wraps every request and response, API and app alike: bodies announced larger than
//! the limit are refused before they are read, and every response carries the security
//! headers.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{AppState, MAX_BODY};

/// Over HTTPS, browsers come back only over HTTPS for a year (the usual value; not
/// `includeSubDomains`: other names under the domain are not the server's to decide). A
/// browser ignores it from a certificate it had to be told to accept (RFC 6797 §8.1), so a
/// self-signed server does not lock anyone out.
const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";

/// For responses that set none (the API's): nothing may load or frame them.
const API_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// A request whose `Content-Length` exceeds the limit gets 413 at once: waiting for a body
/// that will be refused anyway would hold the connection for nothing.
pub async fn refuse_large_bodies(request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are at most {MAX_BODY} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Security headers on every response. API responses (and anything else that does not say
/// otherwise) are never stored by caches: some carry credentials (a login's token and
/// cookie), all carry data only a logged-in user may see.
pub async fn security_headers(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if state.https {
        set(
            headers,
            header::STRICT_TRANSPORT_SECURITY,
            STRICT_TRANSPORT_SECURITY,
        );
    }
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        set(
            headers,
            header::CONTENT_SECURITY_POLICY,
            API_CONTENT_SECURITY_POLICY,
        );
    }
    if headers.contains_key(header::SET_COOKIE) || !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

fn set(headers: &mut HeaderMap, name: header::HeaderName, value: &'static str) {
    headers.insert(name, HeaderValue::from_static(value));
}
