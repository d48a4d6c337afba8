//! Pids as the caller sees them, for a client outside zurg's pid namespace
//! (`zurg status` run on the host against a container's zurg). zurg reports
//! pids in its own namespace; the kernel tells the client zurg's pid in the
//! client's namespace (SO_PEERCRED), and /proc/PID/status `NSpid:` lines
//! give every descendant's pid in each nested namespace. Client side only
//! (L3): reads /proc, never runs in the daemon.

use std::collections::HashMap;

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
    let mut map = HashMap::new();
    let Some(own) = nspid(zurg_pid) else {
        return map;
    };
    // Entry `depth` of a descendant's NSpid is its pid in zurg's namespace.
    let depth = own.len().saturating_sub(1);
    if depth == 0 {
        return map;
    }
    let mut stack = crate::stats::children(zurg_pid);
    let mut seen = 0usize;
    while let Some(pid) = stack.pop() {
        seen = seen.saturating_add(1);
        // Bounded, in case /proc shows a churning tree.
        if seen > 1_000_000 {
            break;
        }
        if let Some(ns) = nspid(pid) {
            if let (Some(outer), Some(inner)) = (ns.first(), ns.get(depth)) {
                map.insert(*inner, *outer);
            }
        }
        stack.extend(crate::stats::children(pid));
    }
    if let (Some(outer), Some(inner)) = (own.first(), own.last()) {
        map.insert(*inner, *outer);
    }
    map
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
    }
}
