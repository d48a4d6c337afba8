//! The control protocol: one JSON object per line in each direction (pure).
//!
//! Requests carry a client-chosen `id` and a `verb`; every reply echoes the
//! id. Replies are `{"id":N,"ok":true,"result":...}` or
//! `{"id":N,"ok":false,"error":{"code":"...","message":"..."}}`; events on a
//! followed stream are `{"id":N,"event":{...}}`. docs/control-protocol.md
//! has an example of each. Decoding never panics and never trusts sizes: a
//! line longer than `MAX_LINE` is refused before it is parsed.

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
    Start {
        names: Vec<String>,
    },
    Stop {
        names: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    Restart {
        names: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
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
}

impl Verb {
    /// Verbs that only read state: allowed to the readers group.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Verb::Version | Verb::Status { .. } | Verb::Events { .. }
        )
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
        }
    }
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
        }
    }

    pub fn event(id: u64, event: EventRecord) -> Reply {
        Reply {
            id,
            ok: None,
            result: None,
            error: None,
            event: Some(event),
        }
    }
}

/// How a process ended, for humans and scripts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

/// One row of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// stopped | running | stopping | backoff | exited
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
}

/// The last event a follower gets, on an orderly shutdown (service "zurg"):
/// `events --follow` tells it from a crash, which ends with no such line.
pub const SHUTDOWN_EVENT_KIND: &str = "shutdown";

/// A lifecycle event, as kept in the recent-events ring and streamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: u64,
    /// Wall clock, microseconds since the Unix epoch.
    pub time_us: u64,
    pub service: String,
    /// started | exited | restarting | stopped | killed | done | spawn_failed,
    /// and `shutdown` (SHUTDOWN_EVENT_KIND) last of all
    pub kind: String,
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
    /// The last periodic sample before an exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<crate::stats::Sample>,
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
    fn requests_round_trip() {
        let verbs = [
            Verb::Version,
            Verb::Status { names: vec![] },
            Verb::Status {
                names: vec!["a".into()],
            },
            Verb::Start {
                names: vec!["a".into(), "b".into()],
            },
            Verb::Stop {
                names: vec!["a".into()],
                timeout_ms: Some(500),
            },
            Verb::Restart {
                names: vec!["a".into()],
                timeout_ms: None,
            },
            Verb::Signal {
                name: "a".into(),
                signal: "HUP".into(),
            },
            Verb::Reload,
            Verb::Events { follow: true },
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
            last_exit: Some(ExitInfo {
                code: None,
                signal: Some("SIGKILL".into()),
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
