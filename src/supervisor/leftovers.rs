//! Services a previous zurg left running, stopped before this one starts its
//! own.
//!
//! A zurg that is not PID 1 can be SIGKILLed and leave its services behind
//! (their death signal is the unit's stop signal, which a service may
//! ignore). Started again on the same state directory, zurg would run a
//! second copy of each. So at start-up, after the units are read and before
//! any is started, the journal's start records that have no exit record are
//! checked against /proc, and each process that is provably the one recorded
//! is stopped: its unit's stop signal, then SIGKILL after its stop timeout.
//! Stopping rather than adopting is what systemd does with
//! KillMode=control-group: an adopted process is not zurg's child, so its
//! exit could not be reaped or its status known.
//!
//! Processes a service started (a double-forked daemon, helpers) carry
//! its `ZURG_GPID` too, and the death signal does not reach them: /proc is
//! scanned for them and they are stopped the same way.
//!
//! A pid is trusted only when the process carries the recorded GPID in its
//! environment (`ZURG_GPID`, which the child wrote before exec), or, when
//! its environment says nothing, when its start time in /proc matches the
//! record's. A pid reused by an unrelated process is never signalled: it is
//! opened as a pidfd before it is checked, so the check and the signals
//! concern one process. This runs once, before the loop; the restart path
//! never comes here.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::gpid::Gpid;
use crate::journal::Record;
use crate::os::pidfd::PidFd;

use super::Supervisor;

/// The start-time check's slack: /proc's boot time is in whole seconds and a
/// start time is issued just before the clone.
const START_SLACK_US: u64 = 2_000_000;
/// How long to wait for SIGKILLed leftovers before starting anyway.
const GIVE_UP_AFTER_KILL: Duration = Duration::from_secs(5);

/// A start record with no exit record: its process may still run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unfinished<'a> {
    pub service: &'a str,
    pub gpid: Gpid,
}

/// Starts without an exit that boot keeps at most. A journal can hold far
/// more than can still run: each zurg that was SIGKILLed leaves its
/// services' starts open for good (the next one stops them without
/// writing their exits), and a crash-looping zurg on a small disk can fill
/// both files with them. Linux's default `pid_max` is this number, so on a
/// default kernel no more processes than this exist at once; the newest
/// are kept, as a previous zurg's leftovers are its last starts. At the
/// bound they take some 5 MB (docs/performance.md), whatever the journal's
/// size.
pub(crate) const MAX_UNFINISHED: usize = 32_768;

/// The journal's starts that no exit has followed yet, folded a record at
/// a time (pure): what boot keeps of the journal for leftovers, in place
/// of every record.
#[derive(Debug)]
pub(crate) struct OpenStarts {
    /// By start time first: GPID start times only increase (the GPID
    /// clock's floor carries them across boots), so the first is the
    /// oldest, which the bound drops, and one ordered map serves both the
    /// exit's lookup and the drop (a hash map beside an age index took
    /// twice the memory).
    open: BTreeMap<(u64, Gpid), String>,
    bound: usize,
    dropped: u64,
}

impl Default for OpenStarts {
    fn default() -> Self {
        OpenStarts::with_bound(MAX_UNFINISHED)
    }
}

impl OpenStarts {
    pub(crate) fn with_bound(bound: usize) -> OpenStarts {
        OpenStarts {
            open: BTreeMap::new(),
            bound: bound.max(1),
            dropped: 0,
        }
    }

    /// Takes the journal's next record: a start opens its GPID, any other
    /// record of that GPID (its exit) closes it.
    pub(crate) fn record(&mut self, r: &Record) {
        let Ok(gpid) = r.gpid.parse::<Gpid>() else {
            return;
        };
        let key = (gpid.start_us, gpid);
        if r.kind != crate::journal::Kind::Start {
            self.open.remove(&key);
            return;
        }
        self.open.insert(key, r.service.clone());
        if self.open.len() > self.bound {
            self.open.pop_first();
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// How many open starts were dropped for the bound, oldest first.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The open starts, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Unfinished<'_>> {
        self.open.iter().map(|((_, gpid), service)| Unfinished {
            service,
            gpid: *gpid,
        })
    }

    /// The open start of `gpid`, if it is one.
    pub(crate) fn get(&self, gpid: &Gpid) -> Option<Unfinished<'_>> {
        self.open
            .get(&(gpid.start_us, *gpid))
            .map(|service| Unfinished {
                service,
                gpid: *gpid,
            })
    }
}

