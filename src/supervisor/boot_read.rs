//! The state directory's reads at boot, off the event loop and with a
//! deadline: a hung disk (NFS server gone, stuck device) must not keep
//! every service from starting.
//!
//! Boot reads the GPID clock file and, for the GPID floor when that file is
//! missing or unusable and for leftovers (`leftovers.rs`), the journal.
//! Those reads run on the journal's writer thread before it opens the
//! journal (`JournalWriter::start_with`), so they happen before the open
//! cuts a torn tail, as the writer would hang on the same disk anyway, and
//! no thread is added. The loop waits for each result until `DEADLINE`
//! after the reads began; past it zurg goes on without it and says so:
//!
//! - the GPID floor: the clock file's mark if it was read, else the
//!   journal's newest start time if that was read, else the wall clock
//!   (docs/design.md says why that still repeats no start time unless the
//!   wall clock went back);
//! - leftovers: not looked for, with a warning naming the file.
//!
//! The journal is not handed over whole: the thread reads it a record at a
//! time (`journal::FileReader`) and folds it into what the loop uses, the
//! newest believable start time and the starts without an exit (bounded:
//! `leftovers::MAX_UNFINISHED`), so boot's memory does not grow with the
//! journal's size. A start time is believed or not against the wall clock
//! boot read before the reads began (`start`'s `now_us`), the same that
//! `clock_floor` judges the clock file's mark by.
//!
//! The thread stays blocked on the disk; when the read returns late its
//! result is dropped with a log line, and the thread opens the journal and
//! writes the records queued meanwhile.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::gpid::Gpid;
use crate::journal::{self, Record};

use super::leftovers::{OpenStarts, MAX_UNFINISHED};

/// How long boot waits for the state directory's reads: a healthy disk,
/// even a slow network one, reads a clock file and a journal of the
/// default size well within it.
pub(super) const DEADLINE: Duration = Duration::from_secs(3);

#[derive(Debug)]
enum Msg {
    Clock(io::Result<String>),
    /// The thread begins reading this journal file.
    Reading(PathBuf),
    Journal(Folded),
}

/// What boot keeps of the journal's records.
#[derive(Debug)]
struct Folded {
    /// The newest start time in any record's GPID that `plausible_mark`
    /// believes; 0 without one.
    newest_start_us: u64,
    /// Starts without an exit, the newest up to the bound.
    open: OpenStarts,
}

/// The fold itself, a record at a time (pure).
#[derive(Debug)]
struct Fold {
    now_us: u64,
    newest_start_us: u64,
    open: OpenStarts,
}

impl Fold {
    fn new(now_us: u64, open: OpenStarts) -> Fold {
        Fold {
            now_us,
            newest_start_us: 0,
            open,
        }
    }

    fn record(&mut self, r: &Record) {
        if let Ok(g) = r.gpid.parse::<Gpid>() {
            if let Ok(t) = crate::gpid::plausible_mark(g.start_us, self.now_us) {
                self.newest_start_us = self.newest_start_us.max(t);
            }
        }
        self.open.record(r);
    }

    /// Reads one of the journal's files into the fold. Damage is reported
    /// by the readers that show records (`history`); boot takes what is
    /// whole, and what came before a read error.
    fn file(&mut self, path: &Path) {
        let Ok(file) = File::open(path) else { return };
        let mut reader = journal::FileReader::new(file, None);
        while let Ok(Some(r)) = reader.next_record() {
            self.record(&r);
        }
    }

    fn done(self) -> Folded {
        Folded {
            newest_start_us: self.newest_start_us,
            open: self.open,
        }
    }
}

/// The half that runs on the journal's thread.
#[derive(Debug)]
pub(super) struct Reader {
    dir: PathBuf,
    now_us: u64,
    tx: Sender<Msg>,
}

/// The loop's half: what has arrived, and until when it waits for more.
#[derive(Debug)]
pub(super) struct BootReads {
    dir: PathBuf,
    now_us: u64,
    rx: Receiver<Msg>,
    deadline: Instant,
    clock: Option<io::Result<String>>,
    /// The journal file the thread was reading when last heard from.
    reading: Option<PathBuf>,
    journal: Option<Folded>,
}

pub(super) fn clock_file(state_dir: &Path) -> PathBuf {
    state_dir.join("clock")
}

/// A reader for `state_dir`, and the loop's end of it, whose deadline runs
/// from now; `now_us` is the wall clock boot read, which a start time in
/// the journal must not be far ahead of to be believed.
pub(super) fn start(state_dir: &Path, now_us: u64) -> (Reader, BootReads) {
    let (tx, rx) = channel();
    (
        Reader {
            dir: state_dir.to_path_buf(),
            now_us,
            tx,
        },
        BootReads {
            dir: state_dir.to_path_buf(),
            now_us,
            rx,
            deadline: Instant::now() + DEADLINE,
            clock: None,
            reading: None,
            journal: None,
        },
    )
}

