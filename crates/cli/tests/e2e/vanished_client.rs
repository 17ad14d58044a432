//! A client that vanishes without a word — its cable pulled mid-session, no FIN, no RST — is
//! let go by the server: its WebSocket (here `postern ssh`'s data path) does not hold the
//! server's connection and tasks for ever. The client lives in a network namespace of its
//! own behind a veth pair, and the pair's link is taken down under it: nothing it sent is
//! answered any more, as on a real network (a forwarder in user space cannot do this: its
//! own kernel would keep answering for the client).

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use postern_protocol::api::Role;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::{TestServer, approved_agent, established_on, read_until, run_cli};

/// The client's own network: a namespace and a veth pair, removed when dropped.
struct ClientNetwork {
    namespace: String,
    host_link: String,
    server_ip: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {} (the test needs root for network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl ClientNetwork {
    /// 10.X.Y.1 (here) and 10.X.Y.2 (the namespace), from this process's id: test processes
    /// running side by side get networks of their own.
    fn new() -> Self {
        let pid = std::process::id();
        let (x, y) = (100 + (pid >> 8) % 100, pid & 0xff);
        let net = Self {
            namespace: format!("postern-vanish-{pid}"),
            host_link: format!("pvh{}", pid % 100_000),
            server_ip: Ipv4Addr::new(10, x as u8, y as u8, 1),
        };
        let peer = format!("pvp{}", pid % 100_000);
        let client_ip = Ipv4Addr::new(10, x as u8, y as u8, 2);
        ip(&["netns", "add", &net.namespace]);
        ip(&[
            "link",
            "add",
            &net.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &net.namespace,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", net.server_ip),
            "dev",
            &net.host_link,
        ]);
        ip(&["link", "set", &net.host_link, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &net.namespace, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{client_ip}/30"), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        net
    }

    /// The cable is pulled: nothing passes either way from now on.
    fn cut(&self) {
        ip(&["link", "set", &self.host_link, "down"]);
    }
}

impl Drop for ClientNetwork {
    fn drop(&mut self) {
        // Removing the namespace removes the pair (and ends what still runs in it).
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_mid_session_is_let_go() {
    let network = ClientNetwork::new();
    let server = TestServer::start_with(|config| {
        config.http = (network.server_ip, 0).into();
    })
    .await;
    let _agent = approved_agent(&server, "dev1").await;
    server.add_user("ann", Role::Operator).await;
    let password = "ann-password-123";
    // Not loopback, so HTTPS (self-signed): the login pins its fingerprint.
    let home = tempfile::tempdir().unwrap();
    let fingerprint = server.server().tls_fingerprint.clone().unwrap();
    let (ok, _, err) = run_cli(
        home.path(),
        &[
            "login",
            "--server",
            &server.url(),
            "--user",
            "ann",
            "--password-stdin",
            "--fingerprint",
            &fingerprint,
        ],
        Some(&format!("{password}\n")),
    )
    .await;
    assert!(ok, "login failed: {err}");
    let port = server.config.http.port();

    let mut client = tokio::process::Command::new("ip");
    client
        .args(["netns", "exec", &network.namespace])
        .arg(env!("CARGO_BIN_EXE_postern"))
        .args(["ssh", "dev1", "--", "echo ready; exec sleep 600"])
        .env("POSTERN_HOME", home.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut client = client.spawn().unwrap();
    let mut out = BufReader::new(client.stdout.take().unwrap()).lines();
    read_until(&mut out, "ready").await;
    assert!(
        established_on(port, Some(network.server_ip)) >= 1,
        "the client's data path is open"
    );

    network.cut();
    // Idle (the command prints nothing more), the server learns of the loss only by asking:
    // keepalive after 30 s of silence, three probes 10 s apart. Without them it would hold
    // the connection for ever; the bound here is that, with room for a loaded machine.
    let let_go = tokio::time::timeout(Duration::from_secs(150), async {
        while established_on(port, Some(network.server_ip)) > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    assert!(
        let_go.is_ok(),
        "the server still holds {} connection(s) to a client gone for 150 s",
        established_on(port, Some(network.server_ip))
    );
    let _ = client.start_kill();
}
