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
//!
//! Each open start the pass settles gets its exit record, written before
//! this boot's first start (see `Settled`), so the next boot does not
//! check it again and `history` shows how it ended. One the pass could not
//! judge keeps its open start for a later boot. Environments are read with
//! deadlines (`environ_reader`): a read that can block for ever on a
//! process stuck on a hung mount leaves that pid unjudged, and boot goes on.
//!
//! The journal's writer is a thread: a zurg SIGKILLed just after a spawn may
//! die before the start record is written, and then no open start names
//! the process. So every service also carries `ZURG_STATE_ID`, the state
//! directory's device and inode (`StateMark`), set with the rest of its
//! environment, no write needed before the spawn. When the previous zurg
//! on this state directory did not shut down cleanly (its pid is still in
//! `STATE/lock`, which a clean shutdown empties), every process carrying
//! this id that no open start accounts for is stopped the same way, with
//! no record written, as there is no start to close. The state directory's
//! lock guarantees no other live zurg gives out this id.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::control::proto::ExitInfo;
use crate::gpid::Gpid;
use crate::journal::Record;
use crate::os::pidfd::PidFd;

use super::environ_reader::{Environ, EnvironReader};
use super::Supervisor;

/// The start-time check's slack: /proc's boot time is in whole seconds and a
/// start time is issued just before the clone.
const START_SLACK_US: u64 = 2_000_000;
/// How long to wait for SIGKILLed leftovers before starting anyway.
const GIVE_UP_AFTER_KILL: Duration = Duration::from_secs(5);
/// Exits of settled starts sent to the journal's writer before waiting
/// for it to take them: far below its queue's bound (`QUEUE_RECORDS`, and
/// `QUEUE_BYTES` at ~170 bytes an exit).
const EXIT_BATCH: usize = 2_048;
const _: () = assert!(EXIT_BATCH * 4 <= crate::journal_writer::QUEUE_RECORDS);
/// How long boot waits, in all, for the writer to take those exits: a
/// healthy disk writes a crash loop's 32,768 (some 5 MB) well within it.
const EXITS_DEADLINE: Duration = Duration::from_secs(3);

/// The variable naming the state directory a service was started for.
pub(crate) const STATE_ID_VAR: &str = "ZURG_STATE_ID";

/// The state directory's id, as services carry it: `DEV:INO` of the
/// directory, as `stat -c %d:%i` prints them. Unique on the host while the
/// directory exists, kept across a rename and seen alike through a bind
/// mount, and another directory's in another container (pure).
pub(crate) fn state_id(dev: u64, ino: u64) -> String {
    format!("{dev}:{ino}")
}

/// Whether the previous zurg on a state directory shut down cleanly, from
/// what `STATE/lock` held before this zurg wrote its pid (pure): a running
/// zurg's pid, which its clean shutdown empties. A new lock file is empty
/// too: no zurg ran there before.
pub(crate) fn clean_before(lock_text: &str) -> bool {
    lock_text.trim().is_empty()
}

/// What zurg puts in every service's environment, and what its boot looks
/// for.
#[derive(Debug)]
pub(crate) struct StateMark {
    /// `ZURG_STATE_ID=DEV:INO`, built once.
    pub env: CString,
    /// The id, when the previous zurg on this state directory may have left
    /// processes (it did not shut down cleanly, or that is not known):
    /// boot stops those carrying it.
    pub look_for: Option<String>,
}

impl StateMark {
    pub(crate) fn new(id: &str, clean_before: bool) -> Option<StateMark> {
        Some(StateMark {
            env: CString::new(format!("{STATE_ID_VAR}={id}")).ok()?,
            look_for: (!clean_before).then(|| id.to_string()),
        })
    }

    /// Adds the id to a spawn's environment entries unless they hold it:
    /// one clone when the spec's environment was built anew, none after.
    pub(crate) fn put_in(&self, env: &mut Vec<CString>) {
        if !env.contains(&self.env) {
            env.push(self.env.clone());
        }
    }
}

/// A start record with no exit record: its process may still run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unfinished<'a> {
    pub service: &'a str,
    pub gpid: Gpid,
}

/// Starts without an exit that boot keeps at most. A journal can hold far
/// more than can still run: a crash-looping zurg on a small disk can fill
/// both files with starts it never saw end, and those boot could not
/// judge (see `Settled`) stay open. Linux's default `pid_max` is this
/// number, so on a default kernel no more processes than this exist at once; the newest
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

