//! The cgroup v2 subtree zurg manages, and each service's cgroup in it.
//!
//! Layout, under the base (zurg's own cgroup at start-up, or `--cgroup`):
//!
//! ```text
//! BASE/zurg/             zurg itself (a leaf: "no internal processes")
//! BASE/services/NAME/    one per service, its limits written at load
//! ```
//!
//! zurg manages the base only when it is alone in it (a delegated cgroup,
//! e.g. systemd's `Delegate=yes`, a container's cgroup namespace, or the
//! root of a machine zurg is the init of): sharing a cgroup with other
//! processes would mean enabling controllers over their heads, and two
//! zurgs would share service cgroups. Plain file reads and writes of kernel
//! pseudo-files: no syscall needs `os/`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use super::{Controller, Limits};
use crate::stats::Sample;

/// Where cgroup2 lives on a unified host (and where zurg mounts it as a
/// machine's init).
pub const MOUNT: &str = "/sys/fs/cgroup";

/// Why zurg cannot manage cgroups; said once at start-up, and given as the
/// reason a unit that sets a limit is refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("{path} is not a cgroup2 file system (a cgroup v1 or hybrid host); give a cgroup2 directory with --cgroup PATH")]
    NotCgroup2 { path: PathBuf },
    #[error("cannot tell zurg's cgroup from /proc/self/cgroup ({0})")]
    OwnCgroup(String),
    #[error("zurg shares its cgroup {path} with {others} other process(es); run it in a cgroup of its own (systemd: Delegate=yes) or give one with --cgroup PATH")]
    NotAlone { path: PathBuf, others: usize },
    #[error("cannot {what} {path}: {source}; run zurg as root or in a delegated cgroup")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::sync::Arc<io::Error>,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Unavailable + 'a {
    move |e| Unavailable::Io {
        what,
        path: path.to_path_buf(),
        source: std::sync::Arc::new(e),
    }
}

/// The subtree zurg manages.
#[derive(Debug)]
pub struct Cgroups {
    base: PathBuf,
    services: PathBuf,
    /// Controllers enabled for the services' cgroups.
    controllers: Vec<Controller>,
    /// Why a controller the kernel has is still off, if one is.
    controllers_note: Option<String>,
    /// The kernel has cgroup.kill (5.14).
    has_kill: bool,
}

