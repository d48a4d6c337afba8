//! The start/exit history: an append-only journal in the state directory.
//!
//! Each record is framed as `len (u32 LE) | crc32 (u32 LE) | JSON payload`;
//! the records queued together are written with one write(2) per file
//! they go to (`append_frames`), so a rotation falls between two records.
//! A damaged record (a flipped byte, a torn
//! write) is skipped and reading goes on at the next offset where a whole
//! record checks out: its payload starts with `SYNC`, its length is
//! plausible and its CRC matches, so one bad byte costs the record holding
//! it and nothing else. On open, whatever follows the last good record (a
//! torn tail: zurg or the machine died mid-write) is cut off so appends
//! continue from there. Past `limit` bytes the file is renamed
//! to `journal.1` (one old generation kept) and a new one begun; history
//! reads `journal.1` then `journal`.
//!
//! Records are not fsynced one by one: a power cut may lose the last few,
//! which costs history, never correctness (GPIDs do not depend on it).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::control::proto::ExitInfo;
use crate::stats::Sample;

pub const DEFAULT_LIMIT: u64 = 8 << 20;
/// The smallest `--journal-size`: a dozen records or so per file, for a
/// state directory on a device that can spare little.
pub const MIN_LIMIT: u64 = 4 << 10;
/// A record longer than this is treated as corruption.
const MAX_RECORD: u32 = 1 << 20;
const HEADER: usize = 8;

/// What a journal record says happened. Encoded as the lower-case word;
/// a word this zurg does not know (written by a newer one) reads as
/// `Other`, so history still lists the record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A process started (its GPID).
    #[default]
    Start,
    /// A process ended, by itself or on request.
    Exit,
    /// A start refused before exec, with `reason`.
    Refused,
    /// The service gave up until asked again (start limit, a one-shot that
    /// failed, readiness that failed for good), with `reason`.
    Failed,
    /// `zurg upgrade` installed a build.
    Upgrade,
    /// `zurg rollback` went back to the previous build.
    Rollback,
    /// Its health check or watchdog failed, with `reason`; it is restarted.
    Unhealthy,
    /// It did not become ready, with `reason`: a failed start.
    NotReady,
    /// An operator's request relayed by the publisher (`--publish-control`),
    /// with `remote`: who asked what, and the outcome.
    RemoteRequest,
    /// Records the loop produced that were never written (the journal's
    /// writer was stuck and its queue full), with `reason`: how many.
    Gap,
    #[serde(other)]
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Start => "start",
            Kind::Exit => "exit",
            Kind::Refused => "refused",
            Kind::Failed => "failed",
            Kind::Upgrade => "upgrade",
            Kind::Rollback => "rollback",
            Kind::Unhealthy => "unhealthy",
            Kind::NotReady => "not_ready",
            Kind::RemoteRequest => "remote_request",
            Kind::Gap => "gap",
            Kind::Other => "other",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// Default so that a record is written as a literal with the fields it
// uses: a new optional field then changes no existing literal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Wall clock, µs since the epoch.
    pub time_us: u64,
    pub service: String,
    pub kind: Kind,
    pub gpid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    /// The last resource sample taken before an exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Sample>,
    /// The publish sequence number this event was given, and the zurg
    /// instance (its GPID) that numbered it: a forwarder whose queue
    /// overflowed reads its events back from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zurg: Option<String>,
    /// Why a start was refused (kind "refused"), why a process was not
    /// ready or unhealthy; absent from other kinds, whose encoding is
    /// unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Kind `remote_request`: the operator key, the verb and the outcome;
    /// absent from other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteNote>,
}

/// The fields of a record a reader of every record looks at first,
/// borrowed from its payload: the publisher's history decodes this much of
/// each record (to drop repeats and filter) and the whole record only for
/// those it answers with. `Head::of` reads a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    pub time_us: u64,
    pub service: &'a str,
    pub seq: Option<u64>,
    pub zurg: Option<&'a str>,
}

/// `Head` as serde reads it: the other fields are skipped, not decoded.
#[derive(Deserialize)]
struct HeadFields<'a> {
    time_us: u64,
    #[serde(borrow)]
    service: &'a str,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, borrow)]
    zurg: Option<&'a str>,
}

impl<'a> Head<'a> {
    /// The head of the record in `payload`, borrowed from it; `None` when
    /// it is not a record. A text with a JSON escape in it cannot be
    /// borrowed: such a record is decoded whole into `spill` and its head
    /// borrowed from there.
    pub fn of(payload: &'a [u8], spill: &'a mut Option<Record>) -> Option<Head<'a>> {
        if let Ok(h) = serde_json::from_slice::<HeadFields<'a>>(payload) {
            return Some(Head {
                time_us: h.time_us,
                service: h.service,
                seq: h.seq,
                zurg: h.zurg,
            });
        }
        let r: &'a Record = spill.insert(serde_json::from_slice(payload).ok()?);
        Some(Head {
            time_us: r.time_us,
            service: &r.service,
            seq: r.seq,
            zurg: r.zurg.as_deref(),
        })
    }
}

/// A control request relayed through the publisher, as both journals keep
/// it: `service` holds the names it named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteNote {
    /// The operator key's id: a fingerprint of the operator token, never
    /// the token.
    pub operator: String,
    pub verb: crate::control::proto::RemoteVerb,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::control::proto::ErrorCode>,
}

impl Record {
    /// A remote request's record as `SERVICE KIND NOTE[ (REASON)]` (`*`
    /// for a request that named no service), for both history printers;
    /// `None` for any other record.
    pub fn remote_text(&self) -> Option<String> {
        let note = self.remote.as_ref()?;
        let service = if self.service.is_empty() {
            "*"
        } else {
            &self.service
        };
        let why = self
            .reason
            .as_ref()
            .map(|w| format!(" ({w})"))
            .unwrap_or_default();
        Some(format!("{service} {} {}{why}", self.kind, note.describe()))
    }
}

impl RemoteNote {
    /// "restart by operator op:1a2b…: ok", "…: refused (forbidden)".
    pub fn describe(&self) -> String {
        let outcome = match (self.ok, self.error) {
            (true, _) => "ok".to_string(),
            (false, Some(code)) => format!(
                "failed ({})",
                serde_json::to_value(code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ),
            (false, None) => "failed".to_string(),
        };
        format!("{} by operator {}: {outcome}", self.verb, self.operator)
    }
}

/// Free space a full file system must regain before the journal writes
/// again.
const RESUME_HEADROOM: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open journal {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot write journal {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot rotate journal {path}: {source}")]
    Rotate { path: PathBuf, source: io::Error },
}

impl JournalError {
    fn is_out_of_space(&self) -> bool {
        let source = match self {
            JournalError::Open { source, .. }
            | JournalError::Write { source, .. }
            | JournalError::Rotate { source, .. } => source,
        };
        source.kind() == io::ErrorKind::StorageFull
    }
}

/// CRC-32/ISO-HDLC (the IEEE polynomial, reflected, as zlib computes it).
/// crc32fast uses the CPU's carry-less multiply where there is one: over
/// 16 MiB it measured several times faster than the table-driven loop the
/// journal had (docs/performance.md), and its value is the same, so
/// journals written before read back unchanged.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

pub fn frame(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    frame_into(&mut out, record);
    out
}

/// `frame` into `out`, replacing what it held: the loop reuses one buffer
/// rather than allocating one per record.
pub fn frame_into(out: &mut Vec<u8>, record: &Record) {
    out.clear();
    out.extend_from_slice(&[0; HEADER]);
    if serde_json::to_writer(&mut *out, record).is_err() {
        // As `to_vec` failing gave an empty payload: a record readers skip.
        out.truncate(HEADER);
    }
    let payload = out.get(HEADER..).unwrap_or_default();
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let header = len
        .to_le_bytes()
        .into_iter()
        .chain(crc32(payload).to_le_bytes());
    for (slot, byte) in out.iter_mut().zip(header) {
        *slot = byte;
    }
}

/// Framed records back to back, and where each ends: what the writer
/// thread appends with one write(2) when they fit in the current file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Frames {
    bytes: Vec<u8>,
    lens: Vec<u32>,
}

impl Frames {
    /// Adds one framed record (`frame`).
    pub fn push(&mut self, framed: &[u8]) {
        self.bytes.extend_from_slice(framed);
        self.lens
            .push(u32::try_from(framed.len()).unwrap_or(u32::MAX));
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Their bytes.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The bytes reserved for records, kept when it is emptied for reuse.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.lens.clear();
    }

    /// Each record, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut at = 0usize;
        self.lens.iter().map(move |&len| {
            let from = at;
            at = at.saturating_add(len as usize);
            self.bytes.get(from..at).unwrap_or_default()
        })
    }
}

