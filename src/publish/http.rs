//! `zurg publisher --http ADDR`: the live status page and its JSON API,
//! served from the publisher's own mio loop.
//!
//! The page (HTML, JS and CSS embedded with `include_str!`) opens one
//! server-sent-event stream, `/events`: first the whole state (hosts,
//! services, the board's figures), then every change as the publisher
//! applies it, taken from the same fan-out that `resolve --watch` uses. A
//! browser that does not read its stream is dropped by the watchers' rules
//! (an equal share of their output budget); the page reconnects and gets
//! the whole state again.
//!
//! Bounds, as for the publisher's other peers: the connections count
//! against its `MAX_CONNS`, streams against `MAX_WATCHERS`; a request must
//! arrive whole (head and body under 16 KiB) within 10 s, a response must
//! keep moving, a response body is at most 8 MiB and all queued HTTP output
//! together at most 64 MiB. One connection, one request: every answer but
//! the stream closes it. Requests are parsed by `httparse`.
//!
//! Access: without `--token-file` the address must be loopback, and the
//! `Host` header must name a loopback address or `localhost` (so a web
//! page elsewhere cannot reach the API by rebinding its DNS name to
//! 127.0.0.1). With `--token-file`, every path answers 401 (with the login
//! form) until the browser proves the token once: `POST /login` with the
//! token as its body sets a session cookie (HttpOnly, SameSite=Strict),
//! `ISSUED.MAC` with MAC = HMAC-SHA256 over the issue time under a key the
//! publisher draws at start. Scripts may send `Authorization: Bearer TOKEN`
//! instead. Every comparison is the hmac crate's constant-time one.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, Mac};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use sha2::Sha256;

use super::board::Board;
use super::listen::{write_out, Accepting, Acceptor, Written};
use super::proto;
use super::registry::{Change, Registry};
use super::store::ConnId;

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");
const LOGIN_HTML: &str = include_str!("page/login.html");

/// A request's head and body together.
const MAX_REQUEST: usize = 16 * 1024;
const MAX_HEADERS: usize = 32;
/// A request must arrive whole within this; a response that takes no
/// bytes for this long is given up.
const REQUEST_MS: u64 = 10_000;
/// One response body; past it the API answers 503 and points to
/// `zurg resolve --all`, which pages its listing.
const MAX_RESPONSE: usize = 8 * 1024 * 1024;
/// What all HTTP connections together may have queued (responses, and
/// each stream's first state); a request past it gets 503 and Retry-After.
const HTTP_OUTPUT: usize = 64 * 1024 * 1024;
/// A stream's changes are written once this much waits, or at the end of
/// the loop's turn (as for watchers).
const WRITE_AT: usize = 16 * 1024;
/// Streams written per turn of the loop: between batches it polls again,
/// so a forwarder's next change and its watchers' notices wait behind at
/// most this many writes rather than one to every stream open.
const STREAMS_PER_TURN: usize = 16;
/// How long a session cookie is good for.
const SESSION_S: u64 = 86_400;
const COOKIE: &str = "zurg_session";
/// Where the EventSource reconnects after losing its stream, in ms.
const SSE_RETRY_MS: u64 = 1_000;

const CSP_PAGE: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'";
const CSP_LOGIN: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Why `--http` cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("--http {0}: not a loopback address; give --token-file F so the page asks for the token, or bind 127.0.0.1")]
    NeedsToken(SocketAddr),
    #[error("cannot listen on {addr} for --http: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot draw the session key from getrandom(2): {0}; check that the kernel's random generator is available")]
    Random(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the request.
    Request,
    /// Writing the one response; closed once written.
    Response,
    /// An event stream: the state, then changes, until the peer leaves or
    /// falls behind.
    Stream,
}

#[derive(Debug)]
struct HttpConn {
    stream: TcpStream,
    addr: SocketAddr,
    input: Vec<u8>,
    out: Vec<u8>,
    phase: Phase,
    opened_ms: u64,
    /// When the peer last took bytes from us.
    active_ms: u64,
    writable: bool,
    /// Bytes of a stream's first state still unsent: they are not lag.
    state_left: usize,
    /// The id of the last change in a stream's first state.
    state_id: u64,
    dirty: bool,
}

