//! `zurg --publisher ADDR --host H VERB ...`: a control verb run on another
//! host through the publisher, and `zurg --publisher ADDR status
//! --all-hosts`. The client authenticates as an operator (the operator
//! token, never the host token); the reply is the host's own control reply,
//! printed by the local renderers, with the local verb's exit codes. Two
//! more: 3 when the host is not connected or did not answer, 4 when the
//! host (or the publisher) refuses the verb.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::client::{
    print_reply, shown, status_table_by_host, ClientCmd, EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE,
    EXIT_USAGE,
};
use super::UsageError;
use crate::control::proto::{ErrorBody, ErrorCode, RawJson, Reply, ServiceStatus, Verb};
use crate::publish::client::Session;
use crate::publish::proto::{Assembly, Endpoint, Frame, HostInfo, Role};
use crate::publish::server::read_token;

/// The host (or the publisher) refused the verb: not allowed there, or
/// not with this token.
pub const EXIT_FORBIDDEN: i32 = 4;

/// Options that may come before the verb (`zurg --publisher ADDR --host H
/// restart api`).
const LEADING: [&str; 3] = ["--publisher", "--host", "--operator-token-file"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A zurg GPID, an address or a hostname.
    Host(String),
    /// `status --all-hosts`.
    AllHosts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAsk {
    pub publishers: crate::publish::addrs::Publishers,
    pub target: Target,
    pub operator_token_file: Option<PathBuf>,
}

/// Moves `--publisher ADDR --host H --operator-token-file F` given before
/// the verb to after it, where the verb's parser takes them. Anything else
/// is left as it is.
pub fn hoist_options(args: Vec<OsString>) -> Result<Vec<OsString>, UsageError> {
    let leading = |a: &OsString| {
        a.to_str().is_some_and(|s| {
            LEADING
                .iter()
                .any(|o| s == *o || s.strip_prefix(o).is_some_and(|r| r.starts_with('=')))
        })
    };
    if !args
        .first()
        .is_some_and(|a| a.to_str().is_some_and(|s| s.starts_with("--publisher")))
    {
        return Ok(args);
    }
    let original = args.clone();
    let mut moved = Vec::new();
    let mut rest = args.into_iter().peekable();
    while rest.peek().is_some_and(leading) {
        let Some(opt) = rest.next() else { break };
        let joined = opt.to_str().is_some_and(|s| s.contains('='));
        moved.push(opt.clone());
        if !joined {
            let value = rest
                .next()
                .ok_or_else(|| UsageError(format!("{} needs a value", opt.to_string_lossy())))?;
            moved.push(value);
        }
    }
    let mut out: Vec<OsString> = rest.collect();
    if out.is_empty() {
        return Err(UsageError(
            "--publisher ADDR: name a verb, e.g. `zurg --publisher ADDR --host H restart api`"
                .into(),
        ));
    }
    let first = out.first().and_then(|v| v.to_str()).unwrap_or_default();
    let verb = super::spec::verb(first);
    // Said here, where it is known: the shim's parser would only find the
    // leading `--publisher` an invalid option of its own.
    if first == "-h" || first == "--help" {
        // `zurg --publisher ADDR --help`: the overview, which shows the form.
        return Ok(vec![OsString::from("--help")]);
    }
    if first.starts_with('-') && first != "--" {
        return Err(UsageError(format!(
            "{first} goes after the verb (`zurg --publisher ADDR --host H VERB {first}`); before it go only {}",
            LEADING.join(", ")
        )));
    }
    if let Some(v) = verb.filter(|v| v.face != super::spec::Face::Client) {
        return Err(UsageError(format!(
            "`{}` cannot be run through a publisher; these can: {}",
            v.name,
            crate::control::proto::RemoteVerb::ALL
                .map(crate::control::proto::RemoteVerb::name)
                .join(", ")
        )));
    }
    if verb.is_none() {
        // Not `--publisher ... VERB`: the shim's parser says what is wrong.
        return Ok(original);
    }
    out.extend(moved);
    Ok(out)
}

/// The exit code for an error reply the publisher or the host gave.
fn error_exit(code: ErrorCode) -> Option<i32> {
    match code {
        ErrorCode::HostNotConnected | ErrorCode::HostSilent => Some(EXIT_UNREACHABLE),
        ErrorCode::Forbidden => Some(EXIT_FORBIDDEN),
        _ => None,
    }
}

/// An answer's result: its own, or the one its `part` frames carried. An
/// error answer (the host went away, or the publisher refused a part)
/// leaves the parts that came before it unused: its error is the news.
fn assembled(
    assembly: &mut Assembly,
    id: u64,
    ok: bool,
    result: Option<serde_json::Value>,
) -> Result<Option<serde_json::Value>, String> {
    match assembly.finish(id) {
        Some(whole) if ok => whole.map(Some),
        _ => Ok(result),
    }
}

/// The control reply an answer carries.
fn reply_of(
    id: u64,
    ok: bool,
    result: Option<serde_json::Value>,
    error: Option<ErrorBody>,
) -> Reply {
    match (ok, error) {
        (true, _) => Reply::ok(id, result.unwrap_or(serde_json::Value::Null)),
        (false, Some(e)) => Reply::error(id, e.code, e.message),
        (false, None) => Reply::error(id, ErrorCode::Failed, "the host gave no reason"),
    }
}

fn open(ask: &RemoteAsk, timeout: Duration) -> Result<Session, (i32, String)> {
    let token = ask
        .operator_token_file
        .as_deref()
        .map(read_token)
        .transpose()
        .map_err(|e| {
            (
                super::client::EXIT_USAGE,
                format!("--operator-token-file {e}"),
            )
        })?;
    // Only opening moves on to the next publisher: once a request is sent
    // it may have run, and running it twice is not ours to decide.
    crate::publish::client::first_answer(&ask.publishers, 0, "zurg", |addr| {
        Session::open_checked(addr, Role::Operator, token.as_deref(), timeout)
    })
    .map(|(s, _)| s)
    .map_err(|e| {
        // The publisher was reached and would not let us in (it refused
        // the token, or asked for one we were not given): the connection
        // worked, the credentials did not.
        let code = if e.denied {
            EXIT_FORBIDDEN
        } else {
            EXIT_UNREACHABLE
        };
        (code, e.message)
    })
}

/// How long to wait for a host's answer to `verb`: the publisher's relay
/// deadline for it and some, so its own `host_silent` arrives first.
fn answer_timeout(verb: &Verb) -> Duration {
    Duration::from_millis(crate::publish::relay::deadline_ms(verb).saturating_add(5_000))
}

pub fn run(cmd: &ClientCmd, ask: &RemoteAsk) -> i32 {
    if let Target::Host(host) = &ask.target {
        // The publisher would refuse it and close; said here, it is the
        // user's mistake it is.
        let max = crate::publish::proto::Field::HostRef.max();
        if host.len() > max {
            eprintln!(
                "zurg: --host of {} bytes names no host: a zurg GPID, an address or a hostname is at most {max}",
                host.len()
            );
            return EXIT_USAGE;
        }
    }
    let mut session = match open(ask, Duration::from_secs(10)) {
        Ok(s) => s,
        Err((code, e)) => {
            eprintln!("zurg: {}", shown(&e));
            return code;
        }
    };
    match &ask.target {
        Target::Host(host) => one_host(cmd, &mut session, host),
        Target::AllHosts => all_hosts(cmd, &mut session),
    }
}

fn one_host(cmd: &ClientCmd, s: &mut Session, host: &str) -> i32 {
    let request = Frame::Request {
        id: 1,
        host: host.to_string(),
        verb: cmd.verb.clone(),
        parts: true,
    };
    s.set_timeout(Some(answer_timeout(&cmd.verb)));
    if let Err(e) = s.send(&request) {
        eprintln!("zurg: {}", shown(&e));
        return EXIT_UNREACHABLE;
    }
    let mut assembly = Assembly::default();
    loop {
        match s.read_frame() {
            Ok(Frame::Part {
                id: 1,
                index,
                last,
                data,
            }) => {
                if let Err(e) = assembly.add(1, index, last, &data) {
                    eprintln!("zurg: {}", shown(&e));
                    return EXIT_FAILED;
                }
            }
            Ok(Frame::Answer {
                id: 1,
                ok,
                result,
                error,
                ..
            }) => {
                let result = match assembled(&mut assembly, 1, ok, result) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("zurg: {}", shown(&e));
                        return EXIT_FAILED;
                    }
                };
                let reply = reply_of(1, ok, result, error);
                let mut raw = serde_json::to_vec(&reply).unwrap_or_default();
                raw.push(b'\n');
                // Every error answer as a local one prints (its JSON with
                // --json, its message), under its own exit code.
                let printed = print_reply(cmd, &reply, &raw, None);
                return reply
                    .error
                    .as_ref()
                    .and_then(|e| error_exit(e.code))
                    .unwrap_or(printed);
            }
            Ok(Frame::Error { message, .. }) => {
                eprintln!("zurg: publisher: {}", shown(&message));
                return EXIT_FAILED;
            }
            Ok(_) => continue,
            Err(e) => {
                eprintln!("zurg: {}", shown(&e));
                return EXIT_UNREACHABLE;
            }
        }
    }
}

