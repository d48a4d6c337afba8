//! The child side of `user`, `group`, `rlimits`, `nice`, `oom_score_adj`,
//! `umask`, `capabilities` and `no_new_privs`: applied between clone and
//! exec, on values the parent prepared (`Credentials`), with nothing
//! allocated.
//!
//! The ids are changed with raw system calls, not glibc's setuid family:
//! glibc makes every thread of a process change ids together (it signals
//! them, nptl's setxid), and the child shares zurg's memory, so glibc would
//! take zurg's own threads for the child's and signal them.
//!
//! Order: what needs root first (limits, a negative nice, dropping the
//! bounding set), then setgroups, setgid, setuid; then a check that root
//! cannot be regained, then the capabilities that stay (ambient), a
//! positive nice and no_new_privs. The OOM score is the parent's job
//! (`OomScore`).

use std::ffi::CString;

use super::spawn::SpawnStep;

/// What the child applies, prepared by the parent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// (RLIMIT_*, soft, hard), RLIM_INFINITY as u64::MAX, and the
    /// limit's name in the unit (`nofile`), for an error that names it.
    pub rlimits: Vec<(i32, u64, u64, &'static str)>,
    pub nice: Option<i32>,
    /// The decimal value for /proc/self/oom_score_adj, which the parent
    /// sets around the clone (see `OomScore`).
    pub oom_score_adj: Option<CString>,
    pub umask: Option<u32>,
    /// setgroups(2), when the supplementary groups change.
    pub groups: Option<Vec<u32>>,
    pub gid: Option<u32>,
    pub uid: Option<u32>,
    /// Capabilities kept (bit n = capability n); the others are dropped
    /// from the bounding set. `None` leaves capabilities alone.
    pub caps: Option<u64>,
    pub no_new_privs: bool,
}

/// linux/capability.h's _LINUX_CAPABILITY_VERSION_3.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn errno() -> i32 {
    // SAFETY: reading the thread's errno.
    unsafe { *libc::__errno_location() }
}

fn check(ret: libc::c_long, step: SpawnStep) -> Result<(), (SpawnStep, i32)> {
    if ret == -1 {
        Err((step, errno()))
    } else {
        Ok(())
    }
}

/// setpriority(2) of the calling process, a raw system call like the
/// other steps here; used before and after the id switch.
fn set_nice(nice: i32) -> Result<(), (SpawnStep, i32)> {
    // SAFETY: setpriority takes plain integers and changes only this
    // process's priority.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_setpriority,
            libc::c_long::from(libc::PRIO_PROCESS),
            0,
            libc::c_long::from(nice),
        )
    };
    check(ret, SpawnStep::Nice)
}

