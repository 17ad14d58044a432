//! The agent's one link to the server: dial out over SSH, open the control subsystem, enroll,
//! then heartbeat and obey until the link drops — and dial again, with backoff, forever.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use postern_protocol::control::StatusUpdate;
use postern_protocol::enrollment::Enrollment;
use postern_protocol::{
    AgentMessage, AgentStatus, CONTROL_SUBSYSTEM, ControlCodec, ErrorCode, PROTOCOL_VERSION,
    ServerMessage,
};
use russh::client::{self, Msg};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelStream, Disconnect};
use tokio::sync::watch;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::facts;
use crate::{AgentError, AgentOptions, Context, LinkState};

/// A link that stayed up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

type Link = Framed<ChannelStream<Msg>, ControlCodec<ServerMessage, AgentMessage>>;

enum LinkEnd {
    Shutdown,
    Lost(String),
    Revoked,
}

/// Dials, serves and redials until shut down or revoked.
pub async fn supervise(
    ctx: Arc<Context>,
    state: watch::Sender<LinkState>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let opts = &ctx.options;
    let mut backoff = Backoff::new(opts.reconnect_min, opts.reconnect_max);
    loop {
        let started = Instant::now();
        let end = run_link(&ctx, &state, &shutdown).await;
        state.send_modify(|s| s.connected = false);
        let delay = match end {
            LinkEnd::Shutdown => return Ok(()),
            LinkEnd::Revoked => return Err(AgentError::Revoked),
            LinkEnd::Lost(why) => {
                if started.elapsed() >= STABLE_AFTER {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(reason = %why, retry_in = ?delay, "link to server lost");
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

struct LinkHandler {
    pinned: Option<PublicKey>,
    seen: Arc<Mutex<Option<PublicKey>>>,
}

impl client::Handler for LinkHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            return Ok(false);
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(key.clone());
        }
        Ok(match &self.pinned {
            Some(pinned) => pinned.key_data() == key.key_data(),
            None => true,
        })
    }
}

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

async fn run_link(
    ctx: &Context,
    state: &watch::Sender<LinkState>,
    shutdown: &CancellationToken,
) -> LinkEnd {
    let opts: &AgentOptions = &ctx.options;
    let pinned = match ctx.state.pinned_server_key() {
        Ok(p) => p,
        Err(e) => return LinkEnd::Lost(e.to_string()),
    };
    let seen = Arc::new(Mutex::new(None));
    let handler = LinkHandler {
        pinned: pinned.clone(),
        seen: seen.clone(),
    };
    let config = client::Config {
        keepalive_interval: Some(opts.keepalive),
        keepalive_max: 3,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    };
    let connecting = client::connect(Arc::new(config), opts.server.as_str(), handler);
    let mut session = tokio::select! {
        r = tokio::time::timeout(CONNECT_TIMEOUT, connecting) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let offered = seen.lock().ok().and_then(|s| s.clone());
                if let (Some(p), Some(o)) = (&pinned, &offered)
                    && p.key_data() != o.key_data()
                {
                    return LinkEnd::Lost(format!(
                        "the server's host key changed (pinned {}, offered {}); refusing to connect",
                        fingerprint(p),
                        fingerprint(o)
                    ));
                }
                return LinkEnd::Lost(format!("cannot connect to {}: {e}", opts.server));
            }
            Err(_) => return LinkEnd::Lost(format!("connecting to {} timed out", opts.server)),
        },
        _ = shutdown.cancelled() => return LinkEnd::Shutdown,
    };
    let Some(server_key) = seen.lock().ok().and_then(|s| s.clone()) else {
        return LinkEnd::Lost("the server presented no host key".into());
    };

    let key = PrivateKeyWithHashAlg::new(Arc::new(ctx.identity.ssh_key.clone()), None);
    match session.authenticate_publickey("postern-agent", key).await {
        Ok(r) if r.success() => {}
        Ok(_) => {
            return LinkEnd::Lost("the server refused this agent's key (was it revoked?)".into());
        }
        Err(e) => return LinkEnd::Lost(format!("authentication failed: {e}")),
    }
    if pinned.is_none() {
        if let Err(e) = ctx.state.pin_server_key(&server_key) {
            return LinkEnd::Lost(e.to_string());
        }
        tracing::info!(fingerprint = %fingerprint(&server_key), "pinned the server's host key");
    }

    let mut link = match open_control(&session).await {
        Ok(link) => link,
        Err(e) => return LinkEnd::Lost(e),
    };
    let end = converse(ctx, &mut link, &fingerprint(&server_key), state, shutdown).await;
    let _ = session
        .disconnect(Disconnect::ByApplication, "agent closing link", "en")
        .await;
    end
}

async fn open_control(session: &client::Handle<LinkHandler>) -> Result<Link, String> {
    let mut channel = session
        .channel_open_session()
        .await
        .map_err(|e| format!("cannot open the control channel: {e}"))?;
    channel
        .request_subsystem(true, CONTROL_SUBSYSTEM)
        .await
        .map_err(|e| format!("cannot request the control subsystem: {e}"))?;
    loop {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, channel.wait()).await {
            Ok(Some(ChannelMsg::Success)) => break,
            Ok(Some(ChannelMsg::Failure)) => {
                return Err("the server refused the control subsystem".into());
            }
            Ok(Some(_)) => continue,
            Ok(None) => return Err("the control channel closed".into()),
            Err(_) => return Err("the server did not answer the subsystem request".into()),
        }
    }
    Ok(Framed::new(channel.into_stream(), ControlCodec::new()))
}

