//! Tunnel ports: handed out from the configured range, bound on the tunnel address only.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpListener;

use crate::config::PortRange;

pub struct PortPool {
    bind: IpAddr,
    range: PortRange,
    in_use: Mutex<HashSet<u16>>,
    /// Where the next search starts, so that a just-released port is not reused at once.
    cursor: AtomicUsize,
}

impl PortPool {
    pub fn new(bind: IpAddr, range: PortRange) -> Self {
        Self {
            bind,
            range,
            in_use: Mutex::new(HashSet::new()),
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn range(&self) -> PortRange {
        self.range
    }

    /// Binds a free port of the range; `None` when every port is taken (by us or others).
    pub async fn bind(&self) -> Option<(u16, TcpListener)> {
        let n = self.range.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let port = self.range.first + ((start + i) % n) as u16;
            {
                let mut used = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
                if !used.insert(port) {
                    continue;
                }
            }
            match TcpListener::bind((self.bind, port)).await {
                Ok(listener) => {
                    self.cursor.store(start + i + 1, Ordering::Relaxed);
                    return Some((port, listener));
                }
                Err(_) => self.release(port),
            }
        }
        None
    }

    /// Ports taken (bound, or being bound) now.
    pub fn in_use(&self) -> usize {
        self.in_use.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn release(&self, port: u16) {
        self.in_use
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ports_come_from_the_range_on_the_bind_address_until_none_is_left() {
        // A range of two ports somewhere free.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        let range = PortRange {
            first: base,
            last: base,
        };
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), range);
        let (port, listener) = pool.bind().await.unwrap();
        assert_eq!(port, base);
        assert!(listener.local_addr().unwrap().ip().is_loopback());
        assert!(pool.bind().await.is_none(), "the range is exhausted");
        drop(listener);
        pool.release(port);
        assert_eq!(pool.bind().await.map(|(p, _)| p), Some(base));
    }
}
