//! SSH sessions: start (or return the open one), list, show, stop, certify a key, and the
//! WebSocket data path that carries raw SSH bytes to the agent's SSH server.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use postern_protocol::SessionState;
use postern_protocol::api::{
    ApiError as ErrorBody, CertificateRequest, CertificateResponse, Role, SessionView,
};
use russh::keys::PublicKey;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utoipa::IntoParams;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller, same_origin};
use crate::sessions::{ActivityGuard, EndReason, SessionError, TunnelStream};
use crate::store::{SessionFilter, SessionRecord};

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound(_) => ApiError::not_found(e.to_string()),
            SessionError::AgentNotApproved(_) | SessionError::WrongState { .. } => {
                ApiError::new(StatusCode::CONFLICT, "wrong_state", e.to_string())
            }
            SessionError::Transition(_) => {
                ApiError::new(StatusCode::CONFLICT, "invalid_transition", e.to_string())
            }
            SessionError::Channel(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "agent_unreachable", e.to_string())
            }
            SessionError::Node(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "node_unreachable", e.to_string())
            }
            SessionError::Store(e) => e.into(),
        }
    }
}

/// Operators and viewers see their own sessions; admins see all. Others' sessions are
/// reported as not found, so that their existence does not leak.
async fn visible(state: &AppState, caller: &Caller, id: &str) -> Result<SessionRecord, ApiError> {
    let session = state.services.sessions.get(id).await?;
    if caller.user.role == Role::Admin || session.user_id == caller.user.id {
        Ok(session)
    } else {
        Err(ApiError::not_found(format!("no session {id}")))
    }
}

/// Start an SSH session on an agent, or return the caller's open one.
#[utoipa::path(post, path = "/api/v1/agents/{agent}/sessions", params(("agent" = String, Path)), responses(
    (status = 201, body = SessionView, description = "Started"),
    (status = 200, body = SessionView, description = "Already open"),
    (status = 403, body = ErrorBody, description = "Not an operator"), (status = 404, body = ErrorBody, description = "No such agent"),
    (status = 409, body = ErrorBody, description = "Ambiguous prefix, or the agent is not approved")),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(agent): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let s = &state.services;
    let agent = s.agents.resolve(&agent).await?;
    let (session, created) = s.sessions.request(&caller.user, &agent).await?;
    let view = s.sessions.view(session, true).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionsQuery {
    /// Agent name, DID or unique prefix.
    agent: Option<String>,
    state: Option<SessionState>,
    /// User name (admins only; others always see their own).
    user: Option<String>,
    /// At most this many, newest first (default 100; more than 1000 counts as 1000).
    // u32's range: the format is widened from utoipa's int32 to say so.
    #[param(format = Int64, maximum = 4294967295.0)]
    limit: Option<u32>,
}

/// Sessions, newest first.
#[utoipa::path(get, path = "/api/v1/sessions", params(SessionsQuery), responses(
    (status = 200, body = Vec<SessionView>), (status = 404, body = ErrorBody, description = "No such agent"),
    (status = 409, body = ErrorBody, description = "Ambiguous agent prefix")), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<SessionsQuery>,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let s = &state.services;
    let user_id = if caller.user.role == Role::Admin {
        match &query.user {
            Some(name) => match s.store.user_by_name(name).await? {
                Some(user) => Some(user.id),
                // No such user has no sessions.
                None => return Ok(Json(Vec::new())),
            },
            None => None,
        }
    } else {
        Some(caller.user.id.clone())
    };
    let agent_id = match &query.agent {
        Some(a) => Some(s.agents.resolve(a).await?.id),
        None => None,
    };
    let filter = SessionFilter {
        agent_id,
        user_id,
        state: query.state,
        limit: query.limit.unwrap_or(100).min(1000),
    };
    let mut views = Vec::new();
    for session in s.sessions.list(&filter).await? {
        views.push(s.sessions.view(session, false).await?);
    }
    Ok(Json(views))
}

/// One session with its full history.
#[utoipa::path(get, path = "/api/v1/sessions/{id}", params(("id" = String, Path)), responses(
    (status = 200, body = SessionView), (status = 404, body = ErrorBody, description = "No such session of the caller's")), security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SessionView>, ApiError> {
    caller.require(Role::Viewer)?;
    let session = visible(&state, &caller, &id).await?;
    Ok(Json(state.services.sessions.view(session, true).await?))
}

/// Stop a session: its channels close, its port is released.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/stop", params(("id" = String, Path)), responses(
    (status = 200, body = SessionView), (status = 403, body = ErrorBody, description = "Not an operator"),
    (status = 404, body = ErrorBody, description = "No such session of the caller's"),
    (status = 409, body = ErrorBody, description = "Already ended")), security(("bearer" = [])))]
