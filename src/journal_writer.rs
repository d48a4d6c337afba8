//! The journal's writer thread, so that no restart, reap or control reply
//! waits for the state directory's disk.
//!
//! A write(2) to a healthy local disk takes microseconds, but the journal
//! may sit on NFS, a stuck FUSE mount or a full device the kernel keeps
//! retrying, where one write can take seconds or never return. The loop
//! (`zurg run`'s and the publisher's) only frames a record (`journal::frame`,
//! a few µs) and queues it; this thread owns the `Journal` and appends the
//! records in exactly the order they were queued (one FIFO). Records queued
//! in a row sit back to back in one buffer and go to the file with one
//! write(2) (`Journal::append_frames`), not one each: at boot's 10,000
//! starts that was 10,000 writes and as many wake-ups of this thread. The
//! caller's loop wakes the thread once per turn (`defer`, `announce`), or
//! sooner when a turn has queued `WAKE_BYTES`.
//!
//! The queue is bounded (`QUEUE_RECORDS`, `QUEUE_BYTES`, counting what the
//! thread has taken and not yet written). Once it is full the newest records
//! are dropped and counted, never the queued ones: the records that explain
//! the start of an incident are kept, and the present is in `status` and
//! `events`. A run of drops is one `gap` marker in the queue, so when the
//! thread reaches it the journal gets a `gap` record ("journal behind: K
//! record(s) not written") where the records are missing, and the log says
//! so too. The loop never waits on the queue.
//!
//! Every record handed over gets a number; readers (`history` on the
//! worker, the forwarder's read-back, the publisher's queries) wait, for at
//! most `READ_WAIT`, until the thread has dealt with every record numbered
//! before their request, so a record is in the journal before any later
//! request reads it. `flush` gives the thread `FLUSH_DEADLINE` to write
//! what is queued as zurg exits.
//!
//! Without a thread (it could not be spawned) a record is written on the
//! caller's thread, as before.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::journal::{self, Frames, Journal, Kind, Record};

/// Records queued and not yet written beyond which newer ones are dropped:
/// a restart storm of several thousand services rides out a stall of a few
/// seconds without a gap.
pub const QUEUE_RECORDS: usize = 20_000;
/// The same in bytes of framed records (an exit with its sample is some
/// 400 bytes): what a stuck disk may cost zurg in memory at most.
pub const QUEUE_BYTES: usize = 4 << 20;
/// How long zurg's exit waits for the queued records to be written.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(1);
/// How long a reader waits for the records queued before its request.
pub const READ_WAIT: Duration = Duration::from_secs(2);
/// A write taking this long is worth a warning, long before the queue is
/// full (4 MiB of records may take an idle system hours to produce).
pub const STALL_WARNING: Duration = Duration::from_secs(5);
/// Bytes queued within one turn of the caller's loop (`defer`) past which
/// a waiting thread is woken before the turn ends: boot starts thousands
/// of services in one turn, whose records would otherwise all wait for
/// its end (and, at 20,000 services, overflow the queue).
pub const WAKE_BYTES: usize = 64 << 10;
/// The largest buffer of records the thread hands back for reuse: a turn
/// of a few dozen restarts. Boot's 64 KiB runs and the 4 MiB a stalled
/// disk may have filled are given back to the allocator instead, so that
/// an idle zurg does not keep them resident.
const SPARE_BYTES: usize = 16 << 10;

#[derive(Debug, PartialEq)]
enum Item {
    /// Records queued in a row, written with one write(2) per journal
    /// file they go to.
    Frames(Frames),
    /// Records dropped in a row, from `first_us` to `last_us`.
    Gap {
        count: u64,
        first_us: u64,
        last_us: u64,
    },
}

/// What `Queue::push` did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Dropped: the queue is full. `first` for the first of a run, which
    /// is worth a log line; the others are only counted.
    Dropped {
        first: bool,
    },
}

/// The bounded FIFO between the loop and the thread, and how far the
/// thread got (pure: no thread, no file).
#[derive(Debug)]
pub struct Queue {
    items: VecDeque<Item>,
    max_records: usize,
    max_bytes: usize,
    /// Records queued or taken by the thread and not yet written, and
    /// their bytes: what the bound applies to.
    pending: usize,
    pending_bytes: usize,
    /// The number of the last record handed over (queued or dropped).
    sent: u64,
    /// Every record numbered up to here is written, lost or dropped.
    done: u64,
    dropped_total: u64,
    /// The thread waits for records (a wake-up costs a system call, so
    /// none is made while it is busy writing).
    waiting: bool,
    /// When the thread took the batch it is writing.
    writing_since: Option<Instant>,
    /// The current batch's stall has been warned about.
    stall_warned: bool,
    /// A written batch's emptied buffer, for the next records.
    spare: Option<Frames>,
}

