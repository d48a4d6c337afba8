//! Readiness and health checks of services (`ready`, `watchdog_ms`,
//! `health`), run on the loop without ever blocking it.
//!
//! Per slot, while a process runs: the readiness probe until it passes or
//! `ready_timeout_ms` passes, then the health check every `interval_ms`
//! and the watchdog. Every probe is a descriptor in mio or a timer:
//! - notify: a datagram socket per service (`STATE/notify/NAME`, kept
//!   across restarts like the output pipes), SO_PASSCRED; a message counts
//!   only from a process in the service's session (`message.rs` reads it);
//! - fd: a pipe whose write end becomes the child's fd N; a newline there
//!   is readiness, EOF before one is a failed start;
//! - tcp and http: a non-blocking connect (and for http a GET whose status
//!   line `http.rs` reads);
//! - exec: a child in its own process group, reaped through its pidfd (or
//!   the sweep), its output in the service's log, the group killed at its
//!   timeout.
//!
//! `attempt.rs` holds one try of a tcp, http or exec probe, `notify.rs` a
//! notify socket's messages; `message`, `http` and `tally` are pure.
//!
//! Results go back to the service's machine as `Input::Ready`,
//! `Input::NotReady` and `Input::Unhealthy` through the work queue. No
//! timer exists unless a probe is active: a zurg without checks makes no
//! wake-ups. Timers are never cancelled (see `timers.rs`): each kind has a
//! generation per slot, and a stale one is ignored.

mod attempt;
pub mod http;
pub mod message;
mod notify;
pub mod tally;

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::os::fd::OwnedFd;

use mio::Token;

use super::{Supervisor, TimerKey};
use crate::os::notify::NotifySocket;
use crate::os::pidfd;
use crate::service::{Event, Input, State};
use crate::unit::probe::{Check, Ready};
use attempt::Attempt;
use tally::{Tally, Verdict};

/// Tokens from here up name a probe's descriptor: `PROBE_BASE + 4 * slot +
/// source` (above the output pipes' range, which starts at 1 << 41).
pub const PROBE_BASE: usize = 1 << 42;
/// A `tcp` or `exec` readiness probe is tried again this long after the
/// last try began. A loopback connect costs microseconds, so ten tries a
/// second cost nothing measurable, and readiness is seen within 100 ms.
pub const READY_RETRY_MS: u64 = 100;
/// A readiness connect that has not completed after this long is dropped
/// and tried anew (a SYN lost to a full backlog).
pub const READY_CONNECT_MS: u64 = 1_000;

/// What a probe token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The service's notify socket.
    Notify = 0,
    /// The read end of its readiness pipe (`ready = { fd = N }`).
    ReadyFd = 1,
    /// The readiness probe's socket or process.
    Ready = 2,
    /// The health check's socket or process.
    Health = 3,
}

fn token(slot: usize, source: Source) -> Token {
    Token(PROBE_BASE + 4 * slot + source as usize)
}

/// The probe descriptor a token names.
pub fn of_token(token: Token) -> Option<(usize, Source)> {
    let n = token.0.checked_sub(PROBE_BASE)?;
    let source = match n % 4 {
        0 => Source::Notify,
        1 => Source::ReadyFd,
        2 => Source::Ready,
        _ => Source::Health,
    };
    Some((n / 4, source))
}

/// A probe's timers, each with its own generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// `ready_timeout_ms` from the start.
    ReadyDeadline = 0,
    /// The next try of a `tcp` or `exec` readiness probe.
    ReadyRetry = 1,
    /// The next health check, or the running one's timeout.
    Health = 2,
    /// The watchdog's deadline.
    Watchdog = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProbeTimer {
    pub kind: TimerKind,
    pub generation: u64,
}