fn le32(bytes: Option<&[u8]>) -> u32 {
    bytes
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(u32::MAX, u32::from_le_bytes)
}

/// Decodes every good record of `data`; returns them, the length of the
/// good prefix, and a warning when something after it was unreadable.
pub fn decode_all(data: &[u8]) -> (Vec<Record>, usize, Option<String>) {
    decode_matching(data, None)
}

/// What a reader wants from the journal: records whose JSON holds this
/// field with this value. Only those are decoded; the others cost their
/// checksum and a byte scan.
/// Any of its byte strings admits a record.
#[derive(Debug, Clone)]
pub struct Only(Vec<Vec<u8>>);

impl Only {
    pub fn field(name: &str, value: &str) -> Only {
        // The journal is written by serde_json, so the value is found
        // exactly as serde_json writes it.
        let value = serde_json::to_string(value).unwrap_or_default();
        Only(vec![format!("\"{name}\":{value}").into_bytes()])
    }

    /// The records of the services `wanted` names (a superset: `web@x`
    /// passes for `web`, the caller's `Wanted::matches` decides).
    pub fn service(wanted: &Wanted) -> Only {
        let mut only = Only::field("service", wanted.name());
        if let Wanted::Unit(name) = wanted {
            // `"service":"web` followed by `@`: the closing quote dropped.
            let mut open = serde_json::to_string(name).unwrap_or_default();
            open.pop();
            only.0.push(format!("\"service\":{open}@").into_bytes());
        }
        only
    }

    fn admits(&self, payload: &[u8]) -> bool {
        self.0.iter().any(|needle| contains(payload, needle))
    }
}

fn contains(payload: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    let n = needle.len();
    payload
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == first)
        .any(|(at, _)| payload.get(at..at + n) == Some(needle))
}

/// Whose records `history NAME` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// The service `NAME` alone: zurg runs a service of that name (a
    /// unit without instances, or one instance, `web@1`).
    Exactly(String),
    /// `NAME` and its instances `NAME@0`, `NAME@1`, ...: a unit with
    /// instances, or a name the reader cannot look up (a publisher, the
    /// journal read offline, a unit since removed), where the journal's
    /// names are all there is to go by.
    Unit(String),
}

impl Wanted {
    pub fn name(&self) -> &str {
        match self {
            Wanted::Exactly(n) | Wanted::Unit(n) => n,
        }
    }

    /// Whether a record of `service` is wanted.
    pub fn matches(&self, service: &str) -> bool {
        match self {
            Wanted::Exactly(n) => service == n,
            Wanted::Unit(n) => of_unit(n, service),
        }
    }
}

/// Whether `service` is `unit` or one of its instances, `unit@N`.
pub fn of_unit(unit: &str, service: &str) -> bool {
    service == unit
        || service
            .strip_prefix(unit)
            .and_then(|rest| rest.strip_prefix('@'))
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
}

/// Every record's payload begins with these bytes: serde writes a struct's
/// fields in declaration order and `time_us` is `Record`'s first. Inside a
/// payload a quote is always escaped within strings, so the only places this
/// pattern occurs are record starts. After a corrupt record the reader looks
/// for the next one here; the length and CRC must then check out as well, so
/// garbage that happens to contain the pattern is still refused (a false
/// match needs a CRC-32 collision on top).
const SYNC: &[u8] = b"{\"time_us\":";

/// Why a stretch of the journal was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    BadLength(u32),
    /// A record that runs past the end of what was read: a crash
    /// mid-write, or a record being appended as it was read.
    Torn,
    Checksum,
    Unreadable,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::BadLength(len) => write!(f, "bad record length {len}"),
            Damage::Torn => f.write_str("torn record"),
            Damage::Checksum => f.write_str("checksum mismatch"),
            Damage::Unreadable => f.write_str("unreadable record"),
        }
    }
}

/// Where the one walker below reads a journal from: a slice held whole
/// (history reads: zero copy, the records borrowed from it as they are
/// decoded) or a file through a bounded `Window` (`open`, which must not
/// hold 8 MiB to find a torn tail). Offsets are the journal's own; a source
/// holds some stretch of it.
trait Source {
    type Error;
    /// Reads until the source holds offset `to` or has no more.
    fn fill_to(&mut self, to: usize) -> Result<(), Self::Error>;
    /// Bytes `from..to`, if the source holds them.
    fn bytes(&self, from: usize, to: usize) -> Option<&[u8]>;
    /// Just past the last byte held.
    fn end(&self) -> usize;
    /// The source holds all there is.
    fn eof(&self) -> bool;
    /// The walker will not look before `before` again.
    fn release(&mut self, _before: usize) {}
}

impl Source for &[u8] {
    type Error = std::convert::Infallible;

    fn fill_to(&mut self, _to: usize) -> Result<(), Self::Error> {
        Ok(())
    }

    fn bytes(&self, from: usize, to: usize) -> Option<&[u8]> {
        self.get(from..to)
    }

    fn end(&self) -> usize {
        self.len()
    }

    fn eof(&self) -> bool {
        true
    }
}

/// A record whose header and checksum hold: its payload and the offset
/// just past it; else why not.
type Framed<'a> = Result<(&'a [u8], usize), Damage>;

/// The record framed at `at`.
fn framed<S: Source>(src: &mut S, at: usize) -> Result<Framed<'_>, S::Error> {
    src.fill_to(at.saturating_add(HEADER))?;
    let Some(header) = src.bytes(at, at.saturating_add(HEADER)) else {
        return Ok(Err(Damage::Torn));
    };
    let len = le32(header.get(..4));
    let crc = le32(header.get(4..));
    // No record is empty (a payload is a JSON object), and an all-zero
    // header, which is what a block the file system zero-filled after a
    // crash reads as, would otherwise pass: crc32 of nothing is 0.
    if len == 0 || len > MAX_RECORD {
        return Ok(Err(Damage::BadLength(len)));
    }
    let end = at.saturating_add(HEADER).saturating_add(len as usize);
    src.fill_to(end)?;
    match src.bytes(at.saturating_add(HEADER), end) {
        None => Ok(Err(Damage::Torn)),
        Some(payload) if crc32(payload) != crc => Ok(Err(Damage::Checksum)),
        Some(payload) => Ok(Ok((payload, end))),
    }
}

/// The next offset after `from` where a whole, checksummed record starts.
fn resync<S: Source>(src: &mut S, from: usize) -> Result<Option<usize>, S::Error> {
    let mut at = from;
    loop {
        // A record found from here starts at most HEADER bytes before
        // the pattern, and never before `from`.
        src.release(at.saturating_sub(HEADER).max(from));
        src.fill_to(at.saturating_add(SYNC.len()))?;
        let hit = src
            .bytes(at, src.end())
            .and_then(|rest| rest.windows(SYNC.len()).position(|w| w == SYNC));
        let Some(hit) = hit else {
            if src.eof() {
                return Ok(None);
            }
            // The pattern may straddle the window's end; the next turn
            // reads on from there.
            at = at.max(src.end().saturating_sub(SYNC.len() - 1));
            continue;
        };
        let payload_at = at.saturating_add(hit);
        if let Some(start) = payload_at.checked_sub(HEADER).filter(|s| *s >= from) {
            // The pattern must begin this record's payload, not run past a
            // shorter one: otherwise the record found depends on bytes
            // after it, and a journal cut at its end (as open cuts a torn
            // tail) would read differently.
            if framed(src, start)?.is_ok_and(|(payload, _)| payload.starts_with(SYNC)) {
                return Ok(Some(start));
            }
        }
        at = payload_at.saturating_add(1);
    }
}

/// The stretches a read skipped: the first as it was, the others counted.
/// Kept that small because a read of a damaged journal must not grow with
/// its damage.
#[derive(Debug, Default)]
struct Skips {
    first: Option<(usize, usize, Damage)>,
    more: usize,
    more_bytes: usize,
}

impl Skips {
    fn push(&mut self, (from, to, damage): (usize, usize, Damage)) {
        if self.first.is_none() {
            self.first = Some((from, to, damage));
        } else {
            self.more = self.more.saturating_add(1);
            self.more_bytes = self.more_bytes.saturating_add(to.saturating_sub(from));
        }
    }

    fn warning(&self) -> Option<String> {
        let (from, to, damage) = self.first?;
        let mut text = format!(
            "{damage} at byte {from}, skipped {} byte(s)",
            to.saturating_sub(from)
        );
        if self.more > 0 {
            text.push_str(&format!(
                ", and {} more damaged stretch(es) of {} byte(s)",
                self.more, self.more_bytes
            ));
        }
        Some(text)
    }
}

