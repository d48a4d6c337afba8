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
use crate::version::{Checksum, FileId};

use super::worker::Job;

/// An upgrade or rollback whose binary the worker is checking.
#[derive(Debug)]
pub struct UpgradeTicket {
    conn: ConnId,
    id: u64,
    slot: usize,
    name: String,
    to: Build,
    change: Change,
}

/// What a checked build is for.
#[derive(Debug)]
pub(super) enum Change {
    /// An `upgrade` request, with its window.
    Upgrade { window_ms: Option<u64> },
    /// A `rollback` request, answered once the service has restarted.
    Rollback,
    /// The way back from an upgrade that failed (`why`), answered with an
    /// error saying so.
    Recover { failed: Build, why: String },
}

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
            exec: unit.exec.to_path_buf(),
            version: unit.rare.version.clone(),
            checksum: unit.rare.checksum.map(|c| format!("{}:{c}", c.kind())),
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
        unit.rare.checksum = self.checksum()?;
        unit.exec = self.exec.as_path().into();
        unit.rare.version = self.version.clone();
        unit.rare.compact();
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
    /// The unit file's own build when the upgrade was made: once the file
    /// says something else, the file wins and the override is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Build>,
}

/// Builds in force per service, as saved in the state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default)]
    pub services: BTreeMap<String, Override>,
}

pub(super) fn overrides_file(state_dir: &Path) -> PathBuf {
    state_dir.join("overrides.json")
}

