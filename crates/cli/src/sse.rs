//! Reads the server's event stream into `EventView`s with the shared decoder
//! (`postern_protocol::sse`), bounded per event and in silence.

use postern_protocol::api::EventView;
use postern_protocol::sse::{SseDecoder, SseError};
use reqwest::Response;
use tokio::time::timeout;

use crate::client::{ClientError, MAX_EVENT, secs, size, wait};

pub struct EventReader {
    response: Response,
    decoder: SseDecoder,
    server: String,
}

impl EventReader {
    /// `response` must be a checked `text/event-stream` answer (see `Client::events`).
    pub fn new(response: Response, server: String) -> Self {
        Self {
            response,
            decoder: SseDecoder::new(MAX_EVENT),
            server,
        }
    }

    /// The next event; `None` when the server ends the stream.
    pub async fn next(&mut self) -> Result<Option<EventView>, ClientError> {
        loop {
            match self.decoder.next_event() {
                Ok(Some(event)) => {
                    return serde_json::from_str(&event.data).map(Some).map_err(|e| {
                        ClientError::NotPostern {
                            server: self.server.clone(),
                            got: format!("an event that is not a Postern event: {e}"),
                        }
                    });
                }
                Ok(None) => {}
                Err(SseError::TooLarge { .. }) => {
                    return Err(ClientError::TooLarge {
                        server: self.server.clone(),
                        what: "one event",
                        limit: size(MAX_EVENT),
                    });
                }
            }
            let chunk = timeout(wait(), self.response.chunk())
                .await
                .map_err(|_| ClientError::Timeout {
                    server: self.server.clone(),
                    what: format!(
                        "the event stream was silent for {} (a server sends a keepalive every 15 s)",
                        secs(wait())
                    ),
                })?
                .map_err(|source| ClientError::Transport {
                    server: self.server.clone(),
                    source,
                })?;
            match chunk {
                Some(bytes) => self.decoder.push(&bytes),
                None => return Ok(None),
            }
        }
    }
}