/// What a walk of a journal found.
#[derive(Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Just past the last good record: what the reopened journal keeps.
    pub good: usize,
    /// The journal's length as read.
    pub len: usize,
    pub warning: Option<String>,
    /// The damage the journal ends in, if it does not end with a whole
    /// record: `Some(Damage::Torn)` for a last record cut short.
    pub tail: Option<Damage>,
}

/// What a walker's reader says of a payload whose checksum held but which
/// it cannot read as a record: the record is skipped as damage.
#[derive(Debug)]
struct Unreadable;

/// The one reader of the framed format, whatever holds the bytes: walks
/// `src` from its start a record at a time, skipping damage to the next
/// record `resync` finds. It stops after any record and goes on when
/// asked, so a streamed `history` reply reads only what its next chunk
/// needs.
struct Walker<S> {
    src: S,
    /// Where the next record starts.
    at: usize,
    /// Just past the last good record.
    good: usize,
    skipped: Skips,
    tail: Option<Damage>,
    done: bool,
}

impl<S: Source> Walker<S> {
    fn new(src: S) -> Walker<S> {
        Walker {
            src,
            at: 0,
            good: 0,
            skipped: Skips::default(),
            tail: None,
            done: false,
        }
    }

    /// The next record `read` makes something of; `None` once the journal
    /// ends. `read` gets the payload of each record whose frame holds and
    /// answers `Some` to hand it back, `None` for a record this reader
    /// does not want, or `Unreadable`, which skips it as damage. A source
    /// that fails leaves the walker where it was.
    fn next<T>(
        &mut self,
        mut read: impl FnMut(&[u8]) -> Result<Option<T>, Unreadable>,
    ) -> Result<Option<T>, S::Error> {
        while !self.done {
            let at = self.at;
            self.src.release(at);
            self.src.fill_to(at.saturating_add(1))?;
            if at >= self.src.end() {
                self.done = true;
                break;
            }
            match framed(&mut self.src, at)? {
                Ok((payload, end)) => {
                    let item = read(payload);
                    // The checksum held, so the length is right: an
                    // unreadable record costs exactly itself.
                    self.good = end;
                    self.at = end;
                    match item {
                        Ok(Some(item)) => return Ok(Some(item)),
                        Ok(None) => {}
                        Err(Unreadable) => self.skipped.push((at, end, Damage::Unreadable)),
                    }
                }
                Err(damage) => match resync(&mut self.src, at.saturating_add(1))? {
                    Some(next) => {
                        self.skipped.push((at, next, damage));
                        self.at = next;
                    }
                    None => {
                        self.skipped.push((at, self.src.end(), damage));
                        self.tail = Some(damage);
                        self.done = true;
                    }
                },
            }
        }
        Ok(None)
    }

    /// What the walk found so far (all of it once `next` said `None`),
    /// and the source.
    fn finish(self) -> (Scanned, S) {
        let scanned = Scanned {
            good: self.good,
            len: self.src.end(),
            warning: self.skipped.warning(),
            tail: self.tail,
        };
        (scanned, self.src)
    }
}

/// A whole walk of `src`: `each` gets the payload of every record whose
/// frame holds and answers whether it is a readable record.
fn walk<S: Source>(src: S, mut each: impl FnMut(&[u8]) -> bool) -> Result<(Scanned, S), S::Error> {
    let mut walker = Walker::new(src);
    // `read` hands nothing back, so one call walks the whole journal.
    if let Some(never) = walker.next::<std::convert::Infallible>(|payload| {
        if each(payload) {
            Ok(None)
        } else {
            Err(Unreadable)
        }
    })? {
        match never {}
    }
    Ok(walker.finish())
}

/// `decode_all` decoding only the records `only` admits (all when `None`).
pub fn decode_matching(data: &[u8], only: Option<&Only>) -> (Vec<Record>, usize, Option<String>) {
    let mut records = Vec::new();
    let Ok((Scanned { good, warning, .. }, _)) = walk(data, |payload| {
        only.is_some_and(|o| !o.admits(payload))
            || serde_json::from_slice(payload)
                .map(|r| records.push(r))
                .is_ok()
    });
    (records, good, warning)
}

/// Bytes read at a time when a journal is opened.
const SCAN_CHUNK: usize = 64 << 10;

/// A forward-only window on a journal file: what `open` holds of it
/// while it looks for the good prefix. It keeps the bytes from the
/// offset the walk may still revisit (`keep`), so it holds at most one
/// record (up to `MAX_RECORD`) and a chunk, whatever the file's size.
struct Window<R> {
    src: R,
    buf: Vec<u8>,
    /// The file offset of `buf[0]`.
    base: usize,
    /// Bytes before this offset are not needed again.
    keep: usize,
    eof: bool,
    chunk: usize,
    /// The most memory the window took (its capacity), for tests.
    peak: usize,
}

impl<R: Read> Window<R> {
    fn new(src: R, chunk: usize) -> Window<R> {
        Window {
            src,
            buf: Vec::new(),
            base: 0,
            keep: 0,
            eof: false,
            chunk: chunk.max(1),
            peak: 0,
        }
    }
}

impl<R: Read> Source for Window<R> {
    type Error = io::Error;

    /// Bytes released are dropped first, once per read rather than per
    /// record.
    fn fill_to(&mut self, to: usize) -> io::Result<()> {
        while self.end() < to && !self.eof {
            let gone = self.keep.saturating_sub(self.base).min(self.buf.len());
            if gone > 0 {
                self.buf.drain(..gone);
                self.base = self.base.saturating_add(gone);
            }
            self.buf.reserve_exact(self.chunk);
            let limit = u64::try_from(self.chunk).unwrap_or(u64::MAX);
            // `take` reads (past EINTR) until the chunk is full or the
            // file ends, into the room just reserved.
            let n = (&mut self.src).take(limit).read_to_end(&mut self.buf)?;
            self.peak = self.peak.max(self.buf.capacity());
            self.eof = n < self.chunk;
        }
        Ok(())
    }

    fn bytes(&self, from: usize, to: usize) -> Option<&[u8]> {
        self.buf
            .get(from.checked_sub(self.base)?..to.checked_sub(self.base)?)
    }

    fn end(&self) -> usize {
        self.base.saturating_add(self.buf.len())
    }

    fn eof(&self) -> bool {
        self.eof
    }

    fn release(&mut self, before: usize) {
        self.keep = self.keep.max(before);
    }
}

/// `scan` of `data` read `chunk` bytes at a time: the good prefix, the
/// length and the warning, for the fuzz target to hold against
/// `decode_all` (the same walker over the slice whole).
pub fn scan_bytes(data: &[u8], chunk: usize) -> io::Result<(usize, usize, Option<String>)> {
    let (s, _) = scan(data, chunk)?;
    Ok((s.good, s.len, s.warning))
}

/// `decode_all`'s good prefix and warning, reading `src` in `chunk`-byte
/// pieces and decoding each record only to check it and drop it: what
/// `open` needs, in memory bounded by one record and a chunk rather than
/// the file (8 MiB) and every record decoded from it. Returns the window's
/// peak size too.
fn scan(src: impl Read, chunk: usize) -> io::Result<(Scanned, usize)> {
    let (scanned, win) = walk(Window::new(src, chunk), |payload| {
        serde_json::from_slice::<Record>(payload).is_ok()
    })?;
    Ok((scanned, win.peak))
}

/// Bytes a `FileReader` reads at a time.
pub const READ_CHUNK: usize = 256 << 10;

/// One of the journal's files read a record at a time, through the same
/// bounded window as `open`: what a streamed `history` reply reads, in
/// memory bounded by a chunk and one record whatever the file's size. It
/// reads the file as it is when the window first finds its end.
pub struct FileReader {
    walker: Walker<Window<File>>,
    only: Option<Only>,
}

impl FileReader {
    /// Reads `file` from its start, decoding only the records `only`
    /// admits (all when `None`), `READ_CHUNK` bytes at a time.
    pub fn new(file: File, only: Option<Only>) -> FileReader {
        FileReader::with_chunk(file, only, READ_CHUNK)
    }

    fn with_chunk(file: File, only: Option<Only>, chunk: usize) -> FileReader {
        FileReader {
            walker: Walker::new(Window::new(file, chunk)),
            only,
        }
    }

