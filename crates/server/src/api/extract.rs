//! Request extractors: the authenticated caller, and JSON bodies whose rejections speak
//! the API's error format.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use postern_protocol::api::Role;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::{AppState, Services};
use crate::auth::secret;
use crate::clock::now_ms;
use crate::store::{Actor, UserRecord};

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

    /// The caller as the actor of what they do.
    pub fn actor(&self) -> Actor {
        Actor::user(&self.user)
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
/// Every request body in this API is a JSON object: anything else (an array, which serde
/// would otherwise read field by field into a struct) is refused.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be sent as Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            let code = match status {
                StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                _ => "invalid_body",
            };
            ApiError::new(status, code, rejection.body_text())
        })?;
        let value = match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => value,
            Err(rejection) => {
                return Err(ApiError::new(
                    rejection.status(),
                    "invalid_body",
                    rejection.body_text(),
                ));
            }
        };
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "the body must be a JSON object",
            ));
        }
        Ok(Self(value))
    }
}

/// `application/json`, or any `application/…+json`, with or without parameters.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// `axum::extract::Query`, with rejections (a malformed or out-of-range parameter) in our
/// format.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                rejection.body_text(),
            )),
        }
    }
}

/// `axum::extract::Path`, with rejections (a segment that is not UTF-8) in our format.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                rejection.body_text(),
            )),
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
