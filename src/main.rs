//! argv → face; error → exit code. Nothing else lives here.

use std::process::ExitCode;

use zurg::cli::{self, Cmd};
use zurg::os::pid1;

fn exit(code: i32) -> ExitCode {
    zurg::log::flush(zurg::log::FLUSH_DEADLINE);
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
}

fn main() -> ExitCode {
    pid1::install_panic_hook();
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match cli::parse(args, pid1::is_pid1()) {
        Ok(Cmd::Help) => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Cmd::Version) => {
            println!("zurg {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Cmd::Shim(opts)) => exit(zurg::supervisor::shim::run(&opts)),
        Ok(Cmd::Run(opts)) => match zurg::supervisor::Supervisor::new(opts) {
            Ok(sup) => exit(sup.run()),
            Err(e) => {
                zurg::log::flush(zurg::log::FLUSH_DEADLINE);
                eprintln!("zurg: {e}");
                pid1::last_resort_if_pid1();
                ExitCode::from(1)
            }
        },
        Ok(Cmd::Client(args)) if args.first().is_some_and(|v| v == "check") => {
            exit(zurg::cli::check::run(&args))
        }
        Ok(Cmd::Client(args)) if args.first().is_some_and(|v| v == "publisher") => {
            exit(zurg::publish::server::run(&args))
        }
        Ok(Cmd::Client(args)) if args.first().is_some_and(|v| v == "resolve") => {
            exit(zurg::publish::client::run(&args))
        }
        Ok(Cmd::Client(args)) => exit(zurg::cli::client::run(&args)),
        Err(e) => {
            eprintln!("zurg: {e}\n{}", cli::USAGE);
            ExitCode::from(2)
        }
    }
}
