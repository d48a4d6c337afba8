//! Control socket (stub).
