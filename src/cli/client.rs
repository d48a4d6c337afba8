//! Client verbs (`zurg status`, `stop`, ...): one request over the control
//! socket, the answer printed as a table or, with `--json`, as the raw JSON.
//! Exit codes: 0 success, 1 the request failed (for `status`: a service is
//! not where it should be), 2 usage, 3 cannot reach zurg, 124 `wait` timed
//! out.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

use super::nspid::CallerView;
use super::{parse_duration_ms, UsageError, DEFAULT_SOCKET};
use crate::control::proto::{
    self, EventRecord, GpidInfo, LogEnd, LogItem, Outcome, Reply, Request, ServiceStatus,
    ShutdownMode, StatsRow, Verb, VersionInfo,
};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_UNREACHABLE: i32 = 3;
/// `wait` gave up at its `--timeout`, as timeout(1) does; 2 is taken by
/// usage errors.
pub const EXIT_TIMEOUT: i32 = 124;

/// Used when no reply deadline follows from the request itself.
const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCmd {
    pub verb: Verb,
    pub socket: Option<PathBuf>,
    pub json: bool,
    /// `history --state DIR`: the journal to read when no zurg answers.
    pub state_dir: Option<PathBuf>,
    /// `history --publisher ADDR [--host H] [--token-file F]`: ask a
    /// publisher's journal instead of this zurg.
    pub publisher: Option<crate::publish::client::HistoryAsk>,
    /// `--publisher ADDR --host H` (or `status --all-hosts`): run the verb
    /// on a host through the publisher.
    pub remote: Option<super::remote::RemoteAsk>,
}

/// Why no zurg answers on the socket; each says what the path is.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    #[error("no zurg answers at {path}: nothing is there (is zurg running, and is --socket or $ZURG_SOCKET its socket?)")]
    Missing { path: PathBuf },
    #[error("no zurg answers at {path}: it is a {kind}, not a socket; give zurg's control socket with --socket PATH")]
    NotASocket { path: PathBuf, kind: &'static str },
    #[error("no zurg answers at {path}: it is a socket nothing listens on (a zurg that stopped leaves its socket behind)")]
    Refused { path: PathBuf },
    #[error("permission denied on {path}: run as root, or as a member of the group zurg was started with as `zurg run --readers GROUP` (read-only verbs)")]
    Denied { path: PathBuf },
    #[error("no zurg answers at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no zurg answers at {path}: what answers there does not speak zurg's control protocol (it said: {said})")]
    NotZurg { path: PathBuf, said: String },
}

