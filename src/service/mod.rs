//! One service's life as a pure state machine: `step(input, now) -> actions`.
//!
//! States:
//! - `Down`: not running and not wanted (never started, or stopped on request).
//! - `Running { pid }`: the process is alive.
//! - `Stopping { pid, then }`: the stop signal was sent; SIGKILL follows at
//!   the stop timeout; `then` says whether to start again afterwards.
//! - `Backoff`: died and waits for its restart timer.
//! - `Exited`: a long-running service ended, and its restart policy keeps
//!   it down.
//! - `Done`: a one-shot ran to completion (an exit code in
//!   `success_exit_codes`); it stays so until started again.
//! - `Failed`: will not start again by itself (refused, forked, the start
//!   limit hit, a one-shot or a readiness that failed for good); the reason
//!   is in `last_error`.
//! - `Waiting`: wants to start, but a dependency is not ready (or failed
//!   for good: then `last_error` says which); the supervisor sends `Start`
//!   once every dependency is.
//!
//! Every (state, input) pair is decided in `step`; inputs that make no sense
//! in a state (a stale timer, a stop of a stopped service) change nothing.
//! The machine never touches the OS: the supervisor executes its actions and
//! feeds back what happened (`Spawned`, `SpawnFailed`, `Exited`). Timers carry
//! a generation so that one armed in an earlier state is ignored.

pub mod graph;
pub mod policy;
pub mod ring;

use crate::unit::{Kind, Unit};
use policy::{Backoff, StartLog};

/// How a process ended, without OS types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn describe(self) -> String {
        match self {
            Exit::Code(c) => format!("code {c}"),
            Exit::Signal(s) => format!("signal {}", crate::sig::name(s)),
        }
    }
}

/// How the run before a restart ended, for the start limit's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunEnded {
    /// It exited (or could not be spawned).
    ByItself,
    /// It failed otherwise: zurg stopped it (not ready, unhealthy), or its
    /// `pre_start` failed.
    Failed,
}

/// One of a unit's hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// `pre_start`: runs to completion before every start.
    PreStart,
    /// `post_stop`: runs after every exit of the main process.
    PostStop,
}

impl HookKind {
    /// The unit key that names it.
    pub fn key(self) -> &'static str {
        match self {
            HookKind::PreStart => "pre_start",
            HookKind::PostStop => "post_stop",
        }
    }
}

/// Why a service is not running when it was asked to: the reason kept in
/// `last_error`, shown by `status`, in start/restart replies and the log.
/// Each kind is rendered here, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The start was refused before exec (checksum mismatch).
    Refused(String),
    /// The process could not be started (cwd, exec, port), as rendered by
    /// the step that failed.
    Spawn(String),
    /// It exited 0 at once while processes of its group kept running: a
    /// daemon that put itself in the background.
    Forked,
    /// A run ended without success (a one-shot whose `restart` keeps it
    /// down).
    Unsuccessful(Exit),
    /// Its unit's `start_limit`: one start more than `burst` within
    /// `interval_ms`. `after`: the failure of the run before the start not
    /// made (not ready, unhealthy, a spawn error), when it had one; a run
    /// that merely exited has none.
    StartLimit {
        burst: u32,
        interval_ms: u64,
        after: Option<Box<Failure>>,
    },
    /// Readiness did not come (its timeout passed, or it cannot come).
    NotReady(String),
    /// Its health check or watchdog failed.
    Unhealthy(String),
    /// Not started because a dependency failed for good ("migrate failed
    /// (exit 1)").
    Blocked(String),
    /// Its `pre_start` hook failed (boxed: the largest kind, which made
    /// every service's `last_error` 56 bytes rather than 32).
    Hook(Box<HookFailure>),
}

/// How a service ended for good (`Service::end`), which for an essential
/// service is why `zurg run` ends and decides its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Its process exited and its `restart` policy keeps it down, or a
    /// one-shot completed: the exit is the service's own.
    Exited(Exit),
    /// It failed (`exit`: its last process's, when it had one).
    Failed {
        exit: Option<Exit>,
        failure: Failure,
    },
}

impl End {
    /// `zurg run`'s code for this end: the service's exit code, 128+N for
    /// signal N, and 1 for a failure that has no code of its own: refused,
    /// exited 0 yet failed, or stopped by zurg (not ready, unhealthy),
    /// where the stop signal's 143 would be zurg's doing, not the service's.
    pub fn exit_code(&self) -> i32 {
        let exit = match self {
            End::Exited(exit) => Some(*exit),
            End::Failed { failure, .. } if failure.stopped_by_zurg() => None,
            End::Failed {
                exit: Some(Exit::Code(0)),
                ..
            } => None,
            End::Failed { exit, .. } => *exit,
        };
        match exit {
            Some(Exit::Code(c)) => c,
            Some(Exit::Signal(n)) => 128_i32.saturating_add(n),
            None => 1,
        }
    }
}

/// Why, for the log line that ends zurg: the exit, or the failure (a start
/// limit with how the last run failed, as "`zurg start` tries again" is
/// moot once zurg ends).
impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Exited(exit) => f.write_str(&exit.describe()),
            End::Failed {
                failure:
                    Failure::StartLimit {
                        burst,
                        interval_ms,
                        after,
                    },
                exit,
            } => {
                write!(
                    f,
                    "start limit hit: more than {burst} starts within {interval_ms} ms"
                )?;
                match (after, exit) {
                    (Some(failure), _) => write!(f, "; the last run: {failure}"),
                    (None, Some(exit)) => write!(f, "; the last run: {}", exit.describe()),
                    (None, None) => Ok(()),
                }
            }
            End::Failed { failure, .. } => write!(f, "{failure}"),
        }
    }
}

/// A hook that failed: it exited non-zero, or it was killed at
/// `hook_timeout_ms` (`timed_out_ms`); `output` is its last line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFailure {
    pub kind: HookKind,
    pub exit: Exit,
    pub timed_out_ms: Option<u64>,
    pub output: Option<String>,
}

