//! Who a service runs as and what it may use: the values of the keys
//! `user`, `group`, `supplementary_groups`, `umask`, `nice`,
//! `oom_score_adj`, `no_new_privs`, `rlimits`, `capabilities` and
//! `env_file`, as `keys.rs` reads them. Pure: names are resolved by
//! `accounts.rs`, and applied in the child by `os::creds`.

use std::fmt;
use std::path::PathBuf;

use toml::Value;

/// A user or group: a name to look up, or a number used as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Name(String),
    Num(u32),
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Name(n) => write!(f, "{n:?}"),
            Id::Num(n) => write!(f, "{n}"),
        }
    }
}

/// A resource of setrlimit(2), by its `rlimits` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    As,
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

impl Resource {
    pub const ALL: [Resource; 16] = [
        Resource::As,
        Resource::Core,
        Resource::Cpu,
        Resource::Data,
        Resource::Fsize,
        Resource::Locks,
        Resource::Memlock,
        Resource::Msgqueue,
        Resource::Nice,
        Resource::Nofile,
        Resource::Nproc,
        Resource::Rss,
        Resource::Rtprio,
        Resource::Rttime,
        Resource::Sigpending,
        Resource::Stack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Resource::As => "as",
            Resource::Core => "core",
            Resource::Cpu => "cpu",
            Resource::Data => "data",
            Resource::Fsize => "fsize",
            Resource::Locks => "locks",
            Resource::Memlock => "memlock",
            Resource::Msgqueue => "msgqueue",
            Resource::Nice => "nice",
            Resource::Nofile => "nofile",
            Resource::Nproc => "nproc",
            Resource::Rss => "rss",
            Resource::Rtprio => "rtprio",
            Resource::Rttime => "rttime",
            Resource::Sigpending => "sigpending",
            Resource::Stack => "stack",
        }
    }

    /// The RLIMIT_* number.
    pub fn raw(self) -> i32 {
        // The constants' type differs between libc targets.
        #[allow(clippy::unnecessary_cast)]
        let raw = match self {
            Resource::As => libc::RLIMIT_AS,
            Resource::Core => libc::RLIMIT_CORE,
            Resource::Cpu => libc::RLIMIT_CPU,
            Resource::Data => libc::RLIMIT_DATA,
            Resource::Fsize => libc::RLIMIT_FSIZE,
            Resource::Locks => libc::RLIMIT_LOCKS,
            Resource::Memlock => libc::RLIMIT_MEMLOCK,
            Resource::Msgqueue => libc::RLIMIT_MSGQUEUE,
            Resource::Nice => libc::RLIMIT_NICE,
            Resource::Nofile => libc::RLIMIT_NOFILE,
            Resource::Nproc => libc::RLIMIT_NPROC,
            Resource::Rss => libc::RLIMIT_RSS,
            Resource::Rtprio => libc::RLIMIT_RTPRIO,
            Resource::Rttime => libc::RLIMIT_RTTIME,
            Resource::Sigpending => libc::RLIMIT_SIGPENDING,
            Resource::Stack => libc::RLIMIT_STACK,
        } as i32;
        raw
    }
}

/// No limit (RLIM_INFINITY).
pub const UNLIMITED: u64 = u64::MAX;

/// One entry of `rlimits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: Resource,
    pub soft: u64,
    pub hard: u64,
}

/// One entry of `env_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFile {
    pub path: PathBuf,
    /// Written with a leading `-`: a missing file is no error.
    pub optional: bool,
}

/// The capability names of linux/capability.h without `CAP_`, by number.
pub const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The number of a capability name, with or without `CAP_`, any case.
pub fn capability(name: &str) -> Option<u8> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITIES
        .iter()
        .position(|c| *c == bare)
        .and_then(|i| u8::try_from(i).ok())
}

/// What a unit says about its process's identity and limits. The default
/// (every key left out) changes nothing: the child inherits zurg's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Creds {
    pub user: Option<Id>,
    pub group: Option<Id>,
    pub supplementary_groups: Option<Vec<Id>>,
    pub umask: Option<u32>,
    pub nice: Option<i32>,
    pub oom_score_adj: Option<i32>,
    pub no_new_privs: bool,
    /// In `Resource` order, one per resource.
    pub rlimits: Vec<Rlimit>,
    /// Capability numbers, sorted, without repeats; `None` leaves the
    /// capability sets alone.
    pub capabilities: Option<Vec<u8>>,
    pub env_file: Vec<EnvFile>,
}

impl Creds {
    /// `Creds::default()` as a constant, for `Rare::DEFAULT`.
    pub const DEFAULT: Creds = Creds {
        user: None,
        group: None,
        supplementary_groups: None,
        umask: None,
        nice: None,
        oom_score_adj: None,
        no_new_privs: false,
        rlimits: Vec::new(),
        capabilities: None,
        env_file: Vec::new(),
    };

    /// No key of these is set: the spawn path gets nothing new.
    pub fn is_empty(&self) -> bool {
        *self == Creds::default()
    }

    /// A user or group name is set, to be looked up at load and each start.
    pub fn names_accounts(&self) -> bool {
        self.user.is_some() || self.group.is_some() || self.supplementary_groups.is_some()
    }
}

// Readers of the keys' values, used by keys.rs.

