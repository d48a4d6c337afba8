//! The publisher's own journal (`zurg publisher --journal DIR`): every
//! start and exit it receives from any host, with the host (its zurg GPID)
//! and the host's sequence number, in the same append-only, rotated
//! journal `zurg run` keeps (`crate::journal`). `zurg history --publisher`
//! reads it through the publish protocol (`history` -> `records`...,
//! `synced`).
//!
//! Appending goes through a writer thread (`crate::journal_writer`), as in
//! `zurg run`: the loop frames the record and queues it, so a slow disk
//! delays the journal, never an ack or a listing. A query waits for the
//! records queued before it. Reading the files for a query is not done on the loop: a thread per
//! query (at most `MAX_QUERIES` at once) reads and filters them and hands
//! the encoded answer back through a channel and the loop's Waker.
//!
//! The thread reads the files a record at a time (`journal::FileReader`)
//! and keeps only what the answer can hold (`Newest`: the newest
//! `MAX_RECORDS` matches and a count of the older), so a query's memory
//! does not grow with the journal. Of each record it decodes only the
//! head (`journal::Head`: time, service, host, sequence number, borrowed
//! from the payload), which drops repeats and decides whether it answers;
//! a match is kept as its payload and decoded whole only if it is among
//! the newest when the answer is made. The rotated file's newest time is
//! remembered (`Rotated`), so a `--since` query after it reads the current
//! file alone.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::proto::{self, Endpoint, EventKind, ExitInfo, Frame, CHUNK};
use super::store::ConnId;
use crate::journal::{self, Head, Journal, Kind, Record};
use crate::journal_writer::JournalWriter;

/// Queries read at once; one more is refused (the client may retry).
const MAX_QUERIES: usize = 2;
/// The newest records an answer holds at most (some 6 MB); older matches
/// are counted in `older`, and `--since` or a name narrows the query.
pub const MAX_RECORDS: usize = 20_000;
/// How often `finish` looks for a second signal while it waits.
const FINISH_SLICE: Duration = Duration::from_millis(50);

/// What `zurg history --publisher` asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub name: Option<String>,
    /// A host's address or its zurg GPID.
    pub host: Option<String>,
    pub since_us: Option<u64>,
}

pub struct History {
    dir: PathBuf,
    journal: JournalWriter,
    waker: Arc<mio::Waker>,
    tx: Sender<(ConnId, Vec<u8>)>,
    rx: Receiver<(ConnId, Vec<u8>)>,
    running: usize,
    /// What a query learnt of the rotated file, for the next ones.
    rotated: Arc<Mutex<Option<Rotated>>>,
}

/// The rotated file (`journal.1`: renamed once full and never written
/// again) as a query read it whole: which file it was, and its newest
/// record's time. A `--since` query after that time does not read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rotated {
    file: FileId,
    newest_us: u64,
}

/// A file as its metadata tells it apart: a rotation makes a new
/// `journal.1` (another inode), and a file replaced in place changes its
/// size or its modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

impl History {
    /// Opens (or creates) the journal in `dir`.
    pub fn open(dir: &Path, waker: Arc<mio::Waker>) -> Result<History, String> {
        let (journal, warning) =
            Journal::open(dir, journal::DEFAULT_LIMIT).map_err(|e| format!("--journal: {e}"))?;
        if let Some(w) = warning {
            crate::log!("{w}");
        }
        let journal = JournalWriter::start(journal, "publisher-journal", "publisher journal");
        let (tx, rx) = channel();
        Ok(History {
            dir: dir.to_path_buf(),
            journal,
            waker,
            tx,
            rx,
            running: 0,
            rotated: Arc::new(Mutex::new(None)),
        })
    }

    /// Appends one event a host sent (not a resend already applied).
    pub fn record(
        &mut self,
        zurg: &str,
        seq: u64,
        kind: EventKind,
        time_us: u64,
        endpoint: &Endpoint,
        exit: Option<&ExitInfo>,
    ) {
        let record = to_record(zurg, seq, kind, time_us, endpoint, exit);
        self.journal.send(&record);
    }

    /// A relayed control request, as it ended: for host `zurg`, with the
    /// operator key's id and the outcome (`message`: the error's).
    pub fn record_remote(
        &mut self,
        zurg: &str,
        target: String,
        note: crate::journal::RemoteNote,
        message: Option<String>,
    ) {
        let record = remote_record(crate::os::wall_clock_us(), zurg, &target, note, message);
        self.journal.send(&record);
    }

