//! Human log lines on stderr (the console when zurg is PID 1), one write(2)
//! per line so lines from zurg and its children never interleave mid-line.
//!
//! Logging must never stop the supervisor, and a write to a pipe nobody
//! reads blocks. So lines go through a bounded queue (`QUEUE_BYTES`) to a
//! writer thread, the only one that touches stderr. When the queue is full a
//! line is dropped and counted; once the writer catches up it says how many
//! were lost. stderr itself stays blocking: its file description is shared
//! with the children, which would see EAGAIN if zurg made it non-blocking.
//! `flush` gives the writer a short deadline before zurg exits.
//!
//! Without a writer thread (it could not be spawned) a line is written on
//! the caller's thread, as before.
//!
//! Services' prefixed lines take the same path through writers of their
//! own, one for zurg's stdout and one for its stderr (`raw_lines`), so a
//! chatty service never crowds zurg's own lines out of their queue: a
//! stream nobody reads costs dropped lines, counted and reported as zurg's
//! own log lines, never a stalled loop. Writes are batched up to `PIPE_BUF` bytes of whole lines, so a
//! burst costs few system calls and a line still never interleaves with
//! another writer's.
//!
//! A write that fails (a full disk under a redirected stdout, a closed
//! pipe, EIO) loses its lines: each writer counts them (`LostLines`) and, once a
//! write succeeds again, says how many (services' streams in zurg's log;
//! zurg's own log on stderr itself). A line the stream took in part is
//! ended with a newline before the next, so two lines never run together.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::lost_lines::LostLines;
use crate::os::write_all::{write_all, WriteError};

static TIMESTAMPS: AtomicBool = AtomicBool::new(false);

/// Starts every later line with an RFC 3339 UTC time (set once at start-up,
/// from `--log-timestamps`; a global so that no caller has to pass it).
pub fn set_timestamps(on: bool) {
    TIMESTAMPS.store(on, Ordering::Relaxed);
}

/// Queued bytes beyond which lines are dropped: a few thousand lines, far
/// more than zurg writes in a burst while stderr is healthy.
pub const QUEUE_BYTES: usize = 256 << 10;

/// The same for services' lines, on each of zurg's streams: service output
/// comes in bursts (a service may log a few MB at start-up), and a reader
/// that is only slow should lose nothing.
pub const SERVICE_QUEUE_BYTES: usize = 4 << 20;

/// While lines are being dropped, a report at most this often; the first
/// drop is reported at once.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

/// A write to a pipe of at most this many bytes is atomic (PIPE_BUF).
const BATCH_BYTES: usize = 4096;

/// One of zurg's own output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    Stdout,
    Stderr,
}

impl Dest {
    fn name(self) -> &'static str {
        match self {
            Dest::Stdout => "stdout",
            Dest::Stderr => "stderr",
        }
    }
}

/// How long zurg waits for queued lines to be written before it exits.
pub const FLUSH_DEADLINE: Duration = Duration::from_millis(200);

/// One log line as written, newline included. Formatting lives here alone.
pub fn format_line(args: std::fmt::Arguments<'_>) -> Vec<u8> {
    let text = std::fmt::format(args);
    let mut buf = Vec::with_capacity(text.len() + 40);
    if TIMESTAMPS.load(Ordering::Relaxed) {
        let now = crate::cli::utc_timestamp(crate::os::wall_clock_us());
        let _ = write!(buf, "{now} ");
    }
    let _ = buf.write_all(b"zurg: ");
    buf.extend_from_slice(escape_controls(&text).as_bytes());
    buf.push(b'\n');
    buf
}

#[derive(Default)]
struct Queue {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Lines dropped since the writer last reported drops.
    dropped: u64,
    /// The writer holds lines it took from the queue and has not written.
    writing: bool,
    /// When drops of services' lines were last reported (they are reported
    /// while they happen, as the stream may never be read again).
    reported_at: Option<Instant>,
    /// Bytes queued under a `Held` without waking the writer yet.
    unannounced: usize,
}

impl Queue {
    /// Queues `line` unless that would pass `cap` bytes; false if dropped.
    fn push(&mut self, line: Vec<u8>, cap: usize) -> bool {
        self.push_lines(line, 1, cap)
    }