/// What one slot's probes hold.
#[derive(Debug, Default)]
struct SlotProbes {
    /// The notify socket and the service name it was made for; kept across
    /// restarts (the path is in the environment of what runs).
    notify: Option<(String, NotifySocket)>,
    /// The process the active probes are about.
    pid: Option<i32>,
    /// The port of that process.
    port: u16,
    /// `MAINPID=` it announced (noted, and trusted as a sender).
    main_pid: Option<i32>,
    /// `STATUS=` text of the current process.
    status_text: Option<String>,
    /// It sent `STOPPING=1`: checks pause, an exit is expected.
    stopping: bool,
    /// A notify message from a stranger was already logged.
    warned_stranger: bool,
    /// The read end of the readiness pipe made for the next spawn.
    fd_pending: Option<OwnedFd>,
    /// The read end of the current process's readiness pipe.
    fd: Option<OwnedFd>,
    /// Readiness is awaited.
    readying: bool,
    /// The last failed readiness try, for the timeout's message.
    ready_last: Option<String>,
    ready_attempt: Option<Attempt>,
    /// Health checks run for the current process.
    health_on: bool,
    ready_at_ms: u64,
    health_next_ms: u64,
    health_attempt: Option<Attempt>,
    tally: Tally,
    /// The last `WATCHDOG=1`, while the watchdog runs.
    watchdog_last_ms: Option<u64>,
    generations: [u64; 4],
}

/// Every slot's probes, and the pids of probe processes.
#[derive(Debug, Default)]
pub struct Probes {
    /// Made at the first start of a service that has probes (`ready`,
    /// `health`, `watchdog_ms`): the others never pay for one.
    slots: Vec<Option<Box<SlotProbes>>>,
    /// Probe processes not yet reaped, for the sweep.
    pids: HashMap<i32, (usize, Source)>,
    buf: Vec<u8>,
}

impl Probes {
    fn get(&self, slot: usize) -> Option<&SlotProbes> {
        self.slots.get(slot)?.as_deref()
    }

    fn get_mut(&mut self, slot: usize) -> Option<&mut SlotProbes> {
        self.slots.get_mut(slot)?.as_deref_mut()
    }

    /// The slot's probes, made if it has none yet.
    fn entry(&mut self, slot: usize) -> Option<&mut SlotProbes> {
        if self.slots.len() <= slot {
            self.slots.resize_with(slot.saturating_add(1), || None);
        }
        let p = self.slots.get_mut(slot)?;
        Some(p.get_or_insert_with(Box::default))
    }

    /// The sweep reaped `pid`: the probe it belongs to, if any.
    pub fn take_pid(&mut self, pid: i32) -> Option<(usize, Source)> {
        self.pids.remove(&pid)
    }
}

/// What a spawn adds for the probes: environment, and the readiness pipe.
#[derive(Debug, Default)]
pub struct SpawnExtras {
    pub env: Vec<CString>,
    pub pid_vars: Vec<String>,
    /// The pipe's write end (zurg's copy closes after the spawn) and N.
    pub ready_fd: Option<(OwnedFd, i32)>,
}

/// `status` for one service: readiness, health, notify text.
#[derive(Debug, Default)]
pub struct ProbeStatus {
    pub health: Option<crate::control::proto::HealthStatus>,
    pub status_text: Option<String>,
}

fn ready_desc(ready: &Ready) -> String {
    match ready {
        Ready::Notify => "no READY=1 on its notify socket".into(),
        Ready::Fd(n) => format!("no line on fd {n}"),
        Ready::Tcp(p) => format!("tcp port {p}"),
        Ready::Exec(argv) => format!("exec {}", argv.join(" ")),
    }
}

/// How long a start waits for its notify socket's file in the state
/// directory: a mkdir, a chmod, an unlink and a bind take well under a
/// millisecond on a healthy disk, even a loaded one.
const NOTIFY_BIND_DEADLINE: std::time::Duration = std::time::Duration::from_millis(500);

/// Why a notify socket has no file in the state directory.
#[derive(Debug, thiserror::Error)]
pub(super) enum NotifyDirError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the state directory did not answer within {} ms; until zurg restarts, notify sockets use abstract names", NOTIFY_BIND_DEADLINE.as_millis())]
    TimedOut,
    #[error("the state directory did not answer earlier; notify sockets use abstract names until zurg restarts")]
    Hung,
}

type BindFn = Box<dyn FnOnce() -> std::io::Result<NotifySocket> + Send>;
type BindJob = (
    BindFn,
    std::sync::mpsc::Sender<std::io::Result<NotifySocket>>,
);

