//! The start/exit history: an append-only journal in the state directory.
//!
//! Each record is framed as `len (u32 LE) | crc32 (u32 LE) | JSON payload`,
//! written with one write(2). On open the journal is replayed from the
//! start; a torn or corrupt tail (zurg or the machine died mid-write) is cut
//! off so appends continue from the last good record. A corrupt record in
//! the middle cannot be skipped safely (its length may be wrong too), so
//! reading stops there and says so. Past `limit` bytes the file is renamed
//! to `journal.1` (one old generation kept) and a new one begun; history
//! reads `journal.1` then `journal`.
//!
//! Records are not fsynced one by one: a power cut may lose the last few,
//! which costs history, never correctness (GPIDs do not depend on it).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::control::proto::ExitInfo;
use crate::stats::Sample;

pub const DEFAULT_LIMIT: u64 = 8 << 20;
/// A record longer than this is treated as corruption.
const MAX_RECORD: u32 = 1 << 20;
const HEADER: usize = 8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Wall clock, µs since the epoch.
    pub time_us: u64,
    pub service: String,
    /// "start" or "exit".
    pub kind: String,
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
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open journal {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot write journal {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot rotate journal {path}: {source}")]
    Rotate { path: PathBuf, source: io::Error },
}

/// CRC-32 (IEEE) of every byte value, so a record costs one lookup per
/// byte: reading a full journal back is on the event loop.
// Evaluated at compile time: an index out of range fails the build.
#[allow(clippy::indexing_slicing)]
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        let entry = CRC_TABLE
            .get(usize::from((crc as u8) ^ b))
            .copied()
            .unwrap_or(0);
        crc = (crc >> 8) ^ entry;
    }
    !crc
}

pub fn frame(record: &Record) -> Vec<u8> {
    let payload = serde_json::to_vec(record).unwrap_or_default();
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
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
#[derive(Debug, Clone)]
pub struct Only(Vec<u8>);

impl Only {
    pub fn field(name: &str, value: &str) -> Only {
        // The journal is written by serde_json, so the value is found
        // exactly as serde_json writes it.
        let value = serde_json::to_string(value).unwrap_or_default();
        Only(format!("\"{name}\":{value}").into_bytes())
    }

    fn admits(&self, payload: &[u8]) -> bool {
        let Some((&first, _)) = self.0.split_first() else {
            return true;
        };
        let n = self.0.len();
        payload
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == first)
            .any(|(at, _)| payload.get(at..at + n) == Some(self.0.as_slice()))
    }
}

fn decode_matching(data: &[u8], only: Option<&Only>) -> (Vec<Record>, usize, Option<String>) {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let Some(header) = data.get(at..at + HEADER) else {
            return (
                records,
                at,
                Some(format!("torn record header at byte {at}")),
            );
        };
        let len = le32(header.get(..4));
        let crc = le32(header.get(4..));
        if len > MAX_RECORD {
            return (
                records,
                at,
                Some(format!("bad record length {len} at byte {at}")),
            );
        }
        let end = at + HEADER + len as usize;
        let Some(payload) = data.get(at + HEADER..end) else {
            return (records, at, Some(format!("torn record at byte {at}")));
        };
        if crc32(payload) != crc {
            return (records, at, Some(format!("checksum mismatch at byte {at}")));
        }
        if only.is_some_and(|o| !o.admits(payload)) {
            at = end;
            continue;
        }
        match serde_json::from_slice::<Record>(payload) {
            Ok(r) => records.push(r),
            Err(e) => {
                return (
                    records,
                    at,
                    Some(format!("unreadable record at byte {at}: {e}")),
                )
            }
        }
        at = end;
    }
    (records, at, None)
}

#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: File,
    size: u64,
    limit: u64,
}

fn current(dir: &Path) -> PathBuf {
    dir.join("journal")
}

