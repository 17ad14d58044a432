//! One agent's control conversation: hello, enrollment, then heartbeats and decisions,
//! until the link closes. This task owns the link; the rest of the server reaches it
//! through the `LinkRegistry`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_protocol::api::{EventKind, Liveness};
use postern_protocol::{
    AgentMessage, AgentStatus, CONTROL_SUBSYSTEM, ErrorCode, PROTOCOL_VERSION, ServerMessage,
    SessionId,
};
use russh::keys::PublicKey;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg, Disconnect};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tracing::Instrument;

use super::limits::ControlUp;
use super::link::{Link, backlog};
use super::sever::Cut;
use super::{Gateway, key_text};
use crate::agents::AgentError;
use crate::auth::secret;
use crate::cluster::LinkClaim;
use crate::links::{Gone, LinkCommand, NewLink, SessionUse};
use crate::sessions::LinkEnd;
use crate::store::{Actor, AgentRecord};

/// Commands queued for one link before senders are told it is backed up.
const COMMAND_QUEUE: usize = 32;
/// How long a refused peer has to take its last message and close before it is cut.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Heartbeat intervals an agent may state: a shorter one would only cost the server, a
/// longer one would hide a dead agent for hours.
const HEARTBEAT_RANGE: std::ops::RangeInclusive<u64> = 100..=3_600_000;

#[derive(Debug)]
enum End {
    /// The link closed or failed, or its peer was given up; nothing more to say.
    Closed,
    /// We close the connection, after telling the agent why.
    Refuse(ServerMessage),
}

/// What the agent said of itself in its hello.
struct Hello {
    heartbeat: Option<Duration>,
    session_use: SessionUse,
    /// It keeps shells across a lost link, and lists their sessions (`Kept`).
    keeps_shells: bool,
}

pub async fn run(
    gateway: Arc<Gateway>,
    channel: Channel<Msg>,
    key: String,
    peer: Option<SocketAddr>,
    handle: Handle,
    up: ControlUp,
    cut: Cut,
) {
    let span = tracing::info_span!("agent_link", peer = ?peer, agent = tracing::field::Empty);
    async {
        // Every step until enrollment shares the connection's handshake deadline.
        let deadline = up.deadline();
        let Some(mut link) = open(channel, peer, cut.clone(), deadline).await else {
            cut.cut();
            return;
        };
        // One turn of the node's enrollments (`enrolling.rs`), held until the link is up.
        let end = match gateway.enrolling.turn(deadline).await {
            None => End::Refuse(error(
                ErrorCode::Refused,
                "this server node is busy enrolling other agents; dial again later",
            )),
            // Boxed: the task of an idle link lives for days; only the state it idles in
            // should take memory, not the largest step it ever took (docs/PERFORMANCE.md).
            Some(turn) => match Box::pin(enroll(&gateway, &mut link, &key, peer, deadline)).await {
                Ok((agent, hello)) => {
                    let accepted_at = up.accepted_at();
                    up.done();
                    span.record("agent", agent.name.as_str());
                    serve(&gateway, &mut link, &agent, hello, accepted_at, turn).await
                }
                Err(end) => end,
            },
        };
        link.complaints.summarise();
        finish(&mut link, end, &handle).await;
    }
    .instrument(span.clone())
    .await;
}

/// Ends the connection: a refused peer is told why and given `CLOSE_GRACE` to go; then the
/// socket is cut, so nothing of it stays whatever the peer does.
async fn finish(link: &mut Link, end: End, handle: &Handle) {
    if let End::Refuse(message) = &end
        && link.queue(message).is_ok()
    {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            let _ = link.flush().await;
            let _ = handle
                .disconnect(
                    Disconnect::ByApplication,
                    "closed by server".into(),
                    "en".into(),
                )
                .await;
            // The peer closes once it has read the disconnect; the connection then ends
            // and the channel with it.
            while let Some(Ok(_)) = link.next().await {}
        })
        .await;
    }
    link.cut.cut();
}

/// What a link is told when a newer connection of its agent takes its place.
fn replaced() -> ServerMessage {
    error(
        ErrorCode::Refused,
        "replaced by a newer connection of this agent",
    )
}

