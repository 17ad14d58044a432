//! Issuing user certificates for sessions: the rules (own open session, approved agent, a
//! login the agent allows), the signature (`ca`), and the audit event — one place for the
//! API's certificate endpoint and the server's own web-terminal client.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use postern_protocol::AgentStatus;
use postern_protocol::api::EventKind;
use russh::keys::{Certificate, HashAlg, PublicKey};

use crate::ca::{CaError, CertificateFor, UserCa};
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::store::{Actor, AgentRecord, SessionRecord, Store, StoreError, UserRecord};

#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    /// Not the caller's session: reported as absent, so that others' sessions do not leak.
    #[error("no session {0}")]
    NotYours(String),
    #[error("session {id} is {state}; certificates are for open sessions")]
    Closed { id: String, state: String },
    #[error("the session's agent is not approved")]
    AgentNotApproved,
    #[error("agent {agent} allows the logins {allowed}; not {login}")]
    LoginNotAllowed {
        agent: String,
        allowed: String,
        login: String,
    },
    #[error("the agent reported no login; name one")]
    NoLogin,
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A signed certificate and what it was signed for.
pub struct Issued {
    pub certificate: Certificate,
    pub login: String,
    pub agent: AgentRecord,
}

pub struct Certificates {
    store: Arc<dyn Store>,
    events: Arc<EventBus>,
    ca: UserCa,
    metrics: Metrics,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Certificates {
    pub fn new(store: Arc<dyn Store>, events: Arc<EventBus>, ca: UserCa, metrics: Metrics) -> Self {
        Self {
            store,
            events,
            ca,
            metrics,
        }
    }

    /// Certifies `subject` for `user` on `session`'s agent, as `login` or the agent's default.
    pub async fn issue(
        &self,
        user: &UserRecord,
        session: &SessionRecord,
        subject: &PublicKey,
        login: Option<String>,
    ) -> Result<Issued, CertifyError> {
        // Certificates are for one's own sessions only, whatever the role.
        if session.user_id != user.id {
            return Err(CertifyError::NotYours(session.id.to_string()));
        }
        if !session.state.is_open() {
            return Err(CertifyError::Closed {
                id: session.id.to_string(),
                state: session.state.to_string(),
            });
        }
        let agent = self
            .store
            .agent_by_id(&session.agent_id)
            .await?
            .filter(|a| a.status == AgentStatus::Approved)
            .ok_or(CertifyError::AgentNotApproved)?;
        let logins = &agent.facts.logins;
        let login = match login.filter(|l| !l.is_empty()) {
            Some(login) if !logins.is_empty() && !logins.contains(&login) => {
                return Err(CertifyError::LoginNotAllowed {
                    agent: agent.name.clone(),
                    allowed: logins.join(", "),
                    login,
                });
            }
            Some(login) => login,
            None => logins.first().cloned().ok_or(CertifyError::NoLogin)?,
        };
        // Only a POSIX user name becomes a principal, whatever the agent reported.
        if !postern_protocol::text::is_login_name(&login) {
            return Err(CertifyError::LoginNotAllowed {
                agent: agent.name.clone(),
                allowed: logins.join(", "),
                login: postern_protocol::text::clean_line(&login, 64),
            });
        }
        let certificate = self.ca.sign(
            CertificateFor {
                subject,
                login: &login,
                agent_did: &agent.did,
                session: &session.id,
                key_id: format!("{} session {}", user.name, session.id),
            },
            now_secs(),
        )?;
        self.metrics.certificate_issued();
        let detail = format!(
            "certificate for login {login}, session {}, key {}, valid until {}",
            session.id,
            subject.fingerprint(HashAlg::Sha256),
            certificate.valid_before()
        );
        self.events
            .publish(
                EventKind::CertificateIssued,
                &Actor::user(user),
                Some(&agent),
                detail,
            )
            .await;
        Ok(Issued {
            certificate,
            login,
            agent,
        })
    }
}
