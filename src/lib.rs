//! zurg: a Linux init and process supervisor.
//!
//! The library holds everything; `main.rs` only maps argv to a face and an
//! error to an exit code. Layers (see DESIGN.md): pure code (`unit`, `service`,
//! `gpid`, `sig`, `*::proto`, `cli`) never touches the OS; `os` is the only
//! module allowed `unsafe`; `supervisor` composes them in one event loop.

pub mod cgroup;
pub mod cli;
pub mod control;
pub mod fuzz;
pub mod gpid;
pub mod journal;
pub mod journal_writer;
pub mod log;
pub mod lost_lines;
#[allow(unsafe_code)]
pub mod os;
pub mod publish;
pub mod safe_text;
pub mod service;
pub mod sig;
pub mod stats;
pub mod supervisor;
#[cfg(test)]
pub(crate) mod test_dir;
pub mod unit;
pub mod version;
