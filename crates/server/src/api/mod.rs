//! The HTTP API under `/api/v1`: JSON in and out, errors as `{"error", "message"}`, roles
//! checked on every endpoint, described by the OpenAPI document it serves.

mod agents;
mod auth;
mod document;
mod error;
mod events;
mod extract;
mod health;
mod layers;
mod openapi_copy;
mod sessions;
mod terminal;
mod tokens;
mod users;

use std::sync::{Arc, LazyLock};

use axum::extract::DefaultBodyLimit;
use axum::routing::any;
use axum::{Router, middleware};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use extract::{CSRF_HEADER, SESSION_COOKIE};
pub use health::{alive as health_alive, ready as health_ready};

use crate::agents::Agents;
use crate::auth::login::Logins;
use crate::certificates::Certificates;
use crate::events::EventBus;
use crate::health::Readiness;
use crate::metrics::Metrics;
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
    pub logins: Arc<Logins>,
    pub readiness: Arc<Readiness>,
    pub metrics: Metrics,
    /// Ends long-lived responses (event streams) when the server stops.
    pub shutdown: CancellationToken,
}

#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    /// The listener speaks TLS: cookies get `Secure`, responses HSTS.
    pub https: bool,
}

/// What the document says beyond its paths; the paths come from [`api`]'s list.
#[derive(OpenApi)]
#[openapi(
    info(title = "Postern API", description = "Agents, approvals, enrollment tokens, users and events."),
    // The event stream's messages: named here, since its response is typed as text.
    components(schemas(postern_protocol::api::EventView)),
    tags((name = "postern"))
)]
struct ApiDoc;

/// Every endpoint, once: each `routes!` entry adds the handler to the router and its
/// `#[utoipa::path]` to the document, so no route escapes the document (or the role test,
/// which walks the document).
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(openapi_json))
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::me))
        .routes(routes!(auth::notifications_read))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::update, users::delete))
        .routes(routes!(users::reset_password))
        .routes(routes!(agents::list))
        .routes(routes!(agents::counts))
        .routes(routes!(agents::presence))
        .routes(routes!(agents::presence_changes))
        .routes(routes!(agents::show))
        .routes(routes!(agents::approve))
        .routes(routes!(agents::reject))
        .routes(routes!(agents::revoke))
        .routes(routes!(sessions::start))
        .routes(routes!(sessions::list))
        .routes(routes!(sessions::show))
        .routes(routes!(sessions::stop))
        .routes(routes!(sessions::certificate))
        .routes(routes!(sessions::stream))
        .routes(routes!(terminal::attach))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(events::stream))
}

/// The API's OpenAPI document, as served at `/api/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api().split_for_parts();
    document::complete(&mut doc);
    doc
}

/// Liveness: answers without a login.
#[utoipa::path(get, path = "/api/v1/health", responses((status = 200, description = "The server is up")))]
async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// This document: every endpoint, its parameters, bodies and statuses.
#[utoipa::path(get, path = "/api/v1/openapi.json", responses(
    (status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
async fn openapi_json() -> axum::Json<&'static utoipa::openapi::OpenApi> {
    static DOC: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(openapi);
    axum::Json(&DOC)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take this method; see the Allow header",
    )
}

pub fn router(services: Arc<Services>, https: bool) -> Router {
    let state = AppState { services, https };
    let (api, _) = api().split_for_parts();
    api
        // Anything else under the API is a JSON 404, not the app's page.
        .route("/api/v1", any(not_found))
        .route("/api/v1/", any(not_found))
        .route("/api/v1/{*rest}", any(not_found))
        // Set on every route above; axum still adds the `Allow` header.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(crate::web::serve)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(crate::web::compression())
        .layer(middleware::from_fn(layers::refuse_large_bodies))
        // Outermost: every response gets the headers, errors of the layers above included.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            layers::security_headers,
        ))
        // Counts what the client got, headers and all; sees the matched route, as axum
        // applies `layer` to each route.
        .layer(middleware::from_fn_with_state(
            state.services.metrics.clone(),
            crate::metrics::http::count,
        ))
        .with_state(state)
}
