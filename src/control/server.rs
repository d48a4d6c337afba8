//! The control socket server: accepts unix-socket clients inside the
//! supervisor's event loop, frames their lines, checks who they are, and
//! queues replies. It knows nothing of services: requests go up to the
//! supervisor as `Incoming`, replies come back through `reply`.
//!
//! Nothing here may block or grow without bound, whatever a client does:
//! reads stop at `MAX_LINE` per line (an over-long line gets `too_large` and
//! the connection is closed), each connection's unsent output is capped (a
//! client that stops reading is dropped, never waited for; a `logs` stream
//! is instead given lines only while `tail_room` allows, and listed by
//! `take_tail_pulls` once it drains), the number of
//! connections is capped with `RESERVED_FOR_ADMIN` slots that only root and
//! zurg's own uid may take, and a connection that has not completed a
//! request within `IDLE_MS` of starting it is closed (event followers and
//! requests being answered excepted): dripping one byte at a time does not
//! keep a slot.
//!
//! Work per connection is bounded per wake-up: at most `TURN_REQUESTS`
//! requests and `TURN_BYTES` bytes read. A connection with more to give is
//! queued in `pending` and continued on the next turn (`turn`), after the
//! loop has served the others and the service events; `next_deadline` is
//! then "now", so the loop does not sleep meanwhile. mio is edge-triggered,
//! so the queue, not another readiness event, is what brings it back.
//!
//! Running out of descriptors (EMFILE) must not stop accepting for good: a
//! spare descriptor is kept open; on EMFILE it is closed, the connection
//! accepted and told why it is refused, and the spare reopened. Without a
//! spare, accepting is retried on a timer.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use super::proto::{self, ErrorCode, Reply, Request, MAX_LINE};

/// Token of the listening socket; connections use the tokens after it.
pub const LISTENER_TOKEN: Token = Token(1);
const FIRST_CONN_TOKEN: usize = 2;
pub const MAX_CONNECTIONS: usize = 1024;
/// Slots only root and zurg's own uid may take: readers (or anyone the
/// socket's mode lets in) cannot lock the owner out.
pub const RESERVED_FOR_ADMIN: usize = 64;
/// At most this many requests of one connection per turn of the loop.
pub const TURN_REQUESTS: usize = 64;
/// At most this many bytes read from one connection per turn of the loop.
pub const TURN_BYTES: usize = 64 * 1024;
/// Replies streamed in chunks (`history`) at once, over all connections:
/// with at most two chunks' worth of output each, this bounds their memory.
pub const MAX_STREAMS: usize = 16;
/// A streaming connection asks for its next chunk once its unsent output
/// is below this.
const STREAM_LOW_WATER: usize = 64 * 1024;
/// A `logs` stream is given lines only while its unsent output is below
/// this: the rest waits in the service's ring, not in zurg's buffers, and
/// what the ring drops meanwhile is reported as missed.
pub const TAIL_OUTPUT: usize = 256 * 1024;
/// A `logs` stream that filled its output is given more once it is below
/// this.
const TAIL_LOW_WATER: usize = 64 * 1024;
/// How long to wait before accepting again when no spare descriptor helps.
const ACCEPT_RETRY_MS: u64 = 100;
/// A connection with more unsent output than this when another line is due
/// is dropped: it has stopped reading. One reply may be longer (`history`
/// of a full journal, `status` of 10,000 services) and still goes out whole.
pub const MAX_OUTPUT: usize = 1 << 20;
/// A connection that has not completed a request this long after starting
/// it (or after connecting, or after its last answer) is closed. The
/// environment variable `ZURG_CONTROL_IDLE_MS` sets another value.
pub const IDLE_MS: u64 = 30_000;

/// Who is on the other end, from SO_PEERCRED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// What a peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Full,
    ReadOnly,
    None,
}