/// Every host the publisher knows, connected or not, and every endpoint.
fn listing(s: &mut Session) -> Result<(Vec<HostInfo>, Vec<Endpoint>), String> {
    s.send(&Frame::Resolve {
        name: None,
        watch: false,
    })?;
    let mut hosts = Vec::new();
    let mut endpoints = Vec::new();
    loop {
        match s.read_frame()? {
            Frame::Hosts { hosts: page } => hosts.extend(page),
            Frame::Endpoints { endpoints: e, .. } => endpoints.extend(e),
            Frame::Synced => return Ok((hosts, endpoints)),
            Frame::Error { message, .. } => return Err(format!("publisher: {message}")),
            _ => {}
        }
    }
}

fn all_hosts(cmd: &ClientCmd, s: &mut Session) -> i32 {
    s.set_timeout(Some(answer_timeout(&cmd.verb)));
    let (known, endpoints) = match listing(s) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("zurg: {}", shown(&e));
            return EXIT_UNREACHABLE;
        }
    };
    let names = match &cmd.verb {
        Verb::Status { names } => names.clone(),
        _ => Vec::new(),
    };
    let connected: Vec<&HostInfo> = known.iter().filter(|h| h.connected).collect();
    for (i, h) in connected.iter().enumerate() {
        let request = Frame::Request {
            id: i as u64,
            host: h.zurg.clone(),
            verb: Verb::Status {
                names: names.clone(),
            },
            parts: true,
        };
        if let Err(e) = s.send(&request) {
            eprintln!("zurg: {}", shown(&e));
            return EXIT_UNREACHABLE;
        }
    }
    let mut answers: Vec<Option<Reply>> = vec![None; connected.len()];
    let mut left = connected.len();
    let mut assembly = Assembly::default();
    let mut broken: HashMap<u64, String> = HashMap::new();
    while left > 0 {
        match s.read_frame() {
            Ok(Frame::Part {
                id,
                index,
                last,
                data,
            }) if usize::try_from(id).is_ok_and(|i| i < connected.len()) => {
                // A broken answer fails that host only, when it ends.
                if let Err(e) = assembly.add(id, index, last, &data) {
                    broken.entry(id).or_insert(e);
                }
            }
            Ok(Frame::Answer {
                id,
                ok,
                result,
                error,
                ..
            }) => {
                let slot = usize::try_from(id).ok().and_then(|i| answers.get_mut(i));
                if let Some(slot @ None) = slot {
                    let assembled = match broken.remove(&id) {
                        Some(e) if ok => Err(e),
                        _ => assembled(&mut assembly, id, ok, result),
                    };
                    *slot = Some(match assembled {
                        Ok(result) => reply_of(id, ok, result, error),
                        Err(e) => Reply::error(id, ErrorCode::Failed, e),
                    });
                    left -= 1;
                }
            }
            Ok(Frame::Error { message, .. }) => {
                eprintln!("zurg: publisher: {}", shown(&message));
                return EXIT_FAILED;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("zurg: {}", shown(&e));
                return EXIT_UNREACHABLE;
            }
        }
    }
    let mut code = EXIT_OK;
    let mut tables: Vec<(String, Vec<ServiceStatus>)> = Vec::new();
    let mut json = Vec::new();
    for (h, reply) in connected.iter().zip(answers) {
        // The host's own word for itself, in its hello.
        let label = shown(h.zurg.split(':').next().unwrap_or(&h.zurg)).into_owned();
        let Some(reply) = reply else { continue };
        if let Some(e) = &reply.error {
            if e.code == ErrorCode::Forbidden {
                // It keeps its status to itself: what it published stands
                // in (state `published`, no restart count).
                eprintln!(
                    "zurg: host {label} does not allow remote status; its services as the publisher sees them"
                );
                let rows = published_rows(&endpoints, &h.zurg);
                json.push(serde_json::json!({"host": h.zurg, "published": rows}));
                tables.push((label, shown_rows(&rows)));
                continue;
            }
            eprintln!("zurg: host {label}: {}", shown(&e.message));
            code = code.max(EXIT_FAILED);
            continue;
        }
        let rows: Vec<ServiceStatus> = reply
            .result
            .as_ref()
            .map(RawJson::to_value)
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        if rows.iter().any(|r| r.problem.is_some()) {
            code = code.max(EXIT_FAILED);
        }
        json.push(serde_json::json!({"host": h.zurg, "services": rows}));
        tables.push((label, shown_rows(&rows)));
    }
    for h in known.iter().filter(|h| !h.connected) {
        eprintln!(
            "zurg: host {} is not connected to the publisher",
            shown(&h.zurg)
        );
    }
    if cmd.json {
        let doc = serde_json::json!({"ok": true, "result": json}).to_string();
        println!("{}", crate::safe_text::json(&doc));
    } else {
        print!("{}", status_table_by_host(&tables));
    }
    code
}

