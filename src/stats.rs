//! Resource use of a process and of its whole tree, read from /proc.
//!
//! The readers are written by hand against the few fields zurg reports
//! rather than through procfs's full parsers: `zurg stats` over 1,000
//! processes must cost about what reading those files costs (bench/stats).
//! A process that vanishes mid-read is simply missing from a tree sum.

use std::fs::File;
use std::io::Read;

use serde::{Deserialize, Serialize};

/// One sample of one process, or the sum over a tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Monotonic ms when taken (zurg's clock), for CPU % between samples.
    pub at_ms: u64,
    pub processes: u32,
    pub cpu_user_ms: u64,
    pub cpu_system_ms: u64,
    pub rss_kb: u64,
    /// From smaps_rollup; 0 when unreadable.
    pub pss_kb: u64,
    pub threads: u64,
    pub fds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bytes: Option<u64>,
    pub ctx_switches: u64,
}

impl Sample {
    fn add(&mut self, o: &Sample) {
        self.processes += o.processes;
        self.cpu_user_ms += o.cpu_user_ms;
        self.cpu_system_ms += o.cpu_system_ms;
        self.rss_kb += o.rss_kb;
        self.pss_kb += o.pss_kb;
        self.threads += o.threads;
        self.fds += o.fds;
        self.read_bytes = sum_opt(self.read_bytes, o.read_bytes);
        self.write_bytes = sum_opt(self.write_bytes, o.write_bytes);
        self.ctx_switches += o.ctx_switches;
    }
}

fn sum_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x + y),
        (x, None) | (None, x) => x,
    }
}

/// CPU use between two samples, in percent of one core (pure).
pub fn cpu_percent(earlier: &Sample, later: &Sample) -> Option<f64> {
    let dt = later.at_ms.checked_sub(earlier.at_ms).filter(|d| *d > 0)?;
    let used = (later.cpu_user_ms + later.cpu_system_ms)
        .checked_sub(earlier.cpu_user_ms + earlier.cpu_system_ms)?;
    Some(used as f64 * 100.0 / dt as f64)
}

fn read_small(path: &str, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .is_ok()
}

fn field_kb(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.get(key.len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn ticks_to_ms(ticks: u64) -> u64 {
    // USER_HZ is 100 on every Linux ABI zurg runs on.
    ticks.saturating_mul(10)
}

/// Reads one process. `None` when it is gone.
pub fn sample_pid(pid: i32, at_ms: u64) -> Option<Sample> {
    let mut buf = Vec::with_capacity(4096);
    let mut s = Sample {
        at_ms,
        processes: 1,
        ..Sample::default()
    };

    if !read_small(&format!("/proc/{pid}/stat"), &mut buf) {
        return None;
    }
    let text = String::from_utf8_lossy(&buf);
    let after = text.get(text.rfind(')')? + 2..)?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields after the name: state(0) ... utime(11) stime(12) ... num_threads(17) ... rss(21)
    let num = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    s.cpu_user_ms = ticks_to_ms(num(11));
    s.cpu_system_ms = ticks_to_ms(num(12));
    s.threads = num(17);
    s.rss_kb = num(21) * 4;

    if read_small(&format!("/proc/{pid}/status"), &mut buf) {
        let text = String::from_utf8_lossy(&buf);
        if let Some(rss) = field_kb(&text, "VmRSS:") {
            s.rss_kb = rss;
        }
        s.ctx_switches = field_kb(&text, "voluntary_ctxt_switches:").unwrap_or(0)
            + field_kb(&text, "nonvoluntary_ctxt_switches:").unwrap_or(0);
    }
    if read_small(&format!("/proc/{pid}/smaps_rollup"), &mut buf) {
        s.pss_kb = field_kb(&String::from_utf8_lossy(&buf), "Pss:").unwrap_or(0);
    }
    if read_small(&format!("/proc/{pid}/io"), &mut buf) {
        let text = String::from_utf8_lossy(&buf);
        s.read_bytes = field_kb(&text, "read_bytes:");
        s.write_bytes = field_kb(&text, "write_bytes:");
    }
    s.fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    Some(s)
}

/// Direct children of `pid`, from every thread's children file.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let path = t.path().join("children");
        buf.clear();
        if File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .is_ok()
        {
            out.extend(
                String::from_utf8_lossy(&buf)
                    .split_whitespace()
                    .filter_map(|x| x.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// The process and everything below it, summed.
pub fn sample_tree(pid: i32, at_ms: u64) -> Option<Sample> {
    Some(tree_from(pid, sample_pid(pid, at_ms)?))
}

/// The tree sum, given the root's own sample (so it is read only once).
pub fn tree_from(pid: i32, root: Sample) -> Sample {
    let at_ms = root.at_ms;
    let mut total = root;
    let mut stack = children(pid);
    let mut seen = 0usize;
    while let Some(p) = stack.pop() {
        seen += 1;
        if seen > 100_000 {
            break;
        }
        if let Some(s) = sample_pid(p, at_ms) {
            total.add(&s);
            stack.extend(children(p));
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id() as i32;
        let s = sample_pid(me, 5).unwrap();
        assert_eq!(s.processes, 1);
        assert!(s.rss_kb > 100 && s.threads >= 1 && s.fds >= 3, "{s:?}");
        assert!(sample_pid(i32::MAX, 0).is_none());
    }

    #[test]
    fn cpu_percent_between_samples() {
        let a = Sample {
            at_ms: 1000,
            cpu_user_ms: 100,
            ..Sample::default()
        };
        let b = Sample {
            at_ms: 2000,
            cpu_user_ms: 400,
            cpu_system_ms: 100,
            ..Sample::default()
        };
        assert_eq!(cpu_percent(&a, &b), Some(40.0));
        assert_eq!(cpu_percent(&b, &a), None);
        assert_eq!(cpu_percent(&a, &a), None);
    }
}