    /// Queues `lines` whole lines in one buffer, or drops and counts them.
    fn push_lines(&mut self, line: Vec<u8>, lines: u64, cap: usize) -> bool {
        if self.bytes.saturating_add(line.len()) > cap {
            self.dropped = self.dropped.saturating_add(lines);
            return false;
        }
        self.bytes += line.len();
        self.lines.push_back(line);
        true
    }

    /// Everything queued, plus the drop notice when lines were lost; the
    /// notice comes last, once what was kept has been written.
    fn take(&mut self) -> Vec<Vec<u8>> {
        self.bytes = 0;
        let mut out: Vec<Vec<u8>> = self.lines.drain(..).collect();
        if out.is_empty() && self.dropped > 0 {
            let n = std::mem::take(&mut self.dropped);
            out.push(format_line(format_args!(
                "{n} log lines dropped (stderr not being read)"
            )));
        }
        out
    }

    /// Services' lines dropped and not yet reported, when a report is due:
    /// at the first drop, then at most every `DROP_REPORT_EVERY`, and
    /// (`caught_up`) once the writer has written what it kept.
    fn service_drops_due(&mut self, caught_up: bool) -> Option<u64> {
        if self.dropped == 0 {
            return None;
        }
        let due = caught_up
            || self
                .reported_at
                .is_none_or(|at| at.elapsed() >= DROP_REPORT_EVERY);
        if !due {
            return None;
        }
        self.reported_at = if caught_up {
            None
        } else {
            Some(Instant::now())
        };
        Some(std::mem::take(&mut self.dropped))
    }

    fn idle(&self) -> bool {
        self.lines.is_empty() && self.dropped == 0 && !self.writing
    }

    /// Nothing left to write (drops of stdout are reported on stderr).
    fn written(&self) -> bool {
        self.lines.is_empty() && !self.writing
    }
}

struct Writer {
    dest: Dest,
    /// Services' lines: drops are reported through zurg's own log.
    service: bool,
    cap: usize,
    queue: Mutex<Queue>,
    /// Signalled when lines are queued (to the writer) and when the queue
    /// has been written (to `flush`).
    changed: Condvar,
}

impl Writer {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic elsewhere while holding the lock leaves a usable queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the writer for what is queued, unless it is busy writing: it
    /// looks at the queue again before it waits (a wake-up is a system
    /// call even when nobody waits).
    fn announce(&self, q: &mut Queue) {
        q.unannounced = 0;
        if !q.writing {
            self.changed.notify_all();
        }
    }

