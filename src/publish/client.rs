//! `zurg resolve`: asks a publisher where a service runs, and with
//! `--watch` follows every change, reconnecting (and listing again) when
//! the publisher goes away. It is also the reference for what any client
//! library does: connect, hello, resolve, read until `synced`, then apply
//! changes; on a lost connection, reconnect with backoff and list again.
//! With several publishers (`--publisher A,B`) every reconnection goes to
//! the next one of the list, at once when the publisher said it is
//! stopping, after the backoff otherwise.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

use super::addrs::Publishers;
use super::proto::{self, ChangeKind, Decoder, Endpoint, Frame, HostInfo, Role, PROTOCOL};
use super::server::{nonce, read_token, string_value};

/// Listings of every name can be large; a client trusts its publisher more
/// than the publisher trusts its peers.
const CLIENT_MAX_FRAME: usize = 16 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_BACKOFF_MS: u64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub name: Option<String>,
    pub watch: bool,
    pub json: bool,
    pub publishers: Publishers,
    pub token_file: Option<PathBuf>,
    pub timeout_ms: u64,
}

pub fn parse_options(args: &[String], env_publisher: Option<String>) -> Result<Options, String> {
    let mut name = None;
    let mut all = false;
    let mut watch = false;
    let mut json = false;
    let mut publisher = match env_publisher.filter(|s| !s.is_empty()) {
        Some(v) => {
            Some(Publishers::parse_option("$ZURG_PUBLISHER", &v).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let mut token_file = None;
    let mut timeout_ms = 5_000;
    let mut p = lexopt::Parser::from_args(args.iter().skip(1));
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("all") => all = true,
            Short('w') | Long("watch") => watch = true,
            Long("json") => json = true,
            Long("publisher") => {
                publisher =
                    Some(Publishers::parse(&string_value(&mut p)?).map_err(|e| e.to_string())?)
            }
            Long("token-file") => token_file = Some(PathBuf::from(string_value(&mut p)?)),
            Long("timeout") => {
                let v = string_value(&mut p)?;
                timeout_ms = crate::cli::parse_duration_ms(&v)
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| {
                        format!("--timeout {v:?}: expected a duration like 500ms or 5s")
                    })?;
            }
            Value(v) if name.is_none() => {
                name = Some(v.string().map_err(|v| format!("name {v:?} is not UTF-8"))?)
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    if all == name.is_some() {
        return Err("give either a service NAME or --all".into());
    }
    let publishers =
        publisher.ok_or("no publisher: give --publisher HOST:PORT[,...] or set ZURG_PUBLISHER")?;
    Ok(Options {
        name,
        watch,
        json,
        publishers,
        token_file,
        timeout_ms,
    })
}

/// `--help` never reaches it: `cli::parse` answers it from the table.
pub fn run(args: &[String]) -> i32 {
    let opts = match parse_options(args, std::env::var("ZURG_PUBLISHER").ok()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("zurg: {e}\n{}", crate::cli::render::help_for("resolve"));
            return 2;
        }
    };
    let token = match opts.token_file.as_deref().map(read_token).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("zurg resolve: --token-file {e}");
            return 2;
        }
    };
    if opts.watch {
        watch(&opts, token.as_deref())
    } else {
        match list(&opts, token.as_deref()) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("zurg resolve: {e}");
                3
            }
        }
    }
}

/// Why a connection to a publisher ended or never began.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub message: String,
    /// The publisher said it is stopping (`error` with `stopping: true`):
    /// go to the next publisher at once, as a forwarder does.
    pub stopping: bool,
    /// The publisher answered the request and refused it (a history asked
    /// of a publisher that keeps no journal): a failed request (exit 1),
    /// not an unreachable publisher (3).
    pub refused: bool,
    /// The publisher would not let us in: it asked for a token we were
    /// not given, or refused ours or our role (an `error` at the
    /// handshake). For an operator that is exit 4, not 3: the publisher
    /// was reached, the credentials were not enough.
    pub denied: bool,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            stopping: false,
            refused: false,
            denied: false,
        }
    }
}

