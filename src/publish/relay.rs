//! Remote control through the publisher (`--operator-token-file`): the
//! publisher's bookkeeping for requests it relays from operators to hosts.
//!
//! Pure state, no I/O: the server loop asks it whether a request may go,
//! sends the `run` frame down the host's existing connection, and hands
//! it the host's answer, the host's disconnection, or the time. Every
//! request ends in exactly one answer to its operator: the host's, or one
//! of the publisher's own errors (host not connected, verb not allowed,
//! no answer in time).
//!
//! Bounds: `MAX_PER_OPERATOR` outstanding requests per operator
//! connection, `MAX_PENDING` in all, and a deadline per request.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use super::proto::{Frame, MAX_REPLY};
use super::store::ConnId;
use crate::control::proto::{ErrorBody, ErrorCode, RemoteVerb, Verb};

/// Requests one operator connection may have outstanding.
pub const MAX_PER_OPERATOR: usize = 16;
/// Requests outstanding across all operators.
pub const MAX_PENDING: usize = 1024;
/// How long a host has to answer. A restart answers once the service is
/// back, which its stop timeout bounds; a host silent this long is
/// reported as such (`host_silent`).
pub const DEADLINE_MS: u64 = 60_000;
/// The longest a host is given for a start, stop or restart that asked to
/// wait longer than `DEADLINE_MS` (`--timeout`); the operator's client
/// waits as long, and the host waits no longer than this less
/// `WAIT_SLACK_MS`.
pub const MAX_DEADLINE_MS: u64 = 600_000;
/// What a host is given beyond the wait a request asked for, to send the
/// answer up.
pub const WAIT_SLACK_MS: u64 = 5_000;

/// How long a host has to answer `verb`: `DEADLINE_MS`, or the wait the
/// request asked for (a start's, stop's or restart's `timeout_ms`) and
/// `WAIT_SLACK_MS`, up to `MAX_DEADLINE_MS`. A `start --timeout 2m`
/// through the publisher is then answered with its outcome, not cut off
/// as `host_silent` at 60 s while the host still waits.
pub fn deadline_ms(verb: &Verb) -> u64 {
    let asked = match verb {
        Verb::Start { timeout_ms, .. }
        | Verb::Restart { timeout_ms, .. }
        | Verb::Stop { timeout_ms, .. } => *timeout_ms,
        _ => None,
    };
    asked.map_or(DEADLINE_MS, |ms| {
        ms.saturating_add(WAIT_SLACK_MS)
            .clamp(DEADLINE_MS, MAX_DEADLINE_MS)
    })
}

/// The operator key's id, as journals and logs show it: a fingerprint of
/// the operator token (12 hex digits of its SHA-256), never the token.
pub fn key_id(token: &[u8]) -> String {
    let digest = Sha256::digest(token);
    format!(
        "op:{}",
        super::proto::hex(digest.get(..6).unwrap_or_default())
    )
}

/// One request on its way to a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The operator's connection and its id for the request.
    pub operator_conn: ConnId,
    pub operator_id: u64,
    /// The host's zurg GPID.
    pub host: String,
    pub verb: RemoteVerb,
    /// The names the request named.
    pub target: String,
    pub deadline_ms: u64,
    /// How long the host was given (`deadline_ms(verb)`), for the message.
    pub wait_ms: u64,
    /// The operator assembles `part` frames (its request said so).
    pub parts: bool,
    /// Parts relayed so far, their bytes, and whether the last came.
    pub parts_seen: u32,
    pub part_bytes: usize,
    pub parts_done: bool,
}

/// What becomes of a host's `part` frame.
#[derive(Debug)]
pub enum PartOutcome {
    /// Readdressed, for the operator's connection.
    Relay { conn: ConnId, frame: Frame },
    /// It broke the rules (out of order, over `MAX_REPLY`, to a request
    /// that did not allow parts): the request ends with this error, and
    /// its later parts and answer are dropped.
    Ended(Finished),
    /// For no request waiting (already ended, or another host's).
    Dropped,
}

/// An answer for an operator, and the request it ends (for the journal).
#[derive(Debug)]
pub struct Finished {
    pub pending: Pending,
    pub frame: Frame,
}