pub(super) fn id(v: &Value, what: &str) -> Result<Id, String> {
    match v {
        Value::Integer(n) => u32::try_from(*n)
            .ok()
            .filter(|n| *n != u32::MAX)
            .map(Id::Num)
            .ok_or_else(|| format!("{what} id must be 0 to 4294967294, found {n}")),
        Value::String(s) if s.is_empty() => Err(format!("empty {what} name")),
        Value::String(s) => match s.parse::<u32>() {
            Ok(n) if n != u32::MAX => Ok(Id::Num(n)),
            _ if s.contains([':', '\n', '\0', ',']) => Err(format!("invalid {what} name {s:?}")),
            _ => Ok(Id::Name(s.clone())),
        },
        other => Err(format!(
            "expected a {what} name or number, found {}",
            super::keys::type_name(other)
        )),
    }
}

pub(super) fn umask(v: &Value) -> Result<u32, String> {
    let n = match v {
        Value::Integer(n) => u32::try_from(*n).ok(),
        Value::String(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            u32::from_str_radix(digits, 8).ok()
        }
        other => {
            return Err(format!(
                "expected an octal string such as \"027\" or an integer such as 0o027, found {}",
                super::keys::type_name(other)
            ))
        }
    };
    n.filter(|n| *n <= 0o777).ok_or_else(|| {
        format!("must be an octal mode from 000 to 777 (\"027\" or 0o027), found {v}")
    })
}

pub(super) fn int_in(v: &Value, lo: i64, hi: i64) -> Result<i32, String> {
    match v {
        Value::Integer(n) if (lo..=hi).contains(n) => {
            i32::try_from(*n).map_err(|_| format!("must be {lo} to {hi}, found {n}"))
        }
        Value::Integer(n) => Err(format!("must be {lo} to {hi}, found {n}")),
        other => Err(format!(
            "expected an integer, found {}",
            super::keys::type_name(other)
        )),
    }
}

fn limit(v: &Value) -> Result<u64, String> {
    match v {
        Value::Integer(n) => {
            u64::try_from(*n).map_err(|_| format!("must not be negative, found {n}"))
        }
        Value::String(s) if s == "unlimited" || s == "infinity" => Ok(UNLIMITED),
        other => Err(format!("expected a number or \"unlimited\", found {other}")),
    }
}

/// `{ nofile = 65536, core = "unlimited", nproc = [512, 1024] }`.
pub(super) fn rlimits(v: &Value) -> Result<Vec<Rlimit>, super::keys::Bad> {
    let Value::Table(table) = v else {
        return Err(format!(
            "expected a table such as {{ nofile = 65536 }}, found {}",
            super::keys::type_name(v)
        )
        .into());
    };
    let mut out = Vec::new();
    let mut wrong = Vec::new();
    for (name, value) in table {
        let Some(resource) = Resource::ALL.into_iter().find(|r| r.name() == name) else {
            let names: Vec<&str> = Resource::ALL.iter().map(|r| r.name()).collect();
            wrong.push(format!(
                "unknown limit `{name}` (known: {})",
                names.join(", ")
            ));
            continue;
        };
        let pair = match value {
            Value::Array(items) => match items.as_slice() {
                [soft, hard] => limit(soft).and_then(|s| limit(hard).map(|h| (s, h))),
                _ => Err("takes one number, or [soft, hard]".to_string()),
            },
            one => limit(one).map(|n| (n, n)),
        };
        match pair {
            Ok((soft, hard)) if soft > hard => wrong.push(format!(
                "`{name}`: the soft limit {soft} is above the hard limit {hard}"
            )),
            Ok((soft, hard)) => out.push(Rlimit {
                resource,
                soft,
                hard,
            }),
            Err(e) => wrong.push(format!("`{name}` {e}")),
        }
    }
    if !wrong.is_empty() {
        return Err(super::keys::Bad::Wrong(wrong));
    }
    out.sort_by_key(|r| r.resource);
    Ok(out)
}

pub(super) fn capabilities(v: &Value) -> Result<Vec<u8>, super::keys::Bad> {
    let names = super::keys::string_array(v)?;
    let mut out = Vec::new();
    let mut wrong = Vec::new();
    for n in &names {
        match capability(n) {
            Some(c) => out.push(c),
            None => wrong.push(format!(
                "unknown capability {n:?} (names as in capabilities(7), e.g. \"NET_BIND_SERVICE\")"
            )),
        }
    }
    if !wrong.is_empty() {
        return Err(super::keys::Bad::Wrong(wrong));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

pub(super) fn env_files(v: &Value) -> Result<Vec<EnvFile>, super::keys::Bad> {
    let names = match v {
        Value::String(_) => vec![super::keys::string(v)?],
        other => super::keys::string_array(other)?,
    };
    let mut out = Vec::new();
    let mut wrong = Vec::new();
    for n in names {
        let (optional, path) = match n.strip_prefix('-') {
            Some(p) => (true, p),
            None => (false, n.as_str()),
        };
        if !path.starts_with('/') {
            wrong.push(format!("must be an absolute path, found {n:?}"));
            continue;
        }
        out.push(EnvFile {
            path: PathBuf::from(path),
            optional,
        });
    }
    if !wrong.is_empty() {
        return Err(super::keys::Bad::Wrong(wrong));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_map_to_their_numbers() {
        assert_eq!(capability("NET_BIND_SERVICE"), Some(10));
        assert_eq!(capability("CAP_NET_BIND_SERVICE"), Some(10));
        assert_eq!(capability("cap_sys_admin"), Some(21));
        assert_eq!(capability("CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(capability("NET_BIND"), None);
        assert_eq!(CAPABILITIES.len(), 41);
    }

    #[test]
    fn rlimit_names_match_libc() {
        assert_eq!(Resource::Nofile.raw(), libc::RLIMIT_NOFILE as i32);
        let mut names: Vec<&str> = Resource::ALL.iter().map(|r| r.name()).collect();
        let sorted = names.clone();
        names.sort_unstable();
        assert_eq!(names, sorted, "ALL is in name order");
    }
}
