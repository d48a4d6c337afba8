//! Starting a child: clone(CLONE_VM|CLONE_VFORK|CLONE_PIDFD|CLONE_FILES),
//! then exec. The child leaves zurg's descriptor table first (`FdSlots`).
//!
//! Restart speed is decided here. Sharing zurg's memory until the exec (the
//! vfork model, as glibc's posix_spawn does) costs what the raw spawn loop
//! pays however large zurg grows, where fork() would copy page tables; the
//! pidfd comes from the same call. Writing the child side ourselves, rather
//! than calling posix_spawn, lets it put its own pid into its environment
//! before exec (`ZURG_GPID`, `LISTEN_PID` need it), and exec an already
//! opened, verified file descriptor.
//!
//! Everything the child touches is prepared by the parent first: C strings,
//! pointer arrays, the stack. The child side (`child_main`) only makes
//! async-signal-safe system calls and writes into buffers it was given, then
//! execs or reports errno through a shared slot and exits with 127.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::creds::Credentials;
use super::pidfd::PidFd;
use super::signals::ChildSignals;

extern "C" {
    static environ: *const *const libc::c_char;
}

/// Stack for the child until it execs; it runs only a few system calls.
const CHILD_STACK: usize = 64 * 1024;
/// Room left at the end of a pid variable for the decimal pid.
const PID_DIGITS: usize = 10;
/// Where a passed listening socket goes in the child.
const LISTEN_FD: RawFd = 3;

/// What to run, prepared before the spawn so the child side allocates nothing.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// Program: a path, or a bare name looked up in $PATH when `search_path`.
    pub program: CString,
    pub argv: Vec<CString>,
    /// `KEY=VALUE` entries added to zurg's own environment, replacing any
    /// of the same key. zurg's environment is not copied per service: the
    /// child's pointer array is put together at each spawn.
    pub env: Vec<CString>,
    /// Environment entries (`NAME=prefix`) whose value the child completes
    /// with its own pid, e.g. `LISTEN_PID=` or `ZURG_GPID=ip:port:start:`.
    pub pid_vars: Vec<String>,
    pub cwd: Option<CString>,
    pub search_path: bool,
    /// Put the child in a new process group of its own.
    pub new_pgroup: bool,
    /// Put the child in a new session (implies a new process group).
    pub new_session: bool,
    /// Make the child's new process group the foreground group of the
    /// terminal on stdin (with `new_pgroup`). Done in the child before exec,
    /// as tini does, so the program never starts in the background of its
    /// own terminal; zurg's mask still blocks TTOU there, which is what lets
    /// a background group call tcsetpgrp.
    pub foreground: bool,
    /// Give the child /dev/null as stdin instead of zurg's.
    pub null_stdin: bool,
    /// `KEY=VALUE` entries that change from one start to the next (`PORT`,
    /// `LISTEN_FDS`), set by the caller before each spawn.
    pub start_env: Vec<CString>,
    /// A listening socket handed to the child as fd 3 (socket activation).
    pub listen_fd: Option<RawFd>,
    /// Signal the child gets when zurg's spawning thread dies
    /// (PR_SET_PDEATHSIG), or 0 for none.
    pub death_signal: i32,
    /// The child's fd 1.
    pub stdout: ChildOut,
    /// The child's fd 2.
    pub stderr: ChildOut,
    /// `(zurg's descriptor, N)`: the write end of a readiness pipe that
    /// becomes the child's fd N (`ready = { fd = N }`). zurg's descriptor
    /// must be above 3 (`READY_FD_FLOOR`), so no other step overwrites it.
    pub ready_fd: Option<(RawFd, RawFd)>,
    // Identity and limits (`user`, `rlimits`, `capabilities`...): applied
    // by `os::creds` in the child; `None` adds nothing to the child side.
    pub creds: Option<Credentials>,
    // cgroup (kill_mode, limits)
    /// The service cgroup's directory (kept open by the caller): the child
    /// is created in it (clone3 CLONE_INTO_CGROUP), so it starts under its
    /// limits and nothing it forks escapes.
    pub cgroup_dir: Option<RawFd>,
    /// The same cgroup's `cgroup.procs`, open for writing: where clone3
    /// cannot place the child (a kernel before 5.7, a seccomp filter,
    /// another architecture) the child writes "0" to it before anything
    /// else, which moves it in at the cost of a migration.
    pub cgroup_procs: Option<RawFd>,
}

/// zurg's end of a readiness pipe is moved at least this high before a
/// spawn, above fds 0 to 3 that the child side fills.
pub const READY_FD_FLOOR: RawFd = 10;

/// What a child gets as its fd 1 or 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildOut {
    /// zurg's own descriptor.
    Inherit,
    /// /dev/null, opened for writing.
    Null,
    /// This descriptor of zurg's (the write end of the service's pipe,
    /// kept by zurg across restarts).
    Fd(RawFd),
}

impl SpawnSpec {
    pub fn new(program: CString, argv: Vec<CString>) -> SpawnSpec {
        SpawnSpec {
            program,
            argv,
            env: Vec::new(),
            pid_vars: Vec::new(),
            cwd: None,
            search_path: false,
            new_pgroup: false,
            new_session: false,
            foreground: false,
            null_stdin: false,
            start_env: Vec::new(),
            listen_fd: None,
            death_signal: 0,
            stdout: ChildOut::Inherit,
            stderr: ChildOut::Inherit,
            ready_fd: None,
            creds: None,
            cgroup_dir: None,
            cgroup_procs: None,
        }
    }
}

