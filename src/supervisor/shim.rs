//! `zurg [opts] -- CMD ARGS`: a drop-in for tini and dumb-init.
//!
//! One child; every signal another process sends zurg is forwarded to it (or
//! to its process group with `--pgroup`), optionally rewritten; every orphan
//! is reaped; zurg exits with the child's code or 128+signal. Once the child
//! is gone the remaining descendants get SIGTERM, then SIGKILL after the
//! grace period, and zurg waits until all are reaped. Runs on the same
//! reactor as the supervisor: signalfd and the child's pidfd, no polling.
//!
//! On a terminal whose foreground is zurg's, the child gets a process group
//! of its own and the foreground with it (tini's default), so keys like ^C
//! reach the child once, from the terminal, and never a second time through
//! zurg. zurg then acts as one job with its child: when the terminal stops
//! the child (^Z, TTIN, TTOU) zurg stops itself with the same signal, and
//! when the shell continues zurg it hands the foreground back to the child
//! and continues it. On exit zurg takes the foreground back.
//!
//! Off a terminal's foreground (stdin redirected, or zurg started in the
//! background and then brought to the foreground) the child stays in zurg's
//! group; when that group holds the terminal, the terminal's ^C, ^\ and
//! window-size signals reach the child straight from the kernel, so zurg
//! does not forward its own copy, and its ^Z stops zurg along with the
//! child.
//!
//! As PID 1 the child always gets a process group of its own, as with
//! tini, so a signal CMD sends its own group (`kill 0`) does not reach zurg
//! and come back a second time.
//!
//! After the spawn zurg moves to "/", so that it does not keep the directory
//! it was started in (and that directory's mount) busy; the child keeps it.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

pub use crate::cli::{RewriteTo, ShimOptions};
use crate::os::pid1;
use crate::os::reap::{self, Drained, ExitStatus};
use crate::os::signals::{self, FromTerminal};
use crate::os::spawn::{self, SpawnSpec};
use crate::supervisor::reactor::{Reactor, PIDFD_BASE, SIGNAL_TOKEN};

/// Exit codes of the shim when CMD could not be run (tini's convention).
pub const EXIT_NOT_FOUND: i32 = 127;
pub const EXIT_CANNOT_EXEC: i32 = 126;
/// Exit code when zurg itself fails before the child runs.
pub const EXIT_INTERNAL: i32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Grace,
    GiveUp,
}

/// How long zurg waits for SIGKILLed descendants before it exits anyway
/// (a process stuck in uninterruptible sleep cannot be reaped).
const GIVE_UP_AFTER_KILL_MS: u64 = 5_000;

fn cstring(s: &OsString) -> Result<CString, String> {
    CString::new(s.as_bytes()).map_err(|_| format!("argument {s:?} contains a NUL byte"))
}

/// Runs the shim; returns zurg's exit code.
pub fn run(opts: &ShimOptions) -> i32 {
    match run_inner(opts) {
        Ok(code) => code,
        Err(msg) => {
            crate::log!("{msg}");
            EXIT_INTERNAL
        }
    }
}

/// The terminal while the child's group holds its foreground; dropping it
/// gives the foreground back to zurg's group, as a shell does when a job
/// ends, so whoever runs zurg can read the terminal again.
struct TerminalLease {
    child_pgid: i32,
}

impl Drop for TerminalLease {
    fn drop(&mut self) {
        // Someone else may own the foreground by now (the shell, after `bg`).
        if signals::terminal_foreground() != Some(self.child_pgid) {
            return;
        }
        if let Err(e) = spawn::give_terminal(0, nix::unistd::getpgrp().as_raw()) {
            crate::log!("warning: cannot take the terminal back from the child: {e}");
        }
    }
}

/// When the terminal stopped the child (^Z, or a read or write from the
/// background), stops zurg the same way so the shell sees the job stop, and
/// once zurg is continued puts the child back in the foreground (if zurg's
/// group has it, i.e. `fg` rather than `bg`) and continues it.
fn follow_stop(child: &spawn::Child, lease: &TerminalLease) {
    use nix::sys::signal::Signal;
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    // The child is not reaped yet (the caller checks), so its pid is its own.
    let id = Id::Pid(nix::unistd::Pid::from_raw(child.pid));
    let Ok(WaitStatus::Stopped(_, sig)) = waitid(id, WaitPidFlag::WSTOPPED | WaitPidFlag::WNOHANG)
    else {
        return;
    };
    if !matches!(sig, Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU) {
        // A debugger's or an operator's SIGSTOP is theirs to undo.
        return;
    }
    if let Err(e) = signals::stop_self(sig as i32) {
        crate::log!("warning: cannot stop with the child ({sig}): {e}");
    }
    if signals::terminal_is_ours() {
        if let Err(e) = spawn::give_terminal(0, lease.child_pgid) {
            crate::log!("warning: cannot hand the terminal back to the child: {e}");
        }
    }
    if let Err(e) = crate::os::pidfd::kill(-lease.child_pgid, libc::SIGCONT) {
        crate::log!("warning: cannot continue the child: {e}");
    }
}

