//! Newline-delimited framing with a size cap, as a push decoder: the caller feeds bytes in
//! whatever chunks its transport gives and takes complete lines out. An oversized line is
//! reported once and skipped up to its newline, so the connection stays usable.

/// The longest request line accepted, in bytes, not counting the newline.
pub const MAX_FRAME: usize = 1 << 20;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its `\n`.
    Line(Vec<u8>),
    /// A line longer than the cap; `len` is how many bytes it had (at least the cap + 1).
    TooLarge { len: usize },
}

/// Splits a byte stream into lines of at most `max` bytes.
#[derive(Debug)]
pub struct LineDecoder {
    buf: Vec<u8>,
    /// Bytes of the current line already thrown away because it exceeded the cap.
    discarded: Option<usize>,
    /// How far `buf` has been searched for a newline, so that a line arriving in many small
    /// chunks is scanned once, not once per chunk.
    scanned: usize,
    max: usize,
}

impl Default for LineDecoder {
    fn default() -> Self {
        LineDecoder::new(MAX_FRAME)
    }
}

impl LineDecoder {
    pub fn new(max: usize) -> Self {
        LineDecoder {
            buf: Vec::new(),
            discarded: None,
            scanned: 0,
            max,
        }
    }

    /// Appends bytes read from the transport.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Takes the next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Option<Frame> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let end = self.scanned + offset;
                let line: Vec<u8> = self.buf.drain(..=end).take(end).collect();
                self.scanned = 0;
                Some(match self.discarded.take() {
                    Some(dropped) => Frame::TooLarge {
                        len: dropped + line.len(),
                    },
                    None if line.len() > self.max => Frame::TooLarge { len: line.len() },
                    None => Frame::Line(line),
                })
            }
            None => {
                if self.buf.len() > self.max || self.discarded.is_some() {
                    // Keep memory bounded: forget the oversized line's bytes but remember it
                    // is being skipped until its newline.
                    *self.discarded.get_or_insert(0) += self.buf.len();
                    self.buf.clear();
                    self.scanned = 0;
                } else {
                    self.scanned = self.buf.len();
                }
                None
            }
        }
    }

    /// The bytes of an incomplete line buffered so far, to resume decoding elsewhere
    /// (`push` them into a new decoder); `None` while an oversized line is being skipped.
    pub fn into_pending(self) -> Option<Vec<u8>> {
        match self.discarded {
            Some(_) => None,
            None => Some(self.buf),
        }
    }

    /// Called at end of input: an unterminated last line still counts as a frame, so that
    /// `printf '{"op":"status"}' | nc -U` works.
    pub fn finish(&mut self) -> Option<Frame> {
        let line = std::mem::take(&mut self.buf);
        self.scanned = 0;
        match self.discarded.take() {
            Some(dropped) => Some(Frame::TooLarge {
                len: dropped + line.len(),
            }),
            None if line.len() > self.max => Some(Frame::TooLarge { len: line.len() }),
            None if line.iter().all(u8::is_ascii_whitespace) => None,
            None => Some(Frame::Line(line)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(decoder: &mut LineDecoder) -> Vec<Frame> {
        std::iter::from_fn(|| decoder.next_frame()).collect()
    }

    #[test]
    fn splits_lines_across_arbitrary_chunks() {
        let mut d = LineDecoder::new(16);
        d.push(b"ab");
        assert!(drain(&mut d).is_empty());
        d.push(b"c\nde\n\nf");
        assert_eq!(
            drain(&mut d),
            vec![
                Frame::Line(b"abc".to_vec()),
                Frame::Line(b"de".to_vec()),
                Frame::Line(Vec::new())
            ]
        );
        assert_eq!(d.finish(), Some(Frame::Line(b"f".to_vec())));
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn a_line_of_exactly_the_cap_is_accepted() {
        let mut d = LineDecoder::new(4);
        d.push(b"abcd\n");
        assert_eq!(drain(&mut d), vec![Frame::Line(b"abcd".to_vec())]);
    }

    #[test]
    fn an_oversized_line_is_reported_once_and_the_next_line_survives() {
        let mut d = LineDecoder::new(4);
        d.push(b"abcdef");
        assert!(drain(&mut d).is_empty());
        d.push(b"ghij");
        assert!(drain(&mut d).is_empty());
        d.push(b"k\nok\n");
        assert_eq!(
            drain(&mut d),
            vec![Frame::TooLarge { len: 11 }, Frame::Line(b"ok".to_vec())]
        );
    }

    #[test]
    fn memory_stays_bounded_while_skipping() {
        let mut d = LineDecoder::new(8);
        for _ in 0..1000 {
            d.push(&[b'x'; 64]);
            assert!(d.next_frame().is_none());
            assert!(d.buf.len() <= 8 + 64);
        }
        d.push(b"\n");
        assert_eq!(d.next_frame(), Some(Frame::TooLarge { len: 64_000 }));
    }

    #[test]
    fn an_oversized_unterminated_tail_is_reported_at_the_end() {
        let mut d = LineDecoder::new(2);
        d.push(b"abc");
        assert!(d.next_frame().is_none());
        assert_eq!(d.finish(), Some(Frame::TooLarge { len: 3 }));
    }
}
