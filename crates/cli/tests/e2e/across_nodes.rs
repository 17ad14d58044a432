//! A user on one node reaches an agent linked to another: `postern ssh`, stock OpenSSH
//! through `postern ssh-config` (ssh, scp), the web terminal's shell, sessions started
//! through either node at once —
//! and the node-to-node stream that carries it refuses anyone without the nodes' secret.

use std::net::SocketAddr;

use postern_protocol::api::TerminalServerFrame;
use postern_server::peer::wire::{self, Frame, Reply, Request, Side, Transcript, WireError};
use tokio::net::TcpStream;

use crate::cluster::Cluster;
use crate::harness::{approved_agent, cli_home, postern, run_cli};
use crate::openssh::{OpenSsh, random_bytes, run};
use crate::terminal::{Attached, running_session};

/// Two nodes that take node streams on loopback.
async fn two_nodes() -> Cluster {
    Cluster::start_with(2, |_, config| {
        config.node_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

#[tokio::test]
async fn postern_ssh_through_another_node_passes_exit_codes_and_binary_data() {
    let cluster = two_nodes().await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let _agent = approved_agent(a, "far").await;
    let home = cli_home(b, "admin", &b.admin_password).await;

    let (ok, out, err) = run_cli(
        home.path(),
        &["ssh", "far", "--", "echo", "hi;", "exit", "3"],
        None,
    )
    .await;
    assert!(!ok);
    assert_eq!(out, "hi\n", "{err}");
    assert!(err.contains("session running"), "{err}");

    let mut cmd = postern();
    cmd.env("POSTERN_HOME", home.path())
        .args(["ssh", "-q", "far", "--", "exit 42"]);
    let (code, _, err) = run(cmd, None).await;
    assert_eq!(code, 42, "{err}");

    let data = random_bytes(4 * 1024 * 1024);
    let mut cmd = postern();
    cmd.env("POSTERN_HOME", home.path())
        .args(["ssh", "-q", "far", "--", "cat"]);
    let (code, out, err) = run(cmd, Some(data.clone())).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out == data,
        "4 MiB came back different ({} bytes)",
        out.len()
    );

    // The session's tunnel is on the agent's node; stopping it through the user's node frees
    // it there.
    let sessions = a.store().await;
    let open = sessions
        .list_sessions(&postern_server::store::SessionFilter {
            state: Some(postern_protocol::SessionState::Running),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
    let port = open[0].port.unwrap();
    let (ok, out, err) = run_cli(home.path(), &["sessions", "stop", "far"], None).await;
    assert!(ok, "{err}");
    assert!(out.contains("stopped"), "{out}");
    assert!(
        crate::harness::nothing_answers_on(port).await,
        "the tunnel port on the agent's node is closed"
    );
}

#[tokio::test]
async fn stock_ssh_and_scp_through_another_node() {
    let cluster = two_nodes().await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let _agent = approved_agent(a, "far").await;
    let ssh = OpenSsh::new(b).await;

    let (code, out, err) = ssh.ssh("far.postern", "echo from-far; exit 7", None).await;
    assert_eq!(code, 7, "{err}");
    assert_eq!(out, b"from-far\n");

    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("up.bin");
    let payload = random_bytes(4 * 1024 * 1024 + 17);
    std::fs::write(&local, &payload).unwrap();
    let remote = dir.path().join("remote.bin");
    let mut up = ssh.command("scp");
    up.arg("-O")
        .arg(&local)
        .arg(format!("far.postern:{}", remote.display()));
    let (code, _, err) = run(up, None).await;
    assert_eq!(code, 0, "scp upload: {err}");
    assert_eq!(std::fs::read(&remote).unwrap(), payload);
    let back = dir.path().join("down.bin");
    let mut down = ssh.command("scp");
    down.arg("-O")
        .arg(format!("far.postern:{}", remote.display()))
        .arg(&back);
    let (code, _, err) = run(down, None).await;
    assert_eq!(code, 0, "scp download: {err}");
    assert_eq!(std::fs::read(&back).unwrap(), payload);
}

#[tokio::test]
async fn the_web_terminal_through_another_node() {
    let cluster = two_nodes().await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let _agent = approved_agent(a, "far").await;
    let token = b.login("admin", &b.admin_password).await;
    let id = running_session(b, "far", &token).await;
    let mut tab = Attached::open(b, &token, &id, "from=0&cols=100&rows=30").await;
    tab.type_in("echo far-$((40+2)); stty size\n").await;
    tab.read_until("far-42").await;
    tab.read_until("30 100").await;
    tab.type_in("exit 3\n").await;
    loop {
        match tab.next_frame().await {
            TerminalServerFrame::Exit { status, signal } => {
                assert_eq!((status, signal), (Some(3), None));
                break;
            }
            TerminalServerFrame::Attached { .. } | TerminalServerFrame::State { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn two_nodes_asked_at_once_start_one_session() {
    let cluster = two_nodes().await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let _agent = approved_agent(a, "both").await;
    let token = b.login("admin", &b.admin_password).await;
    let (on_a, on_b) = tokio::join!(
        a.start_session("both", &token),
        b.start_session("both", &token)
    );
    let mut statuses = [on_a.0, on_b.0];
    statuses.sort_unstable();
    // As on one node: one caller made it (201), the other got the same open session (200).
    assert_eq!(statuses, [200, 201], "{} / {}", on_a.1, on_b.1);
    assert_eq!(on_a.1["id"], on_b.1["id"]);
    let id = on_a.1["id"].as_str().unwrap();
    b.wait_session(id, &token, postern_protocol::SessionState::Running)
        .await;
}

/// A node's listener, its id and the nodes' secret (read from the store, as a node does).
async fn node_under_test(cluster: &Cluster) -> (SocketAddr, Vec<u8>) {
    let a = &cluster.nodes[0];
    let secret = a
        .store()
        .await
        .cluster_key(postern_server::peer::SECRET_KEY, "never stored", 0)
        .await
        .unwrap();
    (a.server().node_addr.unwrap(), secret.into_bytes())
}

/// Reads the challenge; returns the listener's id and nonce.
async fn challenge(tcp: &mut TcpStream) -> (String, String) {
    match wire::read_frame(tcp).await.unwrap() {
        Frame::Challenge { node, nonce } => (node, nonce),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

/// A dialer's proof for `challenge`, keyed with `secret`.
fn proof(secret: &[u8], (listener, listener_nonce): &(String, String), nonce: &str) -> Frame {
    let me = "0".repeat(32);
    let mac = Transcript {
        listener,
        listener_nonce,
        dialer: &me,
        dialer_nonce: nonce,
    }
    .prove(secret, Side::Dialer)
    .unwrap();
    Frame::Proof {
        node: me,
        nonce: nonce.to_owned(),
        mac,
    }
}

/// The stream is closed without a word: no proof, no reply.
async fn refused(tcp: &mut TcpStream) {
    match wire::read_frame(tcp).await {
        Err(WireError::Io(_)) => {}
        other => panic!("expected the stream to be closed, got {other:?}"),
    }
}

fn release() -> Frame {
    Frame::Request(Request::Release {
        session: postern_protocol::SessionId::parse(&"f".repeat(32)).unwrap(),
    })
}

#[tokio::test]
async fn node_streams_without_the_nodes_secret_are_refused() {
    let cluster = two_nodes().await;
    let (addr, secret) = node_under_test(&cluster).await;

    // The right secret: the listener proves itself and answers.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let first = challenge(&mut tcp).await;
    let good = proof(&secret, &first, &"1".repeat(64));
    wire::write_frame(&mut tcp, &good).await.unwrap();
    let Frame::Proof { mac, .. } = wire::read_frame(&mut tcp).await.unwrap() else {
        panic!("the listener did not prove itself");
    };
    Transcript {
        listener: &first.0,
        listener_nonce: &first.1,
        dialer: &"0".repeat(32),
        dialer_nonce: &"1".repeat(64),
    }
    .verify(&secret, Side::Listener, &mac)
    .unwrap();
    wire::write_frame(&mut tcp, &release()).await.unwrap();
    assert_eq!(
        wire::read_frame(&mut tcp).await.unwrap(),
        Frame::Reply(Reply::Ok)
    );

    // A wrong secret.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let c = challenge(&mut tcp).await;
    let wrong = proof(b"not the secret", &c, &"2".repeat(64));
    wire::write_frame(&mut tcp, &wrong).await.unwrap();
    refused(&mut tcp).await;

    // No proof: a request at once.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    challenge(&mut tcp).await;
    wire::write_frame(&mut tcp, &release()).await.unwrap();
    refused(&mut tcp).await;

    // The first stream's proof, replayed on a new stream (whose challenge differs).
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let again = challenge(&mut tcp).await;
    assert_ne!(again.1, first.1, "every challenge is fresh");
    wire::write_frame(&mut tcp, &good).await.unwrap();
    refused(&mut tcp).await;

    // Garbage instead of a frame.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    challenge(&mut tcp).await;
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"\x00\x05hello")
        .await
        .unwrap();
    refused(&mut tcp).await;
}
