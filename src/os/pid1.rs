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

/// Asks the kernel for `signo` when zurg's parent (the thread that forked
/// it) exits: tini's -p.
pub fn set_parent_death_signal(signo: i32) -> io::Result<()> {
    let sig =
        libc::c_ulong::try_from(signo).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) }).map(|_| ())
}

/// Raises RLIMIT_NOFILE so that `needed` descriptors fit: the soft limit,
/// and the hard one too when zurg may (CAP_SYS_RESOURCE, as PID 1 has),
/// up to the kernel's fs.nr_open; otherwise up to the hard limit. Returns
/// the soft limit now in force.
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
    if lim.rlim_max < needed {
        // Without a pidfd each service's end is found by sweeping every
        // child, so a privileged zurg takes the descriptors it needs.
        let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(lim.rlim_max);
        let raised = libc::rlimit {
            rlim_cur: needed.min(ceiling),
            rlim_max: needed.min(ceiling).max(lim.rlim_max),
        };
        // SAFETY: setrlimit reads one initialised struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
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
        // kill(-1) says only whether it reached anyone: count first. It
        // spares PID 1 and kernel threads (kthreadd, pid 2, and its
        // children, visible to a machine's init).
        let n = parent_map()
            .iter()
            .filter(|(pid, ppid)| **pid != 1 && **pid != 2 && **ppid != 2)
            .count();
        return if pidfd::kill(-1, signo).is_ok() { n } else { 0 };
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

/// When PID 1 cannot go on (a set-up step before the loop failed, or a
/// panic): `/etc/zurg/crash` takes over PID 1 if it exists. Without it, a
/// machine's init powers off (its exit would panic the kernel), and reaps
/// forever should reboot(2) fail; PID 1 of a container returns, and the
/// caller exits 1: the container ends and its runtime reports the failure,
/// where reaping forever left a container that looked alive with nothing
/// in it. Does nothing unless PID 1.
pub fn last_resort_if_pid1() {
    if !is_pid1() {
        return;
    }
    let machine = is_machine_init();
    raw_stderr(if machine {
        b"zurg: PID 1 (this machine's init) cannot continue; handing over to /etc/zurg/crash, or powering off without it\n"
    } else {
        b"zurg: PID 1 of a container cannot continue; handing over to /etc/zurg/crash, or exiting with 1 without it\n"
    });
    exec_crash_program();
    if !machine {
        raw_stderr(
            b"zurg: PID 1 of a container: no /etc/zurg/crash (or it cannot run); exiting with 1, which ends the container\n",
        );
        return;
    }
    raw_stderr(b"zurg: no crash program; powering off\n");
    // SAFETY: sync and reboot(2) with a valid command.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
        libc::reboot(libc::RB_HALT_SYSTEM);
    }
    raw_stderr(b"zurg: reboot(2) failed; reaping forever\n");
    reap_forever();
}

/// A machine's init that can neither hand over nor power off: exiting
/// would panic the kernel, so it keeps the zombies down.
fn reap_forever() -> ! {
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

/// Hands PID 1 over to the crash program, if there is one. exec keeps the
/// signal mask and the ignored set, and zurg blocks nearly every signal and
/// ignores PIPE (TTIN and TTOU too as the supervisor): the program must
/// start as a fresh init would, with the defaults, or it could neither be
/// stopped nor see its own children's signals. Returns only if it cannot
/// run.
fn exec_crash_program() {
    let prog = c"/etc/zurg/crash";
    // SAFETY: access reads a static C string. Checked first so that a zurg
    // without a crash program keeps its mask while it falls back to reaping.
    if unsafe { libc::access(prog.as_ptr(), libc::X_OK) } != 0 {
        return;
    }
    let argv = [prog.as_ptr(), std::ptr::null()];
    let mut none = MaybeUninitSet::empty();
    // The kernel's struct sigaction for SIG_DFL, no flags and an empty mask
    // is all zeros on every architecture's layout.
    let default_action = [0u64; 4];
    // SAFETY: raw rt_sigaction, because glibc refuses its own 32 and 33,
    // which zurg may have inherited ignored; it reads a zeroed struct at least as
    // large as the kernel's, and KILL and STOP fail harmlessly. These and
    // sigprocmask with an initialised set are async-signal-safe (this can
    // run in the panic hook). execv gets a static path and a
    // null-terminated argv; on failure it returns.
    unsafe {
        for signo in 1..=64 {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signo,
                default_action.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                8usize,
            );
        }
        libc::sigprocmask(libc::SIG_SETMASK, none.as_ptr(), std::ptr::null_mut());
        libc::execv(prog.as_ptr(), argv.as_ptr());
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

    fn empty() -> MaybeUninitSet {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the whole set.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            MaybeUninitSet(set.assume_init())
        }
    }

    fn as_ptr(&mut self) -> *const libc::sigset_t {
        &self.0
    }
}

