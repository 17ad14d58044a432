//! Agents: list, show, and the administrator's decisions.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use postern_protocol::AgentStatus;
use postern_protocol::api::{
    AgentCounts, AgentPresence, AgentView, ApiError as ErrorBody, Liveness, PresenceChange,
    PresenceChanges, Role,
};
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, Caller};
use crate::fleet::AgentQuery;
use crate::sessions::EndReason;
use crate::store::AgentRecord;

fn view(state: &AppState, caller: &Caller, agent: AgentRecord) -> AgentView {
    let links = state.services.agents.links();
    let liveness = links.liveness(&agent.id);
    AgentView {
        online: liveness != Liveness::Offline,
        liveness,
        last_seen: links.last_seen(&agent.id).or(agent.last_seen),
        // A device's address is for administrators only.
        remote_addr: agent
            .remote_addr
            .filter(|_| caller.user.role == Role::Admin),
        id: agent.id,
        name: agent.name,
        did: agent.did,
        status: agent.status,
        facts: agent.facts,
        enrolled_at: agent.enrolled_at,
        ssh_public_key: agent.ssh_public_key,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentListQuery {
    /// Search: part of the name, hostname or OS, or a prefix of the DID (case-insensitive).
    q: Option<String>,
    status: Option<AgentStatus>,
    /// `true`: connected agents only; `false`: the others.
    online: Option<bool>,
    /// Page size (at most 1000); every matching agent when absent.
    #[param(format = Int64, maximum = 4294967295.0)]
    limit: Option<u32>,
    /// The `x-next-cursor` of the previous page.
    cursor: Option<String>,
}

/// Agents in name order, with their status, liveness and facts: all of them, or those
/// matching a search and filters, a page at a time.
#[utoipa::path(get, path = "/api/v1/agents", params(AgentListQuery), responses(
    (status = 200, body = Vec<AgentView>, headers(
        ("x-total-count" = usize, description = "How many agents match, over all pages"),
        ("x-next-cursor" = String, description = "Pass as `cursor` for the next page; absent on the last"))),
    (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AgentListQuery>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let query = AgentQuery {
        search: query.q,
        status: query.status,
        online: query.online,
        limit: query.limit,
        after: query.cursor,
    };
    let page = state.services.agents.query(&query).await?;
    let views: Vec<AgentView> = page
        .agents
        .into_iter()
        .map(|a| view(&state, &caller, a))
        .collect();
    let mut response = Json(views).into_response();
    let headers = response.headers_mut();
    headers.insert("x-total-count", HeaderValue::from(page.total));
    if let Some(next) = page.next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        headers.insert("x-next-cursor", next);
    }
    Ok(response)
}

/// How many agents there are: by status, connected, not responding, and with a session
/// open. Under `/fleet`, not `/agents`, where it would shadow an agent named `counts`.
#[utoipa::path(get, path = "/api/v1/fleet/counts", responses((status = 200, body = AgentCounts), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn counts(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<AgentCounts>, ApiError> {
    caller.require(Role::Viewer)?;
    let counts = state.services.agents.counts().await?;
    let stored = counts.stored;
    Ok(Json(AgentCounts {
        total: stored.pending + stored.approved + stored.rejected + stored.revoked,
        pending: stored.pending,
        approved: stored.approved,
        rejected: stored.rejected,
        revoked: stored.revoked,
        online: counts.online,
        not_responding: counts.not_responding,
        with_sessions: stored.with_sessions,
    }))
}

