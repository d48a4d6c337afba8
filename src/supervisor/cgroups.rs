//! Services' cgroups inside the supervisor: each unit's cgroup is created
//! and its limits written at load (not per restart), a stop reaches the
//! processes its `kill_mode` names, an exit is checked for an OOM kill and,
//! under `kill_mode = "cgroup"`, what the main process left is killed.
//! The cgroup file system itself is `crate::cgroup::tree`.

use crate::cgroup::tree::{Cgroups, ServiceCgroup, Unavailable};
use crate::cgroup::KillMode;
use crate::os::pidfd;
use crate::unit::Unit;

use super::Supervisor;

/// Whether zurg manages cgroups here, decided once at start-up.
pub(super) type Availability = Result<Cgroups, Unavailable>;

/// What a load does with a unit's cgroup.
pub(super) enum UnitCgroup {
    /// zurg does not manage cgroups (and the unit needs none).
    None,
    /// A newly created cgroup with the unit's limits.
    Fresh(ServiceCgroup),
    /// The slot's cgroup stays; its limits were updated.
    Kept,
}

/// Sets up the subtree and says once what zurg can do with it.
pub(super) fn set_up(given: Option<&std::path::Path>) -> Availability {
    let found = Cgroups::set_up(given);
    match &found {
        Ok(c) => crate::log!("{}", c.describe()),
        Err(e) => crate::log!(
            "cgroups: not managed: {e}; services are stopped by process group (kill_mode \"group\"), and units that set limits are refused"
        ),
    }
    found
}

impl Supervisor {
    /// The kill mode `unit` runs under.
    pub(super) fn kill_mode(&self, unit: &Unit) -> KillMode {
        unit.rare.kill_mode.unwrap_or(match self.cgroups {
            Ok(_) => KillMode::Cgroup,
            Err(_) => KillMode::Group,
        })
    }

    /// Creates `unit`'s cgroup or updates the one its slot has, or says why
    /// the unit is refused (a limit or `kill_mode = "cgroup"` where cgroups
    /// are not managed, a controller that is off, a write the kernel
    /// refused). The message names the file and the key.
    pub(super) fn unit_cgroup(&self, unit: &Unit) -> Result<UnitCgroup, String> {
        let file = self.opts.units_dir.join(format!("{}.toml", unit.name));
        let cgroups = match &self.cgroups {
            Ok(c) => c,
            Err(why) => {
                let key = unit
                    .rare
                    .limits
                    .settings()
                    .into_iter()
                    .find(|s| s.set)
                    .map(|s| s.key)
                    .or((unit.rare.kill_mode == Some(KillMode::Cgroup)).then_some("kill_mode"));
                return match key {
                    Some(key) => Err(format!(
                        "{}: key `{key}`: needs a cgroup, and zurg cannot manage cgroups here: {why}",
                        file.display()
                    )),
                    None => Ok(UnitCgroup::None),
                };
            }
        };
        if let Some(why) = cgroups.refuse(&unit.rare.limits) {
            return Err(format!("{}: {why}", file.display()));
        }
        let existing = self
            .by_name
            .get(self.slots.as_slice(), &unit.name)
            .and_then(|slot| self.slots.get(slot))
            .and_then(|s| Some((s.cgroup.as_ref()?, &s.service.unit.rare.limits)));
        match existing {
            Some((cg, old)) => cg
                .write_limits(&unit.rare.limits, old)
                .map(|()| UnitCgroup::Kept),
            None => cgroups
                .service(&unit.name, &unit.rare.limits, None)
                .map(UnitCgroup::Fresh),
        }
        .map_err(|e| format!("{}: {e}", file.display()))
    }

    /// After the main process (`pid`) got `signo`: the rest of the service
    /// by its kill mode. The group's id is still the main process's pid,
    /// which stays taken while that process is unreaped.
    pub(super) fn signal_rest(&self, slot: usize, pid: i32, signo: i32) {
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        match (self.kill_mode(&s.service.unit), &s.cgroup) {
            (KillMode::Main, _) => {}
            (KillMode::Cgroup, Some(cg)) if signo == libc::SIGKILL => {
                if let Err(e) = cg.kill() {
                    crate::log!(
                        "[{}] cannot kill cgroup {}: {e}; killing its process group",
                        s.service.name(),
                        cg.dir().display()
                    );
                    let _ = pidfd::kill(-pid, signo);
                }
            }
            (KillMode::Cgroup, Some(cg)) => {
                cg.signal_all(signo, pid);
            }
            (KillMode::Group | KillMode::Cgroup, _) => {
                let _ = pidfd::kill(-pid, signo);
            }
        }
    }

    /// The main process of `slot` was reaped: notes whether the OOM killer
    /// struck (for the exit's record) and, under `kill_mode = "cgroup"`,
    /// kills what is left in the cgroup unless the service forked into the
    /// background (reported as such, and left running as before).
    pub(super) fn cgroup_after_exit(&mut self, slot: usize, forked: bool) {
        let mode = match self.slots.get(slot) {
            Some(s) => self.kill_mode(&s.service.unit),
            None => return,
        };
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(cg) = s.cgroup.as_mut() else {
            s.exit_oom = false;
            return;
        };
        s.exit_oom = cg.took_oom_kill();
        if mode == KillMode::Cgroup && !forked {
            if let Err(e) = cg.kill() {
                crate::log!(
                    "[{}] cannot kill what is left in cgroup {}: {e}",
                    s.service.name(),
                    cg.dir().display()
                );
            }
        }
    }

    /// At the end of zurg: the services' empty cgroups go.
    pub(super) fn remove_cgroups(&mut self) {
        for s in &self.slots {
            if let Some(cg) = &s.cgroup {
                cg.remove();
            }
        }
    }
}
