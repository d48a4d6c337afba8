//! inotify, for noticing a running service's binary being modified or
//! replaced on disk. The fd is non-blocking and lives in the event loop.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::cvt;

/// What the watch reports: writes, and anything that can mean the file was
/// replaced (link count change, move, delete).
const MASK: u32 = libc::IN_MODIFY | libc::IN_ATTRIB | libc::IN_MOVE_SELF | libc::IN_DELETE_SELF;

#[derive(Debug)]
pub struct Inotify {
    fd: OwnedFd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub wd: i32,
    /// Written to (as opposed to relinked, moved or removed).
    pub modified: bool,
}

impl Inotify {
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: inotify_init1 returns a new fd or -1.
        let raw = cvt(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
        // SAFETY: the fd was just created and is ours.
        Ok(Inotify {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    /// Watches `path`; the same file watched twice gives the same wd.
    pub fn watch(&self, path: &Path) -> io::Result<i32> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a valid fd and C string.
        cvt(unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), MASK) })
    }

    pub fn unwatch(&self, wd: i32) {
        // SAFETY: removing a watch by number; an unknown wd is just EINVAL.
        unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
    }

    /// Reads every pending change.
    pub fn drain(&self) -> Vec<Change> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads into a local buffer of the given size.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(n) = usize::try_from(n) else {
                return out;
            };
            if n == 0 {
                return out;
            }
            let mut at = 0;
            let header = std::mem::size_of::<libc::inotify_event>();
            while at + header <= n {
                // SAFETY: the kernel wrote whole events; read_unaligned copes
                // with the byte buffer's alignment.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf.as_ptr().add(at).cast()) };
                if ev.mask & libc::IN_IGNORED == 0 {
                    out.push(Change {
                        wd: ev.wd,
                        modified: ev.mask & libc::IN_MODIFY != 0,
                    });
                }
                at += header + ev.len as usize;
            }
        }
    }
}

impl AsRawFd for Inotify {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
