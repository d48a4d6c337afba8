//! The forwarder inside `zurg run --publish`: pushes every start and exit to
//! the publisher, in order, with a sequence number per zurg instance.
//!
//! It lives in the supervisor's loop and never blocks it: the connect is
//! non-blocking with a deadline, writes go out as the socket takes them,
//! and every buffer is bounded. Events stay queued until acknowledged; on
//! every (re)connect the forwarder resends what the publisher lacks, then a
//! snapshot of what runs now, so a publisher that restarted or missed
//! events ends up with exactly the live set. A dead or slow publisher costs
//! a few microseconds per event (encode, queue), never a restart's time.
//!
//! What may block goes to the forwarder's own thread (`Worker`): resolving
//! `--publish` names, and reading events back from the journal. The thread
//! reports through a channel and wakes the loop with a byte on a mio pipe
//! registered under the forwarder's token, so a slow DNS server or a large
//! journal delays publishing, never a restart.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;

use mio::net::TcpStream;
use mio::unix::pipe;
use mio::{Interest, Registry, Token};

use crate::control::proto::{ErrorBody, ErrorCode, RemoteVerb, Verb};

use super::proto::{
    self, Decoder, Endpoint, EventKind, ExitInfo, Frame, PublishStatus, Role, CHUNK, MAX_FRAME,
    MAX_REPLY, PROTOCOL,
};

/// Unacknowledged events kept in memory for a resend. Past it the oldest
/// leave memory; they are read back from the journal on the next connect
/// (and the snapshot restores the live set should the journal lack them).
pub const DEFAULT_QUEUE: usize = 10_000;
/// Bytes handed to the socket's buffer ahead of acks.
const MAX_IN_FLIGHT: usize = 1024 * 1024;
const CONNECT_TIMEOUT_MS: u64 = 2_000;
const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
const MIN_BACKOFF_MS: u64 = 100;
const MAX_BACKOFF_MS: u64 = 5_000;
/// Relayed requests (`Frame::Run`) read and not yet taken by the
/// supervisor; past it one is answered `busy` at once.
const MAX_RUNS_QUEUED: usize = 64;
/// Heartbeats before the welcome says the lease.
const DEFAULT_LEASE_MS: u64 = 10_000;

/// Who this zurg is, for the hello.
#[derive(Debug, Clone)]
pub struct Identity {
    pub ip: String,
    /// zurg's own GPID.
    pub zurg: String,
    pub boot: String,
    pub hostname: String,
}

/// One start or exit, as the supervisor hands it over.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub kind: EventKind,
    pub endpoint: Endpoint,
    pub pid: Option<u32>,
    pub exit: Option<ExitInfo>,
    /// When zurg saw it, wall clock microseconds.
    pub time_us: u64,
}

/// Blocking work handed to the forwarder's thread.
pub type Job = Box<dyn FnOnce() -> Done + Send>;

/// A finished job, applied on the loop.
pub enum Done {
    /// The `--publish` names, resolved (or why none could be).
    Resolved(Result<Vec<SocketAddr>, String>),
    /// Events read back from the journal for connection number
    /// `connection`, which asked for `wanted` of them.
    Journal {
        connection: u64,
        wanted: u64,
        events: Vec<(u64, Lifecycle)>,
    },
}

/// The forwarder's thread: runs jobs in order, sends each result back and
/// writes a byte to wake the loop.
struct Worker {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Done>,
    wake: pipe::Receiver,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Worker")
    }
}

impl Worker {
    fn start(registry: &Registry, token: Token) -> io::Result<Worker> {
        let (sender, mut wake) = pipe::new()?;
        registry.register(&mut wake, token, Interest::READABLE)?;
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        let spawned = crate::log::spawn_blocking_signals("zurg-publish", move || {
            while let Ok(job) = job_rx.recv() {
                if done_tx.send(job()).is_err() {
                    return;
                }
                // A full pipe already holds a wake-up.
                let _ = (&sender).write(&[1]);
            }
        });
        if let Err(e) = spawned {
            let _ = registry.deregister(&mut wake);
            return Err(e);
        }
        Ok(Worker { jobs, done, wake })
    }
}

/// Resolves `--publish` targets, the first address of each; blocking.
pub fn resolve(targets: &[String]) -> Result<Vec<SocketAddr>, String> {
    let mut addrs = Vec::new();
    let mut errors = Vec::new();
    for t in targets {
        match t.to_socket_addrs() {
            Ok(mut found) => match found.next() {
                Some(a) => addrs.push(a),
                None => errors.push(format!("--publish {t}: no address")),
            },
            Err(e) => errors.push(format!("--publish {t}: {e}")),
        }
    }
    if addrs.is_empty() {
        return Err(errors.join("; "));
    }
    for e in errors {
        crate::log!("warning: {e}; publishing to the others");
    }
    Ok(addrs)
}

#[derive(Debug)]
enum Link {
    /// Waiting to (re)connect at `retry_at`.
    Idle {
        retry_at: u64,
    },
    Connecting {
        stream: TcpStream,
        since: u64,
    },
    /// Hello sent; waiting for a challenge or the welcome.
    Handshake {
        stream: TcpStream,
        since: u64,
        nonce: String,
    },
    Streaming {
        stream: TcpStream,
    },
}