/// Binds notify sockets in STATE/notify on a thread of its own, started at
/// the first bind, so that a hung state disk holds that thread and not the
/// loop: the loop waits at most NOTIFY_BIND_DEADLINE for a bind, once;
/// after a bind that did not answer, every socket takes an abstract name.
#[derive(Debug, Default)]
pub(super) struct NotifyDir {
    binder: Option<std::sync::mpsc::Sender<BindJob>>,
    hung: bool,
}

fn make_and_bind(
    dir: &std::path::Path,
    name: &str,
    abstract_name: &str,
) -> std::io::Result<NotifySocket> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    NotifySocket::bind(&dir.join(name), abstract_name)
}

impl NotifyDir {
    /// `dir/name` bound (a too-long path takes `abstract_name`), or why not.
    fn bind(
        &mut self,
        dir: &std::path::Path,
        name: &str,
        abstract_name: &str,
    ) -> Result<NotifySocket, NotifyDirError> {
        let (dir, name, abstract_name) = (
            dir.to_path_buf(),
            name.to_string(),
            abstract_name.to_string(),
        );
        self.run(
            NOTIFY_BIND_DEADLINE,
            Box::new(move || make_and_bind(&dir, &name, &abstract_name)),
        )
    }

    /// Runs `bind` on the thread, waiting at most `deadline`.
    fn run(
        &mut self,
        deadline: std::time::Duration,
        bind: BindFn,
    ) -> Result<NotifySocket, NotifyDirError> {
        if self.hung {
            return Err(NotifyDirError::Hung);
        }
        if self.binder.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<BindJob>();
            let spawned = crate::log::spawn_blocking_signals("zurg-notify", move || {
                for (bind, reply) in rx {
                    // A socket nobody waits for any more is closed: its
                    // service got an abstract name instead.
                    let _ = reply.send(bind());
                }
            });
            match spawned {
                Ok(_) => self.binder = Some(tx),
                // No thread: bind here, as zurg did before.
                Err(_) => return Ok(bind()?),
            }
        }
        let (reply, answer) = std::sync::mpsc::channel();
        let Some(binder) = &self.binder else {
            return Ok(bind()?);
        };
        if let Err(std::sync::mpsc::SendError((bind, _))) = binder.send((bind, reply)) {
            self.binder = None;
            return Ok(bind()?);
        }
        match answer.recv_timeout(deadline) {
            Ok(bound) => Ok(bound?),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                self.hung = true;
                Err(NotifyDirError::TimedOut)
            }
            // The thread ended (it only ends if its job panicked).
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                self.binder = None;
                Err(NotifyDirError::Io(std::io::Error::other(
                    "the notify socket's thread ended",
                )))
            }
        }
    }
}

