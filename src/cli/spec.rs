//! The one declaration of zurg's command line: every verb with its
//! arguments, summary and options (name, short form, value, default, help
//! line). Help text, shell completions and the man page are all rendered
//! from this table (`cli::render`), so none of them can drift from another;
//! a unit test holds the lexopt parsers to it in both directions. Pure data
//! and lookups: no I/O.

use super::{DEFAULT_SOCKET, DEFAULT_STATE_DIR};

/// One option of a verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt {
    /// Without the leading `--`.
    pub long: &'static str,
    pub short: Option<char>,
    /// Placeholder of the option's value; `None` for a flag.
    pub value: Option<&'static str>,
    /// What applies when the option is not given, as the user would write it.
    pub default: Option<&'static str>,
    pub help: &'static str,
}

/// Which code handles a verb: `main` dispatches on this, never on the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    /// `zurg [OPTIONS] -- CMD`, the entry without a verb.
    Shim,
    Run,
    /// One request over the control socket (`cli::client`).
    Client,
    Check,
    Publisher,
    Resolve,
    Help,
    Completions,
    Man,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerbSpec {
    /// Empty for the shim entry.
    pub name: &'static str,
    /// Positional arguments, as in a synopsis.
    pub args: &'static str,
    pub summary: &'static str,
    pub face: Face,
    pub opts: &'static [Opt],
}

const fn flag(long: &'static str, help: &'static str) -> Opt {
    Opt {
        long,
        short: None,
        value: None,
        default: None,
        help,
    }
}

const fn valued(long: &'static str, value: &'static str, help: &'static str) -> Opt {
    Opt {
        long,
        short: None,
        value: Some(value),
        default: None,
        help,
    }
}

const fn short(o: Opt, c: char) -> Opt {
    Opt {
        short: Some(c),
        ..o
    }
}

const fn default(o: Opt, d: &'static str) -> Opt {
    Opt {
        default: Some(d),
        ..o
    }
}

// Defaults shown in help are written out here, and a unit test checks them
// against the constants the parsers use.
const GRACE_DEFAULT: &str = "5s";
const PUBLISH_QUEUE_DEFAULT: &str = "10000";
const JOURNAL_SIZE_DEFAULT: &str = "8M";
const UPGRADE_WINDOW_DEFAULT: &str = "2s";
const WAIT_TIMEOUT_DEFAULT: &str = "90s";
const SOCKET_DEFAULT: &str = "$ZURG_SOCKET, else /run/zurg/control.sock";

// How long the answer is waited for: the stop itself still sends SIGKILL at
// each unit's stop_timeout_ms, whatever these say.
const STOP_TIMEOUT: Opt = default(
    valued(
        "timeout",
        "DUR",
        "how long to wait for the services to be down before giving up (exit 1); SIGKILL still comes at each unit's stop_timeout_ms",
    ),
    "the longest stop_timeout_ms plus 5s; with dependants stopped first, the sum of theirs plus 5s",
);
const RESTART_TIMEOUT: Opt = default(
    valued(
        "timeout",
        "DUR",
        "how long to wait for each service to be back (ready, a one-shot done) before giving up (exit 1); the restart goes on, and SIGKILL still comes at each unit's stop_timeout_ms",
    ),
    "the longest stop_timeout_ms plus 5s, plus the start's (90s, or the longest ready_timeout_ms plus 5s); with --no-block, the longest stop_timeout_ms plus 5s",
);
const START_TIMEOUT: Opt = default(
    valued(
        "timeout",
        "DUR",
        "how long to wait for the outcome before giving up (exit 1); the start goes on",
    ),
    "90s, or the longest ready_timeout_ms plus 5s if longer",
);
const NO_BLOCK: Opt = flag(
    "no-block",
    "answer once the request is under way (restart: once each runs again), without waiting until each is ready or a one-shot done",
);
const REMOTE_PUBLISHER: Opt = valued(
    "publisher",
    "HOST:PORT[,...]",
    "run it on another host through this publisher (with --host H), the next one when it cannot be reached; also before the verb",
);
const REMOTE_HOST: Opt = valued(
    "host",
    "H",
    "with --publisher: the host (its address, hostname or zurg GPID); it must allow the verb (zurg run --publish-control)",
);
const OPERATOR_TOKEN: Opt = valued(
    "operator-token-file",
    "FILE",
    "with --publisher: the operator token (never the host token)",
);
const JSON: Opt = flag("json", "print the raw JSON answer, one document per line");
const SOCKET: Opt = default(
    valued("socket", "PATH", "the control socket of the zurg to ask"),
    SOCKET_DEFAULT,
);
const TIMESTAMPS: Opt = default(
    flag(
        "log-timestamps",
        "start zurg's own log lines with an RFC 3339 UTC time",
    ),
    "on when stderr is not a terminal",
);
const NO_TIMESTAMPS: Opt = flag("no-log-timestamps", "log lines without a time");

