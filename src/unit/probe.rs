//! The values of the `ready` and `health` keys: what tells zurg a service
//! is ready, and how its liveness is checked. Read from TOML here (every
//! problem of a table at once); `keys.rs` declares the keys themselves.
//!
//! Pure: nothing here touches the OS.

use std::net::{IpAddr, Ipv4Addr};

use toml::Value;

use super::keys::{type_name, Bad};

/// Readiness wait (`ready_timeout_ms`), as systemd's TimeoutStartSec.
pub const DEFAULT_READY_TIMEOUT_MS: u64 = 90_000;
/// Time between two health checks (docker's HEALTHCHECK default).
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 30_000;
/// How long one health check may take before it counts as failed.
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 5_000;
/// Failures in a row that make a service unhealthy (docker's default).
pub const DEFAULT_HEALTH_RETRIES: u32 = 3;

/// A port a probe connects to: a number, or `"$PORT"`, the service's own
/// port at this start (which `port = "auto"` chooses then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbePort {
    Fixed(u16),
    Unit,
}

impl ProbePort {
    /// The port to connect to, given the current process's port.
    pub fn resolve(self, unit_port: u16) -> u16 {
        match self {
            ProbePort::Fixed(p) => p,
            ProbePort::Unit => unit_port,
        }
    }
}

impl std::fmt::Display for ProbePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbePort::Fixed(p) => write!(f, "{p}"),
            ProbePort::Unit => f.write_str("$PORT"),
        }
    }
}

/// `ready = ...`: how the service says it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// `"notify"`: `READY=1` on its own `NOTIFY_SOCKET` (systemd's
    /// sd_notify protocol).
    Notify,
    /// `{ fd = N }`: a newline written to fd N (s6's notification-fd).
    Fd(i32),
    /// `{ tcp = PORT }`: a connect to the port succeeds.
    Tcp(ProbePort),
    /// `{ exec = [...] }`: the command exits 0.
    Exec(Vec<String>),
}

/// What a health check (or an `exec`/`tcp` readiness probe) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Exec(Vec<String>),
    Tcp(ProbePort),
    Http(HttpUrl),
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Exec(argv) => write!(f, "exec {}", argv.join(" ")),
            Check::Tcp(port) => write!(f, "tcp port {port}"),
            Check::Http(url) => f.write_str(&url.text),
        }
    }
}

/// `http = "http://HOST[:PORT]/path"`, parsed at load: HOST is an IP
/// address or `localhost`, PORT a number or `$PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub ip: IpAddr,
    /// The Host header's value as written (with the port).
    pub host: String,
    pub port: ProbePort,
    /// Starts with '/'; includes any query.
    pub path: String,
    /// The URL as written, for messages.
    pub text: String,
}

/// `health = { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub check: Check,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    /// Failures during this time after readiness do not count.
    pub start_period_ms: u64,
}

/// A command: a non-empty array of strings without NUL bytes.
fn command(v: &Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = v else {
        return Err(format!(
            "must be an array of strings (the command), found {}",
            type_name(v)
        ));
    };
    let mut argv = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) if s.contains('\0') => {
                return Err(format!("item {i} contains a NUL byte"))
            }
            Value::String(s) => argv.push(s.clone()),
            other => {
                return Err(format!(
                    "item {i} must be a string, found {}",
                    type_name(other)
                ))
            }
        }
    }
    match argv.first() {
        None => Err("must name a command, found an empty array".into()),
        Some(first) if first.is_empty() => Err("must name a command, found \"\"".into()),
        Some(_) => Ok(argv),
    }
}

fn probe_port(v: &Value) -> Result<ProbePort, String> {
    match v {
        Value::Integer(n) => match u16::try_from(*n) {
            Ok(p) if p > 0 => Ok(ProbePort::Fixed(p)),
            _ => Err(format!("must be a port from 1 to 65535, found {n}")),
        },
        Value::String(s) if s == "$PORT" => Ok(ProbePort::Unit),
        Value::String(s) => Err(format!(
            "must be a port number or \"$PORT\" (the unit's port), found {s:?}"
        )),
        other => Err(format!(
            "must be a port number or \"$PORT\", found {}",
            type_name(other)
        )),
    }
}