/// As PID 1 a panic must not end the process by the abort (a machine's
/// kernel would panic with it): print it with a raw write and fall into
/// `last_resort_if_pid1`, and a container's PID 1 that it returns from
/// exits 1 there and then. Elsewhere the default behaviour stands.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_pid1() {
            raw_stderr(format!("zurg: panic: {info}\n").as_bytes());
            last_resort_if_pid1();
            // SAFETY: _exit(2) ends the process at once; nothing after a
            // panic is in a state to run destructors or flush.
            unsafe { libc::_exit(1) }
        } else {
            default(info);
        }
    }));
}

/// The initial pid namespace's inode number (PROC_PID_INIT_INO).
const INITIAL_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// True when zurg is the init of a machine (VM or bare metal): PID 1 in the
/// initial pid namespace. PID 1 of a container is in a namespace of its own
/// and must end by exiting, never by reboot(2).
///
/// With /proc, the pid namespace's inode answers. Without it (a bare kernel
/// starts init before anything is mounted, but a container may have no
/// /proc either), reboot(2) answers: asked to turn ctrl-alt-del off, it
/// succeeds only for a privileged process of the initial pid namespace; a
/// child namespace gets EINVAL, a process without CAP_SYS_BOOT EPERM. A
/// machine's init does turn it off anyway (`disable_ctrl_alt_del`). A
/// machine's init without CAP_SYS_BOOT is taken for a container, which is
/// the safe side: it could not reboot(2) either.
pub fn is_machine_init() -> bool {
    if !is_pid1() {
        return false;
    }
    let ns_inode = std::fs::metadata("/proc/self/ns/pid")
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    machine_init_rule(ns_inode, || {
        // SAFETY: reboot with the CAD_OFF command changes a kernel flag only.
        cvt(unsafe { libc::reboot(libc::RB_DISABLE_CAD) }).map(|_| ())
    })
}

/// `is_machine_init` for PID 1: the pid namespace's inode when /proc shows
/// it, else whether turning ctrl-alt-del off is allowed.
fn machine_init_rule(ns_inode: Option<u64>, cad_off: impl FnOnce() -> io::Result<()>) -> bool {
    match ns_inode {
        Some(ino) => ino == INITIAL_PID_NS_INO,
        None => cad_off().is_ok(),
    }
}

fn mounted(target: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(4) == Some(target))
        })
        .unwrap_or(false)
}

fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let c =
        |s: &str| std::ffi::CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let (source, target_c, fstype, data) = (c(source)?, c(target)?, c(fstype)?, c(data)?);
    let _ = std::fs::create_dir_all(target);
    // SAFETY: all pointers are valid C strings that outlive the call.
    cvt(unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    })
    .map(|_| ())
}

/// Mounts what userspace expects when a bare kernel starts zurg as init:
/// /proc, /sys, /dev (devtmpfs), /dev/pts, /dev/shm, /run, /tmp. Each one
/// already mounted is left alone; a failure is logged, not fatal.
pub fn early_mounts() {
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let table: [(&str, &str, &str, libc::c_ulong, &str); 8] = [
        ("proc", "/proc", "proc", nosuid_nodev_noexec, ""),
        ("sysfs", "/sys", "sysfs", nosuid_nodev_noexec, ""),
        // Unified cgroup v2, so services get cgroups of their own
        // (src/cgroup); nsdelegate makes cgroup namespaces delegation
        // boundaries, as systemd mounts it.
        (
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            nosuid_nodev_noexec,
            "nsdelegate",
        ),
        ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755"),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "mode=0620,ptmxmode=0666",
        ),
        (
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=0755",
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
        ),
    ];
    for (source, target, fstype, flags, data) in table {
        // /proc itself answers whether the others are mounted.
        let already = if target == "/proc" {
            std::path::Path::new("/proc/self").exists()
        } else {
            mounted(target)
        };
        if already {
            continue;
        }
        if let Err(e) = mount(source, target, fstype, flags, data) {
            crate::log!("cannot mount {fstype} on {target}: {e}");
        }
    }
}