/// The publisher's `error` frame, as the user reads it: its text
/// escaped (`safe_text`), since every printer shows it as it is.
fn refusal(message: &str, stopping: bool) -> Failure {
    Failure {
        message: format!("publisher: {}", shown(message)),
        stopping,
        refused: false,
        denied: !stopping,
    }
}

/// Text a publisher or a host sent, as a terminal may show it.
fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    crate::safe_text::escaped(text)
}

/// One JSON document per line on stdout, with no character a terminal
/// acts on (`safe_text::json`); what a JSON reader gets is unchanged.
fn json_line(out: &mut impl Write, doc: &impl std::fmt::Display) -> io::Result<()> {
    writeln!(out, "{}", crate::safe_text::json(&doc.to_string()))
}

/// `attempt` on each publisher of `list` in turn until one succeeds,
/// starting at index `from`; each failure but the last is reported on
/// stderr under `who`, naming the publisher tried next. The index of the
/// publisher that answered comes back with its answer.
pub fn first_answer<T>(
    list: &Publishers,
    from: usize,
    who: &str,
    mut attempt: impl FnMut(&str) -> Result<T, Failure>,
) -> Result<(T, usize), Failure> {
    let mut at = from;
    let mut failures = Vec::new();
    for left in (0..list.len()).rev() {
        let addr = list.at(at);
        match attempt(addr) {
            Ok(t) => return Ok((t, at)),
            Err(e) => {
                let next = list.after(at);
                if left > 0 {
                    eprintln!("{who}: publisher {addr}: {e}; trying {}", list.at(next));
                }
                failures.push((addr.to_string(), e));
                at = next;
            }
        }
    }
    let all =
        |what: fn(&Failure) -> bool| !failures.is_empty() && failures.iter().all(|(_, e)| what(e));
    let (all_refused, all_denied) = (all(|e| e.refused), all(|e| e.denied));
    Err(match failures.len() {
        // One publisher: its own words, as before lists existed.
        0 | 1 => failures
            .pop()
            .map(|(_, e)| e)
            .unwrap_or_else(|| Failure::from(String::from("no publisher to ask"))),
        _ => Failure {
            message: format!(
                "no publisher answered: {}",
                failures
                    .iter()
                    .map(|(a, e)| format!("{a}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            stopping: false,
            refused: all_refused,
            denied: all_denied,
        },
    })
}

/// A connection that has passed the handshake.
pub struct Session {
    stream: TcpStream,
    decoder: Decoder,
}

impl Session {
    /// Connects, says hello, and answers the challenge when there is one.
    pub fn open(addr: &str, token: Option<&[u8]>, timeout: Duration) -> Result<Session, String> {
        Session::open_as(addr, Role::Client, token, timeout)
    }

    /// `open` in a given role: an operator proves the operator token.
    pub fn open_as(
        addr: &str,
        role: Role,
        token: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Session, String> {
        Session::open_checked(addr, role, token, timeout).map_err(|f| f.message)
    }

    /// `open_as`, saying whether a refusal was a stopping publisher's.
    pub fn open_checked(
        addr: &str,
        role: Role,
        token: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Session, Failure> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| format!("publisher address {addr:?}: {e}"))?
            .collect();
        let mut last = format!("publisher address {addr:?} resolves to nothing");
        for a in addrs {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT.min(timeout)) {
                Ok(stream) => return Session::handshake(stream, role, token, timeout),
                Err(e) => last = format!("cannot connect to the publisher at {a}: {e}"),
            }
        }
        Err(last.into())
    }

    fn handshake(
        stream: TcpStream,
        role: Role,
        token: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Session, Failure> {
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let mut s = Session {
            stream,
            decoder: Decoder::new(CLIENT_MAX_FRAME),
        };
        let ours = nonce().map_err(|e| e.to_string())?;
        s.send(&Frame::Hello {
            proto: PROTOCOL,
            role,
            host: None,
            zurg: None,
            boot: None,
            hostname: None,
            nonce: Some(ours.clone()),
            instance: None,
            control: Vec::new(),
        })?;
        loop {
            match s.read_frame()? {
                Frame::Challenge { nonce } => {
                    let Some(t) = token else {
                        return Err(Failure {
                            denied: true,
                            ..Failure::from(String::from(match role {
                                Role::Operator => "the publisher requires the operator token: give --operator-token-file",
                                _ => "the publisher requires a token: give --token-file",
                            }))
                        });
                    };
                    s.send(&Frame::Auth {
                        mac: proto::proof(t, role.name(), &nonce),
                    })?;
                }
                Frame::Welcome { mac, .. } => {
                    if let Some(t) = token {
                        if !mac.is_some_and(|m| proto::verify_proof(t, "publisher", &ours, &m)) {
                            return Err(String::from(
                                "the publisher did not prove it knows the token",
                            )
                            .into());
                        }
                    }
                    s.stream.set_read_timeout(None).map_err(|e| e.to_string())?;
                    return Ok(s);
                }
                Frame::Error { message, stopping } => return Err(refusal(&message, stopping)),
                other => return Err(format!("unexpected {} frame", other.type_name()).into()),
            }
        }
    }

    pub fn send(&mut self, frame: &Frame) -> Result<(), String> {
        self.stream
            .write_all(&proto::to_bytes(frame))
            .map_err(|e| format!("publisher connection: {e}"))
    }

    /// The next frame; an error when the connection ends or times out.
    pub fn read_frame(&mut self) -> Result<Frame, String> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            // A bad frame's error may quote what the peer sent.
            let next = self.decoder.next_frame();
            if let Some(f) = next.map_err(|e| shown(&e.to_string()).into_owned())? {
                return Ok(f);
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(format!("{} closed the connection", self.who())),
                Ok(n) => self.decoder.feed(buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    let within = self
                        .stream
                        .read_timeout()
                        .ok()
                        .flatten()
                        .map(|t| {
                            let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
                            format!(" within {}", crate::supervisor::human_ms(ms))
                        })
                        .unwrap_or_default();
                    return Err(format!(
                        "{} did not answer{within} (it took the connection and said nothing: overloaded, stopped, or not a zurg publisher)",
                        self.who()
                    ));
                }
                Err(e) => return Err(format!("publisher connection: {e}")),
            }
        }
    }

    /// "the publisher at ADDR", for messages: with a list, which one.
    fn who(&self) -> String {
        match self.stream.peer_addr() {
            Ok(a) => format!("the publisher at {a}"),
            Err(_) => "the publisher".into(),
        }
    }

    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        let _ = self.stream.set_read_timeout(timeout);
    }
}