/// Ok when `path` is on a cgroup2 file system.
fn check_cgroup2(path: &Path) -> Result<(), Unavailable> {
    let fs =
        nix::sys::statfs::statfs(path).map_err(|e| io_err("inspect", path)(io::Error::from(e)))?;
    if fs.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        return Err(Unavailable::NotCgroup2 {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(text.as_bytes())
}

fn read_file(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    File::open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// The pids listed in a `cgroup.procs`.
fn pids_of(dir: &Path) -> Vec<i32> {
    read_file(&dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

impl Cgroups {
    /// Finds and prepares the subtree: `given` (`--cgroup`), else zurg's own
    /// cgroup on a unified host. Moves zurg into `BASE/zurg` and enables
    /// the controllers it can for the services.
    pub fn set_up(given: Option<&Path>) -> Result<Cgroups, Unavailable> {
        let me = std::process::id();
        let (base, is_root) = match given {
            Some(path) => {
                check_cgroup2(path)?;
                (path.to_path_buf(), false)
            }
            None => {
                check_cgroup2(Path::new(MOUNT))?;
                let own = read_file(Path::new("/proc/self/cgroup"))
                    .map_err(|e| Unavailable::OwnCgroup(e.to_string()))?;
                let rel = own
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .ok_or_else(|| Unavailable::OwnCgroup("no cgroup2 line".into()))?
                    .trim();
                // Already in a leaf of our own (a re-exec'd zurg): its parent.
                let rel = rel.strip_suffix("/zurg").unwrap_or(rel);
                let base = match rel.trim_start_matches('/') {
                    "" => PathBuf::from(MOUNT),
                    rel => Path::new(MOUNT).join(rel),
                };
                (base, rel == "/" || rel.is_empty())
            }
        };
        // The root of a machine whose init zurg is holds kernel threads,
        // and is exempt from the "no internal processes" rule. PID 1 of a
        // pid namespace without a cgroup namespace is not that machine's
        // init: it must be alone in its cgroup like anyone else.
        if !(is_root && crate::os::pid1::is_machine_init()) {
            let others = pids_of(&base)
                .into_iter()
                .filter(|&p| u32::try_from(p).ok() != Some(me))
                .count();
            if others > 0 {
                return Err(Unavailable::NotAlone { path: base, others });
            }
        }
        let leaf = base.join("zurg");
        let services = base.join("services");
        for dir in [&leaf, &services] {
            match std::fs::create_dir(dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(io_err("create", dir)(e))
                }
                _ => {}
            }
        }
        let procs = leaf.join("cgroup.procs");
        write_file(&procs, &me.to_string()).map_err(io_err("move zurg into", &procs))?;
        let available = read_file(&base.join("cgroup.controllers")).unwrap_or_default();
        let wanted: Vec<Controller> = Controller::ALL
            .into_iter()
            .filter(|c| available.split_whitespace().any(|w| w == c.as_str()))
            .collect();
        let mut controllers = Vec::new();
        let mut note = None;
        for c in wanted {
            // One at a time: a controller the parent refuses leaves the others on.
            let on = format!("+{}", c.as_str());
            let done = write_file(&base.join("cgroup.subtree_control"), &on)
                .and_then(|()| write_file(&services.join("cgroup.subtree_control"), &on));
            match done {
                Ok(()) => controllers.push(c),
                Err(e) => {
                    note.get_or_insert_with(|| {
                        format!("cannot enable the {} controller: {e}", c.as_str())
                    });
                }
            }
        }
        Ok(Cgroups {
            has_kill: services.join("cgroup.kill").exists(),
            base,
            services,
            controllers,
            controllers_note: note,
        })
    }

    /// One line for zurg's start-up log.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.controllers.iter().map(|c| c.as_str()).collect();
        let mut line = format!(
            "cgroups: managing {} (zurg in zurg/, services in services/NAME; controllers: {}; stop by {})",
            self.base.display(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(" ")
            },
            if self.has_kill {
                "cgroup.kill"
            } else {
                "freeze and kill"
            }
        );
        if let Some(note) = &self.controllers_note {
            line.push_str("; ");
            line.push_str(note);
        }
        line
    }

    /// Why `limits` cannot be applied here (a controller that is off).
    pub fn refuse(&self, limits: &Limits) -> Option<String> {
        limits
            .settings()
            .into_iter()
            .find(|s| s.set && !self.controllers.contains(&s.controller))
            .map(|s| {
                format!(
                    "key `{}`: needs the {} controller, which is not enabled in {}{}",
                    s.key,
                    s.controller.as_str(),
                    self.base.display(),
                    self.controllers_note
                        .as_deref()
                        .map_or(String::new(), |n| format!(" ({n})"))
                )
            })
    }

    /// Creates (or reuses) `name`'s cgroup and writes the limits that
    /// differ from `old` (every set one for a new cgroup).
    pub fn service(
        &self,
        name: &str,
        limits: &Limits,
        old: Option<&Limits>,
    ) -> Result<ServiceCgroup, String> {
        let dir = self.services.join(name);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(format!("cannot create cgroup {}: {e}", dir.display()))
            }
            _ => {}
        }
        let procs_path = dir.join("cgroup.procs");
        let procs = OpenOptions::new()
            .write(true)
            .open(&procs_path)
            .map_err(|e| format!("cannot open {}: {e}", procs_path.display()))?;
        let dir_fd =
            File::open(&dir).map_err(|e| format!("cannot open cgroup {}: {e}", dir.display()))?;
        let cg = ServiceCgroup {
            dir_fd,
            oom_seen: 0,
            memory: self.controllers.contains(&Controller::Memory),
            has_kill: self.has_kill,
            procs,
            dir,
        };
        cg.write_limits(limits, old.unwrap_or(&Limits::default()))?;
        let mut cg = cg;
        cg.oom_seen = cg.oom_kills().unwrap_or(0);
        Ok(cg)
    }
}

/// One service's cgroup.
#[derive(Debug)]
pub struct ServiceCgroup {
    dir: PathBuf,
    /// The directory, open: the child is created in it (CLONE_INTO_CGROUP).
    dir_fd: File,
    /// `cgroup.procs`, open for writing: where clone3 cannot place it, the
    /// child writes "0" to it before exec to move itself in.
    procs: File,
    memory: bool,
    has_kill: bool,
    /// `oom_kill` as of the last exit (or creation).
    oom_seen: u64,
}

impl ServiceCgroup {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The descriptor the spawn's child writes "0" to.
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// The directory's descriptor, for clone3's CLONE_INTO_CGROUP.
    pub fn dir_fd(&self) -> RawFd {
        self.dir_fd.as_raw_fd()
    }

    /// Writes each limit whose value differs from `old`'s.
    pub fn write_limits(&self, new: &Limits, old: &Limits) -> Result<(), String> {
        for (s, o) in new.settings().into_iter().zip(old.settings()) {
            if s.value == o.value {
                continue;
            }
            let path = self.dir.join(s.file);
            write_file(&path, &s.value).map_err(|e| {
                format!(
                    "key `{}`: cannot write {:?} to {}: {e}",
                    s.key,
                    s.value,
                    path.display()
                )
            })?;
        }
        Ok(())
    }

    pub fn pids(&self) -> Vec<i32> {
        pids_of(&self.dir)
    }

    /// Sends `signo` to every process in the cgroup but `except`; how many.
    pub fn signal_all(&self, signo: i32, except: i32) -> usize {
        self.pids()
            .into_iter()
            .filter(|&p| p != except && crate::os::pidfd::kill(p, signo).is_ok())
            .count()
    }

    /// SIGKILL to everything in the cgroup: `cgroup.kill` where the kernel
    /// has it (5.14), else freeze, kill each process, thaw (a frozen
    /// process cannot fork between the listing and its kill; SIGKILL still
    /// ends it).
    pub fn kill(&self) -> io::Result<()> {
        if self.has_kill {
            return write_file(&self.dir.join("cgroup.kill"), "1");
        }
        let freeze = self.dir.join("cgroup.freeze");
        let frozen = write_file(&freeze, "1");
        for _ in 0..16 {
            if self.signal_all(libc::SIGKILL, 0) == 0 {
                break;
            }
        }
        if frozen.is_ok() {
            write_file(&freeze, "0")?;
        }
        frozen
    }

    /// Anything left in the cgroup.
    pub fn populated(&self) -> bool {
        read_file(&self.dir.join("cgroup.events"))
            .ok()
            .and_then(|t| super::flat_value(&t, "populated"))
            .is_some_and(|n| n > 0)
    }

    fn oom_kills(&self) -> Option<u64> {
        if !self.memory {
            return None;
        }
        super::oom_kills(&read_file(&self.dir.join("memory.events")).ok()?)
    }

    /// Whether the OOM killer ended a process of the service since the
    /// last call: one small read per exit.
    pub fn took_oom_kill(&mut self) -> bool {
        let Some(now) = self.oom_kills() else {
            return false;
        };
        let hit = now > self.oom_seen;
        self.oom_seen = now;
        hit
    }

    /// Removes the (empty) cgroup; a populated one stays.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The whole service from its cgroup: processes, CPU from `cpu.stat`,
/// memory from `memory.current` (page cache included, as the kernel
/// charges it), tasks from `pids.current`; one read each instead of a walk
/// of the process tree. `None` when the files are gone or the memory
/// controller is off (the caller walks /proc then).
pub fn sample(dir: &Path, at_ms: u64) -> Option<Sample> {
    let memory = read_file(&dir.join("memory.current"))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())?;
    let (user, system) = super::cpu_ms(&read_file(&dir.join("cpu.stat")).ok()?)?;
    let processes = u32::try_from(pids_of(dir).len()).unwrap_or(u32::MAX);
    let tasks = read_file(&dir.join("pids.current"))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    Some(Sample {
        at_ms,
        processes,
        cpu_user_ms: user,
        cpu_system_ms: system,
        rss_kb: memory / 1024,
        threads: tasks.unwrap_or(0),
        ..Sample::default()
    })
}
