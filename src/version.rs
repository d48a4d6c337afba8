//! version (stub).