/// Everything up to `synced`.
#[derive(Debug, Default)]
struct Listing {
    hosts: Vec<HostInfo>,
    names: Vec<(String, Vec<Endpoint>)>,
}

/// Where an endpoint is reached, as a socket address is written: an IPv6
/// address in brackets (`[2001:db8::1]:8080`), as in its GPID.
fn endpoint_addr(e: &Endpoint) -> String {
    if e.ip.contains(':') {
        format!("[{}]:{}", e.ip, e.port)
    } else {
        format!("{}:{}", e.ip, e.port)
    }
}

/// `resolve`'s text: with `all`, the hosts' table, then the endpoints'
/// (every text escaped before it is padded).
fn listing_table(listing: &Listing, all: bool) -> String {
    let mut out = String::new();
    if all {
        let mut cells = vec![["HOST", "HOSTNAME", "ENDPOINTS", "SEQ", "LIVE", "ZURG"]
            .map(str::to_string)
            .to_vec()];
        for h in &listing.hosts {
            cells.push(vec![
                shown(&h.ip).into_owned(),
                if h.hostname.is_empty() {
                    "-".into()
                } else {
                    shown(&h.hostname).into_owned()
                },
                h.endpoints.to_string(),
                h.seq.to_string(),
                if h.connected { "yes" } else { "no" }.into(),
                shown(&h.zurg).into_owned(),
            ]);
        }
        out.push_str(&crate::cli::client::align(&cells));
        out.push('\n');
    }
    let mut cells = vec![["SERVICE", "ENDPOINT", "VERSION", "GPID"]
        .map(str::to_string)
        .to_vec()];
    for (name, eps) in &listing.names {
        for e in eps {
            cells.push(vec![
                shown(name).into_owned(),
                shown(&endpoint_addr(e)).into_owned(),
                shown(e.version.as_deref().unwrap_or("-")).into_owned(),
                shown(&e.gpid).into_owned(),
            ]);
        }
    }
    out.push_str(&crate::cli::client::align(&cells));
    out
}

