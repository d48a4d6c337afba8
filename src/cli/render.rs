//! Help text, shell completions (bash, zsh, fish) and the man page, all
//! rendered from `cli::spec` so that they say the same thing. Pure.

use std::fmt::Write as _;

use super::spec::{Opt, VerbSpec, SHELLS, SHIM, VERBS};

const DUR_NOTE: &str =
    "DUR is a number with a unit (500ms, 5s, 2m, 1h); a bare number means seconds.";

fn opt_label(o: &Opt) -> String {
    let mut s = match o.short {
        Some(c) => format!("-{c}, --{}", o.long),
        None => format!("    --{}", o.long),
    };
    if let Some(v) = o.value {
        s.push(' ');
        s.push_str(v);
    }
    s
}

fn opt_help(o: &Opt) -> String {
    match o.default {
        Some(d) => format!("{} (default: {d})", o.help),
        None => o.help.to_string(),
    }
}

fn synopsis(v: &VerbSpec) -> String {
    let mut s = String::from("zurg");
    if v.name.is_empty() {
        if !v.opts.is_empty() {
            s.push_str(" [OPTIONS]");
        }
    } else {
        s.push(' ');
        s.push_str(v.name);
    }
    if !v.args.is_empty() {
        s.push(' ');
        s.push_str(v.args);
    }
    if !v.name.is_empty() && !v.opts.is_empty() {
        s.push_str(" [OPTIONS]");
    }
    s
}

/// `zurg help` and `zurg --help`: every verb, one line each.
pub fn usage() -> String {
    let mut out = String::new();
    let _ = writeln!(out, "usage: {}", synopsis(&SHIM));
    let _ = writeln!(out, "       zurg VERB [ARGS] [OPTIONS]");
    let _ = writeln!(out);
    let _ = writeln!(out, "  {}", SHIM.summary);
    let _ = writeln!(out);
    let _ = writeln!(out, "verbs:");
    let width = VERBS.iter().map(|v| v.name.len()).max().unwrap_or(0);
    for v in VERBS {
        let _ = writeln!(out, "  {:<width$}  {}", v.name, v.summary);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "`zurg help VERB` or `zurg VERB --help` shows a verb's arguments and options;"
    );
    let _ = writeln!(
        out,
        "`zurg help shim` shows the options of `zurg [OPTIONS] -- CMD`; `zurg --version` the version."
    );
    let _ = writeln!(out, "{DUR_NOTE}");
    out
}

/// What a usage error of `word` (a verb's name) shows after the error:
/// that verb's help, or the general usage when `word` is no verb.
pub fn help_for(word: &str) -> String {
    super::spec::verb(word).map_or_else(usage, verb_help)
}

/// One verb's help: synopsis, summary, every option with its default.
pub fn verb_help(v: &VerbSpec) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "usage: {}", synopsis(v));
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", v.summary);
    let _ = writeln!(out);
    let _ = writeln!(out, "options:");
    let labels: Vec<String> = v.opts.iter().map(opt_label).collect();
    let width = labels
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max("-h, --help".len());
    for (o, label) in v.opts.iter().zip(&labels) {
        let _ = writeln!(out, "  {label:<width$}  {}", opt_help(o));
    }
    let _ = writeln!(out, "  {:<width$}  print this help", "-h, --help");
    if v.opts.iter().any(|o| o.value == Some("DUR")) {
        let _ = writeln!(out);
        let _ = writeln!(out, "{DUR_NOTE}");
    }
    out
}

fn longs(v: &VerbSpec) -> String {
    let mut words: Vec<String> = v.opts.iter().map(|o| format!("--{}", o.long)).collect();
    words.push("--help".into());
    words.join(" ")
}

fn valued_longs(v: &VerbSpec) -> Vec<String> {
    v.opts
        .iter()
        .filter(|o| o.value.is_some())
        .map(|o| format!("--{}", o.long))
        .collect()
}