fn error(code: ErrorCode, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error {
        code,
        message: message.into(),
    }
}

/// Waits for the agent to ask for the control subsystem (the handler answers the request).
async fn open(
    mut channel: Channel<Msg>,
    peer: Option<SocketAddr>,
    cut: Cut,
    deadline: Instant,
) -> Option<Link> {
    let wait = async {
        while let Some(msg) = channel.wait().await {
            if let ChannelMsg::RequestSubsystem { name, .. } = msg
                && name == CONTROL_SUBSYSTEM
            {
                return true;
            }
        }
        false
    };
    match tokio::time::timeout_at(deadline, wait).await {
        Ok(true) => Some(Link::new(channel.into_stream(), peer, cut)),
        _ => None,
    }
}

/// The next well-formed message; bad frames are answered and skipped.
async fn next_message(link: &mut Link) -> Option<AgentMessage> {
    loop {
        // The frame is taken apart before the answer is awaited, so that an idle link's
        // wait holds no decoded frame (this future is what every idle link waits in).
        let bad = match link.next().await? {
            Ok(Ok(message)) => return Some(message),
            Ok(Err(bad)) => bad,
            Err(e) if backlog(&e).is_some() => {
                tracing::warn!(error = %e, "dropping the agent link");
                return None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "control link read failed");
                return None;
            }
        };
        if link.complaints.allow() {
            tracing::warn!(error = %bad, "bad control frame from agent");
        }
        let code = match bad {
            postern_protocol::FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            postern_protocol::FrameError::Malformed(_) => ErrorCode::Malformed,
        };
        link.queue(&error(code, bad.to_string())).ok()?;
    }
}

async fn next_handshake_message(link: &mut Link, deadline: Instant) -> Result<AgentMessage, End> {
    match tokio::time::timeout_at(deadline, next_message(link)).await {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(End::Closed),
        Err(_) => Err(End::Refuse(error(
            ErrorCode::UnexpectedMessage,
            "enrollment took too long",
        ))),
    }
}

async fn enroll(
    gateway: &Gateway,
    link: &mut Link,
    key: &str,
    peer: Option<SocketAddr>,
    deadline: Instant,
) -> Result<(AgentRecord, Hello), End> {
    let hello = loop {
        match next_handshake_message(link, deadline).await? {
            AgentMessage::Hello {
                version,
                heartbeat_ms,
                reports_logins,
                keeps_shells,
                ..
            } if version == PROTOCOL_VERSION => {
                break Hello {
                    heartbeat: heartbeat_ms.map(|ms| {
                        Duration::from_millis(
                            ms.clamp(*HEARTBEAT_RANGE.start(), *HEARTBEAT_RANGE.end()),
                        )
                    }),
                    // An agent that reports logins is asked to (`wants_logins` below); an
                    // older one is judged by its open channels, as before.
                    session_use: if reports_logins {
                        SessionUse::Logins
                    } else {
                        SessionUse::Channels
                    },
                    keeps_shells,
                };
            }
            AgentMessage::Hello { version, .. } => {
                return Err(End::Refuse(error(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "this server speaks control protocol {PROTOCOL_VERSION}, not {version}"
                    ),
                )));
            }
            other => reply_unexpected(link, &other, "hello")?,
        }
    };
    let nonce = secret::new_secret("nonce");
    link.queue(&ServerMessage::Welcome {
        version: PROTOCOL_VERSION,
        nonce: nonce.clone(),
        wants_logins: hello.session_use == SessionUse::Logins,
        resumes_shells: hello.keeps_shells,
    })
    .map_err(|_| End::Closed)?;

    let enrollment = loop {
        match next_handshake_message(link, deadline).await? {
            AgentMessage::Enroll(enrollment) => break enrollment,
            other => reply_unexpected(link, &other, "enroll")?,
        }
    };
    if let Err(e) = enrollment.verify(&gateway.host_key_fingerprint, &nonce) {
        tracing::warn!(error = %e, "enrollment refused");
        return Err(End::Refuse(error(ErrorCode::BadSignature, e.to_string())));
    }
    let claimed = PublicKey::from_openssh(enrollment.ssh_public_key.trim())
        .map(|k| key_text(&k))
        .unwrap_or_default();
    let mut checked = enrollment.clone();
    checked.ssh_public_key = claimed;
    match gateway.agents.enroll(&checked, key, peer).await {
        Ok((agent, note)) => {
            let update = gateway.agents.status_update(&agent, note);
            link.queue(&ServerMessage::Status(update))
                .map_err(|_| End::Closed)?;
            tracing::info!(status = %agent.status, did = %agent.did, "agent enrolled");
            Ok((agent, hello))
        }
        Err(AgentError::Revoked) => Err(End::Refuse(error(
            ErrorCode::Refused,
            AgentError::Revoked.to_string(),
        ))),
        Err(AgentError::Refused(why)) => Err(End::Refuse(error(ErrorCode::Refused, why))),
        Err(e @ (AgentError::TooManyPending { .. } | AgentError::EnrollmentRate { .. })) => {
            Err(End::Refuse(error(ErrorCode::Refused, e.to_string())))
        }
        Err(e) => {
            tracing::error!(error = %e, "enrollment failed");
            Err(End::Refuse(error(
                ErrorCode::Internal,
                "the server could not record the enrollment",
            )))
        }
    }
}