fn previous(dir: &Path) -> PathBuf {
    dir.join("journal.1")
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, cutting off a torn tail.
    /// Returns the journal and a warning if a tail was cut.
    pub fn open(dir: &Path, limit: u64) -> Result<(Journal, Option<String>), JournalError> {
        let path = current(dir);
        let open_err = |source| JournalError::Open {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(open_err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(open_err)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(open_err)?;
        let (_, good, warning) = decode_all(&data);
        if good < data.len() {
            file.set_len(good as u64).map_err(open_err)?;
        }
        let warning = warning.map(|w| {
            format!(
                "journal {}: {w}; cut off {} byte(s)",
                path.display(),
                data.len() - good
            )
        });
        Ok((
            Journal {
                dir: dir.to_path_buf(),
                file,
                size: good as u64,
                limit,
            },
            warning,
        ))
    }

    pub fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        let bytes = frame(record);
        if self.size > 0 && self.size + bytes.len() as u64 > self.limit {
            self.rotate()?;
        }
        self.file
            .write_all(&bytes)
            .map_err(|source| JournalError::Write {
                path: current(&self.dir),
                source,
            })?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), JournalError> {
        let err = |source| JournalError::Rotate {
            path: current(&self.dir),
            source,
        };
        std::fs::rename(current(&self.dir), previous(&self.dir)).map_err(err)?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(current(&self.dir))
            .map_err(err)?;
        self.size = 0;
        Ok(())
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
    for path in [previous(dir), current(dir)] {
        let mut data = Vec::new();
        match File::open(&path).and_then(|mut f| f.read_to_end(&mut data)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                warnings.push(format!("cannot read {}: {e}", path.display()));
                continue;
            }
        }
        let (records, _, warning) = decode_matching(&data, only);
        out.extend(records);
        if let Some(w) = warning {
            warnings.push(format!("{}: {w}", path.display()));
        }
    }
    (out, warnings)
}

/// The records of `service` (all when `None`) at or after `since_us`.
pub fn filter(records: Vec<Record>, service: Option<&str>, since_us: Option<u64>) -> Vec<Record> {
    records
        .into_iter()
        .filter(|r| service.is_none_or(|s| r.service == s))
        .filter(|r| since_us.is_none_or(|t| r.time_us >= t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> Record {
        Record {
            time_us: 1000 + i,
            service: format!("s{}", i % 3),
            kind: if i.is_multiple_of(2) {
                "start".into()
            } else {
                "exit".into()
            },
            gpid: format!("127.0.0.1:0:{}:{}", 1000 + i, 10 + i),
            version: None,
            seq: None,
            zurg: None,
            exit: (i % 2 == 1).then_some(ExitInfo {
                code: Some(1),
                signal: None,
            }),
            stats: None,
        }
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zurg-journal-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn crc_matches_the_standard() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn round_trip_and_reopen() {
        let d = tmp("rt");
        let (mut j, w) = Journal::open(&d, DEFAULT_LIMIT).unwrap();
        assert!(w.is_none());
        for i in 0..10 {
            j.append(&rec(i)).unwrap();
        }
        drop(j);
        let (mut j, _) = Journal::open(&d, DEFAULT_LIMIT).unwrap();
        j.append(&rec(10)).unwrap();
        let (all, warnings) = read_all(&d);
        assert!(warnings.is_empty());
        assert_eq!(all, (0..11).map(rec).collect::<Vec<_>>());
        assert_eq!(filter(all.clone(), Some("s1"), None).len(), 4);
        assert_eq!(filter(all, None, Some(1005)).len(), 6);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_go_on() {
        let d = tmp("torn");
        let (mut j, _) = Journal::open(&d, DEFAULT_LIMIT).unwrap();
        for i in 0..3 {
            j.append(&rec(i)).unwrap();
        }
        drop(j);
        // crash mid-write: half of a fourth record
        let half = frame(&rec(3));
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join("journal"))
            .unwrap();
        f.write_all(&half[..half.len() / 2]).unwrap();
        drop(f);
        let (all, warnings) = read_all(&d);
        assert_eq!(all.len(), 3);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let (mut j, w) = Journal::open(&d, DEFAULT_LIMIT).unwrap();
        assert!(w.unwrap().contains("torn record"));
        j.append(&rec(4)).unwrap();
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
    fn corruption_stops_reading_with_a_warning() {
        let mut data = Vec::new();
        for i in 0..3 {
            data.extend(frame(&rec(i)));
        }
        let second = frame(&rec(0)).len() + HEADER + 2;
        data[second] ^= 0xff;
        let (records, good, warning) = decode_all(&data);
        assert_eq!(records.len(), 1);
        assert_eq!(good, frame(&rec(0)).len());
        assert!(warning.unwrap().contains("checksum mismatch"));
    }

    #[test]
    fn rotation_keeps_one_old_generation() {
        let d = tmp("rot");
        let one = frame(&rec(0)).len() as u64;
        let (mut j, _) = Journal::open(&d, one * 4).unwrap();
        for i in 0..10 {
            j.append(&rec(i)).unwrap();
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
}