/// A bash completion script: `source <(zurg completions bash)`.
pub fn bash() -> String {
    let verbs: Vec<&str> = VERBS.iter().map(|v| v.name).collect();
    let mut out = String::new();
    let _ = writeln!(out, "# bash completion for zurg (zurg completions bash)");
    let _ = writeln!(out, "_zurg() {{");
    let _ = writeln!(out, "    local cur prev verb opts valued");
    let _ = writeln!(out, "    cur=\"${{COMP_WORDS[COMP_CWORD]}}\"");
    let _ = writeln!(out, "    prev=\"${{COMP_WORDS[COMP_CWORD-1]}}\"");
    let _ = writeln!(out, "    verb=\"${{COMP_WORDS[1]}}\"");
    let _ = writeln!(out, "    if [ \"$COMP_CWORD\" -eq 1 ]; then");
    let _ = writeln!(
        out,
        "        COMPREPLY=($(compgen -W \"{} {}\" -- \"$cur\"))",
        verbs.join(" "),
        longs(&SHIM)
    );
    let _ = writeln!(out, "        return");
    let _ = writeln!(out, "    fi");
    let _ = writeln!(out, "    case \"$verb\" in");
    for v in VERBS {
        let _ = writeln!(out, "        {})", v.name);
        let _ = writeln!(out, "            opts=\"{}\"", longs(v));
        let _ = writeln!(out, "            valued=\"{}\"", valued_longs(v).join(" "));
        match v.name {
            "help" => {
                let _ = writeln!(out, "            opts=\"{}\"", verbs.join(" "));
            }
            "completions" => {
                let _ = writeln!(out, "            opts=\"{}\"", SHELLS.join(" "));
            }
            _ => {}
        }
        let _ = writeln!(out, "            ;;");
    }
    let _ = writeln!(out, "        *)");
    let _ = writeln!(out, "            COMPREPLY=($(compgen -c -- \"$cur\"))");
    let _ = writeln!(out, "            return");
    let _ = writeln!(out, "            ;;");
    let _ = writeln!(out, "    esac");
    let _ = writeln!(out, "    case \" $valued \" in");
    let _ = writeln!(out, "        *\" $prev \"*)");
    let _ = writeln!(out, "            COMPREPLY=($(compgen -f -- \"$cur\"))");
    let _ = writeln!(out, "            return");
    let _ = writeln!(out, "            ;;");
    let _ = writeln!(out, "    esac");
    let _ = writeln!(out, "    COMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))");
    let _ = writeln!(out, "}}");
    let _ = writeln!(out, "complete -F _zurg zurg");
    out
}