impl Reader {
    /// Reads the clock file, then the journal, handing each over as it is
    /// read (blocking: on the journal's thread).
    pub(super) fn run(self) {
        let began = Instant::now();
        let clock = std::fs::read_to_string(clock_file(&self.dir));
        // A loop that gave up no longer listens: the sends fail, and only
        // the journal's late arrival is worth a line.
        let _ = self.tx.send(Msg::Clock(clock));
        let mut fold = Fold::new(self.now_us, OpenStarts::default());
        for path in journal::files(&self.dir) {
            let _ = self.tx.send(Msg::Reading(path.clone()));
            fold.file(&path);
        }
        if self.tx.send(Msg::Journal(fold.done())).is_err() {
            crate::log!(
                "the journal in {} was read {} s after boot began, too late: services a previous zurg left running were not looked for",
                self.dir.display(),
                began.elapsed().as_secs()
            );
        }
    }
}

impl BootReads {
    /// Takes what has arrived; waits for more until the deadline while
    /// `wanted` says so. Whether it stopped for the deadline.
    fn wait(&mut self, wanted: impl Fn(&BootReads) -> bool) -> bool {
        while wanted(self) {
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Msg::Clock(c)) => self.clock = Some(c),
                Ok(Msg::Reading(p)) => self.reading = Some(p),
                Ok(Msg::Journal(r)) => self.journal = Some(r),
                Err(RecvTimeoutError::Timeout) => return true,
                // The thread is gone without a word: nothing more comes.
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
        false
    }

    /// The file a timed-out read is stuck on, for the warning.
    fn stuck_on(&self) -> PathBuf {
        match (&self.clock, &self.reading) {
            (None, _) => clock_file(&self.dir),
            (Some(_), Some(p)) => p.clone(),
            (Some(_), None) => self.dir.clone(),
        }
    }

    /// The GPID clock's high-water mark: the clock file's, or without a
    /// usable one the newest start time in the journal; a mark far ahead
    /// of the wall clock is ignored (see `gpid::plausible_mark`). 0 (start
    /// times follow the wall clock) when neither answers by the deadline.
    pub(super) fn clock_floor(&mut self) -> u64 {
        let now_us = self.now_us;
        let path = clock_file(&self.dir);
        let timed_out = self.wait(|b| b.clock.is_none());
        match self.clock.as_ref() {
            Some(Ok(text)) => match text.trim().parse::<u64>() {
                Ok(v) => match crate::gpid::plausible_mark(v, now_us) {
                    Ok(v) => return v,
                    Err(e) => crate::log!(
                        "warning: ignoring the GPID clock in {}: {e}; using the journal's newest believable start time",
                        path.display()
                    ),
                },
                Err(_) => crate::log!(
                    "warning: {} is corrupt; using the journal's newest start time",
                    path.display()
                ),
            },
            Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => {}
            Some(Err(e)) => crate::log!("warning: cannot read {}: {e}", path.display()),
            None if timed_out => {
                warn_wall_clock(&path);
                return 0;
            }
            None => {}
        }
        if self.wait(|b| b.journal.is_none()) {
            warn_wall_clock(&self.stuck_on());
            return 0;
        }
        self.journal.as_ref().map_or(0, |j| j.newest_start_us)
    }

    /// The journal's starts without an exit, oldest first, waited for until
    /// the deadline; `None`, and a warning, when they did not come.
    pub(super) fn unfinished(mut self) -> Option<OpenStarts> {
        let timed_out = self.wait(|b| b.journal.is_none());
        if self.journal.is_none() {
            let why = if timed_out {
                format!("did not answer within {} s", DEADLINE.as_secs())
            } else {
                "could not be read".to_string()
            };
            crate::log!(
                "warning: {} {why}; services a previous zurg left running are not looked for, and may run twice; services start now",
                self.stuck_on().display()
            );
        }
        let open = self.journal.take()?.open;
        if open.dropped() > 0 {
            crate::log!(
                "warning: the journal in {} holds {} starts without an exit, more than can run at once: the oldest {} are not looked for as services a previous zurg left running, only the newest {MAX_UNFINISHED}",
                self.dir.display(),
                open.dropped().saturating_add(open.len() as u64),
                open.dropped()
            );
        }
        Some(open)
    }
}

/// Runs `f` on a thread named `name` and waits for its result until
/// `DEADLINE`: `None` past it, and the thread goes on and hands its result
/// to `late` when it comes. Without a thread, `f` runs here.
pub(super) fn within_deadline<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
    late: impl FnOnce(T) + Send + 'static,
) -> Option<T> {
    within(name, DEADLINE, f, late)
}

pub(super) fn within<T: Send + 'static>(
    name: &str,
    deadline: Duration,
    f: impl FnOnce() -> T + Send + 'static,
    late: impl FnOnce(T) + Send + 'static,
) -> Option<T> {
    let (tx, rx) = channel();
    // `f` goes to the thread through a slot, so that it comes back when
    // the thread cannot be spawned.
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(f)));
    let thread_slot = std::sync::Arc::clone(&slot);
    let spawned = crate::log::spawn_blocking_signals(name, move || {
        let f = thread_slot.lock().ok().and_then(|mut f| f.take());
        if let Some(f) = f {
            if let Err(std::sync::mpsc::SendError(result)) = tx.send(f()) {
                late(result);
            }
        }
    });
    if spawned.is_err() {
        return slot.lock().ok().and_then(|mut f| f.take()).map(|f| f());
    }
    rx.recv_timeout(deadline).ok()
}

