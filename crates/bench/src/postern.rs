//! Postern's own processes, all real release binaries: the server, the `postern` CLI (with its
//! own POSTERN_HOME) and the agent-only `postern-agent`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use postern_protocol::api::EventKind;
use tokio::process::Command;

use crate::api::{Api, Events};
use crate::proc::{self, Proc};

/// How long any single setup step may take before the bench gives up.
pub const SETUP_LIMIT: Duration = Duration::from_secs(120);

#[derive(Clone, Debug)]
pub struct Binaries {
    pub postern: PathBuf,
    pub agent: PathBuf,
    pub bench: PathBuf,
}

impl Binaries {
    /// The release binaries beside this one (target/release), or in `dir`.
    pub fn find(dir: Option<&Path>) -> Result<Self> {
        let bench = std::env::current_exe().context("cannot find the bench binary")?;
        let dir = match dir {
            Some(d) => d.to_owned(),
            None => bench
                .parent()
                .ok_or_else(|| anyhow!("the bench binary has no directory"))?
                .to_owned(),
        };
        let found = Self {
            postern: dir.join("postern"),
            agent: dir.join("postern-agent"),
            bench,
        };
        for path in [&found.postern, &found.agent] {
            if !path.is_file() {
                bail!(
                    "{} is missing: build it with `cargo build --release -p postern -p postern-agent` (bench/run does)",
                    path.display()
                );
            }
        }
        Ok(found)
    }
}

/// A `postern server` process with its data directory and addresses.
pub struct Server {
    pub proc: Proc,
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub gateway: SocketAddr,
    /// When the bench read the server's "agent gateway:" line (it prints it once listening).
    pub listening_wall: SystemTime,
    pub password: Option<String>,
    bin: PathBuf,
    log: PathBuf,
    /// Further command-line arguments (`--database URL`), kept for a restart.
    args: Vec<String>,
}

impl Server {
    /// Starts a server on loopback (port 0 = any free port); logs go to `log`.
    pub async fn start(
        bin: &Path,
        data_dir: &Path,
        http: SocketAddr,
        gateway: SocketAddr,
        log: &Path,
    ) -> Result<Self> {
        Self::start_with(bin, data_dir, http, gateway, log, &[]).await
    }

