//! The HTTP API under `/api/v1`: JSON in and out, errors as `{"error", "message"}`, roles
//! checked on every endpoint, described by the OpenAPI document it serves.

mod agents;
mod auth;
mod error;
mod events;
mod extract;
mod openapi_copy;
mod sessions;
mod terminal;
mod tokens;
mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

pub use error::ApiError;
pub use extract::{CSRF_HEADER, SESSION_COOKIE};

use crate::agents::Agents;
use crate::auth::throttle::LoginThrottle;
use crate::certificates::Certificates;
use crate::events::EventBus;
use crate::sessions::Sessions;
use crate::store::Store;
use crate::terminal::Terminals;
use crate::tokens::EnrollmentTokens;

/// Request bodies are small JSON documents; anything larger is refused before parsing.
pub const MAX_BODY: usize = 64 * 1024;

pub struct Services {
    pub store: Arc<dyn Store>,
    pub agents: Arc<Agents>,
    pub sessions: Arc<Sessions>,
    pub certificates: Arc<Certificates>,
    pub tokens: Arc<EnrollmentTokens>,
    pub terminals: Arc<Terminals>,
    pub events: Arc<EventBus>,
    pub throttle: LoginThrottle,
    pub login_ttl: Duration,
    /// Ends long-lived responses (event streams) when the server stops.
    pub shutdown: CancellationToken,
}

#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Postern API", description = "Agents, approvals, enrollment tokens, users and events."),
    paths(
        auth::login, auth::logout, auth::me, auth::notifications_read,
        users::list, users::create, users::update, users::reset_password, users::delete,
        agents::list, agents::presence, agents::presence_changes, agents::show, agents::approve, agents::reject, agents::revoke,
        tokens::list, tokens::create, tokens::revoke,
        sessions::start, sessions::list, sessions::show, sessions::stop, sessions::certificate,
        sessions::stream, terminal::attach,
        events::stream, health,
    ),
    modifiers(&BearerAuth),
    tags((name = "postern"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Liveness: answers without a login.
#[utoipa::path(get, path = "/api/v1/health", responses((status = 200, description = "The server is up")))]
async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(openapi())
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

pub fn router(services: Arc<Services>) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi_json))
        .route("/login", post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/me", get(auth::me))
        .route("/me/notifications", put(auth::notifications_read))
        .route("/users", get(users::list).post(users::create))
        .route(
            "/users/{name}",
            axum::routing::patch(users::update).delete(users::delete),
        )
        .route("/users/{name}/password", post(users::reset_password))
        .route("/agents", get(agents::list))
        .route("/presence", get(agents::presence))
        .route("/presence/changes", get(agents::presence_changes))
        .route("/agents/{agent}", get(agents::show))
        .route("/agents/{agent}/approve", post(agents::approve))
        .route("/agents/{agent}/reject", post(agents::reject))
        .route("/agents/{agent}/revoke", post(agents::revoke))
        .route("/agents/{agent}/sessions", post(sessions::start))
        .route("/sessions", get(sessions::list))
        .route("/sessions/{id}", get(sessions::show))
        .route("/sessions/{id}/stop", post(sessions::stop))
        .route("/sessions/{id}/certificate", post(sessions::certificate))
        .route("/sessions/{id}/stream", get(sessions::stream))
        .route("/sessions/{id}/terminal", get(terminal::attach))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{id}", delete(tokens::revoke))
        .route("/events", get(events::stream))
        .fallback(not_found);
    Router::new()
        .nest("/api/v1", api)
        .fallback(crate::web::serve)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(crate::web::compression())
        .with_state(AppState { services })
}
