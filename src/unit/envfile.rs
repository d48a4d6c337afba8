//! `env_file`: `KEY=VALUE` lines, as systemd's EnvironmentFile and
//! docker's --env-file write them. Pure, so it can be tested and fuzzed
//! alone; the supervisor reads the file.
//!
//! - blank lines and lines starting with `#` are skipped;
//! - an optional `export ` before the name is allowed;
//! - names are `[A-Za-z_][A-Za-z0-9_]*`; spaces around `=` are allowed;
//! - `'single'` quotes keep everything up to the next `'`;
//! - `"double"` quotes take `\"`, `\\`, `\$`, `\n` and `\t` escapes;
//! - an unquoted value is the rest of the line, trimmed;
//! - after a closing quote only spaces or a `# comment` may follow.
//!
//! A value does not continue on the next line: an unclosed quote is an error.

/// A line that is not `KEY=VALUE`: its 1-based number and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct EnvFileError {
    pub line: usize,
    pub reason: String,
}

/// The variables of an env file, in file order (a later line wins when
/// the same name repeats).
pub fn parse_env_file(bytes: &[u8]) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let err = |reason: &str| EnvFileError {
            line,
            reason: reason.to_string(),
        };
        let text = std::str::from_utf8(raw).map_err(|_| err("is not UTF-8"))?;
        let text = text.trim_end_matches('\r').trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let text = text.strip_prefix("export ").map_or(text, str::trim_start);
        let Some((key, value)) = text.split_once('=') else {
            return Err(err("expected KEY=VALUE"));
        };
        let key = key.trim_end();
        let mut chars = key.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(err(&format!(
                "invalid variable name {key:?} (letters, digits and _, not starting with a digit)"
            )));
        }
        let value = parse_value(value.trim_start()).map_err(|r| err(&r))?;
        if value.contains('\0') {
            return Err(err("the value contains a NUL byte"));
        }
        out.retain(|(k, _)| k != key);
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn parse_value(v: &str) -> Result<String, String> {
    let mut chars = v.chars();
    let (value, rest) = match chars.next() {
        Some('\'') => {
            let body = chars.as_str();
            let end = body
                .find('\'')
                .ok_or("unclosed single quote (a value cannot span lines)")?;
            let (inside, after) = body.split_at(end);
            (inside.to_string(), after.get(1..).unwrap_or(""))
        }
        Some('"') => {
            let mut out = String::new();
            let mut closed = None;
            let body = chars.as_str();
            let mut it = body.char_indices();
            while let Some((i, c)) = it.next() {
                match c {
                    '"' => {
                        closed = Some(i + 1);
                        break;
                    }
                    '\\' => match it.next() {
                        Some((_, 'n')) => out.push('\n'),
                        Some((_, 't')) => out.push('\t'),
                        Some((_, e @ ('"' | '\\' | '$' | '`'))) => out.push(e),
                        Some((_, other)) => {
                            out.push('\\');
                            out.push(other);
                        }
                        None => out.push('\\'),
                    },
                    c => out.push(c),
                }
            }
            let end = closed.ok_or("unclosed double quote (a value cannot span lines)")?;
            (out, body.get(end..).unwrap_or(""))
        }
        _ => return Ok(v.trim_end().to_string()),
    };
    let rest = rest.trim_start();
    if !rest.is_empty() && !rest.starts_with('#') {
        return Err(format!("unexpected {rest:?} after the closing quote"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(text: &str) -> Vec<(String, String)> {
        parse_env_file(text.as_bytes()).unwrap()
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn keys_values_quotes_and_comments() {
        let text = "# comment\n\
            \n\
            PLAIN=hello world  \n\
            export EXPORTED = yes\n\
            SINGLE='a \"b\" $c # d'\n\
            DOUBLE=\"x \\\"y\\\" \\\\ \\$z\\n\" # trailing comment\n\
            EMPTY=\n\
            EQUALS=a=b\r\n\
            PLAIN=again\n";
        assert_eq!(
            vars(text),
            [
                pair("EXPORTED", "yes"),
                pair("SINGLE", "a \"b\" $c # d"),
                pair("DOUBLE", "x \"y\" \\ $z\n"),
                pair("EMPTY", ""),
                pair("EQUALS", "a=b"),
                pair("PLAIN", "again"),
            ]
        );
        assert!(vars("").is_empty());
    }

    #[test]
    fn a_bad_line_names_its_number_and_why() {
        for (text, line, reason) in [
            ("A=1\nno equals sign\n", 2, "expected KEY=VALUE"),
            ("A=1\n\n1X=2\n", 3, "invalid variable name \"1X\""),
            ("A-B=2\n", 1, "invalid variable name \"A-B\""),
            ("A='open\nB=1'\n", 1, "unclosed single quote"),
            ("A=\"open\n", 1, "unclosed double quote"),
            ("A='x' y\n", 1, "unexpected \"y\" after the closing quote"),
            ("A=\"x\\0\0\"\n", 1, "NUL byte"),
        ] {
            let e = parse_env_file(text.as_bytes()).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.reason.contains(reason), "{text:?}: {e}");
        }
        let e = parse_env_file(b"A=1\nB=\xff\n").unwrap_err();
        assert_eq!((e.line, e.reason.as_str()), (2, "is not UTF-8"));
    }
}
