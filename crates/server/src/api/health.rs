//! `GET /healthz` and `GET /readyz`, for load balancers: no login, no body to send. The
//! same answers come from the metrics listener (`metrics::http`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use postern_protocol::api::ApiError as ErrorBody;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use crate::health::Readiness;

/// What a health probe answers when all is well.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `alive` or `ready`.
    pub status: &'static str,
}

/// Liveness: the process answers. Touches nothing else (not the store): a load balancer that
/// restarts on this must not restart a server whose disk is full.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health, description = "The process is alive")))]
pub async fn healthz() -> Json<Health> {
    alive()
}

/// Readiness: the store answers a read within 2 s and the HTTP and agent listeners accept;
/// not while the server is stopping.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, body = Health, description = "Ready for traffic"),
    (status = 503, body = ErrorBody, description = "Not ready: `message` says why")))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    ready(&state.services.readiness).await
}

pub fn alive() -> Json<Health> {
    Json(Health { status: "alive" })
}

pub async fn ready(readiness: &Readiness) -> Result<Json<Health>, ApiError> {
    match readiness.check().await {
        Ok(()) => Ok(Json(Health { status: "ready" })),
        Err(not_ready) => {
            tracing::warn!(
                error = %postern_protocol::text::error_chain(&not_ready),
                "not ready"
            );
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                not_ready.to_string(),
            ))
        }
    }
}
