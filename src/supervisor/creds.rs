//! Before each start of a unit with `user`, `group`, `rlimits`,
//! `capabilities`, `env_file`...: resolves names and reads env files, and
//! prepares what the child applies (`os::creds::Credentials`) and the
//! environment that goes with it. Also the environment, argv and cwd of
//! every unit with `${SERVICE}`, `${VERSION}` and `${PORT}` replaced.
//!
//! A unit without those keys costs one check per start here.
//!
//! Names are looked up again at each start, so a user added after the load
//! is found; env files are read again at each start, so an edit takes
//! effect at the next restart. Both are read on the loop, but only when a
//! stat says the file changed (inode, size, mtime, ctime): a restart of an
//! unchanged setup costs a stat per file (see docs/design.md, where the
//! figures are).

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::Supervisor;
use crate::os::creds::Credentials;
use crate::unit::accounts::Accounts;
use crate::unit::creds::Creds;
use crate::unit::envfile::parse_env_file;
use crate::unit::{load, vars, Unit};

/// A larger env file is refused.
const MAX_ENV_FILE: u64 = 1 << 20;

/// What identifies a file's contents without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        })
    }
}

/// /etc/passwd and /etc/group as last read, with their stamps.
#[derive(Debug, Default)]
pub(super) struct AccountsCache {
    stamps: Option<[Option<Stamp>; 2]>,
    accounts: Accounts,
}

impl AccountsCache {
    /// The databases as they are now: read again only when one changed.
    fn current(&mut self) -> Result<&Accounts, String> {
        let stamps = [load::PASSWD, load::GROUP].map(|p| Stamp::of(Path::new(p)).ok());
        if self.stamps != Some(stamps) {
            self.accounts = load::read_accounts()?;
            self.stamps = Some(stamps);
        }
        Ok(&self.accounts)
    }
}

/// Variables as `(name, value)`, in the order they apply.
type Vars = Vec<(String, String)>;

/// A slot's env files as last read, and the variables last put in its spec;
/// boxed, as only units with `user` or `env_file` have any.
#[derive(Debug, Default)]
pub(super) struct SlotCreds(Option<Box<CredsCache>>);

#[derive(Debug, Default)]
struct CredsCache {
    files: Vec<(PathBuf, Stamp, Vars)>,
    /// Variables from the passwd entry and env files, under the unit's `env`.
    extra_env: Vec<(String, String)>,
}

impl SlotCreds {
    /// Variables from the passwd entry and env files, under the unit's `env`.
    pub(super) fn extra_env(&self) -> &[(String, String)] {
        self.0.as_ref().map_or(&[], |c| &c.extra_env)
    }

    fn set_extra_env(&mut self, extra: Vec<(String, String)>) {
        if extra.is_empty() && self.0.is_none() {
            return;
        }
        self.0.get_or_insert_default().extra_env = extra;
    }

    fn env_file(&mut self, path: &Path, optional: bool) -> Result<Vec<(String, String)>, String> {
        self.0.get_or_insert_default().env_file(path, optional)
    }
}

impl CredsCache {
    /// The variables of `path`, from the cache while its stamp holds.
    fn env_file(&mut self, path: &Path, optional: bool) -> Result<Vec<(String, String)>, String> {
        let stamp = match Stamp::of(path) {
            Ok(s) => s,
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(format!(
                    "key `env_file`: cannot read {}: {e}",
                    path.display()
                ))
            }
        };
        if let Some((_, _, vars)) = self.files.iter().find(|(p, s, _)| p == path && *s == stamp) {
            return Ok(vars.clone());
        }
        let bytes = load::read_small(path, MAX_ENV_FILE)
            .map_err(|e| format!("key `env_file`: {}: {e}", path.display()))?;
        let vars = parse_env_file(&bytes).map_err(|e| {
            format!(
                "key `env_file`: {}:{}: {}",
                path.display(),
                e.line,
                e.reason
            )
        })?;
        self.files.retain(|(p, _, _)| p != path);
        self.files.push((path.to_path_buf(), stamp, vars.clone()));
        Ok(vars)
    }
}

/// The value of a `${NAME}` for `unit`; `${PORT}` only once it is known.
fn value_of(unit: &Unit, port: Option<u16>) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| match name {
        "SERVICE" => Some(unit.name.to_string()),
        "VERSION" => Some(unit.rare.version.clone().unwrap_or_default()),
        "PORT" => port.map(|p| p.to_string()),
        "INSTANCE" => unit.instance.map(|i| i.to_string()),
        _ => None,
    }
}

fn nul(unit: &Unit, what: &str) -> String {
    format!("{}: {what} contains a NUL byte", unit.name)
}

/// `args` with their variables replaced, after argv[0].
pub(super) fn service_args(unit: &Unit, port: Option<u16>) -> Result<Vec<CString>, String> {
    unit.args
        .iter()
        .map(|a| CString::new(vars::expand(a, value_of(unit, port))).map_err(|_| nul(unit, "args")))
        .collect()
}

