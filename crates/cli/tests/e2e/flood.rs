//! A control link written faster than it is read. paramiko grants the server window only as
//! its application reads (as OpenSSH and asyncssh do), so a client that pipelines bad frames
//! without reading their replies exhausts the server's window: the server must neither wedge
//! (replies resume when the client reads) nor hold the link without bound (a client that
//! floods on without reading is dropped, its socket closed) — and must not log every frame.

use std::path::Path;

use postern_protocol::api::{EventKind, Liveness};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::harness::{TestServer, approved_agent, free_port, postern, read_until, test_key};

/// How long the client waits for anything: longer than the server's 30 s bound on a
/// backed-up link.
const STALL_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Connects with a key the server has never seen, opens the control subsystem, writes
/// `count` malformed frames (`batch` to a packet) from a thread without reading, and once they are written (or the
/// server stopped taking them) reads the replies (`read`; `never-read` only waits for the
/// server to close); then, if the link is still up, says hello.
/// Prints one JSON line with what happened.
const FLOODER: &str = r#"
import json, socket, struct, sys, threading
import paramiko

host, port, keyfile, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
wait, batch, mode = float(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
transport = paramiko.Transport((host, port))
transport.connect(username="agent", pkey=paramiko.Ed25519Key.from_private_key_file(keyfile))
chan = transport.open_session()
chan.invoke_subsystem("postern-control")
written = threading.Event()
result = {"written": False, "replies": 0, "closed": False, "welcome": False}

def write():
    try:
        # One SSH packet per write: `batch` frames in each.
        for _ in range(count // batch):
            chan.sendall((struct.pack(">I", 3) + b"bad") * batch)
        result["written"] = True
    except Exception:
        pass
    written.set()

threading.Thread(target=write, daemon=True).start()
written.wait(wait)
if mode == "never-read":
    # Never read: the transport thread ends when the server closes the connection.
    transport.join(wait)
    result["closed"] = not transport.is_active()
    print(json.dumps(result), flush=True)
    sys.exit(0)
chan.settimeout(wait)
buf = b""

def frame():
    global buf
    while True:
        if len(buf) >= 4:
            n = struct.unpack(">I", buf[:4])[0]
            if len(buf) >= 4 + n:
                body, buf = buf[4:4 + n], buf[4 + n:]
                return json.loads(body)
        try:
            chunk = chan.recv(65536)
        except socket.timeout:
            return None
        except (EOFError, OSError, paramiko.SSHException):
            # The server cut the connection (a reset while paramiko reopened the window).
            result["closed"] = True
            return None
        if not chunk:
            result["closed"] = True
            return None
        buf += chunk

while result["replies"] < count:
    message = frame()
    if message is None:
        break
    if message.get("type") == "error":
        result["replies"] += 1
if result["replies"] == count:
    hello = json.dumps({"type": "hello", "version": 1, "agent_version": "flood"}).encode()
    chan.sendall(struct.pack(">I", len(hello)) + hello)
    message = frame()
    result["welcome"] = bool(message) and message.get("type") == "welcome"
print(json.dumps(result), flush=True)
transport.close()
"#;

/// What the flooding client saw.
#[derive(Debug)]
struct Flood {
    written: bool,
    replies: u64,
    closed: bool,
    welcome: bool,
}

async fn flood(dir: &Path, gateway: std::net::SocketAddr, count: u64, batch: u64) -> Flood {
    flood_as(dir, gateway, count, batch, "read").await
}

async fn flood_as(
    dir: &Path,
    gateway: std::net::SocketAddr,
    count: u64,
    batch: u64,
    mode: &str,
) -> Flood {
    let script = dir.join("flood.py");
    std::fs::write(&script, FLOODER).unwrap();
    let key = dir.join("key");
    let text = test_key(77)
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .unwrap();
    std::fs::write(&key, text.as_bytes()).unwrap();
    // scripts/test makes the venv with paramiko and exports its interpreter.
    let python = std::env::var("POSTERN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = tokio::process::Command::new(python)
        .arg(&script)
        .arg(gateway.ip().to_string())
        .arg(gateway.port().to_string())
        .arg(&key)
        .arg(count.to_string())
        .arg((STALL_WAIT).as_secs().to_string())
        .arg(batch.to_string())
        .arg(mode)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the flooding client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    Flood {
        written: v["written"].as_bool().unwrap(),
        replies: v["replies"].as_u64().unwrap(),
        closed: v["closed"].as_bool().unwrap(),
        welcome: v["welcome"].as_bool().unwrap(),
    }
}

/// An agent that stayed online, with no offline event, through whatever the flood did.
async fn still_online(server: &TestServer, name: &str) {
    let view = server.agent(name).await.unwrap();
    assert!(view.online && view.liveness == Liveness::Online, "{view:?}");
    let events = server.events().await;
    assert!(
        !events.iter().any(|e| e.kind == EventKind::AgentOffline),
        "{events:#?}"
    );
}

/// 30,000 replies (~3 MB) are more than paramiko's 2 MiB window, and a frame to a packet
/// means more packets behind them than russh's channel queue holds; the frames fit what a
/// backed-up link still takes in. Before the fix, no reply came after the window: the
/// control task waited for window while russh waited for the full queue to drain.
#[tokio::test]
async fn a_client_that_pipelines_without_reading_gets_every_reply_once_it_reads() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "bystander").await;
    let dir = tempfile::tempdir().unwrap();
    let seen = flood(dir.path(), server.agent_addr(), 30_000, 1).await;
    assert!(seen.written, "{seen:?}");
    assert_eq!(seen.replies, 30_000, "{seen:?}");
    assert!(seen.welcome, "the link still answers: {seen:?}");
    still_online(&server, "bystander").await;
}

/// 300,000 frames without reading: more than a backed-up link takes in, so the server
/// drops the client and closes its connection, while the real agent stays online.
#[tokio::test]
async fn a_client_that_floods_without_ever_reading_is_dropped() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "bystander").await;
    let dir = tempfile::tempdir().unwrap();
    let seen = flood(dir.path(), server.agent_addr(), 300_000, 100).await;
    assert!(seen.closed, "the server closed the connection: {seen:?}");
    assert!(seen.replies < 300_000, "{seen:?}");
    still_online(&server, "bystander").await;
    // The dropped link holds nothing: a second flooder is served from scratch.
    let again = flood(dir.path(), server.agent_addr(), 1_000, 1).await;
    assert_eq!(again.replies, 1_000, "{again:?}");
}