#[derive(Debug)]
pub struct Forwarder {
    /// `--publish` as given, HOST:PORT each.
    targets: Vec<String>,
    /// Their addresses; empty until resolved.
    addrs: Vec<SocketAddr>,
    worker: Option<Worker>,
    /// A resolution is running on the worker.
    resolving: bool,
    /// The connection number whose journal read-back is running on the
    /// worker; nothing newer is sent on it until the result is in.
    awaiting_journal: Option<u64>,
    next_addr: usize,
    token: Option<Vec<u8>>,
    identity: Identity,
    link: Link,
    token_id: Token,
    decoder: Decoder,
    out: Vec<u8>,
    seq: u64,
    acked: u64,
    /// Highest sequence number written to the current connection.
    sent: u64,
    queue: VecDeque<(u64, Vec<u8>)>,
    max_queue: usize,
    /// Events that left the memory queue unacknowledged.
    dropped: u64,
    /// The range of sequence numbers to read back from the journal before
    /// the memory queue is resent.
    wants_journal: Option<(u64, u64)>,
    connects: u64,
    backoff_ms: u64,
    lease_ms: u64,
    last_heard: u64,
    next_heartbeat: u64,
    /// The last failure was logged; stay quiet until connected again.
    quiet: bool,
    /// The connection became ready for a snapshot the supervisor must send.
    wants_snapshot: bool,
    /// This zurg instance's secret for the publisher (drawn at the first
    /// connect, then kept), so only this zurg can speak for its host.
    instance: Option<String>,
    /// `--publish-control`: the verbs the hello offers operators.
    control: Vec<RemoteVerb>,
    /// Relayed requests for the supervisor: (relay id, operator, verb).
    runs: VecDeque<(u64, String, Verb)>,
    /// Relay ids of runs whose answer may come in `part` frames; each
    /// leaves when it is answered (every run is, by the supervisor or
    /// here), so it holds at most the runs in progress.
    split_ok: HashSet<u64>,
}

impl Forwarder {
    /// A forwarder for `targets` (HOST:PORT each). Addresses are used as
    /// they are; names are resolved on the worker at the first connect.
    pub fn new(
        targets: Vec<String>,
        token: Option<Vec<u8>>,
        identity: Identity,
        token_id: Token,
        max_queue: usize,
    ) -> Forwarder {
        let literal: Option<Vec<SocketAddr>> = targets.iter().map(|t| t.parse().ok()).collect();
        Forwarder {
            targets,
            addrs: literal.unwrap_or_default(),
            worker: None,
            resolving: false,
            awaiting_journal: None,
            next_addr: 0,
            token,
            identity,
            link: Link::Idle { retry_at: 0 },
            token_id,
            decoder: Decoder::new(MAX_FRAME),
            out: Vec::new(),
            seq: 0,
            acked: 0,
            sent: 0,
            queue: VecDeque::new(),
            max_queue: max_queue.max(1),
            dropped: 0,
            wants_journal: None,
            connects: 0,
            backoff_ms: MIN_BACKOFF_MS,
            lease_ms: DEFAULT_LEASE_MS,
            last_heard: 0,
            next_heartbeat: u64::MAX,
            quiet: false,
            wants_snapshot: false,
            instance: None,
            control: Vec::new(),
            runs: VecDeque::new(),
            split_ok: HashSet::new(),
        }
    }

    /// Offers `verbs` to the publisher's operators (`--publish-control`).
    pub fn with_control(mut self, verbs: Vec<RemoteVerb>) -> Forwarder {
        self.control = verbs;
        self
    }

    /// Requests the publisher relayed, for the supervisor to run.
    pub fn take_runs(&mut self) -> Vec<(u64, String, Verb)> {
        self.runs.drain(..).collect()
    }

    /// Sends an answer to a relayed request. Lost with the connection: the
    /// publisher then answers its operator itself. An answer over the
    /// frame limit (a status of some hundreds of services) goes in `part`
    /// frames when the run allowed them; else it would make the publisher
    /// drop the connection, and becomes a `too_large` error.
    pub fn answer(&mut self, frame: &Frame, registry: &Registry, now: u64) {
        let split = match frame {
            Frame::Answer { id, .. } => self.split_ok.remove(id),
            _ => false,
        };
        if !matches!(self.link, Link::Streaming { .. }) {
            return;
        }
        let bytes = if split {
            split_answer(frame)
        } else {
            fit_answer(frame)
        };
        self.out.extend_from_slice(&bytes);
        self.flush(registry, now);
    }

    fn instance(&mut self) -> Result<String, crate::publish::server::NonceError> {
        if let Some(i) = &self.instance {
            return Ok(i.clone());
        }
        let drawn = crate::publish::server::nonce()?;
        self.instance = Some(drawn.clone());
        Ok(drawn)
    }

    fn addr(&self) -> Option<SocketAddr> {
        self.addrs
            .get(self.next_addr % self.addrs.len().max(1))
            .copied()
    }

    pub fn status(&self) -> PublishStatus {
        PublishStatus {
            publisher: if self.addrs.is_empty() {
                self.targets.join(",")
            } else {
                self.addrs
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            },
            connected: matches!(self.link, Link::Streaming { .. }),
            seq: self.seq,
            acked: self.acked,
            queued: self.queue.len(),
            dropped: self.dropped,
            connects: self.connects,
        }
    }

    /// The next time `on_timer` has work.
    pub fn next_deadline(&self) -> u64 {
        match &self.link {
            Link::Idle { retry_at } => *retry_at,
            Link::Connecting { since, .. } => since.saturating_add(CONNECT_TIMEOUT_MS),
            Link::Handshake { since, .. } => since.saturating_add(HANDSHAKE_TIMEOUT_MS),
            Link::Streaming { .. } => self
                .next_heartbeat
                .min(self.last_heard.saturating_add(self.lease_ms)),
        }
    }

