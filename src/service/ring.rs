//! The in-memory ring of a service's recent output lines, for `zurg logs`
//! (pure: no I/O, no clock reads; times are passed in).
//!
//! The bound is in bytes, not lines: a service printing long lines must not
//! hold more memory than one printing short ones. Each line is charged its
//! length plus `LINE_OVERHEAD` (the bookkeeping it costs), so a flood of
//! empty lines is bounded too. When a push goes over the bound, the oldest
//! lines are dropped.
//!
//! Every line gets a sequence number, one more than the line before, for
//! the ring's whole life; a follower remembers the next number it wants and
//! learns how many it missed when the ring dropped them before it read
//! them (`after`).

use std::collections::VecDeque;

/// What each line costs beyond its bytes: its index entry (40 bytes),
/// rounded up.
pub const LINE_OVERHEAD: usize = 48;

/// Which of a service's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One whole line, without its newline, as the ring holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    pub seq: u64,
    /// Wall clock, microseconds since the Unix epoch, when zurg read it.
    pub time_us: u64,
    pub stream: Stream,
    pub bytes: &'a [u8],
}

/// A line's index entry; its bytes are in `Ring::data`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    time_us: u64,
    stream: Stream,
    /// Where its bytes start, counted in bytes ever stored (see `Ring::base`).
    start: usize,
    len: usize,
}

impl Entry {
    fn cost(&self) -> usize {
        self.len.saturating_add(LINE_OVERHEAD)
    }
}

/// Dropped bytes are reclaimed once they are this many times the held
/// ones: a held byte is moved about once per this many bytes pushed (at 1,
/// the move was as costly as the copy in, during a flood of output).
pub const DEAD_RATIO: usize = 3;

/// A bounded number of bytes of a service's most recent lines.
///
/// The lines' bytes sit back to back in one buffer, so a line costs no
/// allocation of its own: a push appends, a drop only moves the first
/// line's mark, and the dropped bytes at the front are reclaimed (one
/// move of what is still held) once they are `DEAD_RATIO` times as many.
/// The buffer thus never holds much more than `DEAD_RATIO + 1` times the
/// bound (`push_spans` also keeps the newlines between lines).
#[derive(Debug, Clone)]
pub struct Ring {
    /// Tells one ring from another that took its place (a reused slot), so
    /// a follower's sequence numbers are never applied to the wrong one.
    id: u64,
    cap: usize,
    next_seq: u64,
    /// Made at the first line kept: every service has a ring, and most
    /// print little or nothing (its 72 bytes inline were 7% of a slot).
    held: Option<Box<Held>>,
}

/// A ring's lines.
#[derive(Debug, Clone, Default)]
struct Held {
    lines: VecDeque<Entry>,
    /// The held lines' bytes, after some of dropped lines' at the front.
    data: Vec<u8>,
    /// Where `data` starts, counted in bytes ever stored (`Entry::start`
    /// minus this is an index into `data`).
    base: usize,
    bytes: usize,
}

/// What a follower gets for its position: lines it missed (dropped before
/// it read them) and where to go on from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After {
    pub missed: u64,
    /// Index into the ring of the first line to send (see `get`).
    pub from: usize,
}

impl Held {
    fn trim(&mut self, cap: usize) {
        while self.bytes > cap && self.lines.len() > 1 {
            self.drop_oldest();
        }
        if cap == 0 {
            while !self.lines.is_empty() {
                self.drop_oldest();
            }
        }
    }

    fn drop_oldest(&mut self) {
        if let Some(old) = self.lines.pop_front() {
            self.bytes = self.bytes.saturating_sub(old.cost());
        }
    }

    /// Reclaims the dropped lines' bytes at the front of `data`: always
    /// when `all`, else once they are `DEAD_RATIO` times the held lines'
    /// (so a byte is moved at most once per `DEAD_RATIO` bytes pushed).
    fn compact(&mut self, all: bool) {
        let dead = self
            .lines
            .front()
            .map_or(self.data.len(), |e| e.start.wrapping_sub(self.base))
            .min(self.data.len());
        let live = self.data.len().saturating_sub(dead);
        if dead > 0 && (all || dead > live.saturating_mul(DEAD_RATIO)) {
            self.data.drain(..dead);
            self.base = self.base.wrapping_add(dead);
        }
    }

