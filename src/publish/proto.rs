//! The publish protocol between forwarders, the publisher and resolve
//! clients (pure): frames, their codec, and the challenge-response MAC.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of one
//! JSON object whose `t` field names its type (docs/publish-protocol.md).
//! Length-prefixed rather than newline-delimited so a receiver knows before
//! reading a byte of the body whether it will accept it: an oversized frame
//! is refused from its header, without buffering it.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::control::proto::{ErrorBody, RemoteVerb, Verb};

pub const PROTOCOL: u32 = 1;
/// The largest frame body anyone accepts. Snapshots and listings are split
/// into chunks well under it.
pub const MAX_FRAME: usize = 64 * 1024;
/// Endpoints per snapshot or listing chunk: ~300 bytes each stays under
/// `MAX_FRAME` with room to spare.
pub const CHUNK: usize = 128;
/// How far past the last applied sequence number an event or snapshot may
/// jump. A forwarder resends from its memory queue (10,000 by default) and
/// its journal (16 MiB, some 50,000 events) in order, so a real one never
/// comes near; a seq of 2^64-1 would make every later event a duplicate.
pub const MAX_SEQ_JUMP: u64 = 1 << 20;
/// The largest `result` a remote control answer may carry in `part`
/// frames: a `status` of some 10,000 services. Past it the host answers
/// `too_large`. A bound, so neither the publisher relaying the parts nor
/// the operator's client assembling them holds an unbounded reply.
pub const MAX_REPLY: usize = 4 * 1024 * 1024;
/// Room in a `part` frame for everything but its `data`'s characters.
const PART_OVERHEAD: usize = 128;
/// The most of a host's error text (`answer.error.message`) the publisher
/// relays to the operator and keeps in its journal, escaped
/// (`safe_text::bounded`): a zurg's own errors are a line or two; past
/// this the text is cut and says so.
pub const MAX_RELAYED_ERROR: usize = 1024;
/// The most of a relayed request's names (comma-joined) the publisher
/// keeps in its journal record; a restart of a few dozen services fits.
pub const MAX_JOURNALED_TARGET: usize = 1024;

/// One live process of a service, as clients resolve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub service: String,
    pub ip: String,
    /// 0 when the service declares no port.
    pub port: u16,
    pub gpid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When the process started, wall clock microseconds.
    pub since_us: u64,
    /// The zurg instance (its own GPID) that runs it.
    #[serde(default)]
    pub host: String,
}

/// How a process ended, as carried by an exit event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A `zurg run` that publishes its services.
    Forwarder,
    /// A `zurg resolve` or any program that looks names up.
    Client,
    /// `zurg --publisher ADDR --host H VERB`: proves the operator token
    /// (never the host token) and may relay control requests to hosts that
    /// allow them.
    Operator,
}

impl Role {
    /// The name a side MACs its proof under.
    pub fn name(self) -> &'static str {
        match self {
            Role::Forwarder => "forwarder",
            Role::Client => "client",
            Role::Operator => "operator",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A process started: its endpoint is live.
    Start,
    /// A process ended: its endpoint is gone.
    Exit,
}

/// Why an endpoint appeared or disappeared, as watchers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Start,
    Exit,
    /// The host's snapshot listed it, or no longer did.
    Snapshot,
    /// The host was silent past its lease.
    Lease,
    /// The host's zurg shut down cleanly.
    Bye,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Up,
    Down,
}

/// A host (one zurg instance) as the registry knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// zurg's own GPID: one per zurg instance, never reused.
    pub zurg: String,
    pub ip: String,
    #[serde(default)]
    pub boot: String,
    #[serde(default)]
    pub hostname: String,
    /// Highest sequence number applied from this instance.
    #[serde(default)]
    pub seq: u64,
    /// Events applied (each sequence number once).
    #[serde(default)]
    pub applied: u64,
    /// Events received again after a resend and ignored.
    #[serde(default)]
    pub duplicates: u64,
    /// Sequence numbers that never arrived (the forwarder's queue overflowed;
    /// its snapshot restored the live set).
    #[serde(default)]
    pub gaps: u64,
    #[serde(default)]
    pub connected: bool,
    #[serde(default)]
    pub endpoints: usize,
}

/// A forwarder's state, as `zurg version` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishStatus {
    pub publisher: String,
    pub connected: bool,
    /// Last sequence number issued.
    pub seq: u64,
    /// Highest sequence number the publisher acknowledged.
    pub acked: u64,
    pub queued: usize,
    /// Events that left the memory queue unacknowledged (the journal still
    /// has them for a resend).
    pub dropped: u64,
    pub connects: u64,
}

