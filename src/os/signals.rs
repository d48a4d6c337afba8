//! Signals: zurg blocks every catchable signal and reads them from a
//! signalfd registered in the event loop, so a signal is just another event
//! and no handler ever runs at an awkward moment.
//!
//! Two sets. The supervisor (`take_over`) leaves alone the fault signals
//! (ILL, TRAP, ABRT, BUS, FPE, SEGV, SYS), glibc's two internal real-time
//! signals, and PIPE, which Rust's runtime ignores so a write to a closed
//! socket is an EPIPE error; it ignores TTIN and TTOU, as tini does.
//!
//! The shim (`take_over_forwarding`) must pass on every signal another
//! process sends, so it blocks all of them but KILL, STOP and glibc's two.
//! Blocking a fault signal does not keep a real fault from killing zurg: the
//! kernel forces a synchronous fault through any mask (it unblocks the signal
//! and restores the default action), so only a fault number sent with
//! kill(2) reaches the signalfd, and `Received::is_request` tells the two
//! apart by si_code. zurg's own SIGPIPEs reach the signalfd too (blocked
//! signals are queued even when ignored); they carry zurg's own pid and are
//! not requests either. A blocked TTIN or TTOU counts as ignored in the
//! terminal's job-control checks, so handing the terminal to the child's
//! group still cannot stop zurg.
//!
//! Children must not inherit any of this: `ChildSignals` records the mask and
//! ignored set zurg itself inherited, and spawn restores exactly those.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

const FAULTS: [i32; 7] = [
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGABRT,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGSEGV,
    libc::SIGSYS,
];

/// What a spawned child must start with: the signal state zurg inherited.
#[derive(Clone, Copy)]
pub struct ChildSignals {
    /// The mask zurg was started with.
    pub mask: libc::sigset_t,
    /// Signals zurg changed that were not ignored when zurg started.
    pub reset_to_default: libc::sigset_t,
}

impl std::fmt::Debug for ChildSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildSignals")
    }
}

fn empty_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the whole set it is given.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        set.assume_init()
    }
}

fn add(set: &mut libc::sigset_t, signo: i32) {
    // SAFETY: `set` is an initialised sigset; invalid numbers just return EINVAL.
    unsafe {
        libc::sigaddset(set, signo);
    }
}

fn is_ignored(signo: i32) -> bool {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only queries; the kernel fills `old`.
    let ret = unsafe { libc::sigaction(signo, std::ptr::null(), old.as_mut_ptr()) };
    if ret != 0 {
        return false;
    }
    // SAFETY: sigaction succeeded and wrote the struct (it was zeroed anyway).
    let old = unsafe { old.assume_init() };
    old.sa_sigaction == libc::SIG_IGN
}

fn set_ignored(signo: i32) -> io::Result<()> {
    set_disposition(signo, libc::SIG_IGN)
}

/// SIG_IGN or SIG_DFL for `signo`: no handler of ours ever runs.
fn set_disposition(signo: i32, disposition: libc::sighandler_t) -> io::Result<()> {
    let mut act = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags); only the
    // handler is set, to SIG_IGN or SIG_DFL, which run no code of ours.
    unsafe {
        let a = act.as_mut_ptr();
        (*a).sa_sigaction = disposition;
        cvt(libc::sigaction(signo, a, std::ptr::null_mut()))?;
    }
    Ok(())
}

/// A client verb (`status`, `logs -f`, `resolve --watch`...) whose reader
/// went away (`zurg status | head`) ends as `cat` or `grep` would, by
/// SIGPIPE, instead of failing on every later write. Rust starts with
/// SIGPIPE ignored; only the client faces put it back. The control socket's
/// own writes use MSG_NOSIGNAL (cli::client), so a zurg that hangs up still
/// gets its error message printed.
pub fn die_on_broken_pipe() -> io::Result<()> {
    set_disposition(libc::SIGPIPE, libc::SIG_DFL)
}

/// Which signals zurg reads from its signalfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// `zurg run`: what it acts on; faults stay fatal, PIPE and TTIN/TTOU ignored.
    Supervisor,
    /// The shim: everything a process can send, to forward it.
    Forwarding,
    /// `zurg publisher`: only the requests to stop (TERM, INT). It has no
    /// children, and every other signal keeps its default action, so HUP
    /// and QUIT still end it as they end any daemon that does not say
    /// otherwise.
    Publisher,
}