    /// Queues one lifecycle event, and sends it at once when connected.
    /// Returns the event's sequence number.
    pub fn publish(&mut self, event: Lifecycle, registry: &Registry, now: u64) -> u64 {
        self.seq = self.seq.saturating_add(1);
        let frame = event_frame(self.seq, event);
        self.queue.push_back((self.seq, proto::to_bytes(&frame)));
        if self.queue.len() > self.max_queue {
            let unsent = self
                .queue
                .pop_front()
                .is_some_and(|(seq, _)| seq > self.sent);
            self.dropped = self.dropped.saturating_add(1);
            if unsent && matches!(self.link, Link::Streaming { .. }) {
                // The publisher is not keeping up: start over; the next
                // connect reads what left memory back from the journal.
                let why = "the publisher is not acknowledging; queue full".to_string();
                self.fail(registry, now, why);
                return self.seq;
            }
        }
        if matches!(self.link, Link::Streaming { .. }) {
            self.fill();
            self.flush(registry, now);
        }
        self.seq
    }

    /// Moves queued events the connection has not had into the output,
    /// within the in-flight bound.
    fn fill(&mut self) {
        if self.wants_journal.is_some() || self.awaiting_journal.is_some() {
            // Older events come from the journal first.
            return;
        }
        let first_unsent = self.queue.partition_point(|(seq, _)| *seq <= self.sent);
        for (seq, bytes) in self.queue.range(first_unsent..) {
            if self.out.len() >= MAX_IN_FLIGHT {
                break;
            }
            self.out.extend_from_slice(bytes);
            self.sent = *seq;
        }
    }

    /// The connection wants a snapshot (`wants_snapshot`) of what runs now.
    /// It follows the events read back from the journal, so it waits while
    /// they are being read.
    pub fn take_snapshot_request(&mut self) -> bool {
        self.awaiting_journal.is_none() && std::mem::take(&mut self.wants_snapshot)
    }

    /// Reads back, on the worker, the events `take_journal_request` asked
    /// for: `read` is the blocking journal read.
    pub fn read_journal(
        &mut self,
        wanted: u64,
        read: impl FnOnce() -> Vec<(u64, Lifecycle)> + Send + 'static,
        registry: &Registry,
        now: u64,
    ) {
        if !matches!(self.link, Link::Streaming { .. }) {
            return;
        }
        let connection = self.connects;
        self.awaiting_journal = Some(connection);
        self.submit(
            Box::new(move || Done::Journal {
                connection,
                wanted,
                events: read(),
            }),
            registry,
            now,
        );
    }