/// Root and zurg's own uid may do everything; members of the readers group
/// may only read; everyone else is refused. Pure, given the peer's groups.
pub fn access(
    peer_uid: u32,
    peer_groups: &[u32],
    own_uid: u32,
    readers_gid: Option<u32>,
) -> Access {
    if peer_uid == 0 || peer_uid == own_uid {
        Access::Full
    } else if readers_gid.is_some_and(|g| peer_groups.contains(&g)) {
        Access::ReadOnly
    } else {
        Access::None
    }
}

/// A peer's primary and supplementary groups, from /proc/PID/status.
fn peer_groups(peer: &Peer) -> Vec<u32> {
    let mut groups = vec![peer.gid];
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", peer.pid)) {
        if let Some(line) = status.lines().find(|l| l.starts_with("Groups:")) {
            groups.extend(
                line.split_whitespace()
                    .skip(1)
                    .filter_map(|g| g.parse::<u32>().ok()),
            );
        }
    }
    groups
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot create directory {path} for the control socket: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("{path} is {kind}, not a socket; refusing to replace it (pass another --socket PATH, or remove it yourself)")]
    NotASocket { path: PathBuf, kind: &'static str },
    #[error("another process already listens on {path}")]
    InUse { path: PathBuf },
    #[error("cannot remove stale socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("cannot listen on {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

/// An id for one connection, valid until it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    slot: usize,
    generation: u64,
}

/// The slot no local connection has: a request relayed by the publisher.
const REMOTE_SLOT: usize = usize::MAX;

impl ConnId {
    /// The "connection" of a request relayed by the publisher under its
    /// relay id: its reply goes back through the forwarder, and the
    /// control server, which has no such slot, ignores it.
    pub fn remote(relay_id: u64) -> ConnId {
        ConnId {
            slot: REMOTE_SLOT,
            generation: relay_id,
        }
    }

    /// The relay id, when this is a relayed request.
    pub fn relay_id(self) -> Option<u64> {
        (self.slot == REMOTE_SLOT).then_some(self.generation)
    }
}

#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    peer: Peer,
    access: Access,
    generation: u64,
    input: Vec<u8>,
    output: VecDeque<u8>,
    /// Events are streamed to it under this request id.
    follow: Option<u64>,
    /// It receives a `logs` stream (under this request id) at the pace it
    /// reads; `tail_hungry`: it wants more once its output drains.
    tail: Option<u64>,
    tail_hungry: bool,
    /// When the request it owes us started: connect, the last complete
    /// request, or the last answer. Bytes alone never move it.
    since_ms: u64,
    /// In `pending`: it has more input than one turn's share.
    queued: bool,
    /// A reply is being streamed to it. Its other lines wait in `deferred`
    /// meanwhile, so they never land inside the streamed line, and its
    /// input is not read.
    streaming: Option<Stream>,
    deferred: Vec<u8>,
    /// Close once the output is flushed.
    closing: bool,
    /// The client sent EOF; close once every request is answered.
    eof: bool,
    /// Requests handed to the supervisor and not yet answered.
    outstanding: usize,
    writable_registered: bool,
}

/// Where a streamed reply stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// The next chunk has been asked for and has not arrived.
    Awaiting,
    /// The last chunk is going out; the next is asked for once it has
    /// mostly gone.
    Draining,
}

/// A complete request from a client, checked against its access.
#[derive(Debug)]
pub struct Incoming {
    pub conn: ConnId,
    pub peer: Peer,
    pub request: Request,
}