impl Supervisor {
    /// Before a spawn: the notify socket (made once per service), the
    /// readiness pipe, and the variables that name them.
    pub(super) fn probe_spawn_extras(&mut self, slot: usize) -> Result<SpawnExtras, String> {
        let mut extras = SpawnExtras::default();
        let Some(s) = self.slots.get(slot) else {
            return Ok(extras);
        };
        let unit = &s.service.unit;
        let name = unit.name.to_string();
        let wants_notify =
            unit.rare.ready == Some(Ready::Notify) || unit.rare.watchdog_ms.is_some();
        let fd_n = match unit.rare.ready {
            Some(Ready::Fd(n)) => Some(n),
            _ => None,
        };
        if let Some(ms) = unit.rare.watchdog_ms {
            extras
                .env
                .extend(CString::new(format!("WATCHDOG_USEC={}", ms.saturating_mul(1000))).ok());
            extras.pid_vars.push("WATCHDOG_PID=".into());
        }
        let dir = self.opts.state_dir.join("notify");
        let own = self.own_gpid.clone();
        let p = if wants_notify || fd_n.is_some() {
            self.probes.entry(slot)
        } else {
            self.probes.get_mut(slot)
        };
        let Some(p) = p else {
            return Ok(extras);
        };
        if wants_notify {
            if p.notify.as_ref().is_some_and(|(n, _)| *n != name) {
                if let Some((_, old)) = p.notify.take() {
                    let _ = self.reactor.unwatch_fd(&old);
                }
            }
            if p.notify.is_none() {
                // Once per service, not per restart: a directory and a bind.
                // A state directory that cannot take it (read-only, or a
                // disk that does not answer) costs the file, not the
                // service: an abstract name instead.
                let abstract_name = format!("zurg/{own}/notify/{name}");
                let bound = self.notify_dir.bind(&dir, &name, &abstract_name);
                let bound = bound.or_else(|e| {
                    crate::log!(
                        "[{name}] cannot make its notify socket in {}: {e}; using the abstract name @{abstract_name}",
                        dir.display()
                    );
                    NotifySocket::bind_abstract(&abstract_name)
                });
                let made = bound.and_then(|sock| {
                    self.reactor
                        .watch_fd(&sock, token(slot, Source::Notify))
                        .map(|()| sock)
                });
                match made {
                    Ok(sock) => p.notify = Some((name.clone(), sock)),
                    Err(e) => return Err(format!("cannot create its notify socket: {e}")),
                }
            }
            if let Some((_, sock)) = &p.notify {
                extras
                    .env
                    .extend(CString::new(format!("NOTIFY_SOCKET={}", sock.address)).ok());
            }
        }
        p.fd_pending = None;
        if let Some(n) = fd_n {
            let (read, write) = crate::os::spawn::readiness_pipe()
                .map_err(|e| format!("cannot create its readiness pipe (fd {n}): {e}"))?;
            p.fd_pending = Some(read);
            extras.ready_fd = Some((write, n));
        }
        Ok(extras)
    }

    /// What an event of a service means for its probes: a start begins
    /// readiness, readiness begins health checks and the watchdog, an end
    /// stops them all.
    pub(super) fn probes_after_event(
        &mut self,
        slot: usize,
        event: &Event,
        work: &mut VecDeque<(usize, Input)>,
    ) {
        match event {
            Event::Started { pid } => self.probes_begin(slot, *pid, work),
            Event::Ready { .. } => self.probes_ready(slot),
            Event::Exited { .. }
            | Event::Stopped { .. }
            | Event::NotReady { .. }
            | Event::Unhealthy { .. }
            | Event::Forked { .. }
            | Event::Done { .. } => self.probes_end(slot),
            _ => {}
        }
    }

    fn bump(&mut self, slot: usize, kind: TimerKind) -> u64 {
        let Some(p) = self.probes.get_mut(slot) else {
            return 0;
        };
        let Some(g) = p.generations.get_mut(kind as usize) else {
            return 0;
        };
        *g = g.wrapping_add(1);
        *g
    }

    fn arm_probe(&mut self, slot: usize, kind: TimerKind, at_ms: u64) {
        let generation = self.bump(slot, kind);
        self.reactor.timers.arm(
            at_ms,
            TimerKey::Probe {
                slot,
                timer: ProbeTimer { kind, generation },
            },
        );
    }

    fn probes_begin(&mut self, slot: usize, pid: i32, work: &mut VecDeque<(usize, Input)>) {
        self.probes_end(slot);
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let unit = &s.service.unit;
        let wanted = unit.rare.ready.is_some()
            || unit.rare.health.is_some()
            || unit.rare.watchdog_ms.is_some();
        let ready = unit.rare.ready.clone();
        let timeout = unit.rare.ready_timeout_ms;
        let port = s.port;
        let name = s.service.name().to_string();
        let now = self.reactor.now_ms();
        let p = if wanted {
            self.probes.entry(slot)
        } else {
            self.probes.get_mut(slot)
        };
        let Some(p) = p else {
            return;
        };
        p.pid = Some(pid);
        p.port = port;
        p.main_pid = None;
        p.status_text = None;
        p.stopping = false;
        p.warned_stranger = false;
        p.tally = Tally::default();
        let Some(ready) = ready else {
            // Ready once started: health checks and watchdog begin now.
            self.probes_ready(slot);
            return;
        };
        p.readying = true;
        p.ready_last = None;
        if let Ready::Fd(n) = ready {
            match p.fd_pending.take() {
                Some(read) => {
                    if let Err(e) = self.reactor.watch_fd(&read, token(slot, Source::ReadyFd)) {
                        work.push_back((
                            slot,
                            Input::NotReady {
                                pid,
                                reason: format!("cannot watch its readiness fd {n}: {e}"),
                            },
                        ));
                        return;
                    }
                    p.fd = Some(read);
                }
                None => crate::log!("[{name}] no readiness pipe for fd {n} (a bug in zurg)"),
            }
        }
        self.arm_probe(slot, TimerKind::ReadyDeadline, now.saturating_add(timeout));
        if matches!(ready, Ready::Tcp(_) | Ready::Exec(_)) {
            self.start_ready_attempt(slot);
        }
    }

