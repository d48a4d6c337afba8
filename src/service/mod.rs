//! One service's life as a pure state machine: `step(input, now) -> actions`.
//!
//! States:
//! - `Down`: not running and not wanted (never started, or stopped on request).
//! - `Running { pid }`: the process is alive.
//! - `Stopping { pid, then }`: the stop signal was sent; SIGKILL follows at
//!   the stop timeout; `then` says whether to start again afterwards.
//! - `Backoff`: died and waits for its restart timer.
//! - `Exited`: ended, and its restart policy keeps it down.
//!
//! Every (state, input) pair is decided in `step`; inputs that make no sense
//! in a state (a stale timer, a stop of a stopped service) change nothing.
//! The machine never touches the OS: the supervisor executes its actions and
//! feeds back what happened (`Spawned`, `SpawnFailed`, `Exited`). Timers carry
//! a generation so that one armed in an earlier state is ignored.

pub mod policy;
pub mod ring;

use crate::unit::Unit;
use policy::Backoff;

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
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(reason) => write!(f, "refused to start: {reason}"),
            Failure::Spawn(error) => f.write_str(error),
            Failure::Forked => {
                f.write_str("it forked into the background and exited; run it in the foreground")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    StayDown,
    Start,
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
    /// Refused to start (e.g. a checksum mismatch); stays down until a
    /// start, restart or reload asks again.
    Failed,
    /// Its binary is being hashed off the loop before the spawn (a checksum
    /// not yet known for the file as it is now); no process yet.
    Starting,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Down => "stopped",
            State::Running { .. } => "running",
            State::Stopping { .. } => "stopping",
            State::Backoff { .. } => "backoff",
            State::Exited => "exited",
            State::Failed => "failed",
            State::Starting => "starting",
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
    /// The running process reported itself ready (notify `READY=1`, a line
    /// on its readiness fd, a readiness probe passed). A service without
    /// `ready` gets it from the supervisor as soon as it has started.
    Ready,
    /// Readiness did not come: its timeout passed, or it cannot come. A
    /// failed start.
    NotReady {
        reason: String,
    },
    /// Its health check failed `retries` times in a row, or it missed its
    /// watchdog ping: it is restarted.
    Unhealthy {
        reason: String,
    },
}

/// What the service wants done, and what happened, for the log and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Spawn,
    Signal(i32),
    ArmTimer { at_ms: u64, generation: u64 },
    Emit(Event),
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
}

