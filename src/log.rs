//! Human log lines on stderr (the console when zurg is PID 1), one write(2)
//! per line so lines from zurg and its children never interleave mid-line.
//! A failed write is dropped: logging must never stop the supervisor.

use std::io::Write;

pub fn line(args: std::fmt::Arguments<'_>) {
    let mut buf = Vec::with_capacity(128);
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