    /// Readiness passed (or was not asked for): the health check and the
    /// watchdog begin.
    fn probes_ready(&mut self, slot: usize) {
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let health = s.service.unit.rare.health.as_ref().map(|h| h.interval_ms);
        let watchdog = s.service.unit.rare.watchdog_ms;
        let now = self.reactor.now_ms();
        self.bump(slot, TimerKind::ReadyDeadline);
        self.bump(slot, TimerKind::ReadyRetry);
        self.abandon(slot, Source::Ready);
        let Some(p) = self.probes.get_mut(slot) else {
            return;
        };
        p.readying = false;
        if let Some(fd) = p.fd.take() {
            let _ = self.reactor.unwatch_fd(&fd);
        }
        p.ready_at_ms = now;
        if let Some(interval) = health {
            p.health_on = true;
            p.health_next_ms = now.saturating_add(interval);
            self.arm_probe(slot, TimerKind::Health, now.saturating_add(interval));
        }
        if let Some(ms) = watchdog {
            if let Some(p) = self.probes.get_mut(slot) {
                p.watchdog_last_ms = Some(now);
            }
            self.arm_probe(slot, TimerKind::Watchdog, now.saturating_add(ms));
        }
    }

    /// The process is gone or going: every probe of the slot stops (an
    /// exec probe's group is killed), and every timer armed for it goes
    /// stale. The notify socket stays.
    fn probes_end(&mut self, slot: usize) {
        for kind in [
            TimerKind::ReadyDeadline,
            TimerKind::ReadyRetry,
            TimerKind::Health,
            TimerKind::Watchdog,
        ] {
            self.bump(slot, kind);
        }
        self.abandon(slot, Source::Ready);
        self.abandon(slot, Source::Health);
        let Some(p) = self.probes.get_mut(slot) else {
            return;
        };
        if let Some(fd) = p.fd.take() {
            let _ = self.reactor.unwatch_fd(&fd);
        }
        p.pid = None;
        p.readying = false;
        p.health_on = false;
        p.watchdog_last_ms = None;
    }

    /// Drops a running try: its socket closes, its process group is
    /// killed (the sweep or its pidfd reaps it later; the result is not
    /// awaited).
    fn abandon(&mut self, slot: usize, source: Source) {
        let Some(p) = self.probes.get_mut(slot) else {
            return;
        };
        let attempt = match source {
            Source::Ready => p.ready_attempt.take(),
            Source::Health => p.health_attempt.take(),
            _ => None,
        };
        match attempt {
            Some(Attempt::Connect { mut stream, .. }) => {
                let _ = self.reactor.registry().deregister(&mut stream);
            }
            Some(Attempt::Exec { pid, pidfd, .. }) => {
                // Its own group, led by it: while unreaped the id is its.
                let _ = pidfd::kill(-pid, libc::SIGKILL);
                if let Some(fd) = pidfd {
                    // Without the pidfd the sweep (SIGCHLD) reaps it.
                    let _ = self.reactor.unwatch_fd(&fd);
                }
            }
            None => {}
        }
    }

    /// The process the probes are about, if the service still runs it and
    /// has not announced its stop.
    fn probed_pid(&self, slot: usize) -> Option<i32> {
        let s = self.slots.get(slot)?;
        let State::Running { pid, .. } = s.service.state else {
            return None;
        };
        let p = self.probes.get(slot)?;
        (p.pid == Some(pid) && !p.stopping).then_some(pid)
    }

