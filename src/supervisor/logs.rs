//! Services' output lines: each service's ring (`service::ring`), and the
//! `logs` request that reads the rings and follows them.
//!
//! The output core (pipes, line assembly, sinks) hands every whole line to
//! `record_output`. A `logs` client is a cursor per service into the rings,
//! not a queue: lines are copied into its connection only while its unsent
//! output is below `control::server::TAIL_OUTPUT`, and the control server
//! says when it has drained. A client that does not read therefore costs a
//! bounded buffer, whatever the services write; what the ring dropped before
//! the client read it is reported as a `missed` item. The same path sends
//! the backlog of a plain `logs` (no --follow), so a large one is never
//! built in one piece on the loop.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::output::lines::Span;
use super::Supervisor;
use crate::control::proto::{ErrorCode, LogEnd, LogItem, LogLine, Reply};
use crate::control::server::ConnId;
use crate::service::ring::{Ring, Stream};

/// The rings' ids and the `logs` clients.
#[derive(Debug, Default)]
pub(super) struct Logs {
    next_ring_id: u64,
    followers: Vec<Follower>,
}

impl Logs {
    /// A new, empty ring for a service that takes a slot.
    pub(super) fn new_ring(&mut self, cap: usize) -> Ring {
        self.next_ring_id = self.next_ring_id.wrapping_add(1);
        Ring::new(self.next_ring_id, cap)
    }
}

/// One `logs` request being answered.
#[derive(Debug)]
struct Follower {
    conn: ConnId,
    id: u64,
    /// One service, or the instances of one unit (each its slot and ring:
    /// a slot reused by another unit has another ring), or every service;
    /// interleaved by time.
    only: Option<Box<[(usize, u64)]>>,
    /// Keeps streaming new lines after the backlog.
    follow: bool,
    /// Per slot: the ring it reads (a reused slot has a new one) and the
    /// sequence number of the next line it wants.
    cursors: HashMap<usize, (u64, u64)>,
    /// Every line its services hold has been sent: a new line can go
    /// straight out.
    caught_up: bool,
}

/// What a `logs` request asked for, as the wire has it.
pub(super) struct LogsAsk {
    pub name: Option<String>,
    pub lines: Option<u64>,
    pub since_us: Option<u64>,
    pub follow: bool,
}

/// What goes to a follower next.
enum Next {
    Missed(usize, u64),
    Line(usize),
}

