//! The user's side: `postern ssh` whose own network is cut silently for 30 s notices by itself
//! (its SSH keepalives go unanswered), re-attaches once the network is back and goes on with
//! the shell, contiguous, what was typed meanwhile taken once; and a client that does not read
//! never slows the shell — the agent keeps what it can and says what the client missed.

use std::path::Path;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{CUT, TYPED, contains, continues, counter, counting, finish, read_until, ssh_on_pty};
use crate::harness::{DEADLINE, TestServer, approved_agent, cli_home_at, eventually};
use crate::link_proxy::Proxy;

#[tokio::test]
async fn postern_ssh_goes_on_after_its_own_network_is_cut_for_30_s() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "homebody").await;
    // Everything the CLI says to the server (API and data path) goes through the forwarder.
    let proxy = Proxy::start(server.config.http).await;
    let home = cli_home_at(
        &format!("http://{}", proxy.addr),
        "admin",
        &server.admin_password,
    )
    .await;
    let (mut pty, mut child) = ssh_on_pty(home.path(), "homebody");
    let mut seen = counting(&mut pty).await;
    let before = *counter(&seen).last().unwrap();

    proxy.freeze();
    let cut = Instant::now();
    // Nothing tells it: it finds out by itself that the connection is dead.
    let mark = seen.len();
    read_until(&mut pty, &mut seen, |s| {
        contains(&s[mark.min(s.len())..], "connection to the device lost")
    })
    .await;
    pty.write_all(TYPED).await.unwrap();
    // The scenario's length: the network stays down for `CUT` in all.
    tokio::time::sleep_until((cut + CUT).into()).await;
    proxy.thaw();
    continues(&mut pty, &mut seen, before).await;
    finish(&mut pty, &mut child, &mut seen).await;
}

/// Each line of the fast counter: its number, 16,000 spaces and its number again, so that a
/// line cut short (where the stream skipped) is told from a whole one.
const PAD: usize = 16_000;
/// Lines the shell writes while its client is stalled: 48 MB, far more than everything between
/// the shell and the terminal holds (the client's SSH window of 8 MiB, the sockets, the
/// terminal) and the agent's 1 MiB.
const STALLED_LINES: u64 = 3_000;

/// The numbers of the whole lines of the fast counter, in the order shown.
fn whole_lines(seen: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(seen)
        .split(['\r', '\n'])
        .filter_map(|line| {
            let (first, rest) = line.strip_prefix('c')?.split_once(' ')?;
            let last = rest.trim_start_matches(' ');
            (first == last && rest.len() == PAD + last.len()).then(|| first.parse().ok())?
        })
        .collect()
}

/// The fast counter's last number, as the shell wrote it to `file`.
fn written(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Reads the terminal until `needle` shows after what was read so far, looking only at what
/// is new (the terminal shows megabytes here).
async fn read_to(pty: &mut pty_process::Pty, seen: &mut Vec<u8>, needle: &str) {
    let found = tokio::time::timeout(DEADLINE * 3, async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut from = seen.len();
        loop {
            let n = pty.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return false;
            }
            seen.extend_from_slice(&buf[..n]);
            if contains(&seen[from..], needle) {
                return true;
            }
            from = seen.len().saturating_sub(needle.len());
        }
    })
    .await;
    assert!(matches!(found, Ok(true)), "never saw {needle:?}");
}

#[tokio::test]
async fn a_client_that_does_not_read_never_slows_the_shell() {
    let server = TestServer::start().await;
    let _agent = approved_agent(&server, "chatterbox").await;
    let home = cli_home_at(&server.url(), "admin", &server.admin_password).await;
    let work = tempfile::tempdir().unwrap();
    let (file, stop) = (work.path().join("count"), work.path().join("stop"));
    let (mut pty, mut child) = ssh_on_pty(home.path(), "chatterbox");
    let mut seen = Vec::new();
    // As fast as the shell can: 16 KB lines, each number also written to a file.
    let command = format!(
        "stty -echo; i=0; while [ ! -e {stop} ]; do i=$((i+1)); \
         printf 'c%d %{PAD}s%d\\n' $i '' $i; echo $i > {file}; done; echo end-$i-of-count\n",
        stop = stop.display(),
        file = file.display(),
    );
    pty.write_all(command.as_bytes()).await.unwrap();
    read_to(&mut pty, &mut seen, &format!("{:PAD$}10\r\n", "")).await;

    // The terminal is not read from here on: everything between the shell and it fills; the
    // shell writes on all the same.
    let stalled = eventually("the shell to write its counter", || async {
        written(&file)
    })
    .await;
    // A guard against hanging, generous for a loaded machine; not a timing.
    let went_on = tokio::time::timeout(DEADLINE * 6, async {
        while written(&file).is_none_or(|n| n < stalled + STALLED_LINES) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        went_on.is_ok(),
        "the shell stopped at {:?} while its client was stalled (from {stalled})",
        written(&file)
    );
    std::fs::write(&stop, b"").unwrap();

    // Reading again: the client gets what it had in flight, then what the agent still keeps,
    // told that the rest between could not be kept.
    read_to(&mut pty, &mut seen, "-of-count\r\n").await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    let last: u64 = text
        .rsplit("end-")
        .next()
        .and_then(|t| t.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        contains(
            &seen,
            "bytes of output could not be kept and are missing here"
        ),
        "the skip was silent"
    );
    let lines = whole_lines(&seen);
    assert!(
        lines.windows(2).all(|w| w[0] < w[1]),
        "a line repeated or out of order"
    );
    assert_eq!(
        lines.last(),
        Some(&last),
        "the newest output is not all there"
    );
    // The agent's buffer (1 MiB, about 65 of these lines) ends contiguous with the end.
    let tail: Vec<u64> = lines.iter().rev().take(50).rev().copied().collect();
    let expected: Vec<u64> = (last - 49..=last).collect();
    assert_eq!(tail, expected);
    pty.write_all(b"exit 0\n").await.unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("postern ssh did not end")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
