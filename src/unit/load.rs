//! Reads a units directory: every `*.toml` entry (symlinks followed), in
//! name order, hidden files skipped. Returns every unit that parsed and
//! every error, never just the first: one broken file must not keep the
//! others from running.
//!
//! This runs inside PID 1, so no read may block: a unit file is opened with
//! O_NONBLOCK (a FIFO or a device swapped in under a `.toml` name would
//! otherwise hang the open or the read for good), the opened descriptor is
//! checked to be a regular file, and at most `MAX_UNIT_FILE` bytes are read.
//! A `.toml` entry that is refused is an error naming the path and why, so
//! it is logged and, on reload, its service is left as it was.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{modes, Unit, UnitError};

/// A unit file larger than this is refused rather than read into memory.
pub const MAX_UNIT_FILE: u64 = 1 << 20;

#[derive(Debug, Default)]
pub struct LoadReport {
    pub units: Vec<Unit>,
    pub errors: Vec<UnitError>,
    /// The directory itself could not be used (missing, unreadable, or
    /// refused by strict modes): no file was read, so a reload leaves every
    /// running service as it was instead of removing them all.
    pub dir_failed: bool,
}

fn file_error(path: &Path, msg: String) -> UnitError {
    UnitError {
        path: path.to_path_buf(),
        line: 0,
        col: 0,
        key: None,
        msg,
    }
}