/// Whether zurg blocks `signo` and reads it from the signalfd.
pub fn is_handled(signo: i32, takeover: Takeover) -> bool {
    let never = matches!(signo, libc::SIGKILL | libc::SIGSTOP)
        || (32..34).contains(&signo)
        || !(1..=64).contains(&signo);
    match takeover {
        Takeover::Forwarding => !never,
        Takeover::Publisher => matches!(signo, libc::SIGTERM | libc::SIGINT),
        Takeover::Supervisor => {
            !(never
                || FAULTS.contains(&signo)
                || matches!(signo, libc::SIGPIPE | libc::SIGTTIN | libc::SIGTTOU))
        }
    }
}

/// A signal as read from the signalfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub signo: i32,
    /// Sender's pid (0 for the kernel, or a sender outside zurg's pid namespace).
    pub from_pid: u32,
    /// si_code: <= 0 when a process sent it (SI_USER, SI_QUEUE, SI_TKILL),
    /// SI_KERNEL or a fault code when the kernel did.
    pub code: i32,
}

/// What a terminal's line discipline sends the whole foreground (or
/// reading) process group, with si_code SI_KERNEL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromTerminal {
    /// ^C, ^\ or a window-size change: INT, QUIT, WINCH.
    Key,
    /// ^Z, or a read or write by a background group: TSTP, TTIN, TTOU.
    Stop,
}

impl Received {
    /// Whether the terminal sent this to a process group, so every member
    /// of zurg's group got it at the same moment. Only the terminal sends
    /// these numbers with SI_KERNEL, except ctrl-alt-del's SIGINT, which
    /// goes to the initial namespace's PID 1 alone (and a PID 1 shim shares
    /// no group with its child).
    pub fn from_terminal(&self) -> Option<FromTerminal> {
        const SI_KERNEL: i32 = 0x80;
        if self.code != SI_KERNEL {
            return None;
        }
        match self.signo {
            libc::SIGINT | libc::SIGQUIT | libc::SIGWINCH => Some(FromTerminal::Key),
            libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => Some(FromTerminal::Stop),
            _ => None,
        }
    }

    /// Whether this is a request to zurg, to be acted on or forwarded, rather
    /// than zurg's own doing: a fault number the kernel raised
    /// asynchronously (a machine-check SIGBUS) or a signal zurg sent itself
    /// (the SIGPIPE of a write to a closed pipe carries zurg's own pid).
    pub fn is_request(&self, my_pid: i32) -> bool {
        if FAULTS.contains(&self.signo) && self.code > 0 {
            return false;
        }
        let own = i32::try_from(self.from_pid).is_ok_and(|p| p == my_pid);
        !(own && self.code <= 0)
    }
}

/// The non-blocking signalfd carrying every handled signal.
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Reads every pending signal; returns an empty list when none is pending.
    pub fn drain(&self) -> Vec<Received> {
        let mut out = Vec::new();
        loop {
            let mut info = MaybeUninit::<libc::signalfd_siginfo>::zeroed();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reads at most `size` bytes into a local of that size.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), info.as_mut_ptr().cast(), size) };
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if usize::try_from(n).ok() != Some(size) {
                return out;
            }
            // SAFETY: the kernel wrote a whole signalfd_siginfo.
            let info = unsafe { info.assume_init() };
            out.push(Received {
                signo: i32::try_from(info.ssi_signo).unwrap_or(0),
                from_pid: info.ssi_pid,
                code: info.ssi_code,
            });
        }
    }
}

impl SignalFd {
    /// Whether a signal waits to be read, without reading it: for a
    /// set-up step that blocks and must give up when a stop is asked for,
    /// leaving the signal to whoever handles it.
    pub fn pending(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Takes over signal handling for the whole process: must run before any
/// other thread exists (zurg has none) and before the first spawn.
pub fn take_over() -> io::Result<(SignalFd, ChildSignals)> {
    take_over_as(Takeover::Supervisor)
}

/// `take_over` for the shim, which forwards every signal a process sends.
pub fn take_over_forwarding() -> io::Result<(SignalFd, ChildSignals)> {
    take_over_as(Takeover::Forwarding)
}

/// `take_over` for `zurg publisher`: TERM and INT arrive on the signalfd,
/// so it can say goodbye before it exits. Must run before its threads
/// start (they inherit the mask).
pub fn take_over_publisher() -> io::Result<SignalFd> {
    take_over_as(Takeover::Publisher).map(|(fd, _)| fd)
}

/// The mask zurg was started with, when `hold_stop_requests` changed it
/// before `take_over_as` ran: children must get this one, not the held.
static STARTED_WITH: std::sync::OnceLock<libc::sigset_t> = std::sync::OnceLock::new();

/// Blocks SIGTERM and SIGINT, the first thing `zurg run`, `zurg
/// publisher` and any zurg that is PID 1 (the shim) do in `main`: from
/// exec until the signalfd takes them, a
/// request to stop would otherwise get the default action (death without a
/// clean stop; as PID 1 of a pid namespace, the kernel drops it). Blocked,
/// it waits as pending, and the signalfd made later reads it. What is left
/// of the window is the kernel's and the loader's, before any of zurg's
/// code runs. Children still get the mask zurg started with.
pub fn hold_stop_requests() -> io::Result<()> {
    let mut held = empty_set();
    add(&mut held, libc::SIGTERM);
    add(&mut held, libc::SIGINT);
    let mut before = empty_set();
    // SAFETY: both sets are initialised locals; only TERM and INT are added
    // to the mask.
    cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &held, &mut before) })?;
    // A second call would record the held mask as the inherited one.
    let _ = STARTED_WITH.set(before);
    Ok(())
}

