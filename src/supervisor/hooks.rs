//! A unit's hooks (`pre_start`, `post_stop`): run when the service's
//! machine asks (`Action::RunHook`), with the service's command line
//! replaced by the hook's and everything else of its spawn (environment,
//! directory, user, limits, cgroup) kept; the exit goes back to the
//! machine as `Input::HookExited`, with the hook's last output line. The
//! machine arms the timeout and asks for the kill (`Action::KillHook`).

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;

use mio::Token;

use super::Supervisor;
use crate::os::pidfd::PidFd;
use crate::os::reap::ExitStatus;
use crate::service::{Exit, HookKind, Input};

/// Tokens from here up name a hook's pidfd: `HOOK_BASE + slot` (above the
/// probes' range, which starts at 1 << 42).
pub const HOOK_BASE: usize = 1 << 43;

/// The slot a hook token names.
pub fn of_token(token: Token) -> Option<usize> {
    token.0.checked_sub(HOOK_BASE)
}

/// One running hook.
#[derive(Debug)]
struct Running {
    kind: HookKind,
    pid: i32,
    pidfd: Option<PidFd>,
    /// The service's log ring's next sequence number when it started: its
    /// output is what came after.
    first_seq: u64,
}

/// The running hook of each slot (at most one), and the slots of hook
/// pids for the sweep.
#[derive(Debug, Default)]
pub struct Hooks {
    running: HashMap<usize, Running>,
    pids: HashMap<i32, usize>,
}

impl Hooks {
    /// A hook of `slot` still runs (its slot may not be reused yet).
    pub fn runs(&self, slot: usize) -> bool {
        self.running.contains_key(&slot)
    }

    /// The sweep reaped `pid`: the slot whose hook it was.
    pub fn take_pid(&mut self, pid: i32) -> Option<usize> {
        self.pids.remove(&pid)
    }
}

impl Supervisor {
    /// Runs `kind` for `slot`; `exit` (post_stop) is how the service's
    /// process ended, given as `ZURG_EXIT_CODE` or `ZURG_EXIT_SIGNAL`.
    pub(super) fn run_hook(
        &mut self,
        slot: usize,
        kind: HookKind,
        exit: Option<Exit>,
        work: &mut VecDeque<(usize, Input)>,
    ) {
        // A hook of an earlier start still dying: it is no longer awaited.
        self.forget_hook(slot);
        // pre_start gets what the start it precedes will (user, env files,
        // port); post_stop what the process that ended had.
        if kind == HookKind::PreStart {
            if let Err(error) = self
                .prepare_creds(slot)
                .and_then(|()| self.prepare_port(slot).map(drop))
            {
                return self.hook_failed(slot, kind, error, work);
            }
        }
        let ensured = match self.slots.get_mut(slot) {
            Some(s) => s.ensure_spec(&self.start_dir),
            None => return,
        };
        if let Err(error) = ensured {
            return self.hook_failed(slot, kind, error, work);
        }
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let argv = match kind {
            HookKind::PreStart => &s.service.unit.rare.pre_start,
            HookKind::PostStop => &s.service.unit.rare.post_stop,
        };
        let args: Vec<CString> = argv
            .iter()
            .flatten()
            .filter_map(|a| CString::new(a.as_bytes()).ok())
            .collect();
        let Some(program) = args.first().cloned() else {
            return;
        };
        let Some(mut spec) = s.spec.as_deref().cloned() else {
            return;
        };
        spec.program = program;
        spec.argv = args;
        spec.search_path = false;
        spec.listen_fd = None;
        spec.ready_fd = None;
        spec.pid_vars.clear();
        spec.foreground = false;
        // Not the hook's: the listening socket and the notify protocol.
        spec.start_env.retain(|e| {
            let e = e.as_bytes();
            !(e.starts_with(b"LISTEN_")
                || e.starts_with(b"NOTIFY_SOCKET=")
                || e.starts_with(b"WATCHDOG_"))
        });
        spec.start_env.extend(match exit {
            Some(Exit::Code(c)) => CString::new(format!("ZURG_EXIT_CODE={c}")).ok(),
            Some(Exit::Signal(n)) => {
                CString::new(format!("ZURG_EXIT_SIGNAL={}", crate::sig::name(n))).ok()
            }
            None => None,
        });
        let first_seq = s.ring.next_seq();
        match self.spawn_aux(slot, spec, Token(HOOK_BASE + slot)) {
            Ok((pid, pidfd)) => {
                self.hooks.pids.insert(pid, slot);
                self.hooks.running.insert(
                    slot,
                    Running {
                        kind,
                        pid,
                        pidfd,
                        first_seq,
                    },
                );
            }
            Err(e) => self.hook_failed(
                slot,
                kind,
                format!("cannot start {}: {e}", kind.key()),
                work,
            ),
        }
    }

