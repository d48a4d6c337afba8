//! The status page's memory (pure): what this publisher saw happen to each
//! service on each host (restarts, the last exit and why, restarts per
//! minute over the last hour) and the latest changes by id, for
//! `/api/events?since=`.
//!
//! The registry holds only what is live; an exit leaves no trace there.
//! The board keeps that trace, bounded: `MAX_STATS` services and
//! `MAX_EVENTS` changes. Time is passed in (wall clock microseconds, as
//! `change` frames carry it); nothing here reads a clock.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::proto::{ChangeKind, ExitInfo, Frame, Reason};
use super::registry::Change;

/// Changes kept for `/api/events?since=`: a script polling every few
/// seconds misses none unless thousands happen in between (it is told when
/// it did).
pub const MAX_EVENTS: usize = 4096;
/// Services (per host) the board keeps figures for. Past it, the ones
/// untouched the longest are forgotten, a quarter at a time.
pub const MAX_STATS: usize = 65_536;
/// The sparkline's span: restarts per minute over the last hour.
pub const SPARK_MINUTES: u64 = 60;
const MINUTE_US: u64 = 60_000_000;

/// How one process of a service ended, as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastExit {
    /// When the publisher applied it (wall clock microseconds).
    pub time_us: u64,
    pub gpid: String,
    /// `exit` (it died or was stopped), or how the publisher lost it:
    /// `lease`, `bye`, `snapshot`.
    pub reason: Reason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
}

/// One service on one host, as this publisher saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stat {
    /// The zurg instance (its GPID) that runs it.
    pub host: String,
    pub service: String,
    /// New processes of a service this publisher already knew on that
    /// host: every `start` after its first sight.
    pub restarts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<LastExit>,
    /// `[minute since the epoch, restarts in it]`, oldest first, only
    /// minutes with restarts, only the last `SPARK_MINUTES`.
    pub restarts_by_minute: Vec<(u64, u32)>,
    #[serde(skip)]
    touched_us: u64,
}

/// One change as `/api/events` and the page's stream carry it: the
/// `change` frame of `resolve --watch --json` with the board's `id`.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub id: u64,
    /// The frame's JSON object with `id` added.
    pub json: serde_json::Value,
}

#[derive(Debug, Default)]
pub struct Board {
    last_id: u64,
    events: VecDeque<Recorded>,
    stats: BTreeMap<(String, String), Stat>,
}

/// What `/api/events?since=` answers.
#[derive(Debug, Serialize)]
pub struct EventsPage<'a> {
    /// Changes with an id above `since`, oldest first.
    pub events: Vec<&'a serde_json::Value>,
    /// The id of the latest change: the next `since`.
    pub last: u64,
    /// Changes after `since` that are no longer held: the caller missed
    /// them and should list again (`/api/services`).
    pub missed: u64,
}

impl Board {
    pub fn new() -> Board {
        Board::default()
    }

