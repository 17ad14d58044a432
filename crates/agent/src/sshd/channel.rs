//! One session channel's life once its program runs: client data and EOF to the process,
//! resizes and signals to its terminal and group, its output back (never losing the tail),
//! then `exit-status` or `exit-signal`, EOF and close.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::attach;
use super::process::{self, Input, Output, Process};
use super::shells::Kept;
use postern_protocol::shell::ShellEnd;
use std::sync::Arc;

/// What the handler started on a channel.
pub enum Started {
    /// A program of this channel's own, which ends with it.
    Process(Box<Process>),
    /// A kept shell, from this output offset (see `shells`).
    Kept(Arc<Kept>, u64),
    /// The kept shell asked for is gone.
    Gone(ShellEnd),
}

/// After the program exits, output that keeps a PTY open (a background job) is read until
/// the terminal has been quiet this long; a pipe is read to its end, as sshd does.
const PTY_LINGER: Duration = Duration::from_millis(100);
/// What a client may send before its program starts (it normally sends nothing).
const MAX_EARLY_INPUT: usize = 1024 * 1024;

/// What the channel's input task does, in the order the client asked.
pub(super) enum Feed {
    Data(Bytes),
    Eof,
    Resize { cols: u16, rows: u16 },
}

/// Runs the channel: waits for the handler to start its program, then carries it to the end.
pub async fn run(mut channel: Channel<Msg>, handle: Handle, started: oneshot::Receiver<Started>) {
    let mut early = Vec::new();
    let mut early_len = 0;
    let mut early_eof = false;
    tokio::pin!(started);
    let process = loop {
        tokio::select! {
            process = &mut started => match process {
                Ok(p) => break p,
                Err(_) => return, // the channel closed, or its program failed to start
            },
            msg = channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) if early_len + data.len() <= MAX_EARLY_INPUT => {
                    early_len += data.len();
                    early.push(Feed::Data(data));
                }
                Some(ChannelMsg::Data { .. }) => {
                    tracing::warn!("client sent too much before starting a program; closing the channel");
                    let _ = channel.close().await;
                    return;
                }
                Some(ChannelMsg::Eof) => early_eof = true,
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    early.push(Feed::Resize { cols: clamp(col_width), rows: clamp(row_height) });
                }
                Some(ChannelMsg::Close) | None => return,
                Some(_) => {} // setup requests: the handler answers those
            },
        }
    };
    match process {
        Started::Process(process) => {
            if early_eof {
                early.push(Feed::Eof);
            }
            carry(channel, handle, *process, early).await;
        }
        Started::Kept(kept, offset) => attach::run(channel, handle, kept, offset, early).await,
        Started::Gone(end) => attach::gone(channel, end).await,
    }
}

pub(super) fn clamp(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX).max(1)
}

async fn carry(channel: Channel<Msg>, handle: Handle, process: Process, early: Vec<Feed>) {
    let Process {
        mut child,
        group,
        input,
        outputs,
    } = process;
    let (mut read, write) = channel.split();

    let (feed_tx, feed_rx) = mpsc::channel(64);
    let input_task = tokio::spawn(feed_input(input, early, feed_rx));
    let (exited_tx, exited_rx) = watch::channel(false);
    let output_tasks: Vec<_> = outputs
        .into_iter()
        .map(|output| {
            let writer = write.make_writer_ext(output.ext);
            tokio::spawn(pump_output(output, writer, exited_rx.clone()))
        })
        .collect();

    let status = loop {
        tokio::select! {
            status = child.wait() => break status.ok(),
            msg = read.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    // Waits while the process is not reading: backpressure to the client.
                    let _ = feed_tx.send(Feed::Data(data)).await;
                }
                Some(ChannelMsg::Eof) => {
                    let _ = feed_tx.send(Feed::Eof).await;
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    let _ = feed_tx
                        .send(Feed::Resize { cols: clamp(col_width), rows: clamp(row_height) })
                        .await;
                }
                Some(ChannelMsg::Signal { signal }) => match process::os_signal(&signal) {
                    Some(sig) => Process::signal_group(group, sig),
                    None => tracing::debug!(?signal, "ignored an unknown signal"),
                },
                Some(ChannelMsg::Close) | None => {
                    // The client went away: hang up on the program, like a closed terminal.
                    hang_up(group);
                    input_task.abort();
                    for task in output_tasks {
                        task.abort();
                    }
                    return;
                }
                Some(_) => {}
            },
        }
    };
    let _ = exited_tx.send(true);
    input_task.abort();
    // Keep draining the client's side while the last output goes out: an undrained channel
    // would stall the whole connection, and that output with it.
    let outputs_done = futures::future::join_all(output_tasks);
    tokio::pin!(outputs_done);
    loop {
        tokio::select! {
            _ = &mut outputs_done => break,
            msg = read.wait() => if matches!(msg, Some(ChannelMsg::Close) | None) {
                return;
            },
        }
    }
    report_exit(&write, &handle, status).await;
    let _ = write.eof().await;
    let _ = write.close().await;
}

