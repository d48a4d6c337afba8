//! Scratch directories for unit tests, removed however a test ends.
//!
//! Tests that stand a FIFO in for a hung disk left their directories in
//! /tmp whenever they failed or were killed, and a thread still blocked on
//! such a FIFO stayed blocked for the rest of the test process. A `TestDir`
//! is removed on drop, which runs when the test passes and when it panics;
//! before removing it, the drop releases every thread blocked on a FIFO in
//! it. A run killed outright runs no drop: the next `TestDir` of the same
//! tag removes what a process that no longer exists left.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a released FIFO can hold: the largest pipe an unprivileged process
/// may ask for, far more than a test writes into one.
const PIPE_ROOM: libc::c_int = 1 << 20;

/// `/tmp/zurg-TAG-PID`, removed on drop.
#[derive(Debug)]
pub(crate) struct TestDir(PathBuf);

impl TestDir {
    /// A new empty `/tmp/zurg-TAG-PID` (one this process made earlier is
    /// emptied); directories of TAG left by processes that are gone are
    /// removed first.
    pub(crate) fn new(tag: &str) -> TestDir {
        let base = std::env::temp_dir();
        let prefix = format!("zurg-{tag}-");
        remove_left_behind(&base, &prefix);
        let dir = base.join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot make {}: {e}", dir.display());
        }
        TestDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // Held until the directory is gone: a thread that opens a FIFO
        // after it has been unlinked finds nothing to block on.
        let held = release_fifos(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
        drop(held);
    }
}

/// Opens every FIFO in `dir` (and below) for reading and writing, which
/// on Linux never blocks: a thread blocked opening it at either end gets
/// its descriptor, and once the returned ends close its reads see end of
/// file and its writes fail. The pipe is then made large and emptied, so
/// a thread blocked writing into a full one finishes its write.
fn release_fifos(dir: &Path) -> Vec<File> {
    let mut held = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return held;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            held.extend(release_fifos(&entry.path()));
        } else if kind.is_fifo() {
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(entry.path());
            if let Ok(mut fifo) = opened {
                let _ =
                    nix::fcntl::fcntl(fifo.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_ROOM));
                let mut buf = [0u8; 65536];
                // Non-blocking: ends when the pipe is empty.
                while fifo.read(&mut buf).is_ok_and(|n| n > 0) {}
                held.push(fifo);
            }
        }
    }
    held
}

/// Removes `base/PREFIXPID` for each PID that is not a running process,
/// or is one that started after the directory last changed (the pid was
/// reused): what a test process killed before its drops ran left.
fn remove_left_behind(base: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let changed = entry.metadata().and_then(|m| m.modified()).ok();
        if pid != std::process::id() && !could_own(pid, changed) {
            drop(release_fifos(&entry.path()));
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether process `pid` runs and started before `changed` (with a
/// second's slack for the clocks' rounding), so it may have made a
/// directory last changed then.
fn could_own(pid: u32, changed: Option<std::time::SystemTime>) -> bool {
    let Some(started) = started_at(pid) else {
        return false;
    };
    changed.is_none_or(|c| started <= c + std::time::Duration::from_secs(1))
}

/// When process `pid` started, from /proc (None when it does not run).
fn started_at(pid: u32) -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, starttime in clock ticks since boot; the fields after the
    // command name start at field 3.
    let ticks: u64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // /proc counts in USER_HZ, 100 on every architecture.
    let since_epoch = std::time::Duration::from_millis(boot * 1000 + ticks * 10);
    Some(std::time::UNIX_EPOCH + since_epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc::{channel, Receiver};
    use std::time::{Duration, Instant};

    const WAIT: Duration = Duration::from_secs(10);

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    /// Runs `f` on a thread; returns once the thread sleeps in the kernel
    /// in a function whose name ends with `wchan` (within `WAIT`). `f`'s
    /// result comes on the receiver.
    fn blocked_at<T: Send + 'static>(
        wchan: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Receiver<T> {
        let (tid_tx, tid_rx) = channel();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let _ = tid_tx.send(nix::unistd::gettid());
            let _ = tx.send(f());
        });
        let tid = tid_rx.recv_timeout(WAIT).unwrap();
        let file = format!("/proc/self/task/{tid}/wchan");
        let deadline = Instant::now() + WAIT;
        while !std::fs::read_to_string(&file).is_ok_and(|w| w.ends_with(wchan)) {
            assert!(
                Instant::now() < deadline,
                "the thread never reached {wchan}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        rx
    }

    #[test]
    fn a_thread_blocked_opening_a_fifo_to_read_sees_its_end_and_the_directory_goes() {
        let dir = TestDir::new("test-dir-read");
        let path = dir.join("fifo");
        mkfifo(&path);
        let read = blocked_at("wait_for_partner", move || std::fs::read(&path));
        let kept = dir.path().to_path_buf();
        drop(dir);
        assert_eq!(read.recv_timeout(WAIT).unwrap().unwrap(), b"");
        assert!(!kept.exists(), "{}", kept.display());
    }

    #[test]
    fn a_thread_blocked_opening_a_fifo_to_write_is_released() {
        let dir = TestDir::new("test-dir-write");
        let path = dir.join("fifo");
        mkfifo(&path);
        // Whether its write lands before the drop closes the other end or
        // fails after, the thread is done.
        let wrote = blocked_at("wait_for_partner", move || {
            std::fs::write(&path, b"x").is_ok()
        });
        drop(dir);
        assert!(wrote.recv_timeout(WAIT).is_ok());
    }

    #[test]
    fn a_thread_blocked_writing_into_a_full_fifo_it_also_reads_finishes_its_write() {
        // As the journal's writer: it holds both ends, so no reader going
        // away ends its write.
        let dir = TestDir::new("test-dir-full");
        let path = dir.join("fifo");
        mkfifo(&path);
        // pipe_write, or anon_pipe_write on newer kernels.
        let wrote = blocked_at("pipe_write", move || {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            nix::fcntl::fcntl(f.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
            f.write_all(&[0u8; 65536]).is_ok()
        });
        drop(dir);
        assert_eq!(wrote.recv_timeout(WAIT), Ok(true));
    }

    #[test]
    fn what_a_killed_run_left_is_removed_by_the_next() {
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        let left = std::env::temp_dir().join(format!("zurg-test-dir-left-{pid}"));
        std::fs::create_dir_all(&left).unwrap();
        mkfifo(&left.join("journal"));
        let mine = TestDir::new("test-dir-left");
        assert!(!left.exists(), "{}", left.display());
        assert!(mine.path().is_dir());
    }

    #[test]
    fn a_directory_older_than_the_process_with_its_pid_is_left_behind_too() {
        // PID 1 started long after the epoch: a directory last changed
        // then cannot be its, so it is what a process whose pid was reused
        // left.
        let left = std::env::temp_dir().join("zurg-test-dir-reused-1");
        std::fs::create_dir_all(&left).unwrap();
        let before_boot = std::time::UNIX_EPOCH + Duration::from_secs(1);
        File::open(&left)
            .unwrap()
            .set_modified(before_boot)
            .unwrap();
        let _mine = TestDir::new("test-dir-reused");
        assert!(!left.exists(), "{}", left.display());
        assert!(could_own(1, Some(std::time::SystemTime::now())));
    }
}