/// Items the thread took, in order: written, then `Queue::finished`.
#[derive(Debug)]
pub struct Batch {
    items: Vec<Item>,
    records: usize,
    bytes: usize,
    /// Every record numbered up to here is in this batch or was dropped.
    upto: u64,
}

impl Queue {
    pub fn new(max_records: usize, max_bytes: usize) -> Queue {
        Queue {
            items: VecDeque::new(),
            max_records,
            max_bytes,
            pending: 0,
            pending_bytes: 0,
            sent: 0,
            done: 0,
            dropped_total: 0,
            waiting: false,
            writing_since: None,
            stall_warned: false,
            spare: None,
        }
    }

    /// Queues one framed record made at `time_us`, or drops it when the
    /// queue is full.
    pub fn push(&mut self, framed: &[u8], time_us: u64) -> Pushed {
        self.sent = self.sent.saturating_add(1);
        let fits = self.pending < self.max_records
            && self.pending_bytes.saturating_add(framed.len()) <= self.max_bytes;
        if fits {
            self.pending += 1;
            self.pending_bytes += framed.len();
            if let Some(Item::Frames(frames)) = self.items.back_mut() {
                frames.push(framed);
            } else {
                let mut frames = self.spare.take().unwrap_or_default();
                frames.push(framed);
                self.items.push_back(Item::Frames(frames));
            }
            return Pushed::Queued;
        }
        self.dropped_total = self.dropped_total.saturating_add(1);
        if let Some(Item::Gap { count, last_us, .. }) = self.items.back_mut() {
            *count = count.saturating_add(1);
            *last_us = time_us;
            return Pushed::Dropped { first: false };
        }
        // A run of drops is one marker, and a marker follows at least one
        // frame, so markers are bounded by the frames.
        self.items.push_back(Item::Gap {
            count: 1,
            first_us: time_us,
            last_us: time_us,
        });
        Pushed::Dropped { first: true }
    }

    /// Everything queued, for the thread to write from `now`; `None` when
    /// nothing is.
    pub fn take(&mut self, now: Instant) -> Option<Batch> {
        if self.items.is_empty() {
            return None;
        }
        self.writing_since = Some(now);
        // A gap at the end may still grow: it waits for the next batch,
        // so that a run of drops makes one record, not one per batch.
        let keep = usize::from(
            self.items.len() > 1 && matches!(self.items.back(), Some(Item::Gap { .. })),
        );
        let items: Vec<Item> = self.items.drain(..self.items.len() - keep).collect();
        let (mut records, mut bytes) = (0, 0);
        for item in &items {
            if let Item::Frames(f) = item {
                records += f.len();
                bytes += f.byte_len();
            }
        }
        self.items.shrink_to(64);
        Some(Batch {
            items,
            records,
            bytes,
            upto: self.sent,
        })
    }

    /// The thread has written (or failed to write) what `batch` held;
    /// whether its stall was warned about (so the recovery is told too).
    pub fn finished(&mut self, records: usize, bytes: usize, upto: u64) -> bool {
        self.pending = self.pending.saturating_sub(records);
        self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
        self.done = self.done.max(upto);
        self.writing_since = None;
        std::mem::take(&mut self.stall_warned)
    }

    /// A written run's buffer, emptied, for the records that come next
    /// (one is kept, and only one that is not large).
    pub fn recycle(&mut self, mut frames: Frames) {
        if self.spare.is_none() && frames.capacity() <= SPARE_BYTES {
            frames.clear();
            self.spare = Some(frames);
        }
    }

    /// How long the thread has been writing its batch, once, when that
    /// is at least `after` at `now`: the moment to warn.
    pub fn stalled(&mut self, now: Instant, after: Duration) -> Option<Duration> {
        let since = self.writing_since?;
        let stuck = now.saturating_duration_since(since);
        if self.stall_warned || stuck < after {
            return None;
        }
        self.stall_warned = true;
        Some(stuck)
    }

    /// The number of the last record handed over.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Whether every record numbered up to `seq` has been dealt with.
    pub fn caught_up(&self, seq: u64) -> bool {
        self.done >= seq
    }

    /// Records waiting to be written, and records dropped since start.
    pub fn health(&self) -> (usize, u64) {
        (self.pending, self.dropped_total)
    }
}

