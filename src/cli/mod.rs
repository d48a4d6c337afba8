//! argv → `Cmd` (pure: no I/O, no process state). Help text lives here too.
//!
//! Faces: `zurg [opts] -- CMD` (shim), `zurg run ...` (supervisor), and
//! client verbs handed on whole to `cli::client`. As with dumb-init, `zurg
//! CMD ARGS` without `--` runs CMD too, unless CMD is one of zurg's verbs.

pub mod check;
pub mod client;
pub mod nspid;
pub mod remote;
pub mod render;
pub mod spec;

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;

pub const DEFAULT_SOCKET: &str = "/run/zurg/control.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/zurg";
/// Units directory when zurg is PID 1 and given no arguments.
pub const DEFAULT_UNITS_DIR: &str = "/etc/zurg/units";
pub const DEFAULT_GRACE_MS: u64 = 5_000;
/// Unacknowledged publish events kept in memory.
pub const DEFAULT_PUBLISH_QUEUE: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimOptions {
    pub argv: Vec<OsString>,
    /// Put the child in its own process group and forward signals to the group.
    pub pgroup: bool,
    /// `-c`/`--single-child`: signals go to CMD alone, whatever
    /// `TINI_KILL_PROCESS_GROUP` says (dumb-init's -c).
    pub single_child: bool,
    /// `--rewrite FROM:TO`: what a received signal is forwarded as.
    pub rewrite: Vec<(i32, RewriteTo)>,
    /// Time remaining descendants get between SIGTERM and SIGKILL.
    pub grace_ms: u64,
    pub verbose: bool,
    /// CMD was the first argument, with no option or `--` before it
    /// (dumb-init style), so it may be a mistyped verb.
    pub bare_word: bool,
    /// `--log-timestamps` / `--no-log-timestamps`; `None`: decide by stderr.
    pub log_timestamps: Option<bool>,
    /// `-e`/`--remap-exit`: CMD's exit codes (128+N for a signal) that
    /// zurg reports as 0 (tini's -e).
    pub remap_exit: Vec<u8>,
    /// `-p`/`--parent-death-signal`: the signal zurg gets when its parent
    /// dies (PR_SET_PDEATHSIG), forwarded like any other (tini's -p).
    pub parent_death_signal: Option<i32>,
    /// `-w`/`--warn-reap`: log each process reaped that is not CMD.
    pub warn_reap: bool,
}

/// What `--rewrite FROM:TO` forwards FROM as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteTo {
    Signal(i32),
    /// TO is 0: FROM is not forwarded at all (dumb-init's convention).
    Drop,
}

/// Set (to anything) in zurg's environment, signals go to CMD's process
/// group, as with tini's environment variable of the same name.
pub const TINI_KILL_PROCESS_GROUP: &str = "TINI_KILL_PROCESS_GROUP";

