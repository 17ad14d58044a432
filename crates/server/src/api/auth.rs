//! Login, logout and "who am I".

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use postern_protocol::api::{
    ApiError as ErrorBody, EventKind, LoginRequest, LoginResponse, Me, NotificationsRead,
};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, Caller, SESSION_COOKIE};

/// The login cookie; `Secure` over HTTPS, so that the browser never sends it in clear.
fn cookie(value: &str, max_age: u64, https: bool) -> Result<HeaderValue, ApiError> {
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    ))
    .map_err(ApiError::internal)
}

/// Log in with a password: returns a bearer token and sets the same token as a cookie.
#[utoipa::path(post, path = "/api/v1/login", request_body = LoginRequest, responses(
    (status = 200, body = LoginResponse),
    (status = 401, body = ErrorBody, description = "Wrong user or password"),
    (status = 429, body = ErrorBody, description = "Too many failed attempts",
        headers(("Retry-After" = u64, description = "Seconds until the next attempt is allowed"))),
    (status = 503, body = ErrorBody, description = "Too many logins being checked at once",
        headers(("Retry-After" = u64, description = "Seconds until the next attempt"))),
))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let logins = &state.services.logins;
    let done = logins
        .login(&request.user, request.password, Some(peer.ip()))
        .await?;
    let body = LoginResponse {
        token: done.token.clone(),
        expires_at: done.expires_at,
        user: me_of(done.user),
    };
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&done.token, logins.ttl().as_secs(), state.https)?,
    );
    Ok(response)
}

/// End this login: the token stops working at once.
#[utoipa::path(post, path = "/api/v1/logout", responses((status = 204, description = "Logged out")), security(("bearer" = [])))]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let s = &state.services;
    s.store.delete_login(&caller.token_hash).await?;
    s.events
        .publish(EventKind::UserLogout, &caller.actor(), None, "logged out")
        .await;
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0, state.https)?);
    Ok(response)
}

/// The logged-in user.
#[utoipa::path(get, path = "/api/v1/me", responses((status = 200, body = Me)), security(("bearer" = [])))]
pub async fn me(caller: Caller) -> Json<Me> {
    Json(me_of(caller.user))
}

fn me_of(user: crate::store::UserRecord) -> Me {
    Me {
        name: user.name,
        role: user.role,
        notifications_read_up_to: user.notifications_read_up_to,
    }
}

/// Mark the app's notifications read up to an event id (it only ever moves forward).
#[utoipa::path(put, path = "/api/v1/me/notifications", request_body = NotificationsRead,
    responses((status = 204, description = "Recorded")), security(("bearer" = [])))]
pub async fn notifications_read(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<NotificationsRead>,
) -> Result<axum::http::StatusCode, ApiError> {
    caller.require(postern_protocol::api::Role::Viewer)?;
    state
        .services
        .store
        .set_notifications_read(&caller.user.id, request.read_up_to)
        .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
