//! `zurg check [--units DIR] [--strict] [--json]`: validates unit files
//! offline, for deploy pipelines. Everything `zurg run` would refuse is
//! reported, one line per problem: parse errors, a missing or
//! non-executable `exec`, a `cwd` that is not a directory, a log file
//! (`stdout`/`stderr` `file`) that cannot be opened for writing, the
//! versioned-path rule, and checksums (the binary is hashed). Exit 0 when all is well, 1 otherwise, 2 on usage.

use std::path::PathBuf;

use lexopt::prelude::*;
use serde::Serialize;

use super::{UsageError, DEFAULT_UNITS_DIR};
use crate::unit::{self, Unit};

#[derive(Debug, Serialize)]
struct Problem {
    path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<String>,
    message: String,
}

pub(crate) fn parse(args: &[String]) -> Result<(PathBuf, bool, bool), UsageError> {
    let mut dir = PathBuf::from(DEFAULT_UNITS_DIR);
    let (mut strict, mut json) = (false, false);
    let mut p = lexopt::Parser::from_args(args.iter().skip(1).cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Long("units") | Short('u') => dir = PathBuf::from(p.value()?),
            Long("strict") => strict = true,
            Long("json") => json = true,
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok((dir, strict, json))
}

fn check_unit(u: &Unit, strict: bool) -> Vec<String> {
    let mut out = Vec::new();
    if strict && (u.rare.version.is_none() || u.rare.checksum.is_none()) {
        out.push("strict mode: a unit needs `version` and `md5` or `sha256`".to_string());
    }
    match &u.rare.checksum {
        Some(want) => {
            if let Err(e) = crate::version::open_verified(&u.exec, want, None) {
                out.push(e.to_string());
            }
        }
        None => match std::fs::metadata(&u.exec) {
            Err(e) => out.push(format!("exec {}: {e}", u.exec.display())),
            Ok(m) if !m.is_file() => {
                out.push(format!("exec {} is not a regular file", u.exec.display()))
            }
            Ok(m) if std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 == 0 => {
                out.push(format!("exec {} is not executable", u.exec.display()))
            }
            Ok(_) => {}
        },
    }
    for (key, stream) in [("stdout", &u.rare.stdout), ("stderr", &u.rare.stderr)] {
        if let crate::unit::Output::File(f) = stream {
            if let Some(problem) = crate::supervisor::log_file_problem(&f.path) {
                // `zurg run` would run the service, its lines on zurg's own
                // stream: still not what the unit asks for.
                let of = match u.instance {
                    Some(_) => format!(" (service {})", u.name),
                    None => String::new(),
                };
                out.push(format!(
                    "key `{key}`{of}: cannot open log file {}: {problem}",
                    f.path.display()
                ));
            }
        }
    }
    if let Some(cwd) = &u.rare.cwd {
        if let Some(problem) = cwd_problem(cwd) {
            out.push(problem);
        }
    }
    out
}

/// What `zurg run` would hit changing to `cwd`, checked offline. Relative
/// paths are taken from the current directory, as `zurg run` takes them
/// from the directory it was started in.
fn cwd_problem(cwd: &std::path::Path) -> Option<String> {
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => Some(format!("key `cwd`: {} is not a directory", cwd.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
            "key `cwd`: directory {} does not exist",
            cwd.display()
        )),
        Err(e) => Some(format!("key `cwd`: {}: {e}", cwd.display())),
    }
}

/// Runs `zurg check ...` (args[0] is "check"); returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let (dir, strict, json) = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("zurg: {e}\n{}", super::render::help_for("check"));
            return 2;
        }
    };
    let report = unit::load_dir(&dir);
    let mut problems: Vec<Problem> = report
        .errors
        .iter()
        .map(|e| Problem {
            path: e.path.clone(),
            service: None,
            message: e.to_string(),
        })
        .collect();
    let mut said = std::collections::HashSet::new();
    for u in &report.units {
        // An instance (`web@2`) comes from `web.toml`, and its siblings share
        // its exec: one line per file and problem, not one per instance.
        let path = dir.join(format!("{}.toml", unit::load::file_stem(u)));
        for message in check_unit(u, strict) {
            let message = format!("{}: {message}", path.display());
            if !said.insert(message.clone()) {
                continue;
            }
            problems.push(Problem {
                path: path.clone(),
                service: Some(u.name.to_string()),
                message,
            });
        }
    }
    // A unit with `instances = N` is one file and N services.
    let files = report
        .units
        .iter()
        .map(unit::load::file_stem)
        .collect::<std::collections::HashSet<_>>()
        .len();
    let services = report.units.len();
    if json {
        let doc = serde_json::json!({ "ok": problems.is_empty(), "units": files, "services": services, "problems": problems });
        // A file name is anyone's text: with an ESC or a bidi override in
        // it, shown raw it would act on the terminal.
        println!("{}", crate::safe_text::json(&doc.to_string()));
    } else {
        for p in &problems {
            println!("{}", crate::safe_text::escaped(&p.message));
        }
        if problems.is_empty() {
            let instances = if services == files {
                String::new()
            } else {
                format!(" ({services} services)")
            };
            let dir = dir.display().to_string();
            let dir = crate::safe_text::escaped(&dir);
            println!("{files} unit(s){instances} in {dir} are fine");
        }
    }
    i32::from(!problems.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cwd_must_be_an_existing_directory() {
        assert_eq!(cwd_problem(std::path::Path::new("/")), None);
        assert_eq!(
            cwd_problem(std::path::Path::new("/nonexistent-zurg-dir")).as_deref(),
            Some("key `cwd`: directory /nonexistent-zurg-dir does not exist")
        );
        assert_eq!(
            cwd_problem(std::path::Path::new("/proc/self/status")).as_deref(),
            Some("key `cwd`: /proc/self/status is not a directory")
        );
    }
}
