//! One try of a tcp, http or exec probe: a non-blocking connect (and an
//! http exchange) in mio, or a command in its own process group whose
//! pidfd is in mio; how it moves on and how it ended.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use mio::Interest;

use super::{http, token, Source};
use crate::os::pidfd::PidFd;
use crate::os::reap::ExitStatus;
use crate::os::spawn::SpawnSpec;
use crate::service::Input;
use crate::supervisor::Supervisor;
use crate::unit::probe::Check;

/// One try of a tcp, http or exec probe.
#[derive(Debug)]
pub(super) enum Attempt {
    Connect {
        stream: mio::net::TcpStream,
        connected: bool,
        /// For http: the request, sent once connected, and the answer's
        /// head read so far.
        http: Option<(Vec<u8>, Vec<u8>)>,
        started_ms: u64,
    },
    Exec {
        pid: i32,
        pidfd: Option<PidFd>,
        started_ms: u64,
    },
}

impl Attempt {
    pub(super) fn started_ms(&self) -> u64 {
        match self {
            Attempt::Connect { started_ms, .. } | Attempt::Exec { started_ms, .. } => *started_ms,
        }
    }
}

impl Supervisor {
    /// Starts one try of `check` for `slot`.
    pub(super) fn start_attempt(
        &mut self,
        slot: usize,
        source: Source,
        check: &Check,
    ) -> Result<Attempt, String> {
        let now = self.reactor.now_ms();
        let s = self.slots.get(slot).ok_or("no such service")?;
        let port = self.probes.get(slot).map_or(s.port, |p| p.port);
        let bind = s.service.unit.rare.bind;
        let (addr, http) = match check {
            Check::Exec(argv) => return self.spawn_probe(slot, source, argv, now),
            Check::Tcp(p) => (SocketAddr::new(probe_ip(bind), p.resolve(port)), None),
            Check::Http(url) => (
                SocketAddr::new(url.ip, url.port.resolve(port)),
                Some((http::request(url, port), Vec::new())),
            ),
        };
        let mut stream = mio::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        self.reactor
            .registry()
            .register(
                &mut stream,
                token(slot, source),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("cannot watch a connection to {addr}: {e}"))?;
        Ok(Attempt::Connect {
            stream,
            connected: false,
            http,
            started_ms: now,
        })
    }

    /// An exec probe: the command in its own process group, with the
    /// service's environment, directory and output.
    fn spawn_probe(
        &mut self,
        slot: usize,
        source: Source,
        argv: &[String],
        now: u64,
    ) -> Result<Attempt, String> {
        let s = self.slots.get_mut(slot).ok_or("no such service")?;
        s.ensure_spec(&self.start_dir)?;
        let base = s.spec.as_deref().ok_or("no spawn spec")?;
        let args: Vec<CString> = argv
            .iter()
            .filter_map(|a| CString::new(a.as_bytes()).ok())
            .collect();
        let program = args.first().cloned().ok_or("an empty command")?;
        let mut spec = SpawnSpec::new(program, args);
        spec.search_path = true;
        spec.cwd = base.cwd.clone();
        spec.env = base.env.clone();
        spec.env.extend(
            base.start_env
                .iter()
                .filter(|e| e.as_bytes().starts_with(b"PORT="))
                .cloned(),
        );
        let (pid, pidfd) = self.spawn_aux(slot, spec, token(slot, source))?;
        self.probes.pids.insert(pid, (slot, source));
        Ok(Attempt::Exec {
            pid,
            pidfd,
            started_ms: now,
        })
    }