/// Whether the child is in zurg's process group (off a terminal, not PID 1,
/// without `--pgroup`), so a signal the terminal sends that group reaches
/// it without zurg. Asked per signal: the child may have moved itself.
fn shares_group(child_pid: i32) -> bool {
    nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(child_pid)))
        .is_ok_and(|g| g == nix::unistd::getpgrp())
}

/// The terminal stopped zurg's whole group (^Z, or a background read or
/// write), the child with it: zurg stops too, so the shell sees the job
/// stop rather than wait for zurg, and the shell's SIGCONT to the group
/// continues both.
fn stop_with_the_group(signo: i32) {
    if let Err(e) = signals::stop_self(signo) {
        crate::log!(
            "warning: cannot stop with the child ({}): {e}",
            crate::sig::name(signo)
        );
    }
}

/// zurg's exit code for CMD's end: CMD's code, or 128+N for signal N, or
/// 0 when `--remap-exit` lists it.
fn exit_code(opts: &ShimOptions, exit: ExitStatus) -> i32 {
    let code = exit.shell_code();
    if u8::try_from(code).is_ok_and(|c| opts.remap_exit.contains(&c)) {
        if opts.verbose {
            crate::log!("exit code {code} remapped to 0 (--remap-exit)");
        }
        return 0;
    }
    code
}