/// A client that backs its link up, then neither reads nor writes: the server gives it
/// up after its bound on a backed-up link and closes the connection.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_within_the_bound() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "bystander").await;
    let dir = tempfile::tempdir().unwrap();
    let seen = flood_as(dir.path(), server.agent_addr(), 30_000, 1, "never-read").await;
    assert!(seen.written, "{seen:?}");
    assert!(seen.closed, "the server closed the connection: {seen:?}");
    still_online(&server, "bystander").await;
}

/// The server's own log (the real binary's stderr) has a few lines for a burst of bad
/// frames and one summary, not a line per frame.
#[tokio::test]
async fn a_burst_of_bad_frames_writes_a_bounded_number_of_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = free_port();
    let mut child = postern()
        .arg("server")
        .arg("--data-dir")
        .arg(dir.path().join("server"))
        .args(["--http", &format!("127.0.0.1:{}", free_port())])
        .args(["--agent-listen", &format!("127.0.0.1:{gateway}")])
        .args([
            "--tunnel-ports",
            &crate::harness::tunnel_ports().to_string(),
        ])
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    read_until(&mut stdout, "agent gateway").await;
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();

    let seen = flood(
        dir.path(),
        format!("127.0.0.1:{gateway}").parse().unwrap(),
        30_000,
        1,
    )
    .await;
    assert_eq!(seen.replies, 30_000, "{seen:?}");
    // The client has gone: its link's summary is the last word about it.
    let lines = read_until(&mut stderr, "more bad control frames from 127.0.0.1").await;
    let about = lines
        .iter()
        .filter(|l| l.contains("bad control frame"))
        .count();
    assert_eq!(about, 6, "five warnings and one summary: {lines:#?}");
    let summary = lines.last().unwrap();
    assert!(summary.contains("29995 more"), "{summary}");
}
