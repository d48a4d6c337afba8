//! The publisher's session rules for forwarders (pure): which hello a
//! host's connection needs, which instance may speak for a host, which
//! connection a reconnect replaces, how far a seq may jump and which
//! frames a forwarder may send.
//!
//! `server.rs` runs them on its sockets, and the `publish_registry` fuzz
//! target (`fuzz/registry.rs`) runs the same ones on a script of frames, so
//! what the fuzzer checks is the rules the publisher runs. What is left to
//! each is what it alone has: tokens, the relay, the journal, listings and
//! snapshot budgets in the server; the replay of changes in the harness.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::control::proto::{ErrorBody, RemoteVerb};

use super::proto::{
    Endpoint, EventKind, ExitInfo, Frame, HostInfo, MAX_RELAYED_ERROR, MAX_SEQ_JUMP, PROTOCOL,
};
use super::registry::Registry;
use super::store::ConnId;

/// The shortest instance secret a hello may carry: zurg sends 32 hex
/// digits. The longest is `proto::Field::Instance`'s, held by the decoder.
pub const MIN_INSTANCE: usize = 16;

/// Why the publisher closes a connection; the text is the error frame it
/// sends before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("protocol {theirs} is not spoken here (this publisher speaks {PROTOCOL})")]
    Protocol { theirs: u32 },
    #[error("a forwarder's hello needs host, zurg and instance")]
    Incomplete,
    #[error("bad zurg in hello: it is empty; a forwarder names itself by its zurg GPID")]
    EmptyZurg,
    #[error("bad instance in hello: expected at least {MIN_INSTANCE} characters")]
    ShortInstance,
    #[error("host {zurg} is live and this is not its zurg instance (another instance secret); a restarted zurg has a new GPID")]
    NotItsInstance { zurg: String },
    #[error("seq {seq} jumps more than {MAX_SEQ_JUMP} past the last applied {last}; refusing it")]
    SeqJump { seq: u64, last: u64 },
    #[error("unexpected {0} frame from a forwarder")]
    NotFromForwarder(&'static str),
}

/// The first rule of every hello, whatever its role.
pub fn check_protocol(proto: u32) -> Result<(), Refusal> {
    if proto == PROTOCOL {
        Ok(())
    } else {
        Err(Refusal::Protocol { theirs: proto })
    }
}

/// What a forwarder's hello says, once it has what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwarderHello {
    /// The host as the registry keeps it.
    pub info: HostInfo,
    pub instance: String,
    /// The verbs it lets operators run.
    pub control: Vec<RemoteVerb>,
}

/// A forwarder's hello: `host`, `zurg` and `instance` present, `zurg` not
/// empty, `instance` not short. (Each field's maximum is the decoder's.)
pub fn forwarder_hello(hello: Frame) -> Result<ForwarderHello, Refusal> {
    let Frame::Hello {
        host: Some(ip),
        zurg: Some(zurg),
        instance: Some(instance),
        boot,
        hostname,
        control,
        ..
    } = hello
    else {
        return Err(Refusal::Incomplete);
    };
    if zurg.is_empty() {
        return Err(Refusal::EmptyZurg);
    }
    if instance.len() < MIN_INSTANCE {
        return Err(Refusal::ShortInstance);
    }
    Ok(ForwarderHello {
        info: HostInfo {
            zurg,
            ip,
            boot: boot.unwrap_or_default(),
            hostname: hostname.unwrap_or_default(),
            connected: true,
            ..HostInfo::default()
        },
        instance,
        control,
    })
}

/// A frame a forwarder may send once accepted, its seq within the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromHost {
    Event {
        seq: u64,
        kind: EventKind,
        time_us: u64,
        endpoint: Endpoint,
        exit: Option<ExitInfo>,
    },
    Snapshot {
        seq: u64,
        endpoints: Vec<Endpoint>,
        last: bool,
    },
    Heartbeat,
    /// A relayed control answer, or a piece of one: the relay's.
    Answer(Frame),
    Part(Frame),
    Bye,
}

