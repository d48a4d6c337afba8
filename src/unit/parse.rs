//! Parses one unit file's text into a `Unit` (pure: the caller reads the file).
//!
//! The file is read as a table of spanned TOML values, and each key is read
//! and checked as its entry in `keys.rs` says, so each error names the file,
//! the line and column of the offending value, and the key. Every error in
//! a file is reported at once, in line order: a TOML syntax error stops the
//! parse, but a wrong type, a bad value, an unknown key or a missing `exec`
//! does not stop the others from being found. Unknown keys are errors: a
//! typo such as `restrat` must not silently fall back to a default.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::{Spanned, Value};

use super::creds::Creds;
use super::keys::{self, Bad, KEYS};
use super::Unit;
// The tests below predate keys.rs and name these through `super::*`.
#[cfg(test)]
use super::{RestartPolicy, DEFAULT_RESTART_DELAY_MS, DEFAULT_STOP_TIMEOUT_MS};

/// Longest service name; it travels in logs, events and GPIDs.
pub const MAX_NAME_LEN: usize = 64;
/// Longest name a service runs under: a unit's name or, with `instances`,
/// its name, `@` and the instance's number (`web@1023`).
pub const MAX_SERVICE_NAME_LEN: usize = MAX_NAME_LEN + 1 + 4;
/// Longest `version`; it becomes a path component.
pub const MAX_VERSION_LEN: usize = 64;

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

/// Every error of one unit file, in line order; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UnitErrors(Vec<UnitError>);

impl UnitErrors {
    pub fn as_slice(&self) -> &[UnitError] {
        &self.0
    }
}

impl From<UnitError> for UnitErrors {
    fn from(e: UnitError) -> UnitErrors {
        UnitErrors(vec![e])
    }
}

impl IntoIterator for UnitErrors {
    type Item = UnitError;
    type IntoIter = std::vec::IntoIter<UnitError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// One error per line, as `zurg check` and the log print them.
impl fmt::Display for UnitErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
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
    /// reports without one (syntax errors).
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

/// Whether `name` may name a service: it appears in logs, paths and GPIDs.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-'))
}

/// Parses the text of the unit file at `path` for service `name`; on
/// failure, every error in the file.
pub fn parse_unit(name: &str, path: &Path, text: &str) -> Result<Unit, UnitErrors> {
    parse_unit_resolving(name, path, text, |_| Ok(())).map(|(unit, ())| unit)
}

/// The keys whose names `parse_unit_resolving` has looked up.
const ACCOUNT_KEYS: [&str; 3] = ["user", "group", "supplementary_groups"];