    fn line(&self, e: &Entry) -> Line<'_> {
        let at = e.start.wrapping_sub(self.base);
        Line {
            seq: e.seq,
            time_us: e.time_us,
            stream: e.stream,
            bytes: self.data.get(at..at.saturating_add(e.len)).unwrap_or(&[]),
        }
    }
}

/// No lines: what an empty ring's index reads.
static NO_LINES: VecDeque<Entry> = VecDeque::new();

impl Ring {
    pub fn new(id: u64, cap: usize) -> Ring {
        Ring {
            id,
            cap,
            next_seq: 0,
            held: None,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The bound, in bytes; 0 keeps no line.
    pub fn cap(&self) -> usize {
        self.cap
    }

    #[cfg(test)]
    fn data_len(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.data.len())
    }

    fn lines(&self) -> &VecDeque<Entry> {
        self.held.as_ref().map_or(&NO_LINES, |h| &h.lines)
    }

    /// Changes the bound (a reloaded unit), dropping the oldest lines when
    /// it shrank.
    pub fn set_cap(&mut self, cap: usize) {
        if cap != self.cap {
            let shrank = cap < self.cap;
            self.cap = cap;
            if let Some(h) = &mut self.held {
                h.trim(cap);
                if shrank {
                    h.compact(true);
                    h.data.shrink_to_fit();
                }
            }
        }
    }

    /// Appends a line and returns its sequence number. A line longer than
    /// the whole bound is cut to it, so the ring never holds more than the
    /// bound and the newest line is always kept (unless the bound is 0).
    pub fn push(&mut self, stream: Stream, bytes: &[u8], time_us: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        if self.cap == 0 {
            return seq;
        }
        let room = self.cap.saturating_sub(LINE_OVERHEAD).max(1);
        let kept = bytes.get(..room).unwrap_or(bytes);
        let h = self.held.get_or_insert_default();
        let entry = Entry {
            seq,
            time_us,
            stream,
            start: h.base.wrapping_add(h.data.len()),
            len: kept.len(),
        };
        h.data.extend_from_slice(kept);
        h.bytes = h.bytes.saturating_add(entry.cost());
        h.lines.push_back(entry);
        h.trim(self.cap);
        h.compact(false);
        seq
    }

    /// Appends the lines whose bytes are at `spans` of `bytes` (in order,
    /// not overlapping), as `push` would one by one but in one copy: the
    /// lines the bound would drop at once are only counted (they take
    /// their sequence numbers), and the rest are copied together, bytes
    /// between them included, so a read of many short lines costs one
    /// copy and an index entry per line.
    pub fn push_spans<I>(&mut self, stream: Stream, bytes: &[u8], spans: I, time_us: u64)
    where
        I: DoubleEndedIterator<Item = std::ops::Range<usize>> + ExactSizeIterator + Clone,
    {
        let total = spans.len();
        let room = self.cap.saturating_sub(LINE_OVERHEAD).max(1);
        // The newest lines that fit the bound together (at least one).
        let mut keep = 0;
        let mut cost = 0usize;
        let mut cut = false;
        if self.cap > 0 {
            for r in spans.clone().rev() {
                let c = r.len().min(room).saturating_add(LINE_OVERHEAD);
                if keep > 0 && cost.saturating_add(c) > self.cap {
                    break;
                }
                cost = cost.saturating_add(c);
                keep += 1;
                cut |= r.len() > room;
            }
        }
        let skip = total.saturating_sub(keep);
        self.next_seq = self
            .next_seq
            .saturating_add(u64::try_from(skip).unwrap_or(u64::MAX));
        let kept = spans.skip(skip);
        if cut {
            // A line longer than the bound: `push` cuts it.
            for r in kept {
                self.push(stream, bytes.get(r).unwrap_or(&[]), time_us);
            }
            return;
        }
        let (Some(first), Some(last)) = (kept.clone().next(), kept.clone().next_back()) else {
            return;
        };
        let h = self.held.get_or_insert_default();
        let from = h.base.wrapping_add(h.data.len());
        h.data
            .extend_from_slice(bytes.get(first.start..last.end).unwrap_or(&[]));
        for r in kept {
            let entry = Entry {
                seq: self.next_seq,
                time_us,
                stream,
                start: from.wrapping_add(r.start.saturating_sub(first.start)),
                len: r.len(),
            };
            self.next_seq = self.next_seq.saturating_add(1);
            h.bytes = h.bytes.saturating_add(entry.cost());
            h.lines.push_back(entry);
        }
        h.trim(self.cap);
        h.compact(false);
    }

    /// Bytes charged for the lines held (never above the bound, but for a
    /// lone line when the bound is under `LINE_OVERHEAD`).
    pub fn bytes(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.bytes)
    }

