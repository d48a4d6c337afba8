//! The control protocol: one JSON object per line in each direction (pure).
//!
//! Requests carry a client-chosen `id` and a `verb`; every reply echoes the
//! id. Replies are `{"id":N,"ok":true,"result":...}` or
//! `{"id":N,"ok":false,"error":{"code":"...","message":"..."}}`; events on a
//! followed stream are `{"id":N,"event":{...}}`. docs/control-protocol.md
//! has an example of each. Decoding never panics and never trusts sizes: a
//! line longer than `MAX_LINE` is refused before it is parsed.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bumped when a request or reply changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request line, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownMode {
    /// Stop everything and exit (in a VM: power off).
    #[default]
    Default,
    Poweroff,
    Reboot,
}

impl std::fmt::Display for ShutdownMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ShutdownMode::Default => "stop everything and exit",
            ShutdownMode::Poweroff => "power-off",
            ShutdownMode::Reboot => "reboot",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case", deny_unknown_fields)]
pub enum Verb {
    Version,
    Status {
        #[serde(default)]
        names: Vec<String>,
    },
    /// Answers once each named service is started: a one-shot done, a
    /// service with a `ready` check ready, the others running; or as soon
    /// as one failed (or a dependency it waits for), or at `timeout_ms`.
    /// `no_block`: answers as soon as the start is under way.
    Start {
        names: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        no_block: bool,
    },
    Stop {
        names: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// As `Start`, once each has been stopped; `no_block`: answers once
    /// each runs again, ready or not.
    Restart {
        names: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        no_block: bool,
    },
    Signal {
        name: String,
        signal: String,
    },
    Reload,
    Events {
        #[serde(default)]
        follow: bool,
    },
    Shutdown {
        #[serde(default)]
        mode: ShutdownMode,
    },
    Gpid {
        name: String,
    },
    Stats {
        #[serde(default)]
        names: Vec<String>,
    },
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_us: Option<u64>,
    },
    Upgrade {
        name: String,
        version: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        md5: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window_ms: Option<u64>,
    },
    Rollback {
        name: String,
    },
    /// Answers once every named service is ready (a one-shot: done) or at
    /// rest (`for` = down), or with an error as soon as one cannot get
    /// there, or at `timeout_ms`.
    Wait {
        names: Vec<String>,
        #[serde(default, rename = "for")]
        until: WaitFor,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// A service's recent output lines (all services' without a name),
    /// streamed as `log` items and ended by `LogItem::End`.
    Logs {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The last this many lines; all the ring holds when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_us: Option<u64>,
        #[serde(default)]
        follow: bool,
    },
}

impl Verb {
    /// Verbs that only read state: allowed to the readers group
    /// (docs/control-protocol.md, "Who may do what"). Exhaustive, so that a
    /// new verb must be placed on one side.
    pub fn is_read_only(&self) -> bool {
        match self {
            Verb::Version
            | Verb::Status { .. }
            | Verb::Events { .. }
            | Verb::Gpid { .. }
            | Verb::Stats { .. }
            | Verb::History { .. }
            | Verb::Wait { .. }
            | Verb::Logs { .. } => true,
            Verb::Start { .. }
            | Verb::Stop { .. }
            | Verb::Restart { .. }
            | Verb::Signal { .. }
            | Verb::Reload
            | Verb::Shutdown { .. }
            | Verb::Upgrade { .. }
            | Verb::Rollback { .. } => false,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Verb::Version => "version",
            Verb::Status { .. } => "status",
            Verb::Start { .. } => "start",
            Verb::Stop { .. } => "stop",
            Verb::Restart { .. } => "restart",
            Verb::Signal { .. } => "signal",
            Verb::Reload => "reload",
            Verb::Events { .. } => "events",
            Verb::Shutdown { .. } => "shutdown",
            Verb::Gpid { .. } => "gpid",
            Verb::Stats { .. } => "stats",
            Verb::History { .. } => "history",
            Verb::Upgrade { .. } => "upgrade",
            Verb::Rollback { .. } => "rollback",
            Verb::Wait { .. } => "wait",
            Verb::Logs { .. } => "logs",
        }
    }
}

/// The verbs a host may let operators run through the publisher
/// (`zurg run --publish-control`), a subset of `Verb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteVerb {
    Status,
    Restart,
    Stop,
    Start,
    Signal,
    Upgrade,
    Rollback,
}