    /// The id of the latest change recorded (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Records one change the publisher applied at `time_us`; returns it
    /// as recorded and the service's figures after it.
    pub fn record(&mut self, change: &Change, time_us: u64) -> (&Recorded, &Stat) {
        self.last_id = self.last_id.saturating_add(1);
        let frame = Frame::Change {
            change: change.change,
            reason: change.reason,
            endpoint: change.endpoint.clone(),
            exit: change.exit.clone(),
            time_us,
        };
        let mut json = serde_json::to_value(&frame).unwrap_or_default();
        if let Some(obj) = json.as_object_mut() {
            obj.insert("id".into(), self.last_id.into());
        }
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Recorded {
            id: self.last_id,
            json,
        });
        let e = &change.endpoint;
        let key = (e.host.clone(), e.service.clone());
        if !self.stats.contains_key(&key) && self.stats.len() >= MAX_STATS {
            self.forget_oldest();
        }
        let known = self.stats.contains_key(&key);
        let stat = self.stats.entry(key).or_insert_with(|| Stat {
            host: e.host.clone(),
            service: e.service.clone(),
            restarts: 0,
            last_exit: None,
            restarts_by_minute: Vec::new(),
            touched_us: time_us,
        });
        stat.touched_us = time_us;
        match change.change {
            ChangeKind::Up if known && change.reason == Reason::Start => {
                stat.restarts = stat.restarts.saturating_add(1);
                let minute = time_us / MINUTE_US;
                match stat.restarts_by_minute.last_mut() {
                    Some((m, n)) if *m == minute => *n = n.saturating_add(1),
                    _ => stat.restarts_by_minute.push((minute, 1)),
                }
            }
            ChangeKind::Up => {}
            ChangeKind::Down => {
                stat.last_exit = Some(LastExit {
                    time_us,
                    gpid: e.gpid.clone(),
                    reason: change.reason,
                    exit: change.exit.clone(),
                })
            }
        }
        let oldest = (time_us / MINUTE_US).saturating_sub(SPARK_MINUTES - 1);
        stat.restarts_by_minute.retain(|(m, _)| *m >= oldest);
        let stat: &Stat = stat;
        // Just pushed, so never empty; an empty deque would be a bug, not
        // a reason to fail the publisher.
        static NONE: Recorded = Recorded {
            id: 0,
            json: serde_json::Value::Null,
        };
        (self.events.back().unwrap_or(&NONE), stat)
    }

    /// Every service's figures, in (host, service) order.
    pub fn stats(&self) -> impl Iterator<Item = &Stat> {
        self.stats.values()
    }

    /// The changes after id `since` still held.
    pub fn since(&self, since: u64) -> EventsPage<'_> {
        let first_held = self
            .events
            .front()
            .map_or(self.last_id.saturating_add(1), |r| r.id);
        EventsPage {
            events: self
                .events
                .iter()
                .filter(|r| r.id > since)
                .map(|r| &r.json)
                .collect(),
            last: self.last_id,
            missed: first_held.saturating_sub(since.saturating_add(1)),
        }
    }

    /// Drops the quarter of the figures untouched the longest: one pass per
    /// `MAX_STATS / 4` new services, not one per service.
    fn forget_oldest(&mut self) {
        let mut times: Vec<u64> = self.stats.values().map(|s| s.touched_us).collect();
        if times.is_empty() {
            return;
        }
        let cut = times.len() / 4;
        let limit = *times.select_nth_unstable(cut).1;
        let most = cut.saturating_add(1);
        let mut dropped = 0usize;
        self.stats.retain(|_, s| {
            let drop = dropped < most && s.touched_us <= limit;
            if drop {
                dropped = dropped.saturating_add(1);
            }
            !drop
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::proto::Endpoint;

    fn change(kind: ChangeKind, reason: Reason, gpid: &str, exit: Option<ExitInfo>) -> Change {
        Change {
            change: kind,
            reason,
            endpoint: Endpoint {
                service: "web".into(),
                ip: "10.0.0.1".into(),
                port: 80,
                gpid: gpid.into(),
                version: None,
                since_us: 1,
                host: "h1".into(),
            },
            exit,
        }
    }

    const T: u64 = 1_764_000_000_000_000;

    #[test]
    fn restarts_are_new_processes_of_a_known_service_and_exits_are_kept() {
        let mut b = Board::new();
        b.record(&change(ChangeKind::Up, Reason::Snapshot, "g1", None), T);
        let killed = ExitInfo {
            code: None,
            signal: Some("SIGKILL".into()),
        };
        let (r, s) = b.record(
            &change(ChangeKind::Down, Reason::Exit, "g1", Some(killed.clone())),
            T + 10,
        );
        assert_eq!(r.id, 2);
        assert_eq!(r.json["t"], "change");
        assert_eq!(r.json["id"], 2);
        assert_eq!(r.json["exit"]["signal"], "SIGKILL");
        assert_eq!(s.restarts, 0);
        assert_eq!(
            s.last_exit,
            Some(LastExit {
                time_us: T + 10,
                gpid: "g1".into(),
                reason: Reason::Exit,
                exit: Some(killed)
            })
        );
        let (_, s) = b.record(&change(ChangeKind::Up, Reason::Start, "g2", None), T + 20);
        assert_eq!(s.restarts, 1);
        assert_eq!(s.restarts_by_minute, [(T / MINUTE_US, 1)]);
        // The exit stays the last one until the next.
        assert!(s.last_exit.is_some());
        // A first start is no restart.
        let mut fresh = change(ChangeKind::Up, Reason::Start, "g9", None);
        fresh.endpoint.service = "db".into();
        assert_eq!(b.record(&fresh, T + 30).1.restarts, 0);
        assert_eq!(b.stats().count(), 2);
    }

    #[test]
    fn the_sparkline_keeps_the_last_hour_by_minute() {
        let mut b = Board::new();
        b.record(&change(ChangeKind::Up, Reason::Start, "g0", None), T);
        for i in 0..3u64 {
            b.record(
                &change(ChangeKind::Up, Reason::Start, &format!("g{i}"), None),
                T + i,
            );
        }
        let later = T + 30 * MINUTE_US;
        b.record(&change(ChangeKind::Up, Reason::Start, "g5", None), later);
        let s = b.stats().next().unwrap().clone();
        assert_eq!(
            s.restarts_by_minute,
            [(T / MINUTE_US, 3), (later / MINUTE_US, 1)]
        );
        let much_later = T + 61 * MINUTE_US;
        let (_, s) = b.record(
            &change(ChangeKind::Up, Reason::Start, "g6", None),
            much_later,
        );
        assert_eq!(
            s.restarts_by_minute,
            [(later / MINUTE_US, 1), (much_later / MINUTE_US, 1)]
        );
        assert_eq!(s.restarts, 5);
    }

    #[test]
    fn events_since_an_id_say_what_was_missed() {
        let mut b = Board::new();
        assert_eq!(b.since(0).missed, 0);
        assert_eq!(b.since(0).last, 0);
        for i in 0..(MAX_EVENTS as u64 + 10) {
            b.record(
                &change(ChangeKind::Up, Reason::Start, &format!("g{i}"), None),
                T + i,
            );
        }
        let all = b.since(0);
        assert_eq!(all.events.len(), MAX_EVENTS);
        assert_eq!(all.missed, 10);
        assert_eq!(all.last, MAX_EVENTS as u64 + 10);
        let tail = b.since(all.last - 2);
        assert_eq!(tail.events.len(), 2);
        assert_eq!(tail.missed, 0);
        assert_eq!(tail.events[0]["id"], all.last - 1);
        assert!(b.since(all.last).events.is_empty());
    }

    #[test]
    fn figures_are_bounded_and_the_stalest_go_first() {
        let mut b = Board::new();
        for i in 0..(MAX_STATS as u64 + 1) {
            let mut c = change(ChangeKind::Up, Reason::Start, "g", None);
            c.endpoint.service = format!("s{i}");
            b.record(&c, T + i);
        }
        let n = b.stats().count();
        assert!(n <= MAX_STATS && n > MAX_STATS / 2, "{n}");
        assert!(b.stats().all(|s| s.service != "s0"));
        assert!(b.stats().any(|s| s.service == format!("s{MAX_STATS}")));
    }
}
