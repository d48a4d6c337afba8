//! Human log lines on stderr (the console when zurg is PID 1), one write(2)
//! per line so lines from zurg and its children never interleave mid-line.
//! A failed write is dropped: logging must never stop the supervisor.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static TIMESTAMPS: AtomicBool = AtomicBool::new(false);

/// Starts every later line with an RFC 3339 UTC time (set once at start-up,
/// from `--log-timestamps`; a global so that no caller has to pass it).
pub fn set_timestamps(on: bool) {
    TIMESTAMPS.store(on, Ordering::Relaxed);
}

pub fn line(args: std::fmt::Arguments<'_>) {
    let mut buf = Vec::with_capacity(160);
    if TIMESTAMPS.load(Ordering::Relaxed) {
        let now = crate::cli::utc_timestamp(crate::os::wall_clock_us());
        let _ = write!(buf, "{now} ");
    }
    let _ = buf.write_all(b"zurg: ");
    let _ = buf.write_fmt(args);
    buf.push(b'\n');
    let _ = std::io::stderr().write_all(&buf);
}

/// `log!("started {}", pid)` writes `zurg: started 42` to stderr.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::line(format_args!($($arg)*)) };
}
