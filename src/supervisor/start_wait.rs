//! `zurg start` and `zurg restart` answer with the outcome, as systemctl
//! does: a one-shot once it is done (or failed), a service with a `ready`
//! check once it is ready (or not ready, failed), any other once it runs;
//! a service held for its dependencies once it has started, or as soon as
//! one of them failed. The request is parked among the waiting ones
//! (`requests::Waiting`, `Until::Started`) and answered from the loop:
//! nothing blocks it.
//!
//! A failure seen on the way is kept (`Waiting::failures`, from
//! `after_event`) even when the restart policy tries again at once: the
//! start asked for failed, and the state at the end of the turn (backoff,
//! or already running again) would hide it. At the deadline the answer is
//! an error saying what is still under way; the start goes on, as the
//! client giving up stops nothing (`--no-block` answers at once, as before).

use super::requests::{Until, Waiting};
use super::Supervisor;
use crate::control::proto::{ErrorCode, Reply};
use crate::service::{policy, Event, Failure, State};
use crate::unit::Kind;

/// Added to the longest `ready_timeout_ms` involved: the start may take
/// that long and still succeed, and its answer must not be lost to the
/// client's deadline.
const READY_SLACK_MS: u64 = 5_000;

/// Where one service of a waiting start stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Done (a one-shot), ready, or running (nothing more to wait for).
    Up,
    /// Will not get there without someone asking again: why.
    Failed(String),
    /// On its way.
    Pending,
}

/// Why `event` means the start of a service of `kind` failed, if it does;
/// `success` tells whether an exit counts as success for it.
pub(super) fn failure_in(
    event: &Event,
    kind: Kind,
    success: impl Fn(crate::service::Exit) -> bool,
) -> Option<String> {
    match event {
        Event::SpawnFailed { error } => Some(error.clone()),
        // A one-shot's success is `Completed`, which follows.
        Event::Exited { exit, .. } if kind == Kind::Oneshot && success(*exit) => None,
        Event::Exited { exit, .. } => Some(Failure::Unsuccessful(*exit).to_string()),
        Event::NotReady { reason, .. } => Some(Failure::NotReady(reason.clone()).to_string()),
        Event::Failed { failure } => Some(failure.to_string()),
        Event::Refused { reason } => Some(Failure::Refused(reason.clone()).to_string()),
        Event::Forked { .. } => Some(Failure::Forked.to_string()),
        Event::Blocked { reason } => Some(Failure::Blocked(reason.clone()).to_string()),
        _ => None,
    }
}

impl Supervisor {
    /// How long a start waits for its outcome: as asked, else systemd's
    /// default start timeout, or the longest readiness wait involved plus
    /// some slack when that is longer.
    pub(super) fn start_wait_ms(&self, slots: &[usize], asked: Option<u64>) -> u64 {
        asked.unwrap_or_else(|| {
            slots
                .iter()
                .filter_map(|s| self.slots.get(*s))
                .filter(|s| s.service.unit.rare.ready.is_some())
                .map(|s| {
                    s.service
                        .unit
                        .rare
                        .ready_timeout_ms
                        .saturating_add(READY_SLACK_MS)
                })
                .fold(super::wait::DEFAULT_WAIT_MS, u64::max)
        })
    }

    /// Keeps, for each waiting start that involves `slot`, the first
    /// failure its events show.
    pub(super) fn start_waits_after_event(&mut self, slot: usize, event: &Event) {
        if !self.waiting.iter().any(|w| w.until == Until::Started) {
            return;
        }
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let codes = &s.service.unit.rare.success_exit_codes;
        let Some(why) = failure_in(event, s.service.unit.kind, |e| policy::succeeded(codes, e))
        else {
            return;
        };
        for w in &mut self.waiting {
            if w.until == Until::Started
                && w.involves(slot)
                && !w.failures.iter().any(|(s, _)| *s == slot)
            {
                w.failures.push((slot, why.clone()));
            }
        }
    }