    fn start_ready_attempt(&mut self, slot: usize) {
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let check = match &s.service.unit.rare.ready {
            Some(Ready::Tcp(port)) => Check::Tcp(*port),
            Some(Ready::Exec(argv)) => Check::Exec(argv.clone()),
            _ => return,
        };
        let now = self.reactor.now_ms();
        // A connect is watched by the retry timer (also when it failed at
        // once); a command is tried again once it has failed.
        if !matches!(check, Check::Exec(_)) {
            self.arm_probe(
                slot,
                TimerKind::ReadyRetry,
                now.saturating_add(READY_RETRY_MS),
            );
        }
        match self.start_attempt(slot, Source::Ready, &check) {
            Ok(attempt) => {
                if let Some(p) = self.probes.get_mut(slot) {
                    p.ready_attempt = Some(attempt);
                }
            }
            Err(why) => self.ready_try_failed(slot, why, now),
        }
    }

    /// A readiness try failed: noted for the timeout's message; a command
    /// is tried again `READY_RETRY_MS` after it began.
    fn ready_try_failed(&mut self, slot: usize, why: String, started_ms: u64) {
        let is_exec = self
            .slots
            .get(slot)
            .is_some_and(|s| matches!(s.service.unit.rare.ready, Some(Ready::Exec(_))));
        if let Some(p) = self.probes.get_mut(slot) {
            p.ready_last = Some(why);
        }
        if is_exec {
            let at = started_ms
                .saturating_add(READY_RETRY_MS)
                .max(self.reactor.now_ms());
            self.arm_probe(slot, TimerKind::ReadyRetry, at);
        }
    }

    /// A probe descriptor is ready.
    pub(super) fn on_probe(&mut self, tok: Token, work: &mut VecDeque<(usize, Input)>) {
        let Some((slot, source)) = of_token(tok) else {
            return;
        };
        match source {
            Source::Notify => self.on_notify(slot, work),
            Source::ReadyFd => self.on_ready_fd(slot, work),
            Source::Ready | Source::Health => self.on_attempt(slot, source, work),
        }
    }

    /// One try ended with `result` (`Ok(what it saw)` or `Err(why)`).
    fn attempt_ended(
        &mut self,
        slot: usize,
        source: Source,
        result: Result<String, String>,
        work: &mut VecDeque<(usize, Input)>,
    ) {
        let Some(p) = self.probes.get_mut(slot) else {
            return;
        };
        let attempt = match source {
            Source::Ready => p.ready_attempt.take(),
            _ => p.health_attempt.take(),
        };
        let started_ms = attempt.as_ref().map_or(0, Attempt::started_ms);
        match attempt {
            Some(Attempt::Connect { mut stream, .. }) => {
                let _ = self.reactor.registry().deregister(&mut stream);
            }
            Some(Attempt::Exec {
                pidfd: Some(fd), ..
            }) => {
                let _ = self.reactor.unwatch_fd(&fd);
            }
            _ => {}
        }
        let Some(pid) = self.probed_pid(slot) else {
            return;
        };
        match source {
            Source::Ready => match result {
                Ok(_) => work.push_back((slot, Input::Ready { pid })),
                Err(why) => self.ready_try_failed(slot, why, started_ms),
            },
            _ => self.health_result(slot, result, work),
        }
    }

    fn health_result(
        &mut self,
        slot: usize,
        result: Result<String, String>,
        work: &mut VecDeque<(usize, Input)>,
    ) {
        let now = self.reactor.now_ms();
        let Some(health) = self
            .slots
            .get(slot)
            .and_then(|s| s.service.unit.rare.health.clone())
        else {
            return;
        };
        let name = self.slot_name(slot).to_string();
        let Some(p) = self.probes.get_mut(slot) else {
            return;
        };
        if !p.health_on {
            return;
        }
        let since_ready = now.saturating_sub(p.ready_at_ms);
        match p.tally.record(&health, result, since_ready) {
            Verdict::Healthy => {}
            Verdict::Failing => crate::log!(
                "[{name}] health check {} failed ({} of {} in a row): {}",
                health.check,
                p.tally.failures,
                health.retries,
                p.tally.last
            ),
            Verdict::Unhealthy(reason) => {
                p.health_on = false;
                let pid = p.pid.unwrap_or_default();
                work.push_back((slot, Input::Unhealthy { pid, reason }));
            }
        }
    }

