//! Strict modes (sshd's `StrictModes`): when zurg runs as root, it refuses
//! to take orders from a file that someone other than root could have
//! written. A unit file says what to run as root, so a unit file, the units
//! directory, or a service's `exec` program that another user can change
//! would hand that user root.
//!
//! The rule, for a path after following its symlinks, the path itself and
//! every directory above it up to `/`:
//! - it is owned by root (for a service's `exec` and the directories
//!   above it: or by the unit's `user`, who could change only what runs as
//!   itself);
//! - it is not writable by its group or by others, except a directory with
//!   the sticky bit (`/tmp`): there nobody can rename or remove what
//!   another user owns.
//!
//! Not enforced when zurg does not run as root: then every file it reads
//! is its own user's business. Checked when units are loaded (at start, on
//! `reload`, by `zurg check`), on the worker thread once running; a mode
//! changed later counts at the next load.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Whether the checks apply: zurg's effective uid is root.
pub fn enforced() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Why a path fails the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Writable by its group or by others.
    Writable { mode: u32 },
    /// Owned by a user that may not write it.
    Owner { uid: u32 },
    /// It, or a directory above it, could not be looked up.
    Lookup(String),
}

/// A path refused by the rule, and what it is to the unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The path that fails the rule (the file, or a directory above it).
    pub path: PathBuf,
    pub problem: Problem,
    /// What was being checked, for the message: "unit file", "program".
    pub what: &'static str,
    /// The path being checked, when the failing one is a directory above it.
    pub of: Option<PathBuf>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        let above = match &self.of {
            Some(of) => format!(", a directory above the {} {},", self.what, of.display()),
            None => String::new(),
        };
        match &self.problem {
            Problem::Writable { mode } => {
                let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
                    (true, true) => "its group and others",
                    (true, false) => "its group",
                    _ => "others",
                };
                write!(
                    f,
                    "strict modes: {p}{above} is writable by {who} (mode {:04o}), and zurg runs as root; fix with `chmod go-w {p}`",
                    mode & 0o7777
                )
            }
            Problem::Owner { uid } => write!(
                f,
                "strict modes: {p}{above} is owned by uid {uid}, not root, and zurg runs as root; fix with `chown root {p}`"
            ),
            Problem::Lookup(e) => write!(f, "strict modes: cannot look up {p}{above}: {e}"),
        }
    }
}

/// The rule for one path's owner and mode (pure).
pub fn judge(uid: u32, mode: u32, is_dir: bool, owners: &[u32]) -> Option<Problem> {
    if !owners.contains(&uid) {
        return Some(Problem::Owner { uid });
    }
    let sticky_dir = is_dir && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky_dir {
        return Some(Problem::Writable { mode });
    }
    None
}

/// Checks `path` (following symlinks) and every directory above its real
/// path. `opened` is the metadata of the file as it was opened (fstat),
/// which is what counts for the file itself; the directories are looked up
/// by path. `owners` always includes root.
pub fn check(
    path: &Path,
    opened: Option<&std::fs::Metadata>,
    what: &'static str,
    owners: &[u32],
) -> Result<(), Refusal> {
    Checker::default().check(path, opened, what, owners)
}

/// `check` for the many paths of one load. The real path of a file's
/// directory and the owner and mode of each directory above it are looked
/// up once per load, not once per file: 10,000 unit files in one directory
/// naming one program would otherwise have the same directories looked up
/// 20,000 times (about twenty system calls per unit, most of a load's
/// time). A mode changed during the load counts at the next one, as does
/// one changed after it.
#[derive(Debug, Default)]
pub struct Checker {
    /// A directory as named → its real path.
    real_dirs: HashMap<PathBuf, Result<PathBuf, String>>,
    /// A real directory → its owner and mode.
    dirs: HashMap<PathBuf, Result<(u32, u32), String>>,
}

impl Checker {
    /// See `check`.
    pub fn check(
        &mut self,
        path: &Path,
        opened: Option<&std::fs::Metadata>,
        what: &'static str,
        owners: &[u32],
    ) -> Result<(), Refusal> {
        let refuse = |at: &Path, problem: Problem| Refusal {
            path: at.to_path_buf(),
            problem,
            what,
            of: (at != path).then(|| path.to_path_buf()),
        };
        let (real, own) = self
            .real_path(path)
            .map_err(|e| refuse(path, Problem::Lookup(e)))?;
        let looked_up;
        let meta = match (opened, &own) {
            (Some(m), _) | (None, Some(m)) => m,
            (None, None) => {
                looked_up = std::fs::metadata(&real)
                    .map_err(|e| refuse(path, Problem::Lookup(e.to_string())))?;
                &looked_up
            }
        };
        if let Some(p) = judge(meta.uid(), meta.mode(), meta.is_dir(), owners) {
            return Err(refuse(path, p));
        }
        for dir in real.ancestors().skip(1) {
            let (uid, mode) = self
                .dirs
                .entry(dir.to_path_buf())
                .or_insert_with(|| {
                    std::fs::metadata(dir)
                        .map(|m| (m.uid(), m.mode()))
                        .map_err(|e| e.to_string())
                })
                .clone()
                .map_err(|e| refuse(dir, Problem::Lookup(e)))?;
            if let Some(p) = judge(uid, mode, true, owners) {
                return Err(refuse(dir, p));
            }
        }
        Ok(())
    }