#[derive(Debug, Default)]
pub struct Relay {
    /// The operator token; remote control is off without it.
    token: Option<Vec<u8>>,
    key: String,
    /// The verbs each connected host allows, from its hello.
    allowed: HashMap<String, Vec<RemoteVerb>>,
    /// By relay id (the publisher's own, never reused).
    pending: BTreeMap<u64, Pending>,
    next_id: u64,
}

/// An error answer from the publisher itself.
pub fn refusal(id: u64, code: ErrorCode, message: String, host: Option<String>) -> Frame {
    Frame::Answer {
        id,
        ok: false,
        result: None,
        error: Some(ErrorBody { code, message }),
        host,
    }
}

impl Relay {
    pub fn new(token: Option<Vec<u8>>) -> Relay {
        let key = token.as_deref().map(key_id).unwrap_or_default();
        Relay {
            token,
            key,
            // Ids from the clock, so a restarted publisher does not reuse
            // one a host may still be running.
            next_id: crate::os::wall_clock_us(),
            ..Relay::default()
        }
    }

    pub fn token(&self) -> Option<&[u8]> {
        self.token.as_deref()
    }

    /// The operator key's id (`key_id`), empty when remote control is off.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// A host's hello named the verbs it allows.
    pub fn host_hello(&mut self, zurg: &str, control: Vec<RemoteVerb>) {
        self.allowed.insert(zurg.to_string(), control);
    }

    /// Whether a host allows a verb, by its hello.
    pub fn allows(&self, zurg: &str, verb: RemoteVerb) -> bool {
        self.allowed.get(zurg).is_some_and(|v| v.contains(&verb))
    }

    /// Checks and registers a request for `host` (a connected zurg GPID):
    /// the `run` frame to send down the host's connection, or why it is
    /// refused.
    pub fn start(
        &mut self,
        operator_conn: ConnId,
        operator_id: u64,
        host: &str,
        verb: Verb,
        parts: bool,
        now_ms: u64,
    ) -> Result<Frame, ErrorBody> {
        let refuse = |code, message: String| Err(ErrorBody { code, message });
        let Some(remote) = RemoteVerb::of(&verb) else {
            return refuse(
                ErrorCode::Forbidden,
                format!("`{}` cannot be run through the publisher", verb.name()),
            );
        };
        if !self.allows(host, remote) {
            let allowed = self
                .allowed
                .get(host)
                .filter(|v| !v.is_empty())
                .map(|v| v.iter().map(|x| x.name()).collect::<Vec<_>>().join(","))
                .unwrap_or_else(|| "none".into());
            return refuse(
                ErrorCode::Forbidden,
                format!(
                    "host {host} does not allow remote `{remote}` (it allows: {allowed}; see zurg run --publish-control)"
                ),
            );
        }
        let mine = self
            .pending
            .values()
            .filter(|p| p.operator_conn == operator_conn)
            .count();
        if mine >= MAX_PER_OPERATOR {
            return refuse(
                ErrorCode::Busy,
                format!("{MAX_PER_OPERATOR} requests of this connection are already waiting for an answer"),
            );
        }
        if self.pending.len() >= MAX_PENDING {
            return refuse(
                ErrorCode::Busy,
                format!("{MAX_PENDING} relayed requests are already waiting; try again shortly"),
            );
        }
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        let wait_ms = deadline_ms(&verb);
        self.pending.insert(
            id,
            Pending {
                operator_conn,
                operator_id,
                host: host.to_string(),
                verb: remote,
                target: RemoteVerb::target(&verb),
                deadline_ms: now_ms.saturating_add(wait_ms),
                wait_ms,
                parts,
                parts_seen: 0,
                part_bytes: 0,
                parts_done: false,
            },
        );
        let run = Frame::Run {
            id,
            operator: self.key.clone(),
            verb,
            parts,
        };
        Ok(run)
    }