fn take_over_as(takeover: Takeover) -> io::Result<(SignalFd, ChildSignals)> {
    let mut inherited_mask = empty_set();
    // SAFETY: a null new set only reads the current mask into a live local.
    cvt(unsafe { libc::sigprocmask(libc::SIG_SETMASK, std::ptr::null(), &mut inherited_mask) })?;
    if let Some(started) = STARTED_WITH.get() {
        inherited_mask = *started;
    }

    let mut reset_to_default = empty_set();
    // Rust ignores PIPE before main, so whether zurg inherited it ignored is
    // unknowable; children get the default, as every Rust-spawned child does.
    add(&mut reset_to_default, libc::SIGPIPE);
    if takeover == Takeover::Supervisor {
        for signo in [libc::SIGTTIN, libc::SIGTTOU] {
            if !is_ignored(signo) {
                add(&mut reset_to_default, signo);
            }
            set_ignored(signo)?;
        }
    }

    let mut blocked = empty_set();
    for signo in 1..=64 {
        if is_handled(signo, takeover) {
            add(&mut blocked, signo);
        }
    }
    // SAFETY: sets the mask from an initialised set; the old one is not needed.
    cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &blocked, std::ptr::null_mut()) })?;
    // SAFETY: creates a new fd for an initialised set.
    let raw = cvt(unsafe { libc::signalfd(-1, &blocked, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
    // SAFETY: the fd was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok((
        SignalFd { fd },
        ChildSignals {
            mask: inherited_mask,
            reset_to_default,
        },
    ))
}

/// Whether stdin is zurg's controlling terminal with zurg's process group in
/// its foreground: only then may zurg hand the terminal to its child. The
/// group must be visible in zurg's pid namespace (getpgrp is not 0), or zurg
/// could not name it to take the terminal back; and an invisible foreground
/// group would read 0 as well, equal without being the same.
pub fn terminal_is_ours() -> bool {
    // SAFETY: isatty, tcgetpgrp and getpgrp take and return plain integers.
    unsafe {
        let mine = libc::getpgrp();
        mine > 0 && libc::isatty(0) == 1 && libc::tcgetpgrp(0) == mine
    }
}

/// The foreground process group of the terminal on stdin, if it is zurg's
/// controlling terminal.
pub fn terminal_foreground() -> Option<i32> {
    // SAFETY: tcgetpgrp takes an fd and returns a pid or -1.
    let pgrp = unsafe { libc::tcgetpgrp(0) };
    (pgrp > 0).then_some(pgrp)
}