/// Every frame of the protocol, in both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Frame {
    /// First frame of every connection.
    Hello {
        proto: u32,
        role: Role,
        /// Forwarders: the host's address, zurg's GPID and the boot id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        zurg: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boot: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hostname: Option<String>,
        /// Random hex the publisher must MAC to prove it knows the token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
        /// Forwarders: a secret drawn from getrandom(2) when zurg starts and
        /// kept for its life. It proves a reconnect comes from the same
        /// zurg instance, so nobody else can take a live host's place.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
        /// Forwarders: the verbs this host lets operators run through the
        /// publisher (`--publish-control`); none when absent.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        control: Vec<RemoteVerb>,
    },
    /// Publisher: prove you know the token by MACing this.
    Challenge {
        nonce: String,
    },
    Auth {
        mac: String,
    },
    /// Publisher: accepted. `last_seq` is the highest sequence number it
    /// holds from this forwarder instance (0 if none); `mac` answers the
    /// hello's nonce when a token is configured.
    Welcome {
        last_seq: u64,
        lease_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
    },
    Event {
        seq: u64,
        kind: EventKind,
        time_us: u64,
        endpoint: Endpoint,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit: Option<ExitInfo>,
    },
    /// What runs now, as of sequence number `seq`, in chunks; the last has
    /// `last: true`. The host's endpoints become exactly this set.
    Snapshot {
        seq: u64,
        endpoints: Vec<Endpoint>,
        last: bool,
    },
    Heartbeat {
        seq: u64,
    },
    /// Cumulative: every sequence number up to `seq` is applied.
    Ack {
        seq: u64,
    },
    /// The forwarder's zurg is shutting down; its endpoints are gone.
    Bye,
    /// Client: list a name (or every name when absent), then keep streaming
    /// changes when `watch`.
    Resolve {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default)]
        watch: bool,
    },
    /// Publisher to client: the endpoints of one name.
    Endpoints {
        name: String,
        endpoints: Vec<Endpoint>,
    },
    /// Publisher to client: the hosts it knows (only for a listing of all).
    Hosts {
        hosts: Vec<HostInfo>,
    },
    /// End of the listing; changes follow when watching.
    Synced,
    Change {
        change: ChangeKind,
        reason: Reason,
        endpoint: Endpoint,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit: Option<ExitInfo>,
        /// Publisher's wall clock when it applied the change.
        time_us: u64,
    },
    /// Client: starts and exits from the publisher's journal
    /// (`zurg history --publisher`), optionally of one service, one host
    /// (its address or zurg GPID), since a time.
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_us: Option<u64>,
    },
    /// Publisher to client: journal records (as `zurg history --json`
    /// prints them, with `zurg` and `seq`), oldest first, in chunks, then
    /// `synced`. `older`, on the first chunk: matching records left out
    /// because the answer holds only the newest. `unknown_name`, on the
    /// first chunk: the query named a service and the journal holds no
    /// record of it (of that host) at any time, so `--since` is not why
    /// the answer is empty.
    Records {
        records: Vec<serde_json::Value>,
        #[serde(default)]
        older: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unknown_name: bool,
    },
    /// Operator to publisher: run `verb` on `host` (its zurg GPID, address
    /// or hostname). `id` is the operator's, echoed in the answer.
    Request {
        id: u64,
        host: String,
        verb: Verb,
        /// The operator assembles an answer from `part` frames; without
        /// it (an older zurg) an answer over one frame is `too_large`.
        #[serde(default, skip_serializing_if = "is_false")]
        parts: bool,
    },
    /// Publisher to host: run `verb` as the control socket would, for the
    /// operator key `operator` (a fingerprint, never the token). `id` is
    /// the publisher's, echoed in the answer.
    Run {
        id: u64,
        operator: String,
        verb: Verb,
        /// The answer may come in `part` frames: the operator asked so,
        /// and this publisher relays them.
        #[serde(default, skip_serializing_if = "is_false")]
        parts: bool,
    },
    /// Host to publisher, then publisher to operator: a piece of the JSON
    /// text of an answer's `result` too large for one frame, for a request
    /// that allowed parts. Pieces come in order from index 0; the one with
    /// `last` is followed by the `answer` itself, without a `result`.
    Part {
        id: u64,
        index: u32,
        last: bool,
        data: String,
    },
    /// Host to publisher, then publisher to operator: the control reply
    /// (`ok` with `result`, or `error`), under the receiver's `id`. `host`
    /// is the zurg GPID that answered, when one did.
    Answer {
        id: u64,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<serde_json::Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// Sent before the sender closes the connection.
    Error {
        message: String,
        /// From a publisher: it is shutting down, so a forwarder moves to
        /// the next publisher of its list at once. An older peer ignores
        /// the field and still fails over, just after its usual backoff.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stopping: bool,
    },
}

impl Frame {
    pub fn type_name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::Challenge { .. } => "challenge",
            Frame::Auth { .. } => "auth",
            Frame::Welcome { .. } => "welcome",
            Frame::Event { .. } => "event",
            Frame::Snapshot { .. } => "snapshot",
            Frame::Heartbeat { .. } => "heartbeat",
            Frame::Ack { .. } => "ack",
            Frame::Bye => "bye",
            Frame::Resolve { .. } => "resolve",
            Frame::Endpoints { .. } => "endpoints",
            Frame::Hosts { .. } => "hosts",
            Frame::Synced => "synced",
            Frame::Change { .. } => "change",
            Frame::History { .. } => "history",
            Frame::Records { .. } => "records",
            Frame::Request { .. } => "request",
            Frame::Run { .. } => "run",
            Frame::Answer { .. } => "answer",
            Frame::Part { .. } => "part",
            Frame::Error { .. } => "error",
        }
    }
}

