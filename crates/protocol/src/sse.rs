//! Server-sent events, decoded from bytes as they arrive: the one reader every client of the
//! event stream uses (the CLI, the bench, the tests). It splits lines on bytes, so a UTF-8
//! character cut between two chunks stays whole, takes LF, CRLF and CR line ends as the
//! format says, skips comments (the server's keepalives), and bounds each event's size.

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The last `id:` seen, as the format carries it across events.
    pub id: Option<String>,
    /// The `event:` name; `None` for the default, `message`.
    pub event: Option<String>,
    /// The `data:` lines joined with newlines.
    pub data: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("an event larger than {max} bytes")]
    TooLarge { max: usize },
}

/// Feed it chunks with [`SseDecoder::push`], take events with [`SseDecoder::next_event`].
#[derive(Debug)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    start: usize,
    /// A chunk ended in CR: an LF opening the next one belongs to that line end.
    after_cr: bool,
    at_stream_start: bool,
    id: Option<String>,
    event: Option<String>,
    data: String,
    has_data: bool,
    max_event: usize,
}

impl SseDecoder {
    /// A decoder that refuses an event (or a line) longer than `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            after_cr: false,
            at_stream_start: true,
            id: None,
            event: None,
            data: String::new(),
            has_data: false,
            max_event,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut chunk = chunk;
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, `None` until more bytes come; an error for an event over the
    /// bound (the stream cannot be trusted after it).
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            let rest = &self.buf[self.start..];
            let Some(end) = rest.iter().position(|b| matches!(b, b'\n' | b'\r')) else {
                if rest.len() + self.data.len() > self.max_event {
                    return Err(SseError::TooLarge {
                        max: self.max_event,
                    });
                }
                return Ok(None);
            };
            let mut line = &rest[..end];
            let mut next = self.start + end + 1;
            if rest[end] == b'\r' {
                match rest.get(end + 1) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    // Whether an LF follows is in the next chunk.
                    None => self.after_cr = true,
                }
            }
            if self.at_stream_start {
                self.at_stream_start = false;
                line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
            }
            let line = String::from_utf8_lossy(line).into_owned();
            self.start = next;
            if let Some(event) = self.take_line(&line)? {
                return Ok(Some(event));
            }
        }
    }

    fn take_line(&mut self, line: &str) -> Result<Option<SseEvent>, SseError> {
        if line.is_empty() {
            let event = SseEvent {
                id: self.id.clone(),
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            };
            return Ok(std::mem::take(&mut self.has_data).then_some(event));
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                if self.data.len() > self.max_event {
                    return Err(SseError::TooLarge {
                        max: self.max_event,
                    });
                }
            }
            "event" => self.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
        Ok(None)
    }
}

/// Every complete event in `bytes` (a whole response read at once).
pub fn decode_all(bytes: &[u8], max_event: usize) -> Result<Vec<SseEvent>, SseError> {
    let mut decoder = SseDecoder::new(max_event);
    decoder.push(bytes);
    let mut events = Vec::new();
    while let Some(event) = decoder.next_event()? {
        events.push(event);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_bytewise(text: &[u8]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new(1024);
        let mut events = Vec::new();
        for b in text {
            decoder.push(std::slice::from_ref(b));
            while let Some(e) = decoder.next_event().unwrap() {
                events.push(e);
            }
        }
        events
    }

    #[test]
    fn a_character_split_between_chunks_stays_whole() {
        let text = "id: 7\ndata: {\"detail\":\"café ✓\"}\n\n".as_bytes();
        let events = feed_bytewise(text);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "{\"detail\":\"café ✓\"}");
        assert_eq!(events[0].id.as_deref(), Some("7"));
    }

    #[test]
    fn line_ends_comments_and_multi_line_data_follow_the_format() {
        let text =
            b"\xEF\xBB\xBF: keepalive\r\n\r\ndata: a\r\ndata:b\rdata\r\n\nevent: x\ndata: c\n\n";
        let events = feed_bytewise(text);
        assert_eq!(
            events,
            [
                SseEvent {
                    id: None,
                    event: None,
                    data: "a\nb\n".into()
                },
                SseEvent {
                    id: None,
                    event: Some("x".into()),
                    data: "c".into()
                }
            ]
        );
        assert_eq!(decode_all(text, 1024).unwrap(), events);
    }

    #[test]
    fn an_endless_line_or_event_is_refused_at_the_bound() {
        let mut decoder = SseDecoder::new(100);
        decoder.push(&[b'x'; 101]);
        assert_eq!(decoder.next_event(), Err(SseError::TooLarge { max: 100 }));
        let many = "data: 0123456789\n".repeat(20);
        assert_eq!(
            decode_all(many.as_bytes(), 100),
            Err(SseError::TooLarge { max: 100 })
        );
        // Many small events in one chunk are fine.
        let events = "data: 0123456789\n\n".repeat(50);
        assert_eq!(decode_all(events.as_bytes(), 100).unwrap().len(), 50);
    }
}