/// A frame from host `zurg`'s connection: refused when a forwarder does
/// not send its type, or when its seq jumps more than `MAX_SEQ_JUMP` past
/// the host's last applied one. A host with nothing applied yet (a fresh
/// publisher) takes any first number: a long-lived zurg resumes where it
/// is.
pub fn from_host(view: &Registry, zurg: &str, frame: Frame) -> Result<FromHost, Refusal> {
    if let Frame::Event { seq, .. } | Frame::Snapshot { seq, .. } = &frame {
        let last = view.host(zurg).map_or(0, |h| h.seq);
        if last > 0 && *seq > last.saturating_add(MAX_SEQ_JUMP) {
            return Err(Refusal::SeqJump { seq: *seq, last });
        }
    }
    Ok(match frame {
        Frame::Event {
            seq,
            kind,
            time_us,
            endpoint,
            exit,
            ..
        } => FromHost::Event {
            seq,
            kind,
            time_us,
            endpoint,
            exit,
        },
        Frame::Snapshot {
            seq,
            endpoints,
            last,
        } => FromHost::Snapshot {
            seq,
            endpoints,
            last,
        },
        Frame::Heartbeat { .. } => FromHost::Heartbeat,
        answer @ Frame::Answer { .. } => FromHost::Answer(relayed_answer(answer)),
        part @ Frame::Part { .. } => FromHost::Part(part),
        Frame::Bye => FromHost::Bye,
        other => return Err(Refusal::NotFromForwarder(other.type_name())),
    })
}

/// A host's control answer as the publisher relays and journals it. The
/// publisher reads its `ok` and its error (code and text): the text comes
/// out escaped and cut to `MAX_RELAYED_ERROR`, with a marker when cut, so
/// a host cannot write a megabyte or a terminal's escape sequences into
/// the journal or an operator's terminal. An error answer keeps no
/// `result`, a success no error, and the host's own `host` is dropped
/// (the relay names the host it asked). A success's `result` passes as
/// it came: the publisher does not read it, it is bounded by the frame,
/// and the operator's client escapes what it shows of it.
pub fn relayed_answer(answer: Frame) -> Frame {
    let Frame::Answer {
        id,
        ok,
        result,
        error,
        ..
    } = answer
    else {
        return answer;
    };
    let error = error.filter(|_| !ok).map(|e| ErrorBody {
        code: e.code,
        message: crate::safe_text::bounded(&e.message, MAX_RELAYED_ERROR).into_owned(),
    });
    Frame::Answer {
        id,
        ok,
        result: result.filter(|_| ok),
        error,
        host: None,
    }
}

/// Which connection speaks for each host, and the instance secret each
/// host said hello with.
#[derive(Debug, Default)]
pub struct Hosts {
    speakers: HashMap<String, ConnId>,
    /// SHA-256 of each host's instance secret: it serves every store, and
    /// must never reach etcd or a resolve client.
    instances: HashMap<String, [u8; 32]>,
}

impl Hosts {
    /// Connection `id`'s hello for host `zurg` with this instance secret.
    /// A host the publisher holds (connected, or within its lease in
    /// `view`) is admitted only from the instance that registered it, so a
    /// stranger can neither take its connection over nor feed it sequence
    /// numbers; the first hello for a host not held sets its instance. On
    /// admission `id` speaks for the host, and the connection it replaces
    /// (a reconnect the publisher had not noticed was dead) is returned:
    /// close it without disconnecting the host.
    pub fn admit(
        &mut self,
        id: ConnId,
        zurg: &str,
        instance: &str,
        view: &Registry,
    ) -> Result<Option<ConnId>, Refusal> {
        let digest: [u8; 32] = Sha256::digest(instance.as_bytes()).into();
        let live = self.speakers.contains_key(zurg) || view.host(zurg).is_some();
        // Digests, not the secrets: how long the comparison takes says
        // nothing about the secret.
        if live
            && self
                .instances
                .get(zurg)
                .is_some_and(|known| *known != digest)
        {
            return Err(Refusal::NotItsInstance {
                zurg: zurg.to_string(),
            });
        }
        self.instances.insert(zurg.to_string(), digest);
        let old = self.speakers.insert(zurg.to_string(), id);
        // After `id` speaks for the host: pruning first would forget the
        // secret just set for a host the registry does not hold yet, and
        // let a stranger's hello set another.
        self.prune(view);
        Ok(old.filter(|old| *old != id))
    }

