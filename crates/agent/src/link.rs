//! The agent's one link to the server: dial out over SSH, open the control subsystem, enroll,
//! then heartbeat and obey until the link drops — and dial again, with backoff, forever.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use postern_protocol::control::{SessionReply, StatusUpdate};
use postern_protocol::enrollment::Enrollment;
use postern_protocol::{
    AgentMessage, AgentStatus, CONTROL_SUBSYSTEM, ControlCodec, ErrorCode, PROTOCOL_VERSION,
    ServerMessage, SessionId,
};
use russh::client::{self, Msg};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelStream, Disconnect};
use tokio::sync::watch;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::forwarding::{self, Forwarding};
use crate::link_end::{self, Timings};
use crate::trust::{TrustedServer, fingerprint};
use crate::{AgentError, AgentOptions, Context, LinkState};

/// A link that stayed up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

type Link = Framed<ChannelStream<Msg>, ControlCodec<ServerMessage, AgentMessage>>;

enum LinkEnd {
    Shutdown,
    Lost(String),
    /// The control channel closed or failed: `link_end` finds out why.
    Dropped(String),
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
            LinkEnd::Lost(why) | LinkEnd::Dropped(why) => {
                if started.elapsed() >= STABLE_AFTER {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(reason = %why, retry_in = ?delay, "link to server lost");
                state.send_modify(|s| s.link_error = Some(why));
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
    trusted: TrustedServer,
    seen: Arc<Mutex<Option<PublicKey>>>,
    forwarding: Arc<Forwarding>,
    /// russh drops the handler when the connection's task ends: that marks the end.
    end: link_end::EndGuard,
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
        Ok(self.trusted.accepts(key))
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<Msg>,
        connected_address: &str,
        _connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        match self.forwarding.route(connected_address) {
            Some((target, session, stop)) => {
                reply.accept().await;
                let forwarding = self.forwarding.clone();
                tokio::spawn(forwarding::serve_channel(
                    channel, target, session, stop, forwarding,
                ));
            }
            None => {
                tracing::warn!(
                    address = connected_address,
                    "refused a channel for no accepted session"
                );
                reply
                    .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
            }
        }
        Ok(())
    }

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        self.end.disconnected(reason)
    }
}

/// How long sent data may go unacknowledged before the kernel gives the connection up:
/// with a heartbeat every sync interval, a dead network or server host is found this soon
/// at no cost (SSH keepalives, which cost both sides CPU, are for a server that is up but
/// hung, and can be rare).
const UNACKED_TIMEOUT: Duration = Duration::from_secs(45);
/// Keepalives the server may leave unanswered before the link is dropped.
const KEEPALIVE_MAX: usize = 3;

/// Connects to one of the server nodes (see `servers.rs`), set up for the link.
async fn dial(servers: &[String]) -> std::io::Result<tokio::net::TcpStream> {
    let (tcp, reached) = crate::servers::connect(servers, crate::servers::PER_ADDRESS)
        .await
        .map_err(std::io::Error::other)?;
    tracing::debug!(server = %reached, "connected");
    tcp.set_nodelay(true)?;
    let millis = u32::try_from(UNACKED_TIMEOUT.as_millis()).unwrap_or(u32::MAX);
    nix::sys::socket::setsockopt(&tcp, nix::sys::socket::sockopt::TcpUserTimeout, &millis)
        .map_err(std::io::Error::from)?;
    Ok(tcp)
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
    let trusted = match (
        &pinned,
        opts.token.as_ref().and_then(|t| t.server_fingerprint()),
    ) {
        (Some(key), _) => TrustedServer::Pinned(key.clone()),
        (None, Some(expected)) => TrustedServer::Fingerprint(expected.to_owned()),
        (None, None) => TrustedServer::FirstSeen,
    };
    let seen = Arc::new(Mutex::new(None));
    let forwarding = Arc::new(Forwarding::default());
    let ended = link_end::LinkEnd::default();
    let handler = LinkHandler {
        trusted: trusted.clone(),
        seen: seen.clone(),
        forwarding: forwarding.clone(),
        end: ended.guard(),
    };
    let config = client::Config {
        keepalive_interval: Some(opts.keepalive),
        keepalive_max: KEEPALIVE_MAX,
        inactivity_timeout: None,
        nodelay: true,
        // Session data rides on this connection: windows sized for bulk transfer.
        preferred: crate::ssh_preferred(),
        window_size: 8 * 1024 * 1024,
        maximum_packet_size: 65535,
        channel_buffer_size: 256,
        ..Default::default()
    };
    let servers = opts.servers.join(",");
    // Each address has its own connect deadline (`servers::PER_ADDRESS`); the SSH handshake
    // then has `CONNECT_TIMEOUT` on the node that answered.
    let tcp = tokio::select! {
        dialed = dial(&opts.servers) => match dialed {
            Ok(tcp) => tcp,
            Err(e) => return LinkEnd::Lost(format!("cannot connect to {servers}: {e}")),
        },
        _ = shutdown.cancelled() => return LinkEnd::Shutdown,
    };
    let connecting = async {
        let tcp = link_end::Watched::new(tcp, ended.clone());
        client::connect_stream(Arc::new(config), tcp, handler).await
    };
    let mut session = tokio::select! {
        r = tokio::time::timeout(CONNECT_TIMEOUT, connecting) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let offered = seen.lock().ok().and_then(|s| s.clone());
                if let Some(refusal) = offered.and_then(|o| trusted.refusal(&o)) {
                    return LinkEnd::Lost(refusal);
                }
                return LinkEnd::Lost(format!("cannot connect to {}: {e}", servers));
            }
            Err(_) => return LinkEnd::Lost(format!("connecting to {servers} timed out")),
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
    let link_ctx = LinkContext {
        ctx,
        session: &session,
        forwarding: &forwarding,
        state,
    };
    let end = match converse(&link_ctx, &mut link, &fingerprint(&server_key), shutdown).await {
        LinkEnd::Dropped(closed) => {
            let timings = Timings {
                keepalive: opts.keepalive,
                keepalive_max: KEEPALIVE_MAX,
                unacked: UNACKED_TIMEOUT,
            };
            LinkEnd::Dropped(ended.explain(closed, timings).await)
        }
        other => other,
    };
    // Every session's channels end with the link that carried it, and its processes with
    // them — but for the kept shells, which wait for their user (unless the agent stops).
    forwarding.stop_all();
    if matches!(end, LinkEnd::Shutdown | LinkEnd::Revoked) {
        ctx.shells.forget_all();
        ctx.processes.end_all().await;
    } else {
        ctx.processes.end_all_but(&ctx.shells.groups()).await;
    }
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

/// What a connected link's conversation works with.
struct LinkContext<'a> {
    ctx: &'a Context,
    session: &'a client::Handle<LinkHandler>,
    forwarding: &'a Forwarding,
    state: &'a watch::Sender<LinkState>,
}