    /// [`Server::start`] with further arguments (`--database URL`, say).
    pub async fn start_with(
        bin: &Path,
        data_dir: &Path,
        http: SocketAddr,
        gateway: SocketAddr,
        log: &Path,
        args: &[String],
    ) -> Result<Self> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let mut command = Command::new(bin);
        command
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--http")
            .arg(http.to_string())
            .arg("--agent-listen")
            .arg(gateway.to_string())
            // Thousands of agents from one address at once is the load by construction (a
            // real fleet dials from many): the handshake caps would only pace it.
            .args([
                "--max-handshakes",
                "65536",
                "--max-handshakes-per-source",
                "65536",
            ])
            .args(args)
            .env_remove("POSTERN_CONFIG")
            .env_remove("POSTERN_DATABASE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        let mut proc = Proc::spawn("postern server", command)?;
        let mut lines = proc.stdout_lines()?;
        let mut password = None;
        let mut http_addr = None;
        let (_, gateway) = proc::wait_line(
            &mut lines,
            SETUP_LIMIT,
            "\"agent gateway:\" line from the server",
            |line| {
                let line = line.trim();
                if let Some(p) = line.strip_prefix("password:") {
                    password = Some(p.trim().to_owned());
                } else if let Some(url) = line.strip_prefix("HTTP API:") {
                    http_addr = url
                        .trim()
                        .trim_start_matches("http://")
                        .trim_end_matches("/api/v1")
                        .parse::<SocketAddr>()
                        .ok();
                }
                line.strip_prefix("agent gateway:")
                    .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            },
        )
        .await
        .with_context(|| format!("the server did not start (log: {})", log.display()))?;
        let listening_wall = SystemTime::now();
        let http = http_addr.ok_or_else(|| anyhow!("the server printed no HTTP address"))?;
        Ok(Self {
            proc,
            data_dir: data_dir.to_owned(),
            http,
            gateway,
            listening_wall,
            password,
            bin: bin.to_owned(),
            log: log.to_owned(),
            args: args.to_vec(),
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// SIGTERM (an orderly shutdown) and wait; returns how long it took.
    pub async fn stop(&mut self) -> Result<Duration> {
        let started = Instant::now();
        let status = self.proc.terminate(Duration::from_secs(60)).await?;
        if !status.success() {
            bail!("the server exited with {status} on SIGTERM");
        }
        Ok(started.elapsed())
    }

    /// SIGKILL: no orderly shutdown.
    pub async fn kill(&mut self) -> Result<()> {
        self.proc.kill().await?;
        Ok(())
    }

    /// Starts this (killed) server again on the same data dir and ports; returns the instant
    /// just before the new process was spawned.
    pub async fn start_again(&mut self) -> Result<Instant> {
        let spawned = Instant::now();
        let next = Self::start_with(
            &self.bin,
            &self.data_dir,
            self.http,
            self.gateway,
            &self.log,
            &self.args,
        )
        .await?;
        *self = next;
        Ok(spawned)
    }

    /// Stops this server and starts it again on the same data dir and ports.
    pub async fn restart(&mut self) -> Result<Duration> {
        let took = self.stop().await?;
        self.start_again().await?;
        Ok(took)
    }
}

/// The `postern` CLI with its own login (POSTERN_HOME).
#[derive(Clone)]
pub struct Cli {
    pub bin: PathBuf,
    pub home: PathBuf,
    /// The account `postern ssh` logs in to on the device [default: the agent's own].
    pub login: Option<String>,
}

impl Cli {
    /// `postern ssh -q [--login L] AGENT`, to which a `-- COMMAND` may be added.
    pub fn ssh_args(&self, agent: &str) -> Vec<String> {
        let mut args = vec!["ssh".to_owned(), "-q".to_owned()];
        if let Some(login) = &self.login {
            args.extend(["--login".to_owned(), login.clone()]);
        }
        args.push(agent.to_owned());
        args
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        self.environment(&mut command);
        command
    }

    fn environment(&self, command: &mut Command) {
        command
            .env("POSTERN_HOME", &self.home)
            .env("TERM", "xterm-256color")
            .env_remove("POSTERN_LOG");
    }

    /// The same program set up to run on a PTY.
    pub fn pty_command(&self) -> pty_process::Command {
        let mut command = Command::new(&self.bin);
        self.environment(&mut command);
        pty_process::Command::from(command)
    }

    pub async fn login(&self, url: &str, password: &str) -> Result<()> {
        let mut command = self.command();
        command
            .args([
                "login",
                "--server",
                url,
                "--user",
                "admin",
                "--password-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = Proc::spawn("postern login", command)?;
        if let Some(mut stdin) = child.child().stdin.take() {
            tokio::io::AsyncWriteExt::write_all(&mut stdin, format!("{password}\n").as_bytes())
                .await?;
        }
        let status = child.wait_for(SETUP_LIMIT).await?;
        if !status.success() {
            bail!("postern login failed: {status}");
        }
        Ok(())
    }

    /// `postern ssh-config`: the OpenSSH block for `ssh AGENT.postern`.
    pub async fn ssh_config(&self) -> Result<String> {
        let mut command = self.command();
        command
            .arg("ssh-config")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = command
            .kill_on_drop(true)
            .output()
            .await
            .context("postern ssh-config")?;
        if !out.status.success() {
            bail!(
                "postern ssh-config failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A `postern-agent` process, approved by a token.
pub struct AgentProc {
    pub proc: Proc,
    pub name: String,
}

impl AgentProc {
    /// Starts the agent (keys in `data_dir`, log beside it) serving `login`'s shell, and
    /// waits for the server to report it online (on `events`, which the caller opened before).
    pub async fn start(
        bin: &Path,
        server: &Server,
        events: &mut Events,
        name: &str,
        token: &str,
        login: &str,
        data_dir: &Path,
    ) -> Result<Self> {
        let log = &data_dir.with_extension("log");
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(bin);
        command
            .arg("--server")
            .arg(server.gateway.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--name")
            .arg(name)
            .arg("--token")
            .arg(token)
            // Running as root, the agent may serve another account's shell.
            .arg("--allow-logins")
            .arg(login)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        let proc = Proc::spawn(format!("postern-agent {name}"), command)?;
        events
            .wait_for(SETUP_LIMIT, "agent.online", |e| {
                (e.kind == EventKind::AgentOnline
                    && e.agent.as_ref().is_some_and(|a| a.name == name))
                .then_some(())
            })
            .await
            .with_context(|| format!("agent {name} never came online (log: {})", log.display()))?;
        Ok(Self {
            proc,
            name: name.to_owned(),
        })
    }
}

/// A server, a CLI login and the bench's own API login, in `dir`.
pub struct Deployment {
    pub server: Server,
    pub cli: Cli,
    pub api: Api,
}

impl Deployment {
    pub async fn start(bins: &crate::postern::Binaries, dir: &Path, label: &str) -> Result<Self> {
        let data = dir.join(format!("{label}-server"));
        let any: SocketAddr = "127.0.0.1:0".parse()?;
        let server = Server::start(
            &bins.postern,
            &data,
            any,
            any,
            &dir.join(format!("{label}-server.log")),
        )
        .await?;
        let password = server
            .password
            .clone()
            .ok_or_else(|| anyhow!("the new server printed no admin password"))?;
        let api = Api::login(&server.base_url(), "admin", &password).await?;
        let cli = Cli {
            bin: bins.postern.clone(),
            home: dir.join(format!("{label}-cli")),
            login: None,
        };
        cli.login(&server.base_url(), &password).await?;
        Ok(Self { server, cli, api })
    }
}
