//! Shells the agent keeps (`sshd::Shells`): a shell outlives its client's connection for the
//! grace period, and its user re-attaches from the byte offset they had and receives exactly
//! what they missed; nobody else can attach; a shell nobody attached to within the grace is
//! ended and reported; detached shells printing without pause hold bounded memory.
//!
//! The agent's SSH server runs as in the agent (`sshd::serve` on a byte stream), here on the
//! streams of a loopback listener, with a russh client as Postern's clients use it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use postern_agent::facts;
use postern_agent::sshd::{Feed, Owner, SessionProcesses, Shells, SshdConfig, serve};
use postern_protocol::session::{CERT_AGENT_EXTENSION, CERT_SESSION_EXTENSION};
use postern_protocol::shell::{
    RESUME_ENV, Resume, SHELL_ENV, SHELL_NOTICE_EXT, ShellEnd, ShellNotice,
};
use postern_protocol::{AgentDid, SessionId};
use russh::ChannelMsg;
use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PublicKey, PublicKeyOrCertificate};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Generous: 50 shells on a loaded 2-core machine take their time.
const DEADLINE: Duration = Duration::from_secs(120);
const SESSION: &str = "0123456789abcdef0123456789abcdef";

fn key(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

struct Fixture {
    port: u16,
    host_key: PrivateKey,
    ca: PrivateKey,
    login: String,
    did: AgentDid,
    shells: Arc<Shells>,
    dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
}

impl Fixture {
    async fn start(grace: Duration, capacity: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (host_key, ca) = (key(1), key(2));
        let did = AgentDid::from_public_key(&[7; 32]);
        let logins = facts::logins(&[]);
        let processes = Arc::new(SessionProcesses::new(dir.path()));
        let shells = Shells::with_capacity(grace, capacity, processes.clone());
        let mut config = SshdConfig::new(
            host_key.clone(),
            ca.public_key().clone(),
            did.clone(),
            logins.clone(),
            processes,
        );
        config.shells = shells.clone();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let session = SessionId::parse(SESSION).unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(
                    config.clone(),
                    session.clone(),
                    tcp,
                    token.clone(),
                    || (),
                ));
            }
        });
        Self {
            port,
            host_key,
            ca,
            login: logins[0].clone(),
            did,
            shells,
            dir,
            _stop: stop.drop_guard(),
        }
    }

    /// A logged-in connection with a certificate whose key id is `key_id`.
    async fn connect(&self, key_id: &str) -> russh::client::Handle<Client> {
        let user = key(5);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut b = Builder::new(
            vec![1; 16],
            user.public_key().key_data().clone(),
            now - 60,
            now + 300,
        )
        .unwrap();
        b.cert_type(CertType::User).unwrap();
        b.key_id(key_id).unwrap();
        b.valid_principal(&self.login).unwrap();
        b.extension(CERT_AGENT_EXTENSION, self.did.as_str())
            .unwrap();
        b.extension(CERT_SESSION_EXTENSION, SESSION).unwrap();
        let cert = b.sign(&self.ca).unwrap();
        let client = Client {
            host_key: self.host_key.public_key().clone(),
        };
        let config = Arc::new(russh::client::Config::default());
        let mut handle = russh::client::connect(config, ("127.0.0.1", self.port), client)
            .await
            .unwrap();
        let auth = handle
            .authenticate_openssh_cert(&self.login, Arc::new(user), cert)
            .await
            .unwrap();
        assert!(auth.success());
        handle
    }
}

struct Client {
    host_key: PublicKey,
}

impl russh::client::Handler for Client {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(
            matches!(key, PublicKeyOrCertificate::PublicKey { key, .. } if key.key_data() == self.host_key.key_data()),
        )
    }
}

