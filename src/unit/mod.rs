//! Unit model: what one `NAME.toml` in the units directory says about a service.
//!
//! Plain data with defaults as consts. Each key of a unit file is declared
//! once, in `keys.rs` (its name, type, default, validation and doc);
//! `parse.rs` walks that table and reports every error of a file with its
//! position; reading a directory of units is `load.rs`. Nothing here
//! touches the OS.

pub mod accounts;
pub mod creds;
pub mod envfile;
pub mod keys;
pub mod load;
pub mod modes;
pub mod parse;
pub mod probe;
pub mod vars;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub use load::{load_dir, LoadReport};
pub use parse::{parse_unit, UnitError, UnitErrors};

pub const DEFAULT_STOP_SIGNAL: i32 = crate::sig::SIGTERM;
pub const DEFAULT_STOP_TIMEOUT_MS: u64 = 10_000;
/// Extra wait before every restart; the crash-loop backoff comes on top.
pub const DEFAULT_RESTART_DELAY_MS: u64 = 0;
/// Bytes of recent output lines kept per service for `zurg logs`: a few
/// screens of a chatty service, little enough for thousands of services.
pub const DEFAULT_LOG_RING_BYTES: usize = 256 * 1024;

/// When a service that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Whatever the exit status.
    Always,
    /// After a non-zero exit code or death by a signal.
    OnFailure,
    /// Never: the service stays down once it exits.
    Never,
}

impl RestartPolicy {
    pub const ALL: [RestartPolicy; 3] = [
        RestartPolicy::Always,
        RestartPolicy::OnFailure,
        RestartPolicy::Never,
    ];

    /// The word a unit file uses for it.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

/// What a service's process is for (`type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Runs until stopped; restarted per `restart`.
    Longrun,
    /// Runs to completion (a migration): a successful exit leaves it
    /// `done`; only a failed run is retried per `restart`.
    Oneshot,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Longrun, Kind::Oneshot];

    /// The word a unit file uses for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Longrun => "longrun",
            Kind::Oneshot => "oneshot",
        }
    }
}

/// Exit codes that count as success when a unit says nothing.
pub const DEFAULT_SUCCESS_EXIT_CODES: [u8; 1] = [0];
/// First crash-loop backoff step (`backoff.initial_ms`).
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 100;
/// Longest crash-loop backoff step (`backoff.max_ms`).
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 30_000;

/// The crash-loop backoff steps (`backoff = { initial_ms, max_ms }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffSteps {
    pub initial_ms: u64,
    pub max_ms: u64,
}

impl Default for BackoffSteps {
    fn default() -> BackoffSteps {
        BackoffSteps {
            initial_ms: DEFAULT_BACKOFF_INITIAL_MS,
            max_ms: DEFAULT_BACKOFF_MAX_MS,
        }
    }
}

/// `start_limit = { burst, interval_ms }`: more than `burst` starts within
/// `interval_ms` fail the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartLimit {
    pub burst: u32,
    pub interval_ms: u64,
}

/// One service, as its unit file declares it, with defaults filled in.
///
/// What most units leave out is in `rare`, boxed and absent while every
/// one of those keys has its default: inline, they made a `Unit` 800
/// bytes, most of the per-service heap at 10,000 services (issue 22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// File stem of the unit file. Name and exec are fixed once parsed:
    /// boxed, without a `String`'s capacity, 16 bytes of every service
    /// instead of 24 each (issue 22).
    pub name: Box<str>,
    /// Absolute path of the program.
    pub exec: Box<std::path::Path>,
    /// Arguments after argv[0] (argv[0] is the unit's exec path).
    pub args: Box<[String]>,
    /// Services that must be ready (a run-once one: done) before this one
    /// starts; `service::graph` checks the names at load.
    pub depends_on: Box<[String]>,
    pub restart: RestartPolicy,
    /// `type`: a long-running service or a run-to-completion one.
    pub kind: Kind,
    /// When it ends for good, zurg stops everything and exits with its code.
    pub essential: bool,
    /// Signal number sent first on stop.
    pub stop_signal: i32,
    pub stop_timeout_ms: u64,
    /// The port the service serves on; part of its GPID (0 when none, or
    /// when zurg picks one).
    pub port: u16,
    /// `port = "auto"`: zurg picks a free port at the first start and keeps
    /// it while it stays free.
    pub port_auto: bool,
    /// `socket = true`: zurg listens on the port itself, keeps the socket
    /// across restarts, and hands it to the service as fd 3 (LISTEN_FDS).
    pub socket: bool,
    /// Which instance this unit is (`${INSTANCE}`), once expanded.
    pub instance: Option<u32>,
    /// The keys most units leave out (`unit.rare.creds`...).
    pub rare: RareKeys,
}