/// Writes the request without SIGPIPE (a client dies by it when its stdout
/// closes, os::signals::die_on_broken_pipe): a zurg that hung up first
/// gives EPIPE here, and what it said on its way out is read and shown.
fn send_all(stream: &UnixStream, mut bytes: &[u8]) -> std::io::Result<()> {
    use nix::sys::socket::{send, MsgFlags};
    while !bytes.is_empty() {
        match send(stream.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Connects to the control socket, and when that fails, finds out why.
fn connect(path: &std::path::Path) -> Result<UnixStream, ReachError> {
    use std::io::ErrorKind;
    use std::os::unix::fs::FileTypeExt;
    let err = match UnixStream::connect(path) {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    let path_buf = path.to_path_buf();
    if err.kind() == ErrorKind::PermissionDenied {
        return Err(ReachError::Denied { path: path_buf });
    }
    match std::fs::metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Err(ReachError::Missing { path: path_buf }),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            Err(ReachError::Denied { path: path_buf })
        }
        Ok(m) if !m.file_type().is_socket() => {
            let t = m.file_type();
            let kind = if t.is_dir() {
                "directory"
            } else if t.is_file() {
                "regular file"
            } else if t.is_fifo() {
                "fifo"
            } else {
                "device or other file"
            };
            Err(ReachError::NotASocket {
                path: path_buf,
                kind,
            })
        }
        Ok(_) if err.kind() == ErrorKind::ConnectionRefused => {
            Err(ReachError::Refused { path: path_buf })
        }
        _ => Err(ReachError::Io {
            path: path_buf,
            source: err,
        }),
    }
}

fn not_zurg(path: &std::path::Path, said: &[u8]) -> ReachError {
    ReachError::NotZurg {
        path: path.to_path_buf(),
        said: crate::safe_text::escaped(
            &String::from_utf8_lossy(said)
                .trim_end()
                .chars()
                .take(80)
                .collect::<String>(),
        )
        .into_owned(),
    }
}

/// zurg's pid as the caller sees it, from the kernel (SO_PEERCRED).
fn peer_pid(stream: &UnixStream) -> Option<i32> {
    nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|c| c.pid())
}

/// `history --state DIR` with no zurg to ask: the journal, read directly.
fn offline_history(cmd: &ClientCmd, dir: &std::path::Path, why: &ReachError) -> i32 {
    let Verb::History { name, since_us } = &cmd.verb else {
        return EXIT_USAGE;
    };
    if !dir.join("journal").is_file() && !dir.join("journal.1").is_file() {
        eprintln!(
            "zurg: {why}\nzurg: and there is no journal in {} either",
            dir.display()
        );
        return EXIT_UNREACHABLE;
    }
    eprintln!(
        "zurg: {why}\nzurg: reading the journal in {} instead",
        dir.display()
    );
    // No zurg to say which units there are: the name and its instances
    // (`NAME@N`), as the publisher's history takes a name.
    let wanted = name.clone().map(crate::journal::Wanted::Unit);
    let only = wanted.as_ref().map(crate::journal::Only::service);
    let (records, warnings) = crate::journal::read_only(dir, only.as_ref());
    for w in warnings {
        eprintln!("zurg: warning: {w}");
    }
    let records = crate::journal::filter(records, wanted.as_ref(), None);
    if let (Some(name), true) = (name, records.is_empty()) {
        // As zurg answers for a name it neither runs nor has a record of.
        let why = format!(
            "the journal in {} holds no record of `{name}`",
            dir.display()
        );
        if cmd.json {
            let reply = Reply::error(1, proto::ErrorCode::UnknownService, &why);
            print!("{}", shown_json(&proto::encode_reply(&reply)));
        }
        eprintln!("zurg: {}", shown(&why));
        return EXIT_FAILED;
    }
    let records = crate::journal::filter(records, None, *since_us);
    if cmd.json {
        let line = proto::encode_reply(&Reply::ok(1, &records));
        print!("{}", shown_json(&line));
    } else {
        print_history(&records);
    }
    EXIT_OK
}

/// Parses `VERB ARGS...` (argv after `zurg`).
pub fn parse_args(args: &[String]) -> Result<ClientCmd, UsageError> {
    let Some((verb_name, rest)) = args.split_first() else {
        return Err(UsageError("no verb given".into()));
    };
    let mut names: Vec<String> = Vec::new();
    let mut socket = None;
    let mut json = false;
    let mut timeout_ms = None;
    let mut no_block = false;
    let mut follow = false;
    let mut mode = ShutdownMode::Default;
    let mut since_us = None;
    let mut version = None;
    let mut md5 = None;
    let mut sha256 = None;
    let mut exec = None;
    let mut window_ms = None;
    let mut state_dir = None;
    let mut lines = None;
    let mut publisher = None;
    let mut host = None;
    let mut token_file = None;
    let mut operator_token_file = None;
    let mut all_hosts = false;
    let remote_verb = proto::RemoteVerb::ALL
        .iter()
        .any(|v| v.name() == verb_name.as_str());
    let mut wait_for = proto::WaitFor::Ready;
    let mut wait_for_given = false;
    let mut p = lexopt::Parser::from_args(rest.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Long("json") => json = true,
            Long("socket") => socket = Some(PathBuf::from(p.value()?)),
            Long(flag @ ("ready" | "down")) if verb_name == "wait" => {
                let asked = if flag == "ready" {
                    proto::WaitFor::Ready
                } else {
                    proto::WaitFor::Down
                };
                // Both given: which one is meant cannot be told (the last
                // one used to win silently).
                if wait_for_given && asked != wait_for {
                    return Err(UsageError(
                        "--ready and --down wait for opposite things: give one".to_string(),
                    ));
                }
                wait_for = asked;
                wait_for_given = true;
            }
            Long("no-block") if matches!(verb_name.as_str(), "start" | "restart") => {
                no_block = true
            }
            Long("timeout")
                if matches!(verb_name.as_str(), "start" | "stop" | "restart" | "wait") =>
            {
                let v = p.value()?.string()?;
                timeout_ms = Some(parse_duration_ms(&v).ok_or_else(|| {
                    UsageError(format!("--timeout {v:?}: expected a duration like 5s"))
                })?);
            }
            Short('f') | Long("follow") if matches!(verb_name.as_str(), "events" | "logs") => {
                follow = true
            }
            Short('n') | Long("lines") if verb_name == "logs" => {
                let v = p.value()?.string()?;
                lines = Some(v.parse::<u64>().map_err(|_| {
                    UsageError(format!("-n {v:?}: expected a number of lines, like 20"))
                })?);
            }
            Long("version") if verb_name == "upgrade" => version = Some(p.value()?.string()?),
            Long("md5") if verb_name == "upgrade" => md5 = Some(p.value()?.string()?),
            Long("sha256") if verb_name == "upgrade" => sha256 = Some(p.value()?.string()?),
            Long("exec") if verb_name == "upgrade" => exec = Some(p.value()?.string()?),
            Long("window") if verb_name == "upgrade" => {
                let v = p.value()?.string()?;
                window_ms = Some(parse_duration_ms(&v).ok_or_else(|| {
                    UsageError(format!("--window {v:?}: expected a duration like 2s"))
                })?);
            }
            Long("since") if matches!(verb_name.as_str(), "history" | "logs") => {
                let v = p.value()?.string()?;
                let ms = parse_duration_ms(&v).ok_or_else(|| {
                    UsageError(format!("--since {v:?}: expected a duration like 10m or 2h"))
                })?;
                since_us = Some(crate::os::wall_clock_us().saturating_sub(ms.saturating_mul(1000)));
            }
            Long("state") if verb_name == "history" => state_dir = Some(PathBuf::from(p.value()?)),
            Long("publisher") if verb_name == "history" || remote_verb => {
                let v = p.value()?.string()?;
                publisher = Some(
                    crate::publish::addrs::Publishers::parse(&v)
                        .map_err(|e| UsageError(e.to_string()))?,
                )
            }
            Long("host") if verb_name == "history" || remote_verb => {
                host = Some(p.value()?.string()?)
            }
            Long("operator-token-file") if remote_verb => {
                operator_token_file = Some(PathBuf::from(p.value()?))
            }
            Long("all-hosts") if verb_name == "status" => all_hosts = true,
            Long("token-file") if verb_name == "history" => {
                token_file = Some(PathBuf::from(p.value()?))
            }
            // Taken by the verbs above only; said plainly, since `zurg
            // --publisher ADDR --host H VERB` reads as if any verb went.
            Long(o @ ("publisher" | "host" | "operator-token-file")) if verb_name != "history" => {
                return Err(UsageError(format!(
                    "invalid option '--{o}': `{verb_name}` cannot be run through a publisher; these can: {}",
                    proto::RemoteVerb::ALL
                        .map(proto::RemoteVerb::name)
                        .join(", ")
                )));
            }
            Long("operator-token-file") => {
                return Err(UsageError(
                    "invalid option '--operator-token-file': history --publisher reads the publisher's journal with the host token (--token-file), not the operator token".into(),
                ));
            }
            Long("poweroff") if verb_name == "shutdown" => mode = ShutdownMode::Poweroff,
            Long("reboot") if verb_name == "shutdown" => mode = ShutdownMode::Reboot,
            Value(v) => names.push(v.string()?),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let no_names = |names: &[String]| -> Result<(), UsageError> {
        if names.is_empty() {
            Ok(())
        } else {
            Err(UsageError(format!("{verb_name} takes no names")))
        }
    };
    let some_names = |names: &[String]| -> Result<(), UsageError> {
        if names.is_empty() {
            Err(UsageError(format!(
                "{verb_name}: name at least one service"
            )))
        } else {
            Ok(())
        }
    };
    let verb = match verb_name.as_str() {
        "status" => Verb::Status { names },
        "start" => {
            some_names(&names)?;
            // Said rather than ignored: the user expects the timeout to
            // bound something.
            if no_block && timeout_ms.is_some() {
                return Err(UsageError(
                    "start --no-block answers once the start is under way: --timeout has nothing to bound; give one".into(),
                ));
            }
            Verb::Start {
                names,
                timeout_ms,
                no_block,
            }
        }
        "stop" => {
            some_names(&names)?;
            Verb::Stop { names, timeout_ms }
        }
        "restart" => {
            some_names(&names)?;
            Verb::Restart {
                names,
                timeout_ms,
                no_block,
            }
        }
        "wait" => {
            some_names(&names)?;
            Verb::Wait {
                names,
                until: wait_for,
                timeout_ms,
            }
        }
        "signal" => match names.as_slice() {
            [name, signal] => {
                if crate::sig::parse(signal).is_none() {
                    return Err(UsageError(format!("signal: unknown signal {signal:?}")));
                }
                Verb::Signal {
                    name: name.clone(),
                    signal: signal.clone(),
                }
            }
            _ => return Err(UsageError("signal: expected NAME SIGNAL".into())),
        },
        "reload" => {
            no_names(&names)?;
            Verb::Reload
        }
        "events" => {
            no_names(&names)?;
            Verb::Events { follow }
        }
        "shutdown" => {
            no_names(&names)?;
            Verb::Shutdown { mode }
        }
        "version" => Verb::Version,
        "gpid" => match names.as_slice() {
            [name] => Verb::Gpid { name: name.clone() },
            _ => return Err(UsageError("gpid: expected one service name".into())),
        },
        "stats" => Verb::Stats { names },
        "upgrade" => match names.as_slice() {
            [name] => Verb::Upgrade {
                name: name.clone(),
                version: version
                    .ok_or_else(|| UsageError("upgrade: --version V is required".into()))?,
                md5,
                sha256,
                exec,
                window_ms,
            },
            _ => return Err(UsageError("upgrade: expected one service name".into())),
        },
        "rollback" => match names.as_slice() {
            [name] => Verb::Rollback { name: name.clone() },
            _ => return Err(UsageError("rollback: expected one service name".into())),
        },
        "history" => match names.as_slice() {
            [] => Verb::History {
                name: None,
                since_us,
            },
            [name] => Verb::History {
                name: Some(name.clone()),
                since_us,
            },
            _ => return Err(UsageError("history: at most one service name".into())),
        },
        "logs" => match names.as_slice() {
            [] | [_] => Verb::Logs {
                name: names.first().cloned(),
                lines,
                since_us,
                follow,
            },
            _ => return Err(UsageError("logs: at most one service name".into())),
        },
        other => {
            return Err(UsageError(format!(
                "`{other}` is not available in this version of zurg"
            )))
        }
    };
    let (publisher, remote) = match (publisher, &verb) {
        (Some(addr), Verb::History { name, since_us }) => (
            Some(crate::publish::client::HistoryAsk {
                publishers: addr,
                host,
                token_file,
                name: name.clone(),
                since_us: *since_us,
            }),
            None,
        ),
        (Some(addr), _) => {
            let target = match (host, all_hosts) {
                (Some(h), false) => super::remote::Target::Host(h),
                (None, true) => super::remote::Target::AllHosts,
                (Some(_), true) => {
                    return Err(UsageError(
                        "status: --host H or --all-hosts, not both".into(),
                    ))
                }
                (None, false) => {
                    return Err(UsageError(format!(
                        "{verb_name} --publisher: name the host with --host H{}",
                        if verb_name == "status" {
                            " (or --all-hosts)"
                        } else {
                            ""
                        }
                    )))
                }
            };
            (
                None,
                Some(super::remote::RemoteAsk {
                    publishers: addr,
                    target,
                    operator_token_file,
                }),
            )
        }
        // Name the option given: `restart --host H` has no --token-file
        // to blame.
        (None, _) if all_hosts || operator_token_file.is_some() => {
            let given = if all_hosts {
                "--all-hosts"
            } else {
                "--operator-token-file"
            };
            return Err(UsageError(format!(
                "{verb_name}: {given} goes with --publisher ADDR"
            )));
        }
        (None, _) if host.is_some() || token_file.is_some() => {
            let given = if host.is_some() {
                "--host"
            } else {
                "--token-file"
            };
            return Err(UsageError(format!(
                "{verb_name}: {given} goes with --publisher ADDR"
            )));
        }
        (None, _) => (None, None),
    };
    Ok(ClientCmd {
        verb,
        socket,
        json,
        state_dir,
        publisher,
        remote,
    })
}

fn socket_path(cmd: &ClientCmd) -> PathBuf {
    cmd.socket
        .clone()
        .or_else(|| {
            std::env::var_os("ZURG_SOCKET")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

fn reply_timeout(verb: &Verb) -> Option<Duration> {
    match verb {
        Verb::Events { follow: true } | Verb::Logs { follow: true, .. } => None,
        Verb::Stop {
            timeout_ms: Some(ms),
            ..
        }
        | Verb::Restart {
            timeout_ms: Some(ms),
            ..
        }
        | Verb::Start {
            timeout_ms: Some(ms),
            ..
        }
        | Verb::Wait {
            timeout_ms: Some(ms),
            ..
        } => Some(Duration::from_millis(ms.saturating_add(5_000))),
        Verb::Wait { .. } => Some(Duration::from_millis(
            crate::supervisor::DEFAULT_WAIT_MS.saturating_add(5_000),
        )),
        // zurg answers a stop or restart at the services' own stop timeout
        // at the latest; leave room for long ones.
        // A start that waits for its outcome: zurg answers at 90 s, or at
        // the longest ready_timeout_ms plus 5 s.
        Verb::Stop { .. }
        | Verb::Restart { .. }
        | Verb::Start {
            no_block: false, ..
        } => Some(Duration::from_secs(600)),
        _ => Some(DEFAULT_REPLY_TIMEOUT),
    }
}

/// Why a reply never came: the read timeout said as such (the kernel's
/// "Resource temporarily unavailable" tells a person nothing), any other
/// error as it is.
fn no_answer(path: &std::path::Path, e: &std::io::Error, waited: Option<Duration>) -> String {
    match (e.kind(), waited) {
        (std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut, Some(w)) => format!(
            "no answer from {} within {}: whatever listens there took the request and said nothing (a zurg that is stopped or hung, or not zurg); nothing says whether it was carried out",
            path.display(),
            crate::supervisor::human_ms(u64::try_from(w.as_millis()).unwrap_or(u64::MAX))
        ),
        _ => format!("no answer from {}: {e}", path.display()),
    }
}

/// Runs a client command; returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let cmd = match parse_args(args) {
        Ok(c) => c,
        Err(e) => {
            let help = super::render::help_for(args.first().map_or("", String::as_str));
            eprintln!("zurg: {e}\n{help}");
            return EXIT_USAGE;
        }
    };
    if let Some(ask) = &cmd.publisher {
        return crate::publish::client::history(ask, cmd.json);
    }
    if let Some(ask) = &cmd.remote {
        return super::remote::run(&cmd, ask);
    }
    let path = socket_path(&cmd);
    let stream = match connect(&path) {
        Ok(s) => s,
        Err(e) => {
            if let Some(dir) = &cmd.state_dir {
                return offline_history(&cmd, dir, &e);
            }
            eprintln!("zurg: {e}");
            if matches!(cmd.verb, Verb::History { .. }) {
                eprintln!(
                    "zurg: `zurg history --state DIR` reads the journal without zurg (DIR: zurg run's --state, default {})",
                    super::DEFAULT_STATE_DIR
                );
            }
            return EXIT_UNREACHABLE;
        }
    };
    let zurg_pid = peer_pid(&stream);
    let _ = stream.set_read_timeout(reply_timeout(&cmd.verb));
    let request = Request {
        id: 1,
        verb: cmd.verb.clone(),
    };
    if let Err(e) = send_all(&stream, &proto::encode_request(&request)) {
        // zurg reads every request; a peer that hung up first may have
        // said something on its way out that tells what it is.
        let mut said = Vec::new();
        let _ = BufReader::new(&stream).read_until(b'\n', &mut said);
        if said.is_empty() {
            eprintln!("zurg: cannot send to {}: {e}", path.display());
        } else if let Some(err) = proto::decode_reply(&said).ok().and_then(|r| r.error) {
            // zurg itself, refusing the connection (e.g. `busy`)
            eprintln!("zurg: {}", shown(&err.message));
            return EXIT_FAILED;
        } else {
            eprintln!("zurg: {}", not_zurg(&path, &said));
        }
        return EXIT_UNREACHABLE;
    }
    let mut reader = BufReader::new(stream);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut line = Vec::new();
    let mut answered = false;
    // Taken at the first event, not before: most verbs print no pid.
    let mut follow_view: Option<CallerView> = None;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => {
                // A clean shutdown ends a follow with a `shutdown` event;
                // EOF without one means zurg died or dropped us.
                eprintln!(
                    "zurg: {} closed the connection without an answer",
                    path.display()
                );
                return EXIT_FAILED;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("zurg: {}", no_answer(&path, &e, reply_timeout(&cmd.verb)));
                return EXIT_FAILED;
            }
        }
        let reply = match proto::decode_reply(&line) {
            Ok(r) => r,
            Err(_) if !answered => {
                eprintln!("zurg: {}", not_zurg(&path, &line));
                return EXIT_UNREACHABLE;
            }
            Err(e) => {
                eprintln!("zurg: {}", shown(&e.to_string()));
                return EXIT_FAILED;
            }
        };
        answered = true;
        if let Some(item) = &reply.log {
            // Flushed when nothing more has arrived, so a follower sees each
            // line at once and a long backlog is not one write per line.
            match print_log_item(&cmd, item, &mut out, reader.buffer().is_empty()) {
                Ok(None) => continue,
                Ok(Some(LogEnd::Done)) => return EXIT_OK,
                Ok(Some(LogEnd::Shutdown)) => {
                    eprintln!("zurg: zurg at {} stopped", path.display());
                    return EXIT_OK;
                }
                // `zurg logs | head`: the reader has all it wanted.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return EXIT_OK,
                Err(e) => {
                    eprintln!("zurg: cannot write the lines: {e}");
                    return EXIT_FAILED;
                }
            }
        }
        if matches!(cmd.verb, Verb::Logs { .. }) && reply.error.is_none() {
            // `{"following": …}`: the lines come next.
            continue;
        }
        if let Some(ev) = &reply.event {
            let view = follow_view.get_or_insert_with(|| {
                CallerView::for_pids(zurg_pid, Some(&std::collections::HashSet::new()))
            });
            if let (Some(pid), false) = (ev.pid, ev.kind.ended()) {
                // It started after the view was taken. (An ended one is
                // not in /proc: looking would walk every process, per
                // exit, for nothing.)
                view.refresh_for(pid);
            }
            if cmd.json {
                print!("{}", json_seen_from(&line, view));
            } else {
                println!("{}", shown(&event_line_seen_from(ev, view)));
            }
            let _ = std::io::stdout().flush();
            if ev.kind == proto::EventKind::Shutdown {
                eprintln!("zurg: zurg at {} stopped", path.display());
                return EXIT_OK;
            }
            continue;
        }
        if reply.id != request.id && reply.id != 0 {
            continue;
        }
        let code = print_reply(&cmd, &reply, &line, zurg_pid);
        let following = matches!(cmd.verb, Verb::Events { follow: true });
        if !following || code != EXIT_OK {
            return code;
        }
    }
}

/// Prints one item of a `logs` stream: the line's exact bytes (prefixed
/// `NAME | ` when every service's lines are interleaved), or with --json one
/// object per line. Returns the end, when this item is it.
fn print_log_item(
    cmd: &ClientCmd,
    item: &LogItem,
    out: &mut impl Write,
    flush: bool,
) -> std::io::Result<Option<LogEnd>> {
    // Unlabelled only when the lines are one service's own: `logs web` of
    // a unit with instances gets `web@0 | ...`, as `logs` alone does.
    let asked = match &cmd.verb {
        Verb::Logs { name, .. } => name.as_deref(),
        _ => None,
    };
    match item {
        LogItem::Line(l) => {
            if cmd.json {
                let mut obj = serde_json::json!({
                    "service": l.service,
                    "stream": l.stream,
                    "time": super::utc_timestamp(l.time_us),
                    "text": l.text,
                });
                if let (Some(b), Some(map)) = (&l.bytes_b64, obj.as_object_mut()) {
                    map.insert("bytes_b64".into(), b.clone().into());
                }
                serde_json::to_writer(&mut *out, &obj)?;
                out.write_all(b"\n")?;
            } else {
                if asked != Some(l.service.as_str()) {
                    out.write_all(l.service.as_bytes())?;
                    out.write_all(b" | ")?;
                }
                out.write_all(&l.bytes())?;
                out.write_all(b"\n")?;
            }
        }
        LogItem::Missed { service, lines } => {
            if cmd.json {
                let obj = serde_json::json!({ "service": service, "missed": lines });
                serde_json::to_writer(&mut *out, &obj)?;
                out.write_all(b"\n")?;
            } else {
                // In place among the lines, on stderr so the bytes on
                // stdout stay the service's own.
                out.flush()?;
                eprintln!("zurg: {lines} line(s) of {service} missed: this client fell behind and zurg's ring dropped them");
            }
        }
        LogItem::End { reason } => {
            out.flush()?;
            return Ok(Some(*reason));
        }
    }
    if flush {
        out.flush()?;
    }
    Ok(None)
}

fn print_history(records: &[crate::journal::Record]) {
    for r in records {
        if let Some(text) = r.remote_text() {
            println!("{} {}", utc_timestamp(r.time_us), shown(&text));
            continue;
        }
        let exit = r
            .exit
            .as_ref()
            .map(|e| format!(" ({})", exit_text(e)))
            .unwrap_or_default();
        let version = r
            .version
            .as_ref()
            .map(|v| format!(" version {v}"))
            .unwrap_or_default();
        let exit = match &r.reason {
            Some(why) => format!("{exit} ({why})"),
            None => exit,
        };
        // A `gap` record is about every service.
        let service = if r.service.is_empty() {
            "*"
        } else {
            &r.service
        };
        let line = format!("{service} {}{exit} {}{version}", r.kind, r.gpid);
        println!("{} {}", utc_timestamp(r.time_us), shown(&line));
    }
}

pub(super) fn print_reply(
    cmd: &ClientCmd,
    reply: &Reply,
    raw: &[u8],
    zurg_pid: Option<i32>,
) -> i32 {
    if let Some(err) = &reply.error {
        if cmd.json {
            print!("{}", shown_json(raw));
        }
        eprintln!("zurg: {}", shown(&err.message));
        if matches!(cmd.verb, Verb::Wait { .. }) && err.code == proto::ErrorCode::Timeout {
            return EXIT_TIMEOUT;
        }
        return EXIT_FAILED;
    }
    let mut result = reply
        .result
        .as_ref()
        .map_or(serde_json::Value::Null, |r| r.to_value());
    // A start, restart or rollback that left a service not running failed,
    // even though the request itself was carried out.
    let outcomes_failed = matches!(
        cmd.verb,
        Verb::Start { .. }
            | Verb::Stop { .. }
            | Verb::Restart { .. }
            | Verb::Rollback { .. }
            | Verb::Wait { .. }
    ) && serde_json::from_value::<Vec<Outcome>>(result.clone())
        .unwrap_or_default()
        .iter()
        .any(|o| o.error.is_some());
    // `status` fails when a service is not where its unit says it should
    // be, so `HEALTHCHECK CMD zurg status` works.
    let status_failed = matches!(cmd.verb, Verb::Status { .. })
        && serde_json::from_value::<Vec<ServiceStatus>>(result.clone())
            .unwrap_or_default()
            .iter()
            .any(|r| r.problem.is_some());
    let failed_code = if outcomes_failed || status_failed {
        EXIT_FAILED
    } else {
        EXIT_OK
    };
    // Every pid printed below is the caller's (they may `kill` it), from
    // one view of /proc taken after the answer arrived.
    let prints_pids = matches!(
        cmd.verb,
        Verb::Status { .. }
            | Verb::Start { .. }
            | Verb::Stop { .. }
            | Verb::Restart { .. }
            | Verb::Wait { .. }
            | Verb::Signal { .. }
            | Verb::Events { .. }
            | Verb::Upgrade { .. }
            | Verb::Rollback { .. }
            | Verb::Stats { .. }
            | Verb::Version
    );
    let view = if prints_pids {
        CallerView::for_pids(zurg_pid, Some(&super::nspid::pids_in(&result)))
    } else {
        CallerView::default()
    };
    if cmd.json {
        print!("{}", json_seen_from(raw, &view));
        let _ = std::io::stdout().flush();
        return failed_code;
    }
    // What a service said (`STATUS=`, an error, a health check's status
    // line) or a remote host answered, shown as text: nothing in it may
    // act on the terminal.
    crate::safe_text::value(&mut result);
    // `field` for a pid: "?" when missing, as the caller sees it.
    let seen = |v: &serde_json::Value, key: &str| -> String {
        v.get(key)
            .and_then(serde_json::Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .map_or_else(|| "?".to_string(), |p| view.pid(p).to_string())
    };
    match &cmd.verb {
        Verb::Status { .. } => {
            let rows: Vec<ServiceStatus> = serde_json::from_value(result).unwrap_or_default();
            print!("{}", status_table_seen_from(&rows, &view));
            for r in &rows {
                match (&r.problem, &r.last_error) {
                    (Some(problem), _) => println!("{}: {problem}", r.name),
                    (None, Some(e)) if r.pid.is_none() => println!("{}: {e}", r.name),
                    (None, None) if !r.waiting_for.is_empty() => {
                        println!("{}: waiting for {}", r.name, r.waiting_for.join(", "))
                    }
                    _ => {}
                }
            }
            for r in &rows {
                if let Some(text) = r.status_text.as_ref().filter(|t| !t.is_empty()) {
                    println!("{}: {text}", r.name);
                }
            }
            return failed_code;
        }
        Verb::Start { .. } | Verb::Stop { .. } | Verb::Restart { .. } | Verb::Wait { .. } => {
            let outcomes: Vec<Outcome> = serde_json::from_value(result).unwrap_or_default();
            for o in outcomes {
                let note = o.note.map(|n| format!(" ({n})")).unwrap_or_default();
                // How a one-shot ended, when nothing else is said.
                let exit = match (&o.error, o.exit) {
                    (None, Some(code)) => format!(" (exit code {code})"),
                    _ => String::new(),
                };
                match (o.pid, &o.error) {
                    (_, Some(e)) => println!("{}: {}{note}: {e}", o.name, o.state),
                    (Some(pid), None) => {
                        println!("{}: {}, pid {}{note}", o.name, o.state, view.pid(pid))
                    }
                    (None, None) => println!("{}: {}{exit}{note}", o.name, o.state),
                }
            }
            return failed_code;
        }
        Verb::Signal { .. } => {
            println!(
                "sent {} to {}, pid {}",
                field(&result, "signal"),
                field(&result, "name"),
                seen(&result, "pid")
            );
        }
        Verb::Reload => {
            let r: crate::supervisor::ReloadReport =
                serde_json::from_value(result).unwrap_or_default();
            let list = |v: &[String]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.join(" ")
                }
            };
            println!("added:     {}", list(&r.added));
            println!("changed:   {}", list(&r.changed));
            println!("removed:   {}", list(&r.removed));
            println!("unchanged: {}", r.unchanged.len());
            for d in &r.dropped {
                eprintln!("zurg: warning: {d}");
            }
            for e in &r.errors {
                eprintln!("zurg: {e}");
            }
            if !r.errors.is_empty() {
                return EXIT_FAILED;
            }
        }
        Verb::Events { follow: false } => {
            let events: Vec<EventRecord> = serde_json::from_value(result).unwrap_or_default();
            for ev in &events {
                println!("{}", event_line_seen_from(ev, &view));
            }
        }
        Verb::Events { follow: true } | Verb::Logs { .. } => {}
        Verb::Shutdown { .. } => println!("zurg is shutting down"),
        Verb::Upgrade { .. } => {
            println!(
                "{}: running version {}, pid {}",
                field(&result, "name"),
                field(&result, "version"),
                seen(&result, "pid")
            );
            if let Some(w) = result.get("warning").and_then(|w| w.as_str()) {
                println!("warning: {w}");
            }
        }
        Verb::Rollback { .. } => {
            let outcomes: Vec<Outcome> = serde_json::from_value(result).unwrap_or_default();
            for o in outcomes {
                println!(
                    "{}: rolled back, {}, pid {}{}",
                    o.name,
                    o.state,
                    o.pid.map_or("-".into(), |p| view.pid(p).to_string()),
                    o.error.map(|e| format!(": {e}")).unwrap_or_default()
                );
                if let Some(note) = o.note {
                    println!("warning: {note}");
                }
            }
            return failed_code;
        }
        Verb::Gpid { .. } => {
            if let Ok(g) = serde_json::from_value::<GpidInfo>(result) {
                println!("{}", g.gpid);
            }
        }
        Verb::Stats { .. } => {
            let rows: Vec<StatsRow> = serde_json::from_value(result).unwrap_or_default();
            print!("{}", stats_table_seen_from(&rows, &view));
        }
        Verb::History { .. } => {
            let records: Vec<crate::journal::Record> =
                serde_json::from_value(result).unwrap_or_default();
            print_history(&records);
        }
        Verb::Version => {
            if let Ok(v) = serde_json::from_value::<VersionInfo>(result) {
                let pid = i32::try_from(v.pid)
                    .map_or_else(|_| v.pid.to_string(), |p| view.pid(p).to_string());
                println!("zurg {} (protocol {}, pid {pid})", v.zurg, v.protocol);
                if let Some(g) = v.gpid {
                    println!("gpid {g}");
                }
                if let Some(p) = v.publish {
                    println!(
                        "publishing to {}: {}, seq {}, acked {}, {} queued, {} dropped, {} connect(s)",
                        p.publisher,
                        if p.connected { "connected" } else { "not connected" },
                        p.seq,
                        p.acked,
                        p.queued,
                        p.dropped,
                        p.connects
                    );
                }
                if let Some(j) = v.journal.filter(|j| j.queued > 0 || j.not_written > 0) {
                    println!(
                        "journal behind: {} record(s) waiting for its disk, {} not written since start",
                        j.queued, j.not_written
                    );
                }
            }
        }
    }
    EXIT_OK
}

