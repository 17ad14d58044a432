//! Users (administrators only): list, add, change role, reset password, delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use postern_protocol::api::{
    ApiError as ErrorBody, CreateUserRequest, EventKind, PasswordRequest, Role, UpdateUserRequest,
    UserView,
};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, Caller};
use crate::auth;
use crate::store::UserRecord;

fn view(user: UserRecord) -> UserView {
    UserView {
        name: user.name,
        role: user.role,
        created_at: user.created_at,
    }
}

/// Every user, by name.
#[utoipa::path(get, path = "/api/v1/users", responses((status = 200, body = Vec<UserView>), (status = 403, body = ErrorBody, description = "Not an administrator")), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<UserView>>, ApiError> {
    caller.require(Role::Admin)?;
    let users = state.services.store.list_users().await?;
    Ok(Json(users.into_iter().map(view).collect()))
}

/// Add a user with a role and an initial password (at least 8 characters).
#[utoipa::path(post, path = "/api/v1/users", request_body = CreateUserRequest, responses(
    (status = 201, body = UserView), (status = 400, body = ErrorBody, description = "Not valid JSON"),
    (status = 403, body = ErrorBody, description = "Not an administrator"),
    (status = 409, body = ErrorBody, description = "The name is taken")), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateUserRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let s = &state.services;
    let user = auth::create_user(&s.store, &request.name, request.role, &request.password).await?;
    let detail = format!("created user {} ({})", user.name, user.role);
    s.events
        .publish(EventKind::UserCreated, &caller.actor(), None, detail)
        .await;
    Ok((StatusCode::CREATED, Json(view(user))).into_response())
}

/// Change a user's role (the last administrator cannot lose theirs).
#[utoipa::path(patch, path = "/api/v1/users/{name}", params(("name" = String, Path)), request_body = UpdateUserRequest,
    responses((status = 200, body = UserView), (status = 403, body = ErrorBody, description = "Not an administrator"),
    (status = 404, body = ErrorBody, description = "No such user"),
    (status = 409, body = ErrorBody, description = "The last administrator")), security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<UpdateUserRequest>,
) -> Result<Json<UserView>, ApiError> {
    caller.require(Role::Admin)?;
    let s = &state.services;
    let user = auth::set_role(&s.store, &s.sessions, &caller.user, &name, request.role).await?;
    let detail = format!("{} is now {}", user.name, user.role);
    s.events
        .publish(EventKind::UserUpdated, &caller.actor(), None, detail)
        .await;
    Ok(Json(view(user)))
}

/// Set a new password; the user's logins end.
#[utoipa::path(post, path = "/api/v1/users/{name}/password", params(("name" = String, Path)), request_body = PasswordRequest,
    responses((status = 204, description = "Set; the user's logins ended"), (status = 400, body = ErrorBody, description = "Not valid JSON"),
    (status = 403, body = ErrorBody, description = "Not an administrator"), (status = 404, body = ErrorBody, description = "No such user")),
    security(("bearer" = [])))]
pub async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<PasswordRequest>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let s = &state.services;
    let user = auth::reset_password(&s.store, &name, &request.password).await?;
    let detail = format!("reset the password of {}", user.name);
    s.events
        .publish(EventKind::UserUpdated, &caller.actor(), None, detail)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a user and end their logins (not oneself, not the last administrator).
#[utoipa::path(delete, path = "/api/v1/users/{name}", params(("name" = String, Path)), responses(
    (status = 204, description = "Deleted"), (status = 403, body = ErrorBody, description = "Not an administrator"),
    (status = 404, body = ErrorBody, description = "No such user"),
    (status = 409, body = ErrorBody, description = "Oneself, or the last administrator")),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let s = &state.services;
    let user = auth::delete_user(&s.store, &s.sessions, &caller.user, &name).await?;
    let detail = format!("deleted user {}", user.name);
    s.events
        .publish(EventKind::UserDeleted, &caller.actor(), None, detail)
        .await;
    Ok(StatusCode::NO_CONTENT)
}
