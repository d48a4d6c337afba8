//! Cutting a byte stream into lines: whole lines as they complete, a line
//! longer than `MAX_LINE` in pieces, and a partial line once it has waited
//! `FLUSH_AFTER_MS` for its newline (a service that prints a prompt, or
//! one that dies mid-line, still gets its bytes shown).
//!
//! Pure: bytes in, pieces out, the time passed in by the caller. Bytes are
//! never interpreted: invalid UTF-8 and NUL pass through unchanged.

/// A line is cut into pieces of at most this many bytes.
pub const MAX_LINE: usize = 16 * 1024;
/// A partial line is written without its newline after this long.
pub const FLUSH_AFTER_MS: u64 = 100;

/// Where a piece sits in its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// The piece starts a line (otherwise it continues the previous one).
    pub starts: bool,
    /// The piece ends its line: a newline followed it.
    pub ends: bool,
}

/// A piece of a run of whole lines (`split_run`): where its bytes are in
/// the run, and where it sits in its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub range: std::ops::Range<usize>,
    pub kind: Piece,
}

/// Cuts `run`, whole lines each ending in a newline, into the pieces
/// `Assembler::feed` would give out for it from a line start; appends them
/// to `out` and returns how many bytes it used (all of `run` unless its
/// end is not a newline).
pub fn split_run(run: &[u8], out: &mut Vec<Span>) -> usize {
    let mut at = 0;
    let mut continued = false;
    while let Some(rest) = run.get(at..).filter(|r| !r.is_empty()) {
        let window = rest.get(..MAX_LINE).unwrap_or(rest);
        let starts = !continued;
        match memchr::memchr(b'\n', window) {
            Some(nl) => {
                out.push(Span {
                    range: at..at + nl,
                    kind: Piece { starts, ends: true },
                });
                continued = false;
                at += nl + 1;
            }
            None if window.len() == MAX_LINE => {
                out.push(Span {
                    range: at..at + MAX_LINE,
                    kind: Piece {
                        starts,
                        ends: false,
                    },
                });
                continued = true;
                at += MAX_LINE;
            }
            None => break,
        }
    }
    // A run cut mid-line leaves that line's pieces to the assembler.
    if continued {
        while out.last().is_some_and(|s| !s.kind.ends) {
            if let Some(s) = out.pop() {
                at = s.range.start;
            }
        }
    }
    at
}

/// The bytes of the current line not yet given out.
#[derive(Debug, Default)]
pub struct Assembler {
    held: Vec<u8>,
    /// When the held bytes arrived (ms), if any are held.
    held_since: Option<u64>,
    /// The line being assembled has already given out a piece.
    continued: bool,
}

impl Assembler {
    /// Feeds `data` read at `now_ms`; `emit` gets each finished piece
    /// (without its newline).
    pub fn feed(&mut self, mut data: &[u8], now_ms: u64, mut emit: impl FnMut(&[u8], Piece)) {
        while !data.is_empty() {
            let room = MAX_LINE.saturating_sub(self.held.len());
            let window = data.get(..room.min(data.len())).unwrap_or(data);
            match memchr::memchr(b'\n', window) {
                Some(nl) => {
                    let (line, rest) = data.split_at(nl);
                    let piece = Piece {
                        starts: !self.continued,
                        ends: true,
                    };
                    if self.held.is_empty() {
                        emit(line, piece);
                    } else {
                        self.held.extend_from_slice(line);
                        emit(&self.held, piece);
                        self.held.clear();
                    }
                    self.continued = false;
                    self.held_since = None;
                    data = rest.get(1..).unwrap_or(&[]);
                }
                None if window.len() == room => {
                    // A full piece without a newline: out it goes, marked
                    // as continued by the next.
                    let (part, rest) = data.split_at(room);
                    let piece = Piece {
                        starts: !self.continued,
                        ends: false,
                    };
                    if self.held.is_empty() {
                        emit(part, piece);
                    } else {
                        self.held.extend_from_slice(part);
                        emit(&self.held, piece);
                        self.held.clear();
                    }
                    self.continued = true;
                    self.held_since = None;
                    data = rest;
                }
                None => {
                    self.held.extend_from_slice(data);
                    self.held_since.get_or_insert(now_ms);
                    data = &[];
                }
            }
        }
    }

    /// Nothing is held and no line is half given out: the next byte starts
    /// a line (so whole lines can bypass the assembler, see `split_run`).
    pub fn at_line_start(&self) -> bool {
        self.held.is_empty() && !self.continued
    }

    /// When the held partial line is due to be written, if one is held.
    pub fn flush_due(&self) -> Option<u64> {
        self.held_since.map(|at| at.saturating_add(FLUSH_AFTER_MS))
    }

    /// Ends the current line, as if a newline came (its writer is gone):
    /// the held bytes as its last piece, or, when a piece of it went out
    /// already and nothing is held, an empty last piece (the newline alone).
    /// The next byte starts a line.
    pub fn end_line(&mut self, mut emit: impl FnMut(&[u8], Piece)) {
        if !self.held.is_empty() || self.continued {
            emit(
                &self.held,
                Piece {
                    starts: !self.continued,
                    ends: true,
                },
            );
        }
        self.held.clear();
        self.held_since = None;
        self.continued = false;
    }