    /// The next readable record `only` admits; `None` at the end of the
    /// file. After an error the file cannot be read further: `finish`
    /// says what was found before it.
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        let only = self.only.as_ref();
        self.walker.next(|payload| {
            if only.is_some_and(|o| !o.admits(payload)) {
                return Ok(None);
            }
            serde_json::from_slice(payload)
                .map(Some)
                .map_err(|_| Unreadable)
        })
    }

    /// What the walk found: the damage it skipped, and whether the file
    /// ended in a torn record.
    pub fn finish(self) -> Scanned {
        self.walker.finish().0
    }

    /// Walks the rest of the file, handing `each` the payload of every
    /// record whose frame holds; `each` says whether it is a readable
    /// record (an unreadable one is skipped as damage, as `next_record`
    /// skips it). For a reader that looks at a few fields of every record
    /// (`Head`) and decodes only those it keeps. `only` does not apply.
    pub fn each_payload(&mut self, mut each: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        let found = self.walker.next::<std::convert::Infallible>(|payload| {
            if each(payload) {
                Ok(None)
            } else {
                Err(Unreadable)
            }
        })?;
        match found {
            Some(never) => match never {},
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("at", &self.walker.at)
            .field("only", &self.only)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    /// None while the journal could not be opened (a read-only or missing
    /// state directory): every append tries again.
    file: Option<File>,
    size: u64,
    limit: u64,
    /// Records not written since the last successful append.
    lost: u64,
    /// The last failure was a full disk: retry once there is headroom.
    out_of_space: bool,
}

fn current(dir: &Path) -> PathBuf {
    dir.join("journal")
}

fn previous(dir: &Path) -> PathBuf {
    dir.join("journal.1")
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, cutting off a torn tail.
    /// Returns the journal and a warning if a tail was cut. The file is
    /// read in chunks and not kept (`scan`): a full 8 MiB journal costs a
    /// chunk of memory, not its size and its decoded records.
    pub fn open(dir: &Path, limit: u64) -> Result<(Journal, Option<String>), JournalError> {
        let path = current(dir);
        let open_err = |source| JournalError::Open {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(open_err)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(open_err)?;
        let (scanned, _) = scan(&file, SCAN_CHUNK).map_err(open_err)?;
        let Scanned {
            good, len, warning, ..
        } = scanned;
        if good < len {
            file.set_len(good as u64).map_err(open_err)?;
        }
        let warning = warning.map(|w| {
            let cut = len - good;
            if cut > 0 {
                format!("journal {}: {w}; cut off {cut} byte(s)", path.display())
            } else {
                format!("journal {}: {w}", path.display())
            }
        });
        Ok((
            Journal {
                dir: dir.to_path_buf(),
                file: Some(file),
                size: good as u64,
                limit,
                lost: 0,
                out_of_space: false,
            },
            warning,
        ))
    }

    /// A journal in `dir` that could not be opened (`open` failed, and the
    /// caller has said so): each append tries to open it again, so history
    /// resumes once the state directory is writable, and the records lost
    /// meanwhile are counted like those of a full disk.
    pub fn unopened(dir: &Path, limit: u64) -> Journal {
        Journal {
            dir: dir.to_path_buf(),
            file: None,
            size: 0,
            limit,
            lost: 0,
            out_of_space: false,
        }
    }

    /// Opens the file for a journal that had none, without reading it (it
    /// may be large, and this runs on the loop): a torn tail left by an
    /// earlier life stays, and readers skip it as any damaged record.
    fn reopen(&mut self) -> Result<(), JournalError> {
        let path = current(&self.dir);
        let open_err = |source| JournalError::Open {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(open_err)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(open_err)?;
        self.size = file.metadata().map_err(open_err)?.len();
        self.file = Some(file);
        Ok(())
    }

    /// Appends one record. A failed write (a full disk) does not stop the
    /// journal: every later append tries again, and the records that could
    /// not be written are counted so the resumption can say how many.
    pub fn append(&mut self, record: &Record) -> Appended {
        self.append_frame(&frame(record))
    }

    /// `append` of a record already framed (`frame`).
    pub fn append_frame(&mut self, framed: &[u8]) -> Appended {
        let len = u32::try_from(framed.len()).unwrap_or(u32::MAX);
        let mut told = Vec::new();
        self.append_run(framed, &[len], &mut told);
        match told.pop() {
            Some(changed) => changed,
            None if self.lost > 0 => Appended::Lost,
            None => Appended::Written,
        }
    }

    /// Appends `frames` in order, with one write(2) for all those that
    /// fit in the current file: a rotation falls between two records,
    /// never inside one. Each record fares as it would alone through
    /// `append_frame` (written, or lost and counted); what changed the
    /// journal's health, in order, is returned to be logged
    /// (`Appended::Failed`, `Appended::Resumed`).
    pub fn append_frames(&mut self, frames: &Frames) -> Vec<Appended> {
        let mut told = Vec::new();
        self.append_run(&frames.bytes, &frames.lens, &mut told);
        told
    }

    fn append_run(&mut self, mut bytes: &[u8], mut lens: &[u32], told: &mut Vec<Appended>) {
        // A journal opened here says so at its first write, lost or not.
        let mut opened = false;
        while let Some(&first) = lens.first() {
            let left = lens.len() as u64;
            if self.file.is_none() {
                // The failure to open was reported when it happened: until
                // the file opens, each record only counts as lost.
                if self.reopen().is_err() {
                    self.lost = self.lost.saturating_add(left);
                    return;
                }
                opened = true;
            }
            // Near a full disk, small records may still fit in a file's
            // last block while larger ones fail; waiting for real headroom
            // keeps that from flapping between failed and resumed.
            if self.lost > 0 && self.out_of_space && !opened && !self.has_headroom() {
                self.lost = self.lost.saturating_add(left);
                return;
            }
            let full = self.size > 0 && self.size.saturating_add(u64::from(first)) > self.limit;
            let (kept, failure) = match if full { self.rotate() } else { Ok(()) } {
                Err(e) => (0, Some(e)),
                Ok(()) => {
                    // The records that fit in this file, at least one: a
                    // record larger than the limit gets a file of its own.
                    let (mut count, mut run) = (1usize, u64::from(first));
                    for &len in lens.get(1..).unwrap_or_default() {
                        let with = run.saturating_add(u64::from(len));
                        if self.size.saturating_add(with) > self.limit {
                            break;
                        }
                        run = with;
                        count += 1;
                    }
                    let run_bytes = usize::try_from(run)
                        .ok()
                        .and_then(|run| bytes.get(..run))
                        .unwrap_or_default();
                    self.write(run_bytes, lens.get(..count).unwrap_or_default())
                }
            };
            if kept > 0 && (self.lost > 0 || opened) {
                told.push(Appended::Resumed {
                    lost: std::mem::take(&mut self.lost),
                });
            }
            let done = kept + usize::from(failure.is_some());
            if let Some(e) = failure {
                // Right after opening, as the open's own failure, only
                // counted.
                self.failed(e, opened && kept == 0, told);
            }
            opened = false;
            let done_bytes: usize = lens.iter().take(done).map(|&len| len as usize).sum();
            lens = lens.get(done..).unwrap_or_default();
            bytes = bytes.get(done_bytes..).unwrap_or_default();
        }
    }

    /// A record could not be written: the first of a run of failures is
    /// told (unless `quiet`), the others only counted.
    fn failed(&mut self, e: JournalError, quiet: bool, told: &mut Vec<Appended>) {
        self.lost = self.lost.saturating_add(1);
        self.out_of_space = e.is_out_of_space();
        if self.lost == 1 && !quiet {
            told.push(Appended::Failed(e));
        }
    }

    // fsblkcnt_t and c_ulong are u64 here but not on every target.
    #[allow(clippy::useless_conversion)]
    fn has_headroom(&self) -> bool {
        let Some(file) = &self.file else { return true };
        nix::sys::statvfs::fstatvfs(file).map_or(true, |st| {
            u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size()))
                >= RESUME_HEADROOM
        })
    }

    /// Writes `bytes`, the records of `lens` back to back, at the end of
    /// the file; how many of them are whole in it, and why the next one
    /// is not.
    fn write(&mut self, bytes: &[u8], lens: &[u32]) -> (usize, Option<JournalError>) {
        let path = current(&self.dir);
        let Some(file) = &mut self.file else {
            let source = io::Error::from(io::ErrorKind::NotFound);
            return (0, Some(JournalError::Write { path, source }));
        };
        let (done, written) = crate::os::write_all::write_all(file.as_fd(), [bytes]);
        let Err(error) = written else {
            self.size = self.size.saturating_add(bytes.len() as u64);
            return (lens.len(), None);
        };
        // A short write on a full disk leaves part of a record; cut it so
        // the next append does not follow a damaged one (shrinking needs
        // no space). The whole records before it stay.
        let (mut kept, mut whole) = (0usize, 0usize);
        for len in lens {
            if whole.saturating_add(*len as usize) > done {
                break;
            }
            whole = whole.saturating_add(*len as usize);
            kept += 1;
        }
        self.size = self.size.saturating_add(whole as u64);
        let _ = file.set_len(self.size);
        let source = io::Error::from(error);
        (kept, Some(JournalError::Write { path, source }))
    }

    fn rotate(&mut self) -> Result<(), JournalError> {
        let err = |source| JournalError::Rotate {
            path: current(&self.dir),
            source,
        };
        match std::fs::rename(current(&self.dir), previous(&self.dir)) {
            Ok(()) => {}
            // Renamed by an earlier attempt whose open then failed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        self.file = Some(
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(current(&self.dir))
                .map_err(err)?,
        );
        self.size = 0;
        Ok(())
    }
}

/// What one append did, so the caller logs a failure once and the
/// recovery once, not a line per record.
#[derive(Debug)]
#[must_use]
pub enum Appended {
    Written,
    /// The first record that could not be written.
    Failed(JournalError),
    /// Another record lost while writes keep failing.
    Lost,
    /// Written again after `lost` records could not be.
    Resumed {
        lost: u64,
    },
}

impl Appended {
    /// The line to log, if this append changed the journal's health.
    pub fn log_line(&self) -> Option<String> {
        match self {
            Appended::Written | Appended::Lost => None,
            Appended::Failed(e) => Some(format!(
                "warning: {e}; history is not kept until a write succeeds again (tried at each event)"
            )),
            Appended::Resumed { lost } => Some(format!(
                "journal writes again; {lost} record(s) were lost while it could not be written"
            )),
        }
    }
}

/// The journal's files in `dir`, oldest first, as `read_all` reads them.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    vec![previous(dir), current(dir)]
}

