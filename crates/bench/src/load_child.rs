//! The load mode as a child of `postern-bench run`: starts `postern-bench agents --events`
//! and follows what it says (which agent came up or went down, and when), for the idle-agents
//! and the nodes figures alike.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::proc::{self, Proc};

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LoadEvent {
    Ready { count: usize },
    Start { t_us: u64 },
    Up { i: usize, t_us: u64 },
    Down { i: usize, t_us: u64 },
}

/// What a load child is asked to hold.
pub struct LoadSpec<'a> {
    /// Every gateway each agent is given (`--server A,B,C`): each agent tries them in the
    /// agent library's order (random, like the real agent).
    pub servers: &'a [String],
    pub count: usize,
    pub name_prefix: &'a str,
    pub data_dir: PathBuf,
    pub token: &'a str,
    pub log: PathBuf,
}

/// The load child and what it has said so far.
pub struct Load {
    pub proc: Proc,
    events: mpsc::UnboundedReceiver<proc::Line>,
    online: Vec<bool>,
    pub up: usize,
    pub downs: usize,
}

impl Load {
    /// Starts the child; the agents start once it has said `ready` (see [`Load::started`]).
    pub fn spawn(bench: &Path, spec: &LoadSpec<'_>) -> Result<Self> {
        let log = std::fs::File::create(&spec.log)
            .with_context(|| format!("cannot create {}", spec.log.display()))?;
        let mut command = Command::new(bench);
        command
            .arg("agents")
            .arg("--server")
            .arg(spec.servers.join(","))
            .arg("--count")
            .arg(spec.count.to_string())
            .arg("--name-prefix")
            .arg(spec.name_prefix)
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .arg("--events")
            .env("POSTERN_TOKEN", spec.token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut proc = Proc::spawn(
            format!("postern-bench agents ({})", spec.name_prefix),
            command,
        )?;
        let events = proc.stdout_lines()?;
        Ok(Self {
            proc,
            events,
            online: vec![false; spec.count],
            up: 0,
            downs: 0,
        })
    }

    pub fn count(&self) -> usize {
        self.online.len()
    }

    /// Waits for the `start` line (identities made, agents starting); returns its time (µs).
    pub async fn started(&mut self, limit: Duration) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.next(deadline).await? {
                LoadEvent::Ready { count } => eprintln!("  {count} agent identities ready"),
                LoadEvent::Start { t_us } => return Ok(t_us),
                _ => {}
            }
        }
    }

    /// Whether agent `i` is connected and approved, as far as the child has said.
    pub fn is_up(&self, i: usize) -> bool {
        self.online.get(i).copied().unwrap_or(false)
    }

    fn apply(&mut self, event: &LoadEvent) {
        match event {
            LoadEvent::Up { i, .. } => {
                if let Some(slot) = self.online.get_mut(*i)
                    && !std::mem::replace(slot, true)
                {
                    self.up += 1;
                }
            }
            LoadEvent::Down { i, .. } => {
                if let Some(slot) = self.online.get_mut(*i)
                    && std::mem::replace(slot, false)
                {
                    self.up -= 1;
                    self.downs += 1;
                }
            }
            _ => {}
        }
    }

    pub async fn next(&mut self, deadline: tokio::time::Instant) -> Result<LoadEvent> {
        loop {
            let line = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => bail!("the load process went quiet (deadline passed)"),
                Ok(None) => bail!("the load process ended"),
                Ok(Some(line)) => line,
            };
            let Ok(event) = serde_json::from_str::<LoadEvent>(&line.text) else {
                continue;
            };
            self.apply(&event);
            return Ok(event);
        }
    }

    /// Reads events until all are online; returns the "up" times (µs) seen on the way, per
    /// agent the last one.
    pub async fn until_all_up(&mut self, limit: Duration) -> Result<HashMap<usize, u64>> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut ups = HashMap::new();
        while self.up < self.online.len() {
            let event = self
                .next(deadline)
                .await
                .with_context(|| format!("{}/{} agents online", self.up, self.online.len()))?;
            if let LoadEvent::Up { i, t_us } = event {
                ups.insert(i, t_us);
            }
        }
        Ok(ups)
    }

    /// Applies whatever arrived meanwhile without waiting; returns those events.
    pub fn drain(&mut self) -> Vec<LoadEvent> {
        let mut seen = Vec::new();
        while let Ok(line) = self.events.try_recv() {
            if let Ok(event) = serde_json::from_str::<LoadEvent>(&line.text) {
                self.apply(&event);
                seen.push(event);
            }
        }
        seen
    }
}