/// The HTTP side of the publisher.
pub struct Http {
    /// Gone once the publisher is stopping: new connections are refused by
    /// the kernel rather than queued for a loop that will not serve them.
    listener: Option<TcpListener>,
    /// The loop's registry, to take closed connections out of it.
    registry: mio::Registry,
    conns: BTreeMap<ConnId, HttpConn>,
    /// Deadlines of connections, earliest first, each no later than its
    /// connection's own (`deadline`, which only moves later): the loop
    /// looks at the few due rather than at every connection each turn,
    /// which 500 idle ones made the longest part of a notice's way
    /// through the publisher. An entry found early is put back at its
    /// connection's deadline then.
    deadlines: BinaryHeap<Reverse<(u64, ConnId)>>,
    board: Board,
    auth: Auth,
    streams: usize,
    /// Streams with output queued, oldest first; `flush_dirty` writes
    /// `STREAMS_PER_TURN` of them a turn.
    dirty: VecDeque<ConnId>,
    /// Changes not yet handed to the streams, encoded as events, and the
    /// id and offset of each. They are handed out as soon as the streams
    /// have been written what they were handed before: at once when the
    /// page is idle, and as one write a stream for the changes of a burst
    /// that came while the last hand-out was being written (~10 µs a write
    /// on loopback, a millisecond a change at 100 streams, which the
    /// watchers' next notice would otherwise wait behind). No timer: a
    /// lone change reaches the page as soon as it reaches the watchers.
    pending: Vec<u8>,
    pending_ids: Vec<(u64, usize)>,
    acceptor: Acceptor,
}

/// What the publisher's loop lends the HTTP side for one call.
pub struct Ctx<'a> {
    pub view: &'a Registry,
    pub now_ms: u64,
    /// Open connections of the publish protocol, for `MAX_CONNS`.
    pub conns: usize,
    /// Resolve watchers, for the cap `MAX_WATCHERS` streams share.
    pub watchers: usize,
}

/// A parsed request: what routing needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub host: Option<String>,
    pub cookie: Option<String>,
    pub bearer: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes needed.
    Partial,
    Done(Request),
    /// Answer with this status and close.
    Bad(u16, &'static str),
}

/// Parses one request from the start of `buf` (head by httparse, then a
/// body of `Content-Length` bytes).
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_REQUEST {
                Parsed::Bad(431, "request head over 16 KiB")
            } else {
                Parsed::Partial
            }
        }
        Err(httparse::Error::TooManyHeaders) => return Parsed::Bad(431, "too many headers"),
        Err(_) => return Parsed::Bad(400, "malformed request"),
    };
    let mut out = Request {
        method: req.method.unwrap_or_default().to_string(),
        path: String::new(),
        query: String::new(),
        host: None,
        cookie: None,
        bearer: None,
        body: Vec::new(),
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    out.path = path.to_string();
    out.query = query.to_string();
    let mut length = 0usize;
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        if h.name.eq_ignore_ascii_case("host") {
            out.host = Some(value);
        } else if h.name.eq_ignore_ascii_case("cookie") {
            out.cookie = Some(match out.cookie.take() {
                Some(c) => format!("{c}; {value}"),
                None => value,
            });
        } else if h.name.eq_ignore_ascii_case("authorization") {
            // The scheme is case-insensitive (RFC 9110 11.1): `bearer`
            // from a script is as good as `Bearer`.
            out.bearer = value
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim().to_string());
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let Ok(n) = value.parse::<usize>() else {
                return Parsed::Bad(400, "bad Content-Length");
            };
            length = n;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad(501, "chunked request bodies are not supported");
        }
    }
    let end = head.saturating_add(length);
    if end > MAX_REQUEST {
        return Parsed::Bad(413, "request over 16 KiB");
    }
    match buf.get(head..end) {
        Some(body) => {
            out.body = body.to_vec();
            Parsed::Done(out)
        }
        None => Parsed::Partial,
    }
}

