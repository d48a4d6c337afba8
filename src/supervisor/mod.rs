//! `zurg run`: owns every service and executes what their state machines ask.
//!
//! One thread, one loop (`reactor`): signals arrive through the signalfd,
//! each child's exit through its pidfd (and SIGCHLD), deadlines from the
//! timer heap. Every wake-up reaps whatever died (`os::reap`, the only reap
//! path) and matches pids to services; anything else reaped was an orphan.
//! This is the only place that mutates service state. Once the loop runs,
//! errors fail one service or one request and are logged, never fatal.

mod aux;
mod boot_read;
mod cgroups;
mod clock_writer;
mod creds;
mod deps;
mod ending;
mod environ_reader;
pub use ending::Ending;
mod hooks;
mod leftovers;
mod logs;
mod names;
mod output;

/// Why a service's log file could not be opened, asked offline (`zurg check`).
pub use output::sink::problem as log_file_problem;
mod overrides_read;
mod ports;
mod probes;
mod publishing;
pub mod reactor;
mod remote;
mod requests;
mod rolling;
pub mod shim;
mod start_wait;
mod sweep;
pub mod timers;
pub mod upgrade;
mod wait;
pub use wait::DEFAULT_WAIT_MS;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

use mio::Token;
use nix::fcntl::{Flock, FlockArg};

pub use crate::cli::RunOptions;
use crate::control::proto::{EventRecord, ShutdownMode};
use crate::control::server::ControlServer;
use crate::gpid::{Gpid, StartClock};
use crate::journal::Journal;
use crate::journal_writer::JournalWriter;
use crate::os::inotify::Inotify;
use crate::os::notify::{self, Notifier};
use crate::os::pid1;
use crate::os::pidfd::{self, PidFd};
use crate::os::reap::{self, Drained, ExitStatus};
use crate::os::signals::{self, ChildSignals, SignalFd};
use crate::os::spawn::{self, SpawnSpec};
use crate::service::{Action, Event, Exit, Input, Service, State};
use crate::stats::Sample;
use crate::unit::{self, Unit};
use crate::version::{Checksum, FileId, VerifyError};
use reactor::{Reactor, PIDFD_BASE, SIGNAL_TOKEN};
use sweep::Sweep;

/// The inotify fd's token, just below the pidfd range.
const INOTIFY_TOKEN: Token = Token(PIDFD_BASE - 1);
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Service {
        slot: usize,
        generation: u64,
    },
    ShutdownGrace,
    ShutdownGiveUp,
    /// zurg's own `WATCHDOG=1` to its manager, due at `due` (the next is
    /// armed from this deadline, not from when the loop got to it).
    Watchdog {
        due: u64,
    },
    /// A waiting control request reaches its deadline.
    RequestDeadline,
    /// The control server's turn: connections queued for more input, idle
    /// ones to close, or an accept to retry.
    ControlIdle,
    /// Periodic resource sample of a service (`stats_interval_ms`).
    Sample {
        slot: usize,
        generation: u64,
    },
    /// The forwarder's next connect, timeout or heartbeat.
    Publish,
    /// A partial line of a service's output has waited for its newline.
    OutputFlush,
    /// A readiness probe, health check or watchdog of a service.
    Probe {
        slot: usize,
        timer: probes::ProbeTimer,
    },
    /// The sweep put off after services' own SIGCHLDs (`sweep`).
    Sweep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Services are being stopped.
    StoppingServices,
    /// Services are down; the remaining descendants got SIGTERM.
    Draining,
    /// SIGKILL sent to what was left.
    Killing,
    /// Some processes outlived SIGKILL; zurg ends without them.
    GaveUp,
}

#[derive(Debug)]
struct Slot {
    service: Service,
    /// What the next spawn runs. Built from the unit for each spawn and
    /// dropped after it, unless the unit's `post_stop` hook or exec probes
    /// start commands with what its process got (`keeps_spec`): kept for
    /// every service it cost ~600 bytes each (the spec and its C strings).
    spec: Option<Box<SpawnSpec>>,
    pidfd: Option<PidFd>,
    /// Its unit file is gone: it is stopping or stopped and takes no requests.
    retired: bool,
    /// GPID of the current (or last) process, without the host address
    /// every slot would repeat (`Slot::gpid` adds it).
    started: Option<crate::gpid::Local>,
    /// inotify watch on the running binary, its inode when started, and
    /// whether a change was reported.
    binary_watch: Option<BinaryWatch>,
    /// The port of the current process (a unit's fixed one, or the one
    /// zurg picked or listens on).
    port: u16,
    /// What few services have (a socket, a checksum, a version, a
    /// sample...), in one box made by the first such value.
    cold: Cold,
    /// Its latest output lines, for `zurg logs`; kept across restarts and
    /// reloads.
    ring: crate::service::ring::Ring,
    /// Env files as last read, and the variables they and `user` add.
    creds: creds::SlotCreds,
    /// Its cgroup, where zurg manages cgroups; kept across restarts and
    /// reloads (boxed: 8 bytes for the services of a zurg that manages
    /// none, rather than 48).
    cgroup: Option<Box<crate::cgroup::tree::ServiceCgroup>>,
    /// The OOM killer struck since the previous exit (read at each exit).
    exit_oom: bool,
}

/// The inotify watch on a running service's binary. The flag lives here,
/// not in the slot: the bool's spare values tag the `Option`, which is 16
/// bytes where an `Option<(i32, u64)>` and a bool took 32 (issue 22).
#[derive(Debug, Clone, Copy)]
struct BinaryWatch {
    wd: i32,
    inode: u64,
    /// A change of the running binary was already reported.
    warned: bool,
}

/// A slot's seldom-set state (see `Slot::cold`): inline, these fields
/// were 84 bytes of every slot.
#[derive(Debug, Default)]
struct ColdState {
    /// The listening socket passed as fd 3 (`socket = true`), kept across
    /// restarts.
    listener: Option<std::net::TcpListener>,
    /// Digest of the binary as last verified, reused while the file is
    /// provably unchanged.
    digest_cache: Option<(FileId, Checksum)>,
    /// The build its unit file names, before any saved upgrade; `None`
    /// while that is the unit's own (`Slot::file_build`), as it is for
    /// most.
    file_build: Option<upgrade::Build>,
    /// The worker is hashing its binary for the spawn under this number;
    /// a result under another number is stale.
    hashing: Option<u64>,
    /// The version of the current (or last) process, which an upgrade or
    /// rollback does not change while it runs.
    running_version: Option<String>,
    /// The latest resource sample of the current process tree.
    last_sample: Option<Sample>,
    /// Generation of this slot's live sample timer (`stats_interval_ms`,
    /// which few units set; 0 while none was armed).
    sample_generation: u64,
}

/// `ColdState`, boxed once something is set in it.
#[derive(Debug, Default)]
struct Cold(Option<Box<ColdState>>);

impl Cold {
    fn get(&self) -> Option<&ColdState> {
        self.0.as_deref()
    }

    /// For a value to store: makes the box.
    fn make(&mut self) -> &mut ColdState {
        self.0.get_or_insert_default()
    }

    /// For a value to clear: no box is made for that.
    fn clear(&mut self, f: impl FnOnce(&mut ColdState)) {
        if let Some(c) = self.0.as_deref_mut() {
            f(c);
        }
    }

    fn listener(&self) -> Option<&std::net::TcpListener> {
        self.get()?.listener.as_ref()
    }

    fn set_digest(&mut self, digest: Option<(FileId, Checksum)>) {
        match digest {
            Some(d) => self.make().digest_cache = Some(d),
            None => self.clear(|c| c.digest_cache = None),
        }
    }
}

impl Slot {
    /// The GPID of its current (or last) process, on the host at `ip`
    /// (`Supervisor::host_ip`, the same for every slot).
    fn gpid(&self, ip: IpAddr) -> Option<Gpid> {
        self.started.map(|local| local.on(ip))
    }

    /// Takes a spec built anew from the unit (reload, upgrade; the unit is
    /// in place): what was derived from the old one goes (env files, passwd
    /// variables), and the service's cgroup, which outlives specs, is put
    /// back in it. A unit that does not keep its spec drops it: the next
    /// spawn builds one.
    fn replace_spec(&mut self, mut spec: SpawnSpec) {
        self.creds = Default::default();
        self.spec = keeps_spec(&self.service.unit).then(|| {
            self.put_cgroup(&mut spec);
            Box::new(spec)
        });
    }

    /// The build its unit file names (see `file_build`).
    fn file_build(&self) -> upgrade::Build {
        match self.cold.get().and_then(|c| c.file_build.as_ref()) {
            Some(build) => build.clone(),
            None => upgrade::Build::of(&self.service.unit),
        }
    }

    fn put_cgroup(&self, spec: &mut SpawnSpec) {
        spec.cgroup_procs = self.cgroup.as_ref().map(|c| c.procs_fd());
        spec.cgroup_dir = self.cgroup.as_ref().map(|c| c.dir_fd());
    }

    /// Builds the spec from the unit when the slot holds none.
    fn ensure_spec(&mut self, start_dir: &Path) -> Result<(), String> {
        if self.spec.is_none() {
            let mut spec = spawn_spec(&self.service.unit, start_dir, self.creds.extra_env())?;
            self.put_cgroup(&mut spec);
            self.spec = Some(Box::new(spec));
        }
        Ok(())
    }
}

/// Whether a slot keeps its spec after a spawn: its `post_stop` hook and
/// its exec probes run with the environment, directory and port of the
/// process they follow, taken from the spec that started it.
fn keeps_spec(unit: &Unit) -> bool {
    unit.rare.post_stop.is_some()
        || matches!(unit.rare.ready, Some(unit::probe::Ready::Exec(_)))
        || unit.rare.health.is_some()
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
    pub errors: Vec<String>,
    /// Saved upgrades that no longer applied and were dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
}

/// Why a reload changed nothing.
fn not_applied(why: String) -> String {
    format!("{why}: reload not applied, the services run as before")
}