impl Batch {
    /// What `Queue::finished` needs once the batch is written.
    fn receipt(&self) -> (usize, usize, u64) {
        (self.records, self.bytes, self.upto)
    }
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when records are queued (to the thread) and when a batch
    /// is written (to `flush` and readers).
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic elsewhere while holding the lock leaves a usable queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `ready` holds, for at most `within`; whether it holds.
    fn wait_for(&self, within: Duration, ready: impl Fn(&Queue) -> bool) -> bool {
        let deadline = Instant::now() + within;
        let mut q = self.lock();
        while !ready(&q) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = match self.changed.wait_timeout(q, left) {
                Ok((q, _)) => q,
                Err(e) => e.into_inner().0,
            };
        }
        true
    }
}

/// A reader's claim: the records handed over before it was made.
#[derive(Debug, Clone)]
pub struct ReadAfter {
    shared: Arc<Shared>,
    seq: u64,
}

impl ReadAfter {
    /// Waits, for at most `READ_WAIT`, until those records are dealt with;
    /// how many are not when it gives up, for the reader to say.
    pub fn wait(&self) -> Option<u64> {
        if self.shared.wait_for(READ_WAIT, |q| q.caught_up(self.seq)) {
            return None;
        }
        let q = self.shared.lock();
        Some(self.seq.saturating_sub(q.done))
    }
}

/// The journal's state for `zurg version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub queued: u64,
    pub not_written: u64,
}

/// The loop's handle on the thread.
#[derive(Debug)]
pub struct JournalWriter {
    shared: Arc<Shared>,
    /// The journal itself when there is no thread: records are written on
    /// the caller's thread.
    inline: Option<Journal>,
    /// Which journal, for log lines: "journal" or "publisher journal".
    what: &'static str,
    /// A thread writes the records (else `inline` does).
    running: bool,
    /// Inside a turn of the caller's loop (`defer`): the thread is woken
    /// once at its end (`announce`), not per record.
    deferred: bool,
    /// Records were queued for a waiting thread during the turn.
    unannounced: bool,
    /// The record being framed: one buffer reused, not one per record.
    scratch: Vec<u8>,
}

impl JournalWriter {
    /// Hands `journal` to a new thread named `name`.
    pub fn start(journal: Journal, name: &str, what: &'static str) -> JournalWriter {
        Self::start_with(move || journal, name, what)
    }

    /// Has a new thread named `name` get its journal from `open`, then
    /// write to it: opening reads the file, and so may hang on its disk as
    /// any write. Records sent meanwhile wait in the queue. Without a
    /// thread, `open` runs here.
    pub fn start_with(
        open: impl FnOnce() -> Journal + Send + 'static,
        name: &str,
        what: &'static str,
    ) -> JournalWriter {
        Self::start_bounded(open, name, what, (QUEUE_RECORDS, QUEUE_BYTES))
    }