    /// Starts answering `q` for connection `conn`; an error when too many
    /// queries are being read already.
    pub fn query(&mut self, conn: ConnId, q: Query) -> Result<(), String> {
        if self.running >= MAX_QUERIES {
            return Err(format!(
                "{MAX_QUERIES} history queries are being read; try again in a moment"
            ));
        }
        let dir = self.dir.clone();
        let tx = self.tx.clone();
        let waker = Arc::clone(&self.waker);
        let after = self.journal.read_after();
        let rotated = Arc::clone(&self.rotated);
        std::thread::Builder::new()
            .name("history".into())
            .spawn(move || {
                if let Some(behind) = after.wait() {
                    crate::log!(
                        "publisher journal: a history query answered without the newest {behind} record(s): the disk has not taken them"
                    );
                }
                let mut newest = Newest::new(&q);
                // How many files a `--since` spared is for the tests.
                let _ = read_files(&journal::files(&dir), &mut newest, &rotated);
                let bytes = newest.answer();
                let _ = tx.send((conn, bytes));
                let _ = waker.wake();
            })
            .map_err(|e| format!("cannot start a thread to read the journal: {e}"))?;
        self.running = self.running.saturating_add(1);
        Ok(())
    }

    /// As the publisher stops: waits, at most `within`, until every record
    /// queued is on disk, in slices so that `stop` (a second signal) can
    /// cut it short; how many records are not written when it gives up.
    pub fn finish(&mut self, within: Duration, mut stop: impl FnMut() -> bool) -> Option<u64> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.journal.written_within(left.min(FINISH_SLICE)) {
                return None;
            }
            if left.is_zero() || stop() {
                return Some(self.unwritten());
            }
        }
    }

    /// A mark for `reached`: every record recorded so far.
    pub fn mark(&self) -> u64 {
        self.journal.mark()
    }

    /// Whether every record up to `mark` is in the journal (or counted as
    /// lost in a gap record, past the writer's bound).
    pub fn reached(&self, mark: u64) -> bool {
        self.journal.written(mark)
    }

    /// Records queued and not yet on disk.
    pub fn unwritten(&self) -> u64 {
        self.journal.health().queued
    }

    /// Answers ready since the last call: the encoded frames per connection.
    pub fn drain(&mut self) -> Vec<(ConnId, Vec<u8>)> {
        let done: Vec<_> = self.rx.try_iter().collect();
        self.running = self.running.saturating_sub(done.len());
        done
    }
}

fn to_record(
    zurg: &str,
    seq: u64,
    kind: EventKind,
    time_us: u64,
    endpoint: &Endpoint,
    exit: Option<&ExitInfo>,
) -> Record {
    Record {
        time_us,
        service: endpoint.service.clone(),
        kind: match kind {
            EventKind::Start => Kind::Start,
            EventKind::Exit => Kind::Exit,
        },
        gpid: endpoint.gpid.clone(),
        version: endpoint.version.clone(),
        exit: exit.map(|e| crate::control::proto::ExitInfo {
            code: e.code,
            signal: e.signal.clone(),
            ..Default::default()
        }),
        seq: Some(seq),
        zurg: Some(zurg.to_string()),
        ..Record::default()
    }
}

/// Whether a record of `head` answers `q`. A host is its zurg GPID or its
/// address (the GPID's first field). A name is a service's or a unit's
/// with its instances (`web` shows `web@0`, `web@1`, ...): the publisher
/// knows no units, only the names its hosts sent, and an instance's is
/// always `NAME@N` (`journal::of_unit`).
/// `--since` apart.
fn named(head: &Head<'_>, q: &Query) -> bool {
    let host_ok = q.host.as_deref().is_none_or(|h| {
        head.zurg
            .is_some_and(|z| z == h || z.split(':').next() == Some(h))
    });
    host_ok
        && q.name
            .as_deref()
            .is_none_or(|n| journal::of_unit(n, head.service))
}