async fn converse(
    lc: &LinkContext<'_>,
    link: &mut Link,
    server_fingerprint: &str,
    shutdown: &CancellationToken,
) -> LinkEnd {
    // What the server knows of the kept shells' sessions; None: it does not want to.
    let mut told = match handshake(lc, link, server_fingerprint).await {
        Ok(Handshook::Revoked) => return LinkEnd::Revoked,
        Ok(Handshook::Enrolled { told }) => told,
        Err(e) => return LinkEnd::Lost(e),
    };
    let mut heartbeat = tokio::time::interval(lc.ctx.options.sync_rate);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    let mut last_facts = lc.ctx.facts();
    loop {
        let reply = tokio::select! {
            frame = link.next() => match frame {
                None => return LinkEnd::Dropped("the server closed the link".into()),
                Some(Err(e)) => return LinkEnd::Dropped(format!("control channel failed: {e}")),
                Some(Ok(Err(bad))) => {
                    tracing::warn!(error = %bad, "bad control frame from server");
                    Some(bad_frame_reply(&bad))
                }
                Some(Ok(Ok(ServerMessage::Status(update)))) => {
                    if apply_status(lc, update) {
                        return LinkEnd::Revoked;
                    }
                    None
                }
                Some(Ok(Ok(ServerMessage::StartSsh { session }))) => {
                    start_session(lc, link, session).await
                }
                Some(Ok(Ok(ServerMessage::Resume { session }))) => {
                    resume_session(lc, session).await
                }
                Some(Ok(Ok(ServerMessage::StopSsh { session }))) => {
                    // A kept shell's session may be stopped while it is not forwarded.
                    let kept = lc.ctx.shells.has(&session);
                    lc.ctx.shells.forget(&session);
                    if lc.forwarding.stop(&session) || kept {
                        tracing::info!(%session, "SSH session stopped");
                        // Off the control loop: a program may take its grace to exit.
                        let processes = lc.ctx.processes.clone();
                        let id = session.clone();
                        tokio::spawn(async move { processes.end(&id).await });
                        let _ = lc.session.cancel_tcpip_forward(session.forward_address(), 0).await;
                    }
                    None
                }
                Some(Ok(Ok(ServerMessage::Error { code, message }))) => {
                    tracing::warn!(?code, %message, "server reported an error");
                    None
                }
                Some(Ok(Ok(other))) => {
                    tracing::warn!(?other, "unexpected control message from server");
                    Some(AgentMessage::Error {
                        code: ErrorCode::UnexpectedMessage,
                        message: "unexpected message".into(),
                    })
                }
            },
            () = lc.forwarding.changed() => {
                if let Err(e) = report(lc, link, &mut told).await {
                    return LinkEnd::Dropped(e);
                }
                None
            }
            () = lc.ctx.shells.changed() => {
                if let Err(e) = report(lc, link, &mut told).await {
                    return LinkEnd::Dropped(e);
                }
                None
            }
            _ = heartbeat.tick() => {
                let now = lc.ctx.facts();
                let changed = (now != last_facts).then(|| now.clone());
                last_facts = now;
                Some(AgentMessage::Heartbeat { facts: changed })
            }
            _ = shutdown.cancelled() => return LinkEnd::Shutdown,
        };
        if let Some(reply) = reply
            && let Err(e) = send(link, &reply).await
        {
            return LinkEnd::Dropped(e);
        }
    }
}

