//! The supervisor's side of `--publish`: turns lifecycle events into
//! forwarder events and answers the forwarder's snapshot requests.

use std::path::Path;

use mio::Token;

use super::reactor::PIDFD_BASE;
use super::{Supervisor, TimerKey};
use crate::cli::RunOptions;
use crate::control::proto::EventRecord;
use crate::publish::forwarder::{Forwarder, Identity, Lifecycle};
use crate::publish::proto::{Endpoint, EventKind, ExitInfo};

/// The forwarder's connection, just below the inotify fd's token.
pub(super) const FORWARD_TOKEN: Token = Token(PIDFD_BASE - 2);

/// Builds the forwarder from `--publish`; `Ok(None)` when not asked to.
pub(super) fn make_forwarder(
    opts: &RunOptions,
    identity: Identity,
) -> Result<Option<Forwarder>, String> {
    if opts.publish.is_empty() {
        return Ok(None);
    }
    // Names are resolved later, on the forwarder's thread: a slow DNS
    // server must not hold up the start of the services.
    let token = opts
        .publish_token_file
        .as_deref()
        .map(crate::publish::server::read_token)
        .transpose()
        .map_err(|e| format!("--publish-token-file {e}"))?;
    Ok(Some(
        Forwarder::new(
            opts.publish.clone(),
            token,
            identity,
            FORWARD_TOKEN,
            opts.publish_queue,
        )
        .with_control(opts.publish_control.clone()),
    ))
}

/// This zurg's events numbered `first..=last`, read back from the journal
/// in `state_dir` (blocking: runs on the forwarder's thread).
fn journal_events(
    state_dir: &Path,
    own_gpid: &str,
    first: u64,
    last: u64,
) -> Vec<(u64, Lifecycle)> {
    let only = crate::journal::Only::field("zurg", own_gpid);
    let (records, _) = crate::journal::read_only(state_dir, Some(&only));
    records
        .into_iter()
        .filter(|r| r.zurg.as_deref() == Some(own_gpid))
        .filter_map(|r| {
            let seq = r.seq.filter(|s| (first..=last).contains(s))?;
            let gpid: crate::gpid::Gpid = r.gpid.parse().ok()?;
            let kind = if r.kind == crate::journal::Kind::Start {
                EventKind::Start
            } else {
                EventKind::Exit
            };
            let endpoint = Endpoint {
                service: r.service,
                ip: gpid.ip.to_string(),
                port: gpid.port,
                gpid: r.gpid,
                version: r.version,
                since_us: gpid.start_us,
                host: own_gpid.to_string(),
            };
            let exit = r.exit.map(|e| ExitInfo {
                code: e.code,
                signal: e.signal,
            });
            let event = Lifecycle {
                kind,
                endpoint,
                pid: Some(gpid.pid),
                exit,
                time_us: r.time_us,
            };
            Some((seq, event))
        })
        .collect()
}