pub const SHIM: VerbSpec = VerbSpec {
    name: "",
    args: "[--] CMD [ARGS...]",
    summary: "run CMD as a child init (like tini): forward signals, reap orphans, exit with CMD's code or 128+signal",
    face: Face::Shim,
    opts: &[
        short(
            flag(
                "pgroup",
                "put CMD in its own process group and signal the whole group",
            ),
            'g',
        ),
        short(
            flag(
                "single-child",
                "signal CMD alone, never its group (the default; overrides TINI_KILL_PROCESS_GROUP), as dumb-init -c",
            ),
            'c',
        ),
        short(
            valued(
                "rewrite",
                "FROM:TO",
                "forward signal FROM as TO (names or numbers; repeatable), e.g. TERM:QUIT; TO 0 drops FROM, as dumb-init -r",
            ),
            'r',
        ),
        default(
            valued(
                "grace",
                "DUR",
                "time left descendants get between SIGTERM and SIGKILL",
            ),
            GRACE_DEFAULT,
        ),
        short(
            valued(
                "remap-exit",
                "CODE",
                "exit 0 when CMD exits with CODE (128+N for signal N; repeatable), as tini -e",
            ),
            'e',
        ),
        short(
            valued(
                "parent-death-signal",
                "SIG",
                "have the kernel send zurg SIG when zurg's parent dies; forwarded to CMD like any signal, as tini -p",
            ),
            'p',
        ),
        short(
            flag(
                "warn-reap",
                "log each process zurg reaps that is not CMD, as tini -w",
            ),
            'w',
        ),
        short(flag("verbose", "log what happens to CMD and its orphans"), 'v'),
        TIMESTAMPS,
        NO_TIMESTAMPS,
        short(flag("version", "print zurg's version"), 'V'),
    ],
};

/// `-s` is accepted for tini's command lines and does nothing (zurg always
/// becomes a subreaper); it is not offered anywhere.
pub const SHIM_HIDDEN_SHORTS: &[char] = &['s'];

