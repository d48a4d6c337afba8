//! A service's log file: lines appended (O_APPEND, 0640), rotated by size,
//! reopened on request (`zurg reload`, SIGUSR1) for an external logrotate.
//!
//! Writes happen on the event loop, so they are bounded: lines collect in a
//! buffer that is written once per read of the pipe (at most one turn's
//! budget of bytes). A write that fails (ENOSPC, EIO) drops the buffered
//! lines and counts them; the first failure is logged once, and the first
//! write that succeeds again says how many were lost.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::lines::Piece;
use crate::unit::FileOutput;

/// Buffered bytes beyond which the buffer is written at once.
const BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct FileSink {
    pub cfg: FileOutput,
    /// For log lines: `[NAME] stdout`.
    who: String,
    file: Option<File>,
    /// Bytes in the file, as zurg counts them (its own writes since open).
    size: u64,
    buf: Vec<u8>,
    /// Whole lines in `buf` (what a failed write loses).
    buf_lines: u64,
    /// Lines lost since writes started failing.
    dropped: u64,
    /// Writes are failing (and that was logged).
    failing: bool,
}

/// `PATH.N`: the Nth old file.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

impl FileSink {
    pub fn open(cfg: FileOutput, who: String) -> FileSink {
        let mut sink = FileSink {
            cfg,
            who,
            file: None,
            size: 0,
            buf: Vec::new(),
            buf_lines: 0,
            dropped: 0,
            failing: false,
        };
        sink.reopen();
        sink
    }

    /// Opens the path again: after an external `mv`, lines go to a new file.
    pub fn reopen(&mut self) {
        self.write_out();
        let opened = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&self.cfg.path)
            .and_then(|f| f.metadata().map(|m| (f, m.len())));
        match opened {
            Ok((f, len)) => {
                self.file = Some(f);
                self.size = len;
            }
            Err(e) => {
                self.file = None;
                crate::log!(
                    "{}: cannot open {}: {e}; its lines are dropped until `zurg reload` or SIGUSR1 opens it",
                    self.who,
                    self.cfg.path.display()
                );
            }
        }
    }

    /// Adds one piece of a line (see `lines::Piece`), rotating first when
    /// it would take the file past `max_bytes`.
    pub fn push(&mut self, piece: &[u8], kind: Piece, time_us: u64) {
        let stamp = if kind.starts && self.cfg.timestamps {
            let mut t = crate::cli::utc_timestamp(time_us);
            t.push(' ');
            t
        } else {
            String::new()
        };
        let adds = stamp.len() + piece.len() + usize::from(kind.ends);
        let used = self
            .size
            .saturating_add(u64::try_from(self.buf.len()).unwrap_or(u64::MAX));
        // Only at a line's start: a line is never split across files.
        if kind.starts
            && used > 0
            && used.saturating_add(u64::try_from(adds).unwrap_or(u64::MAX)) > self.cfg.max_bytes
        {
            self.write_out();
            self.rotate();
        }
        self.buf.extend_from_slice(stamp.as_bytes());
        self.buf.extend_from_slice(piece);
        if kind.ends {
            self.buf.push(b'\n');
            self.buf_lines += 1;
        }
        if self.buf.len() >= BUFFER_BYTES {
            self.write_out();
        }
    }

    /// Whether `write_run` may take a run of `len` bytes of whole lines:
    /// no timestamps to add, and it all fits in the file, so no line in it
    /// would have rotated the file (see `push`).
    pub fn takes_run(&self, len: usize) -> bool {
        let used = self
            .size
            .saturating_add(u64::try_from(self.buf.len()).unwrap_or(u64::MAX));
        !self.cfg.timestamps
            && self.file.is_some()
            && used.saturating_add(u64::try_from(len).unwrap_or(u64::MAX)) <= self.cfg.max_bytes
    }

    /// Writes `run`, `lines` whole lines exactly as read (after what is
    /// buffered), straight from the caller's buffer: one write for a read
    /// of many lines instead of a copy of each. Only when `takes_run`.
    pub fn write_run(&mut self, run: &[u8], lines: u64) {
        // The buffer holds at most the end of a line begun in an earlier
        // read: both go in one writev.
        let lines = lines.saturating_add(std::mem::take(&mut self.buf_lines));
        let buf = std::mem::take(&mut self.buf);
        self.write_bytes(&buf, run, lines);
        self.buf = buf;
        self.buf.clear();
    }

    /// Writes the buffered lines.
    pub fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.buf_lines);
        let buf = std::mem::take(&mut self.buf);
        self.write_bytes(&buf, &[], lines);
        self.buf = buf;
        self.buf.clear();
    }

    /// Writes `first` then `then`, holding `lines` whole lines; a failure
    /// drops them (counted).
    fn write_bytes(&mut self, first: &[u8], then: &[u8], lines: u64) {
        let len = first.len().saturating_add(then.len());
        let result = match &mut self.file {
            Some(f) => write_all_two(f, first, then),
            None => {
                self.dropped = self.dropped.saturating_add(lines);
                return;
            }
        };
        match result {
            Ok(()) => {
                self.size = self
                    .size
                    .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
                if self.failing {
                    self.failing = false;
                    crate::log!(
                        "{}: writing to {} again; {} lines were dropped",
                        self.who,
                        self.cfg.path.display(),
                        std::mem::take(&mut self.dropped)
                    );
                }
            }
            Err(e) => {
                self.dropped = self.dropped.saturating_add(lines);
                if !self.failing {
                    self.failing = true;
                    crate::log!(
                        "{}: cannot write to {}: {e}; dropping its lines (counted) until writes succeed again",
                        self.who,
                        self.cfg.path.display()
                    );
                }
                // What was written is unknown; what follows goes on a fresh line.
                if let Some(Ok(m)) = self.file.as_ref().map(File::metadata) {
                    self.size = m.len();
                }
            }
        }
    }

    /// PATH.K removed, PATH.(K-1) -> PATH.K, ..., PATH -> PATH.1, and a
    /// new PATH: exactly `keep` old files remain. The oldest goes first so
    /// no rename replaces a file: ext4 (`auto_da_alloc`) starts writing back
    /// a file renamed over another at once, on the event loop, where the
    /// kernel's flusher would do it later anyway.
    fn rotate(&mut self) {
        let path = self.cfg.path.clone();
        let renamed = if self.cfg.keep == 0 {
            std::fs::remove_file(&path)
        } else {
            let _ = std::fs::remove_file(rotated(&path, self.cfg.keep));
            for n in (1..self.cfg.keep).rev() {
                let _ = std::fs::rename(rotated(&path, n), rotated(&path, n + 1));
            }
            std::fs::rename(&path, rotated(&path, 1))
        };
        match renamed {
            Ok(()) => {}
            // Moved away by someone else: a new file is what we want anyway.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                crate::log!(
                    "{}: cannot rotate {}: {e}; it grows past max_bytes",
                    self.who,
                    path.display()
                );
                return;
            }
        }
        self.reopen();
    }
}