/// Stops zurg with `signo` (TSTP, TTIN or TTOU) by that signal's default
/// action, so the shell that runs zurg as a job sees it stop just as the
/// child did. Returns once zurg is continued, or at once when the kernel
/// discards the stop: an orphaned process group (no shell to resume it) or
/// the init of a pid namespace.
pub fn stop_self(signo: i32) -> io::Result<()> {
    let mut one = empty_set();
    add(&mut one, signo);
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    let mut dfl = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a zeroed sigaction is the default action with an empty mask;
    // the kernel fills `old`, which was zeroed and stays initialised.
    unsafe {
        (*dfl.as_mut_ptr()).sa_sigaction = libc::SIG_DFL;
        cvt(libc::sigaction(signo, dfl.as_ptr(), old.as_mut_ptr()))?;
        // Blocked first, so the signal waits until the unblock below; the
        // stop then happens on the way out of that call, and the signalfd
        // never sees it.
        cvt(libc::sigprocmask(
            libc::SIG_BLOCK,
            &one,
            std::ptr::null_mut(),
        ))?;
        cvt(libc::kill(libc::getpid(), signo))?;
        let unblocked = cvt(libc::sigprocmask(
            libc::SIG_UNBLOCK,
            &one,
            std::ptr::null_mut(),
        ));
        let reblocked = cvt(libc::sigprocmask(
            libc::SIG_BLOCK,
            &one,
            std::ptr::null_mut(),
        ));
        let restored = cvt(libc::sigaction(signo, old.as_ptr(), std::ptr::null_mut()));
        unblocked.and(reblocked).and(restored).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn got(signo: i32, from_pid: u32, code: i32) -> Received {
        Received {
            signo,
            from_pid,
            code,
        }
    }

    #[test]
    fn only_the_terminals_keys_and_stops_count_as_from_the_terminal() {
        const SI_USER: i32 = 0;
        const SI_KERNEL: i32 = 0x80;
        for signo in [libc::SIGINT, libc::SIGQUIT, libc::SIGWINCH] {
            assert_eq!(
                got(signo, 0, SI_KERNEL).from_terminal(),
                Some(FromTerminal::Key)
            );
            assert_eq!(got(signo, 7, SI_USER).from_terminal(), None);
        }
        for signo in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
            assert_eq!(
                got(signo, 0, SI_KERNEL).from_terminal(),
                Some(FromTerminal::Stop)
            );
            assert_eq!(got(signo, 7, SI_USER).from_terminal(), None);
        }
        // a hang-up goes to the session leader, not to a group
        assert_eq!(got(libc::SIGHUP, 0, SI_KERNEL).from_terminal(), None);
    }

    #[test]
    fn a_sent_signal_is_a_request_and_zurgs_own_doing_is_not() {
        const SI_USER: i32 = 0;
        const SI_QUEUE: i32 = -1;
        const SI_TKILL: i32 = -6;
        const SI_KERNEL: i32 = 0x80;
        const BUS_MCEERR_AO: i32 = 5;
        let me = 40;
        // kill(2), sigqueue(3), tgkill(2) by another process, any number
        for code in [SI_USER, SI_QUEUE, SI_TKILL] {
            for signo in [libc::SIGSEGV, libc::SIGPIPE, libc::SIGTERM, libc::SIGABRT] {
                assert!(got(signo, 7, code).is_request(me), "{signo} {code}");
            }
        }
        // from outside zurg's pid namespace the sender's pid reads 0
        assert!(got(libc::SIGSEGV, 0, SI_USER).is_request(me));
        // the terminal's keys and hang-up
        assert!(got(libc::SIGINT, 0, SI_KERNEL).is_request(me));
        assert!(got(libc::SIGHUP, 0, SI_KERNEL).is_request(me));
        // zurg's own SIGPIPE, or its own raise
        assert!(!got(libc::SIGPIPE, 40, SI_USER).is_request(me));
        assert!(!got(libc::SIGTSTP, 40, SI_TKILL).is_request(me));
        // a fault the kernel raised without a process asking
        assert!(!got(libc::SIGBUS, 0, BUS_MCEERR_AO).is_request(me));
        assert!(!got(libc::SIGSEGV, 0, SI_KERNEL).is_request(me));
    }

    #[test]
    fn the_shim_takes_every_signal_a_process_can_send_the_supervisor_not_faults() {
        for signo in 1..=31 {
            let uncatchable = signo == libc::SIGKILL || signo == libc::SIGSTOP;
            assert_eq!(
                is_handled(signo, Takeover::Forwarding),
                !uncatchable,
                "{signo}"
            );
        }
        for signo in FAULTS.iter().chain(&[libc::SIGPIPE, libc::SIGTTIN]) {
            assert!(!is_handled(*signo, Takeover::Supervisor), "{signo}");
        }
        for signo in [libc::SIGTERM, libc::SIGHUP, libc::SIGCHLD, 34, 64] {
            assert!(is_handled(signo, Takeover::Supervisor), "{signo}");
            assert!(is_handled(signo, Takeover::Forwarding), "{signo}");
        }
        for signo in [0, 32, 33, 65] {
            assert!(!is_handled(signo, Takeover::Forwarding), "{signo}");
        }
        for signo in 0..=65 {
            assert_eq!(
                is_handled(signo, Takeover::Publisher),
                signo == libc::SIGTERM || signo == libc::SIGINT,
                "{signo}"
            );
        }
    }
}
