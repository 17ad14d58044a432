//! No process of a session outlives it. Every program a session starts leads a process group
//! of its own; the agent keeps those groups by session, and ends them all — hang-up first,
//! then SIGKILL — when the session stops, when the link that carried it drops, and when the
//! agent shuts down. An agent that was killed cannot do that, so the groups are also written
//! to the data directory, and the next start kills whatever of them survived.
//!
//! (The session leader also dies with the agent at once: `process` sets its parent-death
//! signal. Its background children do not inherit that; they are what the next start reaps.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use postern_protocol::SessionId;

use crate::identity::write_private;

/// Where the live sessions' process groups are written, in the agent's data directory.
pub const GROUPS_FILE: &str = "session-groups";
/// How long a hung-up session has to exit by itself (shells save their history) before
/// SIGKILL: long enough for a clean exit, short enough that a stopped session is gone soon.
const HANGUP_GRACE: Duration = Duration::from_secs(2);
/// How long SIGKILL may take to show in /proc before the agent stops waiting (and logs it).
const KILL_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

/// A process group a session started: its id and its leader's start time (clock ticks since
/// boot), which tells the leader apart from a later process that got the same pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Group {
    pgid: Pid,
    started: u64,
}

/// The process groups of the agent's sessions.
pub struct SessionProcesses {
    file: PathBuf,
    groups: Mutex<HashMap<SessionId, Vec<Group>>>,
}

impl SessionProcesses {
    /// Tracks groups in `data_dir`, which must exist.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            file: data_dir.join(GROUPS_FILE),
            groups: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Vec<Group>>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kills what a previous run of the agent (killed, so it could not) left running, and
    /// forgets it. Returns how many groups still had processes.
    pub fn reap_survivors(&self) -> usize {
        let Ok(text) = std::fs::read_to_string(&self.file) else {
            return 0;
        };
        let mut lines = text.lines();
        // After a reboot nothing survived, and the pids mean other processes now.
        if lines.next() != boot_id().as_deref() {
            self.persist(&HashMap::new());
            return 0;
        }
        let mut reaped = 0;
        for group in lines.filter_map(parse_record) {
            if !ours(group) {
                continue;
            }
            if !members(group.pgid).is_empty() {
                reaped += 1;
                tracing::warn!(
                    pgid = group.pgid.as_raw(),
                    "killing processes a session left running when the agent was killed"
                );
                let _ = killpg(group.pgid, Signal::SIGKILL);
            }
        }
        self.persist(&HashMap::new());
        reaped
    }

    /// Records that `session` started a program leading group `pgid`.
    pub fn add(&self, session: &SessionId, pgid: Pid) {
        // A leader already gone may have left children in its group: recorded all the same.
        let started = stat(pgid).map_or(0, |s| s.started);
        let mut groups = self.lock();
        groups
            .entry(session.clone())
            .or_default()
            .push(Group { pgid, started });
        self.persist(&groups);
    }

    /// Ends every process of `session`, and waits until they are gone (within a bound).
    pub async fn end(&self, session: &SessionId) {
        let taken = {
            let mut groups = self.lock();
            let taken = groups.remove(session).unwrap_or_default();
            if !taken.is_empty() {
                self.persist(&groups);
            }
            taken
        };
        end_groups(taken).await;
    }

    /// Ends the processes of every session (the link dropped, or the agent is stopping).
    pub async fn end_all(&self) {
        let taken: Vec<Group> = {
            let mut groups = self.lock();
            if groups.is_empty() {
                return;
            }
            let taken = groups.drain().flat_map(|(_, g)| g).collect();
            self.persist(&groups);
            taken
        };
        end_groups(taken).await;
    }

    /// Ends the processes of every session but the groups of `kept` shells, which outlive
    /// the link for their grace period (see `shells`).
    pub async fn end_all_but(&self, kept: &[Pid]) {
        let taken: Vec<Group> = {
            let mut groups = self.lock();
            let mut taken = Vec::new();
            for list in groups.values_mut() {
                let (keep, end): (Vec<Group>, Vec<Group>) =
                    list.drain(..).partition(|g| kept.contains(&g.pgid));
                *list = keep;
                taken.extend(end);
            }
            groups.retain(|_, list| !list.is_empty());
            if !taken.is_empty() {
                self.persist(&groups);
            }
            taken
        };
        end_groups(taken).await;
    }

