//! `postern-bench agents`: the load mode. Holds N real agent links in this one process, each
//! agent with its own keys in its own subdirectory, all approved by one enrollment token, and
//! reports when each comes online and goes offline.
//!
//! With `--events` it prints one JSON object per line for `postern-bench run`:
//! `{"type":"ready","count":N}` once the identities exist (untimed: key generation is not
//! connecting), `{"type":"start","t_us":…}` just before the first agent starts, then
//! `{"type":"up"|"down","i":…,"t_us":…}` for every change (microseconds since the Unix epoch,
//! so that another process can compare them with its own clock). Without it, a line of
//! progress per second and a summary whenever all N are online.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Args;
use postern_agent::identity::Identity;
use postern_agent::{Agent, AgentOptions};
use postern_protocol::AgentStatus;
use tokio::sync::mpsc;

use crate::stats;

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// The server's agent gateway, HOST:PORT; several (repeated, or a comma list) for several
    /// nodes: every agent gets them all and dials them the way the real agent does (the agent
    /// library's order, reconnection backoff and jitter).
    #[arg(long, required = true, value_delimiter = ',')]
    pub server: Vec<String>,
    /// One enrollment token with at least COUNT uses.
    #[arg(long, env = "POSTERN_TOKEN", hide_env_values = true)]
    pub token: postern_protocol::EnrollmentToken,
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// Where the agents keep their keys (DIR/agent-00000 …); a temporary directory by default.
    /// Reusing one reconnects the same agents.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Source addresses to spread links over. Not possible yet: the agent library dials with
    /// no way to bind a source address (see crates/bench/README.md).
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
    /// Heartbeat interval of every agent (the agent's default).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub sync_rate: Duration,
    /// Agent names are PREFIX-00000 …
    #[arg(long, default_value = "load")]
    pub name_prefix: String,
    /// The number of this process's first agent (its name, key directory and event index):
    /// several load processes share one fleet, each its own block of numbers.
    #[arg(long, default_value_t = 0)]
    pub first: usize,
    /// Agents started per second (0: all at once). A fleet that enrolls for the first time
    /// does not do so in one instant; see crates/bench/README.md, section 7.
    #[arg(long, default_value_t = 0.0)]
    pub start_rate: f64,
    /// Machine-readable event lines on stdout (for `postern-bench run`).
    #[arg(long)]
    pub events: bool,
}

/// `10s`, `500ms`, `2m` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 10s, 500ms or 2m");
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs_f64(seconds))
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

struct Change {
    index: usize,
    online: bool,
    t_us: u64,
}