impl RemoteVerb {
    pub const ALL: [RemoteVerb; 7] = [
        RemoteVerb::Status,
        RemoteVerb::Restart,
        RemoteVerb::Stop,
        RemoteVerb::Start,
        RemoteVerb::Signal,
        RemoteVerb::Upgrade,
        RemoteVerb::Rollback,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RemoteVerb::Status => "status",
            RemoteVerb::Restart => "restart",
            RemoteVerb::Stop => "stop",
            RemoteVerb::Start => "start",
            RemoteVerb::Signal => "signal",
            RemoteVerb::Upgrade => "upgrade",
            RemoteVerb::Rollback => "rollback",
        }
    }

    /// The remote verb a request is, if it may be relayed at all.
    pub fn of(verb: &Verb) -> Option<RemoteVerb> {
        match verb {
            Verb::Status { .. } => Some(RemoteVerb::Status),
            Verb::Restart { .. } => Some(RemoteVerb::Restart),
            Verb::Stop { .. } => Some(RemoteVerb::Stop),
            Verb::Start { .. } => Some(RemoteVerb::Start),
            Verb::Signal { .. } => Some(RemoteVerb::Signal),
            Verb::Upgrade { .. } => Some(RemoteVerb::Upgrade),
            Verb::Rollback { .. } => Some(RemoteVerb::Rollback),
            Verb::Version
            | Verb::Reload
            | Verb::Events { .. }
            | Verb::Shutdown { .. }
            | Verb::Gpid { .. }
            | Verb::Stats { .. }
            | Verb::History { .. }
            | Verb::Wait { .. }
            | Verb::Logs { .. } => None,
        }
    }

    /// `status,restart` → the verbs, each once, in order; an unknown word
    /// is an error naming it and the known ones.
    pub fn parse_list(text: &str) -> Result<Vec<RemoteVerb>, String> {
        let mut out: Vec<RemoteVerb> = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let Some(v) = RemoteVerb::ALL.iter().find(|v| v.name() == word) else {
                let known: Vec<&str> = RemoteVerb::ALL.iter().map(|v| v.name()).collect();
                return Err(format!(
                    "`{word}` is not a verb that can be allowed remotely; choose from {}",
                    known.join(",")
                ));
            };
            if !out.contains(v) {
                out.push(*v);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The service names a request names, for the journal.
    pub fn target(verb: &Verb) -> String {
        match verb {
            Verb::Status { names }
            | Verb::Start { names, .. }
            | Verb::Stop { names, .. }
            | Verb::Restart { names, .. } => names.join(","),
            Verb::Signal { name, .. } | Verb::Upgrade { name, .. } | Verb::Rollback { name } => {
                name.clone()
            }
            _ => String::new(),
        }
    }
}

impl std::fmt::Display for RemoteVerb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WaitFor {
    /// Ready (a one-shot: completed successfully).
    #[default]
    Ready,
    /// Not running, and not about to start again by itself.
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub verb: Verb,
}

/// Stable, machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    TooLarge,
    Forbidden,
    UnknownService,
    NotRunning,
    Timeout,
    ShuttingDown,
    Busy,
    Failed,
    /// Through a publisher: the host is not connected to it (unknown, or
    /// its zurg stopped).
    HostNotConnected,
    /// Through a publisher: the host did not answer within the deadline.
    HostSilent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// One line from zurg to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RawJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventRecord>,
    /// An item of a `logs` stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogItem>,
}

/// A result kept as the JSON text it is sent as: zurg writes it once,
/// straight from its own types, with no `Value` tree in between (a history
/// of 60,000 records is built on the event loop).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<serde_json::value::RawValue>);

impl RawJson {
    pub fn new(value: impl Serialize) -> RawJson {
        // A Default RawValue is `null`.
        RawJson(serde_json::value::to_raw_value(&value).unwrap_or_default())
    }

