//! The only reap paths: `reap_one` for a service whose pidfd became readable
//! (waitid on that pidfd: O(1)), and `reap_all`, waitpid(-1, WNOHANG) until
//! nothing is left, for orphans and anything `reap_one` did not take.
//!
//! The split is for speed: the kernel walks the parent's whole child list in
//! a waitpid(-1) that finds nothing, so with 10,000 services each sweep costs
//! milliseconds. The supervisor reaps and restarts services first, then
//! sweeps. `reap_all`'s callers match each pid against their own children;
//! that match is exact because a child's pid cannot be reused until it is
//! reaped here.

use std::io;
use std::os::fd::AsRawFd;

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

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal { signo, core_dumped } => {
                write!(f, "killed by {}", crate::sig::name(*signo))?;
                if *core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
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

/// waitid's idtype for a pidfd (Linux 5.4); not in the libc crate.
const P_PIDFD: libc::idtype_t = 3;

/// Reaps the child behind `pidfd` if it has exited; `Ok(None)` if it still
/// runs. ECHILD means it was already reaped (by `reap_all`).
pub fn reap_one(pidfd: &impl AsRawFd) -> io::Result<Option<ExitStatus>> {
    reap_id(
        P_PIDFD,
        libc::id_t::try_from(pidfd.as_raw_fd()).unwrap_or(0),
    )
}

/// Reaps child `pid` if it has exited; `Ok(None)` if it still runs. For a
/// child without a pidfd whose SIGCHLD named it: a wait for one pid looks
/// it up directly (Linux 5.11 and later), where the sweep walks every
/// child.
pub fn reap_pid(pid: i32) -> io::Result<Option<ExitStatus>> {
    reap_id(libc::P_PID, libc::id_t::try_from(pid).unwrap_or(0))
}

/// Whether child `pid` has exited (a zombie zurg has not reaped yet),
/// leaving it to be reaped as usual: waitid with WNOWAIT only looks. For a
/// thread group's leader it answers once the whole group is dead.
pub fn has_exited(pid: i32) -> io::Result<bool> {
    let id = libc::id_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(exited_child(libc::P_PID, id, libc::WNOWAIT)?.is_some())
}

fn reap_id(idtype: libc::idtype_t, id: libc::id_t) -> io::Result<Option<ExitStatus>> {
    let Some(info) = exited_child(idtype, id, 0)? else {
        return Ok(None);
    };
    // SAFETY: for SIGCHLD-style siginfo the status field is valid.
    let status = unsafe { info.si_status() };
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => ExitStatus::Code(status),
        libc::CLD_DUMPED => ExitStatus::Signal {
            signo: status,
            core_dumped: true,
        },
        _ => ExitStatus::Signal {
            signo: status,
            core_dumped: false,
        },
    }))
}

/// waitid(WEXITED | WNOHANG | `flags`) for the child(ren) `idtype`/`id`
/// names, retried on EINTR: the siginfo of one that has exited, or `None`
/// while none has.
fn exited_child(
    idtype: libc::idtype_t,
    id: libc::id_t,
    flags: libc::c_int,
) -> io::Result<Option<libc::siginfo_t>> {
    loop {
        let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
        // SAFETY: waitid writes one siginfo_t through a pointer to a zeroed
        // local; with WNOHANG and no child ready it leaves si_pid 0.
        let ret = unsafe {
            libc::waitid(
                idtype,
                id,
                info.as_mut_ptr(),
                libc::WEXITED | libc::WNOHANG | flags,
            )
        };
        if ret == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        // SAFETY: the struct was zeroed and then filled by the kernel.
        let info = unsafe { info.assume_init() };
        // SAFETY: for SIGCHLD-style siginfo the pid field is valid.
        let pid = unsafe { info.si_pid() };
        return Ok((pid != 0).then_some(info));
    }
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