pub const VERBS: &[VerbSpec] = &[
    VerbSpec {
        name: "run",
        args: "",
        summary: "supervise the services described by DIR/*.toml",
        face: Face::Run,
        opts: &[
            short(
                valued(
                    "units",
                    "DIR",
                    "the units directory (required, except as PID 1 without arguments: /etc/zurg/units)",
                ),
                'u',
            ),
            default(
                valued("socket", "PATH", "where to serve the control socket"),
                DEFAULT_SOCKET,
            ),
            default(
                valued(
                    "state",
                    "DIR",
                    "where the journal and upgrade overrides are kept",
                ),
                DEFAULT_STATE_DIR,
            ),
            default(
                valued(
                    "grace",
                    "DUR",
                    "at shutdown, time orphans get between SIGTERM and SIGKILL",
                ),
                GRACE_DEFAULT,
            ),
            valued(
                "readers",
                "GROUP",
                "members of GROUP may use the socket for read-only verbs",
            ),
            default(
                valued("host-ip", "IP", "the address written into GPIDs"),
                "the default route's interface address",
            ),
            flag("strict", "refuse units without a version and a checksum"),
            default(
                valued(
                    "cgroup",
                    "PATH",
                    "the cgroup2 directory whose subtree zurg manages (services' cgroups, limits, kill_mode \"cgroup\")",
                ),
                "zurg's own cgroup, when it is alone in it",
            ),
            valued(
                "publish",
                "HOST:PORT[,...]",
                "push lifecycle events to these publishers, in turn on failure",
            ),
            valued(
                "publish-token-file",
                "FILE",
                "shared secret for the publisher's challenge",
            ),
            valued(
                "publish-control",
                "VERBS",
                "let the publisher's operators run these verbs here (status,restart,stop,start,signal,upgrade,rollback); none by default",
            ),
            default(
                valued(
                    "publish-queue",
                    "N",
                    "unacknowledged publish events kept in memory",
                ),
                PUBLISH_QUEUE_DEFAULT,
            ),
            default(
                valued(
                    "journal-size",
                    "SIZE",
                    "bytes of history per journal file before it rotates (one old file kept); at least 4K",
                ),
                JOURNAL_SIZE_DEFAULT,
            ),
            TIMESTAMPS,
            NO_TIMESTAMPS,
        ],
    },
    VerbSpec {
        name: "status",
        args: "[NAME...]",
        summary: "one row per service: state, pid, uptime, ready time, restarts, last exit; exits 1 when a service is failed or restarting after a failure, or a unit file was rejected (for HEALTHCHECK)",
        face: Face::Client,
        opts: &[JSON, SOCKET, REMOTE_PUBLISHER, REMOTE_HOST, OPERATOR_TOKEN, flag("all-hosts", "with --publisher: every connected host's services, with a HOST column")],
    },
    VerbSpec {
        name: "start",
        args: "NAME...",
        summary: "start services, and wait until each is ready (a one-shot: done); exits 1 if one fails, or at the timeout",
        face: Face::Client,
        opts: &[
            NO_BLOCK,
            START_TIMEOUT,
            JSON,
            SOCKET,
            REMOTE_PUBLISHER,
            REMOTE_HOST,
            OPERATOR_TOKEN,
        ],
    },
    VerbSpec {
        name: "stop",
        args: "NAME...",
        summary: "stop services, and wait until they are down",
        face: Face::Client,
        opts: &[STOP_TIMEOUT, JSON, SOCKET, REMOTE_PUBLISHER, REMOTE_HOST, OPERATOR_TOKEN],
    },
    VerbSpec {
        name: "restart",
        args: "NAME...",
        summary: "restart services, and wait until each is ready again (a one-shot: done)",
        face: Face::Client,
        opts: &[
            NO_BLOCK,
            RESTART_TIMEOUT,
            JSON,
            SOCKET,
            REMOTE_PUBLISHER,
            REMOTE_HOST,
            OPERATOR_TOKEN,
        ],
    },
    VerbSpec {
        name: "wait",
        args: "NAME...",
        summary: "wait until services are ready (a one-shot: done) or down; exits 1 as soon as one cannot get there, 124 at the timeout",
        face: Face::Client,
        opts: &[
            flag("ready", "wait until each is ready, a one-shot until it is done (the default)"),
            flag("down", "wait until each is down and not about to start by itself"),
            default(
                valued("timeout", "DUR", "give up after DUR (exit 124)"),
                WAIT_TIMEOUT_DEFAULT,
            ),
            JSON,
            SOCKET,
        ],
    },
    VerbSpec {
        name: "signal",
        args: "NAME SIGNAL",
        summary: "send a signal to a service's main process",
        face: Face::Client,
        opts: &[JSON, SOCKET, REMOTE_PUBLISHER, REMOTE_HOST, OPERATOR_TOKEN],
    },
    VerbSpec {
        name: "reload",
        args: "",
        summary: "re-read the units directory and apply the changes",
        face: Face::Client,
        opts: &[JSON, SOCKET],
    },
    VerbSpec {
        name: "events",
        args: "",
        summary: "recent lifecycle events; --follow streams them",
        face: Face::Client,
        opts: &[
            short(
                flag(
                    "follow",
                    "keep streaming events until zurg stops (exit 0 then)",
                ),
                'f',
            ),
            JSON,
            SOCKET,
        ],
    },
    VerbSpec {
        name: "shutdown",
        args: "",
        summary: "stop everything and exit, as SIGTERM does",
        face: Face::Client,
        opts: &[
            flag("poweroff", "as a machine's init, power off afterwards"),
            flag("reboot", "as a machine's init, reboot afterwards"),
            JSON,
            SOCKET,
        ],
    },
    VerbSpec {
        name: "version",
        args: "",
        summary: "the running zurg's version, pid, GPID and publishing state",
        face: Face::Client,
        opts: &[JSON, SOCKET],
    },
    VerbSpec {
        name: "gpid",
        args: "NAME",
        summary: "the GPID of a service's current process",
        face: Face::Client,
        opts: &[JSON, SOCKET],
    },
    VerbSpec {
        name: "stats",
        args: "[NAME...]",
        summary: "CPU, memory, threads, fds and I/O per service's process tree",
        face: Face::Client,
        opts: &[JSON, SOCKET],
    },
    VerbSpec {
        name: "history",
        args: "[NAME]",
        summary: "starts and exits, across zurg restarts",
        face: Face::Client,
        opts: &[
            default(valued("since", "DUR", "only records newer than DUR ago"), "all"),
            valued(
                "state",
                "DIR",
                "when no zurg answers, read the journal in DIR directly",
            ),
            valued(
                "publisher",
                "HOST:PORT[,...]",
                "ask this publisher's journal (`zurg publisher --journal`): every host's history; the next one when it cannot be reached",
            ),
            valued(
                "host",
                "H",
                "with --publisher: only the host with this address or zurg GPID",
            ),
            valued(
                "token-file",
                "FILE",
                "with --publisher: shared secret, when the publisher asks for one",
            ),
            JSON,
            SOCKET,
        ],
    },
    VerbSpec {
        name: "logs",
        args: "[NAME]",
        summary: "a service's latest output lines (every service's, prefixed, without NAME)",
        face: Face::Client,
        opts: &[
            short(
                default(
                    valued("lines", "N", "only the last N lines"),
                    "all that the ring holds",
                ),
                'n',
            ),
            default(valued("since", "DUR", "only lines newer than DUR ago"), "all"),
            short(
                flag(
                    "follow",
                    "then stream new lines until zurg stops (exit 0 then)",
                ),
                'f',
            ),
            flag(
                "json",
                "one JSON object per line: service, stream, time, text (and bytes_b64 when not UTF-8)",
            ),
            SOCKET,
        ],
    },
    VerbSpec {
        name: "upgrade",
        args: "NAME",
        summary: "verify a new build, restart on it, roll back if it fails",
        face: Face::Client,
        opts: &[
            valued("version", "V", "the version to run (required)"),
            valued("md5", "SUM", "the new binary's MD5"),
            valued("sha256", "SUM", "the new binary's SHA-256"),
            default(
                valued("exec", "PATH", "the new binary"),
                "the current exec with its version component replaced",
            ),
            default(
                valued(
                    "window",
                    "DUR",
                    "the new build must stay up this long, else roll back",
                ),
                UPGRADE_WINDOW_DEFAULT,
            ),
            JSON,
            SOCKET, REMOTE_PUBLISHER, REMOTE_HOST, OPERATOR_TOKEN],
    },
    VerbSpec {
        name: "rollback",
        args: "NAME",
        summary: "go back to a service's previous build",
        face: Face::Client,
        opts: &[JSON, SOCKET, REMOTE_PUBLISHER, REMOTE_HOST, OPERATOR_TOKEN],
    },
    VerbSpec {
        name: "check",
        args: "",
        summary: "validate unit files offline, as `zurg run` would",
        face: Face::Check,
        opts: &[
            default(
                short(valued("units", "DIR", "the units directory"), 'u'),
                super::DEFAULT_UNITS_DIR,
            ),
            flag("strict", "as `zurg run --strict`: units need a version and a checksum"),
            flag("json", "one JSON document with every problem"),
        ],
    },
    VerbSpec {
        name: "resolve",
        args: "NAME|--all",
        summary: "print where a service runs now, and follow its changes; exits 1 when NAME has no live endpoint",
        face: Face::Resolve,
        opts: &[
            flag("all", "every name with its endpoints, and the hosts that run them"),
            short(
                flag("watch", "keep streaming every change as it happens"),
                'w',
            ),
            flag(
                "json",
                "JSON output, one document per line (one per change with --watch)",
            ),
            default(
                valued(
                    "publisher",
                    "HOST:PORT[,...]",
                    "the publishers to ask, in turn: a watch moves to the next when one stops or is lost",
                ),
                "$ZURG_PUBLISHER",
            ),
            valued(
                "token-file",
                "FILE",
                "shared secret, when the publisher asks for one",
            ),
            default(
                valued("timeout", "DUR", "give up on an unresponsive publisher"),
                "5s",
            ),
        ],
    },
    VerbSpec {
        name: "publisher",
        args: "",
        summary: "serve the naming registry that `zurg run --publish` feeds",
        face: Face::Publisher,
        opts: &[
            valued(
                "listen",
                "ADDR",
                "IP:PORT to serve forwarders and resolve clients on, e.g. 0.0.0.0:7300 (required)",
            ),
            valued(
                "etcd",
                "URL[,URL...]",
                "keep the registry in etcd (a build with --features etcd)",
            ),
            default(valued("prefix", "P", "etcd key prefix"), "/zurg"),
            default(
                valued(
                    "lease-ms",
                    "N",
                    "a host silent this long loses its endpoints",
                ),
                "10000",
            ),
            valued(
                "token-file",
                "FILE",
                "shared secret; peers must prove they know it",
            ),
            valued(
                "http",
                "ADDR",
                "serve the live status page and its JSON API (loopback, or any address with --token-file)",
            ),
            valued(
                "journal",
                "DIR",
                "keep every host's starts and exits in DIR/journal (8 MiB, then rotated to journal.1), for `zurg history --publisher`",
            ),
            valued(
                "operator-token-file",
                "FILE",
                "operators proving this secret may run control requests on hosts that allow them; remote control is off without it",
            ),
        ],
    },
    VerbSpec {
        name: "help",
        args: "[VERB]",
        summary: "this overview, or one verb's arguments and options",
        face: Face::Help,
        opts: &[],
    },
    VerbSpec {
        name: "completions",
        args: "bash|zsh|fish",
        summary: "print a shell completion script",
        face: Face::Completions,
        opts: &[],
    },
    VerbSpec {
        name: "man",
        args: "",
        summary: "print the manual page (roff); read it with `zurg man | man -l -`",
        face: Face::Man,
        opts: &[],
    },
];

