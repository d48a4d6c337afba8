//! The OS layer: the only module allowed `unsafe` and raw syscalls.
//!
//! Every wrapper here is thin, owns its file descriptors, and knows nothing of
//! units or services. Each `unsafe` block carries a `// SAFETY:` comment.

pub mod creds;
pub mod dying;
pub mod inotify;
pub mod listen;
pub mod net;
pub mod notify;
pub mod pid1;
pub mod pidfd;
pub mod reap;
pub mod signals;
pub mod spawn;
pub mod text;
pub mod users;
pub mod write_all;

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

/// Runs `f` with the process umask set to `mask`, then restores it. zurg is
/// single-threaded, so nothing else creates files in between.
pub fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask only swaps an integer in the process.
    let old = unsafe { libc::umask(mask as libc::mode_t) };
    let out = f();
    // SAFETY: as above.
    unsafe {
        libc::umask(old);
    }
    out
}

/// Gives `path` to group `gid`, keeping its owner.
pub fn chown_group(path: &std::path::Path, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, None, Some(gid))
}

pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Fixes glibc malloc's mmap and trim thresholds at their defaults
/// (128 KiB). Left alone, glibc raises both after the first large block is
/// freed (to that block's size, and twice it), so every later answer of a
/// few MB (a `status` of 10,000 services) is built in the heap and stays
/// resident after it is freed: 9 MB at 10,000 services. Fixed, such blocks
/// are mapped and unmapped on their own, and a free top of the heap over
/// 128 KiB goes back to the kernel.
pub fn fix_malloc_thresholds() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets two of glibc's malloc parameters; glibc
    // takes its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
    }
}

/// Returns freed heap memory to the kernel (glibc malloc_trim).
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own heap structures.
    unsafe {
        libc::malloc_trim(0);
    }
}