/// How boot settled an open start: the exit record it writes for it. The
/// one place the records' reasons are worded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// This boot stopped it (or a process it started): `signal` is the
    /// stop signal sent, and `killed` says SIGKILL ended the recorded
    /// process after it.
    Stopped { signal: i32, killed: bool },
    /// It no longer ran at boot: gone, exited and unreaped, or its pid now
    /// another process's. How it ended is unknown.
    Lost,
}

impl Settled {
    pub(crate) fn reason(self) -> String {
        match self {
            Settled::Stopped { signal, killed } => format!(
                "stopped at boot: left running by a previous zurg (sent {}{})",
                crate::sig::name(signal),
                if killed { ", then SIGKILL" } else { "" }
            ),
            Settled::Lost => "lost: not running at boot".to_string(),
        }
    }

    /// Its exit record. The status is not known (a leftover is not this
    /// zurg's child, so its exit cannot be reaped), except that a process
    /// that died of the SIGKILL sent it was ended by that signal, which no
    /// process can catch.
    pub(crate) fn record(self, open: Unfinished<'_>, time_us: u64) -> Record {
        let exit = matches!(self, Settled::Stopped { killed: true, .. }).then(|| ExitInfo {
            signal: Some(crate::sig::name(libc::SIGKILL)),
            ..ExitInfo::default()
        });
        Record {
            time_us,
            service: open.service.to_string(),
            kind: crate::journal::Kind::Exit,
            gpid: open.gpid.to_string(),
            exit,
            reason: Some(self.reason()),
            ..Record::default()
        }
    }
}

/// What the pass found of one open start's processes (pure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Findings {
    /// Whether its recorded process runs could not be told, or a process
    /// of it is another live zurg's.
    unjudged: bool,
    /// The stop signal sent to it or to a process it started.
    stopped: Option<i32>,
    /// Its recorded process died after SIGKILL.
    killed: bool,
    /// A process of it was still there after SIGKILL.
    outlived: bool,
}

impl Findings {
    /// The exit it gets, if any. Only a start whose processes are all known
    /// to be gone gets one: a start that could not be judged (its /proc
    /// entry unreadable, no pidfd for it) may still run, and one that
    /// outlived SIGKILL or belongs to another zurg does; an exit would
    /// hide it from every later boot, which would then start a second copy
    /// beside it without a word.
    fn settled(self) -> Option<Settled> {
        if self.unjudged || self.outlived {
            return None;
        }
        Some(match self.stopped {
            Some(signal) => Settled::Stopped {
                signal,
                killed: self.killed,
            },
            None => Settled::Lost,
        })
    }
}

/// What the pass makes of the process holding a recorded pid.
#[derive(Debug)]
enum Holder {
    /// The recorded process, running: to be stopped.
    Recorded(i32, PidFd),
    /// No process, or not the recorded one, or the recorded one dead.
    NotRecorded,
    /// Cannot tell, or another zurg's.
    Unknown,
}

/// What /proc says about the process now holding a pid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProcFacts {
    /// Its start time on the wall clock, µs (boot time plus /proc's ticks).
    pub start_us: u64,
    /// The value of `ZURG_GPID` in its environment, if it has one.
    pub env_gpid: Option<String>,
    /// The value of `ZURG_STATE_ID` in its environment, if it has one.
    pub env_state_id: Option<String>,
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

/// What /proc gave of a pid.
#[derive(Debug)]
enum ProcView {
    Facts(ProcFacts),
    /// No /proc entry (or one that makes no sense): most likely gone.
    Gone,
    /// Its environment was not read in time (`environ_reader`): nothing is
    /// known of it.
    NotRead,
}

fn read_facts(pid: i32, boot_us: u64, ticks: u64, reader: &mut EnvironReader) -> ProcView {
    let stat = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (state, ppid, start_ticks) = parse_stat(&stat)?;
        let since_boot = start_ticks.checked_mul(1_000_000)? / ticks;
        Some((state, ppid, since_boot))
    };
    let Some((state, ppid, since_boot)) = stat() else {
        return ProcView::Gone;
    };
    let Some(env) = proc_env(pid, reader) else {
        return ProcView::NotRead;
    };
    ProcView::Facts(ProcFacts {
        start_us: boot_us.saturating_add(since_boot),
        env_gpid: env.gpid,
        env_state_id: env.state_id,
        dead: matches!(state, 'Z' | 'X' | 'x'),
        ppid,
    })
}

