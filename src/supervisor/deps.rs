//! Dependencies at run time (`depends_on`): holding a spawn until the
//! service's dependencies are ready, releasing it when they are, starting
//! what `zurg start` needs first, and stopping dependants before what they
//! depend on (`zurg stop`, shutdown).
//!
//! One chokepoint: every spawn a service's machine asks for passes
//! `hold_spawn` (at boot, on `start`, on a crash restart, after a reload),
//! which turns it into `Input::Wait` (some dependency is not ready) or
//! `Input::Block` (one failed for good) instead. The graph
//! (`service::graph::Graph`) is built once per load, so an event costs a
//! look at its own service's lists: a service without dependants costs one
//! test, and a dependency's event scans its dependants only when its
//! standing (ready, failed for good, neither) changes.
//!
//! Ordered stop: a service marked `stop_after` gets its `Stop` once none of
//! its dependants has a process; each dependant's exit looks at its own
//! dependencies. A crash or a `restart` of a dependency touches nothing
//! running.

use std::collections::VecDeque;

use super::Supervisor;
use crate::service::graph::Graph;
use crate::service::{Exit, Failure, Input, Service, State};

/// What a service means to its dependants right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Standing {
    /// Not ready yet (starting, restarting, stopped).
    #[default]
    Pending,
    Satisfied,
    /// Ended or failed, and nothing restarts it by itself.
    Failed,
}

fn standing(s: &Service) -> Standing {
    if s.satisfies_dependants() {
        Standing::Satisfied
    } else if failed_for_good(s).is_some() {
        Standing::Failed
    } else {
        Standing::Pending
    }
}

/// How a dependency failed for good, for "not started: migrate failed
/// (exit 1)"; `None` while it may still become ready by itself.
fn failed_for_good(s: &Service) -> Option<String> {
    match s.state {
        State::Exited => Some(match s.last_exit {
            Some(Exit::Code(0)) => "ended (exit 0)".to_string(),
            Some(Exit::Code(c)) => format!("failed (exit {c})"),
            Some(Exit::Signal(n)) => format!("failed (signal {})", crate::sig::name(n)),
            None => "ended".to_string(),
        }),
        State::Failed => Some(match s.last_error.as_deref() {
            Some(f) => format!("failed: {f}"),
            None => "failed".to_string(),
        }),
        // Blocked itself: its dependants are blocked in turn.
        State::Waiting => match s.last_error.as_deref() {
            Some(Failure::Blocked(why)) => Some(format!("cannot start: {why}")),
            _ => None,
        },
        _ => None,
    }
}

/// Nothing to stop and nothing starts it by itself.
fn resting(state: State) -> bool {
    matches!(state, State::Down | State::Exited | State::Failed)
}

/// The supervisor's dependency bookkeeping, by slot.
#[derive(Debug, Default)]
pub(super) struct Deps {
    graph: Graph,
    standing: Vec<Standing>,
    /// Stops as soon as none of its dependants has a process.
    stop_after: Vec<bool>,
    /// How many `stop_after` are set.
    stopping: usize,
}

impl Deps {
    fn set_stop_after(&mut self, slot: usize, on: bool) {
        if let Some(flag) = self.stop_after.get_mut(slot) {
            if *flag != on {
                *flag = on;
                if on {
                    self.stopping += 1;
                } else {
                    self.stopping = self.stopping.saturating_sub(1);
                }
            }
        }
    }

    fn stops_after(&self, slot: usize) -> bool {
        self.stop_after.get(slot).copied().unwrap_or(false)
    }
}

/// Whether two definitions differ in `depends_on` alone: a reload then
/// takes the new list for future starts and leaves the process alone.
pub(super) fn only_dependencies_differ(old: &crate::unit::Unit, new: &crate::unit::Unit) -> bool {
    old.depends_on != new.depends_on && {
        let mut same = new.clone();
        same.depends_on.clone_from(&old.depends_on);
        same == *old
    }
}

fn names(list: &[String]) -> String {
    list.join(", ")
}