    /// A host's answer, readdressed to its operator. An answer from
    /// another host than the one asked, or to a request already ended, is
    /// dropped.
    pub fn answer(&mut self, from: &str, frame: Frame) -> Option<Finished> {
        let Frame::Answer {
            id,
            ok,
            result,
            error,
            ..
        } = frame
        else {
            return None;
        };
        if self.pending.get(&id).is_none_or(|p| p.host != from) {
            return None;
        }
        let pending = self.pending.remove(&id)?;
        if pending.parts_seen > 0 && !pending.parts_done {
            let message = format!(
                "host {from} answered after {} parts without the last; the answer is incomplete",
                pending.parts_seen
            );
            let frame = refusal(
                pending.operator_id,
                ErrorCode::Failed,
                message,
                Some(from.to_string()),
            );
            return Some(Finished { pending, frame });
        }
        let frame = Frame::Answer {
            id: pending.operator_id,
            ok,
            result,
            error,
            host: Some(from.to_string()),
        };
        Some(Finished { pending, frame })
    }

    /// A host's `part` of an answer, checked (in order, within
    /// `MAX_REPLY`, for a request that allowed parts) and readdressed to
    /// its operator. The publisher keeps no part: each goes on at once.
    pub fn part(&mut self, from: &str, frame: Frame) -> PartOutcome {
        let Frame::Part {
            id,
            index,
            last,
            data,
        } = frame
        else {
            return PartOutcome::Dropped;
        };
        let Some(p) = self.pending.get_mut(&id).filter(|p| p.host == from) else {
            return PartOutcome::Dropped;
        };
        let broken = if !p.parts {
            Some((
                ErrorCode::Failed,
                format!("host {from} sent its answer in parts, which this request did not allow"),
            ))
        } else if p.parts_done || index != p.parts_seen {
            Some((
                ErrorCode::Failed,
                format!(
                    "host {from} sent part {index} of its answer where part {} was due",
                    p.parts_seen
                ),
            ))
        } else if p.part_bytes.saturating_add(data.len()) > MAX_REPLY {
            Some((
                ErrorCode::TooLarge,
                format!(
                    "the reply of host {from} is over the {MAX_REPLY}-byte limit of a remote reply; name fewer services"
                ),
            ))
        } else {
            None
        };
        if let Some((code, message)) = broken {
            let Some(pending) = self.pending.remove(&id) else {
                return PartOutcome::Dropped;
            };
            let frame = refusal(pending.operator_id, code, message, Some(from.to_string()));
            return PartOutcome::Ended(Finished { pending, frame });
        }
        p.parts_seen = p.parts_seen.saturating_add(1);
        p.part_bytes = p.part_bytes.saturating_add(data.len());
        p.parts_done = last;
        PartOutcome::Relay {
            conn: p.operator_conn,
            frame: Frame::Part {
                id: p.operator_id,
                index,
                last,
                data,
            },
        }
    }

    /// The host's connection closed: its requests end with
    /// `host_not_connected`.
    pub fn host_gone(&mut self, zurg: &str) -> Vec<Finished> {
        self.allowed.remove(zurg);
        self.finish_where(
            |p| p.host == zurg,
            ErrorCode::HostNotConnected,
            |p| {
                format!(
                    "host {} disconnected before answering; the {} may or may not have run (see zurg history there)",
                    p.host, p.verb
                )
            },
        )
    }

    /// The operator's connection closed: nobody to answer.
    pub fn operator_gone(&mut self, conn: ConnId) {
        self.pending.retain(|_, p| p.operator_conn != conn);
    }

