//! Clients on a real terminal: a fresh PTY per client, as a person's terminal would be.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proc::Proc;

pub struct OnPty {
    pub pty: pty_process::Pty,
    pub proc: Proc,
    /// Everything read so far that nobody consumed.
    pub seen: Vec<u8>,
}

/// Spawns `command` on a new 40×120 PTY; returns it and the instant just before the spawn.
pub fn spawn(name: &str, command: pty_process::Command) -> Result<(OnPty, Instant)> {
    let (pty, pts) = pty_process::open().context("cannot open a PTY")?;
    pty.resize(pty_process::Size::new(40, 120))?;
    let started = Instant::now();
    let child = command
        .kill_on_drop(true)
        .spawn(pts)
        .with_context(|| format!("cannot start {name} on a PTY"))?;
    let proc = Proc::adopt(name, child)?;
    Ok((
        OnPty {
            pty,
            proc,
            seen: Vec::new(),
        },
        started,
    ))
}

impl OnPty {
    /// Waits for the first byte; returns when it arrived and the first chunk.
    pub async fn first_output(&mut self, limit: Duration) -> Result<(Instant, Vec<u8>)> {
        let mut buf = [0u8; 4096];
        let n = match tokio::time::timeout(limit, self.pty.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e).context("reading the PTY"),
            Err(_) => bail!("no output from {} within {limit:?}", self.proc.name),
        };
        let at = Instant::now();
        if n == 0 {
            bail!("{} closed its terminal without output", self.proc.name);
        }
        self.seen.extend_from_slice(&buf[..n]);
        Ok((at, buf[..n].to_vec()))
    }

    /// Proves (untimed) that what answered is a shell, not an error on its way out: types
    /// an `echo` and waits for its output (split by quotes, so the typed line cannot match).
    pub async fn prove_shell(&mut self, limit: Duration) -> Result<()> {
        self.pty.write_all(b"echo SHELL''-OK\r").await?;
        self.read_until(b"SHELL-OK", limit).await.with_context(|| {
            format!(
                "{} did not give a working shell: {:?}",
                self.proc.name,
                String::from_utf8_lossy(&self.seen)
            )
        })
    }

    /// Reads until `needle` has appeared; drops everything up to and including it.
    pub async fn read_until(&mut self, needle: &[u8], limit: Duration) -> Result<()> {
        let found = tokio::time::timeout(limit, async {
            let mut buf = [0u8; 4096];
            loop {
                if let Some(i) = find(&self.seen, needle) {
                    self.seen.drain(..i + needle.len());
                    return Ok(());
                }
                let n = self.pty.read(&mut buf).await?;
                if n == 0 {
                    bail!("the terminal closed");
                }
                self.seen.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        match found {
            Ok(r) => r.with_context(|| {
                format!(
                    "waiting for {:?} from {}; got {:?}",
                    String::from_utf8_lossy(needle),
                    self.proc.name,
                    String::from_utf8_lossy(&self.seen)
                )
            }),
            Err(_) => bail!(
                "no {:?} from {} within {limit:?}; got {:?}",
                String::from_utf8_lossy(needle),
                self.proc.name,
                String::from_utf8_lossy(&self.seen)
            ),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.pty.write_all(bytes).await?;
        Ok(())
    }

    /// Writes one byte and waits for it to come back; returns the round trip.
    pub async fn round_trip(&mut self, byte: u8, limit: Duration) -> Result<Duration> {
        self.seen.clear();
        let started = Instant::now();
        self.pty.write_all(&[byte]).await?;
        let mut buf = [0u8; 256];
        let back = tokio::time::timeout(limit, async {
            loop {
                let n = self.pty.read(&mut buf).await?;
                if n == 0 {
                    bail!("the terminal closed");
                }
                let at = Instant::now();
                if buf[..n].contains(&byte) {
                    return Ok(at);
                }
                self.seen.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        match back {
            Ok(at) => Ok(at?.duration_since(started)),
            Err(_) => bail!(
                "byte {byte:#04x} did not come back within {limit:?} (got {:?})",
                String::from_utf8_lossy(&self.seen)
            ),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