/// Parses `http://HOST[:PORT][/path]`. Only plain http to an address
/// (no name lookup on the loop): an IP literal, `[v6]`, or `localhost`.
pub fn http_url(text: &str) -> Result<HttpUrl, String> {
    let Some(rest) = text.strip_prefix("http://") else {
        return Err(format!(
            "must start with http:// (https is not supported), found {text:?}"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err(format!("must not carry user credentials, found {text:?}"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(format!("has an unclosed [ in its host, found {text:?}"));
        };
        (addr, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let ip: IpAddr = if host == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().map_err(|_| {
            format!("must name an IP address or localhost (zurg does not look names up), found {host:?} in {text:?}")
        })?
    };
    let port = match port {
        None => ProbePort::Fixed(80),
        Some("$PORT") => ProbePort::Unit,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => ProbePort::Fixed(n),
            _ => {
                return Err(format!(
                    "has a bad port {p:?} (1 to 65535, or $PORT) in {text:?}"
                ))
            }
        },
    };
    if path
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b >= 0x80)
    {
        return Err(format!(
            "has spaces or control characters in its path: {text:?}"
        ));
    }
    Ok(HttpUrl {
        ip,
        host: authority.to_string(),
        port,
        path: path.to_string(),
        text: text.to_string(),
    })
}

/// `"notify"`, `{ fd = N }`, `{ tcp = PORT }` or `{ exec = [...] }`.
pub fn ready(v: &Value) -> Result<Ready, Bad> {
    const WORDS: &str =
        "\"notify\" or a table with one of fd = N, tcp = PORT, exec = [\"cmd\", ...]";
    let table = match v {
        Value::String(s) if s == "notify" => return Ok(Ready::Notify),
        Value::String(s) => return Err(format!("must be {WORDS}, found {s:?}").into()),
        Value::Table(t) => t,
        other => return Err(format!("must be {WORDS}, found {}", type_name(other)).into()),
    };
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for (key, value) in table {
        let read = match key.as_str() {
            "fd" => match value.as_integer().map(i32::try_from) {
                Some(Ok(n)) if n >= 3 => Ok(Ready::Fd(n)),
                _ => Err(format!(
                    "must be a descriptor number of at least 3 (0, 1 and 2 are stdio), found {value}"
                )),
            },
            "tcp" => probe_port(value).map(Ready::Tcp),
            "exec" => command(value).map(Ready::Exec),
            _ => Err("is not a way to be ready (fd, tcp, exec)".into()),
        };
        match read {
            Ok(r) => found.push((key.clone(), r)),
            Err(e) => errors.push(format!("`{key}` {e}")),
        }
    }
    if found.len() + errors.len() > 1 {
        let keys: Vec<&str> = table.keys().map(String::as_str).collect();
        errors.push(format!(
            "must set exactly one of fd, tcp, exec, found {}",
            keys.join(", ")
        ));
    }
    if !errors.is_empty() {
        return Err(Bad::Wrong(errors));
    }
    match found.pop() {
        Some((_, r)) => Ok(r),
        None => Err(format!("must be {WORDS}, found an empty table").into()),
    }
}

/// `{ exec | tcp | http, interval_ms, timeout_ms, retries, start_period_ms }`.
pub fn health(v: &Value) -> Result<Health, Bad> {
    let Value::Table(table) = v else {
        return Err(format!(
            "must be a table {{ exec = [...] or tcp = PORT or http = \"http://...\", interval_ms, timeout_ms, retries, start_period_ms }}, found {}",
            type_name(v)
        )
        .into());
    };
    let mut checks = Vec::new();
    let mut errors = Vec::new();
    let mut h = Health {
        check: Check::Tcp(ProbePort::Unit),
        interval_ms: DEFAULT_HEALTH_INTERVAL_MS,
        timeout_ms: DEFAULT_HEALTH_TIMEOUT_MS,
        retries: DEFAULT_HEALTH_RETRIES,
        start_period_ms: 0,
    };
    let positive_ms = |value: &Value| match value.as_integer().map(u64::try_from) {
        Some(Ok(n)) if n >= 1 => Ok(n),
        _ => Err(format!(
            "must be a positive integer (milliseconds), found {value}"
        )),
    };
    for (key, value) in table {
        let read = match key.as_str() {
            "exec" => command(value).map(|c| checks.push(Check::Exec(c))),
            "tcp" => probe_port(value).map(|p| checks.push(Check::Tcp(p))),
            "http" => match value {
                Value::String(s) => http_url(s).map(|u| checks.push(Check::Http(u))),
                other => Err(format!("must be a URL string, found {}", type_name(other))),
            },
            "interval_ms" => positive_ms(value).map(|n| h.interval_ms = n),
            "timeout_ms" => positive_ms(value).map(|n| h.timeout_ms = n),
            "start_period_ms" => match value.as_integer().map(u64::try_from) {
                Some(Ok(n)) => {
                    h.start_period_ms = n;
                    Ok(())
                }
                _ => Err(format!(
                    "must be a non-negative integer (milliseconds), found {value}"
                )),
            },
            "retries" => match value.as_integer().map(u32::try_from) {
                Some(Ok(n)) if n >= 1 => {
                    h.retries = n;
                    Ok(())
                }
                _ => Err(format!("must be a positive integer, found {value}")),
            },
            _ => Err("is not a key of a health check (exec, tcp, http, interval_ms, timeout_ms, retries, start_period_ms)".into()),
        };
        if let Err(e) = read {
            errors.push(format!("`{key}` {e}"));
        }
    }
    let named = ["exec", "tcp", "http"]
        .iter()
        .filter(|k| table.contains_key(**k))
        .count();
    if named != 1 {
        errors.push(format!(
            "must set exactly one of exec, tcp, http, found {named}"
        ));
    }
    if !errors.is_empty() {
        return Err(Bad::Wrong(errors));
    }
    if let Some(c) = checks.pop() {
        h.check = c;
    }
    Ok(h)
}

impl Ready {
    /// Uses the unit's port (`"$PORT"`).
    pub fn uses_unit_port(&self) -> bool {
        matches!(self, Ready::Tcp(ProbePort::Unit))
    }
}

impl Check {
    /// Uses the unit's port (`"$PORT"`).
    pub fn uses_unit_port(&self) -> bool {
        match self {
            Check::Tcp(p) => *p == ProbePort::Unit,
            Check::Http(u) => u.port == ProbePort::Unit,
            Check::Exec(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Value {
        let t: toml::Table = toml::from_str(&format!("v = {text}")).unwrap();
        t.get("v").cloned().unwrap()
    }

    fn errors(r: Result<impl std::fmt::Debug, Bad>) -> String {
        match r {
            Err(Bad::Wrong(e)) => e.join("; "),
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn ready_takes_notify_or_one_probe() {
        assert_eq!(ready(&value("\"notify\"")).unwrap(), Ready::Notify);
        assert_eq!(ready(&value("{ fd = 5 }")).unwrap(), Ready::Fd(5));
        assert_eq!(
            ready(&value("{ tcp = 5432 }")).unwrap(),
            Ready::Tcp(ProbePort::Fixed(5432))
        );
        assert_eq!(
            ready(&value("{ tcp = \"$PORT\" }")).unwrap(),
            Ready::Tcp(ProbePort::Unit)
        );
        assert_eq!(
            ready(&value("{ exec = [\"pg_isready\", \"-q\"] }")).unwrap(),
            Ready::Exec(vec!["pg_isready".into(), "-q".into()])
        );
        for (text, want) in [
            ("\"later\"", "must be \"notify\" or a table"),
            (
                "{ fd = 2 }",
                "`fd` must be a descriptor number of at least 3",
            ),
            (
                "{ tcp = 0 }",
                "`tcp` must be a port from 1 to 65535, found 0",
            ),
            ("{ tcp = \"auto\" }", "\"$PORT\""),
            ("{ exec = [] }", "`exec` must name a command"),
            ("{ fd = 4, tcp = 80 }", "exactly one of fd, tcp, exec"),
            ("{ http = \"x\" }", "`http` is not a way to be ready"),
            ("{}", "found an empty table"),
        ] {
            let got = errors(ready(&value(text)));
            assert!(got.contains(want), "{text}: {got}");
        }
    }

    #[test]
    fn health_defaults_and_every_problem_at_once() {
        let h = health(&value("{ tcp = 80 }")).unwrap();
        assert_eq!(
            h,
            Health {
                check: Check::Tcp(ProbePort::Fixed(80)),
                interval_ms: DEFAULT_HEALTH_INTERVAL_MS,
                timeout_ms: DEFAULT_HEALTH_TIMEOUT_MS,
                retries: DEFAULT_HEALTH_RETRIES,
                start_period_ms: 0,
            }
        );
        let h = health(&value(
            "{ exec = [\"true\"], interval_ms = 100, timeout_ms = 50, retries = 1, start_period_ms = 7 }",
        ))
        .unwrap();
        assert_eq!(
            (h.interval_ms, h.timeout_ms, h.retries, h.start_period_ms),
            (100, 50, 1, 7)
        );
        let got = errors(health(&value(
            "{ tcp = 80, http = \"https://x/\", retries = 0, interval_ms = -1, colour = 1 }",
        )));
        for want in [
            "`http` must start with http://",
            "`retries` must be a positive integer, found 0",
            "`interval_ms` must be a positive integer",
            "`colour` is not a key of a health check",
            "exactly one of exec, tcp, http, found 2",
        ] {
            assert!(got.contains(want), "{want} in {got}");
        }
        assert!(errors(health(&value("{ retries = 2 }"))).contains("found 0"));
    }

    #[test]
    fn http_urls_are_plain_http_to_an_address() {
        let u = http_url("http://127.0.0.1:8080/health?full=1").unwrap();
        assert_eq!(u.ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(u.port, ProbePort::Fixed(8080));
        assert_eq!(u.path, "/health?full=1");
        assert_eq!(u.host, "127.0.0.1:8080");
        let u = http_url("http://localhost:$PORT").unwrap();
        assert_eq!((u.port, u.path.as_str()), (ProbePort::Unit, "/"));
        let u = http_url("http://[::1]/x").unwrap();
        assert_eq!(
            (u.ip.to_string(), u.port),
            ("::1".into(), ProbePort::Fixed(80))
        );
        for (text, want) in [
            ("https://127.0.0.1/", "https is not supported"),
            ("http://example.com/", "does not look names up"),
            ("http://127.0.0.1:0/", "bad port"),
            ("http://127.0.0.1:99999/", "bad port"),
            ("http://u:p@127.0.0.1/", "credentials"),
            ("http://127.0.0.1/a b", "spaces"),
            ("http://[::1/", "unclosed"),
        ] {
            let e = http_url(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
