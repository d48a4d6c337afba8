//! Checksums of the binaries zurg starts.
//!
//! The rule half is pure: parsing and printing `md5` / `sha256` sums. The
//! I/O half opens the binary once, hashes that open descriptor, and hands
//! the same descriptor to the spawner, which execs it (execveat with
//! AT_EMPTY_PATH), so nothing can swap the file between check and exec.
//! Hashing a large binary before every restart would stall the event loop,
//! so a digest is reused while the opened file is provably the same one:
//! same device, inode, size, mtime and ctime (ctime cannot be set back).

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use md5::{Digest as _, Md5};

use crate::unit::load::OpenError;
use sha2::Sha256;

/// An expected (or computed) checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checksum {
    Md5([u8; 16]),
    Sha256([u8; 32]),
}

impl Checksum {
    pub fn kind(&self) -> &'static str {
        match self {
            Checksum::Md5(_) => "md5",
            Checksum::Sha256(_) => "sha256",
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Checksum::Md5(b) => b,
            Checksum::Sha256(b) => b,
        }
    }

    /// Parses `hex` as a `kind` ("md5" or "sha256") sum, any case.
    pub fn parse(kind: &str, hex: &str) -> Result<Checksum, String> {
        let want = match kind {
            "md5" => 32,
            "sha256" => 64,
            other => return Err(format!("unknown checksum kind {other:?}")),
        };
        if hex.len() != want {
            return Err(format!(
                "expected {want} hex digits for {kind}, found {}",
                hex.len()
            ));
        }
        let mut out = vec![0u8; want / 2];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = hex
                .get(2 * i..2 * i + 2)
                .ok_or_else(|| "not hex".to_string())?;
            *byte = u8::from_str_radix(pair, 16)
                .map_err(|_| format!("{pair:?} is not hex (at digit {})", 2 * i + 1))?;
        }
        Ok(match kind {
            "md5" => Checksum::Md5(out.try_into().map_err(|_| "bad length".to_string())?),
            _ => Checksum::Sha256(out.try_into().map_err(|_| "bad length".to_string())?),
        })
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- I/O half

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path} is {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path} is not executable")]
    NotExecutable { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{kind} mismatch for {path}: expected {expected}, found {actual}")]
    Mismatch {
        path: PathBuf,
        kind: &'static str,
        expected: String,
        actual: String,
    },
}

/// Identity of an opened file, for reusing its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

fn file_id(m: &std::fs::Metadata) -> FileId {
    FileId {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    }
}

/// Hashes everything readable from `file` with the kind of `like`.
pub fn digest(file: &mut File, like: &Checksum) -> io::Result<Checksum> {
    let mut buf = vec![0u8; 1 << 20];
    match like {
        Checksum::Md5(_) => {
            let mut h = Md5::new();
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(buf.get(..n).unwrap_or(&[]));
            }
            Ok(Checksum::Md5(h.finalize().into()))
        }
        Checksum::Sha256(_) => {
            let mut h = Sha256::new();
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(buf.get(..n).unwrap_or(&[]));
            }
            Ok(Checksum::Sha256(h.finalize().into()))
        }
    }
}

/// A binary opened and checked; exec this `file`, not the path.
#[derive(Debug)]
pub struct Verified {
    pub file: File,
    pub actual: Checksum,
    pub id: FileId,
}

/// Opens `path` without blocking and checks it is an executable regular
/// file; returns it with its identity.
fn open_exec(path: &Path) -> Result<(File, FileId), VerifyError> {
    let p = || path.to_path_buf();
    // Never a blocking open: a FIFO at the exec path would hang PID 1.
    let (file, meta) = crate::unit::load::open_regular(path).map_err(|e| match e {
        OpenError::Open(source) => VerifyError::Open { path: p(), source },
        OpenError::Stat(source) => VerifyError::Read { path: p(), source },
        OpenError::NotRegular(kind) => VerifyError::NotRegular { path: p(), kind },
    })?;
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(VerifyError::NotExecutable { path: p() });
    }
    let id = file_id(&meta);
    Ok((file, id))
}

/// The cached digest, when it is of this very file and of `want`'s kind.
fn cached(cache: Option<(FileId, Checksum)>, id: FileId, want: &Checksum) -> Option<Checksum> {
    cache
        .filter(|(cached_id, sum)| *cached_id == id && sum.kind() == want.kind())
        .map(|(_, sum)| sum)
}

