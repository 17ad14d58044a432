//! Test harness: real servers and agents in-process on loopback port 0, temp dirs, the real
//! `postern` binary where a process matters, and helpers that wait on state — never on time.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use postern_agent::{Agent, AgentOptions, LinkState};
use postern_protocol::api::{AgentView, EventView, LoginResponse, Role};
use postern_server::config::PortRange;
use postern_server::store::Store;
use postern_server::{Server, ServerConfig, ServerError};
use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::Ed25519Keypair;
use serde_json::Value;
use tempfile::TempDir;

/// How long any wait for a state may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Waits until `probe` yields `Some`, checking again whenever a short tick passes.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    match found {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

pub struct TestServer {
    _dir: TempDir,
    /// `https` when the server serves TLS (its self-signed certificate).
    pub scheme: &'static str,
    pub server: Option<Server>,
    pub config: ServerConfig,
    pub admin_password: String,
    pub http: reqwest::Client,
    pub admin_token: String,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Self::test_config(&dir);
        tweak(&mut config);
        Self::launch(dir, config, None).await
    }

    /// A configuration on loopback port 0 with its data dir in `dir`.
    pub fn test_config(dir: &TempDir) -> ServerConfig {
        // Warnings show with a failing test's output; RUST_LOG=postern_server=debug,
        // postern_agent=debug shows what the parts did.
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        let mut config = ServerConfig::new(dir.path().join("server"));
        config.http = "127.0.0.1:0".parse().unwrap();
        config.agent_listen = "127.0.0.1:0".parse().unwrap();
        config.tunnel_ports = tunnel_ports();
        config
    }

    /// Starts a server on `config` (in `dir`); `admin_password` is the administrator's when the
    /// store already has one (another node of the same database made it).
    pub async fn launch(
        dir: TempDir,
        mut config: ServerConfig,
        admin_password: Option<String>,
    ) -> Self {
        let server = Server::start(config.clone()).await.unwrap();
        let admin_password = admin_password
            .or_else(|| server.initial_admin_password.clone())
            .expect("a new store's first start makes the administrator");
        let (scheme, http) = crate::tls_support::harness_client(&server, &config);
        // Restarts must come back on the same ports for agents to find them.
        config.http = server.http_addr;
        config.agent_listen = server.agent_addr;
        let mut this = Self {
            _dir: dir,
            scheme,
            server: Some(server),
            config,
            admin_password,
            http,
            admin_token: String::new(),
        };
        this.admin_token = this.login("admin", &this.admin_password.clone()).await;
        this
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.config.http)
    }

    pub fn agent_addr(&self) -> SocketAddr {
        self.config.agent_listen
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    pub async fn restart(&mut self) {
        self.server.take().unwrap().shutdown().await;
        // Every process this test process spawns (shells, ssh) holds copies of its sockets
        // until it execs, so the closed listeners may linger a moment past the shutdown.
        let server = eventually("the server to listen again on its ports", || async {
            match Server::start(self.config.clone()).await {
                Ok(server) => Some(server),
                Err(ServerError::Bind { .. }) => None,
                Err(e) => panic!("the server did not start again: {e}"),
            }
        })
        .await;
        self.server = Some(server);
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// A second handle on the server's store, for setting up states no API offers.
    pub async fn store(&self) -> Arc<dyn Store> {
        let database = self.config.store_database().unwrap();
        postern_server::store::open(&database, self.data_dir())
            .await
            .unwrap()
    }

    pub async fn add_user(&self, name: &str, role: Role) -> String {
        let password = format!("{name}-password-123");
        let database = self.config.store_database().unwrap();
        postern_server::add_user(&database, self.data_dir(), name, role, &password, false)
            .await
            .unwrap();
        self.login(name, &password).await
    }

    pub async fn login(&self, user: &str, password: &str) -> String {
        let response = self
            .http
            .post(format!("{}/api/v1/login", self.url()))
            .json(&serde_json::json!({"user": user, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "login as {user}");
        response.json::<LoginResponse>().await.unwrap().token
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url()));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            path,
            Some(&self.admin_token),
            Some(body),
        )
        .await
    }

    pub async fn agents(&self) -> Vec<AgentView> {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                "/api/v1/agents",
                Some(&self.admin_token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).unwrap()
    }

    pub async fn agent(&self, name: &str) -> Option<AgentView> {
        self.agents().await.into_iter().find(|a| a.name == name)
    }

    /// Waits until the agent named `name` satisfies `pred` in the API.
    pub async fn wait_agent(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&AgentView) -> bool,
    ) -> AgentView {
        eventually(&format!("agent {name} to be {what}"), || async {
            self.agent(name).await.filter(|a| pred(a))
        })
        .await
    }

    pub async fn create_token(&self, ttl_secs: u64, uses: u32) -> String {
        let (status, body) = self
            .admin_post(
                "/api/v1/tokens",
                serde_json::json!({"ttl_secs": ttl_secs, "uses": uses}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Waits until a stored event matches: an event is published just after the state
    /// change it reports, so a test that saw the state waits for the event.
    pub async fn wait_event(&self, what: &str, pred: impl Fn(&EventView) -> bool) -> EventView {
        eventually(&format!("event: {what}"), || async {
            self.events().await.into_iter().find(|e| pred(e))
        })
        .await
    }

    /// Every stored event (the stream without following).
    pub async fn events(&self) -> Vec<EventView> {
        self.events_as(&self.admin_token).await
    }

    /// Every stored event, as `token`'s user reads them.
    pub async fn events_as(&self, token: &str) -> Vec<EventView> {
        let text = self
            .http
            .get(format!("{}/api/v1/events?after=0&follow=false", self.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        parse_sse(&text)
    }
}

pub fn parse_sse(text: &str) -> Vec<EventView> {
    postern_protocol::sse::decode_all(text.as_bytes(), 1 << 20)
        .unwrap()
        .into_iter()
        .map(|event| serde_json::from_str(&event.data).unwrap())
        .collect()
}

pub struct TestAgent {
    pub dir: PathBuf,
    pub agent: Option<Agent>,
    pub options: AgentOptions,
    _tmp: Option<TempDir>,
}

impl TestAgent {
    pub fn options(server: &TestServer, name: &str, dir: &Path) -> AgentOptions {
        let mut options = AgentOptions::new(server.agent_addr().to_string(), dir);
        options.name = Some(name.to_owned());
        // Fast redial keeps restart tests short; the backoff shape is unit-tested.
        options.reconnect_min = Duration::from_millis(50);
        options.reconnect_max = Duration::from_millis(500);
        options
    }

    pub fn start(server: &TestServer, name: &str, token: Option<String>) -> Self {
        Self::start_with(server, name, token, |_| {})
    }

    /// `start`, with options changed by `tweak` (a proxy as the server, a sync rate).
    pub fn start_with(
        server: &TestServer,
        name: &str,
        token: Option<String>,
        tweak: impl FnOnce(&mut AgentOptions),
    ) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("agent");
        let mut options = Self::options(server, name, &dir);
        options.token = token.map(|t| t.parse().unwrap());
        tweak(&mut options);
        Self {
            dir,
            agent: Some(Agent::start(options.clone()).unwrap()),
            options,
            _tmp: Some(tmp),
        }
    }

    pub fn handle(&mut self) -> &mut Agent {
        self.agent.as_mut().unwrap()
    }

    pub async fn wait_state(&self, what: &str, pred: impl Fn(&LinkState) -> bool) -> LinkState {
        wait_agent_state(self.agent.as_ref().unwrap(), what, pred).await
    }

    pub async fn stop(&mut self) {
        if let Some(a) = self.agent.take() {
            a.shutdown().await.unwrap();
        }
    }

    pub fn restart(&mut self) {
        self.agent = Some(Agent::start(self.options.clone()).unwrap());
    }
}

/// Waits until the agent's own view of its link matches.
pub async fn wait_agent_state(
    agent: &Agent,
    what: &str,
    pred: impl Fn(&LinkState) -> bool,
) -> LinkState {
    let mut rx = agent.state();
    match tokio::time::timeout(DEADLINE, rx.wait_for(|s| pred(s))).await {
        Ok(Ok(s)) => s.clone(),
        _ => panic!("timed out waiting for the agent to be {what}"),
    }
}

pub fn approved(s: &LinkState) -> bool {
    s.connected && s.status == Some(postern_protocol::AgentStatus::Approved)
}

/// A deterministic Ed25519 key for raw SSH clients.
pub fn test_key(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

/// The `postern` binary under test.
pub fn postern() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_postern"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("POSTERN_HOME")
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    cmd
}

/// Runs the binary to completion with `home` as POSTERN_HOME and `stdin` as input.
pub async fn run_cli(home: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut cmd = postern();
    cmd.env("POSTERN_HOME", home).args(args);
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // A command that fails on its arguments exits without reading: a broken pipe here
        // is its answer, checked below, not the test's failure.
        let _ = pipe.write_all(input.as_bytes()).await;
        drop(pipe);
    }
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("postern command timed out")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A POSTERN_HOME logged in to `server` as `user` through the real CLI.
pub async fn cli_home(server: &TestServer, user: &str, password: &str) -> TempDir {
    cli_home_at(&server.url(), user, password).await
}

/// A POSTERN_HOME logged in to the server at `url` (a process, or a forwarder in front of
/// one) as `user` through the real CLI.
pub async fn cli_home_at(url: &str, user: &str, password: &str) -> TempDir {
    let home = tempfile::tempdir().unwrap();
    let (ok, _, err) = run_cli(
        home.path(),
        &["login", "--server", url, "--user", user, "--password-stdin"],
        Some(&format!("{password}\n")),
    )
    .await;
    assert!(ok, "login failed: {err}");
    home
}

impl TestServer {
    pub async fn session(&self, id: &str, token: &str) -> postern_protocol::api::SessionView {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/sessions/{id}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).unwrap()
    }

    /// Waits until session `id` is in `state`.
    pub async fn wait_session(
        &self,
        id: &str,
        token: &str,
        state: postern_protocol::SessionState,
    ) -> postern_protocol::api::SessionView {
        eventually(&format!("session {id} to be {state}"), || async {
            let s = self.session(id, token).await;
            (s.state == state).then_some(s)
        })
        .await
    }

    pub async fn start_session(&self, agent: &str, token: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/agents/{agent}/sessions"),
            Some(token),
            Some(serde_json::json!({})),
        )
        .await
    }
}

/// An approved, online agent on `server`.
pub async fn approved_agent(server: &TestServer, name: &str) -> TestAgent {
    let token = server.create_token(600, 1).await;
    let agent = TestAgent::start(server, name, Some(token));
    agent.wait_state("approved", approved).await;
    agent
}

/// Reads lines from a child's stream until one contains `needle`; returns all lines so far.
pub async fn read_until(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<impl tokio::io::AsyncRead + Unpin>>,
    needle: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let hit = line.contains(needle);
            seen.push(line);
            if hit {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "never saw {needle:?} in {seen:#?}"
    );
    seen
}

/// Tunnel ports of its own for each server a test starts. Tests run side by side in one
/// process, and "the session's port is closed now" holds only if no other test's server can
/// take that port the moment it is freed. Below the kernel's ephemeral range. Each test
/// process starts at a block of its own (from its pid), so that suites run side by side
/// (several work trees on one machine) rarely meet either.
pub fn tunnel_ports() -> PortRange {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    static START: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| (std::process::id() % 500) as u16);
    const FIRST: u16 = 21_000;
    const BLOCK: u16 = 16;
    let block = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 500;
    let first = FIRST + block * BLOCK;
    PortRange {
        first,
        last: first + BLOCK - 1,
    }
}