fn read_listing(s: &mut Session, echo_json: bool) -> Result<Listing, Failure> {
    let mut listing = Listing::default();
    loop {
        let frame = s.read_frame()?;
        if echo_json {
            print_json(&frame);
        }
        match frame {
            Frame::Hosts { hosts } => listing.hosts.extend(hosts),
            Frame::Endpoints { name, endpoints } => match listing.names.last_mut() {
                Some((last, eps)) if *last == name => eps.extend(endpoints),
                _ => listing.names.push((name, endpoints)),
            },
            Frame::Synced => return Ok(listing),
            Frame::Error { message, stopping } => return Err(refusal(&message, stopping)),
            _ => {}
        }
    }
}

fn request(opts: &Options, addr: &str, token: Option<&[u8]>) -> Result<Session, Failure> {
    let timeout = Duration::from_millis(opts.timeout_ms);
    let mut s = Session::open_checked(addr, Role::Client, token, timeout)?;
    s.set_timeout(Some(timeout));
    s.send(&Frame::Resolve {
        name: opts.name.clone(),
        watch: opts.watch,
    })?;
    Ok(s)
}

fn list(opts: &Options, token: Option<&[u8]>) -> Result<i32, Failure> {
    // A publisher that fails before `synced` leaves nothing printed: the
    // next one's whole listing is the answer.
    let (listing, _) = first_answer(&opts.publishers, 0, "zurg resolve", |addr| {
        let mut s = request(opts, addr, token)?;
        read_listing(&mut s, false)
    })?;
    let total: usize = listing.names.iter().map(|(_, e)| e.len()).sum();
    let mut out = io::stdout().lock();
    if opts.json {
        let doc = match &opts.name {
            Some(name) => serde_json::json!({
                "name": name,
                "endpoints": listing.names.iter().flat_map(|(_, e)| e.iter()).collect::<Vec<_>>(),
            }),
            None => serde_json::json!({
                "hosts": listing.hosts,
                "services": listing.names.iter().map(|(n, e)| (n.clone(), e.clone())).collect::<std::collections::BTreeMap<_, _>>(),
            }),
        };
        let _ = json_line(&mut out, &doc);
    } else if total > 0 {
        // Nothing live: the message below alone, not tables' headers over
        // no rows.
        let _ = out.write_all(listing_table(&listing, opts.name.is_none()).as_bytes());
    }
    if total == 0 {
        match &opts.name {
            Some(name) => eprintln!("zurg resolve: {}: no live endpoints", shown(name)),
            None => eprintln!("zurg resolve: {}", nothing_live(listing.hosts.len())),
        }
        return Ok(1);
    }
    Ok(0)
}

