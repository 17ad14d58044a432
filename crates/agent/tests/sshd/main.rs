//! The agent's built-in SSH server against the real OpenSSH client and real OpenSSH
//! certificates (made with `ssh-keygen -s`), plus a russh client for what `ssh` cannot ask
//! (signals, several channels on one connection).
//!
//! The server runs exactly as in the agent — `sshd::serve` on a byte stream — here on the
//! streams of a loopback listener that belongs to the test, all for one session.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use postern_protocol::session::{CERT_AGENT_EXTENSION, CERT_SESSION_EXTENSION};
use russh::ChannelMsg;
use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::{Certificate, PrivateKey, PublicKey, PublicKeyOrCertificate};

mod fixture;

use fixture::*;

#[tokio::test]
async fn a_valid_certificate_runs_commands_with_their_output_and_exit_status() {
    let f = Fixture::start(&[]).await;
    let cert = f
        .certify("ca", &f.login, "-1m:+5m", Some(f.did.as_str()))
        .await;
    // The last output of a command that writes a lot and exits at once is never lost.
    let out = output(f.ssh(Some(&cert), &[], "seq 1 200000; echo err >&2; exit 3")).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 200000);
    assert!(stdout.ends_with("199999\n200000\n"));
    assert!(text(&out.stderr).contains("err"));

    // A login environment: the account's home, user and a PATH; only TERM/LANG/LC_* pass.
    let out = output(f.ssh(
        Some(&cert),
        &["-o", "SendEnv=LANG LC_* LD_PRELOAD"],
        "echo home=$HOME user=$USER lang=$LANG pre=$LD_PRELOAD; pwd",
    ))
    .await;
    let stdout = text(&out.stdout);
    let account = nix::unistd::User::from_name(&f.login).unwrap().unwrap();
    assert!(
        stdout.contains(&format!("home={} user={} ", account.dir.display(), f.login)),
        "{stdout}"
    );
    assert!(
        stdout.contains("pre=\n"),
        "LD_PRELOAD must not pass: {stdout}"
    );
}

#[tokio::test]
async fn a_pty_carries_term_size_and_exit_signals() {
    let f = Fixture::start(&[]).await;
    let cert = f
        .certify("ca", &f.login, "-1m:+5m", Some(f.did.as_str()))
        .await;
    let mut cmd = f.ssh(Some(&cert), &["-tt"], "echo term=$TERM; stty size; tty");
    cmd.env("TERM", "xterm-256color");
    let out = output(cmd).await;
    let stdout = text(&out.stdout);
    assert!(stdout.contains("term=xterm-256color"), "{stdout}");
    // No local terminal, so no size: the usual 80×24.
    assert!(stdout.contains("24 80"), "{stdout}");
    assert!(stdout.contains("/dev/pts/"), "{stdout}");

    // A program killed by a signal is reported as exit-signal, not as a status.
    let out = output(f.ssh(Some(&cert), &["-v"], "kill -TERM $$")).await;
    let stderr = text(&out.stderr);
    assert!(stderr.contains("rtype exit-signal"), "{stderr}");
    assert!(!stderr.contains("rtype exit-status"), "{stderr}");
}

