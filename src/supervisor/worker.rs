//! Two helper threads for work that must not block the event loop: one
//! reads the journal for `history`; the other samples /proc for `stats`,
//! reads and parses unit files for a reload, and hashes the binary of an
//! `upgrade`. Apart, so that a journal on a disk that hangs holds up
//! history and nothing else.
//!
//! Jobs go in through a channel per thread; results come back through one
//! shared channel, and a mio `Waker` (token `WORKER_TOKEN`) wakes the loop
//! to collect them. A thread owns no supervisor state: it gets what it needs in the job (a
//! directory, pids) and returns plain data, which the loop applies.
//!
//! A `history` reply is streamed: the thread reads the journal a record at
//! a time (`journal::FileReader`, the journal's walker on a bounded window
//! of the file) and produces the reply line in chunks of about `CHUNK`
//! bytes, one chunk per `More` from the loop, which asks only once the
//! connection has sent the previous one. So a reply of any size holds at most a chunk or
//! two per connection, and the control server caps how many such replies
//! run at once; a client that stops reading stalls only its own reply.
//! The thread never waits on a client.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use mio::{Registry, Token, Waker};

use crate::control::proto::{ErrorCode, Reply};
use crate::control::server::ConnId;
use crate::journal::{self, Record};
use crate::stats::Sample;
use crate::version::{Checksum, FileId};

use super::upgrade::UpgradeTicket;

/// The loop's token for "the worker has results".
pub const WORKER_TOKEN: Token = Token(super::reactor::PIDFD_BASE - 3);
/// About this many bytes of a streamed reply per chunk.
pub const CHUNK: usize = 64 * 1024;

/// Work for the thread.
#[derive(Debug)]
pub enum Job {
    /// Start streaming the `history` reply for request `id` on `conn`.
    History {
        conn: ConnId,
        id: u64,
        state_dir: PathBuf,
        wanted: Option<journal::Wanted>,
        /// Whether the name is a service or unit zurg runs: when not, a
        /// name no record matches either is an error, not an empty list.
        known: bool,
        since_us: Option<u64>,
        /// The records the loop sent before the request, which the reply
        /// must hold.
        after: crate::journal_writer::ReadAfter,
    },
    /// The next chunk of `conn`'s history reply.
    More { conn: ConnId },
    /// `conn` closed: drop its reply.
    Cancel { conn: ConnId },
    /// Read and parse the units directory for a reload; the report goes to
    /// `reply_to` once applied.
    LoadUnits {
        dir: PathBuf,
        reply_to: Option<(ConnId, u64)>,
        /// Read overrides.json too (with a deadline), unless the loop
        /// keeps its own.
        overrides: Option<super::overrides_read::Shared>,
        /// The loop's save number when it asked: a read that a later save
        /// overtook is dropped.
        overrides_seq: u64,
    },
    /// Open and hash the binary of an upgrade.
    Verify {
        path: PathBuf,
        want: Checksum,
        ticket: Box<UpgradeTicket>,
    },
    /// Hash the binary a checksummed service is about to run (its digest
    /// is not known for the file as it is now).
    Digest {
        slot: usize,
        generation: u64,
        path: PathBuf,
        want: Checksum,
    },
    /// Sample each `(slot, pid)` and its process tree, or its cgroup when
    /// it has one.
    Stats {
        conn: ConnId,
        id: u64,
        targets: Vec<(usize, i32, Option<PathBuf>)>,
        now_ms: u64,
    },
}

