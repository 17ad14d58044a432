//! Enrollment, approval, rejection, revocation, tokens, names and identity persistence.

use std::time::Duration;

use postern_protocol::AgentStatus;
use postern_protocol::api::EventKind;
use postern_server::store::TokenRecord;

use crate::harness::{TestAgent, TestServer, approved, eventually, test_key, wait_agent_state};
use crate::raw;

#[tokio::test]
async fn without_a_token_an_agent_waits_pending_until_an_admin_approves() {
    let server = TestServer::start().await;
    let agent = TestAgent::start(&server, "dev1", None);
    let state = agent
        .wait_state("pending", |s| {
            s.connected && s.status == Some(AgentStatus::Pending)
        })
        .await;
    assert_eq!(state.name.as_deref(), Some("dev1"));

    let listed = server.wait_agent("dev1", "online", |a| a.online).await;
    assert_eq!(listed.status, AgentStatus::Pending);
    assert_eq!(listed.did, agent.agent.as_ref().unwrap().did.as_str());
    assert!(!listed.facts.hostname.is_empty());
    assert!(listed.facts.cpus >= 1);

    let (status, body) = server
        .admin_post("/api/v1/agents/dev1/approve", serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let state = agent.wait_state("approved", approved).await;
    assert_eq!(state.status, Some(AgentStatus::Approved));

    for kind in [
        EventKind::AgentEnrolled,
        EventKind::AgentOnline,
        EventKind::AgentApproved,
    ] {
        server
            .wait_event(&kind.to_string(), |e| e.kind == kind)
            .await;
    }
}

#[tokio::test]
async fn a_valid_token_approves_at_once_and_only_as_often_as_it_allows() {
    let server = TestServer::start().await;
    let token = server.create_token(3600, 1).await;
    let first = TestAgent::start(&server, "with-token", Some(token.clone()));
    first.wait_state("approved", approved).await;

    // The same token, used up: the second agent waits pending and is told why.
    let second = TestAgent::start(&server, "late", Some(token));
    let state = second
        .wait_state("pending", |s| s.status == Some(AgentStatus::Pending))
        .await;
    assert!(
        state
            .message
            .as_deref()
            .unwrap_or("")
            .contains("no uses left"),
        "{state:?}"
    );
}

/// The token names the server's host key: even an agent's first connection trusts no other
/// server (one that intercepts the address, say), and it sends that server nothing.
#[tokio::test]
async fn a_token_names_its_servers_key_and_the_agent_refuses_any_other_server() {
    let server = TestServer::start().await;
    let impostor = TestServer::start().await;
    let token = server.create_token(3600, 1).await;
    let fingerprint = &server.server().host_key_fingerprint;
    assert!(token.ends_with(&format!("@{fingerprint}")), "{token}");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    let mut options = TestAgent::options(&impostor, "careful", &dir);
    options.token = Some(token.parse().unwrap());
    let agent = postern_agent::Agent::start(options.clone()).unwrap();
    let outcome = wait_agent_state(&agent, "connected or refusing", |s| {
        s.connected || s.link_error.is_some()
    })
    .await;
    assert!(!outcome.connected, "the agent trusted another server");
    let why = outcome.link_error.unwrap();
    assert!(
        why.contains("is not the one the enrollment token names") && why.contains(fingerprint),
        "{why}"
    );
    assert!(impostor.agents().await.is_empty());
    assert!(
        !dir.join(postern_agent::state::SERVER_KEY_FILE).exists(),
        "the impostor's key was pinned"
    );
    agent.shutdown().await.unwrap();

    // The same agent and token, at the right server: approved, and that key pinned.
    options.servers = vec![server.agent_addr().to_string()];
    let agent = postern_agent::Agent::start(options).unwrap();
    wait_agent_state(&agent, "approved", approved).await;
    assert!(dir.join(postern_agent::state::SERVER_KEY_FILE).exists());
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_token_with_a_malformed_fingerprint_is_refused_before_anything_runs() {
    let (ok, _, stderr) = crate::harness::run_cli(
        tempfile::tempdir().unwrap().path(),
        &[
            "agent",
            "--server",
            "127.0.0.1:1",
            "--data-dir",
            "unused",
            "--token",
            "pet_abc@SHA256:short",
        ],
        None,
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("is not a SHA256:"), "{stderr}");
}

#[tokio::test]
async fn an_expired_token_leaves_the_agent_pending_with_the_reason() {
    let server = TestServer::start().await;
    let store = server.store().await;
    let secret = "pet_expired-test-token";
    store
        .insert_token(
            &TokenRecord {
                id: "expired1".into(),
                created_by: "admin".into(),
                created_at: 0,
                expires_at: 1,
                max_uses: 5,
                uses: 0,
                revoked: false,
            },
            &postern_server::auth::secret::hash_secret(secret),
        )
        .await
        .unwrap();
    let agent = TestAgent::start(&server, "too-late", Some(secret.into()));
    let state = agent
        .wait_state("pending", |s| s.status == Some(AgentStatus::Pending))
        .await;
    assert!(
        state.message.as_deref().unwrap_or("").contains("expired"),
        "{state:?}"
    );
    assert_eq!(
        server.agent("too-late").await.unwrap().status,
        AgentStatus::Pending
    );
}

#[tokio::test]
async fn a_rejected_agent_keeps_waiting_and_can_still_be_approved() {
    let server = TestServer::start().await;
    let agent = TestAgent::start(&server, "maybe", None);
    agent
        .wait_state("pending", |s| s.status == Some(AgentStatus::Pending))
        .await;
    let (status, _) = server
        .admin_post("/api/v1/agents/maybe/reject", serde_json::json!({}))
        .await;
    assert_eq!(status, 200);
    let state = agent
        .wait_state("rejected", |s| s.status == Some(AgentStatus::Rejected))
        .await;
    assert!(state.connected, "a rejected agent stays connected, waiting");
    let (status, _) = server
        .admin_post("/api/v1/agents/maybe/approve", serde_json::json!({}))
        .await;
    assert_eq!(status, 200);
    agent.wait_state("approved", approved).await;
}

#[tokio::test]
async fn revocation_tears_the_link_down_within_a_second_and_refuses_the_agent_after() {
    let server = TestServer::start().await;
    let token = server.create_token(3600, 1).await;
    let mut agent = TestAgent::start(&server, "doomed", Some(token));
    agent.wait_state("approved", approved).await;

    let (status, body) = server
        .admin_post("/api/v1/agents/doomed/revoke", serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    // The agent learns it was revoked and stops, within a second of the decision.
    let ended = tokio::time::timeout(Duration::from_secs(1), agent.handle().wait()).await;
    assert!(
        matches!(ended, Ok(Err(postern_agent::AgentError::Revoked))),
        "{ended:?}"
    );
    server.wait_agent("doomed", "offline", |a| !a.online).await;

    // Restarting the agent is refused locally with a clear message...
    let again = postern_agent::Agent::start(agent.options.clone());
    assert!(matches!(again, Err(postern_agent::AgentError::Revoked)));
    // ...and its key is refused by the gateway, whatever the agent's files say.
    std::fs::remove_file(agent.dir.join(postern_agent::state::STATUS_FILE)).unwrap();
    let key = postern_agent::identity::Identity::load_or_create(&agent.dir)
        .unwrap()
        .ssh_key;
    let (_handle, authenticated) = raw::connect(server.agent_addr(), &key).await;
    assert!(!authenticated, "a revoked agent's key must be refused");

    // Revocation is final.
    let (status, body) = server
        .admin_post("/api/v1/agents/doomed/approve", serde_json::json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "invalid_transition");
}

#[tokio::test]
async fn the_agents_identity_survives_restarts_and_it_stays_one_agent() {
    let server = TestServer::start().await;
    let token = server.create_token(3600, 1).await;
    let mut agent = TestAgent::start(&server, "steady", Some(token));
    agent.wait_state("approved", approved).await;
    let did = agent.agent.as_ref().unwrap().did.clone();
    agent.stop().await;
    server.wait_agent("steady", "offline", |a| !a.online).await;

    // Restarted without a token: it is still the same, approved agent.
    agent.restart();
    agent.wait_state("approved", approved).await;
    assert_eq!(agent.agent.as_ref().unwrap().did, did);
    let agents = server.agents().await;
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].did, did.as_str());
}

#[tokio::test]
async fn two_agents_never_share_a_name() {
    let server = TestServer::start().await;
    let a = TestAgent::start(&server, "twin", None);
    a.wait_state("pending", |s| s.status.is_some()).await;
    let b = TestAgent::start(&server, "twin", None);
    let state = b.wait_state("pending", |s| s.status.is_some()).await;
    assert_eq!(state.name.as_deref(), Some("twin-2"));
    let mut names: Vec<String> = server.agents().await.into_iter().map(|a| a.name).collect();
    names.sort();
    assert_eq!(names, vec!["twin", "twin-2"]);

    // A prefix shared by both is ambiguous; the full name is not.
    let (status, body) = server
        .admin_post("/api/v1/agents/tw/approve", serde_json::json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "ambiguous");
    let (status, _) = server
        .admin_post("/api/v1/agents/twin/approve", serde_json::json!({}))
        .await;
    assert_eq!(status, 200);
    // A DID prefix works too.
    let did = server.agent("twin-2").await.unwrap().did;
    let prefix = &did[..did.len() - 10];
    let (status, body) = server
        .admin_post(
            &format!("/api/v1/agents/{prefix}/reject"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "twin-2");
}

#[tokio::test]
async fn an_enrollment_with_a_forged_signature_is_refused_and_nothing_is_stored() {
    use postern_protocol::enrollment::Enrollment;
    use postern_protocol::{AgentMessage, ErrorCode, PROTOCOL_VERSION, ServerMessage};

    let server = TestServer::start().await;
    let key = test_key(7);
    let (handle, ok) = raw::connect(server.agent_addr(), &key).await;
    assert!(ok, "unknown keys may connect to enroll");
    let mut link = raw::control(&handle).await;
    raw::send(
        &mut link,
        &AgentMessage::Hello {
            version: PROTOCOL_VERSION,
            agent_version: "t".into(),
            heartbeat_ms: None,
            reports_logins: false,
            keeps_shells: false,
        },
    )
    .await;
    let Some(ServerMessage::Welcome { nonce, .. }) = raw::receive(&mut link).await else {
        panic!("no welcome");
    };
    let identity = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    // Signed over a different server fingerprint than this server's: refused.
    let enrollment = Enrollment::sign(
        &identity,
        key.public_key().to_openssh().unwrap(),
        Some("forged".into()),
        Default::default(),
        None,
        "SHA256:not-this-server",
        &nonce,
    );
    raw::send(&mut link, &AgentMessage::Enroll(enrollment)).await;
    match raw::receive(&mut link).await {
        Some(ServerMessage::Error { code, .. }) => assert_eq!(code, ErrorCode::BadSignature),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(server.agents().await.is_empty());
}

#[tokio::test]
async fn an_enrollment_naming_another_ssh_key_is_refused() {
    use postern_protocol::enrollment::Enrollment;
    use postern_protocol::{AgentMessage, ErrorCode, PROTOCOL_VERSION, ServerMessage};

    let server = TestServer::start().await;
    let (handle, _) = raw::connect(server.agent_addr(), &test_key(11)).await;
    let mut link = raw::control(&handle).await;
    raw::send(
        &mut link,
        &AgentMessage::Hello {
            version: PROTOCOL_VERSION,
            agent_version: "t".into(),
            heartbeat_ms: None,
            reports_logins: false,
            keeps_shells: false,
        },
    )
    .await;
    let Some(ServerMessage::Welcome { nonce, .. }) = raw::receive(&mut link).await else {
        panic!("no welcome");
    };
    let enrollment = Enrollment::sign(
        &ed25519_dalek::SigningKey::from_bytes(&[12; 32]),
        test_key(13).public_key().to_openssh().unwrap(),
        Some("thief".into()),
        Default::default(),
        None,
        &server.server().host_key_fingerprint,
        &nonce,
    );
    raw::send(&mut link, &AgentMessage::Enroll(enrollment)).await;
    match raw::receive(&mut link).await {
        Some(ServerMessage::Error { code, message }) => {
            assert_eq!(code, ErrorCode::Refused, "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    eventually("nothing stored", || async {
        server.agents().await.is_empty().then_some(())
    })
    .await;
}
