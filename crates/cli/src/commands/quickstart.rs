//! `postern quickstart`: a server and an approved local agent in one process, with an admin
//! login, on the embedded store. Running it again reuses its data directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use postern_agent::{Agent, AgentOptions};
use postern_protocol::AgentStatus;
use postern_server::{Server, ServerConfig};

use crate::args::QuickstartArgs;

/// Quickstart keeps the generated admin password so that a second run can show it again;
/// a real server (`postern server`) never stores it.
const PASSWORD_FILE: &str = "quickstart-admin-password";

fn default_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(dir).join("postern").join("quickstart"));
    }
    let home =
        std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set; pass --data-dir"))?;
    Ok(PathBuf::from(home).join(".local/share/postern/quickstart"))
}

fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

pub async fn run(args: QuickstartArgs) -> Result<()> {
    let dir = match args.data_dir {
        Some(d) => d,
        None => default_dir()?,
    };
    let server_dir = dir.join("server");
    let agent_dir = dir.join("agent");

    let mut config = ServerConfig::new(&server_dir);
    config.http = args.http;
    config.agent_listen = args.agent_listen;
    let server = Server::start(config)
        .await
        .context("the quickstart server could not start")?;
    let password_path = server_dir.join(PASSWORD_FILE);
    let password = match &server.initial_admin_password {
        Some(p) => {
            write_secret(&password_path, p)?;
            p.clone()
        }
        None => std::fs::read_to_string(&password_path)
            .map(|p| p.trim().to_owned())
            .unwrap_or_else(|_| "(set before; not known to quickstart)".into()),
    };

    // The agent is approved through a one-use enrollment token, the same path a real
    // device takes; an agent approved on an earlier run needs none.
    let approved_before = postern_agent::state::AgentState::new(&agent_dir)
        .last_status()
        .is_some_and(|s| s.status == AgentStatus::Approved);
    let mut options = AgentOptions::new(server.agent_addr.to_string(), &agent_dir);
    options.name = Some(postern_agent::facts::hostname());
    if !approved_before {
        let token = server
            .create_enrollment_token(
                &postern_server::store::Actor::Quickstart,
                Duration::from_secs(600),
                1,
            )
            .await?;
        options.token = Some(token.token.parse()?);
    }
    let mut agent = Agent::start(options)?;
    let mut state = agent.state();
    let ready = tokio::time::timeout(
        Duration::from_secs(30),
        state.wait_for(|s| s.connected && s.status == Some(AgentStatus::Approved)),
    )
    .await;
    let name = match ready {
        Ok(Ok(s)) => s.name.clone().unwrap_or_default(),
        _ => {
            agent.shutdown().await.ok();
            server.shutdown().await;
            bail!("the quickstart agent did not come online within 30 s");
        }
    };

    // Plain HTTP on loopback (the default); HTTPS, self-signed, if --http is not loopback.
    let url = server.url();
    println!();
    println!("Postern is running.");
    println!();
    println!("  URL:       {url}");
    println!("  user:      admin");
    println!("  password:  {password}");
    println!("  agent:     {name} ({}) — approved, online", agent.did);
    println!("  data:      {}", dir.display());
    if let Some(fingerprint) = &server.tls_fingerprint {
        println!("  TLS:       {fingerprint} (self-signed; the browser will ask)");
    }
    println!();
    println!("Open {url} in a browser, log in, and click the terminal icon on {name}'s card.");
    println!();
    println!("Or, in another terminal:");
    match &server.tls_fingerprint {
        Some(fingerprint) => {
            println!("  postern login --server {url} --user admin --fingerprint {fingerprint}")
        }
        None => println!("  postern login --server {url} --user admin"),
    }
    println!("  postern agents");
    println!("  postern ssh {name}                 # a shell on this machine, through Postern");
    println!("  postern events --follow");
    println!(
        "  postern tokens create --ttl 1h   # then: postern agent --server {} --data-dir DIR --token TOKEN",
        server.agent_addr
    );
    println!();
    println!("Ctrl-C stops everything.");

    let outcome = tokio::select! {
        r = agent.wait() => r.map_err(anyhow::Error::from),
        _ = super::stop_signal() => Ok(()),
    };
    println!("stopping");
    agent.shutdown().await.ok();
    server.shutdown().await;
    outcome
}
