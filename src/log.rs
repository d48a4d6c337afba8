//! log (stub).
