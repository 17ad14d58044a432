//! The link's handshake: Hello → Welcome → Enroll → Status (→ Kept), proving this agent's
//! identity for this server, this link and this moment.

use postern_protocol::enrollment::Enrollment;
use postern_protocol::{AgentMessage, PROTOCOL_VERSION, ServerMessage, SessionId};

use super::control::{Link, receive, send};
use super::conversation::LinkContext;
use super::status::apply_status;

pub(super) enum Handshook {
    Revoked,
    /// With the kept shells' sessions the server was told of, if it wants them.
    Enrolled {
        told: Option<Vec<SessionId>>,
    },
}

/// Hello → Welcome → Enroll → Status (→ Kept).
pub(super) async fn handshake(
    lc: &LinkContext<'_>,
    link: &mut Link,
    server_fingerprint: &str,
) -> Result<Handshook, String> {
    let ctx = lc.ctx;
    send(
        link,
        &AgentMessage::Hello {
            version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            // The server counts missed heartbeats against this.
            heartbeat_ms: Some(
                u64::try_from(ctx.options.sync_rate.as_millis()).unwrap_or(u64::MAX),
            ),
            // Only logged-in connections should keep a session from going idle.
            reports_logins: true,
            keeps_shells: ctx.shells.enabled() && ctx.options.local_ssh.is_none(),
        },
    )
    .await?;
    let (nonce, resumes) = match receive(link).await? {
        ServerMessage::Welcome {
            nonce,
            wants_logins,
            resumes_shells,
            ..
        } => {
            lc.forwarding.report_logins(wants_logins);
            (nonce, resumes_shells)
        }
        other => return Err(format!("expected welcome, got {other:?}")),
    };
    let ssh_public_key = ctx
        .identity
        .ssh_key
        .public_key()
        .to_openssh()
        .map_err(|e| e.to_string())?;
    let enrollment = Enrollment::sign(
        &ctx.identity.signing_key,
        ssh_public_key,
        ctx.options.name.clone(),
        ctx.facts(),
        ctx.options.token.as_ref().map(|t| t.secret().to_owned()),
        server_fingerprint,
        &nonce,
    );
    send(link, &AgentMessage::Enroll(enrollment)).await?;
    let update = match receive(link).await? {
        ServerMessage::Status(update) => update,
        other => return Err(format!("expected status, got {other:?}")),
    };
    lc.state.send_modify(|s| {
        s.connected = true;
        s.link_error = None;
    });
    if apply_status(lc, update) {
        return Ok(Handshook::Revoked);
    }
    let mut told = None;
    if resumes && ctx.shells.enabled() {
        // The first list decides what is resumed; later ones only keep the server informed.
        // First what expired while the link was down, so that those sessions end with that
        // reason, not as shells lost.
        for session in ctx.shells.take_expired() {
            send(link, &AgentMessage::GraceExpired { session }).await?;
        }
        let sessions = ctx.shells.sessions();
        send(
            link,
            &AgentMessage::Kept {
                sessions: sessions.clone(),
            },
        )
        .await?;
        told = Some(sessions);
    }
    Ok(Handshook::Enrolled { told })
}