/// Whether a `Host` header names this machine's loopback: `localhost`, or
/// a loopback IP, with or without a port.
pub fn loopback_host(host: &str) -> bool {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The token check and the session cookies.
struct Auth {
    token: Option<Vec<u8>>,
    key: [u8; 32],
}

type HmacSha256 = Hmac<Sha256>;

impl Auth {
    fn keyed(&self) -> HmacSha256 {
        // HMAC takes a key of any length; this cannot fail.
        match HmacSha256::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => HmacSha256::new(&Default::default()),
        }
    }

    fn session_mac(&self, issued_s: u64) -> HmacSha256 {
        let mut m = self.keyed();
        m.update(format!("zurg-http/1 session {issued_s}").as_bytes());
        m
    }

    fn cookie(&self, now_s: u64) -> String {
        let mac = self.session_mac(now_s).finalize().into_bytes();
        format!("{now_s}.{}", proto::hex(&mac))
    }

    fn valid_cookie(&self, value: &str, now_s: u64) -> bool {
        let Some((issued, mac)) = value.split_once('.') else {
            return false;
        };
        let (Ok(issued), Some(mac)) = (issued.parse::<u64>(), proto::unhex(mac)) else {
            return false;
        };
        // A minute of slack for a clock stepped back since.
        if issued > now_s.saturating_add(60) || now_s.saturating_sub(issued) >= SESSION_S {
            return false;
        }
        self.session_mac(issued).verify_slice(&mac).is_ok()
    }

    /// The given token is the configured one, compared as MACs under the
    /// session key, in constant time.
    fn token_matches(&self, given: &[u8]) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        let mut want = self.keyed();
        want.update(token);
        let want = want.finalize().into_bytes();
        let mut got = self.keyed();
        got.update(given.trim_ascii());
        got.verify_slice(&want).is_ok()
    }

    fn admits(&self, req: &Request, now_s: u64) -> bool {
        if self.token.is_none() {
            return true;
        }
        if req
            .bearer
            .as_deref()
            .is_some_and(|t| self.token_matches(t.as_bytes()))
        {
            return true;
        }
        req.cookie.as_deref().is_some_and(|c| {
            c.split(';')
                .filter_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
                .any(|v| self.valid_cookie(v, now_s))
        })
    }
}

/// The head of an `/events` answer (also all that `HEAD /events` gets).
/// `Connection: close`: the stream has no length and ends only with its
/// connection, so no second request can follow on it; keep-alive made
/// proxies and curl expect one.
const STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n";

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A whole response (`Connection: close`) appended to `out`.
fn response(out: &mut Vec<u8>, status: u16, ctype: &str, extra: &str, body: &[u8]) {
    let csp = if status == 401 { CSP_LOGIN } else { CSP_PAGE };
    let mut head = String::new();
    let _ = write!(
        head,
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\nContent-Security-Policy: {csp}\r\n{extra}Connection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
}

fn text(out: &mut Vec<u8>, status: u16, message: &str) {
    let body = format!("{message}\n");
    response(
        out,
        status,
        "text/plain; charset=utf-8",
        "",
        body.as_bytes(),
    );
}

/// `?since=N` of `/api/events`: 0 when absent. Keys and values are
/// percent-decoded (`since=%31` is `since=1`); one that does not decode to
/// UTF-8 is not the key, or not a number.
fn since_of(query: &str) -> Option<u64> {
    let decoded = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
    };
    let value = query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (decoded(k).ok()? == "since").then(|| decoded(v))
    });
    match value {
        None => Some(0),
        Some(v) => v.ok()?.parse().ok(),
    }
}

fn now_s() -> u64 {
    crate::os::wall_clock_us() / 1_000_000
}