/// Reads the journal's `files` (oldest first) into `newest`, logging what
/// was wrong with them. Each file but the last is a rotated one, whole and
/// never written again; the newest time of the one read last is in
/// `rotated`, and a `--since` query after it skips that file: a repeat of
/// one of its records in a later file has that record's time, before
/// `--since` too, so nothing answers differently. Unless the query names a
/// service and no later record of it is found: then the skipped file is
/// read after all, to tell an unknown name from one with nothing recent.
/// Returns how many files it did not read.
fn read_files(
    files: &[PathBuf],
    newest: &mut Newest<'_>,
    rotated: &Mutex<Option<Rotated>>,
) -> usize {
    let known = rotated.lock().map(|r| *r).unwrap_or(None);
    let since = newest.q.since_us;
    let mut skipped = Vec::new();
    let last = files.len().saturating_sub(1);
    for (i, path) in files.iter().enumerate() {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                crate::log!("publisher journal: cannot read {}: {e}", path.display());
                continue;
            }
        };
        let id = file.metadata().ok().map(|m| FileId::of(&m));
        if i < last {
            let before_since =
                known.is_some_and(|k| Some(k.file) == id && since.is_some_and(|t| k.newest_us < t));
            if before_since {
                skipped.push((path, file));
                continue;
            }
        }
        let newest_us = read_into(path, file, newest);
        if let (true, Some(file), Some(newest_us)) = (i < last, id, newest_us) {
            if let Ok(mut r) = rotated.lock() {
                *r = Some(Rotated { file, newest_us });
            }
        }
    }
    let mut unread = skipped.len();
    for (path, file) in skipped {
        if newest.named || newest.q.name.is_none() {
            break;
        }
        read_into(path, file, newest);
        unread -= 1;
    }
    unread
}

/// Reads one of the journal's files into `newest`, logging what was wrong
/// with it as `journal::read_file` says it; the newest time of its
/// records, if it could be read to its end (a damaged record is skipped
/// by every reader, a failed read is not the whole file).
fn read_into(path: &Path, file: File, newest: &mut Newest<'_>) -> Option<u64> {
    let mut reader = journal::FileReader::new(file, None);
    let mut newest_us = 0u64;
    let failed = reader
        .each_payload(|payload| {
            newest
                .offer_payload(payload)
                .map(|t| newest_us = newest_us.max(t))
                .is_some()
        })
        .err()
        .map(|e| format!("cannot read {}: {e}", path.display()));
    let whole = failed.is_none();
    let warning = failed.or_else(|| {
        reader
            .finish()
            .warning
            .map(|w| format!("{}: {w}", path.display()))
    });
    if let Some(w) = warning {
        crate::log!("publisher journal: {w}");
    }
    whole.then_some(newest_us)
}

/// What an answer to `q` holds, gathered a record at a time, oldest
/// first: the newest `MAX_RECORDS` matches, and how many older matches
/// were left out. A record the publisher holds twice (an etcd publisher
/// that wrote a resend before its mirror caught up) is counted once.
pub struct Newest<'q> {
    q: &'q Query,
    /// Each kept record as its journal payload (its JSON): a third of the
    /// decoded record's memory (release build: 21 MB of peak RSS for a
    /// full answer kept as records, docs/performance.md), and no decoding
    /// for a record a newer one pushes out.
    kept: VecDeque<Box<[u8]>>,
    older: u64,
    /// A record matched but for `--since`.
    named: bool,
    /// Each host's sequence numbers seen so far, as ranges: a host's are
    /// consecutive, so this stays a range or a few per host however long
    /// the journal. Every record is offered to it before the query's
    /// filters, as a repeat is the same event and matches as its first
    /// copy did, and so that a query for one name does not leave a range
    /// per record.
    seen: HashMap<String, Ranges>,
}