    /// Ends one group at once: its session stopped while its program was being started.
    pub async fn end_group(&self, session: &SessionId, pgid: Pid) {
        let group = {
            let mut groups = self.lock();
            let Some(list) = groups.get_mut(session) else {
                return;
            };
            let Some(at) = list.iter().position(|g| g.pgid == pgid) else {
                return;
            };
            let group = list.swap_remove(at);
            if list.is_empty() {
                groups.remove(session);
            }
            self.persist(&groups);
            group
        };
        end_groups(vec![group]).await;
    }

    fn persist(&self, groups: &HashMap<SessionId, Vec<Group>>) {
        let mut text = boot_id().unwrap_or_default();
        text.push('\n');
        for group in groups.values().flatten() {
            text.push_str(&format!("{} {}\n", group.pgid.as_raw(), group.started));
        }
        if let Err(error) = write_private(&self.file, text.as_bytes()) {
            tracing::error!(%error, "could not record the sessions' processes");
        }
    }
}

/// Hangs up on every group, gives them `HANGUP_GRACE` to exit, then kills what is left.
async fn end_groups(groups: Vec<Group>) {
    let live: Vec<Group> = groups.into_iter().filter(|g| ours(*g)).collect();
    if live.is_empty() {
        return;
    }
    for group in &live {
        // SIGCONT wakes stopped jobs so that they see the hang-up, as a closing terminal does.
        let _ = killpg(group.pgid, Signal::SIGHUP);
        let _ = killpg(group.pgid, Signal::SIGCONT);
    }
    if all_gone(&live, HANGUP_GRACE).await {
        return;
    }
    for group in &live {
        let _ = killpg(group.pgid, Signal::SIGKILL);
    }
    if !all_gone(&live, KILL_WAIT).await {
        tracing::error!(?live, "session processes survived SIGKILL");
    }
}

async fn all_gone(groups: &[Group], within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if groups.iter().all(|g| members(g.pgid).is_empty()) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether `group` is still the one a session started: its leader runs with the recorded
/// start time, or it is gone — a pid still in use as a process group id is never handed to a
/// new process, so members of group `pgid` without their leader are the leader's children.
fn ours(group: Group) -> bool {
    match stat(group.pgid) {
        Some(leader) => leader.started == group.started,
        None => true,
    }
}

/// What /proc says about one process.
#[derive(Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub pgid: i32,
    pub started: u64,
}

/// Parses /proc/PID/stat. The command name may hold spaces and parentheses: the fields
/// after the last `)` are fixed.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 3 (state), 5 (pgrp) and 22 (starttime) of proc(5), counted from `state`.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgid: fields.get(2)?.parse().ok()?,
        started: fields.get(19)?.parse().ok()?,
    })
}

fn stat(pid: Pid) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw())).ok()?)
}

/// The running (not zombie) processes of group `pgid`.
pub fn members(pgid: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .map(Pid::from_raw)
        .filter(|pid| {
            stat(*pid).is_some_and(|s| s.pgid == pgid.as_raw() && s.state != 'Z' && s.state != 'X')
        })
        .collect()
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

fn parse_record(line: &str) -> Option<Group> {
    let (pgid, started) = line.split_once(' ')?;
    let pgid: i32 = pgid.parse().ok()?;
    // Never group 0 or 1 (the caller's own group, init): killpg would reach far too much.
    (pgid > 1).then_some(Group {
        pgid: Pid::from_raw(pgid),
        started: started.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "4242 (a) b (c) S 1 4240 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                pgid: 4240,
                started: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn records_never_name_group_zero_or_init() {
        assert_eq!(parse_record("0 5"), None);
        assert_eq!(parse_record("1 5"), None);
        assert_eq!(parse_record("-4 5"), None);
        assert_eq!(
            parse_record("77 5"),
            Some(Group {
                pgid: Pid::from_raw(77),
                started: 5
            })
        );
    }

    #[tokio::test]
    async fn a_recorded_group_is_killed_at_the_next_start_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 1000 & sleep 1000"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = Pid::from_raw(child.id() as i32);
        let session = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
        // The agent that started it "dies": only its record is left.
        SessionProcesses::new(dir.path()).add(&session, pgid);
        let next = SessionProcesses::new(dir.path());
        assert_eq!(next.reap_survivors(), 1);
        let _ = child.wait();
        assert!(all_gone(&[Group { pgid, started: 0 }], KILL_WAIT).await);
        assert_eq!(next.reap_survivors(), 0, "the record was forgotten");
    }
}