    /// Forgets the secrets of hosts that are gone, once they outnumber the
    /// live ones, so the map stays the size of the registry.
    fn prune(&mut self, view: &Registry) {
        let held = view.host_count().saturating_add(self.speakers.len());
        if self.instances.len() <= held.saturating_mul(2).saturating_add(64) {
            return;
        }
        let speakers = &self.speakers;
        self.instances
            .retain(|z, _| speakers.contains_key(z) || view.host(z).is_some());
    }

    /// Connection `id` of host `zurg` closed or said bye: `true` when it
    /// was the host's live connection, which the host now has none of (a
    /// close then disconnects the host; a replaced connection's does not).
    pub fn release(&mut self, id: ConnId, zurg: &str) -> bool {
        if self.speakers.get(zurg) == Some(&id) {
            self.speakers.remove(zurg);
            return true;
        }
        false
    }

    /// The connection that speaks for `zurg`.
    pub fn speaker(&self, zurg: &str) -> Option<ConnId> {
        self.speakers.get(zurg).copied()
    }

    /// The hosts with a live connection.
    pub fn connected(&self) -> impl Iterator<Item = &String> {
        self.speakers.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(zurg: &str, instance: &str) -> Frame {
        Frame::Hello {
            proto: PROTOCOL,
            role: super::super::proto::Role::Forwarder,
            host: Some("10.0.0.1".into()),
            zurg: Some(zurg.into()),
            boot: None,
            hostname: None,
            nonce: None,
            instance: Some(instance.into()),
            control: Vec::new(),
        }
    }

    #[test]
    fn a_forwarder_hello_needs_its_fields() {
        assert_eq!(check_protocol(PROTOCOL), Ok(()));
        assert!(check_protocol(PROTOCOL + 1)
            .unwrap_err()
            .to_string()
            .contains("is not spoken here"));
        let ok = forwarder_hello(hello("z", &"1".repeat(16))).unwrap();
        assert_eq!((ok.info.zurg.as_str(), ok.info.connected), ("z", true));
        assert_eq!(
            forwarder_hello(hello("", &"1".repeat(16))),
            Err(Refusal::EmptyZurg)
        );
        assert_eq!(
            forwarder_hello(hello("z", &"1".repeat(15))),
            Err(Refusal::ShortInstance)
        );
        let bare = Frame::Hello {
            proto: PROTOCOL,
            role: super::super::proto::Role::Forwarder,
            host: None,
            zurg: Some("z".into()),
            boot: None,
            hostname: None,
            nonce: None,
            instance: Some("1".repeat(16)),
            control: Vec::new(),
        };
        assert_eq!(forwarder_hello(bare), Err(Refusal::Incomplete));
    }

    #[test]
    fn only_the_registering_instance_speaks_for_a_held_host() {
        let mut registry = Registry::new();
        let mut hosts = Hosts::default();
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        assert_eq!(hosts.admit(1, "z", &a, &registry), Ok(None));
        let info = forwarder_hello(hello("z", &a)).unwrap().info;
        registry.hello(info, 0);
        assert_eq!(
            hosts.admit(2, "z", &b, &registry),
            Err(Refusal::NotItsInstance { zurg: "z".into() })
        );
        assert_eq!(hosts.speaker("z"), Some(1));
        // The same instance reconnecting replaces the old connection, whose
        // close then leaves the host connected.
        assert_eq!(hosts.admit(3, "z", &a, &registry), Ok(Some(1)));
        assert!(!hosts.release(1, "z"));
        assert!(hosts.release(3, "z"));
        // Gone from the registry and unconnected: anyone may take the name.
        registry.drop_host("z", super::super::proto::Reason::Bye);
        assert_eq!(hosts.admit(4, "z", &b, &registry), Ok(None));
    }

    #[test]
    fn pruning_the_secrets_of_gone_hosts_keeps_the_one_just_set() {
        let registry = Registry::new();
        let mut hosts = Hosts::default();
        // Hosts come and go, so the secrets of gone ones pile up and are
        // pruned now and then: never the secret of the host just admitted.
        for n in 0..200 {
            let zurg = format!("z{n}");
            assert_eq!(hosts.admit(n, &zurg, &"a".repeat(32), &registry), Ok(None));
            assert_eq!(
                hosts.admit(1000, &zurg, &"s".repeat(32), &registry),
                Err(Refusal::NotItsInstance { zurg: zurg.clone() }),
                "after {n} hosts"
            );
            assert!(hosts.release(n, &zurg));
        }
        assert!(hosts.instances.len() <= 66, "{}", hosts.instances.len());
    }

    #[test]
    fn a_relayed_answer_carries_a_bounded_escaped_error_and_nothing_else_of_the_hosts() {
        use crate::control::proto::ErrorCode;
        let registry = Registry::new();
        let hostile = format!(
            "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m{}",
            "x".repeat(60_000)
        );
        let answer = Frame::Answer {
            id: 7,
            ok: false,
            result: Some(serde_json::json!({"junk": "x"})),
            error: Some(ErrorBody {
                code: ErrorCode::Failed,
                message: hostile.clone(),
            }),
            host: Some("someone else".into()),
        };
        let Ok(FromHost::Answer(Frame::Answer {
            id,
            ok,
            result,
            error: Some(error),
            host,
        })) = from_host(&registry, "z", answer)
        else {
            panic!("not an answer")
        };
        assert_eq!((id, ok, result, host), (7, false, None, None));
        assert_eq!(error.code, ErrorCode::Failed);
        let text = &error.message;
        assert!(text.len() <= MAX_RELAYED_ERROR, "{}", text.len());
        assert!(
            text.starts_with("\\x1b[2J\\x1b]0;pwned\\x07\\x9b31mxxx"),
            "{text}"
        );
        assert!(text.ends_with(&format!(" …[cut: {} bytes]", hostile.len())));
        assert!(!text.chars().any(char::is_control), "{text}");

        // A success keeps its result as it came, and no error.
        let fine = Frame::Answer {
            id: 8,
            ok: true,
            result: Some(serde_json::json!([{"status_text": "\u{1b}"}])),
            error: Some(ErrorBody {
                code: ErrorCode::Failed,
                message: "ignored".into(),
            }),
            host: None,
        };
        assert_eq!(
            relayed_answer(fine),
            Frame::Answer {
                id: 8,
                ok: true,
                result: Some(serde_json::json!([{"status_text": "\u{1b}"}])),
                error: None,
                host: None,
            }
        );
        // An ordinary error passes unchanged.
        let plain = Frame::Answer {
            id: 9,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                code: ErrorCode::UnknownService,
                message: "unknown service `web`".into(),
            }),
            host: None,
        };
        assert_eq!(relayed_answer(plain.clone()), plain);
    }

    #[test]
    fn a_seq_may_not_jump_far_and_a_forwarder_sends_only_its_frames() {
        let mut registry = Registry::new();
        let info = forwarder_hello(hello("z", &"a".repeat(32))).unwrap().info;
        registry.hello(info, 0);
        let snapshot = |seq| Frame::Snapshot {
            seq,
            endpoints: Vec::new(),
            last: true,
        };
        // Nothing applied yet: any first number.
        assert!(from_host(&registry, "z", snapshot(u64::MAX / 2)).is_ok());
        registry.snapshot("z", 5, Vec::new(), true, 0);
        assert!(from_host(&registry, "z", snapshot(5 + MAX_SEQ_JUMP)).is_ok());
        assert_eq!(
            from_host(&registry, "z", snapshot(6 + MAX_SEQ_JUMP)),
            Err(Refusal::SeqJump {
                seq: 6 + MAX_SEQ_JUMP,
                last: 5
            })
        );
        assert_eq!(from_host(&registry, "z", Frame::Bye), Ok(FromHost::Bye));
        assert_eq!(
            from_host(&registry, "z", Frame::Synced)
                .unwrap_err()
                .to_string(),
            "unexpected synced frame from a forwarder"
        );
    }
}
