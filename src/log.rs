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

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

static TIMESTAMPS: AtomicBool = AtomicBool::new(false);

/// Starts every later line with an RFC 3339 UTC time (set once at start-up,
/// from `--log-timestamps`; a global so that no caller has to pass it).
pub fn set_timestamps(on: bool) {
    TIMESTAMPS.store(on, Ordering::Relaxed);
}

/// Queued bytes beyond which lines are dropped: a few thousand lines, far
/// more than zurg writes in a burst while stderr is healthy.
pub const QUEUE_BYTES: usize = 256 << 10;

/// How long zurg waits for queued lines to be written before it exits.
pub const FLUSH_DEADLINE: Duration = Duration::from_millis(200);

/// One log line as written, newline included. Formatting lives here alone.
pub fn format_line(args: std::fmt::Arguments<'_>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(160);
    if TIMESTAMPS.load(Ordering::Relaxed) {
        let now = crate::cli::utc_timestamp(crate::os::wall_clock_us());
        let _ = write!(buf, "{now} ");
    }
    let _ = buf.write_all(b"zurg: ");
    let _ = buf.write_fmt(args);
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
}

impl Queue {
    /// Queues `line` unless that would pass `cap` bytes; false if dropped.
    fn push(&mut self, line: Vec<u8>, cap: usize) -> bool {
        if self.bytes.saturating_add(line.len()) > cap {
            self.dropped = self.dropped.saturating_add(1);
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

    fn idle(&self) -> bool {
        self.lines.is_empty() && self.dropped == 0 && !self.writing
    }
}

struct Writer {
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

    fn run(&self) {
        let mut stderr = std::io::stderr();
        loop {
            let batch = {
                let mut q = self.lock();
                while q.lines.is_empty() && q.dropped == 0 {
                    q.writing = false;
                    self.changed.notify_all();
                    q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                q.writing = true;
                q.take()
            };
            for line in batch {
                let _ = stderr.write_all(&line);
            }
        }
    }
}

static WRITER: OnceLock<Option<&'static Writer>> = OnceLock::new();

fn writer() -> Option<&'static Writer> {
    *WRITER.get_or_init(start_writer)
}

fn start_writer() -> Option<&'static Writer> {
    let w: &'static Writer = Box::leak(Box::new(Writer {
        queue: Mutex::new(Queue::default()),
        changed: Condvar::new(),
    }));
    spawn_blocking_signals("zurg-log", move || w.run())
        .ok()
        .map(|_| w)
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
            let mut q = w.lock();
            if q.push(buf, QUEUE_BYTES) {
                w.changed.notify_all();
            }
        }
        None => {
            let _ = std::io::stderr().write_all(&buf);
        }
    }
}

/// Waits until every queued line is written, or `within` has passed (stderr
/// is blocked). For the moments before zurg exits.
pub fn flush(within: Duration) {
    let Some(w) = WRITER.get().copied().flatten() else {
        return;
    };
    let deadline = Instant::now() + within;
    let mut q = w.lock();
    while !q.idle() {
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
}
