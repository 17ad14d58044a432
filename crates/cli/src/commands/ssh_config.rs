//! `postern ssh-config [--write]`: the OpenSSH configuration for `ssh AGENT.postern`.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use postern_protocol::AgentStatus;
use postern_protocol::api::AgentView;

use super::proxy::{HOST_SUFFIX, SshFiles};
use crate::client::Client;

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The block: before connecting, `ssh-cert` starts the session and refreshes the certificate
/// and known host (OpenSSH reads both after this `Match exec`); the ProxyCommand then carries
/// the connection over the session's data path.
pub fn block(files: &SshFiles) -> Result<String> {
    let exe = std::env::current_exe().context("cannot find the postern binary")?;
    let mut command = quote(&exe.display().to_string());
    if let Some(home) = std::env::var_os("POSTERN_HOME") {
        command = format!(
            "env POSTERN_HOME={} {command}",
            quote(&PathBuf::from(home).display().to_string())
        );
    }
    let certs = files.dir.join("certs");
    Ok(format!(
        "# Postern: ssh NAME{HOST_SUFFIX}, scp -O and rsync -e ssh reach agents through Postern.\n\
         Match host *{HOST_SUFFIX} exec \"{command} ssh-cert %n %r\"\n\
         \x20   ProxyCommand {command} proxy %n\n\
         \x20   IdentityFile {key}\n\
         \x20   CertificateFile {certs}/%n-cert.pub\n\
         \x20   IdentitiesOnly yes\n\
         \x20   UserKnownHostsFile {known}\n\
         \x20   StrictHostKeyChecking yes\n\
         \x20   PasswordAuthentication no\n\
         \x20   KbdInteractiveAuthentication no\n",
        key = files.key().display(),
        certs = certs.display(),
        known = files.known_hosts().display(),
    ))
}

pub async fn run(write: bool) -> Result<()> {
    let files = SshFiles::new()?;
    files.load_or_create_key()?;
    // Known hosts for every approved agent, from the server's records: no first-use trust.
    if let Ok(client) = Client::logged_in() {
        let agents: Vec<AgentView> = client.get_list("/api/v1/agents").await?;
        for agent in agents.iter().filter(|a| a.status == AgentStatus::Approved) {
            files.set_known_host(
                &format!("{}{HOST_SUFFIX}", agent.name),
                &agent.ssh_public_key,
            )?;
        }
    }
    let text = block(&files)?;
    if !write {
        print!("{text}");
        return Ok(());
    }
    let path = files.dir.join("config");
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let ssh_dir = PathBuf::from(home).join(".ssh");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&ssh_dir)?;
    let user_config = ssh_dir.join("config");
    let include = format!("Include {}", path.display());
    let current = std::fs::read_to_string(&user_config).unwrap_or_default();
    if !current.lines().any(|l| l.trim() == include) {
        // Include must come before any Host block to apply everywhere.
        std::fs::write(&user_config, format!("{include}\n\n{current}"))
            .with_context(|| format!("cannot update {}", user_config.display()))?;
    }
    println!(
        "wrote {} and included it from {}",
        path.display(),
        user_config.display()
    );
    Ok(())
}
