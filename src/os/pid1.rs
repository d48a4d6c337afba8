//! What being an init takes: subreaper status, file-descriptor limits, and
//! reaching every descendant at the end.
//!
//! As PID 1 of a pid namespace, kill(-1) reaches exactly the processes zurg
//! is responsible for. Anywhere else kill(-1) would hit the whole host, so
//! descendants are found through /proc and signalled through pidfds.

use std::collections::HashMap;
use std::io;

use super::cvt;
use super::pidfd::{self, PidFd};

pub fn my_pid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

pub fn is_pid1() -> bool {
    my_pid() == 1
}

/// Makes orphans of our descendants re-parent to us instead of to PID 1, so
/// we still reap them when we are not PID 1.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) })
        .map(|_| ())
}

/// Raises the soft RLIMIT_NOFILE so that `needed` descriptors fit, up to the
/// hard limit. Returns the soft limit now in force.
pub fn ensure_nofile(needed: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct through a pointer to a live local.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur >= needed {
        return Ok(lim.rlim_cur);
    }
    lim.rlim_cur = needed.min(lim.rlim_max);
    // SAFETY: setrlimit reads one initialised struct.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    Ok(lim.rlim_cur)
}

/// pid → parent pid for every process visible in /proc.
fn parent_map() -> HashMap<i32, i32> {
    let mut map = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = read_ppid(pid) {
            map.insert(pid, ppid);
        }
    }
    map
}

fn read_ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every process below `root` in the process tree.
pub fn descendants(root: i32) -> Vec<i32> {
    let parents = parent_map();
    let mut out = Vec::new();
    for &pid in parents.keys() {
        let mut p = pid;
        let mut hops = 0;
        while let Some(&pp) = parents.get(&p) {
            if pp == root {
                out.push(pid);
                break;
            }
            if pp <= 1 || hops > 4096 {
                break;
            }
            p = pp;
            hops += 1;
        }
    }
    out
}

/// Sends `signo` to every process zurg is responsible for: all others in the
/// namespace when PID 1, else every descendant. Returns how many were
/// signalled (PID 1: 1 if any process received it).
pub fn signal_descendants(signo: i32) -> usize {
    if is_pid1() {
        return usize::from(pidfd::kill(-1, signo).is_ok());
    }
    let me = my_pid();
    let mut sent = 0;
    for pid in descendants(me) {
        // Open first, then confirm the pid still belongs below us: once the
        // pidfd exists it cannot follow the pid to an unrelated process.
        let Ok(fd) = PidFd::open(pid) else { continue };
        if !is_below(pid, me) {
            continue;
        }
        if fd.send_signal(signo).is_ok() {
            sent += 1;
        }
    }
    sent
}

fn is_below(pid: i32, root: i32) -> bool {
    let mut p = pid;
    for _ in 0..4096 {
        match read_ppid(p) {
            Some(pp) if pp == root => return true,
            Some(pp) if pp > 1 => p = pp,
            _ => return false,
        }
    }
    false
}

/// Where a PID 1 that cannot go on hands over, if present (s6-svscan's idea).
pub const CRASH_PROGRAM: &str = "/etc/zurg/crash";

fn raw_stderr(msg: &[u8]) {
    // SAFETY: write(2) from a valid buffer; the result is ignored because
    // there is nobody left to tell.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
    }
}

/// When PID 1 cannot go on, exiting would panic the kernel. Instead: exec
/// the crash program if there is one, else keep reaping forever so the
/// system at least does not fill with zombies. Does nothing unless PID 1.
pub fn last_resort_if_pid1() {
    if !is_pid1() {
        return;
    }
    raw_stderr(
        b"zurg: PID 1 cannot continue; handing over to /etc/zurg/crash or reaping forever\n",
    );
    let prog = c"/etc/zurg/crash";
    let argv = [prog.as_ptr(), std::ptr::null()];
    // SAFETY: execv with a static path and a null-terminated argv; on
    // failure it returns and we fall through.
    unsafe {
        libc::execv(prog.as_ptr(), argv.as_ptr());
    }
    let mut all = MaybeUninitSet::full();
    // SAFETY: blocks every signal with an initialised set.
    unsafe {
        libc::sigprocmask(libc::SIG_BLOCK, all.as_ptr(), std::ptr::null_mut());
    }
    loop {
        let mut status = 0;
        // SAFETY: wait writes one int through a pointer to a live local.
        let r = unsafe { libc::wait(&mut status) };
        if r < 0 {
            // No children: sleep until one appears (blocked signals cannot
            // wake us, so pause in long steps).
            // SAFETY: sleep takes an integer.
            unsafe {
                libc::sleep(3600);
            }
        }
    }
}

struct MaybeUninitSet(libc::sigset_t);

impl MaybeUninitSet {
    fn full() -> MaybeUninitSet {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigfillset initialises the whole set.
        unsafe {
            libc::sigfillset(set.as_mut_ptr());
            MaybeUninitSet(set.assume_init())
        }
    }

    fn as_ptr(&mut self) -> *const libc::sigset_t {
        &self.0
    }
}

/// As PID 1 a panic must not end the process (the kernel would panic with
/// it): print it with a raw write and fall into `last_resort_if_pid1`.
/// Elsewhere the default behaviour stands.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_pid1() {
            raw_stderr(format!("zurg: panic: {info}\n").as_bytes());
            last_resort_if_pid1();
        } else {
            default(info);
        }
    }));
}