/// Text from zurg, a service or a remote host, as a terminal may show it
/// (`safe_text::escaped`).
pub(super) fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    crate::safe_text::escaped(text)
}

/// A JSON reply line as received, printed with `--json`: the same
/// document, with no character a terminal acts on (`safe_text::json`).
pub(super) fn shown_json(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    crate::safe_text::json(&text).into_owned()
}

/// A reply line for `--json`: as received (`shown_json`), plus, for a
/// caller in another pid namespace, `caller_pid` beside every `pid`
/// (`CallerView::add_caller_pids`).
fn json_seen_from(raw: &[u8], view: &CallerView) -> String {
    if view.differs() {
        if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(raw) {
            view.add_caller_pids(&mut v);
            return format!("{}\n", crate::safe_text::json(&v.to_string()));
        }
    }
    shown_json(raw)
}

/// A field of a JSON object as text ("?" when missing).
fn field(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "?".into(),
    }
}

fn exit_text(e: &proto::ExitInfo) -> String {
    let text = match (&e.code, &e.signal) {
        (Some(c), _) => format!("code {c}"),
        (None, Some(s)) => s.clone(),
        (None, None) => "-".into(),
    };
    if e.oom {
        format!("{text} oom-killed")
    } else {
        text
    }
}

fn kb(v: u64) -> String {
    if v >= 10 * 1024 * 1024 {
        format!("{}G", v / (1024 * 1024))
    } else if v >= 10 * 1024 {
        format!("{}M", v / 1024)
    } else {
        format!("{v}K")
    }
}

