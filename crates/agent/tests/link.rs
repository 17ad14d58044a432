//! The agent's link against a scripted server: messages a real server sends only in races
//! that a test cannot bring about on demand (a `StartSsh` repeated for one session, when a
//! request meets the link coming up), and a server older than the agent (one that does not
//! ask for login counts). The server side is real SSH (russh) speaking the real control
//! protocol; only its decisions are scripted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use postern_agent::{Agent, AgentOptions};
use postern_protocol::control::{SessionReply, StatusUpdate};
use postern_protocol::{
    AgentMessage, AgentStatus, CONTROL_SUBSYSTEM, ControlCodec, PROTOCOL_VERSION, ServerMessage,
    SessionId,
};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

const DEADLINE: Duration = Duration::from_secs(20);
const FORWARDED_PORT: u32 = 40_000;

fn key(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

/// A forward the agent asked for, and the connection to open channels on.
struct Forward {
    address: String,
    handle: server::Handle,
}

/// Hands the control channel and every `tcpip-forward` to the test; like the real server,
/// grants a session's forward once only.
struct Scripted {
    control: mpsc::UnboundedSender<Channel<Msg>>,
    forwards: mpsc::UnboundedSender<Forward>,
    granted: Vec<String>,
}

impl server::Handler for Scripted {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let _ = self.control.send(channel);
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == CONTROL_SUBSYSTEM {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let _ = self.forwards.send(Forward {
            address: address.to_owned(),
            handle: session.handle(),
        });
        if self.granted.iter().any(|a| a == address) {
            return Ok(false);
        }
        self.granted.push(address.to_owned());
        *port = FORWARDED_PORT;
        Ok(true)
    }
}

type Control = Framed<russh::ChannelStream<Msg>, ControlCodec<AgentMessage, ServerMessage>>;

/// The next message from the agent that is not a heartbeat.
async fn next_message(control: &mut Control) -> AgentMessage {
    loop {
        let frame = tokio::time::timeout(DEADLINE, control.next())
            .await
            .expect("the agent said nothing")
            .expect("the agent closed its control channel")
            .unwrap();
        match frame.unwrap() {
            AgentMessage::Heartbeat { .. } => continue,
            message => return message,
        }
    }
}

/// A scripted server on loopback with one approved agent connected to it.
struct Fixture {
    control: Control,
    forwards: mpsc::UnboundedReceiver<Forward>,
    agent: Agent,
    /// The agent's DID, from its enrollment.
    did: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Self {
        Self::start_with(false).await
    }

    /// A scripted server that asks for login counts, or (as older servers) does not.
    async fn start_with(wants_logins: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (control_tx, mut control_rx) = mpsc::unbounded_channel();
        let (forwards_tx, forwards) = mpsc::unbounded_channel();
        let config = Arc::new(server::Config {
            keys: vec![key(1)],
            ..Default::default()
        });
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let handler = Scripted {
                control: control_tx,
                forwards: forwards_tx,
                granted: Vec::new(),
            };
            let running = server::run_stream(config, socket, handler).await.unwrap();
            let _ = running.await;
        });

        let dir = tempfile::tempdir().unwrap();
        let mut options = AgentOptions::new(addr.to_string(), dir.path().join("agent"));
        options.name = Some("scripted".into());
        options.sync_rate = Duration::from_secs(3600);
        let agent = Agent::start(options).unwrap();

        let channel = tokio::time::timeout(DEADLINE, control_rx.recv())
            .await
            .unwrap()
            .unwrap();
        let mut control = Framed::new(channel.into_stream(), ControlCodec::new());
        assert!(matches!(
            next_message(&mut control).await,
            AgentMessage::Hello { .. }
        ));
        let welcome = ServerMessage::Welcome {
            version: PROTOCOL_VERSION,
            nonce: "scripted".into(),
            wants_logins,
            resumes_shells: false,
        };
        control.send(&welcome).await.unwrap();
        let AgentMessage::Enroll(enrollment) = next_message(&mut control).await else {
            panic!("expected the agent's enrollment");
        };
        let user_ca: PublicKey = key(2).public_key().clone();
        let approved = ServerMessage::Status(StatusUpdate {
            status: AgentStatus::Approved,
            name: "scripted".into(),
            message: None,
            user_ca: Some(user_ca.to_openssh().unwrap()),
        });
        control.send(&approved).await.unwrap();
        Self {
            control,
            forwards,
            agent,
            did: enrollment.did.to_string(),
            _dir: dir,
        }
    }

    /// Waits until the agent has handled everything sent before: it answers messages in
    /// order, so its answer to a stray `Welcome` comes after all of them. Returns what it
    /// said meanwhile.
    async fn settle(&mut self) -> Vec<AgentMessage> {
        let stray = ServerMessage::Welcome {
            version: PROTOCOL_VERSION,
            nonce: "stray".into(),
            wants_logins: false,
            resumes_shells: false,
        };
        self.control.send(&stray).await.unwrap();
        let mut said = Vec::new();
        loop {
            match next_message(&mut self.control).await {
                AgentMessage::Error { .. } => return said,
                other => said.push(other),
            }
        }
    }
}