/// The shells `zurg completions` knows.
pub const SHELLS: &[&str] = &["bash", "zsh", "fish"];

pub fn verb(name: &str) -> Option<&'static VerbSpec> {
    VERBS.iter().find(|v| v.name == name)
}

/// Edit distance counting a swap of two neighbours as one edit (optimal
/// string alignment), for "did you mean": `stauts` is one edit from `status`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len().saturating_add(1);
    let mut d = vec![0usize; a.len().saturating_add(1).saturating_mul(w)];
    let at = |i: usize, j: usize| i.saturating_mul(w).saturating_add(j);
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            let v = if i == 0 || j == 0 {
                i.max(j)
            } else {
                let get = |i: usize, j: usize| d.get(at(i, j)).copied().unwrap_or(usize::MAX);
                let (ca, cb) = (a.get(i - 1), b.get(j - 1));
                let cost = usize::from(ca != cb);
                let mut best = get(i - 1, j - 1)
                    .saturating_add(cost)
                    .min(get(i - 1, j).saturating_add(1))
                    .min(get(i, j - 1).saturating_add(1));
                if i > 1 && j > 1 && ca == b.get(j - 2) && a.get(i - 2) == cb {
                    best = best.min(get(i - 2, j - 2).saturating_add(1));
                }
                best
            };
            if let Some(cell) = d.get_mut(at(i, j)) {
                *cell = v;
            }
        }
    }
    d.last().copied().unwrap_or(0)
}