    pub fn text(&self) -> &str {
        self.0.get()
    }

    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &RawJson) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Reply {
    pub fn ok(id: u64, result: impl Serialize) -> Reply {
        Reply {
            id,
            ok: Some(true),
            result: Some(RawJson::new(result)),
            error: None,
            event: None,
            log: None,
        }
    }

    pub fn error(id: u64, code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply {
            id,
            ok: Some(false),
            result: None,
            error: Some(ErrorBody {
                code,
                message: message.into(),
            }),
            event: None,
            log: None,
        }
    }

    pub fn event(id: u64, event: EventRecord) -> Reply {
        Reply {
            id,
            ok: None,
            result: None,
            error: None,
            event: Some(event),
            log: None,
        }
    }

    pub fn log(id: u64, item: LogItem) -> Reply {
        Reply {
            id,
            ok: None,
            result: None,
            error: None,
            event: None,
            log: Some(item),
        }
    }
}

/// One item of a `logs` stream (docs/control-protocol.md, "logs").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogItem {
    Line(LogLine),
    /// The ring dropped this many of the service's lines before this
    /// client read them: it fell behind.
    Missed {
        service: String,
        lines: u64,
    },
    /// Nothing follows: the lines asked for were sent, or zurg stops.
    End {
        reason: LogEnd,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogEnd {
    /// Every line asked for was sent (no --follow).
    Done,
    /// zurg stopped every service and is exiting (ends a --follow).
    Shutdown,
}

/// One output line of a service. `text` is the line as UTF-8 text, NUL
/// and control characters escaped by JSON as `\u0000`; when the line is not
/// valid UTF-8, `text` has U+FFFD in place of each invalid sequence and
/// `bytes_b64` carries the exact bytes (standard base64, padded), so no
/// line is ever altered on its way to a client that wants the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub service: String,
    pub stream: crate::service::ring::Stream,
    /// Wall clock, microseconds since the Unix epoch, when zurg read it.
    pub time_us: u64,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_b64: Option<String>,
}

impl LogLine {
    pub fn new(
        service: &str,
        stream: crate::service::ring::Stream,
        time_us: u64,
        bytes: &[u8],
    ) -> LogLine {
        let (text, bytes_b64) = match std::str::from_utf8(bytes) {
            Ok(t) => (t.to_string(), None),
            Err(_) => (
                String::from_utf8_lossy(bytes).into_owned(),
                Some(base64_encode(bytes)),
            ),
        };
        LogLine {
            service: service.to_string(),
            stream,
            time_us,
            text,
            bytes_b64,
        }
    }

    /// The line's exact bytes (the text's when `bytes_b64` is absent or
    /// not base64).
    pub fn bytes(&self) -> Vec<u8> {
        self.bytes_b64
            .as_deref()
            .and_then(base64_decode)
            .unwrap_or_else(|| self.text.as_bytes().to_vec())
    }
}

/// Standard base64 with padding (RFC 4648, section 4).
pub fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes of standard padded base64; None when it is not that (the
/// STANDARD engine wants canonical padding and no stray trailing bits).
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// How a process ended, for humans and scripts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The kernel's OOM killer ended a process of the service during this
    /// run (its cgroup's `memory.events` `oom_kill` went up); absent when
    /// it did not, so other records encode as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom: bool,
}

/// One row of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// stopped | starting (started, not ready yet; or its binary is being
    /// hashed) | running | stopping | backoff | exited | done (a one-shot
    /// that completed) | failed | waiting | blocked | rejected (its unit
    /// file was refused and it has no process)
    pub state: String,
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(default)]
    pub uptime_ms: Option<u64>,
    pub restarts: u32,
    #[serde(default)]
    pub last_exit: Option<ExitInfo>,
    /// GPID of the current (or last) process.
    #[serde(default)]
    pub gpid: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// Why it last failed to start (refused, could not be started, forked
    /// into the background, a dependency failed); cleared by a successful
    /// start.
    #[serde(default)]
    pub last_error: Option<String>,
    /// A process runs and is ready (a one-shot: also while it runs).
    #[serde(default)]
    pub ready: bool,
    /// How long the current process took to become ready; `None` while it
    /// is starting (or not running).
    #[serde(default)]
    pub ready_after_ms: Option<u64>,
    /// Its health check's latest results; `None` without a `health` check
    /// or a process.
    #[serde(default)]
    pub health: Option<HealthStatus>,
    /// Why it is not where its unit says it should be (failed, kept down
    /// after a failure, restarting after one); `zurg status` exits 1 when
    /// a row has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// In state `waiting`: the dependencies it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
    /// The `STATUS=` text the current process sent to its notify socket.
    #[serde(default)]
    pub status_text: Option<String>,
}

