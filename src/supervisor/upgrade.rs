//! Upgrades and rollbacks of a service's build, and their persistence.
//!
//! An upgrade is verified before anything running is touched (versioned
//! path, checksum of the opened file), then the service restarts on the new
//! build. If the new build is refused or exits within the start window,
//! zurg goes back to the previous build by itself. The builds in force are
//! kept in `STATE/overrides.json`, not in the units directory (which may be
//! read-only in an image), and re-applied on every load, so an upgrade
//! survives a restart of zurg.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{spawn_spec, Supervisor, TimerKey};
use crate::control::proto::{ErrorCode, Reply};
use crate::control::server::ConnId;
use crate::service::{Input, State};
use crate::unit::Unit;
use crate::version::Checksum;

/// How long a new build must stay up to count as started.
pub const DEFAULT_WINDOW_MS: u64 = 2_000;
/// Previous builds kept for `rollback`.
const KEEP_PREVIOUS: usize = 8;

/// What runs: program path, version and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    pub exec: PathBuf,
    #[serde(default)]
    pub version: Option<String>,
    /// `md5:HEX` or `sha256:HEX`.
    #[serde(default)]
    pub checksum: Option<String>,
}

impl Build {
    pub fn of(unit: &Unit) -> Build {
        Build {
            exec: unit.exec.clone(),
            version: unit.version.clone(),
            checksum: unit.checksum.map(|c| format!("{}:{c}", c.kind())),
        }
    }

    fn checksum(&self) -> Result<Option<Checksum>, String> {
        match &self.checksum {
            None => Ok(None),
            Some(text) => {
                let (kind, hex) = text
                    .split_once(':')
                    .ok_or_else(|| format!("bad checksum {text:?}"))?;
                Checksum::parse(kind, hex).map(Some)
            }
        }
    }

    /// Applies this build to a unit.
    pub fn apply(&self, unit: &mut Unit) -> Result<(), String> {
        unit.checksum = self.checksum()?;
        unit.exec = self.exec.clone();
        unit.version = self.version.clone();
        Ok(())
    }

    /// Checks the build without running it: the versioned-path rule and,
    /// when there is a checksum, the binary itself.
    pub fn verify(&self) -> Result<(), String> {
        if let Some(v) = &self.version {
            crate::unit::parse::versioned_path(&self.exec, v)?;
        }
        match self.checksum()? {
            Some(want) => crate::version::open_verified(&self.exec, &want, None)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => match std::fs::metadata(&self.exec) {
                Ok(m) if m.is_file() => Ok(()),
                Ok(_) => Err(format!("{} is not a regular file", self.exec.display())),
                Err(e) => Err(format!("{}: {e}", self.exec.display())),
            },
        }
    }

    fn label(&self) -> String {
        self.version
            .clone()
            .unwrap_or_else(|| self.exec.display().to_string())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub current: Option<Build>,
    #[serde(default)]
    pub previous: Vec<Build>,
}

/// Builds in force per service, as saved in the state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default)]
    pub services: BTreeMap<String, Override>,
}

fn overrides_file(state_dir: &Path) -> PathBuf {
    state_dir.join("overrides.json")
}

impl Overrides {
    pub fn load(state_dir: &Path) -> Overrides {
        let path = overrides_file(state_dir);
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).unwrap_or_else(|e| {
                crate::log!(
                    "warning: {} is unreadable ({e}); upgrades in it are not applied",
                    path.display()
                );
                Overrides::default()
            }),
            Err(_) => Overrides::default(),
        }
    }

    fn save(&self, state_dir: &Path) -> Result<(), String> {
        let path = overrides_file(state_dir);
        let tmp = path.with_extension("tmp");
        let data = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, data)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot save {}: {e}", path.display()))
    }
}

/// An upgrade waiting to see its new build survive the start window.
#[derive(Debug)]
pub(super) struct PendingUpgrade {
    conn: ConnId,
    id: u64,
    slot: usize,
    old_pid: Option<i32>,
    new_pid: Option<i32>,
    window_ms: u64,
    from: Build,
    to: Build,
    deadline_ms: u64,
}