fn bytes(v: Option<u64>) -> String {
    v.map_or("-".into(), |b| kb(b / 1024))
}

/// The stats table: one row per service, summed over its process tree.
pub fn stats_table(rows: &[StatsRow]) -> String {
    stats_table_seen_from(rows, &CallerView::default())
}

/// The stats table for a caller in another pid namespace: as
/// `status_table_seen_from`, PID is the caller's and ZURG-PID zurg's.
pub fn stats_table_seen_from(rows: &[StatsRow], seen: &CallerView) -> String {
    let mut header = vec![
        "NAME", "PID", "PROCS", "CPU%", "USER", "SYS", "RSS", "PSS", "THREADS", "FDS", "READ",
        "WRITE", "CTXSW",
    ];
    if seen.differs() {
        header.push("ZURG-PID");
    }
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        let t = &r.tree;
        let mut row = vec![
            r.name.clone(),
            caller_pid(Some(r.pid), seen),
            t.processes.to_string(),
            r.cpu_percent.map_or("-".into(), |c| format!("{c:.1}")),
            crate::supervisor::human_ms(t.cpu_user_ms),
            crate::supervisor::human_ms(t.cpu_system_ms),
            kb(t.rss_kb),
            kb(t.pss_kb),
            t.threads.to_string(),
            t.fds.to_string(),
            bytes(t.read_bytes),
            bytes(t.write_bytes),
            t.ctx_switches.to_string(),
        ];
        if seen.differs() {
            row.push(r.pid.to_string());
        }
        cells.push(row);
    }
    align(&cells)
}

