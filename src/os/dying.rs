//! Whether the kernel already knows a child is ending, before zurg has read
//! its exit: after `kill -9 PID` has returned, `zurg wait` must not answer
//! with PID (docs/design.md, "A killed process is not up").
//!
//! Two looks, both cheap and neither blocking: waitid(WNOWAIT) for a child
//! that has exited but whose pidfd or SIGCHLD the loop has not read yet, and
//! /proc/PID/status for a SIGKILL pending on it. kill(2) queues a SIGKILL on
//! the process (`ShdPnd`) before it returns, and the kernel flushes that
//! queue only when the process is reaped, so the bit is there for the whole
//! time the process takes to die. A fatal signal with its default action
//! (SIGTERM without a handler) puts a SIGKILL on each thread (`SigPnd`),
//! seen until the main thread begins to exit: most of that window, not all
//! of it. Any other signal is the process's to handle, so it is not up to
//! zurg to guess.

use std::os::fd::AsRawFd;

use super::pidfd::PidFd;

/// SIGKILL's bit in /proc's hexadecimal signal masks.
const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);

/// Whether zurg's unreaped child `pid` (with its pidfd, when it has one) has
/// exited, or has a SIGKILL pending and so cannot run another instruction of
/// its own. False when the kernel cannot tell (no /proc, or a /proc of
/// another pid namespace): zurg then answers from what it has seen, as it
/// always did.
pub fn is_dying(pid: i32, pidfd: Option<&PidFd>) -> bool {
    if has_exited(pid) {
        return true;
    }
    let Some(seen_as) = proc_pid(pid, pidfd) else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{seen_as}/status"))
        .is_ok_and(|status| sigkill_pending(&status))
}

fn has_exited(pid: i32) -> bool {
    super::reap::has_exited(pid).unwrap_or(false)
}

/// `pid` as /proc names it. /proc may belong to another pid namespace than
/// zurg's (mounted before an unshare); a pidfd's fdinfo gives the number in
/// /proc's own namespace, and without a pidfd /proc is trusted only when
/// /proc/self is zurg.
fn proc_pid(pid: i32, pidfd: Option<&PidFd>) -> Option<i32> {
    match pidfd.filter(|fd| fd.pid() == pid) {
        Some(fd) => {
            let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()));
            fdinfo.ok().as_deref().and_then(pid_in_fdinfo)
        }
        None => {
            let me = std::fs::read_link("/proc/self").ok()?;
            let own = i64::from(std::process::id());
            (me.to_str()?.parse::<i64>().ok()? == own).then_some(pid)
        }
    }
}

/// The `Pid:` line of a pidfd's fdinfo: the process in /proc's namespace.
/// -1 (reaped) and 0 (not in that namespace) are no pid.
fn pid_in_fdinfo(fdinfo: &str) -> Option<i32> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))?
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 0)
}

/// Whether /proc/PID/status shows a SIGKILL pending: on the process
/// (`ShdPnd`, where kill(2) queues it) or on its main thread (`SigPnd`,
/// where the kernel puts the SIGKILL a fatal signal becomes).
fn sigkill_pending(status: &str) -> bool {
    status.lines().any(|l| {
        let mask = l
            .strip_prefix("ShdPnd:")
            .or_else(|| l.strip_prefix("SigPnd:"));
        mask.and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & SIGKILL_BIT != 0)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    const STATUS: &str = "Name:\tsleep\nState:\tS (sleeping)\nSigQ:\t1/63482\n\
        SigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\nSigBlk:\t0000000000000000\n";

    #[test]
    fn sigkill_is_read_from_either_pending_mask() {
        assert!(!sigkill_pending(STATUS));
        let shared = STATUS.replace("ShdPnd:\t0000000000000000", "ShdPnd:\t0000000000000100");
        assert!(sigkill_pending(&shared));
        let own = STATUS.replace("SigPnd:\t0000000000000000", "SigPnd:\t0000000000004100");
        assert!(sigkill_pending(&own));
        // SIGTERM (bit 15) alone is the process's to handle.
        let term = STATUS.replace("ShdPnd:\t0000000000000000", "ShdPnd:\t0000000000004000");
        assert!(!sigkill_pending(&term));
        // A blocked SIGKILL is not a thing; SigBlk is not read.
        let blk = STATUS.replace("SigBlk:\t0000000000000000", "SigBlk:\t0000000000000100");
        assert!(!sigkill_pending(&blk));
        assert!(!sigkill_pending(""));
    }

    #[test]
    fn fdinfo_pid_is_positive_or_none() {
        let fdinfo =
            "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nPid:\t4242\nNSpid:\t4242\t9\n";
        assert_eq!(pid_in_fdinfo(fdinfo), Some(4242));
        assert_eq!(pid_in_fdinfo("Pid:\t-1\nNSpid:\t-1\n"), None);
        assert_eq!(pid_in_fdinfo("pos:\t0\n"), None);
    }

    /// A real child: not dying while it sleeps; dying as soon as kill(2)
    /// has returned, exited or not; still dying as a zombie, which is left
    /// for its parent to reap.
    #[test]
    fn a_child_is_dying_once_killed_and_once_exited() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let fd = PidFd::open(pid).unwrap();
        assert!(!is_dying(pid, Some(&fd)));
        assert!(!is_dying(pid, None));
        super::super::pidfd::kill(pid, libc::SIGKILL).unwrap();
        // Killed: dying at once, whether it has exited yet or not.
        assert!(is_dying(pid, Some(&fd)));
        assert!(is_dying(pid, None));
        // Exited and not reaped: still dying, and left to be reaped.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !has_exited(pid) {
            assert!(std::time::Instant::now() < deadline, "never exited");
            std::thread::yield_now();
        }
        assert!(is_dying(pid, Some(&fd)));
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    }
}