    /// Where `slot` of the start `w` stands; `old_pid` is the process a
    /// restart replaces, which does not count as up.
    pub(super) fn start_verdict(&self, w: &Waiting, slot: usize, old_pid: Option<i32>) -> Verdict {
        let Some(s) = self.slots.get(slot) else {
            return Verdict::Failed("its unit was removed".to_string());
        };
        if let Some((_, why)) = w.failures.iter().find(|(x, _)| *x == slot) {
            return match s.service.state {
                // Stopped after a failed readiness: the answer says where
                // it ends up, failed or tried again.
                State::Stopping { .. } | State::PostStop { .. } => Verdict::Pending,
                State::Failed | State::Exited | State::Down | State::Waiting => {
                    Verdict::Failed(why.clone())
                }
                // Its restart policy tries again: said, so nobody thinks
                // it has stopped for good.
                _ => Verdict::Failed(format!("{why}; its restart policy starts it again")),
            };
        }
        let old = matches!(s.service.state, State::Running { pid, .. } if Some(pid) == old_pid);
        if s.service.satisfies_dependants() && !old && !super::wait::doomed(&s.service, &w.doomed) {
            return Verdict::Up;
        }
        // A failure while the request itself was carried out (a spawn that
        // failed at once) came before the request was parked, unseen by
        // `start_waits_after_event`: the service's state tells it.
        match (s.service.state, s.service.cannot_satisfy()) {
            (State::Exited, Some(_)) if s.service.last_error.is_some() => {
                Verdict::Failed(s.service.problem().unwrap_or_default())
            }
            (_, Some(why)) => Verdict::Failed(why),
            (State::Backoff { .. }, None) => Verdict::Failed(
                s.service
                    .problem()
                    .unwrap_or_else(|| "it failed; restarting".to_string()),
            ),
            (_, None) => Verdict::Pending,
        }
    }

    /// The answer to the start `w` once every service is up or one has
    /// failed; `None` while it waits.
    pub(super) fn start_answer(&self, w: &mut Waiting) -> Option<Reply> {
        let verdicts: Vec<(usize, Verdict)> = w
            .slots
            .iter()
            .map(|(slot, old)| (*slot, self.start_verdict(w, *slot, *old)))
            .collect();
        let failed = verdicts
            .iter()
            .any(|(_, v)| matches!(v, Verdict::Failed(_)));
        if !failed && verdicts.iter().any(|(_, v)| *v == Verdict::Pending) {
            return None;
        }
        // All up: unless a process the answer would name is already dying.
        if !failed && self.found_dying(w) {
            return None;
        }
        let outcomes: Vec<_> = verdicts
            .into_iter()
            .map(|(slot, v)| {
                let mut o = self.outcome_as_is(slot, &w.notes);
                if let Verdict::Failed(why) = v {
                    o.error = Some(why);
                }
                o
            })
            .collect();
        Some(Reply::ok(w.id, outcomes))
    }

    /// The error for a start still under way at its deadline: what each
    /// service not up yet is doing, and that it goes on.
    pub(super) fn start_timed_out(&self, w: &Waiting) -> Reply {
        let pending: Vec<String> = w
            .slots
            .iter()
            .filter(|(slot, old)| self.start_verdict(w, *slot, *old) != Verdict::Up)
            .filter_map(|(slot, _)| {
                let s = self.slots.get(*slot)?;
                let name = s.service.name();
                Some(match s.service.state {
                    State::Running { .. } if s.service.unit.kind == Kind::Oneshot => {
                        format!("{name} is running, not done yet")
                    }
                    State::Running { .. } => format!("{name} is running, not ready yet"),
                    State::Waiting => {
                        let on = self.waiting_for(*slot);
                        if on.is_empty() {
                            format!("{name} is waiting for its dependencies")
                        } else {
                            format!("{name} is waiting for {}", on.join(", "))
                        }
                    }
                    _ => format!("{name} is {}", s.service.state_name()),
                })
            })
            .collect();
        Reply::error(
            w.id,
            ErrorCode::Timeout,
            format!(
                "gave up waiting after {}: {}; the start is still in progress (nothing was stopped): `zurg status` shows how it ends, `zurg wait` waits again",
                super::human_ms(w.wait_ms),
                pending.join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Exit;

    #[test]
    fn a_one_shot_exit_fails_the_start_only_when_unsuccessful() {
        let ok = |e: Exit| e == Exit::Code(0);
        let exited = |code| Event::Exited {
            pid: 7,
            exit: Exit::Code(code),
            uptime_ms: 1,
        };
        assert_eq!(failure_in(&exited(0), Kind::Oneshot, ok), None);
        assert_eq!(
            failure_in(&exited(3), Kind::Oneshot, ok).as_deref(),
            Some("exited with code 3")
        );
        // A long-running service that ends while its start is awaited did
        // not start, whatever its code.
        assert_eq!(
            failure_in(&exited(0), Kind::Longrun, ok).as_deref(),
            Some("exited with code 0")
        );
        let not_ready = Event::NotReady {
            pid: 7,
            reason: "no answer on port 80".into(),
        };
        assert_eq!(
            failure_in(&not_ready, Kind::Longrun, ok).as_deref(),
            Some("not ready: no answer on port 80")
        );
        assert_eq!(
            failure_in(&Event::Started { pid: 7 }, Kind::Longrun, ok),
            None
        );
    }
}