/// `first` and `then` written in order, in one writev when the file takes
/// it all (a regular file does, but for a full disk or a signal).
fn write_all_two(f: &mut File, first: &[u8], then: &[u8]) -> std::io::Result<()> {
    let mut bufs = [std::io::IoSlice::new(first), std::io::IoSlice::new(then)];
    let mut bufs: &mut [std::io::IoSlice<'_>] = &mut bufs;
    while bufs.iter().any(|b| !b.is_empty()) {
        match f.write_vectored(bufs) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(starts: bool, ends: bool) -> Piece {
        Piece { starts, ends }
    }

    #[test]
    fn rotation_keeps_exactly_keep_files_of_at_most_max_bytes() {
        let dir = std::env::temp_dir().join(format!("zurg-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("svc.log");
        let cfg = FileOutput {
            path: path.clone(),
            max_bytes: 100,
            keep: 2,
            timestamps: false,
        };
        let mut sink = FileSink::open(cfg, "[svc] stdout".into());
        for i in 0..100 {
            sink.push(format!("line {i:04} 789").as_bytes(), piece(true, true), 0);
        }
        sink.write_out();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["svc.log", "svc.log.1", "svc.log.2"]);
        for name in &names {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            assert!(text.len() <= 100, "{name}: {} bytes", text.len());
            assert!(text.ends_with('\n'));
        }
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(last.ends_with("line 0099 789\n"), "{last}");
        // A run of whole lines goes in as it is while it fits.
        assert!(sink.takes_run(100 - last.len()));
        assert!(!sink.takes_run(100 - last.len() + 1));
        sink.write_run(b"a\nb\n", 2);
        let now = std::fs::read_to_string(&path).unwrap();
        assert_eq!(now, format!("{last}a\nb\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
