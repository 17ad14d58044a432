//! Carries one terminal's shell across attachments: the output into the scrollback, the
//! browsers' input to the shell, and — when the path to the device breaks while the agent
//! keeps the shell — a re-attach once the session runs again, from the scrollback's end,
//! sending again the input the shell says it did not take. It ends when the shell does, when
//! the agent no longer has it, when the session ends, or when this server stops (the agent
//! then keeps the shell for a browser that comes back through another server).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_protocol::SessionId;
use postern_protocol::shell::{RESUME_ENV, Resume, SHELL_NOTICE_EXT, SentInput, ShellNotice};
use russh::client::{Handle, Msg};
use russh::{Channel, ChannelMsg, ChannelWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::shell::RegisteredHost;
use super::{Input, ShellEnd, Terminal, Terminals};
use crate::sessions::ActivityGuard;
use crate::store::UserRecord;

/// Input kept until the shell says it took it: far more than anyone types or pastes while a
/// device is out of reach; past it the oldest would be missing after a re-attach.
const INPUT_KEPT: usize = 1024 * 1024;
/// Between failed re-attach attempts while the session runs (its tunnel may not be up yet).
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// One attachment's connection to the agent.
pub struct Link {
    pub ssh: Handle<RegisteredHost>,
    pub channel: Channel<Msg>,
    /// Counts as activity on the session's tunnel while held.
    pub activity: ActivityGuard,
    pub login: String,
}

/// How one attachment ended.
enum Attached {
    Ended(ShellEnd),
    /// The connection broke; `kept` if the agent said it keeps the shell.
    Lost {
        kept: bool,
    },
}

pub struct Carrier {
    pub terminals: Arc<Terminals>,
    pub terminal: Arc<Terminal>,
    pub user: UserRecord,
    pub session: SessionId,
    pub peer: SocketAddr,
    /// The first attachment re-attaches (after this server restarted): the input typed
    /// before is the browsers' to send again, not ours.
    pub resumed: bool,
}

impl Carrier {
    pub async fn run(self, first: Link, mut input: mpsc::Receiver<Input>) {
        let stopping = self.terminals.sessions.stopping();
        let sent = Arc::new(Mutex::new(SentInput::new(INPUT_KEPT)));
        let mut reattached = self.resumed;
        let mut link = first;
        let end = loop {
            let Link {
                ssh,
                channel,
                activity,
                ..
            } = link;
            let attached = self
                .attachment(channel, &mut input, &sent, reattached, &stopping)
                .await;
            // The agent sees the connection close: a shell it keeps waits for us.
            let _ = ssh
                .disconnect(russh::Disconnect::ByApplication, "terminal closed", "en")
                .await;
            drop(activity);
            match attached {
                Attached::Ended(end) => break end,
                Attached::Lost { kept: true } if !stopping.is_cancelled() => {
                    tracing::info!(session = %self.session, shell = %self.terminal.shell, "web terminal lost its device; re-attaching");
                    match self.reattach(&stopping).await {
                        Some(again) => {
                            link = again;
                            reattached = true;
                        }
                        None => break ShellEnd::Lost,
                    }
                }
                Attached::Lost { .. } => break ShellEnd::Lost,
            }
        };
        tracing::info!(session = %self.session, ?end, "web terminal ended");
        self.terminal.ended.send_replace(Some(end));
        self.terminals.forget(&self.session, &self.terminal);
    }

    /// Waits until the session runs again and connects to the kept shell from the output we
    /// have; None when the session ended or this server stops.
    async fn reattach(&self, stopping: &CancellationToken) -> Option<Link> {
        let mut delay = RETRY_MIN;
        loop {
            let session = self.terminals.sessions.running_again(&self.session).await?;
            let resume = Resume {
                shell: self.terminal.shell.clone(),
                offset: self.terminal.end(),
            };
            let keep = (RESUME_ENV, resume.to_string());
            let size = self.terminal.size();
            match self
                .terminals
                .connect(&self.user, &session, self.peer, size, keep)
                .await
            {
                Ok(link) => return Some(link),
                Err(error) => {
                    tracing::debug!(session = %self.session, %error, "re-attach failed; trying again");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopping.cancelled() => return None,
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// Carries one attachment until it ends or breaks. On a re-attach the input waits for
    /// the agent's notice: what the shell did not take goes first, then what is new.
    async fn attachment(
        &self,
        channel: Channel<Msg>,
        input: &mut mpsc::Receiver<Input>,
        sent: &Arc<Mutex<SentInput>>,
        reattached: bool,
        stopping: &CancellationToken,
    ) -> Attached {
        let (mut output, writer) = channel.split();
        let (go_tx, go_rx) = oneshot::channel::<Vec<u8>>();
        let mut go = Some(go_tx);
        if !reattached && let Some(go) = go.take() {
            let _ = go.send(Vec::new());
        }
        let done = CancellationToken::new();
        // Input goes out on its own task: waiting for the device's window must never stop
        // the output from being read (that would stall the whole connection).
        let writing = write_input(writer, input, sent.clone(), go_rx, done.clone());
        tokio::pin!(writing);
        let mut writer_done = false;
        let mut kept = false;
        let mut status = None;
        let attached = loop {
            let msg = tokio::select! {
                msg = output.wait() => msg,
                // The input ended (the terminal is going): the output goes on.
                () = &mut writing, if !writer_done => {
                    writer_done = true;
                    continue;
                }
                _ = stopping.cancelled() => break Attached::Lost { kept },
            };
            let Some(msg) = msg else {
                break Attached::Lost { kept };
            };
            match msg {
                ChannelMsg::Data { data } => self.terminal.record(&data),
                ChannelMsg::ExtendedData { data, ext } if ext == SHELL_NOTICE_EXT => {
                    match self.notice(&data, sent, &mut go) {
                        Some(end) => break Attached::Ended(end),
                        None => kept = true,
                    }
                }
                ChannelMsg::ExtendedData { data, .. } => self.terminal.record(&data),
                ChannelMsg::ExitStatus { exit_status } => {
                    status = Some(ShellEnd::Status(exit_status));
                }
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    status = Some(ShellEnd::Signal(match signal_name {
                        russh::Sig::Custom(name) => name,
                        known => format!("{known:?}"),
                    }));
                }
                ChannelMsg::Failure if !kept => {
                    self.terminal
                        .record(b"\r\npostern: the device refused to start a shell\r\n");
                }
                ChannelMsg::Close => match status.take() {
                    Some(end) => break Attached::Ended(end),
                    None => break Attached::Lost { kept },
                },
                _ => {}
            }
        };
        done.cancel();
        // The writer lets go of the input when it stops.
        if !writer_done {
            writing.await;
        }
        attached
    }

    /// The agent's notice: where the output resumes and what input the shell took (on a
    /// re-attach, what it did not take is sent again, first); or that the shell is gone.
    fn notice(
        &self,
        data: &[u8],
        sent: &Mutex<SentInput>,
        go: &mut Option<oneshot::Sender<Vec<u8>>>,
    ) -> Option<ShellEnd> {
        for line in String::from_utf8_lossy(data).lines() {
            match ShellNotice::parse(line) {
                Some(ShellNotice::From { output, input }) => {
                    self.terminal.skip_to(output);
                    if self.terminal.input_from(input) {
                        // Re-attached after this server (or another) carried the shell: our
                        // input is numbered after what the shell took before, as the
                        // browsers' is (nothing was sent yet: the input waits for `go`).
                        *sent.lock().unwrap_or_else(|e| e.into_inner()) =
                            SentInput::taken(INPUT_KEPT, input);
                    }
                    if let Some(go) = go.take() {
                        let again = sent
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .untaken(input);
                        let _ = go.send(again);
                    }
                }
                Some(ShellNotice::Gone(end)) => return Some(ShellEnd::Gone(end)),
                None => {
                    tracing::debug!(session = %self.session, line, "an unreadable shell notice")
                }
            }
        }
        None
    }
}

/// Writes the browsers' input to the shell until `done` (or the channel fails): first, once
/// `go` says, what the shell did not take before.
async fn write_input(
    writer: ChannelWriteHalf<Msg>,
    input: &mut mpsc::Receiver<Input>,
    sent: Arc<Mutex<SentInput>>,
    go: oneshot::Receiver<Vec<u8>>,
    done: CancellationToken,
) {
    let again = tokio::select! {
        again = go => again.unwrap_or_default(),
        _ = done.cancelled() => return,
    };
    if !again.is_empty() {
        tokio::select! {
            _ = writer.data_bytes(bytes::Bytes::from(again)) => {}
            _ = done.cancelled() => return,
        }
    }
    loop {
        let next = tokio::select! {
            next = input.recv() => next,
            _ = done.cancelled() => return,
        };
        let Some(next) = next else {
            return;
        };
        let written = match next {
            Input::Data(data) => {
                // Counted before it is sent: a byte lost on the way is sent again after a
                // re-attach, as the shell did not take it.
                sent.lock().unwrap_or_else(|e| e.into_inner()).record(&data);
                tokio::select! {
                    r = writer.data_bytes(data) => r.is_ok(),
                    _ = done.cancelled() => return,
                }
            }
            Input::Resize { cols, rows } => tokio::select! {
                r = writer.window_change(u32::from(cols), u32::from(rows), 0, 0) => r.is_ok(),
                _ = done.cancelled() => return,
            },
        };
        if !written {
            // The channel is gone; the reader sees it too. Input waits for the re-attach.
            done.cancelled().await;
            return;
        }
    }
}
