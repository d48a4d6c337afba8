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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

use toml::Value;

use super::creds::{self, Id};
use super::probe::Ready;
use super::{
    BackoffSteps, FileOutput, Kind, Output, RestartPolicy, StartLimit, Unit, DEFAULT_LOG_KEEP,
    DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_RING_BYTES, DEFAULT_RESTART_DELAY_MS, DEFAULT_STOP_SIGNAL,
    DEFAULT_STOP_TIMEOUT_MS, DEFAULT_SUCCESS_EXIT_CODES,
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
            u.exec = absolute_path(need(v)?)?.into();
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
            u.args = v.map_or(Ok(Vec::new()), string_array)?.into();
            let wrong: Vec<String> = u.args.iter().filter_map(|a| vars_in(a).err()).collect();
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(Bad::Wrong(wrong))
            }
        },
        check: Some((&["instances"], instance_needs_instances)),
        ..KEY
    },
    Key {
        name: "env",
        kind: "table of strings",
        default: "`{}`",
        doc: "Variables added to zurg's own environment, overriding any of the same name.",
        read: |u, v| {
            u.rare.env = v.map_or(Ok(BTreeMap::new()), env_table)?;
            let wrong: Vec<String> = u
                .rare.env
                .iter()
                .filter_map(|(k, v)| vars_in(v).err().map(|e| format!("{k}: {e}")))
                .collect();
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(Bad::Wrong(wrong))
            }
        },
        check: Some((&["instances"], instance_needs_instances)),
        ..KEY
    },
    Key {
        name: "cwd",
        kind: "string, absolute path",
        default: "the directory `zurg run` was started in",
        doc: "The working directory.",
        read: |u, v| {
            u.rare.cwd = v.map(absolute_path).transpose()?;
            if let Some(cwd) = &u.rare.cwd {
                vars_in(&cwd.to_string_lossy())?;
            }
            Ok(())
        },
        check: Some((&["instances"], instance_needs_instances)),
        ..KEY
    },
    Key {
        name: "depends_on",
        kind: "array of unit names",
        default: "`[]`",
        doc: "Services that must be ready before this one starts.",
        read: |u, v| {
            u.depends_on = v.map_or(Ok(Vec::new()), unit_names)?.into();
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
            u.rare.restart_delay_ms = v.map_or(Ok(DEFAULT_RESTART_DELAY_MS), millis)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "type",
        kind: "`\"longrun\"`, `\"oneshot\"`",
        default: "`\"longrun\"`",
        doc: "What the service's process is for: `longrun` runs until stopped, `oneshot` runs to completion.",
        read: |u, v| {
            u.kind = v.map_or(Ok(Kind::Longrun), kind)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "success_exit_codes",
        kind: "array of integers 0–255",
        default: "`[0]`",
        doc: "The exit codes that count as success.",
        read: |u, v| {
            u.rare.success_exit_codes = match v {
                None => Cow::Borrowed(&DEFAULT_SUCCESS_EXIT_CODES),
                Some(v) => Cow::Owned(exit_codes(v)?),
            };
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "backoff",
        kind: "table `{ initial_ms, max_ms }`",
        default: "`{ initial_ms = 100, max_ms = 30000 }`",
        doc: "The crash-loop backoff: the first wait, doubled at each further short run up to the longest.",
        read: |u, v| {
            u.rare.backoff = v.map_or(Ok(BackoffSteps::default()), backoff)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "start_limit",
        kind: "table `{ burst, interval_ms }`",
        default: "none (no limit)",
        doc: "More than `burst` starts within `interval_ms` put the service in the `failed` state instead of starting it again.",
        read: |u, v| {
            u.rare.start_limit = v.map(start_limit).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "essential",
        kind: "boolean",
        default: "`false`",
        doc: "When the service ends for good, zurg stops every service and `zurg run` exits with the service's exit code.",
        read: |u, v| {
            u.essential = v.map_or(Ok(false), boolean)?;
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
            u.rare.bind = v.map(ip_address).transpose()?;
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
        name: "instances",
        kind: "integer 1–1024",
        default: "none (one service, `NAME`)",
        doc: "Runs the unit as N services `NAME@0` ... `NAME@N-1`, each with its own process, GPID and `\"auto\"` port.",
        read: |u, v| {
            u.rare.instances = v.map(instances).transpose()?;
            Ok(())
        },
        check: Some((&["port", "socket"], |u| {
            if u.name.contains('@') {
                return Err(format!(
                    "a unit with instances may not have `@` in its file name (its instances are `{}@0`, `{}@1`, ...)",
                    u.name, u.name
                ));
            }
            if u.rare.instances.unwrap_or(1) > 1 && u.port != 0 {
                return Err(format!(
                    "instances would all serve on port {}: use `port = \"auto\"` (each instance gets its own)",
                    u.port
                ));
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
            u.rare.version = v
                .map(|v| {
                    let text = string(v)?;
                    super::parse::version_name(&text)?;
                    Ok::<_, String>(text)
                })
                .transpose()?;
            Ok(())
        },
        check: Some((&["exec"], |u| match &u.rare.version {
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
            u.rare.checksum = v.map(|v| checksum("md5", v)).transpose()?;
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
                u.rare.checksum = Some(checksum("sha256", v)?);
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
            u.rare.stats_interval_ms = match v.map(millis).transpose()? {
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
            u.rare.stdout = v.map_or(Ok(Output::Prefix), output)?;
            Ok(())
        },
        check: Some((&["instances"], |u| log_instance_needs_instances(u, &u.rare.stdout))),
        ..KEY
    },
    Key {
        name: "stderr",
        kind: "like `stdout`",
        default: "`\"prefix\"`",
        doc: "Where the service's standard error goes.",
        read: |u, v| {
            u.rare.stderr = v.map_or(Ok(Output::Prefix), output)?;
            Ok(())
        },
        check: Some((&["instances"], |u| log_instance_needs_instances(u, &u.rare.stderr))),
        ..KEY
    },
    Key {
        name: "log_ring_bytes",
        kind: "non-negative integer",
        default: "`262144` (256 KiB)",
        doc: "How many bytes of the service's latest output lines zurg keeps in memory for `zurg logs`.",
        read: |u, v| {
            u.rare.log_ring_bytes = match v {
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
        name: "ready",
        kind: "`\"notify\"`, or a table `{ fd = N }`, `{ tcp = PORT }`, `{ exec = [...] }`",
        default: "none (ready once started)",
        doc: "How the service tells zurg that it is ready.",
        read: |u, v| {
            u.rare.ready = v.map(super::probe::ready).transpose()?;
            Ok(())
        },
        check: Some((&["socket", "port", "type"], |u| match &u.rare.ready {
            Some(_) if u.kind == Kind::Oneshot => Err(ONESHOT_PROBE.into()),
            Some(Ready::Fd(3)) if u.socket => {
                Err("fd 3 is the listening socket with `socket = true`; pick another descriptor".into())
            }
            Some(r) if r.uses_unit_port() && u.port == 0 && !u.port_auto => {
                Err("\"$PORT\" needs the unit's `port` (a number, or \"auto\")".into())
            }
            Some(Ready::Tcp(p)) if connects_to_own_socket(u, *p) => Err(HELD_PORT.into()),
            _ => Ok(()),
        })),
        ..KEY
    },
    Key {
        name: "ready_timeout_ms",
        kind: "positive integer",
        default: "`90000` (90 s)",
        doc: "How long a start may take to become ready before it counts as a failed start.",
        read: |u, v| {
            u.rare.ready_timeout_ms = match v.map(millis).transpose()? {
                None => super::probe::DEFAULT_READY_TIMEOUT_MS,
                Some(0) => return Err("must be at least 1, found 0".to_string().into()),
                Some(n) => n,
            };
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "watchdog_ms",
        kind: "non-negative integer",
        default: "`0` (off)",
        doc: "A service that goes this long without sending `WATCHDOG=1` to its notify socket is restarted.",
        read: |u, v| {
            u.rare.watchdog_ms = match v.map(millis).transpose()? {
                None | Some(0) => None,
                Some(n) => Some(n),
            };
            Ok(())
        },
        check: Some((&["type"], |u| match u.rare.watchdog_ms {
            Some(_) if u.kind == Kind::Oneshot => Err(ONESHOT_PROBE.into()),
            _ => Ok(()),
        })),
        ..KEY
    },
    Key {
        name: "health",
        kind: "table `{ exec = [...] or tcp = PORT or http = URL, interval_ms, timeout_ms, retries, start_period_ms }`",
        default: "none",
        doc: "A check of a running service, repeated every `interval_ms`; after `retries` failures in a row the service is restarted.",
        read: |u, v| {
            u.rare.health = v.map(super::probe::health).transpose()?.map(Box::new);
            Ok(())
        },
        check: Some((&["port", "socket", "type"], |u| match &u.rare.health {
            Some(_) if u.kind == Kind::Oneshot => Err(ONESHOT_PROBE.into()),
            Some(h) if h.check.uses_unit_port() && u.port == 0 && !u.port_auto => {
                Err("\"$PORT\" needs the unit's `port` (a number, or \"auto\")".into())
            }
            Some(h) => match h.check {
                super::probe::Check::Tcp(p) if connects_to_own_socket(u, p) => {
                    Err(HELD_PORT.into())
                }
                _ => Ok(()),
            },
            None => Ok(()),
        })),
        ..KEY
    },
    Key {
        name: "user",
        kind: "user name or number",
        default: "zurg's own user",
        doc: "The user the service runs as.",
        read: |u, v| {
            u.rare.creds.user = v.map(|v| creds::id(v, "user")).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "group",
        kind: "group name or number",
        default: "the user's primary group",
        doc: "The group the service runs as.",
        read: |u, v| {
            u.rare.creds.group = v.map(|v| creds::id(v, "group")).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "supplementary_groups",
        kind: "array of group names or numbers",
        default: "the user's groups in /etc/group",
        doc: "More groups for the service, on top of its group.",
        read: |u, v| {
            u.rare.creds.supplementary_groups = v.map(group_list).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "umask",
        kind: "octal string (`\"027\"`) or integer (`0o027`)",
        default: "zurg's own (usually `\"022\"`)",
        doc: "The file mode creation mask of the service.",
        read: |u, v| {
            u.rare.creds.umask = v.map(creds::umask).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "nice",
        kind: "integer -20–19",
        default: "zurg's own",
        doc: "The service's scheduling priority (lower runs first).",
        read: |u, v| {
            u.rare.creds.nice = v.map(|v| creds::int_in(v, -20, 19)).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "oom_score_adj",
        kind: "integer -1000–1000",
        default: "zurg's own",
        doc: "How readily the kernel's OOM killer picks the service.",
        read: |u, v| {
            u.rare.creds.oom_score_adj = v.map(|v| creds::int_in(v, -1000, 1000)).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "no_new_privs",
        kind: "boolean",
        default: "`false`",
        doc: "The service and its children can never gain privileges through exec.",
        read: |u, v| {
            u.rare.creds.no_new_privs = v.map_or(Ok(false), boolean)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "rlimits",
        kind: "table of resource = number, `\"unlimited\"` or `[soft, hard]`",
        default: "`{}` (zurg's own)",
        doc: "Resource limits of the service (setrlimit).",
        read: |u, v| {
            u.rare.creds.rlimits = v.map_or(Ok(Vec::new()), creds::rlimits)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "capabilities",
        kind: "array of capability names",
        default: "none: capabilities are left alone",
        doc: "The only capabilities the service keeps, as ambient capabilities, also when `user` drops root.",
        read: |u, v| {
            u.rare.creds.capabilities = v.map(creds::capabilities).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "env_file",
        kind: "array of absolute paths, each optional with a leading `-`",
        default: "`[]`",
        doc: "Files of `KEY=VALUE` lines added to the environment at each start.",
        read: |u, v| {
            u.rare.creds.env_file = v.map_or(Ok(Vec::new()), creds::env_files)?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "pre_start",
        kind: "array of strings, absolute path first",
        default: "none",
        doc: "A command run to completion before every start of the service.",
        read: |u, v| {
            u.rare.pre_start = v.map(hook_command).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "post_stop",
        kind: "array of strings, absolute path first",
        default: "none",
        doc: "A command run after every exit of the service's process, before any restart.",
        read: |u, v| {
            u.rare.post_stop = v.map(hook_command).transpose()?;
            Ok(())
        },
        ..KEY
    },
    Key {
        name: "hook_timeout_ms",
        kind: "positive integer",
        default: "`30000`",
        doc: "How long `pre_start` or `post_stop` may run before it is killed.",
        read: |u, v| {
            u.rare.hook_timeout_ms = match v.map(millis).transpose()? {
                None => super::DEFAULT_HOOK_TIMEOUT_MS,
                Some(0) => return Err("must be at least 1".to_string().into()),
                Some(n) => n,
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
            u.rare.kill_mode = v.map(kill_mode).transpose()?;
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
            u.rare.limits.memory_max = v.map(size).transpose()?;
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
            u.rare.limits.memory_high = v.map(size).transpose()?;
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
            u.rare.limits.cpu_max = v
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
            u.rare.limits.pids_max = v.map(|v| bounded(v, 1, i64::MAX)).transpose()?;
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
            u.rare.limits.io_weight = v
                .map(|v| bounded(v, 1, 10_000).map(|n| u16::try_from(n).unwrap_or(100)))
                .transpose()?;
            Ok(())
        },
        ..KEY
    },
];

/// Why `ready`, `health` and `watchdog_ms` are refused on a one-shot: it
/// is ready, and done, when it exits successfully, and a probe or a
/// watchdog would only stop a slow run (a long migration) half-way.
const ONESHOT_PROBE: &str = "does not apply to type = \"oneshot\": a one-shot counts once it has completed, and a probe could only restart it half-way; remove the key, or use type = \"longrun\"";

/// With `socket = true` zurg itself listens on the unit's port, so a
/// connect there succeeds whether the service answers or not.
const HELD_PORT: &str = "a tcp probe of the unit's own port always passes with `socket = true` (zurg holds the listening socket); use notify, fd, exec or an http check";

fn connects_to_own_socket(u: &Unit, p: super::probe::ProbePort) -> bool {
    use super::probe::ProbePort;
    u.socket
        && match p {
            ProbePort::Unit => true,
            ProbePort::Fixed(n) => !u.port_auto && n == u.port,
        }
}

/// The key called `name`.
pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The unit before any key is read. Every field but `name` is a placeholder
/// that its key's default or value replaces, so these values never reach
/// a caller.
pub fn blank(name: &str) -> Unit {
    Unit {
        name: name.into(),
        exec: PathBuf::new().into(),
        args: Box::default(),
        depends_on: Box::default(),
        restart: RestartPolicy::Always,
        kind: Kind::Longrun,
        essential: false,
        stop_signal: DEFAULT_STOP_SIGNAL,
        stop_timeout_ms: DEFAULT_STOP_TIMEOUT_MS,
        port: 0,
        port_auto: false,
        socket: false,
        instance: None,
        rare: Default::default(),
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

/// `${NAME}`s of a value that zurg knows (see `vars.rs`).
fn vars_in(text: &str) -> Result<(), String> {
    super::vars::check(text)
}

/// Group names or numbers, every bad one reported.
fn group_list(v: &Value) -> Result<Vec<Id>, Bad> {
    let Value::Array(items) = v else {
        return Err(format!("expected an array of groups, found {}", type_name(v)).into());
    };
    let mut out = Vec::new();
    let mut wrong = Vec::new();
    for item in items {
        match creds::id(item, "group") {
            Ok(id) => out.push(id),
            Err(e) => wrong.push(e),
        }
    }
    if wrong.is_empty() {
        Ok(out)
    } else {
        Err(Bad::Wrong(wrong))
    }
}

/// A required key's value.
fn need(v: Option<&Value>) -> Result<&Value, Bad> {
    v.ok_or(Bad::Missing)
}

pub(super) fn type_name(v: &Value) -> &'static str {
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

pub(super) fn string(v: &Value) -> Result<String, String> {
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

/// A hook's command: a non-empty argv whose program is an absolute path
/// (like `exec`), every problem at once.
fn hook_command(v: &Value) -> Result<Vec<String>, Bad> {
    let argv = string_array(v)?;
    match argv.first() {
        None => Err("must name a command, found an empty array"
            .to_string()
            .into()),
        Some(first) if !first.starts_with('/') => {
            Err(format!("the command must start with an absolute path, found {first:?}").into())
        }
        Some(_) => Ok(argv),
    }
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
pub(super) fn string_array(v: &Value) -> Result<Vec<String>, Bad> {
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

/// Names of other units: every bad item's problem at once.
fn unit_names(v: &Value) -> Result<Vec<String>, Bad> {
    let names = string_array(v)?;
    let wrong: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| !super::parse::valid_service_name(n))
        .map(|(i, n)| {
            format!(
                "item {i} is not a unit name: {n:?} (a unit file's name without `.toml`: 1 to {} of A-Z a-z 0-9 _ . @ -)",
                super::parse::MAX_NAME_LEN
            )
        })
        .collect();
    if wrong.is_empty() {
        Ok(names)
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
            "file" => absolute_path(value).and_then(|p| {
                super::vars::check_known(&p.to_string_lossy(), &super::vars::LOG_PATH)?;
                out.path = p;
                have_path = true;
                Ok(())
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

fn kind(v: &Value) -> Result<Kind, String> {
    let s = string(v)?;
    Kind::ALL
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("expected \"longrun\" or \"oneshot\", found {s:?}"))
}

/// Every item's problem, not just the first; sorted, duplicates dropped.
fn exit_codes(v: &Value) -> Result<Vec<u8>, Bad> {
    let Value::Array(items) = v else {
        return Err(format!(
            "expected an array of exit codes like [0, 143], found {}",
            type_name(v)
        )
        .into());
    };
    let mut codes = Vec::with_capacity(items.len());
    let mut wrong = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::Integer(n) => match u8::try_from(*n) {
                Ok(c) => codes.push(c),
                Err(_) => wrong.push(format!("item {i} must be 0 to 255, found {n}")),
            },
            // A signal is never success: say so rather than "not an integer".
            Value::String(s) => wrong.push(format!(
                "item {i} must be an exit code 0 to 255, found {s:?} (a death by signal never counts as success)"
            )),
            other => wrong.push(format!(
                "item {i} must be an integer 0 to 255, found {}",
                type_name(other)
            )),
        }
    }
    if items.is_empty() {
        wrong.push("must list at least one exit code (nothing would ever succeed)".into());
    }
    if !wrong.is_empty() {
        return Err(Bad::Wrong(wrong));
    }
    codes.sort_unstable();
    codes.dedup();
    Ok(codes)
}

/// The integer fields of a small table (`backoff`, `start_limit`): each
/// field's value or its default, every problem at once, unknown fields
/// named.
fn int_fields<const N: usize>(v: &Value, fields: [(&str, u64, u64); N]) -> Result<[u64; N], Bad> {
    let names: Vec<&str> = fields.iter().map(|(name, _, _)| *name).collect();
    let Value::Table(table) = v else {
        return Err(format!(
            "expected a table {{ {} }}, found {}",
            names.join(", "),
            type_name(v)
        )
        .into());
    };
    let mut out = fields.map(|(_, default, _)| default);
    let mut wrong = Vec::new();
    for (key, value) in table {
        let Some(i) = names.iter().position(|n| n == key) else {
            wrong.push(format!(
                "`{key}` is not one of its fields ({})",
                names.join(", ")
            ));
            continue;
        };
        let min = fields.get(i).map_or(0, |(_, _, min)| *min);
        match value.as_integer().map(u64::try_from) {
            Some(Ok(n)) if n >= min => {
                if let Some(slot) = out.get_mut(i) {
                    *slot = n;
                }
            }
            _ => wrong.push(format!(
                "`{key}` must be an integer of at least {min}, found {value}"
            )),
        }
    }
    if wrong.is_empty() {
        Ok(out)
    } else {
        Err(Bad::Wrong(wrong))
    }
}

fn backoff(v: &Value) -> Result<BackoffSteps, Bad> {
    let d = BackoffSteps::default();
    let [initial_ms, max_ms] = int_fields(
        v,
        [("initial_ms", d.initial_ms, 1), ("max_ms", d.max_ms, 1)],
    )?;
    if max_ms < initial_ms {
        return Err(
            format!("`max_ms` ({max_ms}) must not be below `initial_ms` ({initial_ms})").into(),
        );
    }
    Ok(BackoffSteps { initial_ms, max_ms })
}

/// systemd's defaults (StartLimitBurst=5, StartLimitIntervalSec=10s) for a
/// field left out.
fn start_limit(v: &Value) -> Result<StartLimit, Bad> {
    let [burst, interval_ms] = int_fields(v, [("burst", 5, 1), ("interval_ms", 10_000, 1)])?;
    Ok(StartLimit {
        burst: u32::try_from(burst).unwrap_or(u32::MAX),
        interval_ms,
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
        _ => {
            let near = match v {
                Value::String(s) => nearest_signal(s),
                _ => None,
            };
            Err(match near {
                Some(n) => format!("unknown or unusable signal {v}; did you mean \"{n}\"?"),
                None => format!("unknown or unusable signal {v}"),
            })
        }
    }
}

/// The signal name closest to a mistyped one (`TREM`: `TERM`), by the same
/// rule as a mistyped key; the `SIG` prefix and case do not count.
fn nearest_signal(text: &str) -> Option<&'static str> {
    let upper = text.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let limit = (bare.chars().count() / 3).clamp(1, 3);
    crate::sig::names()
        .filter(|n| *n != "STOP")
        .map(|n| (edit_distance(bare, n), n))
        .filter(|(d, _)| *d > 0 && *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// `instances = N`: 1 to `MAX_INSTANCES`.
fn instances(v: &Value) -> Result<u32, String> {
    let max = super::MAX_INSTANCES;
    match v {
        Value::Integer(n) => u32::try_from(*n)
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("must be 1 to {max}, found {n}")),
        other => Err(format!("expected an integer, found {}", type_name(other))),
    }
}

/// `${INSTANCE}` has a value only in a unit with `instances`.
fn instance_needs_instances(u: &Unit) -> Result<(), String> {
    if u.rare.instances.is_some() {
        return Ok(());
    }
    let texts = u
        .args
        .iter()
        .chain(u.rare.env.values())
        .map(String::as_str)
        .chain(u.rare.cwd.as_deref().and_then(|c| c.to_str()));
    for t in texts {
        if super::vars::uses(t, "INSTANCE") {
            return Err("uses ${INSTANCE}, which only a unit with `instances = N` has".into());
        }
    }
    Ok(())
}

/// `${INSTANCE}` in a log file's path needs `instances` too.
fn log_instance_needs_instances(u: &Unit, out: &Output) -> Result<(), String> {
    match out {
        Output::File(f)
            if u.rare.instances.is_none()
                && super::vars::uses(&f.path.to_string_lossy(), "INSTANCE") =>
        {
            Err("`file` uses ${INSTANCE}, which only a unit with `instances = N` has".into())
        }
        _ => Ok(()),
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

    /// The "Errors" example of docs/units.md quotes the unknown-key message
    /// whole, so it goes stale whenever a key is added.
    #[test]
    fn docs_units_md_quotes_the_unknown_key_message_as_zurg_words_it() {
        let page = include_str!("../../docs/units.md");
        let want = format!("key `restrat`: {}", unknown("restrat"));
        assert!(page.contains(&want), "docs/units.md should say: {want}");
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
        assert_eq!(
            (u.rare.stdout.clone(), u.rare.stderr.clone()),
            (Output::Null, Output::Inherit)
        );
        let u = parse("stdout = { file = \"/var/log/a.log\", timestamps = true }").unwrap();
        assert_eq!(
            u.rare.stdout,
            Output::File(FileOutput {
                path: PathBuf::from("/var/log/a.log"),
                max_bytes: DEFAULT_LOG_MAX_BYTES,
                keep: DEFAULT_LOG_KEEP,
                timestamps: true,
            })
        );
        assert_eq!(u.rare.stderr, Output::Prefix);
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
        assert_eq!(nearest("frobnicate"), None);
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
        assert!(!unknown("frobnicate").contains("did you mean"));
    }

    #[test]
    fn depends_on_takes_unit_names() {
        let path = Path::new("/u/svc.toml");
        let parse = |text: &str| super::super::parse::parse_unit("svc", path, text);
        let u = parse("exec = \"/x\"\ndepends_on = [\"db\", \"migrate@1\"]\n").unwrap();
        assert_eq!(*u.depends_on, ["db", "migrate@1"]);
        assert!(parse("exec = \"/x\"\n").unwrap().depends_on.is_empty());
        let err = parse("exec = \"/x\"\ndepends_on = [\"db\", \"a b\", 3, \".x\"]\n")
            .unwrap_err()
            .to_string();
        let want = "svc.toml:2:14: key `depends_on`: item 2 must be a string, found an integer";
        assert!(err.contains(want), "{want} in {err}");
        let err = parse("exec = \"/x\"\ndepends_on = [\"db\", \"a b\", \".x\"]\n")
            .unwrap_err()
            .to_string();
        for want in [
            "svc.toml:2:14: key `depends_on`: item 1 is not a unit name: \"a b\"",
            "key `depends_on`: item 2 is not a unit name: \".x\"",
        ] {
            assert!(err.contains(want), "{want} in {err}");
        }
        let err = parse("exec = \"/x\"\ndepends_on = \"db\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected an array of strings, found a string"),
            "{err}"
        );
    }

    #[test]
    fn log_ring_bytes_takes_a_byte_count() {
        let path = Path::new("/u/svc.toml");
        let parse = |text: &str| super::super::parse::parse_unit("svc", path, text);
        let u = parse("exec = \"/x\"\nlog_ring_bytes = 1024\n").unwrap();
        assert_eq!(u.rare.log_ring_bytes, 1024);
        assert_eq!(
            parse("exec = \"/x\"\n").unwrap().rare.log_ring_bytes,
            crate::unit::DEFAULT_LOG_RING_BYTES
        );
        assert_eq!(
            parse("exec = \"/x\"\nlog_ring_bytes = 0\n")
                .unwrap()
                .rare
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
    fn service_model_keys_read_and_report_every_problem() {
        let path = Path::new("/u/svc.toml");
        let parse = |extra: &str| {
            super::super::parse_unit("svc", path, &format!("exec = \"/x\"\n{extra}\n"))
        };
        let u = parse(
            "type = \"oneshot\"\nsuccess_exit_codes = [3, 0, 3]\nessential = true\n\
             backoff = { initial_ms = 50 }\nstart_limit = { burst = 2 }",
        )
        .unwrap();
        assert_eq!(u.kind, Kind::Oneshot);
        assert_eq!(*u.rare.success_exit_codes, [0, 3]);
        assert!(u.essential);
        assert_eq!(
            u.rare.backoff,
            BackoffSteps {
                initial_ms: 50,
                max_ms: 30_000
            }
        );
        assert_eq!(
            u.rare.start_limit,
            Some(StartLimit {
                burst: 2,
                interval_ms: 10_000
            })
        );
        let plain = parse("").unwrap();
        assert_eq!(plain.kind, Kind::Longrun);
        assert_eq!(plain.rare.start_limit, None);
        assert!(!plain.essential);
        for (text, wants) in [
            (
                "type = \"daemon\"",
                &["2:8: key `type`: expected \"longrun\" or \"oneshot\", found \"daemon\""][..],
            ),
            (
                "success_exit_codes = [0, 256, \"TERM\", -1]",
                &[
                    "item 1 must be 0 to 255, found 256",
                    "item 2 must be an exit code 0 to 255, found \"TERM\" (a death by signal never counts as success)",
                    "item 3 must be 0 to 255, found -1",
                ][..],
            ),
            ("success_exit_codes = []", &["must list at least one exit code"][..]),
            (
                "backoff = { initial_ms = 0, max = 3 }",
                &[
                    "`initial_ms` must be an integer of at least 1, found 0",
                    "`max` is not one of its fields (initial_ms, max_ms)",
                ][..],
            ),
            (
                "backoff = { initial_ms = 500, max_ms = 100 }",
                &["`max_ms` (100) must not be below `initial_ms` (500)"][..],
            ),
            (
                "start_limit = 5",
                &["expected a table { burst, interval_ms }, found an integer"][..],
            ),
            (
                "start_limit = { burst = 0, interval_ms = \"10s\" }",
                &[
                    "`burst` must be an integer of at least 1, found 0",
                    "`interval_ms` must be an integer of at least 1, found \"10s\"",
                ][..],
            ),
            ("essential = \"yes\"", &["key `essential`: expected true or false"][..]),
        ] {
            let err = parse(text).unwrap_err().to_string();
            for want in wants {
                assert!(err.contains(want), "{text}: {want} in {err}");
            }
        }
    }

    #[test]
    fn readiness_and_health_keys_refuse_what_cannot_work() {
        let path = Path::new("/u/svc.toml");
        let parse = |extra: &str| {
            super::super::parse_unit("svc", path, &format!("exec = \"/x\"\n{extra}\n"))
        };
        let u = parse("port = 8080\nready = { tcp = \"$PORT\" }\nready_timeout_ms = 500\nwatchdog_ms = 2000\nhealth = { http = \"http://127.0.0.1:$PORT/health\" }").unwrap();
        assert_eq!(
            u.rare.ready,
            Some(Ready::Tcp(super::super::probe::ProbePort::Unit))
        );
        assert_eq!(
            (u.rare.ready_timeout_ms, u.rare.watchdog_ms),
            (500, Some(2000))
        );
        assert!(u.rare.health.is_some());
        for (text, want) in [
            (
                "port = 80\nsocket = true\nready = { fd = 3 }",
                "svc.toml:4:9: key `ready`: fd 3 is the listening socket",
            ),
            (
                "ready = { tcp = \"$PORT\" }",
                "key `ready`: \"$PORT\" needs the unit's `port`",
            ),
            (
                "health = { tcp = \"$PORT\" }",
                "key `health`: \"$PORT\" needs the unit's `port`",
            ),
            (
                "ready_timeout_ms = 0",
                "key `ready_timeout_ms`: must be at least 1",
            ),
            (
                "port = 8080\nsocket = true\nready = { tcp = 8080 }",
                "key `ready`: a tcp probe of the unit's own port always passes",
            ),
            (
                "port = \"auto\"\nsocket = true\nhealth = { tcp = \"$PORT\" }",
                "key `health`: a tcp probe of the unit's own port always passes",
            ),
            (
                "ready = { fd = 1 }",
                "key `ready`: `fd` must be a descriptor number of at least 3",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        // fd 3 is free without a socket
        assert_eq!(
            parse("ready = { fd = 3 }").unwrap().rare.ready,
            Some(Ready::Fd(3))
        );
    }

    #[test]
    fn identity_and_limit_keys_read_their_values() {
        use super::creds::{EnvFile, Resource, Rlimit, UNLIMITED};
        let path = Path::new("/u/svc.toml");
        let text = "exec = \"/x\"\nuser = \"www-data\"\ngroup = 33\n\
            supplementary_groups = [\"ssl-cert\", 4]\numask = \"027\"\nnice = -5\n\
            oom_score_adj = -100\nno_new_privs = true\n\
            rlimits = { nofile = 65536, core = \"unlimited\", nproc = [512, 1024] }\n\
            capabilities = [\"CAP_NET_BIND_SERVICE\", \"net_bind_service\", \"KILL\"]\n\
            env_file = [\"/etc/default/web\", \"-/etc/default/web.local\"]\n";
        let c = super::super::parse_unit("svc", path, text)
            .unwrap()
            .rare
            .creds
            .clone();
        assert_eq!(c.user, Some(Id::Name("www-data".into())));
        assert_eq!(c.group, Some(Id::Num(33)));
        assert_eq!(
            c.supplementary_groups,
            Some(vec![Id::Name("ssl-cert".into()), Id::Num(4)])
        );
        assert_eq!(
            (c.umask, c.nice, c.oom_score_adj),
            (Some(0o27), Some(-5), Some(-100))
        );
        assert!(c.no_new_privs);
        assert_eq!(
            c.rlimits,
            [
                Rlimit {
                    resource: Resource::Core,
                    soft: UNLIMITED,
                    hard: UNLIMITED
                },
                Rlimit {
                    resource: Resource::Nofile,
                    soft: 65536,
                    hard: 65536
                },
                Rlimit {
                    resource: Resource::Nproc,
                    soft: 512,
                    hard: 1024
                },
            ]
        );
        assert_eq!(c.capabilities, Some(vec![5, 10]));
        assert_eq!(
            c.env_file,
            [
                EnvFile {
                    path: "/etc/default/web".into(),
                    optional: false
                },
                EnvFile {
                    path: "/etc/default/web.local".into(),
                    optional: true
                },
            ]
        );
        assert_eq!(
            super::super::parse_unit("svc", path, "exec = \"/x\"\numask = 0o077\n")
                .unwrap()
                .rare
                .creds
                .umask,
            Some(0o77)
        );
        let err = super::super::parse_unit(
            "svc",
            path,
            "exec = \"/x\"\nuser = \"\"\nrlimits = { files = 1, nofile = -1 }\n\
             capabilities = [\"NOPE\", 3]\nargs = [\"${SERVICE}\", \"${INSTANCE}\"]\n",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "2:8: key `user`: empty user name",
            "3:11: key `rlimits`: unknown limit `files`",
            "3:11: key `rlimits`: `nofile` must not be negative, found -1",
            "key `capabilities`: item 1 must be a string",
            "5:8: key `args`: uses ${INSTANCE}, which only a unit with `instances = N` has",
        ] {
            assert!(err.contains(want), "{want} in {err}");
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
        assert_eq!(u.rare.limits.memory_max, Some(64 << 20));
        assert_eq!(u.rare.limits.memory_high, Some(1 << 20));
        assert_eq!(u.rare.limits.cpu_max.map(|c| c.quota_us), Some(50_000));
        assert_eq!(u.rare.limits.pids_max, Some(32));
        assert_eq!(u.rare.limits.io_weight, Some(200));
        assert_eq!(u.rare.kill_mode, Some(crate::cgroup::KillMode::Main));
        let plain = parse("").unwrap();
        assert!(plain.rare.limits.is_empty() && plain.rare.kill_mode.is_none());
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

    #[test]
    fn instances_are_bounded_and_refuse_what_would_clash() {
        let path = std::path::Path::new("/u/web.toml");
        let parse = |name: &str, text: &str| {
            super::super::parse_unit(name, path, &format!("exec = \"/x\"\n{text}"))
        };
        let u = parse(
            "web",
            "instances = 3\nport = \"auto\"\nargs = [\"${INSTANCE}\"]",
        )
        .unwrap();
        assert_eq!((u.rare.instances, u.instance), (Some(3), None));
        assert!(parse("web", "instances = 1\nport = 8080").is_ok());
        for (name, text, want) in [
            (
                "web",
                "instances = 0",
                "2:13: key `instances`: must be 1 to 1024, found 0",
            ),
            ("web", "instances = 1025", "must be 1 to 1024, found 1025"),
            (
                "web",
                "instances = \"3\"",
                "expected an integer, found a string",
            ),
            (
                "web",
                "instances = 2\nport = 80",
                "instances would all serve on port 80",
            ),
            (
                "web@1",
                "instances = 2",
                "may not have `@` in its file name",
            ),
            (
                "web",
                "env = { A = \"${INSTANCE}\" }",
                "key `env`: uses ${INSTANCE}",
            ),
            (
                "web",
                "cwd = \"/srv/${INSTANCE}\"",
                "key `cwd`: uses ${INSTANCE}",
            ),
        ] {
            let e = parse(name, text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {want} in {e}");
        }
    }

    #[test]
    fn hook_keys_read_and_refuse_bad_values_with_their_place() {
        let path = Path::new("/u/svc.toml");
        let parse = |extra: &str| {
            super::super::parse_unit("svc", path, &format!("exec = \"/x\"\n{extra}\n"))
        };
        let u = parse(
            "pre_start = [\"/bin/sh\", \"-c\", \"true\"]\npost_stop = [\"/bin/true\"]\nhook_timeout_ms = 500",
        )
        .unwrap();
        assert_eq!(
            u.rare.pre_start,
            Some(vec!["/bin/sh".into(), "-c".into(), "true".into()])
        );
        assert_eq!(u.rare.post_stop, Some(vec!["/bin/true".into()]));
        assert_eq!(u.rare.hook_timeout_ms, 500);
        let plain = parse("").unwrap();
        assert_eq!(
            (&plain.rare.pre_start, &plain.rare.post_stop),
            (&None, &None)
        );
        assert_eq!(
            plain.rare.hook_timeout_ms,
            crate::unit::DEFAULT_HOOK_TIMEOUT_MS
        );
        for (text, want) in [
            (
                "pre_start = [\"sh\", \"-c\"]",
                "2:13: key `pre_start`: the command must start with an absolute path, found \"sh\"",
            ),
            ("post_stop = []", "key `post_stop`: must name a command"),
            ("post_stop = \"/bin/true\"", "expected an array of strings"),
            ("pre_start = [\"/bin/x\", 3]", "item 1 must be a string"),
            (
                "hook_timeout_ms = 0",
                "key `hook_timeout_ms`: must be at least 1",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{want} in {err}");
        }
    }
}