/// What zurg put in a process's environment, as /proc shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ZurgEnv {
    gpid: Option<String>,
    state_id: Option<String>,
    service: Option<String>,
}

/// zurg's variables in an environment block, `KEY=VALUE\0...` (pure).
fn zurg_env(block: &[u8]) -> ZurgEnv {
    fn value<'a>(e: &'a [u8], name: &str) -> Option<&'a [u8]> {
        e.strip_prefix(name.as_bytes())?.strip_prefix(b"=")
    }
    let mut found = ZurgEnv::default();
    let text = |v: &[u8]| Some(String::from_utf8_lossy(v).into_owned());
    for e in block.split(|b| *b == 0) {
        if !e.starts_with(b"ZURG_") {
            continue;
        }
        // The first of a name, as getenv(3) finds it.
        let (slot, v) = if let Some(v) = value(e, "ZURG_GPID") {
            (&mut found.gpid, v)
        } else if let Some(v) = value(e, STATE_ID_VAR) {
            (&mut found.state_id, v)
        } else if let Some(v) = value(e, "ZURG_SERVICE") {
            (&mut found.service, v)
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = text(v);
        }
    }
    found
}

/// zurg's variables from the environment a process was started with: none
/// when it cannot be read, `None` when it was not read in time.
fn proc_env(pid: i32, reader: &mut EnvironReader) -> Option<ZurgEnv> {
    match reader.read(pid) {
        Environ::Block(b) => Some(zurg_env(&b)),
        Environ::Unreadable => Some(ZurgEnv::default()),
        Environ::NotRead => None,
    }
}

/// This process's ancestors, which are never stopped: a shell a service
/// of the previous zurg ran, say, that started this one, carries its id.
fn ancestors(me: i32) -> BTreeSet<i32> {
    let mut found = BTreeSet::new();
    let mut pid = me;
    // pid_max bounds the chain; 4,096 levels is far past any real one.
    for _ in 0..4_096 {
        let Some((_, ppid, _)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
        else {
            break;
        };
        if ppid <= 0 || !found.insert(ppid) {
            break;
        }
        pid = ppid;
    }
    found
}

fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

struct Leftover {
    service: String,
    /// The open start it is of; none for one found by its state id alone.
    gpid: Option<Gpid>,
    /// It is the recorded process, not one it started.
    recorded: bool,
    /// The stop signal it was sent.
    signal: i32,
    pid: i32,
    fd: PidFd,
    /// When it gets SIGKILL; once sent, when zurg stops waiting for it.
    deadline: Instant,
    killed: bool,
}

/// How a stopped leftover ended, as `wait_for` saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    gpid: Option<Gpid>,
    recorded: bool,
    signal: i32,
    ended: Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Gone {
        killed: bool,
    },
    /// Still there after SIGKILL and `GIVE_UP_AFTER_KILL`.
    Outlived,
}

