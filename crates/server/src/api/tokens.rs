//! Enrollment tokens (administrators only).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use postern_protocol::api::{
    ApiError as ErrorBody, CreateTokenRequest, CreatedToken, Role, TokenView,
};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, Caller};
use crate::tokens::DEFAULT_TTL;

/// Enrollment tokens, newest first. Secrets are never shown again after creation.
#[utoipa::path(get, path = "/api/v1/tokens", responses((status = 200, body = Vec<TokenView>), (status = 403, body = ErrorBody, description = "Not an administrator")), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(state.services.tokens.list().await?))
}

/// Create an enrollment token that approves agents on enrollment.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = CreateTokenRequest, responses((status = 200, body = CreatedToken), (status = 400, body = ErrorBody, description = "Not valid JSON"), (status = 403, body = ErrorBody, description = "Not an administrator")), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateTokenRequest>,
) -> Result<Json<CreatedToken>, ApiError> {
    caller.require(Role::Admin)?;
    let ttl = request
        .ttl_secs
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TTL);
    let uses = request.uses.unwrap_or(1);
    Ok(Json(
        state
            .services
            .tokens
            .create(&caller.actor(), ttl, uses)
            .await?,
    ))
}

/// Revoke an enrollment token by id (or unique id prefix).
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", params(("id" = String, Path)), responses((status = 200, body = TokenView), (status = 403, body = ErrorBody, description = "Not an administrator"), (status = 404, body = ErrorBody, description = "No single token matches")), security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TokenView>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(
        state.services.tokens.revoke(&caller.actor(), &id).await?,
    ))
}
