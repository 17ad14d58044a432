//! `postern ssh AGENT` on a terminal, with a shell that survives: it asks the agent to keep
//! the shell (`POSTERN_SHELL`), counts the output it has shown and keeps what it typed. When
//! the connection to the device breaks (a server restart, the agent's link or the user's
//! network lost), it says so, re-connects with backoff and re-attaches from the output offset
//! it has (`POSTERN_RESUME`): the agent sends exactly what it missed (or says how much it can
//! no longer send), and what was typed meanwhile is sent once — the bytes after those the
//! shell says it took. It gives up only when the session has ended, with its reason.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use postern_protocol::SessionState;
use postern_protocol::api::SessionView;
use postern_protocol::shell::{
    RESUME_ENV, Resume, SHELL_ENV, SHELL_NOTICE_EXT, SentInput, ShellId, ShellNotice,
};
use russh::ChannelMsg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::session;
use crate::ssh_client::{Connection, RawMode, signal_number};

/// Typed input kept until the shell says it took it: far more than anyone types during an
/// outage; past it the oldest is dropped (and would be missing, not repeated).
const INPUT_KEPT: usize = 1024 * 1024;
/// Backoff between re-connection attempts: quick at first (a blip), then every few seconds.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What happened to one attachment.
enum Attached {
    /// The shell ended, with this status.
    Ended(u32),
    /// The connection broke; `kept` if the agent keeps the shell (a notice came).
    Lost { kept: bool },
    /// The agent no longer has the shell.
    Gone(String),
}

/// The stream's bookkeeping across attachments.
struct Stream {
    /// Output bytes shown, from the shell's start.
    shown: u64,
    /// Input sent, kept until the shell says it took it.
    input: SentInput,
    /// The terminal's input ended.
    eof: bool,
}

/// Runs the interactive shell on `connection`, re-attaching until it ends.
pub async fn interactive(
    client: &Client,
    session: &SessionView,
    mut connection: Connection,
    login: Option<String>,
) -> Result<u32> {
    let shell = new_shell_id()?;
    let _raw = RawMode::enable()?;
    let (typed_tx, mut typed) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0
                || typed_tx
                    .send(Bytes::copy_from_slice(&buf[..n]))
                    .await
                    .is_err()
            {
                break;
            }
        }
    });
    let mut stream = Stream {
        shown: 0,
        input: SentInput::new(INPUT_KEPT),
        eof: false,
    };
    let mut env = (SHELL_ENV, shell.to_string());
    loop {
        match attach(&connection, env.clone(), &mut stream, &mut typed).await? {
            Attached::Ended(status) => return Ok(status),
            Attached::Gone(why) => bail!("the shell is gone: {why}"),
            Attached::Lost { kept: false } => {
                drop(connection);
                return Err(anyhow!(session::end_reason(client, session).await));
            }
            Attached::Lost { kept: true } => {
                notice(
                    "connection to the device lost; re-attaching (what you type is sent once it is back)",
                );
                drop(connection);
                connection = reconnect(client, session, login.clone()).await?;
                let resume = Resume {
                    shell: shell.clone(),
                    offset: stream.shown,
                };
                env = (RESUME_ENV, resume.to_string());
            }
        }
    }
}

fn new_shell_id() -> Result<ShellId> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("no randomness for a shell id: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ShellId::parse(&hex).ok_or_else(|| anyhow!("bad shell id"))
}

/// A line of our own on the terminal (raw mode: carriage return and newline by hand).
fn notice(text: &str) {
    eprint!("\r\npostern: {text}\r\n");
}

/// Waits until the session runs again, then connects (certificate, data path, handshake).
/// Fails only when the session has ended.
async fn reconnect(
    client: &Client,
    session: &SessionView,
    login: Option<String>,
) -> Result<Connection> {
    let path = format!("/api/v1/sessions/{}", session.id);
    let mut delay = RETRY_MIN;
    loop {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
        let current: SessionView = match client.get(&path).await {
            Ok(current) => current,
            Err(_) => continue, // the server may be restarting
        };
        match current.state {
            SessionState::Running => {}
            s if s.is_final() || s == SessionState::Stopping => {
                bail!(session::end_reason(client, session).await)
            }
            _ => continue, // detached: the agent is not back yet
        }
        if let Ok(connection) =
            crate::commands::ssh::connect(client, &current, login.clone(), true).await
        {
            notice("re-attached");
            return Ok(connection);
        }
    }
}