impl Supervisor {
    /// Called for every whole line (without its newline) a service writes:
    /// keeps it in the service's ring and passes it to `logs` followers.
    pub(crate) fn record_output(&mut self, slot: usize, stream: Stream, line: &[u8], time_us: u64) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        // A reload may have changed the bound; the ring keeps its lines.
        s.ring.set_cap(s.service.unit.rare.log_ring_bytes);
        s.ring.push(stream, line, time_us);
        let ring_id = s.ring.id();
        // A ring that keeps nothing has nothing to follow.
        if self.logs.followers.is_empty() || s.ring.cap() == 0 {
            return;
        }
        let mut i = 0;
        while i < self.logs.followers.len() {
            let Some(f) = self.logs.followers.get(i) else {
                break;
            };
            if f.only
                .as_ref()
                .is_some_and(|o| !o.contains(&(slot, ring_id)))
            {
                i += 1;
                continue;
            }
            let keep = if f.caught_up {
                self.send_newest(i, slot)
            } else {
                // Behind: it is sent more when its output drains.
                true
            };
            if keep {
                i += 1;
            } else {
                self.logs.followers.swap_remove(i);
            }
        }
    }

    /// The whole lines of one read (`spans` of `run`) into the service's
    /// ring in one copy; while a `logs` client follows, line by line
    /// through `record_output`, which also sends them.
    pub(crate) fn record_run(
        &mut self,
        slot: usize,
        stream: Stream,
        run: &[u8],
        spans: &[Span],
        time_us: u64,
    ) {
        if !self.logs.followers.is_empty() {
            for s in spans {
                self.record_output(
                    slot,
                    stream,
                    run.get(s.range.clone()).unwrap_or(&[]),
                    time_us,
                );
            }
            return;
        }
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        s.ring.set_cap(s.service.unit.rare.log_ring_bytes);
        s.ring
            .push_spans(stream, run, spans.iter().map(|s| s.range.clone()), time_us);
    }

    /// A caught-up follower gets the line just recorded in `slot`; returns
    /// whether it is still a follower.
    fn send_newest(&mut self, index: usize, slot: usize) -> bool {
        let (Some(f), Some(s)) = (self.logs.followers.get(index), self.slots.get(slot)) else {
            return false;
        };
        let ring = &s.ring;
        let (ring_id, want) = match f.cursors.get(&slot) {
            Some((id, seq)) if *id == ring.id() => (*id, *seq),
            _ => (ring.id(), ring.first_seq()),
        };
        let at = ring.after(want);
        let newest = ring.len().checked_sub(1);
        let room = self.control.as_ref().and_then(|c| c.tail_room(f.conn));
        match room {
            None => false,
            Some(room) if at.missed == 0 && Some(at.from) == newest && room > 0 => {
                let (conn, id) = (f.conn, f.id);
                let Some(line) = ring.get(at.from) else {
                    return true;
                };
                let item = LogItem::Line(LogLine::new(
                    &s.service.unit.name,
                    line.stream,
                    line.time_us,
                    line.bytes,
                ));
                let next = line.seq.saturating_add(1);
                if let Some(f) = self.logs.followers.get_mut(index) {
                    f.cursors.insert(slot, (ring_id, next));
                }
                self.reply(conn, &Reply::log(id, item));
                true
            }
            Some(_) => {
                if let Some(f) = self.logs.followers.get_mut(index) {
                    f.caught_up = false;
                }
                self.pump_follower(index)
            }
        }
    }

    /// `logs NAME [-n N] [--since T] [-f]`: answers at once with
    /// `{"following": …}`, then streams the lines as `log` items.
    pub(super) fn logs_request(&mut self, conn: ConnId, id: u64, ask: LogsAsk) -> Reply {
        let only = match &ask.name {
            None => None,
            Some(name) => {
                // `logs web`, where web has instances: all of them, as
                // `status web` and `stop web` take it.
                let slots = match self.by_name.get(self.slots.as_slice(), name) {
                    Some(slot) => vec![slot],
                    None => self.instances_of(name),
                };
                let only: Box<[(usize, u64)]> = slots
                    .into_iter()
                    .filter_map(|slot| Some((slot, self.slots.get(slot)?.ring.id())))
                    .collect();
                if only.is_empty() {
                    return Reply::error(
                        id,
                        ErrorCode::UnknownService,
                        format!("no service named `{name}` (zurg status lists them)"),
                    );
                }
                Some(only)
            }
        };
        let Some(control) = &mut self.control else {
            return Reply::error(id, ErrorCode::Failed, "no control server");
        };
        control.tail(conn, id);
        let cursors = self.start_cursors(only.as_deref(), ask.lines, ask.since_us);
        self.logs.followers.push(Follower {
            conn,
            id,
            only,
            follow: ask.follow,
            cursors,
            caught_up: false,
        });
        // The answer goes first; the lines follow on the next pump, which
        // the caller runs (`pump_logs`) once this reply is queued.
        if let Some(c) = &mut self.control {
            c.want_tail(conn);
        }
        Reply::ok(id, serde_json::json!({ "following": ask.follow }))
    }

    /// Where each selected ring is read from: the last `lines` lines of
    /// them all together, none before `since_us`.
    fn start_cursors(
        &self,
        only: Option<&[(usize, u64)]>,
        lines: Option<u64>,
        since_us: Option<u64>,
    ) -> HashMap<usize, (u64, u64)> {
        let selected: Vec<(usize, &Ring)> = self.selected(only).collect();
        let rings: Vec<&Ring> = selected.iter().map(|(_, r)| *r).collect();
        let starts = crate::service::ring::starts(&rings, lines, since_us);
        selected
            .iter()
            .zip(starts)
            .map(|((slot, ring), index)| {
                let seq = ring.get(index).map_or(ring.next_seq(), |l| l.seq);
                (*slot, (ring.id(), seq))
            })
            .collect()
    }

    /// The rings a follower reads: its services', or every live service's.
    fn selected<'a>(
        &'a self,
        only: Option<&'a [(usize, u64)]>,
    ) -> impl Iterator<Item = (usize, &'a Ring)> + 'a {
        self.slots
            .iter()
            .enumerate()
            .filter(move |(slot, s)| match only {
                // Its unit removed and the slot reused: not the service
                // this follower asked for.
                Some(o) => o.contains(&(*slot, s.ring.id())),
                None => !s.retired,
            })
            .map(|(slot, s)| (slot, &s.ring))
    }

    /// Followers whose connections drained get more; closed ones go.
    pub(super) fn pump_logs(&mut self) {
        let Some(control) = &mut self.control else {
            return;
        };
        let (pulls, closed) = control.take_tail_pulls();
        if !closed.is_empty() {
            self.logs.followers.retain(|f| !closed.contains(&f.conn));
        }
        for conn in pulls {
            let Some(index) = self.logs.followers.iter().position(|f| f.conn == conn) else {
                continue;
            };
            if !self.pump_follower(index) {
                self.logs.followers.swap_remove(index);
            }
        }
    }

    /// Sends follower `index` what its room allows, oldest line first over
    /// all its services; returns whether it is still a follower.
    fn pump_follower(&mut self, index: usize) -> bool {
        let Some(f) = self.logs.followers.get(index) else {
            return false;
        };
        let (conn, id, only) = (f.conn, f.id, f.only.clone());
        // The next line of each ring, by time; rebuilt per pump, which
        // sends up to a whole connection buffer.
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
        let mut missed: Vec<(usize, u64)> = Vec::new();
        let mut positions: HashMap<usize, (u64, usize)> = HashMap::new();
        for (slot, ring) in self.selected(only.as_deref()) {
            let want = match f.cursors.get(&slot) {
                Some((rid, seq)) if *rid == ring.id() => *seq,
                _ => ring.first_seq(),
            };
            let at = ring.after(want);
            // A ring that keeps nothing (`log_ring_bytes = 0`) has no
            // gaps worth reporting.
            if at.missed > 0 && ring.cap() > 0 {
                missed.push((slot, at.missed));
            }
            positions.insert(slot, (ring.id(), at.from));
            if let Some(line) = ring.get(at.from) {
                heap.push(Reverse((line.time_us, slot)));
            }
        }
        loop {
            let Some(room) = self.control.as_ref().and_then(|c| c.tail_room(conn)) else {
                return false;
            };
            if room == 0 {
                if let Some(f) = self.logs.followers.get_mut(index) {
                    f.caught_up = false;
                }
                if let Some(c) = &mut self.control {
                    c.want_tail(conn);
                }
                break;
            }
            let next = match missed.pop() {
                Some((slot, n)) => Next::Missed(slot, n),
                None => match heap.pop() {
                    Some(Reverse((_, slot))) => Next::Line(slot),
                    None => {
                        return self.caught_up(index, conn, id);
                    }
                },
            };
            let (item, slot, cursor) = match next {
                Next::Missed(slot, lines) => {
                    let Some(s) = self.slots.get(slot) else {
                        continue;
                    };
                    let item = LogItem::Missed {
                        service: s.service.unit.name.to_string(),
                        lines,
                    };
                    (item, slot, (s.ring.id(), s.ring.first_seq()))
                }
                Next::Line(slot) => {
                    let Some(s) = self.slots.get(slot) else {
                        continue;
                    };
                    let Some(pos) = positions.get_mut(&slot) else {
                        continue;
                    };
                    let Some(line) = s.ring.get(pos.1) else {
                        continue;
                    };
                    let item = LogItem::Line(LogLine::new(
                        &s.service.unit.name,
                        line.stream,
                        line.time_us,
                        line.bytes,
                    ));
                    pos.1 = pos.1.saturating_add(1);
                    if let Some(after) = s.ring.get(pos.1) {
                        heap.push(Reverse((after.time_us, slot)));
                    }
                    (item, slot, (pos.0, line.seq.saturating_add(1)))
                }
            };
            if let Some(f) = self.logs.followers.get_mut(index) {
                f.cursors.insert(slot, cursor);
            }
            self.reply(conn, &Reply::log(id, item));
        }
        true
    }

    /// Follower `index` has every line: a plain `logs` ends here, a
    /// following one waits for new lines. Returns whether it stays.
    fn caught_up(&mut self, index: usize, conn: ConnId, id: u64) -> bool {
        let follow = self.logs.followers.get(index).is_some_and(|f| f.follow);
        if follow {
            if let Some(f) = self.logs.followers.get_mut(index) {
                f.caught_up = true;
            }
            return true;
        }
        self.end_follower(conn, id, LogEnd::Done);
        false
    }

    fn end_follower(&mut self, conn: ConnId, id: u64, reason: LogEnd) {
        self.reply(conn, &Reply::log(id, LogItem::End { reason }));
        if let Some(c) = &mut self.control {
            c.untail(self.reactor.registry(), conn);
        }
    }

    /// zurg is about to exit: every `logs` client gets what its room still
    /// allows, then the end, so it can tell the end from a crash.
    pub(super) fn end_logs(&mut self) {
        let mut index = 0;
        while index < self.logs.followers.len() {
            if self.pump_follower(index) {
                index += 1;
            } else {
                self.logs.followers.swap_remove(index);
            }
        }
        for f in std::mem::take(&mut self.logs.followers) {
            self.end_follower(f.conn, f.id, LogEnd::Shutdown);
        }
    }
}