/// A result for the loop.
#[derive(Debug)]
pub enum Done {
    /// Bytes of a reply line for `conn`; `last` ends it.
    Chunk {
        conn: ConnId,
        bytes: Vec<u8>,
        last: bool,
    },
    /// Samples of the processes asked for; the ones gone are left out.
    Stats {
        conn: ConnId,
        id: u64,
        rows: Vec<(usize, i32, Sample, Sample)>,
    },
    /// The binary of an upgrade, checked: its identity and digest, or why
    /// it is refused.
    Verified {
        ticket: Box<UpgradeTicket>,
        result: Result<(FileId, Checksum), String>,
    },
    /// The binary of `Job::Digest`: its identity and digest, whether or
    /// not it matches, or why it could not be read.
    Digested {
        slot: usize,
        generation: u64,
        result: Result<(FileId, Checksum), crate::version::VerifyError>,
    },
    /// The units directory, read and parsed, to apply on the loop.
    Loaded {
        loaded: crate::unit::LoadReport,
        reply_to: Option<(ConnId, u64)>,
        overrides: Option<super::overrides_read::Outcome>,
        overrides_seq: u64,
    },
    /// A line for zurg's log.
    Log(String),
}

/// The loop's handle on the threads: `history` reads the journal, the
/// other thread does the rest. A journal on a disk that hangs then holds
/// up history alone, not a reload, an upgrade's hash or `stats` queued
/// behind it.
#[derive(Debug)]
pub struct Worker {
    jobs: Sender<Job>,
    /// `None` when the history thread could not be started: its jobs go
    /// to the other thread.
    history: Option<Sender<Job>>,
    done: Receiver<Done>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot create the worker's waker: {0}")]
    Waker(#[source] io::Error),
    #[error("cannot start the worker thread: {0}")]
    Spawn(#[source] io::Error),
}

impl Worker {
    pub fn start(registry: &Registry) -> Result<Worker, WorkerError> {
        let waker = Arc::new(Waker::new(registry, WORKER_TOKEN).map_err(WorkerError::Waker)?);
        let (jobs, job_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let (history_tx, history_rx) = mpsc::channel();
        let (history_done, history_waker) = (done_tx.clone(), Arc::clone(&waker));
        std::thread::Builder::new()
            .name("zurg-worker".into())
            .spawn(move || run(&job_rx, &done_tx, &waker))
            .map_err(WorkerError::Spawn)?;
        let history = match std::thread::Builder::new()
            .name("zurg-history".into())
            .spawn(move || run(&history_rx, &history_done, &history_waker))
        {
            Ok(_) => Some(history_tx),
            Err(e) => {
                crate::log!("warning: cannot start the history thread ({e}); history is read beside reloads and stats");
                None
            }
        };
        Ok(Worker {
            jobs,
            history,
            done,
        })
    }

    /// Hands `job` to its thread; false if the thread is gone.
    pub fn submit(&self, job: Job) -> bool {
        match (&job, &self.history) {
            (Job::History { .. } | Job::More { .. } | Job::Cancel { .. }, Some(history)) => {
                history.send(job).is_ok()
            }
            _ => self.jobs.send(job).is_ok(),
        }
    }

    /// Hands request `id`'s `job` to the thread: `None` when the thread
    /// will answer it, else the reply saying it is gone.
    pub fn submit_request(&self, id: u64, job: Job) -> Option<Reply> {
        (!self.submit(job)).then(|| gone(id))
    }

    /// Results so far, without waiting.
    pub fn results(&self) -> Vec<Done> {
        self.done.try_iter().collect()
    }
}

/// The reply to request `id` when the worker thread is gone.
pub fn gone(id: u64) -> Reply {
    Reply::error(id, ErrorCode::Failed, "zurg's worker thread is gone")
}

fn run(jobs: &Receiver<Job>, done: &Sender<Done>, waker: &Waker) {
    let mut streams: HashMap<ConnId, History> = HashMap::new();
    while let Ok(job) = jobs.recv() {
        let mut out = Vec::new();
        match job {
            Job::History {
                conn,
                id,
                state_dir,
                wanted,
                known,
                since_us,
                after,
            } => {
                if let Some(behind) = after.wait() {
                    out.push(Done::Log(format!(
                        "warning: history answered without the newest {behind} record(s): the journal's disk has not taken them within {} ms",
                        crate::journal_writer::READ_WAIT.as_millis()
                    )));
                }
                let mut h = History::new(id, &state_dir, wanted, known, since_us);
                let (bytes, last) = h.next_chunk(&mut out);
                if !last {
                    streams.insert(conn, h);
                }
                out.push(Done::Chunk { conn, bytes, last });
            }
            Job::More { conn } => {
                if let Some(h) = streams.get_mut(&conn) {
                    let (bytes, last) = h.next_chunk(&mut out);
                    if last {
                        streams.remove(&conn);
                    }
                    out.push(Done::Chunk { conn, bytes, last });
                }
            }
            Job::Cancel { conn } => {
                streams.remove(&conn);
            }
            Job::LoadUnits {
                dir,
                reply_to,
                overrides,
                overrides_seq,
            } => {
                let loaded = crate::unit::load_dir(&dir);
                // Waits up to the deadline on a hung state disk: history
                // and stats wait behind it, the loop does not.
                let overrides = overrides.map(|r| {
                    super::overrides_read::read_shared(&r, super::overrides_read::DEADLINE)
                });
                out.push(Done::Loaded {
                    loaded,
                    reply_to,
                    overrides,
                    overrides_seq,
                });
            }
            Job::Verify { path, want, ticket } => {
                let result = crate::version::open_verified(&path, &want, None)
                    .map(|v| (v.id, v.actual))
                    .map_err(|e| e.to_string());
                out.push(Done::Verified { ticket, result });
            }
            Job::Digest {
                slot,
                generation,
                path,
                want,
            } => {
                let result = crate::version::identify(&path, &want);
                out.push(Done::Digested {
                    slot,
                    generation,
                    result,
                });
            }
            Job::Stats {
                conn,
                id,
                targets,
                now_ms,
            } => {
                let rows = targets
                    .into_iter()
                    .filter_map(|(slot, pid, cgroup)| {
                        let (process, tree) = sample_service(pid, cgroup.as_deref(), now_ms)?;
                        Some((slot, pid, process, tree))
                    })
                    .collect();
                out.push(Done::Stats { conn, id, rows });
            }
        }
        for d in out {
            if done.send(d).is_err() {
                return;
            }
        }
        // A failed wake leaves the results for the next wake-up.
        let _ = waker.wake();
    }
}

/// One streamed `history` reply: the journal files still to read, the
/// one being read (a record at a time, by the journal's own reader) and
/// what the reply line has reached.
#[derive(Debug)]
struct History {
    id: u64,
    files: std::vec::IntoIter<PathBuf>,
    file: Option<(PathBuf, journal::FileReader)>,
    /// Spares decoding the records of other services.
    only: Option<journal::Only>,
    wanted: Option<journal::Wanted>,
    /// An empty answer is an answer (see `Job::History`); else the reply
    /// line begins only with the first record of the name, at any time.
    known: bool,
    since_us: Option<u64>,
    started: bool,
    first_record: bool,
}

impl History {
    fn new(
        id: u64,
        dir: &Path,
        wanted: Option<journal::Wanted>,
        known: bool,
        since_us: Option<u64>,
    ) -> History {
        History {
            id,
            files: journal::files(dir).into_iter(),
            file: None,
            only: wanted.as_ref().map(journal::Only::service),
            known: known || wanted.is_none(),
            wanted,
            since_us,
            started: false,
            first_record: true,
        }
    }

    fn begin(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            // Exactly what `Reply::ok(id, records)` encodes to.
            out.extend_from_slice(
                format!("{{\"id\":{},\"ok\":true,\"result\":[", self.id).as_bytes(),
            );
        }
    }

    /// The next piece of the reply line, and whether it is the last.
    fn next_chunk(&mut self, log: &mut Vec<Done>) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(CHUNK + 4096);
        if self.known {
            self.begin(&mut out);
        }
        // Until it begins, `out` stays empty however many records are
        // read: the whole journal, for a name it holds nothing of.
        while out.len() < CHUNK {
            let Some(r) = self.next_record(log) else {
                if !self.started {
                    let name = self.wanted.as_ref().map_or("", |w| w.name());
                    let why = format!(
                        "no service named `{name}`, and the journal holds no record of it (zurg status lists the services)"
                    );
                    let reply = Reply::error(self.id, ErrorCode::UnknownService, why);
                    return (crate::control::proto::encode_reply(&reply), true);
                }
                out.extend_from_slice(b"]}\n");
                return (out, true);
            };
            if self.wanted.as_ref().is_some_and(|w| !w.matches(&r.service)) {
                continue;
            }
            self.begin(&mut out);
            if self.since_us.is_some_and(|t| r.time_us < t) {
                continue;
            }
            if !self.first_record {
                out.push(b',');
            }
            self.first_record = false;
            if serde_json::to_writer(&mut out, &r).is_err() {
                log.push(Done::Log("history: cannot encode a record".into()));
            }
        }
        (out, false)
    }

    /// The next record of the journal's files, oldest first; `None` at the
    /// end of them all. Damage is skipped and logged as `journal::read_all`
    /// reports it, a torn last record included.
    fn next_record(&mut self, log: &mut Vec<Done>) -> Option<Record> {
        loop {
            let Some((path, reader)) = &mut self.file else {
                let path = self.files.next()?;
                match File::open(&path) {
                    Ok(f) => {
                        self.file = Some((path, journal::FileReader::new(f, self.only.clone())))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => log.push(Done::Log(format!(
                        "warning: cannot read {}: {e}",
                        path.display()
                    ))),
                }
                continue;
            };
            match reader.next_record() {
                Ok(Some(r)) => return Some(r),
                Ok(None) => {}
                Err(e) => log.push(Done::Log(format!(
                    "warning: cannot read {}: {e}",
                    path.display()
                ))),
            }
            if let Some((path, reader)) = self.file.take() {
                if let Some(w) = reader.finish().warning {
                    log.push(Done::Log(format!("warning: {}: {w}", path.display())));
                }
            }
        }
    }
}

/// A service's main process and its whole: read from its cgroup when it
/// has one with the memory controller (a few reads), else by walking its
/// process tree in /proc.
pub(super) fn sample_service(
    pid: i32,
    cgroup: Option<&std::path::Path>,
    now_ms: u64,
) -> Option<(Sample, Sample)> {
    let process = crate::stats::sample_pid(pid, now_ms)?;
    let tree = match cgroup.and_then(|dir| crate::cgroup::tree::sample(dir, now_ms)) {
        Some(whole) => whole,
        None => crate::stats::tree_from(pid, process.clone()),
    };
    Some((process, tree))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::tests::rec;

    /// One record's JSON is far below this.
    const MAX_RECORD_GUESS: usize = 4096;

    /// The streamed reply is byte for byte what the whole one was.
    #[test]
    fn streamed_history_equals_the_whole_reply() {
        let dir = std::env::temp_dir().join(format!("zurg-worker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (mut j, _) = journal::Journal::open(&dir, 400_000).unwrap();
        for i in 0..5000 {
            assert!(matches!(j.append(&rec(i)), journal::Appended::Written));
        }
        for (name, since) in [(None, None), (Some("s1"), Some(3000))] {
            let wanted = name.map(|n| journal::Wanted::Exactly(n.into()));
            let (all, _) = journal::read_all(&dir);
            let want = crate::control::proto::encode_reply(&crate::control::proto::Reply::ok(
                7,
                journal::filter(all, wanted.as_ref(), since),
            ));
            let mut h = History::new(7, &dir, wanted, true, since);
            let mut got = Vec::new();
            let mut log = Vec::new();
            let mut chunks = 0;
            loop {
                let (bytes, last) = h.next_chunk(&mut log);
                assert!(bytes.len() < CHUNK + MAX_RECORD_GUESS);
                got.extend(bytes);
                chunks += 1;
                if last {
                    break;
                }
            }
            assert!(log.is_empty(), "{log:?}");
            assert!(name.is_some() || chunks > 4, "{chunks}");
            assert_eq!(
                String::from_utf8(got).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A name zurg does not run answers with its records when the journal
    /// holds some (at any time: `--since` may leave none), else an error.
    #[test]
    fn an_unknown_name_without_records_is_an_error() {
        let dir = std::env::temp_dir().join(format!("zurg-worker-unknown-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (mut j, _) = journal::Journal::open(&dir, 400_000).unwrap();
        for i in 0..300 {
            let mut r = rec(i);
            r.service = format!("{}@{}", r.service, i % 2);
            assert!(matches!(j.append(&r), journal::Appended::Written));
        }
        let whole = |name: &str, since: Option<u64>| {
            let mut h = History::new(
                7,
                &dir,
                Some(journal::Wanted::Unit(name.into())),
                false,
                since,
            );
            let (mut got, mut log) = (Vec::new(), Vec::new());
            loop {
                let (bytes, last) = h.next_chunk(&mut log);
                got.extend(bytes);
                if last {
                    break;
                }
            }
            crate::control::proto::decode_reply(&got).unwrap()
        };
        let gone = whole("s3", None);
        assert_eq!(
            gone.error.as_ref().map(|e| e.code),
            Some(ErrorCode::UnknownService)
        );
        assert!(gone.error.unwrap().message.contains("`s3`"));
        let removed = whole("s1", None);
        let rows = removed.result.unwrap().to_value();
        assert_eq!(rows.as_array().unwrap().len(), 100, "s1@0 and s1@1");
        let quiet = whole("s1", Some(u64::MAX));
        assert_eq!(quiet.result.unwrap().to_value(), serde_json::json!([]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The whole streamed reply for `name` and `since`, and what it logged.
    fn stream(dir: &Path, name: Option<&str>, since: Option<u64>) -> (String, Vec<String>) {
        let wanted = name.map(|n| journal::Wanted::Exactly(n.into()));
        let mut h = History::new(7, dir, wanted, true, since);
        let mut got = Vec::new();
        let mut log = Vec::new();
        loop {
            let (bytes, last) = h.next_chunk(&mut log);
            got.extend(bytes);
            if last {
                break;
            }
        }
        let log = log
            .into_iter()
            .map(|d| match d {
                Done::Log(line) => line,
                other => panic!("{other:?}"),
            })
            .collect();
        (String::from_utf8(got).unwrap(), log)
    }

    /// Damage in the older file, a torn record at the end of the newer:
    /// the streamed reply holds every record the whole read does, from
    /// both files, and logs what that read warns of.
    #[test]
    fn streamed_history_skips_damage_as_the_whole_read_does() {
        let dir = std::env::temp_dir().join(format!("zurg-worker-damage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let old: Vec<u8> = (0..3000).flat_map(|i| journal::frame(&rec(i))).collect();
        let mut bad = old.clone();
        // Within the first of the reader's chunks, so records of that
        // chunk and every later one follow the damage.
        bad[1000] ^= 0x40;
        std::fs::write(dir.join("journal.1"), &bad).unwrap();
        let mut new: Vec<u8> = (3000..4000).flat_map(|i| journal::frame(&rec(i))).collect();
        let torn = journal::frame(&rec(4000));
        new.extend(&torn[..torn.len() / 2]);
        std::fs::write(dir.join("journal"), &new).unwrap();
        for (name, since) in [(None, None), (Some("s1"), Some(3500))] {
            let (all, warnings) = journal::read_all(&dir);
            assert_eq!(warnings.len(), 2, "{warnings:?}");
            let wanted = name.map(|n| journal::Wanted::Exactly(n.into()));
            let records = journal::filter(all, wanted.as_ref(), since);
            assert!(records.len() > if name.is_some() { 100 } else { 3900 });
            let want = crate::control::proto::encode_reply(&Reply::ok(7, records));
            let (got, log) = stream(&dir, name, since);
            assert_eq!(got, String::from_utf8(want).unwrap());
            let want_log: Vec<String> = warnings.iter().map(|w| format!("warning: {w}")).collect();
            assert_eq!(log, want_log);
            assert!(log[1].contains("torn record"), "{log:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