#[tokio::test]
async fn everything_but_a_fresh_certificate_from_our_ca_for_this_agent_is_refused() {
    let f = Fixture::start(&[]).await;
    let login = f.login.clone();
    let cases = [
        (
            "expired",
            f.certify("ca", &login, "-20m:-10m", Some(f.did.as_str()))
                .await,
        ),
        (
            "not yet valid",
            f.certify("ca", &login, "+10m:+20m", Some(f.did.as_str()))
                .await,
        ),
        (
            "another CA",
            f.certify("other_ca", &login, "-1m:+5m", Some(f.did.as_str()))
                .await,
        ),
        (
            "another agent",
            f.certify("ca", &login, "-1m:+5m", Some("did:key:z6MkOther"))
                .await,
        ),
        ("no agent", f.certify("ca", &login, "-1m:+5m", None).await),
        (
            "another session",
            f.certify_for(
                "ca",
                &login,
                "-1m:+5m",
                Some(f.did.as_str()),
                Some("fedcba9876543210fedcba9876543210"),
            )
            .await,
        ),
        (
            "no session",
            f.certify_for("ca", &login, "-1m:+5m", Some(f.did.as_str()), None)
                .await,
        ),
        (
            "another login",
            f.certify("ca", "someone-else", "-1m:+5m", Some(f.did.as_str()))
                .await,
        ),
    ];
    for (what, cert) in cases {
        // Each certificate is read now: the next `certify` overwrites the file.
        let copy = f.path(&format!("{}-cert.pub", what.replace(' ', "-")));
        std::fs::copy(&cert, &copy).unwrap();
        let out = output(f.ssh(Some(&copy), &[], "true")).await;
        assert_eq!(out.status.code(), Some(255), "{what} was accepted");
        assert!(
            text(&out.stderr).contains("Permission denied"),
            "{what}: {}",
            text(&out.stderr)
        );
    }
    std::fs::remove_file(f.path("user-cert.pub")).unwrap();

    let out = output(f.ssh(None, &[], "true")).await;
    assert_eq!(out.status.code(), Some(255), "a plain key was accepted");
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        text(&out.stderr)
    );

    let password = [
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
    ];
    let out = output(f.ssh(None, &password, "true")).await;
    assert_eq!(
        out.status.code(),
        Some(255),
        "a password login was possible"
    );
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn a_login_the_agent_allows_runs_as_that_account() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only an agent running as root may switch logins");
        return;
    }
    // `nobody` exists everywhere; its shell refuses logins, which shows it is the one run.
    let mut f = Fixture::start(&["nobody".to_owned()]).await;
    f.login = "nobody".into();
    let cert = f
        .certify("ca", "nobody", "-1m:+5m", Some(f.did.as_str()))
        .await;
    let out = output(f.ssh(Some(&cert), &[], "id -un")).await;
    let both = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    if nobody.shell.ends_with("nologin") {
        assert!(both.contains("not available"), "{both}");
    } else {
        assert_eq!(text(&out.stdout).trim(), "nobody");
    }
    // A login that is not allowed is refused even with a valid certificate.
    let mut f = Fixture::start(&[]).await;
    f.login = "nobody".into();
    let cert = f
        .certify("ca", "nobody", "-1m:+5m", Some(f.did.as_str()))
        .await;
    let out = output(f.ssh(Some(&cert), &[], "true")).await;
    assert_eq!(out.status.code(), Some(255));
}

/// A russh client for what OpenSSH's command line does not send.
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

fn russh_certificate(f: &Fixture, user: &PrivateKey) -> Certificate {
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
    b.valid_principal(&f.login).unwrap();
    b.extension(CERT_AGENT_EXTENSION, f.did.as_str()).unwrap();
    b.extension(CERT_SESSION_EXTENSION, f.session.as_str())
        .unwrap();
    b.sign(&f.ca).unwrap()
}

async fn collect(
    channel: &mut russh::Channel<russh::client::Msg>,
) -> (Vec<u8>, Option<u32>, Option<russh::Sig>) {
    let (mut out, mut status, mut signal) = (Vec::new(), None, None);
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => signal = Some(signal_name),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    (out, status, signal)
}

/// A russh connection logged in with a valid certificate.
async fn russh_login(f: &Fixture) -> russh::client::Handle<Client> {
    let user = key(5);
    let cert = russh_certificate(f, &user);
    let config = Arc::new(russh::client::Config::default());
    let client = Client {
        host_key: f.host_key.public_key().clone(),
    };
    let mut handle = russh::client::connect(config, ("127.0.0.1", f.port), client)
        .await
        .unwrap();
    let auth = handle
        .authenticate_openssh_cert(&f.login, Arc::new(user), cert)
        .await
        .unwrap();
    assert!(auth.success());
    handle
}