/// Applies `c` to the calling process. Child side only. A limit the
/// kernel refuses leaves its index in `c.rlimits` in `failed_rlimit`.
///
/// # Safety
/// Called in the cloned child before exec: it changes the process's
/// credentials, and reads only `c`, which the parent keeps alive.
pub(super) unsafe fn apply(
    c: &Credentials,
    failed_rlimit: &mut usize,
) -> Result<(), (SpawnStep, i32)> {
    for (i, &(resource, soft, hard, _)) in c.rlimits.iter().enumerate() {
        *failed_rlimit = i;
        let lim = libc::rlimit64 {
            rlim_cur: soft,
            rlim_max: hard,
        };
        check(
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                libc::c_long::from(resource),
                &lim as *const libc::rlimit64,
                std::ptr::null_mut::<libc::rlimit64>(),
            ),
            SpawnStep::Rlimits,
        )?;
    }
    // A higher priority (a negative value) needs root: before the switch.
    if let Some(nice) = c.nice.filter(|n| *n < 0) {
        set_nice(nice)?;
    }
    if let Some(mask) = c.umask {
        libc::umask(mask as libc::mode_t);
    }
    if let Some(keep) = c.caps {
        // Needs CAP_SETPCAP, so before the uid changes. Numbers past the
        // kernel's last capability give EINVAL: that is the end.
        for cap in 0..64u32 {
            if keep & (1u64 << cap) != 0 {
                continue;
            }
            let ret = libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0);
            if ret == -1 {
                let e = errno();
                if e == libc::EINVAL {
                    break;
                }
                return Err((SpawnStep::Capabilities, e));
            }
        }
        if c.uid.is_some_and(|u| u != 0) {
            // The permitted set survives the switch to a plain user.
            check(
                libc::c_long::from(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0)),
                SpawnStep::Capabilities,
            )?;
        }
    }
    if let Some(groups) = &c.groups {
        check(
            libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()),
            SpawnStep::Groups,
        )?;
    }
    if let Some(gid) = c.gid {
        let g = libc::c_long::from(gid);
        check(libc::syscall(libc::SYS_setresgid, g, g, g), SpawnStep::Gid)?;
    }
    if let Some(uid) = c.uid {
        let u = libc::c_long::from(uid);
        check(libc::syscall(libc::SYS_setresuid, u, u, u), SpawnStep::Uid)?;
        // Root must be gone for good: a service that could setuid(0)
        // again is refused rather than started.
        if uid != 0 && libc::syscall(libc::SYS_setuid, 0) != -1 {
            return Err((SpawnStep::RegainRoot, libc::EPERM));
        }
    }
    if let Some(keep) = c.caps {
        let data = [
            CapData {
                effective: keep as u32,
                permitted: keep as u32,
                inheritable: keep as u32,
            },
            CapData {
                effective: (keep >> 32) as u32,
                permitted: (keep >> 32) as u32,
                inheritable: (keep >> 32) as u32,
            },
        ];
        let header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        check(
            libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()),
            SpawnStep::Capabilities,
        )?;
        for cap in 0..64u32 {
            if keep & (1u64 << cap) == 0 {
                continue;
            }
            check(
                libc::c_long::from(libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    libc::c_ulong::from(cap),
                    0,
                    0,
                )),
                SpawnStep::Capabilities,
            )?;
        }
    }
    // A lower priority goes last: from then on the child waits for the
    // CPU behind everything else runnable.
    if let Some(nice) = c.nice.filter(|n| *n >= 0) {
        set_nice(nice)?;
    }
    if c.no_new_privs {
        check(
            libc::c_long::from(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)),
            SpawnStep::NoNewPrivs,
        )?;
    }
    Ok(())
}

/// zurg's own OOM score, changed to a service's for the clone and put
/// back when this is dropped: the child inherits it at the clone.
///
/// The child cannot write its own: while it shares zurg's memory
/// (CLONE_VM), the kernel applies a new oom_score_adj to every process
/// that shares the memory, zurg included. The file stays open in the
/// `Spawner`, so this is a pread and two pwrites.
#[derive(Debug)]
pub(super) struct OomScore {
    file: std::sync::Arc<std::fs::File>,
    old: [u8; 16],
    len: usize,
}

/// Opens /proc/self/oom_score_adj for `OomScore`.
pub(super) fn open_oom_score() -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/oom_score_adj")
}

impl OomScore {
    pub(super) fn set(
        file: std::sync::Arc<std::fs::File>,
        value: &std::ffi::CStr,
    ) -> std::io::Result<OomScore> {
        use std::os::unix::fs::FileExt;
        let mut old = [0u8; 16];
        let len = file.read_at(&mut old, 0)?;
        file.write_at(value.to_bytes(), 0)?;
        Ok(OomScore { file, old, len })
    }
}

impl Drop for OomScore {
    fn drop(&mut self) {
        use std::os::unix::fs::FileExt;
        // Raising it back is always allowed; lowering it back to where it
        // was is allowed down to the lowest value zurg itself ever had.
        let old = self.old.get(..self.len).unwrap_or_default();
        if let Err(e) = self.file.write_at(old, 0) {
            crate::log!("warning: cannot restore zurg's own oom_score_adj: {e}");
        }
    }
}

/// Whether the ids change, which clears the parent-death signal.
pub(super) fn changes_ids(c: &Credentials) -> bool {
    c.uid.is_some() || c.gid.is_some()
}