    fn run(&self) {
        let mut batch_buf = Vec::with_capacity(BATCH_BYTES);
        let mut out = Stream::default();
        loop {
            let batch = {
                let mut q = self.lock();
                if self.service {
                    // Counted here and told in zurg's own log.
                    let caught_up = q.lines.is_empty();
                    if let Some(n) = q.service_drops_due(caught_up) {
                        drop(q);
                        report_service_drops(self.dest, n);
                        q = self.lock();
                    }
                }
                while q.lines.is_empty() && (q.dropped == 0 || self.service) {
                    q.writing = false;
                    self.changed.notify_all();
                    q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                q.writing = true;
                q.take()
            };
            write_batched(self.dest, &batch, &mut batch_buf, &mut out);
            if let Some((n, e)) = out.lost.recovered() {
                let what = format!("{n} lines lost writing to {}: {}", self.dest.name(), e);
                if self.service {
                    line(format_args!("{what}"));
                } else {
                    // This writer is zurg's log: it says so itself.
                    let said = format_line(format_args!("{what}"));
                    write_batched(self.dest, &[said], &mut batch_buf, &mut out);
                }
            } else if let Some(e) = out.lost.first_failure() {
                if self.service {
                    line(format_args!(
                        "cannot write to {}: {}; its lines are lost (counted) until a write succeeds",
                        self.dest.name(),
                        e
                    ));
                }
            }
        }
    }
}

/// What a writer's failed writes left behind: the lines they lost, and a
/// line the stream took only in part.
#[derive(Debug, Default)]
struct Stream {
    lost: LostLines<WriteError>,
    /// The stream took part of a line: a newline goes first next time.
    torn: bool,
}

impl Stream {
    /// A write of `bytes` (whole lines) failed after `taken` of them.
    fn failed(&mut self, e: WriteError, bytes: &[u8], taken: usize) {
        let unwritten = bytes.get(taken..).unwrap_or(&[]);
        self.lost.failed(
            u64::try_from(memchr::memchr_iter(b'\n', unwritten).count()).unwrap_or(u64::MAX),
            e,
        );
        if taken > 0 && bytes.get(taken - 1) != Some(&b'\n') {
            self.torn = true;
        }
    }
}

/// Writes whole lines, as many per write as fit in `BATCH_BYTES`.
/// Straight to the descriptor: Rust's stdout would cut batches at its own
/// buffer's size.
fn write_batched(dest: Dest, lines: &[Vec<u8>], buf: &mut Vec<u8>, out: &mut Stream) {
    use std::os::fd::AsFd;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let fd = match dest {
        Dest::Stdout => stdout.as_fd(),
        Dest::Stderr => stderr.as_fd(),
    };
    batch(lines, buf, |bytes| {
        if out.torn {
            if let (_, Err(e)) = write_all(fd, [b"\n"]) {
                out.failed(e, bytes, 0);
                return;
            }
            out.torn = false;
        }
        match write_all(fd, [bytes]) {
            (_, Ok(())) => out.lost.wrote(),
            (taken, Err(e)) => out.failed(e, bytes, taken),
        }
    });
}

/// Cuts `lines` into writes for `write`: whole lines, at most
/// `BATCH_BYTES` each unless one line alone is longer.
fn batch(lines: &[Vec<u8>], buf: &mut Vec<u8>, mut write: impl FnMut(&[u8])) {
    for entry in lines {
        // An entry may hold many lines (a service's burst): cut at line
        // ends so that no write passes BATCH_BYTES but for one long line.
        let mut rest = entry.as_slice();
        while !rest.is_empty() {
            let room = BATCH_BYTES.saturating_sub(buf.len());
            let cut = match rest.get(..room.min(rest.len())) {
                Some(head) if head.len() == rest.len() => rest.len(),
                Some(head) => memchr::memrchr(b'\n', head).map_or(0, |i| i + 1),
                None => 0,
            };
            if cut == 0 {
                if buf.is_empty() {
                    // One line longer than a batch: written on its own.
                    let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
                    let (line, tail) = rest.split_at(end);
                    write(line);
                    rest = tail;
                } else {
                    write(buf.as_slice());
                    buf.clear();
                }
                continue;
            }
            let (head, tail) = rest.split_at(cut);
            buf.extend_from_slice(head);
            rest = tail;
            if buf.len() >= BATCH_BYTES {
                write(buf.as_slice());
                buf.clear();
            }
        }
    }
    if !buf.is_empty() {
        write(buf.as_slice());
        buf.clear();
    }
}

fn report_service_drops(dest: Dest, n: u64) {
    line(format_args!(
        "{n} lines dropped: {} is not being read",
        dest.name()
    ));
}

static WRITER: OnceLock<Option<&'static Writer>> = OnceLock::new();
static STDOUT_WRITER: OnceLock<Option<&'static Writer>> = OnceLock::new();
static SERVICE_STDERR_WRITER: OnceLock<Option<&'static Writer>> = OnceLock::new();

fn writer() -> Option<&'static Writer> {
    *WRITER.get_or_init(|| start_writer(Dest::Stderr, false))
}

/// The writer of services' lines to `dest`.
fn writer_of(dest: Dest) -> Option<&'static Writer> {
    match dest {
        Dest::Stderr => *SERVICE_STDERR_WRITER.get_or_init(|| start_writer(Dest::Stderr, true)),
        Dest::Stdout => *STDOUT_WRITER.get_or_init(|| start_writer(Dest::Stdout, true)),
    }
}

