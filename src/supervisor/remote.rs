//! The host's side of remote control through the publisher
//! (`zurg run --publish ADDR --publish-control VERBS`).
//!
//! The host never listens: requests arrive down the connection its
//! forwarder dialed out. Each is checked against the verbs this host
//! allows, then run through the same path as a control socket request
//! (`on_request`), under a `ConnId::remote` so that its reply, whenever it
//! comes (a restart waits for the service), goes back to the forwarder
//! instead of a socket. Every one is journaled with the operator key's id
//! and the outcome.

use std::collections::{HashMap, VecDeque};

use super::Supervisor;
use crate::control::proto::{ErrorCode, RemoteVerb, Reply, Request, Verb};
use crate::control::server::{ConnId, Incoming, Peer};
use crate::journal::{Kind as JournalKind, RemoteNote};
use crate::publish::proto::Frame;
use crate::service::Input;

/// Relayed requests running at once; past it a request is answered `busy`
/// at once. A publisher bounds its own side too.
const MAX_RUNNING: usize = 64;

/// A relayed request that has not been answered yet.
#[derive(Debug)]
struct Running {
    operator: String,
    verb: RemoteVerb,
    target: String,
}

#[derive(Debug, Default)]
pub(super) struct Remote {
    /// `--publish-control`: what operators may run here.
    allowed: Vec<RemoteVerb>,
    /// By the publisher's relay id.
    running: HashMap<u64, Running>,
}

impl Remote {
    pub(super) fn new(allowed: Vec<RemoteVerb>) -> Remote {
        Remote {
            allowed,
            running: HashMap::new(),
        }
    }
}

/// Why a relayed request is refused before it runs, if it is.
fn refusal(allowed: &[RemoteVerb], verb: &Verb) -> Option<(ErrorCode, String)> {
    let Some(remote) = RemoteVerb::of(verb) else {
        return Some((
            ErrorCode::Forbidden,
            format!("`{}` cannot be run through the publisher", verb.name()),
        ));
    };
    if allowed.contains(&remote) {
        return None;
    }
    let now = if allowed.is_empty() {
        "none".to_string()
    } else {
        allowed
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(",")
    };
    Some((
        ErrorCode::Forbidden,
        format!(
            "this host does not allow remote `{remote}` (its zurg runs with --publish-control {now})"
        ),
    ))
}

impl Supervisor {
    /// Runs what the publisher relayed since the last turn.
    pub(super) fn run_remote_requests(&mut self, work: &mut VecDeque<(usize, Input)>) {
        let runs = match &mut self.forwarder {
            Some(f) => f.take_runs(),
            None => return,
        };
        for (id, operator, verb) in runs {
            let conn = ConnId::remote(id);
            let Some(remote_verb) = RemoteVerb::of(&verb) else {
                // No publisher of ours sends one: refused, and logged only.
                crate::log!(
                    "remote {} from operator {operator}: refused, it cannot be run remotely",
                    verb.name()
                );
                let answer = Frame::Answer {
                    id,
                    ok: false,
                    result: None,
                    error: Some(crate::control::proto::ErrorBody {
                        code: ErrorCode::Forbidden,
                        message: format!("`{}` cannot be run through the publisher", verb.name()),
                    }),
                    host: Some(self.own_gpid.clone()),
                };
                let now = self.reactor.now_ms();
                if let Some(f) = &mut self.forwarder {
                    f.answer(&answer, self.reactor.registry(), now);
                }
                continue;
            };
            let running = Running {
                operator: operator.clone(),
                verb: remote_verb,
                target: RemoteVerb::target(&verb),
            };
            if self.remote.running.contains_key(&id) {
                continue; // a resend of one already running
            }
            let refused = refusal(&self.remote.allowed, &verb).or_else(|| {
                (self.remote.running.len() >= MAX_RUNNING).then(|| {
                    (
                        ErrorCode::Busy,
                        format!("{MAX_RUNNING} remote requests are already running here"),
                    )
                })
            });
            crate::log!(
                "remote {} {} from operator {operator}{}",
                verb.name(),
                running.target,
                if refused.is_some() { ": refused" } else { "" }
            );
            self.remote.running.insert(id, running);
            if let Some((code, message)) = refused {
                self.reply(conn, &Reply::error(id, code, message));
                continue;
            }
            // As root on the control socket: the publisher checked the
            // operator token, and this host chose the verbs.
            let incoming = Incoming {
                conn,
                peer: Peer {
                    pid: 0,
                    uid: 0,
                    gid: 0,
                },
                request: Request { id, verb },
            };
            self.on_request(incoming, work);
        }
    }

    /// The reply to a relayed request: journaled, then sent back up the
    /// forwarder's connection. A stream item (not for the allowed verbs)
    /// is ignored.
    pub(super) fn remote_reply(&mut self, relay_id: u64, reply: &Reply) {
        if reply.ok.is_none() {
            return;
        }
        let Some(running) = self.remote.running.remove(&relay_id) else {
            return;
        };
        let ok = reply.ok == Some(true);
        let note = RemoteNote {
            operator: running.operator,
            verb: running.verb,
            ok,
            error: reply.error.as_ref().map(|e| e.code),
        };
        crate::log!(
            "remote {} {}: {}",
            running.verb,
            running.target,
            note.describe()
        );
        self.journal.send(&crate::journal::Record {
            time_us: crate::os::wall_clock_us(),
            service: running.target,
            kind: JournalKind::RemoteRequest,
            remote: Some(note),
            reason: reply.error.as_ref().map(|e| e.message.clone()),
            ..crate::journal::Record::default()
        });
        let answer = Frame::Answer {
            id: relay_id,
            ok,
            result: reply.result.as_ref().map(|r| r.to_value()),
            error: reply.error.clone(),
            host: Some(self.own_gpid.clone()),
        };
        let now = self.reactor.now_ms();
        if let Some(f) = &mut self.forwarder {
            f.answer(&answer, self.reactor.registry(), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_verbs_pass() {
        let restart = Verb::Restart {
            names: vec!["api".into()],
            timeout_ms: None,
            no_block: false,
        };
        assert!(refusal(&[RemoteVerb::Restart], &restart).is_none());
        let (code, msg) = refusal(&[RemoteVerb::Status], &restart).unwrap();
        assert_eq!(code, ErrorCode::Forbidden);
        assert!(msg.contains("--publish-control status"), "{msg}");
        let (_, msg) = refusal(&[], &restart).unwrap();
        assert!(msg.contains("--publish-control none"), "{msg}");
        let (_, msg) = refusal(&RemoteVerb::ALL, &Verb::Reload).unwrap();
        assert!(msg.contains("cannot be run through the publisher"), "{msg}");
    }
}