    /// A probe timer fired.
    pub(super) fn on_probe_timer(
        &mut self,
        slot: usize,
        timer: ProbeTimer,
        work: &mut VecDeque<(usize, Input)>,
    ) {
        let current = self
            .probes
            .get(slot)
            .and_then(|p| p.generations.get(timer.kind as usize).copied());
        if current != Some(timer.generation) {
            return;
        }
        if self.probed_pid(slot).is_none() {
            return;
        }
        let now = self.reactor.now_ms();
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let unit = &s.service.unit;
        let ready = unit.rare.ready.clone();
        let ready_timeout = unit.rare.ready_timeout_ms;
        let health = unit.rare.health.clone();
        let watchdog = unit.rare.watchdog_ms;
        let Some(p) = self.probes.get_mut(slot) else {
            return;
        };
        match timer.kind {
            TimerKind::ReadyDeadline => {
                if !p.readying {
                    return;
                }
                let what = ready.as_ref().map(ready_desc).unwrap_or_default();
                let reason = match &p.ready_last {
                    Some(last) => format!("not ready after {ready_timeout} ms ({what}: {last})"),
                    None => format!("not ready after {ready_timeout} ms ({what})"),
                };
                p.readying = false;
                let pid = p.pid.unwrap_or_default();
                self.abandon(slot, Source::Ready);
                work.push_back((slot, Input::NotReady { pid, reason }));
            }
            TimerKind::ReadyRetry => {
                if !p.readying {
                    return;
                }
                match &p.ready_attempt {
                    Some(Attempt::Connect { started_ms, .. })
                        if now.saturating_sub(*started_ms) < READY_CONNECT_MS =>
                    {
                        self.arm_probe(
                            slot,
                            TimerKind::ReadyRetry,
                            now.saturating_add(READY_RETRY_MS),
                        );
                    }
                    Some(Attempt::Connect { .. }) => {
                        p.ready_last = Some(format!("no answer within {READY_CONNECT_MS} ms"));
                        self.abandon(slot, Source::Ready);
                        self.start_ready_attempt(slot);
                    }
                    // A command is tried again once it has failed.
                    Some(Attempt::Exec { .. }) => {}
                    None => self.start_ready_attempt(slot),
                }
            }
            TimerKind::Health => {
                let Some(health) = health else { return };
                if !p.health_on {
                    return;
                }
                let started = p.health_attempt.as_ref().map(Attempt::started_ms);
                match tally::on_timer(&health, started, p.health_next_ms, now) {
                    tally::TimerStep::Wait(at) => self.arm_probe(slot, TimerKind::Health, at),
                    tally::TimerStep::TimedOut => {
                        // The running check is out of time: it failed, and
                        // its process or connection goes.
                        let killed = matches!(p.health_attempt, Some(Attempt::Exec { .. }));
                        let next = p.health_next_ms.max(now);
                        self.abandon(slot, Source::Health);
                        let why = if killed {
                            format!("timed out after {} ms (killed)", health.timeout_ms)
                        } else {
                            format!("no answer within {} ms", health.timeout_ms)
                        };
                        self.health_result(slot, Err(why), work);
                        self.arm_probe(slot, TimerKind::Health, next);
                    }
                    tally::TimerStep::Check { arm_at, next_ms } => {
                        p.health_next_ms = next_ms;
                        self.arm_probe(slot, TimerKind::Health, arm_at);
                        match self.start_attempt(slot, Source::Health, &health.check) {
                            Ok(attempt) => {
                                if let Some(p) = self.probes.get_mut(slot) {
                                    p.health_attempt = Some(attempt);
                                }
                            }
                            Err(why) => self.health_result(slot, Err(why), work),
                        }
                    }
                }
            }
            TimerKind::Watchdog => {
                let (Some(ms), Some(last)) = (watchdog, p.watchdog_last_ms) else {
                    return;
                };
                let due = last.saturating_add(ms);
                if now < due {
                    self.arm_probe(slot, TimerKind::Watchdog, due);
                } else {
                    p.watchdog_last_ms = None;
                    let pid = p.pid.unwrap_or_default();
                    work.push_back((
                        slot,
                        Input::Unhealthy {
                            pid,
                            reason: format!("watchdog: no WATCHDOG=1 for {ms} ms"),
                        },
                    ));
                }
            }
        }
    }