    /// `start_with` with a queue of `(records, bytes)` at most.
    fn start_bounded(
        open: impl FnOnce() -> Journal + Send + 'static,
        name: &str,
        what: &'static str,
        (records, bytes): (usize, usize),
    ) -> JournalWriter {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::new(records, bytes)),
            changed: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        // The opener goes to the thread through a slot, so that it comes
        // back when the thread cannot be spawned.
        let slot = Arc::new(Mutex::new(Some(open)));
        let thread_slot = Arc::clone(&slot);
        let spawned = crate::log::spawn_blocking_signals(name, move || {
            let open = thread_slot.lock().ok().and_then(|mut j| j.take());
            if let Some(open) = open {
                run(&for_thread, open(), what);
            }
        });
        let inline = match spawned {
            Ok(_) => None,
            Err(e) => {
                crate::log!(
                    "warning: cannot start the {what} writer thread ({e}); records are written on the event loop"
                );
                slot.lock()
                    .ok()
                    .and_then(|mut j| j.take())
                    .map(|open| open())
            }
        };
        let running = inline.is_none();
        JournalWriter {
            shared,
            inline,
            what,
            running,
            deferred: false,
            unannounced: false,
            scratch: Vec::new(),
        }
    }

    /// The caller's loop starts a turn: records sent until `announce`
    /// wake the thread once, then. A restart sends an exit and a start
    /// record around its spawn; woken per record, the thread's write(2)
    /// competed with the spawn for the two cores.
    pub fn defer(&mut self) {
        self.deferred = true;
    }

    /// The turn is over: the thread gets what it queued.
    pub fn announce(&mut self) {
        self.deferred = false;
        self.wake_for_unannounced();
    }

    /// Hands the thread what a deferred turn queued so far, the turn going
    /// on: a caller about to wait for the thread within a turn (boot's
    /// paced exits) would otherwise wait for records it was never told of.
    fn wake_for_unannounced(&mut self) {
        if std::mem::take(&mut self.unannounced) {
            let q = self.shared.lock();
            if q.waiting {
                self.shared.changed.notify_all();
            }
        }
    }

    /// Queues `record` for the thread; never waits for it.
    pub fn send(&mut self, record: &Record) {
        journal::frame_into(&mut self.scratch, record);
        let framed = &self.scratch;
        if let Some(j) = &mut self.inline {
            if let Some(line) = j.append_frame(framed).log_line() {
                crate::log!("{line}");
            }
            let mut q = self.shared.lock();
            q.sent = q.sent.saturating_add(1);
            q.done = q.sent;
            return;
        }
        let mut q = self.shared.lock();
        let pushed = q.push(framed, record.time_us);
        if pushed == (Pushed::Dropped { first: true }) {
            let (queued, _) = q.health();
            let bytes = q.pending_bytes;
            drop(q);
            crate::log!(
                "warning: {} behind: its disk has not taken the {queued} record(s) ({bytes} bytes) queued; newer records are dropped and counted until it does",
                self.what
            );
            return;
        }
        if q.waiting {
            if self.deferred && q.pending_bytes < WAKE_BYTES {
                self.unannounced = true;
            } else {
                self.shared.changed.notify_all();
            }
        }
        // Only a thread in the middle of a write can be stalled (and the
        // clock is read once per record otherwise).
        let stuck = if q.writing_since.is_some() {
            q.stalled(Instant::now(), STALL_WARNING)
        } else {
            None
        };
        if let Some(stuck) = stuck {
            let (queued, _) = q.health();
            drop(q);
            crate::log!(
                "warning: {} behind: one write has taken {} s and {queued} record(s) wait; restarts go on, history lags until its disk answers",
                self.what,
                stuck.as_secs()
            );
        }
    }

    /// A claim on every record sent so far, for a reader on another thread.
    pub fn read_after(&self) -> ReadAfter {
        let seq = self.shared.lock().sent();
        ReadAfter {
            shared: Arc::clone(&self.shared),
            seq,
        }
    }

    /// The number of the last record sent: a mark for `written`.
    pub fn mark(&self) -> u64 {
        self.shared.lock().sent()
    }

    /// Whether the thread has dealt with every record up to `mark`
    /// (written it, or dropped it and counted it for a gap record).
    pub fn written(&self, mark: u64) -> bool {
        self.shared.lock().caught_up(mark)
    }

    pub fn health(&self) -> Health {
        let (queued, dropped) = self.shared.lock().health();
        Health {
            queued: queued as u64,
            not_written: dropped,
        }
    }

    /// Whether the thread has written everything queued (a gap record
    /// still to write counts too), waiting for it at most `within`; says
    /// nothing in the log, for a caller that waits in slices.
    pub fn written_within(&mut self, within: Duration) -> bool {
        self.wake_for_unannounced();
        if !self.running {
            return true;
        }
        self.shared
            .wait_for(within, |q| q.caught_up(q.sent) && q.items.is_empty())
    }

    /// Waits, for at most `within`, until the thread has written what is
    /// queued; called as zurg ends. The thread goes on (a record sent
    /// later is still written while the process lives).
    pub fn flush(&mut self, within: Duration) {
        self.announce();
        if !self.running {
            return;
        }
        if !self.written_within(within) {
            let (queued, _) = self.shared.lock().health();
            crate::log!(
                "warning: {queued} {} record(s) not written: its disk did not take them within {} ms of exit",
                self.what,
                within.as_millis()
            );
        }
    }
}

fn run(shared: &Shared, mut journal: Journal, what: &str) {
    loop {
        let batch = {
            let mut q = shared.lock();
            loop {
                if let Some(b) = q.take(Instant::now()) {
                    q.waiting = false;
                    break b;
                }
                q.waiting = true;
                q = match shared.changed.wait(q) {
                    Ok(q) => q,
                    Err(e) => e.into_inner(),
                };
            }
        };
        let (records, bytes, upto) = batch.receipt();
        let started = Instant::now();
        let mut spare = None;
        for item in batch.items {
            if let Some(frames) = write_item(&mut journal, item, what) {
                spare = Some(frames);
            }
        }
        let warned = {
            let mut q = shared.lock();
            if let Some(frames) = spare {
                q.recycle(frames);
            }
            q.finished(records, bytes, upto)
        };
        shared.changed.notify_all();
        if warned {
            crate::log!(
                "{what} written again after {} s",
                started.elapsed().as_secs()
            );
        }
    }
}