/// Points stdin, stdout and stderr at /dev/console when the kernel started
/// zurg without them (no /dev/console in the initramfs).
pub fn attach_console() {
    // SAFETY: fcntl(F_GETFD) only asks whether the fd is open.
    let missing = (0..3).any(|fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1);
    if !missing {
        return;
    }
    // SAFETY: open/dup2/close on descriptors we own; the path is a C literal.
    unsafe {
        let fd = libc::open(c"/dev/console".as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        if fd < 0 {
            return;
        }
        for target in 0..3 {
            if libc::fcntl(target, libc::F_GETFD) == -1 {
                libc::dup2(fd, target);
            }
        }
        if fd > 2 {
            libc::close(fd);
        }
    }
}

/// Sets the hostname from /etc/hostname, if there is one.
pub fn set_hostname_from_etc() {
    let Ok(name) = std::fs::read_to_string("/etc/hostname") else {
        return;
    };
    let name = name.trim();
    if name.is_empty() {
        return;
    }
    // SAFETY: sethostname reads `len` bytes from a valid buffer.
    if let Err(e) = cvt(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }) {
        crate::log!("cannot set hostname {name:?}: {e}");
    }
}

/// Makes ctrl-alt-del send SIGINT to init instead of rebooting at once.
pub fn disable_ctrl_alt_del() {
    // SAFETY: reboot with the CAD_OFF command changes a kernel flag only.
    let _ = unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    PowerOff,
    Reboot,
    Halt,
}

impl std::fmt::Display for PowerAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PowerAction::PowerOff => "powering off",
            PowerAction::Reboot => "rebooting",
            PowerAction::Halt => "halting",
        })
    }
}

/// The end of a machine's init: sync, unmount (or remount read-only) every
/// filesystem, then reboot(2). Never returns: if the kernel refuses, halt is
/// tried, and failing that zurg reaps forever rather than exit.
pub fn power_down(action: PowerAction) -> ! {
    // SAFETY: sync has no arguments.
    unsafe { libc::sync() };
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for target in mounts.iter().rev() {
        if target == "/" {
            continue;
        }
        if let Ok(t) = std::ffi::CString::new(target.as_str()) {
            // SAFETY: umount2 with a valid C string; MNT_DETACH never blocks.
            unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
        }
    }
    // SAFETY: remounting / read-only with null source/type is the standard form.
    unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_RDONLY,
            std::ptr::null(),
        );
        libc::sync();
    }
    let cmd = match action {
        PowerAction::PowerOff => libc::RB_POWER_OFF,
        PowerAction::Reboot => libc::RB_AUTOBOOT,
        PowerAction::Halt => libc::RB_HALT_SYSTEM,
    };
    // SAFETY: reboot(2) with a valid command; it does not return on success.
    let err = unsafe { libc::reboot(cmd) };
    raw_stderr(
        format!(
            "zurg: reboot({action:?}) failed ({err}): {}; halting\n",
            io::Error::last_os_error()
        )
        .as_bytes(),
    );
    // SAFETY: as above.
    unsafe { libc::reboot(libc::RB_HALT_SYSTEM) };
    last_resort_if_pid1();
    loop {
        // SAFETY: pause only waits for a signal.
        unsafe { libc::pause() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_init_is_the_initial_pid_namespace_or_whoever_may_turn_off_cad() {
        let never = || -> io::Result<()> { panic!("/proc answered, reboot(2) must not be asked") };
        assert!(machine_init_rule(Some(INITIAL_PID_NS_INO), never));
        assert!(!machine_init_rule(Some(INITIAL_PID_NS_INO - 1), never));
        // No /proc: a bare kernel's init may turn ctrl-alt-del off...
        assert!(machine_init_rule(None, || Ok(())));
        // ...a container's PID 1 may not (child namespace, or no CAP_SYS_BOOT).
        for errno in [libc::EINVAL, libc::EPERM] {
            assert!(!machine_init_rule(None, || Err(
                io::Error::from_raw_os_error(errno)
            )));
        }
    }
}
