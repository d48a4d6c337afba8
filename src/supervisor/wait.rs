//! `zurg wait NAME... [--ready|--down] [--timeout DUR]`: a request parked
//! among the waiting ones (`requests::Waiting`) until every named service
//! is ready (a one-shot: done) or at rest. It is answered with an error as
//! soon as one of them cannot get there without someone asking again
//! (failed, stopped, kept down by its policy), and at its deadline
//! otherwise. What "ready", "done" and "cannot" mean is the service
//! machine's (`Service::satisfies_dependants`, `cannot_satisfy`).
//!
//! A service that looks ready is asked of the kernel once before the
//! answer: a process already killed (or exited, its end not yet read) is
//! not up, and the wait goes on until zurg has seen it end and the service
//! come back, or give up (docs/design.md, "A killed process is not up").

use super::requests::{Until, Waiting};
use super::Supervisor;
use crate::control::proto::{ErrorCode, Reply};
use crate::service::{Service, State};

/// How long `wait` waits when the client gives no `--timeout`: systemd's
/// default start timeout (TimeoutStartSec), so a service that never gets
/// there ends a script instead of hanging it.
pub const DEFAULT_WAIT_MS: u64 = 90_000;

/// Whether `service` is where a `wait` for `until` wants it.
pub(super) fn reached(service: &Service, until: Until) -> bool {
    match until {
        Until::Ready => service.satisfies_dependants(),
        // Backoff and Starting are on their way up again: not at rest.
        Until::AtRest => matches!(
            service.state,
            State::Down | State::Exited | State::Done | State::Failed
        ),
        Until::Down | Until::Restarted | Until::Started => false,
    }
}

/// Whether `service` runs the very process (pid and run) `doomed` lists.
pub(super) fn doomed(service: &Service, doomed: &[(i32, u64)]) -> bool {
    match service.state {
        State::Running { pid, since_ms } => doomed.contains(&(pid, since_ms)),
        _ => false,
    }
}

impl Supervisor {
    /// For a `wait` about to be answered: whether a process it would answer
    /// with is already ending (`os::dying`: killed, or exited and not yet
    /// reaped). Each such process is added to `w.doomed` and the answer
    /// waits; its exit, which the loop reads from the pidfd or SIGCHLD
    /// soon, settles the wait again. The kernel is asked only when the
    /// answer is otherwise due, and never again about a process found
    /// dying: its end, once known, does not change.
    pub(super) fn found_dying(&self, w: &mut Waiting) -> bool {
        if !matches!(w.until, Until::Ready | Until::Started) {
            return false;
        }
        let mut found = false;
        for (slot, _) in &w.slots {
            let Some(s) = self.slots.get(*slot) else {
                continue;
            };
            let State::Running { pid, since_ms } = s.service.state else {
                continue;
            };
            if w.doomed.contains(&(pid, since_ms)) {
                continue;
            }
            if crate::os::dying::is_dying(pid, s.pidfd.as_ref()) {
                w.doomed.push((pid, since_ms));
                found = true;
            }
        }
        found
    }

    /// The error for a `wait --ready` that one of its services can no
    /// longer satisfy, naming each such service and why.
    pub(super) fn wait_given_up(&self, w: &Waiting) -> Option<Reply> {
        if w.until != Until::Ready {
            return None;
        }
        let hopeless: Vec<String> = w
            .slots
            .iter()
            .filter_map(|(slot, _)| {
                let s = self.slots.get(*slot)?;
                if s.service.satisfies_dependants() {
                    return None;
                }
                let why = s.service.cannot_satisfy()?;
                Some(format!(
                    "{} is {}: {why}",
                    s.service.name(),
                    s.service.state_name()
                ))
            })
            .collect();
        if hopeless.is_empty() {
            return None;
        }
        Some(Reply::error(
            w.id,
            ErrorCode::Failed,
            format!("will not become ready: {}", hopeless.join("; ")),
        ))
    }
}
