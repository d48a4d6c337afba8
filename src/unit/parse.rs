//! Parses one unit file's text into a `Unit` (pure: the caller reads the file).
//!
//! Every field is first read as a spanned TOML value and then checked by
//! hand, so each error names the file, the line and column of the offending
//! value, and the key. Unknown keys are errors: a typo such as `restrat`
//! must not silently fall back to a default.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Spanned, Value};

use super::{
    RestartPolicy, Unit, DEFAULT_RESTART_DELAY_MS, DEFAULT_STOP_SIGNAL, DEFAULT_STOP_TIMEOUT_MS,
};

/// Longest service name; it travels in logs, events and GPIDs.
pub const MAX_NAME_LEN: usize = 64;

/// A unit file that cannot be used, and exactly where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UnitError {
    pub path: PathBuf,
    /// 1-based; 0 when the error is about the file as a whole.
    pub line: usize,
    pub col: usize,
    pub key: Option<String>,
    pub msg: String,
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.msg)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnit {
    exec: Option<Spanned<Value>>,
    args: Option<Spanned<Value>>,
    env: Option<Spanned<Value>>,
    cwd: Option<Spanned<Value>>,
    restart: Option<Spanned<Value>>,
    stop_signal: Option<Spanned<Value>>,
    stop_timeout_ms: Option<Spanned<Value>>,
    restart_delay_ms: Option<Spanned<Value>>,
    port: Option<Spanned<Value>>,
    socket: Option<Spanned<Value>>,
    bind: Option<Spanned<Value>>,
    version: Option<Spanned<Value>>,
    stats_interval_ms: Option<Spanned<Value>>,
    md5: Option<Spanned<Value>>,
    sha256: Option<Spanned<Value>>,
}

/// Maps byte offsets to 1-based line and column (in characters).
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn position(&self, offset: usize) -> (usize, usize) {
        let before = self.text.get(..offset.min(self.text.len())).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    fn error(
        &self,
        span: Option<Range<usize>>,
        key: Option<&str>,
        msg: impl Into<String>,
    ) -> UnitError {
        let (line, col) = span.map_or((1, 1), |s| self.position(s.start));
        UnitError {
            path: self.path.to_path_buf(),
            line,
            col,
            key: key.map(str::to_string),
            msg: msg.into(),
        }
    }

    /// The key assigned on the line holding `offset`, for errors that toml
    /// reports without one (unknown keys, syntax errors).
    fn key_at(&self, offset: usize) -> Option<String> {
        let start = self
            .text
            .get(..offset.min(self.text.len()))?
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line = self.text.get(start..)?.lines().next()?;
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        (!key.is_empty() && !key.starts_with('[') && !key.starts_with('#')).then(|| key.to_string())
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// Checks a value for what exec(2) can carry: no NUL bytes.
fn no_nul(loc: &Locator<'_>, span: &Range<usize>, key: &str, s: &str) -> Result<(), UnitError> {
    if s.contains('\0') {
        return Err(loc.error(Some(span.clone()), Some(key), "contains a NUL byte"));
    }
    Ok(())
}

fn string(loc: &Locator<'_>, key: &str, v: &Spanned<Value>) -> Result<String, UnitError> {
    match v.get_ref() {
        Value::String(s) => {
            no_nul(loc, &v.span(), key, s)?;
            Ok(s.clone())
        }
        other => Err(loc.error(
            Some(v.span()),
            Some(key),
            format!("expected a string, found {}", type_name(other)),
        )),
    }
}

fn absolute_path(loc: &Locator<'_>, key: &str, v: &Spanned<Value>) -> Result<PathBuf, UnitError> {
    let s = string(loc, key, v)?;
    if !s.starts_with('/') {
        return Err(loc.error(
            Some(v.span()),
            Some(key),
            format!("must be an absolute path, found {s:?}"),
        ));
    }
    Ok(PathBuf::from(s))
}

fn millis(loc: &Locator<'_>, key: &str, v: &Spanned<Value>) -> Result<u64, UnitError> {
    match v.get_ref() {
        Value::Integer(n) => u64::try_from(*n).map_err(|_| {
            loc.error(
                Some(v.span()),
                Some(key),
                format!("must not be negative, found {n}"),
            )
        }),
        other => Err(loc.error(
            Some(v.span()),
            Some(key),
            format!(
                "expected an integer (milliseconds), found {}",
                type_name(other)
            ),
        )),
    }
}

fn env_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.contains('\0')
}

/// Whether `name` may name a service: it appears in logs, paths and GPIDs.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-'))
}