/// Tells the client how its program ended: `exit-status`, or `exit-signal`.
pub(super) async fn report_exit(
    write: &russh::ChannelWriteHalf<Msg>,
    handle: &Handle,
    status: Option<std::process::ExitStatus>,
) {
    let id = write.id();
    match status {
        Some(s) if s.code().is_some() => {
            let code = s.code().unwrap_or(0);
            let _ = write.exit_status(u32::try_from(code).unwrap_or(255)).await;
        }
        Some(s) => {
            let signal = s.signal().unwrap_or(0);
            let _ = handle
                .exit_signal_request(
                    id,
                    process::ssh_signal(signal),
                    s.core_dumped(),
                    String::new(),
                    String::new(),
                )
                .await;
        }
        None => tracing::warn!("lost track of the session's process"),
    }
}

fn hang_up(group: Pid) {
    Process::signal_group(group, Signal::SIGHUP);
    Process::signal_group(group, Signal::SIGCONT);
}

/// Writes client data to the process (what came before it started first); closes its stdin
/// at the client's EOF.
async fn feed_input(input: Input, early: Vec<Feed>, mut feed: mpsc::Receiver<Feed>) {
    let mut early = early.into_iter();
    let mut next = async || match early.next() {
        Some(item) => Some(item),
        None => feed.recv().await,
    };
    match input {
        Input::Pty(mut pty) => {
            while let Some(item) = next().await {
                match item {
                    Feed::Data(data) => {
                        if pty.write_all(&data).await.is_err() {
                            return;
                        }
                    }
                    Feed::Resize { cols, rows } => {
                        if let Err(error) = pty.resize(pty_process::Size::new(rows, cols)) {
                            tracing::debug!(%error, "terminal resize failed");
                        }
                    }
                    // A terminal has no half-close; sshd ignores EOF on a PTY too.
                    Feed::Eof => {}
                }
            }
        }
        Input::Pipe(mut stdin) => {
            while let Some(item) = next().await {
                match item {
                    Feed::Data(data) => {
                        if stdin.write_all(&data).await.is_err() {
                            return;
                        }
                    }
                    Feed::Resize { .. } => {}
                    Feed::Eof => return, // dropping stdin closes it
                }
            }
        }
    }
}

/// Copies one output stream to the channel until it ends (see `PTY_LINGER`).
async fn pump_output(
    output: Output,
    mut writer: impl tokio::io::AsyncWrite + Unpin,
    mut exited: watch::Receiver<bool>,
) {
    let Output {
        mut reader, is_pty, ..
    } = output;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = if is_pty && *exited.borrow() {
            match tokio::time::timeout(PTY_LINGER, reader.read(&mut buf)).await {
                Ok(read) => read,
                Err(_) => return, // quiet since the program exited: done
            }
        } else {
            tokio::select! {
                read = reader.read(&mut buf) => read,
                _ = exited.changed(), if is_pty && !*exited.borrow() => continue,
            }
        };
        match n {
            Ok(0) => return,
            Ok(n) => {
                if writer.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            // EIO: the PTY's last holder is gone — its end of file.
            Err(_) => return,
        }
    }
}
