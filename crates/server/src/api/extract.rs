//! Request extractors: the authenticated caller, and JSON bodies whose rejections speak
//! the API's error format.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use postern_protocol::api::Role;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::{AppState, Services};
use crate::auth::secret;
use crate::clock::now_ms;
use crate::store::UserRecord;

pub const SESSION_COOKIE: &str = "postern_session";
/// Browsers must send this header on state-changing requests that rely on the cookie; a
/// cross-site page cannot set it without a CORS preflight, which this server never grants.
pub const CSRF_HEADER: &str = "x-postern-csrf";

/// The logged-in user making the request.
pub struct Caller {
    pub user: UserRecord,
    pub token_hash: String,
}

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.user.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {role} role; you are {}",
                self.user.role
            )))
        }
    }

    pub fn name(&self) -> &str {
        &self.user.name
    }
}

fn cookie_token(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn bearer_token(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?;
    Some(token.trim().to_owned())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (token, via_cookie) = match bearer_token(parts) {
            Some(t) => (t, false),
            None => (
                cookie_token(parts).ok_or_else(ApiError::unauthorized)?,
                true,
            ),
        };
        let safe = matches!(parts.method, Method::GET | Method::HEAD);
        if via_cookie && !safe && !parts.headers.contains_key(CSRF_HEADER) {
            return Err(ApiError::forbidden(format!(
                "cookie-authenticated changes need the {CSRF_HEADER} header"
            )));
        }
        authenticate(&state.services, &token).await
    }
}

pub async fn authenticate(services: &Arc<Services>, token: &str) -> Result<Caller, ApiError> {
    let token_hash = secret::hash_secret(token);
    let (user, expires_at) = services
        .store
        .login(&token_hash)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    if expires_at <= now_ms() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token_expired",
            "your login has expired; run postern login",
        ));
    }
    Ok(Caller { user, token_hash })
}

/// `axum::Json`, with rejections (bad JSON, wrong content type, too large) in our format.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => {
                let status = rejection.status();
                let code = match status {
                    StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                    _ => "invalid_body",
                };
                Err(ApiError::new(status, code, rejection.body_text()))
            }
        }
    }
}

/// WebSockets are not covered by the same-origin policy: a page elsewhere could open one
/// with the user's cookie. Browsers send Origin; it must be this server. Other clients send
/// none.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let bare = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or(origin);
    !host.is_empty() && bare == host
}
