//! What the server's resource limits count by: the source of a connection (an address, or an
//! IPv6 /64), and the process's open-file limit, raised to its hard ceiling at start.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where a connection comes from, as limits count it: an IPv4 address, or an IPv6 /64 — one
/// subscriber's network, every address of which its holder can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    V4(Ipv4Addr),
    V6Net(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => Source::V6Net((v6.to_bits() >> 64) as u64),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(v4) => v4.fmt(f),
            Source::V6Net(net) => {
                write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(*net) << 64))
            }
        }
    }
}

/// The open-file limit of this process, after `raise_file_limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard one: every agent link, tunnel port and HTTP
/// connection is a file, and the usual soft limit (1,024, systemd's default) is far below
/// what a server with many agents holds. Logs both; `None` when the limit cannot be read.
pub fn raise_file_limit() -> Option<FileLimit> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (before, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit");
            return None;
        }
    };
    let mut soft = before;
    if before < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => soft = hard,
            Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
        }
    }
    tracing::info!(
        soft,
        hard,
        soft_at_start = before,
        "open-file limit (soft raised to hard)"
    );
    Some(FileLimit { soft, hard })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_network_is_one_source_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::from(a), Source::from(b));
        assert_ne!(Source::from(a), Source::from(c));
        assert_eq!(Source::from(a).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Source::from(mapped), Source::V4(Ipv4Addr::new(10, 0, 0, 1)));
    }
}