/// Parses the text of the unit file at `path` for service `name`.
pub fn parse_unit(name: &str, path: &Path, text: &str) -> Result<Unit, UnitError> {
    let loc = Locator { path, text };
    if !valid_service_name(name) {
        return Err(UnitError {
            path: path.to_path_buf(),
            line: 0,
            col: 0,
            key: None,
            msg: format!(
                "invalid service name {name:?}: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 _ . @ -, not starting with '.' or '-'"
            ),
        });
    }
    let raw: RawUnit = toml::from_str(text).map_err(|e| {
        let span = e.span();
        let key = span.clone().and_then(|s| loc.key_at(s.start));
        loc.error(
            span,
            key.as_deref(),
            e.message().trim_end_matches('.').to_string(),
        )
    })?;

    let exec = match &raw.exec {
        Some(v) => absolute_path(&loc, "exec", v)?,
        None => return Err(loc.error(None, None, "missing required key `exec`")),
    };
    let args = match &raw.args {
        None => Vec::new(),
        Some(v) => match v.get_ref() {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => {
                            no_nul(&loc, &v.span(), "args", s)?;
                            out.push(s.clone());
                        }
                        other => {
                            return Err(loc.error(
                                Some(v.span()),
                                Some("args"),
                                format!("item {i} must be a string, found {}", type_name(other)),
                            ))
                        }
                    }
                }
                out
            }
            other => {
                return Err(loc.error(
                    Some(v.span()),
                    Some("args"),
                    format!("expected an array of strings, found {}", type_name(other)),
                ))
            }
        },
    };
    let mut env = BTreeMap::new();
    if let Some(v) = &raw.env {
        let Value::Table(table) = v.get_ref() else {
            return Err(loc.error(
                Some(v.span()),
                Some("env"),
                format!(
                    "expected a table of strings, found {}",
                    type_name(v.get_ref())
                ),
            ));
        };
        for (k, val) in table {
            if !env_name_ok(k) {
                return Err(loc.error(
                    Some(v.span()),
                    Some("env"),
                    format!("invalid variable name {k:?}"),
                ));
            }
            let Value::String(s) = val else {
                return Err(loc.error(
                    Some(v.span()),
                    Some("env"),
                    format!("value of {k} must be a string, found {}", type_name(val)),
                ));
            };
            no_nul(&loc, &v.span(), "env", s)?;
            env.insert(k.clone(), s.clone());
        }
    }
    let cwd = raw
        .cwd
        .as_ref()
        .map(|v| absolute_path(&loc, "cwd", v))
        .transpose()?;
    let restart = match &raw.restart {
        None => RestartPolicy::Always,
        Some(v) => match string(&loc, "restart", v)?.as_str() {
            "always" => RestartPolicy::Always,
            "on-failure" => RestartPolicy::OnFailure,
            "never" => RestartPolicy::Never,
            other => {
                return Err(loc.error(
                    Some(v.span()),
                    Some("restart"),
                    format!("expected \"always\", \"on-failure\" or \"never\", found {other:?}"),
                ))
            }
        },
    };
    let stop_signal = match &raw.stop_signal {
        None => DEFAULT_STOP_SIGNAL,
        Some(v) => {
            let parsed = match v.get_ref() {
                Value::String(s) => crate::sig::parse(s),
                Value::Integer(n) => i32::try_from(*n)
                    .ok()
                    .and_then(|n| crate::sig::parse(&n.to_string())),
                other => {
                    return Err(loc.error(
                        Some(v.span()),
                        Some("stop_signal"),
                        format!(
                            "expected a signal name or number, found {}",
                            type_name(other)
                        ),
                    ))
                }
            };
            match parsed {
                Some(n) if n != crate::sig::SIGSTOP => n,
                _ => {
                    return Err(loc.error(
                        Some(v.span()),
                        Some("stop_signal"),
                        format!("unknown or unusable signal {}", v.get_ref()),
                    ))
                }
            }
        }
    };
    let stop_timeout_ms = raw
        .stop_timeout_ms
        .as_ref()
        .map(|v| millis(&loc, "stop_timeout_ms", v))
        .transpose()?
        .unwrap_or(DEFAULT_STOP_TIMEOUT_MS);
    let restart_delay_ms = raw
        .restart_delay_ms
        .as_ref()
        .map(|v| millis(&loc, "restart_delay_ms", v))
        .transpose()?
        .unwrap_or(DEFAULT_RESTART_DELAY_MS);

    let (port, port_auto) = match &raw.port {
        None => (0, false),
        Some(v) => match v.get_ref() {
            Value::Integer(n) => (
                u16::try_from(*n).map_err(|_| {
                    loc.error(
                        Some(v.span()),
                        Some("port"),
                        format!("must be 0 to 65535, found {n}"),
                    )
                })?,
                false,
            ),
            Value::String(s) if s == "auto" => (0, true),
            Value::String(s) => {
                return Err(loc.error(
                    Some(v.span()),
                    Some("port"),
                    format!("expected a port number or \"auto\", found {s:?}"),
                ))
            }
            other => {
                return Err(loc.error(
                    Some(v.span()),
                    Some("port"),
                    format!(
                        "expected an integer or \"auto\", found {}",
                        type_name(other)
                    ),
                ))
            }
        },
    };
    let socket = match &raw.socket {
        None => false,
        Some(v) => match v.get_ref() {
            Value::Boolean(b) => {
                if *b && port == 0 && !port_auto {
                    return Err(loc.error(
                        Some(v.span()),
                        Some("socket"),
                        "needs a `port` to listen on (a number, or \"auto\")",
                    ));
                }
                *b
            }
            other => {
                return Err(loc.error(
                    Some(v.span()),
                    Some("socket"),
                    format!("expected true or false, found {}", type_name(other)),
                ))
            }
        },
    };
    let bind = match &raw.bind {
        None => None,
        Some(v) => {
            let text = string(&loc, "bind", v)?;
            let ip = text.parse::<std::net::IpAddr>().map_err(|_| {
                loc.error(
                    Some(v.span()),
                    Some("bind"),
                    format!("expected an IP address, found {text:?}"),
                )
            })?;
            if !socket && !port_auto {
                return Err(loc.error(
                    Some(v.span()),
                    Some("bind"),
                    "only applies with `socket = true` or `port = \"auto\"`",
                ));
            }
            Some(ip)
        }
    };
    let version = match &raw.version {
        None => None,
        Some(v) => {
            let text = string(&loc, "version", v)?;
            if let Err(why) = versioned_path(&exec, &text) {
                return Err(loc.error(Some(v.span()), Some("version"), why));
            }
            Some(text)
        }
    };
    let stats_interval_ms = match &raw.stats_interval_ms {
        None => None,
        Some(v) => match millis(&loc, "stats_interval_ms", v)? {
            0 => None,
            n if n < 100 => {
                return Err(loc.error(
                    Some(v.span()),
                    Some("stats_interval_ms"),
                    format!("must be 0 (off) or at least 100, found {n}"),
                ))
            }
            n => Some(n),
        },
    };

    let checksum = match (&raw.md5, &raw.sha256) {
        (Some(_), Some(v)) => {
            return Err(loc.error(
                Some(v.span()),
                Some("sha256"),
                "set md5 or sha256, not both",
            ));
        }
        (Some(v), None) | (None, Some(v)) => {
            let key = if raw.md5.is_some() { "md5" } else { "sha256" };
            let hex = string(&loc, key, v)?;
            Some(
                crate::version::Checksum::parse(key, &hex)
                    .map_err(|e| loc.error(Some(v.span()), Some(key), e))?,
            )
        }
        (None, None) => None,
    };

    Ok(Unit {
        name: name.to_string(),
        exec,
        args,
        env,
        cwd,
        restart,
        stop_signal,
        stop_timeout_ms,
        restart_delay_ms,
        port,
        port_auto,
        socket,
        bind,
        version,
        stats_interval_ms,
        checksum,
    })
}