impl Supervisor {
    /// Applies a saved upgrade to a freshly parsed unit.
    pub(super) fn apply_override(&self, unit: &mut Unit) {
        let Some(build) = self
            .overrides
            .services
            .get(&unit.name)
            .and_then(|o| o.current.as_ref())
        else {
            return;
        };
        if let Err(e) = build.apply(unit) {
            crate::log!("[{}] saved upgrade not applied: {e}", unit.name);
        }
    }

    fn set_build(&mut self, slot: usize, build: &Build) -> Result<(), String> {
        let s = self.slots.get_mut(slot).ok_or("no such service")?;
        let mut unit = s.service.unit.clone();
        build.apply(&mut unit)?;
        s.spec = spawn_spec(&unit)?;
        s.service.unit = unit;
        s.digest_cache = None;
        Ok(())
    }

    fn journal_build(&mut self, slot: usize, kind: &str, build: &Build) {
        let Some(j) = &mut self.journal else { return };
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let record = crate::journal::Record {
            time_us: crate::os::wall_clock_us(),
            service: s.service.name().to_string(),
            kind: kind.to_string(),
            gpid: s.gpid.map(|g| g.to_string()).unwrap_or_default(),
            version: build.version.clone(),
            exit: None,
            stats: None,
            seq: None,
            zurg: None,
        };
        if let Some(line) = j.append(&record).log_line() {
            crate::log!("{line}");
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn upgrade_request(
        &mut self,
        conn: ConnId,
        id: u64,
        name: &str,
        version: String,
        sums: (Option<String>, Option<String>),
        exec: Option<String>,
        window_ms: Option<u64>,
        work: &mut VecDeque<(usize, Input)>,
    ) -> Option<Reply> {
        let Some(&slot) = self.by_name.get(name) else {
            return Some(Reply::error(
                id,
                ErrorCode::UnknownService,
                format!("no service named `{name}`"),
            ));
        };
        let from = Build::of(&self.slots.get(slot)?.service.unit);
        let exec = match exec {
            Some(e) => PathBuf::from(e),
            // Same layout, other version: swap the version component.
            None => match &from.version {
                Some(old) => from
                    .exec
                    .components()
                    .map(|c| {
                        if c.as_os_str() == old.as_str() {
                            std::ffi::OsStr::new(&version)
                        } else {
                            c.as_os_str()
                        }
                    })
                    .collect(),
                None => {
                    return Some(Reply::error(
                        id,
                        ErrorCode::BadRequest,
                        format!("`{name}` has no version to replace in its exec path; give --exec"),
                    ))
                }
            },
        };
        let checksum = match sums {
            (Some(m), None) => Some(format!("md5:{m}")),
            (None, Some(s)) => Some(format!("sha256:{s}")),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Some(Reply::error(
                    id,
                    ErrorCode::BadRequest,
                    "give --md5 or --sha256, not both",
                ))
            }
        };
        let to = Build {
            exec,
            version: Some(version),
            checksum,
        };
        if let Err(e) = to.verify() {
            return Some(Reply::error(
                id,
                ErrorCode::Failed,
                format!("new build refused, nothing changed: {e}"),
            ));
        }
        if let Err(e) = self.set_build(slot, &to) {
            return Some(Reply::error(id, ErrorCode::Failed, e));
        }
        let entry = self.overrides.services.entry(name.to_string()).or_default();
        entry.previous.push(from.clone());
        if entry.previous.len() > KEEP_PREVIOUS {
            entry.previous.remove(0);
        }
        entry.current = Some(to.clone());
        if let Err(e) = self.overrides.save(&self.opts.state_dir) {
            crate::log!("warning: {e}; the upgrade will not survive a restart of zurg");
        }
        crate::log!("[{name}] upgrading from {} to {}", from.label(), to.label());
        self.journal_build(slot, "upgrade", &to);
        let old_pid = self.slots.get(slot).and_then(|s| s.service.state.pid());
        work.push_back((slot, Input::Restart));
        self.process(work);
        let window_ms = window_ms.unwrap_or(DEFAULT_WINDOW_MS);
        let stop = self
            .slots
            .get(slot)
            .map_or(0, |s| s.service.unit.stop_timeout_ms);
        let deadline_ms = self
            .reactor
            .now_ms()
            .saturating_add(stop)
            .saturating_add(window_ms)
            .saturating_add(5_000);
        self.reactor
            .timers
            .arm(deadline_ms, TimerKey::RequestDeadline);
        self.upgrades.push(PendingUpgrade {
            conn,
            id,
            slot,
            old_pid,
            new_pid: None,
            window_ms,
            from,
            to,
            deadline_ms,
        });
        self.settle_upgrades(work);
        None
    }

    /// Answers upgrades whose new build has survived its window, and rolls
    /// back those whose new build did not.
    pub(super) fn settle_upgrades(&mut self, work: &mut VecDeque<(usize, Input)>) {
        let now = self.reactor.now_ms();
        for mut u in std::mem::take(&mut self.upgrades) {
            let state = self.slots.get(u.slot).map(|s| s.service.state);
            let outcome = match state {
                Some(State::Running { pid, since_ms }) if Some(pid) != u.old_pid => match u.new_pid
                {
                    None => {
                        u.new_pid = Some(pid);
                        self.reactor.timers.arm(
                            since_ms.saturating_add(u.window_ms),
                            TimerKey::RequestDeadline,
                        );
                        None
                    }
                    Some(first) if first != pid => Some(Err(format!(
                        "the new build exited within {} ms",
                        u.window_ms
                    ))),
                    Some(_) if now.saturating_sub(since_ms) >= u.window_ms => Some(Ok(pid)),
                    Some(_) => None,
                },
                Some(State::Failed) => Some(Err("the new build was refused at start".to_string())),
                Some(State::Backoff { .. } | State::Exited)
                    if u.new_pid.is_some() || u.old_pid.is_none() =>
                {
                    Some(Err(format!(
                        "the new build exited within {} ms",
                        u.window_ms
                    )))
                }
                _ if now >= u.deadline_ms => {
                    Some(Err("the new build did not start in time".to_string()))
                }
                _ => None,
            };
            match outcome {
                None => self.upgrades.push(u),
                Some(Ok(pid)) => {
                    let reply = Reply::ok(
                        u.id,
                        serde_json::json!({ "name": self.slot_name_of(u.slot), "version": u.to.version, "pid": pid }),
                    );
                    self.reply(u.conn, &reply);
                }
                Some(Err(why)) => {
                    let name = self.slot_name_of(u.slot);
                    crate::log!(
                        "[{name}] upgrade to {} failed: {why}; rolling back to {}",
                        u.to.label(),
                        u.from.label()
                    );
                    let rolled = self.roll_back(u.slot, work);
                    let msg = match rolled {
                        Ok(b) => format!(
                            "upgrade to {} failed: {why}; rolled back to {}",
                            u.to.label(),
                            b.label()
                        ),
                        Err(e) => format!(
                            "upgrade to {} failed: {why}; rollback failed too: {e}",
                            u.to.label()
                        ),
                    };
                    self.reply(u.conn, &Reply::error(u.id, ErrorCode::Failed, msg));
                }
            }
        }
    }

    fn slot_name_of(&self, slot: usize) -> String {
        self.slots
            .get(slot)
            .map_or_else(String::new, |s| s.service.name().to_string())
    }

    /// Goes back to the previous build and restarts on it.
    pub(super) fn roll_back(
        &mut self,
        slot: usize,
        work: &mut VecDeque<(usize, Input)>,
    ) -> Result<Build, String> {
        let name = self.slot_name_of(slot);
        let entry = self
            .overrides
            .services
            .get_mut(&name)
            .ok_or("no earlier build to go back to")?;
        let previous = entry
            .previous
            .last()
            .cloned()
            .ok_or("no earlier build to go back to")?;
        previous
            .verify()
            .map_err(|e| format!("previous build {} refused: {e}", previous.label()))?;
        entry.previous.pop();
        entry.current = Some(previous.clone());
        if let Err(e) = self.overrides.save(&self.opts.state_dir) {
            crate::log!("warning: {e}");
        }
        self.set_build(slot, &previous)?;
        crate::log!("[{name}] rolling back to {}", previous.label());
        self.journal_build(slot, "rollback", &previous);
        work.push_back((slot, Input::Restart));
        self.process(work);
        Ok(previous)
    }
}
