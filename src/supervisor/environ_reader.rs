//! Boot's reads of other processes' /proc/PID/environ, on a thread, each
//! with a deadline and all of them with one.
//!
//! Reading another process's environment takes that process's mm lock (the
//! kernel copies it out of the process's memory), and a process stuck in a
//! page fault on a hung FUSE or NFS mount holds that lock for as long as the
//! mount hangs: read(2) then blocks, possibly for ever. The leftovers pass
//! reads the environment of every process in /proc before the loop exists,
//! so one such process would stop zurg from booting at all. Here each read
//! runs on a reader thread and is waited for at most `PER_READ`, and the
//! reads of one pass at most `WHOLE_SCAN` in all; past either the answer is
//! `Environ::NotRead`, which the pass takes as "cannot judge" for that pid.
//! A read cannot be cancelled, so the thread stuck in it is left behind (it
//! ends when its read does) and the next read gets a thread of its own; the
//! scan's deadline bounds how many are left (`WHOLE_SCAN / PER_READ`).

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one read is waited for: a healthy read takes microseconds.
pub(crate) const PER_READ: Duration = Duration::from_millis(500);
/// How long the reads of one pass may take in all, so that a host full of
/// stuck processes delays boot by this much at most.
pub(crate) const WHOLE_SCAN: Duration = Duration::from_secs(20);

/// What a read does: a process's environment block, as /proc gives it.
pub(crate) type ReadFn = dyn Fn(i32) -> std::io::Result<Vec<u8>> + Send + Sync;

/// The answer for one pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Environ {
    /// Its environment block.
    Block(Vec<u8>),
    /// The read failed (the process is gone, or the read was refused): as
    /// a process with no environment.
    Unreadable,
    /// Not read within its deadline or the scan's, or no thread could be
    /// started for it: nothing is known of the pid.
    NotRead,
}

/// A reader thread, asked one pid at a time.
struct Thread {
    ask: Sender<i32>,
    answers: Receiver<std::io::Result<Vec<u8>>>,
}

pub(crate) struct EnvironReader {
    read: Arc<ReadFn>,
    per_read: Duration,
    scan_deadline: Instant,
    thread: Option<Thread>,
    /// Reads answered `NotRead`.
    not_read: u64,
}

/// The kernel's file, the reader boot uses.
fn read_proc_environ(pid: i32) -> std::io::Result<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ"))
}

impl EnvironReader {
    /// Reads /proc with the boot deadlines, the scan's counted from now.
    pub(crate) fn for_boot() -> EnvironReader {
        EnvironReader::new(Arc::new(read_proc_environ), PER_READ, WHOLE_SCAN)
    }

    pub(crate) fn new(read: Arc<ReadFn>, per_read: Duration, whole_scan: Duration) -> Self {
        EnvironReader {
            read,
            per_read,
            scan_deadline: Instant::now() + whole_scan,
            thread: None,
            not_read: 0,
        }
    }

    /// How many reads were answered `NotRead` so far.
    pub(crate) fn not_read(&self) -> u64 {
        self.not_read
    }

    /// The environment of `pid`, waiting at most the read's deadline (or
    /// what is left of the scan's).
    pub(crate) fn read(&mut self, pid: i32) -> Environ {
        let answer = self.ask(pid);
        if answer == Environ::NotRead {
            self.not_read = self.not_read.saturating_add(1);
        }
        answer
    }

    fn ask(&mut self, pid: i32) -> Environ {
        let left = self.scan_deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Environ::NotRead;
        }
        let wait = self.per_read.min(left);
        let Some(thread) = self.thread() else {
            return Environ::NotRead;
        };
        if thread.ask.send(pid).is_err() {
            // The thread is gone (it cannot panic, but the next read gets a
            // new one either way).
            self.thread = None;
            return Environ::NotRead;
        }
        match thread.answers.recv_timeout(wait) {
            Ok(Ok(block)) => Environ::Block(block),
            Ok(Err(_)) => Environ::Unreadable,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                // Stuck in the read: dropping its channels leaves it to end
                // on its own when the read returns, and no late answer can
                // be taken for another pid's.
                self.thread = None;
                Environ::NotRead
            }
        }
    }

    /// The reader thread, started when there is none.
    fn thread(&mut self) -> Option<&Thread> {
        if self.thread.is_none() {
            let (ask, asked) = mpsc::channel::<i32>();
            let (answer, answers) = mpsc::channel();
            let read = Arc::clone(&self.read);
            let started = std::thread::Builder::new()
                .name("zurg-environ".into())
                .spawn(move || {
                    for pid in asked {
                        if answer.send(read(pid)).is_err() {
                            return;
                        }
                    }
                });
            if let Err(e) = started {
                crate::log!(
                    "warning: cannot start a thread to read processes' environments ({e}); those processes are not judged"
                );
                return None;
            }
            self.thread = Some(Thread { ask, answers });
        }
        self.thread.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A reader whose read of `hung` blocks until the test ends (its
    /// channel's sender is dropped), as a read of a process stuck on a hung
    /// mount does; other pids answer at once, 13 with an error.
    fn reader(hung: i32, per_read: Duration, whole: Duration) -> (EnvironReader, Sender<()>) {
        let (release, blocked) = mpsc::channel::<()>();
        let blocked = Mutex::new(blocked);
        let read = move |pid: i32| {
            if pid == hung {
                if let Ok(b) = blocked.lock() {
                    let _ = b.recv();
                }
                return Ok(b"LATE=1\0".to_vec());
            }
            if pid == 13 {
                return Err(std::io::Error::from_raw_os_error(libc::EACCES));
            }
            Ok(format!("ZURG_GPID={pid}\0").into_bytes())
        };
        (EnvironReader::new(Arc::new(read), per_read, whole), release)
    }

    #[test]
    fn a_hung_read_is_not_read_by_its_deadline_and_the_next_reads_go_on() {
        let (mut r, _release) = reader(7, Duration::from_millis(100), Duration::from_secs(60));
        assert_eq!(r.read(1), Environ::Block(b"ZURG_GPID=1\0".to_vec()));
        assert_eq!(r.read(13), Environ::Unreadable);
        let started = Instant::now();
        assert_eq!(r.read(7), Environ::NotRead);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        // a fresh thread answers the next pid: no late answer is taken
        // for it, and the hung one is asked again on its own
        assert_eq!(r.read(2), Environ::Block(b"ZURG_GPID=2\0".to_vec()));
        assert_eq!(r.read(7), Environ::NotRead);
        assert_eq!(r.read(3), Environ::Block(b"ZURG_GPID=3\0".to_vec()));
        assert_eq!(r.not_read(), 2);
    }

    #[test]
    fn past_the_scan_deadline_nothing_more_is_read() {
        let (mut r, _release) = reader(7, Duration::from_millis(200), Duration::from_millis(300));
        assert_eq!(r.read(1), Environ::Block(b"ZURG_GPID=1\0".to_vec()));
        // the first hung read takes its own deadline, the second what is
        // left of the scan's
        let started = Instant::now();
        assert_eq!(r.read(7), Environ::NotRead);
        assert_eq!(r.read(7), Environ::NotRead);
        let took = started.elapsed();
        assert!(took < Duration::from_millis(5_000), "{took:?}");
        // and then every read answers at once, unread
        let started = Instant::now();
        for pid in 100..1_100 {
            assert_eq!(r.read(pid), Environ::NotRead);
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(r.not_read(), 1_002);
    }
}
