//! A log file: lines appended (O_APPEND, 0640), rotated by size, reopened
//! on request (`zurg reload`, SIGUSR1) for an external logrotate.
//!
//! One `FileSink` per file, shared (`Shared`) by every stream that logs to
//! it, two services' or a service's stdout and stderr: with a sink each,
//! one writer's rotation moved the file from under the others, whose lines
//! then went to a renamed or deleted file, and each rotated by its own
//! count of the bytes. Writers are told apart (`Writer::id`) so that a
//! partial line of one is ended before another's line follows it.
//!
//! Writes happen on the event loop, so they are bounded: lines collect in a
//! buffer that is written once per read of the pipe (at most one turn's
//! budget of bytes). A write that fails (ENOSPC, EIO) drops the buffered
//! lines and counts them; the first failure is logged once, and the first
//! write that succeeds again says how many were lost. Only whole lines are
//! dropped: a write the disk took in part is cut back (ftruncate) to the
//! end of its last whole line, and the rest of a line it cut is dropped
//! too when it comes, so the file never holds a torn line or two lines
//! glued together.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::lines::Piece;
use crate::lost_lines::LostLines;
use crate::os::write_all::{write_all, WriteError};
use crate::unit::FileOutput;

/// Buffered bytes beyond which the buffer is written at once.
const BUFFER_BYTES: usize = 64 * 1024;

/// A sink and the streams writing to it (the event loop's thread only).
pub type Shared = Rc<RefCell<FileSink>>;

/// One stream writing to a sink: which it is, and whether its lines start
/// with a time (a per-unit choice, so two units sharing a file may differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writer {
    pub id: usize,
    pub timestamps: bool,
}