/// `parse_unit`, and `resolve` run on the unit's user and group settings
/// once those keys read cleanly, whatever else is wrong in the file, so
/// that one round reports an unknown user beside the other errors. Its
/// refusals (key, message) are errors placed at their key's value.
pub fn parse_unit_resolving<T>(
    name: &str,
    path: &Path,
    text: &str,
    resolve: impl FnOnce(&Creds) -> Result<T, Vec<(&'static str, String)>>,
) -> Result<(Unit, T), UnitErrors> {
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
        }
        .into());
    }
    let table: BTreeMap<Spanned<String>, Spanned<Value>> = toml::from_str(text).map_err(|e| {
        let span = e.span();
        let key = span.clone().and_then(|s| loc.key_at(s.start));
        loc.error(
            span,
            key.as_deref(),
            e.message().trim_end_matches('.').to_string(),
        )
    })?;

    let mut errors = Vec::new();
    let mut clean: HashSet<&str> = HashSet::new();
    // Defaults first: md5 and sha256 fill one field, and an absent key's
    // default must not overwrite a value read before it.
    let mut unit = keys::blank(name);
    for key in KEYS.iter().filter(|k| !table.contains_key(k.name)) {
        if record(&loc, key, None, (key.read)(&mut unit, None), &mut errors) {
            clean.insert(key.name);
        }
    }
    for (name, v) in &table {
        let Some(key) = keys::find(name.get_ref()) else {
            errors.push(loc.error(
                Some(name.span()),
                Some(name.get_ref()),
                keys::unknown(name.get_ref()),
            ));
            continue;
        };
        if let Some(other) = key.excludes.iter().find(|o| table.contains_key(**o)) {
            errors.push(loc.error(
                Some(v.span()),
                Some(key.name),
                format!("set {other} or {}, not both", key.name),
            ));
            continue;
        }
        let outcome = (key.read)(&mut unit, Some(v.get_ref()));
        if record(&loc, key, Some(v.span()), outcome, &mut errors) {
            clean.insert(key.name);
        }
    }
    for key in KEYS {
        let (Some(v), Some((uses, check))) = (table.get(key.name), key.check) else {
            continue;
        };
        if !clean.contains(key.name) || !uses.iter().all(|u| clean.contains(u)) {
            continue;
        }
        if let Err(msg) = check(&unit) {
            errors.push(loc.error(Some(v.span()), Some(key.name), msg));
        }
    }

    let mut resolved = None;
    if ACCOUNT_KEYS.iter().all(|k| clean.contains(k)) {
        match resolve(&unit.rare.creds) {
            Ok(t) => resolved = Some(t),
            Err(wrong) => errors.extend(wrong.into_iter().map(|(key, msg)| {
                let span = table.get(key).map(|v| v.span());
                loc.error(span, Some(key), msg)
            })),
        }
    }
    if let (true, Some(t)) = (errors.is_empty(), resolved) {
        // Every absent key's default went through `rare`, making its box.
        unit.rare.compact();
        return Ok((unit, t));
    }
    // Stable: errors at one position keep the order they were found in.
    errors.sort_by_key(|e| (e.line, e.col));
    Err(UnitErrors(errors))
}

/// Files a key's refusal as errors at `span` (the file as a whole for an
/// absent key); true when the key read cleanly.
fn record(
    loc: &Locator<'_>,
    key: &keys::Key,
    span: Option<Range<usize>>,
    outcome: Result<(), Bad>,
    errors: &mut Vec<UnitError>,
) -> bool {
    match outcome {
        Ok(()) => true,
        Err(Bad::Missing) => {
            let msg = format!("missing required key `{}`", key.name);
            errors.push(loc.error(span, None, msg));
            false
        }
        Err(Bad::Wrong(msgs)) => {
            errors.extend(
                msgs.into_iter()
                    .map(|m| loc.error(span.clone(), Some(key.name), m)),
            );
            false
        }
    }
}

/// An error about `key`'s value in a file that parsed (a name that did not
/// resolve), placed at that value; at the file when it cannot be found.
pub fn value_error(path: &Path, text: &str, key: &str, msg: String) -> UnitError {
    let loc = Locator { path, text };
    let table: Option<BTreeMap<Spanned<String>, Spanned<Value>>> = toml::from_str(text).ok();
    let span = table.and_then(|t| {
        t.iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| v.span())
    });
    loc.error(span, Some(key), msg)
}

/// Whether `version` may name a build: it becomes a path component.
pub fn version_name(version: &str) -> Result<(), String> {
    if version.is_empty()
        || version.len() > MAX_VERSION_LEN
        || version.contains(['/', '\0'])
        || version == "."
        || version == ".."
    {
        return Err(format!(
            "invalid version {version:?}: 1 to {MAX_VERSION_LEN} characters, no '/'"
        ));
    }
    Ok(())
}

