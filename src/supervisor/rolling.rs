//! Rolling restart: `zurg restart web`, where `web` has `instances`,
//! restarts `web@0`, waits until it runs again with a new pid and is ready
//! (its `ready` probe passed, if it has one), then `web@1`, and so on, so at
//! most one instance is down at a time. Driven from `settle_waiting` (no
//! blocking): the request's `Waiting` holds the instances still to go. An
//! instance that does not come back (backoff, exited, failed) stops the
//! roll, and the request is answered with an error naming it; the ones
//! after it are left running as they were.

use crate::service::State;

use super::requests::Waiting;
use super::Supervisor;

/// What a rolling restart does next.
pub(super) enum Step {
    /// The instance being restarted is not back yet (or nothing is left).
    Wait,
    /// Restart this slot next.
    Next(usize),
    /// The instance being restarted did not come back: the roll ends here.
    Stopped(String),
}

impl Supervisor {
    /// The next step of `w`'s roll, taking the next instance off its queue.
    pub(super) fn roll_on(&self, w: &mut Waiting) -> Step {
        if w.rolling.is_empty() {
            return Step::Wait;
        }
        let Some((slot, old_pid)) = w.slots.last().copied() else {
            return Step::Wait;
        };
        let Some(s) = self.slots.get(slot) else {
            return Step::Wait;
        };
        match s.service.state {
            State::Running { pid, .. } if Some(pid) != old_pid => {
                if !s.service.satisfies_dependants() {
                    return Step::Wait;
                }
            }
            State::Backoff { .. } | State::Exited | State::Done | State::Failed => {
                let left: Vec<&str> = w.rolling.iter().map(|s| self.slot_name(*s)).collect();
                return Step::Stopped(format!(
                    "rolling restart stopped: {} is {} after its restart ({}); not restarted: {}",
                    s.service.name(),
                    s.service.state_name(),
                    s.service
                        .last_error
                        .as_ref()
                        .map_or_else(|| "no error recorded".to_string(), ToString::to_string),
                    left.join(", ")
                ));
            }
            _ => return Step::Wait,
        }
        let next = w.rolling.remove(0);
        let pid = self.slots.get(next).and_then(|x| x.service.state.pid());
        w.slots.push((next, pid));
        Step::Next(next)
    }
}