impl<'q> Newest<'q> {
    pub fn new(q: &'q Query) -> Newest<'q> {
        Newest {
            q,
            kept: VecDeque::new(),
            older: 0,
            named: false,
            seen: HashMap::new(),
        }
    }

    /// Takes the journal's next record.
    pub fn offer(&mut self, r: Record) {
        if let Ok(payload) = serde_json::to_vec(&r) {
            self.offer_payload(&payload);
        }
    }

    /// Takes the journal's next record as its payload; its time, or
    /// `None` when it is not a record. Only its `Head` is decoded: the few fields that drop a
    /// repeat and decide whether it answers the query. A record kept is
    /// kept as its payload and decoded whole only if it is still among the
    /// newest when the answer is made.
    pub fn offer_payload(&mut self, payload: &[u8]) -> Option<u64> {
        let mut spill = None;
        let head = Head::of(payload, &mut spill)?;
        let time = Some(head.time_us);
        if let (Some(z), Some(seq)) = (head.zurg, head.seq) {
            let fresh = match self.seen.get_mut(z) {
                Some(ranges) => ranges.insert(seq),
                None => {
                    let mut ranges = Ranges::default();
                    ranges.insert(seq);
                    self.seen.insert(z.to_string(), ranges);
                    true
                }
            };
            if !fresh {
                return time;
            }
        }
        if !named(&head, self.q) {
            return time;
        }
        self.named = true;
        if self.q.since_us.is_some_and(|t| head.time_us < t) {
            return time;
        }
        if self.kept.len() >= MAX_RECORDS {
            self.kept.pop_front();
            self.older = self.older.saturating_add(1);
        }
        self.kept.push_back(payload.into());
        time
    }

    /// The frames: `records` chunks, the first with how many older
    /// matches were left out, then `synced`.
    pub fn answer(self) -> Vec<u8> {
        let (mut kept, mut older) = (self.kept, self.older);
        let mut unknown_name = self.q.name.is_some() && !self.named;
        let mut out = Vec::new();
        loop {
            // A chunk's records are dropped once encoded: the answer's
            // bytes take their place rather than adding to them.
            let n = kept.len().min(CHUNK);
            // Through `Record`, as the answer always went: a field or a
            // kind this zurg does not know reads as it does everywhere.
            let records: Vec<_> = kept
                .drain(..n)
                .filter_map(|payload| serde_json::from_slice::<Record>(&payload).ok())
                .filter_map(|r| serde_json::to_value(r).ok())
                .collect();
            // Its head read, its checksum held, yet not a record: no
            // zurg writes one, so it is said, not answered.
            let unreadable = n.saturating_sub(records.len());
            if unreadable > 0 {
                crate::log!(
                    "publisher journal: {unreadable} record(s) whose checksum holds could not be read; left out of a history answer"
                );
            }
            proto::encode(
                &Frame::Records {
                    records,
                    older,
                    unknown_name,
                },
                &mut out,
            );
            older = 0;
            unknown_name = false;
            if kept.is_empty() {
                break;
            }
        }
        proto::encode(&Frame::Synced, &mut out);
        out
    }
}

/// A set of numbers kept as disjoint inclusive ranges, start -> end.
#[derive(Debug, Default)]
struct Ranges(BTreeMap<u64, u64>);

impl Ranges {
    /// Adds `n`; whether it was not there yet.
    fn insert(&mut self, n: u64) -> bool {
        let below = self.0.range(..=n).next_back().map(|(s, e)| (*s, *e));
        if below.is_some_and(|(_, e)| e >= n) {
            return false;
        }
        let above = n
            .checked_add(1)
            .and_then(|a| self.0.get(&a).map(|e| (a, *e)));
        let start = match below {
            Some((s, e)) if e.checked_add(1) == Some(n) => s,
            _ => n,
        };
        let end = match above {
            Some((a, e)) => {
                self.0.remove(&a);
                e
            }
            None => n,
        };
        self.0.insert(start, end);
        true
    }
}

/// The frames answering `q` from `records` (oldest first), as `Newest`
/// gathers them.
pub fn answer(records: Vec<Record>, q: &Query) -> Vec<u8> {
    let mut newest = Newest::new(q);
    for r in records {
        newest.offer(r);
    }
    newest.answer()
}

/// A relayed request's journal record. Each text in it is escaped and
/// bounded (`safe_text::bounded`) whoever supplied it: the error text
/// comes from the host (`session::relayed_answer` bounded it already, or
/// the publisher wrote it), the names and the host's name from the
/// operator (their frame's fields are bounded, but not their number).
fn remote_record(
    time_us: u64,
    zurg: &str,
    target: &str,
    note: crate::journal::RemoteNote,
    message: Option<String>,
) -> Record {
    use crate::safe_text::bounded;
    Record {
        time_us,
        service: bounded(target, proto::MAX_JOURNALED_TARGET).into_owned(),
        kind: Kind::RemoteRequest,
        zurg: Some(bounded(zurg, proto::Field::HostRef.max()).into_owned()),
        remote: Some(note),
        reason: message.map(|m| bounded(&m, proto::MAX_RELAYED_ERROR).into_owned()),
        ..Record::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_record_keeps_bounded_escaped_text() {
        let note = crate::journal::RemoteNote {
            operator: "op:0123456789ab".into(),
            verb: crate::control::proto::RemoteVerb::Restart,
            ok: false,
            error: Some(crate::control::proto::ErrorCode::Failed),
        };
        let names = vec!["s".repeat(69); 900].join(",");
        let message = format!("\u{1b}]0;owned\u{7}{}", "x".repeat(60_000));
        let r = remote_record(5, "10.0.0.1:0:1:1", &names, note.clone(), Some(message));
        assert!(r.service.len() <= proto::MAX_JOURNALED_TARGET);
        assert!(r
            .service
            .ends_with(&format!(" …[cut: {} bytes]", names.len())));
        let reason = r.reason.unwrap();
        assert!(reason.len() <= proto::MAX_RELAYED_ERROR, "{}", reason.len());
        assert!(reason.starts_with("\\x1b]0;owned\\x07xxx"), "{reason}");
        assert!(!reason.chars().any(char::is_control), "{reason}");
        let plain = remote_record(5, "10.0.0.1:0:1:1", "api", note, Some("no".into()));
        assert_eq!(
            (plain.service.as_str(), plain.reason.as_deref()),
            ("api", Some("no"))
        );
    }

    fn rec(zurg: &str, seq: u64, service: &str, t: u64) -> Record {
        let ep = Endpoint {
            service: service.into(),
            ip: zurg.split(':').next().unwrap().into(),
            port: 80,
            gpid: format!("g{seq}"),
            version: Some("1.0".into()),
            since_us: t,
            host: String::new(),
        };
        let exit = ExitInfo {
            code: Some(3),
            signal: None,
        };
        to_record(zurg, seq, EventKind::Exit, t, &ep, Some(&exit))
    }

    /// The records of every `records` frame of an answer, in order.
    fn records_in(frames: &[Frame]) -> Vec<serde_json::Value> {
        frames
            .iter()
            .flat_map(|f| match f {
                Frame::Records { records, .. } => records.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    fn decode(bytes: &[u8]) -> Vec<Frame> {
        let mut d = proto::Decoder::new(proto::MAX_FRAME);
        d.feed(bytes);
        std::iter::from_fn(|| d.next_frame().ok().flatten()).collect()
    }

    const A: &str = "10.0.0.1:0:100:1";
    const B: &str = "10.0.0.2:0:100:1";

    #[test]
    fn answers_filter_by_host_name_and_time_and_drop_repeats() {
        let all = vec![
            rec(A, 1, "web", 10),
            rec(B, 1, "web", 20),
            rec(A, 2, "db", 30),
            rec(A, 2, "db", 30),
            rec(B, 2, "web", 40),
        ];
        let got = |q: Query| -> Vec<(String, u64)> {
            records_in(&decode(&answer(all.clone(), &q)))
                .into_iter()
                .map(|v| {
                    (
                        v["zurg"].as_str().unwrap().to_string(),
                        v["time_us"].as_u64().unwrap(),
                    )
                })
                .collect()
        };
        assert_eq!(got(Query::default()).len(), 4);
        let web = Query {
            name: Some("web".into()),
            ..Query::default()
        };
        assert_eq!(got(web).len(), 3);
        let on_b = Query {
            host: Some("10.0.0.2".into()),
            ..Query::default()
        };
        assert_eq!(got(on_b), [(B.into(), 20), (B.into(), 40)]);
        let by_gpid = Query {
            host: Some(A.into()),
            since_us: Some(15),
            ..Query::default()
        };
        assert_eq!(got(by_gpid), [(A.into(), 30)]);
        let frames = decode(&answer(Vec::new(), &Query::default()));
        assert_eq!(
            frames,
            [
                Frame::Records {
                    records: Vec::new(),
                    older: 0,
                    unknown_name: false,
                },
                Frame::Synced
            ]
        );
    }

    #[test]
    fn a_name_shows_its_instances_and_says_when_the_journal_has_none_of_it() {
        let all = vec![
            rec(A, 1, "web@0", 10),
            rec(A, 2, "web@1", 20),
            rec(A, 3, "web", 25),
            rec(A, 4, "webby", 30),
            rec(A, 5, "web@x", 35),
            rec(B, 1, "web@2", 40),
        ];
        let ask = |name: &str, host: Option<&str>, since_us: Option<u64>| {
            let q = Query {
                name: Some(name.into()),
                host: host.map(str::to_string),
                since_us,
            };
            let frames = decode(&answer(all.clone(), &q));
            let Some(Frame::Records { unknown_name, .. }) = frames.first() else {
                panic!("{frames:?}");
            };
            let names: Vec<String> = records_in(&frames)
                .into_iter()
                .map(|v| v["service"].as_str().unwrap().to_string())
                .collect();
            (names, *unknown_name)
        };
        let (web, unknown) = ask("web", None, None);
        assert_eq!(web, ["web@0", "web@1", "web", "web@2"]);
        assert!(!unknown);
        assert_eq!(ask("web@1", None, None), (vec!["web@1".to_string()], false));
        assert_eq!(
            ask("web", None, Some(50)),
            (Vec::new(), false),
            "only --since"
        );
        assert_eq!(ask("nosuch", None, None), (Vec::new(), true));
        assert_eq!(ask("webby", Some("10.0.0.2"), None), (Vec::new(), true));
        let (all_names, unknown) = decode(&answer(all.clone(), &Query::default()))
            .first()
            .map(|f| match f {
                Frame::Records {
                    records,
                    unknown_name,
                    ..
                } => (records.len(), *unknown_name),
                _ => (0, true),
            })
            .unwrap();
        assert_eq!((all_names, unknown), (6, false), "no name, nothing unknown");
    }

    #[test]
    fn ranges_say_once_whether_a_number_is_new() {
        let mut r = Ranges::default();
        for (n, new) in [
            (5, true),
            (7, true),
            (5, false),
            (6, true),
            (7, false),
            (4, true),
            (9, true),
            (8, true),
            (u64::MAX, true),
            (u64::MAX, false),
            (0, true),
        ] {
            assert_eq!(r.insert(n), new, "{n}");
        }
        // 4..=9 became one range.
        assert_eq!(
            r.0.into_iter().collect::<Vec<_>>(),
            [(0, 0), (4, 9), (u64::MAX, u64::MAX)]
        );
    }

    #[test]
    fn a_repeat_far_from_its_first_copy_is_still_dropped() {
        let mut all: Vec<Record> = (1..=1000).map(|i| rec(A, i, "web", i)).collect();
        all.push(rec(A, 3, "web", 3));
        all.push(rec(B, 3, "web", 3));
        let frames = decode(&answer(all, &Query::default()));
        let total = records_in(&frames).len();
        assert_eq!(total, 1001);
    }

    /// `records` framed into `dir/name`.
    fn write_file(dir: &Path, name: &str, records: &[Record]) {
        let bytes: Vec<u8> = records.iter().flat_map(journal::frame).collect();
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    /// What `q` reads from `dir` as a query thread does, with the
    /// rotated file's times `known`: the answer's frames and how many
    /// files it left unread.
    fn query_dir(dir: &Path, q: &Query, known: &Mutex<Option<Rotated>>) -> (Vec<Frame>, usize) {
        let mut newest = Newest::new(q);
        let unread = read_files(&journal::files(dir), &mut newest, known);
        (decode(&newest.answer()), unread)
    }

    fn times(frames: &[Frame]) -> Vec<u64> {
        records_in(frames)
            .iter()
            .map(|v| v["time_us"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn a_since_query_skips_the_rotated_file_once_its_times_are_known() {
        let tmp = crate::test_dir::TestDir::new("pubhist-since");
        let dir = tmp.path();
        let old: Vec<Record> = (1..=10).map(|i| rec(A, i, "web", i)).collect();
        write_file(
            dir,
            "journal.1",
            &[old.clone(), vec![rec(B, 1, "db", 20)]].concat(),
        );
        // A repeat of an old record (its time: before any --since that
        // skips the old file) among the new ones.
        let new = vec![
            rec(A, 11, "web", 100),
            rec(A, 3, "web", 3),
            rec(A, 12, "web", 110),
        ];
        write_file(dir, "journal", &new);
        let known = Mutex::new(None);
        let since = |t: u64, name: Option<&str>| Query {
            name: name.map(str::to_string),
            since_us: Some(t),
            ..Query::default()
        };
        // Nothing known yet: both files read, and the old one's times
        // kept.
        let (frames, unread) = query_dir(dir, &since(50, None), &known);
        assert_eq!((times(&frames), unread), (vec![100, 110], 0));
        assert_eq!(known.lock().unwrap().map(|k| k.newest_us), Some(20));
        // Now the old file is skipped, and the answer is the same.
        let (again, unread) = query_dir(dir, &since(50, None), &known);
        assert_eq!((again, unread), (frames, 1));
        // --since reaching into it reads it.
        let (frames, unread) = query_dir(dir, &since(15, None), &known);
        assert_eq!((times(&frames), unread), (vec![20, 100, 110], 0));
        // A name with nothing recent is read for in the old file: known
        // there, the answer is empty, not an unknown name.
        let (frames, unread) = query_dir(dir, &since(50, Some("db")), &known);
        assert_eq!(unread, 0);
        assert!(matches!(
            frames.first(),
            Some(Frame::Records { records, unknown_name: false, .. }) if records.is_empty()
        ));
        let (frames, _) = query_dir(dir, &since(50, Some("nosuch")), &known);
        assert!(matches!(
            frames.first(),
            Some(Frame::Records {
                unknown_name: true,
                ..
            })
        ));
        // A name found in the new file needs the old one no more.
        let (frames, unread) = query_dir(dir, &since(50, Some("web")), &known);
        assert_eq!((times(&frames), unread), (vec![100, 110], 1));
        // A rotation makes another journal.1: read, whatever was known.
        write_file(dir, "journal.1.new", &[rec(B, 2, "db", 60)]);
        std::fs::rename(dir.join("journal.1.new"), dir.join("journal.1")).unwrap();
        let (frames, unread) = query_dir(dir, &since(50, None), &known);
        assert_eq!((times(&frames), unread), (vec![60, 100, 110], 0));
        assert_eq!(known.lock().unwrap().map(|k| k.newest_us), Some(60));
    }

    #[test]
    fn a_record_is_kept_as_the_journal_wrote_it_and_answered_as_before() {
        // The answer decodes what it keeps through `Record`: a field this
        // zurg does not know is dropped and an unknown kind reads `other`,
        // as when every record was decoded whole.
        let tmp = crate::test_dir::TestDir::new("pubhist-payload");
        let dir = tmp.path();
        let newer = br#"{"time_us":5,"service":"web","kind":"hibernated","gpid":"g","seq":1,"zurg":"10.0.0.1:0:100:1","future":{"x":1}}"#;
        // Its head reads, the record does not (a kind is a word): left
        // out, as when it was skipped as damage.
        let broken = br#"{"time_us":5,"service":"web","kind":7,"gpid":"g","seq":9,"zurg":"10.0.0.1:0:100:1"}"#;
        let mut bytes = Vec::new();
        for payload in [&newer[..], &broken[..]] {
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&journal::crc32(payload).to_le_bytes());
            bytes.extend_from_slice(payload);
        }
        bytes.extend(journal::frame(&rec(A, 2, "web", 6)));
        std::fs::write(dir.join("journal"), bytes).unwrap();
        let (frames, _) = query_dir(dir, &Query::default(), &Mutex::new(None));
        let got = records_in(&frames);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["kind"], "other");
        assert!(got[0].get("future").is_none(), "{}", got[0]);
        assert_eq!(got[1], serde_json::to_value(rec(A, 2, "web", 6)).unwrap());
    }

    #[test]
    fn records_keep_the_exit_the_host_and_its_seq() {
        let r = rec(A, 7, "web", 5);
        assert_eq!(r.kind, Kind::Exit);
        assert_eq!(r.seq, Some(7));
        assert_eq!(r.zurg.as_deref(), Some(A));
        assert_eq!(r.exit.as_ref().and_then(|e| e.code), Some(3));
        assert_eq!(r.version.as_deref(), Some("1.0"));
    }

    #[test]
    fn an_answer_holds_the_newest_records_and_counts_the_older() {
        let all: Vec<Record> = (0..(MAX_RECORDS as u64 + 5))
            .map(|i| rec(A, i + 1, "web", i))
            .collect();
        let frames = decode(&answer(all, &Query::default()));
        let Some(Frame::Records { older, records, .. }) = frames.first() else {
            panic!("{frames:?}");
        };
        assert_eq!(*older, 5);
        assert_eq!(records[0]["time_us"], 5);
        let total = records_in(&frames).len();
        assert_eq!(total, MAX_RECORDS);
        assert_eq!(frames.last(), Some(&Frame::Synced));
    }
}
