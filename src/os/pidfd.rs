//! Owned process file descriptors: a handle on one process that can never
//! refer to another, even after its pid is recycled.
//!
//! Signals to services go through `send_signal` so that a stop or restart
//! cannot hit an unrelated process that inherited a dead service's pid.
//! Exits are not read from here: `reap` is the only reap path.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    /// Opens a pidfd for `pid`. Fails with ENOSYS on kernels before 5.3 and
    /// EMFILE when the descriptor table is full; callers fall back to the pid,
    /// which is safe for their own unreaped children.
    pub fn open(pid: i32) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
        // no memory is passed.
        let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = RawFd::try_from(ret).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: the kernel just returned this fd to us and nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(PidFd { fd, pid })
    }

    /// Wraps a pidfd the kernel gave us some other way (CLONE_PIDFD).
    pub fn from_owned(fd: OwnedFd, pid: i32) -> PidFd {
        PidFd { fd, pid }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signo` to exactly the process this fd was opened on.
    /// ESRCH means it has already exited.
    pub fn send_signal(&self, signo: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a valid fd, a signal number, a null
        // siginfo (the kernel fills in a SI_USER one) and no flags.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signo,
                std::ptr::null::<libc::siginfo_t>(),
                0 as libc::c_uint,
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// kill(2) for the cases where no pidfd exists: our own unreaped children
/// (their pid cannot be recycled before we reap them) and process groups.
pub fn kill(pid: i32, signo: i32) -> io::Result<()> {
    // SAFETY: kill takes two integers.
    super::cvt(unsafe { libc::kill(pid, signo) }).map(|_| ())
}
