//! The only reap path: waitpid(-1, WNOHANG) until nothing is left to collect.
//!
//! Services and orphans alike are collected here; the caller matches each pid
//! against its own children. That match is exact because a child's pid cannot
//! be reused until this very call has reaped it.

use std::io;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal { signo: i32, core_dumped: bool },
}

impl ExitStatus {
    fn from_raw(status: libc::c_int) -> ExitStatus {
        if libc::WIFSIGNALED(status) {
            ExitStatus::Signal {
                signo: libc::WTERMSIG(status),
                core_dumped: libc::WCOREDUMP(status),
            }
        } else {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        }
    }

    /// The shell's convention: the code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal { signo, .. } => 128 + signo,
        }
    }
}

/// Outcome of one reap pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Children remain, none of them dead right now.
    ChildrenLeft,
    /// No child at all (ECHILD): everything we ever started is gone.
    NoChildren,
}

/// Collects every dead child, calling `on_exit(pid, status)` for each.
pub fn reap_all(mut on_exit: impl FnMut(i32, ExitStatus)) -> Drained {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes one int through a pointer to a live local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        match pid {
            0 => return Drained::ChildrenLeft,
            p if p > 0 => {
                // Stopped/continued children are not reported without
                // WUNTRACED/WCONTINUED, so this is an exit.
                on_exit(p, ExitStatus::from_raw(status));
            }
            _ => match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                _ => return Drained::NoChildren,
            },
        }
    }
}