fn start_writer(dest: Dest, service: bool) -> Option<&'static Writer> {
    let w: &'static Writer = Box::leak(Box::new(Writer {
        dest,
        service,
        cap: if service {
            SERVICE_QUEUE_BYTES
        } else {
            QUEUE_BYTES
        },
        queue: Mutex::new(Queue::default()),
        changed: Condvar::new(),
    }));
    let name = match (dest, service) {
        (_, false) => "zurg-log",
        (Dest::Stdout, true) => "zurg-stdout",
        (Dest::Stderr, true) => "zurg-stderr",
    };
    spawn_blocking_signals(name, move || w.run())
        .ok()
        .map(|_| w)
}

/// Queues `line`, which holds `lines` whole lines (newlines included,
/// written as they are), for zurg's own stdout or stderr: service lines in
/// `prefix` mode. Never blocks: past the queue's bound the lines are
/// dropped and counted.
pub fn raw_lines(dest: Dest, line: Vec<u8>, lines: u64) {
    match writer_of(dest) {
        Some(w) => {
            let report = {
                let mut q = w.lock();
                if q.push_lines(line, lines, w.cap) {
                    w.changed.notify_all();
                    None
                } else {
                    q.service_drops_due(false)
                }
            };
            if let Some(n) = report {
                report_service_drops(dest, n);
            }
        }
        None => {
            let _ = match dest {
                Dest::Stdout => std::io::stdout().lock().write_all(&line),
                Dest::Stderr => std::io::stderr().write_all(&line),
            };
        }
    }
}

/// Spawns a helper thread of zurg's that never takes a signal meant for
/// the loop's signalfd (a SIGTERM delivered to it would kill the process):
/// it starts with every signal blocked, inherited from this thread for the
/// moment of spawn.
pub fn spawn_blocking_signals<F: FnOnce() + Send + 'static>(
    name: &str,
    f: F,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    let mut old = SigSet::empty();
    let blocked = pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    );
    let spawned = std::thread::Builder::new().name(name.into()).spawn(f);
    if blocked.is_ok() {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    spawned
}

pub fn line(args: std::fmt::Arguments<'_>) {
    let buf = format_line(args);
    match writer() {
        Some(w) => {
            let len = buf.len();
            let mut q = w.lock();
            if !q.push(buf, QUEUE_BYTES) {
                return;
            }
            if HELD.with(Cell::get) > 0 {
                q.unannounced = q.unannounced.saturating_add(len);
                if q.unannounced < BATCH_BYTES {
                    return;
                }
            }
            w.announce(&mut q);
        }
        None => {
            let _ = std::io::stderr().write_all(&buf);
        }
    }
}

thread_local! {
    /// How many `Held` guards this thread has alive.
    static HELD: Cell<u32> = const { Cell::new(0) };
}

/// While alive, zurg's own lines logged on this thread wake the writer
/// once a write's worth (`BATCH_BYTES`) has queued rather than at every
/// line; dropping it wakes the writer for the rest. The event loop holds
/// one per turn: starting 10,000 services logs 10,000 lines in one turn,
/// and a wake-up per line is a context switch per line on a loaded
/// machine. A line is thus written at the end of its turn at the latest.
#[must_use]
pub struct Held {
    /// Per thread: the count it changes is this thread's.
    _not_send: std::marker::PhantomData<*const ()>,
}

/// See `Held`.
pub fn hold() -> Held {
    HELD.with(|h| h.set(h.get().saturating_add(1)));
    Held {
        _not_send: std::marker::PhantomData,
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let outermost = HELD.with(|h| {
            h.set(h.get().saturating_sub(1));
            h.get() == 0
        });
        if let (true, Some(Some(w))) = (outermost, WRITER.get()) {
            let mut q = w.lock();
            if q.unannounced > 0 {
                w.announce(&mut q);
            }
        }
    }
}

/// Waits until every queued line is written, or `within` has passed (stderr
/// is blocked). For the moments before zurg exits.
pub fn flush(within: Duration) {
    let deadline = Instant::now() + within;
    // Services' lines first: their drop reports go to zurg's log.
    for w in [&STDOUT_WRITER, &SERVICE_STDERR_WRITER, &WRITER] {
        if let Some(w) = w.get().copied().flatten() {
            flush_one(w, deadline);
        }
    }
}