fn warn_wall_clock(stuck: &Path) {
    crate::log!(
        "warning: {} did not answer within {} s; the GPID clock goes by the wall clock alone, which repeats no earlier start time unless it has been set back",
        stuck.display(),
        DEADLINE.as_secs()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    #[test]
    fn a_late_result_goes_to_late_and_a_prompt_one_is_returned() {
        let quick = within("test-quick", Duration::from_secs(5), || 7, |_| {});
        assert_eq!(quick, Some(7));
        let (gate_tx, gate) = channel::<()>();
        let (late_tx, late_rx) = channel();
        let slow = within(
            "test-slow",
            Duration::from_millis(20),
            move || {
                let _ = gate.recv();
                8
            },
            move |v| {
                let _ = late_tx.send(v);
            },
        );
        assert_eq!(slow, None);
        drop(gate_tx);
        assert_eq!(late_rx.recv_timeout(Duration::from_secs(5)), Ok(8));
    }

    #[test]
    fn a_reader_that_never_answers_leaves_the_floor_to_the_wall_clock() {
        let d = TestDir::new("boot-read-silent");
        let (reader, mut boot) = start(d.path(), 1_000);
        boot.deadline = Instant::now() + Duration::from_millis(50);
        let t = Instant::now();
        assert_eq!(boot.clock_floor(), 0);
        assert!(boot.unfinished().is_none());
        assert!(t.elapsed() < Duration::from_secs(2));
        drop(reader);
    }

    #[test]
    fn the_clock_file_is_enough_when_the_journal_never_answers() {
        let d = TestDir::new("boot-read-clock");
        std::fs::write(clock_file(d.path()), "1234\n").unwrap();
        let (reader, mut boot) = start(d.path(), 5_000);
        boot.deadline = Instant::now() + Duration::from_millis(50);
        // As the thread does, up to the journal read that hangs.
        reader
            .tx
            .send(Msg::Clock(std::fs::read_to_string(clock_file(d.path()))))
            .unwrap();
        reader
            .tx
            .send(Msg::Reading(d.path().join("journal")))
            .unwrap();
        assert_eq!(boot.clock_floor(), 1234);
        assert!(boot.wait(|b| b.journal.is_none()), "the deadline passes");
        assert_eq!(boot.stuck_on(), d.path().join("journal"));
        assert!(boot.unfinished().is_none());
    }

    fn with_gpid(kind: journal::Kind, start_us: u64, pid: u32) -> Record {
        Record {
            time_us: start_us,
            service: "a".into(),
            kind,
            gpid: Gpid {
                ip: "10.0.0.1".parse().unwrap(),
                port: 0,
                start_us,
                pid,
            }
            .to_string(),
            ..Record::default()
        }
    }

    #[test]
    fn the_fold_keeps_the_newest_believable_start_and_the_open_starts() {
        let day = 86_400_000_000u64;
        let now = 10 * day;
        let mut fold = Fold::new(now, OpenStarts::with_bound(2));
        for r in [
            with_gpid(journal::Kind::Start, 5, 1),
            // A start time far ahead of the wall clock (a clock once set
            // years ahead) is not believed, as `plausible_mark` says.
            with_gpid(journal::Kind::Start, now + 2 * day, 2),
            with_gpid(journal::Kind::Start, now - 7, 3),
            with_gpid(journal::Kind::Exit, now - 7, 3),
            with_gpid(journal::Kind::Start, 9, 4),
        ] {
            fold.record(&r);
        }
        let got = fold.done();
        assert_eq!(got.newest_start_us, now - 7);
        // The oldest open start, by its start time, went for the bound.
        let pids: Vec<u32> = got.open.iter().map(|u| u.gpid.pid).collect();
        assert_eq!(pids, [4, 2]);
        assert_eq!(got.open.dropped(), 1);
    }

    #[test]
    fn without_a_clock_file_the_journal_gives_the_floor() {
        let d = TestDir::new("boot-read-journal");
        let mut j = journal::Journal::open(d.path(), 1 << 20).unwrap().0;
        for (t, pid) in [(700u64, 5u32), (900, 6)] {
            let r = Record {
                time_us: t,
                service: "a".into(),
                kind: journal::Kind::Start,
                gpid: Gpid {
                    ip: "10.0.0.1".parse().unwrap(),
                    port: 0,
                    start_us: t,
                    pid,
                }
                .to_string(),
                ..Record::default()
            };
            assert!(j.append(&r).log_line().is_none());
        }
        drop(j);
        let (reader, mut boot) = start(d.path(), 5_000);
        reader.run();
        assert_eq!(boot.clock_floor(), 900);
        assert_eq!(boot.unfinished().map(|r| r.len()), Some(2));
    }
}