/// Applies the environment variables the shim honours for tini's sake to
/// options parsed from argv; `var` looks one up (std::env::var_os).
pub fn shim_environment(opts: &mut ShimOptions, var: impl Fn(&str) -> Option<OsString>) {
    if var(TINI_KILL_PROCESS_GROUP).is_some() && !opts.single_child {
        opts.pgroup = true;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    pub units_dir: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Time orphans get between SIGTERM and SIGKILL at shutdown.
    pub grace_ms: u64,
    /// Group (name or number) whose members may read status and events.
    pub readers: Option<String>,
    /// Address in GPIDs; default: the default route's interface address.
    pub host_ip: Option<std::net::IpAddr>,
    /// Refuse units without a version and a checksum.
    pub strict: bool,
    /// Publisher addresses (HOST:PORT) to push lifecycle events to; more
    /// than one means fail-over in turn.
    pub publish: Vec<String>,
    /// Shared secret for the publisher's challenge.
    pub publish_token_file: Option<PathBuf>,
    /// Unacknowledged events kept in memory (older ones are read back from
    /// the journal).
    pub publish_queue: usize,
    /// `--publish-control`: verbs operators may run here through the
    /// publisher; none by default.
    pub publish_control: Vec<crate::control::proto::RemoteVerb>,
    /// `--journal-size`: bytes per journal file before it rotates.
    pub journal_size: u64,
    /// `--log-timestamps` / `--no-log-timestamps`; `None`: decide by stderr.
    pub log_timestamps: Option<bool>,
    /// `--cgroup PATH`: the cgroup2 subtree to manage instead of zurg's own.
    pub cgroup: Option<PathBuf>,
}

impl RunOptions {
    /// What zurg runs with as PID 1 given no arguments.
    pub fn pid1_defaults() -> RunOptions {
        RunOptions {
            units_dir: DEFAULT_UNITS_DIR.into(),
            socket: DEFAULT_SOCKET.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            grace_ms: DEFAULT_GRACE_MS,
            readers: None,
            host_ip: None,
            strict: false,
            publish: Vec::new(),
            publish_token_file: None,
            publish_queue: DEFAULT_PUBLISH_QUEUE,
            publish_control: Vec::new(),
            journal_size: crate::journal::DEFAULT_LIMIT,
            log_timestamps: None,
            cgroup: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Shim(ShimOptions),
    Run(RunOptions),
    /// A verb parsed by the code its face names (`cli::client`,
    /// `cli::check`, `publish::*`), with argv from the verb on.
    Verb(spec::Face, Vec<String>),
    /// Text for stdout, then exit 0: help, completions, the man page.
    Print(String),
    Version,
}

/// A command line that cannot be understood (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl From<lexopt::Error> for UsageError {
    fn from(e: lexopt::Error) -> Self {
        UsageError(e.to_string())
    }
}

/// Parses "500ms", "5s", "2m", "1h" or a bare number of seconds into ms.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = (t.get(..split)?, t.get(split..)?);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// RFC 3339 UTC with milliseconds, from microseconds since the epoch.
pub fn utc_timestamp(us: u64) -> String {
    let secs = us / 1_000_000;
    let ms = (us / 1000) % 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// `FROM:TO`, each a signal name or number, TO 0 to drop FROM. FROM must
/// be a signal zurg can receive and forwards; each FROM once.
fn parse_rewrite(text: &str, earlier: &[(i32, RewriteTo)]) -> Result<(i32, RewriteTo), UsageError> {
    let fail = |why: String| UsageError(format!("--rewrite {text:?}: {why}"));
    let (from, to) = text
        .split_once(':')
        .ok_or_else(|| fail("expected FROM:TO, e.g. TERM:QUIT, or TERM:0 to drop TERM".into()))?;
    let from_n =
        crate::sig::parse(from).ok_or_else(|| fail(format!("{from:?} is not a signal")))?;
    if matches!(from_n, libc::SIGKILL | libc::SIGSTOP | libc::SIGCHLD) {
        return Err(fail(format!(
            "zurg never forwards {} (KILL and STOP cannot be caught, CHLD is zurg's own)",
            crate::sig::name(from_n)
        )));
    }
    if earlier.iter().any(|(f, _)| *f == from_n) {
        return Err(fail(format!(
            "{} is rewritten twice",
            crate::sig::name(from_n)
        )));
    }
    let to_n = if to.trim() == "0" {
        RewriteTo::Drop
    } else {
        RewriteTo::Signal(
            crate::sig::parse(to).ok_or_else(|| fail(format!("{to:?} is not a signal")))?,
        )
    };
    Ok((from_n, to_n))
}

fn exit_code_arg(value: OsString) -> Result<u8, UsageError> {
    let s = value.string()?;
    s.trim().parse().map_err(|_| {
        UsageError(format!(
            "-e/--remap-exit {s:?}: expected an exit code from 0 to 255"
        ))
    })
}

fn signal_arg(flag: &str, value: OsString) -> Result<i32, UsageError> {
    let s = value.string()?;
    crate::sig::parse(&s).ok_or_else(|| {
        UsageError(format!(
            "{flag} {s:?}: not a signal (a name like TERM or SIGKILL, or a number from 1 to 64)"
        ))
    })
}

fn duration_arg(flag: &str, value: OsString) -> Result<u64, UsageError> {
    let s = value.string()?;
    parse_duration_ms(&s).ok_or_else(|| {
        UsageError(format!(
            "{flag} {s:?}: expected a duration like 500ms, 5s or 2m"
        ))
    })
}

/// Parses argv (without argv[0]). `is_pid1` selects the no-argument default.
pub fn parse(args: Vec<OsString>, is_pid1: bool) -> Result<Cmd, UsageError> {
    if args.is_empty() {
        if is_pid1 {
            return Ok(Cmd::Run(RunOptions::pid1_defaults()));
        }
        return Err(UsageError("no command given".into()));
    }
    let args = remote::hoist_options(args)?;
    let Some(verb) = args.first().and_then(|a| a.to_str()).and_then(spec::verb) else {
        return parse_shim(args);
    };
    let mut words = Vec::with_capacity(args.len());
    for a in args {
        words.push(
            a.into_string()
                .map_err(|a| UsageError(format!("argument {a:?} is not UTF-8")))?,
        );
    }
    let rest = words.get(1..).unwrap_or_default();
    // Every verb takes -h/--help; options after a `--` are someone else's.
    if rest
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "-h" || a == "--help")
    {
        return Ok(Cmd::Print(render::verb_help(verb)));
    }
    if matches!(
        verb.face,
        spec::Face::Help | spec::Face::Completions | spec::Face::Man
    ) {
        if let Some(opt) = rest.iter().find(|a| a.starts_with('-')) {
            return Err(UsageError(format!("invalid option '{opt}'")));
        }
    }
    match verb.face {
        spec::Face::Run => parse_run(words.into_iter().skip(1).map(OsString::from).collect()),
        spec::Face::Help => match rest {
            [] => Ok(Cmd::Print(render::usage())),
            [topic] if topic == "shim" => Ok(Cmd::Print(render::verb_help(&spec::SHIM))),
            [topic] => match spec::verb(topic) {
                Some(v) => Ok(Cmd::Print(render::verb_help(v))),
                // Not "nor a program on PATH": help never runs a program.
                None => Err(UsageError(format!(
                    "help: `{topic}` is not a zurg verb; {}`zurg help` lists the verbs, `zurg help shim` the options of `zurg -- CMD`",
                    spec::nearest_verb(topic)
                        .map(|v| format!("did you mean `zurg help {v}`? "))
                        .unwrap_or_default()
                ))),
            },
            _ => Err(UsageError("help: at most one VERB".into())),
        },
        spec::Face::Completions => match rest {
            [shell] if shell == "bash" => Ok(Cmd::Print(render::bash())),
            [shell] if shell == "zsh" => Ok(Cmd::Print(render::zsh())),
            [shell] if shell == "fish" => Ok(Cmd::Print(render::fish())),
            _ => Err(UsageError(format!(
                "completions: name one shell: {}",
                spec::SHELLS.join(", ")
            ))),
        },
        spec::Face::Man => match rest {
            [] => Ok(Cmd::Print(render::man())),
            _ => Err(UsageError("man takes no arguments".into())),
        },
        face => Ok(Cmd::Verb(face, words)),
    }
}

/// The usage error for a word that is neither a verb nor a program.
pub fn unknown_verb(word: &str) -> UsageError {
    let hint = match spec::nearest_verb(word) {
        Some(v) => format!("did you mean `zurg {v}`? "),
        None => String::new(),
    };
    UsageError(format!(
        "`{word}` is neither a zurg verb nor a program on PATH; {hint}`zurg help` lists the verbs"
    ))
}

fn parse_shim(args: Vec<OsString>) -> Result<Cmd, UsageError> {
    let mut opts = ShimOptions {
        argv: Vec::new(),
        pgroup: false,
        single_child: false,
        rewrite: Vec::new(),
        grace_ms: DEFAULT_GRACE_MS,
        verbose: false,
        bare_word: args
            .first()
            .is_some_and(|a| !a.to_string_lossy().starts_with('-')),
        log_timestamps: None,
        remap_exit: Vec::new(),
        parent_death_signal: None,
        warn_reap: false,
    };
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Cmd::Print(render::usage())),
            Short('V') | Long("version") => return Ok(Cmd::Version),
            Long("log-timestamps") => opts.log_timestamps = Some(true),
            Long("no-log-timestamps") => opts.log_timestamps = Some(false),
            Short('g') | Long("pgroup") => opts.pgroup = true,
            Short('c') | Long("single-child") => opts.single_child = true,
            Short('v') | Long("verbose") => opts.verbose = true,
            // tini's -s: zurg always makes itself a subreaper when not PID 1.
            Short('s') => {}
            Short('r') | Long("rewrite") => {
                let pair = parse_rewrite(&p.value()?.string()?, &opts.rewrite)?;
                opts.rewrite.push(pair);
            }
            Long("grace") => opts.grace_ms = duration_arg("--grace", p.value()?)?,
            Short('e') | Long("remap-exit") => opts.remap_exit.push(exit_code_arg(p.value()?)?),
            Short('p') | Long("parent-death-signal") => {
                opts.parent_death_signal = Some(signal_arg("-p/--parent-death-signal", p.value()?)?)
            }
            Short('w') | Long("warn-reap") => opts.warn_reap = true,
            Value(v) => {
                opts.argv.push(v);
                opts.argv.extend(p.raw_args()?);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    if opts.argv.is_empty() {
        return Err(UsageError("no command given after --".into()));
    }
    if opts.pgroup && opts.single_child {
        return Err(UsageError(
            "-g/--pgroup and -c/--single-child contradict each other: signal CMD's group, or CMD alone".into(),
        ));
    }
    Ok(Cmd::Shim(opts))
}

fn parse_run(args: Vec<OsString>) -> Result<Cmd, UsageError> {
    let mut units = None;
    let mut socket = None;
    let mut state = None;
    let mut grace_ms = DEFAULT_GRACE_MS;
    let mut readers = None;
    let mut host_ip = None;
    let mut strict = false;
    let mut publish = Vec::new();
    let mut publish_token_file = None;
    let mut publish_queue = DEFAULT_PUBLISH_QUEUE;
    let mut publish_control = Vec::new();
    let mut journal_size = crate::journal::DEFAULT_LIMIT;
    let mut log_timestamps = None;
    let mut cgroup = None;
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next()? {
        match arg {
            Long("log-timestamps") => log_timestamps = Some(true),
            Long("no-log-timestamps") => log_timestamps = Some(false),
            Long("publish") => {
                // One definition of a publisher list for hosts and clients
                // (`--publisher`): a stray comma or a bad entry is refused
                // here, before anything starts, not found at the first
                // connect.
                let v = p.value()?.string()?;
                let list = crate::publish::addrs::Publishers::parse_option("--publish", &v)
                    .map_err(|e| UsageError(e.to_string()))?;
                publish.extend(list.into_vec());
            }
            Long("publish-token-file") => publish_token_file = Some(PathBuf::from(p.value()?)),
            Long("publish-control") => {
                let v = p.value()?.string()?;
                publish_control = crate::control::proto::RemoteVerb::parse_list(&v)
                    .map_err(|e| UsageError(format!("--publish-control {v:?}: {e}")))?;
            }
            Long("publish-queue") => {
                let v = p.value()?.string()?;
                publish_queue = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    UsageError(format!("--publish-queue {v:?}: expected a positive count"))
                })?;
            }
            Long("journal-size") => {
                let v = p.value()?.string()?;
                journal_size = crate::cgroup::parse_size(&v)
                    .and_then(|n| {
                        if n >= crate::journal::MIN_LIMIT {
                            Ok(n)
                        } else {
                            Err(format!("{n} bytes is under the 4K minimum"))
                        }
                    })
                    .map_err(|e| UsageError(format!("--journal-size {v:?}: {e}")))?;
            }
            Short('u') | Long("units") => units = Some(PathBuf::from(p.value()?)),
            Long("socket") => socket = Some(PathBuf::from(p.value()?)),
            Long("state") => state = Some(PathBuf::from(p.value()?)),
            Long("grace") => grace_ms = duration_arg("--grace", p.value()?)?,
            Long("readers") => readers = Some(p.value()?.string()?),
            Long("strict") => strict = true,
            Long("cgroup") => cgroup = Some(PathBuf::from(p.value()?)),
            Long("host-ip") => {
                let v = p.value()?.string()?;
                host_ip = Some(
                    v.parse()
                        .map_err(|_| UsageError(format!("--host-ip {v:?}: not an IP address")))?,
                );
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    if !publish_control.is_empty() && publish.is_empty() {
        return Err(UsageError(
            "--publish-control needs --publish ADDR: requests come down the connection to the publisher".into(),
        ));
    }
    Ok(Cmd::Run(RunOptions {
        units_dir: units.ok_or_else(|| UsageError("run: --units DIR is required".into()))?,
        socket: socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
        state_dir: state.unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
        grace_ms,
        readers,
        host_ip,
        strict,
        publish,
        publish_token_file,
        publish_queue,
        publish_control,
        journal_size,
        log_timestamps,
        cgroup,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn shim(v: &[&str]) -> ShimOptions {
        match parse(args(v), false) {
            Ok(Cmd::Shim(o)) => o,
            other => panic!("{v:?} -> {other:?}"),
        }
    }

    #[test]
    fn shim_with_and_without_dashdash() {
        let o = shim(&["--", "sleep", "1"]);
        assert_eq!(o.argv, args(&["sleep", "1"]));
        let o = shim(&[
            "-g",
            "--rewrite",
            "TERM:QUIT",
            "--grace",
            "250ms",
            "--",
            "sh",
            "-c",
            "x",
            "--",
            "-g",
        ]);
        assert!(o.pgroup);
        assert_eq!(o.rewrite, vec![(15, RewriteTo::Signal(3))]);
        assert_eq!(o.grace_ms, 250);
        assert_eq!(o.argv, args(&["sh", "-c", "x", "--", "-g"]));
        // options after CMD belong to CMD
        let o = shim(&["ls", "-l", "--pgroup"]);
        assert!(!o.pgroup);
        assert_eq!(o.argv, args(&["ls", "-l", "--pgroup"]));
    }

    #[test]
    fn tini_flags() {
        let o = shim(&[
            "-e",
            "143",
            "--remap-exit",
            "3",
            "-p",
            "SIGUSR1",
            "-w",
            "--",
            "x",
        ]);
        assert_eq!(o.remap_exit, vec![143, 3]);
        assert_eq!(o.parent_death_signal, Some(10));
        assert!(o.warn_reap);
        let o = shim(&["--parent-death-signal", "9", "--", "x"]);
        assert_eq!(o.parent_death_signal, Some(9));
        let o = shim(&["--", "x"]);
        assert_eq!(
            (o.remap_exit.len(), o.parent_death_signal, o.warn_reap),
            (0, None, false)
        );
        let err = |v: &[&str]| parse(args(v), false).unwrap_err().0;
        for bad in ["256", "-1", "x", ""] {
            let e = err(&["-e", bad, "--", "x"]);
            assert!(e.starts_with(&format!("-e/--remap-exit {bad:?}: ")), "{e}");
        }
        for bad in ["NOPE", "0", "65"] {
            let e = err(&["-p", bad, "--", "x"]);
            assert!(
                e.starts_with(&format!("-p/--parent-death-signal {bad:?}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn tini_kill_process_group_in_the_environment_signals_the_group() {
        let with = |name: &'static str| {
            let mut o = shim(&["--", "x"]);
            shim_environment(&mut o, |v| (v == name).then(OsString::new));
            o.pgroup
        };
        assert!(with(TINI_KILL_PROCESS_GROUP));
        assert!(!with("SOMETHING_ELSE"));
    }

    #[test]
    fn dumb_init_flags() {
        let o = shim(&[
            "-c",
            "-r",
            "15:3",
            "--rewrite",
            "USR1:0",
            "-r",
            "SIGHUP:sigusr2",
            "x",
        ]);
        assert!(o.single_child && !o.pgroup);
        assert_eq!(
            o.rewrite,
            vec![
                (15, RewriteTo::Signal(3)),
                (10, RewriteTo::Drop),
                (1, RewriteTo::Signal(12))
            ]
        );
        let err = |v: &[&str]| parse(args(v), false).unwrap_err().0;
        for (bad, says) in [
            ("TERM", "expected FROM:TO"),
            ("TERM:NOPE", "\"NOPE\" is not a signal"),
            ("0:TERM", "\"0\" is not a signal"),
            ("KILL:TERM", "never forwards SIGKILL"),
            ("CHLD:0", "never forwards SIGCHLD"),
        ] {
            let e = err(&["--rewrite", bad, "--", "x"]);
            assert!(e.starts_with(&format!("--rewrite {bad:?}: ")), "{e}");
            assert!(e.contains(says), "{e}");
        }
        let e = err(&["-r", "TERM:QUIT", "-r", "15:0", "--", "x"]);
        assert!(e.contains("SIGTERM is rewritten twice"), "{e}");
        let e = err(&["-g", "-c", "--", "x"]);
        assert!(e.contains("contradict"), "{e}");
        // -c wins over the environment
        let mut o = shim(&["-c", "--", "x"]);
        shim_environment(&mut o, |_| Some(OsString::new()));
        assert!(!o.pgroup);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["--"][..],
            &["-g"],
            &["--rewrite", "TERM"],
            &["--rewrite", "TERM:NOPE", "--", "x"],
            &["--bogus", "--", "x"],
            &["--grace", "5x", "--", "x"],
            &["run"],
            &["run", "--units"],
        ] {
            assert!(parse(args(bad), false).is_err(), "{bad:?}");
        }
        assert!(parse(vec![], false).is_err());
    }

    #[test]
    fn journal_size_takes_a_size_of_at_least_4k() {
        let run = |size: &str| match parse(
            args(&["run", "--units", "u", "--journal-size", size]),
            false,
        ) {
            Ok(Cmd::Run(o)) => Ok(o.journal_size),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.0),
        };
        assert_eq!(run("4K"), Ok(4096));
        assert_eq!(run("1M"), Ok(1 << 20));
        assert!(run("4095").unwrap_err().contains("under the 4K minimum"));
        assert!(run("lots").is_err());
        let Ok(Cmd::Run(o)) = parse(args(&["run", "--units", "u"]), false) else {
            panic!()
        };
        assert_eq!(o.journal_size, crate::journal::DEFAULT_LIMIT);
    }

    #[test]
    fn publish_takes_the_clients_publisher_list() {
        let run = |lists: &[&str]| {
            let mut a = vec!["run", "--units", "u"];
            for l in lists {
                a.extend(["--publish", l]);
            }
            match parse(args(&a), false) {
                Ok(Cmd::Run(o)) => Ok(o.publish),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.0),
            }
        };
        assert_eq!(
            run(&["n1:7300,[::1]:7300", "10.0.0.3:7300"]),
            Ok(vec![
                "n1:7300".into(),
                "[::1]:7300".into(),
                "10.0.0.3:7300".into()
            ])
        );
        let e = run(&["a:1,,b:2"]).unwrap_err();
        assert!(
            e.starts_with("--publish \"a:1,,b:2\": entry 2 is empty"),
            "{e}"
        );
        for bad in ["a:1,", ",a:1", "a", "a:0", "a:x", "::1:7300", "a:1,b"] {
            assert!(run(&[bad]).unwrap_err().starts_with("--publish "), "{bad}");
        }
        let e = run(&["a:1", "x:99999"]).unwrap_err();
        assert!(e.contains("\"x:99999\" is not HOST:PORT"), "{e}");
    }

    #[test]
    fn no_args_as_pid1_runs_default_units() {
        let Ok(Cmd::Run(o)) = parse(vec![], true) else {
            panic!()
        };
        assert_eq!(o.units_dir, PathBuf::from(DEFAULT_UNITS_DIR));
    }

    #[test]
    fn run_and_client() {
        let Ok(Cmd::Run(o)) = parse(
            args(&["run", "--units", "u", "--socket", "/s", "--grace", "2"]),
            false,
        ) else {
            panic!()
        };
        assert_eq!(o.units_dir, PathBuf::from("u"));
        assert_eq!(o.socket, PathBuf::from("/s"));
        assert_eq!(o.grace_ms, 2000);
        assert_eq!(
            parse(args(&["status", "--json"]), false),
            Ok(Cmd::Verb(
                spec::Face::Client,
                vec!["status".into(), "--json".into()]
            ))
        );
    }

    #[test]
    fn a_first_word_without_options_may_be_a_mistyped_verb() {
        assert!(shim(&["stauts"]).bare_word);
        assert!(!shim(&["--", "stauts"]).bare_word);
        assert!(!shim(&["-g", "stauts"]).bare_word);
        let e = unknown_verb("stauts").0;
        assert!(e.contains("did you mean `zurg status`?"), "{e}");
    }

    #[test]
    fn every_verb_answers_help_from_the_table() {
        for v in spec::VERBS {
            let want = Ok(Cmd::Print(render::verb_help(v)));
            assert_eq!(parse(args(&[v.name, "--help"]), false), want, "{}", v.name);
            assert_eq!(parse(args(&[v.name, "-h"]), false), want, "{}", v.name);
            assert_eq!(parse(args(&["help", v.name]), false), want, "{}", v.name);
        }
        assert_eq!(
            parse(args(&["help"]), false),
            Ok(Cmd::Print(render::usage()))
        );
        assert_eq!(
            parse(args(&["--help"]), false),
            Ok(Cmd::Print(render::usage()))
        );
        // a --help after `--` belongs to the command
        assert!(matches!(
            parse(args(&["--", "ls", "--help"]), false),
            Ok(Cmd::Shim(_))
        ));
        assert!(parse(args(&["help", "stauts"]), false).is_err());
        assert!(parse(args(&["completions", "tcsh"]), false).is_err());
        assert!(parse(args(&["man", "--bogus"]), false).is_err());
    }

    #[test]
    fn log_timestamps_flags() {
        assert_eq!(shim(&["--", "x"]).log_timestamps, None);
        assert_eq!(
            shim(&["--no-log-timestamps", "--", "x"]).log_timestamps,
            Some(false)
        );
        let Ok(Cmd::Run(o)) = parse(args(&["run", "-u", "u", "--log-timestamps"]), false) else {
            panic!()
        };
        assert_eq!(o.log_timestamps, Some(true));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("5"), Some(5000));
        assert_eq!(parse_duration_ms("2m"), Some(120_000));
        assert_eq!(parse_duration_ms("x"), None);
        assert_eq!(parse_duration_ms("ms"), None);
        assert_eq!(parse_duration_ms("99999999999999999999s"), None);
    }
}
