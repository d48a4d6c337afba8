//! Every unit file key, declared once: its name, its type and default as
//! docs/units.md states them, a one-line doc, the function that reads its
//! value into a `Unit` (with its default) and any rule that ties it to other
//! keys. `parse.rs` walks `KEYS` and places each message at the offending
//! value; no other code reads a key.
//!
//! Adding a key: a field in `Unit` (mod.rs), a placeholder for it in
//! `blank`, one `Key` in `KEYS`, and a row in docs/units.md (the tests below
//! refuse a table and a page that disagree).
//!
//! Pure: values arrive parsed by toml; nothing here touches the OS.

use std::collections::BTreeMap;
use std::path::PathBuf;

use toml::Value;

use super::{
    FileOutput, Output, RestartPolicy, Unit, DEFAULT_LOG_KEEP, DEFAULT_LOG_MAX_BYTES,
    DEFAULT_LOG_RING_BYTES, DEFAULT_RESTART_DELAY_MS, DEFAULT_STOP_SIGNAL, DEFAULT_STOP_TIMEOUT_MS,
};

/// Why a key's value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// A required key is not in the file.
    Missing,
    /// Every problem with the value, not just the first (e.g. each bad
    /// variable of an `env` table).
    Wrong(Vec<String>),
}

impl From<String> for Bad {
    fn from(msg: String) -> Bad {
        Bad::Wrong(vec![msg])
    }
}

/// Stores the key's value, or its default for `None`, in the unit. It sees
/// this key's value only: rules about other keys go in `Key::check`.
pub type Read = fn(&mut Unit, Option<&Value>) -> Result<(), Bad>;

/// A rule between keys, run on the unit once every key has been read.
pub type Check = fn(&Unit) -> Result<(), String>;

/// One unit file key.
pub struct Key {
    pub name: &'static str,
    /// The value's type, exactly as the key table in docs/units.md has it.
    pub kind: &'static str,
    /// The default, exactly as docs/units.md has it. When it starts with a
    /// literal in backticks, that TOML value must give the same unit as
    /// leaving the key out (a test holds it to that).
    pub default: &'static str,
    /// One sentence: the key's meaning in docs/units.md starts with it
    /// (the page may go on before its final period).
    pub doc: &'static str,
    pub read: Read,
    /// Runs when this key is set and it and every key listed read cleanly
    /// (a broken one has its own error already); the error is placed at
    /// this key's value.
    pub check: Option<(&'static [&'static str], Check)>,
    /// Keys that may not be set together with this one. The error is placed
    /// at this key, whose value is then not read.
    pub excludes: &'static [&'static str],
}

/// The base that each entry of `KEYS` overrides; every field but `check`
/// and `excludes` is always overridden (a test refuses an empty one, and an
/// entry without its own `read` fails every parse).
const KEY: Key = Key {
    name: "",
    kind: "",
    default: "",
    doc: "",
    read: |_, _| {
        Err("has no reader in unit/keys.rs (a bug in zurg)"
            .to_string()
            .into())
    },
    check: None,
    excludes: &[],
};