impl Http {
    /// Binds `addr`; refuses a non-loopback address without a token.
    pub fn bind(
        addr: SocketAddr,
        token: Option<Vec<u8>>,
        registry: &mio::Registry,
        listener_token: Token,
    ) -> Result<Http, HttpError> {
        if token.is_none() && !addr.ip().is_loopback() {
            return Err(HttpError::NeedsToken(addr));
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| HttpError::Random(e.to_string()))?;
        let mut listener = crate::os::listen::listen_polled(addr)
            .map_err(|source| HttpError::Listen { addr, source })?;
        registry
            .register(&mut listener, listener_token, Interest::READABLE)
            .map_err(|source| HttpError::Listen { addr, source })?;
        let registry = registry
            .try_clone()
            .map_err(|source| HttpError::Listen { addr, source })?;
        Ok(Http {
            listener: Some(listener),
            registry,
            conns: BTreeMap::new(),
            deadlines: BinaryHeap::new(),
            board: Board::new(),
            auth: Auth { token, key },
            streams: 0,
            dirty: VecDeque::new(),
            pending: Vec::new(),
            pending_ids: Vec::new(),
            acceptor: Acceptor::default(),
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref()?.local_addr().ok()
    }

    pub fn owns(&self, id: ConnId) -> bool {
        self.conns.contains_key(&id)
    }

    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// Open event streams: they count as watchers.
    pub fn streams(&self) -> usize {
        self.streams
    }

    /// Accepts what is queued. `next_conn` is the publisher's id counter
    /// (ids are never reused across both kinds of connection).
    pub fn accept(
        &mut self,
        next_conn: &mut ConnId,
        first_conn: usize,
        max_conns: usize,
        ctx: &Ctx,
    ) {
        let mut refusal = Vec::new();
        text(
            &mut refusal,
            503,
            &format!("too many connections ({max_conns})"),
        );
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        let conns = &mut self.conns;
        let deadlines = &mut self.deadlines;
        self.acceptor.accept(
            listener,
            Accepting {
                registry: &self.registry,
                next_id: next_conn,
                first_token: first_conn,
                open: ctx.conns.saturating_add(conns.len()),
                max: max_conns,
                refusal: &refusal,
                what: "HTTP connection",
                now_ms: ctx.now_ms,
            },
            |id, stream, addr| {
                deadlines.push(Reverse((ctx.now_ms.saturating_add(REQUEST_MS), id)));
                conns.insert(
                    id,
                    HttpConn {
                        stream,
                        addr,
                        input: Vec::new(),
                        out: Vec::new(),
                        phase: Phase::Request,
                        opened_ms: ctx.now_ms,
                        active_ms: ctx.now_ms,
                        writable: true,
                        state_left: 0,
                        state_id: 0,
                        dirty: false,
                    },
                );
            },
        );
    }

    /// When `accept` should be tried again after running out of
    /// descriptors.
    pub fn accept_due(&self, now_ms: u64) -> bool {
        self.acceptor.due(now_ms)
    }

    /// The connection's socket is ready: read, answer, write.
    pub fn ready(&mut self, id: ConnId, writable: bool, ctx: &Ctx) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if writable {
            conn.writable = true;
        }
        let mut buf = [0u8; 4096];
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    if conn.phase == Phase::Response {
                        // Half-closed after its request: it still gets the
                        // answer, and the connection closes once that is
                        // written.
                        break;
                    }
                    // Gone before asking, or a page that left its stream.
                    self.drop_conn(id);
                    return;
                }
                Ok(n) => {
                    if conn.phase != Phase::Request {
                        // One request per connection: the rest is ignored.
                        continue;
                    }
                    conn.input
                        .extend_from_slice(buf.get(..n).unwrap_or_default());
                    match parse(&conn.input) {
                        Parsed::Partial => {}
                        Parsed::Bad(status, why) => {
                            let mut out = std::mem::take(&mut conn.out);
                            text(&mut out, status, why);
                            self.start_response(id, out);
                        }
                        Parsed::Done(req) => {
                            conn.input = Vec::new();
                            self.route(id, &req, ctx);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_conn(id);
                    return;
                }
            }
        }
        self.flush(id, ctx.now_ms);
    }