/// Tells the server what changed: the sessions with kept shells (`told` is what it knows),
/// login counts, sessions whose kept shells all expired.
async fn report(
    lc: &LinkContext<'_>,
    link: &mut Link,
    told: &mut Option<Vec<SessionId>>,
) -> Result<(), String> {
    if let Some(told) = told {
        let now = lc.ctx.shells.sessions();
        if now != *told {
            send(
                link,
                &AgentMessage::Kept {
                    sessions: now.clone(),
                },
            )
            .await?;
            *told = now;
        }
    }
    // Counts first: the server ends a running session at its grace only if nobody is in it.
    for (session, count) in lc.forwarding.changes(&lc.ctx.shells) {
        send(link, &AgentMessage::Logins { session, count }).await?;
    }
    if lc.ctx.options.shell_grace > Duration::ZERO {
        for session in lc.ctx.shells.take_expired() {
            send(link, &AgentMessage::GraceExpired { session }).await?;
        }
    }
    Ok(())
}

/// `Resume`: a session this agent keeps shells for goes on; ask for its forward again.
async fn resume_session(lc: &LinkContext<'_>, session: SessionId) -> Option<AgentMessage> {
    if !lc.ctx.shells.has(&session) || !lc.forwarding.ready() {
        return Some(AgentMessage::Session {
            session,
            reply: SessionReply::Refused {
                reason: "the agent no longer keeps this session's shells".into(),
            },
        });
    }
    if !lc.forwarding.accept(&session) {
        return None; // forwarded already on this link
    }
    match lc.session.tcpip_forward(session.forward_address(), 0).await {
        Ok(port) => {
            tracing::info!(%session, port, "SSH session resumed");
            None
        }
        Err(error) => {
            lc.forwarding.stop(&session);
            tracing::warn!(%session, %error, "the server refused the resumed session's forward");
            None
        }
    }
}

/// `StartSsh`: accept (when able), then ask for the session's reverse forward.
async fn start_session(
    lc: &LinkContext<'_>,
    link: &mut Link,
    session: SessionId,
) -> Option<AgentMessage> {
    if !lc.forwarding.ready() {
        return Some(AgentMessage::Session {
            session,
            reply: SessionReply::Refused {
                reason: "this agent has no SSH server ready (not approved yet?)".into(),
            },
        });
    }
    let accepted = AgentMessage::Session {
        session: session.clone(),
        reply: SessionReply::Accepted,
    };
    // The server may say `StartSsh` twice for one session (a request racing with the link
    // coming up): the forward already asked for stands, so the answer is only repeated.
    if !lc.forwarding.accept(&session) {
        return Some(accepted);
    }
    if send(link, &accepted).await.is_err() {
        return None;
    }
    match lc.session.tcpip_forward(session.forward_address(), 0).await {
        Ok(port) => {
            tracing::info!(%session, port, "SSH session running");
            None
        }
        Err(error) => {
            lc.forwarding.stop(&session);
            tracing::warn!(%session, %error, "the server refused the session's forward");
            Some(AgentMessage::Error {
                code: ErrorCode::Refused,
                message: format!("forward for session {session} refused"),
            })
        }
    }
}

enum Handshook {
    Revoked,
    /// With the kept shells' sessions the server was told of, if it wants them.
    Enrolled {
        told: Option<Vec<SessionId>>,
    },
}

/// Hello → Welcome → Enroll → Status (→ Kept).
async fn handshake(
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

/// Records and reports the server's word. Returns true when the agent is revoked.
fn apply_status(lc: &LinkContext<'_>, update: StatusUpdate) -> bool {
    let ctx = lc.ctx;
    if let Err(e) = ctx.state.save_status(&update) {
        tracing::error!(error = %e, "could not save the agent's status");
    }
    lc.forwarding.set_target(ctx.session_target(&update));
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
    if update.status != AgentStatus::Approved {
        lc.forwarding.stop_all();
        ctx.shells.forget_all();
        let processes = ctx.processes.clone();
        tokio::spawn(async move { processes.end_all().await });
    }
    lc.state.send_modify(|s| {
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

#[cfg(test)]
mod tests {
    use nix::sys::socket::{getsockopt, sockopt};

    #[tokio::test]
    async fn the_link_socket_gives_up_on_data_the_server_never_acknowledges() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let tcp = super::dial(&[addr]).await.unwrap();
        let timeout = getsockopt(&tcp, sockopt::TcpUserTimeout).unwrap();
        assert_eq!(
            u64::from(timeout),
            super::UNACKED_TIMEOUT.as_millis() as u64
        );
        assert!(tcp.nodelay().unwrap());
    }
}
