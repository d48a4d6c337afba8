//! Pids as the caller sees them, for a client outside zurg's pid namespace
//! (`zurg status` run on the host against a container's zurg). zurg reports
//! pids in its own namespace; the kernel tells the client zurg's pid in the
//! client's namespace (SO_PEERCRED), and /proc/PID/status `NSpid:` lines
//! give every descendant's pid in each nested namespace. Client side only
//! (L3): reads /proc, never runs in the daemon. Every verb that prints a
//! pid goes through `CallerView`, so `status`, `start`, `restart`, `wait`,
//! `signal`, `upgrade`, `rollback`, `events` and `version` agree.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::control::proto::EventKind;

/// The `NSpid:` line of /proc/PID/status: the pid in each pid namespace,
/// from the one of this /proc down to the process's own. Pure.
pub fn parse_nspid(status: &str) -> Option<Vec<i32>> {
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    let pids: Option<Vec<i32>> = line
        .get("NSpid:".len()..)?
        .split_whitespace()
        .map(|p| p.parse().ok())
        .collect();
    pids.filter(|p| !p.is_empty())
}

fn nspid(pid: i32) -> Option<Vec<i32>> {
    parse_nspid(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// zurg's pids → the caller's, for zurg (seen by the caller as
/// `zurg_pid`) and its descendants. Empty when both see the same pids (or
/// /proc does not show zurg, e.g. it runs in a sibling namespace).
pub fn caller_pids(zurg_pid: i32) -> HashMap<i32, i32> {
    caller_pids_of(zurg_pid, None)
}

/// `caller_pids`, walked breadth first and stopped once every pid of
/// `wanted` (in zurg's numbers) is mapped: a service's main process is
/// zurg's child, so an answer about services reads one level of /proc,
/// not every process of every service's tree. Only a pid that has ended
/// costs the whole walk.
fn caller_pids_of(zurg_pid: i32, wanted: Option<&HashSet<i32>>) -> HashMap<i32, i32> {
    let mut map = HashMap::new();
    let Some(own) = nspid(zurg_pid) else {
        return map;
    };
    // Entry `depth` of a descendant's NSpid is its pid in zurg's namespace.
    let depth = own.len().saturating_sub(1);
    if depth == 0 {
        return map;
    }
    if let (Some(outer), Some(inner)) = (own.first(), own.last()) {
        map.insert(*inner, *outer);
    }
    let mut missing = wanted.map(|w| w.iter().filter(|p| !map.contains_key(p)).count());
    let mut queue: VecDeque<i32> = crate::stats::children(zurg_pid).into();
    let mut seen = 0usize;
    while let Some(pid) = queue.pop_front() {
        if missing == Some(0) {
            break;
        }
        seen = seen.saturating_add(1);
        // Bounded, in case /proc shows a churning tree.
        if seen > 1_000_000 {
            break;
        }
        if let Some(ns) = nspid(pid) {
            if let (Some(outer), Some(inner)) = (ns.first(), ns.get(depth)) {
                let new = map.insert(*inner, *outer).is_none();
                if let (true, Some(w), Some(m)) = (new, wanted, missing.as_mut()) {
                    if w.contains(inner) {
                        *m = m.saturating_sub(1);
                    }
                }
            }
        }
        queue.extend(crate::stats::children(pid));
    }
    map
}

/// How the caller sees zurg's pids: the same numbers, or (from another
/// pid namespace) a map from zurg's pids to the caller's.
#[derive(Debug, Default)]
pub struct CallerView {
    /// zurg's pid as the caller sees it; `None` when both see the same
    /// pids (or nothing can be mapped).
    zurg_pid: Option<i32>,
    map: HashMap<i32, i32>,
}

/// One of zurg's pids as the caller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The caller and zurg share a pid namespace: zurg's number is theirs.
    Same(i32),
    /// The caller's number for zurg's `zurg`.
    Mapped { caller: i32, zurg: i32 },
    /// From another namespace, and /proc no longer shows the process (it
    /// ended): only zurg's number is known.
    Gone { zurg: i32 },
}

impl Seen {
    /// The pid the caller can `kill`, if any.
    pub fn caller(self) -> Option<i32> {
        match self {
            Seen::Same(p) | Seen::Mapped { caller: p, .. } => Some(p),
            Seen::Gone { .. } => None,
        }
    }
}

/// "16" in zurg's namespace; "4242 (zurg-pid 16)" from another one, so
/// the number a user reads first is the one their `kill` takes, and
/// "? (zurg-pid 16)" when that process is gone.
impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::Same(p) => write!(f, "{p}"),
            Seen::Mapped { caller, zurg } => write!(f, "{caller} (zurg-pid {zurg})"),
            Seen::Gone { zurg } => write!(f, "? (zurg-pid {zurg})"),
        }
    }
}

impl CallerView {
    /// The view of a caller to whom zurg is `zurg_pid` (SO_PEERCRED);
    /// `None` (no peer pid, a remote host's answer) shows zurg's numbers.
    pub fn of(zurg_pid: Option<i32>) -> CallerView {
        CallerView::for_pids(zurg_pid, None)
    }

    /// `of`, reading /proc only until every pid of `wanted` is mapped
    /// (`pids_in` of the answer about to be printed).
    pub fn for_pids(zurg_pid: Option<i32>, wanted: Option<&HashSet<i32>>) -> CallerView {
        let Some(zurg_pid) = zurg_pid else {
            return CallerView::default();
        };
        let map = caller_pids_of(zurg_pid, wanted);
        if map.is_empty() {
            return CallerView::default();
        }
        CallerView {
            zurg_pid: Some(zurg_pid),
            map,
        }
    }