    fn start_response(&mut self, id: ConnId, out: Vec<u8>) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.out = out;
            conn.phase = Phase::Response;
        }
    }

    fn queued(&self) -> usize {
        self.conns
            .values()
            .map(|c| c.out.len())
            .fold(0, usize::saturating_add)
    }

    /// Answers one request. `HEAD` is answered as `GET` without the body
    /// (same status and headers, `Content-Length` of the body it would
    /// have), so `curl -I` works; on `/events` it gets the stream's head and
    /// the connection closes.
    fn route(&mut self, id: ConnId, req: &Request, ctx: &Ctx) {
        self.answer(id, req, ctx);
        if req.method != "HEAD" {
            return;
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            if conn.phase == Phase::Response {
                if let Some(end) = conn.out.windows(4).position(|w| w == b"\r\n\r\n") {
                    conn.out.truncate(end.saturating_add(4));
                }
            }
        }
    }

    fn answer(&mut self, id: ConnId, req: &Request, ctx: &Ctx) {
        let mut out = Vec::new();
        if self.auth.token.is_none() && !req.host.as_deref().is_some_and(loopback_host) {
            // A page elsewhere that rebound its name to 127.0.0.1 sends its
            // own name here.
            text(
                &mut out,
                403,
                "the Host header must name a loopback address or localhost",
            );
            return self.start_response(id, out);
        }
        let now_s = now_s();
        if req.method == "POST" && req.path == "/login" && self.auth.token.is_some() {
            if self.auth.token_matches(&req.body) {
                let cookie = format!(
                    "Set-Cookie: {COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_S}\r\n",
                    self.auth.cookie(now_s)
                );
                response(&mut out, 204, "text/plain", &cookie, b"");
            } else {
                let addr = self.conns.get(&id).map(|c| c.addr);
                crate::log!("status page: a wrong token from {addr:?}");
                self.unauthorized(&mut out);
            }
            return self.start_response(id, out);
        }
        if !self.auth.admits(req, now_s) {
            self.unauthorized(&mut out);
            return self.start_response(id, out);
        }
        if req.method != "GET" && req.method != "HEAD" {
            // A 405 names what is allowed (RFC 9110 15.5.6).
            response(
                &mut out,
                405,
                "text/plain; charset=utf-8",
                "Allow: GET, HEAD\r\n",
                b"only GET, HEAD (and POST /login)\n",
            );
            return self.start_response(id, out);
        }
        let json = "application/json";
        let doc = match req.path.as_str() {
            "/" | "/index.html" => {
                response(
                    &mut out,
                    200,
                    "text/html; charset=utf-8",
                    "",
                    INDEX_HTML.as_bytes(),
                );
                return self.start_response(id, out);
            }
            "/app.js" => {
                response(
                    &mut out,
                    200,
                    "text/javascript; charset=utf-8",
                    "",
                    APP_JS.as_bytes(),
                );
                return self.start_response(id, out);
            }
            "/style.css" => {
                response(
                    &mut out,
                    200,
                    "text/css; charset=utf-8",
                    "",
                    STYLE_CSS.as_bytes(),
                );
                return self.start_response(id, out);
            }
            "/events" if req.method == "HEAD" => {
                // The stream's head, then close: no stream is opened.
                out.extend_from_slice(STREAM_HEAD.as_bytes());
                return self.start_response(id, out);
            }
            "/events" => return self.open_stream(id, ctx),
            "/api/services" => serde_json::json!({
                "id": self.board.last_id(),
                "services": services(ctx.view),
            }),
            "/api/hosts" => serde_json::json!({
                "id": self.board.last_id(),
                "hosts": ctx.view.hosts(),
            }),
            "/api/stats" => serde_json::json!({
                "id": self.board.last_id(),
                "stats": self.board.stats().collect::<Vec<_>>(),
            }),
            "/api/events" => match since_of(&req.query) {
                Some(since) => serde_json::to_value(self.board.since(since)).unwrap_or_default(),
                None => {
                    text(&mut out, 400, "since: expected an event id (a number)");
                    return self.start_response(id, out);
                }
            },
            _ => {
                text(&mut out, 404, "no such page");
                return self.start_response(id, out);
            }
        };
        let body = serde_json::to_vec(&doc).unwrap_or_default();
        match self.refuse_size(body.len()) {
            Some(refusal) => out = refusal,
            None => response(&mut out, 200, json, "", &body),
        }
        self.start_response(id, out)
    }

    /// The 503 for a body of `len` bytes that cannot be queued now, if it
    /// cannot.
    fn refuse_size(&self, len: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        if len > MAX_RESPONSE {
            let why = format!(
                "the answer would be {len} bytes, over the {MAX_RESPONSE}-byte bound; use zurg resolve --all, which pages it\n"
            );
            response(
                &mut out,
                503,
                "text/plain; charset=utf-8",
                "",
                why.as_bytes(),
            );
            return Some(out);
        }
        if self.queued().saturating_add(len) > HTTP_OUTPUT {
            let why = "too much output waits for slow readers; try again in a second\n";
            response(
                &mut out,
                503,
                "text/plain; charset=utf-8",
                "Retry-After: 1\r\n",
                why.as_bytes(),
            );
            return Some(out);
        }
        None
    }

    fn unauthorized(&self, out: &mut Vec<u8>) {
        response(
            out,
            401,
            "text/html; charset=utf-8",
            "WWW-Authenticate: Bearer realm=\"zurg\"\r\n",
            LOGIN_HTML.as_bytes(),
        );
    }

    /// `/events`: the state, then every change.
    fn open_stream(&mut self, id: ConnId, ctx: &Ctx) {
        let mut out = Vec::new();
        if self.streams.saturating_add(ctx.watchers) >= super::server::MAX_WATCHERS {
            text(&mut out, 503, "too many watchers; try again later");
            return self.start_response(id, out);
        }
        let state = serde_json::json!({
            "id": self.board.last_id(),
            "now_us": crate::os::wall_clock_us(),
            "hosts": ctx.view.hosts(),
            "services": services(ctx.view),
            "stats": self.board.stats().collect::<Vec<_>>(),
        });
        let body = serde_json::to_vec(&state).unwrap_or_default();
        if let Some(refusal) = self.refuse_size(body.len()) {
            return self.start_response(id, refusal);
        }
        let head = format!(
            "{STREAM_HEAD}retry: {SSE_RETRY_MS}\n\nid: {}\nevent: state\ndata: ",
            self.board.last_id()
        );
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\n\n");
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.state_left = out.len();
        conn.state_id = self.board.last_id();
        conn.out = out;
        conn.phase = Phase::Stream;
        self.streams = self.streams.saturating_add(1);
    }

    /// Records a change the publisher applied and queues it for every
    /// stream, encoded once; the streams get it when `flush_dirty` is due.
    /// `share` is a watcher's share of the output budget: a stream that
    /// has more than that (past its first state) unread is dropped.
    pub fn on_change(&mut self, change: &Change, time_us: u64, share: usize, now_ms: u64) {
        let (recorded, stat) = self.board.record(change, time_us);
        if self.streams == 0 {
            return;
        }
        let mut data = recorded.json.clone();
        if let (Some(obj), Ok(stat)) = (data.as_object_mut(), serde_json::to_value(stat)) {
            obj.insert("stat".into(), stat);
        }
        let id = recorded.id;
        self.pending_ids.push((id, self.pending.len()));
        self.pending
            .extend_from_slice(format!("id: {id}\nevent: change\ndata: ").as_bytes());
        let _ = serde_json::to_writer(&mut self.pending, &data);
        self.pending.extend_from_slice(b"\n\n");
        if self.pending.len() >= WRITE_AT {
            self.hand_out(share, now_ms);
        }
    }

    /// Appends the pending changes to every stream whose state they are
    /// not already in, dropping a stream that falls past `share`.
    fn hand_out(&mut self, share: usize, now_ms: u64) {
        if self.pending.is_empty() {
            return;
        }
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Stream)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            // A stream opened since the first of them has the rest in its
            // state already.
            let from = self
                .pending_ids
                .partition_point(|(e, _)| *e <= conn.state_id);
            let Some(&(_, at)) = self.pending_ids.get(from) else {
                continue;
            };
            conn.out
                .extend_from_slice(self.pending.get(at..).unwrap_or_default());
            let lag = conn.out.len().saturating_sub(conn.state_left);
            if lag > share {
                crate::log!(
                    "status page stream at {} fell {lag} bytes behind (its share is {share}); dropping it",
                    conn.addr
                );
                self.drop_conn(id);
                continue;
            }
            if conn.out.len() >= WRITE_AT {
                self.flush(id, now_ms);
            } else if !conn.dirty {
                conn.dirty = true;
                self.dirty.push_back(id);
            }
        }
        self.pending.clear();
        self.pending_ids.clear();
    }

    /// The publisher is stopping: no more connections; a request still
    /// arriving is dropped, a response goes on until written, and each
    /// event stream gets a `stopping` event and ends once it is written (the
    /// page then shows a banner and looks for a publisher's return itself;
    /// another EventSource client retries every `SSE_RETRY_MS`).
    pub fn stop(&mut self, now_ms: u64) {
        // Changes not yet handed out go before the goodbye.
        self.hand_out(usize::MAX, now_ms);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.registry.deregister(&mut listener);
        }
        let ids: Vec<(ConnId, Phase)> = self.conns.iter().map(|(id, c)| (*id, c.phase)).collect();
        for (id, phase) in ids {
            match phase {
                Phase::Request => self.drop_conn(id),
                Phase::Response => self.flush(id, now_ms),
                Phase::Stream => {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.out.extend_from_slice(
                            b"event: stopping\ndata: {\"reason\":\"the publisher is stopping\"}\n\n",
                        );
                        conn.phase = Phase::Response;
                        self.streams = self.streams.saturating_sub(1);
                    }
                    self.flush(id, now_ms);
                }
            }
        }
    }

    /// Hands the pending changes to the streams once the last hand-out is
    /// written, and writes to the `STREAMS_PER_TURN` streams waiting
    /// longest; `flushing` says whether more are left.
    pub fn flush_dirty(&mut self, share: usize, now_ms: u64) {
        if self.dirty.is_empty() {
            self.hand_out(share, now_ms);
        }
        for _ in 0..STREAMS_PER_TURN {
            let Some(id) = self.dirty.pop_front() else {
                break;
            };
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.dirty = false;
            }
            self.flush(id, now_ms);
        }
    }

    /// Streams have changes to be handed or written (the loop should not
    /// sleep).
    pub fn flushing(&self) -> bool {
        !self.dirty.is_empty() || !self.pending.is_empty()
    }

    fn flush(&mut self, id: ConnId, now_ms: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if !conn.writable {
            return;
        }
        let Written { bytes, failed } =
            write_out(&mut conn.stream, &mut conn.out, &mut conn.writable);
        if bytes > 0 {
            conn.active_ms = now_ms;
            conn.state_left = conn.state_left.saturating_sub(bytes);
        }
        if failed || (conn.phase == Phase::Response && conn.out.is_empty()) {
            self.drop_conn(id);
        }
    }

    fn drop_conn(&mut self, id: ConnId) {
        if let Some(mut conn) = self.conns.remove(&id) {
            if conn.phase == Phase::Stream {
                self.streams = self.streams.saturating_sub(1);
            }
            let _ = self.registry.deregister(&mut conn.stream);
            self.acceptor.freed();
        }
    }

    /// The next deadline of a request still arriving or a response not
    /// moving, or an accept to retry.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines
            .peek()
            .map(|Reverse((at, _))| *at)
            .into_iter()
            .chain(self.acceptor.next_deadline())
            .min()
    }

    /// Closes the connections past their deadline: a request not whole
    /// within 10 s gets 408, a response nobody reads is dropped.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(&Reverse((at, id))) = self.deadlines.peek() {
            if at > now_ms {
                return;
            }
            self.deadlines.pop();
            // Gone, or a stream (no deadline): nothing to keep.
            let Some((due, phase)) = self
                .conns
                .get(&id)
                .and_then(|c| deadline(c).map(|due| (due, c.phase)))
            else {
                continue;
            };
            if due > now_ms {
                self.deadlines.push(Reverse((due, id)));
            } else if phase == Phase::Request {
                let mut out = Vec::new();
                text(&mut out, 408, "the request did not arrive within 10 s");
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.active_ms = now_ms;
                }
                self.deadlines
                    .push(Reverse((now_ms.saturating_add(REQUEST_MS), id)));
                self.start_response(id, out);
                self.flush(id, now_ms);
            } else {
                self.drop_conn(id);
            }
        }
    }
}