/// `resolve --all`'s message when no service has a live endpoint, with
/// what little the listing still tells: whether any host publishes.
fn nothing_live(hosts: usize) -> String {
    match hosts {
        0 => "no live endpoints: no host has published any".to_string(),
        1 => "no live endpoints: the one host publishing has none".to_string(),
        n => format!("no live endpoints: none of the {n} hosts publishing has one"),
    }
}

fn print_json(frame: &Frame) {
    let mut out = io::stdout().lock();
    if let Ok(text) = serde_json::to_string(frame) {
        if json_line(&mut out, &text)
            .and_then(|_| out.flush())
            .is_err()
        {
            output_closed();
        }
    }
}

/// Whoever read the stream went away (`resolve --watch | head`): done.
fn output_closed() -> ! {
    std::process::exit(0)
}

fn print_change(frame: &Frame) {
    if let Frame::Change {
        change,
        reason,
        endpoint: e,
        exit,
        ..
    } = frame
    {
        let what = match change {
            ChangeKind::Up => "up  ",
            ChangeKind::Down => "down",
        };
        let how = match exit {
            Some(x) => match (&x.code, &x.signal) {
                (_, Some(sig)) => format!(" ({sig})"),
                (Some(c), None) => format!(" (exit {c})"),
                _ => String::new(),
            },
            None => String::new(),
        };
        let mut out = io::stdout().lock();
        let reason = serde_json::to_value(reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let line = format!(
            "{what} {} {} {} [{reason}{how}]",
            e.service,
            endpoint_addr(e),
            e.gpid
        );
        if writeln!(out, "{}", shown(&line))
            .and_then(|_| out.flush())
            .is_err()
        {
            output_closed();
        }
    }
}

/// Streams changes forever; reconnects and lists again when the publisher
/// goes away, so the output always converges on the live set. Each
/// reconnection goes to the next publisher of the list: at once when the
/// last one said it is stopping, after the backoff when it was lost.
fn watch(opts: &Options, token: Option<&[u8]>) -> i32 {
    let list = &opts.publishers;
    let mut backoff_ms = 100;
    let mut at = 0;
    loop {
        let addr = list.at(at);
        let e = watch_one(opts, addr, token, &mut backoff_ms);
        let next = list.after(at);
        let to = if next == at {
            format!("reconnecting to {addr}")
        } else {
            format!("moving to {}", list.at(next))
        };
        if e.stopping {
            eprintln!("zurg resolve: {addr} is stopping ({e}); {to} now");
        } else {
            eprintln!("zurg resolve: {addr}: {e}; {to} in {backoff_ms} ms");
            std::thread::sleep(Duration::from_millis(backoff_ms));
            backoff_ms = backoff_ms.saturating_mul(2).min(MAX_BACKOFF_MS);
        }
        at = next;
    }
}

/// One publisher's listing, then its changes until the stream ends: why
/// it ended. A complete listing resets the backoff.
fn watch_one(opts: &Options, addr: &str, token: Option<&[u8]>, backoff_ms: &mut u64) -> Failure {
    let mut s = match request(opts, addr, token) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let listing = match read_listing(&mut s, opts.json) {
        Ok(l) => l,
        Err(e) => return e,
    };
    if !opts.json {
        for (name, eps) in &listing.names {
            for e in eps {
                let line = format!("live {name} {} {}", endpoint_addr(e), e.gpid);
                let _ = writeln!(io::stdout().lock(), "{}", shown(&line));
            }
        }
    }
    *backoff_ms = 100;
    // Changes may be far apart: no read timeout while watching.
    s.set_timeout(None);
    loop {
        let frame = match s.read_frame() {
            Ok(f) => f,
            Err(e) => return e.into(),
        };
        if let Frame::Error { message, stopping } = &frame {
            return refusal(message, *stopping);
        }
        if opts.json {
            print_json(&frame);
        } else {
            print_change(&frame);
        }
    }
}

/// `zurg history --publisher ADDR ...`: what to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryAsk {
    pub publishers: Publishers,
    /// A host's address or zurg GPID.
    pub host: Option<String>,
    pub token_file: Option<PathBuf>,
    pub name: Option<String>,
    pub since_us: Option<u64>,
}