/// Quotes text for a single-quoted shell word (zsh and fish alike).
fn sq(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Text inside a zsh `_arguments` spec's brackets.
fn zsh_desc(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('[', "\\[")
        .replace(']', "\\]")
        .replace(':', "\\:")
}

/// A zsh completion script (`zurg completions zsh > "${fpath[1]}/_zurg"`).
pub fn zsh() -> String {
    let mut out = String::new();
    let _ = writeln!(out, "#compdef zurg");
    let _ = writeln!(out, "# zsh completion for zurg (zurg completions zsh)");
    let _ = writeln!(out, "_zurg() {{");
    let _ = writeln!(out, "  local -a verbs");
    let _ = writeln!(out, "  verbs=(");
    for v in VERBS {
        let _ = writeln!(
            out,
            "    {}",
            sq(&format!("{}:{}", v.name, zsh_desc(v.summary)))
        );
    }
    let _ = writeln!(out, "  )");
    let _ = writeln!(out, "  if (( CURRENT == 2 )); then");
    let _ = writeln!(out, "    _describe -t verbs 'zurg verb' verbs");
    let _ = writeln!(out, "    _command_names -e");
    let _ = writeln!(out, "    return");
    let _ = writeln!(out, "  fi");
    let _ = writeln!(out, "  case ${{words[2]}} in");
    for v in VERBS {
        let _ = writeln!(out, "    {})", v.name);
        let _ = write!(out, "      _arguments");
        for o in v.opts {
            let desc = zsh_desc(o.help);
            let value = o
                .value
                .map(|val| format!(":{}:_files", zsh_desc(val)))
                .unwrap_or_default();
            let spec = match o.short {
                Some(c) => format!("(-{c} --{l})'{{-{c},--{l}}}'[{desc}]{value}", l = o.long),
                None => format!("--{}[{desc}]{value}", o.long),
            };
            let _ = write!(out, " \\\n        {}", zsh_quote_spec(&spec));
        }
        let _ = write!(
            out,
            " \\\n        '(-h --help)'{{-h,--help}}'[print this help]'"
        );
        match v.name {
            "help" => {
                let names: Vec<&str> = VERBS.iter().map(|v| v.name).collect();
                let _ = write!(out, " \\\n        '1:verb:({})'", names.join(" "));
            }
            "completions" => {
                let _ = write!(out, " \\\n        '1:shell:({})'", SHELLS.join(" "));
            }
            _ => {
                let _ = write!(out, " \\\n        '*:argument:'");
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "      ;;");
    }
    let _ = writeln!(out, "    *)");
    let _ = writeln!(out, "      _normal");
    let _ = writeln!(out, "      ;;");
    let _ = writeln!(out, "  esac");
    let _ = writeln!(out, "}}");
    let _ = writeln!(out, "_zurg \"$@\"");
    out
}

/// A spec built with `'{-x,--xx}'` brace parts keeps those parts unquoted
/// and single-quotes the rest.
fn zsh_quote_spec(spec: &str) -> String {
    // The brace expansion part is already written with its own quotes;
    // quote the remaining segments.
    if let Some((head, tail)) = spec.split_once("'{") {
        if let Some((braces, rest)) = tail.split_once("}'") {
            return format!("{}{{{braces}}}{}", sq(head), sq(rest));
        }
    }
    sq(spec)
}

/// A fish completion script (`zurg completions fish | source`).
pub fn fish() -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# fish completion for zurg (zurg completions fish)");
    let names: Vec<&str> = VERBS.iter().map(|v| v.name).collect();
    let _ = writeln!(out, "complete -c zurg -f");
    for v in VERBS {
        let _ = writeln!(
            out,
            "complete -c zurg -n __fish_use_subcommand -a {} -d {}",
            v.name,
            sq(v.summary)
        );
    }
    for o in SHIM.opts {
        let _ = writeln!(out, "{}", fish_opt("__fish_use_subcommand", o));
    }
    for v in VERBS {
        let cond = format!("'__fish_seen_subcommand_from {}'", v.name);
        for o in v.opts {
            let _ = writeln!(out, "{}", fish_opt(&cond, o));
        }
        let _ = writeln!(
            out,
            "complete -c zurg -n {cond} -s h -l help -d 'print this help'"
        );
        match v.name {
            "help" => {
                let _ = writeln!(
                    out,
                    "complete -c zurg -n {cond} -a {}",
                    sq(&names.join(" "))
                );
            }
            "completions" => {
                let _ = writeln!(
                    out,
                    "complete -c zurg -n {cond} -a {}",
                    sq(&SHELLS.join(" "))
                );
            }
            _ => {}
        }
    }
    out
}

fn fish_opt(cond: &str, o: &Opt) -> String {
    let mut s = format!("complete -c zurg -n {cond}");
    if let Some(c) = o.short {
        let _ = write!(s, " -s {c}");
    }
    let _ = write!(s, " -l {}", o.long);
    if o.value.is_some() {
        s.push_str(" -r -F");
    }
    let _ = write!(s, " -d {}", sq(o.help));
    s
}

/// Escapes text for roff: backslashes, and a leading dot or quote.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

fn man_opts(out: &mut String, opts: &[Opt]) {
    for o in opts {
        let _ = writeln!(out, ".TP");
        let mut head = String::new();
        if let Some(c) = o.short {
            let _ = write!(head, "\\fB\\-{c}\\fR, ");
        }
        let _ = write!(head, "\\fB\\-\\-{}\\fR", roff(o.long));
        if let Some(v) = o.value {
            let _ = write!(head, " \\fI{}\\fR", roff(v));
        }
        let _ = writeln!(out, "{head}");
        let _ = writeln!(out, "{}", roff(&opt_help(o)));
    }
}

/// The manual page, zurg(8), in roff.
pub fn man() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        ".TH ZURG 8 \"\" \"zurg {}\" \"System Administration\"",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(out, ".SH NAME");
    let _ = writeln!(out, "zurg \\- init and process supervisor");
    let _ = writeln!(out, ".SH SYNOPSIS");
    let _ = writeln!(out, "{}", roff(&synopsis(&SHIM)));
    for v in VERBS {
        let _ = writeln!(out, ".br");
        let _ = writeln!(out, "{}", roff(&synopsis(v)));
    }
    let _ = writeln!(out, ".SH DESCRIPTION");
    let _ = writeln!(
        out,
        "zurg runs as PID 1 of a container or a machine. Without a verb it is a \
         child init for one command, like tini; with \\fBrun\\fR it supervises the \
         services of a units directory and answers the other verbs over its \
         control socket."
    );
    let _ = writeln!(out, ".SH OPTIONS");
    let _ = writeln!(out, "{}", roff(SHIM.summary));
    man_opts(&mut out, SHIM.opts);
    let _ = writeln!(out, ".SH COMMANDS");
    for v in VERBS {
        let _ = writeln!(out, ".SS {}", roff(&synopsis(v)));
        let _ = writeln!(out, "{}", roff(v.summary));
        man_opts(&mut out, v.opts);
    }
    let _ = writeln!(out, ".SH \"EXIT STATUS\"");
    let _ = writeln!(
        out,
        "Without a verb: the command's code, 128+N when signal N killed it, 126 \
         or 127 when it could not be executed or found. \\fBrun\\fR: 0 after an \
         orderly shutdown, or the code of an essential service that ended. \
         Verbs: 0 success, 1 failure (\\fBstatus\\fR: a service is failed or \
         restarting after a failure; \\fBwait\\fR: a service cannot get there), \
         2 usage error, 3 no zurg answers on the control socket, 124 \
         \\fBwait\\fR timed out."
    );
    let _ = writeln!(out, ".SH ENVIRONMENT");
    let _ = writeln!(out, ".TP");
    let _ = writeln!(out, "\\fBZURG_SOCKET\\fR");
    let _ = writeln!(
        out,
        "the control socket, when \\fB\\-\\-socket\\fR is not given"
    );
    let _ = writeln!(out, ".TP");
    let _ = writeln!(out, "\\fBZURG_PUBLISHER\\fR");
    let _ = writeln!(out, "the publisher for \\fBresolve\\fR");
    let _ = writeln!(out, ".SH NOTES");
    let _ = writeln!(out, "{}", roff(DUR_NOTE));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_lists_every_verb_on_one_line() {
        let u = usage();
        for v in VERBS {
            assert_eq!(
                u.lines()
                    .skip_while(|l| *l != "verbs:")
                    .filter(|l| l.trim_start().starts_with(&format!("{} ", v.name)))
                    .count(),
                1,
                "{}:\n{u}",
                v.name
            );
        }
    }

    #[test]
    fn verb_help_shows_every_option_and_default() {
        for v in VERBS.iter().chain([&SHIM]) {
            let h = verb_help(v);
            for o in v.opts {
                let line = h
                    .lines()
                    .find(|l| {
                        l.contains(&format!("--{} ", o.long))
                            || l.ends_with(&format!("--{}", o.long))
                            || l.contains(&format!("--{}  ", o.long))
                    })
                    .unwrap_or_else(|| panic!("{} --{} missing:\n{h}", v.name, o.long));
                if let Some(d) = o.default {
                    assert!(line.contains(d), "{line}");
                }
            }
        }
    }

    #[test]
    fn man_page_is_well_formed_roff() {
        let m = man();
        assert!(m.starts_with(".TH ZURG 8 "));
        for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH COMMANDS"] {
            assert!(m.contains(section), "{section}");
        }
        for line in m.lines() {
            // a text line starting with a dot or quote would be a request
            if !line.starts_with('.') {
                assert!(!line.starts_with('\''), "{line}");
            } else {
                let req = line.split_whitespace().next().unwrap_or("");
                assert!(
                    [".TH", ".SH", ".SS", ".TP", ".br"].contains(&req),
                    "unknown request {line}"
                );
            }
            // every font change is closed on its line
            assert_eq!(
                line.matches("\\fB").count() + line.matches("\\fI").count(),
                line.matches("\\fR").count(),
                "{line}"
            );
        }
        for v in VERBS {
            assert!(m.contains(&format!(".SS zurg {}", v.name)), "{}", v.name);
            for o in v.opts {
                assert!(m.contains(&format!("\\-\\-{}", roff(o.long))), "{}", o.long);
            }
        }
    }

    #[test]
    fn completions_offer_every_verb_and_option() {
        for script in [bash(), zsh(), fish()] {
            for v in VERBS {
                assert!(script.contains(v.name), "{}", v.name);
                for o in v.opts {
                    assert!(script.contains(o.long), "{} --{}", v.name, o.long);
                }
            }
        }
    }
}
