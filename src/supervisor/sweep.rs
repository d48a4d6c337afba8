//! When to sweep with waitpid(-1). The sweep walks zurg's whole child list
//! in the kernel (milliseconds with 10,000 services), so it must not follow
//! every restart, yet every child that is not reaped through its pidfd
//! (an orphan, a service without a pidfd, a hook or exec probe whose pidfd
//! was dropped) is found by it alone.
//!
//! The rule: each SIGCHLD read from the signalfd names the child it is
//! about. A service is reaped directly: through its watched pidfd, or,
//! without one, by the pid its SIGCHLD names (a wait for one pid is O(1)
//! where the sweep walks every child). When all of a wake-up's SIGCHLDs
//! name such services, the sweep is put off by `DEFERRED_MS`; any other
//! sender, or none (pid 0), sweeps at once.
//! The deferral is needed because SIGCHLDs merge: a child that dies while a
//! service's SIGCHLD is still pending raises none of its own. The deferred
//! sweep finds it (a merged service without a pidfd restarts that late, so
//! zurg raises its descriptor limit to give every service a pidfd), so no
//! zombie lasts longer than that, and a burst of
//! restarts costs one sweep per `DEFERRED_MS` instead of one each. Idle,
//! nothing is armed.

/// How long a sweep may wait when every SIGCHLD was a service's own.
pub(super) const DEFERRED_MS: u64 = 1000;

/// What the SIGCHLDs of one wake-up call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sweep {
    /// No SIGCHLD came.
    None,
    /// A child that only the sweep can reap may have died.
    Now,
    /// Every SIGCHLD was a service reaped through its pidfd; a merged one
    /// may hide another child, so sweep within `DEFERRED_MS`.
    Deferred,
}

/// Decides from the senders of this wake-up's SIGCHLDs; `direct(pid)`
/// says whether that pid is a service reaped without the sweep (just now,
/// or when its watched pidfd fires).
pub(super) fn after_sigchld(senders: &[u32], direct: impl Fn(i32) -> bool) -> Sweep {
    if senders.is_empty() {
        return Sweep::None;
    }
    let all_services = senders
        .iter()
        .all(|&pid| i32::try_from(pid).is_ok_and(|pid| pid > 0 && direct(pid)));
    if all_services {
        Sweep::Deferred
    } else {
        Sweep::Now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sigchlds_of_directly_reaped_services_put_the_sweep_off() {
        let services = |pid: i32| pid == 10 || pid == 11;
        assert_eq!(after_sigchld(&[], services), Sweep::None);
        assert_eq!(after_sigchld(&[10], services), Sweep::Deferred);
        assert_eq!(after_sigchld(&[10, 11], services), Sweep::Deferred);
        // an orphan, or a child without a pidfd
        assert_eq!(after_sigchld(&[10, 99], services), Sweep::Now);
        // no sender pid: nothing tells which child it was
        assert_eq!(after_sigchld(&[0], services), Sweep::Now);
        assert_eq!(after_sigchld(&[u32::MAX], services), Sweep::Now);
    }
}
