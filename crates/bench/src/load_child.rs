//! The load mode as children of `postern-bench run`: starts `postern-bench agents --events`
//! (one process per [`PER_PROCESS`] agents, or as told) and follows what they say (which agent came up or
//! went down, and when), for the idle-agents and the nodes figures alike.

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
    /// The log of the load processes: `LOG.0.log`, `LOG.1.log`, …
    pub log: PathBuf,
    /// The most agents one process holds ([`PER_PROCESS`] unless told).
    pub per_process: usize,
    /// Agents started per second over all the processes (0: all at once).
    pub start_rate: f64,
}

/// The most agents one load process holds by default. Each link is an open file, and this machine's
/// hard limit is 20,000 open files per process, which root cannot raise (the 30,000
/// agents need several processes); 10,000 also lets the processes use every core.
pub const PER_PROCESS: usize = 10_000;

/// The load children and what they have said so far. Agent numbers run across the children
/// (each child holds its own block, `--first`), so the events index one fleet.
pub struct Load {
    pub procs: Vec<Proc>,
    events: mpsc::UnboundedReceiver<proc::Line>,
    online: Vec<bool>,
    pub up: usize,
    pub downs: usize,
}

impl Load {
    /// Starts the children; the agents start once each has said `ready` (see
    /// [`Load::started`]).
    pub fn spawn(bench: &Path, spec: &LoadSpec<'_>) -> Result<Self> {
        let (tx, events) = mpsc::unbounded_channel();
        let mut procs = Vec::new();
        let per_process = spec.per_process.max(1);
        for (part, first) in (0..spec.count).step_by(per_process).enumerate() {
            let count = per_process.min(spec.count - first);
            let log = spec.log.with_extension(format!("{part}.log"));
            let log = std::fs::File::create(&log)
                .with_context(|| format!("cannot create {}", log.display()))?;
            let mut command = Command::new(bench);
            command
                .arg("agents")
                .arg("--server")
                .arg(spec.servers.join(","))
                .arg("--count")
                .arg(count.to_string())
                .arg("--first")
                .arg(first.to_string())
                .arg("--start-rate")
                .arg((spec.start_rate * count as f64 / spec.count as f64).to_string())
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
                format!("postern-bench agents ({} {part})", spec.name_prefix),
                command,
            )?;
            let mut lines = proc.stdout_lines()?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(line) = lines.recv().await {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            procs.push(proc);
        }
        Ok(Self {
            procs,
            events,
            online: vec![false; spec.count],
            up: 0,
            downs: 0,
        })
    }

    pub fn count(&self) -> usize {
        self.online.len()
    }

    /// The children's process ids (for their CPU and memory).
    pub fn pids(&self) -> Vec<i32> {
        self.procs.iter().map(Proc::pid).collect()
    }

    /// Waits for every child's `start` line (identities made, agents starting); returns the
    /// earliest (µs): the time the fleet began.
    pub async fn started(&mut self, limit: Duration) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut starts = Vec::with_capacity(self.procs.len());
        while starts.len() < self.procs.len() {
            match self.next(deadline).await? {
                LoadEvent::Ready { count } => eprintln!("  {count} agent identities ready"),
                LoadEvent::Start { t_us } => starts.push(t_us),
                _ => {}
            }
        }
        Ok(starts.into_iter().min().unwrap_or(0))
    }

    /// Ends every child (SIGTERM, then SIGKILL after `grace`).
    pub async fn terminate(&mut self, grace: Duration) {
        for proc in &mut self.procs {
            let _ = proc.terminate(grace).await;
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
                Err(_) => bail!("the load processes went quiet (deadline passed)"),
                Ok(None) => bail!("the load processes ended"),
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