impl Overrides {
    /// What a read of overrides.json gives (`overrides_read.rs` reads it):
    /// a missing or unreadable file applies no upgrade, and a corrupt one
    /// neither, with a warning; the next save replaces it.
    pub(super) fn from_read(path: &Path, read: std::io::Result<Vec<u8>>) -> Overrides {
        match read {
            Ok(data) => serde_json::from_slice(&data).unwrap_or_else(|e| {
                crate::log!(
                    "warning: {} is unreadable ({e}); upgrades in it are not applied",
                    path.display()
                );
                Overrides::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Overrides::default(),
            Err(e) => {
                crate::log!(
                    "warning: cannot read {}: {e}; upgrades in it are not applied",
                    path.display()
                );
                Overrides::default()
            }
        }
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

/// Why a saved build no longer applies to a unit as its file now reads.
fn stale_override(o: &Override, unit: &Unit, strict: bool) -> Result<Option<Unit>, String> {
    let Some(build) = &o.current else {
        return Ok(None);
    };
    if o.base.as_ref().is_some_and(|b| *b != Build::of(unit)) {
        return Err("the unit file names another build since".to_string());
    }
    let mut candidate = unit.clone();
    build.apply(&mut candidate)?;
    if strict && (candidate.rare.version.is_none() || candidate.rare.checksum.is_none()) {
        return Err("strict mode needs a version and a checksum, and it has no checksum".into());
    }
    if !build.exec.is_file() {
        return Err(format!("{} is not a file any more", build.exec.display()));
    }
    Ok(Some(candidate))
}

impl PendingUpgrade {
    pub(super) fn involves(&self, slot: usize) -> bool {
        self.slot == slot
    }
}

impl Supervisor {
    /// Has the overrides written, on the clock writer's thread (a hung
    /// disk must not stall the loop); `saved_note` tells later how far it
    /// got. Until a save is on disk, reloads keep the overrides in memory
    /// rather than read back a file that lacks them.
    fn save_overrides(&mut self) {
        match serde_json::to_vec_pretty(&self.overrides) {
            Ok(data) => {
                self.overrides_seq = self.overrides_seq.saturating_add(1);
                self.clock_writer.save_overrides(self.overrides_seq, data);
            }
            Err(e) => crate::log!("warning: cannot encode the overrides: {e}"),
        }
    }

    /// Whether every save so far is on disk: `None` if so, else what to
    /// tell the user.
    pub(super) fn saved_note(&self) -> Option<String> {
        let status = self.clock_writer.saves();
        let path = overrides_file(&self.opts.state_dir);
        if status.done < self.overrides_seq {
            Some(format!(
                "{} has not been written yet (its disk is slow or does not answer): the build is in force but will not survive a restart of zurg until it is",
                path.display()
            ))
        } else {
            status.error.map(|e| {
                format!("{e}: the build is in force but will not survive a restart of zurg")
            })
        }
    }

    /// Refuses an upgrade or rollback while overrides.json has not been
    /// read: saving would replace the builds it holds with this one alone.
    fn overrides_unknown_refusal(&self, id: u64) -> Option<Reply> {
        self.overrides_unknown.then(|| {
            Reply::error(
                id,
                ErrorCode::Failed,
                format!(
                    "{} has not been read (its disk did not answer): upgrades and rollbacks are refused until a reload reads it; nothing changed",
                    overrides_file(&self.opts.state_dir).display()
                ),
            )
        })
    }

    /// Applies a saved upgrade to a freshly parsed unit. One that no longer
    /// applies (the unit file changed, strict mode, its binary is gone) is
    /// dropped from overrides.json and the unit file's build runs: a stale
    /// override must never keep a good unit from running. Returns the
    /// report line for a dropped one.
    pub(super) fn apply_override(&mut self, unit: &mut Unit) -> Option<String> {
        let o = self.overrides.services.get(&*unit.name)?;
        let why = match stale_override(o, unit, self.opts.strict) {
            Ok(Some(applied)) => {
                *unit = applied;
                return None;
            }
            Ok(None) => return None,
            Err(why) => why,
        };
        let label = o.current.as_ref().map(Build::label).unwrap_or_default();
        self.overrides.services.remove(&*unit.name);
        self.save_overrides();
        let line = format!(
            "{}: saved build {label} dropped from {}: {why}; running the unit file's build {}",
            unit.name,
            overrides_file(&self.opts.state_dir).display(),
            Build::of(unit).label()
        );
        crate::log!("warning: {line}");
        Some(line)
    }

    fn set_build(&mut self, slot: usize, build: &Build) -> Result<(), String> {
        let s = self.slots.get_mut(slot).ok_or("no such service")?;
        // The unit stops being the file's build: keep that apart.
        if s.cold.get().is_none_or(|c| c.file_build.is_none()) {
            s.cold.make().file_build = Some(Build::of(&s.service.unit));
        }
        let mut unit = s.service.unit.clone();
        build.apply(&mut unit)?;
        let spec = spawn_spec(&unit, &self.start_dir, &[])?;
        s.service.unit = unit;
        s.replace_spec(spec);
        s.cold.set_digest(None);
        Ok(())
    }

    fn journal_build(&mut self, slot: usize, kind: crate::journal::Kind, build: &Build) {
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let record = crate::journal::Record {
            time_us: crate::os::wall_clock_us(),
            service: s.service.name().to_string(),
            kind,
            gpid: s
                .gpid(self.host_ip)
                .map(|g| g.to_string())
                .unwrap_or_default(),
            version: build.version.clone(),
            ..Default::default()
        };
        self.journal.send(&record);
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
        let Some(slot) = self.by_name.get(self.slots.as_slice(), name) else {
            return Some(Reply::error(
                id,
                ErrorCode::UnknownService,
                self.not_one_service(name),
            ));
        };
        if let Some(refused) = self.overrides_unknown_refusal(id) {
            return Some(refused);
        }
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
        if self.opts.strict && checksum.is_none() {
            return Some(Reply::error(
                id,
                ErrorCode::Failed,
                "strict mode: an upgrade needs --md5 or --sha256; nothing changed",
            ));
        }
        let to = Build {
            exec,
            version: Some(version),
            checksum,
        };
        // Hashing a large binary takes seconds: the worker does it, and
        // the upgrade goes on in `verified_upgrade` when it answers.
        if let (Some(worker), Ok(Some(want))) = (&self.worker, to.checksum()) {
            if let Some(v) = &to.version {
                if let Err(e) = crate::unit::parse::versioned_path(&to.exec, v) {
                    return Some(Reply::error(
                        id,
                        ErrorCode::Failed,
                        format!("new build refused, nothing changed: {e}"),
                    ));
                }
            }
            let job = Job::Verify {
                path: to.exec.clone(),
                want,
                ticket: Box::new(UpgradeTicket {
                    conn,
                    id,
                    slot,
                    name: name.to_string(),
                    to,
                    change: Change::Upgrade { window_ms },
                }),
            };
            return worker.submit_request(id, job);
        }
        if let Err(e) = to.verify() {
            return Some(Reply::error(
                id,
                ErrorCode::Failed,
                format!("new build refused, nothing changed: {e}"),
            ));
        }
        self.apply_upgrade(conn, id, slot, from, to, window_ms, None, work)
    }

    /// The worker has checked an upgrade's or a rollback's binary: go on
    /// with it, or say why not.
    pub(super) fn verified_upgrade(
        &mut self,
        ticket: UpgradeTicket,
        result: Result<(FileId, Checksum), String>,
        work: &mut VecDeque<(usize, Input)>,
    ) {
        let (conn, id) = (ticket.conn, ticket.id);
        let gone = if self.phase != super::Phase::Running {
            Some(Reply::error(
                id,
                ErrorCode::ShuttingDown,
                "zurg is shutting down",
            ))
        } else if self.by_name.get(self.slots.as_slice(), &ticket.name) != Some(ticket.slot) {
            Some(Reply::error(
                id,
                ErrorCode::UnknownService,
                format!("no service named `{}` any more", ticket.name),
            ))
        } else {
            None
        };
        let reply = match (gone, &ticket.change) {
            (Some(reply), _) => Some(reply),
            (None, Change::Upgrade { window_ms }) => match (result, self.slots.get(ticket.slot)) {
                (Err(e), _) => Some(Reply::error(
                    id,
                    ErrorCode::Failed,
                    format!("new build refused, nothing changed: {e}"),
                )),
                (Ok(digest), Some(s)) => {
                    let from = Build::of(&s.service.unit);
                    let (slot, to, window_ms) = (ticket.slot, ticket.to, *window_ms);
                    self.apply_upgrade(conn, id, slot, from, to, window_ms, Some(digest), work)
                }
                (Ok(_), None) => Some(Reply::error(
                    id,
                    ErrorCode::UnknownService,
                    format!("no service named `{}` any more", ticket.name),
                )),
            },
            (None, Change::Rollback | Change::Recover { .. }) => {
                self.finish_roll_back(ticket, result.map(Some), work)
            }
        };
        if let Some(reply) = reply {
            self.reply(conn, &reply);
        }
    }

    /// Switches `slot` to the checked build `to` and restarts it; the
    /// reply comes from `settle_upgrades`. `digest` is the worker's hash of
    /// the very file, so the restart need not hash it again.
    #[allow(clippy::too_many_arguments)]
    fn apply_upgrade(
        &mut self,
        conn: ConnId,
        id: u64,
        slot: usize,
        from: Build,
        to: Build,
        window_ms: Option<u64>,
        digest: Option<(FileId, Checksum)>,
        work: &mut VecDeque<(usize, Input)>,
    ) -> Option<Reply> {
        let name = self.slots.get(slot)?.service.name().to_string();
        let name = name.as_str();
        if let Err(e) = self.set_build(slot, &to) {
            return Some(Reply::error(id, ErrorCode::Failed, e));
        }
        let base = self.slots.get(slot).map(|s| s.file_build());
        if let Some(s) = self.slots.get_mut(slot) {
            s.cold.set_digest(digest);
        }
        let entry = self.overrides.services.entry(name.to_string()).or_default();
        entry.base = base;
        entry.previous.push(from.clone());
        if entry.previous.len() > KEEP_PREVIOUS {
            entry.previous.remove(0);
        }
        entry.current = Some(to.clone());
        self.save_overrides();
        crate::log!("[{name}] upgrading from {} to {}", from.label(), to.label());
        self.journal_build(slot, crate::journal::Kind::Upgrade, &to);
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
                Some(State::Failed) => Some(Err(
                    match self
                        .slots
                        .get(u.slot)
                        .and_then(|s| s.service.last_error.as_ref())
                    {
                        Some(failure) => format!("the new build failed: {failure}"),
                        None => "the new build was refused at start".to_string(),
                    },
                )),
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
                    let name = self.slot_name_of(u.slot);
                    let mut result =
                        serde_json::json!({ "name": name, "version": u.to.version, "pid": pid });
                    if let (Some(note), Some(fields)) = (self.saved_note(), result.as_object_mut())
                    {
                        crate::log!("warning: [{name}] {note}");
                        fields.insert("warning".into(), note.into());
                    }
                    let reply = Reply::ok(u.id, result);
                    self.reply(u.conn, &reply);
                }
                Some(Err(why)) => {
                    let name = self.slot_name_of(u.slot);
                    crate::log!(
                        "[{name}] upgrade to {} failed: {why}; rolling back to {}",
                        u.to.label(),
                        u.from.label()
                    );
                    let recover = Change::Recover {
                        failed: u.to.clone(),
                        why,
                    };
                    if let Some(reply) = self.roll_back(u.conn, u.id, u.slot, recover, work) {
                        self.reply(u.conn, &reply);
                    }
                }
            }
        }
    }

    fn slot_name_of(&self, slot: usize) -> String {
        self.slots
            .get(slot)
            .map_or_else(String::new, |s| s.service.name().to_string())
    }

    /// Goes back to the previous build and restarts on it, for a
    /// `rollback` request or after a failed upgrade. A checksummed build is
    /// hashed by the worker first (a large binary takes seconds), so the
    /// answer may come later: `None` then.
    pub(super) fn roll_back(
        &mut self,
        conn: ConnId,
        id: u64,
        slot: usize,
        change: Change,
        work: &mut VecDeque<(usize, Input)>,
    ) -> Option<Reply> {
        if matches!(change, Change::Rollback) {
            if let Some(refused) = self.overrides_unknown_refusal(id) {
                return Some(refused);
            }
        }
        let name = self.slot_name_of(slot);
        let back = match self.previous_build(&name) {
            Ok(to) => UpgradeTicket {
                conn,
                id,
                slot,
                name,
                to,
                change,
            },
            Err(e) => return Some(rollback_refused(id, &change, &e)),
        };
        match (&self.worker, back.to.checksum()) {
            (Some(worker), Ok(Some(want))) => {
                let job = Job::Verify {
                    path: back.to.exec.clone(),
                    want,
                    ticket: Box::new(back),
                };
                worker.submit_request(id, job)
            }
            _ => {
                // No checksum: a stat is all there is to check.
                let result = back.to.verify().map(|()| None);
                self.finish_roll_back(back, result, work)
            }
        }
    }

    /// The build `rollback` would go back to, if it may.
    fn previous_build(&self, name: &str) -> Result<Build, String> {
        let previous = self
            .overrides
            .services
            .get(name)
            .and_then(|o| o.previous.last())
            .cloned()
            .ok_or("no earlier build to go back to")?;
        if self.opts.strict && previous.checksum.is_none() {
            return Err(format!(
                "previous build {} has no checksum, which strict mode needs",
                previous.label()
            ));
        }
        if let Some(v) = &previous.version {
            crate::unit::parse::versioned_path(&previous.exec, v)
                .map_err(|e| format!("previous build {} refused: {e}", previous.label()))?;
        }
        Ok(previous)
    }

    /// Switches to the checked previous build (unless the check failed, or
    /// the history changed while it ran) and restarts on it.
    fn finish_roll_back(
        &mut self,
        back: UpgradeTicket,
        checked: Result<Option<(FileId, Checksum)>, String>,
        work: &mut VecDeque<(usize, Input)>,
    ) -> Option<Reply> {
        let UpgradeTicket {
            conn,
            id,
            slot,
            name,
            to,
            change,
        } = back;
        let digest = match checked {
            Ok(digest) => digest,
            Err(e) => {
                let e = format!("previous build {} refused: {e}", to.label());
                return Some(rollback_refused(id, &change, &e));
            }
        };
        let Some(entry) = self.overrides.services.get_mut(&name) else {
            return Some(rollback_refused(
                id,
                &change,
                "no earlier build to go back to",
            ));
        };
        if entry.previous.last() != Some(&to) {
            let e = "the builds changed while the previous one was checked; nothing changed";
            return Some(rollback_refused(id, &change, e));
        }
        entry.previous.pop();
        entry.current = Some(to.clone());
        self.save_overrides();
        if let Err(e) = self.set_build(slot, &to) {
            return Some(rollback_refused(id, &change, &e));
        }
        if let Some(s) = self.slots.get_mut(slot) {
            s.cold.set_digest(digest);
        }
        crate::log!("[{name}] rolling back to {}", to.label());
        self.journal_build(slot, crate::journal::Kind::Rollback, &to);
        let old_pid = self.slots.get(slot).and_then(|s| s.service.state.pid());
        work.push_back((slot, Input::Restart));
        self.process(work);
        match change {
            Change::Rollback | Change::Upgrade { .. } => {
                self.await_rolled_back(conn, id, slot, old_pid);
                None
            }
            Change::Recover { failed, why } => Some(Reply::error(
                id,
                ErrorCode::Failed,
                format!(
                    "upgrade to {} failed: {why}; rolled back to {}",
                    failed.label(),
                    to.label()
                ),
            )),
        }
    }
}

/// The answer when the way back is refused: for a failed upgrade, that it
/// failed and could not be undone.
fn rollback_refused(id: u64, change: &Change, e: &str) -> Reply {
    let msg = match change {
        Change::Recover { failed, why } => format!(
            "upgrade to {} failed: {why}; rollback failed too: {e}",
            failed.label()
        ),
        Change::Rollback | Change::Upgrade { .. } => e.to_string(),
    };
    Reply::error(id, ErrorCode::Failed, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(exec: &str, version: Option<&str>, md5: Option<&str>) -> Unit {
        let mut text = format!("exec = \"{exec}\"\n");
        if let Some(v) = version {
            text.push_str(&format!("version = \"{v}\"\n"));
        }
        if let Some(m) = md5 {
            text.push_str(&format!("md5 = \"{m}\"\n"));
        }
        crate::unit::parse::parse_unit("api", Path::new("/u/api.toml"), &text).unwrap()
    }

    const SUM: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn an_override_applies_until_its_unit_file_or_the_rules_change() {
        let file = unit("/bin/sleep", None, None);
        let to = Build {
            exec: "/bin/true".into(),
            version: Some("2.0".into()),
            checksum: None,
        };
        let o = Override {
            current: Some(to.clone()),
            previous: vec![Build::of(&file)],
            base: Some(Build::of(&file)),
        };
        let applied = stale_override(&o, &file, false).unwrap().unwrap();
        assert_eq!(Build::of(&applied), to);
        // strict: no checksum, so it no longer applies
        assert!(stale_override(&o, &file, true)
            .unwrap_err()
            .contains("strict mode"));
        // the unit file names another build: the file wins
        let edited = unit("/bin/cat", None, None);
        assert_eq!(
            stale_override(&o, &edited, false).unwrap_err(),
            "the unit file names another build since"
        );
        // a saved build whose binary is gone
        let gone = Override {
            current: Some(Build {
                exec: "/nonexistent/api".into(),
                version: None,
                checksum: Some(format!("md5:{SUM}")),
            }),
            previous: vec![],
            base: None,
        };
        assert!(stale_override(&gone, &file, false)
            .unwrap_err()
            .contains("/nonexistent/api is not a file any more"));
        // an overrides.json from before `base` was kept still applies
        let old = Override { base: None, ..o };
        assert!(stale_override(&old, &edited, false).unwrap().is_some());
    }
}