impl ServiceStatus {
    /// The row of a unit whose file was refused and that has no process.
    pub fn rejected(name: &str, problem: String) -> Self {
        ServiceStatus {
            name: name.to_string(),
            state: "rejected".to_string(),
            pid: None,
            uptime_ms: None,
            restarts: 0,
            last_exit: None,
            gpid: None,
            version: None,
            last_error: None,
            ready: false,
            ready_after_ms: None,
            health: None,
            problem: Some(problem),
            waiting_for: Vec::new(),
            status_text: None,
        }
    }
}

/// A service's health check, in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// The last check passed (true before the first one ends).
    pub ok: bool,
    /// Failures in a row that counted towards `retries`.
    pub failures: u32,
    /// The last result: "200 OK", "connection refused", "exited with code 1".
    pub last: String,
}

/// One row of `stats`: the main process and its whole tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsRow {
    pub name: String,
    pub pid: i32,
    pub gpid: Option<String>,
    pub process: crate::stats::Sample,
    pub tree: crate::stats::Sample,
    /// CPU of the tree since the previous sample, in % of one core.
    #[serde(default)]
    pub cpu_percent: Option<f64>,
}

/// `gpid NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpidInfo {
    pub name: String,
    pub gpid: String,
    #[serde(default)]
    pub version: Option<String>,
    pub running: bool,
}

/// What a start, stop or restart did to one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub name: String,
    pub state: String,
    #[serde(default)]
    pub pid: Option<i32>,
    /// Set when the service did not end up where the request asked
    /// (a start or restart that left it not running): the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the request touched a service it did not name: a dependency
    /// started first, a dependant stopped first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The exit code its last run ended with, while no process runs (a
    /// one-shot done or failed); absent otherwise, and from older zurgs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
}

/// What a lifecycle event says happened: one enum from the supervisor to
/// the client, encoded as its snake_case word. A word this client does not
/// know (a newer zurg) reads as `Other` rather than failing the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Started,
    Exited,
    Restarting,
    Stopped,
    Killed,
    /// Ended, and its restart policy keeps it down.
    Done,
    SpawnFailed,
    /// Refused, or forked into the background: the service is failed.
    Failed,
    Warning,
    /// Its process reported itself ready (`delay_ms`: how long it took).
    Ready,
    /// It did not become ready in time: a failed start (`message`: why).
    NotReady,
    /// Its health check failed: it is restarted (`message`: which check and how).
    Unhealthy,
    /// Held before its start until its dependencies are ready (`message`:
    /// the ones it waits for).
    Waiting,
    /// Not started: a dependency failed for good (`message`: which and how).
    Blocked,
    /// The last event a follower gets, on an orderly shutdown (service
    /// "zurg"): `events --follow` tells it from a crash, which ends with no
    /// such line.
    Shutdown,
    #[serde(other)]
    Other,
}

