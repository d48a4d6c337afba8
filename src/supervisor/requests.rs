//! Control requests, executed by the supervisor: status, start, stop,
//! restart, signal, reload, events, shutdown. Requests that must wait for a
//! state (stop until down, restart until running again) are parked in
//! `waiting` and answered from the loop once settled or at their deadline.

use std::collections::VecDeque;

use mio::Token;

use super::upgrade::Change;
use super::worker::{Done, Job};
use super::{Supervisor, TimerKey};
use crate::control::proto::EventKind;
use crate::control::proto::{
    ErrorCode, EventRecord, ExitInfo, GpidInfo, Outcome, Reply, Request, ServiceStatus, StatsRow,
    Verb, VersionInfo,
};
use crate::control::server::{ConnId, Incoming};
use crate::journal::Kind as JournalKind;
use crate::service::{Event, Exit, Input, State};
use crate::stats::Sample;

/// Lifecycle events kept for `events` without --follow.
const RECENT_EVENTS: usize = 1000;
/// Extra time a restart gets beyond the service's stop timeout.
const RESTART_SLACK_MS: u64 = 5_000;

#[derive(Debug)]
pub(super) struct Waiting {
    pub(super) conn: ConnId,
    pub(super) id: u64,
    /// Slots, with the pid each had when the request came (for restart).
    pub(super) slots: Vec<(usize, Option<i32>)>,
    pub(super) until: Until,
    deadline_ms: u64,
    /// Services the request touched without naming them, and why.
    pub(super) notes: Vec<(usize, String)>,
    /// Instances a rolling restart has still to restart, in order
    /// (`rolling.rs`); empty for every other request.
    pub(super) rolling: Vec<usize>,
    /// A rollback: the answer notes an overrides.json save not on disk.
    saves_overrides: bool,
    /// Processes (pid, `since_ms` of their run) a `wait` found the kernel
    /// already ending (`os::dying`): not up, whatever their state still
    /// says, until zurg sees them exit and the service comes back.
    pub(super) doomed: Vec<(i32, u64)>,
    /// `Until::Started`: the first failure each service showed on its way
    /// (`start_wait.rs`).
    pub(super) failures: Vec<(usize, String)>,
    /// How long it was given, for the message at its deadline.
    pub(super) wait_ms: u64,
}

impl Waiting {
    pub(super) fn involves(&self, slot: usize) -> bool {
        self.slots.iter().any(|(s, _)| *s == slot)
    }
}

/// What a request asked of a service, for judging its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Until {
    Down,
    Restarted,
    /// `wait`: ready, or a one-shot done (`Service::satisfies_dependants`).
    Ready,
    /// `wait --down`: down and not about to start by itself.
    AtRest,
    /// `start` or `restart` without `--no-block`: up as its kind means it
    /// (`start_wait.rs`), or failed.
    Started,
}

/// The code a service's last run ended with, while it has no process and
/// that run is what it stands on: a one-shot done, a run that ended and is
/// kept down, a one-shot failed on its exit code.
fn last_code(service: &crate::service::Service) -> Option<i32> {
    let Some(Exit::Code(code)) = service.last_exit else {
        return None;
    };
    let failed_on_it = matches!(
        service.last_error.as_deref(),
        Some(crate::service::Failure::Unsuccessful(Exit::Code(c))) if *c == code
    );
    match service.state {
        State::Done | State::Exited => Some(code),
        State::Failed if failed_on_it => Some(code),
        _ => None,
    }
}

fn exit_info(exit: Exit) -> ExitInfo {
    match exit {
        Exit::Code(c) => ExitInfo {
            code: Some(c),
            ..ExitInfo::default()
        },
        Exit::Signal(s) => ExitInfo {
            signal: Some(crate::sig::name(s)),
            ..ExitInfo::default()
        },
    }
}

impl Supervisor {
    pub(super) fn on_control(&mut self, token: Token, work: &mut VecDeque<(usize, Input)>) {
        let now = self.reactor.now_ms();
        let Some(control) = &mut self.control else {
            return;
        };
        let incoming = control.handle(self.reactor.registry(), token, now);
        for req in incoming {
            self.on_request(req, work);
        }
        self.pump_streams();
        self.pump_logs();
    }

    /// Passes the control server's wishes for streamed replies (next chunk,
    /// cancel) to the worker that produces them.
    fn pump_streams(&mut self) {
        let (Some(control), Some(worker)) = (&mut self.control, &self.worker) else {
            return;
        };
        let (pulls, cancels) = control.take_stream_requests();
        for conn in pulls {
            worker.submit(Job::More { conn });
        }
        for conn in cancels {
            worker.submit(Job::Cancel { conn });
        }
    }

    /// The worker has results: chunks of streamed replies, samples for
    /// `stats`, log lines.
    pub(super) fn on_worker(&mut self, work: &mut VecDeque<(usize, Input)>) {
        let Some(worker) = &self.worker else { return };
        for done in worker.results() {
            match done {
                Done::Chunk { conn, bytes, last } => {
                    if let Some(c) = &mut self.control {
                        c.push_chunk(self.reactor.registry(), conn, &bytes, last);
                    }
                }
                Done::Stats { conn, id, rows } => {
                    let reply = self.stats_rows(id, rows);
                    self.reply(conn, &reply);
                }
                Done::Loaded {
                    loaded,
                    reply_to,
                    overrides,
                    overrides_seq,
                } => {
                    if self.phase != super::Phase::Running {
                        if let Some((conn, id)) = reply_to {
                            let e =
                                Reply::error(id, ErrorCode::ShuttingDown, "zurg is shutting down");
                            self.reply(conn, &e);
                        }
                        continue;
                    }
                    let report = self
                        .take_overrides(overrides, overrides_seq)
                        .map_err(super::not_applied)
                        .map(|()| self.apply_loaded(loaded, work));
                    self.process(work);
                    match (reply_to, report) {
                        (Some((conn, id)), report) => {
                            self.reply(conn, &super::reload_reply(id, report));
                        }
                        (None, Err(e)) => crate::log!("warning: {e}"),
                        (None, Ok(_)) => {}
                    }
                }
                Done::Verified { ticket, result } => {
                    self.verified_upgrade(*ticket, result, work);
                }
                Done::Digested {
                    slot,
                    generation,
                    result,
                } => self.digested(slot, generation, result, work),
                Done::Log(line) => crate::log!("{line}"),
            }
        }
        self.pump_streams();
    }

