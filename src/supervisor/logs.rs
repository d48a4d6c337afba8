//! Stub for the merge: the `logs` branch owns this file (the in-memory
//! ring behind `zurg logs`); output.rs calls `record_output` once per line.

use super::Supervisor;

impl Supervisor {
    pub(crate) fn record_output(
        &mut self,
        _slot: usize,
        _stream: crate::service::ring::Stream,
        _line: &[u8],
        _time_us: u64,
    ) {
    }
}
