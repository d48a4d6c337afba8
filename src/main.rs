//! argv → face; error → exit code. Nothing else lives here.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use zurg::cli::spec::Face;
use zurg::cli::{self, Cmd, RunOptions};
use zurg::os::pid1;

fn exit(code: i32) -> ExitCode {
    zurg::log::flush(zurg::log::FLUSH_DEADLINE);
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
}

/// Whether `word` names an executable file in a `$PATH` directory.
fn on_path(word: &OsStr) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(word)).is_ok_and(|m| {
            m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
        })
    })
}

/// Timestamps on zurg's own log lines: as asked, else when stderr goes to
/// a file or pipe (a log collector), not to a person's terminal.
fn set_log_timestamps(asked: Option<bool>) {
    zurg::log::set_timestamps(asked.unwrap_or_else(|| !std::io::stderr().is_terminal()));
}

fn run_supervisor(opts: RunOptions) -> ExitCode {
    zurg::os::fix_malloc_thresholds();
    set_log_timestamps(opts.log_timestamps);
    if pid1::is_machine_init() && !opts.units_dir.is_dir() {
        zurg::log!(
            "*** no units directory at {}: nothing to supervise. This machine keeps running (zurg reaps orphans and answers on {}); put unit files there and run `zurg reload`, or boot with init=/path/to/zurg run --units DIR ***",
            opts.units_dir.display(),
            opts.socket.display()
        );
    }
    match zurg::supervisor::Supervisor::new(opts) {
        Ok(sup) => exit(sup.run().exit_code()),
        Err(e) => {
            zurg::log::flush(zurg::log::FLUSH_DEADLINE);
            // Written here and now, not queued (zurg exits next), but
            // formatted as every other line of `zurg run`, timestamp and
            // all, so a log collector reads it like the lines before it.
            let line = zurg::log::format_line(format_args!("{e}"));
            let _ = std::io::Write::write_all(&mut std::io::stderr(), &line);
            pid1::last_resort_if_pid1();
            ExitCode::from(1)
        }
    }
}

/// A machine's init that cannot make sense of its command line: exiting
/// would panic the kernel, so it says why and runs with the defaults.
fn keep_running_as_machine_init(e: &cli::UsageError) -> ExitCode {
    let defaults = RunOptions::pid1_defaults();
    eprintln!(
        "zurg: {e}; as this machine's init zurg does not exit: starting with --units {} --socket {} --state {}",
        defaults.units_dir.display(),
        defaults.socket.display(),
        defaults.state_dir.display()
    );
    run_supervisor(defaults)
}

/// Whether this run acts on SIGTERM and SIGINT (a clean stop, or passed
/// on to the command) and so must hold them from its first instruction:
/// `zurg run` (also as PID 1 without arguments), `zurg publisher`, and
/// anything as PID 1, the shim above all. As PID 1 the hold costs no face
/// anything: the kernel drops a signal PID 1 has no handler for, held or
/// not, so a client verb there never died of Ctrl-C either.
fn stops_on_request() -> bool {
    let mut args = std::env::args_os().skip(1);
    pid1::is_pid1()
        || match args.next() {
            None => true,
            Some(first) => first == "run" || first == "publisher",
        }
}

fn main() -> ExitCode {
    if stops_on_request() {
        // Before anything else (argument parsing, set-up): a stop request
        // now waits for the signalfd instead of killing zurg by the default
        // action, or being dropped when zurg is a namespace's PID 1.
        if let Err(e) = zurg::os::signals::hold_stop_requests() {
            eprintln!("zurg: cannot block SIGTERM and SIGINT: {e}");
        }
    }
    pid1::install_panic_hook();
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let no_args = args.is_empty();
    let is_pid1 = pid1::is_pid1();
    let verb = args
        .first()
        .and_then(|a| a.to_str())
        .and_then(cli::spec::verb);
    let parsed = cli::parse(args, is_pid1);
    if let Ok(Cmd::Print(_) | Cmd::Version | Cmd::Verb(..)) = &parsed {
        let serves = matches!(&parsed, Ok(Cmd::Verb(Face::Publisher, _)));
        if !serves && !is_pid1 {
            if let Err(e) = zurg::os::signals::die_on_broken_pipe() {
                eprintln!("zurg: cannot reset SIGPIPE: {e}");
            }
        }
    }
    match parsed {
        Ok(Cmd::Print(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Cmd::Version) => {
            println!("zurg {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Cmd::Shim(mut opts)) => {
            cli::shim_environment(&mut opts, |name| std::env::var_os(name));
            if let Some(word) = opts.argv.first() {
                let has_slash = word.to_string_lossy().contains('/');
                if opts.bare_word && !has_slash && !on_path(word) {
                    let e = cli::unknown_verb(&word.to_string_lossy());
                    // The kernel hands init the command line's words it
                    // does not know (`quiet`, `splash`): not worth a panic.
                    if pid1::is_machine_init() {
                        return keep_running_as_machine_init(&e);
                    }
                    eprintln!("zurg: {e}");
                    return ExitCode::from(2);
                }
            }
            set_log_timestamps(opts.log_timestamps);
            exit(zurg::supervisor::shim::run(&opts))
        }
        // A container's PID 1 with nothing to do: say so and exit, as tini
        // does, rather than sit idle forever. A machine's init must not exit.
        Ok(Cmd::Run(_))
            if no_args
                && !pid1::is_machine_init()
                && !Path::new(cli::DEFAULT_UNITS_DIR).is_dir() =>
        {
            eprintln!(
                "zurg: no command given, and no units in {}\n{}",
                cli::DEFAULT_UNITS_DIR,
                cli::render::usage()
            );
            ExitCode::from(2)
        }
        Ok(Cmd::Run(opts)) => run_supervisor(opts),
        Ok(Cmd::Verb(Face::Check, args)) => exit(zurg::cli::check::run(&args)),
        Ok(Cmd::Verb(Face::Publisher, args)) => exit(zurg::publish::server::run(&args)),
        Ok(Cmd::Verb(Face::Resolve, args)) => exit(zurg::publish::client::run(&args)),
        Ok(Cmd::Verb(_, args)) => exit(zurg::cli::client::run(&args)),
        Err(e) if pid1::is_machine_init() => keep_running_as_machine_init(&e),
        Err(e) => {
            let help = verb.map_or_else(cli::render::usage, cli::render::verb_help);
            eprintln!("zurg: {e}\n{help}");
            ExitCode::from(2)
        }
    }
}