/// The connected agents and when each was last heard from: cheap to poll at the agents'
/// sync rate, where the full list is not.
#[utoipa::path(get, path = "/api/v1/presence", responses((status = 200, body = Vec<AgentPresence>), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn presence(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<AgentPresence>>, ApiError> {
    caller.require(Role::Viewer)?;
    let online = state.services.agents.links().presence();
    Ok(Json(
        online
            .into_iter()
            .map(|(id, last_seen, liveness)| AgentPresence {
                id,
                last_seen,
                liveness,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PresenceQuery {
    /// The `cursor` of the previous answer; without it (or when it is too old, or from
    /// before a server restart) the answer is the full list of online agents.
    since: Option<String>,
}

/// Which agents came online or went offline since a cursor: what the app polls to correct
/// its cards, cheap enough to ask every few seconds (a few bytes when nothing changed).
#[utoipa::path(get, path = "/api/v1/presence/changes", params(PresenceQuery), responses((status = 200, body = PresenceChanges), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn presence_changes(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PresenceQuery>,
) -> Result<Json<PresenceChanges>, ApiError> {
    caller.require(Role::Viewer)?;
    let delta = state
        .services
        .agents
        .links()
        .presence_since(query.since.as_deref());
    Ok(Json(PresenceChanges {
        cursor: delta.cursor,
        full: delta.full,
        agents: delta
            .entries
            .into_iter()
            .map(|e| PresenceChange {
                id: e.id,
                online: e.online,
                last_seen: e.last_seen,
                liveness: e.liveness,
            })
            .collect(),
    }))
}

/// One agent, by id, name, DID, or a unique prefix of a name or DID.
#[utoipa::path(get, path = "/api/v1/agents/{agent}", params(("agent" = String, Path)), responses((status = 200, body = AgentView), (status = 404, body = ErrorBody, description = "No such agent"), (status = 409, body = ErrorBody, description = "Ambiguous prefix")), security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(agent): ApiPath<String>,
) -> Result<Json<AgentView>, ApiError> {
    caller.require(Role::Viewer)?;
    let agent = state.services.agents.resolve(&agent).await?;
    Ok(Json(view(&state, &caller, agent)))
}

async fn decide(
    state: AppState,
    caller: Caller,
    reference: String,
    to: AgentStatus,
) -> Result<Json<AgentView>, ApiError> {
    caller.require(Role::Admin)?;
    let agent = state
        .services
        .agents
        .decide(&caller.actor(), &reference, to)
        .await?;
    Ok(Json(view(&state, &caller, agent)))
}

/// Approve a pending (or rejected) agent.
#[utoipa::path(post, path = "/api/v1/agents/{agent}/approve", params(("agent" = String, Path)), responses((status = 200, body = AgentView), (status = 403, body = ErrorBody, description = "Not an administrator"), (status = 404, body = ErrorBody, description = "No such agent"), (status = 409, body = ErrorBody, description = "Ambiguous prefix, or not a pending or rejected agent")), security(("bearer" = [])))]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(agent): ApiPath<String>,
) -> Result<Json<AgentView>, ApiError> {
    decide(state, caller, agent, AgentStatus::Approved).await
}

/// Reject a pending agent; it keeps waiting and may be approved later.
#[utoipa::path(post, path = "/api/v1/agents/{agent}/reject", params(("agent" = String, Path)), responses((status = 200, body = AgentView), (status = 403, body = ErrorBody, description = "Not an administrator"), (status = 404, body = ErrorBody, description = "No such agent"), (status = 409, body = ErrorBody, description = "Ambiguous prefix, or not a pending agent")), security(("bearer" = [])))]
pub async fn reject(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(agent): ApiPath<String>,
) -> Result<Json<AgentView>, ApiError> {
    decide(state, caller, agent, AgentStatus::Rejected).await
}

/// Revoke an agent: its link closes at once and its key is refused from then on.
#[utoipa::path(post, path = "/api/v1/agents/{agent}/revoke", params(("agent" = String, Path)), responses((status = 200, body = AgentView), (status = 403, body = ErrorBody, description = "Not an administrator"), (status = 404, body = ErrorBody, description = "No such agent"), (status = 409, body = ErrorBody, description = "Ambiguous prefix, or already revoked")), security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(agent): ApiPath<String>,
) -> Result<Json<AgentView>, ApiError> {
    caller.require(Role::Admin)?;
    // Sessions end first, with the right reason; then the link closes.
    let record = state.services.agents.resolve(&agent).await?;
    if record.status.can_become(AgentStatus::Revoked) {
        state
            .services
            .sessions
            .end_for_agent(&record.id, EndReason::AgentRevoked, &caller.actor())
            .await;
    }
    decide(state, caller, record.id.to_string(), AgentStatus::Revoked).await
}