    pub fn len(&self) -> usize {
        self.lines().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines().is_empty()
    }

    /// The sequence number the next line will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The sequence number of the oldest line held (`next_seq` when empty).
    pub fn first_seq(&self) -> u64 {
        self.lines().front().map_or(self.next_seq, |l| l.seq)
    }

    /// The line at `index` (0 is the oldest held).
    pub fn get(&self, index: usize) -> Option<Line<'_>> {
        let h = self.held.as_ref()?;
        h.lines.get(index).map(|e| h.line(e))
    }

    /// Index of the first of the last `n` lines.
    pub fn last(&self, n: usize) -> usize {
        self.len().saturating_sub(n)
    }

    /// Index of the first line read at or after `time_us`. Lines are kept
    /// in the order they were read; a wall clock stepped back makes this
    /// approximate, never out of bounds.
    pub fn since(&self, time_us: u64) -> usize {
        self.lines().partition_point(|l| l.time_us < time_us)
    }

    /// Where a follower that wants line `seq` next goes on from, and how
    /// many lines it missed because they were dropped first. A `seq` past
    /// the newest line (a follower from the future) starts at the end.
    pub fn after(&self, seq: u64) -> After {
        let first = self.first_seq();
        if seq < first {
            return After {
                missed: first.saturating_sub(seq),
                from: 0,
            };
        }
        let from = usize::try_from(seq.saturating_sub(first)).unwrap_or(usize::MAX);
        After {
            missed: 0,
            from: from.min(self.len()),
        }
    }

    /// The lines from `index` on, oldest first.
    pub fn lines_from(&self, index: usize) -> impl Iterator<Item = Line<'_>> {
        self.held.iter().flat_map(move |h| {
            h.lines
                .range(index.min(h.lines.len())..)
                .map(move |e| h.line(e))
        })
    }
}