fn deadline(c: &HttpConn) -> Option<u64> {
    match c.phase {
        Phase::Request => Some(c.opened_ms.saturating_add(REQUEST_MS)),
        Phase::Response => Some(c.active_ms.saturating_add(REQUEST_MS)),
        Phase::Stream => None,
    }
}

/// Every name with its live endpoints: the `services` of
/// `resolve --all --json`.
fn services(view: &Registry) -> BTreeMap<String, Vec<super::proto::Endpoint>> {
    view.names()
        .map(|n| (n.clone(), view.endpoints(n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(raw: &str) -> Request {
        match parse(raw.as_bytes()) {
            Parsed::Done(r) => r,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn requests_are_parsed_whole_or_not_at_all() {
        let r = done("GET /api/events?since=7 HTTP/1.1\r\nHost: localhost:8080\r\nCookie: a=b\r\nCookie: zurg_session=1.ab\r\n\r\n");
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/api/events"));
        assert_eq!(r.query, "since=7");
        assert_eq!(r.host.as_deref(), Some("localhost:8080"));
        assert_eq!(r.cookie.as_deref(), Some("a=b; zurg_session=1.ab"));
        assert_eq!(since_of(&r.query), Some(7));
        assert_eq!(since_of(""), Some(0));
        assert_eq!(since_of("since=x"), None);
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial);
        let post = "POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\ns3c";
        assert_eq!(parse(post.as_bytes()), Parsed::Partial);
        assert_eq!(done(&format!("{post}ret")).body, b"s3cret");
        assert!(matches!(
            parse(b"\x00\x01 / HTTP/1.1\r\n\r\n"),
            Parsed::Bad(400, _)
        ));
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        assert!(matches!(
            parse(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Parsed::Bad(431, _)
        ));
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_REQUEST));
        assert!(matches!(parse(huge.as_bytes()), Parsed::Bad(431, _)));
        let big_body = "POST /login HTTP/1.1\r\nContent-Length: 99999\r\n\r\n";
        assert!(matches!(parse(big_body.as_bytes()), Parsed::Bad(413, _)));
        let chunked = "POST /login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse(chunked.as_bytes()), Parsed::Bad(501, _)));
    }

    #[test]
    fn since_is_read_percent_decoded() {
        assert_eq!(since_of(""), Some(0));
        assert_eq!(since_of("since=12"), Some(12));
        assert_eq!(since_of("since=%31"), Some(1));
        assert_eq!(since_of("x=1&%73ince=%32%33"), Some(23));
        assert_eq!(since_of("since=soon"), None);
        assert_eq!(since_of("since=%ff"), None);
        assert_eq!(since_of("since="), None);
    }

    #[test]
    fn only_loopback_names_pass_the_host_check() {
        for ok in [
            "localhost",
            "LOCALHOST:80",
            "127.0.0.1:9",
            "127.3.4.5",
            "[::1]:8080",
            "::1",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:80",
            "10.0.0.1:80",
            "[fe80::1]:80",
            "localhost.evil.example",
            "",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn sessions_are_macs_of_their_issue_time_and_expire() {
        let auth = Auth {
            token: Some(b"s3cret".to_vec()),
            key: [7; 32],
        };
        let now = 1_764_000_000;
        let c = auth.cookie(now);
        assert!(auth.valid_cookie(&c, now));
        assert!(auth.valid_cookie(&c, now + SESSION_S - 1));
        assert!(!auth.valid_cookie(&c, now + SESSION_S));
        assert!(!auth.valid_cookie(&c, now - 3600));
        // Another publisher's key, a changed time, garbage: refused.
        let other = Auth {
            token: Some(b"s3cret".to_vec()),
            key: [8; 32],
        };
        assert!(!other.valid_cookie(&c, now));
        let (_, mac) = c.split_once('.').unwrap();
        assert!(!auth.valid_cookie(&format!("{}.{mac}", now + 1), now));
        assert!(!auth.valid_cookie("nonsense", now));
        assert!(!c.contains("s3cret"));
        assert!(auth.token_matches(b"s3cret"));
        assert!(auth.token_matches(b"s3cret\n"));
        assert!(!auth.token_matches(b"s3cre"));
        let req = |cookie: Option<String>, bearer: Option<&str>| Request {
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            host: None,
            cookie,
            bearer: bearer.map(str::to_string),
            body: Vec::new(),
        };
        assert!(auth.admits(&req(Some(format!("x=1; {COOKIE}={c}")), None), now));
        assert!(auth.admits(&req(None, Some("s3cret")), now));
        assert!(!auth.admits(&req(None, Some("nope")), now));
        assert!(!auth.admits(&req(Some("zurg_session=1.00".into()), None), now));
    }
}
