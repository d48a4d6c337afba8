//! The GPID clock file, written by a helper thread so that no start or
//! restart waits for the file system.
//!
//! The loop asks for a mark ahead of the start times it issues (the caller
//! asks again once they come within half the reserve of it), so in a burst
//! of restarts the file is already written when the start times get there.
//! After a quiet spell the first start passes the written mark and its
//! write races that start: only a zurg killed within that write, followed by
//! a wall clock set back before the next zurg starts, could issue a start
//! time twice (docs/design.md). Marks are coalesced: the thread writes the
//! highest one it has, and never a lower one after it.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// How long zurg's exit waits for the last mark to be written.
const FLUSH_DEADLINE: Duration = Duration::from_millis(300);

#[derive(Debug)]
pub(super) struct ClockWriter {
    path: PathBuf,
    /// Marks for the thread; `None` without a thread (writes happen inline).
    marks: Option<Sender<u64>>,
    /// Disconnected when the thread has written everything and ended.
    done: Option<Receiver<()>>,
    /// An inline write failed (warned once).
    warned: bool,
}

/// Writes `mark` through a temporary file, so a crash never leaves half a
/// number behind.
fn write(path: &Path, mark: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{mark}\n")).and_then(|_| std::fs::rename(&tmp, path))
}

fn warn(path: &Path, e: &std::io::Error) {
    crate::log!(
        "warning: cannot save the GPID clock to {}: {e}; GPIDs may repeat after a restart of zurg if the wall clock goes back",
        path.display()
    );
}

fn run(path: &Path, marks: &Receiver<u64>) {
    let mut warned = false;
    let mut written = 0;
    while let Ok(mut mark) = marks.recv() {
        while let Ok(newer) = marks.try_recv() {
            mark = mark.max(newer);
        }
        if mark <= written {
            continue;
        }
        written = mark;
        if let Err(e) = write(path, mark) {
            if !warned {
                warn(path, &e);
            }
            warned = true;
        }
    }
}

impl ClockWriter {
    pub(super) fn start(path: PathBuf) -> ClockWriter {
        let (marks, rx) = channel::<u64>();
        let (done_tx, done) = channel::<()>();
        let thread_path = path.clone();
        let spawned = crate::log::spawn_blocking_signals("zurg-clock", move || {
            run(&thread_path, &rx);
            drop(done_tx);
        });
        match spawned {
            Ok(_) => ClockWriter {
                path,
                marks: Some(marks),
                done: Some(done),
                warned: false,
            },
            Err(e) => {
                crate::log!("warning: cannot start the GPID clock writer thread ({e}); the clock file is written on the loop");
                ClockWriter {
                    path,
                    marks: None,
                    done: None,
                    warned: false,
                }
            }
        }
    }

    /// Has `mark` written; never waits while the thread runs.
    pub(super) fn save(&mut self, mark: u64) {
        if let Some(marks) = &self.marks {
            if marks.send(mark).is_ok() {
                return;
            }
            self.marks = None;
        }
        if let Err(e) = write(&self.path, mark) {
            if !self.warned {
                warn(&self.path, &e);
            }
            self.warned = true;
        }
    }

    /// Lets the thread write its last mark, for at most FLUSH_DEADLINE;
    /// called as zurg ends.
    pub(super) fn flush(&mut self) {
        self.marks = None;
        if let Some(done) = self.done.take() {
            match done.recv_timeout(FLUSH_DEADLINE) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {}
                Err(RecvTimeoutError::Timeout) => {
                    crate::log!(
                        "warning: the GPID clock file was not written within {} ms of exit",
                        FLUSH_DEADLINE.as_millis()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_mark_is_on_disk_after_a_flush() {
        let dir = std::env::temp_dir().join(format!("zurg-clock-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("clock");
        let mut w = ClockWriter::start(path.clone());
        for mark in [5, 9, 7] {
            w.save(mark);
        }
        w.flush();
        // Coalesced marks never go back: 9, not the 7 sent last.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "9\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