/// The step of the child side that failed, reported through `ChildArgs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SpawnStep {
    /// setsid or setpgid.
    Session = 1,
    /// chdir to the unit's `cwd`.
    Chdir,
    /// /dev/null as stdin.
    Stdin,
    /// The listening socket as fd 3.
    ListenFd,
    /// The signal mask the child inherits.
    SignalMask,
    /// The exec itself.
    Exec,
    /// PR_SET_PDEATHSIG, so a killed zurg does not leave the service behind.
    DeathSignal,
    /// fd 1 or 2 from the service's pipe or /dev/null.
    Output,
    /// The readiness pipe as fd N.
    ReadyFd,
    // The steps of `os::creds`, each named after its unit key.
    /// setrlimit for `rlimits`.
    Rlimits,
    /// setpriority for `nice`.
    Nice,
    /// /proc/self/oom_score_adj for `oom_score_adj` (in the parent).
    OomScoreAdj,
    /// setgroups for `group` / `supplementary_groups`.
    Groups,
    /// setgid for `group`.
    Gid,
    /// setuid for `user`.
    Uid,
    /// setuid(0) still worked after `user`.
    RegainRoot,
    /// The bounding set, capset and ambient raise for `capabilities`.
    Capabilities,
    /// PR_SET_NO_NEW_PRIVS for `no_new_privs`.
    NoNewPrivs,
    /// Moving into the service's cgroup.
    Cgroup,
    /// Leaving zurg's descriptor table (close_range CLOSE_RANGE_UNSHARE).
    FdTable,
    /// The exec found the program but not what it needs to run: the
    /// interpreter of its `#!` line, or its ELF loader (ENOENT).
    Interpreter,
}

impl std::fmt::Display for SpawnStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SpawnStep::Session => "start a new session",
            SpawnStep::Chdir => "change directory",
            SpawnStep::Stdin => "open /dev/null as stdin",
            SpawnStep::ListenFd => "pass the listening socket as fd 3",
            SpawnStep::SignalMask => "set the signal mask",
            SpawnStep::Exec => "exec",
            SpawnStep::DeathSignal => "set the parent-death signal",
            SpawnStep::Output => "set up stdout and stderr",
            SpawnStep::ReadyFd => "pass the readiness pipe as its fd",
            SpawnStep::Rlimits => "set `rlimits`",
            SpawnStep::Nice => "set `nice`",
            SpawnStep::OomScoreAdj => "set `oom_score_adj`",
            SpawnStep::Groups => "set the groups of `group`/`supplementary_groups` (setgroups)",
            SpawnStep::Gid => "switch to `group` (setgid)",
            SpawnStep::Uid => "switch to `user` (setuid)",
            SpawnStep::RegainRoot => "drop root for good (setuid(0) still worked after `user`)",
            SpawnStep::Capabilities => "set `capabilities`",
            SpawnStep::NoNewPrivs => "set `no_new_privs`",
            SpawnStep::Cgroup => "move into its cgroup",
            SpawnStep::FdTable => "leave zurg's descriptor table",
            SpawnStep::Interpreter => "exec",
        })
    }
}

impl SpawnStep {
    fn from_raw(raw: u8) -> SpawnStep {
        match raw {
            1 => SpawnStep::Session,
            2 => SpawnStep::Chdir,
            3 => SpawnStep::Stdin,
            4 => SpawnStep::ListenFd,
            5 => SpawnStep::SignalMask,
            7 => SpawnStep::DeathSignal,
            8 => SpawnStep::Output,
            9 => SpawnStep::ReadyFd,
            10 => SpawnStep::Rlimits,
            11 => SpawnStep::Nice,
            12 => SpawnStep::OomScoreAdj,
            13 => SpawnStep::Groups,
            14 => SpawnStep::Gid,
            15 => SpawnStep::Uid,
            16 => SpawnStep::RegainRoot,
            17 => SpawnStep::Capabilities,
            18 => SpawnStep::NoNewPrivs,
            19 => SpawnStep::Cgroup,
            20 => SpawnStep::FdTable,
            21 => SpawnStep::Interpreter,
            _ => SpawnStep::Exec,
        }
    }
}

/// Why a spawn failed: the step, what it was applied to, and the errno.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create a process for {program}: {source}")]
    Clone { program: String, source: io::Error },
    #[error("cannot change to cwd {dir}: {source}")]
    Chdir { dir: String, source: io::Error },
    #[error("cannot run {program}: {source}")]
    Exec { program: String, source: io::Error },
    /// ENOENT for a program that exists: what is missing is the program
    /// its `#!` line names, or its ELF loader.
    #[error("cannot run {program}: the interpreter its #! line names, or the dynamic loader it needs, is missing ({source})")]
    Interpreter { program: String, source: io::Error },
    /// A limit of `rlimits` the kernel refused, named as in the unit.
    #[error("cannot set `rlimits` {limit} for {program}: {source}")]
    Rlimit {
        program: String,
        /// `nofile = 65536`, `core = "unlimited"`, `nproc = [512, 1024]`.
        limit: String,
        source: io::Error,
    },
    #[error("cannot {step} for {program}: {source}")]
    Setup {
        program: String,
        step: SpawnStep,
        source: io::Error,
    },
}

