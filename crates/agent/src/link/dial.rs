//! Reaching a server node for the link: the TCP connection, set to give up on data the
//! server never acknowledges, and the russh handler that checks the node's host key and
//! accepts the channels forwarded to this agent's sessions.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Msg};
use russh::keys::{PublicKey, PublicKeyOrCertificate};

use crate::forwarding::{self, Forwarding};
use crate::link_end;
use crate::trust::TrustedServer;

pub(super) struct LinkHandler {
    pub(super) trusted: TrustedServer,
    pub(super) seen: Arc<Mutex<Option<PublicKey>>>,
    pub(super) forwarding: Arc<Forwarding>,
    /// russh drops the handler when the connection's task ends: that marks the end.
    pub(super) end: link_end::EndGuard,
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
pub(super) const UNACKED_TIMEOUT: Duration = Duration::from_secs(45);

/// Connects to one of the server nodes (see `servers.rs`), set up for the link.
pub(super) async fn dial(servers: &[String]) -> std::io::Result<tokio::net::TcpStream> {
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