/// What /proc says about the process now holding a pid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProcFacts {
    /// Its start time on the wall clock, µs (boot time plus /proc's ticks).
    pub start_us: u64,
    /// The value of `ZURG_GPID` in its environment, if it has one.
    pub env_gpid: Option<String>,
    /// It has exited and waits to be reaped (state Z or X).
    pub dead: bool,
    pub ppid: i32,
}

/// Whether the process described by `facts` is the one `gpid` records
/// (pure). The environment is exact; the start time is the fallback for a
/// program that cleared its environment before an exec.
pub(crate) fn same_process(gpid: &Gpid, facts: &ProcFacts) -> bool {
    if let Some(env) = &facts.env_gpid {
        return env.parse::<Gpid>().is_ok_and(|g| g == *gpid);
    }
    facts.start_us.abs_diff(gpid.start_us) <= START_SLACK_US
}

/// `/proc/PID/stat`'s state, ppid and start time in ticks since boot.
fn parse_stat(text: &str) -> Option<(char, i32, u64)> {
    let after = text.get(text.rfind(')')?.checked_add(2)?..)?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3 (index 0), ppid 4, starttime 22.
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    Some((state, ppid, start))
}

fn boot_time_us() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    let secs: u64 = line.get(6..)?.trim().parse().ok()?;
    secs.checked_mul(1_000_000)
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

fn read_facts(pid: i32, boot_us: u64, ticks: u64) -> Option<ProcFacts> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (state, ppid, start_ticks) = parse_stat(&stat)?;
    let since_boot = start_ticks.checked_mul(1_000_000)? / ticks;
    Some(ProcFacts {
        start_us: boot_us.saturating_add(since_boot),
        env_gpid: env_gpid(pid),
        dead: matches!(state, 'Z' | 'X' | 'x'),
        ppid,
    })
}