impl SpawnError {
    /// The errno of the failed step (the shim maps it to 126/127).
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source().raw_os_error()
    }

    pub fn step(&self) -> Option<SpawnStep> {
        match self {
            SpawnError::Clone { .. } => None,
            SpawnError::Chdir { .. } => Some(SpawnStep::Chdir),
            SpawnError::Exec { .. } => Some(SpawnStep::Exec),
            SpawnError::Interpreter { .. } => Some(SpawnStep::Interpreter),
            SpawnError::Rlimit { .. } => Some(SpawnStep::Rlimits),
            SpawnError::Setup { step, .. } => Some(*step),
        }
    }

    fn source(&self) -> &io::Error {
        match self {
            SpawnError::Clone { source, .. }
            | SpawnError::Chdir { source, .. }
            | SpawnError::Exec { source, .. }
            | SpawnError::Interpreter { source, .. }
            | SpawnError::Rlimit { source, .. }
            | SpawnError::Setup { source, .. } => source,
        }
    }

    /// The child's failure at `step`; `rlimit`, for `Rlimits`, is the
    /// index of the limit refused.
    fn of_child(spec: &SpawnSpec, step: SpawnStep, errno: i32, rlimit: usize) -> SpawnError {
        let program = spec.program.to_string_lossy().into_owned();
        let source = io::Error::from_raw_os_error(errno);
        let refused = spec.creds.as_ref().and_then(|c| c.rlimits.get(rlimit));
        match step {
            SpawnStep::Rlimits if refused.is_some() => {
                let limit = refused.map_or_else(String::new, |&(_, soft, hard, name)| {
                    format!("{name} = {}", rlimit_value(soft, hard))
                });
                SpawnError::Rlimit {
                    program,
                    limit,
                    source,
                }
            }
            SpawnStep::Chdir => SpawnError::Chdir {
                dir: spec
                    .cwd
                    .as_ref()
                    .map_or_else(String::new, |c| c.to_string_lossy().into_owned()),
                source,
            },
            SpawnStep::Exec => SpawnError::Exec { program, source },
            SpawnStep::Interpreter => SpawnError::Interpreter { program, source },
            step => SpawnError::Setup {
                program,
                step,
                source,
            },
        }
    }
}

/// A limit's value as a unit writes it: `65536`, `"unlimited"`, `[512, 1024]`.
fn rlimit_value(soft: u64, hard: u64) -> String {
    let one = |v: u64| {
        if v == libc::RLIM64_INFINITY {
            "\"unlimited\"".to_string()
        } else {
            v.to_string()
        }
    };
    if soft == hard {
        one(soft)
    } else {
        format!("[{}, {}]", one(soft), one(hard))
    }
}

/// A started child: its pid, and a pidfd when the kernel gave one.
#[derive(Debug)]
pub struct Child {
    pub pid: i32,
    pub pidfd: Option<PidFd>,
    /// Why there is no pidfd, when there is none (EMFILE, ENOSYS).
    pub pidfd_error: Option<io::Error>,
}

/// Everything `child_main` reads, laid out by the parent.
struct ChildArgs {
    /// With CLONE_FILES: the end of `FdSlots`; the child's first step
    /// leaves zurg's table, keeping the descriptors below this one. -1
    /// when the child has a copy of its own already (no CLONE_FILES).
    unshare_from: RawFd,
    /// Executables to try in order (one, or one per $PATH entry).
    candidates: Vec<*const libc::c_char>,
    /// Verified executable to run instead of a path (execveat AT_EMPTY_PATH).
    exec_fd: RawFd,
    /// Becomes the child's fd 3, or -1.
    listen_fd: RawFd,
    /// (source, target) of the readiness pipe, or (-1, -1).
    ready_fd: (RawFd, RawFd),
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// (buffer, offset of the pid digits) for each pid variable.
    pid_slots: Vec<(*mut u8, usize)>,
    cwd: *const libc::c_char,
    devnull: *const libc::c_char,
    /// zurg's /dev/null, open for reading and writing, to dup2 for stdin
    /// or an output set to null instead of opening it anew; -1 to open it.
    null_fd: RawFd,
    new_session: bool,
    new_pgroup: bool,
    foreground: bool,
    null_stdin: bool,
    /// For fds 1 and 2: a descriptor to dup there, or -1.
    out_fds: [RawFd; 2],
    /// For fds 1 and 2: open /dev/null there.
    out_null: [bool; 2],
    mask: libc::sigset_t,
    reset_to_default: libc::sigset_t,
    death_signal: i32,
    /// zurg's pid, to tell whether it died before the death signal was set.
    parent: libc::pid_t,
    /// The spec's `creds`, or null.
    creds: *const Credentials,
    /// The cgroup's `cgroup.procs` to write "0" to, or -1.
    cgroup_procs: RawFd,
    /// errno of the failed step, written by the child.
    error: i32,
    /// Which step failed (`SpawnStep` as u8), written with `error`.
    failed_step: u8,
    /// With `SpawnStep::Rlimits`: the index of the limit refused.
    failed_rlimit: usize,
}

fn check_ret(ret: libc::c_int, step: SpawnStep) -> Result<(), (SpawnStep, i32)> {
    if ret == -1 {
        // SAFETY: reading errno right after the failed call.
        Err((step, unsafe { *libc::__errno_location() }))
    } else {
        Ok(())
    }
}

/// The child between clone and exec. It shares zurg's memory and must not
/// allocate, lock, or unwind: plain system calls on prepared data only.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ChildArgs the parent passed to clone; the parent
    // is suspended (CLONE_VFORK) until we exec or exit, so nothing else
    // touches it.
    let a = unsafe { &mut *arg.cast::<ChildArgs>() };
    // SAFETY: every call below is async-signal-safe and gets pointers the
    // parent prepared and keeps alive until clone returns.
    let result = unsafe { child_steps(a) };
    if let Err((step, errno)) = result {
        a.failed_step = step as u8;
        a.error = errno;
    }
    // SAFETY: _exit never returns and runs no atexit handlers.
    unsafe { libc::_exit(127) }
}

/// PR_SET_PDEATHSIG with the spec's signal, in the child. zurg may have
/// been killed between clone and prctl, and then the death signal never
/// comes: a child that is no longer ours goes.
///
/// SAFETY (for callers): only in the child between clone and exec.
unsafe fn set_death_signal(a: &ChildArgs) -> Result<(), (SpawnStep, i32)> {
    check_ret(
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            a.death_signal as libc::c_ulong,
            0,
            0,
            0,
        ),
        SpawnStep::DeathSignal,
    )?;
    if libc::getppid() != a.parent {
        libc::_exit(127);
    }
    Ok(())
}

/// Moves the child into its service's cgroup: "0" written to the
/// cgroup's `cgroup.procs` means the writer. First of the steps, so what
/// the child does next is already charged to the service.
unsafe fn join_cgroup(a: &ChildArgs) -> Result<(), (SpawnStep, i32)> {
    if a.cgroup_procs < 0 {
        return Ok(());
    }
    let zero = b"0";
    let written = libc::write(a.cgroup_procs, zero.as_ptr().cast(), zero.len());
    check_ret(if written < 0 { -1 } else { 0 }, SpawnStep::Cgroup)
}