impl Supervisor {
    /// Stops what the previous zurg on this state directory left running,
    /// and writes an exit for each open start it settles. Blocks until they
    /// are gone or given up on: it runs once, before the loop and before any
    /// service starts, so the exits precede this boot's starts.
    pub(super) fn stop_leftovers(&mut self) {
        // Without the journal's open starts (unreadable, or not read within
        // the deadline) no start was judged, so none is closed; processes
        // carrying this state directory's id are still stopped.
        let candidates = self.boot_reads.take().and_then(|b| b.unfinished());
        let look_for = self.state_mark.as_ref().and_then(|m| m.look_for.clone());
        if candidates.as_ref().is_none_or(OpenStarts::is_empty) && look_for.is_none() {
            return;
        }
        let candidates = candidates.unwrap_or_default();
        // Without the boot time no start time can be compared, so whether a
        // recorded pid is still the recorded process cannot be told: no
        // exit is written, and a later boot that can tell settles them.
        let (Some(boot_us), ticks) = (boot_time_us(), clock_ticks()) else {
            crate::log!(
                "warning: cannot read the boot time from /proc/stat; services a previous zurg left running are not looked for"
            );
            return;
        };
        let me = crate::os::pid1::my_pid();
        let mut reader = EnvironReader::for_boot();
        // Only what the pass found of a start: one with no entry is lost,
        // which most are (a crash loop's), so the map stays small.
        let mut found: BTreeMap<Gpid, Findings> = BTreeMap::new();
        let mut left = Vec::new();
        for c in candidates.iter() {
            match self.holder(c, me, boot_us, ticks, &mut reader) {
                Holder::Recorded(pid, fd) => {
                    left.push(self.stop_one(c.service, Some(c.gpid), true, pid, fd));
                }
                Holder::NotRecorded => {}
                Holder::Unknown => found.entry(c.gpid).or_default().unjudged = true,
            }
        }
        // What the services started carries their ZURG_GPID too; neither a
        // death signal nor the recorded pid reaches a double-forked helper.
        // And what carries this state directory's id is the previous
        // zurg's, whether or not its start reached the journal.
        let spared = match look_for {
            Some(_) => ancestors(me),
            None => BTreeSet::new(),
        };
        let mut scan_unjudged = false;
        for pid in proc_pids() {
            if pid == me || spared.contains(&pid) || left.iter().any(|l| l.pid == pid) {
                continue;
            }
            // A process whose environment was not read may be of any open
            // start: see `scan_unjudged` below.
            let Some(env) = proc_env(pid, &mut reader) else {
                scan_unjudged = true;
                continue;
            };
            let gpid = env.gpid.as_deref().and_then(|g| g.parse::<Gpid>().ok());
            let open = gpid.and_then(|g| candidates.get(&g));
            let ours = look_for.is_some() && env.state_id == look_for;
            if open.is_none() && !ours {
                continue;
            }
            // One that cannot be opened or read again has most likely just
            // exited: it leaves its start's judgement as it was.
            let Ok(fd) = PidFd::open(pid) else { continue };
            // Read again through the open pidfd's process.
            let facts = match read_facts(pid, boot_us, ticks, &mut reader) {
                ProcView::Facts(facts) => facts,
                ProcView::Gone => continue,
                ProcView::NotRead => {
                    scan_unjudged = true;
                    continue;
                }
            };
            if facts.dead {
                continue;
            }
            if let Some(c) = open {
                let same = facts
                    .env_gpid
                    .as_deref()
                    .and_then(|g| g.parse::<Gpid>().ok())
                    == Some(c.gpid);
                if !same {
                    continue;
                }
                if self.run_by_another(c.service, pid, &facts) {
                    found.entry(c.gpid).or_default().unjudged = true;
                    continue;
                }
                left.push(self.stop_one(c.service, Some(c.gpid), false, pid, fd));
                continue;
            }
            // A child of another live zurg carrying this id is that zurg's:
            // the command of a `zurg -- CMD` that a service of the previous
            // one ran, which passes its environment on. Stopping that zurg
            // stops it.
            if facts.env_state_id != look_for || parent_is_another_zurg(&facts) {
                continue;
            }
            let service = env.service.as_deref().unwrap_or("a service");
            left.push(self.stop_one(service, None, false, pid, fd));
        }
        for o in wait_for(left) {
            let Some(gpid) = o.gpid else { continue };
            let f = found.entry(gpid).or_default();
            f.stopped = Some(o.signal);
            match o.ended {
                Ended::Gone { killed } => f.killed |= killed && o.recorded,
                Ended::Outlived => f.outlived = true,
            }
        }
        if reader.not_read() > 0 {
            crate::log!(
                "warning: {} read(s) of a process's environment in /proc did not answer within {} ms (a process stuck on a hung mount?) or came after the pass's {} s were spent; those processes are neither stopped nor judged{}",
                reader.not_read(),
                super::environ_reader::PER_READ.as_millis(),
                super::environ_reader::WHOLE_SCAN.as_secs(),
                if scan_unjudged {
                    ", and no open start is closed: any could be theirs, so a later boot looks for them again"
                } else {
                    ""
                }
            );
        }
        if scan_unjudged {
            return;
        }
        self.write_settled(&candidates, &found);
    }