/// One attachment: a PTY shell channel with `env`, carried until it ends or breaks.
async fn attach(
    connection: &Connection,
    env: (&'static str, String),
    stream: &mut Stream,
    typed: &mut mpsc::Receiver<Bytes>,
) -> Result<Attached> {
    let Ok(channel) = connection.handle().channel_open_session().await else {
        return Ok(Attached::Lost { kept: true });
    };
    let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
    let setup = async {
        channel
            .request_pty(true, &term, u32::from(cols), u32::from(rows), 0, 0, &[])
            .await?;
        channel.set_env(false, env.0, env.1.clone()).await?;
        for (name, value) in std::env::vars() {
            if name == "LANG" || name.starts_with("LC_") {
                channel.set_env(false, name, value).await?;
            }
        }
        channel.request_shell(true).await
    };
    if setup.await.is_err() {
        return Ok(Attached::Lost { kept: true });
    }
    let (mut read, write) = channel.split();
    let write = Arc::new(write);
    let resize = {
        let write = write.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Ok((cols, rows)) = crossterm::terminal::size() {
                    let _ = write
                        .window_change(u32::from(cols), u32::from(rows), 0, 0)
                        .await;
                }
            }
        })
    };
    let mut stdout = tokio::io::stdout();
    // Re-attaching, new input waits for the agent's notice: what was typed before it (not
    // taken) goes first, once, and only then what was typed since.
    let resuming = env.0 == RESUME_ENV;
    let mut kept = false;
    let mut status = None;
    let ended = loop {
        tokio::select! {
            message = read.wait() => match message {
                Some(ChannelMsg::Data { data }) => {
                    stdout.write_all(&data).await?;
                    stdout.flush().await?;
                    stream.shown += data.len() as u64;
                }
                Some(ChannelMsg::ExtendedData { data, ext }) if ext == SHELL_NOTICE_EXT => {
                    let text = String::from_utf8_lossy(&data).into_owned();
                    let mut outcome = None;
                    for line in text.lines() {
                        match ShellNotice::parse(line) {
                            Some(ShellNotice::From { output, input }) => {
                                if output > stream.shown {
                                    notice(&format!(
                                        "{} bytes of output could not be kept and are missing here",
                                        output - stream.shown
                                    ));
                                }
                                stream.shown = output;
                                let untaken = stream.input.untaken(input);
                                // Sent again only at a re-attach, before any new input: what
                                // earlier connections carried. Otherwise (a new shell, or the
                                // stream skipping ahead) the input not counted yet is on its
                                // way over this very connection, and must not arrive twice.
                                let again = if resuming && !kept { untaken } else { Vec::new() };
                                if !again.is_empty() && write.data_bytes(again).await.is_err() {
                                    outcome = Some(Attached::Lost { kept: true });
                                }
                                kept = true;
                            }
                            Some(ShellNotice::Gone(end)) => {
                                outcome = Some(Attached::Gone(end.to_string()));
                            }
                            None => {}
                        }
                    }
                    if let Some(outcome) = outcome {
                        break outcome;
                    }
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    let mut stderr = tokio::io::stderr();
                    stderr.write_all(&data).await?;
                    stderr.flush().await?;
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    status = Some(128 + signal_number(&signal_name));
                }
                Some(ChannelMsg::Failure) if !kept => bail!("the device refused to start a shell"),
                Some(ChannelMsg::Close) | None => match status {
                    Some(status) => break Attached::Ended(status),
                    None => break Attached::Lost { kept },
                },
                Some(_) => {}
            },
            data = typed.recv(), if !stream.eof && (kept || !resuming) => match data {
                Some(data) => {
                    stream.input.record(&data);
                    // A failed send is kept as untaken: sent again after the re-attach.
                    let _ = write.data_bytes(data).await;
                }
                None => {
                    stream.eof = true;
                    let _ = write.eof().await;
                }
            },
        }
    };
    resize.abort();
    Ok(ended)
}
