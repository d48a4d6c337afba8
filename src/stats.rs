//! stats (stub).
