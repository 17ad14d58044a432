//! A terminal's recent output, numbered by byte offset from the start of the shell, so that
//! a client that reattaches says where it stopped and gets exactly what follows.

use std::collections::VecDeque;

/// What a reader gets: the bytes from `offset` on; `reset` when the bytes it asked for are
/// gone (older than the buffer, or from another shell) and it must start over from here.
#[derive(Debug, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    pub reset: bool,
    pub bytes: Vec<u8>,
}

pub struct Scrollback {
    bytes: VecDeque<u8>,
    /// Offset of the first byte still held.
    start: u64,
    capacity: usize,
}

impl Scrollback {
    /// An empty scrollback whose next byte is byte `start` of the shell's output (a shell
    /// re-attached after this server restarted continues its numbering).
    pub fn starting_at(capacity: usize, start: u64) -> Self {
        Self {
            bytes: VecDeque::with_capacity(capacity.min(64 * 1024)),
            start,
            capacity,
        }
    }

    /// The output up to `offset` can no longer be had (the device kept less than we missed):
    /// what is held goes, and readers behind `offset` start over from it.
    pub fn skip_to(&mut self, offset: u64) {
        if offset > self.end() {
            self.bytes.clear();
            self.start = offset;
        }
    }

    /// Offset just past the newest byte.
    pub fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    pub fn push(&mut self, data: &[u8]) {
        let end = self.end() + data.len() as u64;
        // Only the newest `capacity` bytes of a huge write matter.
        let kept = &data[data.len().saturating_sub(self.capacity)..];
        let overflow = (self.bytes.len() + kept.len()).saturating_sub(self.capacity);
        self.bytes.drain(..overflow);
        self.bytes.extend(kept);
        self.start = end - self.bytes.len() as u64;
    }

    /// Everything from `from` on, at most `max` bytes.
    pub fn read_from(&self, from: u64, max: usize) -> Chunk {
        let (offset, reset) = if from < self.start || from > self.end() {
            (self.start, true)
        } else {
            (from, false)
        };
        let skip = (offset - self.start) as usize;
        let bytes = self.bytes.range(skip..).take(max).copied().collect();
        Chunk {
            offset,
            reset,
            bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_get_exactly_what_follows_their_offset() {
        let mut sb = Scrollback::starting_at(16, 0);
        sb.push(b"hello ");
        sb.push(b"world");
        assert_eq!(sb.end(), 11);
        let all = sb.read_from(0, usize::MAX);
        assert_eq!(
            (all.offset, all.reset, all.bytes.as_slice()),
            (0, false, &b"hello world"[..])
        );
        let rest = sb.read_from(6, usize::MAX);
        assert_eq!(
            (rest.offset, rest.reset, rest.bytes.as_slice()),
            (6, false, &b"world"[..])
        );
        assert!(
            sb.read_from(11, usize::MAX).bytes.is_empty(),
            "nothing new at the end"
        );
        assert_eq!(sb.read_from(6, 2).bytes, b"wo", "reads are capped");
    }

    #[test]
    fn old_output_falls_off_and_late_readers_start_over() {
        let mut sb = Scrollback::starting_at(8, 0);
        sb.push(b"0123456789");
        assert_eq!(sb.end(), 10);
        let late = sb.read_from(0, usize::MAX);
        assert_eq!(
            (late.offset, late.reset, late.bytes.as_slice()),
            (2, true, &b"23456789"[..])
        );
        sb.push(b"ab");
        let on_time = sb.read_from(8, usize::MAX);
        assert_eq!(
            (on_time.offset, on_time.reset, on_time.bytes.as_slice()),
            (8, false, &b"89ab"[..])
        );
    }

    #[test]
    fn an_offset_from_the_future_means_another_shell_and_starts_over() {
        let mut sb = Scrollback::starting_at(8, 0);
        sb.push(b"abc");
        let chunk = sb.read_from(100, usize::MAX);
        assert_eq!(
            (chunk.offset, chunk.reset, chunk.bytes.as_slice()),
            (0, true, &b"abc"[..])
        );
    }

    #[test]
    fn a_re_attached_shell_keeps_its_numbering_and_a_gap_restarts_readers() {
        let mut sb = Scrollback::starting_at(8, 100);
        assert!(!sb.read_from(100, usize::MAX).reset);
        sb.push(b"ab");
        sb.skip_to(50);
        assert_eq!(sb.end(), 102, "skipping backwards changes nothing");
        sb.skip_to(110);
        let chunk = sb.read_from(102, usize::MAX);
        assert_eq!(
            (chunk.offset, chunk.reset, chunk.bytes.len()),
            (110, true, 0)
        );
        sb.push(b"c");
        assert_eq!(sb.read_from(110, usize::MAX).bytes, b"c");
    }

    #[test]
    fn a_write_larger_than_the_buffer_keeps_its_tail() {
        let mut sb = Scrollback::starting_at(4, 0);
        sb.push(b"xy");
        sb.push(b"abcdefgh");
        assert_eq!(sb.end(), 10);
        assert_eq!(sb.read_from(0, usize::MAX).bytes, b"efgh");
    }
}