fn run_inner(opts: &ShimOptions) -> Result<i32, String> {
    let Some(program) = opts.argv.first() else {
        return Err("no command given".into());
    };
    let argv = opts
        .argv
        .iter()
        .map(cstring)
        .collect::<Result<Vec<_>, _>>()?;
    let mut spec = SpawnSpec::new(cstring(program)?, argv);
    spec.search_path = true;
    // Checked before the child exists: a zurg in the background of its
    // terminal must not take the foreground from the shell.
    let foreground = signals::terminal_is_ours();
    let is_pid1 = pid1::is_pid1();
    // As PID 1 the child always leads a group of its own (tini's setpgid):
    // in zurg's group a `kill(0, sig)` from CMD would reach zurg as well,
    // which would forward it, so CMD got it twice, or for ever if it
    // answers each one by signalling its group again. Not PID 1, zurg stays
    // in the child's group, so a `kill -- -PGID` by whoever started zurg
    // (timeout(1), a shell's job control) still reaches the child.
    spec.new_pgroup = opts.pgroup || foreground || is_pid1;
    spec.foreground = foreground;

    if let Some(signo) = opts.parent_death_signal {
        pid1::set_parent_death_signal(signo).map_err(|e| {
            format!(
                "cannot ask for {} when zurg's parent dies (-p): {e}",
                crate::sig::name(signo)
            )
        })?;
    }
    let (sigfd, child_signals) =
        signals::take_over_forwarding().map_err(|e| format!("cannot take over signals: {e}"))?;
    if !is_pid1 {
        if let Err(e) = pid1::become_subreaper() {
            crate::log!(
                "warning: cannot become a child subreaper, orphans will not be reaped: {e}"
            );
        }
    }
    let mut reactor: Reactor<Deadline> =
        Reactor::new(&sigfd).map_err(|e| format!("cannot create the event loop: {e}"))?;

    let child = match spawn::Spawner::new().spawn(&spec, &child_signals, None::<&std::fs::File>) {
        Ok(c) => c,
        Err(e) => {
            let name = program.to_string_lossy();
            // A missing interpreter is ENOENT too, and 127 as for bash and
            // docker, but its message says what is missing.
            let found = e.step() == Some(spawn::SpawnStep::Interpreter);
            let (code, why) = match (found, e.raw_os_error()) {
                (false, Some(libc::ENOENT)) => (
                    EXIT_NOT_FOUND,
                    format!("cannot run {name}: command not found"),
                ),
                (true, _) => (EXIT_NOT_FOUND, e.to_string()),
                (_, Some(libc::EACCES)) => (
                    EXIT_CANNOT_EXEC,
                    format!("cannot run {name}: permission denied (not executable?)"),
                ),
                _ => (EXIT_CANNOT_EXEC, e.to_string()),
            };
            crate::log!("{why}");
            return Ok(code);
        }
    };
    let child_pid = child.pid;
    let lease = foreground.then_some(TerminalLease {
        child_pgid: child_pid,
    });
    if opts.verbose {
        crate::log!("started {} as pid {child_pid}", program.to_string_lossy());
    }
    if let Err(e) = nix::unistd::chdir("/") {
        crate::log!("warning: cannot leave the starting directory for /: {e}");
    }
    let my_pid = pid1::my_pid();
    if let Some(fd) = &child.pidfd {
        // The signalfd already reports SIGCHLD; the pidfd is a second,
        // per-child wake-up that does not depend on signal delivery.
        if let Err(e) = reactor.watch_fd(fd, mio::Token(PIDFD_BASE)) {
            crate::log!("warning: cannot watch pid {child_pid}: {e}");
        }
    }

    let mut child_exit: Option<ExitStatus> = None;
    let mut tokens = Vec::new();
    loop {
        if let Err(e) = reactor.wait(&mut tokens) {
            crate::log!("event loop error: {e}");
            continue;
        }
        for token in &tokens {
            if *token != SIGNAL_TOKEN {
                continue;
            }
            for sig in sigfd.drain() {
                if sig.signo == libc::SIGCHLD || child_exit.is_some() || !sig.is_request(my_pid) {
                    continue;
                }
                let to = match opts.rewrite.iter().find(|(from, _)| *from == sig.signo) {
                    None => Some(sig.signo),
                    Some((_, RewriteTo::Signal(to))) => Some(*to),
                    Some((_, RewriteTo::Drop)) => None,
                };
                if let Some(kind) = sig.from_terminal() {
                    if shares_group(child_pid) {
                        if kind == FromTerminal::Stop {
                            stop_with_the_group(sig.signo);
                        }
                        // The terminal gave CMD its own copy; only a
                        // rewritten signal is news to it.
                        if to == Some(sig.signo) {
                            continue;
                        }
                    }
                }
                let Some(to) = to else {
                    if opts.verbose {
                        crate::log!(
                            "dropped {} (--rewrite {}:0)",
                            crate::sig::name(sig.signo),
                            crate::sig::name(sig.signo)
                        );
                    }
                    continue;
                };
                let target = if opts.pgroup { -child_pid } else { child_pid };
                let sent = match (&child.pidfd, opts.pgroup) {
                    (Some(fd), false) => fd.send_signal(to),
                    _ => crate::os::pidfd::kill(target, to),
                };
                if let Err(e) = sent {
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        crate::log!("cannot forward {} to {target}: {e}", crate::sig::name(to));
                    }
                }
            }
        }

        if let (Some(lease), None) = (&lease, child_exit) {
            follow_stop(&child, lease);
        }
        // Reap on every wake-up: cheap (one waitpid when nothing is dead) and
        // it covers SIGCHLD, the pidfd and coalesced signals alike.
        let drained = reap::reap_all(|pid, status| {
            if pid == child_pid {
                child_exit = Some(status);
            } else if opts.warn_reap {
                crate::log!("warning: reaped pid {pid} ({status}): an orphan, not CMD");
            }
        });
        let now = reactor.now_ms();
        let Some(exit) = child_exit else { continue };
        if drained == Drained::NoChildren {
            // Nothing left behind: the first pass below never ran, so its
            // line did not say how CMD ended.
            if opts.verbose && reactor.timers.is_empty() {
                crate::log!("pid {child_pid} ended ({exit}); nothing left behind");
            }
            return Ok(exit_code(opts, exit));
        }
        while let Some(deadline) = reactor.timers.pop_due(now) {
            match deadline {
                Deadline::Grace => {
                    let n = pid1::signal_descendants(libc::SIGKILL);
                    if opts.verbose && n > 0 {
                        crate::log!(
                            "{} process(es) still there after the {} ms grace: sent SIGKILL",
                            n,
                            opts.grace_ms
                        );
                    }
                    reactor
                        .timers
                        .arm(now.saturating_add(GIVE_UP_AFTER_KILL_MS), Deadline::GiveUp);
                }
                Deadline::GiveUp => {
                    crate::log!("descendants still alive after SIGKILL; exiting anyway");
                    return Ok(exit_code(opts, exit));
                }
            }
        }
        if reactor.timers.is_empty() {
            // First pass after the child died: ask everyone left to go.
            if opts.verbose {
                crate::log!("pid {child_pid} ended ({exit}); stopping what is left");
            }
            pid1::signal_descendants(libc::SIGTERM);
            pid1::signal_descendants(libc::SIGCONT);
            reactor
                .timers
                .arm(now.saturating_add(opts.grace_ms), Deadline::Grace);
        }
    }
}
