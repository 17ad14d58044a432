//! A linked agent's conversation with the server until the link ends: heartbeats, the
//! server's orders (start, resume and stop sessions, status changes), and reports of what
//! changed on this side (kept shells, logins, expired graces).

use std::time::Duration;

use futures::StreamExt;
use postern_protocol::control::SessionReply;
use postern_protocol::{AgentMessage, ErrorCode, ServerMessage, SessionId};
use russh::client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::LinkEnd;
use super::control::{Link, bad_frame_reply, send};
use super::dial::LinkHandler;
use super::handshake::{Handshook, handshake};
use super::status::apply_status;
use crate::forwarding::Forwarding;
use crate::{Context, LinkState};

/// What a connected link's conversation works with.
pub(super) struct LinkContext<'a> {
    pub(super) ctx: &'a Context,
    pub(super) session: &'a client::Handle<LinkHandler>,
    pub(super) forwarding: &'a Forwarding,
    pub(super) state: &'a watch::Sender<LinkState>,
}

pub(super) async fn converse(
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