/// Opens a PTY shell channel with `env` (`POSTERN_SHELL` or `POSTERN_RESUME`).
async fn shell(
    handle: &russh::client::Handle<Client>,
    env: (&str, &str),
) -> russh::Channel<russh::client::Msg> {
    let channel = handle.channel_open_session().await.unwrap();
    channel
        .request_pty(false, "xterm", 200, 50, 0, 0, &[])
        .await
        .unwrap();
    channel.set_env(false, env.0, env.1).await.unwrap();
    channel.request_shell(false).await.unwrap();
    channel
}

/// What a client received: the shell's output, the agent's notices, the exit status.
#[derive(Default)]
struct Received {
    output: Vec<u8>,
    notices: Vec<ShellNotice>,
    status: Option<u32>,
    closed: bool,
}

impl Received {
    /// Reads until `done` holds (or the channel closes).
    async fn until(
        &mut self,
        channel: &mut russh::Channel<russh::client::Msg>,
        done: impl Fn(&Received) -> bool,
    ) {
        let reading = async {
            while !done(self) {
                match channel.wait().await {
                    Some(ChannelMsg::Data { data }) => self.output.extend_from_slice(&data),
                    Some(ChannelMsg::ExtendedData { data, ext }) if ext == SHELL_NOTICE_EXT => {
                        let text = String::from_utf8_lossy(&data).into_owned();
                        for line in text.lines() {
                            self.notices.push(ShellNotice::parse(line).unwrap());
                        }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => self.status = Some(exit_status),
                    Some(ChannelMsg::Close) | None => {
                        self.closed = true;
                        return;
                    }
                    Some(_) => {}
                }
            }
        };
        if tokio::time::timeout(DEADLINE, reading).await.is_err() {
            let tail = &self.output[self.output.len().saturating_sub(300)..];
            panic!(
                "timed out reading the shell; notices {:?}, closed {}, the output ends {:?}",
                self.notices,
                self.closed,
                String::from_utf8_lossy(tail)
            );
        }
    }

    fn has(&self, needle: &str) -> bool {
        String::from_utf8_lossy(&self.output).contains(needle)
    }
}

/// The numbers of the counter's lines (`c1`, `c2`…) in `output`, in order.
fn counter(output: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(output)
        .split(['\r', '\n'])
        .filter_map(|line| line.strip_prefix('c')?.parse().ok())
        .collect()
}

const COUNTER: &str = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo c$i; sleep 0.01; done\n";

#[tokio::test]
async fn a_kept_shell_outlives_its_connection_and_resumes_with_exactly_the_missed_bytes() {
    let f = Fixture::start(Duration::from_secs(60), 1024 * 1024).await;
    let session = SessionId::parse(SESSION).unwrap();
    let ann = "ann session 1";

    let first = f.connect(ann).await;
    let mut channel = shell(&first, (SHELL_ENV, "shell-one")).await;
    let mut seen = Received::default();
    seen.until(&mut channel, |r| !r.notices.is_empty()).await;
    assert_eq!(
        seen.notices,
        [ShellNotice::From {
            output: 0,
            input: 0
        }]
    );
    channel.data(COUNTER.as_bytes()).await.unwrap();
    seen.until(&mut channel, |r| counter(&r.output).len() >= 30)
        .await;
    // The connection dies without a goodbye (the link under it was cut).
    drop(channel);
    drop(first);
    tokio::time::timeout(DEADLINE, async {
        while f.shells.detached(&session) != 1 {
            f.shells.changed().await;
        }
    })
    .await
    .expect("the shell was never detached");

    // The same user re-attaches from the offset they had.
    let had = seen.output.len() as u64;
    let second = f.connect(ann).await;
    let resume = format!("shell-one:{had}");
    let mut channel = shell(&second, (RESUME_ENV, &resume)).await;
    let mut more = Received::default();
    more.until(&mut channel, |r| {
        !r.notices.is_empty() && counter(&r.output).len() >= 50
    })
    .await;
    assert_eq!(
        more.notices[0],
        ShellNotice::From {
            output: had,
            input: COUNTER.len() as u64
        },
        "the stream goes on where the client was, and the shell took the input once"
    );
    // Nothing lost, nothing repeated: the counter is contiguous across the two attachments.
    let mut all = seen.output.clone();
    all.extend_from_slice(&more.output);
    let numbers = counter(&all);
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, expected);
    assert_eq!(f.shells.detached(&session), 0);