/// The deploy rule for versioned builds: `version` is a sane name and the
/// exec path holds it as one whole component (`/opt/api/1.1.0/bin/api`).
pub fn versioned_path(exec: &Path, version: &str) -> Result<(), String> {
    if version.is_empty()
        || version.len() > 64
        || version.contains(['/', '\0'])
        || version == "."
        || version == ".."
    {
        return Err(format!(
            "invalid version {version:?}: 1 to 64 characters, no '/'"
        ));
    }
    let holds = exec
        .components()
        .any(|c| c.as_os_str() == std::ffi::OsStr::new(version));
    if holds {
        Ok(())
    } else {
        Err(format!(
            "exec {} is not a versioned path: no path component equals version {version:?} (deploy each build to its own directory, e.g. /opt/NAME/{version}/bin/NAME)",
            exec.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Unit, UnitError> {
        parse_unit("svc", Path::new("/u/svc.toml"), text)
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(u) => panic!("expected an error for {text:?}, got {u:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_unit_gets_defaults() {
        let u = parse("exec = \"/bin/true\"\n").unwrap();
        assert_eq!(u.name, "svc");
        assert_eq!(u.exec, PathBuf::from("/bin/true"));
        assert!(u.args.is_empty() && u.env.is_empty() && u.cwd.is_none());
        assert_eq!(u.restart, RestartPolicy::Always);
        assert_eq!(u.stop_signal, 15);
        assert_eq!(u.stop_timeout_ms, DEFAULT_STOP_TIMEOUT_MS);
        assert_eq!(u.restart_delay_ms, DEFAULT_RESTART_DELAY_MS);
    }

    #[test]
    fn full_unit() {
        let u = parse(
            r#"
exec = "/bin/sh"
args = ["-c", "echo hi"]
env = { A = "1", B_2 = "two" }
cwd = "/tmp"
restart = "on-failure"
stop_signal = "SIGQUIT"
stop_timeout_ms = 2500
restart_delay_ms = 50
"#,
        )
        .unwrap();
        assert_eq!(u.args, vec!["-c", "echo hi"]);
        assert_eq!(u.env.get("B_2").map(String::as_str), Some("two"));
        assert_eq!(u.cwd, Some(PathBuf::from("/tmp")));
        assert_eq!(u.restart, RestartPolicy::OnFailure);
        assert_eq!(u.stop_signal, 3);
        assert_eq!((u.stop_timeout_ms, u.restart_delay_ms), (2500, 50));
        assert_eq!(
            parse("exec = \"/x\"\nstop_signal = 10\n")
                .unwrap()
                .stop_signal,
            10
        );
    }

    #[test]
    fn errors_name_file_line_column_and_key() {
        let cases = [
            ("exec = \"/bin/true\"\nrestrat = \"always\"\n", "/u/svc.toml:2:1: key `restrat`: unknown field `restrat`, expected one of"),
            ("exec = \"/bin/true\"\nargs = \"-v\"\n", "/u/svc.toml:2:8: key `args`: expected an array of strings, found a string"),
            ("exec = \"/bin/true\"\nargs = [\"a\", 2]\n", "/u/svc.toml:2:8: key `args`: item 1 must be a string, found an integer"),
            ("exec = \"bin/true\"\n", "/u/svc.toml:1:8: key `exec`: must be an absolute path, found \"bin/true\""),
            ("exec = 5\n", "/u/svc.toml:1:8: key `exec`: expected a string, found an integer"),
            ("args = []\n", "/u/svc.toml:1:1: missing required key `exec`"),
            ("exec = \"/x\"\nstop_timeout_ms = -1\n", "/u/svc.toml:2:19: key `stop_timeout_ms`: must not be negative, found -1"),
            ("exec = \"/x\"\nrestart_delay_ms = \"1s\"\n", "/u/svc.toml:2:20: key `restart_delay_ms`: expected an integer (milliseconds), found a string"),
            ("exec = \"/x\"\nrestart = \"sometimes\"\n", "/u/svc.toml:2:11: key `restart`: expected \"always\", \"on-failure\" or \"never\", found \"sometimes\""),
            ("exec = \"/x\"\nstop_signal = \"FOO\"\n", "/u/svc.toml:2:15: key `stop_signal`: unknown or unusable signal \"FOO\""),
            ("exec = \"/x\"\nstop_signal = 99\n", "/u/svc.toml:2:15: key `stop_signal`: unknown or unusable signal 99"),
            ("exec = \"/x\"\ncwd = \"tmp\"\n", "/u/svc.toml:2:7: key `cwd`: must be an absolute path, found \"tmp\""),
            ("exec = \"/x\"\nenv = { \"A=B\" = \"1\" }\n", "/u/svc.toml:2:7: key `env`: invalid variable name \"A=B\""),
            ("exec = \"/x\"\nenv = { A = 1 }\n", "/u/svc.toml:2:7: key `env`: value of A must be a string, found an integer"),
            ("exec = \"/x\"\nenv = \"A=1\"\n", "/u/svc.toml:2:7: key `env`: expected a table of strings, found a string"),
            ("exec = \"/x\\u0000y\"\n", "/u/svc.toml:1:8: key `exec`: contains a NUL byte"),
            ("exec = \"/x\"\nargs = [\"a\\u0000\"]\n", "/u/svc.toml:2:8: key `args`: contains a NUL byte"),
            ("exec = \"/x\"\nport = 70000\n", "/u/svc.toml:2:8: key `port`: must be 0 to 65535, found 70000"),
            ("exec = \"/x\"\nport = \"any\"\n", "/u/svc.toml:2:8: key `port`: expected a port number or \"auto\", found \"any\""),
            ("exec = \"/x\"\nport = 1.5\n", "/u/svc.toml:2:8: key `port`: expected an integer or \"auto\", found a float"),
            ("exec = \"/x\"\nsocket = true\n", "/u/svc.toml:2:10: key `socket`: needs a `port` to listen on (a number, or \"auto\")"),
            ("exec = \"/x\"\nport = 80\nsocket = \"yes\"\n", "/u/svc.toml:3:10: key `socket`: expected true or false, found a string"),
            ("exec = \"/x\"\nport = 80\nsocket = true\nbind = \"localhost\"\n", "/u/svc.toml:4:8: key `bind`: expected an IP address, found \"localhost\""),
            ("exec = \"/x\"\nport = 80\nbind = \"127.0.0.1\"\n", "/u/svc.toml:3:8: key `bind`: only applies with `socket = true` or `port = \"auto\"`"),
            ("exec = \"/opt/api/1.1.0-rc/bin/api\"\nversion = \"1.1.0\"\n", "/u/svc.toml:2:11: key `version`: exec /opt/api/1.1.0-rc/bin/api is not a versioned path: no path component equals version \"1.1.0\""),
            ("exec = \"/opt/api/bin/api-1.1.0\"\nversion = \"1.1.0\"\n", "/u/svc.toml:2:11: key `version`: exec /opt/api/bin/api-1.1.0 is not a versioned path"),
            ("exec = \"/opt/x/../bin\"\nversion = \"..\"\n", "/u/svc.toml:2:11: key `version`: invalid version \"..\""),
            ("exec = \"/x\"\nmd5 = \"abc\"\n", "/u/svc.toml:2:7: key `md5`: expected 32 hex digits for md5, found 3"),
            ("exec = \"/x\"\nmd5 = \"d41d8cd98f00b204e9800998ecf8427e\"\nsha256 = \"x\"\n", "/u/svc.toml:3:10: key `sha256`: set md5 or sha256, not both"),
            ("exec = \"/x\"\nstats_interval_ms = 10\n", "/u/svc.toml:2:21: key `stats_interval_ms`: must be 0 (off) or at least 100, found 10"),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(
                got.starts_with(want),
                "for {text:?}\n got: {got}\nwant: {want}"
            );
        }
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let got = err("exec = \"/bin/true\"\nargs = [\n");
        assert!(got.starts_with("/u/svc.toml:"), "{got}");
        let got = err("exec = \"/bin/true\"\nexec = \"/bin/false\"\n");
        assert!(got.starts_with("/u/svc.toml:2:1:"), "{got}");
        assert!(got.contains("duplicate"), "{got}");
    }

    #[test]
    fn service_names() {
        for ok in ["a", "web-1", "api@2", "x_y.z", &"a".repeat(64)] {
            assert!(valid_service_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "-x", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(!valid_service_name(bad), "{bad}");
        }
        let e = parse_unit("a b", Path::new("/u/a b.toml"), "exec = \"/x\"").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/u/a b.toml: invalid service name \"a b\""),
            "{e}"
        );
    }
}