/// The link is gone: remember when the agent was last heard from (with the end of its link
/// record, for the other nodes), say so, end its sessions (or detach those whose shells it
/// keeps).
async fn link_down(gateway: &Gateway, agent: &AgentRecord, gone: Gone, kept: &HashSet<SessionId>) {
    // A stale link ending while another node holds the agent's: it is not offline.
    let end = gateway.cluster.link_down(&agent.id, gone.last_seen).await;
    if end == LinkEnd::Offline {
        let detail = match gone.lost_after {
            Some(ms) => format!("link lost: no sign of life for {}s", ms / 1000),
            None => "link down".to_owned(),
        };
        gateway
            .events
            .publish(EventKind::AgentOffline, &Actor::System, Some(agent), detail)
            .await;
    }
    gateway.sessions.link_down(&agent.id, kept, end).await;
}

fn reply_unexpected(link: &mut Link, got: &AgentMessage, wanted: &str) -> Result<(), End> {
    if link.complaints.allow() {
        tracing::warn!(?got, "unexpected control message");
    }
    link.queue(&error(
        ErrorCode::UnexpectedMessage,
        format!("expected {wanted} first"),
    ))
    .map_err(|_| End::Closed)
}

/// The enrolled link: online until it closes, or its silence gets it cut. `accepted_at`
/// orders it against the agent's links on other nodes; `turn` (of the node's enrollments) is
/// given back once the link is up.
async fn serve(
    gateway: &Gateway,
    link: &mut Link,
    agent: &AgentRecord,
    hello: Hello,
    accepted_at: i64,
    turn: OwnedSemaphorePermit,
) -> End {
    let links = gateway.agents.links();
    let (commands, mut inbox) = mpsc::channel(COMMAND_QUEUE);
    let registered = links.register(
        &agent.id,
        NewLink {
            commands,
            heartbeat: hello.heartbeat,
            session_use: hello.session_use,
            cut: link.cut.clone(),
            connected_at: accepted_at,
        },
    );
    let Ok((id, previous)) = registered else {
        // The agent dialled this node again while this connection was still enrolling.
        return End::Refuse(replaced());
    };
    // A newer connection of the same agent wins; the old one is closed.
    if let Some(old) = &previous {
        let _ = old.try_send(LinkCommand::close(replaced()));
    }
    // The row first, then the event: a reader told "online" finds the link in the store.
    let claim = Box::pin(gateway.cluster.link_up(&agent.id, id.connected_at())).await;
    if claim == LinkClaim::Superseded {
        // The agent gave up on this link while its row waited for the database, and is
        // linked to another node since: this link is stale.
        tracing::info!("a newer link of this agent on another node holds it; closing this one");
        links.unregister(&agent.id, id);
        return End::Refuse(replaced());
    }
    if previous.is_none() {
        let online = gateway.events.publish(
            EventKind::AgentOnline,
            &Actor::System,
            Some(agent),
            "link up",
        );
        Box::pin(online).await;
    }
    let mut status = agent.status;
    if status == AgentStatus::Approved {
        Box::pin(gateway.sessions.link_up(&agent.id)).await;
        if !hello.keeps_shells {
            // It keeps none: sessions detached while it was away have lost their shells.
            Box::pin(gateway.sessions.kept(&agent.id, Vec::new())).await;
        }
    }
    drop(turn);
    // The sessions whose shells the agent keeps, as it last said; None until it first did.
    let mut kept: Option<HashSet<SessionId>> = None;

    let cut = link.cut.clone();
    let end = loop {
        let backed_up = link.backed_up();
        tokio::select! {
            message = next_message(link) => {
                let Some(message) = message else { break End::Closed };
                // Any message is a sign of life; one after silence is a recovery.
                if links.touch(&agent.id) {
                    tracing::info!("agent responding again");
                    if Box::pin(gateway.cluster.link_liveness(&agent.id, Liveness::Online)).await {
                        let online = gateway.events.publish(
                            EventKind::AgentOnline, &Actor::System, Some(agent), "responding again",
                        );
                        Box::pin(online).await;
                    }
                }
                match message {
                    AgentMessage::Heartbeat { facts } => {
                        if let Some(facts) = facts
                            && let Err(e) = Box::pin(gateway.store.update_agent_facts(&agent.id, &facts.sanitized())).await
                        {
                            tracing::error!(error = %e, "could not store agent facts");
                        }
                    }
                    AgentMessage::Error { code, message } => {
                        if link.complaints.allow() {
                            tracing::warn!(?code, %message, "agent reported an error");
                        }
                    }
                    AgentMessage::Session { session, reply } if status == AgentStatus::Approved => {
                        Box::pin(gateway.sessions.agent_reply(&agent.id, &session, reply.sanitized())).await;
                    }
                    AgentMessage::Kept { sessions } if status == AgentStatus::Approved && hello.keeps_shells => {
                        // Recorded first, for a survivor should this node be lost meanwhile.
                        Box::pin(gateway.sessions.shells_kept(&agent.id, &sessions)).await;
                        let now: HashSet<SessionId> = sessions.iter().cloned().collect();
                        // The first list (right after enrolling) decides what resumes.
                        if kept.replace(now).is_none() {
                            Box::pin(gateway.sessions.kept(&agent.id, sessions)).await;
                        }
                    }
                    AgentMessage::GraceExpired { session } if status == AgentStatus::Approved => {
                        Box::pin(gateway.sessions.grace_expired(&agent.id, &session)).await;
                    }
                    AgentMessage::Logins { session, count } if status == AgentStatus::Approved => {
                        if !gateway.sessions.logins(&agent.id, &session, count) && link.complaints.allow() {
                            tracing::warn!(%session, "an agent reported logins of another agent's session");
                        }
                    }
                    other => {
                        let reply = if status == AgentStatus::Approved {
                            error(ErrorCode::UnexpectedMessage, "already enrolled")
                        } else {
                            error(ErrorCode::NotApproved, format!("this agent is {status}; it may only wait"))
                        };
                        if link.complaints.allow() {
                            tracing::warn!(?other, "unexpected control message");
                        }
                        if link.queue(&reply).is_err() {
                            break End::Closed;
                        }
                    }
                }
            },
            // Commands wait in their queue while the agent does not read.
            command = inbox.recv(), if !backed_up => match command {
                Some(LinkCommand::Send(message)) => {
                    if let ServerMessage::Status(update) = &*message {
                        status = update.status;
                    }
                    if link.queue(&message).is_err() {
                        break End::Closed;
                    }
                }
                Some(LinkCommand::Close(message)) => break End::Refuse(*message),
                None => break End::Closed,
            },
            // The liveness sweep cut this silent link (see `liveness`).
            () = cut.done() => break End::Closed,
        }
    };

    if let Some(gone) = links.unregister(&agent.id, id) {
        Box::pin(link_down(gateway, agent, gone, &kept.unwrap_or_default())).await;
    }
    end
}
