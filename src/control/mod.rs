//! The control socket: its wire protocol (`proto`, pure) and the unix
//! socket server that runs inside the supervisor's event loop (`server`).

pub mod proto;
pub mod server;
