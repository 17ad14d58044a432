//! `postern server` as a process of its own, for what only a process shows: `kill -9`. Its
//! ports are chosen up front, so that it starts again on them — same data directory, same
//! database — as a crashed server does.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use postern_protocol::api::EventView;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::harness::{free_port, postern, read_until, tunnel_ports};

type Stdout = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

pub struct ServerProcess {
    child: tokio::process::Child,
    /// Kept open: the server prints to it, and a closed pipe would end it.
    _stdout: Option<Stdout>,
    args: Vec<String>,
    log: Option<PathBuf>,
    http: reqwest::Client,
    pub url: String,
    /// The agent gateway, `127.0.0.1:PORT`.
    pub gateway: String,
    /// The administrator's password, printed by the first node of a database.
    pub password: Option<String>,
}

impl ServerProcess {
    /// A node on `database` with its data in `dir` on ports of its own. `extra` arguments
    /// go to `postern server`; its log goes to `log` (else beside the test's).
    pub async fn spawn(dir: &Path, database: &str, extra: &[&str], log: Option<PathBuf>) -> Self {
        Self::spawn_on(dir, database, free_port(), free_port(), extra, log).await
    }

    /// `spawn`, on these ports.
    pub async fn spawn_on(
        dir: &Path,
        database: &str,
        http: u16,
        gateway: u16,
        extra: &[&str],
        log: Option<PathBuf>,
    ) -> Self {
        let mut args: Vec<String> = vec![
            "server".into(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--database".into(),
            database.into(),
            "--http".into(),
            format!("127.0.0.1:{http}"),
            "--agent-listen".into(),
            format!("127.0.0.1:{gateway}"),
            "--tunnel-ports".into(),
            tunnel_ports().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let (child, stdout, password) = Self::run(&args, log.as_deref()).await;
        Self {
            child,
            _stdout: stdout,
            args,
            log,
            http: reqwest::Client::new(),
            url: format!("http://127.0.0.1:{http}"),
            gateway: format!("127.0.0.1:{gateway}"),
            password,
        }
    }

    /// Starts the process and waits until it serves; a log file is appended to, and stdout
    /// drained when nobody reads it (a full pipe would stall the server).
    async fn run(
        args: &[String],
        log: Option<&Path>,
    ) -> (tokio::process::Child, Option<Stdout>, Option<String>) {
        let mut command = postern();
        command.args(args);
        match log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap();
                command.stderr(Stdio::from(file));
            }
            None => {
                command.stderr(Stdio::inherit());
            }
        }
        let mut child = command.spawn().unwrap();
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let printed = read_until(&mut stdout, "agent gateway").await;
        let password = printed
            .iter()
            .find_map(|l| l.trim().strip_prefix("password:"))
            .map(|p| p.trim().to_owned());
        let stdout = match log {
            Some(_) => {
                tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
                None
            }
            None => Some(stdout),
        };
        (child, stdout, password)
    }

    /// `kill -9`, and waits for the process to be gone.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// Starts the process again as it was started (after `kill`).
    pub async fn start_again(&mut self) {
        let (child, stdout, _) = Self::run(&self.args, self.log.as_deref()).await;
        self.child = child;
        self._stdout = stdout;
    }

    /// A JSON call to the API; `(status, body)`, or `None` when the server does not answer
    /// (it may be starting again).
    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.try_call(method, path, token, body)
            .await
            .expect("the server answers")
    }

    pub async fn login(&self, user: &str, password: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/login",
                None,
                Some(json!({"user": user, "password": password})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    pub async fn create_token(&self, admin: &str, uses: u32) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/tokens",
                Some(admin),
                Some(json!({"uses": uses})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Every stored event (the stream without following).
    pub async fn events(&self, token: &str) -> Vec<EventView> {
        let text = self
            .http
            .get(format!("{}/api/v1/events?after=0&follow=false", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        crate::harness::parse_sse(&text)
    }
}