/// What a non-regular file is, for the message that refuses it.
pub fn file_kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Why `open_regular` refused a path.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open: {0}")]
    Open(#[source] io::Error),
    #[error("cannot stat the opened file: {0}")]
    Stat(#[source] io::Error),
    #[error("is {0}, not a regular file; skipped")]
    NotRegular(&'static str),
}

/// Opens `path` for reading without ever blocking on it: O_NONBLOCK makes
/// opening a FIFO return at once, O_NOCTTY keeps a tty from becoming PID 1's
/// controlling terminal, and std adds O_CLOEXEC. The opened descriptor (not
/// the path, which may change meanwhile) must be a regular file.
pub fn open_regular(path: &Path) -> Result<(File, std::fs::Metadata), OpenError> {
    let flags = nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(OpenError::Open)?;
    let meta = file.metadata().map_err(OpenError::Stat)?;
    if !meta.file_type().is_file() {
        return Err(OpenError::NotRegular(file_kind(meta.file_type())));
    }
    Ok((file, meta))
}

/// The user and group databases zurg reads (never NSS).
pub const PASSWD: &str = "/etc/passwd";
pub const GROUP: &str = "/etc/group";
/// A larger /etc/passwd or /etc/group is refused.
const MAX_ACCOUNTS_FILE: u64 = 16 << 20;

/// Reads a small regular file without blocking on it (see `open_regular`),
/// refusing one larger than `max` bytes.
pub fn read_small(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let (file, _) = open_regular(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(bytes)
}

/// /etc/passwd and /etc/group, parsed. A file that is missing counts as
/// empty (a minimal image may have no /etc/group); one that cannot be read
/// is an error naming it.
pub fn read_accounts() -> Result<super::accounts::Accounts, String> {
    let read = |path: &str| match read_small(Path::new(path), MAX_ACCOUNTS_FILE) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(_) if !Path::new(path).exists() => Ok(String::new()),
        Err(e) => Err(format!("{path}: {e}")),
    };
    Ok(super::accounts::Accounts::parse(
        &read(PASSWD)?,
        &read(GROUP)?,
    ))
}

/// `strict`: the strict modes rule applies, through this load's checker.
fn read_unit(path: &Path, strict: Option<&mut modes::Checker>) -> Result<String, UnitError> {
    let (file, meta) = open_regular(path).map_err(|e| file_error(path, e.to_string()))?;
    if let Some(checker) = strict {
        checker
            .check(path, Some(&meta), "unit file", &[0])
            .map_err(|r| file_error(path, format!("{r}; skipped")))?;
    }
    // Room for the whole file, so it takes one read (and one to see the
    // end) rather than a series of growing ones.
    let size = usize::try_from(meta.len().min(MAX_UNIT_FILE + 1)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(size.saturating_add(1));
    // A regular file that still would block (/proc/kmsg is one) fails
    // here with EAGAIN instead of waiting.
    let n = file
        .take(MAX_UNIT_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| file_error(path, format!("cannot read: {e}; skipped")))?;
    if u64::try_from(n).unwrap_or(u64::MAX) > MAX_UNIT_FILE {
        return Err(file_error(
            path,
            format!(
                "larger than {MAX_UNIT_FILE} bytes, the most zurg reads of a unit file; skipped"
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| not_utf8(path, e))
}

/// The error for a unit file that is not UTF-8, at the first bad byte.
fn not_utf8(path: &Path, e: std::string::FromUtf8Error) -> UnitError {
    let at = e.utf8_error().valid_up_to();
    let good = e.as_bytes().get(..at).unwrap_or_default();
    let line = good.iter().filter(|b| **b == b'\n').count() + 1;
    let col = at.saturating_sub(good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)) + 1;
    UnitError {
        path: path.to_path_buf(),
        line,
        col,
        key: None,
        msg: format!("not valid UTF-8 (byte {at}): a unit file is UTF-8 text; skipped"),
    }
}

/// The strict modes rule for what a unit runs or reads as root or as its
/// `user`: the programs of `exec`, `pre_start`, `post_stop` and its exec
/// probes (`ready`, `health`), and its `env_file`s (a writable one can set
/// LD_PRELOAD). A file that does not exist yet is not refused here (its
/// start fails, saying so); one that exists must be owned by root or the
/// unit's user and not writable by group or others, nor any directory
/// above it. A command found by $PATH is not judged.
fn programs_refused(
    checker: &mut modes::Checker,
    unit: &Unit,
    uid: Option<u32>,
    path: &Path,
    text: &str,
) -> Vec<UnitError> {
    fn first(cmd: &[String]) -> Option<&Path> {
        cmd.first().map(Path::new)
    }
    let owners: Vec<u32> = std::iter::once(0).chain(uid).collect();
    let ready = match &unit.rare.ready {
        Some(super::probe::Ready::Exec(cmd)) => first(cmd),
        _ => None,
    };
    let health = match unit.rare.health.as_deref().map(|h| &h.check) {
        Some(super::probe::Check::Exec(cmd)) => first(cmd),
        _ => None,
    };
    let commands = [
        ("exec", Some(&*unit.exec)),
        ("pre_start", unit.rare.pre_start.as_deref().and_then(first)),
        ("post_stop", unit.rare.post_stop.as_deref().and_then(first)),
        ("ready", ready),
        ("health", health),
    ];
    let programs = commands
        .into_iter()
        .filter_map(|(key, program)| Some((key, program?, "program")));
    let env_files = unit
        .rare
        .creds
        .env_file
        .iter()
        .map(|f| ("env_file", f.path.as_path(), "env file"));
    let mut errors = Vec::new();
    for (key, file, what) in programs.chain(env_files) {
        if !file.is_absolute() || !file.exists() {
            continue;
        }
        if let Err(r) = checker.check(file, None, what, &owners) {
            errors.push(super::parse::value_error(path, text, key, r.to_string()));
        }
    }
    errors
}

/// Why `dir` cannot serve as the units directory, if it cannot, without
/// the path: missing, not a directory and not readable each say so.
pub fn dir_problem(dir: &Path) -> Option<String> {
    let denied = || "is not readable: permission denied (zurg needs r and x on it)".to_string();
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Some("does not exist; create it or pass another --units DIR".into())
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Some(denied()),
        Err(e) => Some(format!("cannot be looked up: {e}")),
        Ok(m) if !m.is_dir() => Some(format!("is {}, not a directory", file_kind(m.file_type()))),
        Ok(_) => match std::fs::read_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Some(denied()),
            Err(e) => Some(format!("cannot be read: {e}")),
            Ok(_) => None,
        },
    }
}

/// The unit files in `dir`, sorted; hidden files and other extensions skipped.
/// Entries of any type are returned: `read_unit` refuses the ones that are
/// not regular files, with a reason.
pub fn unit_files(dir: &Path) -> Result<Vec<PathBuf>, UnitError> {
    let entries = std::fs::read_dir(dir).map_err(|_| {
        file_error(
            dir,
            format!(
                "units directory {}",
                dir_problem(dir).unwrap_or_else(|| "cannot be read".into())
            ),
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && p.extension().is_some_and(|e| e == "toml")
        })
        .collect();
    paths.sort();
    Ok(paths)
}

/// Loads `dir`, with strict modes when zurg runs as root.
pub fn load_dir(dir: &Path) -> LoadReport {
    load_dir_with(dir, modes::enforced())
}

/// Loads `dir`; `strict` applies the strict modes rule (`modes.rs`) to the
/// directory, each unit file and each service's programs.
pub fn load_dir_with(dir: &Path, strict: bool) -> LoadReport {
    let mut report = LoadReport::default();
    let paths = match unit_files(dir) {
        Ok(p) => p,
        Err(e) => {
            report.errors.push(e);
            report.dir_failed = true;
            return report;
        }
    };
    // Directories looked up once per load (strict modes).
    let mut checker = modes::Checker::default();
    if strict {
        if let Err(r) = checker.check(dir, None, "units directory", &[0]) {
            report
                .errors
                .push(file_error(dir, format!("{r}; no unit is loaded from it")));
            report.dir_failed = true;
            return report;
        }
    }
    // Read once per load, and only when a unit names a user or group.
    let mut accounts: Option<Result<super::accounts::Accounts, String>> = None;
    let mut defined: std::collections::HashMap<String, PathBuf> = std::collections::HashMap::new();
    let mut deps_at = DepsAt::new();
    for path in paths {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            report
                .errors
                .push(file_error(&path, "file name is not valid UTF-8".into()));
            continue;
        };
        let text = match read_unit(&path, strict.then_some(&mut checker)) {
            Ok(text) => text,
            Err(e) => {
                report.errors.push(e);
                continue;
            }
        };
        // Names are looked up (once per load, only when a unit names a
        // user or group) even in a file with other errors: one round of
        // `zurg check` reports them all.
        let resolve = |creds: &super::creds::Creds| {
            if !creds.names_accounts() {
                return Ok(None);
            }
            match accounts.get_or_insert_with(read_accounts) {
                Ok(db) => db.resolve(creds).map(|r| r.uid),
                Err(e) => Err(vec![("user", e.clone())]),
            }
        };
        let (unit, uid) = match super::parse::parse_unit_resolving(name, &path, &text, resolve) {
            Ok(parsed) => parsed,
            Err(e) => {
                report.errors.extend(e);
                continue;
            }
        };
        if !unit.depends_on.is_empty() {
            // Where its `depends_on` is, for a refusal found only once
            // every file is read (a cycle, an unknown name).
            let at = super::parse::value_error(&path, &text, "depends_on", String::new());
            deps_at.insert(name.to_string(), (at.line, at.col));
        }
        if strict {
            let errors = programs_refused(&mut checker, &unit, uid, &path, &text);
            if !errors.is_empty() {
                report.errors.extend(errors);
                continue;
            }
        }
        // A service name given twice (`web.toml` with `instances` and a
        // `web@1.toml`): the later file is refused, naming the earlier one.
        let units = instances_of(unit);
        if let Some((name, first)) = units
            .iter()
            .find_map(|u| Some((&u.name, defined.get(&*u.name)?)))
        {
            report.errors.push(file_error(
                &path,
                format!(
                    "service `{name}` is already defined by {} (its `instances`); skipped",
                    first.display()
                ),
            ));
            continue;
        }
        defined.extend(units.iter().map(|u| (u.name.to_string(), path.clone())));
        report.units.extend(units);
    }
    depend_on_every_instance(&mut report.units);
    refuse_by_dependencies(dir, &deps_at, &mut report);
    report
}

/// Line and column of each unit file's `depends_on` value, by file stem.
type DepsAt = std::collections::HashMap<String, (usize, usize)>;

/// A unit with `instances = N` as its N services `NAME@0` ... `NAME@N-1`
/// (`${INSTANCE}` is replaced at each start, like the other variables); any
/// other unit as it is.
pub fn instances_of(mut unit: Unit) -> Vec<Unit> {
    let Some(n) = unit.rare.instances else {
        expand_log_paths(&mut unit);
        return vec![unit];
    };
    (0..n)
        .map(|i| {
            let mut one = Unit {
                name: format!("{}@{i}", unit.name).into(),
                instance: Some(i),
                ..unit.clone()
            };
            // Read once: a reload that changes N must leave the instances
            // it keeps unchanged.
            one.rare.instances = None;
            expand_log_paths(&mut one);
            one.rare.compact();
            one
        })
        .collect()
}

/// `${SERVICE}` and `${INSTANCE}` in its log files' paths replaced: the
/// files are opened at load (checked there: no other name is left).
fn expand_log_paths(unit: &mut Unit) {
    let uses = |out: &super::Output| matches!(out, super::Output::File(f) if f.path.to_string_lossy().contains("${"));
    // Most units have none: their `rare` keys stay unboxed.
    if !uses(&unit.rare.stdout) && !uses(&unit.rare.stderr) {
        return;
    }
    let name = unit.name.to_string();
    let instance = unit.instance.map(|i| i.to_string());
    let rare = &mut *unit.rare;
    for out in [&mut rare.stdout, &mut rare.stderr] {
        if let super::Output::File(f) = out {
            let path = f.path.to_string_lossy();
            if path.contains("${") {
                f.path = super::vars::expand(&path, |var| match var {
                    "SERVICE" => Some(name.clone()),
                    "INSTANCE" => instance.clone(),
                    _ => None,
                })
                .into();
            }
        }
    }
}

/// The name of the unit file `unit` came from: `web` for `web@2`.
pub fn file_stem(unit: &Unit) -> &str {
    match unit.instance {
        Some(_) => unit
            .name
            .rsplit_once('@')
            .map_or(&unit.name, |(stem, _)| stem),
        None => &unit.name,
    }
}

/// `depends_on = ["web"]`, where `web` has instances, waits for each of them.
fn depend_on_every_instance(units: &mut [Unit]) {
    let mut groups: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    for u in units.iter().filter(|u| u.instance.is_some()) {
        *groups.entry(file_stem(u).to_string()).or_default() += 1;
    }
    if groups.is_empty() {
        return;
    }
    for u in units.iter_mut() {
        let mut expanded = Vec::with_capacity(u.depends_on.len());
        for d in std::mem::take(&mut u.depends_on) {
            match groups.get(&d) {
                Some(n) => expanded.extend((0..*n).map(|i| format!("{d}@{i}"))),
                None => expanded.push(d),
            }
        }
        u.depends_on = expanded.into();
    }
}

/// Moves the units that cannot run because of their `depends_on` (a cycle,
/// an unknown or broken name, a refused dependency: `service::graph`) from
/// the units to the errors, one per unit, naming its file, the line and
/// column of its `depends_on` (`deps_at`), and the key.
fn refuse_by_dependencies(dir: &Path, deps_at: &DepsAt, report: &mut LoadReport) {
    let broken: std::collections::HashSet<String> = report
        .errors
        .iter()
        .filter_map(|e| e.path.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let nodes: Vec<(&str, &[String])> = report
        .units
        .iter()
        .map(|u| (&*u.name, &*u.depends_on))
        .collect();
    let refused = crate::service::graph::refusals(&nodes, |n| broken.contains(n));
    if refused.is_empty() {
        return;
    }
    let mut keep = vec![true; report.units.len()];
    for (i, problem) in refused {
        let Some(unit) = report.units.get(i) else {
            continue;
        };
        if let Some(k) = keep.get_mut(i) {
            *k = false;
        }
        let stem = file_stem(unit);
        let (line, col) = deps_at.get(stem).copied().unwrap_or((0, 0));
        report.errors.push(UnitError {
            path: dir.join(format!("{stem}.toml")),
            line,
            col,
            key: Some("depends_on".to_string()),
            msg: problem.to_string(),
        });
    }
    let mut flags = keep.into_iter();
    report.units.retain(|_| flags.next().unwrap_or(true));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Test directories and files get modes that strict modes accepts
    /// whatever the umask (the tests run as root).
    fn mkdir_0755(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn write_0644(path: impl AsRef<Path>, text: &str) {
        std::fs::write(path.as_ref(), text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    #[test]
    fn loads_good_reports_every_bad_skips_the_rest() {
        let dir = std::env::temp_dir().join(format!("zurg-load-{}", std::process::id()));
        mkdir_0755(&dir);
        let write = |name: &str, text: &str| write_0644(dir.join(name), text);
        write("b.toml", "exec = \"/bin/true\"\n");
        write("a.toml", "exec = \"/bin/sh\"\nargs = [\"-c\", \"true\"]\n");
        write("bad1.toml", "exec = 1\n");
        write("bad2.toml", "nope = true\nexec = \"/x\"\n");
        write("notes.txt", "exec = 1\n");
        write(".hidden.toml", "exec = 1\n");
        write(
            "big.toml",
            &"#".repeat(usize::try_from(MAX_UNIT_FILE).unwrap() + 1),
        );
        std::fs::create_dir_all(dir.join("sub.toml")).unwrap();
        let r = load_dir(&dir);
        let names: Vec<&str> = r.units.iter().map(|u| &*u.name).collect();
        assert_eq!(names, ["a", "b"]);
        let errs: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].contains("bad1.toml:1:8: key `exec`"), "{errs:?}");
        assert!(errs[1].contains("bad2.toml:1:1: key `nope`"), "{errs:?}");
        assert!(errs[2].contains("big.toml: larger than"), "{errs:?}");
        assert!(
            errs[3].contains("sub.toml: is a directory, not a regular file; skipped"),
            "{errs:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let r = load_dir(&dir);
        assert!(r.units.is_empty());
        let e = r.errors[0].to_string();
        assert!(
            e.contains("units directory does not exist; create it"),
            "{e}"
        );
    }

    #[test]
    fn dependency_problems_are_errors_of_the_units_they_stop() {
        let dir = std::env::temp_dir().join(format!("zurg-load-deps-{}", std::process::id()));
        mkdir_0755(&dir);
        let write = |name: &str, text: &str| write_0644(dir.join(name), text);
        let unit = |deps: &str| format!("exec = \"/bin/true\"\ndepends_on = [{deps}]\n");
        write("a.toml", &unit("\"b\""));
        write("b.toml", &unit("\"a\""));
        write("web.toml", &unit("\"dbx\""));
        write("api.toml", &unit("\"bad\""));
        write("bad.toml", "exec = 1\n");
        write("db.toml", &unit(""));
        write("worker.toml", &unit("\"db\""));
        let r = load_dir(&dir);
        let names: Vec<&str> = r.units.iter().map(|u| &*u.name).collect();
        assert_eq!(names, ["db", "worker"]);
        let errs: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
        let d = dir.display();
        assert_eq!(
            errs,
            [
                format!("{d}/bad.toml:1:8: key `exec`: expected a string, found an integer"),
                format!("{d}/a.toml:2:14: key `depends_on`: dependency cycle a -> b -> a"),
                format!(
                    "{d}/api.toml:2:14: key `depends_on`: depends on `bad`, whose unit file has errors"
                ),
                format!("{d}/b.toml:2:14: key `depends_on`: dependency cycle b -> a -> b"),
                format!("{d}/web.toml:2:14: key `depends_on`: no unit named `dbx`"),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn instances_expand_and_dependants_wait_for_each() {
        let dir = std::env::temp_dir().join(format!("zurg-load-inst-{}", std::process::id()));
        mkdir_0755(&dir);
        let write = |name: &str, text: &str| write_0644(dir.join(name), text);
        write(
            "web.toml",
            "exec = \"/bin/true\"\ninstances = 3\nport = \"auto\"\n",
        );
        write("web@1.toml", "exec = \"/bin/true\"\n");
        write("api.toml", "exec = \"/bin/true\"\ndepends_on = [\"web\"]\n");
        let r = load_dir(&dir);
        let names: Vec<&str> = r.units.iter().map(|u| &*u.name).collect();
        assert_eq!(names, ["api", "web@0", "web@1", "web@2"]);
        let instances: Vec<Option<u32>> = r.units.iter().map(|u| u.instance).collect();
        assert_eq!(instances, [None, Some(0), Some(1), Some(2)]);
        assert_eq!(*r.units[0].depends_on, ["web@0", "web@1", "web@2"]);
        let errs: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("web@1.toml: service `web@1` is already defined by"),
            "{errs:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_unit_file_that_is_not_utf8_is_refused_at_its_first_bad_byte() {
        let dir = std::env::temp_dir().join(format!("zurg-load-utf8-{}", std::process::id()));
        mkdir_0755(&dir);
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, b"exec = \"/bin/true\"\nargs = [\"a\xff\"]\n").unwrap();
        write_0644(dir.join("ok.toml"), "exec = \"/bin/true\"\n");
        let r = load_dir(&dir);
        assert_eq!(r.units.len(), 1);
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        let e = r.errors[0].to_string();
        assert!(
            e.starts_with(&format!(
                "{}:2:11: not valid UTF-8 (byte 29)",
                bad.display()
            )),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let dir = crate::test_dir::TestDir::new("load-fifo");
        mkdir_0755(dir.path());
        write_0644(dir.join("ok.toml"), "exec = \"/bin/true\"\n");
        // Nobody ever writes to it: a blocking open would wait for good.
        nix::unistd::mkfifo(&dir.join("pipe.toml"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero.toml")).unwrap();
        let r = load_dir(dir.path());
        let names: Vec<&str> = r.units.iter().map(|u| &*u.name).collect();
        assert_eq!(names, ["ok"]);
        let errs: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].ends_with("pipe.toml: is a FIFO, not a regular file; skipped"),
            "{errs:?}"
        );
        assert!(
            errs[1].ends_with("zero.toml: is a character device, not a regular file; skipped"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_units_path_that_is_a_file_says_so() {
        let file = std::env::temp_dir().join(format!("zurg-load-file-{}", std::process::id()));
        std::fs::write(&file, "").unwrap();
        assert_eq!(
            dir_problem(&file).unwrap(),
            "is a regular file, not a directory"
        );
        let e = load_dir(&file).errors[0].to_string();
        assert!(
            e.contains("units directory is a regular file, not a directory"),
            "{e}"
        );
        std::fs::remove_file(&file).unwrap();
        assert!(dir_problem(&file).unwrap().starts_with("does not exist"));
        assert_eq!(dir_problem(Path::new("/")), None);
    }

    #[test]
    fn shipped_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
        let r = load_dir(&dir);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.units.len() >= 3, "{:?}", r.units);
    }
}