fn compare(path: &Path, want: &Checksum, actual: &Checksum) -> Result<(), VerifyError> {
    if actual == want {
        return Ok(());
    }
    Err(VerifyError::Mismatch {
        path: path.to_path_buf(),
        kind: want.kind(),
        expected: want.to_string(),
        actual: actual.to_string(),
    })
}

/// Opens `path`, checks it is an executable regular file, and hashes the
/// opened file unless `cache` holds the digest of this very file.
pub fn open_verified(
    path: &Path,
    want: &Checksum,
    cache: Option<(FileId, Checksum)>,
) -> Result<Verified, VerifyError> {
    let (mut file, id) = open_exec(path)?;
    let actual = match cached(cache, id, want) {
        Some(sum) => sum,
        None => digest(&mut file, want).map_err(|source| VerifyError::Read {
            path: path.to_path_buf(),
            source,
        })?,
    };
    compare(path, want, &actual)?;
    Ok(Verified { file, actual, id })
}

/// `open_verified` for the event loop, which must not hash: `None` when
/// `cache` does not vouch for the file as it is now, and the caller has the
/// file hashed elsewhere (`identify`) before it asks again.
pub fn open_if_cached(
    path: &Path,
    want: &Checksum,
    cache: Option<(FileId, Checksum)>,
) -> Result<Option<Verified>, VerifyError> {
    let (file, id) = open_exec(path)?;
    let Some(actual) = cached(cache, id, want) else {
        return Ok(None);
    };
    compare(path, want, &actual)?;
    Ok(Some(Verified { file, actual, id }))
}

/// The identity of the binary at `path` and its digest of `want`'s kind,
/// matching or not: what `open_if_cached` needs in its cache.
pub fn identify(path: &Path, want: &Checksum) -> Result<(FileId, Checksum), VerifyError> {
    let (mut file, id) = open_exec(path)?;
    let actual = digest(&mut file, want).map_err(|source| VerifyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((id, actual))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parse_and_print() {
        let m = Checksum::parse("md5", "D41D8CD98F00B204E9800998ECF8427E").unwrap();
        assert_eq!(m.to_string(), "d41d8cd98f00b204e9800998ecf8427e");
        let s = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(Checksum::parse("sha256", s).unwrap().to_string(), s);
        assert_eq!(
            Checksum::parse("md5", "abc").unwrap_err(),
            "expected 32 hex digits for md5, found 3"
        );
        assert!(Checksum::parse("md5", &"zz".repeat(16))
            .unwrap_err()
            .contains("\"zz\" is not hex"));
        assert!(Checksum::parse("crc", "00").is_err());
    }

    #[test]
    fn verifies_the_opened_file_and_survives_a_swap() {
        let dir = crate::test_dir::TestDir::new("version");
        let path = dir.join("bin");
        std::fs::write(&path, b"hello\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        // md5sum of "hello\n"
        let want = Checksum::parse("md5", "b1946ac92492d2347c6235b4d2611184").unwrap();
        let mut v = open_verified(&path, &want, None).unwrap();
        // replace the path after the check: the opened file is still the old one
        let other = dir.join("other");
        std::fs::File::create(&other)
            .unwrap()
            .write_all(b"evil\n")
            .unwrap();
        std::fs::rename(&other, &path).unwrap();
        let mut again = v.file.try_clone().unwrap();
        use std::io::Seek;
        again.seek(std::io::SeekFrom::Start(0)).unwrap();
        assert_eq!(digest(&mut again, &want).unwrap(), want);
        let _ = &mut v;
        // and the new file at the path is refused, naming both sums
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = open_verified(&path, &want, Some((v.id, v.actual)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected b1946ac92492d2347c6235b4d2611184, found "),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(open_verified(&path, &want, None)
            .unwrap_err()
            .to_string()
            .contains("is not executable"));
        assert!(open_verified(dir.path(), &want, None)
            .unwrap_err()
            .to_string()
            .contains("is a directory, not a regular file"));
        // A FIFO nobody writes to: opening it blocking would hang PID 1.
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(open_verified(&fifo, &want, None)
            .unwrap_err()
            .to_string()
            .contains("fifo is a FIFO, not a regular file"));
    }
}
