//! Facts about this device, read from the OS.

use std::fs;

use postern_protocol::AgentFacts;

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

pub fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| read_trimmed("/etc/hostname"))
        .unwrap_or_else(|| "agent".to_owned())
}

fn os_name() -> String {
    let pretty = fs::read_to_string("/etc/os-release").ok().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_owned())
    });
    pretty.unwrap_or_else(|| std::env::consts::OS.to_owned())
}

fn memory_bytes() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// The agent's own OS user name.
pub fn own_login() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".to_owned())
}

/// Logins sessions may use: the agent's own user first (the default), then — only when the
/// agent runs as root, the only case where it can switch users — the allowed ones.
pub fn logins(allowed: &[String]) -> Vec<String> {
    let mut logins = vec![own_login()];
    if nix::unistd::geteuid().is_root() {
        for login in allowed {
            if !logins.contains(login) {
                logins.push(login.clone());
            }
        }
    }
    logins
}

pub fn gather(allowed_logins: &[String]) -> AgentFacts {
    AgentFacts {
        hostname: hostname(),
        os: os_name(),
        kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        arch: std::env::consts::ARCH.to_owned(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_bytes: memory_bytes(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        logins: logins(allowed_logins),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn facts_describe_this_machine() {
        let facts = super::gather(&[]);
        assert_eq!(facts.logins, vec![super::own_login()]);
        assert!(!facts.hostname.is_empty());
        assert_eq!(facts.arch, std::env::consts::ARCH);
        assert!(facts.cpus >= 1);
        assert!(facts.memory_bytes > 0);
        assert!(!facts.kernel.is_empty());
    }
}