#[derive(Debug, Clone)]
pub struct Service {
    pub unit: Unit,
    pub state: State,
    /// Restarts after an exit (not counting explicit starts).
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// The last spawn or check failure; cleared by a successful start.
    pub last_error: Option<Failure>,
    /// How long the current process took to become ready; `None` while it
    /// has not (or no process runs).
    pub ready_after_ms: Option<u64>,
    backoff: Backoff,
    timer_generation: u64,
    /// The next spawn is a restart (for the counter).
    restarting: bool,
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
            timer_generation: 0,
            restarting: false,
        }
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
        true
    }

    /// A process runs and has reported itself ready.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Running { .. }) && self.ready_after_ms.is_some()
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
                State::Down | State::Exited | State::Failed | State::Backoff { .. },
                Input::Start | Input::Restart,
            ) => {
                self.backoff.reset();
                self.restarting = false;
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
                State::Down | State::Exited | State::Failed | State::Backoff { .. },
                Input::Verifying,
            ) => {
                self.state = State::Starting;
            }
            (State::Starting, Input::Verified) => out.push(Action::Spawn),
            (_, Input::Spawned { pid }) => {
                if self.restarting {
                    self.restarts = self.restarts.saturating_add(1);
                }
                self.restarting = false;
                self.last_error = None;
                // Without a readiness protocol a service is ready once started.
                self.ready_after_ms = self.ready_when_started().then_some(0);
                self.state = State::Running { pid, since_ms: now };
                out.push(Action::Emit(Event::Started { pid }));
            }
            (_, Input::Refused { reason }) => {
                self.restarting = false;
                self.last_error = Some(Failure::Refused(reason.clone()));
                self.state = State::Failed;
                out.push(Action::Emit(Event::Refused { reason }));
            }
            (_, Input::SpawnFailed { error }) => {
                self.last_error = Some(Failure::Spawn(error.clone()));
                out.push(Action::Emit(Event::SpawnFailed { error }));
                // Treated as an immediate failure: the restart policy and the
                // crash-loop backoff apply, so a missing binary is retried
                // slowly rather than in a tight loop.
                self.after_exit(Exit::Code(127), 0, now, &mut out);
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
                self.after_exit(exit, uptime_ms, now, &mut out);
            }
            (
                State::Running {
                    pid: running,
                    since_ms,
                },
                Input::ExitedForked { pid },
            ) if pid == running && now.saturating_sub(since_ms) < policy::RESET_AFTER_MS => {
                let exit = Exit::Code(0);
                out.push(Action::Emit(Event::Exited {
                    pid,
                    exit,
                    uptime_ms: now.saturating_sub(since_ms),
                }));
                self.last_exit = Some(exit);
                self.restarting = false;
                self.last_error = Some(Failure::Forked);
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
                    then,
                    ..
                },
                Input::Exited { pid, exit },
            ) if pid == stopping => {
                self.last_exit = Some(exit);
                out.push(Action::Emit(Event::Stopped { pid, exit }));
                match then {
                    AfterStop::StayDown => self.state = State::Down,
                    AfterStop::Start => {
                        self.state = State::Down;
                        self.backoff.reset();
                        self.restarting = true;
                        out.push(Action::Spawn);
                    }
                }
            }
            (State::Running { pid, since_ms }, Input::Ready) if self.ready_after_ms.is_none() => {
                let after_ms = now.saturating_sub(since_ms);
                self.ready_after_ms = Some(after_ms);
                out.push(Action::Emit(Event::Ready { pid, after_ms }));
            }
            (State::Running { pid, since_ms }, Input::NotReady { reason }) => {
                out.push(Action::Emit(Event::NotReady { pid, reason }));
                self.begin_stop(pid, since_ms, AfterStop::StayDown, now, &mut out);
            }
            (State::Running { pid, since_ms }, Input::Unhealthy { reason }) => {
                out.push(Action::Emit(Event::Unhealthy { pid, reason }));
                self.begin_stop(pid, since_ms, AfterStop::Start, now, &mut out);
            }
            (State::Backoff { .. }, Input::Timer { generation })
                if generation == self.timer_generation =>
            {
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

    fn after_exit(&mut self, exit: Exit, uptime_ms: u64, now: u64, out: &mut Vec<Action>) {
        self.last_exit = Some(exit);
        if !policy::should_restart(self.unit.restart, exit) {
            self.state = State::Exited;
            out.push(Action::Emit(Event::Done { exit }));
            return;
        }
        let delay_ms = self
            .unit
            .restart_delay_ms
            .saturating_add(self.backoff.after_run(uptime_ms));
        out.push(Action::Emit(Event::Restarting { delay_ms }));
        if delay_ms == 0 {
            self.state = State::Down;
            self.restarting = true;
            out.push(Action::Spawn);
        } else {
            let until_ms = now.saturating_add(delay_ms);
            self.state = State::Backoff { until_ms };
            self.arm(until_ms, out);
        }
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
            exec: PathBuf::from("/bin/true"),
            args: vec![],
            env: Default::default(),
            cwd: None,
            restart,
            stop_signal: crate::sig::SIGTERM,
            stop_timeout_ms: 1000,
            restart_delay_ms: 0,
            port: 0,
            port_auto: false,
            socket: false,
            bind: None,
            version: None,
            stats_interval_ms: None,
            checksum: None,
            log_ring_bytes: 0,
            stdout: crate::unit::Output::Prefix,
            stderr: crate::unit::Output::Prefix,
            limits: crate::cgroup::Limits::default(),
            kill_mode: None,
        }
    }

    fn exited(pid: i32, exit: Exit) -> Input {
        Input::Exited { pid, exit }
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
        assert_eq!(s.last_error, Some(Failure::Forked));
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
            s.last_error,
            Some(Failure::Spawn(
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
}
