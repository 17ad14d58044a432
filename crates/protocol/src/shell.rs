//! Shells that survive: how a Postern client asks the agent's SSH server for a shell the agent
//! keeps when the client goes away, how it re-attaches to it, and what the agent tells it.
//!
//! A client names a kept shell itself (`ShellId`, random) with the environment variable
//! `POSTERN_SHELL` before its `shell` request; to re-attach it sends `POSTERN_RESUME` =
//! `ID:OFFSET` instead (the output offset it has, and will show from). The agent's first
//! words on the channel are then a `ShellNotice` on the extended-data stream
//! `SHELL_NOTICE_EXT` — where the output that follows starts and how much of the client's
//! input the shell has taken — or that the shell is gone, and why. A client that gets no
//! notice is talking to an agent that keeps no shells.

use std::collections::VecDeque;
use std::fmt;

/// `env` request naming a new kept shell.
pub const SHELL_ENV: &str = "POSTERN_SHELL";
/// `env` request re-attaching to a kept shell: `ID:OFFSET`.
pub const RESUME_ENV: &str = "POSTERN_RESUME";
/// SSH extended-data type of the agent's notices (1 is stderr; a PTY channel uses neither).
pub const SHELL_NOTICE_EXT: u32 = 0x7073_6831;

/// A client's name for a kept shell: 8 to 64 of `[0-9a-zA-Z_-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShellId(String);

impl ShellId {
    pub fn parse(s: &str) -> Option<Self> {
        (8..=64).contains(&s.len()).then_some(())?;
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `POSTERN_RESUME`'s value: the shell and the output offset the client has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    pub shell: ShellId,
    pub offset: u64,
}

impl Resume {
    pub fn parse(s: &str) -> Option<Self> {
        let (shell, offset) = s.rsplit_once(':')?;
        Some(Self {
            shell: ShellId::parse(shell)?,
            offset: offset.parse().ok()?,
        })
    }
}

impl fmt::Display for Resume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.shell, self.offset)
    }
}

/// Why a kept shell is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShellEnd {
    /// Nobody attached within the grace period: the agent ended it.
    GraceExpired,
    /// The agent has no such shell (it never had, or it restarted since).
    Unknown,
    /// Another user's shell: not theirs to attach to.
    NotYours,
}

impl ShellEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            ShellEnd::GraceExpired => "grace expired",
            ShellEnd::Unknown => "the agent no longer has this shell",
            ShellEnd::NotYours => "not your shell",
        }
    }

    fn word(self) -> &'static str {
        match self {
            ShellEnd::GraceExpired => "grace-expired",
            ShellEnd::Unknown => "unknown",
            ShellEnd::NotYours => "not-yours",
        }
    }
}

impl fmt::Display for ShellEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the agent tells the client on `SHELL_NOTICE_EXT`, one line each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShellNotice {
    /// The output that follows starts at `output`; the shell has taken the client's input up
    /// to byte `input` (the client sends what it typed after that, once). Sent on attach,
    /// and again whenever the stream skips ahead (the client fell behind the buffer).
    From {
        output: u64,
        input: u64,
    },
    Gone(ShellEnd),
}

impl ShellNotice {
    pub fn encode(self) -> String {
        match self {
            ShellNotice::From { output, input } => format!("from {output} {input}\n"),
            ShellNotice::Gone(end) => format!("gone {}\n", end.word()),
        }
    }

    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.trim_end().split(' ');
        let notice = match (words.next()?, words.next()?) {
            ("from", output) => ShellNotice::From {
                output: output.parse().ok()?,
                input: words.next()?.parse().ok()?,
            },
            ("gone", word) => ShellNotice::Gone(
                [
                    ShellEnd::GraceExpired,
                    ShellEnd::Unknown,
                    ShellEnd::NotYours,
                ]
                .into_iter()
                .find(|e| e.word() == word)?,
            ),
            _ => return None,
        };
        words.next().is_none().then_some(notice)
    }
}

/// A client's input to a kept shell, counted from the shell's start, with its newest bytes
/// held until the shell says it took them: after a re-attach the client sends what the
/// shell has not taken (`untaken`), once.
#[derive(Debug)]
pub struct SentInput {
    /// Bytes sent since the shell started.
    sent: u64,
    /// The last of them, not yet known taken (at most `capacity`).
    held: VecDeque<u8>,
    capacity: usize,
}

impl SentInput {
    /// Holds at most `capacity` bytes: past that, the oldest would be missing after a
    /// re-attach (never repeated).
    pub fn new(capacity: usize) -> Self {
        Self::taken(capacity, 0)
    }

    /// For a client that re-attached to a shell that had taken `taken` bytes of input
    /// before (from other clients, or this one's earlier life): what it sends from now on is
    /// numbered after them, as the shell numbers it.
    pub fn taken(capacity: usize, taken: u64) -> Self {
        Self {
            sent: taken,
            held: VecDeque::new(),
            capacity,
        }
    }

    /// `data` goes to the shell (whether or not the send succeeds: an unsent byte is untaken).
    pub fn record(&mut self, data: &[u8]) {
        self.sent += data.len() as u64;
        self.held.extend(data);
        let over = self.held.len().saturating_sub(self.capacity);
        self.held.drain(..over);
    }

    /// The shell says it took the input up to byte `taken`: what follows, to send again.
    pub fn untaken(&mut self, taken: u64) -> Vec<u8> {
        let held_from = self.sent - self.held.len() as u64;
        let drop = usize::try_from(taken.saturating_sub(held_from)).unwrap_or(usize::MAX);
        self.held.drain(..drop.min(self.held.len()));
        self.held.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_the_shell_took_is_not_sent_again() {
        let mut input = SentInput::new(1024);
        input.record(b"ls\n");
        input.record(b"pwd\n");
        assert_eq!(input.untaken(3), b"pwd\n");
        assert_eq!(input.untaken(7), b"");
        input.record(b"x");
        assert_eq!(input.untaken(7), b"x");
        assert_eq!(input.untaken(0), b"x", "what was taken is gone for good");
        let mut small = SentInput::new(2);
        small.record(b"abcd");
        assert_eq!(
            small.untaken(0),
            b"cd",
            "beyond the capacity the oldest is missing"
        );
    }

    #[test]
    fn a_client_that_came_later_numbers_its_input_as_the_shell_does() {
        let mut input = SentInput::taken(1024, 100);
        input.record(b"ls\n");
        assert_eq!(input.untaken(101), b"s\n");
        assert_eq!(input.untaken(103), b"");
    }

    #[test]
    fn notices_and_resumes_round_trip_and_junk_is_refused() {
        for notice in [
            ShellNotice::From {
                output: 1 << 40,
                input: 7,
            },
            ShellNotice::Gone(ShellEnd::GraceExpired),
            ShellNotice::Gone(ShellEnd::Unknown),
            ShellNotice::Gone(ShellEnd::NotYours),
        ] {
            assert_eq!(ShellNotice::parse(&notice.encode()), Some(notice));
        }
        for junk in ["", "from", "from 1", "from x 2", "gone late", "from 1 2 3"] {
            assert_eq!(ShellNotice::parse(junk), None, "{junk:?}");
        }
        let resume = Resume::parse("abcdefgh-1:42").unwrap();
        assert_eq!(resume.offset, 42);
        assert_eq!(Resume::parse(&resume.to_string()), Some(resume));
        assert!(Resume::parse("short:1").is_none());
        assert!(Resume::parse("abcdefgh/../:1").is_none());
        assert!(Resume::parse("abcdefgh:-1").is_none());
    }
}
