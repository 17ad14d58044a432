//! A kept shell's recent output, numbered by byte offset from the shell's start: bounded, so
//! a shell printing without pause while nobody reads costs the agent at most its capacity.
//! When full it keeps the newest bytes; a reader whose offset fell off learns where the
//! stream now starts.

use std::collections::VecDeque;

pub struct Ring {
    bytes: VecDeque<u8>,
    /// Offset of `bytes[0]`.
    start: u64,
    capacity: usize,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Self {
            bytes: VecDeque::new(),
            start: 0,
            capacity: capacity.max(1),
        }
    }

    /// Offset just past the newest byte: how much the shell ever wrote.
    pub fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// Offset of the oldest byte still kept.
    #[cfg(test)]
    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn push(&mut self, data: &[u8]) {
        // Only the newest `capacity` bytes of `data` can stay.
        let keep = &data[data.len().saturating_sub(self.capacity)..];
        let skipped = (data.len() - keep.len()) as u64;
        let overflow = (self.bytes.len() + keep.len()).saturating_sub(self.capacity);
        self.bytes.drain(..overflow);
        self.start += overflow as u64 + skipped;
        self.bytes.extend(keep);
        if self.bytes.is_empty() {
            // Keeps an idle shell's buffer from holding its peak forever.
            self.bytes.shrink_to_fit();
        }
    }

    /// Up to `max` bytes from `offset` on (or from the oldest kept byte, if `offset` fell
    /// off): where they start, and the bytes. Nothing when `offset` is at (or past) the end.
    pub fn read(&self, offset: u64, max: usize) -> (u64, Vec<u8>) {
        let from = offset.clamp(self.start, self.end());
        let skip = usize::try_from(from - self.start).unwrap_or(usize::MAX);
        let out: Vec<u8> = self.bytes.range(skip..).take(max).copied().collect();
        (from, out)
    }

    /// Bytes held now (for the memory bound).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes_numbered_from_the_start() {
        let mut ring = Ring::new(8);
        ring.push(b"abcdef");
        assert_eq!(ring.read(2, 100), (2, b"cdef".to_vec()));
        ring.push(b"ghij");
        assert_eq!((ring.start(), ring.end(), ring.len()), (2, 10, 8));
        // Fell off: the reader learns where the stream starts now.
        assert_eq!(ring.read(0, 3), (2, b"cde".to_vec()));
        assert_eq!(ring.read(10, 3), (10, Vec::new()));
        ring.push(&[b'x'; 20]);
        assert_eq!((ring.start(), ring.end(), ring.len()), (22, 30, 8));
        assert_eq!(ring.read(25, 100), (25, vec![b'x'; 5]));
    }
}