async fn receive(link: &mut Link) -> Result<ServerMessage, String> {
    loop {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, link.next()).await {
            Err(_) => return Err("the server did not answer in time".into()),
            Ok(None) => return Err("the server closed the control channel".into()),
            Ok(Some(Err(e))) => return Err(format!("control channel failed: {e}")),
            Ok(Some(Ok(Err(bad)))) => {
                tracing::warn!(error = %bad, "bad control frame from server");
                send(link, &bad_frame_reply(&bad)).await?;
            }
            Ok(Some(Ok(Ok(ServerMessage::Error { code, message })))) => {
                return Err(format!("server error ({code:?}): {message}"));
            }
            Ok(Some(Ok(Ok(message)))) => return Ok(message),
        }
    }
}

fn bad_frame_reply(bad: &postern_protocol::FrameError) -> AgentMessage {
    let code = match bad {
        postern_protocol::FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        postern_protocol::FrameError::Malformed(_) => ErrorCode::Malformed,
    };
    AgentMessage::Error {
        code,
        message: bad.to_string(),
    }
}

async fn send(link: &mut Link, message: &AgentMessage) -> Result<(), String> {
    link.send(message)
        .await
        .map_err(|e| format!("control channel failed: {e}"))
}

async fn converse(
    ctx: &Context,
    link: &mut Link,
    server_fingerprint: &str,
    state: &watch::Sender<LinkState>,
    shutdown: &CancellationToken,
) -> LinkEnd {
    match handshake(ctx, link, server_fingerprint, state).await {
        Ok(false) => {}
        Ok(true) => return LinkEnd::Revoked,
        Err(e) => return LinkEnd::Lost(e),
    }
    let mut heartbeat = tokio::time::interval(ctx.options.sync_rate);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    let mut last_facts = facts::gather();
    loop {
        tokio::select! {
            frame = link.next() => match frame {
                None => return LinkEnd::Lost("the server closed the link".into()),
                Some(Err(e)) => return LinkEnd::Lost(format!("control channel failed: {e}")),
                Some(Ok(Err(bad))) => {
                    tracing::warn!(error = %bad, "bad control frame from server");
                    if let Err(e) = send(link, &bad_frame_reply(&bad)).await {
                        return LinkEnd::Lost(e);
                    }
                }
                Some(Ok(Ok(ServerMessage::Status(update)))) => {
                    if apply_status(ctx, state, update) {
                        return LinkEnd::Revoked;
                    }
                }
                Some(Ok(Ok(ServerMessage::Error { code, message }))) => {
                    tracing::warn!(?code, %message, "server reported an error");
                }
                Some(Ok(Ok(other))) => {
                    tracing::warn!(?other, "unexpected control message from server");
                    let reply = AgentMessage::Error {
                        code: ErrorCode::UnexpectedMessage,
                        message: "unexpected message".into(),
                    };
                    if let Err(e) = send(link, &reply).await {
                        return LinkEnd::Lost(e);
                    }
                }
            },
            _ = heartbeat.tick() => {
                let now = facts::gather();
                let changed = (now != last_facts).then(|| now.clone());
                last_facts = now;
                if let Err(e) = send(link, &AgentMessage::Heartbeat { facts: changed }).await {
                    return LinkEnd::Lost(e);
                }
            }
            _ = shutdown.cancelled() => return LinkEnd::Shutdown,
        }
    }
}

/// Hello → Welcome → Enroll → Status. Returns whether the agent turned out to be revoked.
async fn handshake(
    ctx: &Context,
    link: &mut Link,
    server_fingerprint: &str,
    state: &watch::Sender<LinkState>,
) -> Result<bool, String> {
    send(
        link,
        &AgentMessage::Hello {
            version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        },
    )
    .await?;
    let nonce = match receive(link).await? {
        ServerMessage::Welcome { nonce, .. } => nonce,
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
        facts::gather(),
        ctx.options.token.clone(),
        server_fingerprint,
        &nonce,
    );
    send(link, &AgentMessage::Enroll(enrollment)).await?;
    let update = match receive(link).await? {
        ServerMessage::Status(update) => update,
        other => return Err(format!("expected status, got {other:?}")),
    };
    state.send_modify(|s| s.connected = true);
    Ok(apply_status(ctx, state, update))
}

/// Records and reports the server's word. Returns true when the agent is revoked.
fn apply_status(ctx: &Context, state: &watch::Sender<LinkState>, update: StatusUpdate) -> bool {
    if let Err(e) = ctx.state.save_status(&update) {
        tracing::error!(error = %e, "could not save the agent's status");
    }
    let did = ctx.identity.did.as_str();
    let note = update.message.as_deref().unwrap_or("");
    match update.status {
        AgentStatus::Pending => {
            tracing::info!(did, name = %update.name, "{}", join("waiting for approval", note))
        }
        AgentStatus::Approved => tracing::info!(did, name = %update.name, "approved; link up"),
        AgentStatus::Rejected => tracing::warn!(
            did, name = %update.name,
            "rejected by an administrator; waiting in case the decision changes"
        ),
        AgentStatus::Revoked => tracing::error!(did, name = %update.name, "this agent was revoked"),
    }
    let revoked = update.status == AgentStatus::Revoked;
    state.send_modify(|s| {
        s.status = Some(update.status);
        s.name = Some(update.name.clone());
        s.message = update.message.clone();
    });
    revoked
}

fn join(a: &str, b: &str) -> String {
    if b.is_empty() {
        a.to_owned()
    } else {
        format!("{a} ({b})")
    }
}