/// The seldom-set keys of a unit (see `Unit`); the default is every key's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rare {
    /// Crash-loop backoff steps.
    pub backoff: BackoffSteps,
    /// Base delay before a restart; backoff grows from it.
    pub restart_delay_ms: u64,
    /// Added to (and overriding) zurg's own environment.
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// Exit codes that count as success (for `on-failure` and one-shots);
    /// sorted, no duplicates.
    pub success_exit_codes: Cow<'static, [u8]>,
    /// `None`: restarts are never limited (the backoff slows a loop).
    pub start_limit: Option<StartLimit>,
    /// Address for the socket and for picking a port (default 0.0.0.0).
    pub bind: Option<std::net::IpAddr>,
    /// Build version; the exec path must hold it as a whole component.
    pub version: Option<String>,
    /// Resource sampling period; `None` (the default) samples only on demand.
    pub stats_interval_ms: Option<u64>,
    /// The binary must hash to this before every start (`md5` or `sha256`).
    pub checksum: Option<crate::version::Checksum>,
    /// Bound of the service's output ring (`zurg logs`), in bytes.
    pub log_ring_bytes: usize,
    /// Where the service's stdout goes.
    pub stdout: Output,
    /// Where the service's stderr goes.
    pub stderr: Output,
    /// How it tells zurg it is ready; `None`: ready once started.
    pub ready: Option<probe::Ready>,
    /// How long a start may take to become ready.
    pub ready_timeout_ms: u64,
    /// `WATCHDOG=1` must come at least this often (notify socket).
    pub watchdog_ms: Option<u64>,
    /// The liveness check, if any.
    /// Boxed: few units have one, and it is the largest field.
    pub health: Option<Box<probe::Health>>,
    /// Who it runs as and with what limits (`user`, `rlimits`, `env_file`...).
    pub creds: creds::Creds,
    /// cgroup v2 limits (`memory_max`, `memory_high`, `cpu_max`,
    /// `pids_max`, `io_weight`).
    pub limits: crate::cgroup::Limits,
    /// `kill_mode`; `None`: `cgroup` where zurg manages cgroups, else `group`.
    pub kill_mode: Option<crate::cgroup::KillMode>,
    /// `instances = N`: the unit file runs as `NAME@0` ... `NAME@N-1`
    /// (`load.rs` expands it into one `Unit` per instance, each with `None`
    /// here, so a reload that changes N leaves the kept ones unchanged).
    pub instances: Option<u32>,
    /// `pre_start`: a command (absolute path first) that runs to
    /// completion before every start; `None`: none.
    pub pre_start: Option<Vec<String>>,
    /// `post_stop`: a command run after every exit of the main process.
    pub post_stop: Option<Vec<String>>,
    /// How long a hook may run before it is killed (`hook_timeout_ms`).
    pub hook_timeout_ms: u64,
}

impl Rare {
    /// Every key left out, as `keys.rs` reads an absent key.
    pub const DEFAULT: Rare = Rare {
        backoff: BackoffSteps {
            initial_ms: DEFAULT_BACKOFF_INITIAL_MS,
            max_ms: DEFAULT_BACKOFF_MAX_MS,
        },
        restart_delay_ms: DEFAULT_RESTART_DELAY_MS,
        env: BTreeMap::new(),
        cwd: None,
        success_exit_codes: Cow::Borrowed(&DEFAULT_SUCCESS_EXIT_CODES),
        start_limit: None,
        bind: None,
        version: None,
        stats_interval_ms: None,
        checksum: None,
        log_ring_bytes: DEFAULT_LOG_RING_BYTES,
        stdout: Output::Prefix,
        stderr: Output::Prefix,
        ready: None,
        ready_timeout_ms: probe::DEFAULT_READY_TIMEOUT_MS,
        watchdog_ms: None,
        health: None,
        creds: creds::Creds::DEFAULT,
        limits: crate::cgroup::Limits::DEFAULT,
        kill_mode: None,
        instances: None,
        pre_start: None,
        post_stop: None,
        hook_timeout_ms: DEFAULT_HOOK_TIMEOUT_MS,
    };
}

impl Default for Rare {
    fn default() -> Rare {
        Rare::DEFAULT
    }
}

static DEFAULT_RARE: Rare = Rare::DEFAULT;

/// A unit's `Rare` keys: no allocation while they are all default. Reads
/// see the defaults through `Deref`; a write through `DerefMut` makes the
/// box, and `compact` drops it again once it holds only defaults. Units
/// compare by the keys' values, box or not.
#[derive(Debug, Clone, Default)]
pub struct RareKeys(Option<Box<Rare>>);

impl RareKeys {
    /// Drops the box when every key in it has its default.
    pub fn compact(&mut self) {
        if self.0.as_deref().is_some_and(|r| *r == DEFAULT_RARE) {
            self.0 = None;
        }
    }

    /// Whether the keys take no heap (all default, compacted).
    pub fn is_unboxed(&self) -> bool {
        self.0.is_none()
    }
}

impl std::ops::Deref for RareKeys {
    type Target = Rare;
    fn deref(&self) -> &Rare {
        self.0.as_deref().unwrap_or(&DEFAULT_RARE)
    }
}

impl std::ops::DerefMut for RareKeys {
    fn deref_mut(&mut self) -> &mut Rare {
        self.0.get_or_insert_with(|| Box::new(Rare::DEFAULT))
    }
}

impl PartialEq for RareKeys {
    fn eq(&self, other: &RareKeys) -> bool {
        **self == **other
    }
}

impl Eq for RareKeys {}

/// The most instances one unit file may ask for.
pub const MAX_INSTANCES: u32 = 1024;

/// A hook runs at most this long unless `hook_timeout_ms` says otherwise.
pub const DEFAULT_HOOK_TIMEOUT_MS: u64 = 30_000;

/// Rotate a log file once it would pass this size (`max_bytes`).
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 << 20;
/// Old files kept beside a log file (`keep`).
pub const DEFAULT_LOG_KEEP: u32 = 5;

/// Where one output stream of a service goes (`stdout` / `stderr` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Whole lines to zurg's own stream of the same name, as `NAME | line`.
    Prefix,
    /// zurg's own descriptor, passed through untouched (zurg sees nothing).
    Inherit,
    /// /dev/null.
    Null,
    /// Lines appended to a file that zurg rotates.
    File(FileOutput),
}

impl Output {
    /// zurg reads this stream from a pipe (it sees every line).
    pub fn piped(&self) -> bool {
        matches!(self, Output::Prefix | Output::File(_))
    }
}

/// `{ file = PATH, max_bytes = N, keep = K, timestamps = BOOL }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutput {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: u32,
    /// Each line starts with an RFC 3339 UTC time.
    pub timestamps: bool,
}