impl EventKind {
    /// The event's process has ended: its pid names nothing any more (and
    /// may since name another process).
    pub fn ended(self) -> bool {
        matches!(
            self,
            EventKind::Exited | EventKind::Stopped | EventKind::Killed | EventKind::Done
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Exited => "exited",
            EventKind::Restarting => "restarting",
            EventKind::Stopped => "stopped",
            EventKind::Killed => "killed",
            EventKind::Done => "done",
            EventKind::SpawnFailed => "spawn_failed",
            EventKind::Failed => "failed",
            EventKind::Warning => "warning",
            EventKind::Ready => "ready",
            EventKind::NotReady => "not_ready",
            EventKind::Unhealthy => "unhealthy",
            EventKind::Waiting => "waiting",
            EventKind::Blocked => "blocked",
            EventKind::Shutdown => "shutdown",
            EventKind::Other => "other",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lifecycle event, as kept in the recent-events ring and streamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: u64,
    /// Wall clock, microseconds since the Unix epoch.
    pub time_us: u64,
    pub service: String,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The last periodic sample before an exit. Boxed: few services
    /// sample, and zurg keeps its last 1,000 events (104 bytes of each
    /// inline, ~100 kB; issue 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Box<crate::stats::Sample>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub zurg: String,
    pub protocol: u32,
    pub pid: u32,
    /// zurg's own GPID, as forwarders present it to the publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpid: Option<String>,
    /// Present when zurg runs with `--publish`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<crate::publish::proto::PublishStatus>,
    /// The journal's writer: records waiting for its disk, and records
    /// dropped since start because too many were waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStatus {
    pub queued: u64,
    pub not_written: u64,
}

/// Why a line is not a request. `id` is kept when it could be read, so the
/// error reply still reaches the right caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub id: u64,
    pub code: ErrorCode,
    pub message: String,
}

/// Parses one request line (without its newline).
pub fn decode_request(line: &[u8]) -> Result<Request, DecodeError> {
    let fail = |id: u64, code: ErrorCode, message: String| DecodeError { id, code, message };
    if line.len() > MAX_LINE {
        return Err(fail(
            0,
            ErrorCode::TooLarge,
            format!("request longer than {MAX_LINE} bytes"),
        ));
    }
    let text = std::str::from_utf8(line)
        .map_err(|_| fail(0, ErrorCode::BadRequest, "request is not UTF-8".into()))?;
    let mut value: Value = serde_json::from_str(text).map_err(|e| {
        fail(
            0,
            ErrorCode::BadRequest,
            format!("request is not JSON: {e}"),
        )
    })?;
    let Some(obj) = value.as_object_mut() else {
        return Err(fail(
            0,
            ErrorCode::BadRequest,
            "request must be a JSON object".into(),
        ));
    };
    let id = match obj.remove("id") {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            fail(
                0,
                ErrorCode::BadRequest,
                "`id` must be a non-negative integer".into(),
            )
        })?,
        Some(_) => {
            return Err(fail(
                0,
                ErrorCode::BadRequest,
                "`id` must be a non-negative integer".into(),
            ))
        }
        None => return Err(fail(0, ErrorCode::BadRequest, "missing `id`".into())),
    };
    let verb: Verb = serde_json::from_value(value)
        .map_err(|e| fail(id, ErrorCode::BadRequest, format!("bad request: {e}")))?;
    Ok(Request { id, verb })
}