/// Nothing answers on `port` any more: the connection is refused, or taken in and dropped
/// without a byte. (A closed listener can linger a moment in the kernel: every process this
/// test process spawns holds copies of its sockets until it execs. Nobody accepts on it.)
pub async fn nothing_answers_on(port: u16) -> bool {
    use tokio::io::AsyncReadExt;
    match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        Err(_) => true,
        Ok(mut tcp) => {
            let mut byte = [0u8; 1];
            matches!(
                tokio::time::timeout(DEADLINE, tcp.read(&mut byte)).await,
                Ok(Ok(0) | Err(_))
            )
        }
    }
}

/// A port free now, for a process that must be told its listener's port up front. Taken in
/// 10000–19999: below the kernel's ephemeral range (32768 and up), where any outgoing
/// connection of another test could take a port as its source before the listener binds it,
/// and below the server's default tunnel ports (20000–29999), which a listener may not use.
/// Never the same port twice in one test process.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap();
    let mut seed = [0u8; 2];
    loop {
        getrandom::fill(&mut seed).unwrap();
        let port = 10_000 + u16::from_le_bytes(seed) % 10_000;
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
}

/// Established TCP connections whose local end is `port` (on `ip` only, if given): the links
/// a node really holds, from the kernel's socket tables (IPv4 and IPv6).
pub fn established_on(port: u16, ip: Option<std::net::Ipv4Addr>) -> usize {
    // /proc/net/tcp writes an IPv4 address as its bytes in host (little-endian) order, in hex.
    let ip = ip.map(|ip| format!("{:08X}", u32::from_le_bytes(ip.octets())));
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let Some((local_ip, local_port)) =
                        fields.get(1).and_then(|a| a.rsplit_once(':'))
                    else {
                        return false;
                    };
                    u16::from_str_radix(local_port, 16).ok() == Some(port)
                        && ip.as_deref().is_none_or(|ip| ip == local_ip)
                        && fields.get(3) == Some(&"01")
                })
                .count()
        })
        .sum()
}