/// The key of a log file's sink: its path with the directory's symbolic
/// links and `..` resolved, so two spellings of one file share a sink.
/// The file itself need not exist yet; a directory that does not exist
/// leaves the path as written.
pub fn canonical(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

#[derive(Debug)]
pub struct FileSink {
    /// The first writer's settings: its path, and the rotation (`max_bytes`,
    /// `keep`) every writer of the file gets.
    pub cfg: FileOutput,
    /// For log lines: `[NAME] stdout` of the first writer.
    who: String,
    /// The writer whose partial line the file ends with, if one does.
    mid_line: Option<usize>,
    file: Option<File>,
    /// Bytes in the file, as zurg counts them (its own writes since open).
    size: u64,
    /// Where the file's last whole line ends (`size` unless it ends with a
    /// partial line): a failed write cuts the file back to here.
    line_end: u64,
    /// The writer the rest of whose line is dropped: its start was in a
    /// failed write.
    skipping: Option<usize>,
    /// The file may end with a torn line (a failed write that could not be
    /// cut back): the next write starts with a newline.
    torn: bool,
    buf: Vec<u8>,
    /// Whole lines in `buf` (what a failed write loses).
    buf_lines: u64,
    /// Lines lost since writes started failing, and the failure to log.
    lost: LostLines<WriteError>,
}

/// Why a log file at `path` could not be opened for appending, found
/// without opening it (`zurg check`): its directory missing or not one, a
/// directory or file the caller may not write. `None` when it looks
/// writable. The caller's rights are asked (access(2)): run `zurg check`
/// as the user `zurg run` runs as.
pub fn problem(path: &Path) -> Option<String> {
    use nix::unistd::{access, AccessFlags};
    let dir = path.parent().unwrap_or(Path::new("/"));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Some(format!("{} is not a directory", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("directory {} does not exist", dir.display()))
        }
        Err(e) => return Some(format!("directory {}: {e}", dir.display())),
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Some(format!("{} is a directory", path.display())),
        Ok(_) => {
            return access(path, AccessFlags::W_OK)
                .err()
                .map(|e| format!("cannot write to {}: {}", path.display(), e.desc()))
        }
        Err(_) => {}
    }
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK)
        .err()
        .map(|e| {
            format!(
                "cannot create files in directory {}: {}",
                dir.display(),
                e.desc()
            )
        })
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
            mid_line: None,
            size: 0,
            line_end: 0,
            skipping: None,
            torn: false,
            buf: Vec::new(),
            buf_lines: 0,
            lost: LostLines::default(),
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
                self.line_end = len;
            }
            Err(e) => {
                self.file = None;
                crate::log!(
                    "warning: {}: cannot open log file {}: {e}; its lines go to zurg's own stream of that name, labelled, until `zurg reload` or SIGUSR1 opens it",
                    self.who,
                    self.cfg.path.display()
                );
            }
        }
    }

    /// The file is open: lines written now reach it.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Another writer's partial line ends here, before `by`'s piece: two
    /// writers' lines are never glued into one.
    fn end_others_line(&mut self, by: usize) {
        if self.mid_line.is_some_and(|w| w != by) {
            self.buf.push(b'\n');
            self.buf_lines += 1;
            self.mid_line = None;
        }
    }

    /// Adds one piece of a line (see `lines::Piece`), rotating first when
    /// it would take the file past `max_bytes`.
    pub fn push(&mut self, piece: &[u8], mut kind: Piece, time_us: u64, w: Writer) {
        if self.skipping == Some(w.id) {
            if !kind.starts {
                if kind.ends {
                    self.skipping = None;
                    self.lost.count(1);
                }
                return;
            }
            self.skipping = None;
        }
        self.end_others_line(w.id);
        if !kind.starts && self.mid_line != Some(w.id) {
            // Its line's start was ended by another writer's line (or
            // lost): the rest starts a line of its own.
            kind.starts = true;
        }
        let stamp = if kind.starts && w.timestamps {
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
            self.mid_line = None;
        } else {
            self.mid_line = Some(w.id);
        }
        if self.buf.len() >= BUFFER_BYTES {
            self.write_out();
        }
    }

    /// Whether `write_run` may take a run of `len` bytes of whole lines:
    /// no timestamps to add, and it all fits in the file, so no line in it
    /// would have rotated the file (see `push`).
    pub fn takes_run(&self, len: usize, w: Writer) -> bool {
        let used = self
            .size
            .saturating_add(u64::try_from(self.buf.len()).unwrap_or(u64::MAX))
            .saturating_add(u64::from(self.mid_line.is_some()));
        !w.timestamps
            && self.file.is_some()
            && used.saturating_add(u64::try_from(len).unwrap_or(u64::MAX)) <= self.cfg.max_bytes
    }

    /// Writes `run`, `lines` whole lines exactly as read (after what is
    /// buffered), straight from the caller's buffer: one write for a read
    /// of many lines instead of a copy of each. Only when `takes_run`, and
    /// `w` is at a line start.
    pub fn write_run(&mut self, run: &[u8], lines: u64, w: Writer) {
        if self.skipping == Some(w.id) {
            self.skipping = None;
        }
        // Another writer's partial line is ended first.
        self.end_others_line(w.id);
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
    /// drops them (counted), but for the whole lines the disk took.
    fn write_bytes(&mut self, first: &[u8], then: &[u8], lines: u64) {
        let len = first.len().saturating_add(then.len());
        let Some(f) = &mut self.file else {
            self.lost.count(lines);
            return;
        };
        if self.torn && write_all(f.as_fd(), [b"\n"]).1.is_ok() {
            self.torn = false;
            self.size = self.size.saturating_add(1);
            self.line_end = self.size;
        }
        let (done, result) = if self.torn {
            (0, Err(WriteError::Zero))
        } else {
            write_all(f.as_fd(), [first, then])
        };
        match result {
            Ok(()) => {
                if let Some(last_nl) = last_newline(first, then, len) {
                    self.line_end = self.size.saturating_add(as_u64(last_nl + 1));
                }
                self.size = self.size.saturating_add(as_u64(len));
                self.lost.wrote();
                if let Some((n, _)) = self.lost.recovered() {
                    crate::log!(
                        "{}: writing to {} again; {n} lines were dropped",
                        self.who,
                        self.cfg.path.display(),
                    );
                }
            }
            Err(e) => {
                // The whole lines the disk took stay; the rest is cut off,
                // with the start of a line the file already had.
                let (kept_bytes, kept_lines) = match last_newline(first, then, done) {
                    Some(nl) => (
                        self.size.saturating_add(as_u64(nl + 1)),
                        newlines(first, then, nl + 1),
                    ),
                    None => (self.line_end, 0),
                };
                self.lost.failed(lines.saturating_sub(kept_lines), e);
                let last = then.last().or(first.last());
                if last.is_some_and(|b| *b != b'\n') {
                    // Its line's rest, when it comes, is dropped too.
                    self.skipping = self.mid_line;
                }
                self.mid_line = None;
                match f.set_len(kept_bytes) {
                    Ok(()) => {
                        self.size = kept_bytes;
                        self.line_end = kept_bytes;
                    }
                    Err(_) => {
                        self.torn = true;
                        if let Ok(m) = f.metadata() {
                            self.size = m.len();
                        }
                        self.line_end = self.size;
                    }
                }
                if let Some(e) = self.lost.first_failure() {
                    let e = std::io::Error::from(e);
                    crate::log!(
                        "{}: cannot write to {}: {e}; dropping its lines (counted) until writes succeed again",
                        self.who,
                        self.cfg.path.display()
                    );
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

/// Where the last newline of `first` and `then` (as one) is, among their
/// first `within` bytes.
fn last_newline(first: &[u8], then: &[u8], within: usize) -> Option<usize> {
    let t = then
        .get(..within.saturating_sub(first.len()))
        .unwrap_or(then);
    if let Some(i) = memchr::memrchr(b'\n', t) {
        return Some(first.len().saturating_add(i));
    }
    memchr::memrchr(b'\n', first.get(..within).unwrap_or(first))
}

/// Newlines among the first `within` bytes of `first` and `then`.
fn newlines(first: &[u8], then: &[u8], within: usize) -> u64 {
    let f = first.get(..within).unwrap_or(first);
    let t = then
        .get(..within.saturating_sub(first.len()))
        .unwrap_or(then);
    as_u64(memchr::memchr_iter(b'\n', f).count() + memchr::memchr_iter(b'\n', t).count())
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(starts: bool, ends: bool) -> Piece {
        Piece { starts, ends }
    }

    #[test]
    fn rotation_keeps_exactly_keep_files_of_at_most_max_bytes() {
        let tmp = crate::test_dir::TestDir::new("sink");
        let dir = tmp.path();
        let path = dir.join("svc.log");
        let cfg = FileOutput {
            path: path.clone(),
            max_bytes: 100,
            keep: 2,
            timestamps: false,
        };
        let mut sink = FileSink::open(cfg, "[svc] stdout".into());
        let w = Writer {
            id: 0,
            timestamps: false,
        };
        for i in 0..100 {
            sink.push(
                format!("line {i:04} 789").as_bytes(),
                piece(true, true),
                0,
                w,
            );
        }
        sink.write_out();
        let mut names: Vec<String> = std::fs::read_dir(dir)
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
        assert!(sink.takes_run(100 - last.len(), w));
        assert!(!sink.takes_run(100 - last.len() + 1, w));
        sink.write_run(b"a\nb\n", 2, w);
        let now = std::fs::read_to_string(&path).unwrap();
        assert_eq!(now, format!("{last}a\nb\n"));
    }

    #[test]
    fn a_partial_line_of_one_writer_is_ended_before_anothers_line() {
        let tmp = crate::test_dir::TestDir::new("sink2");
        let dir = tmp.path();
        let path = dir.join("two.log");
        let cfg = FileOutput {
            path: path.clone(),
            max_bytes: 1 << 20,
            keep: 1,
            timestamps: false,
        };
        let mut sink = FileSink::open(cfg, "[a] stdout".into());
        let [a, b] = [1, 2].map(|id| Writer {
            id,
            timestamps: false,
        });
        sink.push(b"a-head", piece(true, false), 0, a);
        sink.push(b"b-line", piece(true, true), 0, b);
        sink.push(b"a-tail", piece(false, true), 0, a);
        sink.push(b"a-head2", piece(true, false), 0, a);
        sink.write_out();
        sink.write_run(b"b2\n", 1, b);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "a-head\nb-line\na-tail\na-head2\nb2\n");
        let other = dir
            .join("..")
            .join(dir.file_name().unwrap())
            .join("new.log");
        assert_eq!(canonical(&other), canonical(dir).join("new.log"));
    }
}