    /// The exits of the open starts the pass settled, oldest first. Past
    /// `EXIT_BATCH` of them each batch waits for the journal's writer to
    /// take the one before, until `EXITS_DEADLINE`: a crash loop's journal
    /// settles some 32,000 at once, which would overflow the writer's queue
    /// and be dropped into a gap record. Past the deadline the rest are not
    /// sent, and their starts stay open for the next boot.
    fn write_settled(&mut self, candidates: &OpenStarts, found: &BTreeMap<Gpid, Findings>) {
        let now_us = crate::os::wall_clock_us();
        let deadline = Instant::now() + EXITS_DEADLINE;
        let (mut stopped, mut lost, mut unsent) = (0u64, 0u64, 0u64);
        let (mut batch, mut stuck) = (0, false);
        for c in candidates.iter() {
            let Some(settled) = found.get(&c.gpid).copied().unwrap_or_default().settled() else {
                continue;
            };
            if !stuck && batch == EXIT_BATCH {
                batch = 0;
                let left = deadline.saturating_duration_since(Instant::now());
                stuck = !self.journal.written_within(left);
            }
            if stuck {
                unsent = unsent.saturating_add(1);
                continue;
            }
            match settled {
                Settled::Stopped { .. } => stopped = stopped.saturating_add(1),
                Settled::Lost => lost = lost.saturating_add(1),
            }
            self.journal.send(&settled.record(c, now_us));
            batch += 1;
        }
        if stopped > 0 || lost > 0 {
            crate::log!(
                "journal: wrote the exits of {} start(s) a previous zurg left open: {stopped} stopped at boot, {lost} no longer running",
                stopped.saturating_add(lost)
            );
        }
        if unsent > 0 {
            crate::log!(
                "warning: the journal in {} did not take the exits of a previous zurg's starts within {} s: {unsent} are not written, and the next boot looks for them again",
                self.opts.state_dir.display(),
                EXITS_DEADLINE.as_secs()
            );
        }
    }

    /// What holds the pid `c` records: the recorded process, which runs,
    /// or not, or cannot tell.
    fn holder(
        &self,
        c: Unfinished<'_>,
        me: i32,
        boot_us: u64,
        ticks: u64,
        reader: &mut EnvironReader,
    ) -> Holder {
        let Ok(pid) = i32::try_from(c.gpid.pid) else {
            // No process has such a pid.
            return Holder::NotRecorded;
        };
        if pid <= 0 || pid == me {
            return Holder::NotRecorded;
        }
        // Opened before the check, so what is checked is what is signalled.
        let fd = match PidFd::open(pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Holder::NotRecorded,
            // ENOSYS, EMFILE: nothing is known of the pid.
            Err(_) => return Holder::Unknown,
        };
        let facts = match read_facts(pid, boot_us, ticks, reader) {
            ProcView::Facts(facts) => facts,
            // A process reaped since the open has no /proc entry; one that
            // still runs and cannot be read is not judged.
            ProcView::Gone if exited(&fd) => return Holder::NotRecorded,
            ProcView::Gone | ProcView::NotRead => return Holder::Unknown,
        };
        if facts.dead || !same_process(&c.gpid, &facts) {
            return Holder::NotRecorded;
        }
        if self.run_by_another(c.service, pid, &facts) {
            return Holder::Unknown;
        }
        Holder::Recorded(pid, fd)
    }

    /// A process whose parent is another live zurg is that zurg's: two
    /// zurgs on one state directory, which is the user's to sort out.
    fn run_by_another(&self, service: &str, pid: i32, facts: &ProcFacts) -> bool {
        if !parent_is_another_zurg(facts) {
            return false;
        }
        crate::log!(
            "warning: {service} pid {pid} is still run by zurg pid {}: not stopped; two zurgs on one state directory {} will start duplicates",
            facts.ppid,
            self.opts.state_dir.display()
        );
        true
    }

    /// Sends a leftover of `service` its stop signal (SIGTERM and `--grace`
    /// for a unit that is gone). `gpid` is the open start it is of; without
    /// one it was found by this state directory's id alone.
    fn stop_one(
        &self,
        service: &str,
        gpid: Option<Gpid>,
        recorded: bool,
        pid: i32,
        fd: PidFd,
    ) -> Leftover {
        let (signal, timeout_ms) = self
            .by_name
            .get(self.slots.as_slice(), service)
            .and_then(|slot| self.slots.get(slot))
            .map_or((libc::SIGTERM, self.opts.grace_ms), |s| {
                (s.service.unit.stop_signal, s.service.unit.stop_timeout_ms)
            });
        let unrecorded = match gpid {
            Some(_) => String::new(),
            None => format!(": no open start in the journal (that zurg was killed before writing it, or after the start's end), found by its {STATE_ID_VAR}"),
        };
        crate::log!(
            "stopping {service} pid {pid} left by a previous zurg ({}, SIGKILL after {timeout_ms} ms){unrecorded}",
            crate::sig::name(signal),
        );
        let _ = fd.send_signal(signal);
        let _ = fd.send_signal(libc::SIGCONT);
        Leftover {
            service: service.to_string(),
            gpid,
            recorded,
            signal,
            pid,
            fd,
            deadline: Instant::now() + Duration::from_millis(timeout_ms),
            killed: false,
        }
    }
}