/// A text field a host sends the publisher. Each has a maximum, what a
/// zurg host can send at most (its unit files' bounds, or the type's
/// longest text), so that no one field can fill a frame: a listing chunk
/// of `CHUNK` endpoints then stays under some 280 KiB, not 8 MiB, and the
/// registry, etcd and every watcher hold what a unit file allows.
/// docs/naming.md lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// An endpoint's `service`: a unit's name, or an instance's.
    Service,
    /// An endpoint's `version`: the unit's `version` key.
    Version,
    /// An endpoint's `ip`, and a forwarder hello's `host`: an IP address.
    Ip,
    /// An endpoint's `gpid`.
    Gpid,
    /// An endpoint's `host`, and a hello's `zurg`: zurg's own GPID.
    Zurg,
    /// An exit's `signal`: a signal's name.
    Signal,
    /// A hello's `boot`: the kernel's boot id, a UUID.
    Boot,
    /// A hello's `hostname` (HOST_NAME_MAX).
    Hostname,
    /// A hello's `nonce`: 16 bytes in hex from a zurg.
    Nonce,
    /// A hello's `instance`: 16 bytes in hex from a zurg.
    Instance,
    /// An auth frame's `mac`: an HMAC-SHA256 in hex.
    Mac,
    /// A host as an operator's request or a history query names it: its
    /// zurg GPID, its address or its hostname.
    HostRef,
    /// An upgrade's `md5` or `sha256`: a digest in hex (room for a
    /// prefix).
    Digest,
    /// An upgrade's `exec`: a path (PATH_MAX).
    Path,
    /// A relayed request's `operator`: the operator key's id
    /// (`relay::key_id`, `op:` and 12 hex digits), with room for a longer
    /// fingerprint.
    Operator,
}

impl Field {
    /// The most bytes it may hold.
    pub const fn max(self) -> usize {
        match self {
            Field::Service => crate::unit::parse::MAX_SERVICE_NAME_LEN,
            Field::Version => crate::unit::parse::MAX_VERSION_LEN,
            Field::Ip => crate::gpid::MAX_IP_TEXT,
            Field::Gpid | Field::Zurg => crate::gpid::MAX_TEXT,
            Field::Signal => 32,
            Field::Boot | Field::Hostname => 64,
            // Room past zurg's 32 hex digits for another client's longer
            // secret, as the instance rule has always allowed.
            Field::Nonce | Field::Instance | Field::Mac => 200,
            Field::HostRef => {
                // The longest of what names a host.
                let (gpid, hostname) = (crate::gpid::MAX_TEXT, Field::Hostname.max());
                if gpid > hostname {
                    gpid
                } else {
                    hostname
                }
            }
            Field::Digest => 128,
            Field::Path => 4096,
            Field::Operator => 64,
        }
    }

    /// `text`, found `at` a place in a frame, within the maximum.
    fn check(self, at: &'static str, text: &str) -> Result<(), FrameError> {
        if text.len() > self.max() {
            return Err(FrameError::FieldTooLong {
                field: at,
                len: text.len(),
                max: self.max(),
            });
        }
        Ok(())
    }

    fn check_opt(self, at: &'static str, text: &Option<String>) -> Result<(), FrameError> {
        text.as_deref().map_or(Ok(()), |t| self.check(at, t))
    }
}

fn check_endpoint(e: &Endpoint) -> Result<(), FrameError> {
    Field::Service.check("endpoint.service", &e.service)?;
    Field::Version.check_opt("endpoint.version", &e.version)?;
    Field::Ip.check("endpoint.ip", &e.ip)?;
    Field::Gpid.check("endpoint.gpid", &e.gpid)?;
    Field::Zurg.check("endpoint.host", &e.host)
}

/// The text fields of a verb an operator asks a host to run. Exhaustive,
/// so a new verb's fields get their bounds.
fn check_verb(verb: &Verb) -> Result<(), FrameError> {
    let names = |names: &[String]| {
        names
            .iter()
            .try_for_each(|n| Field::Service.check("request.verb.names", n))
    };
    let name = |n: &String| Field::Service.check("request.verb.name", n);
    let name_opt = |n: &Option<String>| Field::Service.check_opt("request.verb.name", n);
    match verb {
        Verb::Status { names: n }
        | Verb::Start { names: n, .. }
        | Verb::Stop { names: n, .. }
        | Verb::Restart { names: n, .. }
        | Verb::Stats { names: n }
        | Verb::Wait { names: n, .. } => names(n),
        Verb::Signal { name: n, signal } => {
            name(n)?;
            Field::Signal.check("request.verb.signal", signal)
        }
        Verb::Gpid { name: n } | Verb::Rollback { name: n } => name(n),
        Verb::History { name: n, .. } | Verb::Logs { name: n, .. } => name_opt(n),
        Verb::Upgrade {
            name: n,
            version,
            md5,
            sha256,
            exec,
            ..
        } => {
            name(n)?;
            Field::Version.check("request.verb.version", version)?;
            Field::Digest.check_opt("request.verb.md5", md5)?;
            Field::Digest.check_opt("request.verb.sha256", sha256)?;
            Field::Path.check_opt("request.verb.exec", exec)
        }
        Verb::Version | Verb::Reload | Verb::Events { .. } | Verb::Shutdown { .. } => Ok(()),
    }
}