pub async fn run(args: LoadArgs) -> Result<()> {
    if !args.source_ips.is_empty() {
        bail!(
            "--source-ips is not supported: AgentOptions has no source address and the link dials \
             with russh::client::connect(config, addr, handler), which cannot bind one; \
             10,000 loopback links to one port fit in the default ephemeral port range"
        );
    }
    let temp;
    let root = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new().prefix("postern-load-").tempdir()?;
            temp.path().to_owned()
        }
    };
    let dirs: Vec<PathBuf> = (args.first..args.first + args.count)
        .map(|number| root.join(format!("agent-{number:05}")))
        .collect();
    let prepared = Instant::now();
    for dir in &dirs {
        Identity::load_or_create(dir).with_context(|| format!("keys in {}", dir.display()))?;
    }
    let say = |line: String| println!("{line}");
    if args.events {
        say(format!("{{\"type\":\"ready\",\"count\":{}}}", args.count));
    } else {
        eprintln!(
            "{} agent identities ready in {:.1} s under {}",
            args.count,
            prepared.elapsed().as_secs_f64(),
            root.display()
        );
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<Change>();
    let start_us = now_us();
    let started = Instant::now();
    if args.events {
        say(format!("{{\"type\":\"start\",\"t_us\":{start_us}}}"));
    }
    let mut agents = Vec::with_capacity(args.count);
    for (index, dir) in dirs.into_iter().enumerate() {
        if args.start_rate > 0.0 {
            // Paced by the clock, not by what the agents do: a start schedule.
            let due = started + Duration::from_secs_f64(index as f64 / args.start_rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let number = args.first + index;
        let mut options = AgentOptions::new(String::new(), dir);
        options.servers = args.server.clone();
        options.name = Some(format!("{}-{number:05}", args.name_prefix));
        options.token = Some(args.token.clone());
        options.sync_rate = args.sync_rate;
        let agent = Agent::start(options).with_context(|| format!("agent {number}"))?;
        let mut state = agent.state();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut online = false;
            loop {
                let now = {
                    let s = state.borrow_and_update();
                    s.connected && s.status == Some(AgentStatus::Approved)
                };
                if now != online {
                    online = now;
                    let change = Change {
                        index,
                        online,
                        t_us: now_us(),
                    };
                    if tx.send(change).is_err() {
                        return;
                    }
                }
                if state.changed().await.is_err() {
                    return;
                }
            }
        });
        agents.push(agent);
    }
    drop(tx);
    if !args.events {
        eprintln!(
            "started {} agents in {:.2} s",
            args.count,
            started.elapsed().as_secs_f64()
        );
    }

    let mut report = Progress::new(args.count, start_us);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let stop = postern_agent::cli::stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            change = rx.recv() => {
                let Some(change) = change else { break };
                if args.events {
                    let kind = if change.online { "up" } else { "down" };
                    say(format!(
                        "{{\"type\":\"{kind}\",\"i\":{},\"t_us\":{}}}",
                        args.first + change.index, change.t_us
                    ));
                }
                if let Some(summary) = report.apply(&change) && !args.events {
                    eprintln!("{summary}");
                }
            }
            _ = tick.tick(), if !args.events => {
                if let Some(line) = report.progress() {
                    eprintln!("{line}");
                }
            }
            _ = &mut stop => break,
        }
    }
    // Close every link; the process ends even if some do not close in time.
    let closing = futures_join_all(agents);
    let _ = tokio::time::timeout(Duration::from_secs(10), closing).await;
    Ok(())
}

async fn futures_join_all(agents: Vec<Agent>) {
    let mut tasks = tokio::task::JoinSet::new();
    for agent in agents {
        tasks.spawn(async move {
            let _ = agent.shutdown().await;
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Counts agents online and summarizes each wave that brings all of them online.
struct Progress {
    count: usize,
    online: Vec<bool>,
    up: usize,
    /// When the current wave began (start, or the first loss after all were online).
    wave_start_us: u64,
    wave_ups: Vec<f64>,
    last_printed: usize,
}

impl Progress {
    fn new(count: usize, start_us: u64) -> Self {
        Self {
            count,
            online: vec![false; count],
            up: 0,
            wave_start_us: start_us,
            wave_ups: Vec::new(),
            last_printed: usize::MAX,
        }
    }

    /// Applies a change; returns a summary when it completes a wave.
    fn apply(&mut self, change: &Change) -> Option<String> {
        let was = std::mem::replace(&mut self.online[change.index], change.online);
        if was == change.online {
            return None;
        }
        if change.online {
            self.up += 1;
            self.wave_ups
                .push(change.t_us.saturating_sub(self.wave_start_us) as f64 / 1e6);
        } else {
            if self.up == self.count {
                self.wave_start_us = change.t_us;
                self.wave_ups.clear();
            }
            self.up -= 1;
        }
        (self.up == self.count).then(|| {
            let s = stats::summarize(&self.wave_ups);
            format!(
                "all {} agents online {:.2} s after the wave began (p50 {:.2} s, p99 {:.2} s; \
                 peak {} connections in one second)",
                self.count,
                s.max,
                s.p50,
                s.p99,
                stats::peak_in_window(&self.wave_ups, 1.0)
            )
        })
    }

    fn progress(&mut self) -> Option<String> {
        if self.up == self.last_printed {
            return None;
        }
        self.last_printed = self.up;
        Some(format!("{}/{} agents online", self.up, self.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("ten").is_err());
    }

    #[test]
    fn a_wave_completes_when_all_are_back() {
        let mut p = Progress::new(2, 0);
        let c = |index, online, t_us| Change {
            index,
            online,
            t_us,
        };
        assert!(p.apply(&c(0, true, 1_000_000)).is_none());
        assert!(p.apply(&c(1, true, 2_000_000)).is_some());
        assert!(p.apply(&c(0, false, 3_000_000)).is_none());
        assert!(p.apply(&c(0, true, 4_000_000)).is_some());
        assert_eq!(p.wave_ups, vec![1.0]);
    }
}