    /// Gives out the held partial line now, if any (its rest, when it comes,
    /// continues it).
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8], Piece)) {
        if self.held.is_empty() {
            return;
        }
        emit(
            &self.held,
            Piece {
                starts: !self.continued,
                ends: false,
            },
        );
        self.held.clear();
        self.held_since = None;
        self.continued = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(a: &mut Assembler, data: &[u8]) -> Vec<(Vec<u8>, bool, bool)> {
        let mut out = Vec::new();
        a.feed(data, 0, |p, k| out.push((p.to_vec(), k.starts, k.ends)));
        out
    }

    #[test]
    fn whole_lines_come_out_as_they_complete() {
        let mut a = Assembler::default();
        assert_eq!(
            run(&mut a, b"one\ntwo\nthr"),
            [(b"one".to_vec(), true, true), (b"two".to_vec(), true, true)]
        );
        assert_eq!(a.flush_due(), Some(FLUSH_AFTER_MS));
        assert_eq!(
            run(&mut a, b"ee\n\n"),
            [(b"three".to_vec(), true, true), (b"".to_vec(), true, true)]
        );
        assert_eq!(a.flush_due(), None);
    }

    #[test]
    fn a_line_ended_by_its_writers_exit_gets_its_newline() {
        let mut a = Assembler::default();
        run(&mut a, b"no newline");
        let mut out = Vec::new();
        a.end_line(|p, k| out.push((p.to_vec(), k.starts, k.ends)));
        assert_eq!(out, [(b"no newline".to_vec(), true, true)]);
        assert!(a.at_line_start());
        // Flushed already: only the end is owed.
        run(&mut a, b"prompt> ");
        a.flush(|_, _| {});
        out.clear();
        a.end_line(|p, k| out.push((p.to_vec(), k.starts, k.ends)));
        assert_eq!(out, [(Vec::new(), false, true)]);
        out.clear();
        a.end_line(|p, k| out.push((p.to_vec(), k.starts, k.ends)));
        assert!(out.is_empty());
        assert_eq!(run(&mut a, b"next\n"), [(b"next".to_vec(), true, true)]);
    }

    #[test]
    fn a_long_line_is_cut_into_marked_pieces() {
        let mut a = Assembler::default();
        let mut data = vec![b'x'; MAX_LINE * 2 + 10];
        data.push(b'\n');
        // fed in odd chunks, as a pipe delivers it
        let mut out = Vec::new();
        for chunk in data.chunks(5000) {
            out.extend(run(&mut a, chunk));
        }
        let shape: Vec<(usize, bool, bool)> =
            out.iter().map(|(p, s, e)| (p.len(), *s, *e)).collect();
        assert_eq!(
            shape,
            [
                (MAX_LINE, true, false),
                (MAX_LINE, false, false),
                (10, false, true)
            ]
        );
        assert_eq!(run(&mut a, b"next\n"), [(b"next".to_vec(), true, true)]);
    }

    #[test]
    fn a_held_partial_line_is_flushed_and_its_rest_continues_it() {
        let mut a = Assembler::default();
        assert!(run(&mut a, b"prompt> ").is_empty());
        let mut out = Vec::new();
        a.flush(|p, k| out.push((p.to_vec(), k.starts, k.ends)));
        assert_eq!(out, [(b"prompt> ".to_vec(), true, false)]);
        assert_eq!(a.flush_due(), None);
        assert_eq!(run(&mut a, b"yes\n"), [(b"yes".to_vec(), false, true)]);
    }

    #[test]
    fn a_run_splits_into_the_pieces_feed_gives() {
        let long = vec![b'y'; MAX_LINE * 2 + 3];
        let exact = vec![b'z'; MAX_LINE];
        let mut bytes = Vec::new();
        for part in [&b"one"[..], b"", &long, b"two", &exact, b"\xff\0"] {
            bytes.extend_from_slice(part);
            bytes.push(b'\n');
        }
        let mut spans = Vec::new();
        assert_eq!(split_run(&bytes, &mut spans), bytes.len());
        let split: Vec<(Vec<u8>, bool, bool)> = spans
            .iter()
            .map(|s| (bytes[s.range.clone()].to_vec(), s.kind.starts, s.kind.ends))
            .collect();
        assert_eq!(split, run(&mut Assembler::default(), &bytes));
        // a run whose end is not a newline stops after its last whole line
        let mut spans = Vec::new();
        assert_eq!(split_run(b"a\nbc", &mut spans), 2);
        assert_eq!(spans.len(), 1);
        let mut spans = Vec::new();
        assert_eq!(split_run(&long[..MAX_LINE + 1], &mut spans), 0);
        assert!(spans.is_empty());
    }

    #[test]
    fn bytes_pass_unchanged() {
        let mut a = Assembler::default();
        let line = b"\xff\xfe\0bin\x80ary";
        let mut data = line.to_vec();
        data.push(b'\n');
        assert_eq!(run(&mut a, &data), [(line.to_vec(), true, true)]);
    }
}