/// Asks a publisher's journal and prints the records, oldest first: one
/// line each (time, host, service, kind, exit, GPID, version), or with
/// `json` one document `{"ok":true,"result":[records],"older":N}`.
pub fn history(ask: &HistoryAsk, json: bool) -> i32 {
    // A token file that cannot be read is the command line's mistake (2),
    // as for resolve; 3 is for a publisher that cannot be reached.
    let token = match ask.token_file.as_deref().map(read_token).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("zurg history: --token-file {e}");
            return 2;
        }
    };
    match fetch_history(ask, token.as_deref()) {
        Ok(Fetched { unknown_name, .. }) if unknown_name => {
            // As `zurg history NAME` answers for a name zurg does not run
            // and has no record of (exit 1, docs/exit-codes.md).
            let name = ask.name.as_deref().unwrap_or_default();
            let host = ask
                .host
                .as_deref()
                .map(|h| format!(" from host {h}"))
                .unwrap_or_default();
            let message = format!(
                "the publisher's journal holds no record of `{name}` (nor `{name}@N`){host}"
            );
            if json {
                let doc = serde_json::json!({
                    "ok": false,
                    "error": {"code": "unknown_service", "message": message},
                });
                let _ = json_line(&mut io::stdout().lock(), &doc);
            }
            eprintln!("zurg history: {}", shown(&message));
            1
        }
        Ok(Fetched { records, older, .. }) => {
            let mut out = io::stdout().lock();
            if json {
                let doc = serde_json::json!({"ok": true, "result": records, "older": older});
                let _ = json_line(&mut out, &doc);
            } else {
                for r in &records {
                    let _ = writeln!(out, "{}", shown(&history_line(r)));
                }
            }
            if older > 0 {
                eprintln!(
                    "zurg history: {older} older record(s) left out; narrow with a NAME, --host or --since"
                );
            }
            0
        }
        Err(e) => {
            eprintln!("zurg history: {}", shown(&e.message));
            if e.refused {
                1
            } else {
                3
            }
        }
    }
}

/// A publisher's answer to `history`.
#[derive(Debug, Default)]
struct Fetched {
    records: Vec<serde_json::Value>,
    older: u64,
    unknown_name: bool,
}

fn fetch_history(ask: &HistoryAsk, token: Option<&[u8]>) -> Result<Fetched, Failure> {
    first_answer(&ask.publishers, 0, "zurg history", |addr| {
        fetch_history_from(ask, addr, token)
    })
    .map(|(answer, _)| answer)
}

fn fetch_history_from(
    ask: &HistoryAsk,
    addr: &str,
    token: Option<&[u8]>,
) -> Result<Fetched, Failure> {
    let timeout = Duration::from_secs(30);
    let mut s = Session::open_checked(addr, Role::Client, token, timeout)?;
    s.set_timeout(Some(timeout));
    s.send(&Frame::History {
        name: ask.name.clone(),
        host: ask.host.clone(),
        since_us: ask.since_us,
    })?;
    let mut got = Fetched::default();
    loop {
        match s.read_frame()? {
            Frame::Records {
                records: chunk,
                older: o,
                unknown_name,
            } => {
                got.records.extend(chunk);
                got.older += o;
                got.unknown_name |= unknown_name;
            }
            Frame::Synced => return Ok(got),
            Frame::Error { message, stopping } => {
                return Err(Failure {
                    refused: !stopping,
                    ..refusal(&message, stopping)
                })
            }
            other => return Err(format!("unexpected {} frame", other.type_name()).into()),
        }
    }
}