    /// The control server's next turn (`ControlServer::turn`).
    pub(super) fn on_control_turn(&mut self, work: &mut VecDeque<(usize, Input)>) {
        let now = self.reactor.now_ms();
        let Some(control) = &mut self.control else {
            return;
        };
        let incoming = control.turn(self.reactor.registry(), now);
        for req in incoming {
            self.on_request(req, work);
        }
        self.pump_streams();
        self.pump_logs();
    }

    pub(super) fn reply(&mut self, conn: ConnId, reply: &Reply) {
        if let Some(relay_id) = conn.relay_id() {
            return self.remote_reply(relay_id, reply);
        }
        if let Some(c) = &mut self.control {
            c.reply(self.reactor.registry(), conn, reply);
        }
    }

    /// Resolves names to live slots; an empty list means every service.
    fn resolve(&self, names: &[String]) -> Result<Vec<usize>, String> {
        if names.is_empty() {
            let mut all: Vec<usize> = self.by_name.slots().collect();
            all.sort_by(|a, b| self.slot_name(*a).cmp(self.slot_name(*b)));
            return Ok(all);
        }
        // A name given twice must act once: `start s s` on a stopped
        // service would otherwise spawn twice and lose track of one.
        let mut slots: Vec<usize> = Vec::with_capacity(names.len());
        let mut seen = std::collections::HashSet::with_capacity(names.len());
        for n in names {
            let found = match self.by_name.get(self.slots.as_slice(), n) {
                Some(slot) => vec![slot],
                None => self.instances_of(n),
            };
            if found.is_empty() {
                return Err(format!("no service named `{n}`"));
            }
            for slot in found {
                if seen.insert(slot) {
                    slots.push(slot);
                }
            }
        }
        Ok(slots)
    }

    /// The slots of `NAME@0`, `NAME@1`, ... of a unit with `instances`, in
    /// instance order; empty when `name` has none.
    pub(super) fn instances_of(&self, name: &str) -> Vec<usize> {
        let mut found: Vec<(u32, usize)> = self
            .by_name
            .slots()
            .filter_map(|slot| Some((self.slots.get(slot)?, slot)))
            .filter(|(s, _)| {
                s.service
                    .name()
                    .strip_prefix(name)
                    .is_some_and(|r| r.starts_with('@'))
            })
            .filter_map(|(s, slot)| Some((s.service.unit.instance?, slot)))
            .collect();
        found.sort_unstable();
        found.into_iter().map(|(_, slot)| slot).collect()
    }

    /// Why a verb that acts on one service cannot take `name`: unknown, or
    /// a unit with instances, each a service of its own.
    pub(super) fn not_one_service(&self, name: &str) -> String {
        let instances = self.instances_of(name);
        match (instances.first(), instances.last()) {
            (Some(first), Some(last)) => format!(
                "`{name}` is a unit with {} instances: name one, {} to {}",
                instances.len(),
                self.slot_name(*first),
                self.slot_name(*last)
            ),
            _ => format!("no service named `{name}`"),
        }
    }

    pub(super) fn slot_name(&self, slot: usize) -> &str {
        self.slots.get(slot).map_or("", |s| s.service.name())
    }

    fn journal_status(&self) -> crate::control::proto::JournalStatus {
        let h = self.journal.health();
        crate::control::proto::JournalStatus {
            queued: h.queued,
            not_written: h.not_written,
        }
    }