/// Every readable record in `dir`, oldest first (journal.1, then journal).
pub fn read_all(dir: &Path) -> (Vec<Record>, Vec<String>) {
    read_only(dir, None)
}

/// `read_all` decoding only what `only` admits (all when `None`); callers
/// still filter the records, this only spares the decoding.
pub fn read_only(dir: &Path, only: Option<&Only>) -> (Vec<Record>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for path in files(dir) {
        let (records, warning) = read_file(&path, only);
        out.extend(records);
        warnings.extend(warning);
    }
    (out, warnings)
}

/// The records of one of the journal's `files` (none when it does not
/// exist), and what was wrong with it.
pub fn read_file(path: &Path, only: Option<&Only>) -> (Vec<Record>, Option<String>) {
    let mut data = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut data)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (Vec::new(), None),
        Err(e) => {
            return (
                Vec::new(),
                Some(format!("cannot read {}: {e}", path.display())),
            )
        }
    }
    let (records, _, warning) = decode_matching(&data, only);
    (records, warning.map(|w| format!("{}: {w}", path.display())))
}

/// The records `wanted` matches (all when `None`) at or after `since_us`.
pub fn filter(records: Vec<Record>, wanted: Option<&Wanted>, since_us: Option<u64>) -> Vec<Record> {
    records
        .into_iter()
        .filter(|r| wanted.is_none_or(|w| w.matches(&r.service)))
        .filter(|r| since_us.is_none_or(|t| r.time_us >= t))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_remote_request_record_round_trips_and_reads_as_a_line() {
        let r = Record {
            time_us: 5,
            service: "api".into(),
            kind: Kind::RemoteRequest,
            remote: Some(RemoteNote {
                operator: "op:0123456789ab".into(),
                verb: crate::control::proto::RemoteVerb::Restart,
                ok: false,
                error: Some(crate::control::proto::ErrorCode::Forbidden),
            }),
            ..Record::default()
        };
        let (back, _, err) = decode_all(&frame(&r));
        assert_eq!(err, None);
        assert_eq!(back, std::slice::from_ref(&r));
        let note = r.remote.unwrap();
        assert_eq!(
            note.describe(),
            "restart by operator op:0123456789ab: failed (forbidden)"
        );
        // Older records have no `remote` and encode as before.
        let plain = serde_json::to_string(&Record::default()).unwrap();
        assert!(!plain.contains("remote"), "{plain}");
    }

    #[test]
    fn a_head_is_read_from_the_payload_and_escaped_text_still_reads() {
        let r = Record {
            time_us: 7,
            service: "web@1".into(),
            seq: Some(3),
            zurg: Some("10.0.0.1:0:1:1".into()),
            exit: Some(ExitInfo::default()),
            ..Record::default()
        };
        let payload = serde_json::to_vec(&r).unwrap();
        let mut spill = None;
        let head = Head::of(&payload, &mut spill).unwrap();
        assert_eq!(
            head,
            Head {
                time_us: 7,
                service: "web@1",
                seq: Some(3),
                zurg: Some("10.0.0.1:0:1:1"),
            }
        );
        assert!(spill.is_none(), "borrowed, not decoded");
        // A remote request's names are escaped text; a record without a
        // host (zurg run's own) has none.
        let quoted = Record {
            service: "a\"b\\c".into(),
            ..Record::default()
        };
        let payload = serde_json::to_vec(&quoted).unwrap();
        let mut spill = None;
        let head = Head::of(&payload, &mut spill).unwrap();
        assert_eq!((head.service, head.seq, head.zurg), ("a\"b\\c", None, None));
        assert!(Head::of(b"{\"time_us\":1}", &mut None).is_none());
        assert!(Head::of(b"not json", &mut None).is_none());
    }

    #[test]
    fn a_head_holds_the_records_fields_escaped_or_not() {
        let mut records = varied(12);
        for (i, r) in records.iter_mut().enumerate() {
            r.seq = (i % 3 != 0).then_some(i as u64 * 1000);
            r.zurg = (i % 2 == 0).then(|| format!("10.0.0.{i}:0:1:1"));
            r.reason = (i % 5 == 0).then(|| "a {\"nested\": [\"text\"]}".to_string());
        }
        // Escaped texts cannot be borrowed: read through the spill.
        records.push(Record {
            service: "a\"b\u{1b}".into(),
            seq: Some(u64::MAX),
            zurg: Some("h\\".into()),
            ..Record::default()
        });
        for r in &records {
            let payload = serde_json::to_vec(r).unwrap();
            let mut spill = None;
            let want = Head {
                time_us: r.time_us,
                service: &r.service,
                seq: r.seq,
                zurg: r.zurg.as_deref(),
            };
            assert_eq!(Head::of(&payload, &mut spill), Some(want));
        }
        for odd in [
            &b"{"[..],
            b"",
            br#"{"time_us":1}"#,
            br#"{"time_us":-1,"service":"a"}"#,
        ] {
            assert_eq!(Head::of(odd, &mut None), None);
        }
    }

    /// Record `i` of a test journal: starts and exits of s0..s2 in turn.
    pub(crate) fn rec(i: u64) -> Record {
        Record {
            time_us: 1000 + i,
            service: format!("s{}", i % 3),
            kind: if i.is_multiple_of(2) {
                Kind::Start
            } else {
                Kind::Exit
            },
            gpid: format!("127.0.0.1:0:{}:{}", 1000 + i, 10 + i),
            exit: (i % 2 == 1).then_some(ExitInfo {
                code: Some(1),
                signal: None,
                oom: false,
            }),
            ..Default::default()
        }
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zurg-journal-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn crc_matches_the_standard() {
        // CRC-32/ISO-HDLC check value.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    /// The journal's CRC before crc32fast, bit by bit.
    fn bitwise_crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
        !crc
    }

    #[test]
    fn crc_is_the_value_journals_were_written_with() {
        let mut x = 0x2545_F491u32;
        let data: Vec<u8> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        // every length up to a few SIMD blocks, and odd offsets
        for len in (0..300).chain([1023, 1024, 1025, 4990]) {
            for start in [0, 1, 3] {
                let slice = &data[start..start + len];
                assert_eq!(crc32(slice), bitwise_crc32(slice), "len {len} at {start}");
            }
        }
        // a header as the table-driven code wrote it (zlib agrees)
        let old = [
            0x07u8, 0, 0, 0, 0xaf, 0xac, 0x1b, 0x56, b'{', b'"', b'a', b'"', b':', b'1', b'}',
        ];
        assert_eq!(
            crc32(&old[8..]),
            u32::from_le_bytes([0xaf, 0xac, 0x1b, 0x56])
        );
    }

    #[test]
    fn round_trip_and_reopen() {
        let d = tmp("rt");
        let (mut j, w) = Journal::open(&d, DEFAULT_LIMIT).unwrap();
        assert!(w.is_none());
        for i in 0..10 {
            assert!(matches!(j.append(&rec(i)), Appended::Written));
        }
        drop(j);
        let (mut j, _) = Journal::open(&d, DEFAULT_LIMIT).unwrap();
        assert!(matches!(j.append(&rec(10)), Appended::Written));
        let (all, warnings) = read_all(&d);
        assert!(warnings.is_empty());
        assert_eq!(all, (0..11).map(rec).collect::<Vec<_>>());
        assert_eq!(
            filter(all.clone(), Some(&Wanted::Exactly("s1".into())), None).len(),
            4
        );
        assert_eq!(filter(all, None, Some(1005)).len(), 6);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_go_on() {
        let d = tmp("torn");
        let (mut j, _) = Journal::open(&d, DEFAULT_LIMIT).unwrap();
        for i in 0..3 {
            assert!(matches!(j.append(&rec(i)), Appended::Written));
        }
        drop(j);
        // crash mid-write: half of a fourth record
        let half = frame(&rec(3));
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join("journal"))
            .unwrap();
        std::io::Write::write_all(&mut f, &half[..half.len() / 2]).unwrap();
        drop(f);
        let (all, warnings) = read_all(&d);
        assert_eq!(all.len(), 3);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let (mut j, w) = Journal::open(&d, DEFAULT_LIMIT).unwrap();
        assert!(w.unwrap().contains("torn record"));
        assert!(matches!(j.append(&rec(4)), Appended::Written));
        let (all, warnings) = read_all(&d);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(all, vec![rec(0), rec(1), rec(2), rec(4)]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn only_decodes_the_records_with_that_exact_value() {
        let mut data = Vec::new();
        for i in 0..6 {
            data.extend(frame(&rec(i)));
        }
        let mut odd = rec(6);
        odd.service = "s1\"x".into();
        data.extend(frame(&odd));
        let mut longer = rec(7);
        longer.service = "s10".into();
        data.extend(frame(&longer));
        let only = Only::field("service", "s1");
        let (got, good, warning) = decode_matching(&data, Some(&only));
        assert_eq!((good, warning), (data.len(), None));
        assert_eq!(
            got.iter().map(|r| r.time_us).collect::<Vec<_>>(),
            [1001, 1004],
            "not s10, not s1\"x"
        );
        let quoted = Only::field("service", "s1\"x");
        let (got, _, _) = decode_matching(&data, Some(&quoted));
        assert_eq!(got, [odd]);
    }

    #[test]
    fn a_unit_matches_itself_and_its_numbered_instances_only() {
        let unit = Wanted::Unit("web".into());
        for yes in ["web", "web@0", "web@1", "web@17"] {
            assert!(unit.matches(yes), "{yes}");
        }
        for no in [
            "web@", "web@x", "web@1x", "web@-1", "webby", "web2", "we", "api@1", "web@1@2",
        ] {
            assert!(!unit.matches(no), "{no}");
        }
        let one = Wanted::Exactly("web".into());
        assert!(one.matches("web"));
        assert!(
            !one.matches("web@0"),
            "a service of that name is itself only"
        );
        assert!(Wanted::Exactly("web@1".into()).matches("web@1"));
        assert!(!Wanted::Exactly("web@1".into()).matches("web@10"));
        assert!(Wanted::Unit("web@1".into()).matches("web@1"));
        assert!(!Wanted::Unit("web@1".into()).matches("web@10"));
    }

    #[test]
    fn the_prefilter_admits_every_record_a_unit_wants() {
        let names = ["web", "web@0", "web@12", "webby", "web@x", "api", "web\"@1"];
        let mut data = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let mut r = rec(i as u64);
            r.service = (*name).into();
            data.extend(frame(&r));
        }
        for wanted in [
            Wanted::Unit("web".into()),
            Wanted::Exactly("web".into()),
            Wanted::Unit("web\"".into()),
        ] {
            let (got, _, _) = decode_matching(&data, Some(&Only::service(&wanted)));
            let got = filter(got, Some(&wanted), None);
            let (all, _, _) = decode_all(&data);
            let want = filter(all, Some(&wanted), None);
            assert_eq!(got, want, "{wanted:?}");
        }
        let (got, _, _) = decode_matching(&data, Some(&Only::service(&Wanted::Unit("web".into()))));
        assert_eq!(
            got.iter().map(|r| r.service.as_str()).collect::<Vec<_>>(),
            ["web", "web@0", "web@12", "web@x"],
            "the byte scan lets `web@x` through; `matches` drops it"
        );
    }

    fn journal_of(records: &[Record]) -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
        let mut data = Vec::new();
        let mut spans = Vec::new();
        for r in records {
            let f = frame(r);
            spans.push(data.len()..data.len() + f.len());
            data.extend(f);
        }
        (data, spans)
    }

    /// Records of several shapes, so headers, lengths and payloads vary.
    fn varied(n: u64) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let mut r = rec(i);
                if i % 4 == 3 {
                    r.stats = Some(Sample {
                        rss_kb: 1000 + i,
                        ..Sample::default()
                    });
                    r.version = Some(format!("v{i}"));
                }
                r
            })
            .collect()
    }

    #[test]
    fn every_payload_starts_with_the_sync_pattern() {
        for r in varied(8) {
            assert!(frame(&r).get(HEADER..).unwrap().starts_with(SYNC));
        }
    }

    #[test]
    fn a_corrupt_record_in_the_middle_costs_only_itself() {
        let all = varied(3);
        let (mut data, spans) = journal_of(&all);
        data[spans[1].start + HEADER + 2] ^= 0xff;
        let (records, good, warning) = decode_all(&data);
        assert_eq!(records, vec![all[0].clone(), all[2].clone()]);
        assert_eq!(good, data.len());
        let warning = warning.unwrap();
        assert!(warning.contains("checksum mismatch at byte"), "{warning}");
    }

    #[test]
    fn one_flipped_byte_anywhere_loses_at_most_the_record_holding_it() {
        let all = varied(7);
        let (data, spans) = journal_of(&all);
        for offset in 0..data.len() {
            let hit = spans.iter().position(|s| s.contains(&offset)).unwrap();
            for mask in [0x01u8, 0x20, 0x80, 0xff] {
                let mut bad = data.clone();
                bad[offset] ^= mask;
                let (records, good, warning) = decode_all(&bad);
                let mut want = all.clone();
                if records.len() < all.len() {
                    want.remove(hit);
                    assert!(warning.is_some(), "offset {offset}: no warning");
                }
                assert_eq!(records, want, "offset {offset} mask {mask:#x}");
                // The last record lost to a flip leaves a tail that a
                // reopen cuts; otherwise everything stays.
                let keeps = if records.len() < all.len() && hit == all.len() - 1 {
                    spans[hit].start
                } else {
                    data.len()
                };
                assert_eq!(good, keeps, "offset {offset} mask {mask:#x}");
            }
        }
    }

    #[test]
    fn a_big_journal_with_one_bad_byte_keeps_all_the_other_records() {
        // The reported case: 2,014 records, one flipped byte in the middle.
        let all: Vec<Record> = (0..2014).map(rec).collect();
        let (mut data, spans) = journal_of(&all);
        let mid = data.len() / 2;
        let hit = spans.iter().position(|s| s.contains(&mid)).unwrap();
        data[mid] ^= 0x5a;
        let (records, _, warning) = decode_all(&data);
        let mut want = all.clone();
        want.remove(hit);
        assert_eq!(records.len(), 2013);
        assert_eq!(records, want);
        assert!(warning.is_some());
    }

    #[test]
    fn garbage_that_mimics_a_record_is_not_accepted() {
        let all = varied(3);
        let (data, spans) = journal_of(&all);
        // Between records 0 and 1: the sync pattern with a plausible header
        // whose checksum is wrong, a header that claims the rest of the
        // file, and a copy of a record's header over a bent payload.
        let mut forged = Vec::new();
        forged.extend(b"junk");
        forged.extend(20u32.to_le_bytes());
        forged.extend(0xdead_beefu32.to_le_bytes());
        forged.extend(b"{\"time_us\":1,\"x\":2}");
        forged.extend(MAX_RECORD.to_le_bytes());
        forged.extend(0u32.to_le_bytes());
        forged.extend(SYNC);
        let mut bent = frame(&all[2]);
        let last = bent.len() - 2;
        bent[last] ^= 1;
        forged.extend(bent);
        let mut bad = data[..spans[1].start].to_vec();
        bad.extend(&forged);
        bad.extend(&data[spans[1].start..]);
        let (records, good, warning) = decode_all(&bad);
        assert_eq!(records, all);
        assert_eq!(good, bad.len());
        assert!(warning.unwrap().contains("skipped"));
    }

    /// Found by the journal fuzz target (fuzz/corpus/journal/
    /// crash-short-record-before-sync): after damage, a header of length 0
    /// (or any length shorter than the sync pattern) just before the
    /// pattern was taken for a record, so the good prefix ended inside the
    /// pattern that vouched for it, and the same journal cut there (as a
    /// reopen cuts it) read differently.
    #[test]
    fn a_record_is_found_again_only_where_its_payload_starts_with_the_pattern() {
        for payload in [&b""[..], b"{\"t"] {
            let mut data = vec![0xff; HEADER];
            data.extend(u32::try_from(payload.len()).unwrap().to_le_bytes());
            data.extend(crc32(payload).to_le_bytes());
            data.extend(SYNC);
            data.extend(b"1}");
            let (records, good, warning) = decode_all(&data);
            assert_eq!((records.len(), good), (0, 0), "{payload:?}");
            assert!(warning
                .unwrap()
                .contains(&format!("skipped {} byte(s)", data.len())));
            let (_, again, _) = decode_all(&data[..good]);
            assert_eq!(again, good);
        }
    }

    #[test]
    fn a_zero_filled_tail_is_damage_and_cut_at_open() {
        let all = varied(3);
        let (mut data, spans) = journal_of(&all);
        let end = data.len();
        // What a power cut can leave: the file's size grew, its last block
        // is zeros.
        data.extend([0u8; 4096]);
        let (records, good, warning) = decode_all(&data);
        assert_eq!(records, all);
        assert_eq!(good, end);
        assert!(warning.unwrap().contains("bad record length 0"));
        // Zeros in the middle cost nothing but themselves.
        let mut middle = data[..spans[1].start].to_vec();
        middle.extend([0u8; 100]);
        middle.extend(&data[spans[1].start..end]);
        let (records, good, _) = decode_all(&middle);
        assert_eq!((records, good), (all, middle.len()));
    }

    #[test]
    fn every_torn_tail_keeps_the_whole_records_before_it() {
        let all = varied(4);
        let (data, spans) = journal_of(&all);
        for cut in 0..=data.len() {
            let (records, good, warning) = decode_all(&data[..cut]);
            let whole = spans.iter().filter(|s| s.end <= cut).count();
            assert_eq!(records, all[..whole].to_vec(), "cut at {cut}");
            let end = if whole == 0 { 0 } else { spans[whole - 1].end };
            assert_eq!(good, end, "cut at {cut}");
            assert_eq!(warning.is_some(), cut != end, "cut at {cut}");
        }
    }

    /// What `scan` finds, reading `data` `chunk` bytes at a time, against
    /// `decode_all` holding all of it.
    fn scans_alike(data: &[u8], chunk: usize) {
        let (_, good, warning) = decode_all(data);
        let (got, _) = scan(data, chunk).unwrap();
        assert_eq!(
            (got.good, got.len, &got.warning),
            (good, data.len(), &warning),
            "chunk {chunk}, {} bytes",
            data.len()
        );
        let (whole, _) = walk(data, |p| serde_json::from_slice::<Record>(p).is_ok()).unwrap();
        assert_eq!(got.tail, whole.tail, "chunk {chunk}, {} bytes", data.len());
    }

    #[test]
    fn a_scan_in_chunks_finds_what_reading_it_whole_finds() {
        let all = varied(7);
        let (data, spans) = journal_of(&all);
        for chunk in [1, 3, 8, 13, 64, SCAN_CHUNK] {
            for offset in (0..data.len()).step_by(5) {
                let mut bad = data.clone();
                bad[offset] ^= 0x20;
                scans_alike(&bad, chunk);
            }
            for cut in (0..=data.len()).step_by(7) {
                scans_alike(&data[..cut], chunk);
            }
            let mut zeros = data.clone();
            zeros.extend([0u8; 300]);
            scans_alike(&zeros, chunk);
            let mut junk = data[..spans[2].start].to_vec();
            junk.extend(b"xx{\"time_us\":1junk{\"time_us\":");
            junk.extend(&data[spans[2].start..]);
            junk.extend(&data[spans[4].start..spans[4].end - 3]);
            scans_alike(&junk, chunk);
            scans_alike(b"", chunk);
        }
        // An unreadable record (the checksum holds, the JSON is no record)
        // and several damaged stretches.
        let mut odd = data.clone();
        let payload = b"{\"time_us\":\"not a number\"}";
        odd.extend(u32::try_from(payload.len()).unwrap().to_le_bytes());
        odd.extend(crc32(payload).to_le_bytes());
        odd.extend(payload);
        odd[spans[1].start + 9] ^= 1;
        odd[spans[3].start + 9] ^= 1;
        odd.extend(&data);
        for chunk in [1, 7, SCAN_CHUNK] {
            scans_alike(&odd, chunk);
        }
    }

    #[test]
    fn opening_a_full_journal_holds_a_chunk_of_it_not_the_file() {
        // 8 MiB of records, as a publisher's journal holds before rotating.
        let mut data = Vec::new();
        let mut i = 0;
        while data.len() < DEFAULT_LIMIT as usize {
            data.extend(frame(&rec(i)));
            i += 1;
        }
        let torn = frame(&rec(i));
        data.extend(&torn[..torn.len() / 2]);
        let (scanned, peak) = scan(data.as_slice(), SCAN_CHUNK).unwrap();
        assert_eq!(scanned.len, data.len());
        assert_eq!(scanned.good, data.len() - torn.len() / 2);
        assert!(peak <= 2 * SCAN_CHUNK, "the window took {peak} bytes");

        // Damage that makes the scan look far for the next record.
        let mut garbled = data.clone();
        for b in garbled.iter_mut().take(DEFAULT_LIMIT as usize / 2).skip(10) {
            *b = b'x';
        }
        let (_, peak) = scan(garbled.as_slice(), SCAN_CHUNK).unwrap();
        assert!(peak <= 2 * SCAN_CHUNK, "the window took {peak} bytes");
    }

    /// Every record of `data` a `FileReader` hands out, reading `chunk`
    /// bytes at a time, and what it found.
    fn read_through(
        data: &[u8],
        only: Option<&Only>,
        chunk: usize,
        path: &Path,
    ) -> (Vec<Record>, Scanned, usize) {
        std::fs::write(path, data).unwrap();
        let mut r = FileReader::with_chunk(File::open(path).unwrap(), only.cloned(), chunk);
        let mut got = Vec::new();
        while let Some(record) = r.next_record().unwrap() {
            got.push(record);
        }
        let peak = r.walker.src.peak;
        (got, r.finish(), peak)
    }

    #[test]
    fn a_file_read_a_record_at_a_time_reads_as_the_whole_slice() {
        let d = tmp("reader");
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("journal");
        let all = varied(7);
        let (data, spans) = journal_of(&all);
        let mut cases = vec![data.clone(), Vec::new()];
        for offset in (0..data.len()).step_by(11) {
            let mut bad = data.clone();
            bad[offset] ^= 0x20;
            cases.push(bad);
        }
        for cut in (0..=data.len()).step_by(9) {
            cases.push(data[..cut].to_vec());
        }
        let mut zeros = data.clone();
        zeros.extend([0u8; 300]);
        cases.push(zeros);
        let mut junk = data[..spans[2].start].to_vec();
        junk.extend(b"xx{\"time_us\":1junk{\"time_us\":");
        junk.extend(&data[spans[2].start..]);
        cases.push(junk);
        let s1 = Only::field("service", "s1");
        for case in &cases {
            for only in [None, Some(&s1)] {
                let (want, good, warning) = decode_matching(case, only);
                for chunk in [1, 13, READ_CHUNK] {
                    let (got, scanned, _) = read_through(case, only, chunk, &path);
                    assert_eq!(got, want, "chunk {chunk}");
                    assert_eq!((scanned.good, &scanned.warning), (good, &warning));
                }
            }
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn how_a_journal_ends_is_told_by_its_kind_not_its_text() {
        let d = tmp("tail");
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("journal");
        let all = varied(4);
        let (data, spans) = journal_of(&all);
        let read = |bytes: &[u8]| read_through(bytes, None, 7, &path);
        assert_eq!(read(&data).1.tail, None);
        for cut in [
            spans[3].start + 3,
            spans[3].start + HEADER + 2,
            data.len() - 1,
        ] {
            let (got, scanned, _) = read(&data[..cut]);
            assert_eq!(got, all[..3].to_vec(), "cut at {cut}");
            assert_eq!(scanned.tail, Some(Damage::Torn), "cut at {cut}");
        }
        let mut zeros = data.clone();
        zeros.extend([0u8; 64]);
        assert_eq!(read(&zeros).1.tail, Some(Damage::BadLength(0)));
        // Damage in the middle is skipped; the journal still ends whole.
        let mut bad = data.clone();
        bad[spans[1].start + HEADER + 3] ^= 1;
        let (got, scanned, _) = read(&bad);
        assert_eq!(got.len(), 3);
        assert_eq!(scanned.tail, None);
        assert!(scanned.warning.unwrap().starts_with("checksum mismatch"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reading_a_full_journal_a_record_at_a_time_holds_a_chunk_of_it() {
        let d = tmp("reader-big");
        std::fs::create_dir_all(&d).unwrap();
        let mut data = Vec::new();
        let mut i = 0;
        while data.len() < DEFAULT_LIMIT as usize {
            data.extend(frame(&rec(i)));
            i += 1;
        }
        let (got, scanned, peak) = read_through(&data, None, READ_CHUNK, &d.join("journal"));
        assert_eq!(got.len() as u64, i);
        assert_eq!(scanned.good, data.len());
        assert!(peak <= 2 * READ_CHUNK, "the window took {peak} bytes");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reopening_keeps_records_after_a_bad_one_and_cuts_only_the_tail() {
        let d = tmp("mid");
        let all = varied(5);
        let (mut data, spans) = journal_of(&all);
        data[spans[2].start + 3] ^= 0x40;
        let torn = frame(&rec(9));
        data.extend(&torn[..torn.len() - 4]);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("journal"), &data).unwrap();
        let (mut j, w) = Journal::open(&d, DEFAULT_LIMIT).unwrap();
        assert!(w.unwrap().contains("cut off"));
        assert!(matches!(j.append(&rec(10)), Appended::Written));
        let (got, warnings) = read_all(&d);
        let mut want = all.clone();
        want.remove(2);
        want.push(rec(10));
        assert_eq!(got, want);
        assert_eq!(warnings.len(), 1, "the damaged record is still reported");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failing_write_is_retried_and_the_lost_records_counted() {
        let d = tmp("full");
        let (mut j, _) = Journal::open(&d, DEFAULT_LIMIT).unwrap();
        assert!(matches!(j.append(&rec(0)), Appended::Written));
        let healthy = j
            .file
            .replace(OpenOptions::new().append(true).open("/dev/full").unwrap());
        let first = j.append(&rec(1));
        let line = first.log_line().unwrap();
        assert!(matches!(first, Appended::Failed(_)), "{first:?}");
        assert!(line.contains("No space left on device"), "{line}");
        for i in 2..5 {
            let a = j.append(&rec(i));
            assert!(matches!(a, Appended::Lost), "{a:?}");
            assert!(
                a.log_line().is_none(),
                "one line per failure, not per record"
            );
        }
        j.file = healthy;
        let back = j.append(&rec(5));
        assert!(matches!(back, Appended::Resumed { lost: 4 }), "{back:?}");
        assert!(back.log_line().unwrap().contains("4 record(s) were lost"));
        assert!(matches!(j.append(&rec(6)), Appended::Written));
        let (all, warnings) = read_all(&d);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(all, vec![rec(0), rec(5), rec(6)]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_unopened_journal_opens_at_the_next_append_and_counts_what_it_lost() {
        let d = tmp("unopened");
        std::fs::create_dir_all(&d).unwrap();
        // The state directory's place is taken by a file: nothing opens.
        let blocked = d.join("state");
        std::fs::write(&blocked, b"not a directory").unwrap();
        let mut j = Journal::unopened(&blocked, DEFAULT_LIMIT);
        for i in 0..3 {
            let a = j.append(&rec(i));
            assert!(matches!(a, Appended::Lost), "{a:?}");
            assert!(a.log_line().is_none(), "the open failure was reported");
        }
        std::fs::remove_file(&blocked).unwrap();
        let back = j.append(&rec(3));
        assert!(matches!(back, Appended::Resumed { lost: 3 }), "{back:?}");
        assert!(matches!(j.append(&rec(4)), Appended::Written));
        let (all, warnings) = read_all(&blocked);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(all, vec![rec(3), rec(4)]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rotation_keeps_one_old_generation() {
        let d = tmp("rot");
        let one = frame(&rec(0)).len() as u64;
        let (mut j, _) = Journal::open(&d, one * 4).unwrap();
        for i in 0..10 {
            assert!(matches!(j.append(&rec(i)), Appended::Written));
        }
        let (all, _) = read_all(&d);
        // the newest records survive, in order, across both generations
        assert!(d.join("journal.1").exists());
        assert!(all.len() >= 4, "{all:?}");
        let first = 10 - all.len() as u64;
        assert_eq!(all, (first..10).map(rec).collect::<Vec<_>>());
        assert!(std::fs::metadata(d.join("journal")).unwrap().len() <= one * 5);
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn frames_of(records: impl IntoIterator<Item = Record>) -> Frames {
        let mut frames = Frames::default();
        for r in records {
            frames.push(&frame(&r));
        }
        frames
    }

    #[test]
    fn frame_into_a_used_buffer_frames_as_frame_does() {
        let mut buf = b"left over from the last record".to_vec();
        for i in 0..3 {
            frame_into(&mut buf, &rec(i));
            assert_eq!(buf, frame(&rec(i)));
        }
    }

    #[test]
    fn a_batch_reaches_the_file_in_order_and_in_one_write() {
        let d = tmp("batch");
        let (mut j, _) = Journal::open(&d, DEFAULT_LIMIT).unwrap();
        assert!(matches!(j.append(&rec(0)), Appended::Written));
        let frames = frames_of((1..200).map(rec));
        assert_eq!(frames.len(), 199);
        assert_eq!(
            frames.iter().collect::<Vec<_>>(),
            (1..200).map(|i| frame(&rec(i))).collect::<Vec<_>>()
        );
        assert!(j.append_frames(&frames).is_empty(), "nothing to tell");
        let (all, warnings) = read_all(&d);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(all, (0..200).map(rec).collect::<Vec<_>>());
        assert_eq!(j.size, std::fs::metadata(d.join("journal")).unwrap().len());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_batch_past_the_limit_rotates_between_two_of_its_records() {
        let d = tmp("batch-rot");
        let one = frame(&rec(1)).len() as u64;
        // Room for three and a half records: the fourth of a run must go
        // to the next file whole, not split across the two.
        let limit = one * 7 / 2;
        let (mut j, _) = Journal::open(&d, limit).unwrap();
        assert!(matches!(j.append(&rec(0)), Appended::Written));
        assert!(j.append_frames(&frames_of((1..10).map(rec))).is_empty());
        for file in files(&d) {
            let (records, warning) = read_file(&file, None);
            assert_eq!(warning, None, "{}: a record split", file.display());
            let len = std::fs::metadata(&file).unwrap().len();
            assert!(len <= limit, "{}: {len} > {limit}", file.display());
            assert!(!records.is_empty(), "{}", file.display());
        }
        let (all, _) = read_all(&d);
        let first = 10 - all.len() as u64;
        assert!(first > 0, "rotated twice: {all:?}");
        assert_eq!(all, (first..10).map(rec).collect::<Vec<_>>());
        // A record larger than the limit still goes in, in a file of its
        // own, and the batch goes on after it.
        let big = Record {
            reason: Some("x".repeat(limit as usize)),
            ..rec(10)
        };
        let told = j.append_frames(&frames_of([big.clone(), rec(11)]));
        assert!(told.is_empty(), "{told:?}");
        let (old, _) = read_file(&d.join("journal.1"), None);
        let (new, _) = read_file(&d.join("journal"), None);
        assert_eq!((old, new), (vec![big], vec![rec(11)]));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_batch_on_a_full_disk_is_told_once_and_counted_per_record() {
        let d = tmp("batch-full");
        let (mut j, _) = Journal::open(&d, DEFAULT_LIMIT).unwrap();
        assert!(j.append_frames(&frames_of([rec(0)])).is_empty());
        let healthy = j
            .file
            .replace(OpenOptions::new().append(true).open("/dev/full").unwrap());
        let told = j.append_frames(&frames_of((1..4).map(rec)));
        assert!(matches!(told[..], [Appended::Failed(_)]), "{told:?}");
        assert!(j.append_frames(&frames_of([rec(4)])).is_empty());
        j.file = healthy;
        let told = j.append_frames(&frames_of((5..7).map(rec)));
        assert!(
            matches!(told[..], [Appended::Resumed { lost: 4 }]),
            "{told:?}"
        );
        let (all, warnings) = read_all(&d);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(all, vec![rec(0), rec(5), rec(6)]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_batch_for_an_unopened_journal_counts_it_all_until_it_opens() {
        let d = tmp("batch-unopened");
        std::fs::create_dir_all(&d).unwrap();
        let blocked = d.join("state");
        std::fs::write(&blocked, b"not a directory").unwrap();
        let mut j = Journal::unopened(&blocked, DEFAULT_LIMIT);
        assert!(j.append_frames(&frames_of((0..3).map(rec))).is_empty());
        std::fs::remove_file(&blocked).unwrap();
        let told = j.append_frames(&frames_of((3..5).map(rec)));
        assert!(
            matches!(told[..], [Appended::Resumed { lost: 3 }]),
            "{told:?}"
        );
        let (all, _) = read_all(&blocked);
        assert_eq!(all, vec![rec(3), rec(4)]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
