//! A client attached to a kept shell (see `shells`): the agent's notice first (where the
//! output starts, how much input the shell has taken), then the output from the client's
//! offset on, and the client's input to the shell. The channel ending detaches the client —
//! the shell goes on — unless the shell ended and the client received all of it, with its
//! exit status.

use std::sync::Arc;

use postern_protocol::shell::{SHELL_NOTICE_EXT, ShellEnd, ShellNotice};
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg, ChannelWriteHalf};

use super::channel::{Feed as Early, clamp, report_exit};
use super::process::{self, Process};
use super::shells::{Feed, Kept};

/// Output sent per message: the SSH packet size keeps it from mattering much.
const CHUNK: usize = 32 * 1024;

/// How the output side of an attachment ended.
enum Pumped {
    /// Everything was sent, and the shell ended this way.
    Finished(Option<std::process::ExitStatus>),
    /// Another client attached, or the channel failed.
    Over,
}

async fn notice(write: &ChannelWriteHalf<Msg>, notice: ShellNotice) -> bool {
    write
        .extended_data_bytes(SHELL_NOTICE_EXT, notice.encode().into_bytes())
        .await
        .is_ok()
}

/// The shell asked for is gone: the client is told why, and the channel ends.
pub async fn gone(channel: Channel<Msg>, end: ShellEnd) {
    let (_, write) = channel.split();
    notice(&write, ShellNotice::Gone(end)).await;
    let _ = write.exit_status(255).await;
    let _ = write.eof().await;
    let _ = write.close().await;
}

/// Carries the attachment until the client leaves (detached) or the shell's end is sent.
pub async fn run(
    channel: Channel<Msg>,
    handle: Handle,
    kept: Arc<Kept>,
    offset: u64,
    early: Vec<Early>,
) {
    let (generation, mut progress) = kept.attach();
    let (mut read, write) = channel.split();
    for item in early {
        match item {
            Early::Data(data) => kept.write(Feed::Data(data), generation).await,
            Early::Resize { cols, rows } => {
                kept.write(Feed::Resize { cols, rows }, generation).await
            }
            Early::Eof => {}
        }
    }
    let pump = async {
        let mut at = offset;
        // The first notice says where the output starts, even when it is where asked.
        let mut first = true;
        loop {
            let chunk = kept.read(at, CHUNK, generation);
            if chunk.displaced {
                return Pumped::Over;
            }
            if first || chunk.from != at {
                let from = ShellNotice::From {
                    output: chunk.from,
                    input: chunk.input,
                };
                if !notice(&write, from).await {
                    return Pumped::Over;
                }
            }
            first = false;
            at = chunk.from + chunk.data.len() as u64;
            if !chunk.data.is_empty() {
                // Waits for the client's window: a slow client lags (and may skip ahead,
                // told so), it never slows the shell.
                if write.data_bytes(chunk.data).await.is_err() {
                    return Pumped::Over;
                }
                continue;
            }
            if let Some(status) = chunk.finished {
                return Pumped::Finished(status);
            }
            if progress.changed().await.is_err() {
                return Pumped::Over;
            }
        }
    };
    tokio::pin!(pump);
    let ended = loop {
        tokio::select! {
            pumped = &mut pump => break pumped,
            msg = read.wait() => match msg {
                Some(ChannelMsg::Data { data }) => kept.write(Feed::Data(data), generation).await,
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    kept.write(Feed::Resize { cols: clamp(col_width), rows: clamp(row_height) }, generation).await;
                }
                Some(ChannelMsg::Signal { signal }) => {
                    if let Some(sig) = process::os_signal(&signal) {
                        Process::signal_group(kept.group(), sig);
                    }
                }
                Some(ChannelMsg::Close) | None => {
                    kept.detach(generation);
                    return;
                }
                // A terminal has no half-close.
                Some(_) => {}
            },
        }
    };
    match ended {
        Pumped::Finished(status) => {
            report_exit(&write, &handle, status).await;
            let _ = write.eof().await;
            let _ = write.close().await;
            kept.delivered(generation).await;
        }
        Pumped::Over => {
            // Displaced by a newer attachment of the same user (or the channel broke).
            kept.detach(generation);
            let _ = write.close().await;
        }
    }
}
