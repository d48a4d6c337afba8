//! The OS layer: the only module allowed `unsafe` and raw syscalls.
//!
//! Every wrapper here is thin, owns its file descriptors, and knows nothing of
//! units or services. Each `unsafe` block carries a `// SAFETY:` comment.

pub mod notify;
pub mod pid1;
pub mod pidfd;
pub mod reap;
pub mod signals;
pub mod spawn;

use std::io;

/// Turns a libc `-1` return into the thread's errno.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Wall clock in microseconds since the Unix epoch (0 if the clock is before 1970).
pub fn wall_clock_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