    /// The hook could not run: as if it failed with code 127 (the shell's
    /// "cannot run"), the reason as its output.
    fn hook_failed(
        &mut self,
        slot: usize,
        kind: HookKind,
        error: String,
        work: &mut VecDeque<(usize, Input)>,
    ) {
        work.push_back((
            slot,
            Input::HookExited {
                kind,
                exit: Exit::Code(127),
                output: Some(error),
            },
        ));
    }

    /// Kills the process group of `slot`'s hook, if `kind` runs.
    pub(super) fn kill_hook(&mut self, slot: usize, kind: HookKind) {
        if let Some(h) = self.hooks.running.get(&slot) {
            if h.kind == kind {
                // Its own process group; it may be gone already.
                let _ = crate::os::pidfd::kill(-h.pid, libc::SIGKILL);
            }
        }
    }

    /// Stops awaiting `slot`'s hook (its group is killed; the sweep reaps
    /// it as an orphan).
    fn forget_hook(&mut self, slot: usize) {
        if let Some(h) = self.hooks.running.remove(&slot) {
            let _ = crate::os::pidfd::kill(-h.pid, libc::SIGKILL);
            if let Some(fd) = &h.pidfd {
                let _ = self.reactor.unwatch_fd(fd);
            }
        }
    }

    /// A hook's pidfd is readable: reap it and report its end.
    pub(super) fn on_hook(&mut self, token: Token, work: &mut VecDeque<(usize, Input)>) {
        let Some(slot) = of_token(token) else {
            return;
        };
        let Some(h) = self.hooks.running.get(&slot) else {
            return;
        };
        let Some(fd) = &h.pidfd else {
            return;
        };
        if let Ok(Some(status)) = crate::os::reap::reap_one(fd) {
            let pid = h.pid;
            self.hooks.pids.remove(&pid);
            self.hook_reaped(slot, pid, status, work);
        }
    }

    /// `slot`'s hook `pid` ended (reaped from its pidfd or by the sweep).
    pub(super) fn hook_reaped(
        &mut self,
        slot: usize,
        pid: i32,
        status: ExitStatus,
        work: &mut VecDeque<(usize, Input)>,
    ) {
        if self.hooks.running.get(&slot).map(|h| h.pid) != Some(pid) {
            return;
        }
        let Some(h) = self.hooks.running.remove(&slot) else {
            return;
        };
        if let Some(fd) = &h.pidfd {
            let _ = self.reactor.unwatch_fd(fd);
        }
        let exit = super::exit_of(status);
        // Everything it wrote is in the pipes now: read it into the log
        // before its last line is taken.
        self.drain_slot_output(slot);
        let output = self.slots.get(slot).and_then(|s| {
            let ring = &s.ring;
            let last = ring.len().checked_sub(1)?;
            let line = ring.get(last)?;
            (line.seq >= h.first_seq).then(|| String::from_utf8_lossy(line.bytes).into_owned())
        });
        // A failed `pre_start` of a start still under way is a failed
        // start, logged with its last output line once the service handles
        // it: said here too, it was said twice. One a stop killed, and
        // `post_stop`, whose exit changes nothing, only this line tells of.
        if exit != Exit::Code(0) {
            if let Some(s) = self.slots.get(slot).filter(|s| {
                h.kind == HookKind::PostStop
                    || !matches!(s.service.state, crate::service::State::PreStart { .. })
            }) {
                crate::log!(
                    "[{}] {} exited with {}",
                    s.service.name(),
                    h.kind.key(),
                    exit.describe()
                );
            }
        }
        work.push_back((
            slot,
            Input::HookExited {
                kind: h.kind,
                exit,
                output,
            },
        ));
    }
}
