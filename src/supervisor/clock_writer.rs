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
//!
//! The same thread saves `overrides.json` (`upgrade.rs`): like the clock
//! file it is small, replaced whole through a temporary file and rename,
//! and only its newest content matters, so saves coalesce too: the thread
//! writes the newest snapshot it has, and a later save is never overtaken
//! by an earlier one (one thread, snapshots numbered, an older number is
//! skipped). Why this thread and not the journal's or the worker: the
//! worker must stay free to answer reloads (it reads overrides.json with a
//! deadline) and `stats`; the journal's thread has its own bounded queue
//! and flush rules for records. Both files live in the state directory, so
//! a hung disk would hold both writes anyway. The loop learns how far the
//! saves got from `SaveStatus`, which it reads when it answers an upgrade
//! and before a reload.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long zurg's exit waits for the last mark to be written.
pub(super) const FLUSH_DEADLINE: Duration = Duration::from_millis(300);

/// Work for the thread.
#[derive(Debug)]
enum Msg {
    Mark(u64),
    /// overrides.json's content, numbered: a higher number is newer.
    Overrides {
        seq: u64,
        data: Vec<u8>,
    },
}

/// How far the saves of overrides.json got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SaveStatus {
    /// The newest snapshot whose write has ended, well or not.
    pub(super) done: u64,
    /// Why that write failed.
    pub(super) error: Option<String>,
}

#[derive(Debug)]
pub(super) struct ClockWriter {
    path: PathBuf,
    overrides_path: PathBuf,
    /// Work for the thread; `None` without a thread (writes happen inline).
    marks: Option<Sender<Msg>>,
    saves: Arc<Mutex<SaveStatus>>,
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

/// Replaces `path` with `data` through a temporary file: a crash leaves
/// the old file or the new one, never half of one.
pub(super) fn replace_file(path: &Path, data: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot save {}: {e}", path.display()))
}

fn record(saves: &Mutex<SaveStatus>, seq: u64, result: Result<(), String>) {
    if let Ok(mut s) = saves.lock() {
        if seq > s.done {
            *s = SaveStatus {
                done: seq,
                error: result.err(),
            };
        }
    }
}

fn warn(path: &Path, e: &std::io::Error) {
    crate::log!(
        "warning: cannot save the GPID clock to {}: {e}; GPIDs may repeat after a restart of zurg if the wall clock goes back",
        path.display()
    );
}

fn run(path: &Path, overrides_path: &Path, msgs: &Receiver<Msg>, saves: &Mutex<SaveStatus>) {
    let mut warned = false;
    let mut written = 0;
    while let Ok(first) = msgs.recv() {
        let mut mark = 0;
        let mut newest: Option<(u64, Vec<u8>)> = None;
        for msg in std::iter::once(first).chain(msgs.try_iter()) {
            match msg {
                Msg::Mark(m) => mark = mark.max(m),
                Msg::Overrides { seq, data } => {
                    if newest.as_ref().is_none_or(|(s, _)| seq > *s) {
                        newest = Some((seq, data));
                    }
                }
            }
        }
        if let Some((seq, data)) = newest {
            record(saves, seq, replace_file(overrides_path, &data));
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
    pub(super) fn start(path: PathBuf, overrides_path: PathBuf) -> ClockWriter {
        let (marks, rx) = channel::<Msg>();
        let (done_tx, done) = channel::<()>();
        let saves = Arc::new(Mutex::new(SaveStatus::default()));
        let (thread_path, thread_overrides) = (path.clone(), overrides_path.clone());
        let thread_saves = Arc::clone(&saves);
        let spawned = crate::log::spawn_blocking_signals("zurg-clock", move || {
            run(&thread_path, &thread_overrides, &rx, &thread_saves);
            drop(done_tx);
        });
        match spawned {
            Ok(_) => ClockWriter {
                path,
                overrides_path,
                marks: Some(marks),
                saves,
                done: Some(done),
                warned: false,
            },
            Err(e) => {
                crate::log!("warning: cannot start the GPID clock writer thread ({e}); the clock file and overrides.json are written on the loop");
                ClockWriter {
                    path,
                    overrides_path,
                    marks: None,
                    saves,
                    done: None,
                    warned: false,
                }
            }
        }
    }

    /// Has snapshot `seq` of overrides.json written (numbers rise with
    /// each save); never waits while the thread runs. `saves()` tells how
    /// far it got.
    pub(super) fn save_overrides(&mut self, seq: u64, data: Vec<u8>) {
        let data = match &self.marks {
            Some(marks) => match marks.send(Msg::Overrides { seq, data }) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(msg)) => {
                    self.marks = None;
                    match msg {
                        Msg::Overrides { data, .. } => data,
                        Msg::Mark(_) => return,
                    }
                }
            },
            None => data,
        };
        record(&self.saves, seq, replace_file(&self.overrides_path, &data));
    }

    /// How far the saves of overrides.json got.
    pub(super) fn saves(&self) -> SaveStatus {
        self.saves.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Has `mark` written; never waits while the thread runs.
    pub(super) fn save(&mut self, mark: u64) {
        if let Some(marks) = &self.marks {
            if marks.send(Msg::Mark(mark)).is_ok() {
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

    /// Lets the thread write its last mark and overrides snapshot
    /// (`overrides_seq`), for at most FLUSH_DEADLINE; called as zurg ends.
    pub(super) fn flush(&mut self, overrides_seq: u64) {
        self.marks = None;
        if let Some(done) = self.done.take() {
            match done.recv_timeout(FLUSH_DEADLINE) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {}
                Err(RecvTimeoutError::Timeout) => {
                    crate::log!(
                        "warning: the GPID clock file was not written within {} ms of exit",
                        FLUSH_DEADLINE.as_millis()
                    );
                    if self.saves().done < overrides_seq {
                        crate::log!(
                            "warning: {} was not written within {} ms of exit: the last upgrade or rollback is not saved",
                            self.overrides_path.display(),
                            FLUSH_DEADLINE.as_millis()
                        );
                    }
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
        let overrides = dir.join("overrides.json");
        let mut w = ClockWriter::start(path.clone(), overrides.clone());
        for mark in [5, 9, 7] {
            w.save(mark);
        }
        for seq in 1..=50u64 {
            w.save_overrides(seq, seq.to_string().into_bytes());
        }
        w.flush(50);
        // Coalesced marks never go back: 9, not the 7 sent last.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "9\n");
        // The last save is the one on disk, however they were coalesced.
        assert_eq!(std::fs::read_to_string(&overrides).unwrap(), "50");
        assert_eq!(
            w.saves(),
            SaveStatus {
                done: 50,
                error: None
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
