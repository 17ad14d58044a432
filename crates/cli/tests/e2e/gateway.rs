//! The agent port refuses everything but the control subsystem, and bad control input gets
//! an error reply without breaking the link or the server.

use postern_protocol::{AgentMessage, ErrorCode, PROTOCOL_VERSION, ServerMessage};

use crate::harness::{TestServer, test_key};
use crate::raw;

fn hello() -> AgentMessage {
    AgentMessage::Hello {
        version: PROTOCOL_VERSION,
        agent_version: "test".into(),
        heartbeat_ms: None,
        reports_logins: false,
        keeps_shells: false,
    }
}

#[tokio::test]
async fn an_unknown_key_gets_nothing_but_the_enrollment_subsystem() {
    let server = TestServer::start().await;
    let addr = server.agent_addr();
    let key = test_key(21);

    let (h, ok) = raw::connect(addr, &key).await;
    assert!(ok);
    assert!(
        !raw::channel_request_granted(&h, async |c| c.exec(true, "id").await.unwrap()).await,
        "exec"
    );

    let (h, _) = raw::connect(addr, &key).await;
    assert!(
        !raw::channel_request_granted(&h, async |c| c.request_shell(true).await.unwrap()).await,
        "shell"
    );

    let (h, _) = raw::connect(addr, &key).await;
    assert!(raw::subsystem(&h, "sftp").await.is_none(), "sftp subsystem");

    let (h, _) = raw::connect(addr, &key).await;
    assert!(
        !raw::channel_request_granted(&h, async |c| c.agent_forward(true).await.unwrap()).await,
        "agent forwarding"
    );

    let (h, _) = raw::connect(addr, &key).await;
    assert!(
        !raw::channel_request_granted(&h, async |c| c
            .request_x11(true, false, "MIT-MAGIC-COOKIE-1", "00", 0)
            .await
            .unwrap())
        .await,
        "x11 forwarding"
    );

    // The server is never an open proxy.
    let (h, _) = raw::connect(addr, &key).await;
    let opened = h
        .channel_open_direct_tcpip(
            "127.0.0.1",
            server.config.http.port() as u32,
            "127.0.0.1",
            5000,
        )
        .await;
    assert!(opened.is_err(), "direct-tcpip must be refused");

    let (h, _) = raw::connect(addr, &key).await;
    assert!(
        h.tcpip_forward("127.0.0.1", 0).await.is_err(),
        "tcpip-forward"
    );

    // Only one control channel per link.
    let (h, _) = raw::connect(addr, &key).await;
    let _control = raw::control(&h).await;
    assert!(
        h.channel_open_session().await.is_err(),
        "second session channel"
    );

    // A link that has not enrolled can do nothing else on the control channel either.
    let (h, _) = raw::connect(addr, &key).await;
    let mut link = raw::control(&h).await;
    raw::send(&mut link, &AgentMessage::Heartbeat { facts: None }).await;
    match raw::receive(&mut link).await {
        Some(ServerMessage::Error { code, .. }) => assert_eq!(code, ErrorCode::UnexpectedMessage),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(server.agents().await.is_empty());
}

#[tokio::test]
async fn malformed_unknown_and_oversized_messages_get_errors_and_the_link_survives() {
    let server = TestServer::start().await;
    let (h, _) = raw::connect(server.agent_addr(), &test_key(31)).await;
    let mut link = raw::control(&h).await;

    raw::send_raw_frame(&mut link, b"{not json").await;
    match raw::receive(&mut link).await {
        Some(ServerMessage::Error { code, .. }) => assert_eq!(code, ErrorCode::Malformed),
        other => panic!("{other:?}"),
    }
    raw::send_raw_frame(&mut link, br#"{"type":"launch_missiles"}"#).await;
    match raw::receive(&mut link).await {
        Some(ServerMessage::Error { code, .. }) => assert_eq!(code, ErrorCode::Malformed),
        other => panic!("{other:?}"),
    }
    let huge = vec![b'x'; postern_protocol::MAX_FRAME_LEN + 1];
    raw::send_raw_frame(&mut link, &huge).await;
    match raw::receive(&mut link).await {
        Some(ServerMessage::Error { code, .. }) => assert_eq!(code, ErrorCode::FrameTooLarge),
        other => panic!("{other:?}"),
    }
    // The same link still works.
    raw::send(&mut link, &hello()).await;
    assert!(matches!(
        raw::receive(&mut link).await,
        Some(ServerMessage::Welcome { .. })
    ));
    // And the server as a whole is fine.
    assert_eq!(server.agents().await.len(), 0);
}

#[tokio::test]
async fn a_peer_speaking_another_protocol_version_is_told_so() {
    let server = TestServer::start().await;
    let (h, _) = raw::connect(server.agent_addr(), &test_key(41)).await;
    let mut link = raw::control(&h).await;
    raw::send(
        &mut link,
        &AgentMessage::Hello {
            version: PROTOCOL_VERSION + 1,
            agent_version: "future".into(),
            heartbeat_ms: None,
            reports_logins: false,
            keeps_shells: false,
        },
    )
    .await;
    match raw::receive(&mut link).await {
        Some(ServerMessage::Error { code, message }) => {
            assert_eq!(code, ErrorCode::UnsupportedVersion);
            assert!(message.contains(&PROTOCOL_VERSION.to_string()));
        }
        other => panic!("{other:?}"),
    }
}