/// The unit's `cwd` with its variables replaced.
pub(super) fn service_cwd(unit: &Unit, cwd: &Path, port: Option<u16>) -> Result<CString, String> {
    let text = vars::expand(&cwd.to_string_lossy(), value_of(unit, port));
    CString::new(text).map_err(|_| nul(unit, "cwd"))
}

/// The `KEY=VALUE` entries a service adds to zurg's environment: `extra`
/// (passwd and env files) unless `env` sets the same name, `env` with its
/// variables replaced, then `ZURG_SERVICE` and `ZURG_VERSION`.
pub(super) fn service_env(
    unit: &Unit,
    port: Option<u16>,
    extra: &[(String, String)],
) -> Result<Vec<CString>, String> {
    let mut env = Vec::with_capacity(extra.len() + unit.rare.env.len() + 2);
    for (k, v) in extra {
        if !unit.rare.env.contains_key(k) && !set_by_zurg(unit, k) {
            env.push(CString::new(format!("{k}={v}")).map_err(|_| nul(unit, "env_file"))?);
        }
    }
    for (k, v) in &unit.rare.env {
        let v = vars::expand(v, value_of(unit, port));
        env.push(CString::new(format!("{k}={v}")).map_err(|_| nul(unit, "env"))?);
    }
    env.push(CString::new(format!("ZURG_SERVICE={}", unit.name)).map_err(|_| nul(unit, "name"))?);
    env.push(
        CString::new(format!(
            "ZURG_VERSION={}",
            unit.rare.version.as_deref().unwrap_or("")
        ))
        .map_err(|_| nul(unit, "version"))?,
    );
    Ok(env)
}

/// Names zurg sets itself, which an env file or passwd entry cannot take.
fn set_by_zurg(unit: &Unit, name: &str) -> bool {
    let has_port = unit.port != 0 || unit.port_auto || unit.socket;
    name.starts_with("ZURG_") || name.starts_with("LISTEN_") || (name == "PORT" && has_port)
}

/// Whether the unit's env or cwd use `${PORT}` (args are checked apart).
pub(super) fn env_or_cwd_use_port(unit: &Unit) -> bool {
    unit.rare.env.values().any(|v| vars::uses(v, "PORT"))
        || unit
            .rare
            .cwd
            .as_ref()
            .is_some_and(|c| vars::uses(&c.to_string_lossy(), "PORT"))
}

/// What the child applies, from the unit's keys and the resolved ids.
fn credentials(c: &Creds, r: &crate::unit::accounts::Resolved) -> Credentials {
    Credentials {
        rlimits: c
            .rlimits
            .iter()
            .map(|l| (l.resource.raw(), l.soft, l.hard, l.resource.name()))
            .collect(),
        nice: c.nice,
        oom_score_adj: c
            .oom_score_adj
            .and_then(|n| CString::new(n.to_string()).ok()),
        umask: c.umask,
        groups: r.groups.clone(),
        gid: r.gid,
        uid: r.uid,
        caps: c
            .capabilities
            .as_ref()
            .map(|caps| caps.iter().fold(0u64, |m, c| m | (1u64 << (c & 63)))),
        no_new_privs: c.no_new_privs,
    }
}

impl Supervisor {
    /// Before a start: the ids, limits and env-file variables of this
    /// start, or why the service cannot start (naming the key).
    pub(super) fn prepare_creds(&mut self, slot: usize) -> Result<(), String> {
        let Some(s) = self.slots.get_mut(slot) else {
            return Ok(());
        };
        s.ensure_spec(&self.start_dir)?;
        let unit = &s.service.unit;
        if unit.rare.creds.is_empty() {
            return Ok(());
        }
        let Some(spec) = s.spec.as_deref_mut() else {
            return Ok(());
        };
        let resolved = if unit.rare.creds.names_accounts() {
            let db = self
                .accounts
                .current()
                .map_err(|e| format!("cannot look up `user`/`group`: {e}"))?;
            db.resolve(&unit.rare.creds).map_err(|wrong| {
                let msgs: Vec<String> = wrong
                    .into_iter()
                    .map(|(key, msg)| format!("key `{key}`: {msg}"))
                    .collect();
                msgs.join("; ")
            })?
        } else {
            Default::default()
        };
        let mut extra = resolved.env.clone();
        for f in &unit.rare.creds.env_file {
            for (k, v) in s.creds.env_file(&f.path, f.optional)? {
                extra.retain(|(old, _)| *old != k);
                extra.push((k, v));
            }
        }
        let credentials = credentials(&unit.rare.creds, &resolved);
        if spec.creds.as_ref() != Some(&credentials) {
            spec.creds = Some(credentials);
        }
        if extra != s.creds.extra_env() {
            spec.env = service_env(unit, None, &extra)?;
            s.creds.set_extra_env(extra);
        }
        Ok(())
    }
}