/// `ZURG_GPID` from the environment a process was started with.
fn env_gpid(pid: i32) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0)
        .find_map(|e| e.strip_prefix(b"ZURG_GPID="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

struct Leftover {
    service: String,
    pid: i32,
    fd: PidFd,
    /// When it gets SIGKILL; once sent, when zurg stops waiting for it.
    deadline: Instant,
    killed: bool,
}

impl Supervisor {
    /// Stops what the previous zurg on this state directory left running.
    /// Blocks until they are gone or given up on: it runs once, before the
    /// loop and before any service starts.
    pub(super) fn stop_leftovers(&mut self) {
        let Some(candidates) = self.boot_reads.take().and_then(|b| b.unfinished()) else {
            return;
        };
        if candidates.is_empty() {
            return;
        }
        let (Some(boot_us), ticks) = (boot_time_us(), clock_ticks()) else {
            crate::log!(
                "warning: cannot read the boot time from /proc/stat; services a previous zurg left running are not looked for"
            );
            return;
        };
        let me = crate::os::pid1::my_pid();
        let mut left = Vec::new();
        for c in candidates.iter() {
            let Ok(pid) = i32::try_from(c.gpid.pid) else {
                continue;
            };
            if pid == me {
                continue;
            }
            // Opened before the check, so what is checked is what is signalled.
            let Ok(fd) = PidFd::open(pid) else { continue };
            let Some(facts) = read_facts(pid, boot_us, ticks) else {
                continue;
            };
            if facts.dead || !same_process(&c.gpid, &facts) || self.run_by_another(c, pid, &facts) {
                continue;
            }
            left.push(self.stop_one(c.service, pid, fd));
        }
        // What the services started carries their ZURG_GPID too; neither a
        // death signal nor the recorded pid reaches a double-forked helper.
        for pid in proc_pids() {
            if pid == me || left.iter().any(|l| l.pid == pid) {
                continue;
            }
            let Some(gpid) = env_gpid(pid).and_then(|g| g.parse::<Gpid>().ok()) else {
                continue;
            };
            let Some(c) = candidates.get(&gpid) else {
                continue;
            };
            let Ok(fd) = PidFd::open(pid) else { continue };
            // Read again through the open pidfd's process.
            let Some(facts) = read_facts(pid, boot_us, ticks) else {
                continue;
            };
            let same = facts
                .env_gpid
                .as_deref()
                .and_then(|g| g.parse::<Gpid>().ok())
                == Some(gpid);
            if facts.dead || !same || self.run_by_another(c, pid, &facts) {
                continue;
            }
            left.push(self.stop_one(c.service, pid, fd));
        }
        wait_for(left);
    }

    /// A process whose parent is another live zurg is that zurg's: two
    /// zurgs on one state directory, which is the user's to sort out.
    fn run_by_another(&self, c: Unfinished<'_>, pid: i32, facts: &ProcFacts) -> bool {
        let me = crate::os::pid1::my_pid();
        if facts.ppid == me || facts.ppid <= 1 || comm(facts.ppid).as_deref() != Some("zurg") {
            return false;
        }
        crate::log!(
            "warning: {} pid {pid} is still run by zurg pid {}: not stopped; two zurgs on one state directory {} will start duplicates",
            c.service,
            facts.ppid,
            self.opts.state_dir.display()
        );
        true
    }

    /// Sends a leftover its service's stop signal (SIGTERM and `--grace`
    /// for a unit that is gone).
    fn stop_one(&self, service: &str, pid: i32, fd: PidFd) -> Leftover {
        let (signal, timeout_ms) = self
            .by_name
            .get(self.slots.as_slice(), service)
            .and_then(|slot| self.slots.get(slot))
            .map_or((libc::SIGTERM, self.opts.grace_ms), |s| {
                (s.service.unit.stop_signal, s.service.unit.stop_timeout_ms)
            });
        crate::log!(
            "stopping {service} pid {pid} left by a previous zurg ({}, SIGKILL after {timeout_ms} ms)",
            crate::sig::name(signal),
        );
        let _ = fd.send_signal(signal);
        let _ = fd.send_signal(libc::SIGCONT);
        Leftover {
            service: service.to_string(),
            pid,
            fd,
            deadline: Instant::now() + Duration::from_millis(timeout_ms),
            killed: false,
        }
    }
}

/// Every pid in /proc.
fn proc_pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// Waits for the leftovers to die, SIGKILLing each at its deadline.
fn wait_for(mut left: Vec<Leftover>) {
    while !left.is_empty() {
        let now = Instant::now();
        left.retain_mut(|l| {
            if now < l.deadline {
                return true;
            }
            if l.killed {
                crate::log!(
                    "warning: {} pid {} left by a previous zurg outlived SIGKILL (uninterruptible sleep?); starting anyway",
                    l.service,
                    l.pid
                );
                return false;
            }
            crate::log!(
                "{} pid {} left by a previous zurg did not stop: sent SIGKILL",
                l.service,
                l.pid
            );
            let _ = l.fd.send_signal(libc::SIGKILL);
            l.killed = true;
            l.deadline = now + GIVE_UP_AFTER_KILL;
            true
        });
        let Some(next) = left.iter().map(|l| l.deadline).min() else {
            break;
        };
        let wait_ms = next.saturating_duration_since(now).as_millis();
        let timeout = PollTimeout::from(u16::try_from(wait_ms).unwrap_or(u16::MAX));
        let mut fds: Vec<PollFd<'_>> = left
            .iter()
            .map(|l| PollFd::new(std::os::fd::AsFd::as_fd(&l.fd), PollFlags::POLLIN))
            .collect();
        // A pidfd is readable once its process has exited. EINTR (no signal
        // is unblocked, so hardly ever) just goes round again.
        if poll(&mut fds, timeout).is_err() {
            continue;
        }
        let gone: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut gone = gone.into_iter();
        left.retain(|l| {
            let dead = gone.next().unwrap_or(false);
            if dead {
                crate::log!(
                    "{} pid {} left by a previous zurg is gone",
                    l.service,
                    l.pid
                );
            }
            !dead
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(service: &str, gpid: &str) -> Record {
        record(service, crate::journal::Kind::Start, gpid)
    }

    fn record(service: &str, kind: crate::journal::Kind, gpid: &str) -> Record {
        Record {
            time_us: 0,
            service: service.into(),
            kind,
            gpid: gpid.into(),
            ..Default::default()
        }
    }

    const A: &str = "10.0.0.7:0:1795000000000000:42";
    const B: &str = "10.0.0.7:0:1795000000500000:43";
    const C: &str = "10.0.0.7:0:1795000001000000:44";
    const D: &str = "10.0.0.7:0:1795000001500000:45";
    const E: &str = "10.0.0.7:0:1795000002000000:46";

    fn fold(records: &[Record], bound: usize) -> (Vec<(String, Gpid)>, u64) {
        let mut open = OpenStarts::with_bound(bound);
        for r in records {
            open.record(r);
        }
        let got = open
            .iter()
            .map(|u| (u.service.to_string(), u.gpid))
            .collect();
        (got, open.dropped())
    }

    fn unfinished(service: &str, gpid: &str) -> (String, Gpid) {
        (service.into(), gpid.parse().unwrap())
    }

    #[test]
    fn only_starts_without_an_exit_are_unfinished() {
        let records = [
            start("a", A),
            start("b", B),
            record("a", crate::journal::Kind::Exit, A),
            start("c", C),
            start("x", "not a gpid"),
            record("x", crate::journal::Kind::Exit, "not a gpid"),
        ];
        let (got, dropped) = fold(&records, MAX_UNFINISHED);
        assert_eq!(got, [unfinished("b", B), unfinished("c", C)]);
        assert_eq!(dropped, 0);
    }

    #[test]
    fn past_the_bound_the_oldest_open_starts_are_dropped() {
        // A crash loop's journal: starts that never saw an exit, one of
        // them closed late, and a start written twice.
        let records = [
            start("a", A),
            start("b", B),
            start("b", B),
            record("b", crate::journal::Kind::Exit, B),
            start("c", C),
            start("d", D),
            start("e", E),
        ];
        let (got, dropped) = fold(&records, 2);
        assert_eq!(got, [unfinished("d", D), unfinished("e", E)]);
        // a, then c: b was closed before the bound was reached.
        assert_eq!(dropped, 2);
        // Oldest is by start time: the journal's order, unless the GPID
        // clock's floor was lost while the wall clock went back.
        let shuffled = [start("c", C), start("a", A), start("b", B)];
        assert_eq!(
            fold(&shuffled, 2),
            (vec![unfinished("b", B), unfinished("c", C)], 1)
        );
    }

    #[test]
    fn a_pid_is_the_recorded_process_only_when_it_proves_it() {
        let gpid: Gpid = A.parse().unwrap();
        let at = |start_us: u64, env: Option<&str>| ProcFacts {
            start_us,
            env_gpid: env.map(String::from),
            dead: false,
            ppid: 1,
        };
        let cases = [
            // The environment carries this very GPID: it is ours, whatever
            // the clocks say.
            (at(0, Some(A)), true),
            // Another GPID at the same pid: a different zurg child.
            (at(gpid.start_us, Some(B)), false),
            (at(gpid.start_us, Some("garbage")), false),
            // No ZURG_GPID (environment cleared, or unreadable): start time.
            (at(gpid.start_us + 30_000, None), true),
            (at(gpid.start_us - 900_000, None), true),
            // The pid was reused by a process started minutes later, or
            // long before (another boot).
            (at(gpid.start_us + 120_000_000, None), false),
            (at(gpid.start_us - 3_600_000_000, None), false),
        ];
        for (i, (facts, want)) in cases.iter().enumerate() {
            assert_eq!(same_process(&gpid, facts), *want, "case {i}: {facts:?}");
        }
    }

    #[test]
    fn stat_fields_are_read_after_the_name() {
        // A name with spaces and parentheses, as a program may choose.
        let line = "123 (a) b (c) S 77 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 4567 1000 100 18446744073709551615";
        assert_eq!(parse_stat(line), Some(('S', 77, 4567)));
        assert_eq!(parse_stat("123 (x) Z 1"), None);
    }
}
