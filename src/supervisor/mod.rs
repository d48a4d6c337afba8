//! Supervisor (stub).