/// The verb nearest to a mistyped word, if one is near enough to be a
/// plausible typo (at most a third of the word's letters off).
pub fn nearest_verb(word: &str) -> Option<&'static str> {
    let limit = (word.chars().count() / 3).max(1);
    VERBS
        .iter()
        .map(|v| (distance(word, v.name), v.name))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::super::{DEFAULT_GRACE_MS, DEFAULT_PUBLISH_QUEUE};
    use super::*;

    #[test]
    fn typos_find_their_verb() {
        assert_eq!(nearest_verb("stauts"), Some("status"));
        assert_eq!(nearest_verb("stats"), Some("stats"));
        assert_eq!(nearest_verb("restrat"), Some("restart"));
        assert_eq!(nearest_verb("hepl"), Some("help"));
        assert_eq!(nearest_verb("histroy"), Some("history"));
        assert_eq!(nearest_verb("logz"), Some("logs"));
        assert_eq!(nearest_verb("kubernetes"), None);
    }

    #[test]
    fn distances() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("same", "same"), 0);
        assert_eq!(distance("stauts", "status"), 1);
    }

    #[test]
    fn shown_defaults_match_the_parsers() {
        assert_eq!(
            super::super::parse_duration_ms(GRACE_DEFAULT),
            Some(DEFAULT_GRACE_MS)
        );
        assert_eq!(PUBLISH_QUEUE_DEFAULT, DEFAULT_PUBLISH_QUEUE.to_string());
        assert_eq!(
            crate::cgroup::parse_size(JOURNAL_SIZE_DEFAULT),
            Ok(crate::journal::DEFAULT_LIMIT)
        );
        assert!(SOCKET_DEFAULT.ends_with(DEFAULT_SOCKET));
        assert_eq!(
            super::super::parse_duration_ms(UPGRADE_WINDOW_DEFAULT),
            Some(crate::supervisor::upgrade::DEFAULT_WINDOW_MS)
        );
        assert_eq!(
            super::super::parse_duration_ms(WAIT_TIMEOUT_DEFAULT),
            Some(crate::supervisor::DEFAULT_WAIT_MS)
        );
    }

    fn shown_default(verb_name: &str, long: &str) -> &'static str {
        verb(verb_name)
            .and_then(|v| v.opts.iter().find(|o| o.long == long))
            .and_then(|o| o.default)
            .unwrap_or("")
    }

    #[test]
    fn shown_defaults_match_the_naming_parsers() {
        let own = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let p =
            crate::publish::server::parse_options(&own(&["publisher", "--listen", "127.0.0.1:1"]))
                .unwrap();
        assert_eq!(
            shown_default("publisher", "lease-ms"),
            p.lease_ms.to_string()
        );
        assert_eq!(shown_default("publisher", "prefix"), p.prefix);
        let r =
            crate::publish::client::parse_options(&own(&["resolve", "web"]), Some("h:1".into()))
                .unwrap();
        assert_eq!(
            super::super::parse_duration_ms(shown_default("resolve", "timeout")),
            Some(r.timeout_ms)
        );
    }

    #[test]
    fn names_are_unique_per_verb() {
        for v in VERBS.iter().chain([&SHIM]) {
            for (i, o) in v.opts.iter().enumerate() {
                for p in v.opts.iter().skip(i + 1) {
                    assert_ne!(o.long, p.long, "{}", v.name);
                    assert!(o.short.is_none() || o.short != p.short, "{}", v.name);
                }
            }
        }
    }

    /// Whether the parser behind `v` takes `extra` as far as options go: a
    /// missing name or a bad value is fine, an unknown option is not.
    fn accepts(v: &VerbSpec, extra: &[&str]) -> bool {
        let own = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let mut words: Vec<&str> = Vec::new();
        let err = match v.face {
            Face::Shim => {
                words.extend(extra);
                words.extend(["--", "true"]);
                let os = words.iter().map(std::ffi::OsString::from).collect();
                super::super::parse(os, false).err().map(|e| e.0)
            }
            Face::Run => {
                words.extend(["run", "--units", "u"]);
                words.extend(extra);
                let os = words.iter().map(std::ffi::OsString::from).collect();
                super::super::parse(os, false).err().map(|e| e.0)
            }
            Face::Help | Face::Completions | Face::Man => {
                words.push(v.name);
                words.extend(extra);
                let os = words.iter().map(std::ffi::OsString::from).collect();
                super::super::parse(os, false).err().map(|e| e.0)
            }
            Face::Client => {
                words.push(v.name);
                words.extend(extra);
                super::super::client::parse_args(&own(&words))
                    .err()
                    .map(|e| e.0)
            }
            Face::Check => {
                words.push(v.name);
                words.extend(extra);
                super::super::check::parse(&own(&words)).err().map(|e| e.0)
            }
            Face::Resolve => {
                words.push(v.name);
                words.extend(extra);
                crate::publish::client::parse_options(&own(&words), Some("127.0.0.1:1".into()))
                    .err()
            }
            Face::Publisher => {
                words.push(v.name);
                words.extend(extra);
                crate::publish::server::parse_options(&own(&words)).err()
            }
        };
        !err.is_some_and(|e| e.contains("invalid option"))
    }

    fn sample(value: &str) -> &'static str {
        match value {
            "DIR" => "/tmp",
            "DUR" => "1s",
            "N" => "1000",
            "IP" => "127.0.0.1",
            "FROM:TO" => "TERM:QUIT",
            "CODE" => "143",
            "SIG" => "TERM",
            "HOST:PORT" | "HOST:PORT[,...]" | "ADDR" => "127.0.0.1:1",
            "URL[,URL...]" => "http://127.0.0.1:1",
            _ => "x",
        }
    }

    /// Every option name and short letter the parsers' code matches on.
    fn parser_source_options() -> (Vec<String>, Vec<char>) {
        let sources = [
            include_str!("mod.rs"),
            include_str!("client.rs"),
            include_str!("check.rs"),
            include_str!("../publish/client.rs"),
            include_str!("../publish/server.rs"),
        ];
        let (mut longs, mut shorts) = (Vec::new(), Vec::new());
        for src in sources {
            for part in src.split("Long(\"").skip(1) {
                if let Some((name, _)) = part.split_once('"') {
                    longs.push(name.to_string());
                }
            }
            for part in src.split("Short('").skip(1) {
                if let Some(c) = part.chars().next() {
                    shorts.push(c);
                }
            }
        }
        longs.retain(|l| l != "help");
        shorts.retain(|c| *c != 'h');
        (longs, shorts)
    }

    #[test]
    fn parsers_take_every_option_in_the_table() {
        for v in VERBS.iter().chain([&SHIM]) {
            for o in v.opts {
                let long = format!("--{}", o.long);
                let mut args = vec![long.as_str()];
                args.extend(o.value.map(sample));
                assert!(accepts(v, &args), "`zurg {}` rejects {args:?}", v.name);
                if let Some(c) = o.short {
                    let short = format!("-{c}");
                    let mut args = vec![short.as_str()];
                    args.extend(o.value.map(sample));
                    assert!(accepts(v, &args), "`zurg {}` rejects {args:?}", v.name);
                }
            }
        }
    }

    #[test]
    fn the_table_lists_every_option_the_parsers_take() {
        let (longs, shorts) = parser_source_options();
        assert!(longs.len() > 30, "{longs:?}");
        for v in VERBS.iter().chain([&SHIM]) {
            for l in &longs {
                if v.opts.iter().any(|o| o.long == l) {
                    continue;
                }
                let arg = format!("--{l}");
                assert!(
                    !accepts(v, &[&arg]),
                    "`zurg {}` takes {arg}, which cli::spec does not list",
                    v.name
                );
            }
            for c in &shorts {
                if v.opts.iter().any(|o| o.short == Some(*c))
                    || (v.face == Face::Shim && SHIM_HIDDEN_SHORTS.contains(c))
                {
                    continue;
                }
                let arg = format!("-{c}");
                assert!(
                    !accepts(v, &[&arg]),
                    "`zurg {}` takes {arg}, which cli::spec does not list",
                    v.name
                );
            }
        }
    }
}
