//! Throughput: BYTES up (`… -- cat > /dev/null`, the bench writing into the client's stdin)
//! and down (`… -- head -c BYTES /dev/zero`, the bench counting the client's stdout), timed
//! from spawning the client to its exit, through three paths:
//! `postern ssh AGENT -- CMD`; stock `ssh AGENT.postern CMD` with the config block
//! `postern ssh-config` prints (ProxyCommand `postern proxy`); and the baseline
//! `ssh -J relay -p PORT 127.0.0.1 CMD`. The Postern session and the baseline's `ssh -R` are
//! up before timing starts. Each transfer runs `repeats` times, the paths taking turns; the
//! figure is the median.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use postern_protocol::SessionState;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::baseline::Baseline;
use crate::postern::Deployment;
use crate::proc::Proc;
use crate::report::{Figure, VsBaseline};
use crate::stats;

const LIMIT: Duration = Duration::from_secs(900);

#[derive(Clone, Copy, PartialEq)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn command(self, bytes: u64) -> String {
        match self {
            Direction::Up => "cat > /dev/null".to_owned(),
            Direction::Down => format!("head -c {bytes} /dev/zero"),
        }
    }
}

/// A path's client, as a command line to which the remote command is appended.
struct Path {
    name: &'static str,
    make: Box<dyn Fn(&str) -> Command + Send + Sync>,
}

pub async fn measure(
    d: &Deployment,
    agent: &str,
    baseline: &Baseline,
    dir: &std::path::Path,
    bytes: u64,
    repeats: usize,
) -> Result<Vec<Figure>> {
    // The session first (untimed): every path below reuses it.
    let mut events = d.api.events().await?;
    let session = d.api.start_session(agent).await?;
    if session.state != SessionState::Running {
        let id = session.id.clone();
        events
            .wait_for(Duration::from_secs(60), "session running", |e| {
                let s = e.session.as_ref()?;
                (s.id == id && s.state == SessionState::Running).then_some(())
            })
            .await?;
    }
    let config = proxy_config(d, dir).await?;
    let (tunnel, _) = baseline.open_tunnel().await?;
    let cli = d.cli.clone();
    let agent_name = agent.to_owned();
    let paths = [
        Path {
            name: "postern ssh",
            make: Box::new(move |remote| {
                let mut c = cli.command();
                c.args(cli.ssh_args(&agent_name)).args(["--", remote]);
                c
            }),
        },
        Path {
            name: "postern proxy + ssh",
            make: {
                let config = config.clone();
                let login = d.cli.login.clone();
                let host = format!("{agent}.postern");
                Box::new(move |remote| {
                    let mut c = Command::new("ssh");
                    c.arg("-F").arg(&config);
                    if let Some(login) = &login {
                        c.arg("-l").arg(login);
                    }
                    c.arg(&host).arg(remote);
                    c
                })
            },
        },
        Path {
            name: "baseline ssh -J",
            make: {
                let port = tunnel.port;
                let config = baseline.client_config.clone();
                Box::new(move |remote| {
                    let mut c = Command::new("ssh");
                    c.arg("-F")
                        .arg(&config)
                        .args(["-J", "relay", "-p"])
                        .arg(port.to_string())
                        .arg("127.0.0.1")
                        .arg(remote);
                    c
                })
            },
        },
    ];
    let ciphers = json!({
        "proxy": negotiated(&paths[1]).await,
        "baseline": negotiated(&paths[2]).await,
    });

    let mut results = vec![[Vec::new(), Vec::new()]; paths.len()];
    for direction in [Direction::Up, Direction::Down] {
        for round in 0..repeats {
            for (p, path) in paths.iter().enumerate() {
                let remote = direction.command(bytes);
                let seconds = transfer((path.make)(&remote), direction, bytes)
                    .await
                    .with_context(|| format!("{} {remote}", path.name))?;
                let mbps = bytes as f64 / seconds / 1e6;
                eprintln!(
                    "  {} {} #{}: {mbps:.0} MB/s",
                    path.name,
                    if direction == Direction::Up {
                        "upload"
                    } else {
                        "download"
                    },
                    round + 1
                );
                results[p][direction as usize].push(mbps);
            }
        }
    }
    drop(tunnel);

    let median = |p: usize, dir: Direction| stats::summarize(&results[p][dir as usize]).p50;
    let mut figures = Vec::new();
    // Recorded once, on the first figure.
    let mut ciphers = Some(ciphers);
    for (dir, label) in [(Direction::Up, "upload"), (Direction::Down, "download")] {
        let base = median(2, dir);
        for (p, name) in [(0, "postern ssh"), (1, "postern proxy + ssh")] {
            let id = format!(
                "throughput.{}.{label}",
                if p == 0 { "ssh" } else { "proxy" }
            );
            figures.push(
                Figure::new(&id, format!("{label} via {name}"), "MB/s")
                    .postern(median(p, dir))
                    .baseline(Some(base))
                    .vs_baseline(VsBaseline::RatioAtLeast(1.0))
                    .details(json!({
                        "bytes": bytes,
                        "runs_mb_per_s": results[p][dir as usize],
                        "baseline_runs_mb_per_s": results[2][dir as usize],
                        "remote_command": dir.command(bytes),
                        "openssh_negotiated": ciphers.take(),
                    }))
                    .judged(),
            );
        }
    }
    Ok(figures)
}

