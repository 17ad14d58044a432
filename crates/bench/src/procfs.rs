//! What the kernel says about a process: resident memory and CPU time, from /proc.

use std::time::Instant;

use anyhow::{Context, Result, anyhow};

fn status_field_kib(pid: i32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    kib_field(&text, field).ok_or_else(|| anyhow!("{path} has no {field}"))
}

/// `Name:   1234 kB` → 1234.
fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resident set size (VmRSS), KiB.
pub fn rss_kib(pid: i32) -> Result<u64> {
    status_field_kib(pid, "VmRSS:")
}

/// Peak resident set size (VmHWM), KiB.
pub fn peak_rss_kib(pid: i32) -> Result<u64> {
    status_field_kib(pid, "VmHWM:")
}

/// Proportional set size (shared pages divided among their sharers), KiB: the fair measure
/// for the many processes of a forking server.
pub fn pss_kib(pid: i32) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    kib_field(&text, "Pss:").ok_or_else(|| anyhow!("{path} has no Pss"))
}

/// The fields of /proc/PID/stat after the command name (which may hold spaces).
fn stat_fields(pid: i32) -> Result<Vec<String>> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| anyhow!("{path} is unreadable"))?;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

/// User plus system CPU time, in clock ticks (fields 14 and 15 of /proc/PID/stat).
pub fn cpu_ticks(pid: i32) -> Result<u64> {
    let fields = stat_fields(pid)?;
    // After the name: field 3 (state) is index 0, so field N is index N - 3.
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
}

/// CPU time used so far, in seconds.
pub fn cpu_seconds(pid: i32, ticks_per_second: u64) -> f64 {
    cpu_ticks(pid).map_or(f64::NAN, |t| t as f64 / ticks_per_second as f64)
}

fn parent_of(pid: i32) -> Option<i32> {
    stat_fields(pid).ok()?.get(1)?.parse().ok()
}

/// Every descendant of `root` (children, their children, …), not `root` itself.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut all: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok())
                && let Some(parent) = parent_of(pid)
            {
                all.push((pid, parent));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(all.iter().filter(|(_, p)| *p == parent).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

/// Clock ticks per second for `cpu_ticks` (`getconf CLK_TCK`; 100 on Linux).
pub async fn clock_ticks_per_second() -> u64 {
    crate::proc::output("getconf", &["CLK_TCK"])
        .await
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// CPU use of a set of processes over a window, as a share of one core.
pub struct CpuWindow {
    start: Instant,
    ticks: u64,
}

impl CpuWindow {
    pub fn start(pids: &[i32]) -> Result<Self> {
        Ok(Self {
            start: Instant::now(),
            ticks: total_ticks(pids)?,
        })
    }

    /// Percent of one core used since `start`, and the window's length in seconds.
    pub fn percent(&self, pids: &[i32], ticks_per_second: u64) -> Result<(f64, f64)> {
        let seconds = self.start.elapsed().as_secs_f64();
        let used = total_ticks(pids)?.saturating_sub(self.ticks) as f64 / ticks_per_second as f64;
        Ok((100.0 * used / seconds, seconds))
    }
}

fn total_ticks(pids: &[i32]) -> Result<u64> {
    pids.iter().map(|p| cpu_ticks(*p)).sum()
}

/// The soft limit on open files of this process.
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How many established TCP connections this machine has on local port `port` (IPv4 and
/// IPv6), from the kernel's socket tables: the links a server really holds, whatever its
/// API says.
pub fn established_on_port(port: u16) -> Result<usize> {
    let mut total = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(text) => text,
            // No IPv6 in this kernel: nothing there to count.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {table}")),
        };
        total += count_established(&text, port);
    }
    Ok(total)
}

/// `sl local_address rem_address st …` rows whose local port is `port` and state is 01
/// (ESTABLISHED); addresses are `HEXADDR:HEXPORT`.
fn count_established(table: &str, port: u16) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace().skip(1);
            let local_port = fields
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let state = fields.nth(1);
            local_port == Some(port) && state == Some("01")
        })
        .count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let pid = std::process::id() as i32;
        assert!(super::rss_kib(pid).unwrap() > 0);
        assert!(super::pss_kib(pid).unwrap() > 0);
        super::cpu_ticks(pid).unwrap();
        assert!(super::open_files_limit().unwrap() > 0);
    }

    #[test]
    fn counts_established_sockets_by_local_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n\
   1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000\n\
   2: 0100007F:9C40 0100007F:1F90 01 00000000:00000000\n\
   3: 0100007F:1F90 0100007F:9C41 06 00000000:00000000\n";
        assert_eq!(super::count_established(table, 0x1F90), 1);
        assert_eq!(super::count_established(table, 0x9C40), 1);
        assert_eq!(super::count_established(table, 1), 0);
    }

    #[test]
    fn sees_a_real_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _server = listener.accept().unwrap();
        assert_eq!(super::established_on_port(port).unwrap(), 1);
    }
}
