//! The agent registry's rules: enrollment, naming, approval decisions, and how an agent is
//! found from what a person types (name, DID, or a unique prefix of either).

use std::net::SocketAddr;
use std::sync::Arc;

use postern_protocol::api::EventKind;
use postern_protocol::control::StatusUpdate;
use postern_protocol::enrollment::Enrollment;
use postern_protocol::{AgentId, AgentStatus, ServerMessage};

use crate::auth::secret;
use crate::clock::now_ms;
use crate::enrollment_limits::{EnrollmentLimits, PendingCheck, Turn};
use crate::events::EventBus;
use crate::fleet::{AgentQuery, FleetCounts};
use crate::links::{LinkCommand, LinkRegistry};
use crate::store::{
    Actor, AgentPage, AgentRecord, PrefixMatch, Store, StoreError, TokenPays, TokenUse,
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no agent matches {0:?}")]
    NotFound(String),
    #[error("{reference:?} matches several agents: {candidates}")]
    Ambiguous {
        reference: String,
        candidates: String,
    },
    #[error("agent {name} is {from}; it cannot become {to}")]
    InvalidTransition {
        name: String,
        from: AgentStatus,
        to: AgentStatus,
    },
    #[error("this agent was revoked; enroll it again with a new identity")]
    Revoked,
    #[error("{0}")]
    Refused(String),
    #[error(
        "{limit} agents are waiting for approval, as many as this server allows: enroll with a \
         token, or wait until an administrator decides on some"
    )]
    TooManyPending { limit: u32 },
    #[error(
        "too many new agents from this address (at most {per_source} every {}): try again \
         later, or enroll with a token",
        ShortDuration(*window)
    )]
    EnrollmentRate {
        per_source: u32,
        window: std::time::Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Told to a rejected agent that presents an enrollment token.
pub const REJECTION_STANDS: &str = "an administrator rejected this agent; an enrollment token \
     cannot approve it, only an administrator can";

pub struct Agents {
    store: Arc<dyn Store>,
    events: Arc<EventBus>,
    links: Arc<LinkRegistry>,
    /// OpenSSH public key of the CA that signs user certificates; given to approved agents.
    user_ca: String,
    limits: EnrollmentLimits,
}

impl Agents {
    pub fn new(
        store: Arc<dyn Store>,
        events: Arc<EventBus>,
        links: Arc<LinkRegistry>,
        user_ca: String,
        limits: EnrollmentLimits,
    ) -> Self {
        Self {
            store,
            events,
            links,
            user_ca,
            limits,
        }
    }

    pub fn links(&self) -> &LinkRegistry {
        &self.links
    }

    pub fn status_update(&self, agent: &AgentRecord, message: Option<String>) -> StatusUpdate {
        StatusUpdate {
            status: agent.status,
            name: agent.name.clone(),
            message,
            user_ca: (agent.status == AgentStatus::Approved).then(|| self.user_ca.clone()),
        }
    }

    /// Records a verified enrollment presented on a link authenticated with `ssh_key`.
    /// Returns the agent as stored and a note for the agent's log.
    pub async fn enroll(
        &self,
        enrollment: &Enrollment,
        ssh_key: &str,
        peer: Option<SocketAddr>,
    ) -> Result<(AgentRecord, Option<String>), AgentError> {
        if enrollment.ssh_public_key.trim() != ssh_key {
            return Err(AgentError::Refused(
                "the enrollment names another SSH key than the one this link authenticated with"
                    .into(),
            ));
        }
        let did = enrollment.did.as_str();
        let by_key = self.store.agent_by_ssh_key(ssh_key).await?;
        let by_did = self.store.agent_by_did(did).await?;
        let facts = enrollment.facts.clone().sanitized();
        let now = now_ms();
        let addr = peer.map(|p| p.ip().to_string());

        let existing = match (by_key, by_did) {
            (Some(a), Some(b)) if a.id == b.id => Some(a),
            (None, None) => None,
            _ => {
                return Err(AgentError::Refused(
                    "this identity or SSH key is already registered with another key or identity"
                        .into(),
                ));
            }
        };

        if let Some(mut agent) = existing {
            if agent.status == AgentStatus::Revoked {
                return Err(AgentError::Revoked);
            }
            if agent.facts != facts {
                self.store.update_agent_facts(&agent.id, &facts).await?;
                agent.facts = facts;
            }
            self.store
                .update_agent_seen(&agent.id, now, addr.as_deref())
                .await?;
            let mut note = None;
            if let Some(token) = &enrollment.token {
                match agent.status {
                    AgentStatus::Pending => {
                        let pays = TokenPays::Approval {
                            agent: &agent.id,
                            by: "enrollment-token",
                        };
                        match self.take_token(token, pays).await? {
                            Ok(TokenUse::Consumed) => {
                                agent.status = AgentStatus::Approved;
                                self.publish_approval(&agent).await;
                            }
                            // Decided meanwhile by an administrator: as they decided.
                            Ok(_) => {
                                if let Some(now) = self.store.agent_by_id(&agent.id).await? {
                                    agent = now;
                                }
                            }
                            Err(why) => note = Some(why),
                        }
                    }
                    // A rejection stands until an administrator changes it; the token is
                    // not used up on it.
                    AgentStatus::Rejected => note = Some(REJECTION_STANDS.to_owned()),
                    AgentStatus::Approved | AgentStatus::Revoked => {}
                }
            }
            return Ok((agent, note));
        }

        // A new agent: approved if its token pays for it (the use and the agent are stored
        // together), else waiting for an administrator.
        let wanted = sanitize_name(
            enrollment
                .name
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(&facts.hostname),
        );
        let mut agent = AgentRecord {
            id: AgentId::from(secret::new_id()),
            did: did.to_owned(),
            name: wanted.clone(),
            ssh_public_key: ssh_key.to_owned(),
            status: AgentStatus::Approved,
            facts,
            enrolled_at: now,
            last_seen: Some(now),
            remote_addr: addr,
        };
        let mut note = None;
        let mut stored = false;
        if let Some(token) = &enrollment.token {
            match self.store_named(&mut agent, &wanted, Some(token)).await? {
                Ok(()) => stored = true,
                Err(why) => note = Some(why),
            }
        }
        if !stored {
            agent.status = AgentStatus::Pending;
            // Held until the new agent is stored, so that the pending count it checked holds.
            let mut turn = self.admit_pending(peer).await?;
            if let Err(why) = self.store_named(&mut agent, &wanted, None).await? {
                return Err(AgentError::Refused(why));
            }
            turn.charge(peer.map(|p| p.ip()));
        }
        let status = agent.status;
        let how = if status == AgentStatus::Approved {
            "enrolled and approved with an enrollment token"
        } else {
            "enrolled; waiting for approval"
        };
        self.events
            .publish(EventKind::AgentEnrolled, &Actor::System, Some(&agent), how)
            .await;
        if status == AgentStatus::Approved {
            self.publish_approval(&agent).await;
        }
        Ok((agent, note))
    }

    /// Whether one more new agent from `peer` may wait for approval: the source's rate, then
    /// the cap on waiting agents (whose reaching is published once, not per refusal).
    async fn admit_pending(&self, peer: Option<SocketAddr>) -> Result<Turn<'_>, AgentError> {
        let config = self.limits.config();
        let mut turn = self.limits.lock().await;
        if !turn.rate_allows(peer.map(|p| p.ip())) {
            return Err(AgentError::EnrollmentRate {
                per_source: config.per_source,
                window: config.window,
            });
        }
        let pending = self.store.count_agents(AgentStatus::Pending).await?;
        if let PendingCheck::Full { first } = turn.pending_allows(pending) {
            if first {
                tracing::warn!(
                    limit = config.max_pending,
                    "the pending-agent limit is reached; refusing new agents without a token"
                );
                let detail = format!(
                    "{} agents are waiting for approval, the limit: new agents without an \
                     enrollment token are refused until an administrator decides on some",
                    config.max_pending
                );
                self.events
                    .publish(EventKind::AgentPendingLimit, &Actor::System, None, detail)
                    .await;
            }
            return Err(AgentError::TooManyPending {
                limit: config.max_pending,
            });
        }
        Ok(turn)
    }

    /// Stores a new agent under `wanted` or, if that is taken, the first free `wanted-N`; with
    /// a token, its use pays for it (Err: why the token did not, and nothing was stored).
    async fn store_named(
        &self,
        agent: &mut AgentRecord,
        wanted: &str,
        token: Option<&str>,
    ) -> Result<Result<(), String>, AgentError> {
        // Two agents never share a name: the later one gets the first free suffix.
        let mut n = 1;
        loop {
            if !self.store.agent_name_taken(&agent.name).await? {
                let stored = match token {
                    None => match self.store.insert_agent(agent).await {
                        Ok(()) => Ok(Ok(())),
                        Err(e) => Err(e.into()),
                    },
                    Some(token) => self
                        .take_token(token, TokenPays::NewAgent(agent))
                        .await
                        .map(|used| used.map(|_| ())),
                };
                match stored {
                    Ok(done) => return Ok(done),
                    Err(AgentError::Store(StoreError::Conflict(_))) if n < 1000 => {}
                    Err(e) => return Err(e),
                }
            }
            n += 1;
            agent.name = format!("{wanted}-{n}");
        }
    }

    /// Presents an enrollment token for what `pays` says: Ok(Consumed or NotNeeded) or why
    /// it was refused.
    async fn take_token(
        &self,
        token: &str,
        pays: TokenPays<'_>,
    ) -> Result<Result<TokenUse, String>, AgentError> {
        let outcome = self
            .store
            .use_token(&secret::hash_secret(token), now_ms(), pays)
            .await?;
        let why = match outcome {
            TokenUse::Consumed | TokenUse::NotNeeded => return Ok(Ok(outcome)),
            TokenUse::Expired => "the enrollment token has expired",
            TokenUse::UsedUp => "the enrollment token has no uses left",
            TokenUse::Revoked => "the enrollment token was revoked",
            TokenUse::Unknown => "the enrollment token is not known to this server",
        };
        Ok(Err(format!(
            "{why}; waiting for an administrator's approval"
        )))
    }

    async fn publish_approval(&self, agent: &AgentRecord) {
        self.events
            .publish(
                EventKind::AgentApproved,
                &Actor::EnrollmentToken,
                Some(agent),
                "approved by an enrollment token",
            )
            .await;
    }

    /// Finds one agent by id, exact name or DID, or a unique prefix of a name or DID (with or
    /// without `did:key:`). The store reads only the rows the reference names.
    pub async fn resolve(&self, reference: &str) -> Result<AgentRecord, AgentError> {
        let reference = reference.trim();
        if let Some(exact) = self.store.agent_by_exact(reference).await? {
            return Ok(exact);
        }
        if reference.is_empty() {
            return Err(AgentError::NotFound(String::new()));
        }
        match self.store.agents_by_prefix(reference).await? {
            PrefixMatch::One(one) => Ok(*one),
            PrefixMatch::None => Err(AgentError::NotFound(reference.to_owned())),
            PrefixMatch::Many(names) => Err(AgentError::Ambiguous {
                reference: reference.to_owned(),
                candidates: names.join(", "),
            }),
        }
    }

    pub async fn list(&self) -> Result<Vec<AgentRecord>, AgentError> {
        Ok(self.store.list_agents().await?)
    }

    /// The agents matching a search and filters, one page of them (see `fleet.rs`).
    pub async fn query(&self, query: &AgentQuery) -> Result<AgentPage, AgentError> {
        let filter = query.filter(|| self.links.online_ids());
        Ok(self.store.find_agents(&filter).await?)
    }

    /// The fleet's counts: by status and sessions from the store, by connection from the
    /// links.
    pub async fn counts(&self) -> Result<FleetCounts, AgentError> {
        let stored = self.store.agent_tally().await?;
        let (online, not_responding) = self.links.connection_counts();
        Ok(FleetCounts {
            stored,
            online,
            not_responding,
        })
    }

    /// An administrator's decision. The agent's link, if up, hears it at once; revocation
    /// also closes the link.
    pub async fn decide(
        &self,
        actor: &Actor,
        reference: &str,
        to: AgentStatus,
    ) -> Result<AgentRecord, AgentError> {
        let mut agent = self.resolve(reference).await?;
        if !agent.status.can_become(to) {
            return Err(AgentError::InvalidTransition {
                name: agent.name,
                from: agent.status,
                to,
            });
        }
        self.store
            .set_agent_status(&agent.id, to, actor.as_str(), now_ms())
            .await?;
        agent.status = to;
        let (kind, detail) = match to {
            AgentStatus::Approved => (EventKind::AgentApproved, "approved"),
            AgentStatus::Rejected => (EventKind::AgentRejected, "rejected"),
            AgentStatus::Revoked => (EventKind::AgentRevoked, "revoked; link closed"),
            AgentStatus::Pending => (EventKind::AgentEnrolled, "pending"),
        };
        self.tell_link(&agent);
        // Other nodes tell the link if they hold it, on this event (`decisions`).
        self.events.publish(kind, actor, Some(&agent), detail).await;
        Ok(agent)
    }

    /// Tells the agent's link on this node, if it holds one, the agent's status as `agent`
    /// records it; a revoked agent's link is closed after. True if this node holds the link.
    pub fn tell_link(&self, agent: &AgentRecord) -> bool {
        let message = ServerMessage::Status(self.status_update(agent, None));
        let command = if agent.status == AgentStatus::Revoked {
            LinkCommand::close(message)
        } else {
            LinkCommand::send(message)
        };
        self.links.command(&agent.id, command)
    }
}