fn flush_one(w: &Writer, deadline: Instant) {
    let mut q = w.lock();
    // Lines held back by a `Held` still alive on this thread.
    w.announce(&mut q);
    while !(q.idle() || (w.service && q.written())) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        q = match w.changed.wait_timeout(q, left) {
            Ok((q, _)) => q,
            Err(e) => e.into_inner().0,
        };
    }
}

/// Control characters shown as escapes: names, paths and arguments come
/// from unit files and file names, and a newline or NUL in one must not
/// forge a second log line or cut the line short on a console. The same
/// escapes as every text zurg shows from others (`safe_text`).
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    crate::safe_text::escaped(text)
}

/// `log!("started {}", pid)` writes `zurg: started 42` to stderr.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::line(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: &[Vec<u8>]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    #[test]
    fn a_full_queue_drops_and_counts_then_reports_after_what_it_kept() {
        let mut q = Queue::default();
        let line = |i: u32| format_line(format_args!("line {i}"));
        let one = line(0).len();
        for i in 0..5 {
            q.push(line(i), one * 3);
        }
        assert_eq!(q.dropped, 2);
        assert_eq!(
            text(&q.take()),
            ["zurg: line 0\n", "zurg: line 1\n", "zurg: line 2\n"]
        );
        assert!(!q.idle(), "the drop notice is still owed");
        assert_eq!(
            text(&q.take()),
            ["zurg: 2 log lines dropped (stderr not being read)\n"]
        );
        assert!(q.take().is_empty());
        assert!(q.idle());
        // room again after the writer took the lines
        assert!(q.push(line(9), one * 3));
    }

    #[test]
    fn failed_writes_count_their_lines_and_a_torn_one_is_ended_later() {
        let enospc = WriteError::Os(nix::errno::Errno::ENOSPC);
        let mut one = Stream::default();
        one.failed(enospc, b"a\nbb\nccc\n", 3);
        one.lost.wrote();
        assert_eq!((one.lost.recovered(), one.torn), (Some((2, enospc)), true));

        let mut out = Stream::default();
        out.failed(enospc, b"a\nbb\nccc\n", 3);
        assert!(out.torn);
        assert_eq!(out.lost.first_failure(), Some(enospc));
        assert_eq!(out.lost.first_failure(), None);
        out.failed(WriteError::Os(nix::errno::Errno::EIO), b"d\n", 0);
        assert_eq!(out.lost.recovered(), None);
        out.lost.wrote();
        assert_eq!(out.lost.recovered(), Some((3, enospc)));
        assert_eq!(out.lost.recovered(), None);
        let mut whole = Stream::default();
        whole.failed(enospc, b"a\nb\n", 2);
        whole.lost.wrote();
        assert_eq!(
            (whole.lost.recovered(), whole.torn),
            (Some((1, enospc)), false)
        );
    }

    #[test]
    fn batches_are_cut_at_line_ends_within_pipe_buf() {
        let line = |c: u8, n: usize| {
            let mut l = vec![c; n];
            l.push(b'\n');
            l
        };
        let mut blob = Vec::new();
        for c in b'a'..=b'z' {
            blob.extend(line(c, 999));
        }
        let long = line(b'L', BATCH_BYTES * 2);
        let mut writes = Vec::new();
        let mut buf = Vec::new();
        batch(&[blob.clone(), long.clone()], &mut buf, |w| {
            writes.push(w.to_vec())
        });
        assert_eq!(writes.concat(), [blob, long].concat());
        for w in &writes {
            assert!(w.ends_with(b"\n"));
            assert!(w.len() <= BATCH_BYTES || w.iter().filter(|b| **b == b'\n').count() == 1);
        }
        assert_eq!(writes.len(), 26 / 4 + 1 + 1);
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(
            escape_controls("[web] started pid 4"),
            "[web] started pid 4"
        );
        assert_eq!(
            escape_controls("[a\nzurg: fake] x\0y\tz\r\u{1b}[31m\u{7f}\u{85}"),
            "[a\\nzurg: fake] x\\0y\\tz\\r\\x1b[31m\\x7f\\x85"
        );
        assert_eq!(escape_controls("résumé ✓"), "résumé ✓");
    }
}
