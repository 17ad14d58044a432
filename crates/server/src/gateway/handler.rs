//! The russh handler for one agent connection: a thin translator. Authentication looks the
//! key up; the single control channel is handed to its own task; everything else is refused.

use std::net::SocketAddr;
use std::sync::Arc;

use postern_protocol::{AgentStatus, CONTROL_SUBSYSTEM};
use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure};

use super::limits::ControlUp;
use super::sever::Cut;
use super::{Gateway, control, key_text};

pub struct AgentConnection {
    gateway: Arc<Gateway>,
    peer: Option<SocketAddr>,
    /// The authenticated key, canonical text.
    key: Option<String>,
    control: Option<ChannelId>,
    /// Handed to the control task, which says when the control channel is up.
    up: Option<ControlUp>,
    /// A revoked key's refusal is logged once per connection, however often it is tried.
    revoked_logged: bool,
    /// The last key looked up and whether it may authenticate: a client offers its key and
    /// then signs with it, and the store is asked once for both (enrollment checks the
    /// agent's status again).
    checked: Option<(String, bool)>,
    /// Cuts this connection's socket.
    cut: Cut,
}

impl AgentConnection {
    pub fn new(gateway: Arc<Gateway>, peer: Option<SocketAddr>, up: ControlUp) -> Self {
        Self {
            gateway,
            peer,
            key: None,
            control: None,
            up: Some(up),
            revoked_logged: false,
            checked: None,
            cut: Cut::default(),
        }
    }

    pub fn cut(&self) -> &Cut {
        &self.cut
    }

    /// Any key may authenticate (unknown keys may enroll), except a revoked agent's.
    async fn allowed(&mut self, key: &PublicKey) -> bool {
        let text = key_text(key);
        if let Some((checked, allowed)) = &self.checked
            && *checked == text
        {
            return *allowed;
        }
        // A store failure is not kept: the next attempt asks again.
        let Some(allowed) = self.look_up(&text).await else {
            return false;
        };
        self.checked = Some((text, allowed));
        allowed
    }

    async fn look_up(&mut self, key: &str) -> Option<bool> {
        let found = {
            let _turn = self.gateway.enrolling.lookup_turn().await;
            self.gateway.store.agent_by_ssh_key(key).await
        };
        match found {
            Ok(Some(agent)) if agent.status == AgentStatus::Revoked => {
                if !self.revoked_logged {
                    self.revoked_logged = true;
                    tracing::info!(peer = ?self.peer, agent = %agent.name, did = %agent.did, "refused a revoked agent's key");
                }
                Some(false)
            }
            Ok(_) => Some(true),
            Err(error) => {
                tracing::error!(%error, "store unavailable during agent authentication");
                None
            }
        }
    }

    fn refuse(&self, what: &str) {
        tracing::info!(peer = ?self.peer, "refused {what} on the agent port");
    }
}

impl russh::server::Handler for AgentConnection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Boxed, like every store call here: russh embeds these futures in the connection's
        // own, which lives as long as the agent stays connected.
        Ok(if Box::pin(self.allowed(offer.public_key)).await {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if !Box::pin(self.allowed(key.public_key)).await {
            return Ok(Auth::reject());
        }
        self.key = Some(key_text(key.public_key));
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(key) = self.key.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        // The first session channel is the control channel; there is only one.
        let Some(up) = self.up.take() else {
            self.refuse("a second session channel");
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        self.control = Some(channel.id());
        reply.accept().await;
        let gateway = self.gateway.clone();
        let peer = self.peer;
        let handle = session.handle();
        let cut = self.cut.clone();
        tokio::spawn(control::run(gateway, channel, key, peer, handle, up, cut));
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.control == Some(channel) && name == CONTROL_SUBSYSTEM {
            session.channel_success(channel)?;
        } else {
            self.refuse("an unknown subsystem");
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // RFC 4254 §5.4: a request that wants a reply gets one; no environment is taken here.
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("a shell");
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("exec");
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("X11 forwarding");
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse("agent forwarding");
        Ok(false)
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The server is never an open proxy.
        self.refuse("direct-tcpip");
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("an X11 channel");
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(key) = self.key.clone() else {
            self.refuse("tcpip-forward before authentication");
            return Ok(false);
        };
        let bound = Box::pin(forward(
            self.gateway.clone(),
            key,
            address.to_owned(),
            session.handle(),
        ))
        .await;
        match bound {
            Some(bound) => {
                *port = u32::from(bound);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        _address: &str,
        _port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // The server already dropped the tunnel when it asked the agent to stop.
        Ok(true)
    }
}

/// A `tcpip-forward`: only an approved agent, only for its own starting session.
async fn forward(
    gateway: Arc<Gateway>,
    key: String,
    address: String,
    handle: russh::server::Handle,
) -> Option<u16> {
    let agent = gateway.store.agent_by_ssh_key(&key).await.ok().flatten();
    let Some(agent) = agent.filter(|a| a.status == AgentStatus::Approved) else {
        tracing::info!("refused tcpip-forward from an agent that is not approved");
        return None;
    };
    match gateway.sessions.forward(&agent.id, &address, handle).await {
        Ok(bound) => Some(bound),
        Err(why) => {
            tracing::warn!(agent = %agent.name, %why, "refused tcpip-forward");
            None
        }
    }
}
