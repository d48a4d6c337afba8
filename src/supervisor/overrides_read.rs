//! Reads `STATE/overrides.json` off the event loop and with a deadline: a
//! hung state disk must not stall the loop, and a read that does not answer
//! must not pass for an empty file (the unit files' builds would silently
//! replace upgraded ones).
//!
//! The read itself runs on a thread of its own; the caller (the worker for
//! a reload, the loop once at boot) waits for it until `DEADLINE`. A read
//! still stuck is waited on again by the next caller rather than started
//! anew, so a disk that never answers holds one thread, not one per reload.

use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a load waits for overrides.json: boot_read's deadline, for the
/// same reason (a healthy disk, even a slow network one, is far quicker).
pub(super) const DEADLINE: Duration = super::boot_read::DEADLINE;

/// What a read found.
#[derive(Debug)]
pub enum Outcome {
    /// The bytes, or why they could not be read (a missing file too).
    Read(io::Result<Vec<u8>>),
    /// No answer within the deadline.
    TimedOut,
}

/// The reader; shared between the loop (boot) and the worker (reloads).
#[derive(Debug)]
pub struct Reader {
    path: PathBuf,
    /// A read that has not answered yet.
    pending: Option<Receiver<io::Result<Vec<u8>>>>,
}

pub type Shared = Arc<Mutex<Reader>>;

pub(super) fn shared(path: PathBuf) -> Shared {
    Arc::new(Mutex::new(Reader {
        path,
        pending: None,
    }))
}

impl Reader {
    /// Starts a read unless one is under way, so that a later `read`
    /// waits less: boot starts it beside its other reads of the state
    /// directory, whose deadlines then run side by side.
    pub(super) fn begin(&mut self) {
        if self.pending.is_some() {
            return;
        }
        let (tx, rx) = channel();
        let path = self.path.clone();
        let spawned = crate::log::spawn_blocking_signals("zurg-overrides", move || {
            let _ = tx.send(std::fs::read(&path));
        });
        match spawned {
            Ok(_) => self.pending = Some(rx),
            // `read` reads in place then.
            Err(e) => crate::log!(
                "warning: cannot start a thread to read overrides.json ({e}); reading it in place"
            ),
        }
    }

    /// Reads the file (or takes the read under way), waiting at most
    /// `deadline` (blocking).
    pub(super) fn read(&mut self, deadline: Duration) -> Outcome {
        self.begin();
        let Some(rx) = self.pending.take() else {
            return Outcome::Read(std::fs::read(&self.path));
        };
        match rx.recv_timeout(deadline) {
            Ok(result) => Outcome::Read(result),
            Err(RecvTimeoutError::Timeout) => {
                self.pending = Some(rx);
                Outcome::TimedOut
            }
            Err(RecvTimeoutError::Disconnected) => Outcome::Read(Err(io::Error::other(
                "the thread reading it ended without an answer",
            ))),
        }
    }
}

/// Reads through `shared`; a poisoned lock (a panic elsewhere) still reads.
pub(super) fn read_shared(shared: &Shared, deadline: Duration) -> Outcome {
    match shared.lock() {
        Ok(mut r) => r.read(deadline),
        Err(poisoned) => poisoned.into_inner().read(deadline),
    }
}

/// Starts a read through `shared` (see `Reader::begin`).
pub(super) fn begin_shared(shared: &Shared) {
    match shared.lock() {
        Ok(mut r) => r.begin(),
        Err(poisoned) => poisoned.into_inner().begin(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    #[test]
    fn a_fifo_nobody_writes_times_out_and_the_next_read_waits_on_the_same_one() {
        let dir = TestDir::new("overrides-read");
        let path = dir.join("overrides.json");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mut r = Reader {
            path: path.clone(),
            pending: None,
        };
        assert!(matches!(
            r.read(Duration::from_millis(50)),
            Outcome::TimedOut
        ));
        assert!(r.pending.is_some());
        // A writer comes: the stuck read answers the next caller.
        let writer = std::thread::spawn(move || std::fs::write(&path, b"{}"));
        match r.read(Duration::from_secs(10)) {
            Outcome::Read(Ok(bytes)) => assert_eq!(bytes, b"{}"),
            other => panic!("{other:?}"),
        }
        writer.join().unwrap().unwrap();
        assert!(r.pending.is_none());
    }
}