    /// The readiness pipe is readable: a newline is readiness, EOF before
    /// one a failed start.
    fn on_ready_fd(&mut self, slot: usize, work: &mut VecDeque<(usize, Input)>) {
        let n = match self
            .slots
            .get(slot)
            .and_then(|s| s.service.unit.rare.ready.clone())
        {
            Some(Ready::Fd(n)) => n,
            _ => return,
        };
        let Some(p) = self.probes.get_mut(slot) else {
            return;
        };
        let Some(fd) = &p.fd else { return };
        let mut buf = [0u8; 512];
        let outcome = loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => break Some(false),
                Ok(k) => {
                    if buf.get(..k).is_some_and(|b| b.contains(&b'\n')) {
                        break Some(true);
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break None,
            }
        };
        let Some(ready) = outcome else { return };
        if let Some(fd) = p.fd.take() {
            let _ = self.reactor.unwatch_fd(&fd);
        }
        let Some(pid) = self.probed_pid(slot) else {
            return;
        };
        if ready {
            work.push_back((slot, Input::Ready { pid }));
        } else {
            work.push_back((
                slot,
                Input::NotReady {
                    pid,
                    reason: format!("it closed its readiness fd {n} without writing a line"),
                },
            ));
        }
    }

    /// `status` fields of a service's probes.
    pub(super) fn probe_status(&self, slot: usize) -> ProbeStatus {
        let Some(p) = self.probes.get(slot) else {
            return ProbeStatus::default();
        };
        let has_health = self
            .slots
            .get(slot)
            .is_some_and(|s| s.service.unit.rare.health.is_some());
        let health = (has_health && p.pid.is_some()).then(|| crate::control::proto::HealthStatus {
            ok: p.tally.ok.unwrap_or(true),
            failures: p.tally.failures,
            last: p.tally.last.clone(),
        });
        ProbeStatus {
            health,
            status_text: p.status_text.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::attempt::probe_ip;
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn tokens_name_their_probe_and_stay_above_the_output_pipes() {
        for slot in [0, 1, 9, 100_000] {
            for source in [
                Source::Notify,
                Source::ReadyFd,
                Source::Ready,
                Source::Health,
            ] {
                let t = token(slot, source);
                assert!(t.0 > super::super::output::OUTPUT_BASE + 1_000_000);
                assert_eq!(of_token(t), Some((slot, source)));
            }
        }
        assert_eq!(of_token(Token(7)), None);
    }

    #[test]
    fn probes_connect_to_the_bound_address_or_loopback() {
        assert_eq!(probe_ip(None), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(
            probe_ip(Some("0.0.0.0".parse().unwrap())),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            probe_ip(Some("::".parse().unwrap())),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
        assert_eq!(
            probe_ip(Some("10.1.2.3".parse().unwrap())),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_bind_that_does_not_answer_times_out_once_and_the_rest_are_refused_at_once() {
        let dir = std::env::temp_dir().join(format!("zurg-notify-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut nd = NotifyDir::default();
        let sock = nd.bind(&dir, "svc", "zurg-test/never").unwrap();
        assert_eq!(sock.address, dir.join("svc").display().to_string());
        // A bind held up, as on a dead disk: the wait ends at the deadline.
        let (gate_tx, gate) = std::sync::mpsc::channel::<()>();
        let t = std::time::Instant::now();
        let held = nd.run(
            std::time::Duration::from_millis(50),
            Box::new(move || {
                let _ = gate.recv();
                Err(std::io::Error::other("late"))
            }),
        );
        assert!(matches!(held, Err(NotifyDirError::TimedOut)), "{held:?}");
        // From then on, no wait at all.
        assert!(matches!(
            nd.bind(&dir, "other", "zurg-test/never"),
            Err(NotifyDirError::Hung)
        ));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        drop(gate_tx);
        drop(sock);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