/// Every key a unit file may set, in the order docs/units.md lists them.
pub static KEYS: &[Key] = &[
    Key {
        name: "exec",
        kind: "string, absolute path",
        default: "required",
        doc: "The program to run.",
        read: |u, v| {
            u.exec = absolute_path(need(v)?)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "args",
        kind: "array of strings",
        default: "`[]`",
        doc: "The arguments after `argv[0]`.",
        read: |u, v| {
            u.args = v.map_or(Ok(Vec::new()), string_array)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "env",
        kind: "table of strings",
        default: "`{}`",
        doc: "Variables added to zurg's own environment, overriding any of the same name.",
        read: |u, v| {
            u.env = v.map_or(Ok(BTreeMap::new()), env_table)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "cwd",
        kind: "string, absolute path",
        default: "the directory `zurg run` was started in",
        doc: "The working directory.",
        read: |u, v| {
            u.cwd = v.map(absolute_path).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "restart",
        kind: "`\"always\"`, `\"on-failure\"`, `\"never\"`",
        default: "`\"always\"`",
        doc: "When to start the service again after it exits.",
        read: |u, v| {
            u.restart = v.map_or(Ok(RestartPolicy::Always), restart_policy)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "stop_signal",
        kind: "signal name (`\"TERM\"`, `\"SIGQUIT\"`, `\"RTMIN+2\"`) or number",
        default: "`\"TERM\"`",
        doc: "Sent to the service when it is stopped.",
        read: |u, v| {
            u.stop_signal = v.map_or(Ok(DEFAULT_STOP_SIGNAL), signal)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "stop_timeout_ms",
        kind: "non-negative integer",
        default: "`10000`",
        doc: "How long after `stop_signal` zurg waits before it sends SIGKILL.",
        read: |u, v| {
            u.stop_timeout_ms = v.map_or(Ok(DEFAULT_STOP_TIMEOUT_MS), millis)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "restart_delay_ms",
        kind: "non-negative integer",
        default: "`0`",
        doc: "A fixed wait before every restart.",
        read: |u, v| {
            u.restart_delay_ms = v.map_or(Ok(DEFAULT_RESTART_DELAY_MS), millis)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "port",
        kind: "integer 0–65535, or `\"auto\"`",
        default: "`0`",
        doc: "The port the service serves on.",
        read: |u, v| {
            (u.port, u.port_auto) = v.map_or(Ok((0, false)), port)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "socket",
        kind: "boolean",
        default: "`false`",
        doc: "zurg listens on the port itself and hands the socket to every process of the service as fd 3.",
        read: |u, v| {
            u.socket = v.map_or(Ok(false), boolean)?;
            Ok(())
        },
        check: Some((&["port"], |u| {
            if u.socket && u.port == 0 && !u.port_auto {
                return Err("needs a `port` to listen on (a number, or \"auto\")".into());
            }
            Ok(())
        })),
        ..KEY
    },
    Key {
        name: "bind",
        kind: "IP address",
        default: "all addresses (`0.0.0.0`)",
        doc: "The address `socket` listens on and `\"auto\"` picks a port on.",
        read: |u, v| {
            u.bind = v.map(ip_address).transpose()?;
            Ok(())
        },
        check: Some((&["socket", "port"], |u| {
            if !u.socket && !u.port_auto {
                return Err("only applies with `socket = true` or `port = \"auto\"`".into());
            }
            Ok(())
        })),
        ..KEY
    },
    Key {
        name: "version",
        kind: "string",
        default: "none",
        doc: "The build's version.",
        read: |u, v| {
            u.version = v
                .map(|v| {
                    let text = string(v)?;
                    super::parse::version_name(&text)?;
                    Ok::<_, String>(text)
                })
                .transpose()?;
            Ok(())
        },
        check: Some((&["exec"], |u| match &u.version {
            Some(version) => super::parse::versioned_path(&u.exec, version),
            None => Ok(()),
        })),
        ..KEY
    },
    Key {
        name: "md5",
        kind: "32 hex digits",
        default: "none",
        doc: "The binary's MD5 sum, checked before every start.",
        // md5 and sha256 fill the same field: parse_unit reads every
        // absent key's default before any value, so this None never
        // overwrites a sha256 read earlier.
        read: |u, v| {
            u.checksum = v.map(|v| checksum("md5", v)).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "sha256",
        kind: "64 hex digits",
        default: "none",
        doc: "The binary's SHA-256 sum, checked before every start.",
        read: |u, v| {
            if let Some(v) = v {
                u.checksum = Some(checksum("sha256", v)?);
            }
            Ok(())
        },
        excludes: &["md5"],
        ..KEY
    },
    Key {
        name: "stats_interval_ms",
        kind: "`0`, or an integer ≥ 100",
        default: "`0` (off)",
        doc: "Samples the service's process tree periodically.",
        read: |u, v| {
            u.stats_interval_ms = match v.map(millis).transpose()? {
                None | Some(0) => None,
                Some(n) if n < 100 => {
                    return Err(format!("must be 0 (off) or at least 100, found {n}").into())
                }
                Some(n) => Some(n),
            };
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "stdout",
        kind: "`\"prefix\"`, `\"inherit\"`, `\"null\"`, or a table `{ file, max_bytes, keep, timestamps }`",
        default: "`\"prefix\"`",
        doc: "Where the service's standard output goes.",
        read: |u, v| {
            u.stdout = v.map_or(Ok(Output::Prefix), output)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "stderr",
        kind: "like `stdout`",
        default: "`\"prefix\"`",
        doc: "Where the service's standard error goes.",
        read: |u, v| {
            u.stderr = v.map_or(Ok(Output::Prefix), output)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "log_ring_bytes",
        kind: "non-negative integer",
        default: "`262144` (256 KiB)",
        doc: "How many bytes of the service's latest output lines zurg keeps in memory for `zurg logs`.",
        read: |u, v| {
            u.log_ring_bytes = match v {
                None => DEFAULT_LOG_RING_BYTES,
                Some(Value::Integer(n)) => usize::try_from(*n)
                    .map_err(|_| format!("must not be negative, found {n}"))?,
                Some(other) => {
                    return Err(
                        format!("expected an integer (bytes), found {}", type_name(other)).into(),
                    )
                }
            };
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "kill_mode",
        kind: "`\"cgroup\"`, `\"group\"`, `\"main\"`",
        default: "where zurg manages cgroups `\"cgroup\"`, else `\"group\"`",
        doc: "Which processes a stop reaches.",
        read: |u, v| {
            u.kill_mode = v.map(kill_mode).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "memory_max",
        kind: "bytes: integer, or string with `K`, `M`, `G`, `T`",
        default: "none",
        doc: "The service's memory limit (cgroup `memory.max`).",
        read: |u, v| {
            u.limits.memory_max = v.map(size).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "memory_high",
        kind: "like `memory_max`",
        default: "none",
        doc: "Where the service's memory use is throttled (cgroup `memory.high`).",
        read: |u, v| {
            u.limits.memory_high = v.map(size).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "cpu_max",
        kind: "`\"50%\"`, or `\"QUOTA PERIOD\"` in µs",
        default: "none",
        doc: "The service's CPU limit (cgroup `cpu.max`).",
        read: |u, v| {
            u.limits.cpu_max = v
                .map(|v| crate::cgroup::parse_cpu_max(&string(v)?))
                .transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "pids_max",
        kind: "positive integer",
        default: "none",
        doc: "How many tasks (processes and threads) the service may have (cgroup `pids.max`).",
        read: |u, v| {
            u.limits.pids_max = v.map(|v| bounded(v, 1, i64::MAX)).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "io_weight",
        kind: "integer 1–10000",
        default: "none (the kernel's 100)",
        doc: "The service's share of disk bandwidth under contention (cgroup `io.weight`).",
        read: |u, v| {
            u.limits.io_weight = v
                .map(|v| bounded(v, 1, 10_000).map(|n| u16::try_from(n).unwrap_or(100)))
                .transpose()?;
            Ok(())
        },
        ..KEY
    },
];

/// The key called `name`.
pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The unit before any key is read. Every field but `name` is a placeholder
/// that its key's default or value replaces, so these values never reach
/// a caller.
pub fn blank(name: &str) -> Unit {
    Unit {
        name: name.to_string(),
        exec: PathBuf::new(),
        args: Vec::new(),
        env: BTreeMap::new(),
        cwd: None,
        restart: RestartPolicy::Always,
        stop_signal: DEFAULT_STOP_SIGNAL,
        stop_timeout_ms: DEFAULT_STOP_TIMEOUT_MS,
        restart_delay_ms: DEFAULT_RESTART_DELAY_MS,
        port: 0,
        port_auto: false,
        socket: false,
        bind: None,
        version: None,
        stats_interval_ms: None,
        checksum: None,
        log_ring_bytes: DEFAULT_LOG_RING_BYTES,
        stdout: Output::Prefix,
        stderr: Output::Prefix,
        limits: crate::cgroup::Limits::default(),
        kill_mode: None,
    }
}

/// The message for a key that is not in `KEYS`: every known key (as serde
/// words it, which the message replaced), and the nearest one when the
/// name looks like a typo of it.
pub fn unknown(name: &str) -> String {
    let known: Vec<String> = KEYS.iter().map(|k| format!("`{}`", k.name)).collect();
    let mut msg = format!(
        "unknown field `{name}`, expected one of {}",
        known.join(", ")
    );
    if let Some(near) = nearest(name) {
        msg.push_str(&format!("; did you mean `{near}`?"));
    }
    msg
}

/// The known key closest to `name` by edit distance, if close enough to be
/// a typo (a third of its length, at least 1 and at most 3 edits).
fn nearest(name: &str) -> Option<&'static str> {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    KEYS.iter()
        .map(|k| (edit_distance(name, k.name), k.name))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Levenshtein distance with adjacent transpositions counted as one edit
/// (`restrat` is one edit from `restart`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows: the one two back is needed for transpositions.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur: Vec<usize> = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur.clear();
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let left = cur.last().copied().unwrap_or(0);
            let up = prev.get(j + 1).copied().unwrap_or(0);
            let diag = prev.get(j).copied().unwrap_or(0);
            let mut d = (left + 1).min(up + 1).min(diag + usize::from(ca != cb));
            let swapped =
                i > 0 && j > 0 && a.get(i - 1) == Some(cb) && b.get(j - 1) == Some(ca) && ca != cb;
            if swapped {
                d = d.min(before.get(j - 1).copied().unwrap_or(0) + 1);
            }
            cur.push(d);
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev.last().copied().unwrap_or(0)
}

/// A required key's value.
fn need(v: Option<&Value>) -> Result<&Value, Bad> {
    v.ok_or(Bad::Missing)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// exec(2) cannot carry a NUL byte.
fn no_nul(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    Ok(())
}

fn string(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => {
            no_nul(s)?;
            Ok(s.clone())
        }
        other => Err(format!("expected a string, found {}", type_name(other))),
    }
}

fn absolute_path(v: &Value) -> Result<PathBuf, String> {
    let s = string(v)?;
    if !s.starts_with('/') {
        return Err(format!("must be an absolute path, found {s:?}"));
    }
    Ok(PathBuf::from(s))
}

fn millis(v: &Value) -> Result<u64, String> {
    match v {
        Value::Integer(n) => {
            u64::try_from(*n).map_err(|_| format!("must not be negative, found {n}"))
        }
        other => Err(format!(
            "expected an integer (milliseconds), found {}",
            type_name(other)
        )),
    }
}

fn boolean(v: &Value) -> Result<bool, String> {
    match v {
        Value::Boolean(b) => Ok(*b),
        other => Err(format!(
            "expected true or false, found {}",
            type_name(other)
        )),
    }
}

/// Every item's problem, not just the first one's.
fn string_array(v: &Value) -> Result<Vec<String>, Bad> {
    let Value::Array(items) = v else {
        return Err(format!("expected an array of strings, found {}", type_name(v)).into());
    };
    let mut out = Vec::with_capacity(items.len());
    let mut wrong = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) => match no_nul(s) {
                Ok(()) => out.push(s.clone()),
                Err(e) => wrong.push(e),
            },
            other => wrong.push(format!(
                "item {i} must be a string, found {}",
                type_name(other)
            )),
        }
    }
    if wrong.is_empty() {
        Ok(out)
    } else {
        Err(Bad::Wrong(wrong))
    }
}

/// Every variable's problem, not just the first one's.
fn env_table(v: &Value) -> Result<BTreeMap<String, String>, Bad> {
    let Value::Table(table) = v else {
        return Err(format!("expected a table of strings, found {}", type_name(v)).into());
    };
    let mut env = BTreeMap::new();
    let mut wrong = Vec::new();
    for (k, val) in table {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            wrong.push(format!("invalid variable name {k:?}"));
            continue;
        }
        let Value::String(s) = val else {
            wrong.push(format!(
                "value of {k} must be a string, found {}",
                type_name(val)
            ));
            continue;
        };
        match no_nul(s) {
            Ok(()) => {
                env.insert(k.clone(), s.clone());
            }
            Err(e) => wrong.push(e),
        }
    }
    if wrong.is_empty() {
        Ok(env)
    } else {
        Err(Bad::Wrong(wrong))
    }
}

/// `"prefix"`, `"inherit"`, `"null"` or `{ file = PATH, max_bytes = N,
/// keep = K, timestamps = BOOL }`; every problem of a table at once.
fn output(v: &Value) -> Result<Output, Bad> {
    const WORDS: &str = "\"prefix\", \"inherit\", \"null\" or a table { file = \"/path\" }";
    let table = match v {
        Value::String(s) => {
            return match s.as_str() {
                "prefix" => Ok(Output::Prefix),
                "inherit" => Ok(Output::Inherit),
                "null" => Ok(Output::Null),
                other => Err(format!("must be {WORDS}, found {other:?}").into()),
            }
        }
        Value::Table(t) => t,
        other => return Err(format!("must be {WORDS}, found {}", type_name(other)).into()),
    };
    let mut errors = Vec::new();
    let mut out = FileOutput {
        path: PathBuf::new(),
        max_bytes: DEFAULT_LOG_MAX_BYTES,
        keep: DEFAULT_LOG_KEEP,
        timestamps: false,
    };
    let mut have_path = false;
    for (key, value) in table {
        let read = match key.as_str() {
            "file" => absolute_path(value).map(|p| {
                out.path = p;
                have_path = true;
            }),
            "max_bytes" => match value.as_integer() {
                Some(n) if n >= 1 => {
                    out.max_bytes = u64::try_from(n).unwrap_or(DEFAULT_LOG_MAX_BYTES);
                    Ok(())
                }
                _ => Err(format!("must be an integer of at least 1, found {value}")),
            },
            "keep" => match value.as_integer().map(u32::try_from) {
                Some(Ok(n)) if n <= 1000 => {
                    out.keep = n;
                    Ok(())
                }
                _ => Err(format!("must be an integer from 0 to 1000, found {value}")),
            },
            "timestamps" => boolean(value).map(|b| out.timestamps = b),
            _ => Err("is not a key of an output file (file, max_bytes, keep, timestamps)".into()),
        };
        if let Err(e) = read {
            errors.push(format!("`{key}` {e}"));
        }
    }
    if !have_path && errors.iter().all(|e| !e.starts_with("`file`")) {
        errors.push("a table needs `file = \"/absolute/path\"`".to_string());
    }
    if errors.is_empty() {
        Ok(Output::File(out))
    } else {
        Err(Bad::Wrong(errors))
    }
}

fn restart_policy(v: &Value) -> Result<RestartPolicy, String> {
    let s = string(v)?;
    RestartPolicy::ALL
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| {
            let names: Vec<String> = RestartPolicy::ALL
                .iter()
                .map(|p| format!("{:?}", p.as_str()))
                .collect();
            let (last, rest) = names.split_last().unzip();
            format!(
                "expected {} or {}, found {s:?}",
                rest.unwrap_or_default().join(", "),
                last.map_or("", String::as_str)
            )
        })
}

fn signal(v: &Value) -> Result<i32, String> {
    let parsed = match v {
        Value::String(s) => crate::sig::parse(s),
        Value::Integer(n) => i32::try_from(*n)
            .ok()
            .and_then(|n| crate::sig::parse(&n.to_string())),
        other => {
            return Err(format!(
                "expected a signal name or number, found {}",
                type_name(other)
            ))
        }
    };
    match parsed {
        Some(n) if n != crate::sig::SIGSTOP => Ok(n),
        _ => Err(format!("unknown or unusable signal {v}")),
    }
}

/// `(port, port_auto)`.
fn port(v: &Value) -> Result<(u16, bool), String> {
    match v {
        Value::Integer(n) => u16::try_from(*n)
            .map(|p| (p, false))
            .map_err(|_| format!("must be 0 to 65535, found {n}")),
        Value::String(s) if s == "auto" => Ok((0, true)),
        Value::String(s) => Err(format!("expected a port number or \"auto\", found {s:?}")),
        other => Err(format!(
            "expected an integer or \"auto\", found {}",
            type_name(other)
        )),
    }
}

fn ip_address(v: &Value) -> Result<std::net::IpAddr, String> {
    let text = string(v)?;
    text.parse()
        .map_err(|_| format!("expected an IP address, found {text:?}"))
}

/// A byte count: an integer, or a string such as `"512M"`.
fn size(v: &Value) -> Result<u64, String> {
    match v {
        Value::Integer(n) if *n >= 1 => Ok(u64::try_from(*n).unwrap_or(u64::MAX)),
        Value::Integer(n) => Err(format!("must be at least 1 byte, found {n}")),
        Value::String(s) => crate::cgroup::parse_size(s),
        other => Err(format!(
            "expected bytes (an integer, or a string such as \"512M\"), found {}",
            type_name(other)
        )),
    }
}

/// An integer from `min` to `max`.
fn bounded(v: &Value, min: i64, max: i64) -> Result<u64, String> {
    match v {
        Value::Integer(n) if (min..=max).contains(n) => Ok(u64::try_from(*n).unwrap_or_default()),
        Value::Integer(n) if max == i64::MAX => Err(format!("must be at least {min}, found {n}")),
        Value::Integer(n) => Err(format!("must be {min} to {max}, found {n}")),
        other => Err(format!("expected an integer, found {}", type_name(other))),
    }
}

fn kill_mode(v: &Value) -> Result<crate::cgroup::KillMode, String> {
    let s = string(v)?;
    crate::cgroup::KillMode::parse(&s)
        .ok_or_else(|| format!("expected \"cgroup\", \"group\" or \"main\", found {s:?}"))
}

fn checksum(kind: &str, v: &Value) -> Result<crate::version::Checksum, String> {
    crate::version::Checksum::parse(kind, &string(v)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    #[test]
    fn every_key_is_fully_declared_and_named_once() {
        let mut names = BTreeSet::new();
        for k in KEYS {
            assert!(names.insert(k.name), "{} is declared twice", k.name);
            for (what, text) in [
                ("name", k.name),
                ("kind", k.kind),
                ("default", k.default),
                ("doc", k.doc),
            ] {
                assert!(!text.is_empty(), "key `{}` has no {what}", k.name);
            }
            assert!(
                k.doc.ends_with('.') && !k.doc.contains('\n'),
                "the doc of `{}` is one sentence: {:?}",
                k.name,
                k.doc
            );
        }
        for k in KEYS {
            let uses = k.check.map_or(&[][..], |(uses, _)| uses);
            for other in uses.iter().chain(k.excludes) {
                assert!(
                    names.contains(other),
                    "`{}` refers to unknown key `{other}`",
                    k.name
                );
                assert_ne!(*other, k.name);
            }
        }
    }

    /// A backticked default in docs/units.md is the value the parser
    /// really uses: writing it out changes nothing.
    #[test]
    fn documented_defaults_are_the_real_ones() {
        let path = Path::new("/u/svc.toml");
        let base = "exec = \"/bin/true\"\n";
        let plain = super::super::parse_unit("svc", path, base).unwrap();
        let mut checked = 0;
        for k in KEYS {
            let Some(literal) = k
                .default
                .strip_prefix('`')
                .and_then(|rest| rest.split_once('`'))
                .map(|(lit, _)| lit)
            else {
                continue;
            };
            let text = format!("{base}{} = {literal}\n", k.name);
            let unit = super::super::parse_unit("svc", path, &text)
                .unwrap_or_else(|e| panic!("default of `{}`: {e}", k.name));
            assert_eq!(unit, plain, "`{}` = {literal} is not the default", k.name);
            checked += 1;
        }
        assert!(checked >= 8, "only {checked} defaults checked");
    }

    /// The key table in docs/units.md and `KEYS` say the same: every key
    /// has a row, no row names an unknown key, and type, default and the
    /// first sentence of the meaning are the table's own.
    #[test]
    fn docs_units_md_lists_exactly_these_keys() {
        let page = include_str!("../../docs/units.md");
        let section = page
            .split("\n## Keys\n")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("docs/units.md has a `## Keys` section");
        let mut rows = BTreeMap::new();
        let mut order = Vec::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split(" | ")
                .map(str::trim)
                .collect();
            assert_eq!(cells.len(), 4, "row with 4 cells: {line}");
            let name = cells[0].trim_matches('`');
            order.push(name);
            assert!(
                rows.insert(name, (cells[1], cells[2], cells[3])).is_none(),
                "docs/units.md lists `{name}` twice"
            );
        }
        for k in KEYS {
            let Some((kind, default, meaning)) = rows.remove(k.name) else {
                panic!("docs/units.md has no row for key `{}`", k.name);
            };
            assert_eq!(kind, k.kind, "type of `{}` in docs/units.md", k.name);
            assert_eq!(
                default, k.default,
                "default of `{}` in docs/units.md",
                k.name
            );
            // The page may go on where the doc's sentence ends.
            assert!(
                meaning.starts_with(k.doc.trim_end_matches('.')),
                "the meaning of `{}` in docs/units.md starts with its doc {:?}: {meaning}",
                k.name,
                k.doc
            );
        }
        assert!(
            rows.is_empty(),
            "docs/units.md documents keys the parser does not know: {:?}",
            rows.keys()
        );
        let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        assert_eq!(order, names, "docs/units.md lists the keys in KEYS order");
    }

    #[test]
    fn output_keys_take_a_word_or_a_file_table_and_report_every_problem() {
        let path = Path::new("/u/svc.toml");
        let parse = |extra: &str| {
            super::super::parse_unit("svc", path, &format!("exec = \"/x\"\n{extra}\n"))
        };
        let u = parse("stdout = \"null\"\nstderr = \"inherit\"").unwrap();
        assert_eq!((u.stdout, u.stderr), (Output::Null, Output::Inherit));
        let u = parse("stdout = { file = \"/var/log/a.log\", timestamps = true }").unwrap();
        assert_eq!(
            u.stdout,
            Output::File(FileOutput {
                path: PathBuf::from("/var/log/a.log"),
                max_bytes: DEFAULT_LOG_MAX_BYTES,
                keep: DEFAULT_LOG_KEEP,
                timestamps: true,
            })
        );
        assert_eq!(u.stderr, Output::Prefix);
        let err = parse("stdout = \"loud\"").unwrap_err().to_string();
        assert!(
            err.contains("key `stdout`: must be \"prefix\", \"inherit\", \"null\" or a table"),
            "{err}"
        );
        let err = parse("stderr = { file = \"rel.log\", keep = -1, max_bytes = 0, colour = true }")
            .unwrap_err()
            .to_string();
        for want in [
            "`file` must be an absolute path, found \"rel.log\"",
            "`keep` must be an integer from 0 to 1000, found -1",
            "`max_bytes` must be an integer of at least 1, found 0",
            "`colour` is not a key of an output file",
        ] {
            assert!(err.contains(want), "{want} in {err}");
        }
        let err = parse("stdout = { keep = 2 }").unwrap_err().to_string();
        assert!(err.contains("a table needs `file"), "{err}");
    }

    #[test]
    fn typos_get_the_nearest_key() {
        assert_eq!(nearest("restrat"), Some("restart"));
        assert_eq!(nearest("exe"), Some("exec"));
        assert_eq!(nearest("stop_timeout"), Some("stop_timeout_ms"));
        assert_eq!(nearest("Env"), Some("env"));
        assert_eq!(nearest("user"), None);
        assert_eq!(nearest("completely_different"), None);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn unknown_key_message_lists_every_key() {
        let msg = unknown("restrat");
        for k in KEYS {
            assert!(msg.contains(&format!("`{}`", k.name)), "{msg}");
        }
        assert!(msg.ends_with("; did you mean `restart`?"), "{msg}");
        assert!(!unknown("user").contains("did you mean"));
    }

    #[test]
    fn log_ring_bytes_takes_a_byte_count() {
        let path = Path::new("/u/svc.toml");
        let parse = |text: &str| super::super::parse::parse_unit("svc", path, text);
        let u = parse("exec = \"/x\"\nlog_ring_bytes = 1024\n").unwrap();
        assert_eq!(u.log_ring_bytes, 1024);
        assert_eq!(
            parse("exec = \"/x\"\n").unwrap().log_ring_bytes,
            crate::unit::DEFAULT_LOG_RING_BYTES
        );
        assert_eq!(
            parse("exec = \"/x\"\nlog_ring_bytes = 0\n")
                .unwrap()
                .log_ring_bytes,
            0
        );
        for (text, want) in [
            (
                "log_ring_bytes = -1",
                "key `log_ring_bytes`: must not be negative, found -1",
            ),
            (
                "log_ring_bytes = \"1M\"",
                "key `log_ring_bytes`: expected an integer (bytes), found a string",
            ),
        ] {
            let err = parse(&format!("exec = \"/x\"\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn cgroup_keys_read_limits_and_name_the_key_of_a_bad_value() {
        let path = Path::new("/u/svc.toml");
        let parse = |extra: &str| {
            super::super::parse_unit("svc", path, &format!("exec = \"/x\"\n{extra}\n"))
        };
        let u = parse(
            "memory_max = \"64M\"\nmemory_high = 1048576\ncpu_max = \"50%\"\npids_max = 32\nio_weight = 200\nkill_mode = \"main\"",
        )
        .unwrap();
        assert_eq!(u.limits.memory_max, Some(64 << 20));
        assert_eq!(u.limits.memory_high, Some(1 << 20));
        assert_eq!(u.limits.cpu_max.map(|c| c.quota_us), Some(50_000));
        assert_eq!(u.limits.pids_max, Some(32));
        assert_eq!(u.limits.io_weight, Some(200));
        assert_eq!(u.kill_mode, Some(crate::cgroup::KillMode::Main));
        let plain = parse("").unwrap();
        assert!(plain.limits.is_empty() && plain.kill_mode.is_none());
        let err = parse(
            "memory_max = \"lots\"\nmemory_high = 0\ncpu_max = \"0%\"\npids_max = 0\nio_weight = 20000\nkill_mode = \"process\"",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "svc.toml:2:14: key `memory_max`: expected bytes",
            "key `memory_high`: must be at least 1 byte, found 0",
            "key `cpu_max`: expected a share",
            "key `pids_max`: must be at least 1, found 0",
            "key `io_weight`: must be 1 to 10000, found 20000",
            "key `kill_mode`: expected \"cgroup\", \"group\" or \"main\", found \"process\"",
        ] {
            assert!(err.contains(want), "{want} in {err}");
        }
    }
}