    /// From a table: the caller sees pids other than zurg's.
    pub fn differs(&self) -> bool {
        self.zurg_pid.is_some()
    }

    /// zurg's `pid` as the caller sees it.
    pub fn pid(&self, pid: i32) -> Seen {
        if !self.differs() {
            return Seen::Same(pid);
        }
        match self.map.get(&pid) {
            Some(caller) => Seen::Mapped {
                caller: *caller,
                zurg: pid,
            },
            None => Seen::Gone { zurg: pid },
        }
    }

    /// For `--json`, whose `pid` stays zurg's own (the protocol's, which
    /// scripts already read): `caller_pid` beside every integer `pid` in
    /// `v`, the caller's number or null when the process is gone. Nothing
    /// is added when the caller shares zurg's namespace.
    pub fn add_caller_pids(&self, v: &mut serde_json::Value) {
        if !self.differs() {
            return;
        }
        match v {
            serde_json::Value::Object(fields) => {
                let zurg = fields
                    .get("pid")
                    .and_then(serde_json::Value::as_i64)
                    .and_then(|p| i32::try_from(p).ok());
                // An event about a process that has ended (`exited`):
                // its number may name another process by now.
                let ended = fields
                    .get("kind")
                    .and_then(|k| serde_json::from_value::<EventKind>(k.clone()).ok())
                    .is_some_and(EventKind::ended);
                if let Some(zurg) = zurg {
                    let caller = if ended { None } else { self.pid(zurg).caller() };
                    fields.insert("caller_pid".into(), caller.into());
                }
                for field in fields.values_mut() {
                    self.add_caller_pids(field);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    self.add_caller_pids(item);
                }
            }
            _ => {}
        }
    }

    /// zurg's `pid` of a process known to have ended (an `exited`
    /// event): never mapped, since the number may name another process
    /// by now.
    pub fn ended(&self, pid: i32) -> Seen {
        if self.differs() {
            Seen::Gone { zurg: pid }
        } else {
            Seen::Same(pid)
        }
    }

    /// Looks at /proc again when the map (taken earlier) does not know
    /// zurg's `pid`: for `events --follow`, whose processes start later.
    pub fn refresh_for(&mut self, pid: i32) {
        if let (Some(zurg_pid), Seen::Gone { .. }) = (self.zurg_pid, self.pid(pid)) {
            self.map = caller_pids_of(zurg_pid, Some(&HashSet::from([pid])));
        }
    }
}

/// Every integer `pid` in an answer (`status` rows, outcomes, events,
/// `signal`, `version`): what a `CallerView` for it has to map.
pub fn pids_in(v: &serde_json::Value) -> HashSet<i32> {
    let mut out = HashSet::new();
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(fields) => {
                if let Some(p) = fields
                    .get("pid")
                    .and_then(serde_json::Value::as_i64)
                    .and_then(|p| i32::try_from(p).ok())
                {
                    out.insert(p);
                }
                stack.extend(fields.values());
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nspid_lines() {
        let status = "Name:\tsleep\nTgid:\t4242\nNSpid:\t4242\t7\nPPid:\t1\n";
        assert_eq!(parse_nspid(status), Some(vec![4242, 7]));
        assert_eq!(parse_nspid("NSpid:\t12\n"), Some(vec![12]));
        assert_eq!(parse_nspid("Name:\tx\n"), None);
        assert_eq!(parse_nspid("NSpid:\tx\n"), None);
    }

    #[test]
    fn own_namespace_maps_nothing() {
        assert!(caller_pids(std::process::id() as i32).is_empty());
        let view = CallerView::of(Some(std::process::id() as i32));
        assert!(!view.differs());
        assert_eq!(view.pid(7), Seen::Same(7));
        assert_eq!(CallerView::of(None).pid(7).to_string(), "7");
    }

    #[test]
    fn another_namespace_shows_both_numbers_or_says_it_is_gone() {
        let view = CallerView {
            zurg_pid: Some(4000),
            map: HashMap::from([(1, 4000), (16, 4242)]),
        };
        assert!(view.differs());
        assert_eq!(view.pid(16).to_string(), "4242 (zurg-pid 16)");
        assert_eq!(view.pid(16).caller(), Some(4242));
        assert_eq!(view.pid(17).to_string(), "? (zurg-pid 17)");
        assert_eq!(view.pid(17).caller(), None);
        let mut v = serde_json::json!({"id": 1, "result": [
            {"name": "a", "pid": 16, "last_exit": {"code": 0}},
            {"name": "b", "pid": 17},
            {"name": "c", "pid": null},
        ]});
        view.add_caller_pids(&mut v);
        assert_eq!(v["result"][0]["caller_pid"], 4242);
        assert_eq!(v["result"][0]["pid"], 16);
        assert_eq!(v["result"][1]["caller_pid"], serde_json::Value::Null);
        assert!(v["result"][1].get("caller_pid").is_some());
        assert!(v["result"][2].get("caller_pid").is_none());
        assert_eq!(pids_in(&v), HashSet::from([16, 17]));
        let mut events = serde_json::json!([
            {"kind": "started", "pid": 16},
            {"kind": "exited", "pid": 16},
        ]);
        view.add_caller_pids(&mut events);
        assert_eq!(events[0]["caller_pid"], 4242);
        assert_eq!(events[1]["caller_pid"], serde_json::Value::Null);
        assert_eq!(view.ended(16).to_string(), "? (zurg-pid 16)");
        let mut same = serde_json::json!({"pid": 16});
        CallerView::default().add_caller_pids(&mut same);
        assert_eq!(same, serde_json::json!({"pid": 16}));
    }
}