/// The deploy rule for versioned builds: `version` is a sane name and the
/// exec path holds it as one whole component (`/opt/api/1.1.0/bin/api`).
pub fn versioned_path(exec: &Path, version: &str) -> Result<(), String> {
    version_name(version)?;
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

    #[test]
    fn the_longest_instance_name_fits_the_service_name_bound() {
        let last = super::super::MAX_INSTANCES - 1;
        let name = format!("{}@{last}", "a".repeat(MAX_NAME_LEN));
        assert_eq!(name.len(), MAX_SERVICE_NAME_LEN);
    }

    fn parse(text: &str) -> Result<Unit, UnitErrors> {
        parse_unit("svc", Path::new("/u/svc.toml"), text)
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(u) => panic!("expected an error for {text:?}, got {u:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// 10,000 levels of arrays, inline tables or dotted keys stop at the
    /// toml crate's recursion limit with an error at the place, instead
    /// of recursing through PID 1's stack (this test's thread has 2 MiB).
    #[test]
    fn nesting_ten_thousand_deep_is_an_error_not_a_stack_overflow() {
        let n = 10_000;
        for (what, text) in [
            (
                "arrays",
                format!("x = {}{}\n", "[".repeat(n), "]".repeat(n)),
            ),
            (
                "tables",
                format!("x = {}1{}\n", "{a = ".repeat(n), "}".repeat(n)),
            ),
            ("keys", format!("{} = 1\n", vec!["a"; n].join("."))),
            ("headers", format!("[{}]\n", vec!["a"; n].join("."))),
        ] {
            let text = format!("exec = \"/bin/true\"\n{text}");
            let e = err(&text);
            assert!(e.contains("recurs"), "{what}: {e}");
            // The crate gives no position for a key too deep; values get
            // theirs.
            let at = if what == "keys" || what == "headers" {
                "1:1"
            } else {
                "2:"
            };
            assert!(e.starts_with(&format!("/u/svc.toml:{at}")), "{what}: {e}");
        }
    }

    #[test]
    fn minimal_unit_gets_defaults() {
        let u = parse("exec = \"/bin/true\"\n").unwrap();
        assert_eq!(&*u.name, "svc");
        assert_eq!(&*u.exec, Path::new("/bin/true"));
        assert!(u.args.is_empty() && u.rare.env.is_empty() && u.rare.cwd.is_none());
        assert_eq!(u.restart, RestartPolicy::Always);
        assert_eq!(u.stop_signal, 15);
        assert_eq!(u.stop_timeout_ms, DEFAULT_STOP_TIMEOUT_MS);
        assert_eq!(u.rare.restart_delay_ms, DEFAULT_RESTART_DELAY_MS);
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
        assert_eq!(*u.args, ["-c", "echo hi"]);
        assert_eq!(u.rare.env.get("B_2").map(String::as_str), Some("two"));
        assert_eq!(u.rare.cwd, Some(PathBuf::from("/tmp")));
        assert_eq!(u.restart, RestartPolicy::OnFailure);
        assert_eq!(u.stop_signal, 3);
        assert_eq!((u.stop_timeout_ms, u.rare.restart_delay_ms), (2500, 50));
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
            ("exec = \"/x\"\nstop_signal = \"SIGTREM\"\n", "/u/svc.toml:2:15: key `stop_signal`: unknown or unusable signal \"SIGTREM\"; did you mean \"TERM\"?"),
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

    fn all_errors(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(u) => panic!("expected errors for {text:?}, got {u:?}"),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn every_mistake_in_a_file_is_reported_at_once_in_line_order() {
        let text = "\
# no exec
restrat = \"always\"
args = \"-v\"
stop_timeout_ms = -1
";
        assert_eq!(
            all_errors(text),
            [
                "/u/svc.toml:1:1: missing required key `exec`".to_string(),
                format!(
                    "/u/svc.toml:2:1: key `restrat`: {}",
                    keys::unknown("restrat")
                ),
                "/u/svc.toml:3:8: key `args`: expected an array of strings, found a string"
                    .to_string(),
                "/u/svc.toml:4:19: key `stop_timeout_ms`: must not be negative, found -1"
                    .to_string(),
            ]
        );
        // The same mistakes in another order come out in the file's order.
        let text = "\
stop_timeout_ms = -1
exec = \"bin/true\"
zzz = 1
restart = \"sometimes\"
aaa = 2
";
        let got = all_errors(text);
        let at: Vec<&str> = got
            .iter()
            .map(|e| e.split(": ").next().unwrap_or(""))
            .collect();
        assert_eq!(
            at,
            [
                "/u/svc.toml:1:19",
                "/u/svc.toml:2:8",
                "/u/svc.toml:3:1",
                "/u/svc.toml:4:11",
                "/u/svc.toml:5:1"
            ],
            "{got:#?}"
        );
        let shown = parse(text).unwrap_err().to_string();
        assert_eq!(shown, got.join("\n"));
    }

    #[test]
    fn every_bad_item_of_a_value_is_reported() {
        assert_eq!(
            all_errors("exec = \"/x\"\nargs = [1, \"ok\", true]\n"),
            [
                "/u/svc.toml:2:8: key `args`: item 0 must be a string, found an integer",
                "/u/svc.toml:2:8: key `args`: item 2 must be a string, found a boolean",
            ]
        );
        assert_eq!(
            all_errors("exec = \"/x\"\nenv = { \"A=B\" = \"1\", C = 2, D = \"ok\" }\n"),
            [
                "/u/svc.toml:2:7: key `env`: invalid variable name \"A=B\"",
                "/u/svc.toml:2:7: key `env`: value of C must be a string, found an integer",
            ]
        );
    }

    /// A rule between keys stays quiet while a key it depends on is broken:
    /// that key's own error says what to fix.
    #[test]
    fn a_broken_key_does_not_raise_errors_in_the_keys_that_depend_on_it() {
        let cases = [
            (
                "exec = \"/x\"\nport = 70000\nsocket = true\nbind = \"127.0.0.1\"\n",
                vec!["/u/svc.toml:2:8: key `port`: must be 0 to 65535, found 70000"],
            ),
            (
                "exec = \"opt/1.0/x\"\nversion = \"2.0\"\n",
                vec!["/u/svc.toml:1:8: key `exec`: must be an absolute path, found \"opt/1.0/x\""],
            ),
            (
                "version = \"2.0\"\n",
                vec!["/u/svc.toml:1:1: missing required key `exec`"],
            ),
            (
                "exec = \"/x\"\nport = 80\nsocket = 1\nbind = \"::1\"\n",
                vec!["/u/svc.toml:3:10: key `socket`: expected true or false, found an integer"],
            ),
            (
                "exec = \"/x\"\nmd5 = \"abc\"\nsha256 = \"x\"\n",
                vec![
                    "/u/svc.toml:2:7: key `md5`: expected 32 hex digits for md5, found 3",
                    "/u/svc.toml:3:10: key `sha256`: set md5 or sha256, not both",
                ],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(all_errors(text), want, "for {text:?}");
        }
    }

    #[test]
    fn keys_sharing_a_field_keep_the_value_given() {
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let u = parse(&format!("sha256 = \"{sha}\"\nexec = \"/x\"\n")).unwrap();
        assert_eq!(u.rare.checksum.map(|c| c.kind()), Some("sha256"));
        let u = parse("exec = \"/x\"\nmd5 = \"d41d8cd98f00b204e9800998ecf8427e\"\n").unwrap();
        assert_eq!(u.rare.checksum.map(|c| c.kind()), Some("md5"));
        let u = parse("exec = \"/x\"\nport = \"auto\"\nbind = \"::1\"\n").unwrap();
        assert!(u.port_auto && u.rare.bind.is_some() && !u.socket);
    }

    #[test]
    fn an_unknown_key_suggests_the_nearest_one() {
        let got = err("exec = \"/x\"\nstop_timeout = 5\n");
        assert!(
            got.starts_with("/u/svc.toml:2:1: key `stop_timeout`: unknown field `stop_timeout`, expected one of `exec`, `args`,"),
            "{got}"
        );
        assert!(got.ends_with("; did you mean `stop_timeout_ms`?"), "{got}");
    }
}
