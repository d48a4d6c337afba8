//! Signals: zurg blocks every catchable signal and reads them from a
//! signalfd registered in the event loop, so a signal is just another event
//! and no handler ever runs at an awkward moment.
//!
//! Left alone: the fault signals (ILL, TRAP, ABRT, BUS, FPE, SEGV, SYS), which
//! the kernel raises synchronously and which must kill a broken zurg rather
//! than queue forever; glibc's two internal real-time signals; and PIPE, which
//! Rust's runtime ignores so a write to a closed socket is an EPIPE error
//! (blocking it instead would queue zurg's own SIGPIPEs into the signalfd and
//! have them forwarded to children). TTIN and TTOU are ignored, as tini does,
//! so that handing the terminal to a child's process group cannot stop zurg.
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
    let mut act = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags); we only set
    // the handler to SIG_IGN before passing it to the kernel.
    unsafe {
        let a = act.as_mut_ptr();
        (*a).sa_sigaction = libc::SIG_IGN;
        cvt(libc::sigaction(signo, a, std::ptr::null_mut()))?;
    }
    Ok(())
}

/// Whether zurg blocks `signo` and reads it from the signalfd.
pub fn is_handled(signo: i32) -> bool {
    !(FAULTS.contains(&signo)
        || matches!(
            signo,
            libc::SIGKILL | libc::SIGSTOP | libc::SIGPIPE | libc::SIGTTIN | libc::SIGTTOU
        )
        || (32..34).contains(&signo)
        || !(1..=64).contains(&signo))
}

/// A signal as read from the signalfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub signo: i32,
    /// Sender's pid (0 for the kernel).
    pub from_pid: u32,
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
            });
        }
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
    let mut inherited_mask = empty_set();
    // SAFETY: a null new set only reads the current mask into a live local.
    cvt(unsafe { libc::sigprocmask(libc::SIG_SETMASK, std::ptr::null(), &mut inherited_mask) })?;

    let mut reset_to_default = empty_set();
    // Rust ignores PIPE before main, so whether zurg inherited it ignored is
    // unknowable; children get the default, as every Rust-spawned child does.
    add(&mut reset_to_default, libc::SIGPIPE);
    for signo in [libc::SIGTTIN, libc::SIGTTOU] {
        if !is_ignored(signo) {
            add(&mut reset_to_default, signo);
        }
        set_ignored(signo)?;
    }

    let mut blocked = empty_set();
    for signo in 1..=64 {
        if is_handled(signo) {
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