    /// Requests past their deadline end with `host_silent`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Finished> {
        self.finish_where(
            |p| p.deadline_ms <= now_ms,
            ErrorCode::HostSilent,
            |p| {
                format!(
                    "host {} did not answer the {} within {} s",
                    p.host,
                    p.verb,
                    p.wait_ms / 1000
                )
            },
        )
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.pending.values().map(|p| p.deadline_ms).min()
    }

    /// The latest deadline of the requests an operator's connection has
    /// outstanding: the connection is not idle before it.
    pub fn latest_deadline_of(&self, conn: ConnId) -> Option<u64> {
        self.pending
            .values()
            .filter(|p| p.operator_conn == conn)
            .map(|p| p.deadline_ms)
            .max()
    }

    fn finish_where(
        &mut self,
        which: impl Fn(&Pending) -> bool,
        code: ErrorCode,
        message: impl Fn(&Pending) -> String,
    ) -> Vec<Finished> {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| which(p))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .map(|pending| {
                let frame = refusal(
                    pending.operator_id,
                    code,
                    message(&pending),
                    Some(pending.host.clone()),
                );
                Finished { pending, frame }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restart() -> Verb {
        Verb::Restart {
            names: vec!["api".into()],
            timeout_ms: None,
            no_block: false,
        }
    }

    fn code_of(e: &ErrorBody) -> Option<ErrorCode> {
        Some(e.code)
    }

    fn code(f: &Frame) -> Option<ErrorCode> {
        match f {
            Frame::Answer { error, .. } => error.as_ref().map(|e| e.code),
            _ => None,
        }
    }

    #[test]
    fn a_request_goes_to_a_host_that_allows_it_and_its_answer_comes_back() {
        let mut r = Relay::new(Some(b"op-secret".to_vec()));
        assert!(r.key().starts_with("op:") && !r.key().contains("op-secret"));
        r.host_hello("h3", vec![RemoteVerb::Restart]);
        let run = r.start(7, 41, "h3", restart(), false, 0).unwrap();
        let Frame::Run { id, .. } = run else {
            panic!("{run:?}")
        };
        // Another host cannot answer for h3.
        let answer = |host: Option<String>| Frame::Answer {
            id,
            ok: true,
            result: Some(serde_json::json!([])),
            error: None,
            host,
        };
        assert!(r.answer("h1", answer(None)).is_none());
        let done = r.answer("h3", answer(None)).unwrap();
        assert_eq!(done.pending.operator_conn, 7);
        assert!(matches!(
            done.frame,
            Frame::Answer {
                id: 41,
                ok: true,
                ..
            }
        ));
        assert!(r.answer("h3", answer(None)).is_none(), "answered once");
    }

    #[test]
    fn refusals_are_distinct() {
        let mut r = Relay::new(Some(b"k".to_vec()));
        r.host_hello("h1", Vec::new());
        let refused = r.start(1, 1, "h1", restart(), false, 0).unwrap_err();
        assert_eq!(code_of(&refused), Some(ErrorCode::Forbidden));
        r.host_hello("h3", RemoteVerb::ALL.to_vec());
        let refused = r.start(1, 2, "h3", Verb::Reload, false, 0).unwrap_err();
        assert_eq!(code_of(&refused), Some(ErrorCode::Forbidden));
        r.start(1, 3, "h3", restart(), false, 0).unwrap();
        let gone = r.host_gone("h3");
        assert_eq!(gone.len(), 1);
        assert_eq!(code(&gone[0].frame), Some(ErrorCode::HostNotConnected));
    }

    #[test]
    fn bounds_and_deadline() {
        let mut r = Relay::new(Some(b"k".to_vec()));
        r.host_hello("h", vec![RemoteVerb::Status]);
        let status = || Verb::Status { names: vec![] };
        for i in 0..MAX_PER_OPERATOR as u64 {
            r.start(1, i, "h", status(), false, 0).unwrap();
        }
        let busy = r.start(1, 99, "h", status(), false, 0).unwrap_err();
        assert_eq!(code_of(&busy), Some(ErrorCode::Busy));
        r.start(2, 1, "h", status(), false, 5).unwrap();
        assert_eq!(r.next_deadline(), Some(DEADLINE_MS));
        let late = r.expire(DEADLINE_MS);
        assert_eq!(late.len(), MAX_PER_OPERATOR);
        assert!(late
            .iter()
            .all(|f| code(&f.frame) == Some(ErrorCode::HostSilent)));
        r.operator_gone(2);
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn a_start_that_asked_to_wait_longer_gets_longer_to_answer() {
        let start = |timeout_ms| Verb::Start {
            names: vec!["mig".into()],
            timeout_ms,
            no_block: false,
        };
        assert_eq!(deadline_ms(&start(None)), DEADLINE_MS);
        assert_eq!(deadline_ms(&start(Some(1_000))), DEADLINE_MS);
        assert_eq!(deadline_ms(&start(Some(120_000))), 125_000);
        assert_eq!(deadline_ms(&start(Some(3_600_000))), MAX_DEADLINE_MS);
        let mut r = Relay::new(Some(b"k".to_vec()));
        r.host_hello("h", RemoteVerb::ALL.to_vec());
        r.start(1, 1, "h", start(Some(120_000)), false, 10).unwrap();
        r.start(1, 2, "h", Verb::Status { names: vec![] }, false, 10)
            .unwrap();
        assert_eq!(r.latest_deadline_of(1), Some(125_010));
        let late = r.expire(10 + DEADLINE_MS);
        assert_eq!(late.len(), 1, "only the status is late at 60 s");
        assert!(r.expire(125_009).is_empty());
        let late = r.expire(125_010);
        assert_eq!(late.len(), 1);
        assert!(
            matches!(&late[0].frame, Frame::Answer { error: Some(e), .. } if e.message.contains("within 125 s")),
            "{:?}",
            late[0].frame
        );
    }

    fn part(id: u64, index: u32, last: bool, data: &str) -> Frame {
        Frame::Part {
            id,
            index,
            last,
            data: data.into(),
        }
    }

    /// The answer that follows its parts.
    fn without_result(id: u64) -> Frame {
        Frame::Answer {
            id,
            ok: true,
            result: None,
            error: None,
            host: None,
        }
    }

    fn run_id(run: &Frame) -> u64 {
        match run {
            Frame::Run { id, .. } => *id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parts_go_on_to_the_operator_in_order_and_the_answer_ends_them() {
        let mut r = Relay::new(Some(b"k".to_vec()));
        r.host_hello("h", vec![RemoteVerb::Status]);
        let status = || Verb::Status { names: vec![] };
        let run = r.start(4, 40, "h", status(), true, 0).unwrap();
        assert!(matches!(run, Frame::Run { parts: true, .. }));
        let id = run_id(&run);
        assert!(matches!(
            r.part("other", part(id, 0, false, "[")),
            PartOutcome::Dropped
        ));
        match r.part("h", part(id, 0, false, "[")) {
            PartOutcome::Relay { conn: 4, frame } => assert_eq!(frame, part(40, 0, false, "[")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.part("h", part(id, 1, true, "]")),
            PartOutcome::Relay { .. }
        ));
        let answer = without_result(id);
        let done = r.answer("h", answer).unwrap();
        assert!(matches!(
            done.frame,
            Frame::Answer {
                id: 40,
                ok: true,
                result: None,
                ..
            }
        ));

        // Out of order: the request ends with an error, the rest is dropped.
        let id = run_id(&r.start(4, 41, "h", status(), true, 0).unwrap());
        assert!(matches!(
            r.part("h", part(id, 0, false, "[")),
            PartOutcome::Relay { .. }
        ));
        match r.part("h", part(id, 2, false, "]")) {
            PartOutcome::Ended(f) => assert_eq!(code(&f.frame), Some(ErrorCode::Failed)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.part("h", part(id, 1, true, "]")),
            PartOutcome::Dropped
        ));

        // Parts to an operator that did not ask for them.
        let id = run_id(&r.start(4, 42, "h", status(), false, 0).unwrap());
        assert!(matches!(
            r.part("h", part(id, 0, true, "[]")),
            PartOutcome::Ended(_)
        ));

        // An answer before the last part is an error, not a short result.
        let id = run_id(&r.start(4, 43, "h", status(), true, 0).unwrap());
        let _ = r.part("h", part(id, 0, false, "["));
        let answer = without_result(id);
        let done = r.answer("h", answer).unwrap();
        assert_eq!(code(&done.frame), Some(ErrorCode::Failed));

        // Over the bound.
        let id = run_id(&r.start(4, 44, "h", status(), true, 0).unwrap());
        let half = "x".repeat(MAX_REPLY / 2 + 1);
        let _ = r.part("h", part(id, 0, false, &half));
        match r.part("h", part(id, 1, true, &half)) {
            PartOutcome::Ended(f) => assert_eq!(code(&f.frame), Some(ErrorCode::TooLarge)),
            other => panic!("{other:?}"),
        }
    }
}