/// The `postern ssh-config` block in a file of its own, used with `ssh -F`.
async fn proxy_config(d: &Deployment, dir: &std::path::Path) -> Result<PathBuf> {
    let block = d.cli.ssh_config().await?;
    let path = dir.join("postern_ssh_config");
    std::fs::write(&path, block)?;
    Ok(path)
}

/// The key exchange and ciphers OpenSSH negotiated on a path (from `ssh -v`), untimed.
async fn negotiated(path: &Path) -> Vec<String> {
    let plain = (path.make)("true");
    let plain = plain.as_std();
    let mut verbose = Command::new(plain.get_program());
    verbose
        .arg("-v")
        .args(plain.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match verbose.output().await {
        Ok(out) => String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains("kex: algorithm") || l.contains("cipher:"))
            .map(str::to_owned)
            .collect(),
        Err(e) => vec![format!("unavailable: {e}")],
    }
}

/// Runs one transfer; returns the seconds from spawn to exit.
pub async fn transfer(mut command: Command, direction: Direction, bytes: u64) -> Result<f64> {
    command
        .stdin(if direction == Direction::Up {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if direction == Direction::Down {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped());
    let buffer = payload();
    let started = Instant::now();
    let mut proc = Proc::spawn("transfer client", command)?;
    let stdin = proc.child().stdin.take();
    let stdout = proc.child().stdout.take();
    let mut stderr = proc.child().stderr.take();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut text).await;
        }
        text
    });
    let moved = tokio::time::timeout(LIMIT, async {
        match direction {
            Direction::Up => {
                let Some(mut stdin) = stdin else {
                    bail!("no stdin")
                };
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(buffer.len() as u64) as usize;
                    stdin.write_all(&buffer[..n]).await?;
                    left -= n as u64;
                }
                drop(stdin);
                Ok(bytes)
            }
            Direction::Down => {
                let Some(mut stdout) = stdout else {
                    bail!("no stdout")
                };
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0u64;
                loop {
                    let n = stdout.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                Ok(total)
            }
        }
    })
    .await
    .context("the transfer did not finish in time")??;
    let status = proc.wait_for(LIMIT).await?;
    let seconds = started.elapsed().as_secs_f64();
    let errors = errors.await.unwrap_or_default();
    if !status.success() {
        bail!("exited with {status}: {}", errors.trim());
    }
    if moved != bytes {
        bail!("moved {moved} bytes, not {bytes}: {}", errors.trim());
    }
    Ok(seconds)
}

/// 1 MiB of pseudo-random bytes (incompressible, should anything compress), reused.
fn payload() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