unsafe fn child_steps(a: &mut ChildArgs) -> Result<(), (SpawnStep, i32)> {
    if a.unshare_from >= 0 {
        // Until here the table is zurg's own: nothing above touched it.
        // The copy takes only the descriptors below `unshare_from` (zurg's
        // stdio and the slots), whatever the size of zurg's table.
        check_ret(
            libc::syscall(
                libc::SYS_close_range,
                a.unshare_from as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            ) as libc::c_int,
            SpawnStep::FdTable,
        )?;
    }
    join_cgroup(a)?;
    let pid = libc::syscall(libc::SYS_getpid) as u64;
    for &(buf, offset) in &a.pid_slots {
        let mut digits = [0u8; 20];
        let mut n = pid;
        let mut len = 0;
        loop {
            if let Some(d) = digits.get_mut(len) {
                *d = b'0' + (n % 10) as u8;
            }
            len += 1;
            n /= 10;
            if n == 0 || len >= digits.len() {
                break;
            }
        }
        for i in 0..len.min(PID_DIGITS) {
            *buf.add(offset + i) = digits.get(len - 1 - i).copied().unwrap_or(b'0');
        }
        *buf.add(offset + len.min(PID_DIGITS)) = 0;
    }
    if a.death_signal != 0 {
        set_death_signal(a)?;
    }
    if a.new_session {
        check_ret(libc::setsid(), SpawnStep::Session)?;
    } else if a.new_pgroup {
        check_ret(libc::setpgid(0, 0), SpawnStep::Session)?;
        if a.foreground {
            // Without the terminal the program still runs, in the background.
            libc::tcsetpgrp(0, libc::getpgrp());
        }
    }
    for signo in 1..=64 {
        if libc::sigismember(&a.reset_to_default, signo) == 1 {
            libc::signal(signo, libc::SIG_DFL);
        }
    }
    if !a.cwd.is_null() {
        check_ret(libc::chdir(a.cwd), SpawnStep::Chdir)?;
    }
    if a.null_stdin {
        if a.null_fd >= 0 {
            check_ret(libc::dup2(a.null_fd, 0), SpawnStep::Stdin)?;
        } else {
            let fd = libc::open(a.devnull, libc::O_RDONLY);
            check_ret(fd, SpawnStep::Stdin)?;
            if fd != 0 {
                check_ret(libc::dup2(fd, 0), SpawnStep::Stdin)?;
                libc::close(fd);
            }
        }
    }
    // Before fd 3 is set: dup2 leaves fds 1 and 2 without close-on-exec,
    // and the pipe's own descriptor (close-on-exec) goes away at exec.
    for (target, (&fd, &null)) in [1, 2].into_iter().zip(a.out_fds.iter().zip(&a.out_null)) {
        if fd >= 0 {
            check_ret(libc::dup2(fd, target), SpawnStep::Output)?;
        } else if null && a.null_fd >= 0 {
            check_ret(libc::dup2(a.null_fd, target), SpawnStep::Output)?;
        } else if null {
            let fd = libc::open(a.devnull, libc::O_WRONLY | libc::O_CLOEXEC);
            check_ret(fd, SpawnStep::Output)?;
            check_ret(libc::dup2(fd, target), SpawnStep::Output)?;
            libc::close(fd);
        }
    }
    if a.listen_fd >= 0 {
        // The first passed descriptor is fd 3 (SD_LISTEN_FDS_START). A
        // verified binary's fd may sit there: move it out of the way first.
        if a.exec_fd == LISTEN_FD {
            let moved = libc::fcntl(a.exec_fd, libc::F_DUPFD_CLOEXEC, LISTEN_FD + 1);
            check_ret(moved, SpawnStep::ListenFd)?;
            a.exec_fd = moved;
        }
        if a.listen_fd == LISTEN_FD {
            // dup2 onto itself would leave close-on-exec set.
            check_ret(
                libc::fcntl(LISTEN_FD, libc::F_SETFD, 0),
                SpawnStep::ListenFd,
            )?;
        } else {
            check_ret(libc::dup2(a.listen_fd, LISTEN_FD), SpawnStep::ListenFd)?;
        }
    }
    let (ready_src, ready_target) = a.ready_fd;
    if ready_src >= 0 {
        // The source sits above fd 3 (READY_FD_FLOOR), so the steps above
        // left it alone; a verified binary's fd in the target's place moves.
        if a.exec_fd == ready_target {
            let moved = libc::fcntl(a.exec_fd, libc::F_DUPFD_CLOEXEC, ready_target + 1);
            check_ret(moved, SpawnStep::ReadyFd)?;
            a.exec_fd = moved;
        }
        if ready_src == ready_target {
            check_ret(
                libc::fcntl(ready_target, libc::F_SETFD, 0),
                SpawnStep::ReadyFd,
            )?;
        } else {
            check_ret(libc::dup2(ready_src, ready_target), SpawnStep::ReadyFd)?;
        }
    }
    if let Some(creds) = a.creds.as_ref() {
        super::creds::apply(creds, &mut a.failed_rlimit)?;
        // A change of ids clears the parent-death signal: set it again.
        if a.death_signal != 0 && super::creds::changes_ids(creds) {
            set_death_signal(a)?;
        }
    }
    check_ret(
        libc::sigprocmask(libc::SIG_SETMASK, &a.mask, std::ptr::null_mut()),
        SpawnStep::SignalMask,
    )?;
    if a.exec_fd >= 0 {
        libc::syscall(
            libc::SYS_execveat,
            a.exec_fd,
            c"".as_ptr(),
            a.argv,
            a.envp,
            libc::AT_EMPTY_PATH,
        );
        let err = *libc::__errno_location();
        // The file is open: ENOENT is about what it needs.
        let step = if err == libc::ENOENT {
            SpawnStep::Interpreter
        } else {
            SpawnStep::Exec
        };
        return Err((step, err));
    }
    // execvp's rule: report EACCES if any candidate had it, else the last error.
    let mut err = libc::ENOENT;
    let mut saw_eacces = false;
    for &path in &a.candidates {
        libc::execve(path, a.argv, a.envp);
        err = *libc::__errno_location();
        if err == libc::EACCES {
            saw_eacces = true;
        }
        // SAFETY: `path` is a NUL-terminated string the parent keeps alive;
        // faccessat only reads it. An ENOENT for a file that is there
        // means its interpreter or loader is missing (as bash's "bad
        // interpreter"): that is the answer, not "not found".
        if err == libc::ENOENT && libc::faccessat(libc::AT_FDCWD, path, libc::F_OK, 0) == 0 {
            return Err((SpawnStep::Interpreter, err));
        }
        if !matches!(err, libc::ENOENT | libc::ENOTDIR | libc::EACCES) {
            break;
        }
    }
    Err((
        SpawnStep::Exec,
        if saw_eacces && err != libc::ENOEXEC {
            libc::EACCES
        } else {
            err
        },
    ))
}