/// What a host checks of a request its publisher relays (`run`), before it
/// runs, logs or journals any of it: the operator key's id is at most
/// `Field::Operator` bytes of printable ASCII (a fingerprint, as
/// `relay::key_id` makes it), and the verb's fields are held to the
/// bounds the publisher holds an operator's request to. A publisher that
/// sends more is not a zurg, or a compromised one: without this check it
/// could make the host journal any text, as long as a frame.
pub fn check_run(operator: &str, verb: &Verb) -> Result<(), FrameError> {
    Field::Operator.check("run.operator", operator)?;
    if operator.is_empty() || !operator.chars().all(|c| c.is_ascii_graphic()) {
        return Err(FrameError::OddOperator {
            shown: crate::safe_text::escaped(operator).into_owned(),
        });
    }
    check_verb(verb)
}

/// Holds each text field of a frame a peer sends the publisher to its
/// `Field` maximum: a host's hello, events and snapshots; a resolve
/// client's or an operator's resolve, history query and request. Frames
/// the publisher does not take pass, and so do the relay's answers and
/// parts: the publisher bounds what it reads of an answer (its error
/// text, `session::relayed_answer`) and passes the rest on bounded by
/// `MAX_FRAME` and `MAX_REPLY` (docs/security.md).
pub fn check_fields(frame: &Frame) -> Result<(), FrameError> {
    match frame {
        Frame::Hello {
            host,
            zurg,
            boot,
            hostname,
            nonce,
            instance,
            ..
        } => {
            Field::Ip.check_opt("hello.host", host)?;
            Field::Zurg.check_opt("hello.zurg", zurg)?;
            Field::Boot.check_opt("hello.boot", boot)?;
            Field::Hostname.check_opt("hello.hostname", hostname)?;
            Field::Nonce.check_opt("hello.nonce", nonce)?;
            Field::Instance.check_opt("hello.instance", instance)
        }
        Frame::Auth { mac } => Field::Mac.check("auth.mac", mac),
        Frame::Event { endpoint, exit, .. } => {
            check_endpoint(endpoint)?;
            let signal = exit.as_ref().and_then(|x| x.signal.as_ref());
            signal.map_or(Ok(()), |s| Field::Signal.check("exit.signal", s))
        }
        Frame::Snapshot { endpoints, .. } => endpoints.iter().try_for_each(check_endpoint),
        Frame::Resolve { name, .. } => Field::Service.check_opt("resolve.name", name),
        Frame::History { name, host, .. } => {
            Field::Service.check_opt("history.name", name)?;
            Field::HostRef.check_opt("history.host", host)
        }
        Frame::Request { host, verb, .. } => {
            Field::HostRef.check("request.host", host)?;
            check_verb(verb)
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("bad frame: {0}")]
    Json(String),
    #[error("{field} of {len} bytes is over its {max}-byte limit (docs/naming.md); no name or text a zurg sends is so long: check what was asked, or this peer is not a zurg, or a broken one")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("run.operator `{shown}` is not an operator key's id (`op:` and hex digits: printable ASCII, docs/naming.md); this publisher is not a zurg, or a broken one")]
    OddOperator { shown: String },
}

/// Appends one frame, header and body, to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    // Serializing plain data into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, frame);
    let len = u32::try_from(out.len().saturating_sub(start).saturating_sub(4)).unwrap_or(0);
    if let Some(header) = out.get_mut(start..start.saturating_add(4)) {
        header.copy_from_slice(&len.to_be_bytes());
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How many bytes `c` takes inside a JSON string as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' => 2,
        // \n, \t and the like take 2; the rest \u00XX takes 6.
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// `result` (the JSON text of an answer's result) as `part` frames of
/// request `id`, each under `MAX_FRAME` once encoded. Cut at character
/// boundaries by each character's escaped size, so a result full of
/// quotes still fits. `None` when `text` is over `MAX_REPLY`.
pub fn parts(id: u64, text: &str) -> Option<Vec<Frame>> {
    if text.len() > MAX_REPLY {
        return None;
    }
    let budget = MAX_FRAME.saturating_sub(PART_OVERHEAD);
    let mut frames = Vec::new();
    let mut start = 0;
    let mut used: usize = 0;
    let push = |frames: &mut Vec<Frame>, data: &str| {
        let index = u32::try_from(frames.len()).unwrap_or(u32::MAX);
        frames.push(Frame::Part {
            id,
            index,
            last: false,
            data: data.to_string(),
        });
    };
    for (at, c) in text.char_indices() {
        let cost = escaped_len(c);
        if used.saturating_add(cost) > budget {
            push(&mut frames, text.get(start..at).unwrap_or_default());
            start = at;
            used = 0;
        }
        used = used.saturating_add(cost);
    }
    push(&mut frames, text.get(start..).unwrap_or_default());
    if let Some(Frame::Part { last, .. }) = frames.last_mut() {
        *last = true;
    }
    Some(frames)
}

/// An operator's side of `part` frames: the pieces of each request's
/// result, in order, bounded by `MAX_REPLY`.
#[derive(Debug, Default)]
pub struct Assembly {
    pieces: std::collections::HashMap<u64, Pieces>,
}

#[derive(Debug, Default)]
struct Pieces {
    text: String,
    next: u32,
    last: bool,
}

impl Assembly {
    /// Takes one `part`; an error when it is out of order, follows the
    /// last, or makes the result larger than `MAX_REPLY`.
    pub fn add(&mut self, id: u64, index: u32, last: bool, data: &str) -> Result<(), String> {
        let p = self.pieces.entry(id).or_default();
        if p.last || index != p.next {
            let expected = p.next;
            self.pieces.remove(&id);
            return Err(format!(
                "the answer to request {id} came apart: part {index} where part {expected} was due"
            ));
        }
        if p.text.len().saturating_add(data.len()) > MAX_REPLY {
            self.pieces.remove(&id);
            return Err(format!(
                "the answer to request {id} is over the {MAX_REPLY}-byte limit of a remote reply; name fewer services"
            ));
        }
        p.text.push_str(data);
        p.next = p.next.saturating_add(1);
        p.last = last;
        Ok(())
    }

    /// The result the parts of request `id` carried, when its answer came
    /// without one: `None` when no part came, an error when they did not
    /// end with the last or are not JSON.
    pub fn finish(&mut self, id: u64) -> Option<Result<serde_json::Value, String>> {
        let p = self.pieces.remove(&id)?;
        if !p.last {
            return Some(Err(format!(
                "the answer to request {id} ended after part {} without its last part",
                p.next.saturating_sub(1)
            )));
        }
        Some(
            serde_json::from_str(&p.text)
                .map_err(|e| format!("the answer to request {id} is not JSON once assembled: {e}")),
        )
    }
}

pub fn to_bytes(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    encode(frame, &mut out);
    out
}

/// Splits a byte stream into frames. Feed it what arrives; take frames out
/// until it returns `Ok(None)`. After an error the stream cannot be trusted
/// and the connection should be closed.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max: usize,
    /// Each frame's fields are held to `check_fields`.
    fields: bool,
}

impl Decoder {
    pub fn new(max: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            max,
            fields: false,
        }
    }

    /// The publisher's side of a connection: frames of `MAX_FRAME`, and
    /// each text field a host sends within its `Field` maximum.
    pub fn publisher() -> Decoder {
        Decoder {
            fields: true,
            ..Decoder::new(MAX_FRAME)
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet framed.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The length the next frame announces, checked against the limit, so a
    /// reader can refuse it before buffering the body.
    fn next_len(&self) -> Result<Option<usize>, FrameError> {
        let Some(header) = self.buf.get(..4) else {
            return Ok(None);
        };
        let mut be = [0u8; 4];
        be.copy_from_slice(header);
        let len = usize::try_from(u32::from_be_bytes(be)).unwrap_or(usize::MAX);
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        Ok(Some(len))
    }

    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(len) = self.next_len()? else {
            return Ok(None);
        };
        let end = len.saturating_add(4);
        let Some(body) = self.buf.get(4..end) else {
            return Ok(None);
        };
        let frame =
            serde_json::from_slice::<Frame>(body).map_err(|e| FrameError::Json(e.to_string()));
        self.buf.drain(..end);
        let frame = frame?;
        if self.fields {
            check_fields(&frame)?;
        }
        Ok(Some(frame))
    }
}

type HmacSha256 = Hmac<Sha256>;

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length (longer ones are hashed first), so
    // `new_from_slice` has no error to report here.
    <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()))
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`, in hex.
pub fn mac(key: &[u8], message: &[u8]) -> String {
    let mut m = keyed(key);
    m.update(message);
    hex(&m.finalize().into_bytes())
}

fn proof_message(prover: &str, nonce: &str) -> String {
    format!("zurg-publish/{PROTOCOL} {prover} {nonce}")
}

/// The MAC a side sends to prove it knows the token: over its role and the
/// other side's nonce, so a MAC cannot be replayed in the other direction.
pub fn proof(token: &[u8], prover: &str, nonce: &str) -> String {
    mac(token, proof_message(prover, nonce).as_bytes())
}

/// Checks a peer's proof. The comparison is the hmac crate's, in constant
/// time, so a forger learns nothing from how long a refusal takes; a MAC
/// that is not even hex is refused before any comparison.
pub fn verify_proof(token: &[u8], prover: &str, nonce: &str, mac_hex: &str) -> bool {
    let Some(claimed) = unhex(mac_hex) else {
        return false;
    };
    let mut m = keyed(token);
    m.update(proof_message(prover, nonce).as_bytes());
    m.verify_slice(&claimed).is_ok()
}

/// Lowercase or uppercase hex to bytes; `None` for odd length or a non-hex
/// digit.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(name: &str, gpid: &str) -> Endpoint {
        Endpoint {
            service: name.into(),
            ip: "10.0.0.1".into(),
            port: 8080,
            gpid: gpid.into(),
            version: Some("1.2".into()),
            since_us: 5,
            host: "10.0.0.1:0:1:1".into(),
        }
    }

    #[test]
    fn frames_round_trip_whole_and_byte_by_byte() {
        let frames = vec![
            Frame::Hello {
                proto: PROTOCOL,
                role: Role::Forwarder,
                host: Some("10.0.0.1".into()),
                zurg: Some("10.0.0.1:0:1:1".into()),
                boot: Some("b".into()),
                hostname: None,
                nonce: None,
                instance: Some("ab".into()),
                control: vec![RemoteVerb::Status, RemoteVerb::Restart],
            },
            Frame::Request {
                id: 3,
                host: "10.0.0.3".into(),
                verb: Verb::Restart {
                    names: vec!["api".into()],
                    timeout_ms: None,
                    no_block: false,
                },
                parts: true,
            },
            Frame::Run {
                id: 9,
                operator: "op:1a2b3c4d".into(),
                verb: Verb::Signal {
                    name: "api".into(),
                    signal: "HUP".into(),
                },
                parts: false,
            },
            Frame::Part {
                id: 9,
                index: 0,
                last: true,
                data: "[{\"name\":\"api\"}]".into(),
            },
            Frame::Answer {
                id: 9,
                ok: true,
                result: Some(serde_json::json!([{"name": "api"}])),
                error: None,
                host: Some("10.0.0.3:0:1:1".into()),
            },
            Frame::Answer {
                id: 3,
                ok: false,
                result: None,
                error: Some(ErrorBody {
                    code: crate::control::proto::ErrorCode::HostNotConnected,
                    message: "no".into(),
                }),
                host: None,
            },
            Frame::Event {
                seq: 7,
                kind: EventKind::Exit,
                time_us: 9,
                endpoint: ep("web", "g1"),
                pid: Some(3),
                exit: Some(ExitInfo {
                    code: None,
                    signal: Some("SIGKILL".into()),
                }),
            },
            Frame::Ack { seq: 7 },
            Frame::Bye,
            Frame::Synced,
        ];
        let mut bytes = Vec::new();
        for f in &frames {
            encode(f, &mut bytes);
        }
        let mut d = Decoder::new(MAX_FRAME);
        let mut got = Vec::new();
        for b in &bytes {
            d.feed(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn a_large_result_goes_in_parts_that_each_fit_a_frame_and_assemble_whole() {
        // Quotes and backslashes take two bytes escaped, a control
        // character six: the worst cases for a cut by raw length.
        let rows: Vec<serde_json::Value> = (0..4000)
            .map(|i| serde_json::json!({"name": format!("svc\"{i}\\é"), "note": "\u{1}\n"}))
            .collect();
        let text = serde_json::Value::Array(rows).to_string();
        assert!(text.len() > 2 * MAX_FRAME);
        let frames = parts(7, &text).unwrap();
        assert!(frames.len() > 2);
        let mut assembly = Assembly::default();
        let mut d = Decoder::new(MAX_FRAME);
        for f in &frames {
            d.feed(&to_bytes(f));
            let Some(Frame::Part {
                id,
                index,
                last,
                data,
            }) = d.next_frame().unwrap()
            else {
                panic!("not a part")
            };
            assembly.add(id, index, last, &data).unwrap();
        }
        let whole = assembly.finish(7).unwrap().unwrap();
        assert_eq!(whole.to_string(), text);
        assert!(assembly.finish(7).is_none(), "taken once");
        assert!(parts(1, &"x".repeat(MAX_REPLY + 1)).is_none());
    }

    #[test]
    fn parts_out_of_order_unfinished_or_too_many_are_refused() {
        let mut a = Assembly::default();
        a.add(1, 0, false, "[1,").unwrap();
        assert!(a
            .add(1, 2, true, "2]")
            .unwrap_err()
            .contains("part 2 where part 1"));
        a.add(2, 0, false, "[").unwrap();
        assert!(a
            .finish(2)
            .unwrap()
            .unwrap_err()
            .contains("without its last part"));
        a.add(3, 0, true, "[]").unwrap();
        assert!(a.add(3, 1, true, "x").is_err(), "nothing after the last");
        let big = "x".repeat(MAX_REPLY / 2 + 1);
        a.add(4, 0, false, &big).unwrap();
        assert!(a.add(4, 1, true, &big).unwrap_err().contains("over the"));
        assert!(a.finish(4).is_none(), "forgotten once refused");
    }

    #[test]
    fn wire_form_is_length_then_json() {
        assert_eq!(
            to_bytes(&Frame::Ack { seq: 1 }),
            b"\0\0\0\x13{\"t\":\"ack\",\"seq\":1}"
        );
        assert_eq!(to_bytes(&Frame::Bye), b"\0\0\0\x0b{\"t\":\"bye\"}");
        // An error that is no goodbye reads as it always did; a goodbye
        // reads as an error to a peer that does not know `stopping`.
        let plain = Frame::Error {
            message: "m".into(),
            stopping: false,
        };
        assert_eq!(&to_bytes(&plain)[4..], br#"{"t":"error","message":"m"}"#);
        let bye = Frame::Error {
            message: "m".into(),
            stopping: true,
        };
        let mut d = Decoder::new(MAX_FRAME);
        d.feed(&to_bytes(&bye));
        assert_eq!(d.next_frame(), Ok(Some(bye)));
        let mut d = Decoder::new(MAX_FRAME);
        let body = br#"{"t":"error","message":"m"}"#;
        d.feed(&(body.len() as u32).to_be_bytes());
        d.feed(body);
        assert_eq!(d.next_frame(), Ok(Some(plain)));
    }

    /// The field, and its limit, for which the publisher refuses `frame`.
    fn refused_field(frame: &Frame) -> Option<(&'static str, usize)> {
        let mut d = Decoder::publisher();
        d.feed(&to_bytes(frame));
        match d.next_frame() {
            Err(FrameError::FieldTooLong { field, max, .. }) => Some((field, max)),
            _ => None,
        }
    }

    #[test]
    fn the_publisher_refuses_a_field_over_its_limit_and_names_it() {
        let event = |endpoint: Endpoint| Frame::Event {
            seq: 1,
            kind: EventKind::Start,
            time_us: 1,
            endpoint,
            pid: None,
            exit: None,
        };
        let mut at_limit = ep(&"s".repeat(Field::Service.max()), "g");
        at_limit.version = Some("v".repeat(Field::Version.max()));
        let mut over = at_limit.clone();
        over.version = Some("v".repeat(Field::Version.max() + 1));
        let mut d = Decoder::publisher();
        d.feed(&to_bytes(&event(at_limit.clone())));
        d.feed(&to_bytes(&event(over.clone())));
        assert_eq!(d.next_frame(), Ok(Some(event(at_limit.clone()))));
        let refused = d.next_frame();
        assert_eq!(
            refused,
            Err(FrameError::FieldTooLong {
                field: "endpoint.version",
                len: 65,
                max: 64
            })
        );
        let message = refused.unwrap_err().to_string();
        assert!(message.contains("endpoint.version of 65 bytes is over its 64-byte limit"));
        // Other sides read the publisher's frames, which it bounded already.
        let mut plain = Decoder::new(MAX_FRAME);
        plain.feed(&to_bytes(&event(over)));
        assert!(matches!(plain.next_frame(), Ok(Some(_))));

        let mut long_name = at_limit.clone();
        long_name.service.push('s');
        let snapshot = Frame::Snapshot {
            seq: 1,
            endpoints: vec![at_limit, long_name],
            last: true,
        };
        assert_eq!(refused_field(&snapshot), Some(("endpoint.service", 69)));
        let hello = Frame::Hello {
            proto: PROTOCOL,
            role: Role::Forwarder,
            host: Some("10.0.0.1".into()),
            zurg: Some("10.0.0.1:0:1:1".into()),
            boot: None,
            hostname: Some("h".repeat(65)),
            nonce: None,
            instance: Some("0".repeat(32)),
            control: Vec::new(),
        };
        assert_eq!(refused_field(&hello), Some(("hello.hostname", 64)));
    }

    #[test]
    fn a_host_holds_a_relayed_requests_operator_to_a_short_printable_key_id() {
        let verb = Verb::Restart {
            names: vec!["api".into()],
            timeout_ms: None,
            no_block: false,
        };
        let key = super::super::relay::key_id(b"op-secret");
        assert_eq!(check_run(&key, &verb), Ok(()));
        let longest = format!("op:{}", "f".repeat(Field::Operator.max() - 3));
        assert_eq!(check_run(&longest, &verb), Ok(()));
        assert_eq!(
            check_run(&format!("{longest}f"), &verb),
            Err(FrameError::FieldTooLong {
                field: "run.operator",
                len: 65,
                max: 64
            })
        );
        for (odd, shown) in [
            ("op:1\nforged", "op:1\\nforged"),
            ("op:\x1b]0;title\x07", "op:\\x1b]0;title\\x07"),
            ("op:a b", "op:a b"),
            ("op:\u{202e}ba", "op:\\u{202e}ba"),
            ("op:é", "op:é"),
            ("", ""),
        ] {
            let e = check_run(odd, &verb).expect_err(odd);
            assert_eq!(
                e,
                FrameError::OddOperator {
                    shown: shown.into()
                }
            );
            assert!(!e.to_string().chars().any(char::is_control), "{e}");
        }
        // The verb is held as the publisher holds an operator's request.
        let long_name = Verb::Restart {
            names: vec!["a".repeat(Field::Service.max() + 1)],
            timeout_ms: None,
            no_block: false,
        };
        assert!(matches!(
            check_run(&key, &long_name),
            Err(FrameError::FieldTooLong {
                field: "request.verb.names",
                ..
            })
        ));
    }

    #[test]
    fn resolve_history_and_operator_requests_are_held_to_their_fields_by_name() {
        let long = |field: Field| "a".repeat(field.max() + 1);
        let at = |field: Field| "a".repeat(field.max());
        let request = |host: String, verb: Verb| Frame::Request {
            id: 1,
            host,
            verb,
            parts: true,
        };
        let restart = |names: Vec<String>| Verb::Restart {
            names,
            timeout_ms: None,
            no_block: false,
        };
        let ok = request(
            at(Field::HostRef),
            restart(vec!["api".into(), at(Field::Service)]),
        );
        assert_eq!(refused_field(&ok), None);
        assert_eq!(Field::HostRef.max(), crate::gpid::MAX_TEXT);
        assert_eq!(
            refused_field(&request(long(Field::HostRef), restart(vec![]))),
            Some(("request.host", Field::HostRef.max()))
        );
        assert_eq!(
            refused_field(&request(
                "h".into(),
                restart(vec!["api".into(), long(Field::Service)])
            )),
            Some(("request.verb.names", 69))
        );
        let signal = Verb::Signal {
            name: "api".into(),
            signal: long(Field::Signal),
        };
        assert_eq!(
            refused_field(&request("h".into(), signal)),
            Some(("request.verb.signal", 32))
        );
        let upgrade = |exec: String| Verb::Upgrade {
            name: "api".into(),
            version: at(Field::Version),
            md5: None,
            sha256: Some("0".repeat(64)),
            exec: Some(exec),
            window_ms: None,
        };
        assert_eq!(
            refused_field(&request("h".into(), upgrade(at(Field::Path)))),
            None
        );
        assert_eq!(
            refused_field(&request("h".into(), upgrade(long(Field::Path)))),
            Some(("request.verb.exec", 4096))
        );
        let resolve = Frame::Resolve {
            name: Some(long(Field::Service)),
            watch: true,
        };
        assert_eq!(refused_field(&resolve), Some(("resolve.name", 69)));
        let history = |name: Option<String>, host: Option<String>| Frame::History {
            name,
            host,
            since_us: None,
        };
        assert_eq!(
            refused_field(&history(Some(at(Field::Service)), Some(at(Field::HostRef)))),
            None
        );
        assert_eq!(
            refused_field(&history(None, Some(long(Field::HostRef)))),
            Some(("history.host", 85))
        );
        // A host's answer is not refused for its error's length: the
        // publisher cuts the text it reads (session::relayed_answer).
        let answer = Frame::Answer {
            id: 1,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                code: crate::control::proto::ErrorCode::Failed,
                message: "x".repeat(60_000),
            }),
            host: None,
        };
        assert_eq!(refused_field(&answer), None);
        // Its outcome is a bool and a code zurg knows; any other code is a
        // bad frame.
        let body =
            br#"{"t":"answer","id":1,"ok":false,"error":{"code":"\u001b[2J","message":"m"}}"#;
        let mut d = Decoder::publisher();
        d.feed(&u32::try_from(body.len()).unwrap().to_be_bytes());
        d.feed(body);
        assert!(matches!(d.next_frame(), Err(FrameError::Json(_))));
    }

    /// The point of the bounds: a listing chunk of `CHUNK` endpoints, every
    /// field at its limit and every character one JSON escapes to six
    /// bytes, stays a few hundred KiB (it was up to `CHUNK` frames' worth,
    /// 8 MiB).
    #[test]
    fn a_listing_chunk_of_fields_at_their_limits_stays_small() {
        let fill = |field: Field| "\u{1}".repeat(field.max());
        let worst = Endpoint {
            service: fill(Field::Service),
            ip: fill(Field::Ip),
            port: u16::MAX,
            gpid: fill(Field::Gpid),
            version: Some(fill(Field::Version)),
            since_us: u64::MAX,
            host: fill(Field::Zurg),
        };
        assert_eq!(check_endpoint(&worst), Ok(()));
        let chunk = to_bytes(&Frame::Endpoints {
            name: worst.service.clone(),
            endpoints: vec![worst; CHUNK],
        });
        assert!(chunk.len() < 320 * 1024, "{} bytes", chunk.len());
    }

    #[test]
    fn oversized_frame_refused_from_its_header() {
        let mut d = Decoder::new(16);
        d.feed(&[0, 1, 0, 0]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge {
                len: 65536,
                max: 16
            })
        );
        let mut d = Decoder::new(16);
        d.feed(&[0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in [
            &b"not json"[..],
            b"{}",
            b"{\"t\":\"nope\"}",
            b"[1]",
            b"{\"t\":\"ack\"}",
        ] {
            let mut d = Decoder::new(MAX_FRAME);
            let mut bytes = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
            bytes.extend_from_slice(body);
            d.feed(&bytes);
            assert!(
                matches!(d.next_frame(), Err(FrameError::Json(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            mac(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let long_key = [0xaau8; 131];
        assert_eq!(
            mac(
                &long_key,
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        let good = proof(b"k", "client", "n1");
        assert!(verify_proof(b"k", "client", "n1", &good));
        assert!(verify_proof(b"k", "client", "n1", &good.to_uppercase()));
        assert!(!verify_proof(b"k2", "client", "n1", &good));
        assert!(!verify_proof(b"k", "forwarder", "n1", &good));
        assert!(!verify_proof(b"k", "client", "n2", &good));
        assert!(!verify_proof(b"k", "client", "n1", good.get(..62).unwrap()));
        assert!(!verify_proof(b"k", "client", "n1", "zz"));
        assert!(!verify_proof(b"k", "client", "n1", ""));
        assert_ne!(proof(b"k", "publisher", "n"), proof(b"k", "forwarder", "n"));
    }
}