/// A whole number of hours, minutes or seconds, as people write it (`10m`).
struct ShortDuration(std::time::Duration);

impl std::fmt::Display for ShortDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.as_secs();
        match secs {
            0 => write!(f, "{}ms", self.0.as_millis()),
            s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

/// Names are shown everywhere and typed in commands: keep them to a safe alphabet.
pub fn sanitize_name(wanted: &str) -> String {
    let name: String = wanted
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let name = name.trim_matches('-').to_owned();
    if name.is_empty() {
        "agent".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use postern_protocol::AgentFacts;

    use super::*;
    use crate::enrollment_limits::EnrollmentConfig;
    use crate::store::SqliteStore;

    /// What `resolve` did when it read every agent, kept as the definition of its answers.
    fn resolved_in_memory(all: &[AgentRecord], reference: &str) -> Result<String, String> {
        let reference = reference.trim();
        if let Some(exact) = all
            .iter()
            .find(|a| a.id.as_str() == reference || a.name == reference || a.did == reference)
        {
            return Ok(exact.name.clone());
        }
        let body = |did: &str| did.strip_prefix("did:key:").unwrap_or(did).to_owned();
        let matches: Vec<&AgentRecord> = all
            .iter()
            .filter(|a| {
                !reference.is_empty()
                    && (a.name.starts_with(reference)
                        || a.did.starts_with(reference)
                        || body(&a.did).starts_with(reference))
            })
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.name.clone()),
            [] => Err(AgentError::NotFound(reference.to_owned()).to_string()),
            many => Err(AgentError::Ambiguous {
                reference: reference.to_owned(),
                candidates: many
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
            .to_string()),
        }
    }

    #[tokio::test]
    async fn resolving_in_the_store_answers_as_reading_every_agent_did() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        // Names that prefix each other, an id that is another agent's name, DIDs sharing a
        // prefix past `did:key:`.
        let names = [
            "edge-1",
            "edge-10",
            "edge-11",
            "pi",
            "pi-kitchen",
            "web",
            "z6Mk",
        ];
        for (i, name) in names.iter().enumerate() {
            let agent = AgentRecord {
                id: if *name == "web" {
                    "pi-kitchen2".into()
                } else {
                    format!("id-{i}").into()
                },
                did: format!("did:key:z6Mk{}{i}", if i < 3 { "A" } else { "B" }),
                name: (*name).into(),
                ssh_public_key: format!("ssh-ed25519 {name}"),
                status: AgentStatus::Approved,
                facts: AgentFacts::default(),
                enrolled_at: 0,
                last_seen: None,
                remote_addr: None,
            };
            store.insert_agent(&agent).await.unwrap();
        }
        let all = store.list_agents().await.unwrap();
        let agents = Agents::new(
            store.clone(),
            Arc::new(EventBus::new(store).await.unwrap()),
            Arc::new(LinkRegistry::default()),
            String::new(),
            EnrollmentLimits::new(EnrollmentConfig {
                max_pending: 1,
                per_source: 1,
                window: std::time::Duration::from_secs(1),
            }),
        );
        let references = [
            "edge-1",
            "edge-10",
            "edge-",
            "edge-1 ",
            " pi",
            "pi-",
            "pi-k",
            "pi-kitchen2",
            "web",
            "id-0",
            "id-",
            "z6Mk",
            "z6MkA",
            "z6MkB3",
            "did:key:z6MkA1",
            "did:key:",
            "did:key:z6MkA",
            "did:",
            "d",
            "Edge-1",
            "edge_1",
            "edge%",
            "",
            "   ",
            "nothing",
            "ü",
        ];
        for reference in references {
            let got = agents
                .resolve(reference)
                .await
                .map(|a| a.name)
                .map_err(|e| e.to_string());
            assert_eq!(got, resolved_in_memory(&all, reference), "{reference:?}");
        }
    }

    #[test]
    fn names_are_made_safe() {
        assert_eq!(sanitize_name("pi-kitchen"), "pi-kitchen");
        assert_eq!(sanitize_name("my host;rm -rf"), "my-host-rm--rf");
        assert_eq!(sanitize_name(""), "agent");
        assert_eq!(sanitize_name("ääh"), "h");
        assert_eq!(sanitize_name(&"x".repeat(100)).len(), 64);
    }
}
