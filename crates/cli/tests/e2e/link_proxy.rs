//! A TCP forwarder a test can freeze, to cut a link silently.

use std::net::SocketAddr;

/// A TCP forwarder between agents and a server that a test can freeze: while frozen it moves
/// no byte either way yet keeps every connection open — a network that died silently, which
/// this machine cannot make otherwise (no netem, iptables or nft). Thawed, bytes flow again;
/// a side that closes is passed on. Everything stops when it is dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    frozen: tokio::sync::watch::Sender<bool>,
    refusing: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        Self::start_on(0, target).await
    }

    /// A forwarder on a given loopback port (0: any).
    pub async fn start_on(port: u16, target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, watch) = tokio::sync::watch::channel(false);
        let (refusing, refuse) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                if *refuse.borrow() {
                    // Closed at once: the dialler moves on to its next address.
                    drop(client);
                    continue;
                }
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                pipes.spawn(Self::pipe(cr, sw, watch.clone()));
                pipes.spawn(Self::pipe(sr, cw, watch.clone()));
            }
        });
        Self {
            addr,
            frozen,
            refusing,
            task,
        }
    }

    /// One direction: read, wait while frozen, write. Dropping the halves closes them.
    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut frozen: tokio::sync::watch::Receiver<bool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if frozen.wait_for(|f| !*f).await.is_err() {
                return;
            }
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if frozen.wait_for(|f| !*f).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    /// Stops forwarding; connections stay open.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Freezes the open connections and closes every new one at once: the host is gone
    /// for its links, and a dialler does not wait out a handshake on it.
    pub fn shun(&self) {
        self.refusing.send_replace(true);
        self.freeze();
    }

    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