#[tokio::test]
async fn a_repeated_start_is_answered_again_and_leaves_the_running_session_alone() {
    let mut fixture = Fixture::start().await;
    let session = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
    let start = ServerMessage::StartSsh {
        session: session.clone(),
    };
    fixture.control.send(&start).await.unwrap();
    fixture.control.send(&start).await.unwrap();

    for _ in 0..2 {
        assert_eq!(
            next_message(&mut fixture.control).await,
            AgentMessage::Session {
                session: session.clone(),
                reply: SessionReply::Accepted,
            }
        );
    }
    fixture.settle().await;
    let forward = fixture.forwards.recv().await.unwrap();
    assert_eq!(forward.address, session.forward_address());
    assert!(
        fixture.forwards.try_recv().is_err(),
        "the agent asked for the session's forward twice"
    );

    // The session still serves: a connection through its tunnel reaches the SSH server.
    let channel = forward
        .handle
        .channel_open_forwarded_tcpip(
            session.forward_address(),
            FORWARDED_PORT,
            "127.0.0.1",
            50_000,
        )
        .await
        .expect("the agent refused a channel for its running session");
    let mut stream = channel.into_stream();
    let mut banner = [0u8; 8];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut banner))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    fixture.agent.shutdown().await.unwrap();
}

/// Accepts the agent's host key, whatever it is: these tests are about what follows a login.
struct AnyHost;

impl russh::client::Handler for AnyHost {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Starts `session` on the fixture's agent and logs in through one channel of its forward,
/// as a user with a certificate from the server's CA; returns the logged-in connection.
async fn log_in_through(
    fixture: &mut Fixture,
    session: &SessionId,
) -> russh::client::Handle<AnyHost> {
    use postern_protocol::session::{CERT_AGENT_EXTENSION, CERT_SESSION_EXTENSION};
    use russh::keys::ssh_key::certificate::{Builder, CertType};
    fixture
        .control
        .send(&ServerMessage::StartSsh {
            session: session.clone(),
        })
        .await
        .unwrap();
    let forward = tokio::time::timeout(DEADLINE, fixture.forwards.recv())
        .await
        .unwrap()
        .unwrap();
    let channel = forward
        .handle
        .channel_open_forwarded_tcpip(
            session.forward_address(),
            FORWARDED_PORT,
            "127.0.0.1",
            50_000,
        )
        .await
        .unwrap();
    let login = postern_agent::facts::own_login();
    let user = key(5);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut cert = Builder::new(
        vec![1; 16],
        user.public_key().key_data().clone(),
        now - 60,
        now + 300,
    )
    .unwrap();
    cert.cert_type(CertType::User).unwrap();
    cert.valid_principal(&login).unwrap();
    cert.extension(CERT_AGENT_EXTENSION, fixture.did.as_str())
        .unwrap();
    cert.extension(CERT_SESSION_EXTENSION, session.as_str())
        .unwrap();
    let cert = cert.sign(&key(2)).unwrap();
    let config = Arc::new(russh::client::Config::default());
    let mut handle = russh::client::connect_stream(config, channel.into_stream(), AnyHost)
        .await
        .unwrap();
    let auth = handle
        .authenticate_openssh_cert(&login, Arc::new(user), cert)
        .await
        .unwrap();
    assert!(auth.success());
    handle
}

#[tokio::test]
async fn a_server_that_asks_is_told_how_many_are_logged_in_through_each_session() {
    let mut fixture = Fixture::start_with(true).await;
    let session = SessionId::parse("00000000000000000000000000000001").unwrap();
    let handle = log_in_through(&mut fixture, &session).await;
    let logins = |count| AgentMessage::Logins {
        session: session.clone(),
        count,
    };
    let mut said = Vec::new();
    while !said.contains(&logins(1)) {
        said.push(next_message(&mut fixture.control).await);
    }
    // A message the scripted server may or may not have read yet is the agent's acceptance.
    assert!(
        said.iter()
            .all(|m| *m == logins(1) || matches!(m, AgentMessage::Session { .. })),
        "{said:?}"
    );
    handle
        .disconnect(russh::Disconnect::ByApplication, "bye", "en")
        .await
        .unwrap();
    drop(handle);
    assert_eq!(next_message(&mut fixture.control).await, logins(0));
    fixture.agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_server_that_does_not_ask_for_login_counts_is_never_sent_one() {
    // An older server would answer each with an error.
    let mut fixture = Fixture::start_with(false).await;
    let session = SessionId::parse("00000000000000000000000000000002").unwrap();
    let handle = log_in_through(&mut fixture, &session).await;
    // The login is in effect: a command runs.
    let mut channel = handle.channel_open_session().await.unwrap();
    channel.exec(true, "echo in").await.unwrap();
    loop {
        match tokio::time::timeout(DEADLINE, channel.wait())
            .await
            .unwrap()
        {
            Some(russh::ChannelMsg::Data { data }) => break assert_eq!(&data[..], b"in\n"),
            Some(_) => continue,
            None => panic!("the command did not run"),
        }
    }
    handle
        .disconnect(russh::Disconnect::ByApplication, "bye", "en")
        .await
        .unwrap();
    drop(handle);
    let said = fixture.settle().await;
    assert!(
        said.iter()
            .all(|m| matches!(m, AgentMessage::Session { .. })),
        "{said:?}"
    );
    fixture.agent.shutdown().await.unwrap();
}