/// One record as a line: `TIME HOST SERVICE KIND[ (EXIT)] GPID[ version V]`.
fn history_line(value: &serde_json::Value) -> String {
    let Ok(r) = serde_json::from_value::<crate::journal::Record>(value.clone()) else {
        return value.to_string();
    };
    let host = r
        .zurg
        .as_deref()
        .and_then(|z| z.split(':').next())
        .unwrap_or("-");
    if let Some(text) = r.remote_text() {
        return format!("{} {host} {text}", crate::cli::utc_timestamp(r.time_us));
    }
    // As `zurg history` prints a local record.
    let exit = match r.exit.as_ref().map(|e| (e.code, e.signal.as_deref())) {
        Some((Some(code), _)) => format!(" (code {code})"),
        Some((None, Some(sig))) => format!(" ({sig})"),
        _ => String::new(),
    };
    let version = r
        .version
        .as_ref()
        .map(|v| format!(" version {v}"))
        .unwrap_or_default();
    format!(
        "{} {host} {} {}{exit} {}{version}",
        crate::cli::utc_timestamp(r.time_us),
        r.service,
        r.kind,
        r.gpid,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn endpoint(service: &str, ip: &str, port: u16, version: Option<&str>, gpid: &str) -> Endpoint {
        Endpoint {
            service: service.into(),
            ip: ip.into(),
            port,
            gpid: gpid.into(),
            version: version.map(str::to_string),
            since_us: 0,
            host: "192.0.2.2:0:1:1".into(),
        }
    }

    #[test]
    fn nothing_live_says_whether_any_host_publishes() {
        assert_eq!(
            nothing_live(0),
            "no live endpoints: no host has published any"
        );
        assert_eq!(
            nothing_live(1),
            "no live endpoints: the one host publishing has none"
        );
        assert_eq!(
            nothing_live(3),
            "no live endpoints: none of the 3 hosts publishing has one"
        );
    }

    #[test]
    fn listing_columns_fit_the_longest_name_and_escaped_text() {
        let long = "a-service-name-of-sixty-nine-bytes-as-long-as-a-unit-name-may-be-1234";
        assert_eq!(long.len(), crate::unit::parse::MAX_SERVICE_NAME_LEN);
        let listing = Listing {
            hosts: vec![HostInfo {
                zurg: "192.0.2.2:0:1:1".into(),
                ip: "192.0.2.2".into(),
                boot: String::new(),
                hostname: "vm\u{1b}[2J".into(),
                seq: 16,
                applied: 16,
                duplicates: 0,
                gaps: 0,
                connected: true,
                endpoints: 2,
            }],
            names: vec![
                (
                    long.into(),
                    vec![endpoint(long, "192.0.2.2", 0, None, "192.0.2.2:0:5:9")],
                ),
                (
                    "web".into(),
                    vec![endpoint(
                        "web",
                        "2001:db8::1",
                        8080,
                        Some("1.2.3"),
                        "[2001:db8::1]:8080:6:11",
                    )],
                ),
            ],
        };
        assert_eq!(
            listing_table(&listing, true),
            "HOST       HOSTNAME   ENDPOINTS  SEQ  LIVE  ZURG\n\
             192.0.2.2  vm\\x1b[2J  2          16   yes   192.0.2.2:0:1:1\n\
             \n\
             SERVICE                                                                ENDPOINT            VERSION  GPID\n\
             a-service-name-of-sixty-nine-bytes-as-long-as-a-unit-name-may-be-1234  192.0.2.2:0         -        192.0.2.2:0:5:9\n\
             web                                                                    [2001:db8::1]:8080  1.2.3    [2001:db8::1]:8080:6:11\n"
        );
        // One name: no hosts' table.
        let one = Listing {
            hosts: Vec::new(),
            names: vec![listing.names[1].clone()],
        };
        assert_eq!(
            listing_table(&one, false),
            "SERVICE  ENDPOINT            VERSION  GPID\n\
             web      [2001:db8::1]:8080  1.2.3    [2001:db8::1]:8080:6:11\n"
        );
    }
}
