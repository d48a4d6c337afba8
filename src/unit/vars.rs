//! `${NAME}` in `args`, `env` values and `cwd`: `${SERVICE}`, `${VERSION}`,
//! `${PORT}` and `${INSTANCE}` (only with `instances`, replaced at load);
//! in a log file's path `${SERVICE}` and `${INSTANCE}` alone (`LOG_PATH`),
//! both replaced at load. An unknown name is an error at load (a typo must not
//! reach the program as text); `$${` writes a literal `${`. A bare `$` is
//! left alone, so shell snippets such as `$PORT` or `$$` keep their meaning.
//! Pure: the supervisor supplies the values.

/// The names zurg substitutes.
pub const KNOWN: [&str; 4] = ["SERVICE", "VERSION", "PORT", "INSTANCE"];
/// The names a log file's path may use: known at load, for the file is
/// opened then (a `${PORT}` of each start would move it at each start).
pub const LOG_PATH: [&str; 2] = ["SERVICE", "INSTANCE"];

/// One piece of a text: literal text or a variable.
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits `text` into literal text and `${NAME}`s; `$${` is a literal `${`.
fn pieces(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        if at > 0 && rest.get(at - 1..at) == Some("$") {
            // `$${`: the text up to the first `$`, then a literal `${`.
            out.push(Piece::Text(rest.get(..at - 1).unwrap_or("")));
            out.push(Piece::Text("${"));
            rest = rest.get(at + 2..).unwrap_or("");
            continue;
        }
        out.push(Piece::Text(rest.get(..at).unwrap_or("")));
        let after = rest.get(at + 2..).unwrap_or("");
        let end = after.find('}').ok_or_else(|| {
            "has `${` without a closing `}` (write `$${` for a literal `${`)".to_string()
        })?;
        out.push(Piece::Var(after.get(..end).unwrap_or("")));
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

/// Every problem with the variables in `text`: unknown names, an unclosed `${`.
pub fn check(text: &str) -> Result<(), String> {
    check_known(text, &KNOWN)
}

/// `check` with `known` the names that may be used.
pub fn check_known(text: &str, known: &[&str]) -> Result<(), String> {
    let mut unknown = Vec::new();
    for p in pieces(text)? {
        if let Piece::Var(name) = p {
            if !known.contains(&name) && !unknown.contains(&name) {
                unknown.push(name);
            }
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = unknown.iter().map(|n| format!("${{{n}}}")).collect();
    let known: Vec<String> = known.iter().map(|n| format!("${{{n}}}")).collect();
    Err(format!(
        "unknown variable {} (zurg knows {}; write $${{ for a literal ${{)",
        names.join(", "),
        known.join(", ")
    ))
}

/// Whether `text` uses `${name}`.
pub fn uses(text: &str, name: &str) -> bool {
    // Asked at each start: most texts have no variable at all.
    text.contains("${")
        && pieces(text).is_ok_and(|ps| ps.iter().any(|p| matches!(p, Piece::Var(n) if *n == name)))
}

/// `text` with each `${NAME}` that `value` knows replaced; the others stay
/// as they are, to be replaced later (`${PORT}` is known per start).
pub fn expand(text: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let Ok(ps) = pieces(text) else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len());
    for p in ps {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(name) => match value(name) {
                Some(v) => out.push_str(&v),
                None => {
                    out.push_str("${");
                    out.push_str(name);
                    out.push('}');
                }
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(name: &str) -> Option<String> {
        match name {
            "SERVICE" => Some("web".into()),
            "PORT" => Some("8080".into()),
            _ => None,
        }
    }

    #[test]
    fn known_names_are_replaced_and_others_kept() {
        assert_eq!(
            expand("--name=${SERVICE}:${PORT}", values),
            "--name=web:8080"
        );
        assert_eq!(expand("${VERSION}/x", values), "${VERSION}/x");
        assert_eq!(expand("$PORT $$ $${PORT} $", values), "$PORT $$ ${PORT} $");
        assert_eq!(expand("", values), "");
        assert!(uses("a${PORT}", "PORT"));
        assert!(!uses("a$${PORT}", "PORT"));
    }

    #[test]
    fn a_log_path_knows_service_and_instance_only() {
        assert!(check_known("/var/log/${SERVICE}-${INSTANCE}.log", &LOG_PATH).is_ok());
        let e = check_known("/var/log/${PORT}.log", &LOG_PATH).unwrap_err();
        assert!(
            e.starts_with("unknown variable ${PORT} (zurg knows ${SERVICE}, ${INSTANCE};"),
            "{e}"
        );
    }

    #[test]
    fn unknown_and_unclosed_names_are_errors() {
        assert!(check("${SERVICE}-${VERSION}-${PORT} $HOME $$").is_ok());
        assert!(check("$${HOME}").is_ok());
        let e = check("${INSTANCE} ${HOME} ${HOME}").unwrap_err();
        assert!(
            e.starts_with("unknown variable ${HOME} (zurg knows ${SERVICE}"),
            "{e}"
        );
        let e = check("${PORT").unwrap_err();
        assert!(e.contains("without a closing `}`"), "{e}");
    }
}