impl Supervisor {
    fn name_of(&self, slot: usize) -> String {
        self.slots
            .get(slot)
            .map_or_else(String::new, |s| s.service.name().to_string())
    }

    /// Builds the graph from the loaded units, after a load or reload, and
    /// asks every waiting service again (its dependencies may have changed).
    pub(super) fn rebuild_dependencies(&mut self, work: &mut VecDeque<(usize, Input)>) {
        let n = self.slots.len();
        let (by_name, slots) = (&self.by_name, self.slots.as_slice());
        self.deps.graph = Graph::build(
            n,
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.retired)
                .map(|(i, s)| (i, &*s.service.unit.depends_on)),
            |name| by_name.get(slots, name),
        );
        self.deps.standing = self.slots.iter().map(|s| standing(&s.service)).collect();
        self.deps.stop_after.resize(n, false);
        for (i, s) in self.slots.iter().enumerate() {
            if s.retired {
                self.deps.set_stop_after(i, false);
            }
        }
        for (i, s) in self.slots.iter().enumerate() {
            if s.service.state == State::Waiting {
                work.push_back((i, Input::Start));
            }
        }
    }

    /// The gate of every spawn: `None` lets it go; otherwise the input
    /// that holds the service (waiting, or blocked by a failed dependency).
    pub(super) fn hold_spawn(&self, slot: usize) -> Option<Input> {
        let graph = &self.deps.graph;
        let (deps, missing) = (graph.deps(slot), graph.missing(slot));
        if deps.is_empty() && missing.is_empty() {
            return None;
        }
        if let Some(name) = missing.first() {
            return Some(Input::Block {
                reason: format!("{name} is not loaded"),
            });
        }
        let mut on = Vec::new();
        for &d in deps {
            let Some(dep) = self.slots.get(d) else {
                continue;
            };
            if dep.service.satisfies_dependants() {
                continue;
            }
            if let Some(why) = failed_for_good(&dep.service) {
                return Some(Input::Block {
                    reason: format!("{} {why}", dep.service.name()),
                });
            }
            on.push(dep.service.name().to_string());
        }
        (!on.is_empty()).then_some(Input::Wait { on })
    }

    /// The dependencies a waiting service waits for (for `status`).
    pub(super) fn waiting_for(&self, slot: usize) -> Vec<String> {
        let graph = &self.deps.graph;
        let mut out: Vec<String> = graph.missing(slot).to_vec();
        out.extend(
            graph
                .deps(slot)
                .iter()
                .filter_map(|&d| self.slots.get(d))
                .filter(|d| !d.service.satisfies_dependants())
                .map(|d| d.service.name().to_string()),
        );
        out
    }

    /// After each event of `slot`: a dependant that lost its process may
    /// let an ordered stop go on; a dependency whose standing changed asks
    /// its waiting dependants again.
    pub(super) fn dependencies_after_event(
        &mut self,
        slot: usize,
        work: &mut VecDeque<(usize, Input)>,
    ) {
        let down = self
            .slots
            .get(slot)
            .is_some_and(|s| s.service.state.is_down());
        if self.deps.stopping > 0 && down {
            for i in 0..self.deps.graph.deps(slot).len() {
                if let Some(&d) = self.deps.graph.deps(slot).get(i) {
                    self.try_ordered_stop(d, work);
                }
            }
        }
        let dependants = self.deps.graph.dependants(slot);
        if dependants.is_empty() {
            return;
        }
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let now = standing(&s.service);
        let Some(was) = self.deps.standing.get_mut(slot) else {
            return;
        };
        if *was == now {
            return;
        }
        *was = now;
        for &d in dependants {
            if self
                .slots
                .get(d)
                .is_some_and(|x| x.service.state == State::Waiting)
            {
                // The gate decides again: start, wait, or blocked.
                work.push_back((d, Input::Start));
            }
        }
    }

    /// `zurg start`: what the named services need, directly or not, that
    /// is stopped, ended or failed is started first (dependencies before
    /// dependants). Returns those, for the reply.
    pub(super) fn start_needed(
        &mut self,
        slots: &[usize],
        work: &mut VecDeque<(usize, Input)>,
    ) -> Vec<usize> {
        for &s in slots {
            self.deps.set_stop_after(s, false);
        }
        let needed: Vec<usize> = self
            .deps
            .graph
            .needed_by(slots)
            .into_iter()
            .filter(|&d| {
                self.slots.get(d).is_some_and(|x| {
                    !x.retired && resting(x.service.state) && !x.service.satisfies_dependants()
                })
            })
            .collect();
        if !needed.is_empty() {
            let first: Vec<String> = needed.iter().map(|&d| self.name_of(d)).collect();
            let asked: Vec<String> = slots.iter().map(|&d| self.name_of(d)).collect();
            crate::log!(
                "starting {} first (needed by {})",
                names(&first),
                names(&asked)
            );
        }
        for &d in &needed {
            self.deps.set_stop_after(d, false);
            work.push_back((d, Input::Start));
        }
        needed
    }

    /// Stops `slots` and, before them, everything that depends on them
    /// (dependants first, each once its own dependants are down). Returns
    /// the dependants that had something to stop, for the reply.
    pub(super) fn stop_in_order(
        &mut self,
        slots: &[usize],
        work: &mut VecDeque<(usize, Input)>,
    ) -> Vec<usize> {
        let dependants = self.deps.graph.needing(slots);
        let first: Vec<usize> = dependants
            .iter()
            .copied()
            .filter(|&d| self.slots.get(d).is_some_and(|x| !resting(x.service.state)))
            .collect();
        if !first.is_empty() {
            let them: Vec<String> = first.iter().map(|&d| self.name_of(d)).collect();
            let asked: Vec<String> = slots.iter().map(|&d| self.name_of(d)).collect();
            let (pronoun, verb) = if them.len() == 1 {
                ("it", "depends")
            } else {
                ("they", "depend")
            };
            crate::log!(
                "stopping {} first ({pronoun} {verb} on {})",
                names(&them),
                names(&asked)
            );
        }
        let all: Vec<usize> = dependants.iter().chain(slots).copied().collect();
        for &s in &all {
            self.deps.set_stop_after(s, true);
        }
        for &s in &all {
            self.try_ordered_stop(s, work);
        }
        first
    }

    /// Every service, in reverse dependency order: shutdown.
    pub(super) fn stop_all_in_order(&mut self, work: &mut VecDeque<(usize, Input)>) {
        let depth = self.deps.graph.levels().into_iter().max().unwrap_or(0);
        if depth > 0 {
            crate::log!(
                "stopping dependants before their dependencies ({} levels)",
                depth + 1
            );
        }
        let all: Vec<usize> = (0..self.slots.len()).collect();
        for &s in &all {
            self.deps.set_stop_after(s, true);
        }
        for &s in &all {
            self.try_ordered_stop(s, work);
        }
    }

    /// Sends `slot` its stop if it waits for one and none of its dependants
    /// has a process any more.
    fn try_ordered_stop(&mut self, slot: usize, work: &mut VecDeque<(usize, Input)>) {
        if !self.deps.stops_after(slot) {
            return;
        }
        let blocked = self.deps.graph.dependants(slot).iter().any(|&d| {
            self.slots
                .get(d)
                .is_some_and(|x| !x.service.state.is_down())
        });
        if blocked {
            return;
        }
        self.deps.set_stop_after(slot, false);
        work.push_back((slot, Input::Stop));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_dependency_list_alone_is_not_a_changed_unit() {
        let old = crate::unit::parse_unit(
            "web",
            std::path::Path::new("/u/web.toml"),
            "exec = \"/bin/true\"\ndepends_on = [\"db\"]\n",
        )
        .unwrap();
        let mut new = old.clone();
        assert!(!only_dependencies_differ(&old, &new));
        new.depends_on = [&*new.depends_on, &["cache".into()]].concat().into();
        assert!(only_dependencies_differ(&old, &new));
        new.args = [&*new.args, &["-v".into()]].concat().into();
        assert!(!only_dependencies_differ(&old, &new));
    }
}
