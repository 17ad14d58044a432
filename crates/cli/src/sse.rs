//! Reads the server's event stream (server-sent events) into `EventView`s.

use anyhow::{Result, anyhow};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use postern_protocol::api::EventView;

pub struct EventReader<S> {
    body: S,
    buffer: String,
    data: String,
}

impl<S: Stream<Item = reqwest::Result<Bytes>> + Unpin> EventReader<S> {
    pub fn new(body: S) -> Self {
        Self {
            body,
            buffer: String::new(),
            data: String::new(),
        }
    }

    /// The next event; `None` when the stream ends.
    pub async fn next(&mut self) -> Result<Option<EventView>> {
        loop {
            while let Some(end) = self.buffer.find('\n') {
                let line: String = self.buffer.drain(..=end).collect();
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    if !self.data.is_empty() {
                        let event = serde_json::from_str(&self.data)
                            .map_err(|e| anyhow!("unreadable event from the server: {e}"))?;
                        self.data.clear();
                        return Ok(Some(event));
                    }
                } else if let Some(value) = line.strip_prefix("data:") {
                    self.data.push_str(value.trim_start());
                }
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Some(Err(_)) | None => return Ok(None),
            }
        }
    }
}
