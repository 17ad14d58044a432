//! The machine and the tree a run measured: recorded with every result.

use std::path::Path;

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub os: String,
    /// UTC, RFC 3339.
    pub date: String,
    pub git_commit: String,
    /// Files that differ from the commit (the measured tree is the working tree).
    pub git_changes: Vec<String>,
    /// `ssh -V` (OpenSSH prints it on stderr).
    pub openssh: String,
    pub rustc: String,
    /// Other compilers or heavy processes running at the start (they disturb figures).
    pub busy_at_start: Vec<String>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let out = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    match out {
        Ok(o) => {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text).trim().to_owned()
        }
        Err(e) => format!("unavailable: {e}"),
    }
}

pub async fn describe(repo: &Path) -> Machine {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_default();
    let memory_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default();
    let git_changes = run("git", &["status", "--porcelain"], repo)
        .await
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let busy = run("ps", &["-eo", "pcpu=,comm="], repo).await;
    let busy_at_start = busy
        .lines()
        .filter_map(|l| {
            let (cpu, name) = l.trim().split_once(' ')?;
            let cpu: f64 = cpu.parse().ok()?;
            (cpu >= 20.0 || name.trim() == "rustc").then(|| format!("{} ({cpu}% cpu)", name.trim()))
        })
        .collect();
    Machine {
        cpu_model,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        os,
        date: run("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"], repo).await,
        git_commit: run("git", &["rev-parse", "HEAD"], repo).await,
        git_changes,
        openssh: run("ssh", &["-V"], repo).await,
        rustc: run("rustc", &["--version"], repo).await,
        busy_at_start,
    }
}
