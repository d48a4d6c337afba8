//! Writing everything given to a descriptor, whatever the kernel takes per
//! call: zurg's log writers (its own stdout and stderr, services' log
//! files) all need the same loop, and each needs to know how far it got
//! when a write fails, to count the lines it lost.

use std::io::IoSlice;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;

/// Why `write_all` stopped before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The write failed (a full disk, EIO, a pipe nobody reads any more).
    #[error("{}", .0.desc())]
    Os(Errno),
    /// The kernel took nothing of a non-empty write: trying again would
    /// only spin.
    #[error("write zero")]
    Zero,
}

/// The same error as the standard library's writes give, so text built
/// from it reads as it did when those wrote (`... (os error 28)`).
impl From<WriteError> for std::io::Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Os(e) => std::io::Error::from(e),
            WriteError::Zero => std::io::ErrorKind::WriteZero.into(),
        }
    }
}

/// Writes `bufs` to `fd` in order, as one writev(2) when the kernel takes
/// it all, again from where a short write stopped, and again after EINTR.
/// How many bytes went in, and how it ended: on an error, the bytes before
/// it are written and the rest are not.
pub fn write_all<const N: usize>(
    fd: BorrowedFd<'_>,
    bufs: [&[u8]; N],
) -> (usize, Result<(), WriteError>) {
    let mut slices = bufs.map(IoSlice::new);
    let mut left: &mut [IoSlice<'_>] = &mut slices;
    let mut done = 0usize;
    // Empty slices left in front would make writev return 0 for nothing.
    IoSlice::advance_slices(&mut left, 0);
    while !left.is_empty() {
        match nix::sys::uio::writev(fd, left) {
            Ok(0) => return (done, Err(WriteError::Zero)),
            Ok(n) => {
                done = done.saturating_add(n);
                IoSlice::advance_slices(&mut left, n);
            }
            Err(Errno::EINTR) => {}
            Err(e) => return (done, Err(WriteError::Os(e))),
        }
    }
    (done, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    #[test]
    fn every_slice_goes_in_order_and_the_count_is_the_bytes_written() {
        let (mut r, w) = std::io::pipe().unwrap();
        let (n, res) = write_all(w.as_fd(), [b"ab".as_slice(), b"", b"cde\n"]);
        assert_eq!((n, res), (6, Ok(())));
        let (n, res) = write_all(w.as_fd(), [b"".as_slice(), b""]);
        assert_eq!((n, res), (0, Ok(())));
        drop(w);
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "abcde\n");
    }

    #[test]
    fn a_failed_write_says_why_and_how_much_went_in() {
        let (r, w) = std::io::pipe().unwrap();
        drop(r);
        // A pipe nobody reads: EPIPE (the test harness ignores SIGPIPE).
        let (n, res) = write_all(w.as_fd(), [b"lost\n".as_slice()]);
        assert_eq!((n, res), (0, Err(WriteError::Os(Errno::EPIPE))));
        assert_eq!(
            WriteError::Os(Errno::ENOSPC).to_string(),
            "No space left on device"
        );
        assert_eq!(
            std::io::Error::from(WriteError::Os(Errno::ENOSPC)).to_string(),
            std::io::Error::from_raw_os_error(libc::ENOSPC).to_string()
        );
    }
}