/// Serialises a request as one line, newline included.
pub fn encode_request(req: &Request) -> Vec<u8> {
    let mut value = serde_json::to_value(&req.verb).unwrap_or(Value::Null);
    if let Some(obj) = value.as_object_mut() {
        obj.insert("id".into(), Value::from(req.id));
    }
    let mut out = serde_json::to_vec(&value).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Serialises a reply as one line, newline included.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    let mut out = serde_json::to_vec(reply).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

pub fn decode_reply(line: &[u8]) -> Result<Reply, String> {
    serde_json::from_slice(line).map_err(|e| format!("bad reply from zurg: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_verb_lists_parse_and_unknown_words_are_named() {
        assert_eq!(
            RemoteVerb::parse_list("restart, status,restart,").unwrap(),
            [RemoteVerb::Status, RemoteVerb::Restart]
        );
        assert_eq!(RemoteVerb::parse_list("").unwrap(), []);
        let e = RemoteVerb::parse_list("status,reboot").unwrap_err();
        assert!(e.contains("`reboot`") && e.contains("rollback"), "{e}");
        for v in RemoteVerb::ALL {
            assert_eq!(RemoteVerb::parse_list(v.name()).unwrap(), [v]);
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.name()));
        }
        assert_eq!(RemoteVerb::of(&Verb::Reload), None);
        assert_eq!(
            RemoteVerb::of(&Verb::Rollback { name: "a".into() }),
            Some(RemoteVerb::Rollback)
        );
    }

    #[test]
    fn read_only_verbs_are_the_documented_ones() {
        let read = |line: &str| decode_request(line.as_bytes()).unwrap().verb.is_read_only();
        for verb in [
            r#"{"id":1,"verb":"version"}"#,
            r#"{"id":1,"verb":"status"}"#,
            r#"{"id":1,"verb":"events","follow":true}"#,
            r#"{"id":1,"verb":"gpid","name":"a"}"#,
            r#"{"id":1,"verb":"stats"}"#,
            r#"{"id":1,"verb":"history"}"#,
            r#"{"id":1,"verb":"logs","name":"a","lines":3,"follow":true}"#,
        ] {
            assert!(read(verb), "{verb}");
        }
        for verb in [
            r#"{"id":1,"verb":"start","names":["a"]}"#,
            r#"{"id":1,"verb":"stop","names":["a"]}"#,
            r#"{"id":1,"verb":"restart","names":["a"]}"#,
            r#"{"id":1,"verb":"signal","name":"a","signal":"HUP"}"#,
            r#"{"id":1,"verb":"reload"}"#,
            r#"{"id":1,"verb":"shutdown"}"#,
            r#"{"id":1,"verb":"upgrade","name":"a","version":"2"}"#,
            r#"{"id":1,"verb":"rollback","name":"a"}"#,
        ] {
            assert!(!read(verb), "{verb}");
        }
    }

    #[test]
    fn requests_round_trip() {
        let verbs = [
            Verb::Version,
            Verb::Status { names: vec![] },
            Verb::Status {
                names: vec!["a".into()],
            },
            Verb::Start {
                names: vec!["a".into(), "b".into()],
                timeout_ms: None,
                no_block: false,
            },
            Verb::Start {
                names: vec!["a".into()],
                timeout_ms: Some(2_000),
                no_block: true,
            },
            Verb::Stop {
                names: vec!["a".into()],
                timeout_ms: Some(500),
            },
            Verb::Restart {
                names: vec!["a".into()],
                timeout_ms: None,
                no_block: false,
            },
            Verb::Restart {
                names: vec!["a".into()],
                timeout_ms: Some(1),
                no_block: true,
            },
            Verb::Signal {
                name: "a".into(),
                signal: "HUP".into(),
            },
            Verb::Reload,
            Verb::Events { follow: true },
            Verb::Logs {
                name: Some("web".into()),
                lines: Some(3),
                since_us: Some(1),
                follow: true,
            },
            Verb::Logs {
                name: None,
                lines: None,
                since_us: None,
                follow: false,
            },
            Verb::Shutdown {
                mode: ShutdownMode::Poweroff,
            },
        ];
        for (i, verb) in verbs.into_iter().enumerate() {
            let req = Request { id: i as u64, verb };
            let line = encode_request(&req);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(decode_request(&line[..line.len() - 1]), Ok(req));
        }
    }

    #[test]
    fn base64_round_trips_and_refuses_garbage() {
        for (bytes, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"\xff\x00\xfe\x80", "/wD+gA=="),
        ] {
            assert_eq!(base64_encode(bytes), text);
            assert_eq!(base64_decode(text).as_deref(), Some(bytes));
        }
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Z!==", "=Zg="] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn log_lines_keep_nul_and_invalid_utf8() {
        use crate::service::ring::Stream;
        let line = LogLine::new("web", Stream::Stdout, 5, b"a\0b");
        let json = serde_json::to_string(&Reply::log(3, LogItem::Line(line.clone()))).unwrap();
        assert_eq!(
            json,
            r#"{"id":3,"log":{"kind":"line","service":"web","stream":"stdout","time_us":5,"text":"a\u0000b"}}"#
        );
        let back = decode_reply(json.as_bytes()).unwrap();
        assert_eq!(back.log, Some(LogItem::Line(line)));
        let bad = LogLine::new("web", Stream::Stderr, 5, b"caf\xe9 \xff");
        assert_eq!(bad.text, "caf\u{fffd} \u{fffd}");
        assert_eq!(bad.bytes(), b"caf\xe9 \xff");
        let end = serde_json::to_string(&LogItem::End {
            reason: LogEnd::Shutdown,
        })
        .unwrap();
        assert_eq!(end, r#"{"kind":"end","reason":"shutdown"}"#);
    }

    /// A zurg from before `no_block` refuses fields it does not know: a
    /// start or restart that waits (the default) must not send them, and
    /// an outcome without `exit` (an older zurg's) still reads.
    #[test]
    fn blocking_start_keeps_the_old_wire_format() {
        let start = Request {
            id: 1,
            verb: Verb::Start {
                names: vec!["a".into()],
                timeout_ms: None,
                no_block: false,
            },
        };
        let line = encode_request(&start);
        let sent: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"id": 1, "verb": "start", "names": ["a"]})
        );
        let restart = decode_request(br#"{"id":2,"verb":"restart","names":["a"]}"#).unwrap();
        assert_eq!(
            restart.verb,
            Verb::Restart {
                names: vec!["a".into()],
                timeout_ms: None,
                no_block: false,
            }
        );
        let old: Outcome =
            serde_json::from_str(r#"{"name":"m","state":"done","pid":null}"#).unwrap();
        assert_eq!(old.exit, None);
        let done = Outcome {
            exit: Some(0),
            ..old.clone()
        };
        let json = serde_json::to_string(&done).unwrap();
        assert!(json.ends_with(r#","exit":0}"#), "{json}");
        assert!(!serde_json::to_string(&old).unwrap().contains("exit"));
    }

    #[test]
    fn wire_format_is_flat() {
        let r =
            decode_request(br#"{"id":7,"verb":"stop","names":["web"],"timeout_ms":3000}"#).unwrap();
        assert_eq!(
            r,
            Request {
                id: 7,
                verb: Verb::Stop {
                    names: vec!["web".into()],
                    timeout_ms: Some(3000)
                }
            }
        );
        let r = decode_request(br#"{"verb":"status","id":1}"#).unwrap();
        assert_eq!(r.verb, Verb::Status { names: vec![] });
    }

    #[test]
    fn bad_requests_are_explained() {
        let cases: &[(&[u8], u64, ErrorCode, &str)] = &[
            (b"garbage", 0, ErrorCode::BadRequest, "request is not JSON"),
            (b"[1,2]", 0, ErrorCode::BadRequest, "must be a JSON object"),
            (
                b"{\"verb\":\"status\"}",
                0,
                ErrorCode::BadRequest,
                "missing `id`",
            ),
            (
                b"{\"id\":-1,\"verb\":\"status\"}",
                0,
                ErrorCode::BadRequest,
                "`id` must be",
            ),
            (
                b"{\"id\":\"x\",\"verb\":\"status\"}",
                0,
                ErrorCode::BadRequest,
                "`id` must be",
            ),
            (
                b"{\"id\":3,\"verb\":\"dance\"}",
                3,
                ErrorCode::BadRequest,
                "unknown variant `dance`",
            ),
            (
                b"{\"id\":4}",
                4,
                ErrorCode::BadRequest,
                "missing field `verb`",
            ),
            (
                b"{\"id\":5,\"verb\":\"start\"}",
                5,
                ErrorCode::BadRequest,
                "missing field `names`",
            ),
            (
                b"{\"id\":6,\"verb\":\"start\",\"names\":\"a\"}",
                6,
                ErrorCode::BadRequest,
                "invalid type",
            ),
            (
                b"{\"id\":8,\"verb\":\"status\",\"bogus\":1}",
                8,
                ErrorCode::BadRequest,
                "unknown field `bogus`",
            ),
            (b"\xff\xfe", 0, ErrorCode::BadRequest, "not UTF-8"),
        ];
        for (line, id, code, text) in cases {
            let e = decode_request(line).unwrap_err();
            assert_eq!(
                (e.id, e.code),
                (*id, *code),
                "{:?}: {e}",
                String::from_utf8_lossy(line)
            );
            assert!(
                e.message.contains(text),
                "{:?}: {}",
                String::from_utf8_lossy(line),
                e.message
            );
        }
        let big = vec![b' '; MAX_LINE + 1];
        assert_eq!(decode_request(&big).unwrap_err().code, ErrorCode::TooLarge);
    }

    #[test]
    fn replies_round_trip() {
        let rows = vec![ServiceStatus {
            name: "a".into(),
            state: "running".into(),
            pid: Some(3),
            uptime_ms: Some(10),
            restarts: 1,
            gpid: None,
            version: None,
            last_error: None,
            ready: true,
            ready_after_ms: Some(0),
            health: Some(HealthStatus {
                ok: false,
                failures: 2,
                last: "connection refused".into(),
            }),
            problem: None,
            waiting_for: vec![],
            status_text: None,
            last_exit: Some(ExitInfo {
                code: None,
                signal: Some("SIGKILL".into()),
                oom: false,
            }),
        }];
        let r = Reply::ok(1, &rows);
        let line = encode_reply(&r);
        let back = decode_reply(&line).unwrap();
        assert_eq!(back, r);
        let got: Vec<ServiceStatus> = serde_json::from_str(back.result.unwrap().text()).unwrap();
        assert_eq!(got, rows);
        let e = Reply::error(2, ErrorCode::UnknownService, "no service `x`");
        assert_eq!(
            String::from_utf8(encode_reply(&e)).unwrap(),
            "{\"id\":2,\"ok\":false,\"error\":{\"code\":\"unknown_service\",\"message\":\"no service `x`\"}}\n"
        );
    }
}