/// Rows as the table shows them: every text a host sent escaped
/// (`safe_text`). The JSON keeps the host's own text: a JSON reader gets
/// it exactly, and `safe_text::json` keeps the terminal safe there.
fn shown_rows(rows: &[ServiceStatus]) -> Vec<ServiceStatus> {
    let Ok(mut v) = serde_json::to_value(rows) else {
        return Vec::new();
    };
    crate::safe_text::value(&mut v);
    serde_json::from_value(v).unwrap_or_default()
}

/// Status rows from a host's published endpoints, for a host that does
/// not allow remote `status`.
fn published_rows(endpoints: &[Endpoint], zurg: &str) -> Vec<ServiceStatus> {
    let now_us = crate::os::wall_clock_us();
    endpoints
        .iter()
        .filter(|e| e.host == zurg)
        .filter_map(|e| {
            serde_json::from_value(serde_json::json!({
                "name": e.service,
                "state": "published",
                "restarts": 0,
                "uptime_ms": now_us.saturating_sub(e.since_us) / 1000,
                "gpid": e.gpid,
                "version": e.version,
            }))
            .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn leading_publisher_options_move_after_the_verb() {
        assert_eq!(
            hoist_options(os(&["--publisher", "p:1", "--host", "h", "restart", "api"])).unwrap(),
            os(&["restart", "api", "--publisher", "p:1", "--host", "h"])
        );
        assert_eq!(
            hoist_options(os(&["--publisher=p:1", "status", "--all-hosts"])).unwrap(),
            os(&["status", "--all-hosts", "--publisher=p:1"])
        );
        assert_eq!(hoist_options(os(&["status"])).unwrap(), os(&["status"]));
        assert!(hoist_options(os(&["--publisher", "p:1"])).is_err());
        let not_a_verb = os(&["--publisher", "--", "true"]);
        assert_eq!(hoist_options(not_a_verb.clone()).unwrap(), not_a_verb);
        assert!(hoist_options(os(&["--publisher"])).is_err());
        // What cannot follow the leading options says so, not "invalid
        // option '--publisher'" from the shim's parser.
        let err = |v: &[&str]| hoist_options(os(v)).unwrap_err().0;
        assert_eq!(
            err(&["--publisher", "p:1", "--json", "--host", "h", "status"]),
            "--json goes after the verb (`zurg --publisher ADDR --host H VERB --json`); before it go only --publisher, --host, --operator-token-file"
        );
        assert_eq!(
            hoist_options(os(&["--publisher", "p:1", "--help"])).unwrap(),
            os(&["--help"])
        );
        assert_eq!(
            err(&["--publisher", "p:1", "resolve", "web"]),
            "`resolve` cannot be run through a publisher; these can: status, restart, stop, start, signal, upgrade, rollback"
        );
    }

    #[test]
    fn an_error_answer_after_some_parts_reports_the_error() {
        let mut a = Assembly::default();
        a.add(3, 0, false, "[1,").unwrap();
        assert_eq!(assembled(&mut a, 3, false, None), Ok(None));
        assert!(a.finish(3).is_none(), "the parts are dropped");
        a.add(4, 0, true, "[1]").unwrap();
        assert_eq!(
            assembled(&mut a, 4, true, None),
            Ok(Some(serde_json::json!([1])))
        );
        a.add(5, 0, false, "[1,").unwrap();
        assert!(assembled(&mut a, 5, true, None).is_err());
        assert_eq!(
            assembled(&mut a, 6, true, Some(serde_json::json!(2))),
            Ok(Some(serde_json::json!(2)))
        );
    }

    #[test]
    fn refusals_have_their_own_exit_codes() {
        assert_eq!(
            error_exit(ErrorCode::HostNotConnected),
            Some(EXIT_UNREACHABLE)
        );
        assert_eq!(error_exit(ErrorCode::HostSilent), Some(EXIT_UNREACHABLE));
        assert_eq!(error_exit(ErrorCode::Forbidden), Some(EXIT_FORBIDDEN));
        assert_eq!(error_exit(ErrorCode::UnknownService), None);
    }
}
