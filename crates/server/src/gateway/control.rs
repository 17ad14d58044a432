//! One agent's control conversation: hello, enrollment, then heartbeats and decisions,
//! until the link closes. This task owns the link; the rest of the server reaches it
//! through the `LinkRegistry`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use postern_protocol::api::EventKind;
use postern_protocol::{
    AgentMessage, AgentStatus, CONTROL_SUBSYSTEM, ControlCodec, ErrorCode, PROTOCOL_VERSION,
    ServerMessage,
};
use russh::keys::PublicKey;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg, ChannelStream, Disconnect};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::codec::{Encoder, FramedRead};
use tracing::Instrument;

use super::{Gateway, key_text};
use crate::agents::AgentError;
use crate::auth::secret;
use crate::clock::now_ms;
use crate::links::LinkCommand;
use crate::store::AgentRecord;

/// Time an agent has for each step before enrollment completes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Commands queued for one link before senders are told it is backed up.
const COMMAND_QUEUE: usize = 32;

/// One agent's control channel. Control messages are small and rare, so the read buffer
/// starts small and grows only to the largest frame seen, and each message is written whole
/// (`Framed` would hold 8 KiB each way on every idle link — a third of its memory).
struct Link {
    frames: FramedRead<ChannelStream<Msg>, ControlCodec<AgentMessage, ServerMessage>>,
}

impl Link {
    fn new(stream: ChannelStream<Msg>) -> Self {
        Self {
            frames: FramedRead::with_capacity(stream, ControlCodec::new(), 256),
        }
    }

    async fn next(&mut self) -> Option<std::io::Result<postern_protocol::Frame<AgentMessage>>> {
        self.frames.next().await
    }

    async fn send(&mut self, message: &ServerMessage) -> std::io::Result<()> {
        let mut frame = BytesMut::new();
        self.frames.decoder_mut().encode(message, &mut frame)?;
        let stream = self.frames.get_mut();
        stream.write_all(&frame).await?;
        stream.flush().await
    }
}

#[derive(Debug)]
enum End {
    /// The link closed or failed; nothing more to say.
    Closed,
    /// We close the connection, after telling the agent why.
    Refuse(ServerMessage),
}

pub async fn run(
    gateway: Arc<Gateway>,
    channel: Channel<Msg>,
    key: String,
    peer: Option<SocketAddr>,
    handle: Handle,
) {
    let span = tracing::info_span!("agent_link", peer = ?peer, agent = tracing::field::Empty);
    let outcome = async {
        let Some(mut link) = open(channel).await else {
            return End::Closed;
        };
        // Boxed: the task of an idle link lives for days; only the state it idles in should
        // take memory, not the largest step it ever took (see docs/PERFORMANCE.md).
        let agent = match Box::pin(enroll(&gateway, &mut link, &key, peer)).await {
            Ok(agent) => agent,
            Err(end) => return finish(&mut link, end).await,
        };
        span.record("agent", agent.name.as_str());
        let end = serve(&gateway, &mut link, &agent).await;
        finish(&mut link, end).await
    }
    .instrument(span.clone())
    .await;
    if let End::Refuse(_) = outcome {
        let _ = handle
            .disconnect(
                Disconnect::ByApplication,
                "closed by server".into(),
                "en".into(),
            )
            .await;
    }
}

async fn finish(link: &mut Link, end: End) -> End {
    if let End::Refuse(message) = &end {
        let _ = link.send(message).await;
    }
    end
}

fn error(code: ErrorCode, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error {
        code,
        message: message.into(),
    }
}

/// Waits for the agent to ask for the control subsystem (the handler answers the request).
async fn open(mut channel: Channel<Msg>) -> Option<Link> {
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
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, wait).await {
        Ok(true) => Some(Link::new(channel.into_stream())),
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
            Err(e) => {
                tracing::debug!(error = %e, "control link read failed");
                return None;
            }
        };
        tracing::warn!(error = %bad, "bad control frame from agent");
        let code = match bad {
            postern_protocol::FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            postern_protocol::FrameError::Malformed(_) => ErrorCode::Malformed,
        };
        link.send(&error(code, bad.to_string())).await.ok()?;
    }
}

