//! Starting a child: posix_spawn, then a pidfd on it.
//!
//! Restart speed is decided here. glibc's posix_spawn uses
//! clone(CLONE_VM|CLONE_VFORK), so it costs what the raw spawn loop pays no
//! matter how large zurg's own memory grows, where fork() would copy page
//! tables; it also reports exec failures (ENOENT, EACCES) as its return
//! value, which is how the shim gives 127/126. Everything the child needs
//! (argv, envp, paths) is built as C strings before the call, by the caller.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

use super::pidfd::PidFd;
use super::signals::ChildSignals;

extern "C" {
    static environ: *const *const libc::c_char;
}

/// What to run, prepared before the spawn so the child side allocates nothing.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// Program: a path, or a bare name looked up in $PATH when `search_path`.
    pub program: CString,
    pub argv: Vec<CString>,
    /// `None`: zurg's own environment, untouched.
    pub envp: Option<Vec<CString>>,
    pub cwd: Option<CString>,
    pub search_path: bool,
    /// Put the child in a new process group of its own.
    pub new_pgroup: bool,
    /// Put the child in a new session (implies a new process group).
    pub new_session: bool,
    /// Give the child /dev/null as stdin instead of zurg's.
    pub null_stdin: bool,
}

impl SpawnSpec {
    pub fn new(program: CString, argv: Vec<CString>) -> SpawnSpec {
        SpawnSpec {
            program,
            argv,
            envp: None,
            cwd: None,
            search_path: false,
            new_pgroup: false,
            new_session: false,
            null_stdin: false,
        }
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

/// posix_spawn's attribute and file-action objects, destroyed on drop.
struct Attrs {
    attr: libc::posix_spawnattr_t,
    actions: libc::posix_spawn_file_actions_t,
}

impl Attrs {
    fn new() -> io::Result<Box<Attrs>> {
        let mut b = Box::new(MaybeUninit::<Attrs>::uninit());
        let p = b.as_mut_ptr();
        // SAFETY: init functions initialise the objects behind valid pointers
        // into the box; on failure of the second the first is destroyed.
        unsafe {
            check(libc::posix_spawnattr_init(std::ptr::addr_of_mut!(
                (*p).attr
            )))?;
            if let Err(e) = check(libc::posix_spawn_file_actions_init(std::ptr::addr_of_mut!(
                (*p).actions
            ))) {
                libc::posix_spawnattr_destroy(std::ptr::addr_of_mut!((*p).attr));
                return Err(e);
            }
            Ok(Box::from_raw(Box::into_raw(b).cast::<Attrs>()))
        }
    }
}

impl Drop for Attrs {
    fn drop(&mut self) {
        // SAFETY: both objects were initialised in `new`.
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut self.actions);
            libc::posix_spawnattr_destroy(&mut self.attr);
        }
    }
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

/// Starts `spec`'s program. Errors are exec's own (ENOENT, EACCES, ENOEXEC,
/// or a failed chdir), reported by glibc before this returns.
pub fn spawn(spec: &SpawnSpec, signals: &ChildSignals) -> io::Result<Child> {
    let mut a = Attrs::new()?;
    let mut flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
    if spec.new_session {
        flags |= libc::POSIX_SPAWN_SETSID as libc::c_int;
    } else if spec.new_pgroup {
        flags |= libc::POSIX_SPAWN_SETPGROUP;
    }
    let devnull = c"/dev/null";
    // SAFETY: the attribute objects are initialised; sigsets are plain data;
    // every string pointer outlives the posix_spawn call below.
    unsafe {
        check(libc::posix_spawnattr_setsigmask(&mut a.attr, &signals.mask))?;
        check(libc::posix_spawnattr_setsigdefault(
            &mut a.attr,
            &signals.reset_to_default,
        ))?;
        check(libc::posix_spawnattr_setpgroup(&mut a.attr, 0))?;
        check(libc::posix_spawnattr_setflags(
            &mut a.attr,
            flags as libc::c_short,
        ))?;
        if spec.null_stdin {
            check(libc::posix_spawn_file_actions_addopen(
                &mut a.actions,
                0,
                devnull.as_ptr(),
                libc::O_RDONLY,
                0,
            ))?;
        }
        if let Some(cwd) = &spec.cwd {
            check(libc::posix_spawn_file_actions_addchdir_np(
                &mut a.actions,
                cwd.as_ptr(),
            ))?;
        }
    }

    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp_vec: Option<Vec<*const libc::c_char>> = spec.envp.as_ref().map(|env| {
        let mut v: Vec<*const libc::c_char> = env.iter().map(|s| s.as_ptr()).collect();
        v.push(std::ptr::null());
        v
    });
    // SAFETY: reading the `environ` pointer itself; zurg has one thread and
    // never calls setenv while running, so it is stable.
    let envp = match &envp_vec {
        Some(v) => v.as_ptr(),
        None => unsafe { environ },
    };

    let mut pid: libc::pid_t = 0;
    // SAFETY: argv and envp are null-terminated arrays of C strings that live
    // until after the call; attr and actions are initialised.
    let ret = unsafe {
        if spec.search_path {
            libc::posix_spawnp(
                &mut pid,
                spec.program.as_ptr(),
                &a.actions,
                &a.attr,
                argv.as_ptr() as *const *mut libc::c_char,
                envp as *const *mut libc::c_char,
            )
        } else {
            libc::posix_spawn(
                &mut pid,
                spec.program.as_ptr(),
                &a.actions,
                &a.attr,
                argv.as_ptr() as *const *mut libc::c_char,
                envp as *const *mut libc::c_char,
            )
        }
    };
    check(ret)?;
    let (pidfd, pidfd_error) = match PidFd::open(pid) {
        Ok(fd) => (Some(fd), None),
        Err(e) => (None, Some(e)),
    };
    Ok(Child {
        pid,
        pidfd,
        pidfd_error,
    })
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
