//! Naming: zurg publishes every start and exit of its services, and a
//! publisher turns them into a registry that clients resolve names against.
//!
//! `proto`, `registry` and `session` (the publisher's rules for a
//! forwarder's connection) are pure; `store` keeps the registry (in memory,
//! or in etcd with the `etcd` feature); `server` is the `zurg publisher`
//! face; `forwarder` lives in `zurg run`'s event loop; `client` is
//! `zurg resolve`.

pub mod addrs;
pub mod board;
pub mod client;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod forwarder;
pub mod history;
pub mod http;
pub mod listen;
pub mod proto;
pub mod registry;
pub mod relay;
pub mod server;
pub mod session;
pub mod store;