/// $PATH candidates for a bare program name (execvp's search), built in the
/// parent. A name with a '/' is used as it is.
fn candidates(program: &CString, search_path: bool) -> Vec<CString> {
    let bytes = program.as_bytes();
    if !search_path || bytes.contains(&b'/') || bytes.is_empty() {
        return vec![program.clone()];
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    use std::os::unix::ffi::OsStrExt;
    path.as_bytes()
        .split(|b| *b == b':')
        .filter_map(|dir| {
            let dir = if dir.is_empty() { &b"."[..] } else { dir };
            let mut full = dir.to_vec();
            full.push(b'/');
            full.extend_from_slice(bytes);
            CString::new(full).ok()
        })
        .collect()
}

/// How many descriptors a child can take from zurg: the verified binary,
/// the listening socket, the readiness pipe, stdout, stderr, cgroup.procs.
const SLOTS: usize = 6;

/// Low descriptor numbers, held open on /dev/null, that carry a child's
/// descriptors across a clone sharing zurg's table (CLONE_FILES).
///
/// Copying the table at clone and closing it again at exec costs time in
/// the number of zurg's descriptors (about one per service, for the
/// pidfds). Sharing the table instead, the child's first step,
/// close_range(end, ~0, CLOSE_RANGE_UNSHARE), copies only the descriptors
/// below `end`: zurg's stdio, a few of its own, and these slots, into
/// which the parent has just dup'ed what the child needs. The slots sit at
/// `READY_FD_FLOOR` or above, like the readiness pipe before them, so the
/// child's steps that fill fds 0 to 3 leave them alone.
#[derive(Debug)]
struct FdSlots {
    /// /dev/null, read-write: what the slots hold between spawns, and the
    /// child's stdin (or fd 1, 2) where the unit says null, dup'ed rather
    /// than opened at each spawn.
    null: OwnedFd,
    slots: [OwnedFd; SLOTS],
    /// One past the highest slot.
    end: RawFd,
}

/// Which of `FdSlots`' slots hold a child's file rather than /dev/null.
#[derive(Debug)]
struct Loaded([bool; SLOTS]);

impl FdSlots {
    fn new() -> io::Result<FdSlots> {
        use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
        let null = open(
            "/dev/null",
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        let slot = || -> io::Result<OwnedFd> {
            let fd = fcntl(&null, FcntlArg::F_DUPFD_CLOEXEC(READY_FD_FLOOR))?;
            // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let slots = [slot()?, slot()?, slot()?, slot()?, slot()?, slot()?];
        let end = slots
            .iter()
            .chain([&null])
            .map(|s| s.as_raw_fd())
            .max()
            .unwrap_or(0)
            + 1;
        Ok(FdSlots { null, slots, end })
    }

    /// dup3(`fd`, slot `i`): the slot's number, now naming `fd`'s file.
    fn load(&self, i: usize, fd: RawFd) -> io::Result<RawFd> {
        let slot = self
            .slots
            .get(i)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?
            .as_raw_fd();
        // SAFETY: dup3 on plain integers; `slot` is ours and stays open
        // (atomically replaced), so no other thread can be handed it.
        super::cvt(unsafe { libc::dup3(fd, slot, libc::O_CLOEXEC) })
    }

    /// Points the child's descriptors in `args` at slots; on an error
    /// `args` is left as it was. Returns which slots now hold a file.
    fn load_args(&self, a: &mut ChildArgs) -> io::Result<Loaded> {
        let [stdout, stderr] = &mut a.out_fds;
        let fds: [&mut RawFd; SLOTS] = [
            &mut a.exec_fd,
            &mut a.listen_fd,
            &mut a.ready_fd.0,
            stdout,
            stderr,
            &mut a.cgroup_procs,
        ];
        let mut loaded = [-1; SLOTS];
        for ((i, fd), slot) in fds.iter().enumerate().zip(&mut loaded) {
            if **fd >= 0 {
                *slot = self.load(i, **fd)?;
            }
        }
        for (fd, slot) in fds.into_iter().zip(loaded) {
            if *fd >= 0 {
                *fd = slot;
            }
        }
        a.unshare_from = self.end;
        // Opened while zurg's fd 0, 1 or 2 was closed, it would be dup2'ed
        // onto itself and keep its close-on-exec: the child opens its own.
        let null = self.null.as_raw_fd();
        a.null_fd = if null > 2 { null } else { -1 };
        Ok(Loaded(loaded.map(|slot| slot >= 0)))
    }

    /// Back to /dev/null, so zurg holds no extra reference to a child's
    /// file (a pipe's write end would never see EOF). Only the slots
    /// `loaded` holds: the others hold /dev/null already.
    fn clear(&self, loaded: &Loaded) {
        for (slot, _) in self.slots.iter().zip(loaded.0).filter(|(_, held)| *held) {
            // SAFETY: as in `load`.
            unsafe { libc::dup3(self.null.as_raw_fd(), slot.as_raw_fd(), libc::O_CLOEXEC) };
        }
    }
}

/// Reusable child stack; kept by the caller so a restart allocates none.
#[derive(Debug, Default)]
pub struct Spawner {
    stack: Vec<u8>,
    /// For clones that share zurg's descriptor table; `None` where the
    /// kernel cannot unshare it again (close_range before Linux 5.9).
    files: Option<FdSlots>,
    /// /proc/self/oom_score_adj, opened at the first `oom_score_adj`.
    oom_file: Option<std::sync::Arc<std::fs::File>>,
    /// clone3 with CLONE_INTO_CGROUP failed once for a reason that will not
    /// change (ENOSYS, E2BIG, EINVAL, EPERM): the fallback from then on.
    no_clone_into_cgroup: bool,
}

impl Spawner {
    pub fn new() -> Spawner {
        Spawner {
            stack: vec![0u8; CHILD_STACK],
            files: FdSlots::new().ok(),
            oom_file: None,
            no_clone_into_cgroup: false,
        }
    }

    /// Creates the child right in the cgroup `dir` (clone3
    /// CLONE_INTO_CGROUP): no migration afterwards, which costs an RCU
    /// grace period (milliseconds) per start when the child moves itself.
    /// `None` when clone3 cannot do it here: the caller clones as usual and
    /// the child writes to `cgroup.procs` instead.
    fn spawn_into_cgroup(
        &mut self,
        dir: RawFd,
        flags: libc::c_int,
        args: &mut ChildArgs,
        pidfd: &mut libc::c_int,
    ) -> Option<libc::pid_t> {
        if self.no_clone_into_cgroup {
            return None;
        }
        let procs = std::mem::replace(&mut args.cgroup_procs, -1);
        let base = self.stack.as_mut_ptr();
        // SAFETY: the stack is CHILD_STACK bytes we own; its 16-byte
        // aligned top stays inside it.
        let size = unsafe {
            let top = base.add(self.stack.len());
            top.sub(top as usize % 16).offset_from(base) as usize
        };
        // SAFETY: as for clone below: CLONE_VFORK suspends us until the
        // child execs or exits, so `args` and the stack outlive its use of
        // them; child_main never returns into the caller's frames.
        let result = unsafe {
            clone3::into_cgroup(
                base,
                size,
                flags,
                dir,
                pidfd,
                child_main,
                std::ptr::addr_of_mut!(*args).cast(),
            )
        };
        match result {
            Ok(pid) => Some(pid),
            Err(errno) => {
                args.cgroup_procs = procs;
                *pidfd = -1;
                if matches!(
                    errno,
                    libc::ENOSYS | libc::E2BIG | libc::EINVAL | libc::EPERM
                ) {
                    self.no_clone_into_cgroup = true;
                }
                None
            }
        }
    }

    /// Starts `spec`'s program, or `exec_fd` when given (a verified binary,
    /// executed by descriptor so it cannot be swapped after the check).
    /// Errors are the child's own (ENOENT, EACCES, ENOEXEC, a failed chdir),
    /// reported before this returns.
    pub fn spawn(
        &mut self,
        spec: &SpawnSpec,
        signals: &ChildSignals,
        exec_fd: Option<&impl AsRawFd>,
    ) -> Result<Child, SpawnError> {
        match self.spawn_once(spec, signals, exec_fd) {
            // The child could not leave the shared table (a kernel without
            // CLONE_RANGE_UNSHARE): it did nothing else; clone with a copy.
            Err(e) if e.step() == Some(SpawnStep::FdTable) => {
                self.files = None;
                self.spawn_once(spec, signals, exec_fd)
            }
            result => result,
        }
    }

    fn spawn_once(
        &mut self,
        spec: &SpawnSpec,
        signals: &ChildSignals,
        exec_fd: Option<&impl AsRawFd>,
    ) -> Result<Child, SpawnError> {
        if self.stack.len() < CHILD_STACK {
            self.stack = vec![0u8; CHILD_STACK];
        }
        let candidates = candidates(&spec.program, spec.search_path);
        let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|s| s.as_ptr()).collect();
        argv.push(std::ptr::null());

        // Environment with room for the pid at the end of each pid variable.
        let mut pid_bufs: Vec<Vec<u8>> = spec
            .pid_vars
            .iter()
            .map(|v| {
                let mut b = v.as_bytes().to_vec();
                b.extend_from_slice(&[0u8; PID_DIGITS + 1]);
                b
            })
            .collect();
        let replaced = |entry: &[u8]| {
            let key = entry.split(|b| *b == b'=').next().unwrap_or(entry);
            let same_key = |e: &[u8]| {
                e.len() > key.len() && e.starts_with(key) && e.get(key.len()) == Some(&b'=')
            };
            spec.env.iter().any(|e| same_key(e.as_bytes()))
                || spec.start_env.iter().any(|e| same_key(e.as_bytes()))
                || spec.pid_vars.iter().any(|v| same_key(v.as_bytes()))
        };
        let mut envp: Vec<*const libc::c_char> = Vec::with_capacity(64);
        // SAFETY: zurg has one thread and never calls setenv while running,
        // so `environ` is stable; it is a null-terminated array of C strings.
        unsafe {
            let mut p = environ;
            while !p.is_null() && !(*p).is_null() {
                if !replaced(std::ffi::CStr::from_ptr(*p).to_bytes()) {
                    envp.push(*p);
                }
                p = p.add(1);
            }
        }
        envp.extend(spec.env.iter().map(|s| s.as_ptr()));
        envp.extend(spec.start_env.iter().map(|s| s.as_ptr()));
        let mut pid_slots = Vec::with_capacity(pid_bufs.len());
        for (buf, var) in pid_bufs.iter_mut().zip(&spec.pid_vars) {
            envp.push(buf.as_ptr().cast());
            pid_slots.push((buf.as_mut_ptr(), var.len()));
        }
        envp.push(std::ptr::null());

        let mut args = Box::new(ChildArgs {
            unshare_from: -1,
            candidates: candidates.iter().map(|c| c.as_ptr()).collect(),
            exec_fd: exec_fd.map_or(-1, |f| f.as_raw_fd()),
            listen_fd: spec.listen_fd.unwrap_or(-1),
            ready_fd: spec.ready_fd.unwrap_or((-1, -1)),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            pid_slots,
            cwd: spec.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            devnull: c"/dev/null".as_ptr(),
            null_fd: -1,
            new_session: spec.new_session,
            new_pgroup: spec.new_pgroup,
            foreground: spec.foreground,
            null_stdin: spec.null_stdin,
            out_fds: [spec.stdout, spec.stderr].map(|o| match o {
                ChildOut::Fd(fd) => fd,
                ChildOut::Inherit | ChildOut::Null => -1,
            }),
            out_null: [spec.stdout, spec.stderr].map(|o| o == ChildOut::Null),
            mask: signals.mask,
            reset_to_default: signals.reset_to_default,
            death_signal: spec.death_signal,
            // SAFETY: getpid cannot fail.
            parent: unsafe { libc::getpid() },
            creds: spec
                .creds
                .as_ref()
                .map_or(std::ptr::null(), |c| c as *const Credentials),
            cgroup_procs: spec.cgroup_procs.unwrap_or(-1),
            error: 0,
            failed_step: 0,
            failed_rlimit: 0,
        });

        // Held until the child has exec'd: it inherits the score at clone.
        let _oom = match spec.creds.as_ref().and_then(|c| c.oom_score_adj.as_ref()) {
            None => None,
            Some(value) => {
                let setup = |source| SpawnError::Setup {
                    program: spec.program.to_string_lossy().into_owned(),
                    step: SpawnStep::OomScoreAdj,
                    source,
                };
                let file = match &self.oom_file {
                    Some(file) => std::sync::Arc::clone(file),
                    None => {
                        let file =
                            std::sync::Arc::new(super::creds::open_oom_score().map_err(setup)?);
                        self.oom_file = Some(std::sync::Arc::clone(&file));
                        file
                    }
                };
                Some(super::creds::OomScore::set(file, value).map_err(setup)?)
            }
        };
        let mut pidfd: libc::c_int = -1;
        let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
        let mut loaded = None;
        if let Some(files) = &self.files {
            match files.load_args(&mut args) {
                Ok(held) => {
                    flags |= libc::CLONE_FILES;
                    loaded = Some(held);
                }
                // A descriptor that cannot be dup'ed: the child copies the
                // table as before and finds the same error itself.
                Err(_) => files.clear(&Loaded([true; SLOTS])),
            }
        }
        let into_cgroup = match spec.cgroup_dir {
            Some(dir) => self.spawn_into_cgroup(dir, flags, &mut args, &mut pidfd),
            None => None,
        };
        let cloned = loop {
            if let Some(pid) = into_cgroup {
                break Ok(pid);
            }
            // SAFETY: the stack is CHILD_STACK bytes we own; it grows down, so
            // the child starts at its 16-byte aligned top. CLONE_VFORK
            // suspends us until the child execs or exits, so every pointer in
            // `args` stays valid for as long as the child can read it.
            let pid = unsafe {
                let top = self.stack.as_mut_ptr().add(self.stack.len());
                let top = top.sub(top as usize % 16);
                libc::clone(
                    child_main,
                    top.cast(),
                    flags,
                    std::ptr::addr_of_mut!(*args).cast(),
                    &mut pidfd as *mut libc::c_int,
                )
            };
            if pid != -1 {
                break Ok(pid);
            }
            let e = io::Error::last_os_error();
            // The pidfd is a convenience, not a need: out of descriptors
            // (EMFILE/ENFILE) or on a kernel without CLONE_PIDFD (EINVAL),
            // start without one; the SIGCHLD sweep reaps the child then.
            let retry = flags & libc::CLONE_PIDFD != 0
                && matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::EINVAL)
                );
            if !retry {
                break Err(SpawnError::Clone {
                    program: spec.program.to_string_lossy().into_owned(),
                    source: e,
                });
            }
            flags &= !libc::CLONE_PIDFD;
            pidfd = -1;
        };
        // Also after a failed clone: a slot left holding a readiness
        // pipe's write end would keep its reader from ever seeing EOF.
        if let (Some(files), Some(loaded)) = (&self.files, &loaded) {
            files.clear(loaded);
        }
        let pid = cloned?;
        if args.error != 0 {
            // The child has already exited: collect it here so the failure
            // is reported once, as an error, and never as an exit.
            let mut status = 0;
            // SAFETY: waitpid on our own exited child, writing to a local.
            unsafe {
                libc::waitpid(pid, &mut status, 0);
                if pidfd >= 0 {
                    libc::close(pidfd);
                }
            }
            return Err(SpawnError::of_child(
                spec,
                SpawnStep::from_raw(args.failed_step),
                args.error,
                args.failed_rlimit,
            ));
        }
        let (pidfd, pidfd_error) = if pidfd >= 0 {
            // SAFETY: the kernel just created this fd for us (CLONE_PIDFD).
            (
                Some(PidFd::from_owned(
                    unsafe { OwnedFd::from_raw_fd(pidfd) },
                    pid,
                )),
                None,
            )
        } else {
            match PidFd::open(pid) {
                Ok(fd) => (Some(fd), None),
                Err(e) => (None, Some(e)),
            }
        };
        Ok(Child {
            pid,
            pidfd,
            pidfd_error,
        })
    }
}