async fn next_handshake_message(link: &mut Link) -> Result<AgentMessage, End> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, next_message(link)).await {
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
) -> Result<AgentRecord, End> {
    loop {
        match next_handshake_message(link).await? {
            AgentMessage::Hello { version, .. } if version == PROTOCOL_VERSION => break,
            AgentMessage::Hello { version, .. } => {
                return Err(End::Refuse(error(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "this server speaks control protocol {PROTOCOL_VERSION}, not {version}"
                    ),
                )));
            }
            other => reply_unexpected(link, &other, "hello").await?,
        }
    }
    let nonce = secret::new_secret("nonce");
    link.send(&ServerMessage::Welcome {
        version: PROTOCOL_VERSION,
        nonce: nonce.clone(),
    })
    .await
    .map_err(|_| End::Closed)?;

    let enrollment = loop {
        match next_handshake_message(link).await? {
            AgentMessage::Enroll(enrollment) => break enrollment,
            other => reply_unexpected(link, &other, "enroll").await?,
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
            link.send(&ServerMessage::Status(update))
                .await
                .map_err(|_| End::Closed)?;
            tracing::info!(status = %agent.status, did = %agent.did, "agent enrolled");
            Ok(agent)
        }
        Err(AgentError::Revoked) => Err(End::Refuse(error(
            ErrorCode::Refused,
            AgentError::Revoked.to_string(),
        ))),
        Err(AgentError::Refused(why)) => Err(End::Refuse(error(ErrorCode::Refused, why))),
        Err(e) => {
            tracing::error!(error = %e, "enrollment failed");
            Err(End::Refuse(error(
                ErrorCode::Internal,
                "the server could not record the enrollment",
            )))
        }
    }
}

/// The link is gone: remember when the agent was last heard from, say so, end its sessions.
async fn link_down(gateway: &Gateway, agent: &AgentRecord, last_seen: i64) {
    if let Err(e) = gateway
        .store
        .update_agent_seen(&agent.id, last_seen, None)
        .await
    {
        tracing::error!(error = %e, "could not store last_seen");
    }
    gateway
        .events
        .publish(EventKind::AgentOffline, "system", Some(agent), "link down")
        .await;
    gateway.sessions.link_down(&agent.id).await;
}

async fn reply_unexpected(link: &mut Link, got: &AgentMessage, wanted: &str) -> Result<(), End> {
    tracing::warn!(?got, "unexpected control message");
    link.send(&error(
        ErrorCode::UnexpectedMessage,
        format!("expected {wanted} first"),
    ))
    .await
    .map_err(|_| End::Closed)
}

/// The enrolled link: online until it closes.
async fn serve(gateway: &Gateway, link: &mut Link, agent: &AgentRecord) -> End {
    let links = gateway.agents.links();
    let (commands, mut inbox) = mpsc::channel(COMMAND_QUEUE);
    let (id, previous) = links.register(&agent.id, commands);
    match previous {
        // A newer connection of the same agent wins; the old one is closed.
        Some(old) => {
            let _ = old.try_send(LinkCommand::close(error(
                ErrorCode::Refused,
                "replaced by a newer connection of this agent",
            )));
        }
        None => {
            let online =
                gateway
                    .events
                    .publish(EventKind::AgentOnline, "system", Some(agent), "link up");
            Box::pin(online).await
        }
    }
    let mut status = agent.status;
    if status == AgentStatus::Approved {
        Box::pin(gateway.sessions.link_up(&agent.id)).await;
    }

    let end = loop {
        tokio::select! {
            message = next_message(link) => match message {
                None => break End::Closed,
                Some(AgentMessage::Heartbeat { facts }) => {
                    links.touch(&agent.id);
                    if let Some(facts) = facts
                        && let Err(e) = Box::pin(gateway.store.update_agent_facts(&agent.id, &facts.sanitized())).await
                    {
                        tracing::error!(error = %e, "could not store agent facts");
                    }
                }
                Some(AgentMessage::Error { code, message }) => {
                    tracing::warn!(?code, %message, "agent reported an error");
                }
                Some(AgentMessage::Session { session, reply }) if status == AgentStatus::Approved => {
                    Box::pin(gateway.sessions.agent_reply(&agent.id, &session, reply.sanitized())).await;
                }
                Some(other) => {
                    let reply = if status == AgentStatus::Approved {
                        error(ErrorCode::UnexpectedMessage, "already enrolled")
                    } else {
                        error(ErrorCode::NotApproved, format!("this agent is {status}; it may only wait"))
                    };
                    tracing::warn!(?other, "unexpected control message");
                    if link.send(&reply).await.is_err() {
                        break End::Closed;
                    }
                }
            },
            command = inbox.recv() => match command {
                Some(LinkCommand::Send(message)) => {
                    if let ServerMessage::Status(update) = &*message {
                        status = update.status;
                    }
                    if link.send(&message).await.is_err() {
                        break End::Closed;
                    }
                }
                Some(LinkCommand::Close(message)) => break End::Refuse(*message),
                None => break End::Closed,
            },
        }
    };

    let last_seen = links.last_seen(&agent.id).unwrap_or_else(now_ms);
    if links.unregister(&agent.id, id) {
        Box::pin(link_down(gateway, agent, last_seen)).await;
    }
    end
}