/// The answer to a `reload`: its report, or why it was not applied.
pub(super) fn reload_reply(
    id: u64,
    report: Result<ReloadReport, String>,
) -> crate::control::proto::Reply {
    use crate::control::proto::{ErrorCode, Reply};
    match report {
        Ok(report) => Reply::ok(id, report),
        Err(e) => Reply::error(id, ErrorCode::Failed, e),
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The work queue keeps room for this many inputs between turns.
const WORK_ROOM_KEPT: usize = 1024;

/// How long zurg waits for SIGKILLed processes before exiting anyway.
const GIVE_UP_AFTER_KILL_MS: u64 = 5_000;
/// Descriptors kept free beyond one pidfd per service.
const SPARE_FDS: u64 = 256;
/// Descriptors a pidfd never takes, below the open-file limit.
const RESERVED_FDS: u64 = 24;

pub struct Supervisor {
    reactor: Reactor<TimerKey>,
    signals: SignalFd,
    child_signals: ChildSignals,
    slots: Vec<Slot>,
    /// Live (not retired) slots by their unit's name, which the index
    /// reads from the slots instead of keeping a copy (`names`).
    by_name: names::NameIndex,
    /// Services' processes until they are reaped. Slot numbers as `u32`:
    /// a bucket of 8 bytes, not 16 (issue 22; `names::NameIndex::fits`
    /// holds every slot number to that).
    by_pid: HashMap<i32, u32>,
    phase: Phase,
    opts: RunOptions,
    warned_no_pidfd: bool,
    spawner: spawn::Spawner,
    notifier: Option<Notifier>,
    control: Option<ControlServer>,
    /// The helper thread for journal reads and /proc sampling; without it
    /// (it failed to start) that work runs on the loop as before.
    worker: Option<worker::Worker>,
    /// Numbers the binaries handed to the worker for hashing before a spawn.
    hash_generation: u64,
    /// When the ControlIdle timer is armed for, if it is.
    control_idle_at: Option<u64>,
    /// Control requests that wait for services to reach a state.
    waiting: Vec<requests::Waiting>,
    /// The most recent lifecycle events, for `events` without --follow.
    recent: VecDeque<EventRecord>,
    event_seq: u64,
    shutdown_mode: ShutdownMode,
    /// PID 1 of a machine, not of a container: ends with reboot(2).
    machine_init: bool,
    host_ip: IpAddr,
    clock: StartClock,
    /// Start times up to here are covered by the clock file, once the
    /// writer has written the last mark asked for.
    clock_reserved: u64,
    clock_writer: clock_writer::ClockWriter,
    /// Appends to the journal on a thread of its own: a slow or hung disk
    /// delays history, never a restart (`journal_writer.rs`).
    journal: JournalWriter,
    /// The journal as boot read it, until leftovers take it.
    boot_reads: Option<boot_read::BootReads>,
    /// Bumped on every start, so sample timers of old processes are ignored.
    sample_generation: u64,
    /// Builds installed by `upgrade` and `rollback`, kept in the state dir.
    overrides: upgrade::Overrides,
    /// Upgrades watching their new build's start window.
    upgrades: Vec<upgrade::PendingUpgrade>,
    /// Watches the binaries of running services.
    inotify: Option<Inotify>,
    /// How many running services share each inotify watch, and the
    /// inode it watches.
    watch_users: HashMap<i32, (usize, u64)>,
    /// Pushes lifecycle events to a publisher (`--publish`).
    forwarder: Option<crate::publish::forwarder::Forwarder>,
    /// When the Publish timer is armed for, if it is.
    publish_timer_at: Option<u64>,
    /// Requests relayed by the publisher (`--publish-control`).
    remote: remote::Remote,
    /// zurg's own GPID (port 0, its own pid): one per zurg instance.
    own_gpid: String,
    /// Numbers the saves of overrides.json (`ClockWriter::saves` says how
    /// far they got).
    overrides_seq: u64,
    /// overrides.json did not answer at boot: what it holds is unknown, so
    /// saving over it is refused until a reload reads it.
    overrides_unknown: bool,
    /// Reads overrides.json with a deadline, for boot and the worker.
    overrides_reader: overrides_read::Shared,
    /// When boot's read of overrides.json began: its deadline runs from then.
    overrides_begun: std::time::Instant,
    /// Binds notify sockets in STATE/notify off the loop (`probes.rs`).
    notify_dir: probes::NotifyDir,
    /// Slots of removed units, reused once their process is gone.
    retired_slots: Vec<usize>,
    /// Units whose file the last load refused, by name, with the first
    /// error: `status` shows them (and fails) instead of staying silent.
    rejected_units: BTreeMap<String, String>,
    /// The open-file limit: pidfds stop short of it, so that control
    /// connections, the journal and unit files still get descriptors.
    nofile: u64,
    /// A `TimerKey::Sweep` is armed.
    sweep_armed: bool,
    /// The exclusive lock on `STATE/lock`, held for zurg's whole life so a
    /// second zurg cannot share the state directory; emptied at a clean
    /// exit (`mark_clean_exit`).
    state_lock: Option<Flock<std::fs::File>>,
    /// The state directory's id that every service carries, and whether
    /// boot looks for processes carrying it (`leftovers::StateMark`).
    state_mark: Option<leftovers::StateMark>,
    /// The directory zurg was started in: the working directory of services
    /// without `cwd` (zurg itself moves to `/`).
    start_dir: PathBuf,
    /// Output rings' ids and `logs` clients.
    logs: logs::Logs,
    /// Services' stdout and stderr pipes and where their lines go.
    outputs: output::Outputs,
    /// Why `zurg run` ends, set when its shutdown begins: an essential
    /// service's end gives zurg's exit code.
    ending: Ending,
    /// The dependency graph, and which services stop once their
    /// dependants are down.
    deps: deps::Deps,
    /// Readiness probes, health checks and notify sockets.
    probes: probes::Probes,
    hooks: hooks::Hooks,
    /// /etc/passwd and /etc/group as last read, for `user` and `group`.
    accounts: creds::AccountsCache,
    /// The cgroup subtree zurg manages, or why it manages none.
    cgroups: cgroups::Availability,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("services", &self.slots.len())
            .field("phase", &self.phase)
            .finish()
    }
}

/// The C strings of a unit's spawn, with `extra` (passwd and env-file
/// variables) in its environment. Built at load to refuse a unit that has
/// none (a NUL byte), then at each spawn: a few small allocations, against
/// keeping them all for every service between its restarts.
fn spawn_spec(
    unit: &Unit,
    start_dir: &Path,
    extra: &[(String, String)],
) -> Result<SpawnSpec, String> {
    let nul = |what: &str| format!("{}: {what} contains a NUL byte", unit.name);
    let program = CString::new(unit.exec.as_os_str().as_bytes()).map_err(|_| nul("exec"))?;
    // `${SERVICE}` and `${VERSION}` are replaced here, `${PORT}` at each
    // start (prepare_port), when the port is known.
    let mut argv = vec![program.clone()];
    argv.extend(creds::service_args(unit, None)?);
    let mut spec = SpawnSpec::new(program, argv);
    spec.null_stdin = true;
    spec.new_session = true;
    // As PID 1 zurg's death is the container's; anywhere else a killed zurg
    // must not leave its services running (see docs/design.md).
    if !pid1::is_pid1() {
        spec.death_signal = unit.stop_signal;
    }
    // zurg runs in `/`; a service keeps the directory zurg was started in
    // unless its unit says otherwise (a relative `cwd` is taken from there).
    let cwd = match &unit.rare.cwd {
        Some(cwd) => Some(start_dir.join(cwd)),
        None if start_dir != Path::new("/") => Some(start_dir.to_path_buf()),
        None => None,
    };
    if let Some(cwd) = cwd {
        spec.cwd = Some(creds::service_cwd(unit, &cwd, None)?);
    }
    // Added to zurg's own environment at each spawn; ZURG_GPID is added per
    // start (it holds the start time and the child's pid).
    spec.env = creds::service_env(unit, None, extra)?;
    Ok(spec)
}

/// The holder of a flock as /proc/locks shows it to this zurg.
#[derive(Debug, PartialEq, Eq)]
enum LockHolder {
    /// Its pid in this zurg's pid namespace.
    Seen(i32),
    /// Outside this zurg's pid namespace: the kernel leaves its line out
    /// of /proc/locks (older kernels showed pid 0).
    Hidden,
}

/// The holder of the flock known to be held on the file at
/// `major:minor:ino`, from the text of /proc/locks (`1: FLOCK  ADVISORY
/// WRITE 4242 fe:00:5505044 0 EOF`), where the kernel gives its pid in the
/// reader's pid namespace, and leaves out a holder outside it. A waiter's
/// line (`1: -> FLOCK ...`) is not a holder. Pure.
fn flock_holder(locks: &str, major: u64, minor: u64, ino: u64) -> LockHolder {
    let file = format!("{major:02x}:{minor:02x}:{ino}");
    locks
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                [_, "FLOCK", _, _, pid, id, ..] if *id == file => {
                    pid.parse::<i32>().ok().filter(|p| *p > 0)
                }
                _ => None,
            }
        })
        .map_or(LockHolder::Hidden, LockHolder::Seen)
}

/// The state directory as its lock found it.
struct LockedState {
    /// Held for zurg's life.
    lock: Option<Flock<std::fs::File>>,
    /// The directory's id (`leftovers::state_id`), if it could be read.
    id: Option<String>,
    /// The previous zurg on it shut down cleanly (`leftovers::clean_before`);
    /// false when that is not known.
    clean_before: bool,
}