    /// `status` of the named services (all when none), with the units whose
    /// file the last load refused: a rejected unit that never ran gets a
    /// row of its own, one whose previous unit still runs keeps running and
    /// its row says why it was not updated. Either is a problem, so
    /// `zurg status` fails until the file is fixed.
    fn status_rows(&self, names: &[String]) -> Result<Vec<ServiceStatus>, String> {
        let file_of = |name: &str| name.rsplit_once('@').map_or(name, |(f, _)| f).to_string();
        let (known, only_rejected): (Vec<&String>, Vec<&String>) = names.iter().partition(|n| {
            !self.rejected_units.contains_key(*n) || self.by_name.contains(self.slots.as_slice(), n)
        });
        let known: Vec<String> = known.into_iter().cloned().collect();
        let slots = if names.is_empty() || !known.is_empty() {
            self.resolve(&known)?
        } else {
            Vec::new()
        };
        let mut rows: Vec<ServiceStatus> =
            slots.iter().filter_map(|s| self.status_of(*s)).collect();
        for row in &mut rows {
            if let Some(err) = self.rejected_units.get(&file_of(&row.name)) {
                row.problem.get_or_insert_with(|| {
                    format!("its unit file was rejected, the unit loaded before runs on: {err}")
                });
            }
        }
        let orphans = self.rejected_units.iter().filter(|(name, _)| {
            let wanted = if names.is_empty() {
                !rows.iter().any(|r| file_of(&r.name) == **name)
            } else {
                only_rejected.contains(name)
            };
            wanted
        });
        let mut rejected: Vec<ServiceStatus> = orphans
            .map(|(name, err)| {
                ServiceStatus::rejected(name, format!("its unit file was rejected: {err}"))
            })
            .collect();
        if !rejected.is_empty() {
            rows.append(&mut rejected);
            rows.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(rows)
    }

    fn status_of(&self, slot: usize) -> Option<ServiceStatus> {
        let s = self.slots.get(slot)?;
        let now = self.reactor.now_ms();
        let uptime_ms = match s.service.state {
            State::Running { since_ms, .. } | State::Stopping { since_ms, .. } => {
                Some(now.saturating_sub(since_ms))
            }
            _ => None,
        };
        let probes = self.probe_status(slot);
        Some(ServiceStatus {
            name: s.service.name().to_string(),
            state: s.service.state_name().to_string(),
            pid: s.service.state.pid(),
            uptime_ms,
            restarts: s.service.restarts,
            last_exit: s.service.last_exit.map(exit_info),
            gpid: s.gpid(self.host_ip).map(|g| g.to_string()),
            version: s.service.unit.rare.version.clone(),
            last_error: s.service.last_error.as_ref().map(ToString::to_string),
            ready: s.service.is_ready(),
            ready_after_ms: s.service.ready_after_ms.filter(|_| s.service.is_ready()),
            health: probes.health,
            problem: s.service.problem(),
            waiting_for: if s.service.state == State::Waiting {
                self.waiting_for(slot)
            } else {
                Vec::new()
            },
            status_text: probes.status_text,
        })
    }

    /// What a request did to one service; with `Asked::Up`, a service that
    /// is not running carries the reason as an error.
    fn outcome(&self, slot: usize, asked: Asked) -> Outcome {
        let s = self.slots.get(slot);
        let error = match (asked, s) {
            (Asked::Down, _) => None,
            (Asked::Up, None) => Some("its unit was removed".to_string()),
            (Asked::Up, Some(s)) => match s.service.state {
                State::Running { .. } | State::Stopping { .. } | State::Done => None,
                // Held for its dependencies, which are on their way: it
                // starts by itself (blocked by a failed one: the reason).
                State::Waiting if s.service.last_error.is_none() => None,
                // A run-once service that finished cleanly did what it was
                // asked.
                State::Exited
                    if s.service.last_error.is_none()
                        && s.service.last_exit == Some(Exit::Code(0)) =>
                {
                    None
                }
                state => Some(match (&s.service.last_error, s.service.last_exit) {
                    (Some(failure), _) => failure.to_string(),
                    (None, Some(exit)) => {
                        format!("exited with {} right after starting", exit.describe())
                    }
                    (None, None) => format!("it is {}", state.name()),
                }),
            },
        };
        Outcome {
            name: self.slot_name(slot).to_string(),
            state: s.map_or("gone", |s| s.service.state_name()).to_string(),
            pid: s.and_then(|s| s.service.state.pid()),
            error,
            note: None,
            exit: s.and_then(|s| last_code(&s.service)),
        }
    }

    /// `outcome`, judging nothing: the service as it is, with the
    /// request's note.
    pub(super) fn outcome_as_is(&self, slot: usize, notes: &[(usize, String)]) -> Outcome {
        self.noted_outcome(slot, Asked::Down, notes)
    }

    pub(super) fn on_request(&mut self, incoming: Incoming, work: &mut VecDeque<(usize, Input)>) {
        let Incoming { conn, request, .. } = incoming;
        let Request { id, verb } = request;
        // An exit reaped earlier in this turn (its pidfd came before the
        // control socket) is still queued: fed in first, so no answer shows
        // a reaped process as running (`zurg wait` would answer with it).
        self.process(work);
        let changes_services = matches!(
            verb,
            Verb::Start { .. }
                | Verb::Restart { .. }
                | Verb::Reload
                | Verb::Shutdown { .. }
                | Verb::Upgrade { .. }
                | Verb::Rollback { .. }
        );
        if changes_services && self.phase != super::Phase::Running {
            self.reply(
                conn,
                &Reply::error(id, ErrorCode::ShuttingDown, "zurg is shutting down"),
            );
            return;
        }
        let reply = match verb {
            Verb::Version => Reply::ok(
                id,
                VersionInfo {
                    zurg: env!("CARGO_PKG_VERSION").to_string(),
                    protocol: crate::control::proto::PROTOCOL_VERSION,
                    pid: std::process::id(),
                    gpid: Some(self.own_gpid.clone()),
                    journal: Some(self.journal_status()),
                    publish: self.forwarder.as_ref().map(|f| f.status()),
                },
            ),
            Verb::Status { names } => match self.status_rows(&names) {
                Ok(rows) => Reply::ok(id, rows),
                Err(e) => Reply::error(id, ErrorCode::UnknownService, e),
            },
            Verb::Start { names, .. } | Verb::Restart { names, .. } | Verb::Stop { names, .. }
                if names.is_empty() =>
            {
                Reply::error(id, ErrorCode::BadRequest, "name at least one service")
            }
            Verb::Start {
                names,
                timeout_ms,
                no_block,
            } => match self.resolve(&names) {
                Ok(asked) => {
                    // What they need comes first, and is answered for too.
                    let first = self.start_needed(&asked, work);
                    let note = format!("started first: needed by {}", names.join(", "));
                    work.extend(asked.iter().map(|s| (*s, Input::Start)));
                    let slots: Vec<usize> = first.iter().chain(&asked).copied().collect();
                    self.process(work);
                    if !no_block {
                        let notes = first.iter().map(|s| (*s, note.clone())).collect();
                        let wait = self
                            .relayed_wait(conn, timeout_ms, |me| me.start_wait_ms(&slots, None));
                        return self.park(conn, id, slots, Until::Started, wait, notes);
                    }
                    // A checksummed binary not hashed yet is hashed off the
                    // loop, a `pre_start` hook runs: the answer waits for
                    // that start to run or fail.
                    let hashing = slots.iter().any(|s| {
                        self.slots.get(*s).is_some_and(|x| {
                            matches!(x.service.state, State::Starting | State::PreStart { .. })
                        })
                    });
                    let notes: Vec<(usize, String)> =
                        first.iter().map(|s| (*s, note.clone())).collect();
                    if hashing {
                        let wait = self.wait_ms(&slots, None);
                        return self.park(conn, id, slots, Until::Restarted, wait, notes);
                    }
                    Reply::ok(
                        id,
                        slots
                            .iter()
                            .map(|s| self.noted_outcome(*s, Asked::Up, &notes))
                            .collect::<Vec<_>>(),
                    )
                }
                Err(e) => Reply::error(id, ErrorCode::UnknownService, e),
            },
            Verb::Stop { names, timeout_ms } => match self.resolve(&names) {
                Ok(asked) => {
                    // Their dependants first, each once its own are down.
                    let first = self.stop_in_order(&asked, work);
                    self.process(work);
                    let note = format!("stopped first: depends on {}", names.join(", "));
                    let notes = first.iter().map(|s| (*s, note.clone())).collect();
                    let slots: Vec<usize> = first.iter().chain(&asked).copied().collect();
                    // Dependants stopped first: each level may take its
                    // own stop timeout.
                    let wait = match (timeout_ms, first.is_empty()) {
                        (None, false) => slots
                            .iter()
                            .filter_map(|s| self.slots.get(*s))
                            .map(|s| s.service.unit.stop_timeout_ms)
                            .fold(0u64, u64::saturating_add)
                            .saturating_add(RESTART_SLACK_MS),
                        _ => self.wait_ms(&slots, timeout_ms),
                    };
                    return self.park(conn, id, slots, Until::Down, wait, notes);
                }
                Err(e) => Reply::error(id, ErrorCode::UnknownService, e),
            },
            Verb::Restart {
                names,
                timeout_ms,
                no_block,
            } => match self.resolve(&names) {
                Ok(mut asked) => {
                    // `restart web`, where web has instances: one at a time.
                    let rolling = match names.as_slice() {
                        [one]
                            if !self.by_name.contains(self.slots.as_slice(), one)
                                && asked.len() > 1 =>
                        {
                            asked.split_off(1)
                        }
                        _ => Vec::new(),
                    };
                    // A service that was down is started, with what it
                    // needs first, as `start` does; running dependencies
                    // and dependants are left alone.
                    let first = self.start_needed(&asked, work);
                    let note = format!("started first: needed by {}", names.join(", "));
                    let notes = first.iter().map(|s| (*s, note.clone())).collect();
                    let slots: Vec<usize> = first.iter().chain(&asked).copied().collect();
                    // Waiting for the outcome, each service may take its
                    // stop and then its start.
                    let wait = match no_block {
                        true => self.wait_ms(&slots, timeout_ms),
                        false => self.relayed_wait(conn, timeout_ms, |me| {
                            me.wait_ms(&slots, None)
                                .saturating_add(me.start_wait_ms(&slots, None))
                        }),
                    };
                    let until = match no_block {
                        true => Until::Restarted,
                        false => Until::Started,
                    };
                    work.extend(asked.iter().map(|s| (*s, Input::Restart)));
                    // Pids are taken before the restart is processed, so a
                    // service that comes back at once is still seen to change.
                    let before: Vec<(usize, Option<i32>)> = slots
                        .iter()
                        .map(|s| (*s, self.slots.get(*s).and_then(|x| x.service.state.pid())))
                        .collect();
                    self.process(work);
                    let wait = wait.saturating_mul(1 + rolling.len() as u64);
                    return self.park_rolling(conn, id, before, until, wait, notes, rolling);
                }
                Err(e) => Reply::error(id, ErrorCode::UnknownService, e),
            },
            Verb::Signal { name, signal } => self.signal_request(id, &name, &signal),
            Verb::Gpid { name } => self.gpid_request(id, &name),
            Verb::Stats { names } => match self.stats_request(conn, id, &names) {
                Some(reply) => reply,
                None => return,
            },
            Verb::History { name, since_us } => {
                match self.history_request(conn, id, name, since_us) {
                    Some(reply) => reply,
                    None => return,
                }
            }
            Verb::Upgrade {
                name,
                version,
                md5,
                sha256,
                exec,
                window_ms,
            } => {
                match self.upgrade_request(
                    conn,
                    id,
                    &name,
                    version,
                    (md5, sha256),
                    exec,
                    window_ms,
                    work,
                ) {
                    Some(reply) => reply,
                    None => return,
                }
            }
            Verb::Rollback { name } => match self.by_name.get(self.slots.as_slice(), &name) {
                None => Reply::error(id, ErrorCode::UnknownService, self.not_one_service(&name)),
                Some(slot) => match self.roll_back(conn, id, slot, Change::Rollback, work) {
                    Some(reply) => reply,
                    None => return,
                },
            },
            Verb::Reload => {
                self.reload_later(Some((conn, id)), work);
                return;
            }
            Verb::Wait {
                names,
                until,
                timeout_ms,
            } => match self.resolve(&names) {
                Ok(_) if names.is_empty() => {
                    Reply::error(id, ErrorCode::BadRequest, "name at least one service")
                }
                Ok(slots) => {
                    let until = match until {
                        crate::control::proto::WaitFor::Ready => Until::Ready,
                        crate::control::proto::WaitFor::Down => Until::AtRest,
                    };
                    let wait = timeout_ms.unwrap_or(super::wait::DEFAULT_WAIT_MS);
                    return self.park(conn, id, slots, until, wait, Vec::new());
                }
                Err(e) => Reply::error(id, ErrorCode::UnknownService, e),
            },
            Verb::Events { follow } => {
                if follow {
                    if let Some(c) = &mut self.control {
                        c.follow(conn, id);
                    }
                    Reply::ok(id, serde_json::json!({ "following": true }))
                } else {
                    Reply::ok(id, self.recent.iter().cloned().collect::<Vec<_>>())
                }
            }
            Verb::Logs {
                name,
                lines,
                since_us,
                follow,
            } => self.logs_request(
                conn,
                id,
                super::logs::LogsAsk {
                    name,
                    lines,
                    since_us,
                    follow,
                },
            ),
            Verb::Shutdown { mode } => {
                self.shutdown_mode = mode;
                crate::log!("shutdown requested over the control socket ({mode})");
                let reply = Reply::ok(id, serde_json::json!({ "shutting_down": true }));
                self.reply(conn, &reply);
                self.begin_shutdown(super::Ending::Asked, work);
                return;
            }
        };
        self.reply(conn, &reply);
    }

    fn signal_request(&mut self, id: u64, name: &str, signal: &str) -> Reply {
        let Some(signo) = crate::sig::parse(signal) else {
            return Reply::error(
                id,
                ErrorCode::BadRequest,
                format!("unknown signal {signal:?}"),
            );
        };
        let Some(slot) = self.by_name.get(self.slots.as_slice(), name) else {
            return Reply::error(id, ErrorCode::UnknownService, self.not_one_service(name));
        };
        let Some(pid) = self.slots.get(slot).and_then(|s| s.service.state.pid()) else {
            return Reply::error(
                id,
                ErrorCode::NotRunning,
                format!("`{name}` is not running"),
            );
        };
        self.signal(slot, signo);
        Reply::ok(
            id,
            serde_json::json!({ "name": name, "pid": pid, "signal": crate::sig::name(signo) }),
        )
    }

    /// How long a stop or restart may take: as asked, else the longest
    /// stop timeout of the services involved plus some slack.
    fn wait_ms(&self, slots: &[usize], asked: Option<u64>) -> u64 {
        asked.unwrap_or_else(|| {
            slots
                .iter()
                .filter_map(|s| self.slots.get(*s))
                .map(|s| s.service.unit.stop_timeout_ms)
                .max()
                .unwrap_or(0)
                .saturating_add(RESTART_SLACK_MS)
        })
    }

    /// A start's or restart's wait: as asked, else `default`; relayed
    /// through a publisher, no longer than the publisher waits for the
    /// answer, so that the operator hears the outcome rather than
    /// `host_silent`.
    fn relayed_wait(
        &self,
        conn: ConnId,
        asked: Option<u64>,
        default: impl Fn(&Self) -> u64,
    ) -> u64 {
        use crate::publish::relay::{DEADLINE_MS, MAX_DEADLINE_MS, WAIT_SLACK_MS};
        let relayed = conn.relay_id().is_some();
        match asked {
            // The publisher gives the host the asked wait and some
            // (`relay::deadline_ms`), up to its own bound.
            Some(ms) if relayed => ms.min(MAX_DEADLINE_MS.saturating_sub(WAIT_SLACK_MS)),
            Some(ms) => ms,
            None if relayed => default(self).min(DEADLINE_MS.saturating_sub(RESTART_SLACK_MS)),
            None => default(self),
        }
    }

    pub(super) fn park(
        &mut self,
        conn: ConnId,
        id: u64,
        slots: Vec<usize>,
        until: Until,
        wait_ms: u64,
        notes: Vec<(usize, String)>,
    ) {
        let with: Vec<(usize, Option<i32>)> = slots.into_iter().map(|s| (s, None)).collect();
        self.park_rolling(conn, id, with, until, wait_ms, notes, Vec::new());
    }

    /// `outcome`, with the request's note on a service it did not name.
    fn noted_outcome(&self, slot: usize, asked: Asked, notes: &[(usize, String)]) -> Outcome {
        let mut o = self.outcome(slot, asked);
        o.note = notes
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, n)| n.clone());
        o
    }

    /// Answers a rollback once `slot` has restarted on the old build.
    pub(super) fn await_rolled_back(
        &mut self,
        conn: ConnId,
        id: u64,
        slot: usize,
        old_pid: Option<i32>,
    ) {
        let wait = self.wait_ms(&[slot], None);
        self.park_waiting(
            Waiting {
                conn,
                id,
                slots: vec![(slot, old_pid)],
                until: Until::Restarted,
                deadline_ms: 0,
                notes: Vec::new(),
                rolling: Vec::new(),
                saves_overrides: true,
                doomed: Vec::new(),
                failures: Vec::new(),
                wait_ms: 0,
            },
            wait,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn park_rolling(
        &mut self,
        conn: ConnId,
        id: u64,
        slots: Vec<(usize, Option<i32>)>,
        until: Until,
        wait_ms: u64,
        notes: Vec<(usize, String)>,
        rolling: Vec<usize>,
    ) {
        self.park_waiting(
            Waiting {
                conn,
                id,
                slots,
                until,
                deadline_ms: 0,
                notes,
                rolling,
                saves_overrides: false,
                doomed: Vec::new(),
                failures: Vec::new(),
                wait_ms: 0,
            },
            wait_ms,
        );
    }

    /// Parks `w` until it settles or `wait_ms` from now.
    fn park_waiting(&mut self, mut w: Waiting, wait_ms: u64) {
        w.deadline_ms = self.reactor.now_ms().saturating_add(wait_ms);
        w.wait_ms = wait_ms;
        self.reactor
            .timers
            .arm(w.deadline_ms, TimerKey::RequestDeadline);
        self.waiting.push(w);
        self.settle_waiting();
    }

    fn settled(&self, w: &Waiting) -> bool {
        w.slots.iter().all(|(slot, old_pid)| {
            let Some(s) = self.slots.get(*slot) else {
                return true;
            };
            match w.until {
                Until::Down => s.service.state.is_down(),
                // Running with a new pid, or given up on (backoff, exited).
                Until::Restarted => match s.service.state {
                    State::Running { pid, .. } => Some(pid) != *old_pid,
                    // Held for its dependencies: answered as it stands.
                    State::Backoff { .. }
                    | State::Exited
                    | State::Done
                    | State::Failed
                    | State::Waiting => true,
                    _ => false,
                },
                Until::Ready | Until::AtRest => {
                    super::wait::reached(&s.service, w.until)
                        && !super::wait::doomed(&s.service, &w.doomed)
                }
                Until::Started => {
                    self.start_verdict(w, *slot, *old_pid) != super::start_wait::Verdict::Pending
                }
            }
        })
    }

    /// Answers every waiting request that is settled or past its deadline.
    pub(super) fn settle_waiting(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let now = self.reactor.now_ms();
        let waiting = std::mem::take(&mut self.waiting);
        let mut work = VecDeque::new();
        for mut w in waiting {
            match self.roll_on(&mut w) {
                super::rolling::Step::Wait => {}
                super::rolling::Step::Next(slot) => {
                    work.push_back((slot, Input::Restart));
                    self.waiting.push(w);
                    continue;
                }
                super::rolling::Step::Stopped(msg) => {
                    self.reply(w.conn, &Reply::error(w.id, ErrorCode::Failed, msg));
                    continue;
                }
            }
            let asked = match w.until {
                Until::Down | Until::AtRest => Asked::Down,
                Until::Restarted | Until::Ready | Until::Started => Asked::Up,
            };
            if w.until == Until::Started {
                if w.rolling.is_empty() {
                    if let Some(reply) = self.start_answer(&mut w) {
                        self.reply(w.conn, &reply);
                        continue;
                    }
                }
                if now >= w.deadline_ms {
                    self.reply(w.conn, &self.start_timed_out(&w));
                } else {
                    self.waiting.push(w);
                }
                continue;
            }
            if let Some(reply) = self.wait_given_up(&w) {
                self.reply(w.conn, &reply);
            } else if w.rolling.is_empty() && self.settled(&w) && !self.found_dying(&mut w) {
                if w.saves_overrides {
                    if let Some(note) = self.saved_note() {
                        crate::log!("warning: {note}");
                        w.notes
                            .extend(w.slots.iter().map(|(s, _)| (*s, note.clone())));
                    }
                }
                let outcomes: Vec<Outcome> = w
                    .slots
                    .iter()
                    .map(|(s, _)| self.noted_outcome(*s, asked, &w.notes))
                    .collect();
                self.reply(w.conn, &Reply::ok(w.id, outcomes));
            } else if now >= w.deadline_ms {
                let states: Vec<String> = w
                    .slots
                    .iter()
                    .map(|(s, _)| {
                        let o = self.outcome(*s, asked);
                        let dying = self
                            .slots
                            .get(*s)
                            .is_some_and(|x| super::wait::doomed(&x.service, &w.doomed));
                        match (o.error, o.pid) {
                            (Some(e), _) => format!("{} is {} ({e})", o.name, o.state),
                            (None, Some(pid)) if dying => {
                                format!(
                                    "{} is {} (pid {pid} was killed and has not exited yet)",
                                    o.name, o.state
                                )
                            }
                            (None, _) => format!("{} is {}", o.name, o.state),
                        }
                    })
                    .collect();
                let what = match w.until {
                    Until::Down => "stopped",
                    Until::Restarted => "restarted",
                    Until::Ready => "ready",
                    Until::AtRest => "down",
                    Until::Started => "started",
                };
                self.reply(
                    w.conn,
                    &Reply::error(
                        w.id,
                        ErrorCode::Timeout,
                        format!("not {what} in time: {}", states.join(", ")),
                    ),
                );
            } else {
                self.waiting.push(w);
            }
        }
        if !work.is_empty() {
            self.process(&mut work);
        }
    }

    pub(super) fn fail_waiting_for_shutdown(&mut self) {
        for mut w in std::mem::take(&mut self.waiting) {
            // An essential one-shot that ended ends zurg: its start is
            // answered with how it ended, not with the shutdown it caused.
            let outcome = match w.until {
                Until::Started => self.start_answer(&mut w),
                _ => None,
            };
            if let Some(reply) = outcome {
                self.reply(w.conn, &reply);
            } else if matches!(w.until, Until::Down | Until::AtRest) {
                // A stop is what shutdown does anyway: keep waiting for it.
                self.waiting.push(w);
            } else {
                self.reply(
                    w.conn,
                    &Reply::error(w.id, ErrorCode::ShuttingDown, "zurg is shutting down"),
                );
            }
        }
    }

    /// Keeps one ControlIdle timer armed at the earliest idle deadline.
    pub(super) fn arm_control_idle(&mut self) {
        let Some(next) = self.control.as_ref().and_then(|c| c.next_deadline()) else {
            return;
        };
        if self.control_idle_at.is_some_and(|at| at <= next) {
            return;
        }
        self.control_idle_at = Some(next);
        self.reactor.timers.arm(next, TimerKey::ControlIdle);
    }

    fn journal_event(&mut self, rec: &EventRecord, kind: JournalKind, seq: Option<u64>) {
        let record = crate::journal::Record {
            time_us: rec.time_us,
            service: rec.service.clone(),
            kind,
            gpid: rec.gpid.clone().unwrap_or_default(),
            version: rec.version.clone(),
            exit: rec.exit.clone(),
            stats: rec.stats.as_deref().cloned(),
            seq,
            zurg: seq.map(|_| self.own_gpid.clone()),
            reason: matches!(
                kind,
                JournalKind::Refused
                    | JournalKind::Failed
                    | JournalKind::Unhealthy
                    | JournalKind::NotReady
            )
            .then(|| rec.message.clone())
            .flatten(),
            remote: None,
        };
        self.journal.send(&record);
    }

    fn gpid_request(&self, id: u64, name: &str) -> Reply {
        let Some(s) = self
            .by_name
            .get(self.slots.as_slice(), name)
            .and_then(|slot| self.slots.get(slot))
        else {
            return Reply::error(id, ErrorCode::UnknownService, self.not_one_service(name));
        };
        match s.gpid(self.host_ip) {
            Some(g) => Reply::ok(
                id,
                GpidInfo {
                    name: name.to_string(),
                    gpid: g.to_string(),
                    version: s.service.unit.rare.version.clone(),
                    running: s.service.state.pid().is_some(),
                },
            ),
            None => Reply::error(
                id,
                ErrorCode::NotRunning,
                format!("`{name}` has never been started"),
            ),
        }
    }

    /// `stats`: the /proc reading goes to the worker (thousands of
    /// services take seconds); `None` means the reply comes from there.
    fn stats_request(&mut self, conn: ConnId, id: u64, names: &[String]) -> Option<Reply> {
        let slots = match self.resolve(names) {
            Ok(s) => s,
            Err(e) => return Some(Reply::error(id, ErrorCode::UnknownService, e)),
        };
        let now = self.reactor.now_ms();
        let targets: Vec<(usize, i32, Option<std::path::PathBuf>)> = slots
            .into_iter()
            .filter_map(|slot| {
                let s = self.slots.get(slot)?;
                let cgroup = s.cgroup.as_ref().map(|c| c.dir().to_path_buf());
                Some((slot, s.service.state.pid()?, cgroup))
            })
            .collect();
        if let Some(worker) = &self.worker {
            let job = Job::Stats {
                conn,
                id,
                targets,
                now_ms: now,
            };
            return worker.submit_request(id, job);
        }
        let rows = targets
            .into_iter()
            .filter_map(|(slot, pid, cgroup)| {
                let (process, tree) = super::worker::sample_service(pid, cgroup.as_deref(), now)?;
                Some((slot, pid, process, tree))
            })
            .collect();
        Some(self.stats_rows(id, rows))
    }

    /// The `stats` reply from samples, each against the service's previous
    /// one for CPU %; a service that restarted meanwhile is left out.
    fn stats_rows(&mut self, id: u64, samples: Vec<(usize, i32, Sample, Sample)>) -> Reply {
        let mut rows = Vec::new();
        for (slot, pid, process, tree) in samples {
            let Some(s) = self.slots.get_mut(slot) else {
                continue;
            };
            if s.service.state.pid() != Some(pid) {
                continue;
            }
            let cpu_percent = s
                .cold
                .get()
                .and_then(|c| c.last_sample.as_ref())
                .and_then(|prev| crate::stats::cpu_percent(prev, &tree));
            s.cold.make().last_sample = Some(tree.clone());
            rows.push(StatsRow {
                name: s.service.name().to_string(),
                pid,
                gpid: s.gpid(self.host_ip).map(|g| g.to_string()),
                process,
                tree,
                cpu_percent,
            });
        }
        Reply::ok(id, rows)
    }

    /// `history`: streamed from the journal by the worker, in chunks as the
    /// client reads (`None`: the reply comes from there); on the loop only
    /// when there is no worker.
    fn history_request(
        &mut self,
        conn: ConnId,
        id: u64,
        name: Option<String>,
        since_us: Option<u64>,
    ) -> Option<Reply> {
        let (wanted, known) = self.history_wanted(name);
        if let (Some(worker), Some(control)) = (&self.worker, &mut self.control) {
            if let Err(why) = control.begin_stream(conn) {
                return Some(Reply::error(id, ErrorCode::Busy, why));
            }
            let job = Job::History {
                conn,
                id,
                state_dir: self.opts.state_dir.clone(),
                wanted,
                known,
                since_us,
                after: self.journal.read_after(),
            };
            if !worker.submit(job) {
                let line = crate::control::proto::encode_reply(&super::worker::gone(id));
                control.push_chunk(self.reactor.registry(), conn, &line, true);
            }
            return None;
        }
        let only = wanted.as_ref().map(crate::journal::Only::service);
        let (records, warnings) = crate::journal::read_only(&self.opts.state_dir, only.as_ref());
        for w in warnings {
            crate::log!("warning: {w}");
        }
        let records = crate::journal::filter(records, wanted.as_ref(), None);
        if let (false, Some(w), true) = (known, &wanted, records.is_empty()) {
            return Some(Reply::error(
                id,
                ErrorCode::UnknownService,
                format!(
                    "no service named `{}`, and the journal holds no record of it (zurg status lists the services)",
                    w.name()
                ),
            ));
        }
        Some(Reply::ok(
            id,
            crate::journal::filter(records, None, since_us),
        ))
    }

    /// Whose records `history NAME` shows, and whether zurg runs them (a
    /// name it does not run is an error when the journal has none of it):
    /// a service of that name alone; else the unit and its instances
    /// `NAME@N`, looked for by name so that a unit since removed, or
    /// whose instances were fewer once, still shows, as the publisher's
    /// history (which knows no units) shows them (docs/units.md).
    fn history_wanted(&self, name: Option<String>) -> (Option<crate::journal::Wanted>, bool) {
        use crate::journal::Wanted;
        let Some(name) = name else {
            return (None, true);
        };
        if self.by_name.get(self.slots.as_slice(), &name).is_some() {
            return (Some(Wanted::Exactly(name)), true);
        }
        let known = !self.instances_of(&name).is_empty();
        (Some(Wanted::Unit(name)), known)
    }

    /// Watches the binary a service was just started from.
    pub(super) fn watch_binary(&mut self, slot: usize, exec: &std::path::Path) {
        let Some(inotify) = &self.inotify else { return };
        let Ok(wd) = inotify.watch(exec) else { return };
        // A watch is one inode's: a watch in use already has its inode
        // looked up (10,000 services of one program would otherwise stat
        // it 10,000 times).
        let ino = match self.watch_users.get(&wd) {
            Some(&(_, ino)) => ino,
            None => std::fs::metadata(exec).map_or(0, |m| std::os::unix::fs::MetadataExt::ino(&m)),
        };
        // Counted before the slot's old watch is released: if that was the
        // same watch with this slot its only user, releasing first would
        // remove it from the kernel while it is still wanted.
        self.watch_users.entry(wd).or_insert((0, ino)).0 += 1;
        let old = self.slots.get_mut(slot).and_then(|s| {
            s.binary_watch.replace(super::BinaryWatch {
                wd,
                inode: ino,
                warned: false,
            })
        });
        if let Some(old) = old {
            self.release_watch(old.wd);
        }
    }

    pub(super) fn unwatch_binary(&mut self, slot: usize) {
        if let Some(w) = self.slots.get_mut(slot).and_then(|s| s.binary_watch.take()) {
            self.release_watch(w.wd);
        }
    }

    fn release_watch(&mut self, wd: i32) {
        let (users, _) = self.watch_users.entry(wd).or_insert((1, 0));
        *users = users.saturating_sub(1);
        if *users == 0 {
            self.watch_users.remove(&wd);
            if let Some(i) = &self.inotify {
                i.unwatch(wd);
            }
        }
    }

    /// Warns, once per process, about services whose running binary was
    /// written to or replaced on disk: a core dump or a restart would now
    /// read a different file than the one running.
    pub(super) fn on_binary_changes(&mut self) {
        let Some(inotify) = &self.inotify else { return };
        let changes = inotify.drain();
        for change in changes {
            let hits: Vec<usize> = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    s.binary_watch
                        .is_some_and(|w| !w.warned && w.wd == change.wd)
                })
                .map(|(i, _)| i)
                .collect();
            for slot in hits {
                let Some(s) = self.slots.get_mut(slot) else {
                    continue;
                };
                let exec = s.service.unit.exec.clone();
                let started_ino = s.binary_watch.map_or(0, |w| w.inode);
                let now_ino = std::fs::metadata(&exec)
                    .ok()
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
                let what = if change.modified {
                    "was modified in place"
                } else if now_ino != Some(started_ino) {
                    "was replaced or removed"
                } else {
                    continue; // chmod, touch: the running file is unchanged
                };
                if let Some(w) = &mut s.binary_watch {
                    w.warned = true;
                }
                let gpid = s
                    .gpid(self.host_ip)
                    .map(|g| g.to_string())
                    .unwrap_or_default();
                let message = format!(
                    "binary {} {what} while running (gpid {gpid})",
                    exec.display()
                );
                self.warn(slot, message);
            }
        }
    }

    fn warn(&mut self, slot: usize, message: String) {
        let name = self.slot_name(slot).to_string();
        crate::log!("[{name}] warning: {message}");
        self.event_seq = self.event_seq.wrapping_add(1);
        let s = self.slots.get(slot);
        let rec = EventRecord {
            seq: self.event_seq,
            time_us: crate::os::wall_clock_us(),
            service: name,
            kind: EventKind::Warning,
            pid: s.and_then(|s| s.service.state.pid()),
            exit: None,
            delay_ms: None,
            message: Some(message),
            gpid: s.and_then(|s| s.gpid(self.host_ip)).map(|g| g.to_string()),
            version: s.and_then(|s| s.service.unit.rare.version.clone()),
            stats: None,
        };
        self.publish(rec);
    }

    /// The last line event followers get: an orderly end, which they tell
    /// from a crash (EOF without it).
    pub(super) fn announce_shutdown(&mut self) {
        self.event_seq = self.event_seq.wrapping_add(1);
        let rec = EventRecord {
            seq: self.event_seq,
            time_us: crate::os::wall_clock_us(),
            service: "zurg".into(),
            kind: EventKind::Shutdown,
            pid: None,
            exit: None,
            delay_ms: None,
            message: Some("zurg stopped every service and is exiting".into()),
            gpid: None,
            version: None,
            stats: None,
        };
        self.publish(rec);
    }

    /// Streams an event to followers and keeps it among the recent ones.
    fn publish(&mut self, rec: EventRecord) {
        if let Some(c) = &mut self.control {
            c.broadcast(self.reactor.registry(), &rec);
        }
        if self.recent.len() >= RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(rec);
    }

    /// Samples a service's process tree for its periodic stats; re-arms.
    pub(super) fn periodic_sample(&mut self, slot: usize, generation: u64) {
        let now = self.reactor.now_ms();
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.cold.get().map_or(0, |c| c.sample_generation) != generation {
            return;
        }
        let (Some(pid), Some(ms)) = (s.service.state.pid(), s.service.unit.rare.stats_interval_ms)
        else {
            return;
        };
        let cgroup = s.cgroup.as_ref().map(|c| c.dir());
        if let Some((_, sample)) = super::worker::sample_service(pid, cgroup, now) {
            s.cold.make().last_sample = Some(sample);
        }
        self.reactor.timers.arm(
            now.saturating_add(ms),
            TimerKey::Sample { slot, generation },
        );
    }

    /// Turns a service event into a record for `events` and followers.
    pub(super) fn record(&mut self, slot: usize, event: &Event) {
        self.event_seq = self.event_seq.wrapping_add(1);
        let mut rec = EventRecord {
            seq: self.event_seq,
            time_us: crate::os::wall_clock_us(),
            service: self.slot_name(slot).to_string(),
            kind: EventKind::Other,
            pid: None,
            exit: None,
            delay_ms: None,
            message: None,
            gpid: None,
            version: None,
            stats: None,
        };
        let kind = match event {
            Event::Started { pid } => {
                rec.pid = Some(*pid);
                EventKind::Started
            }
            Event::Refused { .. } | Event::Forked { .. } => {
                rec.message = self
                    .slots
                    .get(slot)
                    .and_then(|s| s.service.last_error.as_ref())
                    .map(ToString::to_string);
                EventKind::Failed
            }
            Event::SpawnFailed { error } => {
                rec.message = Some(error.clone());
                EventKind::SpawnFailed
            }
            Event::Exited { pid, exit, .. } => {
                rec.pid = Some(*pid);
                rec.exit = Some(exit_info(*exit));
                EventKind::Exited
            }
            Event::Restarting { delay_ms } => {
                rec.delay_ms = Some(*delay_ms);
                EventKind::Restarting
            }
            Event::Stopped { pid, exit } => {
                rec.pid = Some(*pid);
                rec.exit = Some(exit_info(*exit));
                EventKind::Stopped
            }
            Event::Killed { pid } => {
                rec.pid = Some(*pid);
                EventKind::Killed
            }
            Event::Done { exit } | Event::Completed { exit } => {
                rec.exit = Some(exit_info(*exit));
                EventKind::Done
            }
            Event::Failed { failure } => {
                rec.message = Some(failure.to_string());
                EventKind::Failed
            }
            Event::Ready { pid, after_ms } => {
                rec.pid = Some(*pid);
                rec.delay_ms = Some(*after_ms);
                EventKind::Ready
            }
            Event::NotReady { pid, reason } => {
                rec.pid = Some(*pid);
                rec.message = Some(reason.clone());
                EventKind::NotReady
            }
            Event::Unhealthy { pid, reason } => {
                rec.pid = Some(*pid);
                rec.message = Some(reason.clone());
                EventKind::Unhealthy
            }
            Event::Waiting { on } => {
                rec.message = Some(on.join(", "));
                EventKind::Waiting
            }
            Event::Blocked { reason } => {
                rec.message = Some(reason.clone());
                EventKind::Blocked
            }
        };
        rec.kind = kind;
        if let Some(s) = self.slots.get(slot) {
            // An event about a process carries the version that process
            // runs, which an upgrade or rollback may since have replaced.
            rec.version = match event {
                Event::Refused { .. } | Event::SpawnFailed { .. } | Event::Restarting { .. } => {
                    s.service.unit.rare.version.clone()
                }
                _ => s.cold.get().and_then(|c| c.running_version.clone()),
            };
            if !matches!(kind, EventKind::SpawnFailed | EventKind::Restarting) {
                rec.gpid = s.gpid(self.host_ip).map(|g| g.to_string());
            }
            if let Some(exit) = &mut rec.exit {
                rec.stats = s
                    .cold
                    .get()
                    .and_then(|c| c.last_sample.clone())
                    .map(Box::new);
                exit.oom = s.exit_oom;
            }
        }
        match event {
            Event::Started { .. } | Event::Exited { .. } | Event::Stopped { .. } => {
                // Sent first: the publisher's latency is the user's, the
                // journal's write is not.
                let seq = self.forward(slot, &rec);
                let journal_kind = if kind == EventKind::Started {
                    JournalKind::Start
                } else {
                    JournalKind::Exit
                };
                self.journal_event(&rec, journal_kind, seq);
            }
            Event::Refused { .. } => self.journal_event(&rec, JournalKind::Refused, None),
            Event::Failed { .. } => self.journal_event(&rec, JournalKind::Failed, None),
            Event::Unhealthy { .. } => self.journal_event(&rec, JournalKind::Unhealthy, None),
            Event::NotReady { .. } => self.journal_event(&rec, JournalKind::NotReady, None),
            _ => {}
        }
        self.publish(rec);
    }
}
