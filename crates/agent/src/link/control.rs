//! The control channel: the `postern-control` subsystem opened on the link, and its frames
//! read and written (a bad frame from the server is answered, not fatal).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use postern_protocol::{AgentMessage, CONTROL_SUBSYSTEM, ControlCodec, ErrorCode, ServerMessage};
use russh::client::{self, Msg};
use russh::{ChannelMsg, ChannelStream};
use tokio_util::codec::Framed;

use super::dial::LinkHandler;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) type Link = Framed<ChannelStream<Msg>, ControlCodec<ServerMessage, AgentMessage>>;

pub(super) async fn open_control(session: &client::Handle<LinkHandler>) -> Result<Link, String> {
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

pub(super) async fn receive(link: &mut Link) -> Result<ServerMessage, String> {
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

pub(super) fn bad_frame_reply(bad: &postern_protocol::FrameError) -> AgentMessage {
    let code = match bad {
        postern_protocol::FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        postern_protocol::FrameError::Malformed(_) => ErrorCode::Malformed,
    };
    AgentMessage::Error {
        code,
        message: bad.to_string(),
    }
}

pub(super) async fn send(link: &mut Link, message: &AgentMessage) -> Result<(), String> {
    link.send(message)
        .await
        .map_err(|e| format!("control channel failed: {e}"))
}
