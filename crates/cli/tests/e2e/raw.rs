//! A hand-driven SSH client for poking at the gateway the way a hostile or broken agent would.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use postern_protocol::{AgentMessage, CONTROL_SUBSYSTEM, ControlCodec, ServerMessage};
use russh::client::{self, Msg};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelStream};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;

use crate::harness::DEADLINE;

pub struct AcceptAnyHost;

impl client::Handler for AcceptAnyHost {
    type Error = russh::Error;
    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

pub type Handle = client::Handle<AcceptAnyHost>;

/// Connects and authenticates with `key`; returns the handle and whether auth succeeded.
pub async fn connect(addr: SocketAddr, key: &PrivateKey) -> (Handle, bool) {
    let mut handle = client::connect(Arc::new(client::Config::default()), addr, AcceptAnyHost)
        .await
        .unwrap();
    let ok = handle
        .authenticate_publickey(
            "agent",
            PrivateKeyWithHashAlg::new(Arc::new(key.clone()), None),
        )
        .await
        .unwrap()
        .success();
    (handle, ok)
}

/// Opens a session channel and asks for `subsystem`; returns the channel if granted.
pub async fn subsystem(handle: &Handle, name: &str) -> Option<russh::Channel<Msg>> {
    let mut channel = handle.channel_open_session().await.ok()?;
    channel.request_subsystem(true, name).await.ok()?;
    loop {
        match tokio::time::timeout(DEADLINE, channel.wait()).await.ok()? {
            Some(ChannelMsg::Success) => return Some(channel),
            Some(ChannelMsg::Failure) | None => return None,
            Some(_) => {}
        }
    }
}

pub type Control = Framed<ChannelStream<Msg>, ControlCodec<ServerMessage, AgentMessage>>;

pub async fn control(handle: &Handle) -> Control {
    let channel = subsystem(handle, CONTROL_SUBSYSTEM)
        .await
        .expect("control subsystem refused");
    Framed::new(channel.into_stream(), ControlCodec::new())
}

pub async fn send(link: &mut Control, message: &AgentMessage) {
    link.send(message).await.unwrap();
}

/// Writes raw bytes as one length-prefixed frame.
pub async fn send_raw_frame(link: &mut Control, body: &[u8]) {
    let stream = link.get_mut();
    stream
        .write_all(&(body.len() as u32).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(body).await.unwrap();
    stream.flush().await.unwrap();
}

pub async fn receive(link: &mut Control) -> Option<ServerMessage> {
    match tokio::time::timeout(DEADLINE, link.next()).await {
        Ok(Some(Ok(Ok(message)))) => Some(message),
        Ok(Some(Ok(Err(bad)))) => panic!("server sent a bad frame: {bad}"),
        Ok(_) => None,
        Err(_) => panic!("no answer from the server"),
    }
}

/// Whether a request on a fresh session channel is granted.
pub async fn channel_request_granted(
    handle: &Handle,
    request: impl AsyncFnOnce(&russh::Channel<Msg>),
) -> bool {
    let Ok(mut channel) = handle.channel_open_session().await else {
        return false;
    };
    request(&channel).await;
    loop {
        match tokio::time::timeout(DEADLINE, channel.wait())
            .await
            .unwrap()
        {
            Some(ChannelMsg::Success) => return true,
            Some(ChannelMsg::Failure) | None => return false,
            Some(_) => {}
        }
    }
}

/// Says hello and enrolls `key` with the identity from `identity_seed`, as an agent would;
/// returns the server's answer to the enrollment. The link is returned to be held open.
pub async fn enroll(
    handle: &Handle,
    key: &PrivateKey,
    identity_seed: u8,
    name: &str,
    fingerprint: &str,
) -> (Control, Option<ServerMessage>) {
    use postern_protocol::PROTOCOL_VERSION;
    use postern_protocol::enrollment::Enrollment;
    let mut link = control(handle).await;
    send(
        &mut link,
        &AgentMessage::Hello {
            version: PROTOCOL_VERSION,
            agent_version: "test".into(),
            heartbeat_ms: None,
            reports_logins: false,
            keeps_shells: false,
        },
    )
    .await;
    let Some(ServerMessage::Welcome { nonce, .. }) = receive(&mut link).await else {
        panic!("no welcome");
    };
    let enrollment = Enrollment::sign(
        &ed25519_dalek::SigningKey::from_bytes(&[identity_seed; 32]),
        key.public_key().to_openssh().unwrap(),
        Some(name.into()),
        Default::default(),
        None,
        fingerprint,
        &nonce,
    );
    send(&mut link, &AgentMessage::Enroll(enrollment)).await;
    let answer = receive(&mut link).await;
    (link, answer)
}
