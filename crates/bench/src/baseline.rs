//! The baseline: the OpenSSH reverse tunnel people build by hand. Two stock `sshd`s on
//! loopback, started by the bench with their own configs and keys (no system service): the
//! relay, and the device's own server. The device runs `ssh -N -R 0:127.0.0.1:DEVICE relay`;
//! the user runs `ssh -J relay -p ALLOCATED 127.0.0.1`. Every cipher, MAC and key exchange is
//! OpenSSH's default: nothing is tuned either way.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use crate::postern::SETUP_LIMIT;
use crate::proc::{self, Line, Proc};

pub const SSHD: &str = "/usr/sbin/sshd";

/// One `sshd -D -e` on a loopback port.
pub struct Sshd {
    pub proc: Proc,
    pub port: u16,
}

impl Sshd {
    async fn start(dir: &Path, name: &str, authorized_keys: &Path) -> Result<Self> {
        let host_key = dir.join(format!("{name}_host_ed25519_key"));
        keygen(&host_key).await?;
        let port = free_port()?;
        let config = dir.join(format!("{name}_sshd_config"));
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\n\
                 Port {port}\n\
                 HostKey {host_key}\n\
                 PidFile none\n\
                 AuthorizedKeysFile {keys}\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 AllowTcpForwarding yes\n\
                 PrintMotd no\n\
                 PrintLastLog no\n\
                 Subsystem sftp internal-sftp\n",
                host_key = host_key.display(),
                keys = authorized_keys.display(),
            ),
        )?;
        let log_path = dir.join(format!("{name}_sshd.log"));
        let mut command = Command::new(SSHD);
        command
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn(format!("sshd ({name})"), command)?;
        let mut lines = proc.stderr_lines()?;
        proc::wait_line(
            &mut lines,
            SETUP_LIMIT,
            "\"Server listening\" from sshd",
            |l| l.contains("Server listening").then_some(()),
        )
        .await
        .with_context(|| format!("sshd ({name}) did not start"))?;
        // Keep sshd's log: copy what it says to its log file from now on.
        tokio::spawn(async move {
            use std::io::Write;
            let mut file = std::fs::File::create(log_path).ok();
            while let Some(Line { text, .. }) = lines.recv().await {
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{text}");
                }
            }
        });
        Ok(Self { proc, port })
    }
}

/// A free loopback port (sshd cannot listen on port 0 and report it).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

async fn keygen(path: &Path) -> Result<()> {
    let path_text = path.display().to_string();
    proc::output(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "postern-bench",
            "-f",
            &path_text,
        ],
    )
    .await
    .map(|_| ())
}

/// The user running the bench.
pub fn login_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".to_owned())
}

/// The relay, the device's sshd, the user's key and the client config.
pub struct Baseline {
    pub relay: Sshd,
    pub device: Sshd,
    pub key: PathBuf,
    /// `-F` for the user's `ssh -J`: the jump uses the same key and options, and logs in as
    /// the bench's login.
    pub client_config: PathBuf,
}

/// The device's `ssh -N -R 0:…` to the relay, and the port the relay allocated.
pub struct Tunnel {
    pub proc: Proc,
    pub port: u16,
}

impl Baseline {
    pub async fn start(dir: &Path, login: &str) -> Result<Self> {
        std::fs::create_dir_all("/run/sshd").context("cannot create /run/sshd (sshd needs it)")?;
        std::fs::create_dir_all(dir)?;
        if !Path::new(SSHD).is_file() {
            bail!("{SSHD} is missing: apt-get install openssh-server (bench/run does)");
        }
        let key = dir.join("user_ed25519_key");
        keygen(&key).await?;
        let authorized_keys = dir.join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &authorized_keys)?;
        // sshd reads a user's authorized keys as that user: with `--login` another account
        // must be able to reach the file (the run's directory is root's, mode 0700).
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        };
        if let Some(run_dir) = dir.parent() {
            mode(run_dir, 0o711)?;
        }
        mode(dir, 0o711)?;
        mode(&authorized_keys, 0o644)?;
        let relay = Sshd::start(dir, "relay", &authorized_keys).await?;
        let device = Sshd::start(dir, "device", &authorized_keys).await?;
        let client_config = dir.join("ssh_config");
        std::fs::write(
            &client_config,
            format!(
                "Host relay\n\
                 \x20   HostName 127.0.0.1\n\
                 \x20   Port {relay}\n\
                 Host *\n\
                 \x20   User {user}\n\
                 \x20   IdentityFile {key}\n\
                 \x20   IdentitiesOnly yes\n\
                 \x20   StrictHostKeyChecking no\n\
                 \x20   UserKnownHostsFile /dev/null\n\
                 \x20   BatchMode yes\n\
                 \x20   LogLevel error\n",
                relay = relay.port,
                user = login,
                key = key.display(),
            ),
        )?;
        Ok(Self {
            relay,
            device,
            key,
            client_config,
        })
    }

    /// Starts the device's `ssh -N -R 0:127.0.0.1:DEVICE -p RELAY 127.0.0.1`; returns the
    /// tunnel and the time from spawning it to its "Allocated port" line (the relay's port
    /// accepting).
    pub async fn open_tunnel(&self) -> Result<(Tunnel, Duration)> {
        let mut command = Command::new("ssh");
        command
            .args(["-F", "/dev/null", "-i"])
            .arg(&self.key)
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                // The default, INFO: the level that prints "Allocated port".
                "-o",
                "LogLevel=INFO",
                "-N",
                "-R",
            ])
            .arg(format!("0:127.0.0.1:{}", self.device.port))
            .arg("-p")
            .arg(self.relay.port.to_string())
            .arg("-l")
            .arg(login_name())
            .arg("127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut proc = Proc::spawn("ssh -R (device)", command)?;
        let mut lines = proc.stderr_lines()?;
        let (at, port) = proc::wait_line(&mut lines, SETUP_LIMIT, "\"Allocated port\"", |l| {
            l.strip_prefix("Allocated port ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|p| p.parse::<u16>().ok())
        })
        .await?;
        Ok((Tunnel { proc, port }, at.duration_since(started)))
    }

    /// `ssh -tt -F CONFIG -J relay -p PORT 127.0.0.1` (a terminal forced), for a PTY.
    pub fn user_pty_command(&self, port: u16) -> pty_process::Command {
        let mut command = Command::new("ssh");
        command
            .arg("-tt")
            .arg("-F")
            .arg(&self.client_config)
            .args(["-J", "relay", "-p"])
            .arg(port.to_string())
            .arg("127.0.0.1")
            .env("TERM", "xterm-256color");
        pty_process::Command::from(command)
    }
}