#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    generation: u64,
    own_uid: u32,
    readers_gid: Option<u32>,
    /// Connections to continue on the next turn, oldest first.
    pending: VecDeque<ConnId>,
    /// Open connections of peers without full access.
    limited: usize,
    /// Closed on EMFILE so that one more accept can succeed.
    spare: Option<File>,
    /// Accepting failed without a spare; try again then.
    accept_retry_at: Option<u64>,
    /// An EMFILE was logged and accepting has not succeeded since.
    emfile_logged: bool,
    idle_ms: u64,
    /// The loop's clock at the latest call that passed it.
    now_ms: u64,
    /// Replies being streamed.
    streams: usize,
    /// Streaming connections ready for their next chunk.
    pulls: Vec<ConnId>,
    /// Streaming connections that closed before their reply ended.
    cancels: Vec<ConnId>,
    /// `logs` streams whose output drained, and those that closed.
    tail_pulls: Vec<ConnId>,
    tail_closed: Vec<ConnId>,
}

fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}

impl ControlServer {
    /// Binds `path` with mode 0600. A socket file that nobody listens on is
    /// replaced; one that answers means another zurg runs, and is an error.
    pub fn bind(
        path: &Path,
        registry: &Registry,
        readers_gid: Option<u32>,
    ) -> Result<ControlServer, ControlError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ControlError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        // Only ever remove a socket that nobody answers on: `--socket` may
        // name a file by mistake, and lstat keeps a symlink from leading the
        // unlink elsewhere.
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ControlError::NotASocket {
                    path: path.to_path_buf(),
                    kind: crate::unit::load::file_kind(meta.file_type()),
                });
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(|source| ControlError::RemoveStale {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let bind_err = |source| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        };
        let mut listener =
            crate::os::with_umask(0o177, || UnixListener::bind(path)).map_err(bind_err)?;
        // Belt and braces: the umask made it 0600 already; when readers
        // exist they need to connect, so the group gets rw then.
        let mode = if readers_gid.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(bind_err)?;
        if let Some(gid) = readers_gid {
            crate::os::chown_group(path, gid).map_err(bind_err)?;
        }
        registry
            .register(&mut listener, LISTENER_TOKEN, Interest::READABLE)
            .map_err(bind_err)?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            conns: Vec::new(),
            free: Vec::new(),
            generation: 0,
            own_uid: crate::os::euid(),
            readers_gid,
            pending: VecDeque::new(),
            limited: 0,
            spare: open_spare(),
            accept_retry_at: None,
            emfile_logged: false,
            idle_ms: std::env::var("ZURG_CONTROL_IDLE_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(IDLE_MS),
            now_ms: 0,
            streams: 0,
            pulls: Vec::new(),
            cancels: Vec::new(),
            tail_pulls: Vec::new(),
            tail_closed: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `token` is one of the server's.
    pub fn owns(token: Token) -> bool {
        token == LISTENER_TOKEN
            || (FIRST_CONN_TOKEN..FIRST_CONN_TOKEN + MAX_CONNECTIONS).contains(&token.0)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        Self::conn_in(&mut self.conns, id)
    }

    /// `conn_mut` borrowing only the table, so other fields stay usable.
    fn conn_in(conns: &mut [Option<Conn>], id: ConnId) -> Option<&mut Conn> {
        conns
            .get_mut(id.slot)
            .and_then(|c| c.as_mut())
            .filter(|c| c.generation == id.generation)
    }

    /// Handles readiness of one of the server's tokens; returns the complete
    /// requests that arrived. Bad lines are answered here.
    pub fn handle(&mut self, registry: &Registry, token: Token, now_ms: u64) -> Vec<Incoming> {
        self.now_ms = now_ms;
        let mut out = Vec::new();
        if token == LISTENER_TOKEN {
            self.accept_all(registry, now_ms);
            return out;
        }
        let Some(slot) = token.0.checked_sub(FIRST_CONN_TOKEN) else {
            return out;
        };
        let Some(Some(conn)) = self.conns.get(slot) else {
            return out;
        };
        let id = ConnId {
            slot,
            generation: conn.generation,
        };
        self.serve(registry, id, now_ms, &mut out);
        out
    }

    /// One turn's share of work for the connections queued by earlier
    /// turns, each once, oldest first; also closes idle connections and
    /// retries accepting when that is due. Returns the requests found.
    pub fn turn(&mut self, registry: &Registry, now_ms: u64) -> Vec<Incoming> {
        self.now_ms = now_ms;
        self.expire(registry, now_ms);
        if self.accept_retry_at.is_some_and(|at| at <= now_ms) {
            self.accept_retry_at = None;
            self.accept_all(registry, now_ms);
        }
        let mut out = Vec::new();
        for _ in 0..self.pending.len() {
            let Some(id) = self.pending.pop_front() else {
                break;
            };
            let Some(c) = self.conn_mut(id) else { continue };
            c.queued = false;
            self.serve(registry, id, now_ms, &mut out);
        }
        out
    }

    /// Reads and frames at most one turn's share of `id`'s input; queues
    /// it for the next turn when more is left.
    fn serve(&mut self, registry: &Registry, id: ConnId, now_ms: u64, out: &mut Vec<Incoming>) {
        let token = Token(FIRST_CONN_TOKEN + id.slot);
        let Some(conn) = Self::conn_in(&mut self.conns, id) else {
            return;
        };
        if conn.streaming.is_some() {
            // Its next requests wait until the streamed reply is out.
            let failed = Self::flush(conn, registry, token).is_err();
            Self::want_chunk(conn, id, &mut self.pulls);
            if failed {
                self.close(registry, id);
            }
            return;
        }
        let before = out.len();
        let mut budget = TURN_REQUESTS;
        let mut read = 0usize;
        let mut drained = false;
        let mut failed = false;
        // Lines left over from the last turn go first.
        Self::split_lines(conn, id, out, &mut budget, now_ms);
        let mut buf = [0u8; 16 * 1024];
        while budget > 0 && read < TURN_BYTES && !conn.closing && !conn.eof {
            match conn.stream.read(&mut buf) {
                // The client may half-close after its request and still
                // wait for the reply: keep the connection until answered.
                Ok(0) => conn.eof = true,
                Ok(n) => {
                    read = read.saturating_add(n);
                    conn.input.extend_from_slice(buf.get(..n).unwrap_or(&[]));
                    Self::split_lines(conn, id, out, &mut budget, now_ms);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let added = out.len().saturating_sub(before);
        conn.outstanding = conn.outstanding.saturating_add(added);
        let more =
            !conn.closing && (conn.input.contains(&b'\n') || (!drained && !conn.eof && !failed));
        if more && !conn.queued {
            conn.queued = true;
            self.pending.push_back(id);
        }
        let Some(conn) = Self::conn_in(&mut self.conns, id) else {
            return;
        };
        if failed || Self::flush(conn, registry, token).is_err() || Self::finished(conn) {
            self.close(registry, id);
            return;
        }
        if conn.tail_hungry && conn.output.len() < TAIL_LOW_WATER {
            conn.tail_hungry = false;
            self.tail_pulls.push(id);
        }
    }

    /// Nothing more will be said on this connection.
    fn finished(conn: &Conn) -> bool {
        conn.output.is_empty()
            && (conn.closing
                || (conn.eof
                    && conn.outstanding == 0
                    && conn.follow.is_none()
                    && conn.tail.is_none()
                    && !conn.input.contains(&b'\n')))
    }

    /// Splits up to `budget` complete lines off the input buffer; an
    /// over-long line condemns the connection (`closing`), which stops the
    /// reading.
    fn split_lines(
        conn: &mut Conn,
        id: ConnId,
        out: &mut Vec<Incoming>,
        budget: &mut usize,
        now_ms: u64,
    ) {
        // One drain at the end: draining per line would move the rest of
        // a pipelined buffer once per request.
        let mut start = 0usize;
        let mut exhausted = false;
        while let Some(pos) = conn
            .input
            .get(start..)
            .and_then(|rest| rest.iter().position(|b| *b == b'\n'))
        {
            if *budget == 0 {
                exhausted = true;
                break;
            }
            let end = start.saturating_add(pos);
            let line = conn.input.get(start..end).unwrap_or(&[]);
            start = end.saturating_add(1);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            *budget = budget.saturating_sub(1);
            conn.since_ms = now_ms;
            match proto::decode_request(line) {
                Ok(request) => {
                    if conn.access == Access::None
                        || (conn.access == Access::ReadOnly && !request.verb.is_read_only())
                    {
                        let msg = format!(
                            "uid {} may not use `{}` (root, zurg's own uid{} only)",
                            conn.peer.uid,
                            request.verb.name(),
                            if request.verb.is_read_only() {
                                " and the readers group"
                            } else {
                                ""
                            }
                        );
                        Self::queue(conn, &Reply::error(request.id, ErrorCode::Forbidden, msg));
                        continue;
                    }
                    out.push(Incoming {
                        conn: id,
                        peer: conn.peer,
                        request,
                    });
                }
                Err(e) => Self::queue(conn, &Reply::error(e.id, e.code, e.message)),
            }
        }
        conn.input.drain(..start.min(conn.input.len()));
        if !exhausted && conn.input.len() > MAX_LINE {
            conn.input.clear();
            Self::queue(
                conn,
                &Reply::error(
                    0,
                    ErrorCode::TooLarge,
                    format!("request longer than {MAX_LINE} bytes; closing"),
                ),
            );
            conn.closing = true;
        }
    }

    fn accept_all(&mut self, registry: &Registry, now_ms: u64) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_out_of_fds(&e) => {
                    if !self.emfile_logged {
                        self.emfile_logged = true;
                        crate::log!(
                            "control socket: cannot accept: {e}; refusing clients until descriptors are free"
                        );
                    }
                    // mio is edge-triggered: leaving the backlog would stop
                    // accepting for good. With the spare closed, one accept
                    // fits; that client is told why and closed.
                    if self.spare.take().is_some() {
                        let refused = match self.listener.accept() {
                            Ok((mut s, _)) => {
                                let line = proto::encode_reply(&Reply::error(
                                    0,
                                    ErrorCode::Busy,
                                    "zurg is out of file descriptors; try again later",
                                ));
                                let _ = s.write(&line);
                                // Closed here, so that the spare fits again.
                                drop(s);
                                Ok(())
                            }
                            Err(e) => Err(e),
                        };
                        self.spare = open_spare();
                        match refused {
                            Ok(()) => continue,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                            Err(_) => {}
                        }
                    }
                    self.accept_retry_at = Some(now_ms.saturating_add(ACCEPT_RETRY_MS));
                    return;
                }
                Err(e) => {
                    crate::log!("control socket: cannot accept: {e}");
                    self.accept_retry_at = Some(now_ms.saturating_add(ACCEPT_RETRY_MS));
                    return;
                }
            };
            self.emfile_logged = false;
            if self.spare.is_none() {
                self.spare = open_spare();
            }
            let peer = match nix::sys::socket::getsockopt(
                &stream.as_fd(),
                nix::sys::socket::sockopt::PeerCredentials,
            ) {
                Ok(c) => Peer {
                    pid: c.pid(),
                    uid: c.uid(),
                    gid: c.gid(),
                },
                Err(_) => continue,
            };
            let access = access(
                peer.uid,
                &peer_groups(&peer),
                self.own_uid,
                self.readers_gid,
            );
            let limited = access != Access::Full;
            let limited_cap = MAX_CONNECTIONS.saturating_sub(RESERVED_FOR_ADMIN);
            let refusal = if limited && self.limited >= limited_cap {
                Some(format!(
                    "too many control connections: uid {} may use {limited_cap} of the \
                     {MAX_CONNECTIONS}, and they are taken; the other {RESERVED_FOR_ADMIN} \
                     are kept for root and zurg's own uid",
                    peer.uid
                ))
            } else if self.free.is_empty() && self.conns.len() >= MAX_CONNECTIONS {
                Some(format!(
                    "too many control connections: all {MAX_CONNECTIONS} are taken"
                ))
            } else {
                None
            };
            if let Some(msg) = refusal {
                let line = proto::encode_reply(&Reply::error(0, ErrorCode::Busy, msg));
                let _ = stream.write(&line);
                continue;
            }
            let slot = match self.free.pop() {
                Some(s) => s,
                None => {
                    self.conns.push(None);
                    self.conns.len().saturating_sub(1)
                }
            };
            let token = Token(FIRST_CONN_TOKEN + slot);
            if registry
                .register(&mut stream, token, Interest::READABLE)
                .is_err()
            {
                self.free.push(slot);
                continue;
            }
            self.generation = self.generation.wrapping_add(1);
            if let Some(entry) = self.conns.get_mut(slot) {
                *entry = Some(Conn {
                    stream,
                    peer,
                    access,
                    generation: self.generation,
                    input: Vec::new(),
                    output: VecDeque::new(),
                    follow: None,
                    tail: None,
                    tail_hungry: false,
                    since_ms: now_ms,
                    queued: false,
                    streaming: None,
                    deferred: Vec::new(),
                    closing: false,
                    eof: false,
                    outstanding: 0,
                    writable_registered: false,
                });
                if limited {
                    self.limited = self.limited.saturating_add(1);
                }
            }
        }
    }

    fn queue(conn: &mut Conn, reply: &Reply) {
        if conn.streaming.is_some() {
            if conn.deferred.len() > MAX_OUTPUT {
                conn.deferred.clear();
                conn.closing = true;
                return;
            }
            conn.deferred.extend(proto::encode_reply(reply));
            return;
        }
        if conn.output.len() > MAX_OUTPUT {
            // It has stopped reading: drop it now rather than hold its
            // backlog until it drains.
            conn.output.clear();
            conn.closing = true;
            return;
        }
        conn.output.extend(proto::encode_reply(reply));
    }

    /// Writes what it can; asks for WRITABLE only while output is pending.
    fn flush(conn: &mut Conn, registry: &Registry, token: Token) -> io::Result<()> {
        while !conn.output.is_empty() {
            let (front, _) = conn.output.as_slices();
            match conn.stream.write(front) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    conn.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let want_write = !conn.output.is_empty();
        if want_write != conn.writable_registered {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(&mut conn.stream, token, interest)?;
            conn.writable_registered = want_write;
        }
        Ok(())
    }

    /// Queues a reply to `conn` (gone connections are ignored).
    pub fn reply(&mut self, registry: &Registry, conn: ConnId, reply: &Reply) {
        let token = Token(FIRST_CONN_TOKEN.wrapping_add(conn.slot));
        let now_ms = self.now_ms;
        let Some(c) = self.conn_mut(conn) else { return };
        if reply.event.is_none() && reply.log.is_none() {
            c.outstanding = c.outstanding.saturating_sub(1);
            // The next request's deadline starts with this answer.
            c.since_ms = now_ms;
        }
        Self::queue(c, reply);
        if Self::flush(c, registry, token).is_err() || Self::finished(c) {
            self.close(registry, conn);
        }
    }

    /// Reserves one of the `MAX_STREAMS` streamed replies for `conn`; the
    /// reply then arrives through `push_chunk`. Err says why not.
    pub fn begin_stream(&mut self, conn: ConnId) -> Result<(), String> {
        if self.streams >= MAX_STREAMS {
            return Err(format!(
                "{MAX_STREAMS} long replies are already being sent; try again shortly"
            ));
        }
        let Some(c) = self.conn_mut(conn) else {
            return Err("connection closed".into());
        };
        c.streaming = Some(Stream::Awaiting);
        self.streams = self.streams.saturating_add(1);
        Ok(())
    }

    /// Queues the next piece of `conn`'s streamed reply; `last` ends it and
    /// answers the request.
    pub fn push_chunk(&mut self, registry: &Registry, conn: ConnId, bytes: &[u8], last: bool) {
        let token = Token(FIRST_CONN_TOKEN.wrapping_add(conn.slot));
        let now_ms = self.now_ms;
        let Some(c) = Self::conn_in(&mut self.conns, conn) else {
            return;
        };
        if c.streaming.is_none() {
            return;
        }
        c.output.extend(bytes);
        // Progress: a reader that keeps reading keeps its connection.
        c.since_ms = now_ms;
        let mut ended = false;
        if last {
            c.streaming = None;
            c.outstanding = c.outstanding.saturating_sub(1);
            let deferred = std::mem::take(&mut c.deferred);
            c.output.extend(deferred);
            ended = true;
        } else {
            c.streaming = Some(Stream::Draining);
        }
        let failed = Self::flush(c, registry, token).is_err();
        Self::want_chunk(c, conn, &mut self.pulls);
        let done = failed || Self::finished(c);
        let resume = ended && !c.queued && !done;
        if ended {
            self.streams = self.streams.saturating_sub(1);
        }
        if done {
            self.close(registry, conn);
        } else if resume {
            // Requests that waited behind the stream are read next turn.
            if let Some(c) = self.conn_mut(conn) {
                c.queued = true;
            }
            self.pending.push_back(conn);
        }
    }

    /// Asks for the next chunk once the last one has mostly gone out.
    fn want_chunk(conn: &mut Conn, id: ConnId, pulls: &mut Vec<ConnId>) {
        if conn.streaming == Some(Stream::Draining) && conn.output.len() < STREAM_LOW_WATER {
            conn.streaming = Some(Stream::Awaiting);
            pulls.push(id);
        }
    }

    /// Streaming connections ready for more, and those that closed
    /// mid-reply; the caller passes them on to whoever produces the chunks.
    pub fn take_stream_requests(&mut self) -> (Vec<ConnId>, Vec<ConnId>) {
        (
            std::mem::take(&mut self.pulls),
            std::mem::take(&mut self.cancels),
        )
    }

    /// Marks `conn` as following events under request `id`.
    pub fn follow(&mut self, conn: ConnId, id: u64) {
        if let Some(c) = self.conn_mut(conn) {
            c.follow = Some(id);
        }
    }

    /// Sends an event line to every follower; slow followers are dropped.
    pub fn broadcast(&mut self, registry: &Registry, event: &proto::EventRecord) {
        let mut dead = Vec::new();
        for (slot, entry) in self.conns.iter_mut().enumerate() {
            let Some(c) = entry else { continue };
            let Some(id) = c.follow else { continue };
            Self::queue(c, &Reply::event(id, event.clone()));
            if Self::flush(c, registry, Token(FIRST_CONN_TOKEN + slot)).is_err() || c.closing {
                dead.push(ConnId {
                    slot,
                    generation: c.generation,
                });
            }
        }
        for id in dead {
            self.close(registry, id);
        }
    }

    /// Makes `conn` a `logs` stream under request `id`: its lines come
    /// through `reply` at the pace `tail_room` allows.
    pub fn tail(&mut self, conn: ConnId, id: u64) {
        if let Some(c) = self.conn_mut(conn) {
            c.tail = Some(id);
        }
    }

    /// Ends `conn`'s `logs` stream (its last item was queued).
    pub fn untail(&mut self, registry: &Registry, conn: ConnId) {
        let now_ms = self.now_ms;
        let Some(c) = self.conn_mut(conn) else { return };
        c.tail = None;
        c.tail_hungry = false;
        // The idle limit applies again, from now: a long stream must not
        // leave it expired before its last lines are out.
        c.since_ms = now_ms;
        if Self::finished(c) {
            self.close(registry, conn);
        }
    }

    /// How many more bytes `conn`'s `logs` stream may be given now; None
    /// when it is gone or closing.
    pub fn tail_room(&self, conn: ConnId) -> Option<usize> {
        self.conns
            .get(conn.slot)
            .and_then(|c| c.as_ref())
            .filter(|c| c.generation == conn.generation && !c.closing)
            .map(|c| TAIL_OUTPUT.saturating_sub(c.output.len()))
    }

    /// `conn`'s `logs` stream has more to send than `tail_room` allowed: it
    /// is listed by `take_tail_pulls` once its output has drained.
    pub fn want_tail(&mut self, conn: ConnId) {
        let Some(c) = self.conn_mut(conn) else { return };
        if c.output.len() < TAIL_LOW_WATER {
            c.tail_hungry = false;
            self.tail_pulls.push(conn);
        } else {
            c.tail_hungry = true;
        }
    }

    /// `logs` streams ready for more, and those that closed.
    pub fn take_tail_pulls(&mut self) -> (Vec<ConnId>, Vec<ConnId>) {
        (
            std::mem::take(&mut self.tail_pulls),
            std::mem::take(&mut self.tail_closed),
        )
    }

    pub fn close(&mut self, registry: &Registry, conn: ConnId) {
        let Some(entry) = self.conns.get_mut(conn.slot) else {
            return;
        };
        if entry
            .as_ref()
            .is_some_and(|c| c.generation == conn.generation)
        {
            if let Some(mut c) = entry.take() {
                let _ = registry.deregister(&mut c.stream);
                if c.access != Access::Full {
                    self.limited = self.limited.saturating_sub(1);
                }
                if c.streaming.is_some() {
                    self.streams = self.streams.saturating_sub(1);
                    self.cancels.push(conn);
                }
                if c.tail.is_some() {
                    self.tail_closed.push(conn);
                }
            }
            self.free.push(conn.slot);
        }
    }

    /// Whether `c` owes a request and is not exempt from the deadline.
    fn idle_deadline(&self, c: &Conn) -> Option<u64> {
        // A streamed reply counts as answered while it moves (`push_chunk`
        // moves `since_ms`): a reader that stops reading it is closed.
        (c.follow.is_none() && c.tail.is_none() && (c.outstanding == 0 || c.streaming.is_some()))
            .then(|| c.since_ms.saturating_add(self.idle_ms))
    }

    /// When `turn` should run next, if ever: at once while connections are
    /// queued, else at the next idle deadline or accept retry.
    pub fn next_deadline(&self) -> Option<u64> {
        if !self.pending.is_empty() {
            return Some(0);
        }
        self.conns
            .iter()
            .flatten()
            .filter_map(|c| self.idle_deadline(c))
            .chain(self.accept_retry_at)
            .min()
    }

    /// Closes connections that have not completed a request in time.
    pub fn expire(&mut self, registry: &Registry, now_ms: u64) {
        let idle: Vec<ConnId> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| c.as_ref().map(|c| (slot, c)))
            .filter(|(_, c)| self.idle_deadline(c).is_some_and(|at| at <= now_ms))
            .map(|(slot, c)| ConnId {
                slot,
                generation: c.generation,
            })
            .collect();
        for id in idle {
            self.close(registry, id);
        }
    }

    pub fn connections(&self) -> usize {
        self.conns.iter().flatten().count()
    }
}

fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::errno::Errno::EMFILE as i32 || code == nix::errno::Errno::ENFILE as i32
    )
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        // Whatever replaced our socket meanwhile is not ours to remove.
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rules() {
        assert_eq!(access(0, &[0], 1000, None), Access::Full);
        assert_eq!(access(1000, &[1000], 1000, None), Access::Full);
        assert_eq!(access(1001, &[1001, 50], 1000, Some(50)), Access::ReadOnly);
        assert_eq!(access(1001, &[1001], 1000, Some(50)), Access::None);
        assert_eq!(access(1001, &[1001], 0, None), Access::None);
    }
}
