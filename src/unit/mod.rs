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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// File stem of the unit file.
    pub name: String,
    /// Absolute path of the program.
    pub exec: PathBuf,
    /// Arguments after argv[0] (argv[0] is the unit's exec path).
    pub args: Vec<String>,
    /// Added to (and overriding) zurg's own environment.
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// Services that must be ready (a run-once one: done) before this one
    /// starts; `service::graph` checks the names at load.
    pub depends_on: Vec<String>,
    pub restart: RestartPolicy,
    /// `type`: a long-running service or a run-to-completion one.
    pub kind: Kind,
    /// Exit codes that count as success (for `on-failure` and one-shots);
    /// sorted, no duplicates.
    pub success_exit_codes: Vec<u8>,
    /// Crash-loop backoff steps.
    pub backoff: BackoffSteps,
    /// `None`: restarts are never limited (the backoff slows a loop).
    pub start_limit: Option<StartLimit>,
    /// When it ends for good, zurg stops everything and exits with its code.
    pub essential: bool,
    /// Signal number sent first on stop.
    pub stop_signal: i32,
    pub stop_timeout_ms: u64,
    /// Base delay before a restart; backoff grows from it.
    pub restart_delay_ms: u64,
    /// The port the service serves on; part of its GPID (0 when none, or
    /// when zurg picks one).
    pub port: u16,
    /// `port = "auto"`: zurg picks a free port at the first start and keeps
    /// it while it stays free.
    pub port_auto: bool,
    /// `socket = true`: zurg listens on the port itself, keeps the socket
    /// across restarts, and hands it to the service as fd 3 (LISTEN_FDS).
    pub socket: bool,
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
    /// Which instance this unit is (`${INSTANCE}`), once expanded.
    pub instance: Option<u32>,
    /// `pre_start`: a command (absolute path first) that runs to
    /// completion before every start; `None`: none.
    pub pre_start: Option<Vec<String>>,
    /// `post_stop`: a command run after every exit of the main process.
    pub post_stop: Option<Vec<String>>,
    /// How long a hook may run before it is killed (`hook_timeout_ms`).
    pub hook_timeout_ms: u64,
}

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
