//! Child processes the bench starts. Each runs in its own process group, and its guard kills
//! the whole group when dropped — on success, on error and on panic alike — so that nothing
//! the bench started (an `ssh` and its ProxyCommand, a server) outlives it.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub struct Proc {
    pub name: String,
    child: Child,
    pid: i32,
}

impl Proc {
    /// Spawns `command` in a new process group. Stdin is null unless the caller set it.
    pub fn spawn(name: impl Into<String>, mut command: Command) -> Result<Self> {
        let name = name.into();
        command.process_group(0).kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Self::adopt(name, child)
    }

    /// Takes a child spawned elsewhere that leads its own process group (a PTY child is a
    /// session leader, so its pid is its group).
    pub fn adopt(name: impl Into<String>, child: Child) -> Result<Self> {
        let name = name.into();
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("{name} exited before it could be tracked"))?;
        let pid = i32::try_from(pid).context("pid out of range")?;
        Ok(Self { name, child, pid })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The lines of the stdout the caller piped (see [`lines`]).
    pub fn stdout_lines(&mut self) -> Result<mpsc::UnboundedReceiver<Line>> {
        let stdout = self.child.stdout.take();
        let stdout = stdout.ok_or_else(|| anyhow!("{}: stdout is not piped", self.name))?;
        Ok(lines(stdout))
    }

    /// The lines of the stderr the caller piped (see [`lines`]).
    pub fn stderr_lines(&mut self) -> Result<mpsc::UnboundedReceiver<Line>> {
        let stderr = self.child.stderr.take();
        let stderr = stderr.ok_or_else(|| anyhow!("{}: stderr is not piped", self.name))?;
        Ok(lines(stderr))
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_for(&mut self, limit: Duration) -> Result<ExitStatus> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.with_context(|| format!("waiting for {}", self.name)),
            Err(_) => bail!("{} did not exit within {limit:?}", self.name),
        }
    }

    /// SIGTERM to the process itself; SIGKILL to the group if it is still there after `grace`.
    pub async fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if self.child.try_wait()?.is_none() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
            if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
                self.kill_group();
                return status.with_context(|| format!("waiting for {}", self.name));
            }
        }
        self.kill().await
    }

    /// SIGKILL to the whole group, then reaps the process.
    pub async fn kill(&mut self) -> Result<ExitStatus> {
        self.kill_group();
        self.child
            .wait()
            .await
            .with_context(|| format!("waiting for {}", self.name))
    }

    fn kill_group(&self) {
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// A line of output and when the bench read it.
pub struct Line {
    pub at: Instant,
    pub text: String,
}

/// Reads `reader` line by line in a task, timestamping each line as it is read; the task also
/// keeps draining the pipe after the receiver is gone, so the child never blocks on it.
pub fn lines<R: AsyncRead + Unpin + Send + 'static>(reader: R) -> mpsc::UnboundedReceiver<Line> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(reader).lines();
        while let Ok(Some(text)) = reader.next_line().await {
            let _ = tx.send(Line {
                at: Instant::now(),
                text,
            });
        }
    });
    rx
}

/// Waits for a line that `pick` accepts; returns it and what `pick` made of it.
pub async fn wait_line<T>(
    rx: &mut mpsc::UnboundedReceiver<Line>,
    limit: Duration,
    what: &str,
    mut pick: impl FnMut(&str) -> Option<T>,
) -> Result<(Instant, T)> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => bail!("no {what} within {limit:?}; output: {}", seen.join(" | ")),
            Ok(None) => bail!("the output ended before {what}: {}", seen.join(" | ")),
            Ok(Some(line)) => {
                if let Some(value) = pick(&line.text) {
                    return Ok((line.at, value));
                }
                if seen.len() < 20 {
                    seen.push(line.text);
                }
            }
        }
    }
}

/// Runs a short command to completion and returns its stdout; fails on a non-zero exit.
pub async fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs futures concurrently on this task and returns their outputs in order.
pub async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