/// Writes one item; a run of records gives its buffer back for reuse.
fn write_item(journal: &mut Journal, item: Item, what: &str) -> Option<Frames> {
    let appended = match item {
        Item::Frames(frames) => {
            for told in journal.append_frames(&frames) {
                if let Some(line) = told.log_line() {
                    crate::log!("{line}");
                }
            }
            return Some(frames);
        }
        Item::Gap {
            count,
            first_us,
            last_us,
        } => {
            let note = gap_note(count, first_us, last_us);
            crate::log!("{what} takes records again; {note}");
            journal.append(&Record {
                time_us: first_us,
                kind: Kind::Gap,
                reason: Some(note),
                ..Record::default()
            })
        }
    };
    if let Some(line) = appended.log_line() {
        crate::log!("{line}");
    }
    None
}

/// The `gap` record's reason.
fn gap_note(count: u64, first_us: u64, last_us: u64) -> String {
    let over_ms = last_us.saturating_sub(first_us) / 1000;
    format!("journal behind: {count} record(s) not written, from this time over {over_ms} ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    fn frames(b: &Batch) -> Vec<Vec<u8>> {
        b.items
            .iter()
            .flat_map(|i| match i {
                Item::Frames(f) => f.iter().map(<[u8]>::to_vec).collect(),
                Item::Gap { .. } => Vec::new(),
            })
            .collect()
    }

    /// The batch's items in order: each run's records, "gap N" for a gap.
    fn shape(b: &Batch) -> Vec<String> {
        b.items
            .iter()
            .map(|i| match i {
                Item::Frames(f) => format!("{:?}", f.iter().collect::<Vec<_>>()),
                Item::Gap { count, .. } => format!("gap {count}"),
            })
            .collect()
    }

    #[test]
    fn records_come_out_in_the_order_they_went_in() {
        let mut q = Queue::new(10, 1000);
        for i in 0..5u8 {
            assert_eq!(q.push(&[i; 3], 0), Pushed::Queued);
        }
        let b = q.take(Instant::now()).unwrap();
        assert_eq!(frames(&b), (0..5u8).map(|i| vec![i; 3]).collect::<Vec<_>>());
        assert!(q.take(Instant::now()).is_none());
    }

    #[test]
    fn a_full_queue_drops_the_newest_and_marks_the_gap_where_they_were() {
        let mut q = Queue::new(2, 1000);
        assert_eq!(q.push(&[1], 10), Pushed::Queued);
        assert_eq!(q.push(&[2], 20), Pushed::Queued);
        assert_eq!(q.push(&[3], 30), Pushed::Dropped { first: true });
        assert_eq!(q.push(&[4], 40), Pushed::Dropped { first: false });
        // The gap may still grow while the records before it are written;
        // once they are, it is written as one record.
        let b = q.take(Instant::now()).unwrap();
        assert_eq!(shape(&b), ["[[1], [2]]"]);
        assert_eq!(q.push(&[5], 50), Pushed::Dropped { first: false });
        assert_eq!(q.health(), (2, 3));
        let (records, bytes, upto) = b.receipt();
        let _ = q.finished(records, bytes, upto);
        let b = q.take(Instant::now()).unwrap();
        assert_eq!(
            b.items,
            [Item::Gap {
                count: 3,
                first_us: 30,
                last_us: 50
            }]
        );
    }

    #[test]
    fn records_queued_in_a_row_are_one_run_and_a_gap_splits_them() {
        let mut q = Queue::new(3, 1000);
        assert_eq!(q.push(&[1], 0), Pushed::Queued);
        assert_eq!(q.push(&[2], 0), Pushed::Queued);
        assert_eq!(q.push(&[3], 0), Pushed::Queued);
        assert_eq!(q.push(&[4], 0), Pushed::Dropped { first: true });
        let b = q.take(Instant::now()).unwrap();
        assert_eq!(shape(&b), ["[[1], [2], [3]]"]);
        let (records, bytes, upto) = b.receipt();
        let _ = q.finished(records, bytes, upto);
        assert_eq!(q.push(&[5], 0), Pushed::Queued);
        assert_eq!(q.push(&[6], 0), Pushed::Queued);
        let b = q.take(Instant::now()).unwrap();
        assert_eq!(shape(&b), ["gap 1", "[[5], [6]]"]);
    }

    #[test]
    fn a_written_run_lends_its_buffer_to_the_next_records() {
        let mut q = Queue::new(10, 1 << 20);
        let _ = q.push(&[7; 100], 0);
        let Some(Item::Frames(run)) = q.take(Instant::now()).unwrap().items.pop() else {
            panic!("no run");
        };
        let room = run.capacity();
        q.recycle(run);
        let _ = q.push(&[8; 10], 0);
        let b = q.take(Instant::now()).unwrap();
        assert_eq!(frames(&b), [vec![8; 10]], "nothing of the last run left");
        let Some(Item::Frames(run)) = b.items.first() else {
            panic!("no run");
        };
        assert_eq!(run.capacity(), room);
        // A run grown large behind a stalled disk is not kept.
        let mut big = Frames::default();
        big.push(&vec![0; SPARE_BYTES + 1]);
        q.recycle(big);
        assert!(q.spare.is_none());
    }

    #[test]
    fn a_gap_record_lands_between_the_runs_around_the_drops() {
        let dir = TestDir::new("journal-writer-gap-runs");
        let (mut j, _) = Journal::open(dir.path(), journal::DEFAULT_LIMIT).unwrap();
        let rec = journal::tests::rec;
        let mut q = Queue::new(2, 1 << 20);
        for i in 0..4 {
            let _ = q.push(&journal::frame(&rec(i)), rec(i).time_us);
        }
        let mut write = |q: &mut Queue| {
            let b = q.take(Instant::now()).unwrap();
            let (records, bytes, upto) = b.receipt();
            for item in b.items {
                if let Some(run) = write_item(&mut j, item, "journal") {
                    q.recycle(run);
                }
            }
            let _ = q.finished(records, bytes, upto);
        };
        write(&mut q);
        let _ = q.push(&journal::frame(&rec(4)), rec(4).time_us);
        let _ = q.push(&journal::frame(&rec(5)), rec(5).time_us);
        write(&mut q);
        let (all, warnings) = journal::read_all(dir.path());
        assert!(warnings.is_empty(), "{warnings:?}");
        let kinds: Vec<_> = all.iter().map(|r| (r.kind, r.time_us)).collect();
        assert_eq!(
            kinds,
            [
                (rec(0).kind, rec(0).time_us),
                (rec(1).kind, rec(1).time_us),
                (Kind::Gap, rec(2).time_us),
                (rec(4).kind, rec(4).time_us),
                (rec(5).kind, rec(5).time_us),
            ]
        );
        let note = all.get(2).and_then(|r| r.reason.clone()).unwrap();
        assert!(
            note.starts_with("journal behind: 2 record(s) not written"),
            "{note}"
        );
    }

    #[test]
    fn taken_records_still_count_against_the_bound_until_written() {
        // A thread stuck in a write holds its batch: the queue behind it
        // must not get a whole new allowance.
        let mut q = Queue::new(2, 1000);
        let _ = q.push(&[1], 0);
        let _ = q.push(&[2], 0);
        let b = q.take(Instant::now()).unwrap();
        assert_eq!(q.push(&[3], 5), Pushed::Dropped { first: true });
        let (records, bytes, upto) = b.receipt();
        let _ = q.finished(records, bytes, upto);
        assert_eq!(q.push(&[4], 6), Pushed::Queued);
        let b = q.take(Instant::now()).unwrap();
        assert_eq!(shape(&b), ["gap 1", "[[4]]"]);
    }

    #[test]
    fn the_byte_bound_drops_a_record_that_would_pass_it() {
        let mut q = Queue::new(100, 10);
        assert_eq!(q.push(&[0; 6], 0), Pushed::Queued);
        assert_eq!(q.push(&[0; 5], 0), Pushed::Dropped { first: true });
        // A smaller one still fits: a run of drops ends at the first fit.
        assert_eq!(q.push(&[0; 4], 0), Pushed::Queued);
        assert_eq!(q.push(&[0; 1], 0), Pushed::Dropped { first: true });
        let b = q.take(Instant::now()).unwrap();
        assert_eq!(b.items.len(), 3, "the trailing gap waits: {:?}", b.items);
        assert!(matches!(
            q.take(Instant::now()).unwrap().items[..],
            [Item::Gap { count: 1, .. }]
        ));
    }

    #[test]
    fn a_reader_is_caught_up_once_the_batch_holding_its_records_is_written() {
        let mut q = Queue::new(1, 1000);
        let _ = q.push(&[1], 0);
        let _ = q.push(&[2], 0); // dropped
        let seq = q.sent();
        assert_eq!(seq, 2);
        assert!(!q.caught_up(seq));
        let b = q.take(Instant::now()).unwrap();
        assert!(!q.caught_up(seq));
        let (records, bytes, upto) = b.receipt();
        let _ = q.finished(records, bytes, upto);
        // The dropped record counts as dealt with: nobody waits for it.
        assert!(q.caught_up(seq));
        assert_eq!(q.health(), (0, 1));
    }

    #[test]
    fn a_write_that_takes_long_is_warned_about_once_and_its_end_told() {
        let mut q = Queue::new(10, 1000);
        let t0 = Instant::now();
        let step = Duration::from_secs(1);
        assert_eq!(q.stalled(t0, step), None, "nothing is being written");
        let _ = q.push(&[1], 0);
        let b = q.take(t0).unwrap();
        assert_eq!(q.stalled(t0, step), None);
        assert_eq!(q.stalled(t0 + 2 * step, step), Some(2 * step));
        assert_eq!(q.stalled(t0 + 3 * step, step), None, "once per stall");
        let (records, bytes, upto) = b.receipt();
        assert!(
            q.finished(records, bytes, upto),
            "the end of a warned stall"
        );
        let _ = q.push(&[2], 0);
        let b = q.take(t0).unwrap();
        let (records, bytes, upto) = b.receipt();
        assert!(
            !q.finished(records, bytes, upto),
            "a quick write says nothing"
        );
    }

    #[test]
    fn records_dropped_behind_a_hung_disk_leave_a_gap_record_where_they_were() {
        use std::io::Read;
        use std::os::fd::AsFd;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = TestDir::new("journal-writer-gap");
        let path = dir.join("journal");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        // One page: a few records fill it, and the next write blocks.
        nix::fcntl::fcntl(fifo.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
        // Full before the writer's first write, so that write blocks.
        let filler = |k: u64| journal::frame(&journal::tests::rec(100_000 + k));
        let mut fill = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let mut filled = 0;
        while std::io::Write::write(&mut fill, &filler(filled)).is_ok() {
            filled += 1;
        }
        drop(fill);
        // Unopened, so the writer opens the FIFO without reading it.
        let j = Journal::unopened(dir.path(), journal::DEFAULT_LIMIT);
        let mut w =
            JournalWriter::start_bounded(move || j, "test-journal-gap", "journal", (8, 1 << 20));
        let rec = |i: u64| Record {
            time_us: 1_000 + i,
            reason: Some("x".repeat(300)),
            ..journal::tests::rec(i)
        };
        let mut i = 0;
        while w.health().not_written == 0 {
            assert!(i < 10_000, "the queue never filled");
            w.send(&rec(i));
            i += 1;
        }
        let first_dropped = i - 1;
        for _ in 0..5 {
            w.send(&rec(i));
            i += 1;
        }
        assert_eq!(w.health().not_written, 6);
        // A reader gives up on the hung disk after READ_WAIT, saying so.
        let t = Instant::now();
        assert!(w.read_after().wait().is_some_and(|behind| behind > 0));
        assert!(t.elapsed() >= READ_WAIT);
        // The disk comes back (the reader reads), and later records follow
        // the gap.
        nix::fcntl::fcntl(
            fifo.as_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        )
        .unwrap();
        // Gives up at a deadline, so that a writer that never sends the
        // last record fails the test rather than hanging it.
        let reader = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut data = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let (got, _, _) = journal::decode_all(&data);
                if got.last().is_some_and(|r| r.time_us == 1_000 + 999) {
                    return got;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let mut ready = [nix::poll::PollFd::new(
                    fifo.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let timeout = nix::poll::PollTimeout::try_from(left).unwrap();
                if nix::poll::poll(&mut ready, timeout).unwrap() == 0 {
                    return got;
                }
                let n = fifo.read(&mut buf).unwrap();
                data.extend_from_slice(&buf[..n]);
            }
        });
        // Sent once the queue has room again: it comes after the gap.
        assert_eq!(w.read_after().wait(), None);
        w.send(&rec(999));
        let got = reader.join().unwrap();
        let filled = usize::try_from(filled).unwrap();
        assert!(got[..filled].iter().all(|r| r.time_us > 100_000), "{got:?}");
        let got = &got[filled..];
        let times: Vec<u64> = got.iter().map(|r| r.time_us - 1_000).collect();
        let gap = got.iter().position(|r| r.kind == Kind::Gap).unwrap();
        assert_eq!(times[..gap], (0..first_dropped).collect::<Vec<_>>()[..]);
        assert_eq!(
            got[gap].time_us,
            1_000 + first_dropped,
            "the first one dropped"
        );
        assert!(
            got[gap]
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("journal behind: 6 record(s) not written")),
            "{:?}",
            got[gap]
        );
        assert_eq!(times[gap + 1..], [999]);
    }

    /// Until the writer's thread sleeps for records, as between two turns
    /// of zurg's loop.
    fn until_the_thread_waits(w: &JournalWriter) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !w.shared.lock().waiting {
            assert!(Instant::now() < deadline, "the thread never waited");
            std::thread::yield_now();
        }
    }

    #[test]
    fn records_of_a_deferred_turn_reach_a_waiting_thread_when_announced() {
        let dir = TestDir::new("journal-writer-deferred");
        let (j, _) = Journal::open(dir.path(), journal::DEFAULT_LIMIT).unwrap();
        let mut w = JournalWriter::start(j, "test-journal-deferred", "journal");
        for turn in 0..50u64 {
            until_the_thread_waits(&w);
            w.defer();
            w.send(&journal::tests::rec(turn * 2));
            w.send(&journal::tests::rec(turn * 2 + 1));
            w.announce();
            // A reader after the turn is not left to its READ_WAIT.
            let t = Instant::now();
            assert_eq!(w.read_after().wait(), None);
            assert!(
                t.elapsed() < READ_WAIT,
                "turn {turn} waited {:?}",
                t.elapsed()
            );
        }
        let (all, _) = journal::read_all(dir.path());
        let want: Vec<Record> = (0..100).map(journal::tests::rec).collect();
        assert_eq!(all, want);
    }

    #[test]
    fn a_long_deferred_turn_wakes_the_thread_before_its_end() {
        let dir = TestDir::new("journal-writer-deferred-long");
        let (j, _) = Journal::open(dir.path(), journal::DEFAULT_LIMIT).unwrap();
        let mut w = JournalWriter::start(j, "test-journal-long-turn", "journal");
        until_the_thread_waits(&w);
        w.defer();
        // Up to the record that passes WAKE_BYTES, and not one more (those
        // after it would wait for the turn's end again).
        let (mut n, mut queued) = (0, 0);
        while queued < WAKE_BYTES {
            let r = journal::tests::rec(n);
            queued += journal::frame(&r).len();
            w.send(&r);
            n += 1;
        }
        // Still inside the turn: the last record woke the thread, so a
        // reader is not left to its READ_WAIT.
        assert_eq!(w.read_after().wait(), None);
        let (all, _) = journal::read_all(dir.path());
        assert_eq!(all.len() as u64, n);
        w.announce();
    }

    #[test]
    fn a_wait_inside_a_deferred_turn_hands_the_thread_what_the_turn_queued() {
        // Boot is one deferred turn, and its paced exits for a previous
        // zurg's starts wait for the thread between batches: the wait
        // itself must tell the thread, or it waits for records under
        // WAKE_BYTES the thread never heard of (28,672 exits unsent at boot).
        let dir = TestDir::new("journal-writer-deferred-wait");
        let (j, _) = Journal::open(dir.path(), journal::DEFAULT_LIMIT).unwrap();
        let mut w = JournalWriter::start(j, "test-journal-deferred-wait", "journal");
        until_the_thread_waits(&w);
        w.defer();
        for i in 0..3 {
            w.send(&journal::tests::rec(i));
        }
        assert!(w.written_within(Duration::from_secs(10)));
        let (all, _) = journal::read_all(dir.path());
        assert_eq!(all.len(), 3);
        w.announce();
    }

    #[test]
    fn the_thread_writes_every_record_in_order_before_a_reader_reads() {
        let dir = TestDir::new("journal-writer-order");
        let (j, _) = Journal::open(dir.path(), journal::DEFAULT_LIMIT).unwrap();
        let mut w = JournalWriter::start(j, "test-journal", "journal");
        for i in 0..500 {
            w.send(&journal::tests::rec(i));
            if i % 100 == 99 {
                // Read-your-writes: what was sent is there once the claim
                // is met.
                assert_eq!(w.read_after().wait(), None);
                let (all, _) = journal::read_all(dir.path());
                assert_eq!(all.len() as u64, i + 1);
            }
        }
        w.flush(FLUSH_DEADLINE);
        let (all, _) = journal::read_all(dir.path());
        let want: Vec<Record> = (0..500).map(journal::tests::rec).collect();
        assert_eq!(all, want);
        assert_eq!(
            w.health(),
            Health {
                queued: 0,
                not_written: 0
            }
        );
    }
}
