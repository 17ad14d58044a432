//! The agent's one link to the server: dial out over SSH, open the control subsystem, enroll,
//! then heartbeat and obey until the link drops — and dial again, with backoff, forever.
//!
//! Here the supervisor and one link's life from dial to teardown; `dial` reaches a node (the
//! socket and the russh handler), `control` frames the control channel, `handshake` enrolls,
//! `conversation` heartbeats and obeys until the link ends, and `status` applies the server's
//! word on this agent.

mod control;
mod conversation;
mod dial;
mod handshake;
mod status;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::Disconnect;
use russh::client;
use russh::keys::PrivateKeyWithHashAlg;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::forwarding::Forwarding;
use crate::link_end::{self, Timings};
use crate::trust::{TrustedServer, fingerprint};
use crate::{AgentError, AgentOptions, Context, LinkState};

use control::open_control;
use conversation::{LinkContext, converse};
use dial::{LinkHandler, UNACKED_TIMEOUT, dial};

/// A link that stayed up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Keepalives the server may leave unanswered before the link is dropped.
const KEEPALIVE_MAX: usize = 3;

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