/// The pipe for `ready = { fd = N }`: (read end, non-blocking; write end,
/// at `READY_FD_FLOOR` or above), both close-on-exec.
pub fn readiness_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    let high = fcntl(&w, FcntlArg::F_DUPFD_CLOEXEC(READY_FD_FLOOR))?;
    // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor, which
    // nothing else owns.
    let high = unsafe { OwnedFd::from_raw_fd(high) };
    Ok((r, high))
}

/// clone3(2) with CLONE_INTO_CGROUP and the vfork model, which libc does
/// not wrap: the child starts on its own stack inside the syscall, so it is
/// entered by hand and calls the child side directly.
#[cfg(target_arch = "x86_64")]
mod clone3 {
    use std::os::fd::RawFd;

    /// struct clone_args, up to `cgroup` (CLONE_ARGS_SIZE_VER2).
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }

    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

    /// Starts `child(arg)` on `stack` (`size` bytes, its top 16-byte
    /// aligned) in the cgroup `dir`, sharing our memory until it execs;
    /// its pidfd goes to `pidfd`. Returns the pid or the errno.
    ///
    /// # Safety
    /// `stack` must be valid for `size` bytes and `child` must never
    /// return into Rust frames (it execs or `_exit`s); `arg` and `pidfd`
    /// must stay valid until the child has exec'd or exited, which
    /// CLONE_VFORK guarantees by suspending the caller until then.
    pub unsafe fn into_cgroup(
        stack: *mut u8,
        size: usize,
        flags: libc::c_int,
        dir: RawFd,
        pidfd: *mut libc::c_int,
        child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
        arg: *mut libc::c_void,
    ) -> Result<libc::pid_t, i32> {
        // clone(2)'s flags: the low byte is the exit signal.
        let mut ca = CloneArgs {
            flags: u64::from((flags & !0xff) as u32) | CLONE_INTO_CGROUP,
            pidfd: pidfd as u64,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: u64::from((flags & 0xff) as u32),
            stack: stack as u64,
            stack_size: size as u64,
            tls: 0,
            set_tid: 0,
            set_tid_size: 0,
            cgroup: u64::try_from(dir).unwrap_or(u64::MAX),
        };
        let ret: i64;
        // SAFETY: the caller's contract. In the child (rax == 0) the kernel
        // has set rsp to the top of `stack`; it calls `child(arg)` there
        // and exits should it ever return. The parent only gets rax back.
        unsafe {
            std::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "xor ebp, ebp",
                "mov rdi, r13",
                "call r12",
                "mov edi, eax",
                "mov eax, 60",
                "syscall",
                "ud2",
                "2:",
                inlateout("rax") libc::SYS_clone3 => ret,
                in("rdi") std::ptr::addr_of_mut!(ca),
                in("rsi") std::mem::size_of::<CloneArgs>(),
                in("r12") child,
                in("r13") arg,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        if ret < 0 {
            Err(i32::try_from(-ret).unwrap_or(libc::EINVAL))
        } else {
            Ok(i32::try_from(ret).unwrap_or(-1))
        }
    }
}

