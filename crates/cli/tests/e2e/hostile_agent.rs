//! An approved agent that writes terminal escapes and forged lines into everything it sends:
//! the server keeps none of it (facts, logins, a session's refusal reason), no certificate
//! names a login that is not a POSIX user name, and the CLI prints nothing raw.

use postern_protocol::enrollment::Enrollment;
use postern_protocol::text::is_login_name;
use postern_protocol::{
    AgentFacts, AgentMessage, PROTOCOL_VERSION, ServerMessage, SessionState, control::SessionReply,
};
use reqwest::Method;

use crate::harness::{TestServer, cli_home, run_cli, test_key};
use crate::raw;

const FORGED: &str =
    "\u{1b}[2J\u{1b}]0;owned\u{7}\n2026-01-01T00:00:00Z  agent.approved  evil  alice";

fn clean(text: &str) -> bool {
    !text.chars().any(char::is_control)
}

#[tokio::test]
async fn an_agent_s_escapes_and_forged_lines_are_cleaned_where_the_server_takes_them() {
    let server = TestServer::start().await;
    let key = test_key(41);
    let (handle, _) = raw::connect(server.agent_addr(), &key).await;
    let mut link = raw::control(&handle).await;
    let hello = AgentMessage::Hello {
        version: PROTOCOL_VERSION,
        agent_version: FORGED.into(),
        heartbeat_ms: None,
        reports_logins: false,
        keeps_shells: false,
    };
    raw::send(&mut link, &hello).await;
    let Some(ServerMessage::Welcome { nonce, .. }) = raw::receive(&mut link).await else {
        panic!("no welcome");
    };
    let facts = AgentFacts {
        hostname: format!("box{FORGED}"),
        os: FORGED.into(),
        logins: vec!["alice".into(), FORGED.into(), "-oProxyCommand=sh".into()],
        ..Default::default()
    };
    let token: postern_protocol::EnrollmentToken =
        server.create_token(60, 1).await.parse().unwrap();
    let identity = ed25519_dalek::SigningKey::from_bytes(&[41; 32]);
    let enrollment = Enrollment::sign(
        &identity,
        key.public_key().to_openssh().unwrap(),
        Some("hostile".into()),
        facts,
        Some(token.secret().to_owned()),
        &server.server().host_key_fingerprint,
        &nonce,
    );
    raw::send(&mut link, &AgentMessage::Enroll(enrollment)).await;
    let agent = server
        .wait_agent("hostile", "approved and online", |a| {
            a.online && a.status == postern_protocol::AgentStatus::Approved
        })
        .await;
    assert!(
        clean(&agent.facts.hostname) && clean(&agent.facts.os),
        "{agent:?}"
    );
    assert_eq!(agent.facts.logins, ["alice"]);

    // A login stored before this check (written straight into the store here) is still never
    // certified: not a POSIX user name, no principal.
    let store = server.store().await;
    let mut stale = agent.facts.clone();
    stale.logins = vec!["-oProxyCommand=sh".into()];
    store.update_agent_facts(&agent.id, &stale).await.unwrap();
    let (status, body) = server.start_session("hostile", &server.admin_token).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/api/v1/sessions/{id}/certificate"),
            Some(&server.admin_token),
            Some(serde_json::json!({
                "public_key": test_key(42).public_key().to_openssh().unwrap(),
            })),
        )
        .await;
    assert_eq!(status, 400, "a certificate for a non-POSIX login: {body}");
    assert!(!is_login_name("-oProxyCommand=sh"));

    // The agent refuses the session with a hostile reason.
    let session = loop {
        match raw::receive(&mut link).await {
            Some(ServerMessage::StartSsh { session }) => break session,
            Some(_) => continue,
            None => panic!("the link closed"),
        }
    };
    assert_eq!(session.as_str(), id);
    let reply = AgentMessage::Session {
        session,
        reply: SessionReply::Refused {
            reason: format!("{FORGED}{}", "x".repeat(10_000)),
        },
    };
    raw::send(&mut link, &reply).await;
    let failed = server
        .wait_session(&id, &server.admin_token, SessionState::Failed)
        .await;
    let reason = failed.reason.unwrap();
    assert!(clean(&reason), "{reason:?}");
    assert!(reason.len() < 300, "{} bytes of reason", reason.len());

    // Nothing raw reaches a terminal either.
    let home = cli_home(&server, "admin", &server.admin_password).await;
    for args in [
        &["events", "--limit", "100"][..],
        &["sessions"],
        &["agents"],
    ] {
        let (ok, out, err) = run_cli(home.path(), args, None).await;
        assert!(ok, "{args:?}: {err}");
        assert!(
            !out.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?}: {out:?}"
        );
        assert!(!out.contains("\nagent.approved"), "{args:?}: {out}");
    }
}