/// Where to start reading each of `rings` to get the last `lines` lines of
/// them all together (newest by time, a tie going to the later ring), none
/// read before `since_us`: an index into each ring, in `rings`' order.
pub fn starts(rings: &[&Ring], lines: Option<u64>, since_us: Option<u64>) -> Vec<usize> {
    let mut start: Vec<usize> = rings
        .iter()
        .map(|r| since_us.map_or(0, |t| r.since(t)))
        .collect();
    let Some(n) = lines else {
        return start;
    };
    // Walk back from the newest line of every ring together.
    let mut ends: Vec<usize> = rings.iter().map(|r| r.len()).collect();
    let newest = |i: usize, end: usize| -> Option<(u64, usize)> {
        let line = rings.get(i)?.get(end.checked_sub(1)?)?;
        Some((line.time_us, i))
    };
    let mut heap: std::collections::BinaryHeap<(u64, usize)> = ends
        .iter()
        .enumerate()
        .filter(|(i, end)| **end > start.get(*i).copied().unwrap_or(0))
        .filter_map(|(i, end)| newest(i, *end))
        .collect();
    let mut taken = 0u64;
    while taken < n {
        let Some((_, i)) = heap.pop() else { break };
        let Some(end) = ends.get_mut(i) else { break };
        *end = end.saturating_sub(1);
        taken = taken.saturating_add(1);
        let end = *end;
        if end > start.get(i).copied().unwrap_or(0) {
            heap.extend(newest(i, end));
        }
    }
    for (s, end) in start.iter_mut().zip(ends) {
        *s = (*s).max(end);
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(ring: &Ring, from: usize) -> Vec<String> {
        ring.lines_from(from)
            .map(|l| String::from_utf8_lossy(l.bytes).into_owned())
            .collect()
    }

    #[test]
    fn bound_is_in_bytes_and_drops_the_oldest() {
        // Room for two 10-byte lines, not three.
        let mut ring = Ring::new(1, 2 * (10 + LINE_OVERHEAD) + 5);
        for (i, t) in ["aaaaaaaaa0", "aaaaaaaaa1", "aaaaaaaaa2"]
            .iter()
            .enumerate()
        {
            ring.push(Stream::Stdout, t.as_bytes(), i as u64);
        }
        assert_eq!(texts(&ring, 0), ["aaaaaaaaa1", "aaaaaaaaa2"]);
        assert!(ring.bytes() <= 2 * (10 + LINE_OVERHEAD) + 5);
        // One long line pushes out several short ones.
        ring.push(Stream::Stderr, &[b'x'; 60], 9);
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.get(0).unwrap().stream, Stream::Stderr);
    }

    #[test]
    fn empty_lines_are_charged_too() {
        let mut ring = Ring::new(1, 10 * LINE_OVERHEAD);
        for i in 0..1000 {
            ring.push(Stream::Stdout, b"", i);
        }
        assert_eq!(ring.len(), 10);
    }

    #[test]
    fn a_line_longer_than_the_bound_is_cut_to_it() {
        let mut ring = Ring::new(1, LINE_OVERHEAD + 4);
        ring.push(Stream::Stdout, b"0123456789", 0);
        assert_eq!(texts(&ring, 0), ["0123"]);
        assert_eq!(ring.bytes(), LINE_OVERHEAD + 4);
        let mut none = Ring::new(1, 0);
        assert_eq!(none.push(Stream::Stdout, b"x", 0), 0);
        assert_eq!(none.push(Stream::Stdout, b"y", 0), 1);
        assert!(none.is_empty());
        assert_eq!(none.after(0), After { missed: 2, from: 0 });
    }

    #[test]
    fn seqs_increase_across_drops() {
        let mut ring = Ring::new(1, 3 * (1 + LINE_OVERHEAD));
        let seqs: Vec<u64> = (0..10)
            .map(|i| ring.push(Stream::Stdout, b"x", i))
            .collect();
        assert_eq!(seqs, (0..10).collect::<Vec<_>>());
        assert_eq!((ring.first_seq(), ring.next_seq()), (7, 10));
        assert_eq!(
            ring.lines_from(0).map(|l| l.seq).collect::<Vec<_>>(),
            [7, 8, 9]
        );
    }

    #[test]
    fn last_n() {
        let mut ring = Ring::new(1, 1 << 20);
        for i in 0..5u64 {
            ring.push(Stream::Stdout, format!("{i}").as_bytes(), i);
        }
        assert_eq!(texts(&ring, ring.last(3)), ["2", "3", "4"]);
        assert_eq!(texts(&ring, ring.last(0)), Vec::<String>::new());
        assert_eq!(texts(&ring, ring.last(99)).len(), 5);
    }

    #[test]
    fn since_a_time() {
        let mut ring = Ring::new(1, 1 << 20);
        for t in [10u64, 20, 20, 30] {
            ring.push(Stream::Stdout, format!("{t}").as_bytes(), t);
        }
        assert_eq!(texts(&ring, ring.since(20)), ["20", "20", "30"]);
        assert_eq!(texts(&ring, ring.since(0)).len(), 4);
        assert_eq!(ring.since(31), 4);
    }

    #[test]
    fn after_a_seq_counts_what_was_missed() {
        let mut ring = Ring::new(1, 3 * (1 + LINE_OVERHEAD));
        for i in 0..3 {
            ring.push(Stream::Stdout, b"x", i);
        }
        // Caught up, then one new line.
        assert_eq!(ring.after(3), After { missed: 0, from: 3 });
        ring.push(Stream::Stdout, b"y", 3);
        assert_eq!(ring.after(3), After { missed: 0, from: 2 });
        assert_eq!(ring.get(2).unwrap().seq, 3);
        // Five more: seqs 4..=8, the ring holds 6, 7, 8; a follower at 3
        // missed 3, 4 and 5.
        for i in 4..9 {
            ring.push(Stream::Stdout, b"z", i);
        }
        assert_eq!(ring.after(3), After { missed: 3, from: 0 });
        // From the future: nothing to send, nothing missed.
        assert_eq!(ring.after(100), After { missed: 0, from: 3 });
    }

    fn ring_at(times: &[u64]) -> Ring {
        let mut ring = Ring::new(1, 1 << 20);
        for t in times {
            ring.push(Stream::Stdout, format!("{t}").as_bytes(), *t);
        }
        ring
    }

    #[test]
    fn starts_take_the_newest_lines_of_all_rings_together() {
        let a = ring_at(&[1, 4, 6, 9]);
        let b = ring_at(&[2, 3, 7]);
        let empty = ring_at(&[]);
        let rings = [&a, &b, &empty];
        // All of them.
        assert_eq!(starts(&rings, None, None), [0, 0, 0]);
        // The last 3 lines overall are 6, 7, 9.
        assert_eq!(starts(&rings, Some(3), None), [2, 2, 0]);
        assert_eq!(starts(&rings, Some(0), None), [4, 3, 0]);
        assert_eq!(starts(&rings, Some(100), None), [0, 0, 0]);
        // Since 4: 4, 6, 9 and 7.
        assert_eq!(starts(&rings, None, Some(4)), [1, 2, 0]);
        // Both: the last 2 of those.
        assert_eq!(starts(&rings, Some(2), Some(4)), [3, 2, 0]);
        // The last 3 of since-5 are just the 3 there are.
        assert_eq!(starts(&rings, Some(3), Some(5)), [2, 2, 0]);
    }

    #[test]
    fn shrinking_the_bound_drops_at_once() {
        let mut ring = Ring::new(1, 1 << 20);
        for i in 0..10 {
            ring.push(Stream::Stdout, b"x", i);
        }
        ring.set_cap(2 * (1 + LINE_OVERHEAD));
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.first_seq(), 8);
    }

    #[test]
    fn lines_stay_whole_while_dropped_bytes_are_reclaimed() {
        let cap = 10 * (20 + LINE_OVERHEAD);
        let mut ring = Ring::new(1, cap);
        for i in 0..1000u64 {
            // lines of varying length, so reclaiming moves them around
            let text = format!("{i}-{}", "x".repeat((i % 17) as usize));
            ring.push(Stream::Stdout, text.as_bytes(), i);
            assert!(
                ring.data_len() <= (DEAD_RATIO + 1) * cap,
                "{} bytes held",
                ring.data_len()
            );
            assert_eq!(ring.get(ring.len() - 1).unwrap().bytes, text.as_bytes());
        }
        for line in ring.lines_from(0) {
            let text = format!("{}-{}", line.seq, "x".repeat((line.seq % 17) as usize));
            assert_eq!(line.bytes, text.as_bytes());
            assert_eq!(line.time_us, line.seq);
        }
        assert_eq!(ring.first_seq() + ring.len() as u64, 1000);
        // Shrinking to nothing frees the bytes.
        ring.set_cap(0);
        assert!(ring.is_empty());
        assert_eq!(ring.data_len(), 0);
        ring.set_cap(cap);
        ring.push(Stream::Stderr, b"again", 5);
        assert_eq!(texts(&ring, 0), ["again"]);
    }

    /// `push_spans` leaves the ring as a `push` per line would.
    #[test]
    fn lines_pushed_together_are_held_as_if_pushed_one_by_one() {
        let text = b"alpha\nbe\n\ngamma-gamma\ndelta\n";
        let spans = [0..5, 6..8, 9..9, 10..21, 22..27];
        for cap in [0, 10, 60, 100, 130, 200, 1000] {
            for before in [0, 1, 3] {
                let mut one = Ring::new(1, cap);
                let mut all = Ring::new(1, cap);
                for i in 0..before {
                    let old = format!("old{i}");
                    one.push(Stream::Stderr, old.as_bytes(), 1);
                    all.push(Stream::Stderr, old.as_bytes(), 1);
                }
                for r in spans.iter().cloned() {
                    one.push(Stream::Stdout, &text[r], 2);
                }
                all.push_spans(Stream::Stdout, text, spans.iter().cloned(), 2);
                assert_eq!(all.next_seq(), one.next_seq(), "cap {cap}");
                assert_eq!(all.bytes(), one.bytes(), "cap {cap}");
                let lines = |r: &Ring| {
                    r.lines_from(0)
                        .map(|l| (l.seq, l.stream, l.bytes.to_vec()))
                        .collect::<Vec<_>>()
                };
                assert_eq!(lines(&all), lines(&one), "cap {cap} before {before}");
            }
        }
        // pushed together again and again: bounded, the newest kept whole
        let mut r = Ring::new(1, 300);
        for _ in 0..100 {
            r.push_spans(Stream::Stdout, text, spans.iter().cloned(), 3);
            assert!(r.bytes() <= 300);
            assert!(r.data_len() <= (DEAD_RATIO + 1) * 300 + text.len());
        }
        assert_eq!(r.next_seq(), 500);
        assert_eq!(r.get(r.len() - 1).unwrap().bytes, b"delta");
    }

    #[test]
    fn streams_serialize_lowercase() {
        assert_eq!(
            serde_json::to_string(&Stream::Stderr).unwrap(),
            "\"stderr\""
        );
        let s: Stream = serde_json::from_str("\"stdout\"").unwrap();
        assert_eq!(s, Stream::Stdout);
    }
}