    pub(super) fn on_attempt(
        &mut self,
        slot: usize,
        source: Source,
        work: &mut VecDeque<(usize, Input)>,
    ) {
        let probes = &mut self.probes;
        let Some(p) = probes.slots.get_mut(slot).and_then(|p| p.as_deref_mut()) else {
            return;
        };
        let place = match source {
            Source::Ready => &mut p.ready_attempt,
            _ => &mut p.health_attempt,
        };
        let done = match place {
            None | Some(Attempt::Exec { pidfd: None, .. }) => return,
            Some(Attempt::Exec {
                pid,
                pidfd: Some(fd),
                ..
            }) => match crate::os::reap::reap_one(fd) {
                Ok(Some(status)) => {
                    probes.pids.remove(pid);
                    Some(exec_result(status))
                }
                Ok(None) => None,
                // The sweep took it and reported it.
                Err(_) => None,
            },
            Some(Attempt::Connect {
                stream,
                connected,
                http,
                ..
            }) => progress(stream, connected, http, &mut probes.buf),
        };
        if let Some(result) = done {
            self.attempt_ended(slot, source, result, work);
        }
    }

    /// The sweep reaped a probe process.
    pub(in crate::supervisor) fn probe_reaped(
        &mut self,
        slot: usize,
        source: Source,
        pid: i32,
        status: ExitStatus,
        work: &mut VecDeque<(usize, Input)>,
    ) {
        let Some(p) = self.probes.get_mut(slot) else {
            return;
        };
        let place = match source {
            Source::Ready => &p.ready_attempt,
            _ => &p.health_attempt,
        };
        if matches!(place, Some(Attempt::Exec { pid: running, .. }) if *running == pid) {
            self.attempt_ended(slot, source, exec_result(status), work);
        }
    }
}

/// The address a tcp or http probe connects to: the unit's `bind` when it
/// names one address, else loopback.
pub(super) fn probe_ip(bind: Option<IpAddr>) -> IpAddr {
    match bind {
        Some(ip) if ip.is_unspecified() && ip.is_ipv6() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Some(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

pub(super) fn describe_exit(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("exited with code {c}"),
        other => other.to_string(),
    }
}

fn exec_result(status: ExitStatus) -> Result<String, String> {
    match status {
        ExitStatus::Code(0) => Ok("exited with code 0".into()),
        other => Err(describe_exit(other)),
    }
}

/// Moves a connect (and an http exchange) on after a readiness event;
/// `Some(result)` once it is decided.
fn progress(
    stream: &mut mio::net::TcpStream,
    connected: &mut bool,
    http: &mut Option<(Vec<u8>, Vec<u8>)>,
    buf: &mut Vec<u8>,
) -> Option<Result<String, String>> {
    if !*connected {
        match stream.take_error() {
            Ok(Some(e)) | Err(e) => return Some(Err(connect_error(&e))),
            Ok(None) => {}
        }
        match stream.peer_addr() {
            Ok(_) => *connected = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => return None,
            Err(e) => return Some(Err(connect_error(&e))),
        }
        let Some((request, _)) = http else {
            return Some(Ok("connected".into()));
        };
        // A fresh socket's buffer takes a request this small whole.
        match stream.write(request) {
            Ok(n) if n == request.len() => {}
            Ok(_) => return Some(Err("could not send the whole request".into())),
            Err(e) => return Some(Err(format!("cannot send the request: {e}"))),
        }
    }
    let (_, head) = http.as_mut()?;
    buf.resize(http::MAX_HEAD, 0);
    loop {
        match stream.read(buf) {
            Ok(0) => {
                return Some(match http::answer(head) {
                    http::Answer::Healthy(line) => Ok(line),
                    http::Answer::Unhealthy(line) | http::Answer::Garbage(line) => Err(line),
                    http::Answer::Partial => {
                        Err("it closed the connection without an answer".into())
                    }
                })
            }
            Ok(n) => {
                head.extend_from_slice(buf.get(..n).unwrap_or(&[]));
                match http::answer(head) {
                    http::Answer::Healthy(line) => return Some(Ok(line)),
                    http::Answer::Unhealthy(line) | http::Answer::Garbage(line) => {
                        return Some(Err(line))
                    }
                    http::Answer::Partial if head.len() >= http::MAX_HEAD => {
                        return Some(Err(format!(
                            "no status line in the first {} bytes",
                            http::MAX_HEAD
                        )))
                    }
                    http::Answer::Partial => {}
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Some(Err(format!("cannot read the answer: {e}"))),
        }
    }
}

fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}