/// The kernel's id for this boot, so a publisher can tell a reboot from a
/// restart of zurg.
pub(super) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Supervisor {
    /// The endpoint of a slot's current process, when it has one.
    fn endpoint_of(&self, slot: usize) -> Option<Endpoint> {
        let s = self.slots.get(slot)?;
        let gpid = s.gpid(self.host_ip)?;
        Some(Endpoint {
            service: s.service.name().to_string(),
            ip: gpid.ip.to_string(),
            port: gpid.port,
            gpid: gpid.to_string(),
            version: s.service.unit.rare.version.clone(),
            since_us: gpid.start_us,
            host: self.own_gpid.clone(),
        })
    }

    /// Hands a lifecycle event to the forwarder, if publishing; returns the
    /// sequence number it was given.
    pub(super) fn forward(&mut self, slot: usize, rec: &EventRecord) -> Option<u64> {
        self.forwarder.as_ref()?;
        let kind = match rec.kind {
            crate::control::proto::EventKind::Started => EventKind::Start,
            crate::control::proto::EventKind::Exited
            | crate::control::proto::EventKind::Stopped => EventKind::Exit,
            _ => return None,
        };
        let endpoint = self.endpoint_of(slot)?;
        let exit = rec.exit.as_ref().map(|e| ExitInfo {
            code: e.code,
            signal: e.signal.clone(),
        });
        let pid = rec.pid.and_then(|p| u32::try_from(p).ok());
        let now = self.reactor.now_ms();
        if let Some(f) = &mut self.forwarder {
            let event = Lifecycle {
                kind,
                endpoint,
                pid,
                exit,
                time_us: rec.time_us,
            };
            return Some(f.publish(event, self.reactor.registry(), now));
        }
        None
    }

    pub(super) fn on_forwarder_ready(
        &mut self,
        work: &mut std::collections::VecDeque<(usize, crate::service::Input)>,
    ) {
        let now = self.reactor.now_ms();
        if let Some(f) = &mut self.forwarder {
            f.on_ready(self.reactor.registry(), now);
        }
        self.answer_snapshot_request();
        self.run_remote_requests(work);
    }

    pub(super) fn on_publish_timer(&mut self) {
        self.publish_timer_at = None;
        let now = self.reactor.now_ms();
        if let Some(f) = &mut self.forwarder {
            f.on_timer(self.reactor.registry(), now);
        }
        self.answer_snapshot_request();
    }

    /// Events that left the forwarder's memory, read back from the journal
    /// on the forwarder's thread (the read can take a while: it checks every
    /// record's CRC), only after more than `--publish-queue` events went
    /// unacknowledged.
    fn answer_journal_request(&mut self) {
        let Some((first, last)) = self
            .forwarder
            .as_mut()
            .and_then(|f| f.take_journal_request())
        else {
            return;
        };
        let wanted = last.saturating_sub(first).saturating_add(1);
        let state_dir = self.opts.state_dir.clone();
        let own = self.own_gpid.clone();
        let now = self.reactor.now_ms();
        // The events asked for were sent to the journal's writer before
        // this; the read waits (on the forwarder's thread) until they are
        // written.
        let after = self.journal.read_after();
        if let Some(f) = &mut self.forwarder {
            let read = move || {
                if let Some(behind) = after.wait() {
                    crate::log!(
                        "warning: publisher read-back without the newest {behind} journal record(s): the journal's disk has not taken them"
                    );
                }
                journal_events(&state_dir, &own, first, last)
            };
            f.read_journal(wanted, read, self.reactor.registry(), now);
        }
    }

    fn answer_snapshot_request(&mut self) {
        self.answer_journal_request();
        if !self
            .forwarder
            .as_mut()
            .is_some_and(|f| f.take_snapshot_request())
        {
            return;
        }
        // Processes that are alive: running, or asked to stop and not yet
        // gone. Their exit events follow the snapshot.
        let endpoints: Vec<Endpoint> = (0..self.slots.len())
            .filter(|slot| {
                self.slots
                    .get(*slot)
                    .is_some_and(|s| s.service.state.pid().is_some())
            })
            .filter_map(|slot| self.endpoint_of(slot))
            .collect();
        let now = self.reactor.now_ms();
        if let Some(f) = &mut self.forwarder {
            f.send_snapshot(&endpoints, self.reactor.registry(), now);
        }
    }

    /// Keeps one timer armed for the forwarder's next deadline.
    pub(super) fn arm_publish_timer(&mut self) {
        let Some(next) = self.forwarder.as_ref().map(Forwarder::next_deadline) else {
            return;
        };
        if next == u64::MAX || self.publish_timer_at.is_some_and(|at| at <= next) {
            return;
        }
        self.publish_timer_at = Some(next);
        self.reactor.timers.arm(next, TimerKey::Publish);
    }

    pub(super) fn farewell_publisher(&mut self) {
        if let Some(f) = &mut self.forwarder {
            f.farewell(self.reactor.registry(), 300);
        }
    }
}