impl Failure {
    /// zurg stopped the process for failing (not ready, unhealthy), also
    /// as the last run before a start limit: its exit is then the stop
    /// signal's doing, not a code of the service's own.
    pub fn stopped_by_zurg(&self) -> bool {
        match self {
            Failure::NotReady(_) | Failure::Unhealthy(_) => true,
            Failure::StartLimit { after, .. } => {
                after.as_deref().is_some_and(Failure::stopped_by_zurg)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(reason) => write!(f, "refused to start: {reason}"),
            Failure::Spawn(error) => f.write_str(error),
            Failure::Forked => {
                f.write_str("it forked into the background and exited; run it in the foreground")
            }
            Failure::Unsuccessful(exit) => write!(f, "exited with {}", exit.describe()),
            Failure::StartLimit {
                burst, interval_ms, ..
            } => write!(
                f,
                "start limit hit: more than {burst} starts within {interval_ms} ms (start_limit); `zurg start` tries again"
            ),
            Failure::NotReady(reason) => write!(f, "not ready: {reason}"),
            Failure::Unhealthy(reason) => write!(f, "unhealthy: {reason}"),
            Failure::Blocked(why) => write!(f, "not started: {why}"),
            Failure::Hook(hook) => {
                let HookFailure {
                    kind,
                    exit,
                    timed_out_ms,
                    output,
                } = &**hook;
                match timed_out_ms {
                    Some(ms) => write!(
                        f,
                        "{} did not finish within {ms} ms (hook_timeout_ms) and was killed",
                        kind.key()
                    )?,
                    None => write!(f, "{} exited with {}", kind.key(), exit.describe())?,
                }
                match output {
                    Some(line) => write!(f, ": {line}"),
                    None => Ok(()),
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    StayDown,
    /// Start again at once: a restart someone asked for.
    Start,
    /// Zurg stopped it because it failed (not ready, unhealthy): the
    /// restart policy, backoff and start limit decide, as after a failed
    /// run.
    Recover,
}

/// What a service does once its `post_stop` hook has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPost {
    /// Its process exited by itself, or could not be started: the restart
    /// policy decides.
    Policy { uptime_ms: u64 },
    /// Its `pre_start` failed: a failed start (restart policy, backoff,
    /// start limit), whatever the hook's exit code.
    FailedStart,
    /// It was stopped (or asked to stop or start meanwhile): as `then`
    /// says.
    Stop { since_ms: u64, then: AfterStop },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Down,
    Running {
        pid: i32,
        since_ms: u64,
    },
    Stopping {
        pid: i32,
        since_ms: u64,
        then: AfterStop,
        killed: bool,
    },
    Backoff {
        until_ms: u64,
    },
    Exited,
    /// A one-shot that ran to completion.
    Done,
    /// Will not start by itself (see `last_error`); stays down until a
    /// start, restart or reload asks again.
    Failed,
    /// Its binary is being hashed off the loop before the spawn (a checksum
    /// not yet known for the file as it is now); no process yet.
    Starting,
    /// Held before its spawn until its dependencies are ready; no process.
    Waiting,
    /// Its `pre_start` hook runs; the service's process is spawned when it
    /// exits 0. `timed_out`: killed at `hook_timeout_ms`, its exit awaited.
    PreStart {
        timed_out: bool,
    },
    /// Its process ended (with `exit`) and its `post_stop` hook runs; what
    /// follows waits for the hook.
    PostStop {
        exit: Exit,
        then: AfterPost,
        timed_out: bool,
    },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Down => "stopped",
            State::Running { .. } => "running",
            State::Stopping { .. } => "stopping",
            State::Backoff { .. } => "backoff",
            State::Exited => "exited",
            State::Done => "done",
            State::Failed => "failed",
            State::Starting => "starting",
            State::Waiting => "waiting",
            State::PreStart { .. } => "starting",
            State::PostStop { .. } => "stopping",
        }
    }

    pub fn pid(&self) -> Option<i32> {
        match *self {
            State::Running { pid, .. } | State::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// True when no process of this service is alive.
    pub fn is_down(&self) -> bool {
        self.pid().is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Start if not running (initial start, `start` request).
    Start,
    /// Stop and stay down.
    Stop,
    /// Stop if running, then start again; start if down.
    Restart,
    Spawned {
        pid: i32,
    },
    /// The start was refused before exec, for a reason that a retry cannot
    /// fix by itself (wrong checksum): no restart loop.
    Refused {
        reason: String,
    },
    SpawnFailed {
        error: String,
    },
    Exited {
        pid: i32,
        exit: Exit,
    },
    /// Exited with code 0 while processes of its group live on (it forked
    /// into the background). Within `policy::RESET_AFTER_MS` of its start
    /// this fails the service instead of restarting it: each restart would
    /// leave one more daemon behind.
    ExitedForked {
        pid: i32,
    },
    Timer {
        generation: u64,
    },
    /// The spawn waits for the binary to be hashed off the loop.
    Verifying,
    /// The binary's digest is known now: spawn, unless stopped meanwhile.
    Verified,
    /// Process `pid` reported itself ready (notify `READY=1`, a line on its
    /// readiness fd, a readiness probe passed). A service without `ready`
    /// is ready as soon as it has started. Ignored unless `pid` runs and is
    /// not ready yet.
    Ready {
        pid: i32,
    },
    /// Readiness of process `pid` did not come: its timeout passed, or it
    /// cannot come. A failed start: the process is stopped, then the
    /// restart policy, backoff and start limit apply as after a failed run.
    /// Ignored unless `pid` runs and is not ready (a stale probe result).
    NotReady {
        pid: i32,
        reason: String,
    },
    /// The health check of process `pid` failed `retries` times in a row,
    /// or it missed its watchdog ping: it is stopped and started again as
    /// after a failed run (counted as a restart, subject to the start
    /// limit). Ignored unless `pid` runs.
    Unhealthy {
        pid: i32,
        reason: String,
    },
    /// Its spawn was held: the dependencies named are not ready yet.
    Wait {
        on: Vec<String>,
    },
    /// Its spawn was held: a dependency failed for good (`reason` says
    /// which and how). It waits until that dependency is ready.
    Block {
        reason: String,
    },
    /// Its spawn is due and its `pre_start` has not run for it yet: run it.
    PreStart,
    /// A hook process ended (`output`: its last line, if any).
    HookExited {
        kind: HookKind,
        exit: Exit,
        output: Option<String>,
    },
}

/// What the service wants done, and what happened, for the log and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Spawn,
    Signal(i32),
    ArmTimer {
        at_ms: u64,
        generation: u64,
    },
    Emit(Event),
    /// Run this hook; `exit` is how the main process ended (post_stop).
    RunHook {
        kind: HookKind,
        exit: Option<Exit>,
    },
    /// Kill this hook's process group (timeout, or a stop meanwhile).
    KillHook(HookKind),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        pid: i32,
    },
    SpawnFailed {
        error: String,
    },
    Exited {
        pid: i32,
        exit: Exit,
        uptime_ms: u64,
    },
    Restarting {
        delay_ms: u64,
    },
    /// Ended by a stop request (after the stop signal or SIGKILL).
    Stopped {
        pid: i32,
        exit: Exit,
    },
    /// Did not stop within its stop timeout: SIGKILL sent.
    Killed {
        pid: i32,
    },
    /// Ended and its restart policy keeps it down.
    Done {
        exit: Exit,
    },
    /// A one-shot ran to completion (`exit` is one of its success codes).
    Completed {
        exit: Exit,
    },
    /// It will not start again by itself: a one-shot that failed for good,
    /// the start limit, a readiness that failed for good. Also in
    /// `last_error`.
    Failed {
        failure: Failure,
    },
    /// Refused to start; the service is failed.
    Refused {
        reason: String,
    },
    /// Exited at once leaving its group running; the service is failed.
    Forked {
        pid: i32,
    },
    /// Became ready `after_ms` after its process started.
    Ready {
        pid: i32,
        after_ms: u64,
    },
    /// Did not become ready (`reason` says how); counts as a failed start.
    NotReady {
        pid: i32,
        reason: String,
    },
    /// Its health check (or watchdog) failed; it is restarted.
    Unhealthy {
        pid: i32,
        reason: String,
    },
    /// Waits for these dependencies before it starts.
    Waiting {
        on: Vec<String>,
    },
    /// Not started: a dependency failed for good.
    Blocked {
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct Service {
    pub unit: Unit,
    pub state: State,
    /// Restarts after an exit (not counting explicit starts).
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// The last spawn or check failure; cleared by a successful start.
    pub last_error: Option<Box<Failure>>,
    /// How long the current process took to become ready; `None` while it
    /// has not (or no process runs).
    pub ready_after_ms: Option<u64>,
    backoff: Backoff,
    /// Starts counted against the unit's `start_limit`.
    starts: StartLog,
    timer_generation: u64,
    /// The next spawn is a restart (for the counter).
    restarting: bool,
    /// `pre_start` exited 0 for the spawn now due.
    pre_start_passed: bool,
}

impl Service {
    pub fn new(unit: Unit) -> Service {
        Service {
            unit,
            state: State::Down,
            restarts: 0,
            last_exit: None,
            last_error: None,
            ready_after_ms: None,
            backoff: Backoff::default(),
            starts: StartLog::default(),
            timer_generation: 0,
            restarting: false,
            pre_start_passed: false,
        }
    }

    /// The spawn now due must run `pre_start` first.
    pub fn pre_start_due(&self) -> bool {
        self.unit.rare.pre_start.is_some() && !self.pre_start_passed
    }

    /// A new service in the place of a retired one: it continues the old
    /// one's timer generations, so a timer the old one armed can never be
    /// taken for one of its own.
    pub fn succeeding(unit: Unit, old: &Service) -> Service {
        let mut s = Service::new(unit);
        s.timer_generation = old.timer_generation;
        s
    }

    pub fn name(&self) -> &str {
        &self.unit.name
    }

    /// No readiness protocol: the service counts as ready once started.
    fn ready_when_started(&self) -> bool {
        self.unit.rare.ready.is_none()
    }

    /// A process runs and has reported itself ready.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Running { .. }) && self.ready_after_ms.is_some()
    }

    /// Whether services that depend on this one may start: a long-running
    /// service that is ready, a one-shot that ran to completion.
    pub fn satisfies_dependants(&self) -> bool {
        match self.unit.kind {
            Kind::Longrun => self.is_ready(),
            Kind::Oneshot => self.state == State::Done,
        }
    }

    /// Why it cannot come to satisfy its dependants without someone asking
    /// again (`zurg wait` gives up on it): failed, stopped, or ended and
    /// kept down. `None` while it is there or may still get there.
    pub fn cannot_satisfy(&self) -> Option<String> {
        match self.state {
            State::Failed => Some(self.failure_text()),
            State::Down => Some("it is stopped".to_string()),
            State::Waiting => match self.last_error.as_deref() {
                Some(failure @ Failure::Blocked(_)) => Some(failure.to_string()),
                _ => None,
            },
            State::Exited => Some(match self.last_exit {
                Some(exit) => format!(
                    "it exited with {} and its restart policy keeps it down",
                    exit.describe()
                ),
                None => "its restart policy keeps it down".to_string(),
            }),
            _ => None,
        }
    }

    /// Why it is not where its unit says it should be, for `zurg status`'s
    /// exit code: failed; ended with a failure and kept down; or waiting to
    /// be started again after a failed run (crash loop, not ready,
    /// unhealthy). A service that is starting, running, stopped on request
    /// or done is fine.
    pub fn problem(&self) -> Option<String> {
        let failed_run = || -> Option<String> {
            if let Some(failure) = &self.last_error {
                return Some(failure.to_string());
            }
            let exit = self.last_exit?;
            (!policy::succeeded(&self.unit.rare.success_exit_codes, exit))
                .then(|| format!("exited with {}", exit.describe()))
        };
        match self.state {
            State::Failed => Some(self.failure_text()),
            State::Exited => failed_run(),
            State::Backoff { .. }
            | State::Stopping {
                then: AfterStop::Recover,
                ..
            } => failed_run().map(|why| format!("{why}; restarting")),
            // Held because a dependency failed for good.
            State::Waiting => match self.last_error.as_deref() {
                Some(failure @ Failure::Blocked(_)) => Some(failure.to_string()),
                _ => None,
            },
            // Started again after a readiness that failed, not ready yet.
            State::Running { .. } if self.ready_after_ms.is_none() => match self
                .last_error
                .as_deref()
            {
                Some(failure @ Failure::NotReady(_)) => Some(format!("{failure}; trying again")),
                _ => None,
            },
            _ => None,
        }
    }

    fn failure_text(&self) -> String {
        self.last_error
            .as_ref()
            .map_or_else(|| "failed".to_string(), ToString::to_string)
    }

    /// How it ended, once it has ended for good (exited and kept down,
    /// failed, or a one-shot done): the moment an essential service ends
    /// zurg. `None` otherwise, a stop on request included.
    pub fn end(&self) -> Option<End> {
        match self.state {
            State::Exited | State::Done => Some(End::Exited(self.last_exit?)),
            State::Failed => Some(End::Failed {
                exit: self.last_exit,
                // Every way into `Failed` sets a reason; should one not,
                // the end must still end zurg.
                failure: self.last_error.as_deref().cloned().unwrap_or_else(|| {
                    self.last_exit.map_or_else(
                        || Failure::Spawn(self.failure_text()),
                        Failure::Unsuccessful,
                    )
                }),
            }),
            _ => None,
        }
    }

    /// The state as `zurg status` shows it: a long-running process that
    /// is not ready yet is `starting`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Running { .. } if self.ready_after_ms.is_none() => "starting",
            state => state.name(),
        }
    }

    fn arm(&mut self, at_ms: u64, out: &mut Vec<Action>) {
        self.timer_generation = self.timer_generation.wrapping_add(1);
        out.push(Action::ArmTimer {
            at_ms,
            generation: self.timer_generation,
        });
    }

    fn begin_stop(
        &mut self,
        pid: i32,
        since_ms: u64,
        then: AfterStop,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        self.state = State::Stopping {
            pid,
            since_ms,
            then,
            killed: false,
        };
        out.push(Action::Signal(self.unit.stop_signal));
        self.arm(now.saturating_add(self.unit.stop_timeout_ms), out);
    }

    /// Decides what one input means in the current state.
    pub fn step(&mut self, input: Input, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        match (self.state, input) {
            (
                State::Down | State::Exited | State::Done | State::Failed | State::Backoff { .. },
                Input::Start | Input::Restart,
            ) => {
                self.asked_start(now);
                out.push(Action::Spawn);
            }
            (State::Running { pid, since_ms }, Input::Stop) => {
                self.begin_stop(pid, since_ms, AfterStop::StayDown, now, &mut out)
            }
            (State::Running { pid, since_ms }, Input::Restart) => {
                self.begin_stop(pid, since_ms, AfterStop::Start, now, &mut out)
            }
            (
                State::Stopping {
                    pid,
                    since_ms,
                    killed,
                    ..
                },
                Input::Start | Input::Restart,
            ) => {
                self.state = State::Stopping {
                    pid,
                    since_ms,
                    then: AfterStop::Start,
                    killed,
                };
            }
            (
                State::Stopping {
                    pid,
                    since_ms,
                    killed,
                    ..
                },
                Input::Stop,
            ) => {
                self.state = State::Stopping {
                    pid,
                    since_ms,
                    then: AfterStop::StayDown,
                    killed,
                };
            }
            (State::Backoff { .. } | State::Starting, Input::Stop) => self.state = State::Down,
            (
                State::Down
                | State::Exited
                | State::Done
                | State::Failed
                | State::Backoff { .. }
                | State::PreStart { .. },
                Input::Verifying,
            ) => {
                self.state = State::Starting;
            }
            (State::Starting, Input::Verified) => out.push(Action::Spawn),
            // Released by the supervisor once its dependencies are ready
            // (or asked again: the supervisor holds it again if they are
            // not). Backoff and restart counting go on as they were.
            (State::Waiting, Input::Start | Input::Restart) => out.push(Action::Spawn),
            (State::Waiting, Input::Stop) => {
                self.state = State::Down;
                self.restarting = false;
            }
            (
                State::Down
                | State::Exited
                | State::Failed
                | State::Backoff { .. }
                | State::Starting
                | State::Waiting
                | State::PreStart { .. },
                Input::Wait { on },
            ) => {
                let was_waiting = self.state == State::Waiting;
                self.state = State::Waiting;
                let blocked = matches!(self.last_error.as_deref(), Some(Failure::Blocked(_)));
                if blocked {
                    self.last_error = None;
                }
                if !was_waiting || blocked {
                    out.push(Action::Emit(Event::Waiting { on }));
                }
            }
            (
                State::Down
                | State::Exited
                | State::Failed
                | State::Backoff { .. }
                | State::Starting
                | State::Waiting
                | State::PreStart { .. },
                Input::Block { reason },
            ) => {
                self.state = State::Waiting;
                let failure = Failure::Blocked(reason.clone());
                if self.last_error.as_deref() != Some(&failure) {
                    self.last_error = Some(Box::new(failure));
                    out.push(Action::Emit(Event::Blocked { reason }));
                }
            }
            (_, Input::Spawned { pid }) => {
                self.pre_start_passed = false;
                if self.restarting {
                    self.restarts = self.restarts.saturating_add(1);
                }
                self.restarting = false;
                // Without a readiness protocol a service is ready once started.
                self.ready_after_ms = self.ready_when_started().then_some(0);
                // A readiness that failed is a problem until one comes:
                // `status` keeps saying so while the retry is starting.
                let not_ready = matches!(self.last_error.as_deref(), Some(Failure::NotReady(_)));
                if !not_ready || self.ready_after_ms.is_some() {
                    self.last_error = None;
                }
                self.state = State::Running { pid, since_ms: now };
                out.push(Action::Emit(Event::Started { pid }));
            }
            (_, Input::Refused { reason }) => {
                self.restarting = false;
                self.pre_start_passed = false;
                self.last_error = Some(Box::new(Failure::Refused(reason.clone())));
                self.state = State::Failed;
                out.push(Action::Emit(Event::Refused { reason }));
            }
            (_, Input::SpawnFailed { error }) => {
                self.pre_start_passed = false;
                self.last_error = Some(Box::new(Failure::Spawn(error.clone())));
                out.push(Action::Emit(Event::SpawnFailed { error }));
                // Treated as an immediate failure: the restart policy and the
                // crash-loop backoff apply, so a missing binary is retried
                // slowly rather than in a tight loop.
                // `post_stop` runs after a start that failed too, as
                // systemd's ExecStopPost does: it cleans up what
                // `pre_start` or an earlier run left.
                let exit = Exit::Code(127);
                if !self.post_stop(exit, AfterPost::Policy { uptime_ms: 0 }, now, &mut out) {
                    self.after_exit(exit, 0, now, &mut out);
                }
            }
            (
                State::Running {
                    pid: running,
                    since_ms,
                },
                Input::Exited { pid, exit },
            ) if pid == running => {
                let uptime_ms = now.saturating_sub(since_ms);
                out.push(Action::Emit(Event::Exited {
                    pid,
                    exit,
                    uptime_ms,
                }));
                if !self.post_stop(exit, AfterPost::Policy { uptime_ms }, now, &mut out) {
                    self.after_exit(exit, uptime_ms, now, &mut out);
                }
            }
            (
                State::Running {
                    pid: running,
                    since_ms,
                },
                Input::ExitedForked { pid },
            ) if pid == running
                && self.unit.kind == Kind::Longrun
                && now.saturating_sub(since_ms) < policy::RESET_AFTER_MS =>
            {
                let exit = Exit::Code(0);
                out.push(Action::Emit(Event::Exited {
                    pid,
                    exit,
                    uptime_ms: now.saturating_sub(since_ms),
                }));
                self.last_exit = Some(exit);
                self.restarting = false;
                self.last_error = Some(Box::new(Failure::Forked));
                self.state = State::Failed;
                out.push(Action::Emit(Event::Forked { pid }));
            }
            // Not a quick exit, or while stopping: an ordinary exit 0.
            (_, Input::ExitedForked { pid }) => {
                return self.step(
                    Input::Exited {
                        pid,
                        exit: Exit::Code(0),
                    },
                    now,
                );
            }
            (
                State::Stopping {
                    pid: stopping,
                    since_ms,
                    then,
                    ..
                },
                Input::Exited { pid, exit },
            ) if pid == stopping => {
                self.last_exit = Some(exit);
                out.push(Action::Emit(Event::Stopped { pid, exit }));
                if !self.post_stop(exit, AfterPost::Stop { since_ms, then }, now, &mut out) {
                    self.after_stop(exit, since_ms, then, now, &mut out);
                }
            }
            (State::PreStart { .. }, Input::PreStart | Input::Start | Input::Restart) => {}
            (
                State::Down
                | State::Exited
                | State::Done
                | State::Failed
                | State::Backoff { .. }
                | State::Starting
                | State::Waiting,
                Input::PreStart,
            ) => {
                self.state = State::PreStart { timed_out: false };
                out.push(Action::RunHook {
                    kind: HookKind::PreStart,
                    exit: None,
                });
                self.arm(now.saturating_add(self.unit.rare.hook_timeout_ms), &mut out);
            }
            (State::PreStart { .. }, Input::Stop) => {
                self.state = State::Down;
                self.restarting = false;
                self.pre_start_passed = false;
                out.push(Action::KillHook(HookKind::PreStart));
            }
            (State::PreStart { timed_out: false }, Input::Timer { generation })
                if generation == self.timer_generation =>
            {
                self.state = State::PreStart { timed_out: true };
                out.push(Action::KillHook(HookKind::PreStart));
            }
            (
                State::PreStart { timed_out },
                Input::HookExited {
                    kind: HookKind::PreStart,
                    exit,
                    output,
                },
            ) => {
                if exit == Exit::Code(0) && !timed_out {
                    self.pre_start_passed = true;
                    // Past every timer of the hook.
                    self.timer_generation = self.timer_generation.wrapping_add(1);
                    out.push(Action::Spawn);
                } else {
                    let failure = Failure::Hook(Box::new(HookFailure {
                        kind: HookKind::PreStart,
                        exit,
                        timed_out_ms: timed_out.then_some(self.unit.rare.hook_timeout_ms),
                        output,
                    }));
                    out.push(Action::Emit(Event::SpawnFailed {
                        error: failure.to_string(),
                    }));
                    self.last_error = Some(Box::new(failure));
                    self.pre_start_passed = false;
                    self.state = State::Down;
                    // A failed start: restart policy, backoff, start limit,
                    // after `post_stop` (it cleans up after `pre_start`).
                    if !self.post_stop(exit, AfterPost::FailedStart, now, &mut out) {
                        self.after_failed_run(exit, 0, now, &mut out);
                    }
                }
            }
            (
                State::PostStop {
                    exit,
                    then,
                    timed_out,
                },
                input @ (Input::Stop | Input::Start | Input::Restart),
            ) => {
                // Asked meanwhile: once the hook ends, as asked.
                let since_ms = match then {
                    AfterPost::Stop { since_ms, .. } => since_ms,
                    AfterPost::Policy { .. } | AfterPost::FailedStart => now,
                };
                let then = if input == Input::Stop {
                    AfterStop::StayDown
                } else {
                    AfterStop::Start
                };
                self.state = State::PostStop {
                    exit,
                    then: AfterPost::Stop { since_ms, then },
                    timed_out,
                };
            }
            (
                State::PostStop {
                    exit,
                    then,
                    timed_out: false,
                },
                Input::Timer { generation },
            ) if generation == self.timer_generation => {
                self.state = State::PostStop {
                    exit,
                    then,
                    timed_out: true,
                };
                out.push(Action::KillHook(HookKind::PostStop));
            }
            (
                State::PostStop { exit, then, .. },
                Input::HookExited {
                    kind: HookKind::PostStop,
                    ..
                },
            ) => {
                // Past every timer of the hook.
                self.timer_generation = self.timer_generation.wrapping_add(1);
                self.state = State::Down;
                match then {
                    AfterPost::Policy { uptime_ms } => {
                        self.after_exit(exit, uptime_ms, now, &mut out)
                    }
                    AfterPost::FailedStart => self.after_failed_run(exit, 0, now, &mut out),
                    AfterPost::Stop { since_ms, then } => {
                        self.after_stop(exit, since_ms, then, now, &mut out)
                    }
                }
            }

            (
                State::Running {
                    pid: running,
                    since_ms,
                },
                Input::Ready { pid },
            ) if pid == running && self.ready_after_ms.is_none() => {
                let after_ms = now.saturating_sub(since_ms);
                self.ready_after_ms = Some(after_ms);
                if matches!(self.last_error.as_deref(), Some(Failure::NotReady(_))) {
                    self.last_error = None;
                }
                out.push(Action::Emit(Event::Ready { pid, after_ms }));
            }
            (
                State::Running {
                    pid: running,
                    since_ms,
                },
                Input::NotReady { pid, reason },
            ) if pid == running && self.ready_after_ms.is_none() => {
                self.last_error = Some(Box::new(Failure::NotReady(reason.clone())));
                out.push(Action::Emit(Event::NotReady { pid, reason }));
                self.begin_stop(pid, since_ms, AfterStop::Recover, now, &mut out);
            }
            (
                State::Running {
                    pid: running,
                    since_ms,
                },
                Input::Unhealthy { pid, reason },
            ) if pid == running => {
                self.last_error = Some(Box::new(Failure::Unhealthy(reason.clone())));
                out.push(Action::Emit(Event::Unhealthy { pid, reason }));
                self.begin_stop(pid, since_ms, AfterStop::Recover, now, &mut out);
            }
            (State::Backoff { .. }, Input::Timer { generation })
                if generation == self.timer_generation =>
            {
                // Counted against the start limit when it was planned.
                self.restarting = true;
                out.push(Action::Spawn);
            }
            (
                State::Stopping {
                    pid,
                    since_ms,
                    then,
                    killed: false,
                },
                Input::Timer { generation },
            ) if generation == self.timer_generation => {
                self.state = State::Stopping {
                    pid,
                    since_ms,
                    then,
                    killed: true,
                };
                out.push(Action::Signal(crate::sig::SIGKILL));
                out.push(Action::Emit(Event::Killed { pid }));
            }
            _ => {}
        }
        out
    }

    /// Runs `post_stop` if the unit has one, the service waiting in
    /// `PostStop` until it ends; false when there is none.
    fn post_stop(&mut self, exit: Exit, then: AfterPost, now: u64, out: &mut Vec<Action>) -> bool {
        if self.unit.rare.post_stop.is_none() {
            return false;
        }
        self.last_exit = Some(exit);
        self.state = State::PostStop {
            exit,
            then,
            timed_out: false,
        };
        out.push(Action::RunHook {
            kind: HookKind::PostStop,
            exit: Some(exit),
        });
        self.arm(now.saturating_add(self.unit.rare.hook_timeout_ms), out);
        true
    }

    /// The process ended after a stop (and its `post_stop` with it).
    fn after_stop(
        &mut self,
        exit: Exit,
        since_ms: u64,
        then: AfterStop,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        self.state = State::Down;
        match then {
            AfterStop::StayDown => {}
            AfterStop::Start => {
                // Asked for: a fresh start, not part of a loop.
                self.asked_start(now);
                self.restarting = true;
                out.push(Action::Spawn);
            }
            AfterStop::Recover => {
                let uptime_ms = now.saturating_sub(since_ms);
                self.after_failed_run(exit, uptime_ms, now, out);
            }
        }
    }

    /// A start someone asked for (start, restart, reload): the crash-loop
    /// streak and the start limit begin anew, with this start counted.
    fn asked_start(&mut self, now: u64) {
        self.backoff.reset();
        self.starts.reset();
        self.starts.admit(self.unit.rare.start_limit, now);
        self.restarting = false;
    }

    fn after_exit(&mut self, exit: Exit, uptime_ms: u64, now: u64, out: &mut Vec<Action>) {
        self.last_exit = Some(exit);
        let success = policy::succeeded(&self.unit.rare.success_exit_codes, exit);
        if self.unit.kind == Kind::Oneshot && success {
            self.backoff.reset();
            self.restarting = false;
            self.state = State::Done;
            out.push(Action::Emit(Event::Completed { exit }));
            return;
        }
        if !policy::should_restart(self.unit.restart, success) {
            match self.unit.kind {
                Kind::Longrun => {
                    self.state = State::Exited;
                    out.push(Action::Emit(Event::Done { exit }));
                }
                Kind::Oneshot => {
                    // A spawn failure keeps its own, better reason.
                    let failure = self
                        .last_error
                        .take()
                        .map_or(Failure::Unsuccessful(exit), |f| *f);
                    self.fail(failure, out);
                }
            }
            return;
        }
        self.retry(uptime_ms, now, RunEnded::ByItself, out);
    }

    /// Zurg stopped a process that failed (not ready, unhealthy): as after
    /// a failed run, whatever its exit code.
    fn after_failed_run(&mut self, exit: Exit, uptime_ms: u64, now: u64, out: &mut Vec<Action>) {
        if !policy::should_restart(self.unit.restart, false) {
            let failure = self
                .last_error
                .take()
                .map_or(Failure::Unsuccessful(exit), |f| *f);
            self.fail(failure, out);
            return;
        }
        self.retry(uptime_ms, now, RunEnded::Failed, out);
    }

    /// Starts again after the restart delay and backoff, unless that start
    /// would pass the start limit.
    fn retry(&mut self, uptime_ms: u64, now: u64, run: RunEnded, out: &mut Vec<Action>) {
        let delay_ms = self
            .unit
            .rare
            .restart_delay_ms
            .saturating_add(self.backoff.after_run(uptime_ms, self.unit.rare.backoff));
        let at = now.saturating_add(delay_ms);
        if !self.starts.admit(self.unit.rare.start_limit, at) {
            if let Some(limit) = self.unit.rare.start_limit {
                // The reason the run before failed. A run that exited by
                // itself may still carry a readiness failure of the run
                // before it (kept for `status`), which is not its own.
                let after = match run {
                    RunEnded::Failed => self.last_error.take(),
                    RunEnded::ByItself => self
                        .last_error
                        .take()
                        .filter(|f| matches!(**f, Failure::Spawn(_))),
                };
                self.fail(
                    Failure::StartLimit {
                        burst: limit.burst,
                        interval_ms: limit.interval_ms,
                        after,
                    },
                    out,
                );
                return;
            }
        }
        out.push(Action::Emit(Event::Restarting { delay_ms }));
        if delay_ms == 0 {
            self.state = State::Down;
            self.restarting = true;
            out.push(Action::Spawn);
        } else {
            self.state = State::Backoff { until_ms: at };
            self.arm(at, out);
        }
    }

    /// Gives up until asked again.
    fn fail(&mut self, failure: Failure, out: &mut Vec<Action>) {
        self.restarting = false;
        self.last_error = Some(Box::new(failure.clone()));
        self.state = State::Failed;
        out.push(Action::Emit(Event::Failed { failure }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::RestartPolicy;
    use std::path::PathBuf;

    fn unit(restart: RestartPolicy) -> Unit {
        Unit {
            name: "svc".into(),
            exec: PathBuf::from("/bin/true").into(),
            args: Box::default(),
            depends_on: Box::default(),
            restart,
            kind: crate::unit::Kind::Longrun,
            essential: false,
            stop_signal: crate::sig::SIGTERM,
            stop_timeout_ms: 1000,
            port: 0,
            port_auto: false,
            socket: false,
            instance: None,
            rare: Default::default(),
        }
    }

    fn with_rare(mut u: Unit, set: impl FnOnce(&mut crate::unit::Rare)) -> Unit {
        set(&mut u.rare);
        u
    }

    fn exited(pid: i32, exit: Exit) -> Input {
        Input::Exited { pid, exit }
    }

    fn not_ready(pid: i32, reason: &str) -> Input {
        Input::NotReady {
            pid,
            reason: reason.into(),
        }
    }

    fn unhealthy(pid: i32, reason: &str) -> Input {
        Input::Unhealthy {
            pid,
            reason: reason.into(),
        }
    }

    fn running(restart: RestartPolicy) -> Service {
        let mut s = Service::new(unit(restart));
        assert_eq!(s.step(Input::Start, 0), vec![Action::Spawn]);
        s.step(Input::Spawned { pid: 10 }, 0);
        s
    }

    #[test]
    fn start_spawns_and_reports_pid() {
        let mut s = Service::new(unit(RestartPolicy::Always));
        assert_eq!(s.step(Input::Start, 0), vec![Action::Spawn]);
        assert_eq!(
            s.step(Input::Spawned { pid: 7 }, 5),
            vec![Action::Emit(Event::Started { pid: 7 })]
        );
        assert_eq!(
            s.state,
            State::Running {
                pid: 7,
                since_ms: 5
            }
        );
        // starting a running service does nothing
        assert!(s.step(Input::Start, 6).is_empty());
    }

    #[test]
    fn healthy_exit_restarts_at_once_and_counts() {
        let mut s = running(RestartPolicy::Always);
        let a = s.step(exited(10, Exit::Signal(9)), 20_000);
        assert_eq!(a.last(), Some(&Action::Spawn));
        s.step(Input::Spawned { pid: 11 }, 20_000);
        assert_eq!(s.restarts, 1);
        assert_eq!(s.last_exit, Some(Exit::Signal(9)));
    }

    #[test]
    fn exit_of_another_pid_is_ignored() {
        let mut s = running(RestartPolicy::Always);
        assert!(s.step(exited(99, Exit::Code(0)), 1).is_empty());
        assert_eq!(s.state.pid(), Some(10));
    }

    #[test]
    fn never_and_on_failure() {
        let mut s = running(RestartPolicy::Never);
        let a = s.step(exited(10, Exit::Code(1)), 1);
        assert!(a.contains(&Action::Emit(Event::Done {
            exit: Exit::Code(1)
        })));
        assert_eq!(s.state, State::Exited);

        let mut s = running(RestartPolicy::OnFailure);
        s.step(exited(10, Exit::Code(0)), 1);
        assert_eq!(s.state, State::Exited);

        let mut s = running(RestartPolicy::OnFailure);
        let a = s.step(exited(10, Exit::Code(2)), 1);
        assert_eq!(a.last(), Some(&Action::Spawn));
    }

    #[test]
    fn crash_loop_backs_off_with_timer() {
        let mut s = running(RestartPolicy::Always);
        s.step(exited(10, Exit::Code(1)), 1);
        s.step(Input::Spawned { pid: 11 }, 1);
        let a = s.step(exited(11, Exit::Code(1)), 2);
        assert_eq!(s.state, State::Backoff { until_ms: 102 });
        let Some(Action::ArmTimer {
            at_ms: 102,
            generation,
        }) = a.last().cloned()
        else {
            panic!("no timer: {a:?}")
        };
        assert!(s
            .step(
                Input::Timer {
                    generation: generation + 1
                },
                102
            )
            .is_empty());
        assert_eq!(
            s.step(Input::Timer { generation }, 102),
            vec![Action::Spawn]
        );
    }

    #[test]
    fn stop_sends_signal_then_kill_at_timeout() {
        let mut s = running(RestartPolicy::Always);
        let a = s.step(Input::Stop, 100);
        assert_eq!(a[0], Action::Signal(crate::sig::SIGTERM));
        let Action::ArmTimer {
            at_ms: 1100,
            generation,
        } = a[1]
        else {
            panic!("{a:?}")
        };
        let a = s.step(Input::Timer { generation }, 1100);
        assert_eq!(a[0], Action::Signal(crate::sig::SIGKILL));
        let a = s.step(exited(10, Exit::Signal(9)), 1101);
        assert_eq!(
            a,
            vec![Action::Emit(Event::Stopped {
                pid: 10,
                exit: Exit::Signal(9)
            })]
        );
        assert_eq!(s.state, State::Down);
    }

    #[test]
    fn restart_request_stops_then_starts_without_backoff() {
        let mut s = running(RestartPolicy::Never);
        s.step(Input::Restart, 1);
        let a = s.step(exited(10, Exit::Signal(15)), 2);
        assert_eq!(a.last(), Some(&Action::Spawn));
        s.step(Input::Spawned { pid: 12 }, 2);
        assert_eq!(s.state.pid(), Some(12));
    }

    #[test]
    fn stop_during_backoff_cancels_restart() {
        let mut s = running(RestartPolicy::Always);
        s.step(exited(10, Exit::Code(1)), 1);
        s.step(Input::Spawned { pid: 11 }, 1);
        let a = s.step(exited(11, Exit::Code(1)), 2);
        let Some(Action::ArmTimer { generation, .. }) = a.last().cloned() else {
            panic!()
        };
        s.step(Input::Stop, 3);
        assert_eq!(s.state, State::Down);
        assert!(s.step(Input::Timer { generation }, 200).is_empty());
    }

    #[test]
    fn a_refused_start_fails_without_a_restart_loop() {
        let mut s = Service::new(unit(RestartPolicy::Always));
        s.step(Input::Start, 0);
        let a = s.step(
            Input::Refused {
                reason: "md5 mismatch".into(),
            },
            0,
        );
        assert_eq!(
            a,
            vec![Action::Emit(Event::Refused {
                reason: "md5 mismatch".into()
            })]
        );
        assert_eq!(s.state, State::Failed);
        assert!(s.step(Input::Timer { generation: 1 }, 100_000).is_empty());
        assert_eq!(s.step(Input::Start, 1), vec![Action::Spawn]);
    }

    #[test]
    fn a_quick_exit_leaving_its_group_fails_without_a_restart() {
        let mut s = running(RestartPolicy::Always);
        let a = s.step(Input::ExitedForked { pid: 10 }, 50);
        assert_eq!(
            a,
            vec![
                Action::Emit(Event::Exited {
                    pid: 10,
                    exit: Exit::Code(0),
                    uptime_ms: 50
                }),
                Action::Emit(Event::Forked { pid: 10 })
            ]
        );
        assert_eq!(s.state, State::Failed);
        assert_eq!(s.last_error.as_deref(), Some(&Failure::Forked));
        assert_eq!(
            s.last_error.as_ref().map(ToString::to_string).as_deref(),
            Some("it forked into the background and exited; run it in the foreground")
        );
        // asked again, it starts again, and a good start clears the reason
        assert_eq!(s.step(Input::Start, 60), vec![Action::Spawn]);
        s.step(Input::Spawned { pid: 11 }, 60);
        assert_eq!(s.last_error, None);
        // after a long run, leaving helpers behind is an ordinary exit
        let a = s.step(Input::ExitedForked { pid: 11 }, 60 + policy::RESET_AFTER_MS);
        assert_eq!(a.last(), Some(&Action::Spawn));
    }

    #[test]
    fn a_spawn_that_waits_for_its_binary_to_be_hashed() {
        let mut s = Service::new(unit(RestartPolicy::Always));
        assert_eq!(s.step(Input::Start, 0), vec![Action::Spawn]);
        assert!(s.step(Input::Verifying, 0).is_empty());
        assert_eq!(s.state, State::Starting);
        assert_eq!(s.state.name(), "starting");
        assert!(s.state.is_down(), "no process while the binary is hashed");
        // Asked again meanwhile: still one spawn, once the hash is in.
        assert!(s.step(Input::Start, 1).is_empty());
        assert!(s.step(Input::Restart, 1).is_empty());
        assert_eq!(s.step(Input::Verified, 2), vec![Action::Spawn]);
        s.step(Input::Spawned { pid: 9 }, 2);
        assert_eq!(
            s.state,
            State::Running {
                pid: 9,
                since_ms: 2
            }
        );
        // Stopped while hashing: the late result starts nothing.
        let mut s = Service::new(unit(RestartPolicy::Always));
        s.step(Input::Start, 0);
        s.step(Input::Verifying, 0);
        assert!(s.step(Input::Stop, 1).is_empty());
        assert_eq!(s.state, State::Down);
        assert!(s.step(Input::Verified, 2).is_empty());
        assert_eq!(s.state, State::Down);
    }

    #[test]
    fn failures_are_kept_until_a_good_start() {
        let mut s = Service::new(unit(RestartPolicy::Always));
        s.step(Input::Start, 0);
        s.step(
            Input::Refused {
                reason: "md5 mismatch".into(),
            },
            0,
        );
        assert_eq!(
            s.last_error.as_ref().map(ToString::to_string).as_deref(),
            Some("refused to start: md5 mismatch")
        );
        s.step(Input::Start, 1);
        s.step(
            Input::SpawnFailed {
                error: "cannot change to cwd /x: No such file or directory".into(),
            },
            1,
        );
        assert_eq!(
            s.last_error.as_deref(),
            Some(&Failure::Spawn(
                "cannot change to cwd /x: No such file or directory".into()
            ))
        );
        s.step(Input::Spawned { pid: 3 }, 2);
        assert_eq!(s.last_error, None);
    }

    #[test]
    fn a_successor_ignores_its_predecessors_timers() {
        let mut old = running(RestartPolicy::Always);
        let Some(Action::ArmTimer {
            generation: old_timer,
            ..
        }) = old.step(Input::Stop, 0).last().cloned()
        else {
            panic!("no stop timer")
        };
        let mut s = Service::succeeding(unit(RestartPolicy::Always), &old);
        s.step(Input::Start, 1);
        s.step(Input::Spawned { pid: 20 }, 1);
        s.step(exited(20, Exit::Code(1)), 2);
        s.step(Input::Spawned { pid: 21 }, 2);
        let a = s.step(exited(21, Exit::Code(1)), 3);
        let Some(Action::ArmTimer { generation, .. }) = a.last().cloned() else {
            panic!("{a:?}")
        };
        // the old service's stop timer, still in the heap, is not the new
        // service's backoff timer
        assert_ne!(generation, old_timer);
        assert!(s
            .step(
                Input::Timer {
                    generation: old_timer
                },
                200
            )
            .is_empty());
        assert_eq!(
            s.step(Input::Timer { generation }, 200),
            vec![Action::Spawn]
        );
    }

    #[test]
    fn waiting_for_dependencies_then_released() {
        let mut s = Service::new(unit(RestartPolicy::Always));
        assert_eq!(s.step(Input::Start, 0), vec![Action::Spawn]);
        // the supervisor holds the spawn
        let on = vec!["db".to_string()];
        assert_eq!(
            s.step(Input::Wait { on: on.clone() }, 0),
            vec![Action::Emit(Event::Waiting { on: on.clone() })]
        );
        assert_eq!(s.state, State::Waiting);
        assert_eq!(s.state.name(), "waiting");
        assert!(s.state.is_down());
        // held again: no second event
        assert!(s.step(Input::Wait { on: on.clone() }, 1).is_empty());
        // a dependency failed for good: said once, kept as the reason
        let reason = "migrate failed (exit 1)".to_string();
        assert_eq!(
            s.step(
                Input::Block {
                    reason: reason.clone()
                },
                2
            ),
            vec![Action::Emit(Event::Blocked {
                reason: reason.clone()
            })]
        );
        assert!(s.step(Input::Block { reason }, 2).is_empty());
        assert_eq!(
            s.last_error.as_ref().map(ToString::to_string).as_deref(),
            Some("not started: migrate failed (exit 1)")
        );
        // the dependency runs again: waiting, the reason gone
        assert_eq!(s.step(Input::Wait { on: on.clone() }, 3).len(), 1);
        assert_eq!(s.last_error, None);
        // released
        assert_eq!(s.step(Input::Start, 4), vec![Action::Spawn]);
        s.step(Input::Spawned { pid: 5 }, 4);
        assert_eq!(s.state.pid(), Some(5));
        // a crash restart held while waiting still counts as a restart
        let a = s.step(exited(5, Exit::Code(1)), 20_000);
        assert_eq!(a.last(), Some(&Action::Spawn));
        s.step(Input::Wait { on }, 20_000);
        assert!(s.step(Input::Timer { generation: 99 }, 30_000).is_empty());
        s.step(Input::Start, 30_000);
        s.step(Input::Spawned { pid: 6 }, 30_000);
        assert_eq!(s.restarts, 1);
        // stopped while waiting: down, and nothing starts it by itself
        let mut s = Service::new(unit(RestartPolicy::Always));
        s.step(Input::Wait { on: vec![] }, 0);
        assert!(s.step(Input::Stop, 1).is_empty());
        assert_eq!(s.state, State::Down);
    }

    #[test]
    fn spawn_failure_follows_policy() {
        let mut s = Service::new(unit(RestartPolicy::OnFailure));
        s.step(Input::Start, 0);
        let a = s.step(
            Input::SpawnFailed {
                error: "not found".into(),
            },
            0,
        );
        assert_eq!(
            a[0],
            Action::Emit(Event::SpawnFailed {
                error: "not found".into()
            })
        );
        assert_eq!(a.last(), Some(&Action::Spawn));
        let a = s.step(
            Input::SpawnFailed {
                error: "not found".into(),
            },
            0,
        );
        assert!(matches!(a.last(), Some(Action::ArmTimer { .. })));
    }

    fn hooked() -> Service {
        let mut u = unit(RestartPolicy::Always);
        u.rare.pre_start = Some(vec!["/bin/pre".into()]);
        u.rare.post_stop = Some(vec!["/bin/post".into()]);
        u.rare.hook_timeout_ms = 500;
        Service::new(u)
    }

    fn hook_exited(kind: HookKind, exit: Exit, output: Option<&str>) -> Input {
        Input::HookExited {
            kind,
            exit,
            output: output.map(String::from),
        }
    }

    #[test]
    fn pre_start_runs_before_the_spawn_and_its_failure_is_a_failed_start() {
        let mut s = hooked();
        assert_eq!(s.step(Input::Start, 0), [Action::Spawn]);
        // The supervisor finds the hook due (dependencies held first).
        assert!(s.pre_start_due());
        let a = s.step(Input::PreStart, 0);
        assert_eq!(
            a[0],
            Action::RunHook {
                kind: HookKind::PreStart,
                exit: None
            }
        );
        assert!(matches!(a[1], Action::ArmTimer { at_ms: 500, .. }));
        assert_eq!(s.state_name(), "starting");
        assert_eq!(
            s.step(hook_exited(HookKind::PreStart, Exit::Code(0), None), 10),
            [Action::Spawn]
        );
        assert!(!s.pre_start_due());
        s.step(Input::Spawned { pid: 7 }, 10);
        assert!(s.pre_start_due(), "again before the next start");

        // A failing hook: the start failed, with its exit and last line.
        let mut s = hooked();
        s.step(Input::Start, 0);
        s.step(Input::PreStart, 0);
        let a = s.step(
            hook_exited(HookKind::PreStart, Exit::Code(3), Some("db not reachable")),
            20,
        );
        let error = "pre_start exited with code 3: db not reachable".to_string();
        assert_eq!(
            a[0],
            Action::Emit(Event::SpawnFailed {
                error: error.clone()
            })
        );
        assert_eq!(s.last_error.as_ref().map(ToString::to_string), Some(error));
        // post_stop cleans up first (as after any failed start), then it
        // is retried by the policy (the first retry at once), hook first.
        assert!(a.contains(&Action::RunHook {
            kind: HookKind::PostStop,
            exit: Some(Exit::Code(3))
        }));
        let a = s.step(hook_exited(HookKind::PostStop, Exit::Code(0), None), 25);
        assert_eq!(a.last(), Some(&Action::Spawn));
        assert!(s.pre_start_due());
    }

    #[test]
    fn a_hung_pre_start_is_killed_and_a_stop_kills_it() {
        let mut s = hooked();
        s.step(Input::Start, 0);
        let a = s.step(Input::PreStart, 0);
        let Some(Action::ArmTimer { generation, .. }) = a.get(1).cloned() else {
            panic!("{a:?}")
        };
        assert_eq!(
            s.step(Input::Timer { generation }, 500),
            [Action::KillHook(HookKind::PreStart)]
        );
        s.step(hook_exited(HookKind::PreStart, Exit::Signal(9), None), 501);
        assert_eq!(
            s.last_error.as_ref().map(ToString::to_string).as_deref(),
            Some("pre_start did not finish within 500 ms (hook_timeout_ms) and was killed")
        );

        let mut s = hooked();
        s.step(Input::Start, 0);
        s.step(Input::PreStart, 0);
        assert_eq!(
            s.step(Input::Stop, 5),
            [Action::KillHook(HookKind::PreStart)]
        );
        assert_eq!(s.state, State::Down);
        // Its exit, once killed, changes nothing.
        assert!(s
            .step(hook_exited(HookKind::PreStart, Exit::Signal(9), None), 6)
            .is_empty());
        assert_eq!(s.state, State::Down);
    }

    #[test]
    fn post_stop_runs_after_every_exit_and_the_restart_waits_for_it() {
        let mut s = hooked();
        s.step(Input::Spawned { pid: 7 }, 0);
        let a = s.step(exited(7, Exit::Code(2)), 100);
        assert_eq!(
            a[1],
            Action::RunHook {
                kind: HookKind::PostStop,
                exit: Some(Exit::Code(2))
            }
        );
        assert!(!a.contains(&Action::Spawn), "{a:?}");
        assert_eq!(s.state_name(), "stopping");
        let a = s.step(hook_exited(HookKind::PostStop, Exit::Code(0), None), 110);
        assert_eq!(a.last(), Some(&Action::Spawn));

        // After a stop, and a stop asked while it runs keeps it down.
        let mut s = hooked();
        s.step(Input::Spawned { pid: 8 }, 0);
        s.step(Input::Restart, 10);
        let a = s.step(exited(8, Exit::Signal(15)), 20);
        assert!(a.contains(&Action::RunHook {
            kind: HookKind::PostStop,
            exit: Some(Exit::Signal(15))
        }));
        s.step(Input::Stop, 21);
        assert!(s
            .step(hook_exited(HookKind::PostStop, Exit::Code(1), None), 30)
            .is_empty());
        assert_eq!(s.state, State::Down);
    }

    #[test]
    fn post_stop_runs_after_a_start_that_failed_then_the_policy_applies() {
        // The binary could not be started: post_stop gets 127.
        let mut s = hooked();
        let a = s.step(
            Input::SpawnFailed {
                error: "cannot run /bin/x".into(),
            },
            0,
        );
        assert!(a.contains(&Action::RunHook {
            kind: HookKind::PostStop,
            exit: Some(Exit::Code(127))
        }));
        assert!(!a.contains(&Action::Spawn), "{a:?}");
        assert_eq!(s.state_name(), "stopping");
        // Then the policy: the first retry at once, the reason kept.
        let a = s.step(hook_exited(HookKind::PostStop, Exit::Code(0), None), 5);
        assert_eq!(a.last(), Some(&Action::Spawn), "{a:?}");
        assert_eq!(
            s.last_error.as_ref().map(ToString::to_string).as_deref(),
            Some("cannot run /bin/x")
        );

        // pre_start failed: post_stop gets its exit, then a failed start.
        let mut s = hooked();
        s.step(Input::Start, 0);
        s.step(Input::PreStart, 0);
        let a = s.step(hook_exited(HookKind::PreStart, Exit::Code(3), None), 5);
        assert!(a.contains(&Action::RunHook {
            kind: HookKind::PostStop,
            exit: Some(Exit::Code(3))
        }));
        let a = s.step(hook_exited(HookKind::PostStop, Exit::Code(0), None), 6);
        assert_eq!(a.last(), Some(&Action::Spawn), "{a:?}");
        assert!(matches!(s.last_error.as_deref(), Some(Failure::Hook(_))));

        // Without a restart: once post_stop ends, where it would be
        // without the hook.
        let failed = || Input::SpawnFailed {
            error: "cannot run /bin/x".into(),
        };
        let mut bare = Service::new(unit(RestartPolicy::Never));
        bare.step(failed(), 0);
        let mut u = unit(RestartPolicy::Never);
        u.rare.post_stop = Some(vec!["/bin/post".into()]);
        let mut s = Service::new(u);
        s.step(failed(), 0);
        assert_eq!(s.state_name(), "stopping");
        s.step(hook_exited(HookKind::PostStop, Exit::Code(0), None), 5);
        assert_eq!(s.state, bare.state);
        assert_eq!(s.problem(), bare.problem());
    }

    fn oneshot(restart: RestartPolicy) -> Unit {
        Unit {
            kind: crate::unit::Kind::Oneshot,
            ..unit(restart)
        }
    }

    fn started(u: Unit) -> Service {
        let mut s = Service::new(u);
        assert_eq!(s.step(Input::Start, 0), vec![Action::Spawn]);
        s.step(Input::Spawned { pid: 10 }, 0);
        s
    }

    fn timer_of(actions: &[Action]) -> Option<(u64, u64)> {
        actions.iter().find_map(|a| match a {
            Action::ArmTimer { at_ms, generation } => Some((*at_ms, *generation)),
            _ => None,
        })
    }

    #[test]
    fn a_oneshot_that_succeeds_is_done_and_never_restarted() {
        let mut s = started(oneshot(RestartPolicy::Always));
        assert!(!s.satisfies_dependants(), "running is not done yet");
        let a = s.step(exited(10, Exit::Code(0)), 50);
        assert_eq!(
            a.last(),
            Some(&Action::Emit(Event::Completed {
                exit: Exit::Code(0)
            }))
        );
        assert!(!a.contains(&Action::Spawn));
        assert_eq!(s.state, State::Done);
        assert_eq!(s.state_name(), "done");
        assert!(s.satisfies_dependants());
        assert!(s.end().is_some());
        assert_eq!(s.problem(), None);
        assert_eq!(s.cannot_satisfy(), None);
        assert_eq!(s.end().map(|e| e.exit_code()), Some(0));
        // nothing brings it back but a start, which runs it again
        assert!(s.step(Input::Timer { generation: 1 }, 100_000).is_empty());
        assert!(s.step(Input::Stop, 100_001).is_empty());
        assert_eq!(s.state, State::Done);
        assert_eq!(s.step(Input::Start, 100_002), vec![Action::Spawn]);
        s.step(Input::Spawned { pid: 11 }, 100_002);
        assert!(!s.satisfies_dependants());
        assert_eq!(s.restarts, 0, "a start asked for is not a restart");
        // restart does the same
        s.step(exited(11, Exit::Code(0)), 100_003);
        assert_eq!(s.step(Input::Restart, 100_004), vec![Action::Spawn]);
    }

    #[test]
    fn a_oneshot_that_fails_is_failed_with_its_exit_when_kept_down() {
        let mut s = started(oneshot(RestartPolicy::Never));
        let a = s.step(exited(10, Exit::Code(3)), 5);
        let failure = Failure::Unsuccessful(Exit::Code(3));
        assert_eq!(
            a.last(),
            Some(&Action::Emit(Event::Failed {
                failure: failure.clone()
            }))
        );
        assert_eq!(s.state, State::Failed);
        assert_eq!(s.last_error.as_deref(), Some(&failure));
        assert_eq!(s.problem().as_deref(), Some("exited with code 3"));
        assert_eq!(s.cannot_satisfy().as_deref(), Some("exited with code 3"));
        assert!(!s.satisfies_dependants());
        assert_eq!(s.end().map(|e| e.exit_code()), Some(3));
        // a start runs it again, and a success clears the failure
        assert_eq!(s.step(Input::Start, 6), vec![Action::Spawn]);
        s.step(Input::Spawned { pid: 11 }, 6);
        assert_eq!(s.last_error, None);
        s.step(exited(11, Exit::Code(0)), 7);
        assert_eq!(s.state, State::Done);
    }

    #[test]
    fn a_failed_oneshot_is_retried_per_restart_with_backoff() {
        let mut s = started(oneshot(RestartPolicy::OnFailure));
        let a = s.step(exited(10, Exit::Code(1)), 5);
        assert_eq!(a.last(), Some(&Action::Spawn));
        s.step(Input::Spawned { pid: 11 }, 5);
        let a = s.step(exited(11, Exit::Code(1)), 6);
        assert_eq!(timer_of(&a).map(|t| t.0), Some(106));
        assert_eq!(s.state, State::Backoff { until_ms: 106 });
        assert_eq!(
            s.problem().as_deref(),
            Some("exited with code 1; restarting")
        );
        // still on its way: `wait` keeps waiting
        assert_eq!(s.cannot_satisfy(), None);
        // a signal is never success, even with the code it would map to
        let mut s = started(with_rare(oneshot(RestartPolicy::Never), |r| {
            r.success_exit_codes = vec![0, 143].into()
        }));
        s.step(exited(10, Exit::Signal(15)), 1);
        assert_eq!(s.state, State::Failed);
        assert_eq!(s.end().map(|e| e.exit_code()), Some(143));
    }

    #[test]
    fn a_oneshot_that_cannot_be_spawned_keeps_the_spawn_error() {
        let mut s = Service::new(oneshot(RestartPolicy::Never));
        s.step(Input::Start, 0);
        let a = s.step(
            Input::SpawnFailed {
                error: "exec /x: not found".into(),
            },
            0,
        );
        assert_eq!(s.state, State::Failed);
        assert_eq!(
            a.last(),
            Some(&Action::Emit(Event::Failed {
                failure: Failure::Spawn("exec /x: not found".into())
            }))
        );
        assert_eq!(s.end().map(|e| e.exit_code()), Some(127));
    }

    #[test]
    fn success_exit_codes_decide_on_failure() {
        let u = with_rare(unit(RestartPolicy::OnFailure), |r| {
            r.success_exit_codes = vec![0, 3].into()
        });
        let mut s = started(u.clone());
        let a = s.step(exited(10, Exit::Code(3)), 1);
        assert_eq!(
            a.last(),
            Some(&Action::Emit(Event::Done {
                exit: Exit::Code(3)
            }))
        );
        assert_eq!(s.state, State::Exited);
        assert_eq!(s.problem(), None, "a listed code is a success");
        let mut s = started(u.clone());
        assert_eq!(
            s.step(exited(10, Exit::Code(4)), 1).last(),
            Some(&Action::Spawn)
        );
        let mut s = started(u);
        assert_eq!(
            s.step(exited(10, Exit::Signal(15)), 1).last(),
            Some(&Action::Spawn)
        );
        // a long-running service kept down after a failure is a problem
        let mut s = started(unit(RestartPolicy::Never));
        s.step(exited(10, Exit::Code(1)), 1);
        assert_eq!(s.state, State::Exited);
        assert_eq!(s.problem().as_deref(), Some("exited with code 1"));
        assert!(s.cannot_satisfy().is_some());
    }

    #[test]
    fn the_start_limit_fails_a_loop_until_started_again() {
        let u = with_rare(unit(RestartPolicy::Always), |r| {
            r.start_limit = Some(crate::unit::StartLimit {
                burst: 3,
                interval_ms: 10_000,
            })
        });
        let mut s = started(u);
        // start 1 at 0; restarts at 1 (at once) and 2 + 100 (backoff)
        assert_eq!(
            s.step(exited(10, Exit::Code(1)), 1).last(),
            Some(&Action::Spawn)
        );
        s.step(Input::Spawned { pid: 11 }, 1);
        let a = s.step(exited(11, Exit::Code(1)), 2);
        let (_, generation) = timer_of(&a).unwrap();
        assert_eq!(
            s.step(Input::Timer { generation }, 102),
            vec![Action::Spawn]
        );
        s.step(Input::Spawned { pid: 12 }, 102);
        // the fourth start within 10 s is one too many
        let a = s.step(exited(12, Exit::Code(1)), 103);
        let failure = Failure::StartLimit {
            burst: 3,
            interval_ms: 10_000,
            after: None,
        };
        assert_eq!(
            a.last(),
            Some(&Action::Emit(Event::Failed {
                failure: failure.clone()
            }))
        );
        assert!(!a
            .iter()
            .any(|x| matches!(x, Action::Emit(Event::Restarting { .. }))));
        assert_eq!(s.state, State::Failed);
        assert_eq!(s.last_error.as_deref(), Some(&failure));
        assert!(s
            .problem()
            .is_some_and(|p| p.starts_with("start limit hit: more than 3 starts within 10000 ms")));
        assert_eq!(s.end().map(|e| e.exit_code()), Some(1));
        // `zurg start` revives it with a fresh count
        assert_eq!(s.step(Input::Start, 200), vec![Action::Spawn]);
        s.step(Input::Spawned { pid: 13 }, 200);
        assert_eq!(
            s.step(exited(13, Exit::Code(1)), 201).last(),
            Some(&Action::Spawn)
        );
        // starts spread wider than the interval never trip it
        let mut s = started(with_rare(unit(RestartPolicy::Always), |r| {
            r.start_limit = Some(crate::unit::StartLimit {
                burst: 1,
                interval_ms: 1_000,
            })
        }));
        for (i, t) in (1..20i32).map(|i| (i, u64::from(i.unsigned_abs()) * 20_000)) {
            assert_eq!(
                s.step(exited(9 + i, Exit::Code(0)), t).last(),
                Some(&Action::Spawn),
                "run {i}"
            );
            s.step(Input::Spawned { pid: 10 + i }, t);
        }
    }

    #[test]
    fn a_unit_sets_its_backoff_steps() {
        let mut s = started(with_rare(unit(RestartPolicy::Always), |r| {
            r.backoff = crate::unit::BackoffSteps {
                initial_ms: 20,
                max_ms: 30,
            }
        }));
        let mut waits = Vec::new();
        let mut now = 0;
        for pid in 10..14 {
            now += 1;
            let a = s.step(exited(pid, Exit::Code(1)), now);
            match timer_of(&a) {
                Some((at, generation)) => {
                    waits.push(at - now);
                    now = at;
                    s.step(Input::Timer { generation }, now);
                }
                None => waits.push(0),
            }
            s.step(Input::Spawned { pid: pid + 1 }, now);
        }
        assert_eq!(waits, [0, 20, 30, 30]);
    }

    #[test]
    fn not_ready_is_a_failed_start() {
        let mut s = started(unit(RestartPolicy::Always));
        s.ready_after_ms = None; // as with a readiness protocol
        assert_eq!(s.state_name(), "starting");
        assert!(!s.satisfies_dependants());
        let a = s.step(not_ready(10, "not ready after 500 ms"), 500);
        assert_eq!(
            a[0],
            Action::Emit(Event::NotReady {
                pid: 10,
                reason: "not ready after 500 ms".into()
            })
        );
        assert_eq!(a[1], Action::Signal(crate::sig::SIGTERM));
        assert_eq!(
            s.problem().as_deref(),
            Some("not ready: not ready after 500 ms; restarting")
        );
        let a = s.step(exited(10, Exit::Signal(15)), 510);
        assert_eq!(
            a,
            vec![
                Action::Emit(Event::Stopped {
                    pid: 10,
                    exit: Exit::Signal(15)
                }),
                Action::Emit(Event::Restarting { delay_ms: 0 }),
                Action::Spawn
            ]
        );
        s.step(Input::Spawned { pid: 11 }, 510);
        assert_eq!(s.restarts, 1, "a retry after a failed start is a restart");
        // (ready at start without probes; with them, the retry is starting,
        // and status keeps the failure until it is ready)
        s.ready_after_ms = None;
        s.last_error = Some(Box::new(Failure::NotReady("not ready after 500 ms".into())));
        assert_eq!(
            s.problem().as_deref(),
            Some("not ready: not ready after 500 ms; trying again")
        );
        // a second failed start in a row waits: the crash-loop backoff
        s.step(not_ready(11, "x"), 600);
        let a = s.step(exited(11, Exit::Signal(15)), 601);
        let (at, generation) = timer_of(&a).unwrap();
        assert_eq!(at, 701);
        s.step(Input::Timer { generation }, 701);
        s.step(Input::Spawned { pid: 12 }, 701);
        // ready at last: the failure is gone
        s.ready_after_ms = None;
        s.last_error = Some(Box::new(Failure::NotReady("x".into())));
        s.step(Input::Ready { pid: 12 }, 800);
        assert_eq!(s.last_error, None);
        assert_eq!(s.problem(), None);
        // with restart = never it is failed, with the reason
        let mut s = started(unit(RestartPolicy::Never));
        s.ready_after_ms = None;
        s.step(not_ready(10, "readiness fd closed"), 1);
        let a = s.step(exited(10, Exit::Code(0)), 2);
        assert_eq!(s.state, State::Failed);
        assert_eq!(
            a.last(),
            Some(&Action::Emit(Event::Failed {
                failure: Failure::NotReady("readiness fd closed".into())
            }))
        );
        assert_eq!(
            s.end().map(|e| e.exit_code()),
            Some(1),
            "failed, even though it exited 0"
        );
        // killed by zurg's stop signal: still 1, not the signal's 143
        let mut s = started(unit(RestartPolicy::Never));
        s.ready_after_ms = None;
        s.step(not_ready(10, "not ready after 300 ms"), 1);
        s.step(exited(10, Exit::Signal(15)), 2);
        let end = s.end().unwrap();
        assert_eq!(end.exit_code(), 1);
        assert_eq!(end.to_string(), "not ready: not ready after 300 ms");
    }

    #[test]
    fn stale_readiness_and_health_results_are_ignored() {
        let mut s = started(unit(RestartPolicy::Always));
        s.ready_after_ms = None;
        let stale = |pid| not_ready(pid, "late");
        // another process's result
        assert!(s.step(stale(9), 1).is_empty());
        assert!(s.step(unhealthy(9, "late"), 1).is_empty());
        assert!(s.step(Input::Ready { pid: 9 }, 1).is_empty());
        assert_eq!(s.ready_after_ms, None);
        // ready once; a second Ready, or a NotReady after it, changes nothing
        assert_eq!(
            s.step(Input::Ready { pid: 10 }, 40),
            vec![Action::Emit(Event::Ready {
                pid: 10,
                after_ms: 40
            })]
        );
        assert!(s.satisfies_dependants());
        assert!(s.step(Input::Ready { pid: 10 }, 41).is_empty());
        assert!(s.step(stale(10), 42).is_empty());
        assert_eq!(s.state_name(), "running");
        // while stopping, in backoff, or down: nothing
        s.step(Input::Stop, 50);
        assert!(s.step(stale(10), 51).is_empty());
        s.step(exited(10, Exit::Signal(15)), 52);
        assert!(s.step(stale(10), 53).is_empty());
        assert_eq!(s.state, State::Down);
    }

    #[test]
    fn unhealthy_restarts_counted_and_limited() {
        let mut s = started(with_rare(unit(RestartPolicy::Always), |r| {
            r.start_limit = Some(crate::unit::StartLimit {
                burst: 2,
                interval_ms: 60_000,
            })
        }));
        let sick = |pid| unhealthy(pid, "health check failed 3 times");
        let a = s.step(sick(10), 20_000);
        assert_eq!(
            a[0],
            Action::Emit(Event::Unhealthy {
                pid: 10,
                reason: "health check failed 3 times".into()
            })
        );
        assert_eq!(a[1], Action::Signal(crate::sig::SIGTERM));
        let a = s.step(exited(10, Exit::Signal(15)), 20_010);
        assert_eq!(a.last(), Some(&Action::Spawn));
        s.step(Input::Spawned { pid: 11 }, 20_010);
        assert_eq!(s.restarts, 1);
        assert_eq!(s.last_error, None, "a good start clears the reason");
        // the third start within a minute is refused
        s.step(sick(11), 40_000);
        let a = s.step(exited(11, Exit::Signal(15)), 40_010);
        assert_eq!(s.state, State::Failed);
        assert!(matches!(
            a.last(),
            Some(Action::Emit(Event::Failed {
                failure: Failure::StartLimit { burst: 2, .. }
            }))
        ));
        // as an essential service's end: 1, not the SIGTERM's 143 (zurg
        // stopped the last run), and the reason of that run
        let end = s.end().unwrap();
        assert_eq!(end.exit_code(), 1);
        assert_eq!(
            end.to_string(),
            "start limit hit: more than 2 starts within 60000 ms; the last run: unhealthy: health check failed 3 times"
        );
        // `status` says what it said before
        assert_eq!(
            s.problem().as_deref(),
            Some("start limit hit: more than 2 starts within 60000 ms (start_limit); `zurg start` tries again")
        );
    }

    #[test]
    fn a_start_limit_after_runs_that_exited_keeps_the_last_exits_code() {
        let mut s = started(with_rare(unit(RestartPolicy::Always), |r| {
            r.ready = Some(crate::unit::probe::Ready::Notify);
            r.start_limit = Some(crate::unit::StartLimit {
                burst: 2,
                interval_ms: 60_000,
            })
        }));
        s.ready_after_ms = None;
        // not ready: stopped, restarted; the reason stays for `status`
        s.step(not_ready(10, "not ready after 300 ms"), 1);
        s.step(exited(10, Exit::Signal(15)), 2);
        s.step(Input::Spawned { pid: 11 }, 2);
        assert!(matches!(
            s.last_error.as_deref(),
            Some(Failure::NotReady(_))
        ));
        // then exits 3 by itself before it is ready: that exit is its own
        s.step(exited(11, Exit::Code(3)), 3);
        assert_eq!(s.state, State::Failed);
        let end = s.end().unwrap();
        assert_eq!(end.exit_code(), 3);
        assert_eq!(
            end.to_string(),
            "start limit hit: more than 2 starts within 60000 ms; the last run: code 3"
        );
    }

    #[test]
    fn a_restart_asked_for_resets_the_start_limit() {
        let mut s = started(with_rare(unit(RestartPolicy::Always), |r| {
            r.start_limit = Some(crate::unit::StartLimit {
                burst: 1,
                interval_ms: 60_000,
            })
        }));
        for t in 1..5 {
            s.step(Input::Restart, t * 10);
            assert_eq!(
                s.step(
                    exited(9 + i32::try_from(t).unwrap(), Exit::Signal(15)),
                    t * 10 + 1
                )
                .last(),
                Some(&Action::Spawn)
            );
            s.step(
                Input::Spawned {
                    pid: 10 + i32::try_from(t).unwrap(),
                },
                t * 10 + 1,
            );
        }
        assert_eq!(s.state.pid(), Some(14));
    }

    #[test]
    fn exit_codes_for_an_essential_service() {
        let mut s = started(unit(RestartPolicy::Never));
        s.step(exited(10, Exit::Code(7)), 1);
        assert!(s.end().is_some());
        assert_eq!(s.end().map(|e| e.exit_code()), Some(7));
        let mut s = started(unit(RestartPolicy::Never));
        s.step(exited(10, Exit::Signal(9)), 1);
        assert_eq!(s.end().map(|e| e.exit_code()), Some(137));
        // stopped on request: not an end
        let mut s = started(unit(RestartPolicy::Never));
        s.step(Input::Stop, 1);
        s.step(exited(10, Exit::Signal(15)), 2);
        assert!(s.end().is_none());
        assert_eq!(s.problem(), None);
        assert_eq!(s.cannot_satisfy().as_deref(), Some("it is stopped"));
    }

    #[test]
    fn a_service_with_ready_is_ready_only_when_it_says_so() {
        let mut u = unit(RestartPolicy::Always);
        u.rare.ready = Some(crate::unit::probe::Ready::Notify);
        let mut s = Service::new(u);
        s.step(Input::Start, 0);
        s.step(Input::Spawned { pid: 5 }, 10);
        assert!(!s.is_ready());
        assert_eq!(s.ready_after_ms, None);
        assert_eq!(
            s.step(Input::Ready { pid: 5 }, 260),
            vec![Action::Emit(Event::Ready {
                pid: 5,
                after_ms: 250
            })]
        );
        assert!(s.is_ready());
        // said twice, counted once
        assert!(s.step(Input::Ready { pid: 5 }, 300).is_empty());
        assert_eq!(s.ready_after_ms, Some(250));
        // without `ready`, ready at once
        let mut s = running(RestartPolicy::Always);
        assert!(s.is_ready());
        assert_eq!(s.ready_after_ms, Some(0));
        assert!(s.step(Input::Ready { pid: 10 }, 5).is_empty());
    }
}