    // Input typed now reaches the shell once; its end reaches the client with its status.
    channel.data(&b"\x03exit 7\n"[..]).await.unwrap();
    more.until(&mut channel, |r| r.closed).await;
    assert_eq!(more.status, Some(7));
    assert!(
        f.shells.sessions().is_empty(),
        "a delivered end is forgotten"
    );
}

/// A client displaced by a newer attachment of its user (its connection came back after the
/// user re-attached) no longer feeds the shell: the newer client was told how much input the
/// shell took and sends the rest itself, so the late copy would be taken twice.
#[tokio::test]
async fn a_displaced_clients_late_input_is_not_taken() {
    let f = Fixture::start(Duration::from_secs(60), 1024 * 1024).await;
    let session = SessionId::parse(SESSION).unwrap();
    let handle = f.connect("ann session 1").await;
    let mut channel = shell(&handle, (SHELL_ENV, "shell-late")).await;
    let mut seen = Received::default();
    seen.until(&mut channel, |r| !r.notices.is_empty()).await;
    let typed = b"echo o\"\"ne\n";
    channel.data(&typed[..]).await.unwrap();
    seen.until(&mut channel, |r| r.has("one\r\n")).await;

    let owner = Owner {
        login: f.login.clone(),
        key_id: "ann session 1".into(),
    };
    let kept = f
        .shells
        .find(&session, &Resume::parse("shell-late:0").unwrap(), &owner)
        .unwrap();
    // The SSH client's attachment was the first; this one displaces it.
    let (newer, _) = kept.attach();
    assert_eq!(newer, 2);
    kept.write(Feed::Data(b"echo late\n".to_vec().into()), 1)
        .await;
    assert_eq!(
        kept.read(0, 0, newer).input,
        typed.len() as u64,
        "the displaced client's input was taken"
    );
    kept.write(Feed::Data(b"echo t\"\"wo\n".to_vec().into()), newer)
        .await;
    tokio::time::timeout(DEADLINE, async {
        loop {
            let chunk = kept.read(0, usize::MAX, newer);
            let text = String::from_utf8_lossy(&chunk.data).into_owned();
            if text.contains("two\r\n") {
                assert!(!text.contains("late\r\n"), "{text}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the newer client's input never reached the shell");
}

#[tokio::test]
async fn only_its_user_attaches_and_a_shell_nobody_attached_to_ends_at_the_grace() {
    let f = Fixture::start(Duration::from_millis(500), 1024 * 1024).await;
    let session = SessionId::parse(SESSION).unwrap();
    let ann = f.connect("ann session 1").await;
    let mut channel = shell(&ann, (SHELL_ENV, "shell-two")).await;
    let mut seen = Received::default();
    channel.data(&b"echo pid=$$ re\"\"ady\n"[..]).await.unwrap();
    seen.until(&mut channel, |r| r.has(" ready\r")).await;
    let text = String::from_utf8_lossy(&seen.output).into_owned();
    let pid: i32 = text
        .split("pid=")
        .filter_map(|s| s.split(' ').next()?.parse().ok())
        .next()
        .unwrap();

    // Another certificate (another user's, or one for nobody in particular) is refused, and
    // does not displace the owner.
    let bob = f.connect("bob session 1").await;
    let mut other = shell(&bob, (RESUME_ENV, "shell-two:0")).await;
    let mut refused = Received::default();
    refused.until(&mut other, |r| r.closed).await;
    assert_eq!(refused.notices, [ShellNotice::Gone(ShellEnd::NotYours)]);
    assert!(
        refused.output.is_empty(),
        "scrollback leaked to another user"
    );
    channel.data(&b"echo still-\"\"mine\n"[..]).await.unwrap();
    seen.until(&mut channel, |r| r.has("still-mine\r\n")).await;

    // The owner leaves; nobody comes back within the grace.
    drop(channel);
    drop(ann);
    tokio::time::timeout(DEADLINE, async {
        while f.shells.take_expired().is_empty() {
            f.shells.changed().await;
        }
    })
    .await
    .expect("the grace never expired");
    assert!(!f.shells.has(&session));
    // Ended, and reaped by the agent (a zombie would still answer the probe).
    let pid = nix::unistd::Pid::from_raw(pid);
    tokio::time::timeout(DEADLINE, async {
        while nix::sys::signal::kill(pid, None).is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the expired shell still runs");
    let again = f.connect("ann session 1").await;
    let mut late = shell(&again, (RESUME_ENV, "shell-two:0")).await;
    let mut gone = Received::default();
    gone.until(&mut late, |r| r.closed).await;
    assert_eq!(gone.notices, [ShellNotice::Gone(ShellEnd::Unknown)]);
}

/// The issue's figure: 50 detached shells, each printing without pause, at the agent's own
/// buffer size. Every ring fills and goes on turning over (each shell writes twice what it
/// keeps) while none holds more than its bound.
#[tokio::test]
async fn detached_shells_printing_without_pause_hold_bounded_memory() {
    const SHELLS: usize = 50;
    const CAPACITY: usize = postern_agent::sshd::RING_BYTES;
    let f = Fixture::start(Duration::from_secs(600), CAPACITY).await;
    let session = SessionId::parse(SESSION).unwrap();
    let owner = Owner {
        login: f.login.clone(),
        key_id: "ann session 1".into(),
    };
    let start = f.dir.path().join("start");
    // Shell builtins only, no pause: 5 KiB a turn, as fast as the shell goes — once all 50
    // are there (started one by one behind 49 busy printers, the last would take minutes).
    // At the lowest priority: they take every idle cycle, not the ones the agent's readers
    // and the other tests of this binary, running meanwhile, need.
    let printer = format!(
        "renice -n 19 $$ >/dev/null; until [ -e {} ]; do read -t 0.05 x; done; while :; do printf '%s\\n' {{100001..100800}}; done\n",
        start.display()
    );
    let mut shells = Vec::new();
    for n in 0..SHELLS {
        let handle = f.connect("ann session 1").await;
        let name = format!("printer-{n:03}");
        let mut channel = shell(&handle, (SHELL_ENV, &name)).await;
        let mut seen = Received::default();
        seen.until(&mut channel, |r| !r.notices.is_empty()).await;
        channel.data(printer.as_bytes()).await.unwrap();
        // The terminal's echo: the shell has the line.
        seen.until(&mut channel, |r| r.has("100800}; done")).await;
        // The client's connection ends: it is detached; the shell prints on.
        drop(channel);
        drop(handle);
        let resume = Resume::parse(&format!("{name}:0")).unwrap();
        shells.push(f.shells.find(&session, &resume, &owner).unwrap());
    }
    tokio::time::timeout(DEADLINE, async {
        while f.shells.detached(&session) != SHELLS as u32 {
            f.shells.changed().await;
        }
    })
    .await
    .expect("the shells were not all detached");
    std::fs::write(&start, b"").unwrap();
    // Every ring fills and turns over twice; none grows past its bound meanwhile.
    let result = tokio::time::timeout(DEADLINE * 2, async {
        loop {
            let (n, bytes) = f.shells.held();
            assert_eq!(n, SHELLS);
            assert!(bytes <= SHELLS * CAPACITY, "{bytes} bytes held");
            if bytes == SHELLS * CAPACITY
                // Where a shell's output ends now: reading past the end says.
                && shells.iter().all(|k| k.read(u64::MAX, 0, 0).from >= 2 * CAPACITY as u64)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // The printers take the CPU: they end with the test, whatever its outcome.
    for group in f.shells.groups() {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
    result.expect("the rings never filled and turned over");
}