/// Waits until the program printed `ready` (and so runs), skipping the request replies.
async fn until_ready(channel: &mut russh::Channel<russh::client::Msg>) {
    let mut out = Vec::new();
    while !out.ends_with(b"ready\r\n") && !out.ends_with(b"ready\n") {
        match channel.wait().await {
            Some(ChannelMsg::Data { data }) => out.extend_from_slice(&data),
            Some(ChannelMsg::Success) => continue,
            other => panic!("expected the program's output, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn several_channels_share_a_connection_and_signals_reach_the_program() {
    let f = Fixture::start(&[]).await;
    let session = async {
        let handle = russh_login(&f).await;
        let mut sleeper = handle.channel_open_session().await.unwrap();
        sleeper.exec(true, "echo ready; sleep 30").await.unwrap();
        let mut a = handle.channel_open_session().await.unwrap();
        let mut b = handle.channel_open_session().await.unwrap();
        a.exec(true, "echo from-a").await.unwrap();
        b.exec(true, "echo from-b; exit 4").await.unwrap();
        let ((out_a, status_a, _), (out_b, status_b, _)) =
            tokio::join!(collect(&mut a), collect(&mut b));
        assert_eq!((out_a.as_slice(), status_a), (&b"from-a\n"[..], Some(0)));
        assert_eq!((out_b.as_slice(), status_b), (&b"from-b\n"[..], Some(4)));

        // Wait until the sleeper runs, then interrupt it.
        until_ready(&mut sleeper).await;
        sleeper.signal(russh::Sig::INT).await.unwrap();
        let (_, status, signal) = collect(&mut sleeper).await;
        // The shell runs `sleep` as its last command, so the signal ends the shell itself.
        assert_eq!(status, None);
        assert!(matches!(signal, Some(russh::Sig::INT)), "{signal:?}");
    };
    tokio::time::timeout(DEADLINE, session)
        .await
        .expect("timed out");
}

/// An agent started in the background by a non-interactive shell inherits SIGINT and SIGQUIT
/// ignored; the programs it runs for users must not: ^C typed in a terminal interrupts them.
#[tokio::test]
async fn ctrl_c_interrupts_a_program_even_when_the_agent_was_started_ignoring_it() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: sets a disposition, no handler; other tests in this process only gain the same
    // inheritance, which they must withstand too.
    #[allow(unsafe_code)]
    unsafe {
        signal(Signal::SIGINT, SigHandler::SigIgn).unwrap();
        signal(Signal::SIGQUIT, SigHandler::SigIgn).unwrap();
    }
    let f = Fixture::start(&[]).await;
    let session = async {
        let handle = russh_login(&f).await;
        let mut channel = handle.channel_open_session().await.unwrap();
        channel
            .request_pty(true, "xterm", 80, 24, 0, 0, &[])
            .await
            .unwrap();
        channel.exec(true, "echo ready; sleep 30").await.unwrap();
        until_ready(&mut channel).await;
        channel.data(&b"\x03"[..]).await.unwrap();
        let (_, status, signal) = collect(&mut channel).await;
        // Ignored, the sleep would run its 30 s out and exit 0, past the deadline.
        assert!(
            matches!(signal, Some(russh::Sig::INT)) || status == Some(130),
            "status {status:?}, signal {signal:?}"
        );
    };
    tokio::time::timeout(DEADLINE, session)
        .await
        .expect("timed out: ^C did not interrupt the program");
}

/// Also: a connection counts as logged in (the agent's `log_in` hook) from its login to its
/// end, and one that never logs in never counts.
#[tokio::test]
async fn a_connection_that_does_not_log_in_is_closed_at_the_login_grace() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = Fixture::start_with(&[], |c| c.login_grace = Duration::from_millis(300)).await;
    let mut logged_in = f.logged_in.clone();
    // A client that logs in first: its grace ends before the stalled ones' below.
    let user = key(5);
    let cert = russh_certificate(&f, &user);
    let client = Client {
        host_key: f.host_key.public_key().clone(),
    };
    let mut handle = russh::client::connect(
        Arc::new(russh::client::Config::default()),
        ("127.0.0.1", f.port),
        client,
    )
    .await
    .unwrap();
    assert_eq!(*logged_in.borrow(), 0, "counted before logging in");
    let auth = handle
        .authenticate_openssh_cert(&f.login, Arc::new(user), cert)
        .await
        .unwrap();
    assert!(auth.success());
    let counted = tokio::time::timeout(DEADLINE, logged_in.wait_for(|n| *n == 1)).await;
    assert!(
        counted.is_ok_and(|r| r.is_ok()),
        "the login was not counted"
    );

    // One client never sends its banner; another sends it and stalls in the key exchange.
    let silent = tokio::net::TcpStream::connect(("127.0.0.1", f.port))
        .await
        .unwrap();
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", f.port))
        .await
        .unwrap();
    stalled.write_all(b"SSH-2.0-Stalled\r\n").await.unwrap();
    for (what, mut tcp) in [("silent", silent), ("stalled", stalled)] {
        let closed = tokio::time::timeout(DEADLINE, async {
            let mut buf = [0u8; 4096];
            // The server's banner and key exchange offer come first, then its end.
            while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        assert!(closed.is_ok(), "the {what} connection was never closed");
    }

    // The logged-in connection outlived its grace and still works.
    let mut channel = handle.channel_open_session().await.unwrap();
    channel.exec(true, "echo still-here").await.unwrap();
    let (out, status, _) = tokio::time::timeout(DEADLINE, collect(&mut channel))
        .await
        .unwrap();
    assert_eq!((out.as_slice(), status), (&b"still-here\n"[..], Some(0)));
    assert_eq!(
        *logged_in.borrow(),
        1,
        "the stalled connections were counted"
    );

    // The client leaves: it no longer counts.
    let bye = handle.disconnect(russh::Disconnect::ByApplication, "bye", "en");
    bye.await.unwrap();
    drop(handle);
    let gone = tokio::time::timeout(DEADLINE, logged_in.wait_for(|n| *n == 0)).await;
    assert!(
        gone.is_ok(),
        "a connection that ended still counts as logged in"
    );
}