/// Whether the process's parent is a live zurg other than this one: the
/// process is that zurg's.
fn parent_is_another_zurg(facts: &ProcFacts) -> bool {
    let me = crate::os::pid1::my_pid();
    facts.ppid != me && facts.ppid > 1 && comm(facts.ppid).as_deref() == Some("zurg")
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

/// Waits for the leftovers to die, SIGKILLing each at its deadline; how
/// each ended.
fn wait_for(mut left: Vec<Leftover>) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(left.len());
    let outcome = |l: &Leftover, ended| Outcome {
        gpid: l.gpid,
        recorded: l.recorded,
        signal: l.signal,
        ended,
    };
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
                outcomes.push(outcome(l, Ended::Outlived));
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
                outcomes.push(outcome(l, Ended::Gone { killed: l.killed }));
            }
            !dead
        });
    }
    outcomes
}

/// Whether `fd`'s process has exited (its pidfd is readable), without
/// waiting.
fn exited(fd: &PidFd) -> bool {
    let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(fd), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
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
            env_state_id: None,
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
    fn only_a_start_whose_processes_are_all_known_gone_is_settled() {
        let none = Findings::default();
        let stopped = Findings {
            stopped: Some(libc::SIGTERM),
            ..none
        };
        let cases = [
            // Gone, or its pid another process's: lost.
            (none, Some(Settled::Lost)),
            (
                stopped,
                Some(Settled::Stopped {
                    signal: libc::SIGTERM,
                    killed: false,
                }),
            ),
            (
                Findings {
                    killed: true,
                    ..stopped
                },
                Some(Settled::Stopped {
                    signal: libc::SIGTERM,
                    killed: true,
                }),
            ),
            // May still run: /proc unreadable, another zurg's, or a process
            // of it in uninterruptible sleep that SIGKILL did not end.
            (
                Findings {
                    unjudged: true,
                    ..none
                },
                None,
            ),
            (
                Findings {
                    unjudged: true,
                    ..stopped
                },
                None,
            ),
            (
                Findings {
                    outlived: true,
                    ..stopped
                },
                None,
            ),
        ];
        for (i, (found, want)) in cases.iter().enumerate() {
            assert_eq!(found.settled(), *want, "case {i}: {found:?}");
        }
    }

    #[test]
    fn a_process_whose_environment_does_not_come_in_time_is_not_judged() {
        use std::sync::{mpsc, Arc, Mutex};
        use std::time::Duration;
        let me = i32::try_from(std::process::id()).unwrap();
        // this very process, its environment as a fake /proc gives it
        let fake = |block: &'static [u8]| {
            let read = move |_pid: i32| Ok(block.to_vec());
            EnvironReader::new(
                Arc::new(read),
                Duration::from_millis(100),
                Duration::from_secs(60),
            )
        };
        let mut reader = fake(b"PATH=/bin\0ZURG_GPID=abc\0");
        let ProcView::Facts(facts) = read_facts(me, 0, 100, &mut reader) else {
            panic!("read");
        };
        assert_eq!(facts.env_gpid.as_deref(), Some("abc"));
        assert_eq!(
            proc_env(me, &mut reader).and_then(|e| e.gpid).as_deref(),
            Some("abc")
        );
        // a read that hangs (a process stuck on a hung mount): not read,
        // which the pass takes as "cannot judge", within the read's deadline
        let (_release, blocked) = mpsc::channel::<()>();
        let blocked = Mutex::new(blocked);
        let hung = move |_pid: i32| {
            if let Ok(b) = blocked.lock() {
                let _ = b.recv();
            }
            Ok(Vec::new())
        };
        let mut reader = EnvironReader::new(
            Arc::new(hung),
            Duration::from_millis(100),
            Duration::from_secs(60),
        );
        let started = std::time::Instant::now();
        assert!(matches!(
            read_facts(me, 0, 100, &mut reader),
            ProcView::NotRead
        ));
        assert_eq!(proc_env(me, &mut reader), None);
        assert!(started.elapsed() < Duration::from_secs(5));
        // a read that fails is a process without zurg's variables, as before
        let failing = |_pid: i32| Err(std::io::Error::from_raw_os_error(libc::EACCES));
        let mut reader = EnvironReader::new(
            Arc::new(failing),
            Duration::from_millis(100),
            Duration::from_secs(60),
        );
        assert_eq!(proc_env(me, &mut reader), Some(ZurgEnv::default()));
    }

    #[test]
    fn a_settled_start_is_closed_by_an_exit_that_says_how() {
        let gpid: Gpid = A.parse().unwrap();
        let open = Unfinished {
            service: "web",
            gpid,
        };
        let killed = Settled::Stopped {
            signal: libc::SIGTERM,
            killed: true,
        }
        .record(open, 7);
        assert_eq!(killed.kind, crate::journal::Kind::Exit);
        assert_eq!((killed.service.as_str(), killed.gpid.as_str()), ("web", A));
        assert_eq!(killed.time_us, 7);
        assert_eq!(
            killed.reason.as_deref(),
            Some("stopped at boot: left running by a previous zurg (sent SIGTERM, then SIGKILL)")
        );
        assert_eq!(
            killed.exit.and_then(|e| e.signal).as_deref(),
            Some("SIGKILL")
        );
        // Ended by its stop signal, or by itself after it: status unknown.
        let stopped = Settled::Stopped {
            signal: libc::SIGINT,
            killed: false,
        }
        .record(open, 7);
        assert_eq!(
            stopped.reason.as_deref(),
            Some("stopped at boot: left running by a previous zurg (sent SIGINT)")
        );
        assert_eq!(stopped.exit, None);
        let lost = Settled::Lost.record(open, 7);
        assert_eq!(lost.reason.as_deref(), Some("lost: not running at boot"));
        assert_eq!(lost.exit, None);
        // The fold that boot runs takes it as the start's end.
        let mut starts = OpenStarts::default();
        starts.record(&start("web", A));
        starts.record(&lost);
        assert!(starts.is_empty());
    }

    #[test]
    fn zurgs_variables_are_read_from_an_environment_block() {
        let block = b"PATH=/bin\0ZURG_SERVICE=web\0ZURG_GPIDX=1\0ZURG_GPID=10.0.0.7:0:5:42\0XZURG_STATE_ID=9:9\0ZURG_STATE_ID=2049:131\0";
        assert_eq!(
            zurg_env(block),
            ZurgEnv {
                gpid: Some("10.0.0.7:0:5:42".into()),
                state_id: Some("2049:131".into()),
                service: Some("web".into()),
            }
        );
        // A program that cleared its environment, or a kernel thread.
        assert_eq!(zurg_env(b""), ZurgEnv::default());
        assert_eq!(zurg_env(b"HOME=/\0"), ZurgEnv::default());
        let twice = zurg_env(b"ZURG_STATE_ID=1:2\0ZURG_STATE_ID=3:4\0");
        assert_eq!(twice.state_id.as_deref(), Some("1:2"));
    }

    #[test]
    fn only_a_lock_file_left_with_a_pid_sends_boot_looking() {
        // A clean shutdown emptied it; a new one is empty.
        assert!(clean_before(""));
        assert!(clean_before("\n"));
        // A killed zurg's pid, as it wrote it.
        assert!(!clean_before("4242\n"));
        let looking = StateMark::new(&state_id(2049, 131), false).unwrap();
        assert_eq!(looking.env.to_bytes(), b"ZURG_STATE_ID=2049:131");
        assert_eq!(looking.look_for.as_deref(), Some("2049:131"));
        let clean = StateMark::new("2049:131", true).unwrap();
        assert_eq!(clean.env, looking.env);
        assert_eq!(clean.look_for, None);
        // Put in a spawn's environment once, however many spawns reuse it.
        let mut env = vec![CString::new("ZURG_SERVICE=web").unwrap()];
        clean.put_in(&mut env);
        clean.put_in(&mut env);
        assert_eq!(env.len(), 2);
        assert_eq!(env[1], clean.env);
    }

    #[test]
    fn stat_fields_are_read_after_the_name() {
        // A name with spaces and parentheses, as a program may choose.
        let line = "123 (a) b (c) S 77 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 4567 1000 100 18446744073709551615";
        assert_eq!(parse_stat(line), Some(('S', 77, 4567)));
        assert_eq!(parse_stat("123 (x) Z 1"), None);
    }
}