/// Elsewhere the child moves itself into its cgroup (`cgroup.procs`).
#[cfg(not(target_arch = "x86_64"))]
mod clone3 {
    pub unsafe fn into_cgroup(
        _stack: *mut u8,
        _size: usize,
        _flags: libc::c_int,
        _dir: std::os::fd::RawFd,
        _pidfd: *mut libc::c_int,
        _child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
        _arg: *mut libc::c_void,
    ) -> Result<libc::pid_t, i32> {
        Err(libc::ENOSYS)
    }
}

/// Makes `pgid` the foreground process group of the terminal on `fd`, if
/// `fd` is a terminal at all. Used by the shim's `--pgroup` so an
/// interactive child keeps job control.
pub fn give_terminal(fd: RawFd, pgid: i32) -> io::Result<()> {
    // SAFETY: isatty and tcsetpgrp take plain integers.
    unsafe {
        if libc::isatty(fd) != 1 {
            return Ok(());
        }
        super::cvt(libc::tcsetpgrp(fd, pgid)).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_error_names_the_step_that_failed() {
        let mut spec = SpawnSpec::new(c"/usr/bin/redis-server".into(), vec![]);
        spec.cwd = Some(c"/nonexistent".into());
        let chdir = SpawnError::of_child(&spec, SpawnStep::Chdir, libc::ENOENT, 0);
        assert_eq!(
            chdir.to_string(),
            "cannot change to cwd /nonexistent: No such file or directory (os error 2)"
        );
        assert_eq!(chdir.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(chdir.step(), Some(SpawnStep::Chdir));
        let exec = SpawnError::of_child(&spec, SpawnStep::Exec, libc::EACCES, 0);
        assert_eq!(
            exec.to_string(),
            "cannot run /usr/bin/redis-server: Permission denied (os error 13)"
        );
        let stdin = SpawnError::of_child(&spec, SpawnStep::Stdin, libc::EMFILE, 0);
        assert!(stdin
            .to_string()
            .starts_with("cannot open /dev/null as stdin for /usr/bin/redis-server: "));
        // the step travels through ChildArgs as a byte
        for step in [
            SpawnStep::Session,
            SpawnStep::Chdir,
            SpawnStep::Stdin,
            SpawnStep::ListenFd,
            SpawnStep::SignalMask,
            SpawnStep::Exec,
            SpawnStep::Output,
            SpawnStep::ReadyFd,
            SpawnStep::Rlimits,
            SpawnStep::Nice,
            SpawnStep::OomScoreAdj,
            SpawnStep::Groups,
            SpawnStep::Gid,
            SpawnStep::Uid,
            SpawnStep::RegainRoot,
            SpawnStep::Capabilities,
            SpawnStep::NoNewPrivs,
            SpawnStep::Cgroup,
            SpawnStep::FdTable,
        ] {
            assert_eq!(SpawnStep::from_raw(step as u8), step);
        }
    }
}