/// Takes the exclusive lock on `STATE/lock` and writes zurg's pid in it,
/// after reading what the previous zurg left there. Another zurg holding it
/// is an error naming that zurg's pid. A state dir that cannot be created
/// or locked at all (read-only) only costs a warning, as the journal and
/// clock files already do.
fn lock_state_dir(state_dir: &Path) -> Result<LockedState, String> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::MetadataExt;
    let mut state = LockedState {
        lock: None,
        id: None,
        clean_before: false,
    };
    if let Err(e) = std::fs::create_dir_all(state_dir) {
        crate::log!(
            "warning: cannot create state directory {}: {e}",
            state_dir.display()
        );
        return Ok(state);
    }
    state.id = std::fs::metadata(state_dir)
        .ok()
        .map(|m| leftovers::state_id(m.dev(), m.ino()));
    let path = state_dir.join("lock");
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => {
            crate::log!(
                "warning: cannot open {}: {e}; another zurg could use this state directory at the same time",
                path.display()
            );
            return Ok(state);
        }
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let mut before = String::new();
            state.clean_before = lock
                .read_to_string(&mut before)
                .is_ok_and(|_| leftovers::clean_before(&before));
            let written = lock
                .set_len(0)
                .and_then(|_| lock.rewind())
                .and_then(|_| writeln!(&mut *lock, "{}", std::process::id()));
            if let Err(e) = written {
                crate::log!(
                    "warning: cannot write zurg's pid to {}: {e}",
                    path.display()
                );
            }
            state.lock = Some(lock);
            Ok(state)
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut written = String::new();
            let _ = file.read_to_string(&mut written);
            // The pid in the file is the holder's own: 1 for a zurg that is
            // PID 1 of a container. The kernel's lock table gives it as this
            // zurg sees it, which is the one a user can `kill`.
            let seen = file.metadata().ok().and_then(|m| {
                use std::os::unix::fs::MetadataExt;
                let locks = std::fs::read_to_string("/proc/locks").ok()?;
                let dev = m.dev();
                Some(flock_holder(
                    &locks,
                    nix::sys::stat::major(dev),
                    nix::sys::stat::minor(dev),
                    m.ino(),
                ))
            });
            // A holder this zurg cannot see (it is PID 1 of a container
            // of its own, say) wrote its own pid: 1, maybe, which here
            // would name this very zurg.
            let holder = match (written.trim(), seen) {
                (own, Some(LockHolder::Seen(pid))) if own == pid.to_string() || own.is_empty() => {
                    format!("pid {pid}")
                }
                (own, Some(LockHolder::Seen(pid))) => {
                    format!("pid {pid}, pid {own} in its own pid namespace")
                }
                ("", Some(LockHolder::Hidden)) => {
                    "in a pid namespace this zurg cannot see into".to_string()
                }
                (own, Some(LockHolder::Hidden)) => {
                    format!("pid {own} in a pid namespace this zurg cannot see into")
                }
                ("", None) => "unknown pid".to_string(),
                (own, None) => format!("pid {own}"),
            };
            Err(format!(
                "state directory {} is in use by another zurg ({holder}, holding {}); stop it or give this one its own --state",
                state_dir.display(),
                path.display()
            ))
        }
        Err((_, e)) => {
            crate::log!(
                "warning: cannot lock {}: {e}; another zurg could use this state directory at the same time",
                path.display()
            );
            Ok(state)
        }
    }
}

/// The state directory's lock, taken after boot gave up waiting for it.
/// Services already started without its id (`ZURG_STATE_ID`).
fn late_lock(lock: Result<LockedState, String>) {
    match lock {
        // Kept for zurg's life, as a lock taken in time is: a later zurg on
        // this state directory is still refused.
        Ok(LockedState {
            lock: Some(lock), ..
        }) => std::mem::forget(lock),
        Ok(_) => {}
        Err(e) => crate::log!("warning: {e}; this zurg runs on all the same"),
    }
}

/// Empties `STATE/lock` once every process of this zurg is gone: the next
/// zurg then knows none was left (`leftovers::clean_before`). On a thread,
/// for at most `CLEAN_MARK_DEADLINE`, as the disk may hang; past it the
/// lock stays held by that thread until zurg exits, and the next boot looks
/// for leftovers, which costs it a scan of /proc and nothing else.
fn mark_clean_exit(lock: Flock<std::fs::File>) -> Option<Flock<std::fs::File>> {
    let emptied = boot_read::within(
        "zurg-lock",
        CLEAN_MARK_DEADLINE,
        move || {
            if let Err(e) = lock.set_len(0) {
                crate::log!("warning: cannot empty the state directory's lock file: {e}; the next zurg looks for leftovers");
            }
            lock
        },
        std::mem::forget,
    );
    if emptied.is_none() {
        crate::log!(
            "warning: the state directory's lock file did not answer within {} ms; the next zurg may look for leftovers",
            CLEAN_MARK_DEADLINE.as_millis()
        );
    }
    emptied
}

/// How long a clean exit waits to empty `STATE/lock`: as long as it waits
/// for the clock file's last mark.
const CLEAN_MARK_DEADLINE: std::time::Duration = clock_writer::FLUSH_DEADLINE;

/// Opens the journal (blocking: on its writer thread), or has it opened at
/// the first record that finds it openable.
fn open_journal(state_dir: &Path, size: u64) -> Journal {
    match Journal::open(state_dir, size) {
        Ok((j, warning)) => {
            if let Some(w) = warning {
                crate::log!("warning: {w}");
            }
            j
        }
        Err(e) => {
            crate::log!(
                "warning: {e}; history is not kept until the journal can be opened (tried again at each event)"
            );
            Journal::unopened(state_dir, size)
        }
    }
}

/// How far ahead of the newest start time the clock file is written, so it
/// is rewritten at most once per second of starts.
const CLOCK_RESERVE_US: u64 = 1_000_000;

fn exit_of(status: ExitStatus) -> Exit {
    match status {
        ExitStatus::Code(c) => Exit::Code(c),
        ExitStatus::Signal { signo, .. } => Exit::Signal(signo),
    }
}