    /// `path` with its symlinks resolved, and its own metadata when it is
    /// not a symlink itself: then the real path is its directory's (looked
    /// up once) joined with its name.
    fn real_path(&mut self, path: &Path) -> Result<(PathBuf, Option<std::fs::Metadata>), String> {
        let canonical = |p: &Path| std::fs::canonicalize(p).map_err(|e| e.to_string());
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok((canonical(path)?, None));
        };
        // `dir/name/.` or `dir/name/` would look through a symlink `name`.
        if !path.as_os_str().as_bytes().ends_with(name.as_bytes()) {
            return Ok((canonical(path)?, None));
        }
        let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
        if meta.file_type().is_symlink() {
            return Ok((canonical(path)?, None));
        }
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let real_parent = self
            .real_dirs
            .entry(parent.to_path_buf())
            .or_insert_with(|| canonical(parent))
            .clone()?;
        Ok((real_parent.join(name), Some(meta)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_owned_and_not_writable_by_others_passes() {
        assert_eq!(judge(0, 0o100644, false, &[0]), None);
        assert_eq!(judge(0, 0o040755, true, &[0]), None);
        // The unit's user may own its own program.
        assert_eq!(judge(1000, 0o100755, false, &[0, 1000]), None);
    }

    #[test]
    fn group_or_other_write_is_refused_except_in_a_sticky_directory() {
        assert_eq!(
            judge(0, 0o100664, false, &[0]),
            Some(Problem::Writable { mode: 0o100664 })
        );
        assert_eq!(
            judge(0, 0o040777, true, &[0]),
            Some(Problem::Writable { mode: 0o040777 })
        );
        assert_eq!(judge(0, 0o041777, true, &[0]), None);
        // The sticky bit means nothing on a file.
        assert!(judge(0, 0o101666, false, &[0]).is_some());
    }

    #[test]
    fn another_owner_is_refused() {
        assert_eq!(
            judge(1000, 0o100644, false, &[0]),
            Some(Problem::Owner { uid: 1000 })
        );
        assert_eq!(
            judge(1001, 0o100755, false, &[0, 1000]),
            Some(Problem::Owner { uid: 1001 })
        );
    }

    #[test]
    fn the_message_names_the_path_the_mode_and_the_fix() {
        let r = Refusal {
            path: PathBuf::from("/etc/zurg/units"),
            problem: Problem::Writable { mode: 0o040775 },
            what: "unit file",
            of: Some(PathBuf::from("/etc/zurg/units/web.toml")),
        };
        assert_eq!(
            r.to_string(),
            "strict modes: /etc/zurg/units, a directory above the unit file /etc/zurg/units/web.toml, \
             is writable by its group (mode 0775), and zurg runs as root; fix with `chmod go-w /etc/zurg/units`"
        );
    }

    #[test]
    fn the_checker_finds_the_real_path_and_remembers_directories() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let tmp = std::env::temp_dir().join(format!("zurg-modes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let real = tmp.join("real");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("a.toml"), "").unwrap();
        symlink(&real, tmp.join("link")).unwrap();
        symlink("a.toml", real.join("ln.toml")).unwrap();
        let mut checker = Checker::default();
        for path in [
            real.join("a.toml"),
            tmp.join("link/a.toml"),
            real.join("ln.toml"),
            tmp.join("link/ln.toml"),
            tmp.join("link/../real/a.toml"),
            tmp.join("link/."),
            tmp.join("link/"),
        ] {
            let (got, _) = checker.real_path(&path).unwrap();
            assert_eq!(
                got,
                std::fs::canonicalize(&path).unwrap(),
                "{}",
                path.display()
            );
        }
        assert!(checker.real_path(&real.join("missing.toml")).is_err());
        // A directory made writable by others after it was looked up counts
        // at the next load (a new checker), not in this one.
        let owners = [0, nix::unistd::geteuid().as_raw()];
        assert_eq!(
            checker.check(&real.join("a.toml"), None, "unit file", &owners),
            Ok(())
        );
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            checker.check(&real.join("a.toml"), None, "unit file", &owners),
            Ok(())
        );
        let refused = Checker::default()
            .check(&tmp.join("link/a.toml"), None, "unit file", &owners)
            .unwrap_err();
        assert_eq!(refused.path, real);
        assert_eq!(refused.problem, Problem::Writable { mode: 0o40777 });
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