    /// Runs `job` on the worker; on this thread if none can be started.
    fn submit(&mut self, job: Job, registry: &Registry, now: u64) {
        if self.worker.is_none() {
            match Worker::start(registry, self.token_id) {
                Ok(w) => self.worker = Some(w),
                Err(e) => {
                    crate::log!("publisher: no worker thread ({e}); blocking work runs on the loop")
                }
            }
        }
        let job = match &self.worker {
            Some(w) => match w.jobs.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        self.worker = None;
        self.on_done(job(), registry, now);
    }

    /// Applies a finished job.
    fn on_done(&mut self, done: Done, registry: &Registry, now: u64) {
        match done {
            Done::Resolved(Ok(addrs)) => {
                self.resolving = false;
                self.addrs = addrs;
                self.link = Link::Idle { retry_at: now };
            }
            Done::Resolved(Err(why)) => {
                self.resolving = false;
                crate::log!(
                    "publisher: {why}; resolving again in {} ms",
                    self.backoff_ms
                );
                self.link = Link::Idle {
                    retry_at: now.saturating_add(self.backoff_ms),
                };
                self.backoff_ms = self.backoff_ms.saturating_mul(2).min(MAX_BACKOFF_MS);
            }
            Done::Journal {
                connection,
                wanted,
                events,
            } => {
                if self.awaiting_journal != Some(connection) {
                    return; // for a connection since lost
                }
                self.awaiting_journal = None;
                let found = self.resend_from_journal(events);
                let found = u64::try_from(found).unwrap_or(0);
                if found < wanted {
                    crate::log!(
                        "publisher: {} of {wanted} events that left memory were not in the journal; the snapshot covers them",
                        wanted.saturating_sub(found)
                    );
                }
                if matches!(self.link, Link::Streaming { .. }) {
                    self.fill();
                    self.flush(registry, now);
                }
            }
        }
    }

    /// Takes what the worker finished, after draining its wake-ups.
    fn take_done(&mut self, registry: &Registry, now: u64) {
        let mut finished = Vec::new();
        if let Some(w) = &mut self.worker {
            let mut buf = [0u8; 64];
            while matches!(w.wake.read(&mut buf), Ok(n) if n > 0) {}
            while let Ok(done) = w.done.try_recv() {
                finished.push(done);
            }
        }
        for done in finished {
            self.on_done(done, registry, now);
        }
    }

    /// Sequence numbers (first, last) the publisher lacks that are no longer
    /// in memory; the supervisor reads them from the journal and hands them
    /// to `resend_from_journal`.
    pub fn take_journal_request(&mut self) -> Option<(u64, u64)> {
        self.wants_journal.take()
    }

    /// Events read back from the journal, in order, each with its number.
    fn resend_from_journal(&mut self, events: Vec<(u64, Lifecycle)>) -> usize {
        if !matches!(self.link, Link::Streaming { .. }) {
            return 0;
        }
        let mut sent = 0;
        for (seq, e) in events {
            if seq <= self.sent {
                continue;
            }
            proto::encode(&event_frame(seq, e), &mut self.out);
            self.sent = seq;
            sent += 1;
        }
        sent
    }

    pub fn send_snapshot(&mut self, endpoints: &[Endpoint], registry: &Registry, now: u64) {
        if !matches!(self.link, Link::Streaming { .. }) {
            return;
        }
        let mut chunks = endpoints.chunks(CHUNK).peekable();
        if chunks.peek().is_none() {
            proto::encode(
                &Frame::Snapshot {
                    seq: self.seq,
                    endpoints: Vec::new(),
                    last: true,
                },
                &mut self.out,
            );
        }
        while let Some(chunk) = chunks.next() {
            proto::encode(
                &Frame::Snapshot {
                    seq: self.seq,
                    endpoints: chunk.to_vec(),
                    last: chunks.peek().is_none(),
                },
                &mut self.out,
            );
        }
        self.flush(registry, now);
    }

    /// Time passed: connect, give up on a connect or handshake, heartbeat,
    /// or declare a silent publisher dead.
    pub fn on_timer(&mut self, registry: &Registry, now: u64) {
        match &self.link {
            Link::Idle { retry_at } if now >= *retry_at => self.connect(registry, now),
            Link::Connecting { since, .. } if now >= since.saturating_add(CONNECT_TIMEOUT_MS) => {
                self.fail(registry, now, "connect timed out".into())
            }
            Link::Handshake { since, .. } if now >= since.saturating_add(HANDSHAKE_TIMEOUT_MS) => {
                self.fail(registry, now, "no welcome from the publisher".into())
            }
            Link::Streaming { .. } => {
                if now >= self.last_heard.saturating_add(self.lease_ms) {
                    let msg = format!("the publisher was silent for {} ms", self.lease_ms);
                    self.fail(registry, now, msg);
                } else if now >= self.next_heartbeat {
                    proto::encode(&Frame::Heartbeat { seq: self.seq }, &mut self.out);
                    self.next_heartbeat = now.saturating_add(self.heartbeat_ms());
                    self.flush(registry, now);
                }
            }
            _ => {}
        }
    }

    fn heartbeat_ms(&self) -> u64 {
        (self.lease_ms / 3).max(50)
    }

    fn connect(&mut self, registry: &Registry, now: u64) {
        if self.addrs.is_empty() {
            // Names resolve on the worker; `on_done` schedules the connect.
            if !self.resolving {
                self.resolving = true;
                self.link = Link::Idle { retry_at: u64::MAX };
                let targets = self.targets.clone();
                self.submit(
                    Box::new(move || Done::Resolved(resolve(&targets))),
                    registry,
                    now,
                );
            }
            return;
        }
        let Some(addr) = self.addr() else { return };
        match TcpStream::connect(addr) {
            Ok(mut stream) => {
                if let Err(e) = registry.register(
                    &mut stream,
                    self.token_id,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.fail(registry, now, format!("cannot watch the connection: {e}"));
                    return;
                }
                self.link = Link::Connecting { stream, since: now };
            }
            Err(e) => self.fail(registry, now, e.to_string()),
        }
    }

    /// Drops the connection and schedules the next attempt, on the next
    /// address when there are several.
    fn fail(&mut self, registry: &Registry, now: u64, why: String) {
        let was_streaming = matches!(self.link, Link::Streaming { .. });
        let old = std::mem::replace(
            &mut self.link,
            Link::Idle {
                retry_at: now.saturating_add(self.backoff_ms),
            },
        );
        if let Link::Connecting { mut stream, .. }
        | Link::Handshake { mut stream, .. }
        | Link::Streaming { mut stream } = old
        {
            let _ = registry.deregister(&mut stream);
        }
        if !self.quiet || was_streaming {
            crate::log!(
                "publisher {}: {why}; retrying (events are kept: {} queued)",
                self.addr().map(|a| a.to_string()).unwrap_or_default(),
                self.queue.len()
            );
            self.quiet = true;
        }
        self.backoff_ms = self.backoff_ms.saturating_mul(2).min(MAX_BACKOFF_MS);
        self.next_addr = self.next_addr.wrapping_add(1);
        self.out.clear();
        self.decoder = Decoder::new(MAX_FRAME);
        self.wants_snapshot = false;
        self.wants_journal = None;
        self.awaiting_journal = None;
        // Not run yet: the publisher answers their operators itself.
        self.runs.clear();
    }

    /// The connection is readable or writable, or the worker finished
    /// something (both use the forwarder's token).
    pub fn on_ready(&mut self, registry: &Registry, now: u64) {
        self.take_done(registry, now);
        if let Link::Connecting { stream, .. } = &self.link {
            // A non-blocking connect has finished once the peer address is
            // known; an error is waiting in SO_ERROR otherwise.
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => return self.fail(registry, now, e.to_string()),
                Ok(None) => {}
            }
            match stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.fail(registry, now, e.to_string()),
            }
            let Link::Connecting { stream, .. } =
                std::mem::replace(&mut self.link, Link::Idle { retry_at: 0 })
            else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let (nonce, instance) = match (crate::publish::server::nonce(), self.instance()) {
                (Ok(n), Ok(i)) => (n, i),
                (Err(e), _) | (_, Err(e)) => return self.fail(registry, now, e.to_string()),
            };
            let id = &self.identity;
            proto::encode(
                &Frame::Hello {
                    proto: PROTOCOL,
                    role: Role::Forwarder,
                    host: Some(id.ip.clone()),
                    zurg: Some(id.zurg.clone()),
                    boot: Some(id.boot.clone()),
                    hostname: Some(id.hostname.clone()),
                    nonce: Some(nonce.clone()),
                    instance: Some(instance),
                    control: self.control.clone(),
                },
                &mut self.out,
            );
            self.link = Link::Handshake {
                stream,
                since: now,
                nonce,
            };
        }
        self.read(registry, now);
        self.flush(registry, now);
    }

    fn stream(&mut self) -> Option<&mut TcpStream> {
        connected_stream(&mut self.link)
    }

    fn read(&mut self, registry: &Registry, now: u64) {
        let mut buf = [0u8; 4096];
        loop {
            let Some(stream) = self.stream() else { return };
            match stream.read(&mut buf) {
                Ok(0) => {
                    return self.fail(registry, now, "the publisher closed the connection".into())
                }
                Ok(n) => {
                    self.decoder.feed(buf.get(..n).unwrap_or_default());
                    loop {
                        match self.decoder.next_frame() {
                            Ok(Some(frame)) => self.on_frame(frame, registry, now),
                            Ok(None) => break,
                            Err(e) => return self.fail(registry, now, e.to_string()),
                        }
                        if !matches!(self.link, Link::Handshake { .. } | Link::Streaming { .. }) {
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail(registry, now, e.to_string()),
            }
        }
    }

    fn on_frame(&mut self, frame: Frame, registry: &Registry, now: u64) {
        self.last_heard = now;
        match frame {
            Frame::Challenge { nonce } => match &self.token {
                Some(t) => {
                    let mac = proto::proof(t, "forwarder", &nonce);
                    proto::encode(&Frame::Auth { mac }, &mut self.out);
                }
                None => self.refuse(
                    registry,
                    now,
                    "the publisher requires a token (--publish-token-file)",
                ),
            },
            Frame::Welcome {
                last_seq,
                lease_ms,
                mac,
            } => {
                let Link::Handshake { nonce, .. } = &self.link else {
                    return self.fail(registry, now, "unexpected welcome".into());
                };
                if let Some(t) = &self.token {
                    if !mac.is_some_and(|m| proto::verify_proof(t, "publisher", nonce, &m)) {
                        return self.refuse(
                            registry,
                            now,
                            "the publisher did not prove it knows the token",
                        );
                    }
                }
                let Link::Handshake { stream, .. } =
                    std::mem::replace(&mut self.link, Link::Idle { retry_at: 0 })
                else {
                    return;
                };
                self.link = Link::Streaming { stream };
                self.lease_ms = lease_ms.max(100);
                self.next_heartbeat = now.saturating_add(self.heartbeat_ms());
                self.backoff_ms = MIN_BACKOFF_MS;
                self.connects = self.connects.saturating_add(1);
                self.quiet = false;
                // What the publisher already applied needs no resend.
                self.ack(last_seq.min(self.seq));
                self.sent = self.acked;
                let in_memory = self
                    .queue
                    .front()
                    .map_or(self.seq.saturating_add(1), |(s, _)| *s);
                let missing = in_memory.saturating_sub(self.acked.saturating_add(1));
                crate::log!(
                    "publisher {}: connected; resending {} event(s) after seq {}{}, then a snapshot",
                    self.addr().map(|a| a.to_string()).unwrap_or_default(),
                    self.seq.saturating_sub(self.acked),
                    self.acked,
                    if missing > 0 {
                        format!(" ({missing} from the journal)")
                    } else {
                        String::new()
                    }
                );
                if missing > 0 {
                    // The supervisor reads them back, then fills and
                    // snapshots (see `resend_from_journal`).
                    self.wants_journal =
                        Some((self.acked.saturating_add(1), in_memory.saturating_sub(1)));
                } else {
                    self.fill();
                }
                self.wants_snapshot = true;
            }
            Frame::Ack { seq } => {
                self.ack(seq);
                self.fill();
            }
            // Possibly before the welcome: the publisher relays as soon as
            // it accepted the hello.
            Frame::Run {
                id,
                operator,
                verb,
                parts,
            } => {
                if let Err(e) = proto::check_run(&operator, &verb) {
                    // Nothing of it is run or journaled, and the log says
                    // why without the text itself.
                    crate::log!(
                        "publisher {}: refused a relayed {}: {e}",
                        self.addr().map(|a| a.to_string()).unwrap_or_default(),
                        verb.name()
                    );
                    let refused = Frame::Answer {
                        id,
                        ok: false,
                        result: None,
                        error: Some(ErrorBody {
                            code: ErrorCode::BadRequest,
                            message: format!("this host refused the relayed request: {e}"),
                        }),
                        host: Some(self.identity.zurg.clone()),
                    };
                    proto::encode(&refused, &mut self.out);
                } else if self.runs.len() >= MAX_RUNS_QUEUED {
                    let busy = Frame::Answer {
                        id,
                        ok: false,
                        result: None,
                        error: Some(ErrorBody {
                            code: ErrorCode::Busy,
                            message: format!(
                                "{MAX_RUNS_QUEUED} remote requests are already waiting here"
                            ),
                        }),
                        host: Some(self.identity.zurg.clone()),
                    };
                    proto::encode(&busy, &mut self.out);
                } else {
                    if parts {
                        self.split_ok.insert(id);
                    }
                    self.runs.push_back((id, operator, verb));
                }
            }
            Frame::Error {
                message,
                stopping: true,
            } => {
                // Not a fault of the link: no backoff, and the next
                // publisher of the list is tried now, not after 100 ms.
                self.fail(registry, now, format!("publisher said: {message}"));
                self.backoff_ms = MIN_BACKOFF_MS;
                self.link = Link::Idle { retry_at: now };
            }
            Frame::Error { message, .. } => {
                self.fail(registry, now, format!("publisher said: {message}"))
            }
            other => {
                let msg = format!("unexpected {} frame", other.type_name());
                self.fail(registry, now, msg)
            }
        }
    }

    /// A failure that retrying soon will not fix: log it and wait long.
    fn refuse(&mut self, registry: &Registry, now: u64, why: &str) {
        self.quiet = false;
        self.backoff_ms = MAX_BACKOFF_MS;
        self.fail(registry, now, why.to_string());
    }

    fn ack(&mut self, seq: u64) {
        if seq <= self.acked || seq > self.seq {
            return;
        }
        self.acked = seq;
        while self.queue.front().is_some_and(|(s, _)| *s <= seq) {
            self.queue.pop_front();
        }
    }

    fn flush(&mut self, registry: &Registry, now: u64) {
        loop {
            if self.out.is_empty() {
                return;
            }
            let Some(stream) = connected_stream(&mut self.link) else {
                return;
            };
            match stream.write(&self.out) {
                Ok(0) => return,
                Ok(n) => {
                    self.out.drain(..n.min(self.out.len()));
                    if self.out.is_empty() && matches!(self.link, Link::Streaming { .. }) {
                        self.fill();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail(registry, now, e.to_string()),
            }
        }
    }

    /// zurg is exiting: hand over what is queued and say bye, waiting at
    /// most `budget_ms` for the socket to take it (in poll(2), not a sleep).
    pub fn farewell(&mut self, registry: &Registry, budget_ms: u64) {
        let Link::Streaming { .. } = self.link else {
            return;
        };
        self.fill();
        proto::encode(&Frame::Bye, &mut self.out);
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(budget_ms);
        while !self.out.is_empty() {
            let Some(stream) = connected_stream(&mut self.link) else {
                return;
            };
            match stream.write(&self.out) {
                Ok(n) if n > 0 => {
                    self.out.drain(..n.min(self.out.len()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() || !writable_within(stream, left) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => break,
            }
        }
        if let Some(stream) = self.stream() {
            let _ = stream.flush();
            let _ = registry.deregister(stream);
        }
    }
}

/// Waits in poll(2) until `stream` takes more bytes, at most `within`.
fn writable_within(stream: &TcpStream, within: std::time::Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let ms = u16::try_from(within.as_millis().max(1)).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
    matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
}

fn connected_stream(link: &mut Link) -> Option<&mut TcpStream> {
    match link {
        Link::Handshake { stream, .. } | Link::Streaming { stream } => Some(stream),
        _ => None,
    }
}

/// `frame` encoded, or when it is over `MAX_FRAME`, an error answer that
/// says so under the same id.
fn fit_answer(frame: &Frame) -> Vec<u8> {
    let bytes = proto::to_bytes(frame);
    let body = bytes.len().saturating_sub(4);
    if body <= MAX_FRAME {
        return bytes;
    }
    let (id, host) = match frame {
        Frame::Answer { id, host, .. } => (*id, host.clone()),
        _ => (0, None),
    };
    proto::to_bytes(&Frame::Answer {
        id,
        ok: false,
        result: None,
        error: Some(ErrorBody {
            code: ErrorCode::TooLarge,
            message: format!(
                "the reply is {body} bytes, over the {MAX_FRAME}-byte frame limit and the publisher or the operator's zurg is too old to take it in parts; upgrade them or name fewer services"
            ),
        }),
        host,
    })
}

/// `frame` encoded whole when it fits one frame, else its `result` in
/// `part` frames followed by the answer without it; over `MAX_REPLY`, an
/// error answer that says so under the same id.
fn split_answer(frame: &Frame) -> Vec<u8> {
    let bytes = proto::to_bytes(frame);
    if bytes.len().saturating_sub(4) <= MAX_FRAME {
        return bytes;
    }
    let Frame::Answer {
        id,
        ok,
        result: Some(result),
        error,
        host,
    } = frame
    else {
        return fit_answer(frame);
    };
    let text = result.to_string();
    let Some(parts) = proto::parts(*id, &text) else {
        return proto::to_bytes(&Frame::Answer {
            id: *id,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                code: ErrorCode::TooLarge,
                message: format!(
                    "the reply is {} bytes, over the {MAX_REPLY}-byte limit of a remote reply; name fewer services",
                    text.len()
                ),
            }),
            host: host.clone(),
        });
    };
    let mut out = Vec::with_capacity(bytes.len().saturating_add(parts.len().saturating_mul(64)));
    for part in &parts {
        proto::encode(part, &mut out);
    }
    proto::encode(
        &Frame::Answer {
            id: *id,
            ok: *ok,
            result: None,
            error: error.clone(),
            host: host.clone(),
        },
        &mut out,
    );
    out
}

fn event_frame(seq: u64, e: Lifecycle) -> Frame {
    Frame::Event {
        seq,
        kind: e.kind,
        time_us: e.time_us,
        endpoint: e.endpoint,
        pid: e.pid,
        exit: e.exit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    const TOKEN: Token = Token(7);

    fn event(n: u64) -> Lifecycle {
        Lifecycle {
            kind: EventKind::Start,
            endpoint: Endpoint {
                service: format!("s{n}"),
                ip: "127.0.0.1".into(),
                port: 0,
                gpid: format!("127.0.0.1:0:{}:{}", 1000 + n, 10 + n),
                version: None,
                since_us: 1000 + n,
                host: "zurg".into(),
            },
            pid: Some(10 + n as u32),
            exit: None,
            time_us: 1000 + n,
        }
    }

    fn identity() -> Identity {
        Identity {
            ip: "127.0.0.1".into(),
            zurg: "127.0.0.1:0:1:1".into(),
            boot: "b".into(),
            hostname: "h".into(),
        }
    }

    /// A publisher's side of the connection: reads frames with a deadline.
    struct Peer {
        stream: std::net::TcpStream,
        decoder: Decoder,
    }

    impl Peer {
        fn next(&mut self, within: Duration) -> Option<Frame> {
            let deadline = Instant::now() + within;
            loop {
                if let Some(f) = self.decoder.next_frame().unwrap() {
                    return Some(f);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                self.stream.set_read_timeout(Some(left)).unwrap();
                let mut buf = [0u8; 4096];
                match self.stream.read(&mut buf) {
                    Ok(0) => return None,
                    Ok(n) => self.decoder.feed(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => return None,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }

    /// Polls until the forwarder's token is ready, then hands it the event.
    /// The publisher's side of `f`'s connection, once `f` has connected
    /// and waits in its handshake.
    fn accept_handshake(listener: &TcpListener, poll: &mut mio::Poll, f: &mut Forwarder) -> Peer {
        let (stream, _) = listener.accept().unwrap();
        while !matches!(f.link, Link::Handshake { .. }) {
            assert!(drive(poll, f, Duration::from_secs(5)), "no connect");
        }
        Peer {
            stream,
            decoder: Decoder::new(MAX_FRAME),
        }
    }

    fn drive(poll: &mut mio::Poll, f: &mut Forwarder, within: Duration) -> bool {
        let mut events = mio::Events::with_capacity(8);
        poll.poll(&mut events, Some(within)).unwrap();
        let ready = events.iter().any(|e| e.token() == TOKEN);
        if ready {
            f.on_ready(poll.registry(), 1);
        }
        ready
    }

    #[test]
    fn a_slow_journal_read_runs_off_the_loop_and_its_events_go_first() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut poll = mio::Poll::new().unwrap();
        let mut f = Forwarder::new(vec![addr], None, identity(), TOKEN, 1);
        // Three events with a queue of one: two leave memory.
        for n in 1..=3 {
            f.publish(event(n), poll.registry(), 0);
        }
        let mut peer = streaming(&listener, &mut poll, &mut f);
        assert_eq!(f.take_journal_request(), Some((1, 2)));
        // Room for what comes next, so it does not overflow again.
        f.max_queue = 10;

        // The read blocks until the test lets it go; the caller does not.
        let (release, gate) = mpsc::channel::<()>();
        let started = Instant::now();
        f.read_journal(
            2,
            move || {
                gate.recv().unwrap();
                vec![(1, event(1)), (2, event(2))]
            },
            poll.registry(),
            1,
        );
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(
            !f.take_snapshot_request(),
            "the snapshot waits for the journal"
        );
        f.publish(event(4), poll.registry(), 1);
        assert!(
            peer.next(Duration::from_millis(100)).is_none(),
            "nothing newer goes out before the journal's events"
        );

        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while f.awaiting_journal.is_some() {
            assert!(Instant::now() < deadline, "the worker never reported");
            drive(&mut poll, &mut f, Duration::from_millis(100));
        }
        assert!(f.take_snapshot_request());
        let mut seqs = Vec::new();
        while let Some(Frame::Event { seq, .. }) = peer.next(Duration::from_secs(5)) {
            seqs.push(seq);
            if seq == 4 {
                break;
            }
        }
        assert_eq!(seqs, [1, 2, 3, 4]);
    }

    /// The forwarder of `f` streaming to `listener`'s publisher.
    fn streaming(listener: &TcpListener, poll: &mut mio::Poll, f: &mut Forwarder) -> Peer {
        f.on_timer(poll.registry(), 0);
        let mut peer = accept_handshake(listener, poll, f);
        assert!(matches!(
            peer.next(Duration::from_secs(5)),
            Some(Frame::Hello { .. })
        ));
        let welcome = proto::to_bytes(&Frame::Welcome {
            last_seq: 0,
            lease_ms: 10_000,
            mac: None,
        });
        peer.stream.write_all(&welcome).unwrap();
        while !matches!(f.link, Link::Streaming { .. }) {
            assert!(drive(poll, f, Duration::from_secs(5)), "no welcome");
        }
        peer
    }

    #[test]
    fn a_stopping_publisher_sends_its_hosts_to_the_next_one_without_backoff() {
        for stopping in [true, false] {
            let first = TcpListener::bind("127.0.0.1:0").unwrap();
            let second = TcpListener::bind("127.0.0.1:0").unwrap();
            let addrs = [&first, &second].map(|l| l.local_addr().unwrap());
            let targets = addrs.iter().map(|a| a.to_string()).collect();
            let mut poll = mio::Poll::new().unwrap();
            let mut f = Forwarder::new(targets, None, identity(), TOKEN, 10);
            let mut peer = streaming(&first, &mut poll, &mut f);
            let bye = proto::to_bytes(&Frame::Error {
                message: "stopping".into(),
                stopping,
            });
            peer.stream.write_all(&bye).unwrap();
            while matches!(f.link, Link::Streaming { .. }) {
                assert!(drive(&mut poll, &mut f, Duration::from_secs(5)), "no error");
            }
            let Link::Idle { retry_at } = f.link else {
                panic!("{:?}", f.link)
            };
            // `drive` says it is 1 ms; any other error waits the backoff.
            assert_eq!(retry_at, if stopping { 1 } else { 1 + MIN_BACKOFF_MS });
            assert_eq!(f.addr(), Some(addrs[1]), "stopping: {stopping}");
        }
    }

    #[test]
    fn the_hello_offers_the_allowed_verbs_and_relayed_requests_come_and_go() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut poll = mio::Poll::new().unwrap();
        let mut f = Forwarder::new(vec![addr], None, identity(), TOKEN, 10)
            .with_control(vec![RemoteVerb::Status, RemoteVerb::Restart]);
        f.on_timer(poll.registry(), 0);
        let mut peer = accept_handshake(&listener, &mut poll, &mut f);
        match peer.next(Duration::from_secs(5)) {
            Some(Frame::Hello { control, .. }) => {
                assert_eq!(control, [RemoteVerb::Status, RemoteVerb::Restart])
            }
            other => panic!("{other:?}"),
        }
        let mut bytes = proto::to_bytes(&Frame::Welcome {
            last_seq: 0,
            lease_ms: 10_000,
            mac: None,
        });
        let verb = Verb::Restart {
            names: vec!["api".into()],
            timeout_ms: None,
            no_block: false,
        };
        proto::encode(
            &Frame::Run {
                id: 77,
                operator: "op:0123456789ab".into(),
                verb: verb.clone(),
                parts: false,
            },
            &mut bytes,
        );
        peer.stream.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut runs = Vec::new();
        while runs.is_empty() {
            assert!(Instant::now() < deadline, "the run never arrived");
            drive(&mut poll, &mut f, Duration::from_millis(100));
            runs = f.take_runs();
        }
        assert_eq!(runs, [(77, "op:0123456789ab".to_string(), verb)]);
        let answer = Frame::Answer {
            id: 77,
            ok: true,
            result: Some(serde_json::json!([])),
            error: None,
            host: Some("127.0.0.1:0:1:1".into()),
        };
        f.answer(&answer, poll.registry(), 1);
        assert_eq!(peer.next(Duration::from_secs(5)), Some(answer));
    }

    #[test]
    fn a_relayed_request_with_a_long_or_odd_operator_is_refused_and_never_run() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap().to_string();
        let mut poll = mio::Poll::new().unwrap();
        let mut f = Forwarder::new(vec![target], None, identity(), TOKEN, 10)
            .with_control(vec![RemoteVerb::Restart]);
        let mut peer = streaming(&listener, &mut poll, &mut f);
        let verb = Verb::Restart {
            names: vec!["api".into()],
            timeout_ms: None,
            no_block: false,
        };
        let run = |id: u64, operator: String| Frame::Run {
            id,
            operator,
            verb: verb.clone(),
            parts: false,
        };
        let mut bytes = Vec::new();
        // As long as a frame allows, and one that would forge a log line
        // and retitle a terminal.
        proto::encode(&run(1, format!("op:{}", "a".repeat(60_000))), &mut bytes);
        proto::encode(
            &run(2, "op:1\nfake line\x1b]0;pwned\x07".into()),
            &mut bytes,
        );
        proto::encode(&run(3, "op:0123456789ab".into()), &mut bytes);
        peer.stream.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut runs = Vec::new();
        while runs.is_empty() {
            assert!(Instant::now() < deadline, "the good run never arrived");
            drive(&mut poll, &mut f, Duration::from_millis(100));
            runs = f.take_runs();
        }
        // Only the one with an operator key's id is run.
        assert_eq!(runs, [(3, "op:0123456789ab".to_string(), verb.clone())]);
        for (id, says) in [
            (1, "run.operator of 60003 bytes"),
            (2, "`op:1\\nfake line\\x1b]0;pwned\\x07`"),
        ] {
            match peer.next(Duration::from_secs(5)) {
                Some(Frame::Answer {
                    id: got,
                    ok: false,
                    error: Some(e),
                    ..
                }) => {
                    assert_eq!(got, id);
                    assert_eq!(e.code, ErrorCode::BadRequest);
                    assert!(e.message.contains(says), "{}", e.message);
                    assert!(e.message.len() < 400, "{}", e.message);
                    assert!(!e.message.contains('\x1b'), "{}", e.message);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_answer_over_the_frame_limit_becomes_an_error() {
        let big = Frame::Answer {
            id: 5,
            ok: true,
            result: Some(serde_json::Value::String("x".repeat(MAX_FRAME))),
            error: None,
            host: Some("h".into()),
        };
        let mut d = Decoder::new(MAX_FRAME);
        d.feed(&fit_answer(&big));
        match d.next_frame().unwrap() {
            Some(Frame::Answer {
                id: 5,
                ok: false,
                error: Some(e),
                ..
            }) => assert_eq!(e.code, ErrorCode::TooLarge),
            other => panic!("{other:?}"),
        }
        let small = Frame::Answer {
            id: 6,
            ok: true,
            result: None,
            error: None,
            host: None,
        };
        assert_eq!(fit_answer(&small), proto::to_bytes(&small));
        assert_eq!(split_answer(&small), proto::to_bytes(&small));
    }

    #[test]
    fn an_answer_over_the_frame_limit_goes_in_parts_when_the_run_allows() {
        let rows: Vec<serde_json::Value> = (0..2000)
            .map(|i| serde_json::json!({"name": format!("svc{i}"), "state": "running"}))
            .collect();
        let result = serde_json::Value::Array(rows);
        let big = Frame::Answer {
            id: 5,
            ok: true,
            result: Some(result.clone()),
            error: None,
            host: Some("h".into()),
        };
        let mut d = Decoder::new(MAX_FRAME);
        d.feed(&split_answer(&big));
        let mut assembly = proto::Assembly::default();
        let mut parts = 0;
        let answer = loop {
            match d.next_frame().unwrap() {
                Some(Frame::Part {
                    id,
                    index,
                    last,
                    data,
                }) => {
                    parts += 1;
                    assembly.add(id, index, last, &data).unwrap();
                }
                Some(other) => break other,
                None => panic!("no answer after the parts"),
            }
        };
        assert!(parts > 1);
        assert!(matches!(
            answer,
            Frame::Answer {
                id: 5,
                ok: true,
                result: None,
                ..
            }
        ));
        assert_eq!(assembly.finish(5).unwrap().unwrap(), result);

        let huge = Frame::Answer {
            id: 6,
            ok: true,
            result: Some(serde_json::Value::String("x".repeat(MAX_REPLY))),
            error: None,
            host: None,
        };
        let mut d = Decoder::new(MAX_FRAME);
        d.feed(&split_answer(&huge));
        match d.next_frame().unwrap() {
            Some(Frame::Answer {
                id: 6,
                ok: false,
                error: Some(e),
                ..
            }) => {
                assert_eq!(e.code, ErrorCode::TooLarge);
                assert!(
                    e.message.contains("limit of a remote reply"),
                    "{}",
                    e.message
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_journal_read_for_a_lost_connection_is_dropped() {
        let mut poll = mio::Poll::new().unwrap();
        let mut f = Forwarder::new(vec!["127.0.0.1:9".into()], None, identity(), TOKEN, 1);
        f.awaiting_journal = Some(3);
        f.on_done(
            Done::Journal {
                connection: 2,
                wanted: 1,
                events: vec![(1, event(1))],
            },
            poll.registry(),
            0,
        );
        assert_eq!(f.awaiting_journal, Some(3), "an old connection's result");
        assert!(f.out.is_empty());
        let _ = poll.poll(&mut mio::Events::with_capacity(1), Some(Duration::ZERO));
    }
}
