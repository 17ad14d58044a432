//! HTTP and metrics: the middleware that counts the main listener's requests by route
//! template (never the raw path: `/api/v1/agents/{agent}`, not one series per agent), and the
//! metrics listener's own small router — `/metrics`, `/healthz`, `/readyz` — served by the
//! same HTTP loop as the API (its header and idle timeouts), without the API's routes.

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{GaugeSources, Metrics};
use crate::health::Readiness;

/// What a request that matched no route (the app's pages and files) counts as.
const UNMATCHED: &str = "unmatched";

pub async fn count(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    if !metrics.is_enabled() {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |m| m.as_str().to_owned());
    let method = method_label(request.method());
    let response = next.run(request).await;
    metrics.http_request(&route, method, response.status().as_u16());
    response
}

/// Methods outside the standard set (hyper takes any token) count as one: a client must
/// not be able to mint series.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 7] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ];
    KNOWN
        .iter()
        .find(|m| *m == method)
        .map_or("other", Method::as_str)
}

#[derive(Clone)]
struct Scrape {
    metrics: Metrics,
    gauges: Arc<GaugeSources>,
    readiness: Arc<Readiness>,
}

/// The metrics listener's routes.
pub fn router(metrics: Metrics, gauges: GaugeSources, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { crate::api::health_alive() }))
        .route(
            "/readyz",
            get(|State(s): State<Scrape>| async move { crate::api::health_ready(&s.readiness).await }),
        )
        .with_state(Scrape {
            metrics,
            gauges: Arc::new(gauges),
            readiness,
        })
}

async fn scrape(State(s): State<Scrape>) -> Response {
    let gauges = s.gauges.read().await;
    let text = s.metrics.render(&gauges);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_are_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