impl Supervisor {
    /// Set-up phase: may fail, and the caller reports it. Nothing is started yet.
    pub fn new(mut opts: RunOptions) -> Result<Supervisor, String> {
        // First: the set-up below can take seconds (a hung state disk holds
        // the lock for `boot_read::DEADLINE`), and a SIGTERM meanwhile must
        // be the loop's first event, a clean shutdown, not the default
        // action (or, as a container's PID 1, dropped).
        let (signals, child_signals) =
            signals::take_over().map_err(|e| format!("cannot take over signals: {e}"))?;
        let start_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        // zurg moves to `/` once set up, so that it does not pin the mount
        // it was started from: every path it keeps must be absolute first.
        for path in [&mut opts.units_dir, &mut opts.socket, &mut opts.state_dir]
            .into_iter()
            .chain(opts.publish_token_file.as_mut())
            .chain(opts.cgroup.as_mut())
        {
            *path = start_dir.join(&*path);
        }
        if let Some(why) = unit::load::dir_problem(&opts.units_dir).filter(|_| !pid1::is_pid1()) {
            return Err(format!(
                "units directory {} {why}",
                opts.units_dir.display()
            ));
        }
        let machine_init = pid1::is_machine_init();
        if machine_init {
            // A bare kernel gives init nothing: no /proc, no /dev, maybe no
            // console. Everything after this expects them.
            pid1::early_mounts();
            pid1::attach_console();
            pid1::set_hostname_from_etc();
            pid1::disable_ctrl_alt_del();
            crate::log!("init of this machine: mounted /proc /sys /sys/fs/cgroup /dev /run /tmp");
        }
        // Before the socket is bound: a second zurg on the same state dir
        // must not take over the first one's socket either. Before the
        // cgroup set-up too: a refused zurg must neither move itself into
        // the first one's subtree nor log a cgroups line above its refusal.
        // On a thread with a deadline: creating and opening the lock file
        // hang with the state directory's disk (boot_read.rs).
        let lock_dir = opts.state_dir.clone();
        let (state_lock, state_mark) = match boot_read::within_deadline(
            "zurg-lock",
            move || lock_state_dir(&lock_dir),
            late_lock,
        ) {
            Some(locked) => {
                let locked = locked?;
                // As PID 1 zurg's death ends every process it started: its
                // services carry the id, but nothing is looked for. Nor is
                // it without the lock: only the lock says that no live
                // zurg gives out this id.
                let clean = locked.clean_before || pid1::is_pid1() || locked.lock.is_none();
                let mark = locked
                    .id
                    .as_deref()
                    .and_then(|id| leftovers::StateMark::new(id, clean));
                (locked.lock, mark)
            }
            None => {
                crate::log!(
                    "warning: {} did not answer within {} s; services start without the state directory's lock, so another zurg could use it at the same time",
                    opts.state_dir.join("lock").display(),
                    boot_read::DEADLINE.as_secs()
                );
                (None, None)
            }
        };
        // Before any service starts: zurg moves itself into a leaf first.
        let cgroups = cgroups::set_up(opts.cgroup.as_deref());
        if !pid1::is_pid1() {
            if let Err(e) = pid1::become_subreaper() {
                crate::log!(
                    "warning: cannot become a child subreaper, orphans will not be reaped: {e}"
                );
            }
        }
        let reactor =
            Reactor::new(&signals).map_err(|e| format!("cannot create the event loop: {e}"))?;
        // A missing group only narrows who may read: not worth refusing to
        // start (as PID 1, refusing is a kernel panic or an idle machine).
        let readers_gid = match &opts.readers {
            None => None,
            Some(g) => match crate::os::users::group_id(g) {
                Ok(gid) => Some(gid),
                Err(e) => {
                    crate::log!(
                        "warning: --readers {g}: {e}; only root and zurg's own user may use the control socket"
                    );
                    None
                }
            },
        };
        let worker = match worker::Worker::start(reactor.registry()) {
            Ok(w) => Some(w),
            Err(e) => {
                crate::log!("{e}; history and stats will run on the event loop");
                None
            }
        };
        let control = match ControlServer::bind(&opts.socket, reactor.registry(), readers_gid) {
            Ok(c) => Some(c),
            Err(e) if pid1::is_pid1() => {
                crate::log!("{e}; running without a control socket");
                None
            }
            Err(e) => return Err(e.to_string()),
        };
        let host_ip = opts.host_ip.unwrap_or_else(crate::os::net::host_ip);
        // The boot reads and the journal's open run on its thread: a hung
        // disk holds them, not the loop (`boot_read.rs`).
        // One wall clock for the whole boot: the journal's start times are
        // believed against it on the reader's thread, and the first GPID
        // is issued from it.
        let now_us = crate::os::wall_clock_us();
        let (reader, mut boot_reads) = boot_read::start(&opts.state_dir, now_us);
        let (dir, size) = (opts.state_dir.clone(), opts.journal_size);
        let journal = JournalWriter::start_with(
            move || {
                reader.run();
                open_journal(&dir, size)
            },
            "zurg-journal",
            "journal",
        );
        // Begun now, its 3 s run beside the journal's rather than after.
        let overrides_reader = overrides_read::shared(upgrade::overrides_file(&opts.state_dir));
        overrides_read::begin_shared(&overrides_reader);
        let overrides_begun = std::time::Instant::now();
        let clock_reserved = boot_reads.clock_floor();
        let clock_writer = clock_writer::ClockWriter::start(
            boot_read::clock_file(&opts.state_dir),
            upgrade::overrides_file(&opts.state_dir),
        );
        let mut clock = StartClock::after(clock_reserved);
        let own_gpid = Gpid {
            ip: host_ip,
            port: 0,
            start_us: clock.issue(now_us).map_err(|e| e.to_string())?,
            pid: std::process::id(),
        };
        let identity = crate::publish::forwarder::Identity {
            ip: host_ip.to_string(),
            zurg: own_gpid.to_string(),
            boot: publishing::boot_id(),
            hostname: publishing::hostname(),
        };
        let forwarder = match publishing::make_forwarder(&opts, identity) {
            Ok(f) => f,
            Err(e) if pid1::is_pid1() => {
                crate::log!("{e}; running without publishing");
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(f) = &forwarder {
            crate::log!("publishing to {} as {own_gpid}", f.status().publisher);
        }
        let inotify =
            match Inotify::new().and_then(|i| reactor.watch_fd(&i, INOTIFY_TOKEN).map(|_| i)) {
                Ok(i) => Some(i),
                Err(e) => {
                    crate::log!("warning: cannot watch binaries for changes: {e}");
                    None
                }
            };
        let notifier = match Notifier::from_env() {
            Some(Ok(n)) => Some(n),
            Some(Err(e)) => {
                crate::log!("warning: NOTIFY_SOCKET is set but unusable: {e}");
                None
            }
            None => None,
        };
        if let Err(e) = nix::unistd::chdir("/") {
            crate::log!("warning: cannot change directory to /: {e}");
        }
        let publish_control = opts.publish_control.clone();
        Ok(Supervisor {
            reactor,
            signals,
            child_signals,
            slots: Vec::new(),
            by_name: names::NameIndex::default(),
            by_pid: HashMap::new(),
            phase: Phase::Running,
            opts,
            warned_no_pidfd: false,
            spawner: spawn::Spawner::new(),
            notifier,
            control,
            worker,
            hash_generation: 0,
            control_idle_at: None,
            waiting: Vec::new(),
            recent: VecDeque::new(),
            event_seq: 0,
            shutdown_mode: ShutdownMode::Default,
            machine_init,
            host_ip,
            clock,
            clock_reserved,
            clock_writer,
            journal,
            boot_reads: Some(boot_reads),
            sample_generation: 0,
            overrides: upgrade::Overrides::default(),
            upgrades: Vec::new(),
            inotify,
            watch_users: HashMap::new(),
            forwarder,
            publish_timer_at: None,
            remote: remote::Remote::new(publish_control),
            own_gpid: own_gpid.to_string(),
            state_lock,
            state_mark,
            start_dir,
            nofile: u64::MAX,
            sweep_armed: false,
            retired_slots: Vec::new(),
            rejected_units: BTreeMap::new(),
            overrides_seq: 0,
            overrides_unknown: false,
            overrides_reader,
            overrides_begun,
            notify_dir: probes::NotifyDir::default(),
            logs: logs::Logs::default(),
            outputs: output::Outputs::default(),
            ending: Ending::Asked,
            deps: deps::Deps::default(),
            probes: probes::Probes::default(),
            hooks: hooks::Hooks::default(),
            accounts: creds::AccountsCache::default(),
            cgroups,
        })
    }

    /// Reads the units directory and makes the running set match it: new
    /// units start, removed ones stop, changed ones restart, unchanged ones
    /// are not touched. A unit file that fails to parse leaves its service
    /// exactly as it was.
    pub fn reload(&mut self, work: &mut VecDeque<(usize, Input)>) -> Result<ReloadReport, String> {
        let loaded = unit::load_dir(&self.opts.units_dir);
        let read = self
            .overrides_wanted()
            .then(|| overrides_read::read_shared(&self.overrides_reader, overrides_read::DEADLINE));
        self.take_overrides(read, self.overrides_seq)
            .map_err(not_applied)?;
        Ok(self.apply_loaded(loaded, work))
    }

    /// The first load, at boot: as `reload`, but an overrides.json that
    /// does not answer does not keep the services from starting (PID 1
    /// must not wait on a dead disk). It says so, and upgrades stay
    /// refused until a reload reads the file.
    fn boot_load(&mut self, work: &mut VecDeque<(usize, Input)>) {
        let loaded = unit::load_dir(&self.opts.units_dir);
        let left = overrides_read::DEADLINE.saturating_sub(self.overrides_begun.elapsed());
        let read = overrides_read::read_shared(&self.overrides_reader, left);
        if let Err(e) = self.take_overrides(Some(read), self.overrides_seq) {
            self.overrides_unknown = true;
            crate::log!("warning: {e}; services start on their unit files' builds, and the upgrades saved there are not applied until a reload reads it");
        }
        self.apply_loaded(loaded, work);
    }

    /// Whether a load should read overrides.json: not while a save of the
    /// overrides in memory is not on disk (the file lacks it).
    fn overrides_wanted(&self) -> bool {
        self.overrides_unknown || self.saved_note().is_none()
    }

    /// Takes what a read of overrides.json gave (`None`: not read, keep the
    /// ones in memory). A read begun before a save since (`seq` is older)
    /// is older than memory and is dropped. A read that timed out is an
    /// error: a load must not apply the unit files' builds over upgraded
    /// ones for want of the file.
    fn take_overrides(
        &mut self,
        read: Option<overrides_read::Outcome>,
        seq: u64,
    ) -> Result<(), String> {
        let path = upgrade::overrides_file(&self.opts.state_dir);
        match read {
            None => Ok(()),
            Some(overrides_read::Outcome::TimedOut) => Err(format!(
                "{} unreadable: it did not answer within {} s",
                path.display(),
                overrides_read::DEADLINE.as_secs()
            )),
            Some(overrides_read::Outcome::Read(_)) if seq != self.overrides_seq => Ok(()),
            Some(overrides_read::Outcome::Read(result)) => {
                self.overrides = upgrade::Overrides::from_read(&path, result);
                self.overrides_unknown = false;
                Ok(())
            }
        }
    }

    /// A reload once running: the files are read and parsed on the worker
    /// (thousands of large unit files take long), and `apply_loaded` runs
    /// when it answers; `reply_to` gets the report then. Without a worker,
    /// all of it happens now.
    fn reload_later(
        &mut self,
        reply_to: Option<(crate::control::server::ConnId, u64)>,
        work: &mut VecDeque<(usize, Input)>,
    ) {
        if let Some(w) = &self.worker {
            let job = worker::Job::LoadUnits {
                dir: self.opts.units_dir.clone(),
                reply_to,
                overrides: self
                    .overrides_wanted()
                    .then(|| std::sync::Arc::clone(&self.overrides_reader)),
                overrides_seq: self.overrides_seq,
            };
            if w.submit(job) {
                return;
            }
        }
        let report = self.reload(work);
        self.process(work);
        if let Some((conn, id)) = reply_to {
            self.reply(conn, &reload_reply(id, report));
        } else if let Err(e) = report {
            crate::log!("warning: {e}");
        }
    }

    /// A unit this load refuses: logged, in the reload's report and in
    /// `status` (the unit loaded before, if any, runs on), and kept from
    /// being treated as removed.
    fn reject_unit(
        &mut self,
        name: &str,
        error: String,
        report: &mut ReloadReport,
        broken: &mut HashSet<String>,
    ) {
        crate::log!("{error}");
        self.rejected_units
            .entry(name.to_string())
            .or_insert_with(|| error.clone());
        report.errors.push(error);
        broken.insert(name.to_string());
    }

    /// Makes the running set match `loaded` (see `reload`).
    fn apply_loaded(
        &mut self,
        loaded: unit::LoadReport,
        work: &mut VecDeque<(usize, Input)>,
    ) -> ReloadReport {
        let mut report = ReloadReport::default();
        // A directory that could not be read removes nothing.
        let loaded_dir_failed = loaded.dir_failed;
        let mut broken: HashSet<String> = HashSet::new();
        self.rejected_units.clear();
        for err in &loaded.errors {
            match err.path.file_stem() {
                Some(stem) => {
                    let name = stem.to_string_lossy();
                    self.reject_unit(&name, err.to_string(), &mut report, &mut broken);
                }
                None => {
                    crate::log!("{err}");
                    report.errors.push(err.to_string());
                }
            }
        }
        // Which slots' units this load has, by slot, and the slots it added:
        // names are copied only after the loop, so the copies that the
        // report frees do not leave holes among the names kept (a third of
        // the heap at 10,000 services was such holes).
        let mut seen: Vec<bool> = Vec::new();
        let mark = |seen: &mut Vec<bool>, slot: usize| {
            if seen.len() <= slot {
                seen.resize(slot.saturating_add(1), false);
            }
            if let Some(s) = seen.get_mut(slot) {
                *s = true;
            }
        };
        let mut added: Vec<usize> = Vec::new();
        // Slots whose output is set up once the open-file limit is known.
        let mut reconfigure = Vec::new();
        // Room for exactly the new units: a slot is about 1.8 KB, and
        // growing by doubling would copy the whole vector at each step and
        // reserve 16,384 slots' worth of address space for 10,000.
        let new_units = loaded
            .units
            .iter()
            .filter(|u| !self.by_name.contains(self.slots.as_slice(), &u.name))
            .count();
        self.slots.reserve_exact(new_units);
        for mut unit in loaded.units {
            if let Some(slot) = self.by_name.get(self.slots.as_slice(), &unit.name) {
                mark(&mut seen, slot);
            }
            let file_build = upgrade::Build::of(&unit);
            if let Some(line) = self.apply_override(&mut unit) {
                report.dropped.push(line);
            }
            let file_build = (upgrade::Build::of(&unit) != file_build).then_some(file_build);
            if self.opts.strict && (unit.rare.version.is_none() || unit.rare.checksum.is_none()) {
                let e = format!(
                    "{}: strict mode: a unit needs `version` and `md5` or `sha256`",
                    self.opts
                        .units_dir
                        .join(format!("{}.toml", unit.name))
                        .display()
                );
                self.reject_unit(&unit.name, e, &mut report, &mut broken);
                continue;
            }
            let spec = match spawn_spec(&unit, &self.start_dir, &[]) {
                Ok(spec) => spec,
                Err(e) => {
                    self.reject_unit(&unit.name, e, &mut report, &mut broken);
                    continue;
                }
            };
            let unit_cgroup = match self.unit_cgroup(&unit) {
                Ok(c) => c,
                Err(e) => {
                    self.reject_unit(&unit.name, e, &mut report, &mut broken);
                    continue;
                }
            };
            match self.by_name.get(self.slots.as_slice(), &unit.name) {
                None => {
                    let reused = self.take_reclaimable_slot();
                    let slot = reused.unwrap_or(self.slots.len());
                    // Only a new slot can be out of the index's range: a
                    // reused one is below it.
                    if let Err(e) = names::NameIndex::fits(slot) {
                        let e = format!("{}: {e}", unit.name);
                        self.reject_unit(&unit.name, e, &mut report, &mut broken);
                        continue;
                    }
                    mark(&mut seen, slot);
                    added.push(slot);
                    let ring = self.logs.new_ring(unit.rare.log_ring_bytes);
                    let service = match reused.and_then(|r| self.slots.get(r)) {
                        Some(old) => Service::succeeding(unit, &old.service),
                        None => Service::new(unit),
                    };
                    let cgroup = match unit_cgroup {
                        cgroups::UnitCgroup::Fresh(cg) => Some(Box::new(cg)),
                        cgroups::UnitCgroup::Kept | cgroups::UnitCgroup::None => None,
                    };
                    let mut new_slot = Slot {
                        service,
                        spec: None,
                        pidfd: None,
                        retired: false,
                        started: None,
                        binary_watch: None,
                        port: 0,
                        cold: Cold::default(),
                        ring,
                        creds: Default::default(),
                        cgroup,
                        exit_oom: false,
                    };
                    new_slot.replace_spec(spec);
                    if let Some(b) = file_build {
                        new_slot.cold.make().file_build = Some(b);
                    }
                    match self.slots.get_mut(slot) {
                        Some(old) => {
                            // The removed unit's cgroup, empty by now.
                            if let Some(cg) = &old.cgroup {
                                cg.remove();
                            }
                            *old = new_slot;
                        }
                        None => self.slots.push(new_slot),
                    }
                    // Indexed once the slot holds the unit: the index finds
                    // the name there (`names`).
                    if let Err(e) = self.by_name.insert(self.slots.as_slice(), slot) {
                        crate::log!("{e}");
                    }
                    reconfigure.push(slot);
                    work.push_back((slot, Input::Start));
                }
                Some(slot) => {
                    let Some(s) = self.slots.get_mut(slot) else {
                        continue;
                    };
                    match file_build {
                        Some(b) => s.cold.make().file_build = Some(b),
                        None => s.cold.clear(|c| c.file_build = None),
                    }
                    if s.service.unit == unit {
                        report.unchanged.push(unit.name.to_string());
                        continue;
                    }
                    if deps::only_dependencies_differ(&s.service.unit, &unit) {
                        crate::log!(
                            "[{}] depends_on is now [{}]; it applies from its next start",
                            unit.name,
                            unit.depends_on.join(", ")
                        );
                        s.service.unit.depends_on = unit.depends_on;
                        report.unchanged.push(s.service.unit.name.to_string());
                        continue;
                    }
                    report.changed.push(unit.name.to_string());
                    if ports::port_settings_changed(&s.service.unit, &unit) {
                        // The running process keeps its own copy.
                        s.cold.clear(|c| c.listener = None);
                    }
                    s.service.unit = unit;
                    if let cgroups::UnitCgroup::Fresh(cg) = unit_cgroup {
                        s.cgroup = Some(Box::new(cg));
                    }
                    s.replace_spec(spec);
                    match s.service.state {
                        State::Down => {}
                        State::Exited => work.push_back((slot, Input::Start)),
                        _ => work.push_back((slot, Input::Restart)),
                    }
                    reconfigure.push(slot);
                }
            }
        }
        report.added = added
            .iter()
            .filter_map(|&slot| self.slots.get(slot))
            .map(|s| s.service.name().to_string())
            .collect();
        let gone: Vec<usize> = self
            .by_name
            .slots()
            .filter(|&slot| {
                let Some(s) = self.slots.get(slot) else {
                    return false;
                };
                let name = s.service.name();
                // An instance's file is `web.toml` for `web@2`.
                let file = match s.service.unit.instance {
                    Some(_) => name.rsplit_once('@').map_or(name, |(f, _)| f),
                    None => name,
                };
                !loaded_dir_failed
                    && !seen.get(slot).copied().unwrap_or(false)
                    && !broken.contains(name)
                    && !broken.contains(file)
            })
            .collect();
        for slot in gone {
            let name = self.slot_name(slot).to_string();
            self.by_name.remove(self.slots.as_slice(), &name);
            if let Some(s) = self.slots.get_mut(slot) {
                s.retired = true;
                s.cold.clear(|c| c.listener = None);
                self.retired_slots.push(slot);
            }
            work.push_back((slot, Input::Stop));
            report.removed.push(name);
        }
        // A reload is also logrotate's way to have the files reopened.
        self.reopen_output_files();
        // Two pipes (four descriptors) per service on top of its pidfd.
        let needed = u64::try_from(self.slots.len())
            .unwrap_or(u64::MAX)
            .saturating_mul(5)
            .saturating_add(SPARE_FDS);
        match pid1::ensure_nofile(needed) {
            Ok(limit) => {
                if limit < needed && self.nofile >= needed {
                    crate::log!(
                        "warning: the open-file limit is {limit}, below the {needed} zurg wants; some services run without a pidfd (their exits are caught by SIGCHLD)"
                    );
                }
                self.nofile = limit;
            }
            Err(e) => crate::log!("warning: cannot raise the open-file limit to {needed}: {e}"),
        }
        for slot in reconfigure {
            self.configure_output(slot);
        }
        self.rebuild_dependencies(work);
        crate::log!(
            "loaded {} from {}: {} added, {} changed, {} removed, {} unchanged, {} rejected",
            plural(self.by_name.len(), "service"),
            self.opts.units_dir.display(),
            report.added.len(),
            report.changed.len(),
            report.removed.len(),
            report.unchanged.len(),
            broken.len()
        );
        report
    }

    /// A retired slot whose process is gone and that no request or upgrade
    /// still watches, taken for reuse: reloads that rename units would
    /// otherwise grow the table (and the pidfd tokens) without bound.
    fn take_reclaimable_slot(&mut self) -> Option<usize> {
        let at = self.retired_slots.iter().position(|&slot| {
            self.slots
                .get(slot)
                .is_some_and(|s| s.retired && s.service.state.is_down() && s.pidfd.is_none())
                && !self.hooks.runs(slot)
                && !self.waiting.iter().any(|w| w.involves(slot))
                && !self.upgrades.iter().any(|u| u.involves(slot))
        })?;
        Some(self.retired_slots.swap_remove(at))
    }

    /// Runs until shutdown completes; returns why it ended, which gives
    /// zurg's exit code.
    pub fn run(mut self) -> Ending {
        let mut work: VecDeque<(usize, Input)> = VecDeque::new();
        // Log lines of a turn go to the writer in batches (`log::Held`),
        // and so do journal records: boot is one turn that starts every
        // service, and a journal thread woken per start record took a core
        // from the spawns (a context switch per service, twice zurg's own
        // involuntary switches at 10,000; docs/performance.md).
        let held = crate::log::hold();
        self.journal.defer();
        self.boot_load(&mut work);
        self.stop_leftovers();
        self.process(&mut work);
        self.journal.announce();
        drop(held);
        // An essential service that could not even start has begun the
        // shutdown already, and nothing may come to wake the loop for it.
        if let Some(ending) = self.advance_shutdown(&mut work) {
            return ending;
        }
        // The load queued an input per service (~80 bytes each at 10,000).
        work.shrink_to_fit();
        // Parsing thousands of unit files leaves the heap full of freed
        // holes; give them back so zurg's footprint is what it keeps.
        crate::os::release_free_memory();
        // The same for the code that only loading ran (see os::text).
        if let Err(e) = crate::os::text::drop_mapped_text() {
            crate::log!("could not unmap start-up code ({e}); zurg keeps running with it mapped");
        }
        self.notify(&format!(
            "READY=1\nMAINPID={}\n{}",
            std::process::id(),
            self.status_line()
        ));
        if let Some(ms) = self.notifier.as_ref().and_then(|n| n.watchdog_interval_ms) {
            let due = self.reactor.now_ms().saturating_add(ms);
            self.reactor.timers.arm(due, TimerKey::Watchdog { due });
        }

        // Connects to the publisher on the first pass.
        self.arm_publish_timer();
        let mut tokens = Vec::new();
        // Senders of this wake-up's SIGCHLDs, and services reaped in it
        // through their pidfd or by the pid a SIGCHLD named (see `sweep`).
        let mut sigchld_from: Vec<u32> = Vec::new();
        let mut reaped: Vec<i32> = Vec::new();
        loop {
            if let Err(e) = self.reactor.wait(&mut tokens) {
                crate::log!("event loop error: {e}");
                continue;
            }
            let _held = crate::log::hold();
            self.journal.defer();
            sigchld_from.clear();
            reaped.clear();
            for token in std::mem::take(&mut tokens) {
                if hooks::of_token(token).is_some() {
                    self.on_hook(token, &mut work);
                } else if probes::of_token(token).is_some() {
                    self.on_probe(token, &mut work);
                } else if token == SIGNAL_TOKEN {
                    for sig in self.signals.drain() {
                        if sig.signo == libc::SIGCHLD {
                            sigchld_from.push(sig.from_pid);
                            reaped.extend(self.reap_named(sig.from_pid, &mut work));
                        }
                        self.on_signal(sig.signo, &mut work);
                    }
                } else if output::of_token(token).is_some() {
                    self.on_output(token);
                } else if let Some(slot) = token.0.checked_sub(PIDFD_BASE) {
                    reaped.extend(self.reap_service(slot, &mut work));
                } else if ControlServer::owns(token) {
                    self.on_control(token, &mut work);
                } else if token == INOTIFY_TOKEN {
                    self.on_binary_changes();
                } else if token == publishing::FORWARD_TOKEN {
                    self.on_forwarder_ready(&mut work);
                } else if token == worker::WORKER_TOKEN {
                    self.on_worker(&mut work);
                }
            }
            // Restart what died before the sweep below: with many children
            // the sweep's scan of the child list is the slow part, and after
            // a service's own SIGCHLD it is put off (`sweep`).
            self.process(&mut work);
            let direct = |pid| reaped.contains(&pid) || self.reaped_by_pidfd(pid);
            match sweep::after_sigchld(&sigchld_from, direct) {
                Sweep::None => {}
                Sweep::Now => {
                    self.reap(&mut work);
                }
                Sweep::Deferred => {
                    if !self.sweep_armed {
                        self.sweep_armed = true;
                        let at = self.reactor.now_ms().saturating_add(sweep::DEFERRED_MS);
                        self.reactor.timers.arm(at, TimerKey::Sweep);
                    }
                }
            }
            let now = self.reactor.now_ms();
            while let Some(key) = self.reactor.timers.pop_due(now) {
                self.on_timer(key, &mut work);
            }
            self.process(&mut work);
            // After a burst (a reload or stop of thousands) the queue's
            // room is given back rather than kept for the next one.
            if work.capacity() > WORK_ROOM_KEPT && work.is_empty() {
                work.shrink_to_fit();
            }
            // Output last: what this turn's events started goes first.
            self.output_turn();
            self.reactor.poll_now = self.outputs.busy();
            self.settle_waiting();
            self.settle_upgrades(&mut work);
            self.arm_control_idle();
            self.arm_publish_timer();
            self.journal.announce();
            if let Some(code) = self.advance_shutdown(&mut work) {
                return code;
            }
        }
    }

    fn on_signal(&mut self, signo: i32, work: &mut VecDeque<(usize, Input)>) {
        match signo {
            libc::SIGCHLD => {}
            libc::SIGTERM | libc::SIGINT | libc::SIGPWR | libc::SIGUSR2
                if signo != libc::SIGUSR2 || self.machine_init =>
            {
                if self.phase == Phase::Running {
                    if self.machine_init {
                        // The sysvinit conventions: INT is ctrl-alt-del.
                        self.shutdown_mode = if signo == libc::SIGINT {
                            ShutdownMode::Reboot
                        } else {
                            ShutdownMode::Poweroff
                        };
                    }
                    crate::log!(
                        "received {}: stopping all services",
                        crate::sig::name(signo)
                    );
                    self.begin_shutdown(Ending::Asked, work);
                }
            }
            libc::SIGUSR1 => {
                crate::log!("received SIGUSR1: reopening services' log files");
                self.reopen_output_files();
            }
            libc::SIGHUP if self.phase == Phase::Running => {
                crate::log!("received SIGHUP: reloading units");
                self.reload_later(None, work);
            }
            // Job-control and terminal noise (timeout(1) sends CONT after
            // INT, terminals send WINCH) is not worth a log line.
            libc::SIGCONT | libc::SIGWINCH | libc::SIGURG => {}
            other => crate::log!("received {}: ignored", crate::sig::name(other)),
        }
    }

    fn begin_shutdown(&mut self, ending: Ending, work: &mut VecDeque<(usize, Input)>) {
        if self.phase == Phase::Running {
            self.ending = ending;
        }
        self.fail_waiting_for_shutdown();
        self.phase = Phase::StoppingServices;
        self.notify("STOPPING=1\nSTATUS=stopping all services");
        // Dependants first: each service once its dependants are down.
        self.stop_all_in_order(work);
        self.process(work);
    }

    /// Moves shutdown forward when its current phase is complete; returns
    /// why zurg ends once nothing is left.
    fn advance_shutdown(&mut self, work: &mut VecDeque<(usize, Input)>) -> Option<Ending> {
        match self.phase {
            Phase::Running => None,
            Phase::StoppingServices => {
                if self.slots.iter().any(|s| !s.service.state.is_down()) {
                    return None;
                }
                self.phase = Phase::Draining;
                if self.reap(work) == Drained::NoChildren {
                    return Some(self.finish());
                }
                let n = pid1::signal_descendants(libc::SIGTERM);
                pid1::signal_descendants(libc::SIGCONT);
                crate::log!("all services stopped; sent SIGTERM to {n} remaining process(es)");
                let at = self.reactor.now_ms().saturating_add(self.opts.grace_ms);
                self.reactor.timers.arm(at, TimerKey::ShutdownGrace);
                None
            }
            Phase::GaveUp => Some(self.finish()),
            Phase::Draining | Phase::Killing => {
                if self.reap(work) == Drained::NoChildren {
                    Some(self.finish())
                } else {
                    None
                }
            }
        }
    }

    fn notify(&self, msg: &str) {
        if let Some(n) = &self.notifier {
            if let Err(e) = n.send(msg) {
                crate::log!("warning: cannot notify the service manager: {e}");
            }
        }
    }

    /// `STATUS=` for the service manager: counts by state.
    fn status_line(&self) -> String {
        let live = self.slots.iter().filter(|s| !s.retired);
        let (mut running, mut down) = (0usize, 0usize);
        for s in live {
            if s.service.state.is_down() {
                down += 1;
            } else {
                running += 1;
            }
        }
        format!("STATUS={running} running, {down} not running")
    }

    fn finish(&mut self) -> Ending {
        // Every process this zurg started is gone, unless it gave up on
        // some: then the next zurg must look for them.
        if self.phase != Phase::GaveUp && !pid1::is_pid1() {
            self.state_lock = self.state_lock.take().and_then(mark_clean_exit);
        }
        self.remove_cgroups();
        self.clock_writer.flush(self.overrides_seq);
        // The exits of this shutdown are the last records of this life.
        self.journal.flush(crate::journal_writer::FLUSH_DEADLINE);
        self.drain_output();
        self.end_logs();
        self.announce_shutdown();
        self.farewell_publisher();
        if self.machine_init {
            let action = match self.shutdown_mode {
                ShutdownMode::Reboot => pid1::PowerAction::Reboot,
                ShutdownMode::Default | ShutdownMode::Poweroff => pid1::PowerAction::PowerOff,
            };
            crate::log!("shutdown complete; {action} (init of this machine)");
            crate::log::flush(crate::log::FLUSH_DEADLINE);
            pid1::power_down(action);
        }
        // Never reboot(2) here: without CAP_SYS_BOOT it fails, and where it
        // is allowed in a pid namespace it kills PID 1 with SIGINT (130).
        let asked = match self.shutdown_mode {
            ShutdownMode::Default => String::new(),
            mode => format!(" ({mode} asked, which only a machine's init does)"),
        };
        let code = self.ending.exit_code();
        if pid1::is_pid1() {
            crate::log!("shutdown complete; PID 1 of a container: exiting with {code}{asked}");
        } else {
            crate::log!("shutdown complete; exiting with {code}{asked}");
        }
        std::mem::replace(&mut self.ending, Ending::Asked)
    }

    fn on_timer(&mut self, key: TimerKey, work: &mut VecDeque<(usize, Input)>) {
        match key {
            TimerKey::RequestDeadline => self.settle_waiting(),
            TimerKey::Sweep => {
                self.sweep_armed = false;
                self.reap(work);
            }
            TimerKey::Publish => self.on_publish_timer(),
            TimerKey::OutputFlush => self.on_output_flush(),
            TimerKey::Probe { slot, timer } => self.on_probe_timer(slot, timer, work),
            TimerKey::Sample { slot, generation } => self.periodic_sample(slot, generation),
            TimerKey::ControlIdle => {
                self.control_idle_at = None;
                self.on_control_turn(work);
            }
            TimerKey::Watchdog { due } => {
                // The only periodic wake-up zurg has, and only when a
                // watchdog was asked for.
                self.notify(&format!("WATCHDOG=1\n{}", self.status_line()));
                if let Some(ms) = self.notifier.as_ref().and_then(|n| n.watchdog_interval_ms) {
                    let next = notify::next_watchdog_ping(due, self.reactor.now_ms(), ms);
                    self.reactor
                        .timers
                        .arm(next, TimerKey::Watchdog { due: next });
                }
            }
            TimerKey::Service { slot, generation } => {
                work.push_back((slot, Input::Timer { generation }))
            }
            TimerKey::ShutdownGrace if self.phase == Phase::Draining => {
                self.phase = Phase::Killing;
                let n = pid1::signal_descendants(libc::SIGKILL);
                crate::log!("grace period over: sent SIGKILL to {n} remaining process(es)");
                let at = self.reactor.now_ms().saturating_add(GIVE_UP_AFTER_KILL_MS);
                self.reactor.timers.arm(at, TimerKey::ShutdownGiveUp);
            }
            TimerKey::ShutdownGiveUp if self.phase == Phase::Killing => {
                crate::log!(
                    "processes still alive after SIGKILL (uninterruptible sleep?); exiting anyway"
                );
                self.phase = Phase::GaveUp;
            }
            _ => {}
        }
    }

    /// Reaps one service through its pidfd, if it has exited; its pid then.
    fn reap_service(&mut self, slot: usize, work: &mut VecDeque<(usize, Input)>) -> Option<i32> {
        let s = self.slots.get_mut(slot)?;
        let fd = s.pidfd.as_ref()?;
        let pid = fd.pid();
        match reap::reap_one(fd) {
            Ok(Some(status)) => {
                self.by_pid.remove(&pid);
                self.collected(slot, pid, status, work);
                return Some(pid);
            }
            Ok(None) => {}
            // ECHILD: the sweep got there first and has already reported it.
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {}
            Err(e) => crate::log!("[{}] cannot reap pid {pid}: {e}", s.service.name()),
        }
        None
    }

    /// A SIGCHLD named `pid`: a service without a pidfd is reaped by its
    /// pid at once (O(1), where the sweep walks every child); its pid then.
    fn reap_named(&mut self, pid: u32, work: &mut VecDeque<(usize, Input)>) -> Option<i32> {
        let pid = i32::try_from(pid).ok().filter(|&p| p > 0)?;
        let slot = *self.by_pid.get(&pid)? as usize;
        if self.slots.get(slot)?.pidfd.is_some() {
            return None;
        }
        match reap::reap_pid(pid) {
            Ok(Some(status)) => {
                self.by_pid.remove(&pid);
                self.collected(slot, pid, status, work);
                Some(pid)
            }
            _ => None,
        }
    }

    /// Whether `pid` is a service whose end its watched pidfd will report.
    fn reaped_by_pidfd(&self, pid: i32) -> bool {
        self.by_pid.get(&pid).is_some_and(|&slot| {
            self.slots
                .get(slot as usize)
                .and_then(|s| s.pidfd.as_ref())
                .is_some_and(|fd| fd.pid() == pid)
        })
    }

    fn reap(&mut self, work: &mut VecDeque<(usize, Input)>) -> Drained {
        let by_pid = &mut self.by_pid;
        let probes = &mut self.probes;
        let hooks = &mut self.hooks;
        let mut dead = Vec::new();
        let mut probes_dead = Vec::new();
        let mut hooks_dead = Vec::new();
        let drained = reap::reap_all(|pid, status| {
            if let Some(slot) = by_pid.remove(&pid) {
                dead.push((slot as usize, pid, status));
            } else if let Some((slot, source)) = probes.take_pid(pid) {
                probes_dead.push((slot, source, pid, status));
            } else if let Some(slot) = hooks.take_pid(pid) {
                hooks_dead.push((slot, pid, status));
            }
        });
        for (slot, pid, status) in dead {
            self.collected(slot, pid, status, work);
        }
        for (slot, source, pid, status) in probes_dead {
            self.probe_reaped(slot, source, pid, status, work);
        }
        for (slot, pid, status) in hooks_dead {
            self.hook_reaped(slot, pid, status, work);
        }
        drained
    }

    /// A service's process was reaped: drop its pidfd, tell its machine.
    fn collected(
        &mut self,
        slot: usize,
        pid: i32,
        status: ExitStatus,
        work: &mut VecDeque<(usize, Input)>,
    ) {
        if let Some(fd) = self.slots.get_mut(slot).and_then(|s| s.pidfd.take()) {
            let _ = self.reactor.unwatch_fd(&fd);
        }
        self.unwatch_binary(slot);
        let exit = exit_of(status);
        // The service leads its own session, so its process group id is its
        // pid, and that id stays taken while any member lives: a clean exit
        // that leaves the group alive is a daemon gone to the background.
        // Zombies count as members until reaped: a child the service never
        // waited for, now zurg's, is swept up before the group is judged.
        let forked = exit == Exit::Code(0) && pidfd::kill(-pid, 0).is_ok() && {
            self.reap(work);
            pidfd::kill(-pid, 0).is_ok()
        };
        self.cgroup_after_exit(slot, forked);
        let input = if forked {
            Input::ExitedForked { pid }
        } else {
            // Read before a restart: the next process's lines come after.
            self.end_slot_output(slot);
            Input::Exited { pid, exit }
        };
        work.push_back((slot, input));
    }

    /// Feeds inputs to services and executes their actions until quiet.
    fn process(&mut self, work: &mut VecDeque<(usize, Input)>) {
        while let Some((slot, input)) = work.pop_front() {
            let now = self.reactor.now_ms();
            let Some(s) = self.slots.get_mut(slot) else {
                continue;
            };
            let actions = s.service.step(input, now);
            for action in actions {
                self.execute(slot, action, work);
            }
        }
    }

    /// Feeds one input to a service ahead of the queue.
    fn step_now(&mut self, slot: usize, input: Input, work: &mut VecDeque<(usize, Input)>) {
        let now = self.reactor.now_ms();
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        for action in s.service.step(input, now) {
            self.execute(slot, action, work);
        }
    }

    fn execute(&mut self, slot: usize, action: Action, work: &mut VecDeque<(usize, Input)>) {
        match action {
            Action::Spawn => {
                if self.phase != Phase::Running {
                    return;
                }
                if let Some(hold) = self.hold_spawn(slot) {
                    // Taken at once, not queued: a dependency's event
                    // already queued must find this service waiting.
                    self.step_now(slot, hold, work);
                    return;
                }
                if self
                    .slots
                    .get(slot)
                    .is_some_and(|s| s.service.pre_start_due())
                {
                    self.step_now(slot, Input::PreStart, work);
                    return;
                }
                // Its outcome goes first: `Spawned` stamps the process's
                // start (uptime, readiness time), so queued inputs and other
                // services' spawns must not come between.
                if let Some(input) = self.spawn(slot) {
                    work.push_front((slot, input));
                }
            }
            Action::Signal(signo) => self.signal(slot, signo),
            Action::RunHook { kind, exit } => self.run_hook(slot, kind, exit, work),
            Action::KillHook(kind) => self.kill_hook(slot, kind),
            Action::ArmTimer { at_ms, generation } => self
                .reactor
                .timers
                .arm(at_ms, TimerKey::Service { slot, generation }),
            Action::Emit(event) => {
                self.emit(slot, &event);
                self.after_event(slot, &event, work);
            }
        }
    }

    /// Issues a start time that never repeats, even across zurg restarts:
    /// the clock file covers every start time handed out, but for the one
    /// write in flight (`clock_writer.rs` says when that matters).
    fn issue_start_time(&mut self) -> Result<u64, crate::gpid::ClockExhausted> {
        let start_us = self.clock.issue(crate::os::wall_clock_us())?;
        // Asked for ahead of the start times, so a burst of restarts finds
        // its marks written; the write itself is the writer thread's.
        if start_us.saturating_add(CLOCK_RESERVE_US / 2) > self.clock_reserved {
            let reserve = start_us.saturating_add(CLOCK_RESERVE_US);
            self.clock_writer.save(reserve);
            self.clock_reserved = reserve;
        }
        Ok(start_us)
    }

    /// The worker hashed `slot`'s binary for the spawn numbered
    /// `generation`: spawn now, from the digest it found, unless the
    /// service was stopped or started anew meanwhile.
    pub(super) fn digested(
        &mut self,
        slot: usize,
        generation: u64,
        result: Result<(FileId, Checksum), VerifyError>,
        work: &mut VecDeque<(usize, Input)>,
    ) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.cold.get().and_then(|c| c.hashing) != Some(generation) {
            return;
        }
        s.cold.clear(|c| c.hashing = None);
        match result {
            Ok(digest) => {
                s.cold.set_digest(Some(digest));
                work.push_back((slot, Input::Verified));
            }
            Err(e) => work.push_back((slot, unverified(e))),
        }
        self.process(work);
    }

    fn spawn(&mut self, slot: usize) -> Option<Input> {
        if let Err(error) = self.prepare_creds(slot) {
            return Some(Input::SpawnFailed { error });
        }
        let port = match self.prepare_port(slot) {
            Ok(port) => port,
            Err(error) => return Some(Input::SpawnFailed { error }),
        };
        let start_us = match self.issue_start_time() {
            Ok(t) => t,
            Err(e) => {
                return Some(Input::Refused {
                    reason: e.to_string(),
                })
            }
        };
        let host_ip = self.host_ip;
        let (stdout, stderr) = self.child_outputs(slot);
        let extras = match self.probe_spawn_extras(slot) {
            Ok(extras) => extras,
            Err(error) => return Some(Input::SpawnFailed { error }),
        };
        let s = self.slots.get_mut(slot)?;
        let Some(spec) = s.spec.as_deref_mut() else {
            return Some(Input::SpawnFailed {
                error: "no spawn spec (a bug in zurg)".to_string(),
            });
        };
        spec.stdout = stdout;
        spec.stderr = stderr;
        spec.pid_vars = vec![format!(
            "ZURG_GPID={}",
            Gpid::prefix(host_ip, port, start_us)
        )];
        if spec.listen_fd.is_some() {
            spec.pid_vars.push("LISTEN_PID=".to_string());
        }
        if let Some(mark) = &self.state_mark {
            mark.put_in(&mut spec.env);
        }
        spec.start_env.extend(extras.env);
        spec.pid_vars.extend(extras.pid_vars);
        // A checksummed unit runs the very file that was hashed: opened
        // once, verified, and executed by descriptor.
        let verified = match &s.service.unit.rare.checksum {
            None => None,
            Some(want) => {
                let exec = &s.service.unit.exec;
                // Hashing a binary takes as long as reading it: the loop
                // only uses a digest already known for the file as it is
                // now, and has the worker hash it otherwise.
                let cached = s.cold.get().and_then(|c| c.digest_cache);
                let opened = match &self.worker {
                    Some(_) => crate::version::open_if_cached(exec, want, cached),
                    None => crate::version::open_verified(exec, want, cached).map(Some),
                };
                match opened {
                    Ok(Some(v)) => {
                        s.cold.set_digest(Some((v.id, v.actual)));
                        Some(v)
                    }
                    Ok(None) => {
                        self.hash_generation = self.hash_generation.wrapping_add(1);
                        s.cold.make().hashing = Some(self.hash_generation);
                        let job = worker::Job::Digest {
                            slot,
                            generation: self.hash_generation,
                            path: exec.to_path_buf(),
                            want: *want,
                        };
                        if self.worker.as_ref().is_some_and(|w| w.submit(job)) {
                            return Some(Input::Verifying);
                        }
                        s.cold.clear(|c| c.hashing = None);
                        return Some(Input::SpawnFailed {
                            error: format!(
                                "cannot verify {}: the hashing thread is gone",
                                exec.display()
                            ),
                        });
                    }
                    Err(e) => return Some(unverified(e)),
                }
            }
        };
        // The readiness pipe's write end is the child's alone: zurg's copy
        // closes when `extras.ready_fd` drops, right after the spawn.
        spec.ready_fd = extras
            .ready_fd
            .as_ref()
            .map(|(write, n)| (write.as_raw_fd(), *n));
        let spawned = self.spawner.spawn(
            spec,
            &self.child_signals,
            verified.as_ref().map(|v| &v.file),
        );
        spec.ready_fd = None;
        drop(extras.ready_fd);
        if !keeps_spec(&s.service.unit) {
            s.spec = None;
        }
        match spawned {
            Ok(mut child) => {
                let near_limit = child.pidfd.as_ref().is_some_and(|fd| {
                    u64::try_from(fd.as_raw_fd())
                        .unwrap_or(u64::MAX)
                        .saturating_add(RESERVED_FDS)
                        >= self.nofile
                });
                if near_limit {
                    // Near the limit a pidfd would take the descriptor a
                    // control connection needs; the SIGCHLD sweep reaps
                    // this child instead.
                    child.pidfd = None;
                    child.pidfd_error = Some(std::io::Error::from_raw_os_error(libc::EMFILE));
                }
                if let Some(fd) = &child.pidfd {
                    if let Err(e) = self.reactor.watch_fd(fd, Token(PIDFD_BASE + slot)) {
                        crate::log!("[{}] cannot watch pid {}: {e}", s.service.name(), child.pid);
                    }
                } else if let Some(e) = &child.pidfd_error {
                    if !self.warned_no_pidfd {
                        self.warned_no_pidfd = true;
                        crate::log!(
                            "warning: no pidfd for pid {} ({e}); exits are still caught by SIGCHLD",
                            child.pid
                        );
                    }
                }
                s.pidfd = child.pidfd;
                s.started =
                    crate::gpid::Local::new(port, start_us, u32::try_from(child.pid).unwrap_or(0));
                s.cold.clear(|c| c.last_sample = None);
                if let Some(w) = &mut s.binary_watch {
                    w.warned = false;
                }
                match &s.service.unit.rare.version {
                    Some(v) => s.cold.make().running_version = Some(v.clone()),
                    None => s.cold.clear(|c| c.running_version = None),
                }
                let exec = s.service.unit.exec.clone();
                let stats_interval = s.service.unit.rare.stats_interval_ms;
                // Every slot was made below the limit (`reload`).
                match names::NameIndex::fits(slot) {
                    Ok(at) => {
                        self.by_pid.insert(child.pid, at);
                    }
                    Err(e) => crate::log!("{e}"),
                }
                self.watch_binary(slot, &exec);
                if let Some(ms) = stats_interval {
                    self.sample_generation = self.sample_generation.wrapping_add(1);
                    let at = self.reactor.now_ms().saturating_add(ms);
                    let generation = self.sample_generation;
                    self.reactor
                        .timers
                        .arm(at, TimerKey::Sample { slot, generation });
                    if let Some(s) = self.slots.get_mut(slot) {
                        s.cold.make().sample_generation = generation;
                    }
                }
                Some(Input::Spawned { pid: child.pid })
            }
            Err(e) => Some(Input::SpawnFailed {
                error: e.to_string(),
            }),
        }
    }

    fn signal(&mut self, slot: usize, signo: i32) {
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let Some(pid) = s.service.state.pid() else {
            return;
        };
        let result = match &s.pidfd {
            Some(fd) => fd.send_signal(signo),
            // Safe without a pidfd: an unreaped child's pid cannot be reused.
            None => pidfd::kill(pid, signo),
        };
        // Its group or cgroup too, by its kill mode (supervisor/cgroups.rs).
        self.signal_rest(slot, pid, signo);
        if let Err(e) = result {
            if e.raw_os_error() != Some(libc::ESRCH) {
                crate::log!(
                    "[{}] cannot send {} to pid {pid}: {e}",
                    s.service.name(),
                    crate::sig::name(signo)
                );
            }
        }
    }

    /// What a service's event sets off beyond itself: readiness, and (as
    /// the service model grows) probes, dependants and essential services.
    fn after_event(&mut self, slot: usize, event: &Event, work: &mut VecDeque<(usize, Input)>) {
        self.dependencies_after_event(slot, work);
        self.probes_after_event(slot, event, work);
        // Before `essential_ended`: its shutdown answers the waiting starts.
        self.start_waits_after_event(slot, event);
        self.essential_ended(slot, event, work);
        self.release_retired_output(slot);
    }

    /// An essential service that ended for good (kept down by its policy,
    /// failed, or a one-shot done) ends zurg: every service is stopped and
    /// `zurg run` exits with the code of its end (`End::exit_code`). A stop
    /// on request leaves it `stopped`, which is not an end.
    fn essential_ended(&mut self, slot: usize, event: &Event, work: &mut VecDeque<(usize, Input)>) {
        let ends = matches!(
            event,
            Event::Done { .. }
                | Event::Completed { .. }
                | Event::Failed { .. }
                | Event::Refused { .. }
                | Event::Forked { .. }
        );
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        if !ends || !s.service.unit.essential || s.retired || self.phase != Phase::Running {
            return;
        }
        let Some(end) = s.service.end() else {
            return;
        };
        crate::log!(
            "[{}] essential service {} ({end}): stopping all services, then exiting with {}",
            s.service.name(),
            s.service.state_name(),
            end.exit_code(),
        );
        let ending = Ending::Essential {
            service: s.service.name().to_string(),
            end,
        };
        self.begin_shutdown(ending, work);
    }

    fn emit(&mut self, slot: usize, event: &Event) {
        self.record(slot, event);
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let name = s.service.name();
        match event {
            Event::Started { pid } => crate::log!("[{name}] started pid {pid}"),
            Event::SpawnFailed { error } => crate::log!("[{name}] {error}"),
            Event::Refused { reason } => {
                let failure = crate::service::Failure::Refused(reason.clone());
                crate::log!("[{name}] {failure}; not restarting until asked")
            }
            Event::Forked { pid } => crate::log!(
                "[{name}] pid {pid} exited with code 0 at once, leaving processes of its group running: {}; not restarting until asked",
                crate::service::Failure::Forked
            ),
            Event::Exited {
                pid,
                exit,
                uptime_ms,
            } => crate::log!(
                "[{name}] pid {pid} exited with {}{} after {}",
                exit.describe(),
                if s.exit_oom {
                    " (the OOM killer ended a process of the service)"
                } else {
                    ""
                },
                human_ms(*uptime_ms)
            ),
            Event::Restarting { delay_ms: 0 } => crate::log!("[{name}] restarting now"),
            Event::Restarting { delay_ms } => crate::log!("[{name}] restarting in {delay_ms} ms"),
            Event::Stopped { pid, exit } => {
                crate::log!("[{name}] stopped pid {pid} ({})", exit.describe())
            }
            Event::Killed { pid } => crate::log!(
                "[{name}] pid {pid} did not stop within {} ms: sent SIGKILL",
                s.service.unit.stop_timeout_ms
            ),
            Event::Done { exit } => crate::log!(
                "[{name}] ended with {}; restart policy keeps it down",
                exit.describe()
            ),
            Event::Completed { exit } => {
                crate::log!("[{name}] completed ({}): done", exit.describe())
            }
            Event::Failed { failure } => {
                crate::log!("[{name}] failed: {failure}; not starting it again until asked")
            }
            Event::Ready { pid, after_ms } => {
                crate::log!("[{name}] pid {pid} ready after {}", human_ms(*after_ms))
            }
            Event::NotReady { pid, reason } => {
                crate::log!("[{name}] pid {pid} not ready: {reason}; stopping it")
            }
            Event::Unhealthy { pid, reason } => {
                crate::log!("[{name}] pid {pid} unhealthy: {reason}; restarting it")
            }
            Event::Waiting { on } => crate::log!("[{name}] waiting for {}", on.join(", ")),
            Event::Blocked { reason } => crate::log!(
                "[{name}] {}; it starts once that is ready",
                crate::service::Failure::Blocked(reason.clone())
            ),
        }
    }
}

/// "1.2s", "3m04s", "2h05m": short durations for log lines and tables.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{}.{}s", s, (ms % 1000) / 100)
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// What a binary that could not be verified means for its service: one
/// that cannot be read is a failed start (retried with backoff); one that
/// is not what the unit names is refused (no restart loop).
fn unverified(e: VerifyError) -> Input {
    match e {
        VerifyError::Open { .. } | VerifyError::Read { .. } => Input::SpawnFailed {
            error: e.to_string(),
        },
        e => Input::Refused {
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod footprint {
    use super::*;
    use std::mem::size_of;

    /// Every service costs a slot, a unit and its service state: issue 22
    /// took them from 1,792 / 968 / 800 bytes to these, by boxing what few
    /// services use. A field that makes them grow again belongs in a box
    /// (`unit::Rare`, or an `Option<Box<_>>` of the slot) unless every
    /// service needs it.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn per_service_structs_stay_small() {
        assert!(
            size_of::<Slot>() <= 312,
            "Slot is {} bytes",
            size_of::<Slot>()
        );
        assert!(
            size_of::<Service>() <= 200,
            "Service is {} bytes",
            size_of::<Service>()
        );
        assert!(
            size_of::<Unit>() <= 104,
            "Unit is {} bytes",
            size_of::<Unit>()
        );
        assert!(
            size_of::<crate::service::ring::Ring>() <= 32,
            "Ring is {} bytes",
            size_of::<crate::service::ring::Ring>()
        );
    }

    /// A unit that sets none of the rare keys takes no box for them.
    #[test]
    fn a_plain_unit_keeps_its_rare_keys_unboxed() {
        let plain = crate::unit::parse_unit(
            "web",
            Path::new("/units/web.toml"),
            "exec = \"/bin/web\"\nargs = [\"-v\"]\ndepends_on = [\"db\"]\n",
        )
        .unwrap();
        assert!(plain.rare.is_unboxed());
        assert_eq!(plain.rare.stdout, crate::unit::Output::Prefix);
        let rich = crate::unit::parse_unit(
            "web",
            Path::new("/units/web.toml"),
            "exec = \"/bin/web\"\nstop_signal = \"INT\"\nenv = { A = \"1\" }\n",
        )
        .unwrap();
        assert!(!rich.rare.is_unboxed());
        assert_eq!(rich.rare.env.get("A").map(String::as_str), Some("1"));
        // Units compare by their keys, boxed or not.
        let mut boxed = plain.clone();
        boxed.rare.hook_timeout_ms = unit::DEFAULT_HOOK_TIMEOUT_MS;
        assert!(!boxed.rare.is_unboxed());
        assert_eq!(boxed, plain);
    }
}

#[cfg(test)]
mod state_lock {
    use super::{flock_holder, LockHolder};

    #[test]
    fn the_holder_of_a_flock_comes_from_its_line_in_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 fe:00:5505044 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 30866 fe:00:5505044 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 31000 fe:00:5505044 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 8162 08:01:12 0 EOF\n";
        assert_eq!(
            flock_holder(locks, 0xfe, 0, 5505044),
            LockHolder::Seen(30866)
        );
        assert_eq!(flock_holder(locks, 8, 1, 12), LockHolder::Seen(8162));
        // a holder outside this pid namespace: no line, or pid 0 on older
        // kernels; not a pid to name
        assert_eq!(flock_holder(locks, 8, 1, 13), LockHolder::Hidden);
        assert_eq!(
            flock_holder("1: FLOCK  ADVISORY  WRITE 0 08:01:12 0 EOF\n", 8, 1, 12),
            LockHolder::Hidden
        );
    }
}