pub async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SessionView>, ApiError> {
    caller.require(Role::Operator)?;
    let session = visible(&state, &caller, &id).await?;
    let reason = EndReason::StoppedBy(caller.name().to_owned());
    let s = &state.services;
    let stopped = s
        .sessions
        .stop(&session.id, reason, &caller.actor())
        .await?;
    Ok(Json(s.sessions.view(stopped, true).await?))
}

/// Certify the caller's public key for this session's agent (valid at most 5 minutes).
#[utoipa::path(post, path = "/api/v1/sessions/{id}/certificate", params(("id" = String, Path)),
    request_body = CertificateRequest, responses(
    (status = 200, body = CertificateResponse), (status = 400, body = ErrorBody, description = "Not an OpenSSH public key, or a login the agent does not allow"),
    (status = 403, body = ErrorBody, description = "Not an operator, or the agent is not approved"),
    (status = 404, body = ErrorBody, description = "No such session of the caller's"),
    (status = 409, body = ErrorBody, description = "The session has ended")), security(("bearer" = [])))]
pub async fn certificate(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<CertificateRequest>,
) -> Result<Json<CertificateResponse>, ApiError> {
    caller.require(Role::Operator)?;
    let s = &state.services;
    let session = s.sessions.get(&id).await?;
    let subject = PublicKey::from_openssh(request.public_key.trim()).map_err(|e| {
        ApiError::bad_request(format!("public_key is not an OpenSSH public key: {e}"))
    })?;
    let issued = s
        .certificates
        .issue(&caller.user, &session, &subject, request.login)
        .await?;
    Ok(Json(CertificateResponse {
        certificate: issued
            .certificate
            .to_openssh()
            .map_err(ApiError::internal)?,
        login: issued.login,
        valid_before: issued.certificate.valid_before(),
        host_key: issued.agent.ssh_public_key,
        agent_name: issued.agent.name,
    }))
}

/// The checks before a WebSocket into a session (the data path, the web terminal): an
/// operator, from this server's pages or no browser at all, on their own session — whatever
/// their role, a session's bytes are its user's alone. Who asks is checked before what
/// they sent.
pub(super) async fn own_session_socket(
    state: &AppState,
    caller: &Caller,
    id: &str,
    headers: &HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<(SessionRecord, WebSocketUpgrade), ApiError> {
    caller.require(Role::Operator)?;
    if !same_origin(headers) {
        return Err(ApiError::forbidden("cross-origin WebSocket refused"));
    }
    let session = state.services.sessions.get(id).await?;
    if session.user_id != caller.user.id {
        return Err(ApiError::not_found(format!("no session {id}")));
    }
    let ws = ws.map_err(|e| ApiError::bad_request(e.body_text()))?;
    Ok((session, ws))
}

/// The data path: a WebSocket whose binary frames are the raw bytes of one SSH connection to
/// the agent's SSH server.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/stream", params(("id" = String, Path)), responses(
    (status = 101, description = "WebSocket: binary frames carry SSH bytes"),
    (status = 400, body = ErrorBody, description = "Not a WebSocket upgrade"),
    (status = 403, body = ErrorBody, description = "Not an operator, or a cross-origin page"),
    (status = 404, body = ErrorBody, description = "No such session of the caller's"),
    (status = 409, body = ErrorBody, description = "The session is not running"),
    (status = 502, body = ErrorBody, description = "The agent did not open the channel, or the node holding the session cannot be reached")), security(("bearer" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (session, ws) = own_session_socket(&state, &caller, &id, &headers, ws).await?;
    let (channel, guard) = state
        .services
        .sessions
        .open_stream(&session.id, peer)
        .await?;
    Ok(ws
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| pump(socket, channel, guard)))
}

async fn pump(socket: WebSocket, channel: TunnelStream, _open: ActivityGuard) {
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (mut from_agent, mut to_agent) = tokio::io::split(channel);
    let upload = async {
        while let Some(Ok(message)) = ws_rx.next().await {
            match message {
                Message::Binary(bytes) if to_agent.write_all(&bytes).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = to_agent.shutdown().await;
    };
    let download = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from_agent.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = Message::Binary(bytes::Bytes::copy_from_slice(&buf[..n]));
                    if ws_tx.send(frame).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.send(Message::Close(None)).await;
    };
    // Each direction ends on its own: the client's EOF reaches the agent as channel EOF,
    // and the agent closing the channel closes the WebSocket.
    tokio::join!(upload, download);
}