/// A table's PID cell: the caller's pid ("?" when /proc does not show it;
/// the ZURG-PID column beside it has zurg's).
fn caller_pid(pid: Option<i32>, seen: &CallerView) -> String {
    match pid.map(|p| seen.pid(p).caller()) {
        None => "-".to_string(),
        Some(None) => "?".to_string(),
        Some(Some(p)) => p.to_string(),
    }
}

/// Rows of cells as columns as wide as their widest cell, two spaces
/// apart (the first row is the header). Cells are shown text: escape
/// them before, or the padding counts what a terminal will not show.
pub(crate) fn align(cells: &[Vec<String>]) -> String {
    let cols = cells.first().map_or(0, Vec::len);
    let mut widths = vec![0usize; cols];
    for row in cells {
        for (w, c) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in cells {
        let mut line = String::new();
        for (w, c) in widths.iter().zip(row.iter()) {
            line.push_str(&format!("{c:<w$}  "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The status table: aligned columns, durations for humans.
pub fn status_table(rows: &[ServiceStatus]) -> String {
    status_table_seen_from(rows, &CallerView::default())
}

/// The status table for a caller in another pid namespace than zurg's:
/// PID is the caller's pid (what `kill` and `ps` there take), and ZURG-PID
/// the pid inside zurg's namespace. `seen` maps zurg's pids to the caller's;
/// empty means both see the same pids, and the column is left out.
pub fn status_table_seen_from(rows: &[ServiceStatus], seen: &CallerView) -> String {
    align(&status_cells(rows, seen))
}

/// One status table for several hosts (`status --all-hosts`): the local
/// table's columns after a HOST column.
pub fn status_table_by_host(hosts: &[(String, Vec<ServiceStatus>)]) -> String {
    let none = CallerView::default();
    let all: Vec<ServiceStatus> = hosts.iter().flat_map(|(_, r)| r.clone()).collect();
    let mut cells = Vec::new();
    let mut body = status_cells(&all, &none).into_iter();
    if let Some(mut header) = body.next() {
        header.insert(0, "HOST".into());
        cells.push(header);
    }
    for (host, rows) in hosts {
        for _ in rows {
            if let Some(mut row) = body.next() {
                row.insert(0, host.clone());
                cells.push(row);
            }
        }
    }
    align(&cells)
}

/// The status table's header and rows, as cells.
fn status_cells(rows: &[ServiceStatus], seen: &CallerView) -> Vec<Vec<String>> {
    let mut header = vec![
        "NAME",
        "STATE",
        "PID",
        "UPTIME",
        "READY",
        "RESTARTS",
        "LAST-EXIT",
    ];
    if seen.differs() {
        header.push("ZURG-PID");
    }
    // Shown only when some service has a health check, so a plain zurg's
    // table keeps its columns.
    let health_col = rows.iter().any(|r| r.health.is_some());
    if health_col {
        header.push("HEALTH");
    }
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        let mut row = vec![
            r.name.clone(),
            r.state.clone(),
            caller_pid(r.pid, seen),
            r.uptime_ms.map_or("-".into(), crate::supervisor::human_ms),
            r.ready_after_ms
                .map_or("-".into(), crate::supervisor::human_ms),
            r.restarts.to_string(),
            r.last_exit.as_ref().map_or("-".into(), exit_text),
        ];
        if seen.differs() {
            row.push(r.pid.map_or("-".into(), |p| p.to_string()));
        }
        if health_col {
            row.push(r.health.as_ref().map_or("-".into(), health_text));
        }
        cells.push(row);
    }
    cells
}

/// "ok", "failing 2 (500 Internal Server Error)"; "-" until a check has
/// ended (`ok` is true then, and a passed check always leaves a result).
fn health_text(h: &proto::HealthStatus) -> String {
    match (h.ok, h.failures) {
        (true, _) if h.last.is_empty() => "-".into(),
        (true, _) => "ok".into(),
        (false, n) => format!("failing {n} ({})", h.last),
    }
}

/// "2026-11-24T14:50:01.123Z web exited pid 42 (SIGKILL)"
pub fn event_line(ev: &EventRecord) -> String {
    event_line_seen_from(ev, &CallerView::default())
}

/// `event_line` with the pid as the caller sees it (`CallerView::pid`):
/// a process that has ended shows as "? (zurg-pid 42)".
pub fn event_line_seen_from(ev: &EventRecord, seen: &CallerView) -> String {
    let mut s = format!("{} {} {}", utc_timestamp(ev.time_us), ev.service, ev.kind);
    if let Some(pid) = ev.pid {
        let pid = if ev.kind.ended() {
            seen.ended(pid)
        } else {
            seen.pid(pid)
        };
        s.push_str(&format!(" pid {pid}"));
    }
    if let Some(e) = &ev.exit {
        s.push_str(&format!(" ({})", exit_text(e)));
    }
    if let Some(d) = ev.delay_ms {
        s.push_str(&format!(" in {d} ms"));
    }
    if let Some(m) = &ev.message {
        s.push_str(&format!(": {m}"));
    }
    s
}

pub use super::utc_timestamp;

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_wait() {
        let c = parse_args(&args(&["wait", "db", "migrate", "--timeout", "200ms"])).unwrap();
        assert_eq!(
            c.verb,
            Verb::Wait {
                names: vec!["db".into(), "migrate".into()],
                until: proto::WaitFor::Ready,
                timeout_ms: Some(200),
            }
        );
        let c = parse_args(&args(&["wait", "--down", "db"])).unwrap();
        assert!(matches!(
            c.verb,
            Verb::Wait {
                until: proto::WaitFor::Down,
                timeout_ms: None,
                ..
            }
        ));
        assert!(parse_args(&args(&["wait"])).is_err(), "names are needed");
        assert!(parse_args(&args(&["status", "--ready"])).is_err());
        // on the wire: `for`, defaulting to ready
        let req = proto::decode_request(br#"{"id":1,"verb":"wait","names":["a"]}"#).unwrap();
        assert_eq!(
            req.verb,
            Verb::Wait {
                names: vec!["a".into()],
                until: proto::WaitFor::Ready,
                timeout_ms: None,
            }
        );
        let req =
            proto::decode_request(br#"{"id":1,"verb":"wait","names":["a"],"for":"down"}"#).unwrap();
        assert!(matches!(
            req.verb,
            Verb::Wait {
                until: proto::WaitFor::Down,
                ..
            }
        ));
        assert!(req.verb.is_read_only());
    }

    #[test]
    fn parses_verbs() {
        let c = parse_args(&args(&[
            "stop",
            "a",
            "b",
            "--timeout",
            "3s",
            "--json",
            "--socket",
            "/s",
        ]))
        .unwrap();
        assert_eq!(
            c.verb,
            Verb::Stop {
                names: vec!["a".into(), "b".into()],
                timeout_ms: Some(3000)
            }
        );
        assert!(c.json);
        assert_eq!(c.socket, Some(PathBuf::from("/s")));
        assert_eq!(
            parse_args(&args(&["events", "-f"])).unwrap().verb,
            Verb::Events { follow: true }
        );
        assert_eq!(
            parse_args(&args(&["shutdown", "--reboot"])).unwrap().verb,
            Verb::Shutdown {
                mode: ShutdownMode::Reboot
            }
        );
        assert_eq!(
            parse_args(&args(&["signal", "web", "HUP"])).unwrap().verb,
            Verb::Signal {
                name: "web".into(),
                signal: "HUP".into()
            }
        );
    }

    #[test]
    fn parses_blocking_and_no_block_starts() {
        assert_eq!(
            parse_args(&args(&["start", "mig", "--timeout", "2s"]))
                .unwrap()
                .verb,
            Verb::Start {
                names: vec!["mig".into()],
                timeout_ms: Some(2000),
                no_block: false,
            }
        );
        assert_eq!(
            parse_args(&args(&["start", "--no-block", "mig"]))
                .unwrap()
                .verb,
            Verb::Start {
                names: vec!["mig".into()],
                timeout_ms: None,
                no_block: true,
            }
        );
        assert_eq!(
            parse_args(&args(&["restart", "web", "--no-block"]))
                .unwrap()
                .verb,
            Verb::Restart {
                names: vec!["web".into()],
                timeout_ms: None,
                no_block: true,
            }
        );
        let both = parse_args(&args(&["start", "--no-block", "--timeout", "1s", "mig"]));
        assert!(both.is_err());
        assert!(parse_args(&args(&["stop", "--no-block", "web"])).is_err());
    }

    #[test]
    fn parses_logs() {
        let c = parse_args(&args(&["logs", "web", "-n", "3", "-f", "--json"])).unwrap();
        assert_eq!(
            c.verb,
            Verb::Logs {
                name: Some("web".into()),
                lines: Some(3),
                since_us: None,
                follow: true
            }
        );
        assert!(c.json);
        let Verb::Logs { since_us, .. } =
            parse_args(&args(&["logs", "--since", "5m"])).unwrap().verb
        else {
            panic!("not logs");
        };
        let ago = crate::os::wall_clock_us().saturating_sub(since_us.unwrap());
        assert!((300_000_000..301_000_000).contains(&ago), "{ago}");
        assert_eq!(
            parse_args(&args(&["logs"])).unwrap().verb,
            Verb::Logs {
                name: None,
                lines: None,
                since_us: None,
                follow: false
            }
        );
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["stop"][..],
            &["start"],
            &["signal", "web"],
            &["signal", "web", "NOPE"],
            &["reload", "x"],
            &["status", "--follow"],
            &["stop", "a", "--timeout", "soon"],
            &["wait", "a", "--ready", "--down"],
            &["wait", "a", "--down", "--ready"],
            &["dance"],
            &["logs", "a", "b"],
            &["logs", "a", "-n", "many"],
            &["logs", "a", "--since", "soon"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
        // a remote option without --publisher names itself, not another
        let err = |a: &[&str]| parse_args(&args(a)).err().map(|e| e.0).unwrap_or_default();
        assert_eq!(
            err(&["restart", "web", "--host", "10.0.0.5"]),
            "restart: --host goes with --publisher ADDR"
        );
        assert_eq!(
            err(&["history", "--token-file", "t"]),
            "history: --token-file goes with --publisher ADDR"
        );
        assert_eq!(
            err(&["status", "--all-hosts"]),
            "status: --all-hosts goes with --publisher ADDR"
        );
        // A verb no host runs for a publisher says so, not "invalid option
        // '--publisher'" (as `zurg --publisher A --host H logs web` reads
        // once its leading options are moved after the verb).
        for verb in [
            "logs", "reload", "wait", "events", "stats", "gpid", "shutdown", "version",
        ] {
            assert_eq!(
                err(&[verb, "--publisher", "a:1", "--host", "h"]),
                format!("invalid option '--publisher': `{verb}` cannot be run through a publisher; these can: status, restart, stop, start, signal, upgrade, rollback"),
            );
        }
        assert!(
            err(&["logs", "web", "--operator-token-file", "f"]).starts_with(
                "invalid option '--operator-token-file': `logs` cannot be run through a publisher"
            )
        );
        assert_eq!(
            err(&["history", "--publisher", "a:1", "--operator-token-file", "f"]),
            "invalid option '--operator-token-file': history --publisher reads the publisher's journal with the host token (--token-file), not the operator token"
        );
    }

    #[test]
    fn table_is_aligned() {
        let rows = vec![
            ServiceStatus {
                name: "web".into(),
                state: "running".into(),
                pid: Some(42),
                uptime_ms: Some(192_000),
                restarts: 1,
                gpid: None,
                version: None,
                last_error: None,
                ready: true,
                ready_after_ms: Some(1_500),
                health: None,
                problem: None,
                waiting_for: vec![],
                status_text: None,
                last_exit: Some(proto::ExitInfo {
                    code: None,
                    signal: Some("SIGKILL".into()),
                    oom: false,
                }),
            },
            ServiceStatus {
                name: "batch-job".into(),
                state: "exited".into(),
                pid: None,
                uptime_ms: None,
                restarts: 0,
                gpid: None,
                version: None,
                last_error: None,
                ready: false,
                ready_after_ms: None,
                health: None,
                problem: None,
                waiting_for: vec![],
                status_text: None,
                last_exit: Some(proto::ExitInfo {
                    code: Some(0),
                    signal: None,
                    oom: false,
                }),
            },
        ];
        assert_eq!(
            status_table(&rows),
            "NAME       STATE    PID  UPTIME  READY  RESTARTS  LAST-EXIT\n\
             web        running  42   3m12s   1.5s   1         SIGKILL\n\
             batch-job  exited   -    -       -      0         code 0\n"
        );
        // the health column appears once a service has a check
        let mut rows = rows;
        rows[0].ready_after_ms = Some(1_500);
        rows[0].health = Some(proto::HealthStatus {
            ok: false,
            failures: 2,
            last: "500 Internal Server Error".into(),
        });
        assert_eq!(
            status_table(&rows),
            "NAME       STATE    PID  UPTIME  READY  RESTARTS  LAST-EXIT  HEALTH\n\
             web        running  42   3m12s   1.5s   1         SIGKILL    failing 2 (500 Internal Server Error)\n\
             batch-job  exited   -    -       -      0         code 0     -\n"
        );
        // not checked yet (still starting, or the first check has not ended)
        rows[0].health = Some(proto::HealthStatus {
            ok: true,
            failures: 0,
            last: String::new(),
        });
        assert!(
            status_table(&rows)
                .lines()
                .nth(1)
                .is_some_and(|l| l.ends_with("SIGKILL    -")),
            "{}",
            status_table(&rows)
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            utc_timestamp(1_795_000_000_123_456),
            "2026-11-18T11:06:40.123Z"
        );
        assert_eq!(
            utc_timestamp(951_782_400_000_000),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
